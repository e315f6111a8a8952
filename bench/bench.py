#!/usr/bin/env python3
"""Helpers for bench/run.sh: parse tool output, keep results, render RESULTS.md.

Subcommands (all print to stdout, errors to stderr with a non-zero exit):

  free-port                         a free TCP port on 127.0.0.1
  wrk-json FILE                     the BENCH_JSON object printed by bench/lua/report.lua
  stats-delta BEFORE AFTER          counters of /cache/stats over a run (JSON)
  pgbench-latency PREFIX            p50/p99 from pgbench --log files PREFIX.*
  pgbench-tps FILE                  tps from pgbench's summary
  redis-benchmark FILE              rps/p50 from `redis-benchmark -q` output
  compare-data API_JSON PSQL_TSV    does the SQL's `data` equal the API's `data`?
  typical-sql LOG BODY MODEL OUT    the statement the server logged (sqlx debug) for BODY,
                                    binds written as literals, into OUT
  stampede URL TOKEN N BODY_JSON    N concurrent identical cold requests
  staleness URL_A URL_B TOKEN DB_URL CHANGES BODY_JSON FIRST_ID SAMPLES_OUT
                                    CHANGES x (INSERT a sale, poll both instances until each
                                    answers the new sales_count): commit -> fresh answer
  insert-loop DB_URL SECONDS RATE FIRST_ID OUT
                                    RATE single-row INSERTs per second until SIGTERM or SECONDS
  changes-summary WRK BEFORE AFTER INSERTS BASELINE
                                    invalidations/inserts of a run with changes, ratio to BASELINE
                                    when it was measured in the same run
  rollup-builds TSV DB_URL          build times of run.sh's per-rollup `rollups build` (JSON)
  rollups-wait URL TOKEN TIMEOUT    poll /cache/stats until every rollup is ready
  rollup-stats BEFORE AFTER NAME    rows/bytes/state per rollup, answers served from NAME
  rollup-snapshot URL TOKEN         the rollup histograms of /metrics, refreshed_at per rollup (JSON)
  cold-compare WRK BASELINE PROBE BASE_PROBE
                                    ratio/speedups of a cold rollups run (cold-rollups,
                                    cold-channel-rollups) to BASELINE of the same run
  rollup-refresh URL TOKEN DB_URL FIRST_ID ROWS FIRST_DAY DAYS TIMEOUT
                                    one INSERT of ROWS sales, then commit -> every rollup refreshed
  rollup-settle URL TOKEN DB_URL METRICS_BEFORE SINCE TIMEOUT
                                    wait until every rollup re-aggregated a change made at SINCE
  watch OUT SECONDS DB [PID...]     while a run lasts: CPU used by processes other than the
                                    benchmark's own (PIDs, postgres, wrk, redis, pgbench) and
                                    active PostgreSQL queries in databases other than DB
  fault-snapshot URL TOKEN PID LOG  the `faults` scenario's counters now: /cache/stats (status, breaker,
                                    app.*), /metrics (breakers, stale served, shed, connections),
                                    RSS, the server log's size; failures are noted, not fatal
  fault-watch URL PID SECONDS OUT   every 0.5 s for SECONDS: /health/live, /health (database and
                                    redis states over time) and the RSS peak
  fault-phase WRK SNAP_START SNAP_END WATCH LOG [--since SNAP] [--flood FILE] [--machine FILE]
                                    one fault phase: wrk's rps/p50/p99/non-2xx/error kinds, counter
                                    deltas, breaker states, log lines, RSS, the watcher, the flood
  fault-line PHASE_JSON             that phase in one line (for the log)
  delay-proxy LISTEN TARGET DELAY_MS OUT
                                    TCP proxy LISTEN -> TARGET on 127.0.0.1; SIGUSR1 adds DELAY_MS
                                    per direction, SIGUSR2 removes it (OUT.ready once listening)
  flood HOST PORT N HOLD_S OUT      N connections holding half a request line (reopened when the
                                    server closes one) until SIGTERM or HOLD_S (OUT.ready once open)
  proc-snapshot OUT NAME=PID[+]... per process (with +: and its children) CPU ticks, per thread
                                    context switches and ns on a CPU; the machine's /proc/stat (JSON)
  nginx-window TARGET ROUND WRK BEFORE AFTER [STATS_BEFORE STATS_AFTER [WATCH]]
                                    one window of the `nginx` scenario: wrk's numbers, CPU and context
                                    switches per request per process group (JSON line)
  nginx-line WINDOWS_JSONL GROUP    the last window in one line (for the log)
  nginx-splice RESULTS_MD           only (re)place RESULTS_MD's "Hot path vs nginx" section
  nginx-summary WINDOWS_JSONL       per target medians and per-request costs over the rounds, ratios
  record SCENARIO [--wrk FILE] [--stats BEFORE AFTER] [--phase NAME FILE] [key=value ...]
                                    write out/latest/SCENARIO.json (and, with BENCH_SALES,
                                    out/latest-by-sales/SCENARIO@SALES.json), append to the JSONL
  render                            (re)write bench/RESULTS.md from out/latest/*.json
"""

from __future__ import annotations

import datetime as dt
import glob
import http.client
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
OUT = os.environ.get("BENCH_OUT", os.path.join(BENCH_DIR, "out"))
LATEST = os.path.join(OUT, "latest")
# The latest result of each scenario per sales count (BENCH_SALES), so runs on
# 2,000,000 and 10,000,000 sales are both kept for the rollups section.
BY_SALES = os.path.join(OUT, "latest-by-sales")

SCENARIO_ORDER = [
    "uncached",
    "uncached-distinct",
    "db-floor",
    "ceiling",
    "hot-l1",
    "hot-redis",
    "mix",
    "mix-changes",
    "cold",
    "cold-rollups",
    "cold-channel",
    "cold-channel-rollups",
    "rollup-refresh",
    "stampede",
    "staleness",
    "redis-down",
    "redis-benchmark",
]


def die(message: str) -> None:
    print(f"bench.py: {message}", file=sys.stderr)
    sys.exit(1)


def sales_count() -> int | None:
    v = os.environ.get("BENCH_SALES")
    return int(v) if v and v.isdigit() else None


def load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        die(f"cannot read JSON from {path}: {e}")
        raise  # unreachable


# ---------------------------------------------------------------- parsers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_json(lines, source: str) -> dict:
    """The `BENCH_JSON` line lua/report.lua printed, out of wrk's output."""
    for line in lines:
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    die(f"no BENCH_JSON line in {source} (did wrk fail?)")
    return {}


def wrk_json(path: str) -> dict:
    with open(path, encoding="utf-8", errors="replace") as f:
        return bench_json(f, f"{path} (see the file)")


STAT_KEYS = ["hits", "hits_l1", "hits_redis", "misses", "bypasses", "sets", "errors", "timeouts",
             "db_queries", "total_requests", "uncacheable", "corrupt", "invalidations", "stale_served",
             "lease_waits"]


def stats_delta(before: dict, after: dict) -> dict:
    a0, a1 = before.get("app", {}), after.get("app", {})
    d = {k: int(a1.get(k, 0)) - int(a0.get(k, 0)) for k in STAT_KEYS}
    looked = d["hits"] + d["misses"]
    d["hit_rate"] = round(d["hits"] / looked, 4) if looked else None
    d["redis_status"] = after.get("status")
    d["breaker"] = after.get("breaker")
    d["l1_entries"] = after.get("l1", {}).get("entries")
    d["l1_bytes"] = after.get("l1", {}).get("bytes")
    return d


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    # nearest-rank, like wrk's HDR histogram percentile
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def pgbench_latency(prefix: str) -> dict:
    files = sorted(glob.glob(prefix + ".*"))
    if not files:
        die(f"no pgbench log files match {prefix}.*")
    lat_us: list[float] = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                # client_id transaction_no time script_no time_epoch time_us [schedule_lag]
                if len(parts) >= 6 and parts[2].isdigit():
                    lat_us.append(float(parts[2]))
    if not lat_us:
        die(f"pgbench logs {prefix}.* hold no transactions")
    lat_us.sort()
    return {
        "transactions": len(lat_us),
        "p50_ms": round(percentile(lat_us, 50) / 1000, 3),
        "p90_ms": round(percentile(lat_us, 90) / 1000, 3),
        "p99_ms": round(percentile(lat_us, 99) / 1000, 3),
        "max_ms": round(lat_us[-1] / 1000, 3),
        "mean_ms": round(sum(lat_us) / len(lat_us) / 1000, 3),
        "log_files": len(files),
    }


def pgbench_tps(path: str) -> dict:
    text = open(path, encoding="utf-8", errors="replace").read()
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", text)
    if not m:
        m = re.search(r"tps = ([0-9.]+)", text)
    if not m:
        die(f"no tps line in {path}")
    out = {"tps": float(m.group(1))}
    m = re.search(r"number of failed transactions: (\d+)", text)
    if m:
        out["failed"] = int(m.group(1))
    m = re.search(r"latency average = ([0-9.]+) ms", text)
    if m:
        out["latency_average_ms"] = float(m.group(1))
    return out


def redis_benchmark(path: str) -> dict:
    text = open(path, encoding="utf-8", errors="replace").read().replace("\r", "\n")
    m = None
    for m in re.finditer(r"GET: ([0-9.]+) requests per second(?:, p50=([0-9.]+) msec)?", text):
        pass
    if not m:
        die(f"no 'GET: ... requests per second' line in {path}")
    out = {"rps": float(m.group(1))}
    if m.group(2):
        out["p50_ms"] = float(m.group(2))
    return out


def compare_data(api_path: str, psql_path: str) -> dict:
    api = load_json(api_path)
    line = open(psql_path, encoding="utf-8").read().strip()
    if "\t" not in line:
        die(f"{psql_path}: expected `total_rows<TAB>data`, got {line[:200]!r}")
    total_rows, data = line.split("\t", 1)
    sql_data = json.loads(data)
    equal = sql_data == api.get("data")
    return {
        "equal": equal,
        "sql_total_rows": int(total_rows),
        "api_total_rows": api.get("metadata", {}).get("total_rows"),
        "sql_data": sql_data if not equal else None,
        "api_data": api.get("data") if not equal else None,
    }


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def typical_sql(log_path: str, body_json: str, model_path: str, out_path: str) -> dict:
    """Turn the statement sqlx logged (`db.statement="..."`, binds as $n) into
    a literal statement for psql/pgbench.

    The binds are recognised by their context in the SQL compile.rs emits:
    `$n::date` (start, then end of the date range), `AT TIME ZONE $n` (the
    dataset's time zone), `LIMIT $n`, `OFFSET $n`. Anything else (filters)
    is refused: the typical query has none."""
    import tomllib

    text = ANSI.sub("", open(log_path, encoding="utf-8", errors="replace").read())
    statements = re.findall(r'db\.statement="((?:[^"\\]|\\.)*)"', text)
    statements = [json.loads('"' + st + '"') for st in statements]
    statements = [st.strip() for st in statements if "total_rows" in st and "FROM sales" in st]
    if not statements:
        die(f"no analytics statement (db.statement=...) in {log_path}; was RUST_LOG=sqlx::query=debug set?")
    sql = statements[-1]
    body = json.loads(body_json)
    model = tomllib.load(open(model_path, "rb"))
    dataset = model["datasets"][body.get("dataset") or model.get("default_dataset", "sales")]
    tz = dataset.get("timezone", "UTC")
    limit = body.get("limit", dataset.get("max_limit", 10000))
    offset = body.get("offset", 0)
    dates = [body["date_range"]["start_date"], body["date_range"]["end_date"]]
    binds: dict[int, str] = {}
    for m in re.finditer(r"\$(\d+)", sql):
        n = int(m.group(1))
        before, after = sql[: m.start()], sql[m.end():]
        if after.startswith("::date"):
            if not dates:
                die("more date binds than the date range has")
            binds[n] = "'" + dates.pop(0) + "'"
        elif before.rstrip().endswith("AT TIME ZONE"):
            binds[n] = "'" + tz.replace("'", "''") + "'"
        elif before.rstrip().endswith("LIMIT"):
            binds[n] = str(int(limit))
        elif before.rstrip().endswith("OFFSET"):
            binds[n] = str(int(offset))
        else:
            die(f"cannot tell what bind ${n} is in: ...{sql[max(0, m.start() - 60):m.end() + 20]}...")
    literal = re.sub(r"\$(\d+)", lambda m: binds[int(m.group(1))], sql)
    header = (
        "-- The statement analytics-api runs for the typical dashboard query\n"
        f"--   {json.dumps(body, separators=(',', ':'))}\n"
        "-- captured from the server's sqlx debug log by bench/run.sh (db-floor), with\n"
        "-- the bind parameters written as literals (regenerated on every db-floor run;\n"
        f"-- time zone {tz!r} and LIMIT {limit} come from config/model.toml).\n"
    )
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(header + literal.rstrip().rstrip(";") + ";\n")
    return {"statement_with_binds": sql, "binds": {f"${k}": v for k, v in sorted(binds.items())}}


# ---------------------------------------------------------------- watch

# (nginx: the `nginx` scenario's own nginx, whose workers are not among the PIDs passed)
OWN_COMMS = {"postgres", "wrk", "redis-server", "pgbench", "psql", "redis-benchmark", "curl", "timeout", "nginx"}


