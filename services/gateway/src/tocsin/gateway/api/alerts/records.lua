-- The records of one cached page, read fresh, as the body of the page's JSON array.
--
-- No KEYS: the keys are ARGV[1] .. id (tocsin:alert:{id}, StoredAlert JSON).
-- ARGV[1] = the record key prefix, tocsin:alert:
-- ARGV[2] = the page's alert ids, a JSON array, in page order
-- Returns the records that still exist, in page order, joined by ','.

local prefix = ARGV[1]
local bodies = {}
for _, id in ipairs(cjson.decode(ARGV[2])) do
  local body = redis.call('GET', prefix .. id)
  if body then bodies[#bodies + 1] = body end
end
return table.concat(bodies, ',')
