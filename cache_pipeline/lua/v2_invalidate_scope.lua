--[[
Contract v2: invalidate one scope at time T atomically (rule 4). Not yet called
by the pipeline: the v2 store switches to it.

Deletes, whatever their versions, the map, the metadata, the usage key of every
feature in the map (whoever wrote it), every key of the private index, and the
#timestamp sibling of each, so that a Stigg SDK refilling the scope from the
Edge API afterwards lands its write. T is kept in S#invalidated (never lowered):
queue messages older than T are then refused by v2_write_scope.lua.

KEYS[1]  S              entitlements map
KEYS[2]  S:metadata
KEYS[3]  S#invalidated  private: time of the latest invalidation
KEYS[4]  S#keys         private: set of the usage and credit keys written
ARGV[1]  T              epoch ms (decimal string)
ARGV[2]  ttl            seconds for S#invalidated; -1 for no expiry

Returns the number of keys deleted (values and #timestamp siblings).
]]
local targets = {KEYS[1], KEYS[2]}
local map = redis.call('GET', KEYS[1])
if map then
  local ok, decoded = pcall(cjson.decode, map)
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
local current = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[1]) > current then
  local ttl = tonumber(ARGV[2])
  if ttl > 0 then
    redis.call('SET', KEYS[3], ARGV[1], 'EX', ttl)
  else
    redis.call('SET', KEYS[3], ARGV[1])
  end
end
return deleted
