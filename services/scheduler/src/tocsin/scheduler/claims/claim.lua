-- Claim one fire time of one schedule, exactly once across replicas, and hand its run
-- to its queue in the same step.
--
-- KEYS[1] = tocsin:sched:claim:{schedule}:{fire}  (string, SET NX with expiry)
-- KEYS[2] = tocsin:sched:state:{schedule}         (hash: last_fired, next_fire, ...)
--           `last_fired` is how far the schedule has been handled (run, skipped, or
--           the baseline of a first start); `last_run_fire` the fire time last run.
-- KEYS[3] = tocsin:sched:pending                  (hash: run id -> run JSON, until finished)
-- KEYS[4] = tocsin:sched:leases                   (sorted set: run id by lease end, ms)
-- KEYS[5..7] = queue_keys(the job's queue)
-- ARGV[1] = the fire time, Unix seconds (integer)
-- ARGV[2] = the run id
-- ARGV[3] = claim key lifetime, seconds
-- ARGV[4] = the claiming replica's id
-- ARGV[5] = the run, JSON
-- ARGV[6] = the schedule's next fire time after this one, Unix seconds
-- ARGV[7] = "run" to claim the run, "skip" to record a missed fire time as skipped
-- ARGV[8] = the queue message id   ARGV[9] = the encoded queue message
-- ARGV[10] = the run's lease, ms   ARGV[11] = wake-up tokens kept
--
-- The claim key alone makes the claim exclusive while it lives; refusing fire
-- times at or before `last_fired` keeps it exclusive after the key expired, and
-- means a fire time skipped by the catch-up policy is never run later. The run is
-- on its queue and leased in the same step as the claim: until a worker finishes
-- it, a lease that lapses (its message lost, its worker dead) re-dispatches it.
-- Returns 1 if this call claimed (or skipped) the fire time, else 0.

local fire = tonumber(ARGV[1])
local last = tonumber(redis.call('HGET', KEYS[2], 'last_fired') or '-1')
if fire <= last then
  return 0
end
if not redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[2], 'last_fired', ARGV[1], 'next_fire', ARGV[6])
if ARGV[7] == 'skip' then
  redis.call('HSET', KEYS[2], 'last_skipped', ARGV[1])
  return 1
end
redis.call('HSET', KEYS[2], 'last_run_id', ARGV[2], 'last_run_fire', ARGV[1],
  'last_replica', ARGV[4])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[5])
redis.call('ZADD', KEYS[4], redis_now_ms() + tonumber(ARGV[10]), ARGV[2])
queue_push(KEYS[5], KEYS[6], KEYS[7], ARGV[8], ARGV[9], ARGV[11])
return 1
