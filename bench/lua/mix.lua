-- The `mix` workload: BENCH_MIX_FILE (bench/out/mix_queries.lua, made by
-- bench/gen_mix.py) lists distinct query bodies in popularity order; each
-- request draws rank i with probability proportional to 1 / i^s
-- (s = BENCH_ZIPF_S, default 1.1).
--
-- wrk args (after --): [1] random seed base (default 1). Each thread seeds
-- math.random with base * 1000 + thread number, so runs are reproducible.
package.path = (os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/?.lua;" .. package.path
local report = require("report")

local mix_file = os.getenv("BENCH_MIX_FILE") or "bench/out/mix_queries.lua"
local zipf_s = tonumber(os.getenv("BENCH_ZIPF_S") or "1.1")

report.install_status_tracking()

local requests_by_rank
local cdf

function init(args)
  local base = tonumber(args[1] or "1") or 1
  math.randomseed(base * 1000 + (thread_number or 0))
  local bodies = dofile(mix_file)
  requests_by_rank = {}
  cdf = {}
  local total = 0
  for i, body in ipairs(bodies) do
    requests_by_rank[i] = wrk.format("POST", "/analytics/query",
      { ["Content-Type"] = "application/json" }, body)
    total = total + 1 / (i ^ zipf_s)
    cdf[i] = total
  end
  for i = 1, #cdf do
    cdf[i] = cdf[i] / total
  end
end

function request()
  local u = math.random()
  local lo, hi = 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return requests_by_rank[lo]
end

function done(summary, latency, requests)
  report.done(summary, latency, requests)
end
