-- A link's value; nil when it is not there or has expired. A link lives the session
-- timeout from its last write (`write_link`): a use does not renew it. KEYS[1]: the
-- link's key; ARGV[3]: its name.
local f = redis.call('HMGET', key, 'name', 'to', 'expires_at')
if f[1] ~= sid or f[3] == false or tonumber(f[3]) < now then
  return false
end
return f[2]
