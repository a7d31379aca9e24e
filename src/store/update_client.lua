-- tollgate: update_client (KEYS, ARGV and replies: src/store/redis/scripts.rs).
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if #ARGV > 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return redis.call('HGETALL', KEYS[1])