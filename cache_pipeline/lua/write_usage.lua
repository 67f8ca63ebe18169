--[[
Apply one usage.updated or credits.updated message atomically (rules 1-3).

KEYS[1]  P:C        entitlements map; the write happens only if it holds a value
KEYS[2]  value key  P:C:f_<featureId> or P:C:credit_<currencyId>
KEYS[3]  P:C:keys   index of the customer's usage and credit keys; its #timestamp
                    is the time of the latest invalidation
ARGV[1]  timestamp  epoch ms, decimal string (the version)
ARGV[2]  ttl        seconds; -1 for no expiry
ARGV[3]  value JSON

Returns 1 when written, 0 when the stored version or the scope's latest
invalidation is newer (stale),
-1 when the customer has no entitlements in the cache (policy).
]]
local ts = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
expect_type(KEYS[3], 'set')
expect_type(KEYS[3] .. '#timestamp', 'string')
expect_values({KEYS[2]}, 1)
if invalidated_at(KEYS[3]) > ts then
  return 0
end
local written = versioned_put(KEYS[2], ARGV[3], ts, ARGV[1], ttl)
if written == 1 then
  redis.call('SADD', KEYS[3], KEYS[2])
  touch(KEYS[3], ttl)
end
return written
