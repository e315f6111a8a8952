#!/usr/bin/env python3
"""A cache hit's latency and throughput in each Redis deployment mode, side by side.

    python3 bench/redis_modes.py [--binary PATH] [--config-dir DIR] [--rounds 3]
                                 [--seconds 8] [--remote-delay-ms 30] [--results bench/RESULTS.md]

One server per mode, all started up front on free ports of 127.0.0.1 and kept
running, each with its own cache prefix, on a database of this script's own
(created if absent; the first server migrates and seeds the demo data):

  l1              reference: standalone Redis, L1 on (a hit never leaves the process)
  standalone      one private redis-server, L1 off (every hit is a Redis read)
  sentinel        a private primary + one replica + 3 sentinels (quorum 2), L1 off
  cluster         3 private primaries (redis-cli --cluster create, no replicas), L1 off
  remote-only     the local Redis down (REDIS_URL names a port nothing listens on),
                  [redis.remote] a private redis-server behind `bench.py delay-proxy`
                  adding --remote-delay-ms per direction, L1 off
  remote-only-0ms the same through a second proxy whose delay stays off (the path's own cost)

Every redis-server is a process of this script (`--save "" --appendonly no`,
its files in a temp dir), as are the sentinels, the two proxies and the
servers; all are stopped by PID on every exit (finally, SIGINT, SIGTERM).
The shared Redis is not used at all; on the shared PostgreSQL only the
script's own database (`--database`).

Each server gets one warm-up miss, then must answer 200 with `X-Cache: HIT`
(the remote modes must also show `remote.hits` of /cache/stats growing).
Then ROUNDS rounds visit every mode in turn, so drift on the shared machine
hits all alike: (a) sequential keep-alive requests on one http.client
connection (--requests, --remote-requests for the delayed remote; at most
--latency-seconds) -> p50/p99; (b) `wrk -t2 -c64 -d SECONDS --latency` with
bench/lua/typical.lua and the same body -> requests/s, p99, non-2xx; (c) the
`app.misses` delta of /cache/stats over both windows. The
table shows medians over the rounds and each mode's rps and p50 relative to
`standalone`; it goes to stdout and, with --results FILE, between the
`redis-modes:start/end` markers of that file (appended when absent).

The binary is built with `CARGO_TARGET_DIR=target/bench cargo build --release --locked`.
Takes about 4 minutes with the defaults (a first run seeds the database: +20 s).
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

import callgrind

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The typical dashboard query (bench/lua/typical.lua, bench/callgrind.py). The
# demo seed's window ends today, so October 2026 has rows.
BODY = (
    '{"metrics":["revenue","average_ticket","sales_count"],"dimensions":["channel"],'
    '"date_range":{"start_date":"2026-10-01","end_date":"2026-10-31"}}'
)
START, END = "<!-- redis-modes:start -->", "<!-- redis-modes:end -->"
ADMIN_TOKEN = "bench"
SERVICE_NAME = "bench"
MODES = ["l1", "standalone", "sentinel", "cluster", "remote-only", "remote-only-0ms"]
WHAT = {
    "l1": "reference: standalone Redis, L1 on",
    "standalone": "one redis-server",
    "sentinel": "primary + replica + 3 sentinels",
    "cluster": "3 primaries, no replicas",
    "remote-only": "local down; remote via +{delay} ms/direction proxy",
    "remote-only-0ms": "local down; remote via the proxy, delay off",
}


class Processes:
    """Every process this script starts, stopped (by PID, in reverse order)
    by stop_all(); and the temp dir their files live in."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="redis-modes-")
        self.started: list[tuple[str, subprocess.Popen]] = []
        self.held: list[socket.socket] = []

    def start(self, name: str, argv: list[str], env=None, log: str | None = None) -> subprocess.Popen:
        output = open(log, "w") if log else subprocess.DEVNULL
        process = subprocess.Popen(
            argv, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
        )
        if log:
            output.close()
        self.started.append((name, process))
        return process

    def redis(self, port: int, *extra: str) -> subprocess.Popen:
        return self.start(
            f"redis-server :{port}",
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", os.path.join(self.dir, f"redis-{port}.log"), *extra],
        )

    def log_tail(self, name: str, lines: int = 5) -> str:
        try:
            with open(os.path.join(self.dir, name), errors="replace") as f:
                return "| " + " | ".join(f.read().splitlines()[-lines:])
        except OSError:
            return ""

    def stop_all(self) -> None:
        for name, process in reversed(self.started):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for name, process in reversed(self.started):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print(f"{name} (pid {process.pid}) ignored SIGTERM: SIGKILL", file=sys.stderr)
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=10)
        self.started.clear()
        for held in self.held:
            held.close()
        shutil.rmtree(self.dir, ignore_errors=True)


