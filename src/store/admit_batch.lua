-- tollgate: several admissions in one script call (src/store/redis/batch.rs).
--
-- Not a script by itself: the store prepends admit_lib.lua (run once per
-- call) and
--   local function admit_one(KEYS, ARGV) <admit.lua, verbatim> end
-- so each admission runs exactly admit.lua, with its own KEYS and ARGV
-- (its own session and sequence number), and its own reply.
--
-- The admissions of one call have as many KEYS and as many ARGV each, and
-- most of their arguments are alike (the store's defaults, plans, billing
-- cycle and day, the route's cost): those travel once. Every argument costs
-- Redis a string object and a Lua string (~850 instructions, measured), so
-- an admission's share of the call is its KEYS and the few arguments that
-- vary (client, key, generation, session, sequence number, ...).
--
-- ARGV[1]  n, the number of admissions
-- ARGV[2]  nk, how many KEYS each admission has; ARGV[3] na, how many ARGV
-- ARGV[4]  v, how many of an admission's ARGV differ between admissions of the
--          call; ARGV[5 .. 4+v] their positions (1..na, ascending)
-- ARGV[5+v .. 4+v+na]  the first admission's ARGV, whole; then, for each further
--          admission in order, its v varying arguments, in the order of the positions
--          (its other arguments are the first admission's)
-- KEYS     the admissions' KEYS, one admission after the other
--
-- One `TIME` for the call: an admission whose ARGV[8] (now) is "" (Redis's
-- clock, as tollgate sends it) is given the call's instant, read as
-- admit.lua reads it, instead of reading `TIME` itself (a `redis.call` less
-- per admission; the admissions run together, atomically, at that instant).
--
-- Returns one reply per admission, in order: admit.lua's reply, or
-- {"E", message} for an admission that raised an error (its data corrupt, a
-- bad argument); the others are not affected.

local n, nk, na, v = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if n == nil or nk == nil or na == nil or v == nil or n < 1 or v > na
    or #KEYS ~= n * nk or #ARGV ~= 4 + v + na + (n - 1) * v then
  return redis.error_reply('ERR tollgate admit_batch.lua: bad header')
end
local at = {}
for j = 1, v do
  at[j] = tonumber(ARGV[4 + j])
  if at[j] == nil or at[j] < 1 or at[j] > na then
    return redis.error_reply('ERR tollgate admit_batch.lua: bad header')
  end
end
local first = 4 + v
-- The first admission's ARGV, the others' template. admit.lua reads ARGV[6],
-- ARGV[7] (the default limits), ARGV[21] and ARGV[22] (the local day) only
-- with `tonumber`, which costs two `strtod`s for a string and nothing for a
-- number: where the admissions share them, they are converted here, once
-- for the call (text that is no number stays text, for admit.lua to refuse).
local template = { unpack(ARGV, first + 1, first + na) }
local shared = { [6] = true, [7] = true, [21] = true, [22] = true }
for j = 1, v do
  shared[at[j]] = nil
end
for j in pairs(shared) do
  if template[j] then
    template[j] = tonumber(template[j]) or template[j]
  end
end
local replies = {}
local now_ms
-- Where the next admission's varying arguments start (after ARGV[a]).
local a = first + na
for i = 1, n do
  -- (Table constructors over `unpack`: sized once, filled in C.)
  local keys = { unpack(KEYS, (i - 1) * nk + 1, i * nk) }
  local argv = { unpack(template, 1, na) }
  if i > 1 then
    for j = 1, v do
      argv[at[j]] = ARGV[a + j]
    end
    a = a + v
  end
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
