#!/usr/bin/env bash
# analytics-api load benchmarks: one entry point.
#
#   bench/run.sh [scenario...]     default: all scenarios, in the order below
#   bench/run.sh report            only re-render bench/RESULTS.md
#   bench/run.sh setup             only install/build/seed/generate (no load)
#
# Scenarios: uncached uncached-distinct db-floor ceiling hot-l1 hot-redis nginx mix mix-changes
#            cold cold-channel cold-rollups cold-channel-rollups rollup-refresh stampede
#            staleness redis-down redis-benchmark faults
#            (bench/README.md describes each)
#
# nginx: the hot path against nginx's proxy_cache. Installs nginx with apt-get
# when missing (nginx-light, else nginx; no system service is used), starts an
# L1-on server (defaults), a second server with APP__CACHE__L1_ENABLED=false
# (every hit a Redis GET), and nginx as a process of its own (daemon off,
# `-p $RUN_DIR/nginx/`, config, pid, logs and cache generated there, on a free
# port; stopped by its master's PID) in front of the L1-on server:
# proxy_cache keyed by "$request_method$request_uri$request_body$http_authorization",
# proxy_cache_methods POST, proxy_cache_valid 200 300s, the server's
# Cache-Control ignored, the body kept in memory (client_body_buffer_size 64k)
# so $request_body is set, worker_processes NGINX_WORKERS (nproc: the cores
# the server's runtime uses). One query through nginx must come back as
# X-Nginx-Cache: HIT. After a WARMUP_SECONDS warm-up of each target, wrk -t2
# -c64 with lua/typical.lua (hot-l1's body) runs NGINX_ROUNDS interleaved
# rounds of BENCH_SECONDS against (a) server-l1: the L1-on server directly,
# (b) nginx, (c) server-l1-off: the L1-off server, (d) health: /health/live of
# the L1-on server (the floor), so drift hits all four alike. Around every
# window bench.py proc-snapshot reads, per process group (server, peer, nginx
# master + its children), utime+stime (/proc/PID/stat) and the voluntary +
# nonvoluntary context switches of every thread (/proc/PID/task/*/status):
# CPU µs and context switches per request, also of the server behind nginx
# (~0 when every request is an nginx hit); /cache/stats around each window
# counts the lookups that reached it. RESULTS.md's "Hot path vs nginx" has
# the medians, the per-request costs and the ratios server/nginx rps and
# L1-on/L1-off CPU per request. With NGINX_PERF_SECONDS > 0, one more
# server-l1 window under `perf record -g` (top symbols in the run's directory).
#
# Rollups: every server runs with APP__ROLLUPS__ENABLED=false unless its
# scenario passes APP__ROLLUPS__ENABLED=true, so every scenario but the three
# below measures the raw table, as before rollups existed (`cold` is the raw
# baseline of `cold-rollups`, `cold-channel` that of `cold-channel-rollups`).
# Binaries from before rollups get no such variable (their settings would
# refuse it) and cannot run the three.
#   cold-rollups    builds every rollup with `analytics-api rollups build`, one
#                   at a time and timed (the build time), starts a server with
#                   rollups on, waits (bounded) until /cache/stats says every
#                   rollup is ready, checks that a cold.lua-shaped query says
#                   metadata.source = daily_store (fails otherwise), then runs
#                   cold.lua as `cold` does; ratio to `cold` of the same run.
#   cold-channel-rollups
#                   the same with cold.lua's `channel` filter shape (a no-op
#                   `channel_id not_in [uid]` instead of `store_id ne uid`, so
#                   store_id is not needed): the probe must say daily_channel
#                   (~12 rows per day, vs up to ~300 for daily_store); ratio to
#                   `cold-channel` (raw) of the same run. Reuses the rollups a
#                   rollup scenario of this run built when they are still ready,
#                   else builds them.
#   rollup-refresh  a rollups server (rollups built by the CLI unless a rollup
#                   scenario built them in this run and they are still
#                   ready); one INSERT of 1,000 sales over 5 days, then polls
#                   until every rollup re-aggregated it: commit -> refreshed,
#                   the refresh transactions' seconds, rows/bytes; then deletes
#                   them (a change too) and awaits that re-aggregation.
# A server with rollups off marks the rollups stale, so run the raw baselines
# first and the rollup scenarios after them (one build serves all three).
# Results are also kept per sales count (out/latest-by-sales/), so RESULTS.md
# shows e.g. BENCH_SALES=2000000 and BENCH_SALES=10000000 side by side:
#   BENCH_SALES=2000000 BENCH_DB=analytics_bench_2m bench/run.sh \
#     cold cold-channel cold-rollups cold-channel-rollups rollup-refresh
#   BENCH_SALES=10000000 BENCH_DB=analytics_bench_10m bench/run.sh \
#     cold cold-channel cold-rollups cold-channel-rollups rollup-refresh
#
# Environment knobs:
#   BENCH_SECONDS=20        measured seconds per load run
#   WARMUP_SECONDS=5        warm-up seconds before each measured run
#   MIX_WARMUP_SECONDS=10   warm-up seconds of the mix scenario
#   BENCH_SALES=1000000     sales rows in the bench database (a different count reseeds
#                           BENCH_DB: give each count its own BENCH_DB to keep both seeded)
#   BENCH_DB=analytics_bench
#   BENCH_SKIP_BUILD=1      use the existing target/bench/release/analytics-api
#   BENCH_BIN=path          use this binary instead (no build); BENCH_BIN_COMMIT names it
#   BENCH_CONFIG_DIR=dir    config directory (default.toml, model.toml) of that binary
#   BENCH_REDIS_URL=redis://127.0.0.1:6379   the shared Redis (keys under bench:*)
#   BENCH_OUT=bench/out     where results go; with BENCH_RESULTS_MD=... a scratch run
#                           leaves bench/out and bench/RESULTS.md untouched
#   (faults) FAULTS="redis-kill redis-freeze redis-slow pg-stop pg-slow flood"  which faults
#   FAULT_PHASE_SECONDS=10  seconds of each phase (before, during, after)
#   FAULT_WARMUP_SECONDS=10 warm-up of each fault's server
#   FAULT_PG_SALES=200000   sales seeded into the private PostgreSQL cluster
#   FAULT_FLOOD_CONNECTIONS=3000
#   (nginx) NGINX_ROUNDS=3  interleaved rounds of the four targets, BENCH_SECONDS each
#   NGINX_WORKERS=$(nproc)  nginx worker_processes
#   NGINX_OPEN_FILE_CACHE=1 open_file_cache for nginx's cache files (0: off)
#   NGINX_PERF_SECONDS=0    > 0: perf record the server during one extra server-l1 window
#
# faults: for each fault in FAULTS, a server of its own with a private
# redis-server (free port, --save '' --appendonly no) runs the mix (mix.lua,
# 64 connections) after a warm-up, in three bounded phases of
# FAULT_PHASE_SECONDS: before, during (the fault applied just before) and
# after (removed just before; the server is not restarted). Per phase:
# rps/p50/p99/non-2xx and error kinds (wrk), /cache/stats and /metrics at both
# ends (counters, breakers, stale served, shed), the log's breaker lines,
# /health/live + /health every 0.5 s and a "cold probe" (one never-seen query
# at a time, every 0.5 s: the miss path), the RSS (bench.py fault-snapshot,
# fault-watch, fault-phase). The faults:
#   redis-kill    SIGKILL to the redis-server; after: restarted (empty) on the same port
#   redis-freeze  SIGSTOP; after: SIGCONT
#   redis-slow    the server reaches Redis through bench.py delay-proxy from the
#                 start; during: +100 ms per direction (SIGUSR1), after: off (SIGUSR2)
#   pg-stop       a private PostgreSQL 15 cluster (initdb as postgres under a
#                 temp dir, free port, trust auth, fsync off; migrated and seeded
#                 with FAULT_PG_SALES sales once for both PG faults), the server
#                 with APP__FRESHNESS__STALE_IF_ERROR_SECONDS=600; during: pg_ctl
#                 stop -m fast, after: started again
#   pg-slow       that cluster behind a delay proxy: +50 ms per direction
#   flood         the bench database; during: FAULT_FLOOD_CONNECTIONS connections
#                 holding half a request line (bench.py flood; reopened when
#                 the server closes them), ended after the phase
# The shared PostgreSQL and Redis are never stopped, paused or slowed: every
# fault hits a process the scenario started itself, stopped by PID (the
# private cluster's postmaster by the PID in its postmaster.pid).
#
# Every server runs on a free port of 127.0.0.1 with a clean environment and
# APP_ENV=bench (no config/local.toml overlay); every load loop is bounded in
# time; traps stop the servers, the private redis-server and the insert loop
# on any exit, and delete the sales the change scenarios inserted.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
OUT="${BENCH_OUT:-$BENCH_DIR/out}" # results, raw output, logs (override for scratch runs)
export BENCH_OUT="$OUT"
LUA_DIR="$BENCH_DIR/lua"

BENCH_SECONDS="${BENCH_SECONDS:-20}"
WARMUP_SECONDS="${WARMUP_SECONDS:-5}"
MIX_WARMUP_SECONDS="${MIX_WARMUP_SECONDS:-10}"
BENCH_SALES="${BENCH_SALES:-1000000}"
BENCH_DB="${BENCH_DB:-analytics_bench}"
SEED="${BENCH_SEED:-42}"
ANCHOR="${BENCH_ANCHOR:-2026-11-01}"
SHARED_REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
ADMIN_TOKEN_VALUE="bench"
WRK_THREADS=2
WRK_TIMEOUT="30s" # the server's own request timeout is 30 s

PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=postgres
DATABASE_URL_BENCH="postgres://${PG_USER}@${PG_HOST}:${PG_PORT}/${BENCH_DB}"
PGBENCH="${PGBENCH:-/usr/lib/postgresql/15/bin/pgbench}"
TARGET_DIR="$ROOT/target/bench"
CONFIG_DIR="${BENCH_CONFIG_DIR:-config}"
BIN="$TARGET_DIR/release/analytics-api"
# Absolute: binaries read a relative MODEL_PATH from their config directory
# (older ones from the working directory); this names the same file for both.
MODEL_FILE="$(cd "$ROOT" && realpath -m "$CONFIG_DIR/model.toml")"

TYPICAL_BODY='{"metrics":["revenue","average_ticket","sales_count"],"dimensions":["channel"],"date_range":{"start_date":"2026-10-01","end_date":"2026-10-31"}}'
# (the raw cold baselines before the rollup scenarios: a server with rollups
# off marks the rollups stale, so in this order one build serves all three)
ALL_SCENARIOS=(uncached uncached-distinct db-floor ceiling hot-l1 hot-redis nginx mix mix-changes cold cold-channel
  cold-rollups cold-channel-rollups rollup-refresh stampede staleness redis-down redis-benchmark faults)

# Change scenarios (staleness, mix-changes) insert sales with ids from
# CHANGE_ID_MIN (the seed's are 1..BENCH_SALES) and delete them when they end.
CHANGE_ID_MIN=900000000
STALENESS_FIRST_ID=900000001
STALENESS_CHANGES=100
STALENESS_BODY='{"metrics":["revenue","sales_count"]}' # no date_range: every day, today included
CHANGES_FIRST_ID=900100001
CHANGES_RATE=10 # INSERT statements per second during mix-changes
REFRESH_FIRST_ID=900200001 # rollup-refresh: REFRESH_ROWS sales in one INSERT,
REFRESH_ROWS=1000          # spread over REFRESH_DAYS days ending 8 days before the anchor
REFRESH_DAYS=5
# Bounds of the rollup scenarios: each `rollups build` invocation, the wait for
# a server to report every rollup ready, the wait for a refresh.
ROLLUP_BUILD_TIMEOUT=7200
ROLLUP_READY_TIMEOUT=120
ROLLUP_REFRESH_TIMEOUT=300
# The faults scenario (see the header).
FAULTS="${FAULTS:-redis-kill redis-freeze redis-slow pg-stop pg-slow flood}"
KNOWN_FAULTS=(redis-kill redis-freeze redis-slow pg-stop pg-slow flood)
FAULT_PHASE_SECONDS="${FAULT_PHASE_SECONDS:-10}"
FAULT_WARMUP_SECONDS="${FAULT_WARMUP_SECONDS:-$MIX_WARMUP_SECONDS}"
FAULT_PG_SALES="${FAULT_PG_SALES:-200000}"
FAULT_FLOOD_CONNECTIONS="${FAULT_FLOOD_CONNECTIONS:-3000}"
FAULT_CONNECTIONS=64
FAULT_REDIS_DELAY_MS=100
FAULT_PG_DELAY_MS=50
FAULT_STALE_IF_ERROR_SECONDS=600
# The nginx scenario (see the header).
NGINX_ROUNDS="${NGINX_ROUNDS:-3}"
NGINX_WORKERS="${NGINX_WORKERS:-$(nproc)}" # the cores the server's runtime uses (tokio: one worker per CPU)
NGINX_OPEN_FILE_CACHE="${NGINX_OPEN_FILE_CACHE:-1}"
NGINX_PERF_SECONDS="${NGINX_PERF_SECONDS:-0}"
NGINX_CONNECTIONS=64
PG_BIN_DIR="$(dirname "$PGBENCH")" # initdb, pg_ctl of the same PostgreSQL 15

RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
RUN_DIR="$OUT/runs/$RUN_ID"
export BENCH_RUN_ID="$RUN_ID"
export BENCH_RESULTS_JSONL="$OUT/results.jsonl"
export BENCH_LUA_DIR="$LUA_DIR"
export BENCH_MIX_FILE="$OUT/mix_queries.lua"
export BENCH_SECONDS BENCH_SALES

SERVER_PID=""
WRK_PID=""
WATCH_PID=""
PGBENCH_PID=""
DRIVER_PID=""
SERVER_PORT=""
SERVER_LOG=""
PEER_PID="" # a second server (start_peer), for scenarios with two instances
PEER_PORT=""
PEER_LOG=""
REDIS_PID=""
INSERT_PID=""    # bench.py insert-loop (start_inserts)
SALES_INSERTED=0 # 1 while rows with ids >= CHANGE_ID_MIN may exist
REDIS_PORT=""    # the private redis-server's port (start_private_redis)
PROXY_PID=""     # bench.py delay-proxy (faults)
PROXY_OUT=""
FLOOD_PID=""     # bench.py flood (faults)
FLOOD_OUT=""
FWATCH_PID=""    # bench.py fault-watch (faults)
PRIV_PG_DIR=""   # the private PostgreSQL cluster's temp dir (faults): data/, socket, log
PRIV_PG_PORT=""
PRIV_PG_DB=analytics_faults
NGINX_PID="" # the nginx scenario's nginx master (start_nginx)
NGINX_PORT=""
WRK_URL="" # run_wrk's target when not the server (e.g. nginx): scheme://host:port

# ------------------------------------------------------------------ helpers

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
  printf '[bench] ERROR: %s\n' "$*" >&2
  exit 1
}

py() { python3 "$BENCH_DIR/bench.py" "$@"; }

