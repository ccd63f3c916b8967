#!/usr/bin/env python3
"""Generator capacity (#13, B7): CPU per RTP packet sent, and the send lateness, of
`callplane loadgen` against sipp's pcap player, each pinned to one CPU, interleaved in one run.

Run through scripts/bench-loadgen.sh (it builds the release binary once and passes it here).

Per scenario:
  - the callee is a sipp UAS (`-sn uas`, on the other CPU) that answers every call with an SDP
    naming its one media port, which it binds and does not read: what the generator sends is
    dropped at that socket's full buffer (the same cost per packet for either generator, and no
    ICMP); it sends no RTP;
  - loadgen N: `taskset -c 0 callplane loadgen` places N calls (all up at once, ramped at
    --cps), one media worker, PCMU 20 ms (50 packets/s a call), each playing a prompt then
    silence for --hold s;
  - sipp N: `taskset -c 0 sipp` (benches/sipp/media_uac.xml) places N calls, each playing the
    Debian g711a.pcap (PCMA 30 ms, 33.3 packets/s a call) back to back for about --hold s;
  - once every 0.5 s the generator's utime+stime (/proc/PID/stat);
  - the steady window: from 2 s after the last call started to 1 s before the first can end;
  - CPU per packet = CPU time in the window / packets it sent in the window (calls x rate x
    window; loadgen's own count of packets sent, over the whole run, is checked against calls x
    rate x hold);
  - loadgen's lateness p50/p99 (its media workers' histogram, its report), its validity;
  - streams per core = 1 s / (CPU per packet x packets per second a stream), the figure at the
    measured load (it assumes the cost per packet stays as the load grows, which the lateness
    column checks for loadgen; sipp's own lateness is not measured).
  - contamination guard: the CPU used by everything else (from /proc/stat, minus the two
    processes of the scenario) in the window; over 15 % of a core, the scenario is run again
    (once), and the count of reruns is printed.

Every process runs under `timeout`, every wait is bounded, everything started is killed at the
end. Loopback only. Standard library only.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_media as bm  # noqa: E402  (the shared process and /proc helpers)

HZ = bm.HZ
PCAP_PACKETS = None


def busy_ticks():
    """All CPUs' busy ticks (user+nice+system+irq+softirq+steal) from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    v = [int(x) for x in fields]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


def guarded(run, what, max_other):
    """Runs `run()` (a scenario whose result has `other_cpu_percent`), and once more when the
    CPU used outside the benchmark passed `max_other` % of a core. Returns (result, rerun)."""
    r = run()
    if r["other_cpu_percent"] <= max_other:
        return r, False
    print(f"  {what}: {r['other_cpu_percent']} % of a core outside the benchmark; running it "
          "again", file=sys.stderr)
    r = run()
    r["rerun"] = True
    return r, True


def run_one(kind, n, a, bins):
    work = tempfile.mkdtemp(prefix=f"bench-loadgen-{kind}-{n}-")
    sip_port, media_port = bm.free_udp_port(), bm.free_udp_port()
    ramp_s = n / a.cps
    limit = ramp_s + a.hold + 60
    result = {"kind": kind, "n": n}
    try:
        bm.Child(
            ["taskset", "-c", "1", "sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", sip_port,
             "-mi", "127.0.0.1", "-mp", media_port, "-nostdin", "-trace_err",
             "-max_socket", 65000],
            limit, work, "callee",
        )
        time.sleep(0.5)
        if kind == "loadgen":
            prompt = os.path.join(work, "prompt.wav")
            bm.voice_wav(prompt, 3)
            report = os.path.join(work, "report.json")
            gen = bm.Child(
                ["taskset", "-c", "0", bins["callplane"], "loadgen",
                 f"sip:load@127.0.0.1:{sip_port}", "--calls", n, "--concurrency", n,
                 "--cps", a.cps, "--hold", f"{a.hold}s", "--media-workers", 1,
                 "--play", prompt, "--json", report, "--progress", "never",
                 "--rtp-ports", "20000-39999"],
                limit, work, "loadgen",
            )
            per_call_pps = 50.0
        else:
            global PCAP_PACKETS
            if PCAP_PACKETS is None:
                PCAP_PACKETS = bm.pcap_packets(bm.PCAP)
            plays = max(1, round(a.hold / 7.05))
            with open(os.path.join(bm.REPO, "benches/sipp/media_uac.xml")) as f:
                scenario = f.read()
            block = re.search(r"<!-- PLAY -->.*?<!-- /PLAY -->", scenario, re.S).group(0)
            play = re.search(r"<!-- PLAY -->(.*?)<!-- /PLAY -->", scenario, re.S).group(1)
            with open(os.path.join(work, "media_uac.xml"), "w") as f:
                f.write(scenario.replace(block, play * plays))
            gen = bm.Child(
                ["taskset", "-c", "0", "sipp", "-sf", os.path.join(work, "media_uac.xml"),
                 "-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", bm.free_udp_port(),
                 "-p", bm.free_udp_port(), "-l", n, "-m", n, "-r", a.cps,
                 "-timeout", f"{int(limit)}s", "-nostdin", "-trace_err", "-max_socket", 65000,
                 f"127.0.0.1:{sip_port}"],
                limit, work, "sipp_uac",
            )
            per_call_pps = PCAP_PACKETS / 7.05
        if gen.pid is None:
            raise RuntimeError(f"{kind}: no pid ({open(gen.err_path).read()[-500:]})")
        t0 = time.monotonic()
        samples = []  # (t, gen ticks, callee ticks, all busy ticks)
        callee_pid = bm.PROCS[-2].pid
        while gen.alive() and time.monotonic() - t0 < limit:
            time.sleep(0.5)
            try:
                samples.append((time.monotonic() - t0, bm.cpu_ticks(gen.pid),
                                bm.cpu_ticks(callee_pid), busy_ticks()))
            except OSError:
                break
        rc = gen.popen.wait(30)
        # The steady window: all calls up (2 s after the last started) until 1 s before the
        # first can end.
        lo, hi = ramp_s + 2.0, a.hold - 1.0
        steady = [s for s in samples if lo <= s[0] <= hi]
        if len(steady) < 4:
            raise RuntimeError(f"{kind} N={n}: window {lo:.1f}-{hi:.1f} s has {len(steady)} samples; "
                               "raise --hold or --cps")
        window = steady[-1][0] - steady[0][0]
        gen_s = (steady[-1][1] - steady[0][1]) / HZ
        callee_s = (steady[-1][2] - steady[0][2]) / HZ
        other_s = (steady[-1][3] - steady[0][3]) / HZ - gen_s - callee_s
        packets = n * per_call_pps * window
        result.update({
            "rc": rc,
            "window_s": round(window, 2),
            "cpu_percent": round(100 * gen_s / window, 1),
            "us_per_packet": round(gen_s * 1e6 / packets, 2),
            "streams_per_core": round(1e6 / (gen_s * 1e6 / packets * per_call_pps)),
            "other_cpu_percent": round(100 * other_s / window, 1),
            "per_call_pps": round(per_call_pps, 2),
        })
        if kind == "loadgen":
            with open(report) as f:
                r = json.load(f)
            g = r["generator"]
            result.update({
                "answered": r["calls"]["answered"],
                "packets_out": r["media"]["packets_out"],
                "expected_out": round(n * 50 * a.hold),
                "lateness_p50_us": g["lateness_p50_us"],
                "lateness_p99_us": g["lateness_p99_us"],
                "valid": g["valid"],
            })
        else:
            result["answered"] = None
        return result
    finally:
        bm.stop_all()


