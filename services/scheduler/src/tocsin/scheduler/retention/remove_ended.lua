-- Remove one ended alert and everything keyed by it, atomically, if it is still
-- the alert retention decided about. Python (tocsin.scheduler.alertdata) has
-- read the record and decided it is resolved; this step only checks that the
-- record is byte-for-byte the one read and that its last change is still before
-- the cutoff, so an alert the processor changed meanwhile (a new transition
-- re-scores it) is left alone.
--
-- KEYS: 1 {P}alert:{id}, 2 {P}idx:all, 3 {P}dedup:{fingerprint} (or any key
--   when ARGV[4] is '0'), then ARGV[5] keys to UNLINK (timeline, logs), then
--   the sorted sets to remove the id from (open, resolve:due, per-value indexes).
-- ARGV: 1 the record as read ('' it was absent), 2 alert id, 3 cutoff (epoch s),
--   4 '1' to drop the fingerprint state if it still names this alert, 5 count of
--   keys to UNLINK.
-- Returns 1 if removed, 0 if left alone.

local raw = redis.call('GET', KEYS[1])
if (raw or '') ~= ARGV[1] then return 0 end
local id = ARGV[2]
local score = redis.call('ZSCORE', KEYS[2], id)
if score and tonumber(score) >= tonumber(ARGV[3]) then return 0 end

if ARGV[4] == '1' and redis.call('HGET', KEYS[3], 'id') == id then
  redis.call('UNLINK', KEYS[3])
end
local unlinks = tonumber(ARGV[5])
redis.call('UNLINK', KEYS[1], unpack(KEYS, 4, 3 + unlinks))
redis.call('ZREM', KEYS[2], id)
for k = 4 + unlinks, #KEYS do redis.call('ZREM', KEYS[k], id) end
return 1
