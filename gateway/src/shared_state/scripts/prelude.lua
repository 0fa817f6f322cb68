-- Shared by the scripts that read a tenant's standing; each script is this prelude followed by
-- its own body. KEYS[1]: the day's hash (spent, routed, escalated), KEYS[2]: the month's hash
-- (spent), KEYS[3]: the holds' expiry times (a sorted set of hold ids, scored in Unix ms),
-- KEYS[4]: the holds' amounts (a hash of hold id -> nano-dollars, their sum under `total`).
-- Money is in integer nano-dollars; Lua's numbers are doubles, exact below 2^53 (9 million
-- dollars), which validation keeps budgets under.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function number(value)
  return tonumber(value or '0') or 0
end

-- Releases the holds of requests whose replica went away without settling them. At most 512
-- per call, so that a script never runs long; the next call takes the rest.
local function lapse(now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 512)
  for _, id in ipairs(expired) do
    local amount = redis.call('HGET', KEYS[4], id)
    if amount then
      redis.call('HINCRBY', KEYS[4], 'total', -tonumber(amount))
      redis.call('HDEL', KEYS[4], id)
    end
    redis.call('ZREM', KEYS[3], id)
  end
end

local function standing()
  local day = redis.call('HMGET', KEYS[1], 'spent', 'routed', 'escalated')
  return {
    today = number(day[1]),
    month = number(redis.call('HGET', KEYS[2], 'spent')),
    reserved = number(redis.call('HGET', KEYS[4], 'total')),
    routed = number(day[2]),
    escalated = number(day[3]),
  }
end

local function reply(held, s)
  return { held, s.today, s.month, s.reserved, s.routed, s.escalated }
end