psql_bench() { psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$@"; }

# stop_process PID [TENTHS]: SIGTERM, up to TENTHS/10 s (default 15 s) to
# exit, then SIGKILL; reaps it.
stop_process() {
  local pid="$1" tenths="${2:-150}"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < tenths; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "process $pid ignored SIGTERM for $((tenths / 10)) s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    stop_process "$SERVER_PID"
    SERVER_PID=""
  fi
}

stop_peer() {
  if [[ -n "$PEER_PID" ]]; then
    stop_process "$PEER_PID"
    PEER_PID=""
  fi
}

stop_redis() {
  if [[ -n "$REDIS_PID" ]]; then
    kill -CONT "$REDIS_PID" 2>/dev/null || true # frozen by the faults scenario?
    stop_process "$REDIS_PID" 50
    REDIS_PID=""
  fi
}

stop_proxy() { # the delay proxy; it writes its counters to PROXY_OUT on SIGTERM
  if [[ -n "$PROXY_PID" ]]; then
    stop_process "$PROXY_PID" 50
    PROXY_PID=""
  fi
}

stop_flood() { # the connection flood; it closes them all and writes FLOOD_OUT on SIGTERM
  if [[ -n "$FLOOD_PID" ]]; then
    stop_process "$FLOOD_PID" 100
    FLOOD_PID=""
  fi
}

# stop_private_pg: the private cluster of the faults scenario, by the PID in
# its postmaster.pid (checked to be that data directory's): SIGINT (fast
# shutdown), after 15 s SIGQUIT (immediate), then SIGKILL; then its temp dir
# is removed (its log kept in RUN_DIR).
stop_private_pg() {
  [[ -n "$PRIV_PG_DIR" ]] || return 0
  local pid
  pid="$(priv_pg_pid)"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 150; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "private PostgreSQL (pid $pid) still running after 15 s; SIGQUIT"
      kill -QUIT "$pid" 2>/dev/null || true
      sleep 5
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  cp "$PRIV_PG_DIR/postgres.log" "$RUN_DIR/faults-private-postgres.log" 2>/dev/null || true
  rm -rf "$PRIV_PG_DIR"
  PRIV_PG_DIR=""
}

# priv_pg_pid: the postmaster PID of the private cluster, if its
# postmaster.pid names our data directory; empty otherwise.
priv_pg_pid() {
  local file="$PRIV_PG_DIR/data/postmaster.pid" pid dir
  [[ -s "$file" ]] || return 0
  pid="$(sed -n 1p "$file")"
  dir="$(sed -n 2p "$file")"
  if [[ "$dir" == "$PRIV_PG_DIR/data" && "$pid" =~ ^[0-9]+$ ]]; then printf '%s\n' "$pid"; fi
}

cleanup() {
  local rc=$?
  local pid
  for pid in "$WRK_PID" "$WATCH_PID" "$PGBENCH_PID" "$FWATCH_PID"; do
    if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  stop_flood
  # The writers first, awaited: no INSERT may commit after the DELETE below.
  for pid in "$DRIVER_PID" "$INSERT_PID"; do
    if [[ -n "$pid" ]]; then stop_process "$pid"; fi
  done
  if ((SALES_INSERTED)); then
    delete_inserted_sales || log "could not delete the inserted sales (ids >= $CHANGE_ID_MIN) from $BENCH_DB"
  fi
  stop_nginx
  stop_peer
  stop_server
  stop_proxy
  stop_redis
  stop_private_pg
  if ((rc != 0)); then
    log "exited with status $rc; partial results stay in $OUT"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

# watch_start NAME SECONDS: in the background, note what else uses the
# machine while a measurement runs (bench.py watch -> $RUN_DIR/watch-NAME.json).
watch_start() {
  python3 "$BENCH_DIR/bench.py" watch "$RUN_DIR/watch-$1.json" "$2" "$BENCH_DB" \
    ${SERVER_PID:+"$SERVER_PID"} ${PEER_PID:+"$PEER_PID"} &
  WATCH_PID=$!
}
watch_end() {
  if [[ -n "$WATCH_PID" ]]; then
    wait "$WATCH_PID" 2>/dev/null || log "load watcher failed (ignored)"
    WATCH_PID=""
  fi
}

# ------------------------------------------------------------------ setup

ensure_tools() {
  need python3 "install python3"
  need curl "apt-get install -y curl"
  need psql "install the PostgreSQL client"
  if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk"
    (apt-get update -qq && apt-get install -y -qq wrk) >"$OUT/apt-wrk.log" 2>&1 ||
      die "could not install wrk (see $OUT/apt-wrk.log)"
  fi
  [[ -x "$PGBENCH" ]] || die "pgbench not found at $PGBENCH (set PGBENCH=...)"
  psql_bench -d postgres -Atc 'SELECT 1' >/dev/null ||
    die "PostgreSQL is not reachable at $PG_HOST:$PG_PORT as $PG_USER"
}

# The commit the binary was built from is kept next to the results, so runs
# with BENCH_SKIP_BUILD=1 are attributed to the binary, not to today's HEAD.
BINARY_COMMIT_FILE="$OUT/binary-commit.txt"

build() {
  if [[ -n "${BENCH_BIN:-}" ]]; then
    BIN="$BENCH_BIN"
    [[ -x "$BIN" ]] || die "BENCH_BIN=$BIN is not an executable"
    export BENCH_COMMIT="${BENCH_BIN_COMMIT:-unknown (BENCH_BIN)}"
    log "using $BIN (BENCH_BIN), built from $BENCH_COMMIT"
    return
  fi
  if [[ "${BENCH_SKIP_BUILD:-0}" == "1" ]]; then
    [[ -x "$BIN" ]] || die "BENCH_SKIP_BUILD=1 but $BIN does not exist"
    if [[ -s "$BINARY_COMMIT_FILE" && ! "$BINARY_COMMIT_FILE" -ot "$BIN" ]]; then
      BENCH_COMMIT="$(cat "$BINARY_COMMIT_FILE")"
    else
      BENCH_COMMIT="unknown (binary not built by run.sh)"
    fi
    export BENCH_COMMIT
    log "using existing $BIN (BENCH_SKIP_BUILD=1), built from $BENCH_COMMIT"
    return
  fi
  local commit
  commit="$(py commit)"
  need cargo "install Rust"
  log "building release binary into $TARGET_DIR (log: $RUN_DIR/build.log)"
  if ! (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" timeout 3600 cargo build --release) >"$RUN_DIR/build.log" 2>&1; then
    tail -n 30 "$RUN_DIR/build.log" >&2
    die "cargo build --release failed (full log: $RUN_DIR/build.log)"
  fi
  [[ -x "$BIN" ]] || die "build succeeded but $BIN is missing"
  printf '%s\n' "$commit" >"$BINARY_COMMIT_FILE"
  export BENCH_COMMIT="$commit"
}

# ROLLUPS_KNOWN=1 when the binary has rollups (`rollups --help` parses): only
# then may a server get APP__ROLLUPS__* (the settings deny unknown sections, so
# an older binary, e.g. the base side of bench/ab.sh, would refuse to start).
ROLLUPS_KNOWN=0
detect_rollups() {
  if "$BIN" rollups --help >/dev/null 2>&1; then ROLLUPS_KNOWN=1; else ROLLUPS_KNOWN=0; fi
}
need_rollups() {
  ((ROLLUPS_KNOWN)) || die "$BIN has no rollups (\`rollups --help\` fails): $1 needs a binary with rollups"
}

# Environment of every server: nothing inherited but PATH/HOME, so stray
# APP__* variables in the caller's shell cannot skew a run.
server_env() {
  printf '%s\n' \
    "PATH=$PATH" "HOME=${HOME:-/root}" "APP_ENV=bench" \
    "DATABASE_URL=$DATABASE_URL_BENCH" "REDIS_URL=$SHARED_REDIS_URL" \
    "ADMIN_TOKEN=$ADMIN_TOKEN_VALUE" "HOST=127.0.0.1" "RUST_LOG=warn" \
    "APP__DATABASE__SEED_DEMO_ON_EMPTY=false" "APP__CACHE__PREFIX=bench" "MODEL_PATH=$MODEL_FILE"
}

ensure_db() {
  local exists count
  exists="$(psql_bench -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$BENCH_DB'")"
  if [[ "$exists" != "1" ]]; then
    log "creating database $BENCH_DB"
    psql_bench -d postgres -c "CREATE DATABASE \"$BENCH_DB\"" >/dev/null
  fi
  count=-1
  if [[ "$(psql_bench -d "$BENCH_DB" -Atc "SELECT to_regclass('public.sales') IS NOT NULL")" == "t" ]]; then
    count="$(psql_bench -d "$BENCH_DB" -Atc 'SELECT count(*) FROM sales')"
  fi
  if [[ "$count" == "$BENCH_SALES" ]]; then
    log "database $BENCH_DB already holds $count sales; not reseeding"
    return
  fi
  log "seeding $BENCH_DB with $BENCH_SALES sales (found $count; seed $SEED, anchor $ANCHOR)"
  local -a envs
  mapfile -t envs < <(server_env)
  (cd "$ROOT" && env -i "${envs[@]}" RUST_LOG=info timeout 3600 "$BIN" --config-dir "$CONFIG_DIR" migrate) \
    >"$RUN_DIR/migrate.log" 2>&1 || die "migrate failed (see $RUN_DIR/migrate.log)"
  (cd "$ROOT" && env -i "${envs[@]}" RUST_LOG=info timeout 3600 \
    "$BIN" --config-dir "$CONFIG_DIR" seed --sales "$BENCH_SALES" --seed "$SEED" --anchor "$ANCHOR") \
    >"$RUN_DIR/seed.log" 2>&1 || die "seed failed (see $RUN_DIR/seed.log)"
  psql_bench -d "$BENCH_DB" -c 'VACUUM (ANALYZE) sales' >/dev/null
  count="$(psql_bench -d "$BENCH_DB" -Atc 'SELECT count(*) FROM sales')"
  [[ "$count" == "$BENCH_SALES" ]] || die "after seeding, sales holds $count rows, not $BENCH_SALES"
  log "seeded: $(psql_bench -d "$BENCH_DB" -Atc "SELECT min(created_at)::date || ' .. ' || max(created_at)::date FROM sales")"
}

gen_mix() {
  python3 "$BENCH_DIR/gen_mix.py" --count 1000 --seed 20261101 --anchor "$ANCHOR" \
    --out "$BENCH_MIX_FILE" --json "$OUT/mix_queries.json"
}

# ------------------------------------------------------------------ server

# start_server NAME [VAR=value ...]: starts the API on a free port, waits for
# /health/live (bounded), sets SERVER_PID, SERVER_PORT, SERVER_LOG.
start_server() {
  [[ -z "$SERVER_PID" ]] || die "internal: a server is already running ($SERVER_PID)"
  launch_server SERVER "$@"
}

# start_peer NAME [VAR=value ...]: a second instance beside the server (same
# database, Redis and cache prefix), for scenarios about several instances;
# sets PEER_PID, PEER_PORT, PEER_LOG (peer_url is its address).
start_peer() {
  [[ -z "$PEER_PID" ]] || die "internal: a peer is already running ($PEER_PID)"
  launch_server PEER "$@"
}

# launch_server SLOT NAME [VAR=value ...]: the work of start_server and
# start_peer. SLOT (SERVER or PEER) names the variables it sets: SLOT_PORT,
# SLOT_LOG, and SLOT_PID as soon as the process exists, so the EXIT trap
# stops it even during start-up. Rollups are off (APP__ROLLUPS__ENABLED=false:
# queries read the raw table, as every scenario measured before rollups)
# unless the VARs set APP__ROLLUPS__ENABLED themselves (with a binary from
# before rollups, nothing is added: it has no such setting and reads raw).
launch_server() {
  local slot="$1" name="$2"
  shift 2
  local port log pid
  port="$(py free-port)"
  log="$RUN_DIR/server-$name.log"
  printf -v "${slot}_PORT" '%s' "$port"
  printf -v "${slot}_LOG" '%s' "$log"
  local -a envs
  mapfile -t envs < <(server_env)
  envs+=("PORT=$port")
  if ((ROLLUPS_KNOWN)) && [[ " $* " != *" APP__ROLLUPS__ENABLED="* ]]; then envs+=("APP__ROLLUPS__ENABLED=false"); fi
  envs+=("$@")
  printf '%s\n' "${envs[@]}" | grep -v -e '^PATH=' -e '^HOME=' >"$RUN_DIR/server-$name.env"
  local started=$SECONDS
  (cd "$ROOT" && exec env -i "${envs[@]}" "$BIN" --config-dir "$CONFIG_DIR" serve) >"$log" 2>&1 &
  pid=$!
  printf -v "${slot}_PID" '%s' "$pid"
  local i
  for ((i = 0; i < 600; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      printf -v "${slot}_PID" '%s' ""
      tail -n 20 "$log" >&2
      die "server for $name exited during startup (log: $log)"
    fi
    if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$port/health/live"; then
      log "server for $name up on :$port (pid $pid) after $((SECONDS - started)) s"
      return
    fi
    sleep 0.1
  done
  tail -n 20 "$log" >&2
  die "server for $name not live after 60 s (log: $log)"
}

base_url() { printf 'http://127.0.0.1:%s' "$SERVER_PORT"; }
peer_url() { printf 'http://127.0.0.1:%s' "$PEER_PORT"; }

admin_stats() { # admin_stats FILE [BASE_URL]: GET /cache/stats of the server (or of BASE_URL)
  local url="${2:-$(base_url)}"
  curl -sf --max-time 10 -H "Authorization: Bearer $ADMIN_TOKEN_VALUE" "$url/cache/stats" >"$1" ||
    die "GET $url/cache/stats failed (log: $SERVER_LOG)"
}

clear_cache() {
  curl -sf --max-time 30 -X POST -H "Authorization: Bearer $ADMIN_TOKEN_VALUE" \
    "$(base_url)/cache/clear?pattern=*" >/dev/null ||
    die "POST /cache/clear failed (log: $SERVER_LOG)"
}

# smoke_query FILE [BODY]: one POST that must answer 200; the response goes to FILE.
smoke_query() {
  local file="$1" body="${2:-$TYPICAL_BODY}" code
  code="$(curl -s -o "$file" -w '%{http_code}' --max-time 60 -X POST \
    -H 'Content-Type: application/json' --data "$body" "$(base_url)/analytics/query")" || code="curl-failed"
  [[ "$code" == "200" ]] || die "smoke query answered $code: $(head -c 300 "$file" 2>/dev/null) (log: $SERVER_LOG)"
}

log_counts() { # log_counts [LOG]: key=value args for record: WARN/ERROR lines in the (server's) log
  local file="${1:-$SERVER_LOG}"
  local warn slow err
  warn="$(grep 'WARN' "$file" | grep -c -v 'slow statement' || true)"
  slow="$(grep -c 'WARN.*slow statement' "$file" || true)"
  err="$(grep -c 'ERROR' "$file" || true)"
  printf 'server_log_warnings=%s\nserver_log_slow_statements=%s\nserver_log_errors=%s\nserver_log=%s\n' \
    "${warn:-0}" "${slow:-0}" "${err:-0}" "$file"
  local code n
  n="$(grep -c 'database unavailable' "$file" || true)"
  if [[ "${n:-0}" != "0" ]]; then printf 'server_log_503=%s\n' "$n"; fi
  n="$(grep -c 'circuit breaker opened' "$file" || true)"
  if [[ "${n:-0}" != "0" ]]; then printf 'breaker_opened=%s\n' "$n"; fi
}

rss_mb() {
  local kb
  kb="$(ps -o rss= -p "$SERVER_PID" | tr -d ' ')"
  [[ -n "$kb" ]] || die "cannot read the server's RSS"
  python3 -c "print(round($kb / 1024, 1))"
}

# run_wrk NAME LUA CONNECTIONS SECONDS PATH [lua args...]: output goes to
# $RUN_DIR/wrk-NAME.txt, whose path is left in RUN_WRK_OUT. The URL is the
# server's (base_url) + PATH, or WRK_URL + PATH when WRK_URL is set. wrk runs as a
# background child and is awaited with `wait`, so INT/TERM interrupt at once
# and the EXIT trap stops wrk, the watcher and the server.
RUN_WRK_OUT=""
run_wrk() {
  local name="$1" lua="$2" conns="$3" secs="$4" path="$5"
  shift 5
  local out="$RUN_DIR/wrk-$name.txt"
  local -a extra=()
  if (($# > 0)); then extra=(-- "$@"); fi
  local url="${WRK_URL:-$(base_url)}$path"
  log "wrk $name: -c$conns -d${secs}s $url ($(basename "$lua"))"
  if [[ "$name" != *-warmup ]]; then watch_start "$name" "$secs"; fi
  timeout $((secs + 60)) wrk -t"$WRK_THREADS" -c"$conns" -d"${secs}s" --timeout "$WRK_TIMEOUT" --latency \
    -s "$lua" "$url" "${extra[@]}" >"$out" 2>&1 &
  WRK_PID=$!
  local rc=0
  wait "$WRK_PID" || rc=$?
  WRK_PID=""
  watch_end
  ((rc == 0)) || die "wrk $name failed (status $rc): $(tail -n 5 "$out")"
  py wrk-json "$out" >/dev/null
  RUN_WRK_OUT="$out"
}

summary_line() { # summary_line RESULT_JSON_LINE
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("  -> " + ", ".join(f"{k}={r[k]}" for k in ("rps","tps","p50_ms","p99_ms","hit_rate","non2xx","sql_count","ratio","p50_speedup","rss_mb","build_total_s","refresh_ms","refresh_seconds_total","stats_ms","delete_refresh_ms") if k in r))' "$1" >&2
}

record() { # record SCENARIO args... (see bench.py record)
  local line
  line="$(py record "$@")"
  summary_line "$line"
}

# ------------------------------------------------------------------ changes

# delete_inserted_sales: the rows the change scenarios inserted (ids >=
# CHANGE_ID_MIN); the DELETE is itself a change the servers hear about (and,
# with rollups on, re-aggregate). product_sales.sale_id has no index, so the
# foreign key check scans product_sales once per deleted sale (~0.1-0.3 s
# each at 1,000,000 sales; it grows with product_sales). From DELETE_INDEX_MIN
# sales on, the DELETE runs in one transaction with a transient index on
# product_sales (sale_id), created before it and dropped after it: no other
# session ever sees the index, an interrupted transaction leaves nothing, and
# the scans become index lookups (building it costs about one scan).
DELETE_INDEX_MIN=20
delete_inserted_sales() {
  local -a pg=(psql -X -q -At -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$BENCH_DB")
  local n started=$SECONDS how="one DELETE"
  n="$(timeout 60 "${pg[@]}" -c "SELECT count(*) FROM sales WHERE id >= $CHANGE_ID_MIN")"
  ((n > 0)) || return 0
  local sql="DELETE FROM sales WHERE id >= $CHANGE_ID_MIN"
  if ((n >= DELETE_INDEX_MIN)); then
    sql="BEGIN; SET LOCAL statement_timeout = 0;
      CREATE INDEX bench_product_sales_sale_id_tmp ON product_sales (sale_id);
      $sql; DROP INDEX bench_product_sales_sale_id_tmp; COMMIT"
    how="one transaction with a transient product_sales (sale_id) index"
  fi
  timeout $((120 + n)) "${pg[@]}" -c "$sql" >/dev/null
  log "deleted the $n inserted sales in $((SECONDS - started)) s ($how)"
}

# start_inserts SECONDS RATE FIRST_ID OUT: bench.py insert-loop in the
# background (INSERT_PID): RATE single-row INSERTs per second on one psql
# session, for at most SECONDS; returns once it is connected (OUT.ready, at
# most 30 s). stop_inserts ends it (SIGTERM: it finishes the current INSERT,
# writes its summary to OUT and exits) and fails if it failed.
start_inserts() {
  local out="$4"
  rm -f "$out" "$out.ready"
  SALES_INSERTED=1
  timeout $((${1%.*} + 60)) python3 "$BENCH_DIR/bench.py" insert-loop "$DATABASE_URL_BENCH" "$@" >/dev/null &
  INSERT_PID=$!
  local i
  for ((i = 0; i < 300; i++)); do
    [[ ! -e "$out.ready" ]] || return 0
    kill -0 "$INSERT_PID" 2>/dev/null || die "the insert loop exited before connecting"
    sleep 0.1
  done
  die "the insert loop did not connect to $BENCH_DB within 30 s"
}
stop_inserts() {
  [[ -n "$INSERT_PID" ]] || return 0
  kill -TERM "$INSERT_PID" 2>/dev/null || true
  local rc=0
  wait "$INSERT_PID" || rc=$?
  INSERT_PID=""
  return "$rc"
}

# ------------------------------------------------------------------ scenarios

# uncached_run NAME LUA: the typical query with the cache disabled, pool 16,
# 16 connections; /cache/stats still counts the SQL statements run.
uncached_run() {
  local name="$1" lua="$2"
  shift 2
  start_server "$name" APP__CACHE__ENABLED=false APP__DATABASE__MAX_CONNECTIONS=16
  smoke_query "$RUN_DIR/$name-response.json"
  local warm out
  run_wrk "$name-warmup" "$lua" 16 "$WARMUP_SECONDS" /analytics/query
  warm="$RUN_WRK_OUT"
  admin_stats "$RUN_DIR/$name-stats-before.json"
  run_wrk "$name" "$lua" 16 "$BENCH_SECONDS" /analytics/query
  out="$RUN_WRK_OUT"
  admin_stats "$RUN_DIR/$name-stats-after.json"
  local -a logs
  mapfile -t logs < <(log_counts)
  stop_server
  local reqs sql
  reqs="$(py wrk-json "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')"
  py stats-delta "$RUN_DIR/$name-stats-before.json" "$RUN_DIR/$name-stats-after.json" >"$RUN_DIR/$name-delta.json"
  sql="$(py get "$RUN_DIR/$name-delta.json" db_queries)"
  record "$name" --wrk "$out" --warmup "$warm" --stats "$RUN_DIR/$name-stats-before.json" "$RUN_DIR/$name-stats-after.json" \
    connections=16 pool=16 "sql_statements=$sql" \
    "requests_per_statement=$(python3 -c "print(round($reqs / max($sql, 1), 2))")" \
    --watch "$RUN_DIR/watch-$name.json" "${logs[@]}" "$@"
}

scenario_uncached() {
  uncached_run uncached "$LUA_DIR/typical.lua" \
    "notes=identical concurrent requests share one statement through single-flight even with the cache disabled (see requests_per_statement); uncached-distinct is the per-statement comparison."
}

scenario_uncached_distinct() {
  uncached_run uncached-distinct "$LUA_DIR/typical_distinct.lua" \
    "notes=typical query with a different limit per request (same SQL text and result, LIMIT bind differs), so no two in-flight requests coalesce."
}

# run_pgbench SECONDS OUTPUT [extra pgbench options]: the typical statement,
# 16 clients, 2 threads, prepared; in the background so signals interrupt it.
run_pgbench() {
  local secs="$1" output="$2"
  shift 2
  timeout $((secs + 60)) "$PGBENCH" -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -n -M prepared \
    -c 16 -j 2 -T "$secs" "$@" -f "$BENCH_DIR/typical_query.sql" "$BENCH_DB" >"$output" 2>&1 &
  PGBENCH_PID=$!
  local rc=0
  wait "$PGBENCH_PID" || rc=$?
  PGBENCH_PID=""
  ((rc == 0)) || die "pgbench failed (status $rc): $(tail -n 5 "$output")"
}

scenario_db_floor() {
  # The API's answer and its statement (sqlx logs it at debug), from an
  # uncached server; bench/typical_query.sql is regenerated from that log so
  # it follows changes to the model and the compiler.
  start_server db-floor-check APP__CACHE__ENABLED=false "RUST_LOG=warn,sqlx::query=debug"
  smoke_query "$RUN_DIR/db-floor-api-response.json"
  local check_log="$SERVER_LOG"
  stop_server
  py typical-sql "$check_log" "$TYPICAL_BODY" "$ROOT/config/model.toml" "$BENCH_DIR/typical_query.sql" \
    >"$RUN_DIR/db-floor-statement.json" || die "could not extract the statement from $check_log"
  cp "$BENCH_DIR/typical_query.sql" "$RUN_DIR/typical_query.sql"
  psql_bench -d "$BENCH_DB" -At -F $'\t' -f "$BENCH_DIR/typical_query.sql" >"$RUN_DIR/db-floor-psql.tsv"
  local cmp matches
  cmp="$(py compare-data "$RUN_DIR/db-floor-api-response.json" "$RUN_DIR/db-floor-psql.tsv")"
  printf '%s\n' "$cmp" >"$RUN_DIR/db-floor-compare.json"
  matches="$(py get "$RUN_DIR/db-floor-compare.json" equal)"
  if [[ "$matches" != "True" ]]; then
    log "WARNING: bench/typical_query.sql returns different data than the API: $cmp"
    matches=false
  else
    log "bench/typical_query.sql returns the same data as the API"
    matches=true
  fi
  log "pgbench warm-up ${WARMUP_SECONDS}s"
  run_pgbench "$WARMUP_SECONDS" "$RUN_DIR/pgbench-warmup.txt"
  log "pgbench -c16 -j2 -T$BENCH_SECONDS"
  local prefix="$RUN_DIR/pgbench_log"
  watch_start db-floor "$BENCH_SECONDS"
  run_pgbench "$BENCH_SECONDS" "$RUN_DIR/pgbench.txt" -r --log --log-prefix="$prefix"
  watch_end
  py pgbench-tps "$RUN_DIR/pgbench.txt" >"$RUN_DIR/db-floor-tps.json"
  py pgbench-latency "$prefix" >"$RUN_DIR/db-floor-latency.json"
  record db-floor --merge "$RUN_DIR/db-floor-tps.json" --merge "$RUN_DIR/db-floor-latency.json" \
    connections=16 "data_matches_api=$matches" "pgbench_output=$RUN_DIR/pgbench.txt" --watch "$RUN_DIR/watch-db-floor.json" \
    "notes=pgbench -M prepared (sqlx also uses cached prepared statements); latency percentiles from --log."
}

scenario_ceiling() {
  start_server ceiling
  local warm out
  run_wrk ceiling-warmup "$LUA_DIR/health.lua" 64 "$WARMUP_SECONDS" /health/live
  warm="$RUN_WRK_OUT"
  run_wrk ceiling "$LUA_DIR/health.lua" 64 "$BENCH_SECONDS" /health/live
  out="$RUN_WRK_OUT"
  local -a logs
  mapfile -t logs < <(log_counts)
  stop_server
  record ceiling --wrk "$out" --warmup "$warm" connections=64 --watch "$RUN_DIR/watch-ceiling.json" "${logs[@]}"
}

# hot NAME [VAR=value ...]: the typical query, cached, at 64 connections.
hot() {
  local name="$1"
  shift
  start_server "$name" "$@"
  clear_cache
  smoke_query "$RUN_DIR/$name-first.json"
  local warm out
  run_wrk "$name-warmup" "$LUA_DIR/typical.lua" 64 "$WARMUP_SECONDS" /analytics/query
  warm="$RUN_WRK_OUT"
  admin_stats "$RUN_DIR/$name-stats-before.json"
  run_wrk "$name" "$LUA_DIR/typical.lua" 64 "$BENCH_SECONDS" /analytics/query
  out="$RUN_WRK_OUT"
  admin_stats "$RUN_DIR/$name-stats-after.json"
  local -a logs
  mapfile -t logs < <(log_counts)
  local rss
  rss="$(rss_mb)"
  stop_server
  record "$name" --wrk "$out" --warmup "$warm" --stats "$RUN_DIR/$name-stats-before.json" "$RUN_DIR/$name-stats-after.json" \
    connections=64 "rss_mb=$rss" --watch "$RUN_DIR/watch-$name.json" "${logs[@]}"
}

scenario_hot_l1() { hot hot-l1; }
scenario_hot_redis() { hot hot-redis APP__CACHE__L1_ENABLED=false; }

# mix_run NAME RATE: the mix (warm-up, then BENCH_SECONDS at 64 connections);
# with RATE > 0, RATE sales per second are inserted while the measured wrk
# runs (mix-changes), and the invalidations and the ratio to a `mix` of the
# same run are recorded.
mix_run() {
  local name="$1" rate="$2"
  if ((rate > 0)); then delete_inserted_sales; fi # leftovers of an interrupted run
  start_server "$name"
  clear_cache
  smoke_query "$RUN_DIR/$name-first.json"
  local warm out
  run_wrk "$name-warmup" "$LUA_DIR/mix.lua" 64 "$MIX_WARMUP_SECONDS" /analytics/query 1
  warm="$RUN_WRK_OUT"
  admin_stats "$RUN_DIR/$name-stats-before.json"
  if ((rate > 0)); then
    log "inserting $rate sales/s while wrk runs"
    # the loop ends by itself after BENCH_SECONDS, as wrk (started right after) does
    start_inserts "$BENCH_SECONDS" "$rate" "$CHANGES_FIRST_ID" "$RUN_DIR/$name-inserts.json"
  fi
  run_wrk "$name" "$LUA_DIR/mix.lua" 64 "$BENCH_SECONDS" /analytics/query 2
  out="$RUN_WRK_OUT"
  if ((rate > 0)); then
    stop_inserts || die "the insert loop failed (status $?)"
    sleep 1 # let the last notifications be applied before the stats snapshot
  fi
  admin_stats "$RUN_DIR/$name-stats-after.json"
  local rss
  rss="$(rss_mb)"
  local -a logs changes=()
  mapfile -t logs < <(log_counts)
  if ((rate > 0)); then
    delete_inserted_sales
    SALES_INSERTED=0
    py changes-summary "$out" "$RUN_DIR/$name-stats-before.json" "$RUN_DIR/$name-stats-after.json" \
      "$RUN_DIR/$name-inserts.json" mix >"$RUN_DIR/$name-changes.json"
    changes=(--merge "$RUN_DIR/$name-changes.json" "change_rate_target=$rate")
  fi
  stop_server
  record "$name" --wrk "$out" --warmup "$warm" --stats "$RUN_DIR/$name-stats-before.json" "$RUN_DIR/$name-stats-after.json" \
    connections=64 "rss_mb=$rss" distinct_queries=1000 zipf_s=1.1 "warmup_s=$MIX_WARMUP_SECONDS" \
    --watch "$RUN_DIR/watch-$name.json" "${logs[@]}" "${changes[@]}"
}

scenario_mix() { mix_run mix 0; }
scenario_mix_changes() { mix_run mix-changes "$CHANGES_RATE"; }

# ------------------------------------------------------------------ cold and rollups

# cold_window: the seeded 3 years up to the anchor, which cold.lua draws its
# ranges from; sets COLD_FIRST_EPOCH (unix seconds of the first day) and COLD_DAYS.
COLD_FIRST_EPOCH=""
COLD_DAYS=""
cold_window() {
  COLD_FIRST_EPOCH="$(date -u -d "$ANCHOR - 3 years + 1 day" +%s)"
  COLD_DAYS=$((($(date -u -d "$ANCHOR" +%s) - COLD_FIRST_EPOCH) / 86400 + 1))
}

# cold_filter SHAPE ID: the `filters` object of cold.lua's SHAPE (its 4th wrk
# argument) on ID: store -> store_id ne ID (needs store_id: daily_store),
# channel -> channel_id not_in [ID] (needs only channel_id: daily_channel).
cold_filter() {
  case "$1" in
    store) printf '{"store_id":{"ne":%s}}' "$2" ;;
    channel) printf '{"channel_id":{"not_in":[%s]}}' "$2" ;;
    *) die "internal: unknown cold filter shape '$1'" ;;
  esac
}

# cold_probe_body SHAPE: one query shaped like cold.lua's with that filter
# shape (3 metrics by channel, the no-op filter, 15 days of the month before
# the anchor), asked once before the load: its metadata.source says what
# answered the cold workload.
cold_probe_body() {
  local filter
  filter="$(cold_filter "$1" 999999999)"
  printf '{"metrics":["revenue","average_ticket","sales_count"],"dimensions":["channel"],%s%s}' \
    "\"filters\":$filter," \
    "\"date_range\":{\"start_date\":\"$(date -u -d "$ANCHOR - 31 days" +%F)\",\"end_date\":\"$(date -u -d "$ANCHOR - 17 days" +%F)\"}"
}

# rollup_cli SECONDS ARGS...: `analytics-api rollups ARGS`, at most SECONDS,
# in the servers' clean environment (rollups on: the setting's default), from
# the repository root.
rollup_cli() {
  local secs="$1"
  shift
  local -a envs
  mapfile -t envs < <(server_env)
  (cd "$ROOT" && exec timeout "$secs" env -i "${envs[@]}" "$BIN" --config-dir "$CONFIG_DIR" rollups "$@")
}

# rollups_status FILE: `rollups status` (rollup, state, rows, MB, pending,
# refreshed_at) into FILE; ROLLUP_IDS gets the rollups' ids (dataset.rollup).
ROLLUP_IDS=()
rollups_status() {
  rollup_cli 300 status >"$1" 2>"$1.stderr" || die "analytics-api rollups status failed: $(tail -n 5 "$1.stderr")"
  mapfile -t ROLLUP_IDS < <(awk 'NR > 1 && NF { print $1 }' "$1")
  ((${#ROLLUP_IDS[@]} > 0)) || die "the model declares no rollups ($CONFIG_DIR/model.toml; rollups status: $1)"
}

# rollups_all_ready FILE: whether every rollup's stored state in FILE (from
# rollups_status) is `ready`.
rollups_all_ready() {
  awk 'NR > 1 && NF && $2 != "ready" { bad = 1 } END { exit bad }' "$1"
}

# rollups_build NAME: builds every rollup now with `analytics-api rollups
# build <id>`, one invocation per rollup, no server running: the wall time of
# each invocation is its build time (the build's own transaction time, as the
# binary stored it in analytics_rollups.build_seconds, is kept beside it).
# Writes $RUN_DIR/NAME-build.json (bench.py rollup-builds).
rollups_build() {
  local name="$1"
  [[ -z "$SERVER_PID" && -z "$PEER_PID" ]] || die "internal: rollups_build with a server running"
  rollups_status "$RUN_DIR/$name-status-before-build.txt"
  local tsv="$RUN_DIR/$name-build.tsv" id out t0 secs rows
  : >"$tsv"
  for id in "${ROLLUP_IDS[@]}"; do
    out="$RUN_DIR/$name-build-$id.txt"
    log "$name: analytics-api rollups build $id (log: $out)"
    t0=$EPOCHREALTIME
    rollup_cli "$ROLLUP_BUILD_TIMEOUT" build "$id" >"$out" 2>"$out.stderr" ||
      die "analytics-api rollups build $id failed: $(tail -n 5 "$out.stderr")"
    secs="$(python3 -c "print(round($EPOCHREALTIME - $t0, 3))")"
    rows="$(sed -n "s/^$id: \([0-9]*\) rows in .*/\1/p" "$out")"
    [[ -n "$rows" ]] || die "analytics-api rollups build $id did not build it: $(tail -n 5 "$out")"
    printf '%s\t%s\t%s\n' "$id" "$secs" "$rows" >>"$tsv"
    log "  $id: $rows rows in $secs s"
  done
  rollups_status "$RUN_DIR/$name-status-after-build.txt"
  rollups_all_ready "$RUN_DIR/$name-status-after-build.txt" ||
    die "after rollups build, not every rollup is ready: $(cat "$RUN_DIR/$name-status-after-build.txt")"
  py rollup-builds "$tsv" "$DATABASE_URL_BENCH" >"$RUN_DIR/$name-build.json"
  ROLLUPS_BUILT_BY="$name"
}

# rollups_ready_or_build NAME: makes every rollup ready for scenario NAME
# without a server running. When a scenario of this run built them
# (ROLLUPS_BUILT_BY) and `rollups status` still says every one is ready (no
# server with rollups off ran since: it marks them stale), they are reused;
# otherwise rollups_build NAME. ROLLUP_BUILD gets record's arguments for the
# build's times: --merge <its build.json> build_from=<the scenario that built>.
ROLLUPS_BUILT_BY=""
ROLLUP_BUILD=()
rollups_ready_or_build() {
  local name="$1"
  rollups_status "$RUN_DIR/$name-status-before.txt"
  if [[ -n "$ROLLUPS_BUILT_BY" && -s "$RUN_DIR/$ROLLUPS_BUILT_BY-build.json" ]] &&
    rollups_all_ready "$RUN_DIR/$name-status-before.txt"; then
    log "$name: rollups ready; build times from $ROLLUPS_BUILT_BY of this run"
  else
    rollups_build "$name"
  fi
  ROLLUP_BUILD=(--merge "$RUN_DIR/$ROLLUPS_BUILT_BY-build.json" "build_from=$ROLLUPS_BUILT_BY")
}

# rollups_wait NAME: polls the server's /cache/stats until every rollup's
# state is `ready`, at most ROLLUP_READY_TIMEOUT s (fails on `disabled`, on
# no rollups, and on the timeout).
rollups_wait() {
  local name="$1"
  timeout $((ROLLUP_READY_TIMEOUT + 60)) python3 "$BENCH_DIR/bench.py" rollups-wait "$(base_url)" \
    "$ADMIN_TOKEN_VALUE" "$ROLLUP_READY_TIMEOUT" >"$RUN_DIR/$name-ready.json" ||
    die "$name: the rollups did not all become ready (log: $SERVER_LOG)"
  log "$name: every rollup ready after $(py get "$RUN_DIR/$name-ready.json" waited_ms) ms"
}

# cold_measure NAME SOURCE SHAPE [VAR=value ...]: the cold workload (cold.lua
# with filter SHAPE, 16 connections, warm-up then BENCH_SECONDS) on a server
# started with VARs. With SOURCE other than raw, waits for the rollups to be
# ready first. The probe (cold_probe_body SHAPE) must be answered from SOURCE
# (metadata.source), or the scenario fails. Leaves $RUN_DIR/NAME-{probe,stats-before,stats-after}.json
# and the wrk outputs in COLD_OUT and COLD_WARM; stops the server.
COLD_OUT=""
COLD_WARM=""
cold_measure() {
  local name="$1" expect="$2" shape="$3"
  shift 3
  cold_window
  start_server "$name" "$@"
  if [[ "$expect" != "raw" ]]; then rollups_wait "$name"; fi
  clear_cache
  smoke_query "$RUN_DIR/$name-probe.json" "$(cold_probe_body "$shape")"
  local source
  source="$(py get "$RUN_DIR/$name-probe.json" metadata.source)"
  if [[ -z "$source" && "$expect" == "raw" ]] && ((!ROLLUPS_KNOWN)); then
    source=raw # a binary from before rollups: no metadata.source, always the raw table
  fi
  [[ "$source" == "$expect" ]] ||
    die "$name: a cold.lua-shaped query was answered from '${source:-?}' (metadata.source), not '$expect' (response: $RUN_DIR/$name-probe.json, log: $SERVER_LOG)"
  log "$name: the cold.lua-shaped probe ($shape filter) was answered from $source"
  run_wrk "$name-warmup" "$LUA_DIR/cold.lua" 16 "$WARMUP_SECONDS" /analytics/query 0 "$COLD_FIRST_EPOCH" "$COLD_DAYS" "$shape"
  COLD_WARM="$RUN_WRK_OUT"
  admin_stats "$RUN_DIR/$name-stats-before.json"
  run_wrk "$name" "$LUA_DIR/cold.lua" 16 "$BENCH_SECONDS" /analytics/query 100000000 "$COLD_FIRST_EPOCH" "$COLD_DAYS" "$shape"
  COLD_OUT="$RUN_WRK_OUT"
  admin_stats "$RUN_DIR/$name-stats-after.json"
  clear_cache # do not leave thousands of one-off entries in the shared Redis
  stop_server
}

# cold_raw NAME SHAPE: the cold workload with cold.lua's filter SHAPE from
# the raw table (rollups off); the baseline of the rollup run of that shape.
cold_raw() {
  local name="$1" shape="$2"
  cold_measure "$name" raw "$shape"
  local -a logs
  mapfile -t logs < <(log_counts)
  record "$name" --wrk "$COLD_OUT" --warmup "$COLD_WARM" \
    --stats "$RUN_DIR/$name-stats-before.json" "$RUN_DIR/$name-stats-after.json" \
    connections=16 source=raw rollups_enabled=false "shape=$shape" "window_days=$COLD_DAYS" \
    "filter=$(cold_filter "$shape" '<uid>')" --watch "$RUN_DIR/watch-$name.json" "${logs[@]}"
}

# cold_rollups NAME SHAPE SOURCE BASELINE BUILD: the cold workload of SHAPE
# from the rollups: a server that only adopts them (build_on_start off, so no
# build competes with the load), whose probe must say SOURCE; compared with
# BASELINE (cold_raw of the same shape) of the same run. BUILD `build`: built
# now with the CLI (timed); `reuse`: the build of an earlier rollup scenario
# of this run when still ready, else built now (rollups_ready_or_build).
cold_rollups() {
  local name="$1" shape="$2" source="$3" baseline="$4" build="$5"
  need_rollups "$name"
  if [[ "$build" == "build" ]]; then
    rollups_build "$name"
    ROLLUP_BUILD=(--merge "$RUN_DIR/$name-build.json" "build_from=$name")
  else
    rollups_ready_or_build "$name"
  fi
  cold_measure "$name" "$source" "$shape" APP__ROLLUPS__ENABLED=true APP__ROLLUPS__BUILD_ON_START=false
  local -a logs
  mapfile -t logs < <(log_counts)
  py rollup-stats "$RUN_DIR/$name-stats-before.json" "$RUN_DIR/$name-stats-after.json" "$source" \
    >"$RUN_DIR/$name-rollups.json"
  py cold-compare "$COLD_OUT" "$baseline" "$RUN_DIR/$name-probe.json" "$RUN_DIR/$baseline-probe.json" \
    >"$RUN_DIR/$name-compare.json"
  local share
  share="$(py get "$RUN_DIR/$name-rollups.json" served_share)"
  if ! python3 -c "import sys; sys.exit(0 if '$share' and float('$share') >= 0.99 else 1)"; then
    log "WARNING: only ${share:-?} of the computed answers came from $source (see $RUN_DIR/$name-rollups.json)"
  fi
  record "$name" --wrk "$COLD_OUT" --warmup "$COLD_WARM" \
    --stats "$RUN_DIR/$name-stats-before.json" "$RUN_DIR/$name-stats-after.json" \
    "${ROLLUP_BUILD[@]}" --merge "$RUN_DIR/$name-rollups.json" \
    --merge "$RUN_DIR/$name-compare.json" connections=16 "source=$source" rollups_enabled=true \
    "shape=$shape" "window_days=$COLD_DAYS" "filter=$(cold_filter "$shape" '<uid>')" \
    --watch "$RUN_DIR/watch-$name.json" "${logs[@]}"
}

# store_id ne <uid>: only daily_store (day x channel x store) covers it.
scenario_cold() { cold_raw cold store; }
scenario_cold_rollups() { cold_rollups cold-rollups store daily_store cold build; }
# channel_id not_in [<uid>]: covered by daily_channel (day x channel x status).
scenario_cold_channel() { cold_raw cold-channel channel; }
scenario_cold_channel_rollups() { cold_rollups cold-channel-rollups channel daily_channel cold-channel reuse; }

# A rollups server with its rollups ready; one INSERT of REFRESH_ROWS sales,
# then polled until every rollup re-aggregated it (bench.py rollup-refresh);
# then the rows are deleted (a change too) and its re-aggregation awaited.
scenario_rollup_refresh() {
  need_rollups rollup-refresh
  delete_inserted_sales # leftovers of an interrupted run
  rollups_ready_or_build rollup-refresh
  start_server rollup-refresh APP__ROLLUPS__ENABLED=true APP__ROLLUPS__BUILD_ON_START=false
  rollups_wait rollup-refresh
  local first_day
  first_day="$(date -u -d "$ANCHOR - $((REFRESH_DAYS + 7)) days" +%F)"
  log "rollup-refresh: one INSERT of $REFRESH_ROWS sales over $REFRESH_DAYS days from $first_day, then poll until re-aggregated"
  SALES_INSERTED=1
  timeout $((ROLLUP_REFRESH_TIMEOUT * 2 + 120)) python3 "$BENCH_DIR/bench.py" rollup-refresh "$(base_url)" \
    "$ADMIN_TOKEN_VALUE" "$DATABASE_URL_BENCH" "$REFRESH_FIRST_ID" "$REFRESH_ROWS" "$first_day" "$REFRESH_DAYS" \
    "$ROLLUP_REFRESH_TIMEOUT" >"$RUN_DIR/rollup-refresh.json" &
  DRIVER_PID=$!
  watch_start rollup-refresh 5
  local rc=0
  wait "$DRIVER_PID" || rc=$?
  DRIVER_PID=""
  watch_end
  ((rc == 0)) || die "rollup-refresh driver failed (status $rc; log: $SERVER_LOG)"
  log "rollup-refresh: commit -> refreshed in $(py get "$RUN_DIR/rollup-refresh.json" refresh_ms) ms"
  # The cleanup is a change as well: timed, and its re-aggregation awaited,
  # so the rollups are exact and nothing is pending when the server stops.
  py rollup-snapshot "$(base_url)" "$ADMIN_TOKEN_VALUE" >"$RUN_DIR/rollup-refresh-before-delete.json"
  local t0 t1
  t0=$EPOCHREALTIME
  delete_inserted_sales
  t1=$EPOCHREALTIME
  SALES_INSERTED=0
  python3 -c "import json; print(json.dumps({'delete_s': round($t1 - $t0, 3)}))" \
    >"$RUN_DIR/rollup-refresh-delete-time.json"
  timeout $((ROLLUP_REFRESH_TIMEOUT + 60)) python3 "$BENCH_DIR/bench.py" rollup-settle "$(base_url)" "$ADMIN_TOKEN_VALUE" \
    "$DATABASE_URL_BENCH" "$RUN_DIR/rollup-refresh-before-delete.json" "$t1" "$ROLLUP_REFRESH_TIMEOUT" \
    >"$RUN_DIR/rollup-refresh-delete.json" || die "the rollups did not re-aggregate the DELETE (log: $SERVER_LOG)"
  log "rollup-refresh: the DELETE was re-aggregated $(py get "$RUN_DIR/rollup-refresh-delete.json" delete_refresh_ms) ms after it returned"
  local -a logs
  mapfile -t logs < <(log_counts)
  stop_server
  record rollup-refresh --merge "$RUN_DIR/rollup-refresh.json" --merge "$RUN_DIR/rollup-refresh-delete-time.json" \
    --merge "$RUN_DIR/rollup-refresh-delete.json" "${ROLLUP_BUILD[@]}" rollups_enabled=true \
    --watch "$RUN_DIR/watch-rollup-refresh.json" "${logs[@]}" \
    "notes=one INSERT of $REFRESH_ROWS sales (ids from $REFRESH_FIRST_ID, $REFRESH_DAYS days from $first_day) on a kept-open psql session; refresh_ms runs from psql's answer (committed) to the first poll (every 10 ms) at which the change log is empty and every rollup's analytics_rollup_refresh_seconds count grew; stats_ms adds /cache/stats showing, for every rollup, pending_changes 0 in a measurement newer than the refresh (the server measures every refresh_interval_ms, so this includes up to that cadence); refresh_seconds is the histogram's sum delta (time inside the refresh transactions). The DELETE of those rows (the cleanup) is a change too: delete_refresh_ms runs from its return to the same condition, an upper bound (the poller starts after the DELETE returned, ~0.1-0.2 s)."
}

scenario_stampede() {
  start_server stampede
  # Warm the pool and the prepared statement with a different query, so the
  # burst measures coalescing, not connection setup.
  smoke_query "$RUN_DIR/stampede-prewarm.json" \
    '{"metrics":["revenue","average_ticket","sales_count"],"dimensions":["channel"],"date_range":{"start_date":"2026-09-01","end_date":"2026-09-30"}}'
  log "stampede: clear cache, 100 concurrent identical cold requests"
  timeout 120 python3 "$BENCH_DIR/bench.py" stampede "$(base_url)" "$ADMIN_TOKEN_VALUE" 100 "$TYPICAL_BODY" \
    >"$RUN_DIR/stampede.json" || die "stampede driver failed"
  local -a logs
  mapfile -t logs < <(log_counts)
  stop_server
  record stampede --merge "$RUN_DIR/stampede.json" connections=100 "${logs[@]}"
}

# Two instances on one database and one cache prefix; STALENESS_CHANGES times
# a sale is inserted and both are polled until each answers the new
# sales_count (bench.py staleness): commit -> fresh answer, per instance.
scenario_staleness() {
  delete_inserted_sales # leftovers of an interrupted run
  start_server staleness-a
  start_peer staleness-b
  clear_cache
  SALES_INSERTED=1
  log "staleness: $STALENESS_CHANGES x (INSERT one sale, poll both instances every 5 ms until fresh, at most 5 s)"
  timeout $((STALENESS_CHANGES * 7 + 120)) python3 "$BENCH_DIR/bench.py" staleness "$(base_url)" "$(peer_url)" \
    "$ADMIN_TOKEN_VALUE" "$DATABASE_URL_BENCH" "$STALENESS_CHANGES" "$STALENESS_BODY" "$STALENESS_FIRST_ID" \
    "$RUN_DIR/staleness-samples.jsonl" >"$RUN_DIR/staleness.json" &
  DRIVER_PID=$!
  watch_start staleness 15 # the first 15 s (a run takes ~15-30 s)
  local rc=0
  wait "$DRIVER_PID" || rc=$?
  DRIVER_PID=""
  watch_end
  ((rc == 0)) || die "staleness driver failed (status $rc)"
  delete_inserted_sales
  SALES_INSERTED=0
  local -a logs peer_logs
  mapfile -t logs < <(log_counts)
  mapfile -t peer_logs < <(log_counts "$PEER_LOG" | sed 's/^/peer_/')
  stop_peer
  stop_server
  record staleness --merge "$RUN_DIR/staleness.json" connections=2 "body=$STALENESS_BODY" \
    --watch "$RUN_DIR/watch-staleness.json" "${logs[@]}" "${peer_logs[@]}" \
    "notes=two instances, same database and cache prefix; each change is one INSERT (created_at = now()) on a kept-open psql session; a sample runs from psql's answer (committed) to the first response carrying the new sales_count, polling every 5 ms; the query has no date_range, so a fresh answer is a full-table statement (see fresh_miss_query_time_p50_ms)."
}

# start_private_redis NAME [PORT]: a redis-server of the scenario's own on
# 127.0.0.1:PORT (default: a free port), no persistence, in the foreground as
# our child (REDIS_PID; stop_redis stops it); waits for PING (at most 5 s).
# Sets REDIS_PORT. Its output is appended to $RUN_DIR/NAME-redis.log.
start_private_redis() {
  local name="$1" port="${2:-}"
  need redis-server "apt-get install -y redis-server"
  need redis-cli "apt-get install -y redis-tools"
  [[ -z "$REDIS_PID" ]] || die "internal: a private redis-server is already running ($REDIS_PID)"
  [[ -n "$port" ]] || port="$(py free-port)"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    >>"$RUN_DIR/$name-redis.log" 2>&1 &
  REDIS_PID=$!
  REDIS_PORT="$port"
  local i
  for ((i = 0; i < 50; i++)); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    kill -0 "$REDIS_PID" 2>/dev/null || die "private redis-server exited (see $RUN_DIR/$name-redis.log)"
    sleep 0.1
  done
  redis-cli -p "$port" ping >/dev/null 2>&1 || die "private redis-server on :$port did not answer PING in 5 s"
  log "private redis-server on :$port (pid $REDIS_PID)"
}

scenario_redis_down() {
  start_private_redis redis-down
  local rport="$REDIS_PORT"

  start_server redis-down "REDIS_URL=redis://127.0.0.1:$rport"
  admin_stats "$RUN_DIR/redis-down-stats-up.json"
  log "redis status before the kill: $(py get "$RUN_DIR/redis-down-stats-up.json" status)"
  stop_redis
  log "killed the private redis-server; running the mix at 16 connections"
  admin_stats "$RUN_DIR/redis-down-stats-before.json"
  local out_down
  run_wrk redis-down "$LUA_DIR/mix.lua" 16 "$BENCH_SECONDS" /analytics/query 3
  out_down="$RUN_WRK_OUT"
  admin_stats "$RUN_DIR/redis-down-stats-after.json"
  local -a logs
  mapfile -t logs < <(log_counts)
  local breaker
  breaker="$(py get "$RUN_DIR/redis-down-stats-after.json" breaker)"
  stop_server

  start_server redis-down-dbonly APP__CACHE__ENABLED=false
  local out_db
  run_wrk redis-down-dbonly "$LUA_DIR/mix.lua" 16 "$BENCH_SECONDS" /analytics/query 3
  out_db="$RUN_WRK_OUT"
  local db_warn db_504
  db_warn="$(grep 'WARN' "$SERVER_LOG" | grep -c -v 'slow statement' || true)"
  db_504="$(grep -c 'Status code: 504' "$SERVER_LOG" || true)"
  stop_server

  py wrk-json "$out_db" >"$RUN_DIR/redis-down-dbonly.json"
  local db_rps db_p50 db_p99 db_non2xx down_rps ratio
  db_rps="$(py get "$RUN_DIR/redis-down-dbonly.json" rps)"
  db_p50="$(py get "$RUN_DIR/redis-down-dbonly.json" p50_ms)"
  db_p99="$(py get "$RUN_DIR/redis-down-dbonly.json" p99_ms)"
  local db_statuses
  db_statuses="$(py get "$RUN_DIR/redis-down-dbonly.json" statuses)"
  db_non2xx="$(py get "$RUN_DIR/redis-down-dbonly.json" non2xx)"
  py wrk-json "$out_down" >"$RUN_DIR/redis-down-down.json"
  down_rps="$(py get "$RUN_DIR/redis-down-down.json" rps)"
  ratio="$(python3 -c "print(round($down_rps / $db_rps, 3) if $db_rps > 0 else 0)")"
  record redis-down --wrk "$out_down" \
    --stats "$RUN_DIR/redis-down-stats-before.json" "$RUN_DIR/redis-down-stats-after.json" \
    connections=16 "db_only_rps=$db_rps" "db_only_p50_ms=$db_p50" "db_only_p99_ms=$db_p99" \
    "db_only_non2xx=$db_non2xx" "db_only_statuses=${db_statuses:-null}" "db_only_server_log_warnings=${db_warn:-0}" "db_only_server_log_504=${db_504:-0}" "ratio=$ratio" \
    "breaker=$breaker" --watch "$RUN_DIR/watch-redis-down.json" "${logs[@]}"
}

scenario_redis_benchmark() {
  need redis-benchmark "apt-get install -y redis-tools"
  log "redis-benchmark -t get -n 200000 against the shared Redis"
  watch_start redis-benchmark 3
  timeout 300 redis-benchmark -h 127.0.0.1 -p 6379 -t get -n 200000 -q >"$RUN_DIR/redis-benchmark.txt" 2>&1 ||
    die "redis-benchmark failed: $(tail -n 5 "$RUN_DIR/redis-benchmark.txt")"
  watch_end
  py redis-benchmark "$RUN_DIR/redis-benchmark.txt" >"$RUN_DIR/redis-benchmark.json"
  record redis-benchmark --merge "$RUN_DIR/redis-benchmark.json" connections=50 --watch "$RUN_DIR/watch-redis-benchmark.json" \
    "notes=redis-benchmark defaults: 50 clients, no pipelining, 3-byte values."
}

# ------------------------------------------------------------------ nginx (hot path)

# ensure_nginx: installs nginx with apt-get when missing (nginx-light, else
# nginx). Only the binary is used: the bench never starts, stops or reloads a
# system service (Debian's policy-rc.d or a missing init keeps the package
# from starting one; one that does start is left alone and named in the log).
NGINX_BIN=""
ensure_nginx() {
  NGINX_BIN="$(command -v nginx || true)"
  if [[ -z "$NGINX_BIN" && -x /usr/sbin/nginx ]]; then NGINX_BIN=/usr/sbin/nginx; fi
  if [[ -z "$NGINX_BIN" ]]; then
    log "installing nginx (log: $OUT/apt-nginx.log)"
    { apt-get update -qq && { apt-get install -y -qq nginx-light || apt-get install -y -qq nginx; }; } \
      >"$OUT/apt-nginx.log" 2>&1 || die "could not install nginx (see $OUT/apt-nginx.log)"
    NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
    [[ -x "$NGINX_BIN" ]] || die "nginx installed but not found (see $OUT/apt-nginx.log)"
    local others
    others="$(pgrep -x nginx | tr '\n' ' ' || true)"
    if [[ -n "$others" ]]; then log "note: the package started nginx processes of its own ($others); left alone"; fi
  fi
}

# write_nginx_conf DIR LISTEN_PORT UPSTREAM_PORT: DIR/nginx.conf, every path
# under DIR (pid, logs, temp files, the cache): proxy_cache keyed by method,
# URI, body and Authorization; POST cached; 200s kept 300 s. The server's
# `Cache-Control: private, max-age=N` (and Expires/Set-Cookie/X-Accel-*) is
# ignored, or nothing would be cached; its `Vary` is honoured. The body is
# read into memory (client_body_buffer_size = the server's body limit, 64 KB)
# so $request_body is set. Client keepalive unlimited (nginx closes a client
# connection after 1,000 requests by default; the server never does), no
# access log, open_file_cache for the cache files (NGINX_OPEN_FILE_CACHE=0:
# off), keepalive connections to the upstream.
write_nginx_conf() {
  local dir="$1" port="$2" upstream="$3" user_line="" ofc=""
  if ((EUID == 0)); then user_line="user $(id -un) $(id -gn);"; fi # workers write the cache under DIR
  if [[ "$NGINX_OPEN_FILE_CACHE" == "1" ]]; then ofc="open_file_cache max=1000 inactive=60s;"; fi
  mkdir -p "$dir/cache" "$dir/tmp"
  cat >"$dir/nginx.conf" <<CONF
# generated by bench/run.sh (scenario nginx); run as
#   $NGINX_BIN -p $dir/ -c $dir/nginx.conf -e $dir/error.log
$user_line
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
pid $dir/nginx.pid;
error_log $dir/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 75s;
    client_body_temp_path $dir/tmp/client_body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    $ofc

    proxy_cache_path $dir/cache levels=1:2 keys_zone=bench:10m max_size=256m inactive=10m use_temp_path=off;

    upstream analytics_api {
        server 127.0.0.1:$upstream;
        keepalive 32;
    }

    server {
        listen 127.0.0.1:$port backlog=4096;

        location = /nginx-ready {
            return 204;
        }

        location / {
            client_body_buffer_size 64k;
            client_max_body_size 64k;
            proxy_pass http://analytics_api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_methods POST;
            proxy_cache_key "\$request_method\$request_uri\$request_body\$http_authorization";
            proxy_cache_valid 200 300s;
            proxy_ignore_headers Cache-Control Expires Set-Cookie X-Accel-Expires;
            proxy_cache_lock on;
            add_header X-Nginx-Cache \$upstream_cache_status always;
        }
    }
}
CONF
}

# start_nginx UPSTREAM_PORT: nginx on a free port in front of 127.0.0.1:UPSTREAM_PORT,
# as its own foreground process (daemon off) with its prefix, config, pid,
# logs and cache in $RUN_DIR/nginx (NGINX_PID: the master, NGINX_PORT);
# `nginx -t` first; waits until it answers (10 s). stop_nginx (also on exit)
# stops it by that PID.
NGINX_DIR=""
start_nginx() {
  [[ -z "$NGINX_PID" ]] || die "internal: nginx is already running ($NGINX_PID)"
  NGINX_DIR="$RUN_DIR/nginx"
  NGINX_PORT="$(py free-port)"
  write_nginx_conf "$NGINX_DIR" "$NGINX_PORT" "$1"
  local -a cmd=("$NGINX_BIN" -p "$NGINX_DIR/" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/error.log")
  "${cmd[@]}" -t >"$NGINX_DIR/config-test.log" 2>&1 ||
    die "nginx -t refused $NGINX_DIR/nginx.conf: $(tail -n 5 "$NGINX_DIR/config-test.log")"
  "${cmd[@]}" >"$NGINX_DIR/stdout.log" 2>&1 &
  NGINX_PID=$!
  local i
  for ((i = 0; i < 100; i++)); do
    if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$NGINX_PORT/nginx-ready"; then
      log "nginx up on :$NGINX_PORT -> :$1 (master pid $NGINX_PID, $NGINX_WORKERS workers, $NGINX_DIR)"
      return 0
    fi
    kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited during startup (see $NGINX_DIR/error.log)"
    sleep 0.1
  done
  die "nginx did not answer within 10 s (see $NGINX_DIR/error.log)"
}

stop_nginx() { # SIGTERM to the master (fast shutdown: it stops its workers and exits)
  if [[ -n "$NGINX_PID" ]]; then
    stop_process "$NGINX_PID" 100
    NGINX_PID=""
  fi
}

# nginx_check_hit FILE: the typical query through nginx twice; the second
# answer must be 200 with X-Nginx-Cache: HIT (else nginx is not caching it).
nginx_check_hit() {
  local file="$1" i code cache=""
  for i in 1 2; do
    code="$(curl -s -o "$file" -D "$file.headers" -w '%{http_code}' --max-time 30 -X POST \
      -H 'Content-Type: application/json' --data "$TYPICAL_BODY" \
      "http://127.0.0.1:$NGINX_PORT/analytics/query")" || code="curl-failed"
    [[ "$code" == "200" ]] || die "the query through nginx answered $code (see $NGINX_DIR/error.log)"
    cache="$(tr -d '\r' <"$file.headers" | sed -n 's/^[Xx]-[Nn]ginx-[Cc]ache: *//p')"
    log "through nginx, request $i: 200, X-Nginx-Cache: ${cache:-none}"
  done
  [[ "$cache" == "HIT" ]] || die "nginx does not cache the query (second answer: X-Nginx-Cache ${cache:-none}; see $file.headers)"
}

# nginx_target TARGET: sets NT_URL, NT_LUA, NT_PATH and NT_STATS (whose
# /cache/stats to read around the window: the server that answers, or the
# one behind nginx) for one of the scenario's four targets.
NT_URL="" NT_LUA="" NT_PATH="" NT_STATS=""
nginx_target() {
  NT_LUA="$LUA_DIR/typical.lua" NT_PATH=/analytics/query NT_STATS="$(base_url)"
  case "$1" in
    server-l1) NT_URL="$(base_url)" ;;
    nginx) NT_URL="http://127.0.0.1:$NGINX_PORT" ;;
    server-l1-off) NT_URL="$(peer_url)" NT_STATS="$(peer_url)" ;;
    health) NT_URL="$(base_url)" NT_LUA="$LUA_DIR/health.lua" NT_PATH=/health/live ;;
    *) die "internal: unknown nginx target '$1'" ;;
  esac
}

nginx_procs() { # the process groups measured in every window (bench.py proc-snapshot)
  printf '%s\n' "server=$SERVER_PID" "peer=$PEER_PID" "nginx=${NGINX_PID:+$NGINX_PID+}"
}

# nginx_window TARGET ROUND: one measured window of BENCH_SECONDS: /cache/stats,
# a process snapshot, wrk, a snapshot, /cache/stats (the HTTP calls stay out of
# the CPU window); appends bench.py nginx-window's line to nginx-windows.jsonl.
nginx_window() {
  local target="$1" rnd="$2" base="$RUN_DIR/nginx-$1-$2"
  local -a procs
  mapfile -t procs < <(nginx_procs)
  nginx_target "$target"
  admin_stats "$base-stats-before.json" "$NT_STATS"
  py proc-snapshot "$base-procs-before.json" "${procs[@]}"
  WRK_URL="$NT_URL" run_wrk "nginx-$target-$rnd" "$NT_LUA" "$NGINX_CONNECTIONS" "$BENCH_SECONDS" "$NT_PATH"
  py proc-snapshot "$base-procs-after.json" "${procs[@]}"
  admin_stats "$base-stats-after.json" "$NT_STATS"
  py nginx-window "$target" "$rnd" "$RUN_WRK_OUT" "$base-procs-before.json" "$base-procs-after.json" \
    "$base-stats-before.json" "$base-stats-after.json" "$RUN_DIR/watch-nginx-$target-$rnd.json" \
    >>"$RUN_DIR/nginx-windows.jsonl"
  log "  $target round $rnd: $(py nginx-line "$RUN_DIR/nginx-windows.jsonl" "$(nginx_serving "$target")")"
}

nginx_serving() { # the process group that serves TARGET
  case "$1" in
    nginx) echo nginx ;;
    server-l1-off) echo peer ;;
    *) echo server ;;
  esac
}

