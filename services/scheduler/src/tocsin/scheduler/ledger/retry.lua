-- A run failed and will be retried: release its mark, keep its lease as a backstop.
--
-- KEYS[1] = tocsin:sched:run:{run_id}   KEYS[2] = tocsin:sched:leases
-- ARGV[1] = the run id   ARGV[2] = how long the retry may take to start, ms
--
-- Should the retry's message be lost, the lease lapses and the run is dispatched again.
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[2], 'XX', redis_now_ms() + tonumber(ARGV[2]), ARGV[1])
return 0
