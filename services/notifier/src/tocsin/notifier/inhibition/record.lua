-- Keep the index of firing alerts that inhibit rules read, in transition order.
--
-- KEYS[1]  tocsin:notify:firing     hash: fingerprint -> {"labels": {...}, "at": t} JSON
-- KEYS[2]  tocsin:notify:resolved   sorted set: fingerprint scored by when it resolved
--                                   (a day of tombstones, so a late firing stays dead)
-- ARGV[1]  fingerprint   ARGV[2] transition time   ARGV[3] "firing" or "resolved"
-- ARGV[4]  the firing entry JSON
--
-- Returns 1 when applied, 0 when a newer transition of the alert is already recorded.
local at = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', at - 86400)
local resolved_at = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or '-1')
if resolved_at > at then
  return 0
end
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held then
  local ok, decoded = pcall(cjson.decode, held)
  if ok and tonumber(decoded['at']) and tonumber(decoded['at']) > at then
    return 0
  end
end
if ARGV[3] == 'firing' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], at, ARGV[1])
end
return 1