# nginx_perf: with NGINX_PERF_SECONDS > 0 and perf available, one extra
# server-l1 window (not in the table) with `perf record -g` on the server;
# the top symbols go to $RUN_DIR/nginx-perf-server-l1.txt (NGINX_PERF_REPORT).
NGINX_PERF_REPORT=""
nginx_perf() {
  ((NGINX_PERF_SECONDS > 0)) || return 0
  if ! command -v perf >/dev/null 2>&1; then
    log "perf not found; no profile (NGINX_PERF_SECONDS=$NGINX_PERF_SECONDS)"
    return 0
  fi
  local data="$RUN_DIR/nginx-perf-server-l1.data" report="$RUN_DIR/nginx-perf-server-l1.txt" perf_pid rc=0
  log "perf record -g of the server (pid $SERVER_PID) during one more server-l1 window of ${NGINX_PERF_SECONDS}s"
  timeout $((NGINX_PERF_SECONDS + 60)) perf record -F 999 -g -p "$SERVER_PID" -o "$data" -- sleep "$NGINX_PERF_SECONDS" \
    >"$RUN_DIR/nginx-perf-record.log" 2>&1 &
  perf_pid=$!
  nginx_target server-l1
  WRK_URL="$NT_URL" run_wrk nginx-perf-server-l1 "$NT_LUA" "$NGINX_CONNECTIONS" "$NGINX_PERF_SECONDS" "$NT_PATH"
  wait "$perf_pid" || rc=$?
  if ((rc != 0)); then
    log "perf record failed (status $rc; see $RUN_DIR/nginx-perf-record.log)"
    return 0
  fi
  {
    echo "# perf record -F 999 -g -p <server> during server-l1 (wrk -c$NGINX_CONNECTIONS, ${NGINX_PERF_SECONDS}s)"
    echo "# self time by symbol (--no-children), then by shared object"
    perf report -i "$data" --no-children -F overhead,sym -g none --stdio 2>/dev/null |
      grep -E '^ +[0-9.]+%' | sed 's/ *$//' | head -n 40
    echo
    perf report -i "$data" --no-children -F overhead,dso -g none --stdio 2>/dev/null |
      grep -E '^ +[0-9.]+%' | sed 's/ *$//' | head -n 15
  } >"$report" || true
  NGINX_PERF_REPORT="$report"
  log "perf report: $report"
}

