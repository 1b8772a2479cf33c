-- The alert lifecycle as one atomic step per message: idempotency check,
-- deduplication, state transition, timeline, indexes, event publication and
-- notification enqueue all happen here or not at all.
--
-- The publish step of tocsin.common (events/publish.lua) is prepended by the
-- loader as `publish_event(KEYS, ARGV)`, so frames keep its exact format.
--
-- KEYS: none declared (single-node Redis); every key is built from ARGV[1].
-- ARGV[1] = key prefix (`tocsin:`)
-- ARGV[2] = configuration, JSON: window, flap_count, flap_window, applied_ttl,
--           state_ttl, timeline_cap, stream_cap, update_interval,
--           notify_key (Dramatiq queue list), notify_queue, notify_actor
-- ARGV[3] = command: `alert` | `action` | `expire`
--   alert:  4 message id, 5 fingerprint, 6 new record (StoredAlert JSON),
--           7 now (epoch s), 8 now (RFC 3339), 9 silenced `1`|`0`, 10 traceparent,
--           11 received_at (epoch s, as JSON number), 12 the silence version the
--           verdict of 9 was computed from (`stale` is returned, and nothing
--           changed, when the silences have changed since)
--   action: 4 action id, 5 acknowledge|unacknowledge|resolve, 6 alert id, 7 fingerprint,
--           8 by, 9 comment, 10 now, 11 now (RFC 3339), 12 traceparent, 13 received_at
--   expire: 4 alert id, 5 now, 6 now (RFC 3339), 7 auto-resolve timeout (s)
--
-- Keys written (see tocsin.common.keys):
--   {P}applied:{message id}  string, NX with expiry: the message was applied
--   {P}alert:{id}            string, the StoredAlert JSON
--   {P}timeline:{id}         list of transition entries (JSON), capped
--   {P}dedup:{fingerprint}   hash: id (current alert), flips, flapping, pub
--   {P}idx:all, {P}idx:status:{s}, {P}idx:severity:{s}, {P}idx:service:{s},
--   {P}idx:team:{t}          sorted sets, alert id by last change (epoch s)
--   {P}open                  sorted set, unresolved alert id by last_seen
--   {P}services, {P}teams    sets of known values
--   {P}stats:minute:{m}      counter of messages received in epoch minute m
--   {P}cache:tag:alerts      cache generation, incremented on every transition
--   {notify_key}, {notify_key}.msgs   Dramatiq's queue list and message hash
--
-- Returns {outcome, alert id, notified transitions (space separated)}.

local P = ARGV[1]
local cfg = cjson.decode(ARGV[2])
local cmd = ARGV[3]
local null = cjson.null
local RANK = {info = 1, warning = 2, error = 3, critical = 4}
local notified = {}
local clock_now = 0  -- the current command's time, set by its handler

local function chan_value(value)
  -- One `_` per non-ASCII character, as the Python rule does per code point.
  local s = string.gsub(value, '[\192-\247][\128-\191]*', '_')
  s = string.gsub(s, '[^%w_%-]', '_')
  s = string.sub(s, 1, 100)
  if s == '' then s = '_' end
  return s
end

local function team_of(rec)
  local team = rec.labels and rec.labels.team
  if type(team) == 'string' then return team end
  return ''
end

