-- A link's value, renewed for the session timeout from now; nil when it is not there or
-- has expired. KEYS[1]: the link's key; ARGV[3]: its name.
local f = redis.call('HMGET', key, 'name', 'to', 'expires_at')
if f[1] ~= sid or f[3] == false or tonumber(f[3]) < now then
  return false
end
redis.call('HSET', key, 'expires_at', now + timeout)
redis.call('PEXPIRE', key, math.max(timeout, 1))
return f[2]
