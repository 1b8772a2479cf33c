-- One cache lookup: the tags' current generations and, unless the caller's own
-- copy is current, the entry stored under them.
--
-- KEYS: the tag generation keys, tocsin:cache:tag:{tag} (strings; missing = 0)
-- ARGV[1] = the entry key prefix, tocsin:cache:entry:
-- ARGV[2] = the query's digest source, "{cache name}|{normalised query}"
-- ARGV[3] = '=' and the generations the caller's own copy was stored under, or ''
--
-- The entry key is the prefix and sha1("{digest source}|{generations}"),
-- generations joined by ':'.
-- Returns {generations, entry}: entry is the stored bytes, false (nil) when
-- there is no entry under the current generations, or the integer 1 when
-- ARGV[3] names the current generations and the entry exists, so the
-- caller's copy is the entry and its bytes need not travel.

local gens = {}
for i, key in ipairs(KEYS) do gens[i] = redis.call('GET', key) or '0' end
local joined = table.concat(gens, ':')
local key = ARGV[1] .. redis.sha1hex(ARGV[2] .. '|' .. joined)
if ARGV[3] == '=' .. joined and redis.call('EXISTS', key) == 1 then
  return {joined, 1}
end
return {joined, redis.call('GET', key)}
