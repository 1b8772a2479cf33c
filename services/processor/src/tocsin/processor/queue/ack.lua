-- ack.lua: acknowledge a batch of fetched messages in one call.
--
-- Exactly what Dramatiq's dispatch.lua "ack" does for one message id, for many:
-- a message fetched into this worker's ack set leaves it and its data is dropped;
-- an id no longer in the set (requeued meanwhile) is left alone. The worker's
-- heartbeat is refreshed as every dispatch.lua command does.
--
-- KEYS[1]  {namespace}:__acks__.{worker_id}.{queue}  set: fetched, unacked message ids
-- KEYS[2]  {namespace}:{queue}.msgs                  hash: message id -> message
-- KEYS[3]  {namespace}:__heartbeats__                sorted set: worker id by last beat
-- ARGV[1]  now, epoch ms    ARGV[2] worker id    ARGV[3..] message ids
redis.call("ZADD", KEYS[3], ARGV[1], ARGV[2])
local acked = 0
for i = 3, #ARGV do
    if redis.call("SREM", KEYS[1], ARGV[i]) > 0 then
        redis.call("HDEL", KEYS[2], ARGV[i])
        acked = acked + 1
    end
end
return acked