PORTS: set[int] = set()


def free_port() -> int:
    """A free port of 127.0.0.1 not handed out before in this run."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in PORTS:
            PORTS.add(port)
            return port


def dead_port(processes: Processes) -> int:
    """A port that refuses connections for the whole run: bound, never listening."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    processes.held.append(s)
    PORTS.add(s.getsockname()[1])
    return s.getsockname()[1]


def wait_until(what: str, seconds: float, ready, detail=lambda: "") -> None:
    deadline = time.time() + seconds
    while not ready():
        if time.time() > deadline:
            sys.exit(f"{what}: not within {seconds:.0f} s {detail()}".rstrip())
        time.sleep(0.1)


def cli(port: int, *args: str) -> str:
    """`redis-cli -p port args...`, its output (empty when it failed)."""
    try:
        done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                              capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout


def ping_ms(port: int, count: int = 5) -> float:
    """Median round trip of a raw RESP PING to 127.0.0.1:port, in ms."""
    samples = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for _ in range(count):
            t0 = time.perf_counter()
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = s.recv(64)
                if not chunk:
                    raise ConnectionError(f"port {port} closed the connection")
                reply += chunk
            samples.append((time.perf_counter() - t0) * 1000)
            if reply != b"+PONG\r\n":
                raise ConnectionError(f"port {port}: PING answered {reply!r}")
    return statistics.median(samples)


# --- Redis deployments -------------------------------------------------------

def standalone_redis(processes: Processes) -> int:
    port = free_port()
    processes.redis(port)
    wait_until(f"redis-server :{port}", 10, lambda: "PONG" in cli(port, "PING"),
               lambda: processes.log_tail(f"redis-{port}.log"))
    return port


def sentinel_redis(processes: Processes) -> tuple[int, int, list[int]]:
    """A primary, its replica and 3 sentinels (quorum 2) monitoring it as
    SERVICE_NAME. Down-after 10 s, not the tests' 1 s: on a loaded 2-core
    machine a busy primary must not be failed over mid-measurement."""
    primary, replica = free_port(), free_port()
    processes.redis(primary)
    processes.redis(replica, "--replicaof", "127.0.0.1", str(primary))
    wait_until("replica in sync", 15, lambda: "master_link_status:up" in cli(replica, "INFO", "replication"),
               lambda: processes.log_tail(f"redis-{replica}.log"))
    sentinels = [free_port() for _ in range(3)]
    for port in sentinels:
        conf = os.path.join(processes.dir, f"sentinel-{port}.conf")
        with open(conf, "w") as f:
            f.write(f"port {port}\nbind 127.0.0.1\ndir {processes.dir}\n"
                    f"logfile {processes.dir}/sentinel-{port}.log\n"
                    f"sentinel monitor {SERVICE_NAME} 127.0.0.1 {primary} 2\n"
                    f"sentinel down-after-milliseconds {SERVICE_NAME} 10000\n"
                    f"sentinel failover-timeout {SERVICE_NAME} 30000\n")
        processes.start(f"sentinel :{port}", ["redis-server", conf, "--sentinel"])
    wait_until("sentinels know the replica and each other", 30, lambda: all(
        str(replica) in cli(s, "SENTINEL", "replicas", SERVICE_NAME)
        and cli(s, "SENTINEL", "sentinels", SERVICE_NAME).count("runid") >= 2
        for s in sentinels))
    return primary, replica, sentinels


