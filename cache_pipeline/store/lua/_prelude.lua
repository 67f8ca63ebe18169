--[[
Shared prelude, prepended to every write script when it is registered.

stored_version(key) reads key#timestamp as Stigg's SDK reads it: its leading
digits, anything else counts as absent (nil).

versioned_put(key, value, version, ttl, floor) writes value to key and version
(a decimal string) to key#timestamp, both with ttl seconds (ttl <= 0: no expiry,
and an existing expiry is removed), unless key#timestamp holds a newer version,
or floor (optional) is newer: the version an invalidation deleted the key at.
Returns 1 when written, 0 when the stored version is newer (CONTRACT.md rule 1).

deleted_version(tombstones, key) is the version the scope's last invalidations
deleted key at (nil when none), kept in the private hash S#deleted: a usage key
of a snapshot newer than an invalidation may be older than it, and deleting it
must not let an even older one land afterwards (rule 6: a miss, never a stale
hit).

invalidated_at(key) is the time T kept in an invalidation-time key (0 when none):
the scope's S#invalidated, or the environment's P:__invalidated__ ({"all": true}).
refused(scope_key, environment_key, gate) is true when a write whose gate is not
newer than the later of the two must be refused (rule 4): an invalidation at T
removes every version <= T, so a write at T itself lands in no order of delivery.

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

local function deleted_version(tombstones, key)
  return tonumber(redis.call('HGET', tombstones, key) or '')
end

local function versioned_put(key, value, version, ttl, floor)
  local stored = stored_version(key)
  if stored and stored > tonumber(version) then return 0 end
  if floor and floor > tonumber(version) then return 0 end
  set_with_ttl(key, value, ttl)
  set_with_ttl(key .. '#timestamp', version, ttl)
  return 1
end

local function invalidated_at(key)
  return tonumber(redis.call('GET', key) or '0') or 0
end

local function refused(scope_key, environment_key, gate)
  local at = math.max(invalidated_at(scope_key), invalidated_at(environment_key))
  return at > 0 and at >= tonumber(gate)
end
