-- The counts of `/v1/stats`, as the JSON object they are cached as.
--
-- KEYS[1] = tocsin:idx:all (every stored alert, a sorted set)
-- KEYS[2] = tocsin:open (unresolved alerts, a sorted set)
-- KEYS[3] = tocsin:services (every service name seen, a set)
-- Other keys are ARGV[1] .. dimension .. ':' .. value (tocsin:idx:{dimension}:{value}).
-- ARGV[1] = the index key prefix, tocsin:idx:
-- ARGV[2] = the statuses, comma-separated, in the order served
-- ARGV[3] = the severities, comma-separated, in the order served
-- ARGV[4] = the most services counted (the first ones by name)
-- Returns {"total":n,"by_status":{...},"open_by_severity":{...},"open_by_service":{...}};
-- open_by_service lists only services with open alerts.

local index_prefix = ARGV[1]

local function members(names, count)
  local parts = {}
  for name in string.gmatch(names, '[^,]+') do
    parts[#parts + 1] = cjson.encode(name) .. ':' .. count(name)
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

local by_status = members(ARGV[2], function(status)
  return redis.call('ZCARD', index_prefix .. 'status:' .. status)
end)
local open_by_severity = members(ARGV[3], function(severity)
  return redis.call('ZINTERCARD', 2, KEYS[2], index_prefix .. 'severity:' .. severity)
end)

local services = redis.call('SMEMBERS', KEYS[3])
table.sort(services)
local open_by_service = {}
for i = 1, math.min(#services, tonumber(ARGV[4])) do
  local open = redis.call('ZINTERCARD', 2, KEYS[2], index_prefix .. 'service:' .. services[i])
  if open > 0 then
    open_by_service[#open_by_service + 1] = cjson.encode(services[i]) .. ':' .. open
  end
end

return '{"total":' .. redis.call('ZCARD', KEYS[1])
  .. ',"by_status":' .. by_status
  .. ',"open_by_severity":' .. open_by_severity
  .. ',"open_by_service":{' .. table.concat(open_by_service, ',') .. '}}'
