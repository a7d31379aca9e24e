-- tollgate: check a key and its client, then admit (count) or report usage.
--
-- One atomic script per request, over keys that share the client's hash tag
-- `{c:<client_id>}`, so it runs unchanged on Redis Cluster.
--
-- Runs after src/store/admit_lib.lua (its constants and helpers: verdict
-- codes, record and counter formats, `int`, `limit`, ...), which the store
-- puts before it in one script.
--
-- KEYS[1]  tg:{c:<id>}:client        hash: status, per_minute, monthly, plan, ..., and
--                                     ctr and ctw, the counters (below)
-- KEYS[2]  tg:{c:<id>}:key:<key_id>  hash: client_id, gen, expires_at, scopes, last_used_at,
--                                     prev_gen, prev_until_ms, ...
-- KEYS[3]  tg:{c:<id>}:win           the window as tollgate kept it until 2026-11 (a hash:
--                                     t, o, n, one field per second): read only while the
--                                     client hash has no `ctr`, then moved into it, deleted
--
-- The counters, fields of the client hash, little-endian doubles (struct
-- '<d', exact integers). `ctr`: the window's total t, its oldest second o
-- and newest second n (Unix seconds), the count of second n, the quota
-- period `used` counts in (its start in Unix ms; YYYYMM of the UTC month
-- without billing arguments; 0: none yet), and `used` (48 bytes). `ctw`:
-- the counts of seconds o ..= n - 1, 0 for a second with none (at most 60 *
-- 8 bytes). The first and last counts are not 0, t is their sum, and
-- n - o <= 60; an empty window is t = o = n = 0 and an empty `ctw`. `ctr` is
-- read in the client's HMGET and written in its HSET: counting costs no
-- command of its own and no conversion from or to decimal text, and `ctw`
-- is read and written only when the second changes (or for a refusal's
-- retry instant); docs/rate-limiting.md. Text fields `mon` and `used` are
-- what tollgate wrote before 2026-11-28; a process of that version may
-- still write them during a rolling upgrade: an admission adds such a
-- `used` in (when its `mon` is the current period) and deletes it.
-- KEYS[4]  tg:{c:<id>}:h:<YYYY-MM-DD> hash (billing, optional): the local day's history,
--                                     f (forwarded), r (rate_limited), q (quota_exceeded),
--                                     x (refunded, written by the refund). The current day's
--                                     f, r, q live in the client hash (hday = the day's key,
--                                     hf, hr, hq), written with `used` at no extra command;
--                                     the first write of a new day adds the previous day's to
--                                     its key, which expires [history] days after that day.
--
-- The client hash also holds, per admission session (one group of one
-- tollgate store, docs/rate-limiting.md "Exactly-once admission"), two
-- fields about the session's last call: s:<session> = its sequence number
-- ("<seq>": applied by this script; "F<seq>": fenced, "V<seq>": voided by
-- settle.lua), and r:<session> = the record of the reply this script gave:
-- its 13 slots as little-endian doubles, then the period it counted in as
-- decimal (RECORD_PERIOD once read), then (billing) a space and the
-- history day key it counted under (RECORD_DAY); a fence is the two
-- doubles -1, now_ms.
-- A session's calls carry increasing sequence numbers, and one is sent
-- only when the previous one is settled.
--
-- ARGV[1]  mode: "admit" (check, then count if both limits have room) or
--          "usage" (check, count nothing, write nothing)
-- ARGV[2]  client id
-- ARGV[3]  key id; "" (usage only) skips the key check
-- ARGV[4]  key generation the caller verified (decimal)
-- ARGV[5]  "+" followed by the scope the route needs; "" for none
-- ARGV[6]  default per-minute limit, ARGV[7] default monthly quota
-- ARGV[8]  now in Unix milliseconds; "" to read the server's TIME (production; a batch
--          call reads it once for all its admissions, admit_batch.lua)
-- ARGV[9]  admit only: how many requests of this key and scope to admit (n >= 1;
--          "" means 1). Concurrent requests of one key go together in one call
--          (group commit, src/store/group.rs): the script admits
--          min(n, room in the window, room in the month), as n calls in a row would.
-- ARGV[10] admit only, optional: the session's field s:<session>; ARGV[11] the call's
--          sequence number; ARGV[12] the field r:<session>. A call whose sequence number
--          the session has passed, or that was fenced, is refused ({SETTLED}); the same
--          call again (a client library's retry) returns the recorded reply and counts
--          nothing again.
-- ARGV[13] Policies: units one request counts (the route's cost, 1..10000; "" means 1)
-- ARGV[14] Policies: the route's shadow setting, "1" / "0", or "" (not set)
-- ARGV[15] Policies: the plans in force and [limits] shadow, as
--          src/limits/policy.rs `Plans::encoded` writes them:
--          "<0|1>;<name>=<per_minute>,<monthly>,<shadow 0|1>;..." (empty fields: not
--          set; "" for no plans and no shadow). Searched only when the client names a plan.
-- ARGV[16] Policies: spare
-- Billing (docs/billing.md; "" or absent: the UTC calendar month, no history):
-- ARGV[17], ARGV[18] the cycle the caller computed with: quota_day, quota_tz
-- ARGV[19], ARGV[20] that cycle's period [start, end) containing the caller's now, Unix ms
-- ARGV[21], ARGV[22] the local day [start, end) containing it, Unix ms (KEYS[4]'s day)
-- ARGV[23] [history] days: KEYS[4] expires that many days after the day ends
--   When the client's cycle is not ARGV[17..18], or now (TIME) is outside the
--   day (and so, possibly, the period: the day lies within it), the script
--   counts and writes nothing and answers
--   {RECOMPUTE, now_ms, quota_day, quota_tz} (the fields as stored, "" when
--   absent): the caller computes the ranges again for that instant and cycle.
-- ARGV[24] Notifications (src/notify/, docs/billing.md), only when [notify] is set:
--          the thresholds, percent of the monthly quota, ascending, comma-separated
--          ("80,100"). An admission that takes `used` from below T % of the monthly
--          quota to at or above it, in a period where T was not crossed yet, marks
--          T crossed in the client hash (field n<T> = the period) and records a
--          pending notification in the hash tg:{c:<id>}:notify (the key of KEYS[1]
--          with `notify` for `client`: same hash tag, same slot), field
--          "<period>:<T>", value "<used>,<limit>,<period end ms>,<at ms>,<lease ms>",
--          the lease (NOTIFY_LEASE_MS from now) being when a sweep of another
--          process may take it. Reply slot 13: bit i set for the (i+1)-th
--          threshold crossed by this admission (0: none).
--
-- Returns {verdict} for KEY_INVALID and CLIENT_MISSING, else the 13 slots
-- {verdict, now_ms, per_minute, remaining, reset_at, monthly, monthly_used, retry_at_ms or -1,
--  admitted, shadow_verdict, cost, within * 2 + plan_unknown, crossed} as one
-- string of little-endian doubles (RECORD_FORMAT, the session record's first
-- 104 bytes: one bulk reply, which tollgate parses and Redis writes for less
-- than an array of 13 integers; a session record of before 2026-11-28 is
-- replayed as the array it holds): the state after the
-- writes; `admitted` requests (the first ones of the n) were counted, and
-- `verdict` is the answer to the others (ADMITTED when all n were). Policies:
-- of the admitted, the first `within` fitted the limits and the rest were
-- counted under shadow mode, each of them would have got `shadow_verdict`
-- (0 when none was shadowed); `cost` is the units per request; `plan_unknown`
-- is 1 when the client names a plan ARGV[15] does not define (it is then
-- served with the defaults). Slot 13: the thresholds this admission crossed
-- (ARGV[24]; 0 otherwise). Slots 14..19 are for further fields (tollgate
-- reads any whole number of doubles from 9 on); slot 20 is the session
-- record's month, never returned.
-- Corrupt data raises an error whose message starts with TGCORRUPT and names
-- the field, never its value.
--
-- The window is the algorithm of src/limits/window.rs: at an instant in
-- second s it counts the buckets of seconds s-60 ..= s; a bucket of second b
-- leaves at the start of second b+61. Only an admission writes to the
-- counters; a refusal by the limits writes only its day's history, and
-- every other refusal and every usage read leaves the data exactly as it
-- found it.

local client_key, key_key, win_key, day_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local mode, client_id, key_id, gen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local scope = nil
if ARGV[5] ~= '' then
  scope = string.sub(ARGV[5], 2)
end
local wanted = 1
local session, seq, record = nil, nil, nil
if mode == 'admit' and ARGV[10] and ARGV[10] ~= '' then
  session, seq, record = ARGV[10], tonumber(ARGV[11]), ARGV[12]
  if seq == nil or record == nil then
    error({ err = 'ERR tollgate admit.lua: bad sequence number' })
  end
end

if mode ~= 'admit' and mode ~= 'usage' then
  error({ err = 'ERR tollgate admit.lua: unknown mode' })
end

-- (The common "1" and "" are not converted: each `tonumber` of a string
-- costs Redis two `strtod`s.)
if ARGV[9] and ARGV[9] ~= '' and ARGV[9] ~= '1' then
  wanted = tonumber(ARGV[9])
  if wanted == nil or wanted < 1 or wanted ~= floor(wanted) then
    error({ err = 'ERR tollgate admit.lua: bad admit count' })
  end
end

-- Policies: the route's cost and shadow setting, the plans table.
local cost = 1
if ARGV[13] and ARGV[13] ~= '' and ARGV[13] ~= '1' then
  cost = tonumber(ARGV[13])
  if cost == nil or cost < 1 or cost ~= floor(cost) then
    error({ err = 'ERR tollgate admit.lua: bad cost' })
  end
end
local route_shadow, plans = ARGV[14] or '', ARGV[15] or ''
-- Set by the admission below, reported in reply slots 10 and 12.
local shadow_verdict, within, plan_unknown = 0, 0, 0

local now_ms
if ARGV[8] ~= '' then
  now_ms = int(ARGV[8], 'now_ms argument')
else
  local t = call('TIME')
  now_ms = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
end
local now_s = floor(now_ms / 1000)

-- The client hash (read first: a repeated call is answered from it).
-- c[7..10]: billing fields (the cycle, today's day and forwarded count;
-- hr and hq are read when needed); c[4], c[5] text `mon` and `used` (see
-- the header); c[11] the counters; c[12] the session.
local c
if session then
  c = call('HMGET', client_key, 'status', 'per_minute', 'monthly', 'mon', 'used', 'plan',
    'quota_day', 'quota_tz', 'hday', 'hf', 'ctr', session)
  local last = c[12]
  if last then
    local applied = tonumber(last)
    if applied == nil then
      -- "F<seq>" / "V<seq>": settled, and so is every call before it.
      if tonumber(string.sub(last, 2)) >= seq then
        return { SETTLED }
      end
    elseif applied > seq then
      return { SETTLED }
    elseif applied == seq then
      local v = call('HGET', client_key, record)
      if v and #v > 104 and string.byte(v, 1) == 0 then
        -- The reply as it was packed (the record's first 104 bytes).
        return string.sub(v, 1, 104)
      end
      local reply = unrecord(v)
      reply[RECORD_PERIOD] = nil
      reply[RECORD_DAY] = nil
      return reply
    end
  end
else
  c = call('HMGET', client_key, 'status', 'per_minute', 'monthly', 'mon', 'used', 'plan',
    'quota_day', 'quota_tz', 'hday', 'hf', 'ctr')
end

-- The key: exists, belongs to the client, not expired, and the caller's
-- generation is the current one, or the previous one (a rotated-out secret)
-- strictly before its grace period ends.
local scopes, last_used_at = '', nil
if key_id ~= '' then
  local k = call('HMGET', key_key, 'client_id', 'gen', 'expires_at', 'scopes', 'last_used_at')
  if not k[1] or k[1] ~= client_id then
    return { KEY_INVALID }
  end
  if k[3] and k[3] ~= '' and int(k[3], 'key expires_at') <= now_s then
    return { KEY_INVALID }
  end
  if k[2] ~= gen then
    -- A rotated-out secret (read only then).
    local p = call('HMGET', key_key, 'prev_gen', 'prev_until_ms')
    if not (p[1] and p[1] == gen and p[2] and now_ms < int(p[2], 'key prev_until_ms')) then
      return { KEY_INVALID }
    end
  end
  scopes, last_used_at = k[4] or '', k[5]
end

-- The client: exists, and its limits.
if not c[1] then
  if call('EXISTS', client_key) == 1 then
    corrupt('client status')
  end
  return { CLIENT_MISSING }
end
if c[1] ~= 'active' and c[1] ~= 'suspended' then
  corrupt('client status')
end

-- Policies: a limit is the client's own, else its plan's, else the default;
-- shadow is the route's, else the plan's, else [limits]' (src/limits/policy.rs).
local plan_pm, plan_mo, plan_shadow = '', '', ''
if c[6] and c[6] ~= '' then
  local at = string.find(plans, ';' .. c[6] .. '=', 1, true)
  if at then
    plan_pm, plan_mo, plan_shadow = string.match(plans, '^([^,;]*),([^,;]*),([^,;]*);',
      at + #c[6] + 2)
    if not plan_pm then
      error({ err = 'ERR tollgate admit.lua: bad plans table' })
    end
  else
    plan_unknown = 1
  end
end
local shadow
if route_shadow ~= '' then
  shadow = route_shadow == '1'
elseif plan_shadow ~= '' then
  shadow = plan_shadow == '1'
else
  shadow = string.sub(plans, 1, 1) == '1'
end
local per_minute = limit(c[2], plan_pm ~= '' and plan_pm or ARGV[6], 'per_minute',
  'default per_minute')
local monthly = limit(c[3], plan_mo ~= '' and plan_mo or ARGV[7], 'monthly', 'default monthly')

-- The counters (fields `ctr` and `ctw`, see the header): the window
-- (`total`, `oldest`, `newest`, `hot` the count of second `newest`, and
-- `cold` the counts of seconds oldest ..= newest - 1, read only when needed)
-- and the period `used` counts in (`c_period`, `c_used` as stored); updated
-- in these variables only, and written only if this request is admitted.
local cutoff = now_s - WINDOW_SECS
local total, oldest, newest, hot = 0, nil, nil, 0
local c_period, c_used = 0, 0
-- `cold` as read (nil: not read yet), and whether it is to be written.
local cold, cold_changed = nil, false

-- Reads `cold` (field `ctw`), once.
local function load_cold()
  if cold == nil then
    cold = call('HGET', client_key, 'ctw') or ''
    if #cold ~= (newest - oldest) * 8 then
      corrupt('client ctw')
    end
  end
end

-- A client hash without `ctr`: the window of KEYS[3], where tollgate kept
-- it until 2026-11, moves into it (a change of representation, not of the
-- count, so a usage read or a refusal may make it too); `used` stays in
-- its text field until an admission adds it in. Returns `ctr`. (Made only
-- for such a hash: every closure a call makes costs Redis time.)
local migrate_window = not c[11] and function()
  local h = call('HGETALL', win_key)
  local t, o, n, counts = 0, nil, nil, {}
  for i = 1, #h, 2 do
    local f, v = h[i], int(h[i + 1], 'window ' .. (#h[i] > 1 and 'bucket' or h[i]))
    if f == 't' then
      t = v
    elseif f == 'o' then
      o = v
    elseif f == 'n' then
      n = v
    else
      counts[int(f, 'window second')] = v
    end
  end
  local moved, parts = pack(COUNTERS, 0, 0, 0, 0, 0, 0), {}
  if o and n and o <= n and n - o <= WINDOW_SECS and counts[o] and counts[n] then
    moved = pack(COUNTERS, t, o, n, counts[n], 0, 0)
    for sec = o, n - 1 do
      parts[#parts + 1] = pack('<d', counts[sec] or 0)
    end
  elseif #h > 0 and (t ~= 0 or o or n) then
    corrupt('window t')
  end
  call('HSET', client_key, 'ctr', moved, 'ctw', table.concat(parts))
  if #h > 0 then
    call('DEL', win_key)
  end
  return moved
end

do
  local w = c[11] or migrate_window()
  if #w ~= 48 then
    corrupt('client ctr')
  end
  total, oldest, newest, hot, c_period, c_used = unpack_s(COUNTERS, w)
  if total < 0 or total ~= floor(total) or oldest ~= floor(oldest) or newest ~= floor(newest)
      or newest - oldest > WINDOW_SECS or newest < oldest or c_used < 0
      or c_used ~= floor(c_used) then
    corrupt('client ctr')
  end
  if total == 0 then
    oldest, newest, hot = nil, nil, 0
  elseif newest < cutoff then
    -- Every count has left (this includes an oldest one over 121 s old).
    if newest > oldest then
      cold, cold_changed = '', true
    end
    total, oldest, newest, hot = 0, nil, nil, 0
  elseif oldest < cutoff then
    -- The counts of seconds before the cutoff leave, then the zeros after
    -- them (the newest second's stays: newest >= cutoff).
    load_cold()
    local k = cutoff - oldest
    local v = { unpack_s('<' .. rep('d', k), cold) }
    for i = 1, k do
      total = total - v[i]
    end
    local j = k * 8 + 1
    while string.sub(cold, j, j + 7) == ZERO do
      j = j + 8
    end
    cold, cold_changed = string.sub(cold, j), true
    oldest = newest - #cold / 8
    if total < hot or hot <= 0 then
      corrupt('client ctr')
    end
  end
end

-- The period `used` counts in: with billing, the period's start (Unix ms,
-- ARGV[19]); else the UTC month, YYYYMM; `mon` is it in decimal. `used`
-- counts only while the counters' period is the current one.
local mon, period, period_end, used = nil, nil, '0', 0
-- Billing: the client's quota period (and the day the history counts under).
local billing = false
if ARGV[17] and ARGV[17] ~= '' then
  billing = true
  -- The local day lies within the period (the caller computes both from one
  -- cycle and instant, and a period starts at a local midnight,
  -- src/limits/cycle.rs), so now in the day is now in the period.
  local d_start, d_end = tonumber(ARGV[21]), tonumber(ARGV[22])
  if (c[7] or '1') ~= ARGV[17] or (c[8] or 'UTC') ~= ARGV[18]
      or now_ms < d_start or now_ms >= d_end then
    return { RECOMPUTE, now_ms, c[7] or '', c[8] or '' }
  end
  mon, period_end = ARGV[19], ARGV[20]
  period = tonumber(mon)
  if c_period == period then
    used = c_used
  elseif c_period ~= 0 then
    -- Another period: did the cycle change while the period `used`
    -- counts in had not ended? Then `used` carries into the new cycle's
    -- period (docs/billing.md).
    local m = call('HMGET', client_key, 'mend', 'mtag')
    if m[2] ~= ARGV[17] .. ' ' .. ARGV[18] and m[1] and now_ms < int(m[1], 'client mend') then
      used = c_used
    end
  end
else
  period = period_id(now_s)
  mon = str(period)
  if c_period == period then
    used = c_used
  end
end
-- `mon` and `used` as text: written by a tollgate of before 2026-11-28 (a
-- process not upgraded yet): counted in, and deleted by this admission's
-- write; in the UTC month, YYYYMM, from before billing cycles.
local text_used = c[5] and (c[4] == mon
  or (billing and ARGV[17] == '1' and ARGV[18] == 'UTC' and c[4]
    and int(c[4], 'client mon') == period_id(floor(period / 1000))))
if text_used then
  used = used + int(c[5], 'client used')
end

-- Billing: today's history counts, and whether the client hash holds another day's.
local h_today = billing and c[9] == day_key
local h_f = h_today and tonumber(c[10]) or 0

-- Billing: the helpers of today's history, made below only when a write
-- needs them (a new day, a refusal): the common admission makes none.
local day_refusals, history, refused

-- The reply: the limit state as it stands (after the writes, when
-- admitted), how many requests were admitted and the thresholds crossed,
-- packed (RECORD_FORMAT).
local function state(verdict, admitted, crossed)
  local reset_at
  if oldest then
    reset_at = oldest + BUCKET_LIFETIME_SECS
  else
    reset_at = now_s
    if now_ms % 1000 ~= 0 then
      reset_at = now_s + 1
    end
  end
  local retry_at_ms = -1
  if total + cost > per_minute and cost <= per_minute then
    -- The earliest departure that makes room for one more request of `cost`.
    local left, at = total, now_ms
    if oldest then
      load_cold()
      local v = { unpack_s('<' .. rep('d', newest - oldest), cold) }
      v[newest - oldest + 1] = hot
      for i = 1, newest - oldest + 1 do
        if v[i] > 0 then
          left = left - v[i]
          at = (oldest + i - 1 + BUCKET_LIFETIME_SECS) * 1000
          if left + cost <= per_minute then
            break
          end
        end
      end
    end
    retry_at_ms = at
  end
  return struct.pack(RECORD_FORMAT, verdict, now_ms, per_minute, max(per_minute - total, 0),
    reset_at, monthly, used, retry_at_ms, admitted, shadow_verdict, cost,
    within * 2 + plan_unknown, crossed)
end

if mode == 'usage' then
  if key_id ~= '' and c[1] ~= 'active' then
    return state(CLIENT_SUSPENDED, 0, 0)
  end
  return state(ADMITTED, 0, 0)
end

if c[1] ~= 'active' then
  return state(CLIENT_SUSPENDED, 0, 0)
end
if scope then
  local found = false
  for s in string.gmatch(scopes, '%S+') do
    if s == scope then
      found = true
      break
    end
  end
  if not found then
    return state(SCOPE_DENIED, 0, 0)
  end
end

-- Policies: admitted, in order, as many as both limits have room for at
-- `cost` units each; the first that does not fit gets the refusal (the
-- quota's first), or, under shadow mode, it and the rest are counted anyway.
local month_room = max(monthly - used, 0)
local fits = min(wanted, floor(max(per_minute - total, 0) / cost), floor(month_room / cost))
local admitted, refusal = fits, ADMITTED
if billing and (not h_today or fits < wanted) then
  -- Billing: the client hash's rate-limited and quota-refused counts (hr, hq).
  day_refusals = function()
    local x = call('HMGET', client_key, 'hr', 'hq')
    return tonumber(x[1]) or 0, tonumber(x[2]) or 0
  end

  -- Billing: appends to `t` the client-hash fields that add df forwarded, dr
  -- rate-limited and dq quota-refused requests to today's history; a new day
  -- first adds the previous day's counts to that day's key.
  history = function(t, df, dr, dq)
    local h_r, h_q = 0, 0
    if h_today then
      if dr > 0 or dq > 0 then
        h_r, h_q = day_refusals()
      end
    else
      local old = c[9]
      if old then
        local counts, moved = { tonumber(c[10]) or 0 }, false
        counts[2], counts[3] = day_refusals()
        for i, f in ipairs({ 'f', 'r', 'q' }) do
          if counts[i] > 0 then
            call('HINCRBY', old, f, counts[i])
            moved = true
          end
        end
        if moved then
          -- It ended by this day's start at the latest; kept [history] days.
          local ttl = floor((tonumber(ARGV[21]) - now_ms) / 1000) + 86400 * tonumber(ARGV[23]) + 1
          call('EXPIRE', old, max(ttl, 1))
        end
      end
      t[#t + 1], t[#t + 2] = 'hday', day_key
    end
    if df > 0 or not h_today then
      t[#t + 1], t[#t + 2] = 'hf', str(h_f + df)
    end
    if dr > 0 or not h_today then
      t[#t + 1], t[#t + 2] = 'hr', str(h_r + dr)
    end
    if dq > 0 or not h_today then
      t[#t + 1], t[#t + 2] = 'hq', str(h_q + dq)
    end
  end

  -- Billing: a refusal by the limits, counted in today's history.
  refused = function(dr, dq)
    local t = {}
    history(t, 0, dr, dq)
    if #t > 0 then
      call('HSET', client_key, unpack(t))
    end
  end
end
if fits < wanted then
  refusal = (month_room - fits * cost < cost) and QUOTA_EXHAUSTED or RATE_LIMITED
  if shadow then
    shadow_verdict, admitted = refusal, wanted
  elseif fits == 0 then
    -- Billing: the refused units, in today's history.
    if billing and refusal == QUOTA_EXHAUSTED then
      refused(0, wanted * cost)
    elseif billing then
      refused(wanted * cost, 0)
    end
    return state(refusal, 0, 0)
  end
end
within = fits

-- The writes of this script: the key's last use (once a second), then
-- (below) one HSET of the client hash: the count, the window, the session's
-- record.
local units = admitted * cost
local now_str = str(now_s)
local new_bucket
do
  -- Adds `units` to this second's count (a clock gone back by over the
  -- window's span counts in the window's earliest second, so the bucket
  -- leaves no sooner); new_bucket: the second had none. The common case,
  -- the newest second again, touches only `hot`.
  local sec = now_s
  total = total + units
  if not oldest then
    oldest, newest, hot = sec, sec, units
    new_bucket = true
  else
    sec = max(sec, newest - WINDOW_SECS)
    if sec == newest then
      hot = hot + units
      new_bucket = false
    else
      load_cold()
      cold_changed = true
      if sec > newest then
        cold = cold .. pack('<d', hot) .. rep(ZERO, sec - newest - 1)
        newest, hot = sec, units
        new_bucket = true
      elseif sec < oldest then
        cold = pack('<d', units) .. rep(ZERO, oldest - sec - 1) .. cold
        oldest = sec
        new_bucket = true
      else
        local at = (sec - oldest) * 8
        local b = unpack_s('<d', cold, at + 1)
        cold = string.sub(cold, 1, at) .. pack('<d', b + units) .. string.sub(cold, at + 9)
        new_bucket = b == 0
      end
    end
  end
end
used = used + units

if last_used_at ~= now_str then
  call('HSET', key_key, 'last_used_at', now_str)
end

-- The counters: the window, the period and the count; when the period
-- changed (billing), its end and cycle; then today's history.
-- (Sized for the common write's fields up front, the nils included: a
-- table that grows is rehashed at each power of two.)
local counter = { 'ctr', pack(COUNTERS, total, oldest, newest, hot, period, used),
  nil, nil, nil, nil, nil, nil, nil, nil, nil, nil }
if cold_changed then
  counter[3], counter[4] = 'ctw', cold
end
if billing and c_period ~= period then
  counter[#counter + 1], counter[#counter + 2] = 'mend', period_end
  counter[#counter + 1], counter[#counter + 2] = 'mtag', ARGV[17] .. ' ' .. ARGV[18]
end
if c[5] then
  -- (Text `used`, counted in above or of another period.)
  call('HDEL', client_key, 'used')
end
-- (Units: `forwarded` sums to `used`.)
local rest = (wanted - admitted) * cost
if billing and h_today and rest == 0 then
  -- The common case: one more field in the counter's write.
  counter[#counter + 1], counter[#counter + 2] = 'hf', str(h_f + units)
elseif billing and refusal == QUOTA_EXHAUSTED then
  history(counter, units, 0, rest)
elseif billing then
  history(counter, units, rest, 0)
end
-- Notifications: the thresholds crossed for the first time in this period
-- (after the fixed slots of `counter` above)
-- (integer arithmetic: used * 100 >= T * monthly; exact below 2^53).
local crossed = 0
if ARGV[24] and ARGV[24] ~= '' and monthly > 0 then
  local before, bit, pending = (used - units) * 100, 1, nil
  for t in string.gmatch(ARGV[24], '%d+') do
    local at = tonumber(t) * monthly
    if before < at and used * 100 >= at then
      local mark = 'n' .. t
      if call('HGET', client_key, mark) ~= mon then
        counter[#counter + 1], counter[#counter + 2] = mark, mon
        pending = pending or {}
        pending[#pending + 1] = mon .. ':' .. t
        pending[#pending + 1] = str(used) .. ',' .. str(monthly) .. ',' .. period_end
          .. ',' .. str(now_ms) .. ',' .. str(now_ms + NOTIFY_LEASE_MS)
        crossed = crossed + bit
      end
    end
    bit = bit * 2
  end
  if pending then
    call('HSET', string.sub(client_key, 1, #client_key - 6) .. 'notify', unpack(pending))
  end
end
-- The requests beyond `admitted` are refused, as the next call would refuse them.
local out = state(admitted == wanted and ADMITTED or refusal, admitted, crossed)
if session then
  -- The session's record, in the same write as the monthly counter (see
  -- the header): the reply, then its period (and day).
  counter[#counter + 1] = session
  counter[#counter + 1] = ARGV[11]
  counter[#counter + 1] = record
  counter[#counter + 1] = out .. (billing and mon .. ' ' .. day_key or mon)
  call('HSET', client_key, unpack(counter))
  if new_bucket and now_s % 16 == 0 then
    -- About every 16 s of a busy client: forget sessions idle for long
    -- (stores that went away), so the client hash does not grow.
    local h = call('HGETALL', client_key)
    local stale = {}
    local idle_since = now_ms - SESSION_IDLE_SECS * 1000
    for i = 1, #h, 2 do
      if string.sub(h[i], 1, 2) == 'r:' and unrecord(h[i + 1])[2] < idle_since then
        stale[#stale + 1] = h[i]
        stale[#stale + 1] = 's:' .. string.sub(h[i], 3)
      end
    end
    if #stale > 0 then
      call('HDEL', client_key, unpack(stale))
    end
  end
else
  call('HSET', client_key, unpack(counter))
end
return out
