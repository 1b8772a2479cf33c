-- Apply one lifecycle decision atomically. Python (tocsin.processor.rules) has
-- decided everything; this step only checks that the decision still holds and
-- writes it: it builds no JSON and takes no decision of its own.
--
-- The publish step of tocsin.common (events/publish.lua) is prepended by the
-- loader as `publish_event(KEYS, ARGV)`, so frames keep its exact format.
--
-- KEYS (every key touched is declared; {T} is the fingerprint's hash tag, so 1, 2,
-- 4 and 5 share one Redis Cluster slot when the alert id was minted with it):
--   1 {P}dedup:{T}fingerprint  hash: the fingerprint state, `v` its version token
--   2 {P}applied:{T}message id string, NX with expiry (ARGV[2] = '': not checked)
--   3 {P}silence:version       compared with ARGV[3] (ARGV[3] = '-': not checked)
--   4 {P}alert:{T}id           the record
--   5 {P}timeline:{T}id        list of transition entries, capped
--   6 {P}open                  sorted set: unresolved ids by last_seen
--   7 {P}resolve:due           sorted set: ids by the time they resolve by themselves
--   8 {P}stats:minute:{m}      messages received in minute m
--   9 {P}cache:tag:alerts      cache generation, incremented on every transition
--   10-12                      the notifications queue: pending, messages, wake-up
--   then r index keys to remove the id from, a index keys to add it to (score
--   ARGV[5]), s known-value sets, 2c channel keys (meta, stream) for publish.lua
--
-- ARGV: 1 expected version, 2 message id, 3 silence version, 4 record JSON
--   ('' none), 5 now, 6 open score ('' remove, '-' untouched), 7 due score (same),
--   8 count a received message (1|0), 9 counts "r a s c f e n" (index removals,
--   index adds, sets, channels, state values, timeline entries, notifications),
--   10 alert id, then: f state values (in STATE_FIELDS order), e timeline
--   entries, n notification id/message pairs, s set members, and for c > 0:
--   event data, traceparent, c channel names.
-- The constants (LIVE_PREFIX, STATE_FIELDS, VERSION_FIELD, APPLIED_TTL,
-- TIMELINE_CAP, STREAM_CAP, WAKEUP_TOKENS_KEPT) are prepended by the loader.
--
-- Returns the outcome of the check: `applied` (now, or by this call's earlier run),
-- `replayed` (message id seen),
-- `conflict` (the fingerprint changed since it was read: decide again) or
-- `stale` (the silences changed since the verdict).

local counts = {}
for n in string.gmatch(ARGV[9], '%d+') do counts[#counts + 1] = tonumber(n) end
local r, a, s, c, nvalues, nentries, nnotes = unpack(counts)

local version = redis.call('HGET', KEYS[1], 'v') or ''
-- This very call ran before: its reply was lost to a timeout and redis-py sent it
-- again (docs/queues.md, "Lost replies"). Each call that writes the state writes a
-- version of its own, so finding that version means its first run applied it.
if version ~= ARGV[1] and nvalues >= VERSION_FIELD and version == ARGV[10 + VERSION_FIELD] then
  return 'applied'
end
if ARGV[3] ~= '-' and (redis.call('GET', KEYS[3]) or '') ~= ARGV[3] then
  return 'stale'
end
if version ~= ARGV[1] then
  return 'conflict'
end
if ARGV[2] ~= '' and not redis.call('SET', KEYS[2], '1', 'NX', 'EX', APPLIED_TTL) then
  return 'replayed'
end
if ARGV[8] == '1' and redis.call('INCR', KEYS[8]) == 1 then
  redis.call('EXPIRE', KEYS[8], 7200)
end

local id = ARGV[10]
local at = 11

if nvalues > 0 then
  local fields = {}
  for i = 1, nvalues do
    fields[2 * i - 1] = STATE_FIELDS[i]
    fields[2 * i] = ARGV[at + i - 1]
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  -- No expiry: an open alert may be quiet for longer than any TTL (a PagerDuty
  -- incident has no deadline); retention deletes the state with its ended alert.
  -- PERSIST also clears the expiry that earlier versions set.
  redis.call('PERSIST', KEYS[1])
  at = at + nvalues
end

if ARGV[4] ~= '' then redis.call('SET', KEYS[4], ARGV[4]) end

if nentries > 0 then
  redis.call('RPUSH', KEYS[5], unpack(ARGV, at, at + nentries - 1))
  redis.call('LTRIM', KEYS[5], -TIMELINE_CAP, -1)
  at = at + nentries
end

if nnotes > 0 then
  for i = 0, nnotes - 1 do
    redis.call('HSET', KEYS[11], ARGV[at + 2 * i], ARGV[at + 2 * i + 1])
    redis.call('RPUSH', KEYS[10], ARGV[at + 2 * i])
  end
  redis.call('RPUSH', KEYS[12], '1')
  redis.call('LTRIM', KEYS[12], -WAKEUP_TOKENS_KEPT, -1)
  at = at + 2 * nnotes
end

if ARGV[6] == '' then redis.call('ZREM', KEYS[6], id)
elseif ARGV[6] ~= '-' then redis.call('ZADD', KEYS[6], ARGV[6], id) end
if ARGV[7] == '' then redis.call('ZREM', KEYS[7], id)
elseif ARGV[7] ~= '-' then redis.call('ZADD', KEYS[7], ARGV[7], id) end

local k = 13
for i = 1, r do redis.call('ZREM', KEYS[k], id); k = k + 1 end
for i = 1, a do redis.call('ZADD', KEYS[k], ARGV[5], id); k = k + 1 end
for i = 1, s do redis.call('SADD', KEYS[k], ARGV[at]); k = k + 1; at = at + 1 end
if r + a > 0 then redis.call('INCR', KEYS[9]) end

if c > 0 then
  local pk, pa = {}, {STREAM_CAP, ARGV[at], ARGV[at + 1]}
  for i = 1, 2 * c do pk[i] = KEYS[k + i - 1] end
  for i = 1, c do
    pa[3 + i] = ARGV[at + 1 + i]
    pa[3 + c + i] = LIVE_PREFIX .. ARGV[at + 1 + i]
  end
  publish_event(pk, pa)
end
return 'applied'
