--[[
Contract v2: read one scope for the reader SDK in one round trip (no writes),
the keys Stigg's SDK 3.95.0 reads (docs/stigg-compat.md §4.1), whoever wrote them.

KEYS[1]  S             entitlements map (P:c_<C>[:r_<R>])
KEYS[2]  S:metadata    {"accessDeniedReason": ...} (written by 4.x readers and us)
KEYS[3]  G             only when ARGV[1] is "1": the customer's global map, whose
                       #timestamp judges a resource scope's freshness
ARGV[1]  "1" when KEYS[3] is the global map, else "0"
ARGV[2]  what usage to read: "all" (the usage key of every metered entry of the
         map, by calculatedEntitlement.feature.id), "feature" or "credit"
ARGV[3]  with "feature" or "credit": the feature or currency id

Returns an array:
  [1] the map (raw string) or false
  [2] the map's #timestamp (raw string) or false
  [3] the metadata (raw string) or false
  [4] the global map's #timestamp (raw string) or false
  [5..] pairs of id and raw usage value, for every usage key read that holds one
]]
local scope = KEYS[1]
local map = redis.call('GET', scope)
local global = false
if ARGV[1] == '1' then
  global = redis.call('GET', KEYS[3] .. '#timestamp')
end
local reply = {map, redis.call('GET', scope .. '#timestamp'), redis.call('GET', KEYS[2]), global}
if not map then
  return reply
end
local ids = {}
local prefix = ':f_'
if ARGV[2] == 'all' then
  local ok, decoded = pcall(cjson.decode, map)
  if ok and type(decoded) == 'table' then
    for _, entry in pairs(decoded) do
      local feature = type(entry) == 'table' and type(entry.calculatedEntitlement) == 'table'
        and entry.calculatedEntitlement.feature
      if type(feature) == 'table' and feature.featureType == 'NUMBER'
        and (feature.meterType == 'Fluctuating' or feature.meterType == 'Incremental')
        and type(feature.id) == 'string' then
        ids[#ids + 1] = feature.id
      end
    end
  end
else
  ids[1] = ARGV[3]
  if ARGV[2] == 'credit' then prefix = ':credit_' end
end
if #ids > 0 then
  local keys = {}
  for i, id in ipairs(ids) do keys[i] = scope .. prefix .. id end
  local values = redis.call('MGET', unpack(keys))
  for i, id in ipairs(ids) do
    if values[i] then
      reply[#reply + 1] = id
      reply[#reply + 1] = values[i]
    end
  end
end
return reply
