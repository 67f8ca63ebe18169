--[[
Shared prelude, prepended to every write script when it is registered.

versioned_put(key, value, ts, ts_text, ttl) writes value to key and ts_text to
key#timestamp, both with ttl seconds (ttl <= 0: no expiry, and an existing
expiry is removed), unless key#timestamp already holds a newer version.
Returns 1 when written, 0 when the stored version is newer (CONTRACT.md rule 1).

tombstone(key, ts, ts_text, ttl) deletes key and leaves key#timestamp = ts
(rule 4), unless the stored version is newer. Returns 1 when a value was
deleted, 0 otherwise.

touch(key, ttl) gives an existing key the ttl (or removes its expiry).

invalidated_at(index) is the time T of the scope's latest invalidation (0 when
none), kept in index#timestamp by invalidate_customer: a usage or credit write
older than T is stale even for a key the invalidation never saw (rule 4).

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

local function is_newer(key, ts)
  local stored = redis.call('GET', key .. '#timestamp')
  return stored and tonumber(stored) > ts
end

local function versioned_put(key, value, ts, ts_text, ttl)
  if is_newer(key, ts) then return 0 end
  set_with_ttl(key, value, ttl)
  set_with_ttl(key .. '#timestamp', ts_text, ttl)
  return 1
end

local function tombstone(key, ts, ts_text, ttl)
  if is_newer(key, ts) then return 0 end
  local deleted = redis.call('DEL', key)
  set_with_ttl(key .. '#timestamp', ts_text, ttl)
  return deleted
end

local function invalidated_at(index)
  return tonumber(redis.call('GET', index .. '#timestamp') or '0')
end

local function touch(key, ttl)
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  else
    redis.call('PERSIST', key)
  end
end
