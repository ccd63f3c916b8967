#!/usr/bin/env python3
"""Calls per second (#13, B4): the highest rate at which `callplane serve` answers every call
and stores its timeline without falling behind, against the same for a sipp UAS, stepped and
interleaved in one run.

For each rate R of --rates (ascending), for --seconds s, sipp (`-sn uac`, pinned to CPU 1)
places R calls a second, each hung up at once after the answer (`-d 0`), at:
  - sipp-uas: `sipp -sn uas` pinned to CPU 0;
  - serve: `callplane serve` pinned to CPU 0 (SQLite in a fresh data directory, no script: it
    answers at once; `--sip-rate-limit 0`, `--max-calls` ample), one process for every rate.
A rate passes when sipp counts no failed call (and made them all), and, for serve, every call's
final event is stored within --max-lag-s after sipp ended (`callplane_calls_total` from
/metrics: the timeline keeps up, no backlog grows). A target's figure is the highest rate it
passed with every lower rate passed too. The rate sipp reached is its own (sipp's statistics:
calls over the burst's duration), so a generator that cannot keep up shows as a rate below R.

Every process runs under `timeout` or is stopped at the end. Loopback only. Standard library.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_burst as sb  # noqa: E402  (Serve, sipp_stats)
import bench_media as bm  # noqa: E402  (free_udp_port)


def burst(target_addr, rate, seconds, work, name):
    """sipp UAC at `rate` calls/s for `seconds` against `target_addr`: (ok, failed, wall s)."""
    calls = max(1, int(rate * seconds))
    stat = os.path.join(work, f"{name}.csv")
    cmd = ["timeout", "--kill-after=5", str(int(seconds) + 60),
           "taskset", "-c", "1", "sipp", "-sn", "uac", "-i", "127.0.0.1", "-p", str(bm.free_udp_port()),
           "-r", str(rate), "-rp", "1000", "-m", str(calls), "-l", str(max(100, rate * 2)),
           "-d", "0", "-timeout", f"{int(seconds) + 50}s", "-nostdin", "-max_socket", "65000",
           "-trace_stat", "-stf", stat, "-fd", "1", "-trace_err", target_addr]
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    ok, failed = sb.sipp_stats(stat)
    return calls, ok or 0, failed if failed is not None else calls, wall


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--callplane", required=True)
    p.add_argument("--rates", type=int, nargs="+", default=[100, 200, 400, 700, 1000, 1400])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--max-lag-s", type=float, default=2.0)
    p.add_argument("--json")
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench-cps-")
    uas_port = bm.free_udp_port()
    uas = subprocess.Popen(
        ["timeout", "--kill-after=5", "3600", "taskset", "-c", "0", "sipp", "-sn", "uas",
         "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin", "-max_socket", "65000"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.setdefault("RUST_LOG", "warn")
    serve = None
    results = []
    start = time.monotonic()
    try:
        # serve pinned to CPU 0 through taskset on its binary: Serve starts `binary serve ...`.
        wrapper = os.path.join(work, "callplane-cpu0")
        with open(wrapper, "w") as f:
            f.write(f'#!/bin/sh\nexec taskset -c 0 {a.callplane} "$@"\n')
        os.chmod(wrapper, 0o755)
        serve = sb.Serve(wrapper, os.path.join(work, "data"), None,
                         max_calls=10_000, extra_args=["--sip-rate-limit", "0"],
                         log_path=os.path.join(work, "serve.log"))
        time.sleep(1.0)
        alive = {"sipp-uas": True, "serve": True}
        for rate in a.rates:
            for target in ("sipp-uas", "serve"):
                if not alive[target]:
                    continue
                addr = f"127.0.0.1:{uas_port}" if target == "sipp-uas" else serve.sip
                before = serve.metrics()["calls"] if target == "serve" else 0
                calls, ok, failed, wall = burst(addr, rate, a.seconds, work, f"{target}-{rate}")
                lag = None
                stored = None
                if target == "serve":
                    t_end = time.monotonic()
                    want = before + ok + failed
                    while time.monotonic() - t_end < a.max_lag_s + 10:
                        stored = serve.metrics()["calls"]
                        if stored >= want:
                            lag = time.monotonic() - t_end
                            break
                        time.sleep(0.05)
                    stored = (stored or before) - before
                passed = failed == 0 and ok == calls and (
                    target == "sipp-uas" or (lag is not None and lag <= a.max_lag_s))
                r = {"target": target, "rate": rate, "calls": calls, "ok": ok, "failed": failed,
                     "achieved_cps": round(ok / max(wall - 0.0, 1e-6), 1), "wall_s": round(wall, 2),
                     "lag_s": None if lag is None else round(lag, 2), "stored": stored,
                     "passed": passed}
                print(json.dumps(r), file=sys.stderr, flush=True)
                results.append(r)
                if not passed:
                    alive[target] = False
            if not any(alive.values()):
                break
    finally:
        if serve:
            serve.stop()
        uas.terminate()
        try:
            uas.wait(10)
        except subprocess.TimeoutExpired:
            uas.kill()

    def best(target):
        top = None
        for r in results:
            if r["target"] != target:
                continue
            if not r["passed"]:
                break
            top = r["rate"]
        return top

    uas_best, serve_best = best("sipp-uas"), best("serve")
    print(f"\nCalls per second (B4): {platform.release()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.monotonic() - start:.0f} s\n")
    print("| target | rate asked | calls | ok / failed | sipp's wall s | lag of the last stored call s | passed |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        lag = "-" if r["target"] == "sipp-uas" else (r["lag_s"] if r["lag_s"] is not None else "not stored")
        print(f"| {r['target']} | {r['rate']} | {r['calls']} | {r['ok']} / {r['failed']} | {r['wall_s']} | {lag} | {r['passed']} |")
    print(f"\nhighest rate passed: sipp-uas {uas_best}, serve {serve_best}"
          + (f"; serve / sipp-uas = {serve_best / uas_best:.2f}" if uas_best and serve_best else ""))
    if uas_best == a.rates[-1]:
        print("(sipp-uas passed every rate asked: its figure is a floor, not its limit)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"results": results, "sipp_uas": uas_best, "serve": serve_best}, f, indent=1)


if __name__ == "__main__":
    main()
