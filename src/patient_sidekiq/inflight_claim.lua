-- Claim one in-flight request of THIS process and, only if the claim succeeds, run the
-- commands that deliver its outcome (wire spec §7, §9).
--
-- KEYS[1]  the in-flight index (sorted set)
-- KEYS[2]  the in-flight jobs hash
-- KEYS[3…] every key the commands below touch (declared for Redis; not read here)
-- ARGV[1]  the task id
-- ARGV[2…] the commands, each as: its word count, then its words
--          (e.g. 3, "SADD", "queues", "q", 3, "LPUSH", "queue:q", "{…}")
--
-- The task leaves the jobs hash exactly once: whoever removes it (the result push, the
-- shutdown re-enqueue of the original job, or another process's orphan sweep) is the only
-- one that acts on it. So a request whose result was pushed is never also re-enqueued, and
-- a retried attempt whose first try did land (reply lost) does nothing the second time.
-- Returns 1 when claimed (commands ran), 0 when someone else had already claimed it.
local claimed = redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if claimed == 0 then
  return 0
end
local i = 2
while i <= #ARGV do
  local count = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + count))
  i = i + count + 1
end
return 1
