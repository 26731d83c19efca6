-- Give back jobs that sit in a LIVE process's own in-progress list although the process
-- no longer holds them (a reply lost with the connection: the pop, BLMOVE or acknowledgement
-- ran, or not, and the process could not know).
--
-- KEYS[1]  this process's in-progress list for one queue
-- KEYS[2]  that queue's list
-- ARGV     the exact job texts the caller found in KEYS[1] and does not hold, newest first
--
-- Each job is moved only if it is still in the list, in this same atomic step: one acknowledged
-- meanwhile (its LREM landed after the caller's read) is gone and stays gone, so nothing the
-- process finished is run twice. RPUSHing newest first leaves the oldest at the right end,
-- the next one popped, as fetch_recover.lua does. Returns how many jobs were moved.
local moved = 0
for i = 1, #ARGV do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i])
    moved = moved + 1
  end
end
return moved
