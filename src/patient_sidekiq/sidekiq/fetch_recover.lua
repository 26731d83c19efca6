-- Move a dead process's in-progress jobs back to their Sidekiq queue.
--
-- KEYS[1]  the process identity (its heartbeat hash: the process is alive while it exists)
-- KEYS[2]  that process's in-progress list for one queue
-- KEYS[3]  the queue list the jobs came from
-- KEYS[4]  the in-progress registry hash
-- ARGV[1]  "force" to move the jobs even though the process is alive (a process releasing
--          its own jobs at shutdown), anything else to require it to be dead
--
-- Returns -1 (and touches nothing) if the process is alive and not forced, else the number
-- of jobs moved.
-- The in-progress list holds the newest job at the left; RPUSHing it from left to right leaves
-- the oldest job at the queue's right end, so the jobs are popped again in their first order.
if ARGV[1] ~= 'force' and redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local jobs = redis.call('LRANGE', KEYS[2], 0, -1)
for first = 1, #jobs, 1000 do  -- unpack() is limited by the Lua C stack
  redis.call('RPUSH', KEYS[3], unpack(jobs, first, math.min(first + 999, #jobs)))
end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[4], KEYS[2])
return #jobs
