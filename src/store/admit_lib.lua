-- tollgate: the constants and helpers of admit.lua that depend on no one
-- admission: the store runs this chunk, then admit.lua's
-- (src/store/redis/scripts.rs), so a batch call (admit_batch.lua) makes
-- them once for all its admissions instead of once per admission (each
-- function a chunk defines is a closure Redis allocates on every run).
-- Nothing here reads KEYS or ARGV.

-- Globals looked up once (each use of `math.floor` is two table lookups).
local call, floor, min, max, format = redis.call, math.floor, math.min, math.max, string.format

local ADMITTED, KEY_INVALID, CLIENT_MISSING, CLIENT_SUSPENDED = 0, 1, 2, 3
local SCOPE_DENIED, RATE_LIMITED, QUOTA_EXHAUSTED = 4, 5, 6
-- Not a verdict: this call was settled (fenced, voided or passed) and is refused.
local SETTLED = -1
-- A session idle this long is forgotten (its fields pruned), in seconds.
local SESSION_IDLE_SECS = 600
-- Where a session record keeps the month its call counted in (settle.lua reads it).
local RECORD_PERIOD = 20
-- Billing: where it keeps the history key its call counted in (settle.lua reads it).
local RECORD_DAY = 21
-- A session record: the reply's 13 slots as little-endian doubles, then text.
local RECORD_FORMAT = '<ddddddddddddd'
-- The counters (field `ctr`): the window's total, oldest second, newest
-- second and that second's count, the period, used.
local COUNTERS = '<dddddd'
-- Billing: not a verdict: the caller's period or day is not the store's; nothing done.
local RECOMPUTE = -2
-- Notifications: the first lease of a pending notification (src/notify/mod.rs LEASE).
local NOTIFY_LEASE_MS = 20000

local WINDOW_SECS = 60
local BUCKET_LIFETIME_SECS = WINDOW_SECS + 1
-- Lua numbers are doubles: limits are capped where they stay exact.
local MAX_LIMIT = 9007199254740991

local function corrupt(what)
  error({ err = 'TGCORRUPT ' .. what })
end

-- The reply a session record holds, its period at RECORD_PERIOD and its day
-- key at RECORD_DAY (settle.lua reads records the same way). A fence
-- (settle.lua) is two doubles, -1 and its instant; a record written before
-- 2026-11-28 is cmsgpack, whose first byte is never 0 (a double of a small
-- integer, little-endian, starts with 0).
local function unrecord(v)
  if string.byte(v, 1) ~= 0 then
    return cmsgpack.unpack(v)
  end
  if #v == 16 then
    local verdict, at = struct.unpack('<dd', v)
    return { verdict, at }
  end
  local r = { struct.unpack(RECORD_FORMAT, v) }
  local period, day = string.match(v, '^(%d+) ?(.*)$', r[14])
  r[14], r[RECORD_PERIOD] = nil, tonumber(period)
  if day ~= '' then
    r[RECORD_DAY] = day
  end
  return r
end

-- A non-negative integer field, or an error naming it.
local function int(v, what)
  local n = tonumber(v)
  if n == nil or n < 0 or n ~= floor(n) then
    corrupt(what)
  end
  return n
end

local function str(n)
  return format('%d', n)
end

local function limit(own, default, what, default_what)
  local n
  if own and own ~= '' then
    n = int(own, what)
  else
    n = int(default, default_what)
  end
  return min(n, MAX_LIMIT)
end

-- YYYYMM of the UTC month containing `secs` (civil-from-days, H. Hinnant).
local function period_id(secs)
  local z = floor(secs / 86400) + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524)
    - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then
    y = y + 1
  end
  return y * 100 + m
end

-- The struct and string functions of the counters, and a count of 0 packed.
local pack, unpack_s, rep = struct.pack, struct.unpack, string.rep
local ZERO = pack('<d', 0)
