-- Rule 8. ARGV[4]: the provider. The first call wins.
if not is_live() or redis.call('HGET', key, 'cache_sticky') == '1' then
  return 0
end
redis.call('HSET', key, 'cache_sticky', 1, 'cache_sticky_at', now, 'provider', ARGV[4])
bump()
return 1
