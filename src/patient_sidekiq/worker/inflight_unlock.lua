-- Release a lock only if it still holds our value (compare-and-delete).
--
-- KEYS[1]  the lock key
-- ARGV[1]  the value we set when taking it (our process id)
--
-- Returns 1 if the lock was ours and is now deleted, else 0 (expired, or someone else's).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
