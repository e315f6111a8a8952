-- GET on the URL given to wrk (bench/run.sh passes /health/live): the
-- server's request-handling ceiling with no work behind it.
package.path = (os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/?.lua;" .. package.path
local report = require("report")

function done(summary, latency, requests)
  report.done(summary, latency, requests)
end
