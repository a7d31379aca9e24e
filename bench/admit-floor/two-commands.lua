-- bench/admit-floor: three-commands.lua with the key's state kept in the
-- client hash (field k:<key id>), so that one HMGET reads both: the least
-- Redis work of an admission under that other data layout. The comparison
-- is made (a field that is there and differs refuses), the field is absent
-- in the benchmark's data, so every admission goes on to count, as in
-- three-commands.lua. KEYS and ARGV as admit.lua's.
local c = redis.call('HMGET', KEYS[1], 'status', 'per_minute', 'monthly', 'ctr', ARGV[10],
  'k:' .. ARGV[3])
if c[6] and c[6] ~= ARGV[4] then
  return { 1 }
end
if c[1] ~= 'active' then
  return { 3 }
end
local t, o, n, h, p, u = 0, 0, 0, 0, 0, 0
if c[4] then
  t, o, n, h, p, u = struct.unpack('<dddddd', c[4])
end
local ctr = struct.pack('<dddddd', t + 1, o, n, h + 1, p, u + 1)
local out = struct.pack('<ddddddddddddd', 0, 0, 0, 0, 0, 0, u + 1, -1, 1, 0, 1, 0, 0)
redis.call('HSET', KEYS[1], 'ctr', ctr, ARGV[10], ARGV[11], ARGV[12], out)
return out
