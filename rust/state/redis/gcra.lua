-- One customer's GCRA state in Redis: its theoretical arrival time (TAT), in microseconds.
-- Takes up to ARGV[3] requests at once (1 for an exact check, a lease's size for a lease) and
-- answers {taken, tat, now}: taken 0 when even one would not conform (then tat is the stored
-- TAT, and nothing changed). The rule is rust/ratelimit.rs's, in whole microseconds.
--
-- KEYS[1]: the customer's key. ARGV: emission interval (us), burst tolerance (us), requests
-- wanted, now (us; -1: Redis's own clock, the one every node shares).
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if now < 0 then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
-- Request j (from 1) conforms now iff now >= tat + (j - 1) * emission - tolerance.
local conforming = math.floor((now + tolerance - tat) / emission) + 1
if conforming < 1 then
  return {0, string.format('%.0f', tat), string.format('%.0f', now)}
end
local taken = math.min(wanted, conforming)
local new_tat = tat + taken * emission
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {taken, string.format('%.0f', new_tat), string.format('%.0f', now)}
