--[[
Operator's repair: drop one customer scope whatever its versions (the
`cache-pipeline invalidate` command), e.g. after a producer wrote versions
from the far future that no later message can beat.

Deletes the entitlements map, the metadata and every usage and credit key of
the index, and sets each one's #timestamp, and the scope's invalidation time,
to T even where a newer version was stored: messages older than T are then
refused for the scope (rule 4), newer ones are written again.

KEYS[1]  P:C           entitlements map
KEYS[2]  P:C:metadata
KEYS[3]  P:C:keys      index of the customer's usage and credit keys (kept)
ARGV[1]  T             epoch ms, decimal string
ARGV[2]  ttl           seconds; -1 for no expiry

Returns the number of value keys deleted.
]]
local ttl = tonumber(ARGV[2])
local function set_with_ttl(key, value)
  if ttl > 0 then
    redis.call('SET', key, value, 'EX', ttl)
  else
    redis.call('SET', key, value)
  end
end
local targets = {KEYS[1], KEYS[2]}
if redis.call('TYPE', KEYS[3])['ok'] == 'set' then
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    targets[#targets + 1] = key
  end
end
local deleted = 0
for _, key in ipairs(targets) do
  deleted = deleted + redis.call('DEL', key)
  set_with_ttl(key .. '#timestamp', ARGV[1])
end
set_with_ttl(KEYS[3] .. '#timestamp', ARGV[1])
return deleted
