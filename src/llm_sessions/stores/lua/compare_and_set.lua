-- The write half of `transact`: replace the whole record if nobody wrote since it was
-- read. ARGV[4]: the version that was read ('' when there was no key); ARGV[5..]: the
-- new record's field/value pairs (none: delete the session).
-- Returns {1} on success, or {0, now, current record} so the caller can retry at once.
local current = redis.call('HGET', key, 'v')
if (current or '') ~= ARGV[4] then
  return {0, now, record()}
end
redis.call('DEL', key)
if #ARGV < 5 then
  return {1}
end
redis.call('HSET', key, unpack(ARGV, 5))
if ARGV[4] == '' then
  redis.call('HSET', key, 'v', fresh_version())
else
  redis.call('HSET', key, 'v', ARGV[4])
  bump()
end
-- Rule 2: live while now - last_used_at <= timeout, so at ttl == 0 it still lives for
-- this millisecond.
local ttl = tonumber(redis.call('HGET', key, 'last_used_at')) + timeout - now
if ttl >= 0 then
  redis.call('PEXPIRE', key, math.max(ttl, 1))
else
  redis.call('DEL', key)
end
return {1}
