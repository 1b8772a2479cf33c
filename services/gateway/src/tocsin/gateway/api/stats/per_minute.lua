-- The alerts-per-minute series of `/v1/stats`, as the JSON array it is served as.
--
-- No KEYS: the keys are ARGV[1] .. minute (tocsin:stats:minute:{epoch minute},
-- integer strings the processor increments; missing = 0).
-- ARGV[1] = the per-minute key prefix, tocsin:stats:minute:
-- ARGV[2] = the current epoch minute
-- ARGV[3] = how many minutes, ending with the current one
-- Returns '[{"minute":<epoch s of the minute>,"count":<n>},...]', oldest first.

local prefix = ARGV[1]
local current = tonumber(ARGV[2])
local minutes = tonumber(ARGV[3])
local parts = {}
for i = 1, minutes do
  local minute = current - minutes + i
  local count = tonumber(redis.call('GET', prefix .. minute)) or 0
  parts[i] = string.format('{"minute":%d,"count":%d}', minute * 60, count)
end
return '[' .. table.concat(parts, ',') .. ']'