# nginx: the hot path against nginx's proxy_cache, interleaved (see the header).
scenario_nginx() {
  ensure_nginx
  start_server nginx
  clear_cache
  smoke_query "$RUN_DIR/nginx-first.json"
  start_peer nginx-l1-off APP__CACHE__L1_ENABLED=false
  start_nginx "$SERVER_PORT"
  nginx_check_hit "$RUN_DIR/nginx-through-nginx.json"
  local -a targets=(server-l1 nginx server-l1-off health)
  local t rnd
  rm -f "$RUN_DIR/nginx-windows.jsonl"
  for t in "${targets[@]}"; do
    nginx_target "$t"
    WRK_URL="$NT_URL" run_wrk "nginx-$t-warmup" "$NT_LUA" "$NGINX_CONNECTIONS" "$WARMUP_SECONDS" "$NT_PATH"
  done
  for ((rnd = 1; rnd <= NGINX_ROUNDS; rnd++)); do
    log "round $rnd/$NGINX_ROUNDS: ${targets[*]} (${BENCH_SECONDS}s each)"
    for t in "${targets[@]}"; do nginx_window "$t" "$rnd"; done
  done
  nginx_perf
  py nginx-summary "$RUN_DIR/nginx-windows.jsonl" >"$RUN_DIR/nginx-summary.json"
  local -a logs peer_logs extra=()
  mapfile -t logs < <(log_counts)
  mapfile -t peer_logs < <(log_counts "$PEER_LOG" | sed 's/^/peer_/')
  if [[ -n "$NGINX_PERF_REPORT" ]]; then extra+=("perf_report=$NGINX_PERF_REPORT"); fi
  local version
  version="$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')"
  stop_nginx
  stop_peer
  stop_server
  record nginx --merge "$RUN_DIR/nginx-summary.json" "connections=$NGINX_CONNECTIONS" "rounds=$NGINX_ROUNDS" \
    "round_seconds=$BENCH_SECONDS" "warmup_s=$WARMUP_SECONDS" "nginx_version=$version" \
    "nginx_workers=$NGINX_WORKERS" "nginx_open_file_cache=$NGINX_OPEN_FILE_CACHE" \
    "nginx_conf=$NGINX_DIR/nginx.conf" "windows=$RUN_DIR/nginx-windows.jsonl" "${logs[@]}" "${peer_logs[@]}" "${extra[@]}" \
    "notes=nginx serves its stored copy for proxy_cache_valid (300 s): frozen metadata (age, query_time_ms) and no invalidation when the data changes; the server's own caches are invalidated by change capture."
}