def cluster_redis(processes: Processes) -> list[int]:
    """3 primaries, slots split by redis-cli, no replicas. Node timeout left
    at Redis' 15 s: under load a slow node must not be marked failed. Each
    bus port is a free port of its own (the default, port + 10000, may be
    taken or beyond 65535)."""
    nodes = [free_port() for _ in range(3)]
    for port in nodes:
        processes.redis(port, "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                        "--cluster-config-file", os.path.join(processes.dir, f"nodes-{port}.conf"))
    wait_until("cluster nodes up", 10, lambda: all("PONG" in cli(p, "PING") for p in nodes),
               lambda: " ".join(processes.log_tail(f"redis-{p}.log", 2) for p in nodes))
    created = subprocess.run(
        ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in nodes],
         "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True, text=True, timeout=60,
    )
    if created.returncode != 0:
        sys.exit(f"redis-cli --cluster create: {created.stdout[-500:]} {created.stderr[-500:]}")
    wait_until("cluster_state:ok", 30, lambda: all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in nodes))
    return nodes


def delay_proxy(processes: Processes, target: int, delay_ms: float, on: bool) -> int:
    """`bench.py delay-proxy` 127.0.0.1:<port> -> target; SIGUSR1 turns its delay on."""
    port = free_port()
    out = os.path.join(processes.dir, f"proxy-{port}.json")
    proxy = processes.start(
        f"delay-proxy :{port}",
        [sys.executable, os.path.join(ROOT, "bench", "bench.py"), "delay-proxy",
         str(port), str(target), str(delay_ms), out],
        log=os.path.join(processes.dir, f"proxy-{port}.log"),
    )
    wait_until(f"delay-proxy :{port} ready", 15, lambda: os.path.exists(out + ".ready") or proxy.poll() is not None)
    if proxy.poll() is not None:
        sys.exit(f"delay-proxy :{port} exited: {open(os.path.join(processes.dir, f'proxy-{port}.log')).read()[-500:]}")
    if on:
        proxy.send_signal(signal.SIGUSR1)
    return port


# --- servers -----------------------------------------------------------------

