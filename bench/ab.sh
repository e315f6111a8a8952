#!/usr/bin/env bash
# A/B benchmark: a base revision against the working tree's HEAD, measured in
# one run, interleaved (base, head, base, head, ...) so that drift on a shared
# machine hits both sides alike; reports medians and head/base ratios.
#
#   bench/ab.sh BASE_REV [scenario...]     default scenarios: hot-l1 hot-redis mix
#
# Knobs: AB_ROUNDS (2) plus every bench/run.sh knob (BENCH_SECONDS, ...).
# The base is built from a git worktree into target/bench-base (cached per
# commit); HEAD is built by run.sh into target/bench. Raw results go to
# bench/out/ab/<run>/; the table is written to bench/ab.md and spliced into
# bench/RESULTS.md between the `ab:start` / `ab:end` markers.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
log() { printf '[ab %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

(($# >= 1)) || die "usage: bench/ab.sh BASE_REV [scenario...]"
BASE_REV="$1"
shift
SCENARIOS=("$@")
((${#SCENARIOS[@]} > 0)) || SCENARIOS=(hot-l1 hot-redis mix)
ROUNDS="${AB_ROUNDS:-2}"

BASE_COMMIT="$(git -C "$ROOT" rev-parse --short "$BASE_REV^{commit}")" || die "unknown revision $BASE_REV"
HEAD_COMMIT="$(git -C "$ROOT" rev-parse --short HEAD)"
if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]]; then
  HEAD_COMMIT="$HEAD_COMMIT+dirty"
fi
BASE_SRC="$ROOT/target/bench-base-src"
BASE_TARGET="$ROOT/target/bench-base"
BASE_BIN="$BASE_TARGET/$BASE_COMMIT/release/analytics-api"

if [[ ! -x "$BASE_BIN" ]]; then
  log "building base $BASE_COMMIT into $BASE_TARGET/$BASE_COMMIT"
  git -C "$ROOT" worktree remove --force "$BASE_SRC" >/dev/null 2>&1 || rm -rf "$BASE_SRC"
  git -C "$ROOT" worktree add --detach "$BASE_SRC" "$BASE_COMMIT" >/dev/null
  (cd "$BASE_SRC" && CARGO_TARGET_DIR="$BASE_TARGET/$BASE_COMMIT" cargo build --release --locked) >&2
  git -C "$ROOT" worktree remove --force "$BASE_SRC" >/dev/null
fi

RUN="$(date -u +%Y%m%dT%H%M%SZ)"
AB_OUT="$ROOT/bench/out/ab/$RUN"
mkdir -p "$AB_OUT"
log "building HEAD ($HEAD_COMMIT) and preparing the database"
BENCH_OUT="$AB_OUT/setup" BENCH_RESULTS_MD="$AB_OUT/setup.md" "$BENCH_DIR/run.sh" setup
HEAD_BIN="$ROOT/target/bench/release/analytics-api"

for round in $(seq 1 "$ROUNDS"); do
  for side in base head; do
    if [[ "$side" == base ]]; then bin="$BASE_BIN" commit="$BASE_COMMIT"; else bin="$HEAD_BIN" commit="$HEAD_COMMIT"; fi
    log "round $round/$ROUNDS: $side ($commit): ${SCENARIOS[*]}"
    BENCH_BIN="$bin" BENCH_BIN_COMMIT="$commit" BENCH_OUT="$AB_OUT/$side-$round" \
      BENCH_RESULTS_MD="$AB_OUT/$side-$round.md" "$BENCH_DIR/run.sh" "${SCENARIOS[@]}"
  done
done

python3 "$BENCH_DIR/bench.py" ab-report "$AB_OUT" "$BASE_COMMIT" "$HEAD_COMMIT" "${SCENARIOS[@]}"
