-- Rule 4: existing sessions only.
if not is_live() then
  return 0
end
redis.call('HSET', key, 'last_used_at', now)
redis.call('HINCRBY', key, 'request_count', 1)
bump()
expire(timeout)
return 1
