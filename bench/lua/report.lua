-- Shared wrk done() reporter: prints ONE line
--   BENCH_JSON {"requests":..,"rps":..,"p50_ms":..,"p99_ms":..,"non2xx":..,...}
-- that bench/bench.py picks out of wrk's output.
--
-- Usage from a wrk script:
--   package.path = (os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/?.lua;" .. package.path
--   local report = require("report")
--   function done(summary, latency, requests) report.done(summary, latency, requests) end
local M = {}

-- Optional per-status counting (costs wrk a Lua call per response, so only
-- the DB-bound scripts use it): call report.track(thread) from setup() and
-- report.count(status) from response(); done() then adds "statuses".
M.threads = {}
function M.track(thread)
  table.insert(M.threads, thread)
end
status_counts = {}
function M.count(status)
  local k = tostring(status)
  status_counts[k] = (status_counts[k] or 0) + 1
end

-- Error kinds: for a status >= 400, "<status> <code>" with the `code` of the
-- server's error body ({"error": {"code": ...}}), "?" when it has none; done()
-- adds them as "error_kinds" (only when there were any).
error_kinds = {}
function M.count_kind(status, body)
  local code = body and body:match('"code"%s*:%s*"([^"]+)"') or "?"
  local k = tostring(status) .. " " .. code
  error_kinds[k] = (error_kinds[k] or 0) + 1
end

-- Defines wrk's setup() and response() for scripts that want per-status
-- counts and a `thread_number` global in each thread (used to seed PRNGs).
function M.install_status_tracking()
  local thread_count = 0
  setup = function(thread)
    thread_count = thread_count + 1
    thread:set("thread_number", thread_count)
    M.track(thread)
  end
  response = function(status, _headers, body)
    M.count(status)
    if status >= 400 then
      M.count_kind(status, body)
    end
  end
end

-- ,"FIELD":{...} with the per-thread tables named GLOBAL summed over the
-- threads; "" without tracked threads, or (optional) when they are all empty.
local function counts_json(global, field, optional)
  if #M.threads == 0 then
    return ""
  end
  local agg = {}
  for _, t in ipairs(M.threads) do
    local c = t:get(global)
    if type(c) == "table" then
      for k, v in pairs(c) do
        agg[k] = (agg[k] or 0) + v
      end
    end
  end
  local parts = {}
  for k, v in pairs(agg) do
    table.insert(parts, string.format('"%s":%d', k, v))
  end
  if optional and #parts == 0 then
    return ""
  end
  table.sort(parts)
  return ',"' .. field .. '":{' .. table.concat(parts, ",") .. "}"
end

local function statuses_json()
  return counts_json("status_counts", "statuses", false) .. counts_json("error_kinds", "error_kinds", true)
end

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
      .. '"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"bytes":%d%s}\n',
    summary.requests, seconds, rps,
    ms(latency:percentile(50)), ms(latency:percentile(75)), ms(latency:percentile(90)),
    ms(latency:percentile(99)), ms(latency:percentile(99.9)),
    ms(latency.max), ms(latency.mean), ms(latency.stdev),
    e.status, e.connect, e.read, e.write, e.timeout, summary.bytes, statuses_json()))
end

return M
