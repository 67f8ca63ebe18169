--[[
Invalidate one scope at time T atomically (rule 4).

Deletes, whatever their versions, the map, the metadata, the usage key of every
feature in the map (whoever wrote it), every key of the private index, and the
#timestamp sibling of each, so that a Stigg SDK refilling the scope from the
Edge API afterwards lands its write. T is kept in S#invalidated: queue messages
older than T are then refused by v2_write_scope.lua and v2_write_usage.lua.

KEYS[1]  S              entitlements map
KEYS[2]  S:metadata
KEYS[3]  S#invalidated  private: time of the latest invalidation
KEYS[4]  S#keys         private: set of the usage and credit keys written
ARGV[1]  T              epoch ms (decimal string)
ARGV[2]  ttl            seconds for S#invalidated; -1 for no expiry
ARGV[3]  "1" to set T even when an invalidation later than T is kept (the
         operator's `cache-pipeline invalidate` after a clock from the future),
         else "0" (T is never lowered)

Returns the number of keys deleted (values and #timestamp siblings).
]]
expect_type(KEYS[3], 'string')
expect_type(KEYS[4], 'set')
local targets = {KEYS[1], KEYS[2]}
if redis.call('TYPE', KEYS[1])['ok'] == 'string' then
  local ok, decoded = pcall(cjson.decode, redis.call('GET', KEYS[1]))
  if ok and type(decoded) == 'table' then
    for field in pairs(decoded) do
      if type(field) == 'string' and field ~= '' then
        targets[#targets + 1] = KEYS[1] .. ':f_' .. field
      end
    end
  end
end
for _, key in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  targets[#targets + 1] = key
end
local deleted = 0
for _, key in ipairs(targets) do
  deleted = deleted + redis.call('DEL', key, key .. '#timestamp')
end
redis.call('DEL', KEYS[4])
if ARGV[3] == '1' or tonumber(ARGV[1]) > invalidated_at(KEYS[3]) then
  set_with_ttl(KEYS[3], ARGV[1], tonumber(ARGV[2]))
end
return deleted
