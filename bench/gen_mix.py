#!/usr/bin/env python3
"""Generate the `mix` workload: N distinct, realistic analytics queries.

Deterministic: the same --seed and --anchor always give the same list, in the
same order. The order is the popularity rank used by bench/lua/mix.lua, which
picks query i with probability proportional to 1 / i^s (Zipf-like, s ~ 1.1),
so the first entries are the dashboard queries everyone runs and the tail is
the long tail of ad-hoc exploration.

Output: a Lua file `return { [[json]], ... }` for wrk, plus (optionally) a
JSON copy for humans and for other tools.

    python3 bench/gen_mix.py --out bench/out/mix_queries.lua --json bench/out/mix_queries.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys

METRICS = [
    "revenue",
    "sales_count",
    "average_ticket",
    "discount_total",
    "cancelled_count",
    "cancellation_rate",
    "avg_delivery_seconds",
    "unique_customers",
]
# Relative popularity of each metric in dashboards.
METRIC_WEIGHTS = [10, 8, 7, 2, 2, 2, 2, 1]

# Dimensions the brief asks for; `day` only makes sense for short ranges,
# `month` for long ones.
DIMENSIONS = ["channel", "store", "city", "state", "day", "month", "hour", "weekday"]
DIMENSION_WEIGHTS = [10, 6, 4, 4, 6, 4, 3, 3]

STATES = ["SP", "RJ", "MG", "PR", "RS", "SC", "BA", "PE", "CE", "DF", "GO", "AM"]
STATE_WEIGHTS = [12, 6, 4, 3, 3, 2, 3, 3, 2, 3, 2, 1]
STORE_IDS = list(range(1, 51))
CHANNEL_IDS = list(range(1, 7))

TYPICAL = {
    "metrics": ["revenue", "average_ticket", "sales_count"],
    "dimensions": ["channel"],
    "date_range": {"start_date": "2026-10-01", "end_date": "2026-10-31"},
}


def month_bounds(year: int, month: int) -> tuple[dt.date, dt.date]:
    start = dt.date(year, month, 1)
    nxt = dt.date(year + (month == 12), month % 12 + 1, 1)
    return start, nxt - dt.timedelta(days=1)


class Generator:
    def __init__(self, seed: int, anchor: dt.date, years: int = 3):
        self.rng = random.Random(seed)
        self.anchor = anchor
        # The seed's window: the `years` years ending on the anchor day.
        self.first_day = anchor.replace(year=anchor.year - years) + dt.timedelta(days=1)

    def clamp(self, start: dt.date, end: dt.date) -> tuple[dt.date, dt.date]:
        start = max(start, self.first_day)
        end = min(end, self.anchor)
        return start, end

    def random_end(self, recent_bias: float = 0.6) -> dt.date:
        """An end day, usually recent (dashboards look at the latest data)."""
        span = (self.anchor - self.first_day).days
        if self.rng.random() < recent_bias:
            back = int(self.rng.expovariate(1 / 20))  # mostly the last few weeks
        else:
            back = self.rng.randrange(span)
        return self.anchor - dt.timedelta(days=min(back, span))

    def date_range(self) -> tuple[dt.date, dt.date]:
        kind = self.rng.choices(
            ["day", "week", "last7", "last30", "month", "quarter", "last90", "ytd", "year", "all"],
            weights=[6, 6, 10, 12, 16, 6, 6, 4, 3, 1],
        )[0]
        rng = self.rng
        if kind == "day":
            end = self.random_end()
            return end, end
        if kind == "week":
            end = self.random_end()
            start = end - dt.timedelta(days=end.weekday())  # Monday
            return self.clamp(start, start + dt.timedelta(days=6))
        if kind in ("last7", "last30", "last90"):
            days = {"last7": 7, "last30": 30, "last90": 90}[kind]
            end = self.random_end()
            return self.clamp(end - dt.timedelta(days=days - 1), end)
        if kind == "month":
            end = self.random_end()
            return self.clamp(*month_bounds(end.year, end.month))
        if kind == "quarter":
            end = self.random_end(0.3)
            q0 = (end.month - 1) // 3 * 3 + 1
            start, _ = month_bounds(end.year, q0)
            _, last = month_bounds(end.year, q0 + 2)
            return self.clamp(start, last)
        if kind == "ytd":
            end = self.random_end()
            return self.clamp(dt.date(end.year, 1, 1), end)
        if kind == "year":
            year = rng.choice([self.anchor.year - 2, self.anchor.year - 1, self.anchor.year])
            return self.clamp(dt.date(year, 1, 1), dt.date(year, 12, 31))
        return self.first_day, self.anchor

    def metrics(self) -> list[str]:
        count = self.rng.choices([1, 2, 3, 4], weights=[3, 4, 4, 2])[0]
        chosen: list[str] = []
        while len(chosen) < count:
            m = self.rng.choices(METRICS, weights=METRIC_WEIGHTS)[0]
            if m not in chosen:
                chosen.append(m)
        return chosen

    def dimensions(self, days: int) -> list[str]:
        count = self.rng.choices([0, 1, 2], weights=[2, 6, 2])[0]
        chosen: list[str] = []
        attempts = 0
        while len(chosen) < count and attempts < 50:
            attempts += 1
            d = self.rng.choices(DIMENSIONS, weights=DIMENSION_WEIGHTS)[0]
            if d in chosen:
                continue
            if d == "day" and days > 92:
                continue
            if d == "month" and days < 45:
                continue
            # Keep result sets dashboard-sized: no day x store (up to 4600 rows).
            if d in ("day", "store") and ({"day", "store"} & set(chosen)):
                continue
            chosen.append(d)
        return chosen

    def filters(self) -> dict:
        rng = self.rng
        out: dict = {}
        if rng.random() < 0.25:
            ids = sorted(rng.sample(CHANNEL_IDS, rng.choice([1, 1, 2, 3])))
            out["channel_id"] = {"eq": ids[0]} if len(ids) == 1 else {"in": ids}
        r = rng.random()
        if r < 0.12:
            out["store_id"] = {"eq": rng.choice(STORE_IDS)}
        elif r < 0.18:
            out["store_id"] = {"in": sorted(rng.sample(STORE_IDS, rng.randint(2, 6)))}
        elif r < 0.30:
            states = rng.choices(STATES, weights=STATE_WEIGHTS, k=rng.choice([1, 1, 2]))
            states = sorted(set(states))
            out["state"] = {"eq": states[0]} if len(states) == 1 else {"in": states}
        return out

    def query(self) -> dict:
        start, end = self.date_range()
        days = (end - start).days + 1
        q: dict = {"metrics": self.metrics()}
        dims = self.dimensions(days)
        if dims:
            q["dimensions"] = dims
        filters = self.filters()
        if filters:
            q["filters"] = filters
        q["date_range"] = {"start_date": start.isoformat(), "end_date": end.isoformat()}
        # Top-N by revenue now and then, like a "best stores" widget.
        if dims and "revenue" in q["metrics"] and self.rng.random() < 0.15:
            q["order_by"] = [{"field": "revenue", "direction": "desc"}]
            q["limit"] = 10
        return q


def canonical(q: dict) -> str:
    """Identity for de-duplication (order of metrics does not matter to the API)."""
    c = dict(q)
    c["metrics"] = sorted(q["metrics"])
    return json.dumps(c, sort_keys=True, separators=(",", ":"))


def generate(n: int, seed: int, anchor: dt.date) -> list[dict]:
    gen = Generator(seed, anchor)
    seen: set[str] = set()
    queries: list[dict] = []

    def add(q: dict) -> None:
        key = canonical(q)
        if key not in seen:
            seen.add(key)
            queries.append(q)

    add(TYPICAL)  # rank 1: the dashboard's landing query
    guard = 0
    while len(queries) < n:
        guard += 1
        if guard > n * 100:
            raise SystemExit(f"gen_mix: could only generate {len(queries)} distinct queries")
        add(gen.query())
    return queries


def lua_string(s: str) -> str:
    level = "=="
    while f"]{level}]" in s:
        level += "="
    return f"[{level}[{s}]{level}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20261101)
    ap.add_argument("--anchor", default="2026-11-01", help="last day of the seeded data (YYYY-MM-DD)")
    ap.add_argument("--out", required=True, help="Lua file for wrk")
    ap.add_argument("--json", help="optional JSON copy (one query per line)")
    args = ap.parse_args()

    anchor = dt.date.fromisoformat(args.anchor)
    queries = generate(args.count, args.seed, anchor)
    bodies = [json.dumps(q, separators=(",", ":"), ensure_ascii=True) for q in queries]

    with open(args.out, "w", encoding="ascii") as f:
        f.write(f"-- generated by bench/gen_mix.py --count {args.count} --seed {args.seed} --anchor {args.anchor}\n")
        f.write("-- index = popularity rank (mix.lua draws rank i with weight 1/i^s)\n")
        f.write("return {\n")
        for body in bodies:
            f.write(f"  {lua_string(body)},\n")
        f.write("}\n")
    if args.json:
        with open(args.json, "w", encoding="ascii") as f:
            for body in bodies:
                f.write(body + "\n")
    print(f"gen_mix: wrote {len(bodies)} distinct queries to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
