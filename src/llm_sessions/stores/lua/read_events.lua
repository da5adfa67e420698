-- The live session's event log, oldest first ({} when the session is not live: a log
-- never outlives its session). KEYS[2]: the log's key.
if not is_live() then
  return {}
end
return redis.call('LRANGE', events, 0, -1)
