--[[
Contract v2: apply one usage.updated or credits.updated message atomically
(rules 1-4). Not yet called by the pipeline: the v2 store switches to it.

KEYS[1]  S              entitlements map; the write happens only if it exists
KEYS[2]  value key      S:f_<featureId> or S:credit_<currencyId>
KEYS[3]  S#invalidated  private: time T of the scope's latest invalidation
KEYS[4]  S#keys         private: set of the usage and credit keys written
ARGV[1]  version        epoch ms (decimal string), also compared with T
ARGV[2]  ttl            seconds; -1 for no expiry
ARGV[3]  value JSON

A stored #timestamp is read as Stigg's SDK reads it (leading digits; anything
else counts as absent). Returns 1 when written, 0 when the stored version or
T is newer (stale), -1 when the scope has no entitlements map (policy).
]]
local ttl = tonumber(ARGV[2])
local version = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
if tonumber(redis.call('GET', KEYS[3]) or '0') > version then
  return 0
end
local raw = redis.call('GET', KEYS[2] .. '#timestamp')
local stored = raw and tonumber(string.match(raw, '^%s*(%d+)'))
if stored and stored > version then
  return 0
end
local function set_with_ttl(key, value)
  if ttl > 0 then
    redis.call('SET', key, value, 'EX', ttl)
  else
    redis.call('SET', key, value)
  end
end
set_with_ttl(KEYS[2], ARGV[3])
set_with_ttl(KEYS[2] .. '#timestamp', ARGV[1])
redis.call('SADD', KEYS[4], KEYS[2])
if ttl > 0 then redis.call('EXPIRE', KEYS[4], ttl) else redis.call('PERSIST', KEYS[4]) end
return 1
