-- ack.lua: acknowledge fetched messages, many in one call.
--
-- Dramatiq's dispatch.lua "ack" for each id: a message still in this worker's
-- ack set leaves it and its data is dropped; an id no longer there (requeued
-- meanwhile, its data belonging to whoever fetched it next) is left alone.
--
-- KEYS[1]  {ns}:__acks__.{worker}.{queue}     set: fetched, unacked message ids
-- KEYS[2]  {ns}:{queue}.msgs                  hash: message id -> encoded message
-- KEYS[3]  {ns}:__heartbeats__                sorted set: worker id by last beat (ms)
-- ARGV[1]  now, epoch ms   ARGV[2] worker id   ARGV[3..] message ids
redis.call("ZADD", KEYS[3], ARGV[1], ARGV[2])
local acked = 0
for i = 3, #ARGV do
    if redis.call("SREM", KEYS[1], ARGV[i]) > 0 then
        redis.call("HDEL", KEYS[2], ARGV[i])
        acked = acked + 1
    end
end
return acked
