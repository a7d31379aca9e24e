-- tollgate: settle an admission call whose reply was lost (docs/rate-limiting.md,
-- "Exactly-once admission").
--
-- admit.lua keeps, per admission session, the last call it applied (see its
-- header: s:<session> = "<seq>", r:<session> = the record of the reply and its period).
-- This script asks whether call `seq` of a session was applied, and makes
-- sure a call found not applied never will be: it leaves a fence
-- (s:<session> = "F<seq>") that admit.lua refuses for that call and every
-- earlier one. All keys share the client's hash tag, so it runs on Redis
-- Cluster.
--
-- KEYS[1]  tg:{c:<id>}:client   hash: ctr and ctw (the counters: admit.lua's
--                               header), s:<session>, r:<session>
--
-- ARGV[1]  "check": the call's reply, if it was applied (tollgate still has
--          time to answer its requests); "void": the call's requests were
--          answered 503 already, so an applied call is undone
-- ARGV[2]  the field s:<session>, ARGV[3] the call's sequence number,
-- ARGV[4]  the field r:<session>
-- ARGV[5]  now in Unix milliseconds; "" to read the server's TIME (production)
--
-- Policies: mode "refund" gives back an answered admission (`[limits]
-- refund_on`): ARGV[2] its units, ARGV[3] the second it counted in (Unix
-- seconds), ARGV[4] its month (YYYYMM); returns {}.
--
-- Returns {} when the call was not applied (it is fenced now, or was
-- before); {-1} when it was applied and voided before, or the session has
-- moved past it; else the recorded reply of admit.lua (for "void": the reply
-- whose admissions were undone now).

local client_key = KEYS[1]
local mode = ARGV[1]

local function str(n)
  return string.format('%d', n)
end

