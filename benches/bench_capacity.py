#!/usr/bin/env python3
"""B1, media capacity (#13): the most concurrent calls a target carries with clean audio, for
`callplane serve` (answers, records both directions, plays a prompt), as shipped and with its
media worker at real-time priority (`--media-priority 10`, "serve-rt"), and for the floor echo
(benches/floor_echo.rs), with `callplane loadgen` as the generator for all three.

Each target gets one core and the generator the other: the target (and the floor's sipp UAS) runs
under `taskset -c 1`, loadgen under `taskset -c 0` (--no-pin: both share both cores). loadgen's
media worker runs at real-time priority (its default): measured, at normal priority on its
pinned core its own signalling and event threads made its packets 2.4-20 ms late (lateness p99)
at N = 1000 with 41 % of the core used, and every step was the generator's failure, not the
target's. serve's own threads do the same to its media worker on its one core, which is what
serve-rt shows. Steps of N concurrent calls, interleaved (serve, serve-rt and the floor at N,
then the next N), from --start by --step up to --max; a target that fails a step is not stepped
further.

One step: loadgen places N calls at --cps, each held for N / cps + --steady seconds, so every call
spans a window of --steady seconds in which all N are up. It sends a voice prompt and reads what
comes back: serve's prompt (a script: answer, record stereo, play a 60 s prompt), or its own audio
from the floor. Every figure comes from loadgen's report (its events, per call):
  - answered: every call answered;
  - loss: network loss plus late packets (its jitter buffer's), of all packets expected, < 0.1 %;
  - jitter: RFC 3550 interarrival jitter, the mean over calls, <= 1 ms;
  - RTT: from RTCP (RFC 3550 LSR/DLSR), the p99 over calls, <= 5 ms. Loopback's own round trip
    (about 0.1-0.2 ms at N = 50) is counted as added: the figure is an upper bound of what the
    target adds;
  - the generator's own validity: its lateness p99 <= 2 ms (loadgen --max-lateness). A step whose
    generator fell behind says so: the capacity found is then the generator's, not the target's.
A step passes when all hold; the capacity is the largest N passed (within --step).

Contamination guard: the CPU used by everything else in the window (all CPUs' busy time from
/proc/stat but softirq, minus every process the step started and the ksoftirqd threads) over
--max-other-cpu % of a core runs the step again (once); the count of reruns is printed.

Run through scripts/bench-suite.sh or scripts/bench-capacity.sh (they build the release binaries).
Every process runs under `timeout`, every wait is bounded, everything started is killed at the
end. Loopback only. Standard library only.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_media as bm  # noqa: E402  (the shared process and /proc helpers)
from bench_loadgen import guarded  # noqa: E402  (the contamination guard's rerun)

def busy_ticks():
    """All CPUs' busy ticks from /proc/stat but softirq: user+nice+system+irq+steal. The
    softirq time is loopback's packet delivery, the benchmark's own traffic, which the kernel
    charges to no process (measured: 16-26 % of a core at 1250-1500 floor calls)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[7]


