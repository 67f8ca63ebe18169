--[[
Apply one usage.updated or credits.updated message atomically (rules 1-4).

KEYS[1]  S              entitlements map; the write happens only if it exists
KEYS[2]  value key      S:f_<featureId> or S:credit_<currencyId>
KEYS[3]  S#invalidated  private: time T of the scope's latest invalidation
KEYS[4]  S#keys         private: set of the usage and credit keys written
ARGV[1]  version        epoch ms (decimal string), also compared with T
ARGV[2]  ttl            seconds; -1 for no expiry
ARGV[3]  value JSON

Returns 1 when written, 0 when the stored version or T is newer (stale), -1
when the scope has no entitlements map (policy).
]]
local ttl = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
expect_type(KEYS[3], 'string')
expect_type(KEYS[4], 'set')
expect_values({KEYS[2]}, 1)
if invalidated_at(KEYS[3]) > tonumber(ARGV[1]) then
  return 0
end
local written = versioned_put(KEYS[2], ARGV[3], ARGV[1], ttl)
if written == 1 then
  redis.call('SADD', KEYS[4], KEYS[2])
  touch(KEYS[4], ttl)
end
return written
