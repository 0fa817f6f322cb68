-- Holds a request's estimate and counts it toward the escalation share, all or nothing, if the
-- outlook that its decision saw still holds; else changes nothing. Replies {1, state before} or
-- {0, state now}. The outlook is computed as `TenantRules::outlook` computes it (in doubles,
-- like Rust's f64, for the escalation share).
-- ARGV: 1 hold id, 2 estimate, 3 hold time to live (ms), 4 daily limit or '', 5 monthly limit
-- or '', 6 escalation cap or '', 7 the spent window seen ('none', 'day', 'month'), 8 whether
-- one more escalation fitted ('1' or '0'), 9 what the decision routed ('none', 'local',
-- 'remote'), 10 the day's time to live (s).
local now = now_ms()
lapse(now)
local s = standing()

local spent = 'none'
if ARGV[4] ~= '' and s.today + s.reserved >= tonumber(ARGV[4]) then
  spent = 'day'
elseif ARGV[5] ~= '' and s.month + s.reserved >= tonumber(ARGV[5]) then
  spent = 'month'
end
local may_escalate = '1'
if ARGV[6] ~= '' and s.escalated + 1 > tonumber(ARGV[6]) * (s.routed + 1) then
  may_escalate = '0'
end
if spent ~= ARGV[7] or may_escalate ~= ARGV[8] then
  return reply(0, s)
end

if tonumber(ARGV[2]) > 0 then
  local ttl = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[3], now + ttl, ARGV[1])
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[4], 'total', ARGV[2])
  -- Every hold in them has lapsed by then.
  redis.call('PEXPIRE', KEYS[3], 2 * ttl)
  redis.call('PEXPIRE', KEYS[4], 2 * ttl)
end
if ARGV[9] ~= 'none' then
  redis.call('HINCRBY', KEYS[1], 'routed', 1)
  if ARGV[9] == 'remote' then
    redis.call('HINCRBY', KEYS[1], 'escalated', 1)
  end
  redis.call('EXPIRE', KEYS[1], ARGV[10])
end
return reply(1, s)