-- Gives back `units` counted in second `sec` of period `period` (its start
-- in Unix ms; YYYYMM of a UTC month): a counter never goes below zero, a
-- period that has ended keeps its count, and a second's count that has left
-- the window is gone already (one still stored after it left moves with the
-- total, so the window's count is unchanged). The counters are admit.lua's
-- `ctr` and `ctw` (see its header); text `mon` and `used` (a tollgate of before
-- 2026-11-28, during a rolling upgrade) give back what the counters cannot.
local function give_back(units, sec, period)
  local c = redis.call('HMGET', client_key, 'ctr', 'mon', 'used')
  local w = {}
  -- What `used` has still to give back.
  local left = units
  if c[1] and #c[1] == 48 then
    local zero = struct.pack('<d', 0)
    local total, oldest, newest, hot, p, used = struct.unpack('<dddddd', c[1])
    if p == period then
      local give = math.min(left, used)
      used, left = used - give, left - give
    end
    if total > 0 and sec >= oldest and sec <= newest then
      -- The window's counts of seconds oldest ..= newest, the last one hot.
      local counts = (redis.call('HGET', client_key, 'ctw') or '') .. struct.pack('<d', hot)
      local at = (sec - oldest) * 8
      local b = struct.unpack('<d', counts, at + 1)
      local give = math.min(units, b)
      total = math.max(total - give, 0)
      counts = string.sub(counts, 1, at) .. struct.pack('<d', b - give)
        .. string.sub(counts, at + 9)
      -- The first and last counts are not 0.
      while #counts > 0 and string.sub(counts, 1, 8) == zero do
        counts, oldest = string.sub(counts, 9), oldest + 1
      end
      while #counts > 0 and string.sub(counts, -8) == zero do
        counts, newest = string.sub(counts, 1, -9), newest - 1
      end
      if #counts == 0 then
        total, oldest, newest, hot = 0, 0, 0, 0
      else
        hot = struct.unpack('<d', counts, #counts - 7)
        counts = string.sub(counts, 1, -9)
      end
      w[3], w[4] = 'ctw', counts
    end
    w[1], w[2] = 'ctr', struct.pack('<dddddd', total, oldest, newest, hot, p, used)
  end
  if left > 0 and c[3] and tonumber(c[2]) == period then
    w[#w + 1], w[#w + 2] = 'used', str(math.max((tonumber(c[3]) or 0) - left, 0))
  end
  if #w > 0 then
    redis.call('HSET', client_key, unpack(w))
  end
end

-- Policies: a refund (`[limits] refund_on`) is the same give-back, of an
-- admission that was answered, by its units, second and month.
if mode == 'refund' then
  local units, sec, period = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  if units == nil or sec == nil or period == nil or units < 0 then
    error({ err = 'ERR tollgate settle.lua: bad refund arguments' })
  end
  give_back(units, sec, period)
  -- Billing: ARGV[6] the history key of the day the units were counted in
  -- ("" none), ARGV[7] its TTL should it be new: `refunded` (x) up, and
  -- `forwarded` down where it is kept (the client hash's `hf` while that day
  -- is its current day `hday`, else the day key's `f`), never below zero.
  local day_key = ARGV[6]
  if day_key and day_key ~= '' and units > 0 then
    if redis.call('HINCRBY', day_key, 'x', units) == units then
      redis.call('EXPIRE', day_key, tonumber(ARGV[7]) or 1)
    end
    local h = redis.call('HMGET', client_key, 'hday', 'hf')
    local where, field = day_key, 'f'
    if h[1] == day_key then
      where, field = client_key, 'hf'
    end
    local f = tonumber(redis.call('HGET', where, field) or '0')
    redis.call('HSET', where, field, str(math.max(f - units, 0)))
  end
  return {}
end

local session, seq, record = ARGV[2], tonumber(ARGV[3]), ARGV[4]
if (mode ~= 'check' and mode ~= 'void') or seq == nil or record == nil then
  error({ err = 'ERR tollgate settle.lua: bad arguments' })
end

local last = redis.call('HGET', client_key, session)
local applied = last and tonumber(last)
local settled = last and not applied and tonumber(string.sub(last, 2))
if not last or (applied and applied < seq) or (settled and settled < seq) then
  -- Not applied. Fence it, so it never will be: admit.lua refuses a call
  -- at or below a fenced sequence number. (No client: nothing to fence, a
  -- call for a missing client counts nothing.)
  if redis.call('EXISTS', client_key) == 1 then
    local now_ms
    if ARGV[5] ~= '' then
      now_ms = tonumber(ARGV[5])
    else
      local t = redis.call('TIME')
      now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    redis.call('HSET', client_key, session, 'F' .. ARGV[3], record, struct.pack('<dd', -1, now_ms))
  end
  return {}
end
if (applied and applied > seq) or (settled and settled > seq) or string.sub(last, 1, 1) == 'V' then
  return { -1 }
end
if settled then
  -- Fenced at this very call.
  return {}
end
-- The record (admit.lua's `unrecord`): the reply's 13 slots, little-endian
-- doubles, then the period the call counted in, then (billing) a space and
-- the history key it counted under (tg:{c:<id>}:h:<date>: the client's hash tag, so the
-- same slot as KEYS[1]); cmsgpack when written before 2026-11-28.
local v = redis.call('HGET', client_key, record)
local reply, period, day_key
if string.byte(v, 1) ~= 0 then
  reply = cmsgpack.unpack(v)
  period, day_key, reply[20], reply[21] = reply[20], reply[21], nil, nil
else
  reply = { struct.unpack('<ddddddddddddd', v) }
  local p, day = string.match(v, '^(%d+) ?(.*)$', reply[14])
  period, reply[14] = tonumber(p), nil
  if day ~= '' then
    day_key = day
  end
end
if mode == 'check' then
  return reply
end

-- Void: give back what the call counted, in the second and month it
-- counted in.
redis.call('HSET', client_key, session, 'V' .. ARGV[3])
give_back(reply[9] * (reply[11] or 1), math.floor(reply[2] / 1000), period)

-- Billing: the day's forwarded units drop with `used` (never below zero):
-- in the client hash while it is the current day there (hday, hf), else
-- in the day's key (admit.lua's RECORD_DAY, the client's hash tag).
if day_key then
  local units = reply[9] * (reply[11] or 1)
  local h = redis.call('HMGET', client_key, 'hday', 'hf')
  local where, field = day_key, 'f'
  if h[1] == day_key then
    where, field = client_key, 'hf'
  end
  local f = tonumber(redis.call('HGET', where, field))
  if f then
    redis.call('HSET', where, field, str(math.max(f - units, 0)))
  end
end
return reply
