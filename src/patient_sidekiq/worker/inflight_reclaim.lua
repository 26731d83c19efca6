-- Reclaim one orphaned in-flight request of the patient_http-sidekiq gem (wire spec §7).
--
-- KEYS[1]  the in-flight index (sorted set: task id -> last heartbeat, epoch ms)
-- KEYS[2]  the in-flight jobs hash (task id -> RequestWorker job JSON)
-- KEYS[3]  the gem's processes set
-- KEYS[4]  Sidekiq's "queues" set            (push mode); the "dead" set (bury mode)
-- KEYS[5]  the job's "queue:<name>" list     (push mode only)
-- ARGV[1]  the task id
-- ARGV[2]  the threshold, epoch ms: the task is orphaned if its score is at or below it
-- ARGV[3]  the process id owning the task, which must be gone from KEYS[3]; "" when a live
--          process reclaims a task of its own that it no longer runs (its reconcile)
-- ARGV[4]  the job text the caller read and parsed     (push mode only)
-- ARGV[5]  the queue name                              (push mode only)
-- ARGV[6]  the job text to push (stamped enqueued_at)  (push mode only)
-- Bury mode (4 keys): ARGV[4] the job text the caller read, ARGV[5] the dead-set score,
--          ARGV[6] the dead entry (the caller could not push the job: poison.py)
--
-- Everything is re-checked here, atomically: a heartbeat or a returning process between
-- the caller's scan and this script keeps its task. The task leaves both keys in the same
-- step that re-enqueues it, so two sweepers can never both push it, and a broken
-- connection can never lose it.
--
-- Push mode (5 keys) returns 1 if the job was moved to its queue, 0 if the task is no
-- longer orphaned (or gone), -1 if its stored job text changed since the caller read it.
-- Bury mode returns like push mode, the entry added to the dead set instead of the push, so
-- a crash can never drop a job that was taken out of the in-flight keys.
-- Take mode (3 keys) returns {0} if not orphaned, else {1, job text or false} after
-- removing the task from both keys (an index entry whose job the caller found missing).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local orphaned = score and tonumber(score) <= tonumber(ARGV[2])
  and (ARGV[3] == '' or redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 0)
if #KEYS >= 4 then
  if not orphaned then
    return 0
  end
  if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[4] then
    return -1
  end
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  if #KEYS == 4 then
    redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6])
  else
    redis.call('SADD', KEYS[4], ARGV[5])
    redis.call('LPUSH', KEYS[5], ARGV[6])
  end
  return 1
end
if not orphaned then
  return {0}
end
local job = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return {1, job}
