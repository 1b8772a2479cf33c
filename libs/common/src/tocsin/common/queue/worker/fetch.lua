-- fetch.lua: take up to N waiting messages into this worker's ack set.
--
-- Dramatiq's dispatch.lua "fetch" for one worker and queue, plus what its
-- caller needs to stay idle cheaply: the worker's heartbeat is refreshed, and
-- the queue's wake-up tokens are dropped when asked (tokens pushed before this
-- fetch belong to messages it takes; one pushed after it stays and wakes the
-- next wait). Before new messages, it hands back what this worker's ack set
-- holds that the caller is not running: an earlier fetch whose reply never
-- arrived (a timeout that redis-py retried on a new connection, Redis frozen
-- or restarted) still ran in Redis, and its messages sit there, where no
-- dead-worker recovery looks while this worker beats.
--
-- KEYS[1]  {ns}:{queue}                       list: waiting message ids
-- KEYS[2]  {ns}:{queue}.msgs                  hash: message id -> encoded message
-- KEYS[3]  {ns}:__acks__.{worker}.{queue}     set: fetched, unacked message ids
-- KEYS[4]  {ns}:__heartbeats__                sorted set: worker id by last beat (ms)
-- KEYS[5]  tocsin:wake:{queue}                list: wake-up tokens
-- KEYS[6]  {ns}:{queue}.weights               hash: message id -> weight (alerts)
-- KEYS[7]  {ns}:{queue}.backlog               string: weights of messages not yet acked
-- ARGV[1]  now, epoch ms   ARGV[2] worker id   ARGV[3] most messages   ARGV[4] "1": drop tokens
-- ARGV[5..] ids the caller holds (running, or kept to give back): not handed back
--
-- Returns a flat list {taken back, id1, data1, id2, data2, ...}: how many of the
-- messages were taken back from the ack set, then the messages; an id whose data is
-- gone (acked by a worker it was requeued away from) is dropped from the ack set.
redis.call("ZADD", KEYS[4], ARGV[1], ARGV[2])
if ARGV[4] == "1" then
    redis.call("DEL", KEYS[5])
end
local most = tonumber(ARGV[3])
local out = {0}
local taken = 0
if redis.call("SCARD", KEYS[3]) > #ARGV - 4 then
    local held = {}
    for i = 5, #ARGV do
        held[ARGV[i]] = true
    end
    for _, id in ipairs(redis.call("SMEMBERS", KEYS[3])) do
        if taken >= most then
            break
        end
        if not held[id] then
            local data = redis.call("HGET", KEYS[2], id)
            if data then
                out[#out + 1] = id
                out[#out + 1] = data
                taken = taken + 1
            else
                redis.call("SREM", KEYS[3], id)
            end
        end
    end
end
out[1] = taken
if taken >= most then
    return out
end
local ids = redis.call("LPOP", KEYS[1], most - taken)
if not ids then
    -- Nothing waits and no weighted message is held anywhere: whatever the backlog
    -- says (a message removed by hand, a lost write) is drift, and it goes.
    if taken == 0 and redis.call("HLEN", KEYS[6]) == 0 then
        redis.call("DEL", KEYS[7])
    end
    return out
end
local data = redis.call("HMGET", KEYS[2], unpack(ids))
for i = 1, #ids do
    if data[i] then
        redis.call("SADD", KEYS[3], ids[i])
        out[#out + 1] = ids[i]
        out[#out + 1] = data[i]
    end
end
return out
