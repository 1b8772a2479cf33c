-- The records of one cached page, read fresh, as the body of the page's JSON array.
--
-- No KEYS: the keys are ARGV[1] .. '{' .. the id's last ARGV[3] characters .. '}' .. id
-- (StoredAlert JSON; the hash tag rule of tocsin.common.keys.alert).
-- ARGV[1] = the record key prefix, tocsin:alert:
-- ARGV[2] = the page's alert ids, a JSON array, in page order
-- ARGV[3] = the hash tag's length (tocsin.common.keys.TAG_LENGTH)
-- Returns the records that still exist, in page order, joined by ','.

local prefix = ARGV[1]
local tag = -tonumber(ARGV[3])
local bodies = {}
for _, id in ipairs(cjson.decode(ARGV[2])) do
  local body = redis.call('GET', prefix .. '{' .. string.sub(id, tag) .. '}' .. id)
  if body then bodies[#bodies + 1] = body end
end
return table.concat(bodies, ',')
