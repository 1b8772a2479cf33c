-- Claim one notification (receiver + group + sequence + state) before sending it, and
-- with the due keys given, schedule the send's guard in the same step.
--
-- KEYS[1]  tocsin:notify:claim:{receiver}:{group}:{seq}:{state}, value "{state}|{token}",
--          or "sending|{token}|{call}" while a send holds it
-- KEYS[2..4] (optional) the send queue's due keys (entries, messages, wake)
-- ARGV[1]  the claiming message's token (the notification id)
-- ARGV[2]  lease of the in-progress claim, in ms
-- ARGV[3]  this call's id: a second run of the same call (redis-py sends a command
--          again when its reply times out, and Redis may run both) answers as the first
-- ARGV[4..7] (with the due keys) the guard: message id, encoded message, how long after
--          the lease that holds the notification it is due (ms), wake-up tokens kept
--
-- Returns {outcome, pttl}: "acquired"; "busy" while another send holds the lease
-- (pttl says when it lapses); otherwise the state that makes this send redundant
-- ("sent", "retrying", "failed", "dead").  The owner of a notification that is
-- waiting for a retry or sits in the dead-letter queue may take it again.
--
-- The guard runs the send again if nothing settles it first: due after this send's
-- lease when acquired (its process may die mid-send), after the other send's when busy
-- (that one's may have died); a redundant send needs none.
local function guard(lease_ms)
  if KEYS[2] then
    due_schedule(KEYS[2], KEYS[3], KEYS[4], ARGV[4], ARGV[5],
                 tonumber(lease_ms) + tonumber(ARGV[6]), ARGV[7])
  end
end

local sending = 'sending|' .. ARGV[1] .. '|' .. ARGV[3]
local value = redis.call('GET', KEYS[1])
if not value then
  redis.call('SET', KEYS[1], sending, 'PX', ARGV[2])
  guard(ARGV[2])
  return {'acquired', 0}
end
if value == sending then
  return {'acquired', 0}
end
local sep = string.find(value, '|', 1, true)
local state = string.sub(value, 1, sep - 1)
local owner = string.sub(value, sep + 1)
if state == 'sending' then
  local pttl = redis.call('PTTL', KEYS[1])
  guard(math.max(0, pttl))
  return {'busy', pttl}
end
if owner == ARGV[1] and (state == 'retrying' or state == 'dead' or state == 'failed') then
  redis.call('SET', KEYS[1], sending, 'PX', ARGV[2])
  guard(ARGV[2])
  return {'acquired', 0}
end
return {state, 0}
