-- Lua functions shared by every script that hands messages to a queue now or later.
-- `tocsin.common.queue.due` prepends this file to such scripts, so the layout is
-- written once.
--
-- queue_push(pending, messages, wakeup, id, data, tokens_kept)
--   hands an encoded message to a Dramatiq queue at once (what its "enqueue"
--   does) and pushes a wake-up token for idle consumers.
-- due_schedule(entries, messages, wake, id, data, delay_ms, tokens_kept)
--   keeps an encoded message until `delay_ms` from now (Redis's clock), and wakes
--   the movers when it is now the earliest entry so none oversleeps it.
-- redis_now_ms()
--   Redis's clock in ms: the one clock every process agrees on.
local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function queue_push(pending, messages, wakeup, id, data, tokens_kept)
  redis.call('HSET', messages, id, data)
  redis.call('RPUSH', pending, id)
  redis.call('RPUSH', wakeup, '1')
  redis.call('LTRIM', wakeup, -tonumber(tokens_kept), -1)
end

local function due_schedule(entries, messages, wake, id, data, delay_ms, tokens_kept)
  local due = redis_now_ms() + math.max(0, math.floor(tonumber(delay_ms)))
  local first = redis.call('ZRANGE', entries, 0, 0, 'WITHSCORES')
  redis.call('HSET', messages, id, data)
  redis.call('ZADD', entries, due, id)
  if first[2] == nil or due < tonumber(first[2]) then
    redis.call('RPUSH', wake, '1')
    redis.call('LTRIM', wake, -tonumber(tokens_kept), -1)
  end
  return due
end
