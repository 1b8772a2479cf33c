-- Hand prediction requests to the `prediction` queue, unless it is already full.
--
-- KEYS[1] = tocsin:dramatiq:prediction          (list: pending message ids)
-- KEYS[2] = tocsin:dramatiq:prediction.msgs     (hash: message id -> encoded message)
-- KEYS[3] = tocsin:wake:prediction              (list: wake-up tokens)
-- ARGV[1] = most pending messages kept (a queue nobody consumes stops growing there)
-- ARGV[2] = wake-up tokens kept
-- ARGV[3..] = message id, encoded message, message id, encoded message, ...
--
-- Returns how many messages were handed over; the rest were dropped, since a
-- prediction is advisory and a late one is worth little.

local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[1])
local handed = 0
for i = 3, #ARGV, 2 do
  if handed >= room then break end
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('RPUSH', KEYS[1], ARGV[i])
  end
  handed = handed + 1
end
if handed > 0 then
  redis.call('RPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[2]), -1)
end
return handed
