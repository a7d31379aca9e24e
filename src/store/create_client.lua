-- tollgate: create_client (KEYS, ARGV and replies: src/store/redis/scripts.rs).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1