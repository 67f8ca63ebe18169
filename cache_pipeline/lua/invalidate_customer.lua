--[[
Invalidate one customer scope at timestamp T atomically (rule 4).

Deletes the entitlements map, the metadata and every usage and credit key in
the index, and leaves a #timestamp tombstone at T on each, so an older message
arriving later cannot bring the old state back. A key whose version is newer
than T was written after the invalidation and is kept.

KEYS[1]  P:C           entitlements map
KEYS[2]  P:C:metadata
KEYS[3]  P:C:keys      index of the customer's usage and credit keys (kept, so
                       later invalidations still reach the tombstoned keys);
                       P:C:keys#timestamp is set to T (unless newer): usage and
                       credit writes older than T are refused even for keys
                       the index does not hold yet
ARGV[1]  timestamp     epoch ms, decimal string (T)
ARGV[2]  ttl           seconds; -1 for no expiry

Returns the number of value keys deleted.
]]
local ts = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
expect_type(KEYS[3], 'set')
expect_type(KEYS[3] .. '#timestamp', 'string')
local members = redis.call('SMEMBERS', KEYS[3])
expect_type(KEYS[1] .. '#timestamp', 'string')
expect_type(KEYS[2] .. '#timestamp', 'string')
for _, key in ipairs(members) do
  expect_type(key .. '#timestamp', 'string')
end
local deleted = tombstone(KEYS[1], ts, ARGV[1], ttl) + tombstone(KEYS[2], ts, ARGV[1], ttl)
for _, key in ipairs(members) do
  deleted = deleted + tombstone(key, ts, ARGV[1], ttl)
end
if #members > 0 then
  touch(KEYS[3], ttl)
end
if not is_newer(KEYS[3], ts) then
  set_with_ttl(KEYS[3] .. '#timestamp', ARGV[1], ttl)
end
return deleted
