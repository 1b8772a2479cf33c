-- enqueue.lua: hand one encoded message to a queue and wake an idle consumer.
--
-- Dramatiq's dispatch.lua "enqueue" (HSET the message, RPUSH its id) plus the
-- wake-up token every Tocsin enqueue pushes. Writing an id that is already
-- waiting (a step run twice) replaces its data and queues it once more; the
-- consumers' handlers are idempotent by message id.
--
-- KEYS[1]  {ns}:{queue}          list: waiting message ids
-- KEYS[2]  {ns}:{queue}.msgs     hash: message id -> encoded message
-- KEYS[3]  tocsin:wake:{queue}   list: wake-up tokens
-- ARGV[1]  message id   ARGV[2] encoded message   ARGV[3] tokens kept
redis.call("HSET", KEYS[2], ARGV[1], ARGV[2])
redis.call("RPUSH", KEYS[1], ARGV[1])
redis.call("RPUSH", KEYS[3], "1")
redis.call("LTRIM", KEYS[3], -tonumber(ARGV[3]), -1)
return 1