# ------------------------------------------------------------------ faults

# start_proxy NAME TARGET_PORT DELAY_MS: bench.py delay-proxy on a free port in
# front of 127.0.0.1:TARGET_PORT, delay off until SIGUSR1 (PROXY_PID, PROXY_PORT;
# its counters go to PROXY_OUT when stopped); waits until it listens (10 s).
# It also exits by itself when this script's shell is gone.
PROXY_PORT=""
start_proxy() {
  local name="$1" target="$2" delay="$3"
  [[ -z "$PROXY_PID" ]] || die "internal: a delay proxy is already running ($PROXY_PID)"
  PROXY_PORT="$(py free-port)"
  PROXY_OUT="$RUN_DIR/faults-$name-proxy.json"
  rm -f "$PROXY_OUT" "$PROXY_OUT.ready"
  python3 "$BENCH_DIR/bench.py" delay-proxy "$PROXY_PORT" "$target" "$delay" "$PROXY_OUT" \
    2>"$RUN_DIR/faults-$name-proxy.log" &
  PROXY_PID=$!
  local i
  for ((i = 0; i < 100; i++)); do
    if [[ -e "$PROXY_OUT.ready" ]]; then
      log "delay proxy :$PROXY_PORT -> :$target (pid $PROXY_PID, ${delay} ms per direction when on)"
      return 0
    fi
    kill -0 "$PROXY_PID" 2>/dev/null || die "the delay proxy exited (see $RUN_DIR/faults-$name-proxy.log)"
    sleep 0.1
  done
  die "the delay proxy did not listen within 10 s"
}

