-- Claim one fire time of one schedule, exactly once across replicas.
--
-- KEYS[1] = tocsin:sched:claim:{schedule}:{fire}  (string, SET NX with expiry)
-- KEYS[2] = tocsin:sched:state:{schedule}         (hash: last_fired, next_fire, ...)
--           `last_fired` is how far the schedule has been handled (run, skipped, or
--           the baseline of a first start); `last_run_fire` the fire time last run.
-- KEYS[3] = tocsin:sched:pending                  (hash: run id -> "{claimed_at} {run JSON}")
-- ARGV[1] = the fire time, Unix seconds (integer)
-- ARGV[2] = the run id
-- ARGV[3] = claim key lifetime, seconds
-- ARGV[4] = the claiming replica's id
-- ARGV[5] = the run, JSON, as it will be enqueued
-- ARGV[6] = the schedule's next fire time after this one, Unix seconds
-- ARGV[7] = "run" to claim the run, "skip" to record a missed fire time as skipped
--
-- The claim key alone makes the claim exclusive while it lives; refusing fire
-- times at or before `last_fired` keeps it exclusive after the key expired, and
-- means a fire time skipped by the catch-up policy is never run later. A claimed
-- run goes into the pending hash in the same step, so a replica killed before it
-- enqueued leaves the run for another replica rather than losing it.
-- Returns 1 if this call claimed (or skipped) the fire time, else 0.

local fire = tonumber(ARGV[1])
local last = tonumber(redis.call('HGET', KEYS[2], 'last_fired') or '-1')
if fire <= last then
  return 0
end
if not redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ARGV[3]) then
  return 0
end
local now = redis.call('TIME')
redis.call('HSET', KEYS[2], 'last_fired', ARGV[1], 'next_fire', ARGV[6])
if ARGV[7] == 'skip' then
  redis.call('HSET', KEYS[2], 'last_skipped', ARGV[1])
  return 1
end
redis.call('HSET', KEYS[2], 'last_run_id', ARGV[2], 'last_run_fire', ARGV[1],
  'last_replica', ARGV[4])
redis.call('HSET', KEYS[3], ARGV[2], now[1] .. ' ' .. ARGV[5])
return 1
