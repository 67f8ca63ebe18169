--[[
Read one customer scope for the reader SDK in one round trip (no writes).

KEYS[1]  P:C             entitlements map
KEYS[2]  P:C:metadata    access-denied reason
KEYS[3]  P:C:keys        index of the scope's usage and credit keys
KEYS[4]  P:c_<customer>  only when ARGV[1] is "1": the global entitlements map of a
                         resource scope (not in Redis Cluster mode, where it lives
                         in another slot)
KEYS[n]  usage key       optional last key: read only this usage or credit key
                         instead of every key of the index (a single check)
ARGV[1]  "1" when KEYS[4] is the global map, else "0"

Returns an array:
  [1] the entitlements map JSON, or nil on a miss (then only [4] follows)
  [2] the map's #timestamp (epoch ms, decimal string) or nil
  [3] the metadata JSON or nil
  [4] the global map's #timestamp when it is asked for and holds a value, else nil
  [5..] pairs of usage key and usage JSON, for every key read that holds a value
]]
local first_usage = 4
local global = false
if ARGV[1] == '1' then
  first_usage = 5
  if redis.call('EXISTS', KEYS[4]) == 1 then
    global = redis.call('GET', KEYS[4] .. '#timestamp') or '0'
  end
end
local map = redis.call('GET', KEYS[1])
if not map then
  return {false, false, false, global}
end
local reply = {map, redis.call('GET', KEYS[1] .. '#timestamp'), redis.call('GET', KEYS[2]), global}
local members
if #KEYS >= first_usage then
  members = {KEYS[first_usage]}
else
  members = redis.call('SMEMBERS', KEYS[3])
end
if #members > 0 then
  local values = redis.call('MGET', unpack(members))
  for i, key in ipairs(members) do
    if values[i] then
      reply[#reply + 1] = key
      reply[#reply + 1] = values[i]
    end
  end
end
return reply
