-- Renew the leases of the runs one worker is running.
--
-- KEYS[1] = tocsin:sched:leases   (sorted set: run id by lease end, ms)
-- KEYS[2..] = tocsin:sched:run:{run_id} of each run
-- ARGV[1] = lease, ms   ARGV[2] = `running {worker}`, each mark's start   ARGV[3..] = the run ids
--
-- Only a run whose mark is still this worker's is renewed: a run taken over after
-- its lease lapsed belongs to its new worker.
local until_ms = redis_now_ms() + tonumber(ARGV[1])
for i = 2, #KEYS do
  local mark = redis.call('GET', KEYS[i])
  if mark and string.sub(mark, 1, #ARGV[2] + 1) == ARGV[2] .. ' ' then
    redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[i + 1])
  end
end
return 0
