-- A tenant's standing now: reply(1, state).
lapse(now_ms())
return reply(1, standing())