# start_flood: bench.py flood against the server, FAULT_FLOOD_CONNECTIONS
# connections holding half a request line (FLOOD_PID; fault_phase ends it
# after the phase's wrk); returns once they are open (at most 40 s).
start_flood() {
  [[ -z "$FLOOD_PID" ]] || die "internal: a flood is already running ($FLOOD_PID)"
  FLOOD_OUT="$RUN_DIR/faults-flood-connections.json"
  rm -f "$FLOOD_OUT" "$FLOOD_OUT.ready"
  timeout $((FAULT_PHASE_SECONDS + 120)) python3 "$BENCH_DIR/bench.py" flood 127.0.0.1 "$SERVER_PORT" \
    "$FAULT_FLOOD_CONNECTIONS" $((FAULT_PHASE_SECONDS + 60)) "$FLOOD_OUT" 2>"$RUN_DIR/faults-flood-connections.log" &
  FLOOD_PID=$!
  local i
  for ((i = 0; i < 400; i++)); do
    if [[ -e "$FLOOD_OUT.ready" ]]; then
      log "flood: $FAULT_FLOOD_CONNECTIONS half-sent connections requested, open (pid $FLOOD_PID)"
      return 0
    fi
    kill -0 "$FLOOD_PID" 2>/dev/null || die "the flood exited (see $RUN_DIR/faults-flood-connections.log)"
    sleep 0.1
  done
  die "the flood was not ready within 40 s"
}

# pg_ctl_priv ARGS...: pg_ctl of the private cluster, as user postgres.
pg_ctl_priv() {
  (cd "$PRIV_PG_DIR" && runuser -u postgres -- "$PG_BIN_DIR/pg_ctl" -D "$PRIV_PG_DIR/data" "$@") \
    >>"$RUN_DIR/faults-pg_ctl.log" 2>&1
}

# priv_pg_start: starts the private cluster (listening on 127.0.0.1:PRIV_PG_PORT,
# its socket in its temp dir; fsync off: a throwaway cluster), waits (60 s).
priv_pg_start() {
  pg_ctl_priv -w -t 60 -l "$PRIV_PG_DIR/postgres.log" \
    -o "-p $PRIV_PG_PORT -c listen_addresses=127.0.0.1 -k $PRIV_PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start || die "the private PostgreSQL did not start (see $RUN_DIR/faults-pg_ctl.log, $PRIV_PG_DIR/postgres.log)"
  log "private PostgreSQL up on :$PRIV_PG_PORT (pid $(priv_pg_pid))"
}

priv_pg_url() { printf 'postgres://postgres@127.0.0.1:%s/%s' "$1" "$PRIV_PG_DB"; }

