#!/usr/bin/env bash
# Generator capacity (issue #13, B7): CPU µs per RTP packet sent and send lateness of
# `callplane loadgen` against sipp's pcap player, each pinned to CPU 0 with the callee (a sipp
# UAS that drops the media) on CPU 1, interleaved in one run (sipp, loadgen at each N, sipp).
#
# Loopback only; every process runs under `timeout`, everything started is killed on exit.
# About 30 s per scenario after the build (5 scenarios by default: ~3 min).
#
# Usage: scripts/bench-loadgen.sh [bench_loadgen.py options]
#   e.g. scripts/bench-loadgen.sh --calls 500 1000 2000 --sipp-calls 200 --json /tmp/b7.json
# Env: SKIP_BUILD=1 reuses the binary of the last build (CARGO_TARGET_DIR, default target/).
# docs/benchmarks.md ("Generator capacity") describes the method and the figures.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
command -v sipp >/dev/null || { echo "sipp is not installed" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset is not installed (util-linux)" >&2; exit 1; }
[ -r /usr/share/sip-tester/g711a.pcap ] || { echo "no /usr/share/sip-tester/g711a.pcap (sip-tester)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (the generator on one, the callee on the other)" >&2; exit 1; }

if [ "${SKIP_BUILD:-0}" != 1 ] || [ ! -x "$target/release/callplane" ]; then
  cargo build --release --locked --bin callplane
fi

timeout --kill-after=10 3600 python3 benches/bench_loadgen.py --callplane "$target/release/callplane" "$@"
