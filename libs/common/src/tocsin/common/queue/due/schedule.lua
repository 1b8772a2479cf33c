-- Keep one message until it is due.
--
-- KEYS[1]  tocsin:due:{queue}         sorted set: message id by due time (ms, Redis clock)
-- KEYS[2]  tocsin:due:{queue}:msgs    hash: message id -> encoded message
-- KEYS[3]  tocsin:due:{queue}:wake    list: wake-up tokens the movers block on
-- ARGV[1]  message id   ARGV[2] encoded message   ARGV[3] delay, ms   ARGV[4] tokens kept
--
-- Scheduling an id again replaces its message and due time (a retried call is harmless).
-- Returns the due time, ms.
return due_schedule(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