def proc_ticks() -> dict[int, tuple[str, int]]:
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = open(f"/proc/{d}/stat", encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1: raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        out[int(d)] = (comm, int(fields[11]) + int(fields[12]))  # utime + stime
    return out


def cpu_line() -> list[int]:
    return [int(x) for x in open("/proc/stat", encoding="utf-8").readline().split()[1:]]


def watch(out_path: str, seconds: float, db: str, own: list[int]) -> None:
    hz = os.sysconf("SC_CLK_TCK")
    cpu0 = cpu_line()
    me = os.getpid()
    own_set = set(own) | {me, os.getppid()}
    first = proc_ticks()
    last = dict(first)
    pg_samples: list[int] = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        for pid, v in proc_ticks().items():
            last[pid] = v
        n += 1
        if n % 2 == 1:
            try:
                r = subprocess.run(
                    ["psql", "-X", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-Atc",
                     "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
                     f"backend_type = 'client backend' AND datname IS DISTINCT FROM '{db}' "
                     "AND pid <> pg_backend_pid()"],
                    capture_output=True, text=True, timeout=5)
                pg_samples.append(int(r.stdout.strip() or 0))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
    per_comm: dict[str, float] = {}
    for pid, (comm, ticks) in last.items():
        if (pid in own_set or comm in OWN_COMMS or comm.startswith("python")
                or comm.startswith(("kworker", "ksoftirqd", "migration", "rcu_", "kthreadd"))):
            continue
        start = first.get(pid, (comm, 0))[1] if first.get(pid, ("", 0))[0] == comm else 0
        used = (ticks - start) / hz
        if used > 0:
            per_comm[comm] = per_comm.get(comm, 0) + used
    other = sum(per_comm.values())
    cpu1 = cpu_line()
    d = [b - a for a, b in zip(cpu0, cpu1)]
    total = sum(d[:8]) or 1
    result = {
        "cpu_busy_pct": round(100 * (1 - (d[3] + d[4]) / total), 1),
        "steal_pct": round(100 * d[7] / total, 1) if len(d) > 7 else None,
        "other_cpu_s": round(other, 2),
        "other_cores": round(other / seconds, 2) if seconds else 0,
        "top_other": sorted(((c, round(v, 2)) for c, v in per_comm.items()), key=lambda x: -x[1])[:5],
        "other_db_active_max": max(pg_samples) if pg_samples else None,
        "other_db_active_avg": round(sum(pg_samples) / len(pg_samples), 2) if pg_samples else None,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


# ---------------------------------------------------------------- stampede


def http_json(method: str, url: str, token: str | None = None, body: bytes | None = None,
              timeout: float = 30) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def stampede(base_url: str, token: str, n: int, body: str) -> dict:
    host, port = base_url.replace("http://", "").split(":")
    _, before = http_json("GET", f"{base_url}/cache/stats", token)
    status, cleared = http_json("POST", f"{base_url}/cache/clear?pattern=*", token, b"")
    if status != 200:
        die(f"POST /cache/clear answered {status}: {cleared}")
    _, before = http_json("GET", f"{base_url}/cache/stats", token)

    payload = body.encode()
    barrier = threading.Barrier(n, timeout=30)
    results: list[dict] = [{} for _ in range(n)]

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.connect()  # connect first, so the barrier releases ready sockets
            barrier.wait()
            t0 = time.perf_counter()
            conn.request("POST", "/analytics/query", body=payload,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
            elapsed = (time.perf_counter() - t0) * 1000
            meta = {}
            try:
                meta = json.loads(raw).get("metadata", {})
            except ValueError:
                pass
            results[i] = {"status": resp.status, "x_cache": resp.getheader("X-Cache"),
                          "from_cache": meta.get("from_cache"), "ms": elapsed}
        except Exception as e:  # noqa: BLE001 - report every failure mode
            results[i] = {"status": None, "error": repr(e)}
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    wall_ms = (time.perf_counter() - t0) * 1000
    _, after = http_json("GET", f"{base_url}/cache/stats", token)
    delta = stats_delta(before, after)
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r.get("status"))] = statuses.get(str(r.get("status")), 0) + 1
    ms = sorted(r["ms"] for r in results if "ms" in r)
    return {
        "requests": n,
        "sql_count": delta["db_queries"],
        "statuses": statuses,
        "non2xx": sum(c for s, c in statuses.items() if not s.startswith("2")),
        "x_cache_hit": sum(1 for r in results if r.get("x_cache") == "HIT"),
        "x_cache_miss": sum(1 for r in results if r.get("x_cache") == "MISS"),
        "p50_ms": round(percentile(ms, 50), 3) if ms else None,
        "p99_ms": round(percentile(ms, 99), 3) if ms else None,
        "max_ms": round(ms[-1], 3) if ms else None,
        "wall_ms": round(wall_ms, 1),
        "stats_delta": delta,
        "errors": [r["error"] for r in results if "error" in r][:5],
    }


# ---------------------------------------------------------------- changes
#
# Scenarios that write to the bench database while they measure: `staleness`
# (commit -> fresh answer on every instance) and `mix-changes` (the mix while
# sales arrive). Their rows get ids from 900,000,000 upward (the seed's are
# 1..BENCH_SALES; run.sh picks the first id and deletes the rows when the
# scenario ends, or on any exit).

SALE_COLUMNS = "id, store_id, channel_id, created_at, status, total_amount"


class Psql:
    """One psql session kept open on pipes: every statement runs on the same
    connection, and `run` returns once psql has answered, so an autocommitted
    INSERT has committed (and its NOTIFY has been sent) when it returns."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.count = 0

    def run(self, sql: str) -> list[str]:
        """The statement's output lines (psql -At), or exit on any error."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.count += 1
        marker = f"__bench_done_{self.count}"
        try:
            self.proc.stdin.write(sql.rstrip().rstrip(";") + f";\n\\echo {marker}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            die(f"psql exited (status {self.proc.poll()}) before: {sql[:200]}")
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                die(f"psql exited (status {self.proc.poll()}) running: {sql[:200]}")
            line = line.rstrip("\n")
            if line == marker:
                return lines
            lines.append(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def sale_insert(sale_id: int, store_id: int, channel_id: int, status: str, amount: float) -> str:
    return (f"INSERT INTO sales ({SALE_COLUMNS}) VALUES "
            f"({sale_id}, {store_id}, {channel_id}, now(), '{status}', {amount:.2f})")


class Instance:
    """One server polled with one body on one kept-alive connection."""

    def __init__(self, name: str, base_url: str, body: str, metric: str) -> None:
        self.name = name
        host, port = base_url.replace("http://", "").split(":")
        self.host, self.port = host, int(port)
        self.base_url = base_url
        self.body = body.encode()
        self.metric = metric
        self.conn: http.client.HTTPConnection | None = None

    def ask(self, timeout: float) -> dict:
        """{status, value (the metric of the first row), x_cache, query_time_ms, age_seconds}."""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            self.conn.timeout = timeout
            if self.conn.sock is not None:
                self.conn.sock.settimeout(timeout)
            try:
                self.conn.request("POST", "/analytics/query", body=self.body,
                                  headers={"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue  # a kept-alive connection the server closed: once more
            out = {"status": resp.status, "value": None, "x_cache": resp.getheader("X-Cache")}
            try:
                doc = json.loads(raw)
                meta = doc.get("metadata") or {}
                rows = doc.get("data") or [{}]
                out.update(value=rows[0].get(self.metric), query_time_ms=meta.get("query_time_ms"),
                           age_seconds=meta.get("age_seconds"))
            except (ValueError, AttributeError, IndexError):
                pass
            return out
        raise OSError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def lag_histogram(base_url: str) -> tuple[float, float] | None:
    """(sum seconds, count) of analytics_cache_invalidation_lag_seconds from /metrics."""
    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as r:
            text = r.read().decode("utf-8", "replace")
    except (OSError, urllib.error.HTTPError):
        return None
    found = {}
    for m in re.finditer(r"^analytics_cache_invalidation_lag_seconds_(sum|count)(?:\{[^}]*\})? (\S+)$", text, re.M):
        found[m.group(1)] = found.get(m.group(1), 0.0) + float(m.group(2))
    if "sum" not in found or "count" not in found:
        return None
    return found["sum"], found["count"]


def summarize_ms(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    return {
        "p50_ms": round(percentile(values, 50), 1),
        "p90_ms": round(percentile(values, 90), 1),
        "p99_ms": round(percentile(values, 99), 1),
        "max_ms": round(values[-1], 1),
        "mean_ms": round(sum(values) / len(values), 1),
    }


def staleness(url_a: str, url_b: str, token: str, db_url: str, changes: int, body: str,
              first_id: int, samples_out: str, timeout_s: float = 5.0, interval_s: float = 0.005) -> dict:
    """`changes` times: INSERT one completed sale dated now() on one kept-open
    psql session, take the time psql answers (committed), then poll both
    instances every `interval_s` (start to start) until each answers the new
    sales_count, at most `timeout_s` per change. A sample is commit ->
    receipt of the first fresh answer, per change and instance."""
    metric = "sales_count"
    instances = [Instance("a", url_a, body, metric), Instance("b", url_b, body, metric)]
    # On SIGTERM (run.sh's trap) leave through the `finally` below, which
    # waits for psql, so no INSERT commits after run.sh's DELETE.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    psql = Psql(db_url)
    try:
        return staleness_run(instances, token, psql, changes, first_id, samples_out, timeout_s, interval_s)
    finally:
        psql.close()
        for inst in instances:
            inst.close()


def staleness_run(instances: list[Instance], token: str, psql: Psql, changes: int, first_id: int,
                  samples_out: str, timeout_s: float, interval_s: float) -> dict:
    metric = instances[0].metric
    psql.run("SET statement_timeout = '60s'")
    expected = int(psql.run("SELECT count(*) FILTER (WHERE status = 'COMPLETED') FROM sales")[0])

    # Warm: both instances must agree with the database first (bounded).
    warm = {}
    deadline = time.monotonic() + 60
    for inst in instances:
        while True:
            r = inst.ask(timeout=30)
            if r["status"] == 200 and r["value"] == expected:
                break
            if time.monotonic() > deadline:
                die(f"instance {inst.name} answers {r} before the test, the database says {metric}={expected}")
            time.sleep(0.05)
        warm[inst.name] = inst.ask(timeout=30).get("x_cache")  # the warmed entry: expect HIT

    before = {i.name: http_json("GET", f"{i.base_url}/cache/stats", token)[1] for i in instances}
    lag_before = {i.name: lag_histogram(i.base_url) for i in instances}
    rng = random.Random(first_id)
    samples: list[dict] = []
    insert_ms: list[float] = []

    def poll(inst: Instance, change: int, target: int, committed: float, out: list) -> None:
        polls = old = non200 = errors = 0
        deadline = committed + timeout_s
        while True:
            start = time.perf_counter()
            if start >= deadline:
                out.append({"change": change, "instance": inst.name, "timeout": True, "polls": polls,
                            "old_answers": old, "non2xx": non200, "errors": errors})
                return
            try:
                r = inst.ask(timeout=max(1.0, deadline - start + 1.0))
            except (OSError, http.client.HTTPException):
                errors += 1
                time.sleep(interval_s)
                continue
            received = time.perf_counter()
            polls += 1
            if r["status"] != 200:
                non200 += 1
            elif r["value"] == target:
                out.append({"change": change, "instance": inst.name, "ms": round((received - committed) * 1000, 2),
                            "x_cache": r.get("x_cache"), "query_time_ms": r.get("query_time_ms"),
                            "age_seconds": r.get("age_seconds"), "polls": polls, "old_answers": old,
                            "non2xx": non200, "errors": errors})
                return
            else:
                old += 1
            time.sleep(max(0.0, interval_s - (time.perf_counter() - start)))

    for change in range(changes):
        sql = sale_insert(first_id + change, rng.randint(1, 50), rng.randint(1, 6), "COMPLETED",
                          rng.uniform(20, 300))
        sent = time.perf_counter()
        psql.run(sql)
        committed = time.perf_counter()
        insert_ms.append((committed - sent) * 1000)
        expected += 1
        out: list[dict] = []
        threads = [threading.Thread(target=poll, args=(inst, change, expected, committed, out), daemon=True)
                   for inst in instances]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout_s + 30)
        samples.extend(out)

    after = {i.name: http_json("GET", f"{i.base_url}/cache/stats", token)[1] for i in instances}
    lag_after = {i.name: lag_histogram(i.base_url) for i in instances}
    with open(samples_out, "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s) + "\n")

    fresh = [s for s in samples if not s.get("timeout")]
    result: dict = {"changes": changes, "instances": len(instances), "samples": len(fresh),
                    "timeouts": len(samples) - len(fresh)}
    result.update(summarize_ms([s["ms"] for s in fresh]))
    per_instance = {}
    for inst in instances:
        mine = [s for s in samples if s["instance"] == inst.name]
        ms = [s["ms"] for s in mine if not s.get("timeout")]
        stats = summarize_ms(ms)
        per_instance[inst.name] = {"p50_ms": stats["p50_ms"], "p99_ms": stats["p99_ms"], "max_ms": stats["max_ms"],
                                   "timeouts": sum(1 for s in mine if s.get("timeout"))}
        d = stats_delta(before[inst.name], after[inst.name])
        per_instance[inst.name].update(invalidations=d["invalidations"], db_queries=d["db_queries"],
                                       lease_waits=d["lease_waits"], stale_served=d["stale_served"],
                                       warm_x_cache=warm[inst.name])
        # the histogram appears with the first notification an instance hears
        lb, la = lag_before[inst.name] or (0.0, 0.0), lag_after[inst.name]
        if la and la[1] > lb[1]:
            per_instance[inst.name]["invalidation_lag_mean_ms"] = round((la[0] - lb[0]) / (la[1] - lb[1]) * 1000, 1)
    result["per_instance"] = per_instance
    caches: dict[str, int] = {}
    for s in fresh:
        caches[str(s.get("x_cache"))] = caches.get(str(s.get("x_cache")), 0) + 1
    result["fresh_x_cache"] = caches
    qt = sorted(s["query_time_ms"] for s in fresh if s.get("x_cache") == "MISS"
                and isinstance(s.get("query_time_ms"), (int, float)))
    if qt:
        result["fresh_miss_query_time_p50_ms"] = round(percentile(qt, 50), 1)
    result["insert_p50_ms"] = round(percentile(sorted(insert_ms), 50), 2) if insert_ms else None
    result["polls"] = sum(s["polls"] for s in samples)
    result["old_answers_after_commit"] = sum(s["old_answers"] for s in samples)
    result["non2xx"] = sum(s["non2xx"] for s in samples)
    result["poll_errors"] = sum(s["errors"] for s in samples)
    result["poll_interval_ms"] = round(interval_s * 1000, 1)
    result["timeout_s"] = timeout_s
    result["samples_file"] = samples_out
    return result


def insert_loop(db_url: str, seconds: float, rate: float, first_id: int, out_path: str) -> dict:
    """One single-row INSERT (created_at = now(), a random store and channel,
    5% cancelled) every 1/rate s on one psql session, for at most `seconds`
    and rate * seconds rows, or until SIGTERM/SIGINT. Falling behind never
    bursts: a late insert moves the schedule. OUT.ready appears once psql is
    connected; OUT gets the summary."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    psql = Psql(db_url)
    psql.run("SET statement_timeout = '10s'")
    with open(out_path + ".ready", "w", encoding="utf-8") as f:
        f.write("connected\n")  # run.sh starts wrk once this exists
    rng = random.Random(first_id)
    period = 1.0 / rate
    max_count = int(rate * seconds) + 1
    started = time.monotonic()
    deadline = started + seconds
    due = started
    inserted = late = 0
    ms: list[float] = []
    while not stop.is_set() and inserted < max_count:
        now = time.monotonic()
        if now >= deadline:
            break
        if due > now:
            stop.wait(min(due - now, deadline - now))
            continue
        if now - due > period:
            late += 1
            due = now
        status = "CANCELLED" if rng.random() < 0.05 else "COMPLETED"
        t0 = time.perf_counter()
        psql.run(sale_insert(first_id + inserted, rng.randint(1, 50), rng.randint(1, 6), status,
                             rng.uniform(20, 300)))
        ms.append((time.perf_counter() - t0) * 1000)
        inserted += 1
        due += period
    elapsed = time.monotonic() - started
    psql.close()
    ms.sort()
    result = {
        "inserted": inserted,
        "insert_seconds": round(elapsed, 2),
        "insert_rate": round(inserted / elapsed, 2) if elapsed > 0 else None,
        "insert_target_rate": rate,
        "insert_late": late,
        "insert_p50_ms": round(percentile(ms, 50), 2) if ms else None,
        "insert_p99_ms": round(percentile(ms, 99), 2) if ms else None,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return result


def changes_summary(wrk_path: str, before_path: str, after_path: str, inserts_path: str, baseline: str) -> dict:
    """Invalidations and inserts of a run with changes and, when `baseline`
    (e.g. mix) was measured in this same run, the rps ratio to it."""
    w = wrk_json(wrk_path)
    d = stats_delta(load_json(before_path), load_json(after_path))
    ins = load_json(inserts_path)
    out = {"invalidations": d["invalidations"]}
    out.update(ins)
    notes = (f"{ins['inserted']} single-row INSERTs ({fmt(ins.get('insert_rate'))}/s, one statement each) "
             f"while wrk ran; {d['invalidations']} invalidations applied")
    base_path = os.path.join(LATEST, f"{baseline}.json")
    base = load_json(base_path) if os.path.exists(base_path) else {}
    run_id = os.environ.get("BENCH_RUN_ID")
    if run_id and base.get("run_id") == run_id and base.get("rps"):
        ratio = round(w["rps"] / base["rps"], 3)
        out.update(ratio=ratio, baseline=baseline, baseline_rps=base["rps"], baseline_p50_ms=base.get("p50_ms"),
                   baseline_p99_ms=base.get("p99_ms"), baseline_hit_rate=base.get("hit_rate"))
        notes += (f"; {ratio:.3f}× the rps of `{baseline}` without changes in the same run "
                  f"({w['rps']:,.0f} vs {base['rps']:,.0f} rps; p99 {fmt(w.get('p99_ms'))} vs "
                  f"{fmt(base.get('p99_ms'))} ms; hit rate {pct(d.get('hit_rate'))} vs {pct(base.get('hit_rate'))})")
    else:
        notes += f"; no `{baseline}` result from the same run, so no ratio"
    out["notes"] = notes + "."
    return out


# ---------------------------------------------------------------- rollups
#
# `cold-rollups` (the cold workload answered from the rollups, after building
# them with the CLI) and `rollup-refresh` (one INSERT of 1,000 sales, then
# commit -> every rollup re-aggregated it). Their rows get ids from
# 900,200,001 (run.sh deletes them, as for the other change scenarios).

CHANGE_LOG = "analytics_rollup_changes"
ROLLUP_METRIC = re.compile(
    r"^analytics_rollup_(refresh|build)_seconds_(sum|count)\{([^}]*)\} (\S+)$", re.M)


def rollup_metrics(base_url: str) -> dict:
    """{"refresh"|"build": {rollup: {"sum": s, "count": n}}} from /metrics; a
    rollup appears once its histogram recorded something."""
    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as r:
            text = r.read().decode("utf-8", "replace")
    except (OSError, urllib.error.HTTPError) as e:
        die(f"GET {base_url}/metrics failed: {e}")
    out: dict = {"refresh": {}, "build": {}}
    for m in ROLLUP_METRIC.finditer(text):
        label = re.search(r'rollup="([^"]*)"', m.group(3))
        if label:
            slot = out[m.group(1)].setdefault(label.group(1), {"sum": 0.0, "count": 0.0})
            slot[m.group(2)] += float(m.group(4))
    return out


def rollup_states(base_url: str, token: str) -> dict:
    """{name: the /cache/stats `rollups` entry}."""
    status, stats = http_json("GET", f"{base_url}/cache/stats", token)
    if status != 200:
        die(f"GET {base_url}/cache/stats answered {status}: {str(stats)[:300]}")
    return {r["name"]: r for r in stats.get("rollups") or []}


def rollup_snapshot(base_url: str, token: str) -> dict:
    """rollup_metrics plus each rollup's refreshed_at as /cache/stats reports it."""
    snap = rollup_metrics(base_url)
    snap["refreshed_at"] = {n: r.get("refreshed_at") for n, r in rollup_states(base_url, token).items()}
    return snap


def rollup_sizes(states: dict) -> dict:
    return {n: {k: r.get(k) for k in ("state", "rows", "bytes", "table", "granularity")}
            for n, r in sorted(states.items())}


def rollups_wait(base_url: str, token: str, timeout_s: float) -> dict:
    """Polls /cache/stats every 200 ms until every rollup is `ready`."""
    started = time.monotonic()
    states: dict = {}
    while True:
        states = rollup_states(base_url, token)
        if not states:
            die("/cache/stats lists no rollups: none declared in the model?")
        off = [n for n, r in states.items() if r.get("state") == "disabled"]
        if off:
            die(f"rollups disabled on the server: {off} (APP__ROLLUPS__ENABLED, freshness.enabled?)")
        if all(r.get("state") == "ready" for r in states.values()):
            break
        if time.monotonic() - started > timeout_s:
            die(f"rollups not all ready after {timeout_s:.0f} s: "
                + ", ".join(f"{n}={r.get('state')} ({r.get('error') or ''})" for n, r in sorted(states.items())))
        time.sleep(0.2)
    return {"waited_ms": round((time.monotonic() - started) * 1000), "states": rollup_sizes(states)}


def rollup_builds(tsv_path: str, db_url: str) -> dict:
    """run.sh's per-rollup CLI timings (id, wall seconds, rows) and the build
    transaction's own seconds that the binary stored in analytics_rollups."""
    wall, rows = {}, {}
    for line in open(tsv_path, encoding="utf-8"):
        parts = line.rstrip("\n").split("\t")
        if len(parts) == 3:
            wall[parts[0]] = float(parts[1])
            rows[parts[0]] = int(parts[2])
    if not wall:
        die(f"{tsv_path} holds no builds")
    r = subprocess.run(["psql", "-X", "-At", "-F", "\t", "-d", db_url, "-c",
                        "SELECT name, build_seconds FROM analytics_rollups"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        die(f"reading analytics_rollups failed: {r.stderr.strip()}")
    stored = {}
    for line in r.stdout.splitlines():
        name, _, secs = line.partition("\t")
        if name in wall and secs:
            stored[name] = round(float(secs), 3)
    return {"build_s": wall, "build_db_s": stored, "build_rows": rows,
            "build_total_s": round(sum(wall.values()), 3)}


def rollup_stats(before_path: str, after_path: str, served_from: str) -> dict:
    """Per rollup: state, rows, bytes after the run and queries_served over it;
    served_share = answers from the rollup named `served_from` / SQL statements."""
    before = {r["name"]: r for r in load_json(before_path).get("rollups") or []}
    after = {r["name"]: r for r in load_json(after_path).get("rollups") or []}
    if not after:
        die(f"{after_path} lists no rollups")
    served = {n: int(r.get("queries_served", 0)) - int(before.get(n, {}).get("queries_served", 0))
              for n, r in sorted(after.items())}
    sql = stats_delta(load_json(before_path), load_json(after_path))["db_queries"]
    mine = sum(v for n, v in served.items() if n == served_from or n.endswith("." + served_from))
    return {"rollups": rollup_sizes(after), "rollup_served": served, "served_from": served_from,
            "served_from_rollup": mine, "served_share": round(mine / sql, 4) if sql else None}


def cold_compare(wrk_path: str, baseline: str, probe_path: str, base_probe_path: str) -> dict:
    """The ratio to `baseline` (cold or cold-channel: the raw table) when it was measured
    in this run on the same sales count; whether both probes' data agree."""
    w = wrk_json(wrk_path)
    out: dict = {"baseline": baseline}
    base_path = os.path.join(LATEST, f"{baseline}.json")
    base = load_json(base_path) if os.path.exists(base_path) else {}
    run_id = os.environ.get("BENCH_RUN_ID")
    same = bool(run_id) and base.get("run_id") == run_id and base.get("sales") == sales_count()
    if same and base.get("rps") and w.get("rps"):
        out.update(ratio=round(w["rps"] / base["rps"], 2), baseline_rps=base["rps"],
                   baseline_p50_ms=base.get("p50_ms"), baseline_p99_ms=base.get("p99_ms"))
        if base.get("p50_ms") and w.get("p50_ms"):
            out["p50_speedup"] = round(base["p50_ms"] / w["p50_ms"], 2)
        if base.get("p99_ms") and w.get("p99_ms"):
            out["p99_speedup"] = round(base["p99_ms"] / w["p99_ms"], 2)
        notes = (f"{out['ratio']:.1f}× the rps of `{baseline}` (raw table) in the same run "
                 f"({w['rps']:,.1f} vs {base['rps']:,.1f} rps); p50 {fmt(w.get('p50_ms'))} vs "
                 f"{fmt(base.get('p50_ms'))} ms ({fmt(out.get('p50_speedup'))}× faster), p99 "
                 f"{fmt(w.get('p99_ms'))} vs {fmt(base.get('p99_ms'))} ms")
    else:
        notes = f"no `{baseline}` result from the same run and sales count, so no ratio"
    if os.path.exists(base_probe_path):
        mine, raw = load_json(probe_path).get("data"), load_json(base_probe_path).get("data")
        out["data_matches_raw"] = mine == raw
        if mine != raw:
            out["probe_data"], out["raw_probe_data"] = mine, raw
        notes += ("; the probe's data equal the raw table's" if mine == raw
                  else "; the probe's data DIFFER from the raw table's (see probe_data)")
    out["notes"] = notes + "."
    return out


def change_log_count(psql: Psql) -> int:
    return int(psql.run(f"SELECT count(*) FROM {CHANGE_LOG}")[0])


def wait_refreshed(base_url: str, token: str, psql: Psql, names: list[str], before: dict, t0: float,
                   timeout_s: float, interval_s: float = 0.01) -> dict:
    """Polls every `interval_s` from wall time `t0` until (1) every rollup's
    analytics_rollup_refresh_seconds count grew past `before` (a
    rollup_snapshot) and the change log is empty (the refreshes committed:
    refresh_ms), then (2) /cache/stats shows, for every rollup, a refreshed_at
    later than in `before` and pending_changes 0 (stats_ms: the server
    measures those every refresh_interval_ms, so until its next measurement
    it still shows the state from before the change). Times are ms since t0."""
    deadline = t0 + timeout_s
    grew: dict[str, float] = {}
    log_ms = refresh_ms = stats_ms = None
    polls = 0
    last_stats = 0.0
    now = t0

    def count(m: dict, n: str) -> float:
        return m.get("refresh", {}).get(n, {}).get("count", 0.0)

    while stats_ms is None:
        if time.time() > deadline:
            states = rollup_states(base_url, token)
            die(f"not re-aggregated within {timeout_s:.0f} s: refreshed {sorted(grew)} of {names}, "
                f"change log empty: {log_ms is not None}; pending: "
                + ", ".join(f"{n}={r.get('pending_changes')} ({r.get('state')})" for n, r in sorted(states.items())))
        m = rollup_metrics(base_url)
        now = time.time()
        polls += 1
        for n in names:
            if n not in grew and count(m, n) > count(before, n):
                grew[n] = round((now - t0) * 1000, 1)
        if log_ms is None and change_log_count(psql) == 0:
            log_ms = round((time.time() - t0) * 1000, 1)
        if refresh_ms is None and log_ms is not None and len(grew) == len(names):
            refresh_ms = max(log_ms, max(grew.values()))
        if refresh_ms is not None and time.time() - last_stats >= 0.05:
            last_stats = time.time()
            states = rollup_states(base_url, token)
            old = before.get("refreshed_at", {})
            if all(int(states.get(n, {}).get("pending_changes", 1)) == 0
                   and (states.get(n, {}).get("refreshed_at") or 0) > (old.get(n) or 0) for n in names):
                stats_ms = round((time.time() - t0) * 1000, 1)
                break
        time.sleep(interval_s)
    after = rollup_metrics(base_url)
    secs = {n: round(after["refresh"].get(n, {}).get("sum", 0.0) - before.get("refresh", {}).get(n, {}).get("sum", 0.0), 4)
            for n in names}
    return {
        "refresh_ms": refresh_ms,
        "log_empty_ms": log_ms,
        "refreshed_ms_by_rollup": grew,
        "stats_ms": stats_ms,
        "refresh_seconds": secs,
        "refresh_seconds_total": round(sum(secs.values()), 4),
        "refresh_transactions": {n: int(count(after, n) - count(before, n)) for n in names},
        "polls": polls,
        "poll_interval_ms": round(interval_s * 1000, 1),
    }


def refresh_insert_sql(first_id: int, rows: int, first_day: str, days: int) -> str:
    """`rows` sales in one statement, ids first_id.., spread over `days` days
    from `first_day` (12:00 UTC +- 5 h, the same local day in the model's
    time zone), 50 stores, 6 channels, 5% cancelled."""
    return (f"INSERT INTO sales ({SALE_COLUMNS}) "
            f"SELECT {first_id - 1} + g, 1 + (g * 7) % 50, 1 + (g * 5) % 6, "
            f"timestamptz '{first_day} 12:00:00+00' + (g % {days}) * interval '1 day' "
            f"+ ((g * 7919) % 36000 - 18000) * interval '1 second', "
            f"CASE WHEN g % 20 = 0 THEN 'CANCELLED' ELSE 'COMPLETED' END, 20 + (g * 131) % 28000 / 100.0 "
            f"FROM generate_series(1, {rows}) AS g")


def rollup_refresh(base_url: str, token: str, db_url: str, first_id: int, rows: int, first_day: str,
                   days: int, timeout_s: float) -> dict:
    """One INSERT of `rows` sales on a kept-open psql session; from psql's
    answer (committed) until every rollup re-aggregated it (wait_refreshed)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    psql = Psql(db_url)
    try:
        psql.run("SET statement_timeout = '120s'")
        states = rollup_states(base_url, token)
        if not states:
            die("/cache/stats lists no rollups")
        bad = {n: r.get("state") for n, r in states.items() if r.get("state") != "ready"}
        if bad:
            die(f"rollups not ready before the insert: {bad}")
        names = sorted(states)
        deadline = time.monotonic() + 60
        while change_log_count(psql):  # start with nothing pending (e.g. a catch-up)
            if time.monotonic() > deadline:
                die(f"{CHANGE_LOG} still holds rows 60 s after the server reported the rollups ready")
            time.sleep(0.05)
        before = rollup_snapshot(base_url, token)
        sent = time.perf_counter()
        psql.run(refresh_insert_sql(first_id, rows, first_day, days))
        insert_ms = round((time.perf_counter() - sent) * 1000, 1)
        committed = time.time()
        result = wait_refreshed(base_url, token, psql, names, before, committed, timeout_s)
        states = rollup_states(base_url, token)
        result.update(inserted=rows, insert_ms=insert_ms, insert_first_day=first_day, insert_days=days,
                      rollups=rollup_sizes(states),
                      lag_seconds={n: r.get("lag_seconds") for n, r in sorted(states.items())})
        return result
    finally:
        psql.close()


def rollup_settle(base_url: str, token: str, db_url: str, before_path: str, since: float,
                  timeout_s: float) -> dict:
    """After run.sh deleted the inserted rows (a change too): from `since`
    (unix seconds, when the DELETE returned) until every rollup re-aggregated
    it. An upper bound: the first poll comes only once this process started."""
    before = load_json(before_path)
    psql = Psql(db_url)
    try:
        names = sorted(rollup_states(base_url, token))
        r = wait_refreshed(base_url, token, psql, names, before, since, timeout_s)
    finally:
        psql.close()
    return {"delete_refresh_ms": r["refresh_ms"], "delete_stats_ms": r["stats_ms"],
            "delete_refresh_seconds_total": r["refresh_seconds_total"]}


# ---------------------------------------------------------------- faults
#
# The `faults` scenario (run.sh): a delay proxy, a connection flood, and per
# phase (before / during / after a fault) a snapshot of the server's counters
# at each end, a watcher of /health/live, /health and the RSS while it runs,
# and one JSON summary per phase.

FAULT_METRICS = (
    "analytics_redis_breaker_opened_total",
    "analytics_db_breaker_open",
    "analytics_cache_stale_served_total",
    "analytics_db_shed_total",
    "analytics_freshness_listener_up",
    "analytics_http_connections_open",
    "analytics_http_connections_rejected_total",
)
FAULT_APP_KEYS = ("hits", "hits_l1", "hits_redis", "misses", "db_queries", "stale_served", "errors", "timeouts",
                  "invalidations", "total_requests")
# Server log lines (RUST_LOG=warn) counted per phase: key -> substrings that must all be in the line.
FAULT_LOG_PATTERNS = {
    "log_redis_breaker_opened": ("redis failing", "breaker opened"),
    "log_db_breaker_opened": ("database unreachable", "breaker opened"),
    "log_db_unavailable": ("database unavailable",),
    "log_capture_lost": ("change-capture connection",),
    "log_accept_failed": ("accept failed",),
}


def rss_mb(pid: int) -> float | None:
    try:
        for line in open(f"/proc/{pid}/status", encoding="utf-8"):
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def metric_values(text: str, names=FAULT_METRICS) -> dict:
    """Prometheus text -> {name: value summed over its label sets} for NAMES."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            try:
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return out


def fault_snapshot(url: str, token: str, pid: int, log_path: str) -> dict:
    """/cache/stats (status, breaker, app counters, L1), the FAULT_METRICS of
    /metrics, the RSS and the log's size now; a failed request is noted, never fatal."""
    snap: dict = {"t": round(time.time(), 3), "rss_mb": rss_mb(pid)}
    try:
        snap["log_bytes"] = os.path.getsize(log_path)
    except OSError:
        snap["log_bytes"] = None
    t0 = time.monotonic()
    try:
        code, stats = http_json("GET", f"{url}/cache/stats", token, timeout=5)
        snap["stats"] = {"code": code, "status": stats.get("status"), "breaker": stats.get("breaker"),
                         "app": stats.get("app") or {}, "l1": stats.get("l1") or {}}
    except (OSError, ValueError, http.client.HTTPException) as e:
        snap["stats_error"] = f"{type(e).__name__}: {e}"
    snap["stats_ms"] = round((time.monotonic() - t0) * 1000, 1)
    try:
        req = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            snap["metrics"] = metric_values(r.read().decode("utf-8", "replace"))
    except (OSError, ValueError, http.client.HTTPException) as e:
        snap["metrics_error"] = f"{type(e).__name__}: {e}"
    return snap


def http_probe(host: str, port: int, path: str, timeout: float) -> tuple[int | None, bytes, float]:
    """One GET on a fresh connection: (status or None, body, ms)."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        r = conn.getresponse()
        body = r.read()
        return r.status, body, (time.monotonic() - t0) * 1000
    except (OSError, http.client.HTTPException):
        return None, b"", (time.monotonic() - t0) * 1000
    finally:
        conn.close()


# The cold probe's query: cold.lua's shape (3 metrics by channel over a week
# of October 2026, a no-op `store_id ne <unique id>` filter), so every probe
# is a miss that needs the database.
COLD_PROBE_BODY = ('{{"metrics":["revenue","average_ticket","sales_count"],"dimensions":["channel"],'
                   '"filters":{{"store_id":{{"ne":{uid}}}}},'
                   '"date_range":{{"start_date":"2026-10-01","end_date":"2026-10-07"}}}}')


def cold_probe(host: str, port: int, seconds: float, t0: float, out: dict) -> None:
    """Every 0.5 s (one at a time, 5 s timeout) a never-seen query: whether
    misses are answered, how fast, and from when on (s from t0)."""
    n = 0
    ms_ok: list[float] = []
    ms_fail: list[float] = []
    kinds: dict[str, int] = {}
    changes: list[list] = []
    last = None
    while time.monotonic() - t0 < seconds:
        tick = time.monotonic()
        uid = 1_000_000_000 + (int(time.time() * 1000) + n) % 1_000_000_000
        n += 1
        conn = http.client.HTTPConnection(host, port, timeout=5.0)
        try:
            conn.request("POST", "/analytics/query", body=COLD_PROBE_BODY.format(uid=uid).encode(),
                         headers={"Content-Type": "application/json", "Connection": "close"})
            r = conn.getresponse()
            body = r.read()
            code = r.status
        except (OSError, http.client.HTTPException):
            code, body = None, b""
        finally:
            conn.close()
        ms = (time.monotonic() - tick) * 1000
        if code == 200:
            kind = "200"
            ms_ok.append(ms)
        else:
            ms_fail.append(ms)
        if code == 200:
            pass
        elif code is None:
            kind = "no answer in 5 s"
        else:
            m = re.search(rb'"code"\s*:\s*"([^"]+)"', body)
            kind = f"{code} {m.group(1).decode() if m else '?'}"
        kinds[kind] = kinds.get(kind, 0) + 1
        ok = code == 200
        if ok != last:
            changes.append([round(tick - t0, 2), "ok" if ok else kind, round(ms, 1)])
            last = ok
        time.sleep(max(0.0, tick + 0.5 - time.monotonic()))
    ms_ok.sort()
    ms_fail.sort()
    out.update({"cold_fail_p50_ms": round(percentile(ms_fail, 50), 1) if ms_fail else None,
                "cold_fail_max_ms": round(ms_fail[-1], 1) if ms_fail else None})
    out.update({"cold_sent": n, "cold_ok": len(ms_ok), "cold_kinds": kinds, "cold_changes": changes[:10],
                "cold_p50_ms": round(percentile(ms_ok, 50), 1) if ms_ok else None,
                "cold_max_ms": round(ms_ok[-1], 1) if ms_ok else None})


def fault_watch(url: str, pid: int, seconds: float, out_path: str) -> None:
    """For SECONDS, every 0.5 s: GET /health/live and GET /health (fresh
    connections, 2 s timeout each) and the server's RSS; beside them the cold
    probe (cold_probe). Writes to OUT: how many /health/live answered 200 and
    how fast, the changes of /health's (database, redis) states with their
    times (s from the start), the RSS peak, the cold probe's counts."""
    host, port = url.replace("http://", "").split(":")
    t0 = time.monotonic()
    cold: dict = {}
    prober = threading.Thread(target=cold_probe, args=(host, int(port), seconds, t0, cold), daemon=True)
    prober.start()
    live_ms: list[float] = []
    live_total = live_ok = 0
    changes: list[list] = []
    last = None
    rss_max = None
    while time.monotonic() - t0 < seconds:
        tick = time.monotonic()
        code, _, ms = http_probe(host, int(port), "/health/live", 2.0)
        live_total += 1
        if code == 200:
            live_ok += 1
            live_ms.append(ms)
        code, body, _ = http_probe(host, int(port), "/health", 2.0)
        try:
            h = json.loads(body) if body else {}
            state = (h.get("database", {}).get("status", "?"), h.get("cache", {}).get("redis", "?"))
        except ValueError:
            state = ("?", "?")
        if code is None:
            state = ("no answer", "no answer")
        if state != last:
            changes.append([round(tick - t0, 2), state[0], state[1]])
            last = state
        r = rss_mb(pid)
        if r is not None:
            rss_max = r if rss_max is None else max(rss_max, r)
        time.sleep(max(0.0, tick + 0.5 - time.monotonic()))
    live_ms.sort()
    prober.join(timeout=10)
    result = {
        **cold,
        "live_total": live_total,
        "live_ok": live_ok,
        "live_p50_ms": round(percentile(live_ms, 50), 1) if live_ms else None,
        "live_max_ms": round(live_ms[-1], 1) if live_ms else None,
        "health_changes": changes[:20],
        "rss_max_mb": rss_max,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


def log_slice_counts(path: str, start: int | None, end: int | None) -> dict:
    try:
        with open(path, "rb") as f:
            f.seek(start or 0)
            text = f.read(max(0, (end or 0) - (start or 0)) if end is not None else -1).decode("utf-8", "replace")
    except OSError:
        return {}
    out = {k: 0 for k in FAULT_LOG_PATTERNS}
    out["log_warn_lines"] = out["log_error_lines"] = out["log_slow_statements"] = 0
    for line in text.splitlines():
        if "WARN" in line and "slow statement" in line:
            out["log_slow_statements"] += 1
        elif "WARN" in line:
            out["log_warn_lines"] += 1
        if "ERROR" in line:
            out["log_error_lines"] += 1
        for key, needles in FAULT_LOG_PATTERNS.items():
            if all(n in line for n in needles):
                out[key] += 1
    return out


def fault_phase(argv: list[str]) -> dict:
    """fault-phase WRK SNAP_START SNAP_END WATCH LOG [--since SNAP] [--flood FILE] [--machine FILE]:
    one phase's summary (--machine: bench.py watch's file of the phase's wrk run). Counters (cache stats, /metrics, log lines) run from --since (the end of the
    previous phase, so what the fault did right when applied counts in this phase) or from
    SNAP_START; wrk's numbers cover the phase's load only."""
    if len(argv) < 5:
        die("usage: fault-phase WRK SNAP_START SNAP_END WATCH LOG [--since SNAP] [--flood FILE]")
    wrk_path, start_path, end_path, watch_path, log_path = argv[:5]
    opts = dict(zip(argv[5::2], argv[6::2]))
    w = wrk_json(wrk_path)
    s0, s1 = load_json(start_path), load_json(end_path)
    since = load_json(opts["--since"]) if opts.get("--since") else s0
    r: dict = {k: w.get(k) for k in ("requests", "rps", "p50_ms", "p99_ms", "max_ms", "non2xx")}
    if w.get("statuses"):
        r["statuses"] = w["statuses"]
    if w.get("error_kinds"):
        r["error_kinds"] = w["error_kinds"]
    r["socket_errors"] = sum(int(w.get(k) or 0) for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    if since.get("stats") and s1.get("stats"):
        a0, a1 = since["stats"]["app"], s1["stats"]["app"]
        d = {k: int(a1.get(k, 0)) - int(a0.get(k, 0)) for k in FAULT_APP_KEYS}
        looked = d["hits"] + d["misses"]
        d["hit_rate"] = round(d["hits"] / looked, 4) if looked else None
        r["app"] = d
    r["redis_breaker"] = [s.get("stats", {}).get("breaker") for s in (s0, s1)]
    r["redis_status"] = [s.get("stats", {}).get("status") for s in (s0, s1)]
    for key, snap in (("stats_error", s0), ("stats_error_end", s1)):
        if snap.get("stats_error"):
            r[key] = snap["stats_error"]
    r["stats_ms_end"] = s1.get("stats_ms")
    m0, m1 = since.get("metrics"), s1.get("metrics")
    if m0 is not None and m1 is not None:
        def delta(name: str):
            return int(m1.get(name, 0) - m0.get(name, 0))
        r["redis_breaker_opened"] = delta("analytics_redis_breaker_opened_total")
        r["stale_served_metric"] = delta("analytics_cache_stale_served_total")
        r["db_shed"] = delta("analytics_db_shed_total")
        r["connections_rejected"] = delta("analytics_http_connections_rejected_total")
    r["db_breaker_open"] = [(s.get("metrics") or {}).get("analytics_db_breaker_open") for s in (s0, s1)]
    r["listener_up"] = [(s.get("metrics") or {}).get("analytics_freshness_listener_up") for s in (s0, s1)]
    r["connections_open_end"] = (s1.get("metrics") or {}).get("analytics_http_connections_open")
    r.update(log_slice_counts(log_path, since.get("log_bytes"), s1.get("log_bytes")))
    r["rss_mb"] = s1.get("rss_mb")
    watch = load_json(watch_path) if os.path.exists(watch_path) else {}
    r["watch"] = watch
    peaks = [v for v in (watch.get("rss_max_mb"), s0.get("rss_mb"), s1.get("rss_mb")) if v is not None]
    r["rss_max_mb"] = max(peaks) if peaks else None
    if opts.get("--flood"):
        r["flood"] = load_json(opts["--flood"])
    if opts.get("--machine") and os.path.exists(opts["--machine"]):
        m = load_json(opts["--machine"])
        if m.get("other_cores", 0) >= 0.1:
            top = ", ".join(f"{c} {v}s" for c, v in m.get("top_other", [])[:3])
            r["machine_busy"] = f"other processes used {m['other_cores']} cores ({top})"
    return r


def fault_line(path: str) -> str:
    """A one-line summary of a phase (for run.sh's log)."""
    p = load_json(path)
    app = p.get("app") or {}
    return (f"rps {fmt(p.get('rps'))}, p50 {fmt(p.get('p50_ms'))} ms, p99 {fmt(p.get('p99_ms'))} ms, "
            f"non-2xx {p.get('non2xx')}, hit rate {pct(app.get('hit_rate'))}, "
            f"redis breaker {'/'.join(str(b) for b in p.get('redis_breaker', []))}, "
            f"db breaker {'/'.join(str(b) for b in p.get('db_breaker_open', []))}, RSS {p.get('rss_mb')} MB"
            + (f", errors {p['error_kinds']}" if p.get("error_kinds") else ""))


class _DelayState:
    def __init__(self, delay_ms: float):
        self.delay = delay_ms / 1000
        self.on = False
        self.connections = 0
        self.chunks = 0
        self.delayed_chunks = 0
        self.bytes = 0
        self.switches: list[list] = []


def delay_proxy(listen_port: int, target_port: int, delay_ms: float, out_path: str) -> None:
    """delay-proxy LISTEN TARGET DELAY_MS OUT: a TCP proxy 127.0.0.1:LISTEN ->
    127.0.0.1:TARGET. Off at start; SIGUSR1 adds DELAY_MS to every chunk in
    each direction (held, in order, until received + DELAY_MS: latency without
    a throughput cap), SIGUSR2 removes it; connections are never touched.
    Creates OUT.ready once listening; on SIGTERM (or once its parent, run.sh,
    is gone) writes its counters to OUT."""
    import asyncio

    state = _DelayState(delay_ms)
    t0 = time.monotonic()
    parent = os.getppid()

    async def pipe(reader, writer) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def pump_in() -> None:
            try:
                while True:
                    data = await reader.read(65536)
                    if data:
                        state.chunks += 1
                        state.bytes += len(data)
                        if state.on:
                            state.delayed_chunks += 1
                    queue.put_nowait((time.monotonic() + (state.delay if state.on else 0.0), data))
                    if not data:
                        return
            except (OSError, asyncio.IncompleteReadError):
                queue.put_nowait((0.0, b""))

        async def pump_out() -> None:
            try:
                while True:
                    due, data = await queue.get()
                    wait = due - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if not data:
                        return
                    writer.write(data)
                    await writer.drain()
            except OSError:
                return
            finally:
                writer.close()

        reading = asyncio.ensure_future(pump_in())
        try:
            await pump_out()
        finally:
            reading.cancel()

    async def handle(client_reader, client_writer) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        state.connections += 1
        await asyncio.gather(pipe(client_reader, target_writer), pipe(target_reader, client_writer),
                             return_exceptions=True)

    def switch(on: bool) -> None:
        state.on = on
        state.switches.append([round(time.monotonic() - t0, 2), "on" if on else "off"])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, switch, True)
        loop.add_signal_handler(signal.SIGUSR2, switch, False)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port, backlog=1024)
        open(out_path + ".ready", "w").close()
        while not stop.is_set() and os.getppid() == parent:
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        server.close()

    asyncio.run(main())
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"listen_port": listen_port, "target_port": target_port, "delay_ms": delay_ms,
                   "connections": state.connections, "chunks": state.chunks,
                   "delayed_chunks": state.delayed_chunks, "bytes": state.bytes,
                   "switches": state.switches}, f)


def flood(host: str, port: int, n: int, hold_s: float, out_path: str) -> None:
    """flood HOST PORT N HOLD_S OUT: opens N connections (200 connecting at a
    time), each sending half a request line and then nothing; one the server
    closes (or answers) is opened again, so N stay held. Creates OUT.ready once
    N are open (or after 30 s with fewer); holds until SIGTERM (or HOLD_S after
    ready), then closes them all and writes its counters to OUT."""
    import asyncio

    half = b"GET /analytics/query HT"
    s = {"target": n, "opened": 0, "open_failures": 0, "closed_by_server": 0, "server_answers": {},
         "open_now": 0, "open_peak": 0, "ready_s": None, "first_close_s": None}
    t0 = time.monotonic()

    async def one(gate) -> None:
        while True:
            writer = None
            async with gate:
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
                    writer.write(half)
                    await writer.drain()
                    failed = False
                except (OSError, asyncio.TimeoutError):
                    failed = True
                    if writer is not None:
                        writer.close()
            if failed:
                s["open_failures"] += 1
                await asyncio.sleep(0.5)
                continue
            s["opened"] += 1
            s["open_now"] += 1
            s["open_peak"] = max(s["open_peak"], s["open_now"])
            try:
                data = await reader.read(64)
                status = data.split(b"\r\n", 1)[0].decode("latin-1")[:40] if data else "closed"
            except OSError as e:
                status = type(e).__name__
            finally:
                s["open_now"] -= 1
                writer.close()
            s["closed_by_server"] += 1
            s["server_answers"][status] = s["server_answers"].get(status, 0) + 1
            if s["first_close_s"] is None and s["ready_s"] is not None:
                s["first_close_s"] = round(time.monotonic() - t0 - s["ready_s"], 2)
            await asyncio.sleep(0.2)  # bounds the churn should the server close them at once

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        gate = asyncio.Semaphore(200)
        tasks = [asyncio.ensure_future(one(gate)) for _ in range(n)]
        deadline = time.monotonic() + 30
        while s["open_now"] < n and time.monotonic() < deadline and not stop.is_set():
            await asyncio.sleep(0.05)
        s["ready_s"] = round(time.monotonic() - t0, 2)
        s["open_at_ready"] = s["open_now"]
        open(out_path + ".ready", "w").close()
        try:
            await asyncio.wait_for(stop.wait(), hold_s)
        except asyncio.TimeoutError:
            pass
        s["open_at_end"] = s["open_now"]
        s["held_s"] = round(time.monotonic() - t0 - s["ready_s"], 2)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    del s["open_now"]
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(s, f)


# ---------------------------------------------------------------- nginx (hot path)

# The `nginx` scenario's targets, in the order they run in each round:
# (target, what, the process group that serves it, the lua script's kind).
NGINX_TARGETS = (
    ("server-l1", "the server directly, L1 on (every request an L1 hit)", "server"),
    ("nginx", "nginx proxy_cache in front of that server (every request an nginx cache hit)", "nginx"),
    ("server-l1-off", "a second server with `APP__CACHE__L1_ENABLED=false` (every request a Redis GET)", "peer"),
    ("health", "`GET /health/live` of the L1-on server (the HTTP floor)", "server"),
)


def task_counters(pid: int) -> dict[str, list[int]]:
    """Per thread of PID: [voluntary, nonvoluntary context switches, ns on a CPU (schedstat)]."""
    out: dict[str, list[int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        vol = nonvol = ns = 0
        try:
            with open(f"/proc/{pid}/task/{tid}/status", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        nonvol = int(line.split()[1])
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="utf-8") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        out[tid] = [vol, nonvol, ns]
    return out


def proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime + stime in ticks, starttime) of PID, None when it is gone."""
    try:
        raw = open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace").read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19])


def proc_snapshot(out_path: str, specs: list[str]) -> None:
    """NAME=PID (that process) or NAME=PID+ (it and its children, e.g. nginx's
    master and workers): per process its CPU ticks (utime + stime, all
    threads, /proc/PID/stat) and per thread its context switches and ns on a
    CPU; plus the machine's /proc/stat line and the time."""
    children: dict[int, list[int]] = {}
    if any(s.endswith("+") for s in specs):
        for d in os.listdir("/proc"):
            if d.isdigit():
                st = proc_stat(int(d))
                if st:
                    children.setdefault(st[0], []).append(int(d))
    groups: dict[str, dict] = {}
    for spec in specs:
        name, _, pid_s = spec.partition("=")
        if not pid_s:
            continue  # NAME= : a process that is not running
        with_children = pid_s.endswith("+")
        pid = int(pid_s.rstrip("+"))
        pids = [pid] + (sorted(children.get(pid, [])) if with_children else [])
        procs = {}
        for p in pids:
            st = proc_stat(p)
            if st:
                procs[str(p)] = {"ticks": st[1], "start": st[2], "tasks": task_counters(p)}
        groups[name] = procs
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"t": time.monotonic(), "cpu": cpu_line(), "groups": groups}, f)


def group_delta(before: dict, after: dict) -> dict:
    """CPU seconds (ticks), ns on a CPU (schedstat) and context switches of one
    process group between two snapshots. A process or thread absent from the
    first snapshot counts from zero; one gone by the second is lost (none of
    the measured processes starts or ends threads under a steady load)."""
    hz = os.sysconf("SC_CLK_TCK")
    ticks = vol = nonvol = ns = 0
    for pid, a in after.items():
        b = before.get(pid)
        if b is not None and b.get("start") != a.get("start"):
            b = None  # a recycled PID
        ticks += a["ticks"] - (b["ticks"] if b else 0)
        bt = b["tasks"] if b else {}
        for tid, (v, nv, n) in a["tasks"].items():
            v0, nv0, n0 = bt.get(tid, (0, 0, 0))
            vol += v - v0
            nonvol += nv - nv0
            ns += n - n0
    return {"cpu_s": ticks / hz, "sched_s": ns / 1e9, "ctx_vol": vol, "ctx_nonvol": nonvol,
            "processes": len(after)}


def nginx_window(target: str, rnd: int, wrk_path: str, before_path: str, after_path: str,
                 stats_before: str | None, stats_after: str | None, watch_path: str | None) -> dict:
    """One measured window of the `nginx` scenario: wrk's numbers and, per
    process group, CPU and context switches per request."""
    w = wrk_json(wrk_path)
    b, a = load_json(before_path), load_json(after_path)
    n = max(1, int(w["requests"]))
    out = {"target": target, "round": rnd, "wall_s": round(a["t"] - b["t"], 3)}
    for k in ("requests", "duration_s", "rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "non2xx",
              "connect_errors", "read_errors", "write_errors", "timeouts"):
        out[k] = w.get(k)
    groups = {}
    for name, after in a["groups"].items():
        d = group_delta(b["groups"].get(name, {}), after)
        d["cpu_us_per_req"] = round(d["cpu_s"] * 1e6 / n, 2)
        d["sched_us_per_req"] = round(d["sched_s"] * 1e6 / n, 2)
        d["ctx_per_req"] = round((d["ctx_vol"] + d["ctx_nonvol"]) / n, 4)
        d["cpu_s"] = round(d["cpu_s"], 3)
        d["sched_s"] = round(d["sched_s"], 4)
        groups[name] = d
    out["groups"] = groups
    dc = [y - x for x, y in zip(b["cpu"], a["cpu"])]
    hz = os.sysconf("SC_CLK_TCK")
    busy = (sum(dc[:8]) - dc[3] - dc[4]) / hz  # all CPUs, seconds not idle or iowait
    out["machine_busy_s"] = round(busy, 3)
    out["machine_us_per_req"] = round(busy * 1e6 / n, 2)
    out["machine_busy_pct"] = round(100 * busy / max(1e-9, (sum(dc[:8]) / hz)), 1)
    if stats_before and stats_after and os.path.exists(stats_before) and os.path.exists(stats_after):
        d = stats_delta(load_json(stats_before), load_json(stats_after))
        out["cache"] = {k: d[k] for k in ("hits_l1", "hits_redis", "misses", "total_requests", "db_queries")}
    if watch_path and os.path.exists(watch_path):
        wj = load_json(watch_path)
        out["other_cores"] = wj.get("other_cores")
        out["top_other"] = wj.get("top_other")
    return out


def median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    m = len(values) // 2
    return values[m] if len(values) % 2 else (values[m - 1] + values[m]) / 2


def nginx_summary(jsonl_path: str) -> dict:
    """Per target over its rounds: median rps/p50/p99 (min and max of the
    rps too), and per process group CPU and context switches per request
    over all its rounds (sum / sum); then the ratios."""
    windows = [json.loads(line) for line in open(jsonl_path, encoding="utf-8") if line.strip()]
    targets: dict[str, dict] = {}
    for target, _, serving in NGINX_TARGETS:
        ws = [x for x in windows if x["target"] == target]
        if not ws:
            continue
        n = sum(int(x["requests"]) for x in ws) or 1
        t = {
            "rounds": len(ws),
            "requests": n,
            "rps": round(median([x["rps"] for x in ws]), 2),
            "rps_min": min(x["rps"] for x in ws),
            "rps_max": max(x["rps"] for x in ws),
            "rps_rounds": [x["rps"] for x in ws],
            "p50_ms": round(median([x["p50_ms"] for x in ws]), 3),
            "p99_ms": round(median([x["p99_ms"] for x in ws]), 3),
            "non2xx": sum(int(x.get("non2xx") or 0) for x in ws),
            "socket_errors": sum(int(x.get(k) or 0) for x in ws
                                 for k in ("connect_errors", "read_errors", "write_errors", "timeouts")),
            "serving": serving,
            "machine_us_per_req": round(sum(x["machine_busy_s"] for x in ws) * 1e6 / n, 2),
            "machine_busy_pct": round(median([x.get("machine_busy_pct") for x in ws]), 1),
        }
        groups = {}
        for name in ws[0]["groups"]:
            cpu = sum(x["groups"][name]["cpu_s"] for x in ws if name in x["groups"])
            sched = sum(x["groups"][name]["sched_s"] for x in ws if name in x["groups"])
            ctx = sum(x["groups"][name]["ctx_vol"] + x["groups"][name]["ctx_nonvol"] for x in ws
                      if name in x["groups"])
            vol = sum(x["groups"][name]["ctx_vol"] for x in ws if name in x["groups"])
            groups[name] = {"cpu_s": round(cpu, 3), "cpu_us_per_req": round(cpu * 1e6 / n, 2),
                            "sched_us_per_req": round(sched * 1e6 / n, 2),
                            "ctx_per_req": round(ctx / n, 4), "ctx_vol_per_req": round(vol / n, 4)}
        t["groups"] = groups
        caches = [x["cache"] for x in ws if x.get("cache")]
        if caches:
            t["cache"] = {k: sum(c.get(k) or 0 for c in caches) for k in caches[0]}
        others = [x.get("other_cores") for x in ws if x.get("other_cores") is not None]
        if others:
            t["other_cores_max"] = max(others)
        targets[target] = t

    def ratio(a, b, digits=3):
        return round(a / b, digits) if a is not None and b else None

    def serving_cpu(target):
        t = targets.get(target)
        return t["groups"].get(t["serving"], {}).get("cpu_us_per_req") if t else None

    def serving_ctx(target):
        t = targets.get(target)
        return t["groups"].get(t["serving"], {}).get("ctx_per_req") if t else None

    def rps(target):
        return targets[target]["rps"] if target in targets else None

    ratios = {
        "server_over_nginx_rps": ratio(rps("server-l1"), rps("nginx")),
        "l1_on_over_off_cpu_per_req": ratio(serving_cpu("server-l1"), serving_cpu("server-l1-off")),
        "server_over_nginx_cpu_per_req": ratio(serving_cpu("server-l1"), serving_cpu("nginx")),
        "server_over_nginx_ctx_per_req": ratio(serving_ctx("server-l1"), serving_ctx("nginx")),
        "l1_on_over_off_rps": ratio(rps("server-l1"), rps("server-l1-off")),
        "l1_over_health_cpu_per_req": ratio(serving_cpu("server-l1"), serving_cpu("health")),
    }
    out = {"targets": targets, "ratios": ratios, "ratio": ratios["server_over_nginx_rps"]}
    busy = [f"{t}: other processes up to {v['other_cores_max']} cores" for t, v in targets.items()
            if (v.get("other_cores_max") or 0) >= 0.1]
    if busy:
        out["machine_busy"] = "; ".join(busy)
    return out


def nginx_section(lines: list[str]) -> None:
    """'Hot path vs nginx': the latest `nginx` result, one row per target."""
    path = os.path.join(LATEST, "nginx.json")
    if not os.path.exists(path):
        return
    r = load_json(path)
    targets = r.get("targets") or {}
    ratios = r.get("ratios") or {}
    w = lines.append
    w("## Hot path vs nginx")
    w("")
    intro = (
        f"`bench/run.sh nginx`: run {r.get('run_id')}, commit {r.get('commit')}, {r.get('timestamp')}. "
        f"The typical query (`lua/typical.lua`, {fmt(r.get('connections'))} connections, wrk -t2) against one "
        "L1-on server directly, against nginx's `proxy_cache` in front of that same server process "
        f"({r.get('nginx_version', 'nginx')}, `worker_processes {r.get('nginx_workers')}`, cache key "
        "`$request_method$request_uri$request_body$http_authorization`, `proxy_cache_methods POST`, "
        "`proxy_cache_valid 200 300s`, the server's `Cache-Control: private` ignored, "
        f"`open_file_cache` {'on' if r.get('nginx_open_file_cache') == 1 else 'off'}; config in the run's "
        "directory), against a second server with L1 off (a Redis GET per hit) and against `/health/live` "
        f"of the first: {fmt(r.get('rounds'))} interleaved rounds of the four, {fmt(r.get('round_seconds'))} s "
        f"each, after {fmt(r.get('warmup_s'))} s of warm-up per target, so drift hits all alike. "
        "rps, p50 and p99 are medians over the rounds (rps min–max beside it); CPU and context switches per "
        "request are sums over all rounds / all requests. *CPU* is utime + stime of the serving processes "
        "(`/proc/<pid>/stat`; nginx: master + workers + cache helpers), *ctx sw* voluntary + nonvoluntary "
        "context switches summed over their threads (`/proc/<pid>/task/*/status`). *upstream* is the server "
        "behind nginx during the nginx rounds (≈ 0 when every request is a hit; *lookups* are the cache "
        "lookups that reached it), *machine* all CPUs' busy time per request (wrk, the watcher, everything)."
    )
    lines.extend(textwrap.wrap(intro, width=100, break_long_words=False, break_on_hyphens=False))
    w("")
    w("| target | what | rps (min–max) | p50 ms | p99 ms | µs CPU/req | ctx sw/req | upstream µs CPU/req "
      "| upstream lookups | machine µs/req | non-2xx |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for target, what, serving in NGINX_TARGETS:
        t = targets.get(target)
        if not t:
            w(f"| {target} | {what} | not run | | | | | | | | |")
            continue
        g = t["groups"].get(serving, {})
        up = t["groups"].get("server", {}) if target == "nginx" else {}
        lookups = (t.get("cache") or {}).get("total_requests") if target == "nginx" else None
        rng = f"{fmt(t['rps'])} ({fmt(t['rps_min'])}–{fmt(t['rps_max'])})"
        non2xx = t.get("non2xx", 0) + t.get("socket_errors", 0)
        w(f"| {target} | {what} | {rng} | {fmt(t['p50_ms'])} | {fmt(t['p99_ms'])} | "
          f"{fmt(g.get('cpu_us_per_req'), 1)} | {fmt(g.get('ctx_per_req'), 3)} | "
          f"{fmt(up.get('cpu_us_per_req'), 2) if up else ''} | {fmt(lookups) if lookups is not None else ''} | "
          f"{fmt(t.get('machine_us_per_req'), 1)} | {fmt(non2xx)} |")
    w("")

    def x(v, digits=2):
        return "–" if v is None else f"**{v:.{digits}f}×**"

    w(f"- server (L1 hit) / nginx (cache hit) rps: {x(ratios.get('server_over_nginx_rps'))}; "
      f"CPU per request: {x(ratios.get('server_over_nginx_cpu_per_req'))}; "
      f"context switches per request: {x(ratios.get('server_over_nginx_ctx_per_req'))}")
    w(f"- L1 on / L1 off (Redis GET) CPU per request: {x(ratios.get('l1_on_over_off_cpu_per_req'))}; "
      f"rps: {x(ratios.get('l1_on_over_off_rps'))}")
    w(f"- L1 hit / `/health/live` CPU per request: {x(ratios.get('l1_over_health_cpu_per_req'))}")
    if r.get("machine_busy"):
        w(f"- Machine shared during the run: {r['machine_busy']}.")
    if r.get("perf_report"):
        rep = r["perf_report"]
        rep = os.path.relpath(rep, ROOT) if rep.startswith(ROOT + os.sep) else rep
        w(f"- `perf record` of the server during an extra server-l1 window (top symbols by self time): `{rep}`.")
    w("")


def splice_nginx_section(path: str) -> None:
    """Put the 'Hot path vs nginx' section (from out/latest/nginx.json) into an
    existing RESULTS.md without re-rendering the rest: replaces the section
    when present, else inserts it before the first of Rollups / Faults /
    Notes / Analysis (for a checkout whose out/ lacks the other results)."""
    section: list[str] = []
    nginx_section(section)
    if not section:
        die("no out/latest/nginx.json to render")
    text = open(path, encoding="utf-8").read().split("\n")
    heads = [i for i, line in enumerate(text) if line.startswith("## ")]
    start = next((i for i in heads if text[i] == "## Hot path vs nginx"), None)
    if start is not None:
        end = next((i for i in heads if i > start), len(text))
    else:
        start = next((i for i in heads if text[i] in ("## Rollups", "## Faults", "## Notes", "## Analysis")),
                     len(text))
        end = start
    text[start:end] = section
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(text))
    print(f"spliced the nginx section into {path}", file=sys.stderr)


# ---------------------------------------------------------------- record


def parse_value(v: str):
    try:
        return json.loads(v)
    except ValueError:
        return v


def record(argv: list[str]) -> None:
    if not argv:
        die("record: missing SCENARIO")
    scenario, rest = argv[0], argv[1:]
    result: dict = {"scenario": scenario}
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--wrk":
            result.update(wrk_json(rest[i + 1]))
            i += 2
        elif arg == "--warmup":
            w = wrk_json(rest[i + 1])
            result["warmup_requests"] = w["requests"]
            result["warmup_rps"] = w["rps"]
            result["warmup_non2xx"] = w["non2xx"]
            if w.get("statuses"):
                result["warmup_statuses"] = w["statuses"]
            i += 2
        elif arg == "--watch":
            if not os.path.exists(rest[i + 1]):
                i += 2
                continue
            w = load_json(rest[i + 1])
            result["watch"] = w
            busy = []
            if w.get("other_cores", 0) >= 0.1:
                top = ", ".join(f"{c} {v}s" for c, v in w.get("top_other", [])[:3])
                busy.append(f"other processes used {w['other_cores']} cores ({top})")
            if (w.get("steal_pct") or 0) >= 5:
                busy.append(f"hypervisor steal {w['steal_pct']}% of CPU time")
            if (w.get("other_db_active_avg") or 0) >= 0.2:
                busy.append(f"{w['other_db_active_avg']} active queries in other databases on average")
            if busy:
                result["machine_busy"] = "; ".join(busy)
            i += 2
        elif arg == "--stats":
            result["stats"] = stats_delta(load_json(rest[i + 1]), load_json(rest[i + 2]))
            if result["stats"].get("hit_rate") is not None:
                result["hit_rate"] = result["stats"]["hit_rate"]
            i += 3
        elif arg == "--merge":
            result.update(load_json(rest[i + 1]))
            i += 2
        elif arg == "--phase":  # --phase NAME FILE: a fault phase's summary (bench.py fault-phase)
            result.setdefault("phases", {})[rest[i + 1]] = load_json(rest[i + 2])
            i += 3
        elif "=" in arg:
            k, v = arg.split("=", 1)
            result[k] = parse_value(v)
            i += 1
        else:
            die(f"record: unexpected argument {arg!r}")
    result.setdefault("timestamp", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    result.setdefault("run_id", os.environ.get("BENCH_RUN_ID"))
    result.setdefault("commit", os.environ.get("BENCH_COMMIT") or git_commit())
    if os.environ.get("BENCH_SECONDS"):
        result.setdefault("bench_seconds", int(os.environ["BENCH_SECONDS"]))
    if sales_count() is not None:
        result.setdefault("sales", sales_count())
    os.makedirs(LATEST, exist_ok=True)
    line = json.dumps(result, sort_keys=True)
    with open(os.path.join(LATEST, f"{scenario}.json"), "w", encoding="utf-8") as f:
        f.write(line + "\n")
    if isinstance(result.get("sales"), int):
        os.makedirs(BY_SALES, exist_ok=True)
        with open(os.path.join(BY_SALES, f"{scenario}@{result['sales']}.json"), "w", encoding="utf-8") as f:
            f.write(line + "\n")
    jsonl = os.environ.get("BENCH_RESULTS_JSONL") or os.path.join(OUT, "results.jsonl")
    with open(jsonl, "a", encoding="utf-8") as f:
        f.write(line + "\n")
    print(line)


# ---------------------------------------------------------------- render


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml",
                                "Cargo.lock", "config", "migrations"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gb": mem_gb,
            "kernel": platform.release(), "os": pretty_os()}


def pretty_os() -> str:
    try:
        for line in open("/etc/os-release", encoding="utf-8"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def fmt(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def pct(v) -> str:
    return "–" if v is None else f"{v * 100:.2f}%"


def extra_text(name: str, r: dict) -> str:
    parts = []
    if name in ("uncached", "uncached-distinct"):
        parts.append(f"pool {r.get('pool')}")
        parts.append(f"SQL statements {fmt(r.get('sql_statements'))} "
                     f"({fmt(r.get('requests_per_statement'))} requests each)")
    if name == "db-floor":
        parts.append(f"tps (pgbench) {fmt(r.get('tps'))}")
        v = r.get("data_matches_api")
        parts.append("data = API ✓" if v is True else ("data ≠ API ✗" if v is False else "data not verified"))
    if isinstance(r.get("sales"), int) and r["sales"] != 1000000:
        parts.append(f"{r['sales']:,} sales")
    if name in ("hot-l1", "hot-redis", "mix", "mix-changes") + COLD_SCENARIOS and r.get("hit_rate") is not None:
        parts.append(f"hit rate {pct(r.get('hit_rate'))}")
    if name == "hot-redis" and r.get("stats"):
        parts.append(f"redis hits {fmt(r['stats'].get('hits_redis'))}")
    if name in ("mix", "mix-changes") + COLD_SCENARIOS and r.get("stats"):
        parts.append(f"SQL {fmt(r['stats'].get('db_queries'))}")
    if name in COLD_SCENARIOS and r.get("filter"):
        parts.append(f"filter `{r['filter']}`")
    if name in COLD_ROLLUP_BASELINE:
        if r.get("ratio") is not None:
            parts.append(f"{fmt(r['ratio'], 1)}× {r.get('baseline') or COLD_ROLLUP_BASELINE[name]} rps, "
                         f"p50 {fmt(r.get('p50_speedup'), 1)}× faster (same run)")
        if r.get("served_share") is not None:
            parts.append(f"{pct(r['served_share'])} answered from {r.get('served_from')}")
        if r.get("build_total_s") is not None:
            built = (f", by {r['build_from']} of this run" if r.get("build_from") not in (None, name) else "")
            parts.append(f"build {fmt(r['build_total_s'], 1)} s (all rollups{built})")
    if name == "rollup-refresh":
        parts.append(f"{fmt(r.get('inserted'))} rows in one INSERT ({fmt(r.get('insert_ms'), 1)} ms): "
                     f"refreshed after {fmt(r.get('refresh_ms'), 1)} ms, "
                     f"{fmt(r.get('refresh_seconds_total'), 3)} s in refresh transactions; "
                     f"/cache/stats pending 0 after {fmt(r.get('stats_ms'), 1)} ms")
        parts.append(f"DELETE {fmt(r.get('delete_s'), 1)} s, re-aggregated {fmt(r.get('delete_refresh_ms'), 1)} ms later")
    if name in ("mix", "mix-changes") and r.get("rss_mb") is not None:
        parts.append(f"RSS {r['rss_mb']:.1f} MB")
    if name == "mix-changes":
        parts.append(f"{fmt(r.get('inserted'))} inserts ({fmt(r.get('insert_rate'))}/s), "
                     f"{fmt(r.get('invalidations'))} invalidations")
        if r.get("ratio") is not None:
            parts.append(f"{fmt(r['ratio'], 3)}× mix rps (same run)")
    if name == "staleness":
        parts.append(f"{fmt(r.get('samples'))} samples of {fmt(r.get('changes'))} changes × {fmt(r.get('instances'))} "
                     f"instances, max {fmt(r.get('max_ms'))} ms, timeouts {fmt(r.get('timeouts'))}")
        for inst, v in sorted((r.get("per_instance") or {}).items()):
            parts.append(f"{inst}: p50 {fmt(v.get('p50_ms'))} / p99 {fmt(v.get('p99_ms'))} ms")
        if r.get("fresh_x_cache"):
            parts.append("first fresh answer " + ", ".join(f"{k} {v}" for k, v in sorted(r["fresh_x_cache"].items())))
    if name == "stampede":
        parts.append(f"SQL count {r.get('sql_count')} / {r.get('requests')} requests")
        parts.append(f"statuses {r.get('statuses')}")
    if name == "redis-down":
        parts.append(f"db-only {fmt(r.get('db_only_rps'))} rps (p50 {fmt(r.get('db_only_p50_ms'))} ms)")
        parts.append(f"ratio {fmt(r.get('ratio'))}")
        parts.append(f"breaker {r.get('breaker', '?')}")
    if r.get("statuses") and name not in ("stampede", "staleness"):
        parts.append("statuses " + ", ".join(f"{k}: {v:,}" for k, v in sorted(r["statuses"].items())))
    if name == "redis-down" and r.get("db_only_statuses"):
        parts.append("db-only statuses " + ", ".join(f"{k}: {v:,}" for k, v in sorted(r["db_only_statuses"].items())))
    if name not in ("redis-benchmark", "rollup-refresh"):
        bad = (r.get("non2xx") or 0)
        sock = sum(int(r.get(k) or 0) for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
        parts.append(f"non-2xx {fmt(bad)}")
        if sock:
            parts.append(f"socket errors {sock}")
        if name == "redis-down":
            parts.append(f"db-only non-2xx {fmt(r.get('db_only_non2xx'))}")
    if r.get("warmup_non2xx"):
        parts.append(f"non-2xx during warm-up {fmt(r['warmup_non2xx'])}")
    codes = f"{r['server_log_503']}× 503 database unavailable" if r.get("server_log_503") else ""
    if codes:
        parts.append(f"server logged {codes}")
    if r.get("breaker_opened"):
        parts.append(f"Redis breaker opened {r['breaker_opened']}×")
    if r.get("server_log_errors"):
        parts.append(f"server ERROR lines {r['server_log_errors']}")
    if r.get("server_log_warnings"):
        parts.append(f"server WARN lines {r['server_log_warnings']}")
    if r.get("server_log_slow_statements"):
        parts.append(f"sqlx slow-statement warnings {r['server_log_slow_statements']}")
    return "; ".join(parts)


def targets(res: dict) -> list[tuple[str, str, str]]:
    """(target, met/not met/not run, numbers)."""
    out = []

    def verdict(ok) -> str:
        return "not run" if ok is None else ("**met**" if ok else "**NOT met**")

    f = res.get("db-floor")
    for name, label in (("uncached-distinct", "uncached-distinct p50 ≤ 1.10 × db-floor p50 (one statement per request)"),
                        ("uncached", "uncached p50 ≤ 1.10 × db-floor p50 (as specified; coalesced)")):
        u = res.get(name)
        if u and f and u.get("p50_ms") and f.get("p50_ms"):
            ratio = u["p50_ms"] / f["p50_ms"]
            mean = (f"; means {u['mean_ms']:.1f} vs {f['mean_ms']:.1f} ms → {u['mean_ms'] / f['mean_ms']:.3f}×"
                    if u.get("mean_ms") and f.get("mean_ms") else "")
            out.append((label, verdict(ratio <= 1.10),
                        f"p50 {u['p50_ms']:.2f} ms vs {f['p50_ms']:.2f} ms → {ratio:.3f}×{mean}; "
                        f"{fmt(u.get('requests_per_statement'))} requests per SQL statement"))
        else:
            out.append((label, verdict(None), ""))

    h, c = res.get("hot-l1"), res.get("ceiling")
    if h and c:
        share = h["rps"] / c["rps"] if c.get("rps") else 0
        out.append(("hot-l1 rps ≥ 50% of ceiling", verdict(share >= 0.5),
                    f"{h['rps']:,.0f} vs {c['rps']:,.0f} rps → {share * 100:.1f}%"))
    else:
        out.append(("hot-l1 rps ≥ 50% of ceiling", verdict(None), ""))
    if h:
        out.append(("hot-l1 ≥ 40,000 rps", verdict(h["rps"] >= 40000), f"{h['rps']:,.0f} rps"))
        out.append(("hot-l1 p99 ≤ 5 ms", verdict(h["p99_ms"] <= 5), f"p99 {h['p99_ms']:.2f} ms"))
    else:
        out += [("hot-l1 ≥ 40,000 rps", verdict(None), ""), ("hot-l1 p99 ≤ 5 ms", verdict(None), "")]

    r = res.get("hot-redis")
    out.append(("hot-redis ≥ 15,000 rps", verdict(r["rps"] >= 15000 if r else None),
                f"{r['rps']:,.0f} rps" if r else ""))

    m = res.get("mix")
    hr = m.get("hit_rate") if m else None
    out.append(("mix hit rate ≥ 95%", verdict(hr >= 0.95 if hr is not None else None),
                f"{pct(hr)} ({m['stats']['hits']:,} hits / {m['stats']['misses']:,} misses)" if m and m.get("stats") else ""))

    st = res.get("staleness")
    out.append(("staleness: fresh on every instance within 1 s (p99), no timeouts",
                verdict(st.get("p99_ms") is not None and st["p99_ms"] <= 1000 and st.get("timeouts") == 0
                        if st else None),
                f"p50 {fmt(st.get('p50_ms'))} ms, p99 {fmt(st.get('p99_ms'))} ms, max {fmt(st.get('max_ms'))} ms; "
                f"timeouts {st.get('timeouts')} of {st.get('changes', 0) * st.get('instances', 0)}" if st else ""))

    s = res.get("stampede")
    out.append(("stampede: 100 cold identical requests → 1 SQL statement",
                verdict(s["sql_count"] == 1 if s else None),
                f"{s['sql_count']} statement(s); statuses {s['statuses']}" if s else ""))

    d = res.get("redis-down")
    if d:
        ok = d.get("ratio", 0) >= 0.9 and (d.get("non2xx") or 0) == 0
        out.append(("redis-down ≥ 90% of db-only, 0 non-2xx", verdict(ok),
                    f"{d['rps']:,.1f} vs {d['db_only_rps']:,.1f} rps → {d['ratio']:.2f}×; "
                    f"non-2xx {d.get('non2xx')}"))
    else:
        out.append(("redis-down ≥ 90% of db-only, 0 non-2xx", verdict(None), ""))

    out.append(("RSS ≤ 200 MB after mix", verdict(m["rss_mb"] <= 200 if m and m.get("rss_mb") else None),
                f"{m['rss_mb']:.1f} MB" if m and m.get("rss_mb") else ""))

    for name, baseline in COLD_ROLLUP_BASELINE.items():
        cr = res.get(name)
        speed = cold_speedup(cr) if cr else None
        out.append((f"{name} ≥ 20× faster than {baseline} (raw), p50 and rps, same run",
                    verdict(speed >= 20 if speed is not None else None),
                    f"{fmt(cr.get('sales'))} sales: rps {fmt(cr.get('ratio'), 1)}×, p50 {fmt(cr.get('p50_speedup'), 1)}×"
                    if cr and speed is not None else ""))
    return out


# The cold workload's two filter shapes (bench/lua/cold.lua's 4th argument):
# (shape, raw scenario, rollups scenario, the rollup that must answer, filter).
# `store_id ne <uid>` needs store_id, so only daily_store (day x channel x
# store) covers it; `channel_id not_in [<uid>]` needs only channel_id, so
# the much smaller daily_channel (day x channel x status) does.
COLD_SHAPES = (
    ("store", "cold", "cold-rollups", "daily_store", "store_id ne"),
    ("channel", "cold-channel", "cold-channel-rollups", "daily_channel", "channel_id not_in"),
)
COLD_SCENARIOS = tuple(n for shape in COLD_SHAPES for n in shape[1:3])
COLD_ROLLUP_BASELINE = {rollups: raw for _, raw, rollups, _, _ in COLD_SHAPES}


def cold_speedup(r: dict) -> float | None:
    """The smaller of the rps ratio and the p50 speedup of a cold rollups
    result (cold-rollups, cold-channel-rollups) over its raw baseline of the
    same run (None without both)."""
    if not r or r.get("ratio") is None or r.get("p50_speedup") is None:
        return None
    return min(r["ratio"], r["p50_speedup"])


DESCRIPTIONS = {
    "uncached": "POST typical query, cache disabled, pool 16",
    "uncached-distinct": "same, but no two in-flight requests identical (limit varies)",
    "db-floor": "same SQL via pgbench -M prepared, 16 clients",
    "ceiling": "GET /health/live",
    "hot-l1": "typical query, L1 + Redis (defaults)",
    "hot-redis": "typical query, L1 off (every hit from Redis)",
    "mix": "1,000 distinct queries, Zipf s=1.1, after 10 s warm-up",
    "cold": "every request a never-seen query, no-op store_id filter (raw table: rollups off)",
    "cold-rollups": "cold, answered from the daily_store rollup (built first with the CLI)",
    "cold-channel": "cold with a no-op channel_id filter instead (raw table: rollups off)",
    "cold-channel-rollups": "cold-channel, answered from the daily_channel rollup",
    "rollup-refresh": "one INSERT of 1,000 sales: commit → every rollup re-aggregated it",
    "stampede": "100 identical cold requests at once",
    "staleness": "2 instances; 100× INSERT a sale, poll both: commit → fresh answer",
    "mix-changes": "mix while 10 sales/s are inserted (one statement each)",
    "redis-down": "mix with its Redis killed vs cache disabled",
    "redis-benchmark": "redis-benchmark -t get (shared Redis reference)",
}


def render() -> None:
    res = {}
    for path in glob.glob(os.path.join(LATEST, "*.json")):
        r = load_json(path)
        res[r["scenario"]] = r
    m = machine()
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commits = sorted({r.get("commit", "?") for r in res.values()})
    lines = []
    w = lines.append
    w("# analytics-api benchmark results")
    w("")
    w("Generated by `bench/run.sh` (via `bench/bench.py render`); raw JSON lines are in `bench/out/`")
    w("(gitignored). Do not edit by hand: re-run the suite or a scenario instead.")
    w("")
    w("## How to run")
    w("")
    w("```sh")
    w("bench/run.sh                       # every scenario (~7 min, plus the build and the first seed)")
    w("bench/run.sh hot-l1 mix            # only these; other rows keep their last result")
    w("BENCH_SECONDS=10 bench/run.sh      # shorter measurement (default 20 s)")
    w("BENCH_SKIP_BUILD=1 bench/run.sh    # reuse target/bench/release/analytics-api")
    w("bench/run.sh report                # only re-render this file")
    w("bench/run.sh setup                 # only install wrk, build, seed, generate the mix")
    w("bench/run.sh faults                # rps/p50/p99 before, during, after each fault (~6 min)")
    w("bench/run.sh nginx                 # the hot path against nginx's proxy_cache, interleaved (~5 min)")
    w("# rollups, one column per sales count in the Rollups section (each count its own database):")
    w("BENCH_SALES=2000000 BENCH_DB=analytics_bench_2m bench/run.sh \\")
    w("  cold cold-channel cold-rollups cold-channel-rollups rollup-refresh")
    w("BENCH_SALES=10000000 BENCH_DB=analytics_bench_10m bench/run.sh \\")
    w("  cold cold-channel cold-rollups cold-channel-rollups rollup-refresh")
    w("```")
    w("")
    w("Needs PostgreSQL 15 on 127.0.0.1:5432 (user postgres) and Redis on 127.0.0.1:6379;")
    w("installs `wrk` with apt-get when missing. See `bench/README.md` for what each scenario does.")
    w("")
    w("## Environment")
    w("")
    w(f"- Rendered: {now}")
    w(f"- Machine: {m['nproc']} CPUs, {m['cpu']}, {m['mem_gb']} GB RAM, {m['os']}, kernel {m['kernel']}")
    w(f"- Git commit(s) measured: {', '.join(commits) if commits else 'none'}")
    runs = sorted({(r.get("run_id") or "?") for r in res.values()})
    w(f"- Run id(s): {', '.join(runs)}")
    shared = [f"{n} ({r['machine_busy']})" for n, r in res.items() if r.get("machine_busy")]
    if shared:
        w(f"- Machine was shared during: {', '.join(shared)} — other processes (e.g. cargo builds) "
          "competed for the 2 CPUs, so those numbers are pessimistic.")
    w("- Load generator: wrk 4.1 with `-t2` on the same 2-CPU machine as the server and PostgreSQL,")
    w("  so every number includes the cost of the client competing for the CPUs.")
    w("- `server logged N× 504` etc. count the server's log over its whole life (warm-up included);")
    w("  `non-2xx` counts only the measured run, as wrk saw it.")
    w("")
    w("## Summary")
    w("")
    w("| scenario | what | conns | rps | p50 ms | p99 ms | extra |")
    w("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for name in SCENARIO_ORDER:
        r = res.get(name)
        if not r:
            w(f"| {name} | {DESCRIPTIONS[name]} | | not run | | | |")
            continue
        rps = r.get("rps", r.get("tps"))
        w(f"| {name} | {DESCRIPTIONS[name]} | {fmt(r.get('connections'))} | {fmt(rps)} | "
          f"{fmt(r.get('p50_ms'))} | {fmt(r.get('p99_ms'))} | {extra_text(name, r)} |")
    w("")
    w("rps for `db-floor` is pgbench's tps; for `stampede` latencies are per request of the burst;")
    w("for `staleness` p50/p99 are commit → first fresh answer, over every change and instance.")
    w("")
    w("## Targets")
    w("")
    w("| target | verdict | numbers |")
    w("| --- | --- | --- |")
    for target, verdict, numbers in targets(res):
        w(f"| {target} | {verdict} | {numbers} |")
    w("")
    nginx_section(lines)
    rollups_section(lines)
    faults_section(lines)
    notes = [(n, res[n]["notes"]) for n in SCENARIO_ORDER if n in res and res[n].get("notes")]
    if notes:
        w("## Notes")
        w("")
        for n, text in notes:
            w(f"- **{n}**: {text}")
        w("")
    notes_path = os.path.join(BENCH_DIR, "notes.md")
    if os.path.exists(notes_path):
        lines.append("## Analysis")
        lines.append("")
        lines.extend(open(notes_path, encoding="utf-8").read().rstrip().split("\n"))
        lines.append("")
    ab_path = os.path.join(BENCH_DIR, "ab.md")
    if os.path.exists(ab_path):
        lines.extend(open(ab_path, encoding="utf-8").read().rstrip().split("\n"))
        lines.append("")
    history(lines)
    w("## Per-scenario detail")
    w("")
    for name in SCENARIO_ORDER:
        r = res.get(name)
        if not r:
            continue
        w(f"### {name}")
        w("")
        w(f"{DESCRIPTIONS[name]}. Measured {r.get('timestamp')}, commit {r.get('commit')}.")
        w("")
        w("| field | value |")
        w("| --- | --- |")
        for k in sorted(r):
            if k in ("scenario", "timestamp", "commit", "notes"):
                continue
            v = r[k]
            if isinstance(v, (dict, list)):
                v = "`" + json.dumps(v, sort_keys=True) + "`"
            w(f"| {k} | {fmt(v, 3) if not isinstance(v, str) else v} |")
        w("")
    path = os.environ.get("BENCH_RESULTS_MD", os.path.join(BENCH_DIR, "RESULTS.md"))
    lines.extend(kept_sections(path, "\n".join(lines)))
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def kept_sections(path: str, rendered: str) -> list:
    """The `<!-- NAME:start --> ... <!-- NAME:end -->` sections of the file at
    `path` that `rendered` lacks: the tables other scripts splice in
    (callgrind.py, redis_modes.py, idle_wakeups.py, runtime_shape.py) have no
    data in out/, so a render must carry them over, not drop them."""
    if not os.path.exists(path):
        return []
    old = open(path, encoding="utf-8").read()
    kept = []
    for match in re.finditer(r"<!-- ([\w-]+):start -->.*?<!-- \1:end -->", old, flags=re.S):
        if f"<!-- {match.group(1)}:start -->" not in rendered:
            kept += [match.group(0), ""]
    return kept


FAULT_ORDER = ("redis-kill", "redis-freeze", "redis-slow", "pg-stop", "pg-slow", "flood")


def fault_notes(fault: str, phase: str, p: dict) -> str:
    """The notes cell of one fault phase: misses (and how many requests
    failed), errors, breakers, stale answers, shedding, /health, RSS, flood."""
    parts = []
    app = p.get("app") or {}
    if app:
        parts.append(f"hit {pct(app.get('hit_rate'))}, misses {fmt(app.get('misses'))}, SQL {fmt(app.get('db_queries'))}")
    if p.get("error_kinds"):
        parts.append("errors " + ", ".join(f"{k} ×{v:,}" for k, v in sorted(p["error_kinds"].items())))
    if p.get("socket_errors"):
        parts.append(f"socket errors {fmt(p['socket_errors'])}")
    opened = p.get("redis_breaker_opened") or p.get("log_redis_breaker_opened")
    rb = p.get("redis_breaker") or []
    if opened:
        parts.append(f"Redis breaker opened ×{opened}" + (f" ({rb[-1]} at end)" if rb and rb[-1] else ""))
    elif "open" in rb:
        parts.append(f"Redis breaker {'/'.join(str(b) for b in rb)}")
    db_open = p.get("db_breaker_open") or []
    if p.get("log_db_breaker_opened") or any(v for v in db_open if v):
        parts.append(f"DB breaker opened ×{p.get('log_db_breaker_opened') or 0}"
                     f" ({'open' if db_open and db_open[-1] else 'closed'} at end)")
    stale = p.get("stale_served_metric") if p.get("stale_served_metric") is not None else app.get("stale_served")
    if stale:
        parts.append(f"stale served {fmt(stale)}")
    if p.get("db_shed"):
        parts.append(f"shed {fmt(p['db_shed'])}")
    if p.get("log_db_unavailable"):
        parts.append(f"log: {fmt(p['log_db_unavailable'])}× database unavailable")
    if app.get("invalidations"):
        parts.append(f"invalidations {fmt(app['invalidations'])}")
    listener = p.get("listener_up") or []
    if p.get("log_capture_lost") or any(v == 0 for v in listener if v is not None):
        parts.append("change capture " + ("lost, " if p.get("log_capture_lost") else "")
                     + f"{'up' if listener and listener[-1] else 'down'} at end")
    watch = p.get("watch") or {}
    if watch.get("cold_sent"):
        cold = f"cold probe {watch['cold_ok']}/{watch['cold_sent']} ok"
        if watch.get("cold_p50_ms") is not None:
            cold += f" (p50 {fmt(watch['cold_p50_ms'], 1)} ms)"
        bad = {k: v for k, v in (watch.get("cold_kinds") or {}).items() if k != "200"}
        if bad:
            cold += ", " + ", ".join(f"{k} ×{v}" for k, v in sorted(bad.items()))
            if watch.get("cold_fail_p50_ms") is not None:
                cold += f" (failed after p50 {fmt(watch['cold_fail_p50_ms'], 0)} ms)"
        cc = watch.get("cold_changes") or []
        if len(cc) > 1 or (cc and cc[0][1] != "ok"):
            cold += ": " + " → ".join(f"{c[1]} @{c[0]:g} s" for c in cc[:4]) + (" …" if len(cc) > 4 else "")
        parts.append(cold)
    changes = watch.get("health_changes") or []
    if changes and (len(changes) > 1 or changes[0][1:] != ["up", "up"]):
        parts.append("/health db/redis " + " → ".join(f"{c[1]}/{c[2]} @{c[0]:g} s" for c in changes[:4])
                     + (" …" if len(changes) > 4 else ""))
    if watch.get("live_total") and (fault == "flood" or watch.get("live_ok") != watch.get("live_total")):
        parts.append(f"/health/live {watch.get('live_ok')}/{watch.get('live_total')} answered"
                     + (f", max {fmt(watch.get('live_max_ms'), 1)} ms" if watch.get("live_max_ms") is not None else ""))
    fl = p.get("flood")
    if fl:
        closes = (f"; the server closed {fmt(fl.get('closed_by_server'))} (first after {fmt(fl.get('first_close_s'), 1)} s; "
                  + ", ".join(f"{k} ×{v:,}" for k, v in sorted((fl.get("server_answers") or {}).items())) + ") and they were reopened"
                  if fl.get("closed_by_server") else "; none closed by the server")
        parts.append(f"{fmt(fl.get('open_at_ready'))} of {fmt(fl.get('target'))} half-sent connections held "
                     f"(open in {fmt(fl.get('ready_s'), 1)} s, {fmt(fl.get('open_failures'))} failed opens{closes})")
    if p.get("connections_rejected"):
        parts.append(f"connections refused over max_connections {fmt(p['connections_rejected'])}")
    if p.get("stats_error_end"):
        parts.append(f"/cache/stats failed: {p['stats_error_end']}")
    elif p.get("stats_ms_end") and p["stats_ms_end"] > 1000:
        parts.append(f"/cache/stats took {fmt(p['stats_ms_end'], 0)} ms")
    if p.get("machine_busy"):
        parts.append(f"machine shared: {p['machine_busy']}")
    if p.get("rss_mb") is not None:
        peak = p.get("rss_max_mb")
        parts.append(f"RSS {p['rss_mb']:.1f} MB" + (f" (peak {peak:.1f})" if peak and peak > p["rss_mb"] + 0.5 else ""))
    return "; ".join(parts)


def faults_section(lines: list[str]) -> None:
    """One row per fault x phase (before / during / after) of the latest
    `faults` run of each fault (out/latest/fault-<fault>.json)."""
    res = {}
    for path in glob.glob(os.path.join(LATEST, "fault-*.json")):
        r = load_json(path)
        res[r.get("fault")] = r
    faults = [f for f in FAULT_ORDER if f in res] + sorted(f for f in res if f not in FAULT_ORDER)
    if not faults:
        return
    w = lines.append
    any_r = res[faults[0]]
    w("## Faults")
    w("")
    w("`bench/run.sh faults`: for each fault a server of its own (with a private `redis-server`; for the")
    w("PostgreSQL faults also a private PostgreSQL 15 cluster) runs the `mix` (`lua/mix.lua`, "
      f"{fmt(any_r.get('connections'))} connections, after a {fmt(any_r.get('warmup_s'))} s warm-up)")
    w(f"for {fmt(any_r.get('phase_seconds'))} s **before** the fault, **during** it (applied just before) and **after** it")
    w("(removed just before; the server is not restarted). Counters of *during*/*after* include what happened")
    w("as the fault was applied/removed. `hit` is the cache hit rate (L1 + Redis), `misses` the lookups that")
    w("found nothing usable and `SQL` the statements run, from `/cache/stats` (its `misses` leaves out lookups")
    w("whose computation failed: those are in `non-2xx`). Beside wrk, every 0.5 s: `/health/live`, `/health` (`db/redis`")
    w("lists the states it reported, seconds from the phase's start) and the *cold probe*, one never-seen query")
    w("at a time (cold.lua's shape, so always a miss that needs the database; its misses are in `misses`,")
    w("its answers are not in wrk's columns): when misses fail and when they are answered again. RSS at the")
    w("phase's end (peak if higher).")
    w("")
    for f in faults:
        r = res[f]
        w(f"- `{f}`: {r.get('what', '')} Database: {r.get('db', '?')}. Run {r.get('run_id')}, binary {r.get('commit')}.")
    w("")
    w("| fault | phase | rps | p50 ms | p99 ms | non-2xx | notes |")
    w("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for f in faults:
        phases = res[f].get("phases") or {}
        for ph in ("before", "during", "after"):
            p = phases.get(ph)
            label = f"**{f}**" if ph == "before" else ""
            if not p:
                w(f"| {label} | {ph} | not run | | | | |")
                continue
            w(f"| {label} | {ph} | {fmt(p.get('rps'))} | {fmt(p.get('p50_ms'))} | {fmt(p.get('p99_ms'))} | "
              f"{fmt(p.get('non2xx'))} | {fault_notes(f, ph, p)} |")
    w("")


ROLLUP_SCENARIOS = COLD_SCENARIOS + ("rollup-refresh",)


def rollups_section(lines: list[str]) -> None:
    """The cold workload, raw vs rollups, for both filter shapes side by side
    (store-filtered -> daily_store, channel-filtered -> daily_channel), then
    build, refresh and sizes; one column (or, for the cold table, one column
    per shape) per sales count, from the latest result of each scenario at
    that count."""
    by_sales: dict[int, dict[str, dict]] = {}
    for path in glob.glob(os.path.join(BY_SALES, "*.json")):
        r = load_json(path)
        if r.get("scenario") in ROLLUP_SCENARIOS and isinstance(r.get("sales"), int):
            by_sales.setdefault(r["sales"], {})[r["scenario"]] = r
    counts = sorted(n for n, rs in by_sales.items()
                    if "rollup-refresh" in rs or any(shape[2] in rs for shape in COLD_SHAPES))
    if not counts:
        return
    w = lines.append
    w("## Rollups")
    w("")
    w("The cold workload (`lua/cold.lua`: every request a never-seen query, 3 metrics by channel over")
    w("1–31 days with a no-op filter on a unique id ≥ 10⁹, 16 connections) from the raw table (rollups off)")
    w("and from the rollups (built first with `analytics-api rollups build`, one invocation per rollup,")
    w("timed), in two filter shapes: `store_id ne <uid>` (`cold` / `cold-rollups`) needs store_id, so only")
    w("`daily_store` (day × channel × store) covers it; `channel_id not_in [<uid>]` (`cold-channel` /")
    w("`cold-channel-rollups`) needs only channel_id, so the much smaller `daily_channel` (day × channel ×")
    w("status) covers it. Then `rollup-refresh` (one INSERT of 1,000 sales over 5 days on a server with")
    w("its rollups ready: commit → every rollup re-aggregated it). Per `BENCH_SALES`: the latest result")
    w("of each scenario at that sales count (`bench/out/latest-by-sales/`). Ratios come from the raw and")
    w("rollups scenarios of the same run; *(runs differ)* marks a ratio computed across runs.")
    w("")

    def get(r: dict | None, key: str):
        return (r or {}).get(key)

    def lat(r: dict | None) -> str | None:
        return f"{fmt(r.get('p50_ms'))} / {fmt(r.get('p99_ms'))}" if r and r.get("p50_ms") is not None else None

    def window_days(rs: dict) -> int | None:
        for r in rs.values():
            if isinstance(r.get("window_days"), int) and r["window_days"] > 0:
                return r["window_days"]
        return None

    def rollup_rows(r: dict | None, rollup: str) -> int | None:
        """Rows of `rollup` (short name): exact from its build, else PostgreSQL's estimate."""
        for n, v in (get(r, "build_rows") or {}).items():
            if n == rollup or n.endswith("." + rollup):
                return v
        for n, v in (get(r, "rollups") or {}).items():
            if (n == rollup or n.endswith("." + rollup)) and isinstance(v, dict):
                return v.get("rows")
        return None

    # ---- cold: raw vs rollups, both shapes side by side
    cells = [(n, shape) for n in counts for shape in COLD_SHAPES
             if shape[1] in by_sales[n] or shape[2] in by_sales[n]]
    if cells:
        w("| cold workload | " + " | ".join(f"{n:,} sales: `{shape[4]}` → {shape[3]}" for n, shape in cells) + " |")
        w("| --- |" + " ---: |" * len(cells))

        def crow(label: str, fn) -> None:
            out = []
            for n, (_, raw_name, roll_name, rollup, _) in cells:
                rs = by_sales[n]
                try:
                    v = fn(rs, rs.get(raw_name), rs.get(roll_name), rollup)
                except (KeyError, TypeError, ZeroDivisionError):
                    v = None
                out.append("–" if v is None or v == "" else str(v))
            if any(c != "–" for c in out):
                w(f"| {label} | " + " | ".join(out) + " |")

        def ratio(raw: dict | None, roll: dict | None, key: str, invert: bool) -> str | None:
            if not roll:
                return None
            same = {"rps": "ratio", "p50_ms": "p50_speedup", "p99_ms": "p99_speedup"}[key]
            if roll.get(same) is not None:
                return f"**{roll[same]:.1f}×**"
            if raw and raw.get(key) and roll.get(key):
                v = raw[key] / roll[key] if invert else roll[key] / raw[key]
                return f"{v:.1f}× *(runs differ)*"
            return None

        def per_day(rs: dict, raw: dict | None, roll: dict | None, rollup: str) -> str | None:
            days = window_days(rs)
            rows = rollup_rows(roll, rollup)
            if rows is None:  # the other shape's rollups result at this count holds the sizes too
                rows = next((rollup_rows(rs.get(s[2]), rollup) for s in COLD_SHAPES
                             if rollup_rows(rs.get(s[2]), rollup) is not None), None)
            sales = get(roll or raw, "sales")
            if not days or not isinstance(sales, int):
                return None
            return f"{sales / days:,.0f} / {fmt(rows / days, 1) if rows is not None else '–'}"

        crow("run (rollups)", lambda rs, raw, roll, ru: get(roll, "run_id"))
        crow("commit", lambda rs, raw, roll, ru: get(roll or raw, "commit"))
        crow("rows per day: sales (raw) / rollup", per_day)
        crow("raw rps", lambda rs, raw, roll, ru: fmt(get(raw, "rps"), 1) if raw else None)
        crow("raw p50 / p99 ms", lambda rs, raw, roll, ru: lat(raw))
        crow("rollups rps", lambda rs, raw, roll, ru: fmt(get(roll, "rps"), 1) if roll else None)
        crow("rollups p50 / p99 ms", lambda rs, raw, roll, ru: lat(roll))
        crow("rps: rollups / raw", lambda rs, raw, roll, ru: ratio(raw, roll, "rps", False))
        crow("p50: raw / rollups", lambda rs, raw, roll, ru: ratio(raw, roll, "p50_ms", True))
        crow("p99: raw / rollups", lambda rs, raw, roll, ru: ratio(raw, roll, "p99_ms", True))
        crow("goal ≥ 20× (rps and p50, same run)",
             lambda rs, raw, roll, ru: None if cold_speedup(roll) is None
             else ("met" if cold_speedup(roll) >= 20 else "**NOT met**"))
        crow("answers from the rollup", lambda rs, raw, roll, ru:
             f"{pct(roll['served_share'])} ({roll.get('served_from') or ru})"
             if get(roll, "served_share") is not None else None)
        crow("probe data = raw table's",
             lambda rs, raw, roll, ru: {True: "✓", False: "**✗**"}.get(get(roll, "data_matches_raw")))
        crow("non-2xx (raw / rollups)",
             lambda rs, raw, roll, ru: f"{fmt(get(raw, 'non2xx'))} / {fmt(get(roll, 'non2xx'))}")
        crow("rollups built by", lambda rs, raw, roll, ru: get(roll, "build_from"))
        w("")
        for _, raw_name, roll_name, rollup, _ in COLD_SHAPES:
            speeds = [(n, cold_speedup(by_sales[n].get(roll_name))) for n in counts]
            speeds = [(n, v) for n, v in speeds if v is not None]
            if len(speeds) >= 2:
                grows = all(b[1] > a[1] for a, b in zip(speeds, speeds[1:]))
                w(f"`{roll_name}` ({rollup}): gap growing with the data (min of rps ratio and p50 speedup): "
                  + " → ".join(f"{v:.1f}× at {n:,}" for n, v in speeds) + f": {'yes' if grows else '**no**'}.")
                w("")
        w("`rows per day`: sales per day of the seeded window / that rollup's rows per day (exact from its")
        w("build, else PostgreSQL's estimate), i.e. what one day of a query reads from each.")
        w("")

    # ---- build, sizes, refresh: one column per sales count
    cols = [by_sales[n] for n in counts]
    w("| build and refresh | " + " | ".join(f"{n:,} sales" for n in counts) + " |")
    w("| --- |" + " ---: |" * len(counts))

    def row(label: str, fn) -> None:
        out = []
        for rs in cols:
            try:
                v = fn(rs)
            except (KeyError, TypeError, ZeroDivisionError):
                v = None
            out.append("–" if v is None or v == "" else str(v))
        if any(c != "–" for c in out):
            w(f"| {label} | " + " | ".join(out) + " |")

    def rget(rs: dict, scenario: str, key: str):
        return (rs.get(scenario) or {}).get(key)

    def builds(rs: dict) -> dict:
        """The latest build recorded at this count (a reused build is recorded
        by every scenario that used it, with build_from naming its builder)."""
        found = [r for scenario in ("cold-rollups", "cold-channel-rollups", "rollup-refresh")
                 for r in [rs.get(scenario) or {}] if r.get("build_s")]
        return max(found, key=lambda r: r.get("timestamp") or "") if found else {}

    def sizes(rs: dict) -> dict:
        found = [r for scenario in ("rollup-refresh", "cold-rollups", "cold-channel-rollups")
                 for r in [rs.get(scenario) or {}] if isinstance(r.get("rollups"), dict) and r["rollups"]]
        return max(found, key=lambda r: r.get("timestamp") or "")["rollups"] if found else {}

    row("build from (scenario, run)", lambda rs: f"{builds(rs).get('build_from') or '–'}, {builds(rs).get('run_id')}"
        if builds(rs) else None)
    names = sorted({n for rs in cols for n in list(builds(rs).get("build_s", {})) + list(sizes(rs))})
    for n in names:
        row(f"build {n} s (CLI wall / in transaction)",
            lambda rs, n=n: f"{fmt(builds(rs)['build_s'][n], 1)} / {fmt(builds(rs).get('build_db_s', {}).get(n), 1)}")
    row("build, all rollups s", lambda rs: fmt(builds(rs).get("build_total_s"), 1) if builds(rs) else None)
    for n in names:
        row(f"{n} rows / MB", lambda rs, n=n: f"{fmt(sizes(rs)[n]['rows'])} / {sizes(rs)[n]['bytes'] / 1e6:.1f}")
    row("refresh: INSERT of 1,000 sales ms", lambda rs: fmt(rget(rs, "rollup-refresh", "insert_ms"), 1))
    row("refresh: commit → refreshed ms", lambda rs: f"**{fmt(rget(rs, 'rollup-refresh', 'refresh_ms'), 1)}**"
        if rget(rs, "rollup-refresh", "refresh_ms") is not None else None)
    for n in names:
        row(f"refresh: {n} done after ms / s in its transaction",
            lambda rs, n=n: f"{fmt(rget(rs, 'rollup-refresh', 'refreshed_ms_by_rollup')[n], 1)} / "
                            f"{fmt(rget(rs, 'rollup-refresh', 'refresh_seconds')[n], 3)}")
    row("refresh: s in refresh transactions (all)", lambda rs: fmt(rget(rs, "rollup-refresh", "refresh_seconds_total"), 3))
    row("refresh: /cache/stats pending 0 after ms", lambda rs: fmt(rget(rs, "rollup-refresh", "stats_ms"), 1))
    row("cleanup: DELETE of the 1,000 s / re-aggregated ms later",
        lambda rs: f"{fmt(rget(rs, 'rollup-refresh', 'delete_s'), 1)} / {fmt(rget(rs, 'rollup-refresh', 'delete_refresh_ms'), 1)}"
        if rs.get("rollup-refresh") else None)
    w("")
    w("`build … s`: wall time of `analytics-api rollups build <rollup>` (process start to exit, no server")
    w("running) / the build transaction's own time (`analytics_rollups.build_seconds`). `commit → refreshed`:")
    w("from psql's answer to the INSERT until the change log is empty and every rollup's")
    w("`analytics_rollup_refresh_seconds` count grew (polled every 10 ms); `s in its transaction` is that")
    w("histogram's sum delta. `/cache/stats pending 0` also waits for the server's periodic measurement")
    w("(`rollups.refresh_interval_ms`). Rows are PostgreSQL's estimate, MB `pg_total_relation_size`.")
    w("")


def measured_seconds(r: dict) -> float:
    if r.get("bench_seconds"):
        return float(r["bench_seconds"])
    if r.get("duration_s"):
        return float(r["duration_s"])
    if r.get("transactions") and r.get("tps"):
        return r["transactions"] / r["tps"]
    return 0.0


def history(lines: list[str]) -> None:
    """Every full-length (>= 15 s) result in results.jsonl, to show run-to-run spread."""
    path = os.environ.get("BENCH_RESULTS_JSONL") or os.path.join(OUT, "results.jsonl")
    if not os.path.exists(path):
        return
    runs: dict[tuple[str, int], list[dict]] = {}  # by scenario and sales count (0: not recorded)
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("scenario") not in SCENARIO_ORDER:
                continue
            if (r.get("scenario") in ("stampede", "staleness", "redis-benchmark", "rollup-refresh")
                    or measured_seconds(r) >= 15):
                sales = r.get("sales") if isinstance(r.get("sales"), int) else 0
                runs.setdefault((r["scenario"], sales), []).append(r)
    if not runs:
        return
    lines.append("## Run-to-run spread")
    lines.append("")
    lines.append("All full-length results recorded in `bench/out/results.jsonl` (the summary above shows the")
    lines.append("latest of each). The machine is shared, so expect this much noise between runs.")
    lines.append("")
    lines.append("| scenario | runs | rps (min / median / max) | p50 ms (min / median / max) | non-2xx per run | shared-machine runs |")
    lines.append("| --- | ---: | --- | --- | --- | ---: |")

    def mmm(values: list[float]) -> str:
        values = sorted(v for v in values if v is not None)
        if not values:
            return "–"
        return f"{fmt(values[0])} / {fmt(values[len(values) // 2])} / {fmt(values[-1])}"

    for name, sales in sorted(runs, key=lambda k: (SCENARIO_ORDER.index(k[0]), k[1])):
        rs = runs[(name, sales)]
        label = f"{name} ({sales:,} sales)" if sales else name
        rps = [r.get("rps", r.get("tps")) for r in rs]
        p50 = [r.get("p50_ms", r.get("refresh_ms")) for r in rs]
        shared = sum(1 for r in rs if r.get("machine_busy"))
        non2xx = ", ".join(str(r.get("non2xx", "–")) for r in rs)
        lines.append(f"| {label} | {len(rs)} | {mmm(rps)} | {mmm(p50)} | {non2xx} | {shared} |")
    lines.append("")
    lines.append("Runs recorded before the load watcher existed cannot be marked as shared; rows name the")
    lines.append("sales count when the run recorded it; for `rollup-refresh` the p50 column is commit → refreshed.")
    lines.append("")


# ---------------------------------------------------------------- main



AB_START = "<!-- ab:start -->"
AB_END = "<!-- ab:end -->"


def ab_report(argv: list[str]) -> None:
    """ab-report AB_OUT BASE HEAD SCENARIO...: medians per side and head/base
    ratios from bench/ab.sh's interleaved rounds; writes bench/ab.md and
    splices it into RESULTS.md between the ab markers."""
    if len(argv) < 4:
        die("usage: ab-report AB_OUT BASE HEAD SCENARIO...")
    out, base, head, scenarios = argv[0], argv[1], argv[2], argv[3:]

    def side(name: str, scenario: str) -> list[dict]:
        rows = []
        for entry in sorted(os.listdir(out)):
            path = os.path.join(out, entry, "latest", f"{scenario}.json")
            if entry.startswith(name + "-") and os.path.exists(path):
                rows.append(load_json(path))
        return rows

    def median(rows: list[dict], key: str):
        values = sorted(r[key] for r in rows if isinstance(r.get(key), (int, float)))
        if not values:
            return None
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    lines = [
        AB_START,
        "## A/B: " + head + " against " + base,
        "",
        f"`bench/ab.sh {base}`, run {os.path.basename(out)}: each scenario measured on both binaries in one run, "
        "interleaved (base, head, base, head); medians over the rounds; ratio = head / base "
        "(rps: higher is better; latency: lower is better).",
        "",
        "| scenario | rounds | base rps | head rps | rps ratio | base p50 ms | head p50 ms | base p99 ms | head p99 ms | p99 ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario in scenarios:
        b, h = side("base", scenario), side("head", scenario)
        brps, hrps = median(b, "rps"), median(h, "rps")
        bp50, hp50 = median(b, "p50_ms"), median(h, "p50_ms")
        bp99, hp99 = median(b, "p99_ms"), median(h, "p99_ms")
        ratio = lambda x, y: f"{y / x:.3f}" if x and y else "–"
        lines.append(
            f"| {scenario} | {min(len(b), len(h))} | {fmt(brps, 0)} | {fmt(hrps, 0)} | {ratio(brps, hrps)} | "
            f"{fmt(bp50, 2)} | {fmt(hp50, 2)} | {fmt(bp99, 2)} | {fmt(hp99, 2)} | {ratio(bp99, hp99)} |"
        )
    lines += ["", AB_END]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(BENCH_DIR, "ab.md"), "w", encoding="utf-8") as f:
        f.write(text)
    path = os.path.join(BENCH_DIR, "RESULTS.md")
    results = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    if AB_START in results and AB_END in results:
        before = results[: results.index(AB_START)]
        after = results[results.index(AB_END) + len(AB_END) :].lstrip("\n")
        results = before + text + "\n" + after
    else:
        results = results.rstrip("\n") + "\n\n" + text
    with open(path, "w", encoding="utf-8") as f:
        f.write(results)
    print(text)


def main(argv: list[str]) -> None:
    if not argv:
        die("missing subcommand; see the module docstring")
    cmd, args = argv[0], argv[1:]
    if cmd == "free-port":
        print(free_port())
    elif cmd == "wrk-json":
        print(json.dumps(wrk_json(args[0])))
    elif cmd == "stats-delta":
        print(json.dumps(stats_delta(load_json(args[0]), load_json(args[1]))))
    elif cmd == "pgbench-latency":
        print(json.dumps(pgbench_latency(args[0])))
    elif cmd == "pgbench-tps":
        print(json.dumps(pgbench_tps(args[0])))
    elif cmd == "redis-benchmark":
        print(json.dumps(redis_benchmark(args[0])))
    elif cmd == "compare-data":
        print(json.dumps(compare_data(args[0], args[1])))
    elif cmd == "typical-sql":
        print(json.dumps(typical_sql(args[0], args[1], args[2], args[3])))
    elif cmd == "watch":
        watch(args[0], float(args[1]), args[2], [int(a) for a in args[3:]])
    elif cmd == "stampede":
        print(json.dumps(stampede(args[0], args[1], int(args[2]), args[3])))
    elif cmd == "staleness":
        print(json.dumps(staleness(args[0], args[1], args[2], args[3], int(args[4]), args[5], int(args[6]), args[7])))
    elif cmd == "insert-loop":
        print(json.dumps(insert_loop(args[0], float(args[1]), float(args[2]), int(args[3]), args[4])))
    elif cmd == "changes-summary":
        print(json.dumps(changes_summary(args[0], args[1], args[2], args[3], args[4])))
    elif cmd == "rollup-builds":
        print(json.dumps(rollup_builds(args[0], args[1])))
    elif cmd == "rollups-wait":
        print(json.dumps(rollups_wait(args[0], args[1], float(args[2]))))
    elif cmd == "rollup-stats":
        print(json.dumps(rollup_stats(args[0], args[1], args[2])))
    elif cmd == "rollup-snapshot":
        print(json.dumps(rollup_snapshot(args[0], args[1])))
    elif cmd == "cold-compare":
        print(json.dumps(cold_compare(args[0], args[1], args[2], args[3])))
    elif cmd == "rollup-refresh":
        print(json.dumps(rollup_refresh(args[0], args[1], args[2], int(args[3]), int(args[4]), args[5],
                                        int(args[6]), float(args[7]))))
    elif cmd == "rollup-settle":
        print(json.dumps(rollup_settle(args[0], args[1], args[2], args[3], float(args[4]), float(args[5]))))
    elif cmd == "fault-snapshot":
        print(json.dumps(fault_snapshot(args[0], args[1], int(args[2]), args[3])))
    elif cmd == "fault-watch":
        fault_watch(args[0], int(args[1]), float(args[2]), args[3])
    elif cmd == "fault-phase":
        print(json.dumps(fault_phase(args)))
    elif cmd == "fault-line":
        print(fault_line(args[0]))
    elif cmd == "delay-proxy":
        delay_proxy(int(args[0]), int(args[1]), float(args[2]), args[3])
    elif cmd == "flood":
        flood(args[0], int(args[1]), int(args[2]), float(args[3]), args[4])
    elif cmd == "proc-snapshot":
        proc_snapshot(args[0], args[1:])
    elif cmd == "nginx-window":
        opt = args[5:] + [None] * (3 - len(args[5:]))
        print(json.dumps(nginx_window(args[0], int(args[1]), args[2], args[3], args[4], opt[0], opt[1], opt[2])))
    elif cmd == "nginx-line":
        # nginx-line WINDOWS_JSONL GROUP: the last window in one line (for the log)
        w = [json.loads(line) for line in open(args[0], encoding="utf-8") if line.strip()][-1]
        g = w["groups"].get(args[1], {})
        print(f"{w['rps']:,.0f} rps, p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, "
              f"{g.get('cpu_us_per_req')} us CPU/req, {g.get('ctx_per_req')} ctx/req ({args[1]})")
    elif cmd == "nginx-splice":
        splice_nginx_section(args[0])
    elif cmd == "nginx-summary":
        print(json.dumps(nginx_summary(args[0])))
    elif cmd == "commit":
        print(git_commit())
    elif cmd == "record":
        record(args)
    elif cmd == "render":
        render()
    elif cmd == "ab-report":
        ab_report(args)
    elif cmd == "get":
        # get FILE KEY[.KEY...]: one value from a JSON file (for the shell)
        v = load_json(args[0])
        for k in args[1].split("."):
            v = v.get(k) if isinstance(v, dict) else None
        print("" if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else v))
    else:
        die(f"unknown subcommand {cmd!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
