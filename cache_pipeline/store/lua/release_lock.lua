--[[
Release the reader SDK's miss lock only if this reader still holds it
(compare-and-delete), so a lock that expired and was taken by another reader
is never deleted by the first one.

KEYS[1]  P:C:lock  the scope's miss lock
ARGV[1]  token     the random token this reader set with SET NX PX

Returns 1 when the lock was released, 0 when another reader holds it (or nobody).
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
