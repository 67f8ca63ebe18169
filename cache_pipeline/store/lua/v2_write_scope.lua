--[[
Apply one scope's entitlements snapshot atomically (CONTRACT.md rules 1-4), in
the layout Stigg's SDK reads: from an entitlements.updated message, or from the
reader SDK's write-back of an Edge API answer.

KEYS[1]     S                entitlements map (P:c_<C>[:r_<R>])
KEYS[2]     S:metadata       {"accessDeniedReason": ...}
KEYS[3]     S#invalidated    private: time T of the scope's latest invalidation
KEYS[4]     S#keys           private: set of the usage and credit keys written
KEYS[5]     S#deleted        private: hash of the versions invalidations deleted
                             usage and credit keys at (never written here)
KEYS[6]     P:__invalidated__  private: time of the environment's latest
                             {"all": true} (in Redis Cluster mode S#invalidated
                             again: no key outside the scope's slot)
KEYS[7..n]  usage keys       S:f_<featureId> or S:credit_<currencyId>
ARGV[1]     version          epoch ms of the map and metadata (decimal string)
ARGV[2]     gate             epoch ms compared with T: the message timestamp, or
                             the time a reader's upstream request started; the
                             write is refused unless gate > T (scope and
                             environment)
ARGV[3]     ttl              seconds; -1 for no expiry
ARGV[4]     only_if_exists   "1" under UPDATE_IF_EXISTS, "0" under UPSERT
ARGV[5]     map JSON
ARGV[6]     metadata JSON
ARGV[7..]   for each KEYS[7..n], in order: value JSON, then its version

Returns the number of value keys written; 0 when every key held a newer
version or the gate is not newer than T (stale); -1 when the policy skipped the
snapshot (UPDATE_IF_EXISTS and no map).
]]
local ttl = tonumber(ARGV[3])
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
expect_type(KEYS[3], 'string')
expect_type(KEYS[4], 'set')
expect_type(KEYS[5], 'hash')
expect_type(KEYS[6], 'string')
expect_values({KEYS[1], KEYS[2]}, 1)
expect_values(KEYS, 7)
if refused(KEYS[3], KEYS[6], ARGV[2]) then
  return 0
end
local written = versioned_put(KEYS[1], ARGV[5], ARGV[1], ttl)
written = written + versioned_put(KEYS[2], ARGV[6], ARGV[1], ttl)
for i = 7, #KEYS do
  local at = 7 + (i - 7) * 2
  local floor = deleted_version(KEYS[5], KEYS[i])
  if versioned_put(KEYS[i], ARGV[at], ARGV[at + 1], ttl, floor) == 1 then
    redis.call('SADD', KEYS[4], KEYS[i])
    written = written + 1
  end
end
if #KEYS >= 7 and redis.call('EXISTS', KEYS[4]) == 1 then
  touch(KEYS[4], ttl)
end
return written
