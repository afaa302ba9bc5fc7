-- wrk script: GET /api/accounts with a bearer token rotated over the tokens in the file named by
-- the first script argument (one per line), and a machine-readable summary line at the end.
--
--   wrk -t1 -c64 -d10s -s tokens.lua http://127.0.0.1:PORT -- tokens.txt

local prepared = {}
local next_index = 1

function init(args)
   local path = args[1]
   for token in io.lines(path) do
      if token ~= "" then
         local headers = { ["Authorization"] = "Bearer " .. token }
         prepared[#prepared + 1] = wrk.format("GET", "/api/accounts", headers)
      end
   end
   if #prepared == 0 then
      error("no tokens in " .. tostring(path))
   end
end

function request()
   local req = prepared[next_index]
   next_index = next_index % #prepared + 1
   return req
end

-- One line, "E2E_RESULT" then JSON; latencies in microseconds. wrk counts responses with a status
-- of 400 or more in errors.status.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'E2E_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
         .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,'
         .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"status_errors":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
      e.connect, e.read, e.write, e.timeout, e.status))
end
