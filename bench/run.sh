#!/usr/bin/env bash
# analytics-api load benchmarks: one entry point.
#
#   bench/run.sh [scenario...]     default: all scenarios, in the order below
#   bench/run.sh report            only re-render bench/RESULTS.md
#   bench/run.sh setup             only install/build/seed/generate (no load)
#
# Scenarios: uncached db-floor ceiling hot-l1 hot-redis mix cold stampede
#            redis-down redis-benchmark          (bench/README.md describes each)
#
# Environment knobs:
#   BENCH_SECONDS=20        measured seconds per load run
#   WARMUP_SECONDS=5        warm-up seconds before each measured run
#   MIX_WARMUP_SECONDS=10   warm-up seconds of the mix scenario
#   BENCH_SALES=1000000     sales rows in the bench database
#   BENCH_DB=analytics_bench
#   BENCH_SKIP_BUILD=1      use the existing target/bench/release/analytics-api
#   BENCH_REDIS_URL=redis://127.0.0.1:6379   the shared Redis (keys under bench:*)
#
# Every server runs on a free port of 127.0.0.1 with a clean environment and
# APP_ENV=bench (no config/local.toml overlay); every load loop is bounded in
# time; traps stop the server and the private redis-server on any exit.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
OUT="$BENCH_DIR/out"
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
WRK_TIMEOUT="10s"

PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=postgres
DATABASE_URL_BENCH="postgres://${PG_USER}@${PG_HOST}:${PG_PORT}/${BENCH_DB}"
PGBENCH="${PGBENCH:-/usr/lib/postgresql/15/bin/pgbench}"
TARGET_DIR="$ROOT/target/bench"
BIN="$TARGET_DIR/release/analytics-api"

TYPICAL_BODY='{"metrics":["revenue","average_ticket","sales_count"],"dimensions":["channel"],"date_range":{"start_date":"2026-10-01","end_date":"2026-10-31"}}'
ALL_SCENARIOS=(uncached db-floor ceiling hot-l1 hot-redis mix cold stampede redis-down redis-benchmark)

RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
RUN_DIR="$OUT/runs/$RUN_ID"
export BENCH_RUN_ID="$RUN_ID"
export BENCH_RESULTS_JSONL="$OUT/results.jsonl"
export BENCH_LUA_DIR="$LUA_DIR"
export BENCH_MIX_FILE="$OUT/mix_queries.lua"

SERVER_PID=""
SERVER_PORT=""
SERVER_LOG=""
REDIS_PID=""

# ------------------------------------------------------------------ helpers

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
  printf '[bench] ERROR: %s\n' "$*" >&2
  exit 1
}

py() { python3 "$BENCH_DIR/bench.py" "$@"; }

