-- Rule 3. ARGV[4]: model, ARGV[5]: tier ('' for none), ARGV[6]: user_explicit '1' or '0'.
if is_live() then
  if redis.call('HGET', key, 'model') ~= ARGV[4] then
    redis.call('HSET', key, 'model', ARGV[4], 'tier', ARGV[5])
  end
  redis.call('HSET', key, 'last_used_at', now)
  redis.call('HINCRBY', key, 'request_count', 1)
  if ARGV[6] == '1' then
    redis.call('HSET', key, 'user_explicit', 1)
  end
  bump()
  expire(timeout)
else
  create(ARGV[4], ARGV[5], ARGV[6], 1, 0)
end
return 1
