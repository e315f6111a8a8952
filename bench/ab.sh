#!/usr/bin/env bash
# A/B benchmark: a base revision against the working tree's HEAD, measured in
# one run, interleaved (base, head, base, head, ...) so that drift on a shared
# machine hits both sides alike; reports medians and head/base ratios.
#
#   bench/ab.sh BASE_REV [scenario...]     default scenarios: hot-l1 hot-redis mix
#
# Knobs: AB_ROUNDS (2), AB_HEAD (the revision to measure against the base;
# HEAD by default) plus every bench/run.sh knob (BENCH_SECONDS, ...).
# Both sides are built from clean git worktrees into target/bench-base/<commit>
# (cached per commit; uncommitted changes are not measured). Raw results go to
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
HEAD_COMMIT="$(git -C "$ROOT" rev-parse --short "${AB_HEAD:-HEAD}^{commit}")" || die "unknown revision ${AB_HEAD:-HEAD}"
BUILD_SRC="$ROOT/target/ab-src"
BUILD_TARGET="$ROOT/target/bench-base"

# build_commit COMMIT: the release binary of COMMIT, built once from a clean
# worktree (never from the working tree, which may be mid-edit), cached per commit.
build_commit() {
  local commit="$1" bin="$BUILD_TARGET/$1/release/analytics-api"
  if [[ ! -x "$bin" ]]; then
    log "building $commit into $BUILD_TARGET/$commit"
    git -C "$ROOT" worktree remove --force "$BUILD_SRC" >/dev/null 2>&1 || rm -rf "$BUILD_SRC"
    git -C "$ROOT" worktree add --detach "$BUILD_SRC" "$commit" >/dev/null
    (cd "$BUILD_SRC" && CARGO_TARGET_DIR="$BUILD_TARGET/$commit" cargo build --release --locked) >&2
    git -C "$ROOT" worktree remove --force "$BUILD_SRC" >/dev/null
  fi
  # The binary runs with the configuration (and model) of its own commit.
  rm -rf "$BUILD_TARGET/$commit/config"
  git -C "$ROOT" archive "$commit" config | tar -x -C "$BUILD_TARGET/$commit"
  printf '%s\n' "$bin"
}

BASE_BIN="$(build_commit "$BASE_COMMIT")"
HEAD_BIN="$(build_commit "$HEAD_COMMIT")"

RUN="$(date -u +%Y%m%dT%H%M%SZ)"
AB_OUT="$ROOT/bench/out/ab/$RUN"
mkdir -p "$AB_OUT"
log "preparing the database and the mix"
BENCH_BIN="$HEAD_BIN" BENCH_CONFIG_DIR="$(dirname "$(dirname "$HEAD_BIN")")/config" BENCH_OUT="$AB_OUT/setup" BENCH_RESULTS_MD="$AB_OUT/setup.md" "$BENCH_DIR/run.sh" setup

for round in $(seq 1 "$ROUNDS"); do
  for side in base head; do
    if [[ "$side" == base ]]; then bin="$BASE_BIN" commit="$BASE_COMMIT"; else bin="$HEAD_BIN" commit="$HEAD_COMMIT"; fi
    log "round $round/$ROUNDS: $side ($commit): ${SCENARIOS[*]}"
    BENCH_BIN="$bin" BENCH_BIN_COMMIT="$commit" BENCH_CONFIG_DIR="$(dirname "$(dirname "$bin")")/config" \
      BENCH_OUT="$AB_OUT/$side-$round" \
      BENCH_RESULTS_MD="$AB_OUT/$side-$round.md" "$BENCH_DIR/run.sh" "${SCENARIOS[@]}"
  done
done

python3 "$BENCH_DIR/bench.py" ab-report "$AB_OUT" "$BASE_COMMIT" "$HEAD_COMMIT" "${SCENARIOS[@]}"
