--[[
Apply one usage.updated or credits.updated message atomically (rules 1-4).

KEYS[1]  S              entitlements map (only read, for UPDATE_IF_EXISTS)
KEYS[2]  value key      S:f_<featureId> or S:credit_<currencyId>
KEYS[3]  S#invalidated  private: time T of the scope's latest invalidation
KEYS[4]  S#keys         private: set of the usage and credit keys written
KEYS[5]  P:__invalidated__  private: time of the environment's latest
                        {"all": true} (Redis Cluster mode: S#invalidated again)
ARGV[1]  version        epoch ms (decimal string); refused unless it is > T
                        (scope and environment)
ARGV[2]  ttl            seconds; -1 for no expiry
ARGV[3]  value JSON
ARGV[4]  only_if_exists "1" under UPDATE_IF_EXISTS (write only when S exists),
                        "0" under UPSERT (write whether or not S exists)

Returns 1 when written, 0 when the stored version or T is newer (stale), -1
when the policy skipped it (UPDATE_IF_EXISTS and no map).
]]
local ttl = tonumber(ARGV[2])
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
expect_type(KEYS[3], 'string')
expect_type(KEYS[4], 'set')
expect_type(KEYS[5], 'string')
expect_values({KEYS[2]}, 1)
if refused(KEYS[3], KEYS[5], ARGV[1]) then
  return 0
end
local written = versioned_put(KEYS[2], ARGV[3], ARGV[1], ttl)
if written == 1 then
  redis.call('SADD', KEYS[4], KEYS[2])
  touch(KEYS[4], ttl)
end
return written
