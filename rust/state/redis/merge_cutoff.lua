-- Sets a customer's cut-off to the later of the stored one and ARGV[2], so that a node
-- writing back what it knows never moves a newer cut-off back.
-- KEYS[1]: the cut-offs hash. ARGV: customer id, issued-before time (seconds).
local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if stored == nil or stored < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
