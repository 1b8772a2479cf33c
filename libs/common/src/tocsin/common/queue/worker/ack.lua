-- ack.lua: acknowledge fetched messages, many in one call.
--
-- Dramatiq's dispatch.lua "ack" for each id: a message still in this worker's
-- ack set leaves it and its data is dropped; an id no longer there (requeued
-- meanwhile, its data belonging to whoever fetched it next) is left alone.
--
-- KEYS[1]  {ns}:__acks__.{worker}.{queue}     set: fetched, unacked message ids
-- KEYS[2]  {ns}:{queue}.msgs                  hash: message id -> encoded message
-- KEYS[3]  {ns}:__heartbeats__                sorted set: worker id by last beat (ms)
-- KEYS[4]  {ns}:{queue}.weights               hash: message id -> weight (alerts)
-- KEYS[5]  {ns}:{queue}.backlog               string: weights of messages not yet acked
-- ARGV[1]  now, epoch ms   ARGV[2] worker id   ARGV[3..] message ids
--
-- An acked message's weight leaves the backlog.
redis.call("ZADD", KEYS[3], ARGV[1], ARGV[2])
local acked = 0
local weight = 0
for i = 3, #ARGV do
    if redis.call("SREM", KEYS[1], ARGV[i]) > 0 then
        redis.call("HDEL", KEYS[2], ARGV[i])
        acked = acked + 1
        local w = redis.call("HGET", KEYS[4], ARGV[i])
        if w then
            redis.call("HDEL", KEYS[4], ARGV[i])
            weight = weight + tonumber(w)
        end
    end
end
if weight > 0 and redis.call("DECRBY", KEYS[5], weight) <= 0 then
    redis.call("DEL", KEYS[5])
end
return acked