psql_bench() { psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$@"; }

stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      kill -TERM "$SERVER_PID" 2>/dev/null || true
      local i
      for ((i = 0; i < 150; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 "$SERVER_PID" 2>/dev/null; then
        log "server $SERVER_PID ignored SIGTERM for 15 s; sending SIGKILL"
        kill -KILL "$SERVER_PID" 2>/dev/null || true
      fi
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}

stop_redis() {
  if [[ -n "$REDIS_PID" ]]; then
    kill -TERM "$REDIS_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do
      kill -0 "$REDIS_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
  fi
}

cleanup() {
  local rc=$?
  stop_server
  stop_redis
  if ((rc != 0)); then
    log "exited with status $rc; partial results stay in $OUT"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

# A short description of what else is using the CPUs, for the notes.
machine_busy() {
  local load compiles
  load="$(cut -d' ' -f1 /proc/loadavg)"
  compiles="$(pgrep -c -x rustc || true)"
  if [[ "${compiles:-0}" != "0" ]]; then
    printf 'load %s, %s rustc running' "$load" "$compiles"
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

build() {
  if [[ "${BENCH_SKIP_BUILD:-0}" == "1" ]]; then
    [[ -x "$BIN" ]] || die "BENCH_SKIP_BUILD=1 but $BIN does not exist"
    log "using existing $BIN (BENCH_SKIP_BUILD=1)"
    return
  fi
  need cargo "install Rust"
  log "building release binary into $TARGET_DIR (log: $RUN_DIR/build.log)"
  if ! (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" timeout 3600 cargo build --release) >"$RUN_DIR/build.log" 2>&1; then
    tail -n 30 "$RUN_DIR/build.log" >&2
    die "cargo build --release failed (full log: $RUN_DIR/build.log)"
  fi
  [[ -x "$BIN" ]] || die "build succeeded but $BIN is missing"
}

# Environment of every server: nothing inherited but PATH/HOME, so stray
# APP__* variables in the caller's shell cannot skew a run.
server_env() {
  printf '%s\n' \
    "PATH=$PATH" "HOME=${HOME:-/root}" "APP_ENV=bench" \
    "DATABASE_URL=$DATABASE_URL_BENCH" "REDIS_URL=$SHARED_REDIS_URL" \
    "ADMIN_TOKEN=$ADMIN_TOKEN_VALUE" "HOST=127.0.0.1" "RUST_LOG=warn" \
    "APP__DATABASE__SEED_DEMO_ON_EMPTY=false" "APP__CACHE__PREFIX=bench"
}

ensure_db() {
  local exists count
  exists="$(psql_bench -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$BENCH_DB'")"
  if [[ "$exists" != "1" ]]; then
    log "creating database $BENCH_DB"
    psql_bench -d postgres -c "CREATE DATABASE \"$BENCH_DB\"" >/dev/null
  fi
  count="$(psql_bench -d "$BENCH_DB" -Atc "SELECT CASE WHEN to_regclass('public.sales') IS NULL THEN -1 ELSE (SELECT count(*) FROM sales) END")"
  if [[ "$count" == "$BENCH_SALES" ]]; then
    log "database $BENCH_DB already holds $count sales; not reseeding"
    return
  fi
  log "seeding $BENCH_DB with $BENCH_SALES sales (found $count; seed $SEED, anchor $ANCHOR)"
  local -a envs
  mapfile -t envs < <(server_env)
  (cd "$ROOT" && env -i "${envs[@]}" RUST_LOG=info timeout 3600 "$BIN" --config-dir config migrate) \
    >"$RUN_DIR/migrate.log" 2>&1 || die "migrate failed (see $RUN_DIR/migrate.log)"
  (cd "$ROOT" && env -i "${envs[@]}" RUST_LOG=info timeout 3600 \
    "$BIN" --config-dir config seed --sales "$BENCH_SALES" --seed "$SEED" --anchor "$ANCHOR") \
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
  local name="$1"
  shift
  [[ -z "$SERVER_PID" ]] || die "internal: a server is already running ($SERVER_PID)"
  SERVER_PORT="$(py free-port)"
  SERVER_LOG="$RUN_DIR/server-$name.log"
  local -a envs
  mapfile -t envs < <(server_env)
  envs+=("PORT=$SERVER_PORT" "$@")
  printf '%s\n' "${envs[@]}" | grep -v -e '^PATH=' -e '^HOME=' >"$RUN_DIR/server-$name.env"
  local started=$SECONDS
  (cd "$ROOT" && exec env -i "${envs[@]}" "$BIN" --config-dir config serve) >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  local i
  for ((i = 0; i < 600; i++)); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      wait "$SERVER_PID" 2>/dev/null || true
      SERVER_PID=""
      tail -n 20 "$SERVER_LOG" >&2
      die "server for $name exited during startup (log: $SERVER_LOG)"
    fi
    if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$SERVER_PORT/health/live"; then
      log "server for $name up on :$SERVER_PORT (pid $SERVER_PID) after $((SECONDS - started)) s"
      return
    fi
    sleep 0.1
  done
  tail -n 20 "$SERVER_LOG" >&2
  die "server for $name not live after 60 s (log: $SERVER_LOG)"
}

base_url() { printf 'http://127.0.0.1:%s' "$SERVER_PORT"; }

admin_stats() { # admin_stats FILE
  curl -sf --max-time 10 -H "Authorization: Bearer $ADMIN_TOKEN_VALUE" "$(base_url)/cache/stats" >"$1" ||
    die "GET /cache/stats failed (log: $SERVER_LOG)"
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

log_counts() { # key=value args for record: WARN/ERROR lines in the server log
  local warn err
  warn="$(grep -c 'WARN' "$SERVER_LOG" || true)"
  err="$(grep -c 'ERROR' "$SERVER_LOG" || true)"
  printf 'server_log_warnings=%s\nserver_log_errors=%s\nserver_log=%s\n' "${warn:-0}" "${err:-0}" "$SERVER_LOG"
}

rss_mb() {
  local kb
  kb="$(ps -o rss= -p "$SERVER_PID" | tr -d ' ')"
  [[ -n "$kb" ]] || die "cannot read the server's RSS"
  python3 -c "print(round($kb / 1024, 1))"
}

# run_wrk NAME LUA CONNECTIONS SECONDS PATH [lua args...]: output to $RUN_DIR/wrk-NAME.txt
run_wrk() {
  local name="$1" lua="$2" conns="$3" secs="$4" path="$5"
  shift 5
  local out="$RUN_DIR/wrk-$name.txt"
  local -a extra=()
  if (($# > 0)); then extra=(-- "$@"); fi
  log "wrk $name: -c$conns -d${secs}s $path ($(basename "$lua"))"
  timeout $((secs + 60)) wrk -t"$WRK_THREADS" -c"$conns" -d"${secs}s" --timeout "$WRK_TIMEOUT" --latency \
    -s "$lua" "$(base_url)$path" "${extra[@]}" >"$out" 2>&1 ||
    die "wrk $name failed: $(tail -n 5 "$out")"
  py wrk-json "$out" >/dev/null
  printf '%s\n' "$out"
}

summary_line() { # summary_line RESULT_JSON_LINE
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("  -> " + ", ".join(f"{k}={r[k]}" for k in ("rps","tps","p50_ms","p99_ms","hit_rate","non2xx","sql_count","ratio","rss_mb") if k in r))' "$1" >&2
}

record() { # record SCENARIO args... (see bench.py record)
  local line
  line="$(py record "$@")"
  summary_line "$line"
}

# ------------------------------------------------------------------ scenarios

scenario_uncached() {
  local busy
  busy="$(machine_busy)"
  start_server uncached APP__CACHE__ENABLED=false APP__DATABASE__MAX_CONNECTIONS=16
  smoke_query "$RUN_DIR/uncached-response.json"
  run_wrk uncached-warmup "$LUA_DIR/typical.lua" 16 "$WARMUP_SECONDS" /analytics/query >/dev/null
  local out
  out="$(run_wrk uncached "$LUA_DIR/typical.lua" 16 "$BENCH_SECONDS" /analytics/query)"
  busy="${busy:-$(machine_busy)}"
  local -a logs
  mapfile -t logs < <(log_counts)
  stop_server
  record uncached --wrk "$out" connections=16 pool=16 "machine_busy=$busy" "${logs[@]}"
}

scenario_db_floor() {
  local busy
  busy="$(machine_busy)"
  # The API's answer to compare against, from an uncached server.
  start_server db-floor-check APP__CACHE__ENABLED=false
  smoke_query "$RUN_DIR/db-floor-api-response.json"
  stop_server
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
  timeout $((WARMUP_SECONDS + 60)) "$PGBENCH" -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -n -M prepared \
    -c 16 -j 2 -T "$WARMUP_SECONDS" -f "$BENCH_DIR/typical_query.sql" "$BENCH_DB" \
    >"$RUN_DIR/pgbench-warmup.txt" 2>&1 || die "pgbench warm-up failed: $(tail -n 5 "$RUN_DIR/pgbench-warmup.txt")"
  log "pgbench -c16 -j2 -T$BENCH_SECONDS"
  local prefix="$RUN_DIR/pgbench_log"
  (cd "$RUN_DIR" && timeout $((BENCH_SECONDS + 60)) "$PGBENCH" -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" \
    -n -M prepared -c 16 -j 2 -T "$BENCH_SECONDS" -r --log --log-prefix="$prefix" \
    -f "$BENCH_DIR/typical_query.sql" "$BENCH_DB") >"$RUN_DIR/pgbench.txt" 2>&1 ||
    die "pgbench failed: $(tail -n 5 "$RUN_DIR/pgbench.txt")"
  busy="${busy:-$(machine_busy)}"
  py pgbench-tps "$RUN_DIR/pgbench.txt" >"$RUN_DIR/db-floor-tps.json"
  py pgbench-latency "$prefix" >"$RUN_DIR/db-floor-latency.json"
  record db-floor --merge "$RUN_DIR/db-floor-tps.json" --merge "$RUN_DIR/db-floor-latency.json" \
    connections=16 "data_matches_api=$matches" "pgbench_output=$RUN_DIR/pgbench.txt" "machine_busy=$busy" \
    "notes=pgbench -M prepared (sqlx also uses cached prepared statements); latency percentiles from --log."
}

scenario_ceiling() {
  local busy
  busy="$(machine_busy)"
  start_server ceiling
  run_wrk ceiling-warmup "$LUA_DIR/health.lua" 64 "$WARMUP_SECONDS" /health/live >/dev/null
  local out
  out="$(run_wrk ceiling "$LUA_DIR/health.lua" 64 "$BENCH_SECONDS" /health/live)"
  busy="${busy:-$(machine_busy)}"
  local -a logs
  mapfile -t logs < <(log_counts)
  stop_server
  record ceiling --wrk "$out" connections=64 "machine_busy=$busy" "${logs[@]}"
}

# hot NAME [VAR=value ...]: the typical query, cached, at 64 connections.
hot() {
  local name="$1"
  shift
  local busy
  busy="$(machine_busy)"
  start_server "$name" "$@"
  clear_cache
  smoke_query "$RUN_DIR/$name-first.json"
  run_wrk "$name-warmup" "$LUA_DIR/typical.lua" 64 "$WARMUP_SECONDS" /analytics/query >/dev/null
  admin_stats "$RUN_DIR/$name-stats-before.json"
  local out
  out="$(run_wrk "$name" "$LUA_DIR/typical.lua" 64 "$BENCH_SECONDS" /analytics/query)"
  admin_stats "$RUN_DIR/$name-stats-after.json"
  busy="${busy:-$(machine_busy)}"
  local -a logs
  mapfile -t logs < <(log_counts)
  local rss
  rss="$(rss_mb)"
  stop_server
  record "$name" --wrk "$out" --stats "$RUN_DIR/$name-stats-before.json" "$RUN_DIR/$name-stats-after.json" \
    connections=64 "rss_mb=$rss" "machine_busy=$busy" "${logs[@]}"
}

scenario_hot_l1() { hot hot-l1; }
scenario_hot_redis() { hot hot-redis APP__CACHE__L1_ENABLED=false; }

scenario_mix() {
  local busy
  busy="$(machine_busy)"
  start_server mix
  clear_cache
  smoke_query "$RUN_DIR/mix-first.json"
  run_wrk mix-warmup "$LUA_DIR/mix.lua" 64 "$MIX_WARMUP_SECONDS" /analytics/query 1 >/dev/null
  admin_stats "$RUN_DIR/mix-stats-before.json"
  local out
  out="$(run_wrk mix "$LUA_DIR/mix.lua" 64 "$BENCH_SECONDS" /analytics/query 2)"
  admin_stats "$RUN_DIR/mix-stats-after.json"
  local rss
  rss="$(rss_mb)"
  busy="${busy:-$(machine_busy)}"
  local -a logs
  mapfile -t logs < <(log_counts)
  stop_server
  record mix --wrk "$out" --stats "$RUN_DIR/mix-stats-before.json" "$RUN_DIR/mix-stats-after.json" \
    connections=64 "rss_mb=$rss" distinct_queries=1000 zipf_s=1.1 "warmup_s=$MIX_WARMUP_SECONDS" \
    "machine_busy=$busy" "${logs[@]}"
}

scenario_cold() {
  local busy
  busy="$(machine_busy)"
  local first_epoch days
  first_epoch="$(date -u -d "$ANCHOR - 3 years + 1 day" +%s)"
  days=$((($(date -u -d "$ANCHOR" +%s) - first_epoch) / 86400 + 1))
  start_server cold
  clear_cache
  run_wrk cold-warmup "$LUA_DIR/cold.lua" 16 "$WARMUP_SECONDS" /analytics/query 0 "$first_epoch" "$days" >/dev/null
  admin_stats "$RUN_DIR/cold-stats-before.json"
  local out
  out="$(run_wrk cold "$LUA_DIR/cold.lua" 16 "$BENCH_SECONDS" /analytics/query 100000000 "$first_epoch" "$days")"
  admin_stats "$RUN_DIR/cold-stats-after.json"
  busy="${busy:-$(machine_busy)}"
  local -a logs
  mapfile -t logs < <(log_counts)
  clear_cache # do not leave thousands of one-off entries in the shared Redis
  stop_server
  record cold --wrk "$out" --stats "$RUN_DIR/cold-stats-before.json" "$RUN_DIR/cold-stats-after.json" \
    connections=16 "machine_busy=$busy" "${logs[@]}"
}

scenario_stampede() {
  local busy
  busy="$(machine_busy)"
  start_server stampede
  # Warm the pool and the prepared statement with a different query, so the
  # burst measures coalescing, not connection setup.
  smoke_query "$RUN_DIR/stampede-prewarm.json" \
    '{"metrics":["revenue","average_ticket","sales_count"],"dimensions":["channel"],"date_range":{"start_date":"2026-09-01","end_date":"2026-09-30"}}'
  log "stampede: clear cache, 100 concurrent identical cold requests"
  timeout 120 python3 "$BENCH_DIR/bench.py" stampede "$(base_url)" "$ADMIN_TOKEN_VALUE" 100 "$TYPICAL_BODY" \
    >"$RUN_DIR/stampede.json" || die "stampede driver failed"
  busy="${busy:-$(machine_busy)}"
  local -a logs
  mapfile -t logs < <(log_counts)
  stop_server
  record stampede --merge "$RUN_DIR/stampede.json" connections=100 "machine_busy=$busy" "${logs[@]}"
}

scenario_redis_down() {
  local busy
  busy="$(machine_busy)"
  need redis-server "apt-get install -y redis-server"
  local rport
  rport="$(py free-port)"
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    >"$RUN_DIR/redis-down-redis.log" 2>&1 &
  REDIS_PID=$!
  local i
  for ((i = 0; i < 50; i++)); do
    redis-cli -p "$rport" ping >/dev/null 2>&1 && break
    kill -0 "$REDIS_PID" 2>/dev/null || die "private redis-server exited (see $RUN_DIR/redis-down-redis.log)"
    sleep 0.1
  done
  redis-cli -p "$rport" ping >/dev/null 2>&1 || die "private redis-server on :$rport did not answer PING in 5 s"
  log "private redis-server on :$rport (pid $REDIS_PID)"

  start_server redis-down "REDIS_URL=redis://127.0.0.1:$rport"
  admin_stats "$RUN_DIR/redis-down-stats-up.json"
  log "redis status before the kill: $(py get "$RUN_DIR/redis-down-stats-up.json" status)"
  stop_redis
  log "killed the private redis-server; running the mix at 16 connections"
  admin_stats "$RUN_DIR/redis-down-stats-before.json"
  local out_down
  out_down="$(run_wrk redis-down "$LUA_DIR/mix.lua" 16 "$BENCH_SECONDS" /analytics/query 3)"
  admin_stats "$RUN_DIR/redis-down-stats-after.json"
  local -a logs
  mapfile -t logs < <(log_counts)
  local breaker
  breaker="$(py get "$RUN_DIR/redis-down-stats-after.json" breaker)"
  stop_server

  start_server redis-down-dbonly APP__CACHE__ENABLED=false
  local out_db
  out_db="$(run_wrk redis-down-dbonly "$LUA_DIR/mix.lua" 16 "$BENCH_SECONDS" /analytics/query 3)"
  local db_warn
  db_warn="$(grep -c 'WARN' "$SERVER_LOG" || true)"
  stop_server
  busy="${busy:-$(machine_busy)}"

  py wrk-json "$out_db" >"$RUN_DIR/redis-down-dbonly.json"
  local db_rps db_p50 db_p99 db_non2xx down_rps ratio
  db_rps="$(py get "$RUN_DIR/redis-down-dbonly.json" rps)"
  db_p50="$(py get "$RUN_DIR/redis-down-dbonly.json" p50_ms)"
  db_p99="$(py get "$RUN_DIR/redis-down-dbonly.json" p99_ms)"
  db_non2xx="$(py get "$RUN_DIR/redis-down-dbonly.json" non2xx)"
  py wrk-json "$out_down" >"$RUN_DIR/redis-down-down.json"
  down_rps="$(py get "$RUN_DIR/redis-down-down.json" rps)"
  ratio="$(python3 -c "print(round($down_rps / $db_rps, 3) if $db_rps > 0 else 0)")"
  record redis-down --wrk "$out_down" \
    --stats "$RUN_DIR/redis-down-stats-before.json" "$RUN_DIR/redis-down-stats-after.json" \
    connections=16 "db_only_rps=$db_rps" "db_only_p50_ms=$db_p50" "db_only_p99_ms=$db_p99" \
    "db_only_non2xx=$db_non2xx" "db_only_server_log_warnings=${db_warn:-0}" "ratio=$ratio" \
    "breaker=$breaker" "machine_busy=$busy" "${logs[@]}"
}

scenario_redis_benchmark() {
  need redis-benchmark "apt-get install -y redis-tools"
  local busy
  busy="$(machine_busy)"
  log "redis-benchmark -t get -n 200000 against the shared Redis"
  timeout 300 redis-benchmark -h 127.0.0.1 -p 6379 -t get -n 200000 -q >"$RUN_DIR/redis-benchmark.txt" 2>&1 ||
    die "redis-benchmark failed: $(tail -n 5 "$RUN_DIR/redis-benchmark.txt")"
  py redis-benchmark "$RUN_DIR/redis-benchmark.txt" >"$RUN_DIR/redis-benchmark.json"
  busy="${busy:-$(machine_busy)}"
  record redis-benchmark --merge "$RUN_DIR/redis-benchmark.json" connections=50 "machine_busy=$busy" \
    "notes=redis-benchmark defaults: 50 clients, no pipelining, 3-byte values."
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
  log "done: $BENCH_DIR/RESULTS.md"
}

main "$@"
