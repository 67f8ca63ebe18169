--[[
Invalidate one key of the environment at time T ({"all": true}, rule 4), for the
SCAN batches of Store.invalidate_environment, after P:__invalidated__ holds T.

KEYS[1]  a value key    P:c_<C>[...] (map, metadata, usage or credit key)
KEYS[2]  S#deleted      (usage and credit keys only) its scope's tombstones
KEYS[3]  S#keys         (usage and credit keys only) its scope's index
ARGV[1]  T              epoch ms (decimal string)
ARGV[2]  ttl            seconds for S#deleted; -1 for no expiry

Deletes the key and its #timestamp sibling when its version is <= T (or it has
none); a key written from a state newer than T stays. For a usage or credit key
the version deleted is remembered in S#deleted, as v2_invalidate_scope.lua does.
Returns the number of keys deleted.
]]
local key = KEYS[1]
local kind = redis.call('TYPE', key .. '#timestamp')['ok']
local version = nil
if kind == 'string' then
  version = stored_version(key)
end
if version and version > tonumber(ARGV[1]) then
  return 0
end
local deleted = redis.call('DEL', key, key .. '#timestamp')
if KEYS[2] and version then
  expect_type(KEYS[2], 'hash')
  local kept = deleted_version(KEYS[2], key)
  if not kept or version > kept then
    redis.call('HSET', KEYS[2], key, version)
  end
  touch(KEYS[2], tonumber(ARGV[2]))
end
if KEYS[3] and redis.call('TYPE', KEYS[3])['ok'] == 'set' then
  redis.call('SREM', KEYS[3], key)
end
return deleted
