#!/usr/bin/env python3
"""Instructions per request on the hit path, counted by valgrind's callgrind.

Counts, not seconds: the same binary and requests give the same number
whatever else the machine is doing, so two revisions compare exactly even
on a loaded machine (wall-clock benchmarks there swing by 15-30%).

    bench/callgrind.py LABEL=BINARY[:CONFIG_DIR] ...   [--requests N]

For each binary, and for L1 on and off: a server under callgrind on a free
port (the bench database, the shared Redis under its own key prefix), one
warm-up request per target, counters zeroed, N keep-alive requests, counters
dumped. Targets: the typical dashboard query as a cache hit (L1, or Redis
with L1 off) and `/health/live` (the HTTP stack alone). The table goes to
stdout and, with --results FILE, between the `callgrind:start/end` markers of
that file (bench/RESULTS.md).

With --gzip, instead: a large answer (store x channel, ~35 KB of JSON) as
an L1 hit, asked with `Accept-Encoding: gzip` and with `identity`, per
binary; its table goes between the `callgrind-gzip:start/end` markers.

Binaries built by bench/ab.sh live in target/bench-base/<commit>/release/,
with their config in target/bench-base/<commit>/config.
"""

import argparse
import glob
import gzip
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = (
    '{"metrics":["revenue","average_ticket","sales_count"],"dimensions":["channel"],'
    '"date_range":{"start_date":"2026-10-01","end_date":"2026-10-31"}}'
)
LARGE_BODY = (
    '{"metrics":["revenue","average_ticket","sales_count"],"dimensions":["store","channel"],'
    '"date_range":{"start_date":"2026-10-01","end_date":"2026-10-31"}}'
)
START, END = "<!-- callgrind:start -->", "<!-- callgrind:end -->"
GZIP_START, GZIP_END = "<!-- callgrind-gzip:start -->", "<!-- callgrind-gzip:end -->"
# valgrind names its control channel after $USER and $HOST; the server's
# HOST is its bind address, so callgrind_control runs with the same two.
CONTROL_ENV = {**os.environ, "USER": os.environ.get("USER", "root"), "HOST": "127.0.0.1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(conn: http.client.HTTPConnection, target: str) -> None:
    if target == "health":
        conn.request("GET", "/health/live")
    elif target.startswith("large-"):
        encoding = target.removeprefix("large-")
        headers = {"Content-Type": "application/json", "Accept-Encoding": encoding}
        conn.request("POST", "/analytics/query", body=LARGE_BODY, headers=headers)
    else:
        conn.request("POST", "/analytics/query", body=BODY, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        sys.exit(f"{target}: HTTP {response.status}: {body[:300]!r}")
    if response.getheader("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    if target != "health":
        tier = json.loads(body)["metadata"]["cache_tier"]
        expected = "redis" if target == "hit-redis" else "l1"
        if tier != expected:
            sys.exit(f"{target}: served from {tier!r}, not {expected}")


def dumps(out_file: str) -> dict:
    return {path: os.path.getmtime(path) for path in glob.glob(out_file + "*")}


def dump_ir(pid: int, out_file: str, nudge) -> int:
    """Asks callgrind for a dump and returns its Ir total. The command is
    carried out when the server next runs (an idle server sleeps in epoll),
    so `nudge` sends it a request; the dump happens as that request starts."""
    before = dumps(out_file)
    done = subprocess.run(["callgrind_control", "--dump", str(pid)], capture_output=True, text=True, env=CONTROL_ENV)
    if "OK" not in done.stdout:
        sys.exit(f"callgrind_control --dump {pid}: {done.stdout} {done.stderr}")
    nudge()
    deadline = time.time() + 60
    while time.time() < deadline:
        for path, mtime in dumps(out_file).items():
            if before.get(path) == mtime:
                continue
            with open(path) as f:
                text = f.read()
            match = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            if match and text.endswith("\n"):
                return int(match.group(1))
        time.sleep(0.2)
    sys.exit(f"no new dump of {out_file}")


def server_env(port: int, database: str, config: str, prefix: str) -> dict:
    """A bench server's whole environment: on 127.0.0.1:`port`, the bench
    database, the shared Redis under its own cache `prefix`, rollups off."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "APP_ENV": "bench",
        "DATABASE_URL": database,
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"),
        "ADMIN_TOKEN": "bench",
        "HOST": "127.0.0.1",
        "USER": CONTROL_ENV["USER"],
        "PORT": str(port),
        "RUST_LOG": "warn",
        "APP__DATABASE__SEED_DEMO_ON_EMPTY": "false",
        "APP__CACHE__PREFIX": prefix,
        "APP__ROLLUPS__ENABLED": "false",
        "MODEL_PATH": os.path.join(config, "model.toml"),
    }


def measure(binary: str, config: str, l1: bool, requests: int, database: str, large: bool = False) -> dict:
    port = free_port()
    work = tempfile.mkdtemp(prefix="callgrind-")
    out_file = os.path.join(work, "callgrind.out")
    env = server_env(port, database, config, f"bench-cg-{port}")
    env["APP__CACHE__L1_ENABLED"] = "true" if l1 else "false"
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", binary, "--config-dir", config],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(work, "server.log"), "w"),
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                request(conn, "health")
                break
            except (ConnectionError, OSError):
                if server.poll() is not None or time.time() > deadline:
                    log = open(os.path.join(work, "server.log")).read()
                    errors = [line for line in log.splitlines() if not line.startswith("==")]
                    sys.exit(f"{binary} did not start: {' | '.join(errors[-3:])}")
                time.sleep(0.5)
        hit = "hit-l1" if l1 else "hit-redis"
        body = LARGE_BODY if large else BODY
        conn.request("POST", "/analytics/query", body=body, headers={"Content-Type": "application/json"})
        conn.getresponse().read()  # the miss that fills the cache
        results = {}
        for target in ("large-gzip", "large-identity") if large else (hit, "health"):
            request(conn, target)
            # Zeroing, like dumping, happens when the server next runs: as
            # the first of the requests starts, so all of them are counted.
            subprocess.run(
                ["callgrind_control", "--zero", str(server.pid)], check=True, capture_output=True, env=CONTROL_ENV
            )
            for _ in range(requests):
                request(conn, target)
            results[target] = dump_ir(server.pid, out_file, lambda: request(conn, target)) / requests
        return results
    finally:
        stop(server)
        # The profiles are about 1 MB a target; the numbers are all we keep.
        shutil.rmtree(work, ignore_errors=True)


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 60 s."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def splice(path: str, start: str, end: str, table: str) -> None:
    """Puts `table` (which begins with `start` and ends with `end`) in place
    of the text between those markers in the file at `path`, or at its end."""
    text = open(path).read()
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: table, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + table + "\n"
    open(path, "w").write(text)


def publish(table: str, results: str, start: str, end: str) -> None:
    """Prints `table` and, when `results` names a file, splices it there."""
    print(table)
    if results:
        splice(results, start, end, table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binaries", nargs="+", help="LABEL=BINARY[:CONFIG_DIR]")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--results", help="splice the table into this markdown file")
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/analytics_bench")
    parser.add_argument("--gzip", action="store_true", help="the large answer, gzip vs identity (see above)")
    args = parser.parse_args()

    binaries = []
    for spec in args.binaries:
        label, _, path = spec.partition("=")
        binary, _, config = path.partition(":")
        binary = os.path.abspath(binary)
        config = os.path.abspath(config or os.path.join(os.path.dirname(os.path.dirname(binary)), "config"))
        binaries.append((label, binary, config))
    table = gzip_table(binaries, args) if args.gzip else hit_table(binaries, args)
    publish(table, args.results, *((GZIP_START, GZIP_END) if args.gzip else (START, END)))


def hit_table(binaries: list, args) -> str:
    rows = []
    for label, binary, config in binaries:
        on = measure(binary, config, True, args.requests, args.database)
        off = measure(binary, config, False, args.requests, args.database)
        rows.append((label, on["hit-l1"], off["hit-redis"], on["health"]))
        print(f"{label}: L1 hit {on['hit-l1']:,.0f} Ir, Redis hit {off['hit-redis']:,.0f} Ir, "
              f"/health/live {on['health']:,.0f} Ir", file=sys.stderr)

    base = rows[0]
    lines = [
        START,
        "## Instructions per request (callgrind)",
        "",
        f"`bench/callgrind.py`, {time.strftime('%Y-%m-%d')}: instructions the server executes per request "
        f"(valgrind callgrind, {args.requests} keep-alive requests per target after a warm-up; counts do not "
        "drift with the machine's load). Ratios are to the first row.",
        "",
        "| binary | L1 hit | Redis hit (L1 off) | L1 / Redis | /health/live | hit minus /health/live | L1 hit vs first |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, l1, redis, health in rows:
        lines.append(
            f"| {label} | {l1:,.0f} | {redis:,.0f} | {l1 / redis:.2f} | {health:,.0f} | {l1 - health:,.0f} "
            f"| {l1 / base[1]:.3f} |"
        )
    lines.append(END)
    return "\n".join(lines)


def gzip_table(binaries: list, args) -> str:
    rows = []
    for label, binary, config in binaries:
        on = measure(binary, config, True, args.requests, args.database, large=True)
        rows.append((label, on["large-gzip"], on["large-identity"]))
        print(f"{label}: gzip {on['large-gzip']:,.0f} Ir, identity {on['large-identity']:,.0f} Ir", file=sys.stderr)
    base = rows[0]
    lines = [
        GZIP_START,
        "## Compressed hits (callgrind)",
        "",
        f"`bench/callgrind.py --gzip`, {time.strftime('%Y-%m-%d')}: instructions per L1 hit of a large answer "
        "(store x channel over a month: ~35 KB of JSON, ~5 KB gzipped), asked with `Accept-Encoding: gzip` "
        f"(a browser) and with `identity`; {args.requests} keep-alive requests each after a warm-up. "
        "Ratios are to the first row.",
        "",
        "| binary | gzip hit | identity hit | gzip / identity | gzip hit vs first |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, gz, identity in rows:
        lines.append(f"| {label} | {gz:,.0f} | {identity:,.0f} | {gz / identity:.2f} | {gz / base[1]:.3f} |")
    lines.append(GZIP_END)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
