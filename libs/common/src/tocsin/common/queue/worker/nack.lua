-- nack.lua: dead-letter a fetched message (its retries are spent).
--
-- Dramatiq's dispatch.lua "nack": the message leaves this worker's ack set and
-- moves, data and all, to the queue's dead-letter set, scored by when.
--
-- KEYS[1]  {ns}:__acks__.{worker}.{queue}     set: fetched, unacked message ids
-- KEYS[2]  {ns}:{queue}.msgs                  hash: message id -> encoded message
-- KEYS[3]  {ns}:{queue}.XQ                    sorted set: dead-lettered ids by time (ms)
-- KEYS[4]  {ns}:{queue}.XQ.msgs               hash: dead-lettered id -> encoded message
-- KEYS[5]  {ns}:{queue}.weights               hash: message id -> weight (alerts)
-- KEYS[6]  {ns}:{queue}.backlog               string: weights of messages not yet acked
-- ARGV[1]  now, epoch ms   ARGV[2] message id
if redis.call("SREM", KEYS[1], ARGV[2]) > 0 then
    local w = redis.call("HGET", KEYS[5], ARGV[2])
    if w then
        redis.call("HDEL", KEYS[5], ARGV[2])
        if redis.call("DECRBY", KEYS[6], tonumber(w)) <= 0 then
            redis.call("DEL", KEYS[6])
        end
    end
    local message = redis.call("HGET", KEYS[2], ARGV[2])
    if message then
        redis.call("ZADD", KEYS[3], ARGV[1], ARGV[2])
        redis.call("HSET", KEYS[4], ARGV[2], message)
        redis.call("HDEL", KEYS[2], ARGV[2])
        return 1
    end
end
return 0
