-- admit.lua: admit one ingest request atomically -- replay, backlog, rate limit, enqueue.
--
-- KEYS[1]  tocsin:ratelimit:{producer}            hash {tokens, at}: the producer's bucket
-- KEYS[2]  tocsin:dramatiq:{queue}                list of message ids (Dramatiq's queue)
-- KEYS[3]  tocsin:dramatiq:{queue}.msgs           hash message id -> message JSON
-- KEYS[4]  tocsin:wake:{queue}                    list: wake-up tokens for idle consumers
-- KEYS[5]  tocsin:dramatiq:{queue}.weights        hash message id -> alerts it carries
-- KEYS[6]  tocsin:dramatiq:{queue}.backlog        string: alerts queued and not yet acked
-- KEYS[7]  tocsin:idempotency:{producer}:{key}    string: the first answer (unused unless ARGV[9])
--
-- ARGV[1] refill rate, tokens per second (<= 0: no rate limit)
-- ARGV[2] bucket size             ARGV[3] cost of this request (alerts)
-- ARGV[4] backlog bound, alerts   ARGV[5] message id        ARGV[6] message JSON
-- ARGV[7] answer body to replay, after the request's digest (64 hex digits) when ARGV[9] is "1"
-- ARGV[8] idempotency TTL, s      ARGV[9] "1": idempotency key given
-- ARGV[10] wake-up tokens kept
--
-- Returns {0, ""} enqueued, {1, first answer} replayed, {2, wait ms} rate limited,
-- {3, backlog} queue too long, {4, ""} key first used with another request. The keys
-- are the queue layer's (`tocsin.common.queue`): the enqueue is Dramatiq's own (HSET
-- the message, RPUSH its id), so any Dramatiq worker consumes it, plus a wake-up token
-- (the list capped at a few tokens) that an idle consumer blocks on, and the message's
-- weight: the alerts it carries, which the backlog counts until the message is acked.

local use_idempotency = ARGV[9] == "1"
if use_idempotency then
    local first = redis.call("GET", KEYS[7])
    if first then
        if string.sub(first, 1, 64) ~= string.sub(ARGV[7], 1, 64) then
            return {4, ""}
        end
        return {1, string.sub(first, 65)}
    end
end

-- Checked before the bucket so that refused work costs the producer no tokens.
local backlog = tonumber(redis.call("GET", KEYS[6]) or "0")
if backlog >= tonumber(ARGV[4]) then
    return {3, tostring(backlog)}
end

local rate = tonumber(ARGV[1])
if rate > 0 then
    local burst = tonumber(ARGV[2])
    -- A batch larger than the bucket would never fit; it may take the whole bucket.
    local cost = math.min(tonumber(ARGV[3]), burst)
    -- Server time, so that every ingest replica agrees on one clock.
    local time = redis.call("TIME")
    local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
    local state = redis.call("HMGET", KEYS[1], "tokens", "at")
    local tokens = tonumber(state[1]) or burst
    local at = tonumber(state[2]) or now
    if now > at then
        tokens = math.min(burst, tokens + (now - at) * rate)
    end
    if tokens < cost then
        return {2, tostring(math.ceil((cost - tokens) / rate * 1000))}
    end
    redis.call("HSET", KEYS[1], "tokens", string.format("%.6f", tokens - cost),
        "at", string.format("%.6f", now))
    redis.call("PEXPIRE", KEYS[1], math.ceil(burst / rate * 1000) + 1000)
end

redis.call("HSET", KEYS[3], ARGV[5], ARGV[6])
redis.call("RPUSH", KEYS[2], ARGV[5])
redis.call("RPUSH", KEYS[4], "1")
redis.call("LTRIM", KEYS[4], -tonumber(ARGV[10]), -1)
redis.call("HSET", KEYS[5], ARGV[5], ARGV[3])
redis.call("INCRBY", KEYS[6], ARGV[3])
if use_idempotency then
    redis.call("SET", KEYS[7], ARGV[7], "EX", ARGV[8])
end
return {0, ""}
