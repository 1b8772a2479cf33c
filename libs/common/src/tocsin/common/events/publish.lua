-- Assign offsets to one event on several channels, append it to each channel's
-- capped stream and PUBLISH it, as one atomic step.
--
-- KEYS: for each channel i, KEYS[2i-1] = tocsin:chan:{channel} (hash: offset, epoch)
--                           KEYS[2i]   = tocsin:stream:{channel}
-- ARGV[1] = approximate stream cap (MAXLEN ~)
-- ARGV[2] = the event data, already JSON-encoded
-- ARGV[3] = the W3C traceparent, or ""
-- ARGV[3+i] = channel name i (JSON-safe: checked by the caller)
-- ARGV[3+n+i] = pub/sub channel of channel i
--
-- A channel whose hash is missing (new, or lost with a Redis restart) gets a new
-- epoch from the server clock and starts again at offset 1; its old stream, if
-- any, is dropped so offsets and entry ids stay in step.
-- Returns the list of assigned offsets followed by the epochs.

local cap = ARGV[1]
local data = ARGV[2]
local trace = ''
if ARGV[3] ~= '' then
  trace = ',"traceparent":"' .. ARGV[3] .. '"'
end
local n = #KEYS / 2
local offsets = {}
local epochs = {}
for i = 1, n do
  local meta = KEYS[2 * i - 1]
  local stream = KEYS[2 * i]
  local channel = ARGV[3 + i]
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    local now = redis.call('TIME')
    epoch = now[1] .. string.format('%06d', tonumber(now[2]))
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
  end
  local offset = redis.call('HINCRBY', meta, 'offset', 1)
  local frame = '{"type":"event","channel":"' .. channel .. '","offset":' .. offset ..
    ',"epoch":"' .. epoch .. '","data":' .. data .. trace .. '}'
  redis.call('XADD', stream, 'MAXLEN', '~', cap, offset .. '-1', 'f', frame)
  redis.call('PUBLISH', ARGV[3 + n + i], frame)
  offsets[i] = offset
  epochs[i] = epoch
end
for i = 1, n do
  offsets[n + i] = epochs[i]
end
return offsets
