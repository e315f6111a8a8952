-- POST /analytics/query with one fixed body (the typical dashboard query
-- unless BENCH_BODY overrides it). Static request: wrk formats it once, so
-- the load generator spends as little CPU as possible.
package.path = (os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/?.lua;" .. package.path
local report = require("report")

wrk.method = "POST"
wrk.path = "/analytics/query"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_BODY")
  or '{"metrics":["revenue","average_ticket","sales_count"],"dimensions":["channel"],'
  .. '"date_range":{"start_date":"2026-10-01","end_date":"2026-10-31"}}'

function done(summary, latency, requests)
  report.done(summary, latency, requests)
end
