-- Start a flush: read the group, and take its pending mark when it is this flush's.
--
-- KEYS[1]  tocsin:notify:group:{group}:alerts    hash: fingerprint -> GroupedAlert JSON
-- KEYS[2]  tocsin:notify:group:{group}:pending   the token of the scheduled flush
-- KEYS[3]  tocsin:notify:group:{group}           hash: seq, last_firing, last_sent_at
-- ARGV[1]  this flush's token
--
-- Clearing the mark first lets alerts added from now on schedule the next flush.
-- A mark holding another token belongs to a flush still to come (this one is a
-- redelivered or stale copy): it stays, so the copy schedules nothing and no
-- second chain of flushes starts.
-- A flush with no token (queued by a notifier before tokens) takes the mark as it did.
-- Returns {alerts as a flat list, group hash as a flat list}.
if ARGV[1] == '' or redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[3])}
