-- Dispatch again a run whose lease lapsed: its message was lost, or its worker died.
--
-- KEYS[1] = tocsin:sched:leases        (sorted set: run id by lease end, ms)
-- KEYS[2] = tocsin:sched:pending       (hash: run id -> run JSON)
-- KEYS[3] = tocsin:sched:run:{run_id}  (`running {worker}` or `done`)
-- KEYS[4..6] = queue_keys(the job's queue)
-- ARGV[1] = the run id   ARGV[2] = the queue message id   ARGV[3] = the encoded message
-- ARGV[4] = the new lease, ms   ARGV[5] = wake-up tokens kept
--
-- Checked and done in one step, so of two replicas rescuing at once one dispatches.
-- A run already done only has its lease dropped. A `running` mark whose lease lapsed
-- belongs to a worker that stopped renewing it: it is cleared for the new copy.
-- Returns 1 if the run was dispatched again, else 0.
local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not lease then
  return 0
end
local now = redis_now_ms()
if tonumber(lease) > now then
  return 0
end
local mark = redis.call('GET', KEYS[3])
if mark == 'done' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
if mark then
  redis.call('DEL', KEYS[3])
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
queue_push(KEYS[4], KEYS[5], KEYS[6], ARGV[2], ARGV[3], ARGV[5])
return 1
