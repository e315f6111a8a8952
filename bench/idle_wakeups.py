#!/usr/bin/env python3
"""Context switches per second of an idle server, per binary.

    bench/idle_wakeups.py LABEL=BINARY[:CONFIG_DIR] ... [--seconds 10] [--results bench/RESULTS.md]

Each binary is started on a free port of 127.0.0.1 (the shared PostgreSQL
and Redis, a cache prefix of its own, rollups off), left alone for its
start-up plus 3 s (timers that only run while there is work get time to
stop), then the voluntary and involuntary context switches of all its
threads (/proc/PID/task/*/status) are read SECONDS apart. Every switch is a
wake-up: an idle server should have almost none. The table goes to stdout
and, with --results FILE, between the `idle:start/end` markers of that file.
"""

import argparse
import os
import subprocess
import sys
import time
import urllib.request

from bench import task_counters
from callgrind import free_port, publish, server_env, stop

START, END = "<!-- idle:start -->", "<!-- idle:end -->"


def switches(pid: int) -> int:
    """Voluntary + involuntary context switches of all PID's threads."""
    return sum(voluntary + involuntary for voluntary, involuntary, _ in task_counters(pid).values())


def measure(binary: str, config: str, seconds: float, database: str) -> float:
    port = free_port()
    env = server_env(port, database, config, f"bench-idle-{port}")
    server = subprocess.Popen([binary, "--config-dir", config], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    sys.exit(f"{binary} did not start")
                time.sleep(0.2)
        time.sleep(3)
        before = switches(server.pid)
        time.sleep(seconds)
        return (switches(server.pid) - before) / seconds
    finally:
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binaries", nargs="+", help="LABEL=BINARY[:CONFIG_DIR]")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--results", help="splice the table into this markdown file")
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/analytics_bench")
    args = parser.parse_args()
    rows = []
    for spec in args.binaries:
        label, _, path = spec.partition("=")
        binary, _, config = path.partition(":")
        config = os.path.abspath(config or "config")
        rate = measure(os.path.abspath(binary), config, args.seconds, args.database)
        print(f"{label}: {rate:.1f} context switches/s idle", file=sys.stderr)
        rows.append((label, rate))
    lines = [
        START,
        "## Idle wake-ups",
        "",
        f"`bench/idle_wakeups.py`, {time.strftime('%Y-%m-%d')}: context switches per second of all the "
        f"server's threads while nobody calls it ({args.seconds:.0f} s, after start-up + 3 s).",
        "",
        "| binary | context switches / s |",
        "| --- | ---: |",
        *(f"| {label} | {rate:.1f} |" for label, rate in rows),
        END,
    ]
    publish("\n".join(lines), args.results, START, END)


if __name__ == "__main__":
    main()
