--[[
Shared prelude, prepended to every write script when it is registered.

stored_version(key) reads key#timestamp as Stigg's SDK reads it: its leading
digits, anything else counts as absent (nil).

versioned_put(key, value, version, ttl) writes value to key and version (a
decimal string) to key#timestamp, both with ttl seconds (ttl <= 0: no expiry,
and an existing expiry is removed), unless key#timestamp holds a newer version.
Returns 1 when written, 0 when the stored version is newer (CONTRACT.md rule 1).

invalidated_at(key) is the time T kept in the scope's S#invalidated key (0 when
none): writes whose gate is older than T are refused (rule 4).

touch(key, ttl) gives an existing key the ttl (or removes its expiry).

expect_type(key, wanted) and expect_values(keys, from) fail the script with a
WRONGTYPE error before anything is written when a key holds another type than
the store writes (a string value and version, a set index), so a foreign key at
one of our names fails only its own message and is left as it is.
]]
local function expect_type(key, wanted)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= wanted then
    error({err = 'WRONGTYPE ' .. key .. ' holds a ' .. kind .. ', the store writes a ' .. wanted})
  end
end

local function expect_values(keys, from)
  for i = from, #keys do
    expect_type(keys[i], 'string')
    expect_type(keys[i] .. '#timestamp', 'string')
  end
end

local function set_with_ttl(key, value, ttl)
  if ttl > 0 then
    redis.call('SET', key, value, 'EX', ttl)
  else
    redis.call('SET', key, value)
  end
end

local function touch(key, ttl)
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  else
    redis.call('PERSIST', key)
  end
end

local function stored_version(key)
  local raw = redis.call('GET', key .. '#timestamp')
  if not raw then return nil end
  return tonumber(string.match(raw, '^%s*(%d+)'))
end

local function versioned_put(key, value, version, ttl)
  local stored = stored_version(key)
  if stored and stored > tonumber(version) then return 0 end
  set_with_ttl(key, value, ttl)
  set_with_ttl(key .. '#timestamp', version, ttl)
  return 1
end

local function invalidated_at(key)
  return tonumber(redis.call('GET', key) or '0') or 0
end
