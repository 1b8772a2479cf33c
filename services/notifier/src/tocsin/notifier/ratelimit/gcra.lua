-- A per-receiver rate limiter (GCRA): `count` sends per `period`, bursts up to `count`.
--
-- KEYS[1]  tocsin:notify:rate:{receiver}, the theoretical arrival time in ms
-- ARGV[1]  emission interval (period / count) in ms
-- ARGV[2]  burst allowance (count * interval) in ms
--
-- Returns 0 when the send may go now (and books it), else the ms to wait.
-- Server time is used so replicas with skewed clocks share one schedule.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst
if now < allow_at then
  return allow_at - now
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, new_tat - now))
return 0
