-- tollgate: settle an admission call whose reply was lost (docs/rate-limiting.md,
-- "Exactly-once admission").
--
-- admit.lua records every call that counted something under the call's id;
-- this script asks by that id whether the call was applied, and makes sure a
-- call found not applied never will be: it leaves a fence that admit.lua
-- refuses. All keys share the client's hash tag, so it runs on Redis Cluster.
--
-- KEYS[1]  tg:{c:<id>}:op:<call id>   the call's record (see admit.lua)
-- KEYS[2]  tg:{c:<id>}:client         hash: mon, used (void only)
-- KEYS[3]  tg:{c:<id>}:win            the per-minute window (void only)
--
-- ARGV[1]  "check": the call's reply, if it was applied (tollgate still has
--          time to answer its requests); "void": the call's requests were
--          answered 503 already, so an applied call is undone
-- ARGV[2]  how long a fence or void marker is kept, in milliseconds
--
-- Returns {} when the call was not applied (it is fenced now, or was
-- before); {-1} when it was applied and voided before; else the recorded
-- reply of admit.lua (for "void": the reply whose admissions were undone now).

local op_key, client_key, win_key = KEYS[1], KEYS[2], KEYS[3]
local mode, marker_ms = ARGV[1], ARGV[2]
if mode ~= 'check' and mode ~= 'void' then
  error({ err = 'ERR tollgate settle.lua: unknown mode' })
end

local rec = redis.call('GET', op_key)
if not rec then
  -- Not applied, and now it never will be: admit.lua refuses a fenced id.
  redis.call('SET', op_key, 'F', 'PX', marker_ms)
  return {}
end
if rec == 'F' then
  return {}
end
if rec == 'V' then
  return { -1 }
end
local reply = cmsgpack.unpack(rec)
local period = reply[10]
reply[10] = nil
if mode == 'check' then
  return reply
end

-- Void: give back what the call counted, in the second and month it
-- counted in; a counter never goes below zero, a bucket that has left the
-- window is gone already.
local admitted = reply[9]
local sec = math.floor(reply[2] / 1000)
local function str(n)
  return string.format('%d', n)
end

local c = redis.call('HMGET', client_key, 'mon', 'used')
if c[1] and tonumber(c[1]) == period then
  local used = math.max((tonumber(c[2]) or 0) - admitted, 0)
  redis.call('HSET', client_key, 'used', str(used))
end

local b = tonumber(redis.call('HGET', win_key, str(sec)))
if b then
  local w = redis.call('HMGET', win_key, 't', 'o', 'n')
  local total = math.max((tonumber(w[1]) or 0) - math.min(admitted, b), 0)
  local oldest, newest = tonumber(w[2]), tonumber(w[3])
  if b > admitted then
    redis.call('HSET', win_key, str(sec), str(b - admitted), 't', str(total))
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

redis.call('SET', op_key, 'V', 'PX', marker_ms)
return reply
