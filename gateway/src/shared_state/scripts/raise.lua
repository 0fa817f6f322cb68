-- Raises a tenant's settled spend in the day's and the month's windows to what the fleet's
-- ledger holds, when Redis counts less (it lost data: a restart without persistence, a flush);
-- never lowers it, since records still on their way to the ledger are counted in Redis first.
-- The day's routed and escalated counts likewise. Replies the spend Redis had: {today, month}.
-- KEYS[1]: the day's hash, KEYS[2]: the month's. ARGV: 1 the day's spend in the ledger, 2 the
-- month's, 3 the day's time to live (s), 4 the month's, 5 the day's routed requests in the
-- ledger, 6 its escalated ones.
local today = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0') or 0
local month = tonumber(redis.call('HGET', KEYS[2], 'spent') or '0') or 0
if today < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'spent', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
for field, value in pairs({ routed = ARGV[5], escalated = ARGV[6] }) do
  if (tonumber(redis.call('HGET', KEYS[1], field) or '0') or 0) < tonumber(value) then
    redis.call('HSET', KEYS[1], field, value)
    redis.call('EXPIRE', KEYS[1], ARGV[3])
  end
end
if month < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[2], 'spent', ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return { today, month }
