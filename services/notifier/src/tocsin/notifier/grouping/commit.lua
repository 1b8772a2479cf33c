-- Record a group's flush, hand its notification to the queue, forget the resolved
-- alerts it dealt with, and schedule the next flush while alerts are left: one atomic
-- step, so a crash leaves either none or all of it done. A second run of the same call
-- (redis-py sends a command again when its reply times out, and Redis may run both)
-- changes nothing: the first may have removed the group, and another replica's alert may
-- have started a new one under the same key, which must not look notified.
--
-- KEYS[1]  tocsin:notify:group:{group}           hash: seq, last_firing, last_sent_at
-- KEYS[2]  tocsin:notify:group:{group}:alerts    hash: fingerprint -> GroupedAlert JSON
-- KEYS[3]  tocsin:notify:group:{group}:pending   the token of the scheduled flush
-- KEYS[4..6] due_keys(queue): due entries, their messages, the movers' wake-up list
-- KEYS[7..9] queue_keys(queue): waiting ids, messages, consumers' wake-up list
-- KEYS[10] tocsin:notify:commit:{next flush token}   set for a minute: this call ran
-- ARGV[1]  send message id, empty when nothing is sent   ARGV[2] the encoded send message
-- ARGV[3]  state hash of the firing alerts now notified   ARGV[4] now, unix seconds
-- ARGV[5]  next flush token (its message id)   ARGV[6] the encoded next flush message
-- ARGV[7]  group_interval ms   ARGV[8] pending TTL ms   ARGV[9] wake-up tokens kept
-- ARGV[10..] fingerprint, JSON pairs to forget, each only if unchanged since the flush
--            read it (an alert that fired again meanwhile stays)
--
-- Returns the number of alerts left; the group record goes when none is left.
if not redis.call('SET', KEYS[10], '1', 'NX', 'PX', 60000) then
  return redis.call('HLEN', KEYS[2])
end
if ARGV[1] ~= '' then
  queue_push(KEYS[7], KEYS[8], KEYS[9], ARGV[1], ARGV[2], ARGV[9])
  redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('HSET', KEYS[1], 'last_sent_at', ARGV[4])
end
redis.call('HSET', KEYS[1], 'last_firing', ARGV[3])
for i = 10, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
local left = redis.call('HLEN', KEYS[2])
if left == 0 then
  redis.call('DEL', KEYS[1])
elseif redis.call('SET', KEYS[3], ARGV[5], 'NX', 'PX', ARGV[8]) then
  due_schedule(KEYS[4], KEYS[5], KEYS[6], ARGV[5], ARGV[6], ARGV[7], ARGV[9])
end
return left
