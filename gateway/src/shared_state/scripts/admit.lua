-- A tenant's rate limit as a generic cell rate algorithm (GCRA): the same token bucket as one
-- gateway's (`rate_limit.rs`), a minute's requests of burst refilled continuously, kept as one
-- number (the theoretical arrival time, in µs) that expires when the bucket is full again.
-- Replies 0 when admitted, else the µs until a request would be.
-- KEYS[1]: the tenant's bucket. ARGV: 1 the interval between requests (µs), 2 the burst
-- (the interval times a minute's requests, µs).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then
  tat = now
end
local next_tat = tat + tonumber(ARGV[1])
local wait = next_tat - now - tonumber(ARGV[2])
if wait > 0 then
  return math.ceil(wait)
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return 0
