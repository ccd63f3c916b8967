#!/usr/bin/env python3
"""The load generator's benchmark suite (#13) in one job: runs B7, B2/B6 and B4 one after the
other (each interleaves its own scenarios) and prints every ratio against its target.

  B7  generator capacity: bench_loadgen.py (loadgen against sipp's pcap player, pinned)
  B1  media capacity: bench_capacity.py (the most calls serve, serve with --media-priority and
      the floor carry with loss < 0.1 %, mean jitter <= 1 ms and RTT p99 <= 5 ms, one core each,
      loadgen as the generator)
  B2  serve's CPU per packet against the floor echo and against rtpengine in userspace at N = 500
      (bench_media.py --rtpengine, loadgen as the generator); B6 recording on against off at the
      same N
  B4  calls per second: bench_cps.py (serve against a sipp UAS, stepped)

Run through scripts/bench-suite.sh (it builds the release binaries once). Standard library only.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def settle():
    """Writes back what earlier stages left dirty (the recordings of B2/B6 are about 0.7 GB) and
    waits until the kernel holds less than 64 MB dirty (bounded): a stage must not pay for the
    previous one's writeback (SQLite's fsyncs in B4 would)."""
    subprocess.run(["sync"], timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open("/proc/meminfo") as f:
            kb = {l.split(":")[0]: int(l.split()[1]) for l in f if l.startswith(("Dirty:", "Writeback:"))}
        if sum(kb.values()) < 64 * 1024:
            return
        time.sleep(0.5)


def run(cmd, what, limit_s):
    settle()
    print(f"== {what}: {' '.join(map(str, cmd))}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    r = subprocess.run(["timeout", "--kill-after=10", str(limit_s), *map(str, cmd)])
    if r.returncode != 0:
        sys.exit(f"{what} failed ({r.returncode})")
    return time.monotonic() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--callplane", required=True)
    p.add_argument("--floor", required=True)
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench-suite-")
    start = time.monotonic()
    b7, b1, b2, b4 = (os.path.join(work, f) for f in ("b7.json", "b1.json", "b2.json", "b4.json"))
    took = {}
    took["B7"] = run([sys.executable, os.path.join(HERE, "bench_loadgen.py"), "--callplane", a.callplane,
                      "--calls", 2000, "--sipp-calls", 200, "--json", b7], "B7", 600)
    took["B1"] = run([sys.executable, os.path.join(HERE, "bench_capacity.py"), "--callplane", a.callplane,
                      "--floor", a.floor, "--json", b1], "B1", 600)
    took["B2/B6"] = run([sys.executable, os.path.join(HERE, "bench_media.py"), "--callplane", a.callplane,
                         "--floor", a.floor, "--calls", 500, "--plays", 3, "--generator", "loadgen",
                         "--rtpengine", "--json", b2], "B2/B6", 900)
    took["B4"] = run([sys.executable, os.path.join(HERE, "bench_cps.py"), "--callplane", a.callplane,
                      "--rates", 1000, 1400, 2000, 2800, 4000, "--json", b4], "B4", 600)
    with open(b7) as f:
        r7 = json.load(f)["results"]
    with open(b2) as f:
        r2 = json.load(f)["runs"]
    with open(b4) as f:
        r4 = json.load(f)
    with open(b1) as f:
        r1 = json.load(f)

    def mean(xs):
        xs = list(xs)
        return sum(xs) / len(xs) if xs else float("nan")

    lg = [r for r in r7 if r["kind"] == "loadgen"]
    sp = [r for r in r7 if r["kind"] == "sipp"]
    lg_us, sp_us = mean(r["us_per_packet"] for r in lg), mean(r["us_per_packet"] for r in sp)
    lg_spc, sp_spc = mean(r["streams_per_core"] for r in lg), mean(r["streams_per_core"] for r in sp)
    serve = mean(r["us_per_packet"] for r in r2 if r["kind"] == "serve")
    floor = mean(r["us_per_packet"] for r in r2 if r["kind"] == "floor")
    rec = mean(r["us_per_packet"] for r in r2 if r["kind"] == "serve+rec")
    rte = mean(r["us_per_packet"] for r in r2 if r["kind"] == "rtpengine")
    cap_s, cap_rt, cap_f = r1["serve"], r1["serve-rt"], r1["floor"]
    b1 = lambda c: c["capacity"] / cap_f["capacity"] if cap_f["capacity"] else float("nan")  # noqa: E731
    uas, srv = r4.get("sipp_uas"), r4.get("serve")
    rows = [
        ("B7", "loadgen streams on one core, lateness p99 ≤ 2 ms",
         f"{lg[0]['n']} streams at {lg[0]['cpu_percent']} % of a core, p99 {lg[0]['lateness_p99_us']} µs"
         if lg else "n/a", "≥ 2000 on ≤ 1 core",
         bool(lg) and lg[0]["n"] >= 2000 and lg[0]["cpu_percent"] <= 100 and lg[0]["valid"]),
        ("B7", "loadgen / sipp streams per core", f"{lg_spc / sp_spc:.2f}× (CPU per packet {sp_us / lg_us:.2f}× less)",
         "≥ 6×", lg_spc / sp_spc >= 6),
        ("B2", "serve / floor µs per packet, N = 500", f"{serve / floor:.2f}× ({serve:.2f} / {floor:.2f} µs)",
         "≤ 1.3×", serve / floor <= 1.3),
        ("B6", "recording on / off, N = 500", f"{rec / serve:.2f}×", "≤ 1.15×", rec / serve <= 1.15),
        ("B4", "serve / sipp-uas calls per second", f"{srv} / {uas}" + (f" = {srv / uas:.2f}×" if srv and uas else "")
         + (" (sipp-uas passed every rate asked: a floor)" if uas == 4000 else ""),
         "≥ 0.8×", bool(srv and uas) and srv / uas >= 0.8),
        ("B1", "serve / floor calls with clean audio, one core each",
         f"{cap_s['capacity']} / {cap_f['capacity']} = {b1(cap_s):.2f}× (serve: {cap_s['bounded_by']}; "
         f"floor: {cap_f['bounded_by']} at the next step)", "≥ 0.9×", b1(cap_s) >= 0.9),
        ("B1", "the same, serve's media worker at real-time priority (--media-priority 10)",
         f"{cap_rt['capacity']} / {cap_f['capacity']} = {b1(cap_rt):.2f}× (serve: {cap_rt['bounded_by']})",
         "≥ 0.9×", b1(cap_rt) >= 0.9),
        ("B2", "serve / rtpengine userspace µs per packet, N = 500",
         f"{serve / rte:.2f}× ({serve:.2f} / {rte:.2f} µs)", "≤ 0.4×", serve / rte <= 0.4),
    ]
    total = time.monotonic() - start
    print(f"\nThe load generator's benchmark suite: {total / 60:.1f} min "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in took.items())})\n")
    print("| | figure | measured | target | met |")
    print("|---|---|---|---|---|")
    for b, what, got, want, met in rows:
        print(f"| {b} | {what} | {got} | {want} | {'yes' if met else 'no'} |")


if __name__ == "__main__":
    main()
