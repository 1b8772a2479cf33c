-- Put one alert's latest transition in its group and, when no flush of the group is
-- scheduled, schedule one, in the same atomic step (a crash cannot leave a group
-- marked as scheduled with no flush coming).
--
-- KEYS[1]  tocsin:notify:group:{group}:alerts    hash: fingerprint -> GroupedAlert JSON
-- KEYS[2]  tocsin:notify:group:{group}:pending   the token of the scheduled flush
-- KEYS[3]  tocsin:notify:group:{group}           hash: seq, last_firing, last_sent_at
-- KEYS[4..6] due_keys(queue): due entries, their messages, the movers' wake-up list
-- ARGV[1]  fingerprint   ARGV[2] GroupedAlert JSON   ARGV[3] its `at`   ARGV[4] pending TTL ms
-- ARGV[5]  flush token (its message id)   ARGV[6] the encoded flush message
-- ARGV[7]  group_wait ms   ARGV[8] group_interval ms   ARGV[9] now, unix seconds
-- ARGV[10] wake-up tokens kept
--
-- A transition older than the one the group holds is ignored: worker threads can
-- take a firing and its resolve out of order, and the resolve must win.
-- A new group flushes after group_wait; one that notified before, group_interval
-- after its last notification.
-- Returns {1 if this call scheduled a flush else 0, the group hash as a flat list}.
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held then
  local ok, decoded = pcall(cjson.decode, held)
  if ok and tonumber(decoded['at']) and tonumber(decoded['at']) > tonumber(ARGV[3]) then
    return {0, redis.call('HGETALL', KEYS[3])}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if not redis.call('SET', KEYS[2], ARGV[5], 'NX', 'PX', ARGV[4]) then
  return {0, redis.call('HGETALL', KEYS[3])}
end
local delay = tonumber(ARGV[7])
local last_sent = tonumber(redis.call('HGET', KEYS[3], 'last_sent_at') or '0')
if last_sent > 0 then
  delay = math.max(0, (last_sent - tonumber(ARGV[9])) * 1000 + tonumber(ARGV[8]))
end
due_schedule(KEYS[4], KEYS[5], KEYS[6], ARGV[5], ARGV[6], delay, ARGV[10])
return {1, redis.call('HGETALL', KEYS[3])}
