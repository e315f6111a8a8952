-- Shared wrk done() reporter: prints ONE line
--   BENCH_JSON {"requests":..,"rps":..,"p50_ms":..,"p99_ms":..,"non2xx":..,...}
-- that bench/bench.py picks out of wrk's output.
--
-- Usage from a wrk script:
--   package.path = (os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/?.lua;" .. package.path
--   local report = require("report")
--   function done(summary, latency, requests) report.done(summary, latency, requests) end
local M = {}

local function ms(us)
  return us / 1000.0
end

function M.done(summary, latency, _requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  local rps = 0
  if seconds > 0 then
    rps = summary.requests / seconds
  end
  -- wrk counts status >= 400 in errors.status ("Non-2xx or 3xx responses");
  -- the server never answers 3xx on these routes, so this is the non-2xx count.
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_s":%.3f,"rps":%.2f,'
      .. '"p50_ms":%.3f,"p75_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"p999_ms":%.3f,'
      .. '"max_ms":%.3f,"mean_ms":%.3f,"stdev_ms":%.3f,'
      .. '"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"bytes":%d}\n',
    summary.requests, seconds, rps,
    ms(latency:percentile(50)), ms(latency:percentile(75)), ms(latency:percentile(90)),
    ms(latency:percentile(99)), ms(latency:percentile(99.9)),
    ms(latency.max), ms(latency.mean), ms(latency.stdev),
    e.status, e.connect, e.read, e.write, e.timeout, summary.bytes))
end

return M
