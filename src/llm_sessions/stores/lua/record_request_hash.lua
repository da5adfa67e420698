-- Rule 5. ARGV[4]: the request hash. Fields h1..h3 hold the window, oldest first.
if not is_live() then
  return 0
end
local f = redis.call('HMGET', key, 'h1', 'h2', 'h3', 'strikes')
local hashes = {}
for i = 1, 3 do
  if f[i] then hashes[#hashes + 1] = f[i] end
end
local strikes = 0
if #hashes > 0 and hashes[#hashes] == ARGV[4] then
  strikes = tonumber(f[4]) + 1
end
hashes[#hashes + 1] = ARGV[4]
if #hashes > 3 then
  table.remove(hashes, 1)
end
redis.call('HDEL', key, 'h1', 'h2', 'h3')
for i, h in ipairs(hashes) do
  redis.call('HSET', key, 'h' .. i, h)
end
redis.call('HSET', key, 'strikes', strikes)
bump()
return strikes
