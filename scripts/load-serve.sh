#!/usr/bin/env bash
# CPU and RSS of `callplane serve` while sipp holds 100 concurrent ~31 s calls with audio.
#
# Loopback only, every process under `timeout`. Takes about 35 s after the build.
# Usage: scripts/load-serve.sh            (env: CALLS=100 RATE=50 SIP_PORT=5390 SIPP_PORT=5391)
#
# sipp plays the Debian g711a.pcap (PCMA, 30 ms packets, ~33 packets/s) four times per call
# (tests/fixtures/sipp/load_uac_pcap.xml); serve answers with the offered codec (PCMA) and, with
# no script, sends its own RTP back and waits for the caller's BYE.
set -euo pipefail
cd "$(dirname "$0")/.."

CALLS=${CALLS:-100}
RATE=${RATE:-50}
SIP_PORT=${SIP_PORT:-5390}
SIPP_PORT=${SIPP_PORT:-5391}
target=${CARGO_TARGET_DIR:-target}

cargo build --release --bin callplane >&2
bin="$target/release/callplane"
work=$(mktemp -d)
serve_pid=""
sipp_pid=""
cleanup() {
  [ -n "$sipp_pid" ] && kill "$sipp_pid" 2>/dev/null || true
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# `timeout` forks: serve is its child, found with pgrep -P.
timeout 150 "$bin" serve --sip "127.0.0.1:$SIP_PORT" --max-calls $((CALLS * 2)) \
  >"$work/serve.jsonl" 2>"$work/serve.log" &
timeout_pid=$!
for _ in $(seq 100); do
  grep -q '"serve.listening"' "$work/serve.jsonl" 2>/dev/null && break
  sleep 0.1
done
grep -q '"serve.listening"' "$work/serve.jsonl" || { echo "serve did not start" >&2; cat "$work/serve.log" >&2; exit 1; }
serve_pid=$(pgrep -P "$timeout_pid" -x callplane)

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$serve_pid/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$serve_pid/status"; }
live_calls() {
  local created ended
  created=$(grep -c '"call.created"' "$work/serve.jsonl" || true)
  ended=$(grep -c -E '"call\.(completed|failed)"' "$work/serve.jsonl" || true)
  echo $((created - ended))
}
idle_rss=$(rss_kb)

(cd "$work" && exec timeout 120 sipp -sf "$OLDPWD/tests/fixtures/sipp/load_uac_pcap.xml" \
  -i 127.0.0.1 -mi 127.0.0.1 -p "$SIPP_PORT" -l "$CALLS" -m "$CALLS" -r "$RATE" \
  -timeout 100s -nostdin -trace_stat -trace_err "127.0.0.1:$SIP_PORT" >/dev/null 2>&1) &
sipp_pid=$!

# One sample a second: CPU ticks used since the last sample, RSS, live calls.
peak_calls=0 peak_rss=$idle_rss full_samples=0 full_ticks=0 full_rss_sum=0
prev=$(cpu_ticks)
while kill -0 "$sipp_pid" 2>/dev/null; do
  sleep 1
  kill -0 "$serve_pid" 2>/dev/null || { echo "serve died" >&2; exit 1; }
  now=$(cpu_ticks); rss=$(rss_kb); live=$(live_calls)
  delta=$((now - prev)); prev=$now
  [ "$live" -gt "$peak_calls" ] && peak_calls=$live
  [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
  # "While 100 calls are up": only samples with every call live count for CPU and RSS.
  if [ "$live" -ge "$CALLS" ]; then
    full_samples=$((full_samples + 1)); full_ticks=$((full_ticks + delta))
    full_rss_sum=$((full_rss_sum + rss))
  fi
  printf 'live=%3d cpu=%3d%% rss=%d kB\n' "$live" $((delta * 100 / hz)) "$rss" >&2
done
sipp_rc=0; wait "$sipp_pid" || sipp_rc=$?; sipp_pid=""
completed=$(grep -c '"call.completed"' "$work/serve.jsonl" || true)
failed=$(grep -c '"call.failed"' "$work/serve.jsonl" || true)
rtp_in=$(grep -c '"media.first_packet_in"' "$work/serve.jsonl" || true)
rtp_out=$(grep -c '"media.first_packet_out"' "$work/serve.jsonl" || true)
kill -TERM "$serve_pid"; wait "$timeout_pid" || true; serve_pid=""

if [ "$full_samples" -eq 0 ]; then
  echo "never had $CALLS calls up at once (peak $peak_calls)" >&2; exit 1
fi
awk -v calls="$CALLS" -v peak="$peak_calls" -v n="$full_samples" -v ticks="$full_ticks" \
  -v hz="$hz" -v rsssum="$full_rss_sum" -v peakrss="$peak_rss" -v idle="$idle_rss" \
  -v sipp_rc="$sipp_rc" -v done="$completed" -v failed="$failed" \
  -v rtp_in="$rtp_in" -v rtp_out="$rtp_out" 'BEGIN {
  cpu = ticks * 100 / hz / n; avgrss = rsssum / n
  printf "sipp exit code:            %d (calls completed %d, failed %d at serve)\n", sipp_rc, done, failed
  printf "calls with RTP in / out:   %d / %d\n", rtp_in, rtp_out
  printf "peak concurrent calls:     %d (samples with %d up: %d s)\n", peak, calls, n
  printf "CPU while %d calls up:    %.1f %% of one core (%.2f %% per call)\n", calls, cpu, cpu / calls
  printf "RSS idle / avg / peak:     %.1f / %.1f / %.1f MiB\n", idle / 1024, avgrss / 1024, peakrss / 1024
  printf "RSS per call (avg - idle): %.1f KiB\n", (avgrss - idle) / calls
}'
