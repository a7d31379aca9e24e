-- tollgate: settle an admission call whose reply was lost (docs/rate-limiting.md,
-- "Exactly-once admission").
--
-- admit.lua keeps, per admission session, the last call it applied (see its
-- header: s:<session> = "<seq>", r:<session> = cmsgpack of the reply, the month at index 20).
-- This script asks whether call `seq` of a session was applied, and makes
-- sure a call found not applied never will be: it leaves a fence
-- (s:<session> = "F<seq>") that admit.lua refuses for that call and every
-- earlier one. All keys share the client's hash tag, so it runs on Redis
-- Cluster.
--
-- KEYS[1]  tg:{c:<id>}:client   hash: mon, used, s:<session>, r:<session>
-- KEYS[2]  tg:{c:<id>}:win      the per-minute window (void only)
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

local client_key, win_key = KEYS[1], KEYS[2]
local mode = ARGV[1]

local function str(n)
  return string.format('%d', n)
end

-- Gives back `units` counted in second `sec` of month `period` (YYYYMM): a
-- counter never goes below zero, a month that has ended keeps its count,
-- and a bucket that has left the window is gone already (one still stored
-- after it left moves with `t`, so the window's count is unchanged).
local function give_back(units, sec, period)
  local c = redis.call('HMGET', client_key, 'mon', 'used')
  if c[1] and tonumber(c[1]) == period then
    local used = math.max((tonumber(c[2]) or 0) - units, 0)
    redis.call('HSET', client_key, 'used', str(used))
  end

  local b = tonumber(redis.call('HGET', win_key, str(sec)))
  if b then
    local w = redis.call('HMGET', win_key, 't', 'o', 'n')
    local total = math.max((tonumber(w[1]) or 0) - math.min(units, b), 0)
    local oldest, newest = tonumber(w[2]), tonumber(w[3])
    if b > units then
      redis.call('HSET', win_key, str(sec), str(b - units), 't', str(total))
    elseif total == 0 or oldest == nil or newest == nil then
      redis.call('DEL', win_key)
    else
      -- The bucket is gone: move `o` or `n` to the next bucket that remains.
      redis.call('HDEL', win_key, str(sec))
      if sec == oldest then
        for s = sec + 1, newest do
          if redis.call('HEXISTS', win_key, str(s)) == 1 then
            oldest = s
            break
          end
        end
      end
      if sec == newest then
        for s = sec - 1, oldest, -1 do
          if redis.call('HEXISTS', win_key, str(s)) == 1 then
            newest = s
            break
          end
        end
      end
      redis.call('HSET', win_key, 't', str(total), 'o', str(oldest), 'n', str(newest))
    end
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
    redis.call('HSET', client_key, session, 'F' .. ARGV[3], record, cmsgpack.pack({ -1, now_ms }))
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
local reply = cmsgpack.unpack(redis.call('HGET', client_key, record))
-- admit.lua's RECORD_PERIOD: the month the call counted in.
local period = reply[20]
reply[20] = nil
-- Billing: admit.lua's RECORD_DAY, the history key the call counted under
-- (tg:{c:<id>}:h:<date>: the client's hash tag, so the same slot as KEYS[1]).
local day_key = reply[21]
reply[21] = nil
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
