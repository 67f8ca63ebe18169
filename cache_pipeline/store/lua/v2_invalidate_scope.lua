--[[
Invalidate one scope at time T atomically (rule 4).

Deletes the map, the metadata, the usage key of every feature in the map
(whoever wrote it) and every key of the private index, each with its #timestamp
sibling, when its version is <= T (a key without a readable version counts as
older than anything); a key written from a state newer than T stays, so an
invalidation delivered late, or twice, removes nothing newer than itself. A
Stigg SDK refilling the scope from the Edge API afterwards lands its write. T
(the largest seen) is kept in S#invalidated: writes whose gate is not newer than
T are then refused by v2_write_scope.lua and v2_write_usage.lua.

KEYS[1]  S              entitlements map
KEYS[2]  S:metadata
KEYS[3]  S#invalidated  private: time of the latest invalidation
KEYS[4]  S#keys         private: set of the usage and credit keys written
KEYS[5]  S#deleted      private: hash {usage or credit key: the largest version an
                        invalidation deleted it at}, so that a snapshot's older
                        usage cannot land where a newer one was deleted
ARGV[1]  T              epoch ms (decimal string)
ARGV[2]  ttl            seconds for S#invalidated and S#deleted; -1 for no expiry
ARGV[3]  "1" for the operator's `cache-pipeline invalidate`: delete whatever the
         versions, and set T even when an invalidation later than T is kept
         (after a producer's clock ran ahead), and forget S#deleted, else "0"

Returns the number of keys deleted (values and #timestamp siblings).
]]
expect_type(KEYS[3], 'string')
expect_type(KEYS[4], 'set')
expect_type(KEYS[5], 'hash')
local at = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local force = ARGV[3] == '1'
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
local indexed = redis.call('SMEMBERS', KEYS[4])
for _, key in ipairs(indexed) do
  targets[#targets + 1] = key
end
local function remember(key, version)
  local kept = deleted_version(KEYS[5], key)
  if not kept or version > kept then
    redis.call('HSET', KEYS[5], key, version)
  end
end

local deleted = 0
for i, key in ipairs(targets) do
  local version = stored_version(key)
  if force or version == nil or version <= at then
    deleted = deleted + redis.call('DEL', key, key .. '#timestamp')
    redis.call('SREM', KEYS[4], key)
    if version and i > 2 and not force then
      remember(key, version)
    end
  end
end
if force then
  redis.call('DEL', KEYS[5])
elseif redis.call('EXISTS', KEYS[5]) == 1 then
  touch(KEYS[5], ttl)
end
if force or at > invalidated_at(KEYS[3]) then
  set_with_ttl(KEYS[3], ARGV[1], ttl)
end
return deleted
