-- Hand one fetched job from a worker's in-progress list to the gem's in-flight keys, in
-- one atomic step (wire spec §7: at any moment exactly one mechanism may recover a job).
--
-- KEYS[1]  the in-progress list the job was fetched into
-- KEYS[2]  the in-flight index (sorted set: task id -> heartbeat, epoch ms)
-- KEYS[3]  the in-flight jobs hash (task id -> the original job JSON)
-- ARGV[1]  the job's exact text
-- ARGV[2]  the task id
-- ARGV[3]  now, epoch ms
-- ARGV[4]  TTL of both in-flight keys, seconds
--
-- The same writes as the gem's register MULTI (ZADD, HSET, EXPIRE both), plus the LREM;
-- one script instead of a seven-command MULTI costs the worker a fraction of the packing.
-- Returns how many copies left the in-progress list (1 normally).
local removed = redis.call('LREM', KEYS[1], -1, ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return removed
