-- requeue.lua: give fetched messages back to their queue (shutdown, a batch cut short).
--
-- Dramatiq's dispatch.lua "requeue" for each id, plus a wake-up token so that
-- an idle consumer takes them at once.
--
-- KEYS[1]  {ns}:{queue}                       list: waiting message ids
-- KEYS[2]  {ns}:{queue}.msgs                  hash: message id -> encoded message
-- KEYS[3]  {ns}:__acks__.{worker}.{queue}     set: fetched, unacked message ids
-- KEYS[4]  tocsin:wake:{queue}                list: wake-up tokens
-- ARGV[1]  tokens kept   ARGV[2..] message ids
local moved = 0
for i = 2, #ARGV do
    if redis.call("SREM", KEYS[3], ARGV[i]) > 0 and redis.call("HEXISTS", KEYS[2], ARGV[i]) > 0 then
        redis.call("RPUSH", KEYS[1], ARGV[i])
        moved = moved + 1
    end
end
if moved > 0 then
    redis.call("RPUSH", KEYS[4], "1")
    redis.call("LTRIM", KEYS[4], -tonumber(ARGV[1]), -1)
end
return moved