def fingerprint():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    sipp = subprocess.run(["sipp", "-v"], capture_output=True, text=True).stdout
    m = re.search(r"SIPp v[\d.]+", sipp)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "sipp": m.group(0) if m else "?",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--callplane", required=True)
    p.add_argument("--calls", type=int, nargs="+", default=[500, 1000, 2000],
                   help="loadgen's concurrent calls (each a scenario)")
    p.add_argument("--sipp-calls", type=int, nargs="+", default=[200],
                   help="sipp's concurrent calls")
    p.add_argument("--hold", type=float, default=20.0)
    p.add_argument("--cps", type=float, default=400.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--max-other-cpu", type=float, default=15.0,
                   help="%% of a core used outside the benchmark that makes a scenario run again")
    p.add_argument("--json")
    a = p.parse_args()
    bins = {"callplane": a.callplane}
    plan = []
    for _ in range(a.rounds):
        # Interleaved: sipp, loadgen at each N, sipp again.
        for n in a.sipp_calls:
            plan.append(("sipp", n))
        for n in a.calls:
            plan.append(("loadgen", n))
        for n in a.sipp_calls:
            plan.append(("sipp", n))
    results, reruns = [], 0
    start = time.monotonic()
    try:
        for kind, n in plan:
            r, rerun = guarded(lambda: run_one(kind, n, a, bins), f"{kind} N={n}", a.max_other_cpu)
            reruns += rerun
            print(json.dumps(r), file=sys.stderr)
            results.append(r)
    finally:
        bm.stop_all()
    sipp = [r for r in results if r["kind"] == "sipp"]
    sipp_us = sum(r["us_per_packet"] for r in sipp) / len(sipp) if sipp else None
    sipp_streams = sum(r["streams_per_core"] for r in sipp) / len(sipp) if sipp else None
    print(f"\nGenerator capacity (B7), {fingerprint()}")
    print(f"{len(results)} scenarios in {time.monotonic() - start:.0f} s; {reruns} run again "
          "(contamination guard)\n")
    print("| generator | N | CPU % | µs/packet | streams/core | lateness p50 / p99 µs | valid | packets sent (expected) | other CPU % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        lat = (f"{r['lateness_p50_us']} / {r['lateness_p99_us']}" if r["kind"] == "loadgen" else "n/a")
        sent = (f"{r['packets_out']} ({r['expected_out']})" if r["kind"] == "loadgen" else "n/a")
        print(f"| {r['kind']} | {r['n']} | {r['cpu_percent']} | {r['us_per_packet']} | "
              f"{r['streams_per_core']} | {lat} | {r.get('valid', 'n/a')} | {sent} | {r['other_cpu_percent']} |")
    if sipp_us:
        print()
        for r in results:
            if r["kind"] == "loadgen":
                print(f"loadgen N={r['n']}: {sipp_us / r['us_per_packet']:.1f}x less CPU per packet "
                      f"than sipp, {r['streams_per_core'] / sipp_streams:.1f}x its streams per core")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"fingerprint": fingerprint(), "reruns": reruns, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