class Server:
    def __init__(self, mode: str, port: int, process: subprocess.Popen, log: str):
        self.mode, self.port, self.process, self.log = mode, port, process, log
        self.remote = mode.startswith("remote-only")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = open(self.log, errors="replace").read()
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, message: str):
        sys.exit(f"{self.mode} (port {self.port}): {message}\n--- server log (tail) ---\n{self.log_tail()}")

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def stats(self) -> dict:
        conn = self.connect()
        try:
            conn.request("GET", "/cache/stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            self.fail(f"GET /cache/stats: HTTP {response.status}: {body[:300]!r}")
        return json.loads(body)


def query(conn: http.client.HTTPConnection) -> tuple[int, str, bytes]:
    """One POST of BODY: status, X-Cache header, body."""
    conn.request("POST", "/analytics/query", body=BODY, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    return response.status, response.getheader("X-Cache", ""), body


def start_server(processes: Processes, args, mode: str, redis_env: dict, l1: bool, seed: bool) -> Server:
    port = free_port()
    log = os.path.join(processes.dir, f"server-{mode}.log")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "APP_ENV": "bench",
        "DATABASE_URL": args.database,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "RUST_LOG": "warn",
        "MODEL_PATH": os.path.join(args.config_dir, "model.toml"),
        "APP__DATABASE__SEED_DEMO_ON_EMPTY": "true" if seed else "false",
        "APP__ROLLUPS__ENABLED": "false",
        "APP__CACHE__PREFIX": f"bench-rm-{mode}-{port}",
        "APP__CACHE__L1_ENABLED": "true" if l1 else "false",
        # October 2026 ended < 30 days ago: the default TTL (300 s) would
        # expire entries mid-run; an hour outlives any run.
        "CACHE_TTL": "3600",
        **redis_env,
    }
    process = processes.start(f"server {mode}", [args.binary, "--config-dir", args.config_dir], env=env, log=log)
    server = Server(mode, port, process, log)
    deadline = time.time() + (240 if seed else 60)
    while True:
        try:
            conn = server.connect()
            conn.request("GET", "/health/live")
            if conn.getresponse().status == 200:
                conn.close()
                break
        except OSError:
            pass
        if process.poll() is not None:
            server.fail(f"exited with {process.returncode} before /health/live answered")
        if time.time() > deadline:
            server.fail("/health/live did not answer in time")
        time.sleep(0.3)
    return server


def until_hit(server: Server, seconds: float = 15) -> dict:
    """Queries until an answer is a cache hit (the first one fills the cache;
    a remote write lands in the background); returns that answer."""
    conn = server.connect()
    deadline = time.time() + seconds
    try:
        while True:
            status, x_cache, body = query(conn)
            if status != 200:
                server.fail(f"POST /analytics/query: HTTP {status}: {body[:300]!r}")
            if x_cache == "HIT":
                return json.loads(body)
            if time.time() > deadline:
                server.fail(f"no X-Cache: HIT within {seconds:.0f} s (last X-Cache: {x_cache!r})")
            time.sleep(0.05)
    finally:
        conn.close()


def check_hits(server: Server, l1: bool) -> None:
    answer = until_hit(server)
    meta = answer["metadata"]
    if not answer.get("data"):
        server.fail(f"the query returned no rows: {meta}")
    expected = "l1" if l1 else "redis"
    if meta.get("cache_tier") != expected:
        server.fail(f"hit served from {meta.get('cache_tier')!r}, not {expected!r}: {meta}")
    if server.remote:
        before = server.stats()["remote"]["hits"]
        for _ in range(3):
            until_hit(server)
        stats = server.stats()
        if stats["remote"]["hits"] < before + 3:
            server.fail(f"remote.hits went {before} -> {stats['remote']['hits']} over 3 hits: {stats['remote']}")
        if stats.get("breaker") != "open":
            print(f"{server.mode}: local breaker {stats.get('breaker')!r}, not open", file=sys.stderr)


# --- measurements ------------------------------------------------------------

def sequential(server: Server, requests: int, seconds: float) -> dict:
    """`requests` keep-alive POSTs one after another on one connection (at most
    `seconds`); every answer must be 200 and a hit."""
    conn = server.connect()
    samples, not_hit = [], 0
    deadline = time.perf_counter() + seconds
    try:
        for _ in range(requests):
            t0 = time.perf_counter_ns()
            status, x_cache, body = query(conn)
            samples.append((time.perf_counter_ns() - t0) / 1000)
            if status != 200:
                server.fail(f"sequential: HTTP {status}: {body[:300]!r}")
            not_hit += x_cache != "HIT"
            if time.perf_counter() > deadline:
                break
    finally:
        conn.close()
    samples.sort()
    return {
        "n": len(samples),
        "p50_us": samples[len(samples) // 2],
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "not_hit": not_hit,
    }


def wrk(server: Server, seconds: int) -> dict:
    env = {**os.environ, "BENCH_LUA_DIR": os.path.join(ROOT, "bench", "lua"), "BENCH_BODY": BODY}
    argv = ["wrk", "-t2", "-c64", "-d", f"{seconds}s", "--latency",
            "-s", os.path.join(ROOT, "bench", "lua", "typical.lua"), f"http://127.0.0.1:{server.port}"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result = json.loads(line[len("BENCH_JSON "):])
            result["socket_errors"] = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors",
                                                                "timeouts"))
            return result
    server.fail(f"wrk printed no BENCH_JSON line: {done.stdout[-500:]} {done.stderr[-500:]}")


# --- report ------------------------------------------------------------------

def latency(us: float) -> str:
    return f"{us:,.0f} µs" if us < 10_000 else f"{us / 1000:,.1f} ms"


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip()


def render(args, rows: dict, proxy_rtt: dict, failed_over: bool) -> str:
    base = rows["standalone"]
    commit = git("rev-parse", "--short", "HEAD") or "?"
    if git("status", "--porcelain", "--", "src", "config", "Cargo.toml", "Cargo.lock"):
        commit += " (with uncommitted changes under src/, config/ or Cargo.*)"
    built = os.path.getmtime(args.binary)
    commit += f", binary built {time.strftime('%H:%M', time.localtime(built))}"
    if built < int(git("log", "-1", "--format=%ct") or 0):
        commit += " (before that commit: rebuild for exact numbers)"
    lines = [
        START,
        "## Cache hit per Redis mode",
        "",
        f"`bench/redis_modes.py`, {time.strftime('%Y-%m-%d')}, commit {commit}: the typical dashboard query "
        "(`lua/typical.lua`'s body) as a cache hit, one server per Redis deployment mode, all running side by "
        f"side and visited in turn for {args.rounds} interleaved rounds (medians over the rounds). "
        f"*Sequential*: up to {args.requests} keep-alive requests one after another on one connection "
        f"(Python http.client; {args.remote_requests} for `remote-only`; at most {args.latency_seconds:g} s per "
        f"window). *wrk*: `-t2 -c64 -d{args.seconds}s --latency`. L1 is off in every row but `l1`, so each hit is "
        "a Redis read. `sentinel`: a primary, its replica and 3 sentinels (quorum 2); `cluster`: 3 primaries "
        "created by `redis-cli --cluster create`, no replicas. `remote-only`: the local Redis is down "
        "(`REDIS_URL` names a port nothing listens on, so the local breaker is open) and `[redis.remote]` is a "
        f"private redis-server behind `bench.py delay-proxy` adding {args.remote_delay_ms:g} ms per direction "
        f"(PING through it: {proxy_rtt['on']:.1f} ms); `remote-only-0ms` is the same path with the proxy's delay "
        f"off (PING {proxy_rtt['off']:.2f} ms; the Python proxy is part of its cost). Every Redis is a private "
        "`redis-server --save '' --appendonly no` (7.x) on 127.0.0.1. The machine is a shared 2-core one "
        "(wrk, the servers, the proxies and every Redis on the same 2 CPUs): ratios matter, absolute numbers drift.",
        "",
        "| mode | what | p50 sequential | p99 sequential | rps (wrk -c64) | p99 (wrk) | rps vs standalone "
        "| p50 vs standalone | misses | rps per round |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    errors, not_hit, notes = [], [], []
    for mode in MODES:
        r = rows[mode]
        lines.append(
            f"| `{mode}` | {WHAT[mode].format(delay=f'{args.remote_delay_ms:g}')} | {latency(r['p50_us'])} "
            f"| {latency(r['p99_us'])} | {r['rps']:,.0f} | {r['wrk_p99_ms']:,.2f} ms "
            f"| {r['rps'] / base['rps']:.2f} | {r['p50_us'] / base['p50_us']:.2f} | {r['misses']:,} "
            f"| {' / '.join(f'{x:,.0f}' for x in r['rps_rounds'])} |"
        )
        if r["non2xx"] or r["socket_errors"]:
            errors.append(f"`{mode}` {r['non2xx']:,} non-2xx and {r['socket_errors']:,} socket errors")
        if r["not_hit"]:
            not_hit.append(f"`{mode}` {r['not_hit']:,} of {r['n_total']:,}")
        if r["n"] < (args.remote_requests if mode == "remote-only" else args.requests):
            notes.append(f"`{mode}` made {r['n']} sequential requests per window (the "
                         f"{args.latency_seconds:g} s cap).")
    lines += [
        "",
        "Non-2xx or socket errors under wrk (all rounds): " + ("; ".join(errors) if errors else "none") + ". "
        "Sequential answers that were not `X-Cache: HIT`: " + ("; ".join(not_hit) if not_hit else "none") + ".",
        "",
        "*misses*: answers computed from PostgreSQL during all of a mode's windows (the `app.misses` delta of "
        "`/cache/stats`, sequential + wrk, all rounds).",
    ]
    if any(rows[m]["misses"] for m in MODES if m.startswith("remote-only")):
        lines[-1] += (" The `remote-only` ones are the server's own doing, about one a second: with the local "
                      "Redis down it retries its start-up invalidation every second, and each retry bumps the "
                      "remote's counters before the local bump fails (see bench/README.md).")
    if failed_over:
        notes.append("The sentinels failed over during the run: `sentinel` measured a failover too.")
    if notes:
        lines += ["", " ".join(notes)]
    lines.append(END)
    return "\n".join(lines)


# --- main --------------------------------------------------------------------

def create_database(url: str) -> None:
    parts = urllib.parse.urlparse(url)
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        sys.exit(f"database name {name!r}: letters, digits and _ only")
    psql = ["psql", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432),
            "-U", parts.username or "postgres", "-d", "postgres", "-Atc"]
    found = subprocess.run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
                           capture_output=True, text=True, timeout=30)
    if found.returncode != 0:
        sys.exit(f"psql: {found.stderr.strip()}")
    if found.stdout.strip() != "1":
        subprocess.run([*psql, f'CREATE DATABASE "{name}"'], check=True, capture_output=True, timeout=60)
        print(f"created database {name}", file=sys.stderr)


