#!/usr/bin/env bash
# The load generator's benchmark suite (issue #13) in one job: B7 (generator capacity), B1 (media
# capacity of serve and of the floor echo, one core each), B2/B6 (serve against the floor echo
# and rtpengine in userspace at N = 500, recording on and off, loadgen as the generator) and B4
# (calls per second against a sipp UAS), then every ratio against its target. About 11 minutes
# after the build (docs/benchmarks.md).
#
# Loopback only; every process runs under `timeout`, everything started is killed on exit.
# Env: SKIP_BUILD=1 reuses the binaries of the last build (CARGO_TARGET_DIR, default target/).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
command -v sipp >/dev/null || { echo "sipp is not installed" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset is not installed (util-linux)" >&2; exit 1; }
[ -r /usr/share/sip-tester/g711a.pcap ] || { echo "no /usr/share/sip-tester/g711a.pcap (sip-tester)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs" >&2; exit 1; }
for tool in rtpengine kamailio chrt; do
  command -v $tool >/dev/null || [ -x /usr/sbin/$tool ] || { echo "$tool is not installed" >&2; exit 1; }
done

floor=$(scripts/build-bench.sh)
timeout --kill-after=10 1800 python3 benches/bench_suite.py \
  --callplane "$target/release/callplane" --floor "$floor" "$@"
