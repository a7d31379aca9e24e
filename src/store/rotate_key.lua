-- tollgate: rotate_key (KEYS, ARGV and replies: src/store/redis/scripts.rs).
local k = redis.call('HMGET', KEYS[1], 'client_id', 'hash', 'gen')
if not k[1] or k[1] ~= ARGV[1] then return false end
local gen = tonumber(k[3])
if not k[2] or gen == nil or gen < 1 or gen ~= math.floor(gen) then
  error({ err = 'TGCORRUPT key gen' })
end
local now_ms
if ARGV[4] ~= '' then
  now_ms = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
redis.call('HSET', KEYS[1],
  'prev_hash', k[2],
  'prev_gen', string.format('%d', gen),
  'prev_until_ms', string.format('%d', now_ms + tonumber(ARGV[3])),
  'hash', ARGV[2],
  'gen', string.format('%d', gen + 1))
return redis.call('HGETALL', KEYS[1])