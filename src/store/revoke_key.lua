-- tollgate: revoke_key (KEYS, ARGV and replies: src/store/redis/scripts.rs).
local k = redis.call('HMGET', KEYS[1], 'client_id', 'name')
if not k[1] or k[1] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if k[2] and redis.call('HGET', KEYS[3], k[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[3], k[2])
end
return 1