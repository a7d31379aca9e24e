-- tollgate: take (lease) pending quota notifications of one client
-- (src/notify/, docs/billing.md "Notifications"; admit.lua records them).
--
-- KEYS[1]  tg:{c:<id>}:notify  hash: "<period>:<T>" -> "<used>,<limit>,<period end ms>,<at ms>,<lease ms>"
-- ARGV[1]  now in Unix milliseconds; "" to read the server's TIME
-- ARGV[2]  the lease, in milliseconds from now
-- ARGV[3]  "" (a sweep): every notification whose lease has run out;
--          a field: that notification, whatever its lease (its holder renews it)
--
-- Returns the taken notifications as field, value pairs (the value as it was
-- before the new lease); each one's lease is set to now + ARGV[2]. A value
-- that does not parse is left alone and not returned.

local call = redis.call
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local lease = tonumber(ARGV[2])
local pairs_ = {}
if ARGV[3] ~= '' then
  local v = call('HGET', KEYS[1], ARGV[3])
  if v then
    pairs_ = { ARGV[3], v }
  end
else
  pairs_ = call('HGETALL', KEYS[1])
end
local out = {}
for i = 1, #pairs_, 2 do
  local f, v = pairs_[i], pairs_[i + 1]
  local head, until_ms = string.match(v, '^(%d+,%d+,%d+,%d+),(%d+)$')
  if head and (ARGV[3] ~= '' or tonumber(until_ms) <= now) then
    call('HSET', KEYS[1], f, head .. ',' .. string.format('%d', now + lease))
    out[#out + 1] = f
    out[#out + 1] = v
  end
end
return out
