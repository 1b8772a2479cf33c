-- release.lua: move delayed messages whose time has come onto their queue.
--
-- A delayed message (a retry's back-off) waits in the delay queue, as
-- Dramatiq's RedisBroker writes it: its id on `{queue}.DQ`, its data (with an
-- `eta` option) in `{queue}.DQ.msgs`. The caller reads them, decides which are
-- due, and passes each with its data re-encoded for the queue itself (queue
-- name without `.DQ`, no `eta`). A message another consumer released first is
-- skipped, so two consumers never both release one.
--
-- KEYS[1]  {ns}:{queue}.DQ        list: delayed message ids
-- KEYS[2]  {ns}:{queue}.DQ.msgs   hash: delayed id -> encoded message
-- KEYS[3]  {ns}:{queue}           list: waiting message ids
-- KEYS[4]  {ns}:{queue}.msgs      hash: message id -> encoded message
-- KEYS[5]  tocsin:wake:{queue}    list: wake-up tokens
-- ARGV[1]  tokens kept   ARGV[2], ARGV[3], ...: id, data of each due message
local moved = 0
for i = 2, #ARGV, 2 do
    if redis.call("LREM", KEYS[1], 1, ARGV[i]) > 0 then
        redis.call("HDEL", KEYS[2], ARGV[i])
        redis.call("HSET", KEYS[4], ARGV[i], ARGV[i + 1])
        redis.call("RPUSH", KEYS[3], ARGV[i])
        moved = moved + 1
    end
end
if moved > 0 then
    redis.call("RPUSH", KEYS[5], "1")
    redis.call("LTRIM", KEYS[5], -tonumber(ARGV[1]), -1)
end
return moved
