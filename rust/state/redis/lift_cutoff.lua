-- Lifts a customer's cut-off and marks what was lifted, so that a node cut off while it
-- happened cannot write the cut-off back, and learns of the lift when it reloads.
-- KEYS[1]: the cut-offs hash, KEYS[2]: the lifted cut-offs hash.
-- ARGV[1]: customer id; ARGV[2]: the cut-off the lifting node knew ('' when none), which
-- Redis may not hold (restarted empty, nothing written back yet).
local stored = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
local mark = stored
if ARGV[2] ~= '' and (not mark or tonumber(mark) < tonumber(ARGV[2])) then
  mark = ARGV[2]
end
if not mark then
  return 0
end
local lifted = tonumber(redis.call('HGET', KEYS[2], ARGV[1]))
if lifted == nil or lifted < tonumber(mark) then
  redis.call('HSET', KEYS[2], ARGV[1], mark)
end
return 1
