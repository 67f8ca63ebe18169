--[[
Record an environment-wide invalidation ({"all": true}) at time T (rule 4):
P:__invalidated__ keeps the largest T, and every write script then refuses a
write whose gate is not newer than it. Store.invalidate_environment runs this
first, then removes the keys of version <= T in SCAN batches
(v2_invalidate_key.lua), so no older write can land between the two.

KEYS[1]  P:__invalidated__
ARGV[1]  T      epoch ms (decimal string)
ARGV[2]  ttl    seconds; -1 for no expiry

Returns the time kept.
]]
expect_type(KEYS[1], 'string')
local at = tonumber(ARGV[1])
local kept = invalidated_at(KEYS[1])
if at > kept then
  set_with_ttl(KEYS[1], ARGV[1], tonumber(ARGV[2]))
  return at
end
return kept