def on_signal(signum, _frame) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def run(args, processes: Processes) -> None:
    create_database(args.database)

    print("starting Redis deployments ...", file=sys.stderr)
    standalone = standalone_redis(processes)
    primary, replica, sentinels = sentinel_redis(processes)
    nodes = cluster_redis(processes)
    remote = standalone_redis(processes)
    proxy_on = delay_proxy(processes, remote, args.remote_delay_ms, on=True)
    proxy_off = delay_proxy(processes, remote, args.remote_delay_ms, on=False)
    proxy_rtt = {"on": ping_ms(proxy_on), "off": ping_ms(proxy_off)}
    if proxy_rtt["on"] < args.remote_delay_ms:
        sys.exit(f"delay-proxy :{proxy_on}: PING took {proxy_rtt['on']:.1f} ms, the delay is not on")
    local_down = dead_port(processes)

    def remote_env(proxy: int) -> dict:
        return {
            "REDIS_URL": f"redis://127.0.0.1:{local_down}",
            "APP__REDIS__REMOTE__URL": f"redis://127.0.0.1:{proxy}",
            "APP__REDIS__REMOTE__COMMAND_TIMEOUT_MS": "1000",
            "APP__REDIS__REMOTE__CONNECT_TIMEOUT_MS": "2000",
        }

    setups = {
        "l1": ({"REDIS_URL": f"redis://127.0.0.1:{standalone}"}, True),
        "standalone": ({"REDIS_URL": f"redis://127.0.0.1:{standalone}"}, False),
        "sentinel": ({
            "APP__REDIS__MODE": "sentinel",
            "REDIS_URL": "redis://127.0.0.1:1/0",  # only its credentials and database are used
            "APP__REDIS__SENTINEL__SERVICE_NAME": SERVICE_NAME,
            "APP__REDIS__SENTINEL__ADDRESSES": ",".join(f"127.0.0.1:{p}" for p in sentinels),
        }, False),
        "cluster": ({
            "APP__REDIS__MODE": "cluster",
            "REDIS_URL": f"redis://127.0.0.1:{nodes[0]}",  # only its scheme is used
            "APP__REDIS__CLUSTER__NODES": ",".join(f"127.0.0.1:{p}" for p in nodes),
        }, False),
        "remote-only": (remote_env(proxy_on), False),
        "remote-only-0ms": (remote_env(proxy_off), False),
    }
    servers = {}
    for i, mode in enumerate(MODES):
        redis_env, l1 = setups[mode]
        started = time.time()
        # One at a time: the first migrates (and seeds an empty database).
        servers[mode] = start_server(processes, args, mode, redis_env, l1, seed=i == 0)
        check_hits(servers[mode], l1)
        print(f"{mode}: up on :{servers[mode].port} in {time.time() - started:.1f} s, hits checked", file=sys.stderr)
    if args.warmup:
        for mode in MODES:
            wrk(servers[mode], args.warmup)

    samples = {mode: [] for mode in MODES}
    for round_number in range(1, args.rounds + 1):
        for mode in MODES:
            server = servers[mode]
            until_hit(server)  # the entry is still there (and in L1 for `l1`)
            before = server.stats()["app"]
            requests = args.remote_requests if mode == "remote-only" else args.requests
            seq = sequential(server, requests, args.latency_seconds)
            load = wrk(server, args.seconds)
            after = server.stats()["app"]
            # Answers not served from a cache during both windows (wrk sees no headers).
            load["misses"] = after["misses"] - before["misses"]
            load["served"] = after["total_requests"] - before["total_requests"]
            samples[mode].append((seq, load))
            print(f"round {round_number}/{args.rounds} {mode:16} sequential p50 {latency(seq['p50_us']):>9} "
                  f"p99 {latency(seq['p99_us']):>9} (n={seq['n']})   wrk {load['rps']:>9,.0f} rps "
                  f"p99 {load['p99_ms']:7.2f} ms non-2xx {load['non2xx']} misses {load['misses']}", file=sys.stderr)

    named = cli(sentinels[0], "SENTINEL", "get-master-addr-by-name", SERVICE_NAME).split()
    failed_over = str(primary) not in named
    if failed_over:
        print(f"warning: the sentinels failed over during the run (primary now {named})", file=sys.stderr)
    rows = {}
    for mode, runs in samples.items():
        rows[mode] = {
            "p50_us": statistics.median(s["p50_us"] for s, _ in runs),
            "p99_us": statistics.median(s["p99_us"] for s, _ in runs),
            "n": min(s["n"] for s, _ in runs),
            "n_total": sum(s["n"] for s, _ in runs),
            "not_hit": sum(s["not_hit"] for s, _ in runs),
            "rps": statistics.median(w["rps"] for _, w in runs),
            "rps_rounds": [w["rps"] for _, w in runs],
            "wrk_p99_ms": statistics.median(w["p99_ms"] for _, w in runs),
            "non2xx": sum(w["non2xx"] for _, w in runs),
            "socket_errors": sum(w["socket_errors"] for _, w in runs),
            "misses": sum(w["misses"] for _, w in runs),
            "served": sum(w["served"] for _, w in runs),
        }
    table = render(args, rows, proxy_rtt, failed_over)
    print(table)
    if args.results:
        callgrind.splice(args.results, START, END, table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "bench", "release", "analytics-api"))
    parser.add_argument("--config-dir", default="config")
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/analytics_bench_redis_modes",
                        help="the script's own database (created if absent, seeded by the first server)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8, help="wrk window per mode and round")
    parser.add_argument("--warmup", type=int, default=2, help="wrk seconds per server before round 1 (0: none)")
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests per window")
    parser.add_argument("--remote-requests", type=int, default=300,
                        help="sequential requests per window of the delayed remote-only")
    parser.add_argument("--latency-seconds", type=float, default=10, help="cap of a sequential window")
    parser.add_argument("--remote-delay-ms", type=float, default=30, help="proxy delay per direction")
    parser.add_argument("--results", help="splice the table into this markdown file")
    args = parser.parse_args()
    args.binary = os.path.abspath(args.binary)
    args.config_dir = os.path.abspath(args.config_dir)
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"{args.binary} is missing: CARGO_TARGET_DIR=target/bench cargo build --release --locked")
    for tool in ("redis-server", "redis-cli", "psql", "wrk"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (wrk: apt-get install -y wrk)")

    processes = Processes()
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        run(args, processes)
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        processes.stop_all()


if __name__ == "__main__":
    main()
