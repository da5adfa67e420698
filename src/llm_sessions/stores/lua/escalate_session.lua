-- Rule 6. ARGV[4..9]: for MEDIUM, COMPLEX and REASONING in turn, '1' and a model when
-- `models` names that tier, else '0' and ''.
if not is_live() then
  return false
end
local f = redis.call('HMGET', key, 'user_explicit', 'tier')
if f[1] == '1' then
  return false
end
local rank = ({SIMPLE = 0, MEDIUM = 1, COMPLEX = 2, REASONING = 3})[f[2]] or 1
if rank >= 3 then
  return false
end
local tier = ({'MEDIUM', 'COMPLEX', 'REASONING'})[rank + 1]
redis.call('HSET', key, 'tier', tier, 'escalated', 1, 'strikes', 0)
redis.call('HDEL', key, 'h1', 'h2', 'h3')
local i = 4 + rank * 2
if ARGV[i] == '1' then
  redis.call('HSET', key, 'model', ARGV[i + 1])
end
bump()
return tier
