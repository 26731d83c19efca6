-- Take ONE due job from a sorted set (retry or schedule) and park it, in the same atomic
-- step, in this process's in-progress list for its queue. If the process dies before it
-- re-pushes the job, the reliable-fetch recovery puts it on its queue: never lost.
--
-- KEYS[1]  the sorted set ("retry" or "schedule")
-- KEYS[2]  the in-progress registry hash
-- ARGV[1]  now, epoch seconds
-- ARGV[2]  this process's identity
-- ARGV[3]  this process's in-progress key prefix (the queue name follows it)
--
-- Returns false when nothing is due, {job, queue} otherwise. Every member is parked, even
-- one cjson cannot read (not JSON, lone surrogate escapes, deep nesting): under "default",
-- so the caller files or re-pushes it from there and a crash in between loses nothing.
local job = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, 1)[1]
if not job then
  return false
end
redis.call('ZREM', KEYS[1], job)
-- cjson only READS the queue name; the job text itself is never re-encoded here.
local ok, decoded = pcall(cjson.decode, job)
local queue = ok and type(decoded) == 'table' and decoded['queue']
if type(queue) ~= 'string' or queue == '' then
  queue = 'default'  -- what Sidekiq::Client fills in for a job without a queue
end
local inprogress = ARGV[3] .. queue
redis.call('LPUSH', inprogress, job)
redis.call('HSET', KEYS[2], inprogress,
  '{"identity":' .. cjson.encode(ARGV[2]) .. ',"queue":' .. cjson.encode(queue) .. '}')
return {job, queue}
