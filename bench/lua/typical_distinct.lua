-- The typical dashboard query, but no two requests in flight are identical:
-- each carries a different "limit" (100..9099; the result has 6 rows, so
-- the data and the SQL text are unchanged, only the LIMIT bind differs).
-- With the cache disabled this defeats single-flight coalescing, so every
-- request runs its own statement: the API's honest per-query overhead.
package.path = (os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/?.lua;" .. package.path
local report = require("report")

local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

local counter = 0
local headers = { ["Content-Type"] = "application/json" }

function request()
  counter = counter + 1
  local uid = counter * 2 + (thread_number or 0)
  local body = string.format(
    '{"metrics":["revenue","average_ticket","sales_count"],"dimensions":["channel"],'
      .. '"date_range":{"start_date":"2026-10-01","end_date":"2026-10-31"},"limit":%d}',
    100 + (uid % 9000))
  return wrk.format("POST", "/analytics/query", headers, body)
end

function done(summary, latency, requests)
  report.done(summary, latency, requests)
end
