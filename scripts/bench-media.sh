#!/usr/bin/env bash
# Media-plane benchmark (issue #12): CPU µs per RTP packet and RSS per call of `callplane serve`
# (recording off and on) against the floor echo (benches/floor_echo.rs), sipp holding N = 100 and
# 300 concurrent calls with audio, interleaved in one run (serve, floor, serve+rec, floor per N).
#
# Loopback only; every process runs under `timeout`, everything started is killed on exit.
# Takes about 45 s per scenario after the build (8 scenarios by default: ~6 min).
#
# Usage: scripts/bench-media.sh [bench_media.py options]
#   e.g. scripts/bench-media.sh --calls 100 300 --json /tmp/bench-media.json
#        scripts/bench-media.sh --calls 300 --only serve --keep      (one scenario, e.g. to profile)
# Env: SKIP_BUILD=1 reuses the binaries of the last build (CARGO_TARGET_DIR, default target/).
# docs/benchmarks.md ("Media plane") describes the method and the figures.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
command -v sipp >/dev/null || { echo "sipp is not installed" >&2; exit 1; }
[ -r /usr/share/sip-tester/g711a.pcap ] || { echo "no /usr/share/sip-tester/g711a.pcap (sip-tester)" >&2; exit 1; }

floor=$(scripts/build-bench.sh)

py_pid=""
cleanup() {
  # The harness kills what it started; this covers a wrapper killed by a signal.
  [ -n "$py_pid" ] && kill "$py_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

timeout --kill-after=10 3600 python3 benches/bench_media.py \
  --callplane "$target/release/callplane" --floor "$floor" "$@" &
py_pid=$!
wait "$py_pid"
