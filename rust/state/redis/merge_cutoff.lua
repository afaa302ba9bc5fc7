-- Sets a customer's cut-off to the later of the stored one and ARGV[2], so that a node
-- writing back what it knows never moves a newer cut-off back. A cut-off written back
-- ("known") that a lift has since removed (at or before the lifted one) stays lifted; one
-- just made ("fresh") clears the lift's mark.
-- KEYS[1]: the cut-offs hash, KEYS[2]: the lifted cut-offs hash.
-- ARGV: customer id, issued-before time (seconds), "fresh" or "known".
local before = tonumber(ARGV[2])
if ARGV[3] == 'fresh' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  local lifted = tonumber(redis.call('HGET', KEYS[2], ARGV[1]))
  if lifted ~= nil and lifted >= before then
    return 0
  end
end
local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if stored == nil or stored < before then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
