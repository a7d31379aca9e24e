-- bench/admit-floor: an admission that does nothing: what the call itself
-- costs (the batch driver, each admission's KEYS and ARGV, its reply).
return 'x'
