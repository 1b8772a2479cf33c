-- recover.lua: heartbeat, and give a dead worker's unacked messages back to their queues.
--
-- A worker beats by writing its id with the time into the heartbeats set (as
-- Dramatiq's dispatch.lua does on every command). A worker whose last beat is
-- older than the timeout is dead: each message in one of its ack sets whose
-- data is still there goes back to the tail of its queue (a delay queue's to
-- the delay queue), a wake-up token is pushed for the queue, and the worker
-- leaves the heartbeats set. This is Dramatiq's maintenance step, run on a
-- clock by every consumer instead of on a random share of commands. Ack set
-- names are found with KEYS, as Dramatiq does: only when a worker has died.
-- Expired dead letters of the listed queues are dropped too. A caller that is
-- idle (runs and keeps nothing) and still has messages in its own ack set of a
-- listed queue was sent them by a fetch whose reply was lost: a wake-up token
-- is pushed for that queue, and its next fetch takes them back.
--
-- KEYS[1]  {ns}:__heartbeats__                sorted set: worker id by last beat (ms)
-- ARGV[1]  now, epoch ms   ARGV[2] this worker's id   ARGV[3] heartbeat timeout, ms
-- ARGV[4]  namespace        ARGV[5] wake-up key prefix   ARGV[6] tokens kept
-- ARGV[7]  dead-letter TTL, ms   ARGV[8] "1": this worker is idle
-- ARGV[9..] this worker's queues (dead letters expire here; idle: its ack sets are looked at)
--
-- Returns the number of messages requeued.
local now = tonumber(ARGV[1])
local ns = ARGV[4]

local function wake(queue)
    redis.call("RPUSH", ARGV[5] .. queue, "1")
    redis.call("LTRIM", ARGV[5] .. queue, -tonumber(ARGV[6]), -1)
end

redis.call("ZADD", KEYS[1], now, ARGV[2])
local requeued = 0
local dead = redis.call("ZRANGEBYSCORE", KEYS[1], 0, now - tonumber(ARGV[3]))
for _, worker in ipairs(dead) do
    local prefix = ns .. ":__acks__." .. worker .. "."
    for _, acks in ipairs(redis.call("KEYS", prefix .. "*")) do
        local queue = string.sub(acks, #prefix + 1)
        local pending = ns .. ":" .. queue
        local messages = pending .. ".msgs"
        local moved = 0
        for _, id in ipairs(redis.call("SMEMBERS", acks)) do
            if redis.call("HEXISTS", messages, id) > 0 then
                redis.call("RPUSH", pending, id)
                moved = moved + 1
            end
        end
        redis.call("DEL", acks)
        if moved > 0 then
            local canonical = queue
            if string.sub(queue, -3) == ".DQ" then
                canonical = string.sub(queue, 1, -4)
            end
            wake(canonical)
            requeued = requeued + moved
        end
    end
    redis.call("ZREM", KEYS[1], worker)
end
local expired_before = now - tonumber(ARGV[7])
local idle = ARGV[8] == "1"
for i = 9, #ARGV do
    if idle and redis.call("SCARD", ns .. ":__acks__." .. ARGV[2] .. "." .. ARGV[i]) > 0 then
        wake(ARGV[i])
    end
    local xq = ns .. ":" .. ARGV[i] .. ".XQ"
    local old = redis.call("ZRANGEBYSCORE", xq, 0, expired_before, "LIMIT", 0, 100)
    if #old > 0 then
        redis.call("ZREM", xq, unpack(old))
        redis.call("HDEL", xq .. ".msgs", unpack(old))
    end
end
return requeued
