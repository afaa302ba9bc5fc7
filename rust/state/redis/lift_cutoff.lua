-- Lifts a customer's cut-off and marks what was lifted, so that a node cut off while it
-- happened cannot write the cut-off back, and learns of the lift when it reloads.
-- KEYS[1]: the cut-offs hash, KEYS[2]: the lifted cut-offs hash. ARGV[1]: customer id.
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
local lifted = tonumber(redis.call('HGET', KEYS[2], ARGV[1]))
if lifted == nil or lifted < tonumber(stored) then
  redis.call('HSET', KEYS[2], ARGV[1], stored)
end
return 1
