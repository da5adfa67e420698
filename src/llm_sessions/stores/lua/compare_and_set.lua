-- The write half of `transact`: write the record if nobody wrote since it was read.
-- ARGV[4]: the version that was read ('' when there was no key); ARGV[5]: an event to
-- append to the session's log (KEYS[2]; '' for none); ARGV[6]: '1' when the session is
-- new (its log starts afresh); ARGV[7]: how many events the log keeps; ARGV[8]: d, -1
-- when the field/value pairs after it are the whole new record (none: delete the
-- session), else the number of field names that follow it to delete before the pairs
-- after them are set (the changes to the record of version ARGV[4]; none at all: the
-- event alone). It touches the session's keys only (one hash tag: any Redis Cluster
-- slot): its links follow, each written on its own (`write_link`).
-- Returns {1, new version} on success ({1} when the session was deleted), or
-- {0, now, current record} so the caller can retry at once.
local current = redis.call('HGET', key, 'v')
if (current or '') ~= ARGV[4] then
  return {0, now, record()}
end
if ARGV[6] == '1' then
  redis.call('DEL', events)
end
local at = 8
local dropped = tonumber(ARGV[at])
local first = at + 1 + math.max(dropped, 0)
if dropped < 0 then
  redis.call('DEL', key)
  if #ARGV < first then
    delete()
    return {1}
  end
elseif dropped > 0 then
  redis.call('HDEL', key, unpack(ARGV, at + 1, first - 1))
end
if #ARGV >= first then
  redis.call('HSET', key, unpack(ARGV, first))
end
if ARGV[4] == '' then
  redis.call('HSET', key, 'v', fresh_version())
else
  redis.call('HSET', key, 'v', ARGV[4])
  bump()
end
-- Rule 2: live while now - last_used_at <= timeout, so at ttl == 0 it still lives for
-- this millisecond.
local ttl = tonumber(redis.call('HGET', key, 'last_used_at')) + timeout - now
if ttl < 0 then
  delete()
  return {1}
end
if ARGV[5] ~= '' then
  redis.call('RPUSH', events, ARGV[5])
  redis.call('LTRIM', events, -tonumber(ARGV[7]), -1)
end
expire(math.max(ttl, 1))
return {1, redis.call('HGET', key, 'v')}
