-- Pop up to ARGV[1] jobs from several Sidekiq queues, recording each in-progress atomically.
--
-- KEYS[1]          the in-progress registry hash
-- KEYS[2i], [2i+1] queue list i and this process's in-progress list for it (in fetch order)
-- ARGV[1]          the most jobs to pop in total
-- ARGV[i+1]        the registry value (JSON {"identity", "queue"}) of in-progress list i
--
-- Returns a flat array {i, {job, ...}, ...}: the 1-based queue index and its jobs, oldest first.
-- A popped job is never only in this script's memory: it is LPUSHed onto the in-progress list
-- in the same atomic step as the RPOP, so a crash leaves it in exactly one of the two lists.
local remaining = tonumber(ARGV[1])
local out = {}
local queue_index = 1
local k = 2
while k < #KEYS and remaining > 0 do
  local jobs = redis.call('RPOP', KEYS[k], remaining)  -- count form: Redis >= 6.2
  if jobs then
    local inprogress = KEYS[k + 1]
    for first = 1, #jobs, 1000 do  -- unpack() is limited by the Lua C stack
      redis.call('LPUSH', inprogress, unpack(jobs, first, math.min(first + 999, #jobs)))
    end
    redis.call('HSET', KEYS[1], inprogress, ARGV[queue_index + 1])
    out[#out + 1] = queue_index
    out[#out + 1] = jobs
    remaining = remaining - #jobs
  end
  queue_index = queue_index + 1
  k = k + 2
end
return out
