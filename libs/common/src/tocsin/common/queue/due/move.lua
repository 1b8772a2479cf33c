-- Move every due message onto its queue, in one atomic step.
--
-- KEYS[1]  tocsin:due:{queue}               sorted set: message id by due time (ms)
-- KEYS[2]  tocsin:due:{queue}:msgs          hash: message id -> encoded message
-- KEYS[3]  tocsin:dramatiq:{queue}          list: the queue's waiting message ids
-- KEYS[4]  tocsin:dramatiq:{queue}.msgs     hash: the queue's messages
-- KEYS[5]  tocsin:wake:{queue}              list: the queue's wake-up tokens
-- ARGV[1]  most messages to move   ARGV[2] wake-up tokens kept
--
-- A message leaves the due set in the same step that puts it on the queue, so a
-- crash or a Redis restart finds it in exactly one of the two.
-- Returns {messages moved, ms until the next entry is due (-1: none left)}.
local now = redis_now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do
  local data = redis.call('HGET', KEYS[2], id)
  if data then
    redis.call('HSET', KEYS[4], id, data)
    redis.call('RPUSH', KEYS[3], id)
    redis.call('HDEL', KEYS[2], id)
  end
  redis.call('ZREM', KEYS[1], id)
end
if #due > 0 then
  redis.call('RPUSH', KEYS[5], '1')
  redis.call('LTRIM', KEYS[5], -tonumber(ARGV[2]), -1)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] == nil then
  return {#due, -1}
end
return {#due, math.max(0, tonumber(first[2]) - now)}
