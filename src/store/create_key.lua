-- tollgate: create_key (KEYS, ARGV and replies: src/store/redis/scripts.rs).
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -3 end
if redis.call('HSETNX', KEYS[4], ARGV[2], ARGV[1]) == 0 then return -2 end
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1