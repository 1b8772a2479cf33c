-- Put one alert's latest transition in its group and reserve the group's flush.
--
-- KEYS[1]  tocsin:notify:group:{group}:alerts    hash: fingerprint -> GroupedAlert JSON
-- KEYS[2]  tocsin:notify:group:{group}:pending   set while a flush is scheduled
-- KEYS[3]  tocsin:notify:group:{group}           hash: seq, last_firing, last_sent_at
-- ARGV[1]  fingerprint   ARGV[2] GroupedAlert JSON   ARGV[3] its `at`   ARGV[4] pending TTL ms
--
-- A transition older than the one the group holds is ignored: worker threads can
-- take a firing and its resolve out of order, and the resolve must win.
-- Returns {1 if the caller must schedule a flush else 0, the group hash as a flat list}.
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held then
  local ok, decoded = pcall(cjson.decode, held)
  if ok and tonumber(decoded['at']) and tonumber(decoded['at']) > tonumber(ARGV[3]) then
    return {0, redis.call('HGETALL', KEYS[3])}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local scheduled = redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[4])
return {scheduled and 1 or 0, redis.call('HGETALL', KEYS[3])}
