-- One link of `transact`, on its own key (so on any Redis Cluster slot): it lives the
-- session timeout from now (a hash without an 'id': never a session). KEYS[1]: the
-- link's key; ARGV[3]: its name; ARGV[4]: its value.
redis.call('DEL', key)
redis.call('HSET', key, 'name', sid, 'to', ARGV[4], 'expires_at', now + timeout)
redis.call('PEXPIRE', key, math.max(timeout, 1))
return 1
