-- The `cold` workload: every request is a query the cache has never seen.
-- It is the typical dashboard query (3 metrics by channel) over a 1..31-day
-- range that moves through the seeded window, plus a no-op filter on a
-- unique id (>= 10^9, no real store or channel): the result covers every
-- store and channel, the SQL costs the same, but the cache key is new each
-- time. The filter's shape decides which rollup can answer it:
--   store    "filters": {"store_id": {"ne": <unique id>}}
--            needs store_id: covered by daily_store (day x channel x store)
--   channel  "filters": {"channel_id": {"not_in": [<unique id>]}}
--            needs only channel_id: covered by daily_channel (day x channel x status)
--
-- wrk args (after --): [1] unique-id offset (use a different one for warm-up
-- and measurement), [2] first day of the window as unix seconds (UTC),
-- [3] number of days in the window, [4] filter shape: store (default) or channel.
package.path = (os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/?.lua;" .. package.path
local report = require("report")

report.install_status_tracking()

local offset, first_epoch, window_days, filter_format
local counter = 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  offset = tonumber(args[1] or "0") or 0
  first_epoch = tonumber(args[2] or "1698883200") or 1698883200 -- 2023-11-02
  window_days = tonumber(args[3] or "1096") or 1096
  local shape = args[4] or "store"
  if shape == "store" then
    filter_format = '"filters":{"store_id":{"ne":%d}},'
  elseif shape == "channel" then
    filter_format = '"filters":{"channel_id":{"not_in":[%d]}},'
  else
    error("cold.lua: unknown filter shape '" .. shape .. "' (store or channel)")
  end
end

function request()
  counter = counter + 1
  -- Unique per thread and per run: threads own disjoint blocks of 10^7.
  local uid = 1000000000 + offset + (thread_number or 0) * 10000000 + counter
  local length = 1 + (uid % 31)
  local start_day = (uid * 7919) % (window_days - length)
  local s = first_epoch + start_day * 86400
  local e = s + (length - 1) * 86400
  local body = string.format(
    '{"metrics":["revenue","average_ticket","sales_count"],"dimensions":["channel"],%s'
      .. '"date_range":{"start_date":"%s","end_date":"%s"}}',
    string.format(filter_format, uid), os.date("!%Y-%m-%d", s), os.date("!%Y-%m-%d", e))
  return wrk.format("POST", "/analytics/query", headers, body)
end

function done(summary, latency, requests)
  report.done(summary, latency, requests)
end