local function publish(rec, text, kind, received_at, trace)
  local channels = {'alerts', 'alerts.severity.' .. chan_value(rec.severity)}
  if rec.service ~= '' then
    channels[#channels + 1] = 'alerts.service.' .. chan_value(rec.service)
  end
  local team = team_of(rec)
  if team ~= '' then channels[#channels + 1] = 'alerts.team.' .. chan_value(team) end
  local n = #channels
  local data = '{"type":"' .. kind .. '","received_at":' .. received_at ..
    ',"alert":' .. text .. '}'
  local k = {}
  local a = {cfg.stream_cap, data, trace}
  for i, channel in ipairs(channels) do
    k[2 * i - 1] = P .. 'chan:' .. channel
    k[2 * i] = P .. 'stream:' .. channel
    a[3 + i] = channel
    a[3 + n + i] = P .. 'live:' .. channel
  end
  publish_event(k, a)
end

local function hash(key)
  local flat = redis.call('HGETALL', key)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- The fingerprint's state; its expiry is renewed by `touch` on every write.
local function state_of(fingerprint)
  local stkey = P .. 'dedup:' .. fingerprint
  return hash(stkey), stkey
end

local function touch(stkey)
  redis.call('EXPIRE', stkey, cfg.state_ttl)
end

local function load(id)
  if not id or id == '' then return nil end
  local raw = redis.call('GET', P .. 'alert:' .. id)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function timeline(rec, kind, at, by, comment)
  rec.transitions = (rec.transitions or 0) + 1
  rec.updated_ts = clock_now
  local key = P .. 'timeline:' .. rec.id
  redis.call('RPUSH', key, cjson.encode({
    seq = rec.transitions, kind = kind, at = at, by = by, comment = comment}))
  redis.call('LTRIM', key, -cfg.timeline_cap, -1)
end

-- Notifications are collected while the record changes and enqueued by `save`
-- with its final encoding; each keeps the sequence number of its transition.
local pending = {}

local function enqueue_notification(rec, kind, seq)
  pending[#pending + 1] = {kind = kind, seq = seq or rec.transitions}
  notified[#notified + 1] = kind
end

-- The W3C traceparent of this call (alert: ARGV[10], action: ARGV[12]) rides in
-- each notification's Dramatiq options, so the notifier's span joins the trace.
local function traceparent_option()
  local trace = (cmd == 'alert' and ARGV[10]) or (cmd == 'action' and ARGV[12]) or ''
  if trace == '' then return '' end
  return ',"traceparent":"' .. trace .. '"'
end

local function emit_notifications(rec, text, now)
  local trace_option = traceparent_option()
  for _, note in ipairs(pending) do
    local nid = rec.id .. ':' .. note.seq
    local request = '{"id":"' .. nid .. '","transition":"' .. note.kind .. '","alert":' ..
      text .. ',"at":' .. now .. '}'
    local message = '{"queue_name":"' .. cfg.notify_queue .. '","actor_name":"' ..
      cfg.notify_actor .. '","args":[' .. request ..
      '],"kwargs":{},"options":{"redis_message_id":"' .. nid .. '"' .. trace_option ..
      '},"message_id":"' .. nid ..
      '","message_timestamp":' .. string.format('%d', math.floor(now * 1000)) .. '}'
    redis.call('HSET', cfg.notify_key .. '.msgs', nid, message)
    redis.call('RPUSH', cfg.notify_key, nid)
    -- The queue layer's wake-up token: an idle notifier blocks on it.
    redis.call('RPUSH', cfg.notify_wake, '1')
    redis.call('LTRIM', cfg.notify_wake, -8, -1)
  end
  pending = {}
end

-- Save the record and move it in every index; `old` is its previous status/severity.
-- The indexes are scored by the last transition, so a duplicate (which changes
-- only `count` and `last_seen`) touches the record and `open` alone.
local function save(rec, old, now)
  local id = rec.id
  local text = cjson.encode(rec)
  redis.call('SET', P .. 'alert:' .. id, text)
  emit_notifications(rec, text, now)
  if old then
    if old.status ~= rec.status then redis.call('ZREM', P .. 'idx:status:' .. old.status, id) end
    if old.severity ~= rec.severity then
      redis.call('ZREM', P .. 'idx:severity:' .. old.severity, id)
    end
  end
  redis.call('ZADD', P .. 'idx:all', now, id)
  redis.call('ZADD', P .. 'idx:status:' .. rec.status, now, id)
  redis.call('ZADD', P .. 'idx:severity:' .. rec.severity, now, id)
  if rec.service ~= '' then
    redis.call('ZADD', P .. 'idx:service:' .. rec.service, now, id)
    if not old then redis.call('SADD', P .. 'services', rec.service) end
  end
  local team = team_of(rec)
  if team ~= '' then
    redis.call('ZADD', P .. 'idx:team:' .. team, now, id)
    if not old then redis.call('SADD', P .. 'teams', team) end
  end
  if rec.status == 'resolved' then
    redis.call('ZREM', P .. 'open', id)
  else
    redis.call('ZADD', P .. 'open', rec.last_seen_ts, id)
  end
  redis.call('INCR', P .. 'cache:tag:alerts')
  return text
end

-- Save a duplicate: only `count`/`last_seen` changed. The cache keeps no
-- copy of either (readers fetch records fresh), so the tag is left alone.
local function save_seen(rec)
  local text = cjson.encode(rec)
  redis.call('SET', P .. 'alert:' .. rec.id, text)
  if rec.status ~= 'resolved' then redis.call('ZADD', P .. 'open', rec.last_seen_ts, rec.id) end
  return text
end

-- Notify unless silenced or held by flapping.
local function notify(rec, st, kind)
  if rec.silenced or st.flapping == '1' then return end
  enqueue_notification(rec, kind)
end

-- A change between firing and resolved: count it and decide flapping.
-- Returns true when the transition's own notification is held.
local function flip(rec, st, stkey, now, at)
  local kept = {}
  for t in string.gmatch(st.flips or '', '[^ ]+') do
    if tonumber(t) > now - cfg.flap_window then kept[#kept + 1] = t end
  end
  kept[#kept + 1] = tostring(now)
  st.flips = table.concat(kept, ' ')
  local was = st.flapping == '1'
  if #kept > cfg.flap_count then
    if not was then
      st.flapping = '1'
      rec.flapping = true
      timeline(rec, 'flapping', at, '', '')
      if not rec.silenced then enqueue_notification(rec, 'flapping') end
    end
  elseif was then
    st.flapping = '0'
    rec.flapping = false
    timeline(rec, 'settled', at, '', '')
  end
  redis.call('HSET', stkey, 'flips', st.flips, 'flapping', st.flapping or '0')
  touch(stkey)
  return st.flapping == '1'
end

local function resolve(rec, by, comment, now, at, received_at, trace)
  local st, stkey = state_of(rec.fingerprint)
  local old = {status = rec.status, severity = rec.severity}
  rec.status = 'resolved'
  rec.resolved_at = at
  rec.resolved_by = by
  timeline(rec, 'resolved', at, by, comment)
  local seq = rec.transitions
  local held = false
  if st.id == rec.id then held = flip(rec, st, stkey, now, at) end
  if not held and not rec.silenced then enqueue_notification(rec, 'resolved', seq) end
  publish(rec, save(rec, old, now), 'alert.resolved', received_at, trace)
end

local function on_alert()
  local msg_id, fingerprint = ARGV[4], ARGV[5]
  local now, at = tonumber(ARGV[7]), ARGV[8]
  clock_now = now
  local silenced, trace, received_at = ARGV[9] == '1', ARGV[10], ARGV[11]
  if (redis.call('GET', P .. 'silence:version') or '') ~= ARGV[12] then
    return {'stale', '', ''}
  end
  if not redis.call('SET', P .. 'applied:' .. msg_id, '1', 'NX', 'EX', cfg.applied_ttl) then
    return {'replayed', '', ''}
  end
  local minute = P .. 'stats:minute:' .. math.floor(now / 60)
  if redis.call('INCR', minute) == 1 then redis.call('EXPIRE', minute, 7200) end
  local new = cjson.decode(ARGV[6])
  local st, stkey = state_of(fingerprint)
  local cur = load(st.id)
  local old = cur and {status = cur.status, severity = cur.severity}

  if cur and (new.status == 'resolved' or cur.status ~= 'resolved') then
    -- The message belongs to the current incident.
    local prev_seen = cur.last_seen_ts
    cur.count = cur.count + 1
    if now > cur.last_seen_ts then
      cur.last_seen = at
      cur.last_seen_ts = now
    end
    if new.status == 'resolved' then
      if cur.status ~= 'resolved' then
        resolve(cur, new.producer, '', now, at, received_at, trace)
        return {'resolved', cur.id, table.concat(notified, ' ')}
      end
    else
      local was_silenced = cur.silenced
      cur.silenced = silenced
      if now - prev_seen > cfg.window then
        -- A repeat after the window is a new firing of the same alert.
        cur.status = 'firing'
        cur.severity = new.severity
        cur.acknowledged_at = null
        cur.acknowledged_by = null
        timeline(cur, 'firing', at, new.producer, 'repeated after the dedup window')
        notify(cur, st, 'firing')
        publish(cur, save(cur, old, now), 'alert.updated', received_at, trace)
        return {'refired', cur.id, table.concat(notified, ' ')}
      end
      if new.severity ~= cur.severity then
        local up = RANK[new.severity] > RANK[cur.severity]
        cur.severity = new.severity
        timeline(cur, 'severity', at, new.producer, old.severity .. ' -> ' .. new.severity)
        if up then notify(cur, st, 'escalated') end
        publish(cur, save(cur, old, now), 'alert.updated', received_at, trace)
        return {'severity', cur.id, table.concat(notified, ' ')}
      end
      if was_silenced and not silenced and cur.status == 'firing' then
        -- Its firing was never notified while silenced: notify now.
        timeline(cur, 'unsilenced', at, '', '')
        notify(cur, st, 'firing')
        publish(cur, save(cur, old, now), 'alert.updated', received_at, trace)
        return {'unsilenced', cur.id, table.concat(notified, ' ')}
      end
    end
    local text = save_seen(cur)
    if now - (tonumber(st.pub) or 0) >= cfg.update_interval then
      redis.call('HSET', stkey, 'pub', tostring(now))
      touch(stkey)
      publish(cur, text, 'alert.updated', received_at, trace)
    end
    return {'duplicate', cur.id, ''}
  end

  -- A new incident of this fingerprint.
  new.silenced = silenced
  new.flapping = st.flapping == '1'
  new.first_seen_ts = now
  new.last_seen_ts = now
  redis.call('HSET', stkey, 'id', new.id)
  touch(stkey)
  st.id = new.id
  if new.status == 'resolved' then
    new.resolved_at = at
    new.resolved_by = new.producer
    timeline(new, 'resolved', at, new.producer, 'first seen resolved')
  else
    timeline(new, 'firing', at, new.producer, '')
    local seq = new.transitions
    local held = false
    if cur then held = flip(new, st, stkey, now, at) end
    if not held and not new.silenced then enqueue_notification(new, 'firing', seq) end
  end
  publish(new, save(new, nil, now), 'alert.created', received_at, trace)
  return {'created', new.id, table.concat(notified, ' ')}
end

local function on_action()
  local action_id, kind = ARGV[4], ARGV[5]
  local alert_id, fingerprint, by, comment = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
  local now, at, trace, received_at = tonumber(ARGV[10]), ARGV[11], ARGV[12], ARGV[13]
  clock_now = now
  if not redis.call('SET', P .. 'applied:' .. action_id, '1', 'NX', 'EX', cfg.applied_ttl) then
    return {'replayed', '', ''}
  end
  if alert_id == '' and fingerprint ~= '' then
    alert_id = redis.call('HGET', P .. 'dedup:' .. fingerprint, 'id') or ''
  end
  local rec = load(alert_id)
  if not rec then return {'unknown', alert_id, ''} end
  local old = {status = rec.status, severity = rec.severity}
  if kind == 'acknowledge' and rec.status == 'firing' then
    local st = state_of(rec.fingerprint)
    rec.status = 'acknowledged'
    rec.acknowledged_at = at
    rec.acknowledged_by = by
    timeline(rec, 'acknowledged', at, by, comment)
    notify(rec, st, 'acknowledged')
    publish(rec, save(rec, old, now), 'alert.acknowledged', received_at, trace)
    return {'acknowledged', rec.id, table.concat(notified, ' ')}
  elseif kind == 'unacknowledge' and rec.status == 'acknowledged' then
    rec.status = 'firing'
    rec.acknowledged_at = null
    rec.acknowledged_by = null
    timeline(rec, 'unacknowledged', at, by, comment)
    publish(rec, save(rec, old, now), 'alert.unacknowledged', received_at, trace)
    return {'unacknowledged', rec.id, ''}
  elseif kind == 'resolve' and rec.status ~= 'resolved' then
    resolve(rec, by, comment, now, at, received_at, trace)
    return {'resolved', rec.id, table.concat(notified, ' ')}
  end
  return {'unchanged', rec.id, ''}
end

local function on_expire()
  local rec = load(ARGV[4])
  local now, at, timeout = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
  clock_now = now
  if not rec then
    redis.call('ZREM', P .. 'open', ARGV[4])
    return {'unknown', ARGV[4], ''}
  end
  if rec.status == 'resolved' or now - rec.last_seen_ts < timeout then
    return {'unchanged', rec.id, ''}
  end
  resolve(rec, 'auto-resolve', 'no repeat within the resolve timeout', now, at, ARGV[5], '')
  return {'resolved', rec.id, table.concat(notified, ' ')}
end

if cmd == 'alert' then return on_alert() end
if cmd == 'action' then return on_action() end
if cmd == 'expire' then return on_expire() end
return redis.error_reply('unknown command ' .. tostring(cmd))
