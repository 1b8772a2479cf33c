-- Start a run: take its `running` mark and its lease, unless it is done or running.
--
-- KEYS[1] = tocsin:sched:run:{run_id}  (`running {worker} {message id}` or `done`)
-- KEYS[2] = tocsin:sched:leases        (sorted set: run id by lease end, ms)
-- KEYS[3] = tocsin:sched:pending       (hash: run id -> run JSON)
-- ARGV[1] = `running {worker} {message id}`   ARGV[2] = mark lifetime, ms   ARGV[3] = lease, ms
-- ARGV[4] = the run id   ARGV[5] = the run, JSON
--
-- A run running elsewhere is left to its worker: while that worker lives it renews
-- the lease, and when the lease lapses the dispatcher runs it again.
-- A mark that is this very call's (redis-py sends a command again when its reply
-- times out, and Redis may run both) answers "acquired" again.
-- Returns "acquired", "done" or "busy".
local mark = redis.call('GET', KEYS[1])
if mark == 'done' then
  return 'done'
end
if mark == ARGV[1] then
  return 'acquired'
end
if mark then
  return 'busy'
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], redis_now_ms() + tonumber(ARGV[3]), ARGV[4])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
return 'acquired'
