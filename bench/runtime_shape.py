#!/usr/bin/env python3
"""The two runtime shapes (`server.runtime`) side by side, under load.

    bench/runtime_shape.py [BINARY[:CONFIG_DIR]] [--seconds 8] [--rounds 3] [--results bench/RESULTS.md]

Four servers of one binary run at once on free ports of 127.0.0.1 (the bench
database, the shared Redis under a prefix each, rollups off):
`thread_per_core` and `shared`, each with L1 on and with L1 off (every hit a
Redis GET). Then, for ROUNDS interleaved rounds, wrk -t2 visits each in turn
(after a warm-up of each), so that drift on the shared machine hits all
alike, with three workloads:

- hit: the typical dashboard query (lua/typical.lua), 64 connections;
- health: GET /health/live, 64 connections (the HTTP floor; L1-on servers);
- miss: every request a never-seen query (lua/cold.lua, store filter),
  16 connections: PostgreSQL answers each; L1-on servers.

Per window: rps and latency from wrk (lua/report.lua's line), and from /proc the server's CPU time
(utime + stime, all threads) and context switches (voluntary + involuntary,
all threads) per request. Medians of rps/latency over the rounds; CPU and
switches are totals over all rounds / all requests. The table, with the
thread_per_core / shared ratios, goes to stdout and, with --results FILE,
between the `runtime-shape:start/end` markers of that file.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request

from bench import bench_json, proc_stat
from callgrind import free_port, publish, server_env, stop
from idle_wakeups import switches

START, END = "<!-- runtime-shape:start -->", "<!-- runtime-shape:end -->"
BENCH = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(BENCH, "lua")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVERS = {  # name: (server.runtime, L1 on)
    "thread_per_core": ("thread_per_core", True),
    "shared": ("shared", True),
    "thread_per_core, L1 off": ("thread_per_core", False),
    "shared, L1 off": ("shared", False),
}
WORKLOADS = {  # name: (path, lua, connections, servers)
    "hit": ("/analytics/query", "typical.lua", 64, list(SERVERS)),
    "health": ("/health/live", "health.lua", 64, ["thread_per_core", "shared"]),
    "miss": ("/analytics/query", "cold.lua", 16, ["thread_per_core", "shared"]),
}


def cpu_seconds(pid: int) -> float:
    stat = proc_stat(pid)
    return stat[1] / CLOCK_TICKS if stat else 0.0


def start(binary: str, config: str, runtime: str, l1: bool, database: str):
    port = free_port()
    env = server_env(port, database, config, f"bench-shape-{port}")
    env["APP__SERVER__RUNTIME"] = runtime
    env["APP__CACHE__L1_ENABLED"] = "true" if l1 else "false"
    server = subprocess.Popen([binary, "--config-dir", config], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=5).read()
            return server, port
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                sys.exit(f"{binary} ({runtime}) did not start")
            time.sleep(0.2)


def wrk(port: int, workload: str, seconds: float, offset: int) -> dict:
    path, lua, connections, _ = WORKLOADS[workload]
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", os.path.join(LUA, lua),
               f"http://127.0.0.1:{port}{path}"]
    if lua == "cold.lua":
        command += ["--", str(offset * 200_000)]  # disjoint per window; a window stays under 200k requests
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "BENCH_LUA_DIR": LUA},
                         check=True).stdout
    w = bench_json(out.splitlines(), f"wrk's output for {workload}")
    socket = [f"{kind} {w[kind]}" for kind in ("connect_errors", "read_errors", "write_errors", "timeouts") if w[kind]]
    return {"requests": w["requests"], "rps": w["rps"], "p50": w["p50_ms"], "p99": w["p99_ms"],
            "failed": w["non2xx"], "errors": ", ".join(socket)}


def window(server, port: int, workload: str, seconds: float, offset: int) -> dict:
    cpu, switched = cpu_seconds(server.pid), switches(server.pid)
    result = wrk(port, workload, seconds, offset)
    result["cpu"] = cpu_seconds(server.pid) - cpu
    result["switches"] = switches(server.pid) - switched
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", nargs="?", default="target/release/analytics-api", help="BINARY[:CONFIG_DIR]")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", help="splice the table into this markdown file")
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/analytics_bench")
    args = parser.parse_args()
    binary, _, config = args.binary.partition(":")
    binary, config = os.path.abspath(binary), os.path.abspath(config or "config")
    servers = {}
    try:
        for name, (runtime, l1) in SERVERS.items():
            servers[name] = start(binary, config, runtime, l1, args.database)
        offset = 1
        for workload, (_, _, _, names) in WORKLOADS.items():
            for name in names:
                wrk(servers[name][1], workload, args.warmup, offset)
                offset += 1
        windows = {}
        for rnd in range(1, args.rounds + 1):
            for workload, (_, _, _, names) in WORKLOADS.items():
                for name in names:
                    result = window(*servers[name], workload, args.seconds, offset)
                    offset += 1
                    windows.setdefault((workload, name), []).append(result)
                    print(f"round {rnd} {workload:6} {name:24} {result['rps']:9,.0f} rps  "
                          f"{result['cpu'] / result['requests'] * 1e6:6.1f} us CPU/req  "
                          f"{result['switches'] / result['requests']:.3f} ctx/req", file=sys.stderr)
    finally:
        for server, _ in servers.values():
            stop(server)
    rows, summary = [], {}
    for (workload, name), results in windows.items():
        requests = sum(r["requests"] for r in results)
        row = {
            "rps": statistics.median(r["rps"] for r in results),
            "low": min(r["rps"] for r in results),
            "high": max(r["rps"] for r in results),
            "p50": statistics.median(r["p50"] for r in results),
            "p99": statistics.median(r["p99"] for r in results),
            "cpu": sum(r["cpu"] for r in results) / requests * 1e6,
            "switches": sum(r["switches"] for r in results) / requests,
            "failed": sum(r["failed"] for r in results),
            "errors": "; ".join(r["errors"] for r in results if r["errors"]),
        }
        summary[(workload, name)] = row
        rows.append(
            f"| {workload} | {name} | {row['rps']:,.0f} ({row['low']:,.0f}–{row['high']:,.0f}) | {row['p50']:.2f} | "
            f"{row['p99']:.2f} | {row['cpu']:.1f} | {row['switches']:.3f} | {row['failed']} |"
        )
    ratios = []
    for workload, (_, _, _, names) in WORKLOADS.items():
        for name in names:
            if not name.startswith("thread_per_core"):
                continue
            ours, theirs = summary[(workload, name)], summary[(workload, name.replace("thread_per_core", "shared"))]
            ratios.append(f"- {workload}{name.removeprefix('thread_per_core')}: thread_per_core / shared rps "
                          f"**{ours['rps'] / theirs['rps']:.2f}×**, CPU per request "
                          f"**{ours['cpu'] / theirs['cpu']:.2f}×**, context switches per request "
                          f"{ours['switches'] / theirs['switches']:.2f}×")
    errors = [f"{w} / {n}: {r['errors']}" for (w, n), r in summary.items() if r["errors"]]
    lines = [
        START,
        "## Runtime shape",
        "",
        f"`bench/runtime_shape.py`, {time.strftime('%Y-%m-%d %H:%M')}, {args.rounds} interleaved rounds of "
        f"{args.seconds:.0f} s per server and workload (wrk -t2; hit and health 64 connections, miss 16), "
        "four servers of one binary running side by side: `server.runtime` = `thread_per_core` (what "
        "`auto`, the default, picks while L1 is on: a single-threaded runtime per core, each accepting and serving its own connections; "
        "database and Redis work on the shared runtime) or `shared` (every connection on the "
        "work-stealing runtime), each with L1 on and off. *hit*: the typical query, every request a "
        "cache hit; *health*: `/health/live`; *miss*: every request a never-seen query (lua/cold.lua), "
        "computed by PostgreSQL. rps, p50, p99: medians over the rounds (min–max beside rps); CPU "
        "(utime + stime of all the server's threads) and context switches: totals over all rounds / "
        "requests. wrk and the servers share the machine's 2 CPUs.",
        "",
        "| workload | server | rps (min–max) | p50 ms | p99 ms | µs CPU/req | ctx sw/req | non-2xx |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        *ratios,
        *([""] + [f"- socket errors: {e}" for e in errors] if errors else []),
        END,
    ]
    publish("\n".join(lines), args.results, START, END)


if __name__ == "__main__":
    main()
