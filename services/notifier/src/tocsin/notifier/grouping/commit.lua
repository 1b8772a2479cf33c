-- Record a group's flush and forget the resolved alerts it has dealt with.
--
-- KEYS[1]  tocsin:notify:group:{group}           hash: seq, last_firing, last_sent_at
-- KEYS[2]  tocsin:notify:group:{group}:alerts    hash: fingerprint -> GroupedAlert JSON
-- ARGV[1]  "1" when a notification was handed off (bumps seq, sets last_sent_at)
-- ARGV[2]  state hash of the firing alerts now notified
-- ARGV[3]  now, unix seconds
-- ARGV[4..] fingerprint, JSON pairs to forget, each only if unchanged since the flush read it
--           (an alert that fired again meanwhile stays)
--
-- Returns the number of alerts left; the group record goes when none is left.
if ARGV[1] == '1' then
  redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('HSET', KEYS[1], 'last_sent_at', ARGV[3])
end
redis.call('HSET', KEYS[1], 'last_firing', ARGV[2])
for i = 4, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
local left = redis.call('HLEN', KEYS[2])
if left == 0 then
  redis.call('DEL', KEYS[1])
end
return left
