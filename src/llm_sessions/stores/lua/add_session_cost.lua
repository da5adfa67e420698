-- Rule 7. ARGV[4]: micro-USD to add (an integer string, added exactly by HINCRBY).
if is_live() then
  redis.call('HINCRBY', key, 'cost', ARGV[4])
  bump()
else
  create('', '', 0, 0, ARGV[4])
end
-- The total as a string: a Lua number would round totals above 2^53.
return redis.call('HGET', key, 'cost')
