-- tollgate: several admissions in one script call (src/store/redis/batch.rs).
--
-- Not a script by itself: the store prepends
--   local function admit_one(KEYS, ARGV) <admit.lua, verbatim> end
-- so each admission runs exactly admit.lua, with its own KEYS and ARGV
-- (its own session and sequence number), and its own reply.
--
-- ARGV[1]  n, the number of admissions
-- ARGV[2i], ARGV[2i+1]  (i = 1..n) how many KEYS and how many ARGV admission i has
-- ARGV[2n+2 ..]  the admissions' arguments, one after the other; KEYS likewise
--
-- One `TIME` for the call: an admission whose ARGV[8] (now) is "" (Redis's
-- clock, as tollgate sends it) is given the call's instant, read as
-- admit.lua reads it, instead of reading `TIME` itself (a `redis.call` less
-- per admission; the admissions run together, atomically, at that instant).
--
-- Returns one reply per admission, in order: admit.lua's reply, or
-- {"E", message} for an admission that raised an error (its data corrupt, a
-- bad argument); the others are not affected.

local n = tonumber(ARGV[1])
if n == nil or n < 1 or #ARGV < 2 * n + 1 then
  return redis.error_reply('ERR tollgate admit_batch.lua: bad header')
end
local replies = {}
local now_ms
local k, a = 0, 2 * n + 1
for i = 1, n do
  local nk, na = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  -- (Table constructors over `unpack`: sized once, filled in C.)
  local keys, argv = { unpack(KEYS, k + 1, k + nk) }, { unpack(ARGV, a + 1, a + na) }
  k, a = k + nk, a + na
  if argv[8] == '' then
    if not now_ms then
      local t = redis.call('TIME')
      now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    argv[8] = now_ms
  end
  local ok, reply = pcall(admit_one, keys, argv)
  if ok then
    replies[i] = reply
  elseif type(reply) == 'table' then
    -- A redis.call error, or admit.lua's error({ err = ... }).
    replies[i] = { 'E', tostring(reply.err) }
  else
    -- Redis 7 hands pcall the message of error({ err = ... }) as a string.
    replies[i] = { 'E', tostring(reply) }
  end
end
return replies
