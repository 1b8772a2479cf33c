-- Claim one notification (receiver + group + sequence + state) before sending it.
--
-- KEYS[1]  tocsin:notify:claim:{receiver}:{group}:{seq}:{state}, value "{state}|{token}"
-- ARGV[1]  the claiming message's token (the notification id)
-- ARGV[2]  lease of the in-progress claim, in ms
--
-- Returns {outcome, pttl}: "acquired"; "busy" while another send holds the lease
-- (pttl says when it lapses); otherwise the state that makes this send redundant
-- ("sent", "retrying", "failed", "dead").  The owner of a notification that is
-- waiting for a retry or sits in the dead-letter queue may take it again.
local value = redis.call('GET', KEYS[1])
if not value then
  redis.call('SET', KEYS[1], 'sending|' .. ARGV[1], 'PX', ARGV[2])
  return {'acquired', 0}
end
local sep = string.find(value, '|', 1, true)
local state = string.sub(value, 1, sep - 1)
local owner = string.sub(value, sep + 1)
if state == 'sending' then
  return {'busy', redis.call('PTTL', KEYS[1])}
end
if owner == ARGV[1] and (state == 'retrying' or state == 'dead' or state == 'failed') then
  redis.call('SET', KEYS[1], 'sending|' .. ARGV[1], 'PX', ARGV[2])
  return {'acquired', 0}
end
return {state, 0}
