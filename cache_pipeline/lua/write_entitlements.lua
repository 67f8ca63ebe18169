--[[
Apply one entitlements.updated snapshot atomically (CONTRACT.md rules 1-3).

KEYS[1]     P:C             entitlements map
KEYS[2]     P:C:metadata    access-denied reason
KEYS[3]     P:C:keys        index of the customer's usage and credit keys; its
                            #timestamp is the time of the latest invalidation
KEYS[4..n]  usage keys      P:C:f_<id> or P:C:credit_<id>, one per entitlement with usage
ARGV[1]     timestamp       epoch ms, decimal string (the version)
ARGV[2]     ttl             seconds; -1 for no expiry
ARGV[3]     only_if_exists  "1" under UPDATE_IF_EXISTS, "0" under UPSERT
ARGV[4]     entitlements map JSON
ARGV[5]     metadata JSON
ARGV[6..]   usage JSON, one per KEYS[4..n], same order

Usage keys are written only when the snapshot is not older than the scope's
latest invalidation. Returns the number of value keys written; 0 when every
key held a newer version (stale); -1 when the policy skipped the message.
]]
local ts = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
expect_type(KEYS[3], 'set')
expect_type(KEYS[3] .. '#timestamp', 'string')
expect_values(KEYS, 4)
expect_values({KEYS[1], KEYS[2]}, 1)

local written = versioned_put(KEYS[1], ARGV[4], ts, ARGV[1], ttl)
written = written + versioned_put(KEYS[2], ARGV[5], ts, ARGV[1], ttl)
local indexed = false
local usage_allowed = invalidated_at(KEYS[3]) <= ts
for i = 4, #KEYS do
  if usage_allowed and versioned_put(KEYS[i], ARGV[i + 2], ts, ARGV[1], ttl) == 1 then
    redis.call('SADD', KEYS[3], KEYS[i])
    written = written + 1
    indexed = true
  end
end
if indexed then
  touch(KEYS[3], ttl)
end
return written
