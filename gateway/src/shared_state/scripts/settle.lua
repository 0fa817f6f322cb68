-- Replaces a request's hold by its actual cost, once: a retried settle, or one whose reply was
-- lost, counts nothing more. A hold that lapsed first (its request outlived the hold's time to
-- live) is gone; the cost still counts, once. Replies 1 when it counted, 0 when it had already.
-- KEYS[5]: the settled marker of this hold. ARGV: 1 hold id, 2 actual cost, 3 the marker's time
-- to live (ms), 4 the day's time to live (s), 5 the month's (s).
if not redis.call('SET', KEYS[5], '1', 'NX', 'PX', ARGV[3]) then
  return 0
end
local amount = redis.call('HGET', KEYS[4], ARGV[1])
if amount then
  redis.call('HINCRBY', KEYS[4], 'total', -tonumber(amount))
  redis.call('HDEL', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
if tonumber(ARGV[2]) > 0 then
  redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('HINCRBY', KEYS[2], 'spent', ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return 1
