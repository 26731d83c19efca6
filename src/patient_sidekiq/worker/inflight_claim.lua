-- Claim one in-flight request of THIS process and, only if the claim succeeds, run the
-- commands that deliver its outcome and count it in the totals (wire spec §7, §8, §9).
--
-- KEYS[1]  the in-flight index (sorted set)
-- KEYS[2]  the in-flight jobs hash
-- KEYS[3]  the totals hash (sidekiq:patient_http:totals)
-- KEYS[4]  the set of queue names (queues)
-- ARGV[1]  the task id
-- ARGV[2]  a claim marker key to set on success, or "" for none
-- ARGV[3]  the marker's TTL, seconds
-- ARGV[4]  n: how many settled markers follow (deleted first, whatever the outcome)
-- ARGV[5 … 4+n]  settled marker keys of earlier claims whose replies did arrive
-- then the result's delivery: r, how many requests to count (0: no delivery, and nothing
--          else follows), then r durations (HINCRBYFLOAT increments, seconds), the HTTP
--          status to count or "", the error kind or "", the totals' TTL (seconds), then the
--          callback job's queue, that queue's key and the job's text
-- then the commands, each as: its word count, then its words
--          (e.g. 3, "SADD", "queues", "q", 3, "LPUSH", "queue:q", "{…}")
--
-- The task leaves the jobs hash exactly once: whoever removes it (the result push, the
-- shutdown re-enqueue of the original job, or another process's orphan sweep) is the only
-- one that acts on it. So a request whose result was pushed is never also re-enqueued.
-- The marker lets a retried attempt whose first try landed (its reply lost with the
-- connection) learn that it was that first try which claimed the task.
-- The delivery is written here rather than sent as ~20 command words per request: the
-- same writes in the same order (SADD queues, LPUSH of the job; then per request HINCRBY
-- requests, HINCRBYFLOAT duration; then http_status:<code>, errors and errors:<kind>; one
-- EXPIRE), then any commands that follow.
-- Returns 1 when claimed now (commands ran), 2 when the marker shows an earlier attempt of
-- ours claimed it, 0 when someone else claimed it.
local settled = tonumber(ARGV[4])
if settled > 0 then
  redis.call('DEL', unpack(ARGV, 5, 4 + settled))
end
local claimed = redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if claimed == 0 then
  if ARGV[2] ~= '' and redis.call('EXISTS', ARGV[2]) == 1 then
    return 2
  end
  return 0
end
if ARGV[2] ~= '' then
  redis.call('SET', ARGV[2], '1', 'EX', tonumber(ARGV[3]))
end
local i = 5 + settled
local requests = tonumber(ARGV[i])
local stats = i + 1
i = i + 1
if requests > 0 then
  i = i + requests + 6
  local push = stats + requests + 3
  redis.call('SADD', KEYS[4], ARGV[push])
  redis.call('LPUSH', ARGV[push + 1], ARGV[push + 2])
  for d = stats, stats + requests - 1 do
    redis.call('HINCRBY', KEYS[3], 'requests', 1)
    redis.call('HINCRBYFLOAT', KEYS[3], 'duration', ARGV[d])
  end
  local status = ARGV[stats + requests]
  local kind = ARGV[stats + requests + 1]
  if status ~= '' then
    redis.call('HINCRBY', KEYS[3], 'http_status:' .. status, 1)
  end
  if kind ~= '' then
    redis.call('HINCRBY', KEYS[3], 'errors', 1)
    redis.call('HINCRBY', KEYS[3], 'errors:' .. kind, 1)
  end
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[stats + requests + 2]))
end
while i <= #ARGV do
  local count = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + count))
  i = i + count + 1
end
return 1
