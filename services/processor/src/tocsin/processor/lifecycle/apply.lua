-- Apply one lifecycle decision atomically. Python (tocsin.processor.rules) has
-- decided everything; this step only checks that the decision still holds and
-- writes it: it builds no JSON and takes no decision of its own.
--
-- The publish step of tocsin.common (events/publish.lua) is prepended by the
-- loader as `publish_event(KEYS, ARGV)`, so frames keep its exact format.
--
-- KEYS (every key touched is declared):
--   1 {P}dedup:{fingerprint}   hash: the fingerprint state, `v` its version token
--   2 {P}applied:{message id}  string, NX with expiry (ARGV[3] = '': not checked)
--   3 {P}silence:version       compared with ARGV[5] (ARGV[5] = '-': not checked)
--   4 {P}alert:{id}            the record
--   5 {P}timeline:{id}         list of transition entries, capped
--   6 {P}open                  sorted set: unresolved ids by last_seen
--   7 {P}resolve:due           sorted set: ids by the time they resolve by themselves
--   8 {P}stats:minute:{m}      messages received in minute m
--   9 {P}cache:tag:alerts      cache generation, incremented on every transition
--   10-12                      the notifications queue: pending, messages, wake-up
--   then r index keys to remove the id from, a index keys to add it to (score
--   ARGV[7]), s known-value sets, 2c channel keys (meta, stream) for publish.lua
--
-- ARGV: 1 expected version, 2 new version, 3 message id, 4 applied ttl,
--   5 silence version, 6 record JSON ('' none), 7 now, 8 open score ('' remove),
--   9 due score ('' remove), 10 state ttl, 11 count a received message (1|0),
--   12 timeline cap, 13 r, 14 a, 15 s, 16 c, 17 state field count (pairs),
--   18 timeline entries, 19 notifications, 20 wake-up tokens kept, 21 alert id,
--   then: state field/value pairs, timeline entries, notification id/message
--   pairs, s set members, and for c > 0: stream cap, event data, traceparent,
--   c channel names, c pub/sub channels.
--
-- Returns the outcome of the check: `applied`, `replayed` (message id seen),
-- `conflict` (the fingerprint changed since it was read: decide again) or
-- `stale` (the silences changed since the verdict).

if ARGV[5] ~= '-' and (redis.call('GET', KEYS[3]) or '') ~= ARGV[5] then
  return 'stale'
end
if (redis.call('HGET', KEYS[1], 'v') or '') ~= ARGV[1] then
  return 'conflict'
end
if ARGV[3] ~= '' and not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then
  return 'replayed'
end
if ARGV[11] == '1' and redis.call('INCR', KEYS[8]) == 1 then
  redis.call('EXPIRE', KEYS[8], 7200)
end

local r, a, s, c = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
local nfields, nentries, nnotes = tonumber(ARGV[17]), tonumber(ARGV[18]), tonumber(ARGV[19])
local at = 22

if nfields > 0 then
  local fields = {}
  for i = 1, 2 * nfields do fields[i] = ARGV[at + i - 1] end
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('EXPIRE', KEYS[1], ARGV[10])
  at = at + 2 * nfields
end

local id = ARGV[21]
if ARGV[6] ~= '' then redis.call('SET', KEYS[4], ARGV[6]) end

if nentries > 0 then
  for i = 0, nentries - 1 do redis.call('RPUSH', KEYS[5], ARGV[at + i]) end
  redis.call('LTRIM', KEYS[5], -tonumber(ARGV[12]), -1)
  at = at + nentries
end

if nnotes > 0 then
  for i = 0, nnotes - 1 do
    redis.call('HSET', KEYS[11], ARGV[at + 2 * i], ARGV[at + 2 * i + 1])
    redis.call('RPUSH', KEYS[10], ARGV[at + 2 * i])
  end
  redis.call('RPUSH', KEYS[12], '1')
  redis.call('LTRIM', KEYS[12], -tonumber(ARGV[20]), -1)
  at = at + 2 * nnotes
end

if ARGV[6] ~= '' then
  if ARGV[8] == '' then redis.call('ZREM', KEYS[6], id) else redis.call('ZADD', KEYS[6], ARGV[8], id) end
  if ARGV[9] == '' then redis.call('ZREM', KEYS[7], id) else redis.call('ZADD', KEYS[7], ARGV[9], id) end
end

local k = 13
for i = 1, r do redis.call('ZREM', KEYS[k], id); k = k + 1 end
for i = 1, a do redis.call('ZADD', KEYS[k], ARGV[7], id); k = k + 1 end
for i = 1, s do redis.call('SADD', KEYS[k], ARGV[at]); k = k + 1; at = at + 1 end
if r + a > 0 then redis.call('INCR', KEYS[9]) end

if c > 0 then
  local pk, pa = {}, {ARGV[at], ARGV[at + 1], ARGV[at + 2]}
  for i = 1, 2 * c do pk[i] = KEYS[k + i - 1] end
  for i = 1, 2 * c do pa[3 + i] = ARGV[at + 2 + i] end
  publish_event(pk, pa)
end
return 'applied'
