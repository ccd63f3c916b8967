#!/usr/bin/env bash
# B1, media capacity (issue #13): the most concurrent calls `callplane serve` (answer, stereo
# recording, a played prompt) and the floor echo (benches/floor_echo.rs) each carry on one core
# with loss < 0.1 %, mean jitter <= 1 ms and RTT p99 <= 5 ms, `callplane loadgen` on the other
# core as the generator (its media worker at SCHED_FIFO through chrt: run as root). Steps of
# 250 calls from 1000, interleaved (serve, floor); about 4 minutes after the build.
#
# Loopback only; every process runs under `timeout`, everything started is killed on exit.
#
# Usage: scripts/bench-capacity.sh [bench_capacity.py options]
#   e.g. scripts/bench-capacity.sh --start 500 --step 500 --max 2500 --json /tmp/b1.json
# Env: SKIP_BUILD=1 reuses the binaries of the last build (CARGO_TARGET_DIR, default target/).
# docs/benchmarks.md ("B1: media capacity") describes the method and the figures.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
command -v sipp >/dev/null || { echo "sipp is not installed" >&2; exit 1; }
command -v chrt >/dev/null || { echo "chrt is not installed (util-linux)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs" >&2; exit 1; }

floor=$(scripts/build-bench.sh)
# In the foreground: Ctrl-C reaches the harness, which kills what it started.
timeout --foreground --kill-after=10 1800 python3 benches/bench_capacity.py \
  --callplane "$target/release/callplane" --floor "$floor" "$@"
