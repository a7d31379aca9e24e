-- bench/admit-floor: the least an admission with tollgate's guarantees can
-- make Redis do, for `bench/admit-compare.py` against src/store/admit.lua
-- (bench/results/2026-11-29-round9-experiments.md). Not a working limiter:
-- no window arithmetic (the count goes into the newest second), no billing,
-- no plans, no notifications, no migration of older data.
--
-- Its three commands are the ones no admission can do without: the key's
-- hash read (its generation: revocation takes effect at once, on every
-- process), the client's hash read (status, limits, counters, and the
-- session's last call for exactly-once), and one write of the counters with
-- the session's record. KEYS and ARGV as admit.lua's.
local c = redis.call('HMGET', KEYS[1], 'status', 'per_minute', 'monthly', 'ctr', ARGV[10])
local k = redis.call('HMGET', KEYS[2], 'client_id', 'gen')
if k[1] ~= ARGV[2] or k[2] ~= ARGV[4] then
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
