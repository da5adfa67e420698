-- Shared by every script (prepended when the scripts are loaded).
-- KEYS[1]: the session's key; KEYS[2], when given: its event log (a list, same hash tag),
-- which lives, expires and goes with the session.  ARGV[1]: now in unix ms, or '' for the server's TIME;
-- ARGV[2]: the session timeout in ms;  ARGV[3]: the session id (kept in field 'id').
local key = KEYS[1]
local events = KEYS[2]
-- The record's fields in the order readers decode them (filled in from redis_core.FIELDS).
local FIELDS = {__FIELDS__}
local timeout = tonumber(ARGV[2])
local sid = ARGV[3]

local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local now
if ARGV[1] == '' then now = server_ms() else now = tonumber(ARGV[1]) end

-- Rule 2: the key holds this id's session and it has not expired. An expired session is
-- absent even if its key outlived its TTL (clock skew): it is never revived.
local function is_live()
  local f = redis.call('HMGET', key, 'id', 'last_used_at')
  return f[1] == sid and f[2] ~= false and now - tonumber(f[2]) <= timeout
end

-- Versions let the routing flow's compare-and-set notice any write in between. A new
-- record starts from the server's clock in microseconds, so a deleted and recreated key
-- never repeats a version a reader may still hold.
local function fresh_version()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end

-- The whole record, in FIELDS order (false for a missing field).
local function record()
  return redis.call('HMGET', key, unpack(FIELDS))
end

local function bump()
  redis.call('HINCRBY', key, 'v', 1)
end

-- The session, and its event log, live `ms` more milliseconds.
local function expire(ms)
  redis.call('PEXPIRE', key, ms)
  if events then
    redis.call('PEXPIRE', events, ms)
  end
end

-- The session and its event log deleted.
local function delete()
  if events then
    redis.call('DEL', key, events)
  else
    redis.call('DEL', key)
  end
end

-- A new session record, replacing whatever expired record the key held.
local function create(model, tier, explicit, count, cost)
  delete()
  redis.call('HSET', key, 'id', sid, 'model', model, 'tier', tier,
    'created_at', now, 'last_used_at', now, 'request_count', count,
    'strikes', 0, 'escalated', 0, 'user_explicit', explicit,
    'cache_sticky', 0, 'cache_sticky_at', 0, 'provider', '', 'cost', cost,
    'v', fresh_version())
  expire(timeout)
end