# ensure_private_pg: once per run, the private cluster of the PostgreSQL
# faults: initdb as postgres in a temp dir (trust auth), started on a free
# port, database PRIV_PG_DB migrated and seeded with FAULT_PG_SALES sales (the
# bench's seed and anchor, so the mix's queries find data). stop_private_pg
# (also on exit) stops it by PID and removes the temp dir.
ensure_private_pg() {
  [[ -z "$PRIV_PG_DIR" ]] || return 0
  [[ -x "$PG_BIN_DIR/initdb" && -x "$PG_BIN_DIR/pg_ctl" ]] || die "initdb/pg_ctl not found in $PG_BIN_DIR"
  need runuser "install util-linux"
  PRIV_PG_DIR="$(mktemp -d /tmp/bench-faults-pg.XXXXXX)"
  chown postgres:postgres "$PRIV_PG_DIR"
  PRIV_PG_PORT="$(py free-port)"
  log "private PostgreSQL cluster in $PRIV_PG_DIR: initdb"
  (cd "$PRIV_PG_DIR" && runuser -u postgres -- "$PG_BIN_DIR/initdb" -D "$PRIV_PG_DIR/data" -U postgres -A trust \
    -E UTF8 --locale=C --no-sync) >"$RUN_DIR/faults-initdb.log" 2>&1 ||
    die "initdb failed (see $RUN_DIR/faults-initdb.log)"
  priv_pg_start
  psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PRIV_PG_PORT" -U postgres -d postgres \
    -c "CREATE DATABASE $PRIV_PG_DB" >/dev/null
  local started=$SECONDS url
  url="$(priv_pg_url "$PRIV_PG_PORT")"
  local -a envs
  mapfile -t envs < <(server_env)
  envs+=("DATABASE_URL=$url")
  log "seeding the private cluster with $FAULT_PG_SALES sales"
  (cd "$ROOT" && env -i "${envs[@]}" RUST_LOG=info timeout 900 "$BIN" --config-dir "$CONFIG_DIR" migrate) \
    >"$RUN_DIR/faults-migrate.log" 2>&1 || die "migrate failed (see $RUN_DIR/faults-migrate.log)"
  (cd "$ROOT" && env -i "${envs[@]}" RUST_LOG=info timeout 900 \
    "$BIN" --config-dir "$CONFIG_DIR" seed --sales "$FAULT_PG_SALES" --seed "$SEED" --anchor "$ANCHOR") \
    >"$RUN_DIR/faults-seed.log" 2>&1 || die "seed failed (see $RUN_DIR/faults-seed.log)"
  psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PRIV_PG_PORT" -U postgres -d "$PRIV_PG_DB" \
    -c 'VACUUM (ANALYZE) sales' >/dev/null
  log "private cluster seeded in $((SECONDS - started)) s"
}

# fault_server FAULT [VAR=value ...]: the fault's server (start_server
# faults-FAULT VARs), one query that must answer 200, then the mix's warm-up.
FAULT_PREV_SNAP=""
fault_server() {
  local fault="$1"
  shift
  start_server "faults-$fault" "$@"
  smoke_query "$RUN_DIR/faults-$fault-first.json"
  run_wrk "faults-$fault-warmup" "$LUA_DIR/mix.lua" "$FAULT_CONNECTIONS" "$FAULT_WARMUP_SECONDS" /analytics/query 1
  FAULT_PREV_SNAP=""
}

# fault_phase FAULT PHASE SEED: the mix for FAULT_PHASE_SECONDS (wrk seed
# SEED) between two bench.py fault-snapshot calls, with bench.py fault-watch
# polling /health/live, /health and the RSS meanwhile. A flood in progress
# (FLOOD_PID) is ended after the final snapshot and its counters added.
# Writes $RUN_DIR/faults-FAULT-PHASE.json (bench.py fault-phase); its
# counters run from the previous phase's end, so what the fault did as it was
# applied counts in this phase.
fault_phase() {
  local fault="$1" phase="$2" seed="$3" base="$RUN_DIR/faults-$1-$2"
  py fault-snapshot "$(base_url)" "$ADMIN_TOKEN_VALUE" "$SERVER_PID" "$SERVER_LOG" >"$base-start.json"
  timeout $((FAULT_PHASE_SECONDS + 30)) python3 "$BENCH_DIR/bench.py" fault-watch "$(base_url)" "$SERVER_PID" \
    "$FAULT_PHASE_SECONDS" "$base-watch.json" &
  FWATCH_PID=$!
  run_wrk "faults-$fault-$phase" "$LUA_DIR/mix.lua" "$FAULT_CONNECTIONS" "$FAULT_PHASE_SECONDS" /analytics/query "$seed"
  local out="$RUN_WRK_OUT"
  wait "$FWATCH_PID" || log "fault watcher failed (ignored)"
  FWATCH_PID=""
  py fault-snapshot "$(base_url)" "$ADMIN_TOKEN_VALUE" "$SERVER_PID" "$SERVER_LOG" >"$base-end.json"
  local -a extra=(--machine "$RUN_DIR/watch-faults-$fault-$phase.json")
  if [[ -n "$FAULT_PREV_SNAP" ]]; then extra+=(--since "$FAULT_PREV_SNAP"); fi
  if [[ -n "$FLOOD_PID" ]]; then
    stop_flood
    if [[ -s "$FLOOD_OUT" ]]; then extra+=(--flood "$FLOOD_OUT"); else log "the flood left no summary"; fi
  fi
  py fault-phase "$out" "$base-start.json" "$base-end.json" "$base-watch.json" "$SERVER_LOG" "${extra[@]}" >"$base.json"
  FAULT_PREV_SNAP="$base-end.json"
  log "  $fault $phase: $(py fault-line "$base.json")"
}

# fault_record FAULT [key=value ...]: stops the fault's server, proxy and
# redis-server, records fault-FAULT (out/latest/fault-FAULT.json) with its
# three phases.
fault_record() {
  local fault="$1"
  shift
  local -a logs extra=()
  mapfile -t logs < <(log_counts)
  stop_server
  stop_proxy
  if [[ -n "$PROXY_OUT" && -s "$PROXY_OUT" ]]; then extra+=("proxy=$(cat "$PROXY_OUT")"); fi
  PROXY_OUT=""
  stop_redis
  py record "fault-$fault" "fault=$fault" --phase before "$RUN_DIR/faults-$fault-before.json" \
    --phase during "$RUN_DIR/faults-$fault-during.json" --phase after "$RUN_DIR/faults-$fault-after.json" \
    "connections=$FAULT_CONNECTIONS" "phase_seconds=$FAULT_PHASE_SECONDS" "warmup_s=$FAULT_WARMUP_SECONDS" \
    "${logs[@]}" "${extra[@]}" "$@" >/dev/null
}

shared_db_text() { printf '%s on the shared PostgreSQL (%s sales)' "$BENCH_DB" "$BENCH_SALES"; }
private_db_text() {
  printf '%s on a private PostgreSQL 15 cluster (%s sales); APP__FRESHNESS__STALE_IF_ERROR_SECONDS=%s' \
    "$PRIV_PG_DB" "$FAULT_PG_SALES" "$FAULT_STALE_IF_ERROR_SECONDS"
}

fault_redis_kill() {
  start_private_redis faults-redis-kill
  local port="$REDIS_PORT"
  fault_server redis-kill "REDIS_URL=redis://127.0.0.1:$port"
  fault_phase redis-kill before 2
  log "redis-kill: SIGKILL to the private redis-server (pid $REDIS_PID)"
  kill -KILL "$REDIS_PID" 2>/dev/null || true
  wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=""
  fault_phase redis-kill during 3
  start_private_redis faults-redis-kill "$port"
  fault_phase redis-kill after 4
  fault_record redis-kill "db=$(shared_db_text)" \
    "what=the private redis-server gets SIGKILL just before *during*; just before *after* a new one starts, empty, on the same port."
}

fault_redis_freeze() {
  start_private_redis faults-redis-freeze
  fault_server redis-freeze "REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
  fault_phase redis-freeze before 2
  log "redis-freeze: SIGSTOP to the private redis-server (pid $REDIS_PID)"
  kill -STOP "$REDIS_PID"
  fault_phase redis-freeze during 3
  kill -CONT "$REDIS_PID"
  fault_phase redis-freeze after 4
  fault_record redis-freeze "db=$(shared_db_text)" \
    "what=SIGSTOP to the private redis-server (connections stay open, nothing answers); SIGCONT just before *after*."
}

fault_redis_slow() {
  start_private_redis faults-redis-slow
  start_proxy redis-slow "$REDIS_PORT" "$FAULT_REDIS_DELAY_MS"
  fault_server redis-slow "REDIS_URL=redis://127.0.0.1:$PROXY_PORT"
  fault_phase redis-slow before 2
  log "redis-slow: +$FAULT_REDIS_DELAY_MS ms per direction"
  kill -USR1 "$PROXY_PID"
  fault_phase redis-slow during 3
  kill -USR2 "$PROXY_PID"
  fault_phase redis-slow after 4
  fault_record redis-slow "db=$(shared_db_text)" "delay_ms=$FAULT_REDIS_DELAY_MS" \
    "what=the server reaches its redis-server through bench.py delay-proxy from the start (so *before* includes the proxy); *during* adds $FAULT_REDIS_DELAY_MS ms per direction to every chunk, *after* removes it."
}

fault_pg_stop() {
  ensure_private_pg
  start_private_redis faults-pg-stop
  fault_server pg-stop "REDIS_URL=redis://127.0.0.1:$REDIS_PORT" "DATABASE_URL=$(priv_pg_url "$PRIV_PG_PORT")" \
    "APP__FRESHNESS__STALE_IF_ERROR_SECONDS=$FAULT_STALE_IF_ERROR_SECONDS"
  fault_phase pg-stop before 2
  log "pg-stop: pg_ctl stop -m fast (private cluster, pid $(priv_pg_pid))"
  pg_ctl_priv -m fast -w -t 60 stop || die "pg_ctl stop failed (see $RUN_DIR/faults-pg_ctl.log)"
  fault_phase pg-stop during 3
  priv_pg_start
  fault_phase pg-stop after 4
  fault_record pg-stop "db=$(private_db_text)" "stale_if_error_seconds=$FAULT_STALE_IF_ERROR_SECONDS" \
    "what=\`pg_ctl stop -m fast\` of the private cluster just before *during*, \`pg_ctl start\` just before *after*."
}

fault_pg_slow() {
  ensure_private_pg
  start_private_redis faults-pg-slow
  start_proxy pg-slow "$PRIV_PG_PORT" "$FAULT_PG_DELAY_MS"
  fault_server pg-slow "REDIS_URL=redis://127.0.0.1:$REDIS_PORT" "DATABASE_URL=$(priv_pg_url "$PROXY_PORT")" \
    "APP__FRESHNESS__STALE_IF_ERROR_SECONDS=$FAULT_STALE_IF_ERROR_SECONDS"
  fault_phase pg-slow before 2
  log "pg-slow: +$FAULT_PG_DELAY_MS ms per direction"
  kill -USR1 "$PROXY_PID"
  fault_phase pg-slow during 3
  kill -USR2 "$PROXY_PID"
  fault_phase pg-slow after 4
  fault_record pg-slow "db=$(private_db_text)" "stale_if_error_seconds=$FAULT_STALE_IF_ERROR_SECONDS" \
    "delay_ms=$FAULT_PG_DELAY_MS" \
    "what=the server reaches the private cluster through bench.py delay-proxy from the start; *during* adds $FAULT_PG_DELAY_MS ms per direction, *after* removes it."
}

fault_flood() {
  start_private_redis faults-flood
  fault_server flood "REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
  fault_phase flood before 2
  start_flood
  fault_phase flood during 3
  fault_phase flood after 4
  fault_record flood "db=$(shared_db_text)" "flood_connections=$FAULT_FLOOD_CONNECTIONS" \
    "what=$FAULT_FLOOD_CONNECTIONS connections that send half a request line (\`GET /analytics/query HT\`) and nothing more, opened before *during* (one the server closes is opened again) and closed after it; the mix runs beside them."
}

scenario_faults() {
  local -a faults
  read -r -a faults <<<"$FAULTS"
  ((${#faults[@]} > 0)) || die "FAULTS is empty"
  local f k known
  for f in "${faults[@]}"; do
    known=0
    for k in "${KNOWN_FAULTS[@]}"; do [[ "$f" == "$k" ]] && known=1; done
    ((known)) || die "unknown fault '$f' in FAULTS (known: ${KNOWN_FAULTS[*]})"
  done
  for f in "${faults[@]}"; do
    log "--- fault $f: the mix ${FAULT_PHASE_SECONDS} s before, during and after"
    "fault_${f//-/_}"
  done
  stop_private_pg
}

# ------------------------------------------------------------------ main

main() {
  local -a scenarios=("$@")
  if ((${#scenarios[@]} == 0)); then scenarios=("${ALL_SCENARIOS[@]}"); fi
  mkdir -p "$OUT" "$OUT/latest"
  if [[ "${scenarios[*]}" == "report" ]]; then
    py render
    return
  fi
  local setup_only=0
  if [[ "${scenarios[*]}" == "setup" ]]; then
    setup_only=1
    scenarios=()
  fi
  local s known
  for s in "${scenarios[@]}"; do
    known=0
    for k in "${ALL_SCENARIOS[@]}"; do [[ "$s" == "$k" ]] && known=1; done
    ((known)) || die "unknown scenario '$s' (known: ${ALL_SCENARIOS[*]} report)"
  done
  mkdir -p "$RUN_DIR"
  log "run $RUN_ID: ${scenarios[*]} (BENCH_SECONDS=$BENCH_SECONDS, output $RUN_DIR)"
  ensure_tools
  build
  detect_rollups
  ensure_db
  gen_mix
  if ((setup_only)); then
    log "setup done (tools, binary, database, mix queries)"
    return
  fi
  for s in "${scenarios[@]}"; do
    log "=== scenario $s ==="
    "scenario_${s//-/_}"
  done
  py render
  log "done: ${BENCH_RESULTS_MD:-$BENCH_DIR/RESULTS.md}"
}

main "$@"