def ksoftirqd_pids():
    """The kernel threads that run deferred softirq work (our packets' delivery, again)."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().startswith("ksoftirqd/"):
                        pids.append(int(d))
            except OSError:
                pass
    return pids

KINDS = ["serve", "serve-rt", "floor"]
MAX_LOSS_PERCENT = 0.1
MAX_JITTER_US = 1000
MAX_RTT_P99_US = 5000


def pin(a, cpu):
    """The command prefix that pins a process to `cpu` under --pin."""
    return ["taskset", "-c", str(cpu)] if a.pin else []


def start_serve(work, sip_port, n, limit, bins, a, realtime):
    """serve on CPU 1 with a script that answers, records stereo and plays a 60 s prompt; with
    `realtime`, its media worker at real-time priority (--media-priority 10)."""
    prompt = os.path.join(work, "serve-prompt.wav")
    bm.voice_wav(prompt, 60)
    script = os.path.join(work, "script.json")
    with open(script, "w") as f:
        json.dump({"version": 1, "steps": [
            {"answer": {}},
            {"record": {"action": "start", "mode": "stereo"}},
            {"play": {"file": prompt, "barge_in": False}},
            {"hangup": {}},
        ]}, f)
    serve = bm.Child(
        [*pin(a, 1), bins["callplane"], "serve",
         "--data-dir", os.path.join(work, "data"), "--sip", f"127.0.0.1:{sip_port}",
         "--api", "127.0.0.1:0", "--max-calls", 2 * n + 64, "--sip-rate-limit", 0,
         "--media-workers", 1 if a.pin else 2, "--script", script, "--recordings", os.path.join(work, "rec"),
         *(["--media-priority", 10] if realtime else [])],
        limit, work, "serve",
    )

    def listening():
        if '"serve.listening"' in serve.text():
            return True
        if not serve.alive():
            raise RuntimeError(f"serve exited: {open(serve.err_path).read()[-2000:]}")
        return False

    bm.wait_for(listening, 30, "serve.listening")
    return serve


def step(kind, n, a, bins):
    work = tempfile.mkdtemp(prefix=f"bench-capacity-{kind}-{n}-")
    sip_port = bm.free_udp_port()
    ramp_s = n / a.cps
    hold_s = ramp_s + a.steady
    limit = ramp_s + hold_s + 60
    result = {"kind": kind, "n": n}
    try:
        if kind in ("serve", "serve-rt"):
            start_serve(work, sip_port, n, limit, bins, a, realtime=kind == "serve-rt")
        else:
            floor = bm.start_floor(work, sip_port, n, limit, a, bins)
            # The floor and its sipp UAS share the target's core.
            for c in bm.PROCS:
                if c.pid and a.pin:
                    os.sched_setaffinity(c.pid, {1})
            result["floor_pid"] = floor.pid
        prompt = os.path.join(work, "prompt.wav")
        bm.voice_wav(prompt, 3)
        report = os.path.join(work, "report.json")
        gen = bm.Child(
            [*pin(a, 0), bins["callplane"], "loadgen", f"sip:capacity@127.0.0.1:{sip_port}",
             "--calls", n, "--concurrency", n, "--cps", a.cps, "--hold", f"{hold_s:.1f}s",
             "--media-workers", 1 if a.pin else 2, "--play", prompt, "--json", report, "--progress", "never",
             "--rtp-ports", a.rtp_ports, "--media-priority", 10 if a.generator_realtime else 0],
            limit, work, "loadgen",
        )
        t0 = time.monotonic()
        samples = []  # (t, ticks of every process started and ksoftirqd, all CPUs' busy ticks)
        soft = ksoftirqd_pids()
        while gen.alive() and time.monotonic() - t0 < limit:
            time.sleep(0.5)
            ours = 0
            for pid in [c.pid for c in bm.PROCS] + soft:
                try:
                    ours += bm.cpu_ticks(pid)
                except (OSError, TypeError):
                    pass
            samples.append((time.monotonic() - t0, ours, busy_ticks()))
        rc = gen.popen.wait(30)
        lo, hi = ramp_s + 1.0, hold_s - 0.5
        window = [s for s in samples if lo <= s[0] <= hi]
        if len(window) >= 2:
            span = window[-1][0] - window[0][0]
            other = ((window[-1][2] - window[0][2]) - (window[-1][1] - window[0][1])) / bm.HZ
            result["other_cpu_percent"] = round(100 * other / span, 1)
        else:
            result["other_cpu_percent"] = 0.0
        with open(report) as f:
            r = json.load(f)
        media, gen_r = r["media"], r["generator"]
        loss = (media.get("loss_percent") or 0.0) + (media.get("late_percent") or 0.0)
        jitter = (media.get("jitter_us") or {}).get("mean")
        rtt = (media.get("rtt_us") or {}).get("p99")
        result.update({
            "rc": rc,
            "answered": r["calls"]["answered"],
            "loss_percent": round(loss, 4),
            "jitter_mean_us": jitter,
            "rtt_p99_us": rtt,
            "mos_in_mean": (media.get("mos_in") or {}).get("mean"),
            "generator_lateness_p99_us": gen_r["lateness_p99_us"],
            "generator_valid": gen_r["valid"],
            "generator_realtime_workers": gen_r["realtime_workers"],
        })
        why = []
        if result["answered"] < n:
            why.append(f"answered {result['answered']} of {n}")
        if loss >= MAX_LOSS_PERCENT:
            why.append(f"loss {loss:.3f} %")
        if jitter is None or jitter > MAX_JITTER_US:
            why.append(f"jitter {jitter} µs")
        if rtt is None or rtt > MAX_RTT_P99_US:
            why.append(f"RTT p99 {rtt} µs")
        if not gen_r["valid"]:
            why.append(f"generator not valid (lateness p99 {gen_r['lateness_p99_us']} µs)")
        result["passed"] = not why
        result["why"] = "; ".join(why)
        result["generator_bound"] = not gen_r["valid"]
        return result
    finally:
        bm.stop_all()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            result["workdir"] = work


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--callplane", required=True)
    p.add_argument("--floor", required=True)
    p.add_argument("--start", type=int, default=1000)
    p.add_argument("--step", type=int, default=250)
    p.add_argument("--max", type=int, default=3000)
    p.add_argument("--cps", type=float, default=500.0)
    p.add_argument("--steady", type=float, default=12.0,
                   help="seconds every call spends with all N up (RTCP every 5 s: at least 10 for an RTT)")
    p.add_argument("--rtp-ports", default="20000-27999", help="loadgen's RTP ports (2 a call)")
    p.add_argument("--floor-port", type=int, default=30000)
    p.add_argument("--uas-media-port", type=int, default=46000)
    p.add_argument("--max-other-cpu", type=float, default=15.0,
                   help="%% of a core used outside the benchmark that makes a step run again")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                   help="the target on CPU 1, the generator on CPU 0 (one media worker each); "
                        "--no-pin: both share both cores (two media workers each)")
    p.add_argument("--generator-realtime", action=argparse.BooleanOptionalAction, default=True,
                   help="loadgen's media worker at real-time priority (its default, "
                        "--media-priority 10): on its core its own signalling threads otherwise "
                        "delay its packets by milliseconds")
    p.add_argument("--only", choices=KINDS, help="step one target only")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json")
    a = p.parse_args()
    if not (1 <= a.start <= a.max <= 4000 and a.step >= 50 and 1 <= a.steady <= 60):
        p.error("bounds: 1 <= start <= max <= 4000, step >= 50, steady 1-60 s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8 * a.max + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    bins = {"callplane": a.callplane, "floor": a.floor}
    results, reruns, failed = [], 0, set()
    start = time.monotonic()
    try:
        n = a.start
        while n <= a.max and len(failed) < (1 if a.only else len(KINDS)):
            for kind in KINDS:
                if kind in failed or (a.only and kind != a.only):
                    continue
                r, rerun = guarded(lambda: step(kind, n, a, bins), f"{kind} N={n}", a.max_other_cpu)
                reruns += rerun
                print(json.dumps(r), file=sys.stderr, flush=True)
                results.append(r)
                if not r["passed"]:
                    failed.add(kind)
            n += a.step
    finally:
        bm.stop_all()
    took = time.monotonic() - start

    def capacity(kind):
        passed = [r["n"] for r in results if r["kind"] == kind and r["passed"]]
        first_fail = next((r for r in results if r["kind"] == kind and not r["passed"]), None)
        return (max(passed) if passed else 0), first_fail

    out = {"took_s": round(took), "reruns": reruns, "results": results,
           "limits": {"loss_percent": MAX_LOSS_PERCENT, "jitter_us": MAX_JITTER_US,
                      "rtt_p99_us": MAX_RTT_P99_US}}
    print(f"\nMedia capacity (B1): {len(results)} steps in {took:.0f} s; {reruns} run again "
          "(contamination guard)\n")
    print("| target | N | answered | loss % | jitter mean µs | RTT p99 µs | MOS in | generator p99 µs | passed | why not |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['kind']} | {r['n']} | {r['answered']} | {r['loss_percent']} | {r['jitter_mean_us']} | "
              f"{r['rtt_p99_us']} | {r['mos_in_mean']} | {r['generator_lateness_p99_us']} | "
              f"{'yes' if r['passed'] else 'no'} | {r['why']} |")
    print()
    ran = [k for k in KINDS if any(r["kind"] == k for r in results)]
    for kind in ran:
        cap, fail = capacity(kind)
        out[kind] = {"capacity": cap, "bounded_by": (
            "the generator" if fail and fail["generator_bound"] else
            "the target" if fail else f"--max {a.max} (no step failed)")}
        print(f"{kind}: {cap} calls ({out[kind]['bounded_by']} at the next step)" if fail
              else f"{kind}: at least {cap} calls (every step up to --max passed)")
    if "floor" in out and out["floor"]["capacity"]:
        for kind in (k for k in ("serve", "serve-rt") if k in out):
            out[kind]["ratio"] = out[kind]["capacity"] / out["floor"]["capacity"]
            print(f"{kind} / floor: {out[kind]['ratio']:.2f}×")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
