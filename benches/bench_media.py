#!/usr/bin/env python3
"""Media-plane benchmark: CPU per RTP packet and RSS per call of `callplane serve` against the
floor echo (benches/floor_echo.rs), with sipp holding N concurrent calls with audio on loopback.

Run through scripts/bench-media.sh (it builds the release binaries once and passes them here).
docs/benchmarks.md ("Media plane") describes the method and how to read the table.

For each N, in one run and interleaved: serve (no recording), floor, serve with stereo recording
(`--recordings DIR`), floor. Per scenario:
  - sipp (UAC, benches/sipp/media_uac.xml) places N calls at --rate calls/s; each call plays the
    bundled g711a.pcap (PCMA, 30 ms, 236 packets in 7.05 s) --plays times back to back, then BYE;
  - serve answers itself; for the floor, a sipp UAS (benches/sipp/floor_uas.xml) answers with an
    SDP that points each call at one floor socket (injection file, one port per call);
  - once a second: the target's utime+stime (/proc/PID/stat), VmRSS (/proc/PID/status) and its
    live calls (serve: call.created minus final events on its stdout; floor: its own `active`);
  - the steady window is the seconds in which all N calls were live, minus one at each end;
  - CPU per packet = CPU time in the window / RTP packets the process handled (in + out) in it.
    Floor: its own counters at its own report lines. serve: its per-call counters (the final
    event's rtp.packets_in/out), each spread over that call's media time (in: first packet in to
    the end; out: answer to end), summed over calls and multiplied by the window. Cross-checks:
    packets in per call against the pcap (236 x plays), serve's /metrics RTP totals against the
    sum of its events, sipp's successful calls; with recording, the WAV bytes written against
    the calls' durations.
  - RSS per call = (mean VmRSS in the window - VmRSS before the first call) / N.
  - sipp does not bind the media ports it advertises (it plays the pcap through a raw socket), so
    every packet sent to its calls came back as an ICMP port unreachable, walked past sipp's raw
    sockets: a cost in the sender's context that is no part of either side's media work (it made
    the floor dearer more than serve, measured: docs/benchmarks.md). The harness binds those
    ports itself (the port
    of call k is --uac-media-port + 4 (k - 1), RTCP the next one; sipp's [auto_media_port]; sipp
    itself binds the first call's RTP port and the one 2 above) with the smallest receive buffer
    and never reads them: the packets are dropped at a full socket, no ICMP. --no-media-sink
    leaves them unbound, as before.

Every process runs under `timeout`, every wait is bounded, everything started is killed at the
end (also on Ctrl-C). Loopback only. Standard library only.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PCAP = "/usr/share/sip-tester/g711a.pcap"
RTPENGINE = "/usr/bin/rtpengine"
KAMAILIO = "/usr/sbin/kamailio"
HZ = os.sysconf("SC_CLK_TCK")
PROCS = []


class Child:
    """A process under `timeout`; `pid` is the program's own pid (timeout's child)."""

    def __init__(self, cmd, limit_s, cwd, name):
        self.name = name
        self.out_path = os.path.join(cwd, f"{name}.out")
        self.err_path = os.path.join(cwd, f"{name}.err")
        self.out = open(self.out_path, "w")
        self.err = open(self.err_path, "w")
        self.popen = subprocess.Popen(
            ["timeout", "--kill-after=5", str(int(limit_s)), *map(str, cmd)],
            stdout=self.out,
            stderr=self.err,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
        )
        PROCS.append(self)
        self.pid = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.pid is None:
            try:
                with open(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children") as f:
                    kids = f.read().split()
                if kids:
                    self.pid = int(kids[0])
            except OSError:
                pass
            if self.pid is None:
                if self.popen.poll() is not None:
                    break
                time.sleep(0.02)

    def alive(self):
        return self.popen.poll() is None

    def stop(self, grace=5.0):
        if self.alive():
            # timeout forwards SIGTERM to its child.
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                if self.pid:
                    try:
                        os.kill(self.pid, signal.SIGKILL)
                    except OSError:
                        pass
                self.popen.wait(5)
        self.out.close()
        self.err.close()

    def text(self):
        with open(self.out_path, errors="replace") as f:
            return f.read()


def stop_all():
    for p in reversed(PROCS):
        try:
            p.stop(grace=3.0)
        except Exception as e:  # noqa: BLE001 - cleanup must go on
            print(f"cleanup {p.name}: {e}", file=sys.stderr)
    PROCS.clear()


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_for(pred, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {seconds} s waiting for {what}")


def pcap_packets(path):
    with open(path, "rb") as f:
        data = f.read()
    off, n = 24, 0
    while off + 16 <= len(data):
        incl = int.from_bytes(data[off + 8 : off + 12], "little")
        off += 16 + incl
        n += 1
    return n


def sipp_stats(workdir):
    """SuccessfulCall(C) and FailedCall(C) from the last line of sipp's -trace_stat file."""
    for name in os.listdir(workdir):
        if name.endswith("_.csv") and "media_uac" in name:
            with open(os.path.join(workdir, name)) as f:
                lines = [l for l in f.read().splitlines() if l.strip()]
            head = lines[0].split(";")
            last = lines[-1].split(";")
            col = {k: i for i, k in enumerate(head)}
            return int(last[col["SuccessfulCall(C)"]]), int(last[col["FailedCall(C)"]])
    return None, None


def metrics(api):
    with urllib.request.urlopen(f"http://{api}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'^callplane_rtp_packets_total\{direction="(in|out)"\} (\S+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def voice_wav(path, seconds):
    """A multi-tone 'voice' (three tones changing every 100 ms), 8 kHz 16-bit mono."""
    import math
    import struct
    import wave

    st, freqs, frames = 0x4E11_0003, [0.0, 0.0, 0.0], bytearray()
    for i in range(seconds * 8000):
        if i % 800 == 0:
            for k in range(3):
                st ^= (st << 13) & 0xFFFF_FFFF_FFFF_FFFF
                st ^= st >> 7
                st ^= (st << 17) & 0xFFFF_FFFF_FFFF_FFFF
                freqs[k] = 200.0 + st % 1800
        t = i / 8000
        frames += struct.pack("<h", int(sum(math.sin(2 * math.pi * f * t) for f in freqs) * 5000))
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(frames))


def media_sink(a, n):
    """Binds the RTP and RTCP ports sipp advertises for calls 1..n (never read), but the two
    sipp binds itself (--uac-media-port, the first call's RTP port, and the one 2 above)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * n + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    socks = []
    try:
        for k in range(1, n + 1):
            port = a.uac_media_port + (4 * (k - 1)) % 10000
            for p in (port, port + 1):
                if p in (a.uac_media_port, a.uac_media_port + 2):
                    continue
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
                s.bind(("127.0.0.1", p))
                socks.append(s)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


def start_floor(work, sip_port, n, limit, a, bins):
    """The floor echo with n sockets, and a sipp UAS on sip_port whose answers point call k at
    socket k. Returns the floor's Child (with .sip, the UAS's address)."""
    ports_file = os.path.join(work, "ports")
    floor = Child(
        [bins["floor"], "--sockets", n, "--ports-file", ports_file, "--max-seconds", int(limit),
         "--base-port", a.floor_port],
        limit, work, "floor",
    )
    wait_for(lambda: "floor ready" in floor.text(), 30, "floor ready")
    with open(ports_file) as f:
        ports = f.read().split()
    with open(os.path.join(work, "ports.csv"), "w") as f:
        f.write("SEQUENTIAL\n" + "".join(f"{p};\n" for p in ports))
    Child(
        ["sipp", "-sf", os.path.join(REPO, "benches/sipp/floor_uas.xml"),
         "-inf", os.path.join(work, "ports.csv"), "-i", "127.0.0.1", "-mi", "127.0.0.1",
         "-mp", a.uas_media_port, "-p", sip_port, "-m", n, "-nostdin", "-trace_err"],
        limit, work, "floor_uas",
    )
    time.sleep(0.5)
    floor.sip = f"127.0.0.1:{sip_port}"
    return floor


def bdecode(b, i=0):
    """One bencoded value of rtpengine's ng protocol at b[i:]: (value, next index)."""
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c in (b"l", b"d"):
        items, i = [], i + 1
        while b[i:i + 1] != b"e":
            v, i = bdecode(b, i)
            items.append(v)
        return (dict(zip(items[::2], items[1::2])) if c == b"d" else items), i + 1
    j = b.index(b":", i)
    k = j + 1 + int(b[i:j])
    return b[j + 1:k].decode(errors="replace"), k


def ng(port, command, timeout=2.0):
    """Sends an ng command with no arguments (bencoded, over UDP) and returns the reply dict."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        cookie = f"b{os.getpid()}{time.monotonic_ns()}"
        s.sendto(f"{cookie} d7:command{len(command)}:{command}e".encode(), ("127.0.0.1", port))
        data = s.recv(1 << 20)
    head, _, body = data.partition(b" ")
    if head.decode() != cookie:
        raise RuntimeError(f"ng {command}: a reply to another request")
    return bdecode(body)[0]


def rtpengine_relayed(port):
    """rtpengine's own count of the packets it relayed in userspace (each one in and one out)."""
    return ng(port, "statistics")["statistics"]["totalstatistics"]["relayedpackets_user"]


def start_rtpengine(work, n, limit, a):
    """rtpengine 10.5 in userspace (--table=-1, no kernel module), with its ng control socket on
    a free port and 4 media ports per call from --rtpengine-port up. Returns (Child, ng port)."""
    ng_port = free_udp_port()
    rtpe = Child(
        [RTPENGINE, "--config-file=none", "--table=-1", "--foreground", "--log-stderr",
         "--log-level=4", "--delete-delay=0", "--interface=127.0.0.1",
         f"--listen-ng=127.0.0.1:{ng_port}", f"--port-min={a.rtpengine_port}",
         f"--port-max={a.rtpengine_port + 4 * n + 99}"],
        limit, work, "rtpengine",
    )

    def pong():
        if not rtpe.alive():
            raise RuntimeError(f"rtpengine exited: {open(rtpe.err_path).read()[-2000:]}")
        try:
            return ng(ng_port, "ping", timeout=0.2).get("result") == "pong"
        except OSError:
            return False

    wait_for(pong, 30, "rtpengine's ng pong")
    return rtpe, ng_port


def start_kamailio(work, sip_port, target, ng_port, limit):
    """kamailio (benches/kamailio/relay.cfg) on sip_port: forwards each call to target with
    rtpengine (ng_port) in its media path. Returns once it answers OPTIONS."""
    with open(os.path.join(REPO, "benches/kamailio/relay.cfg")) as f:
        cfg = f.read().replace("@TARGET@", target).replace("@RTPENGINE@", f"udp:127.0.0.1:{ng_port}")
    path = os.path.join(work, "relay.cfg")
    with open(path, "w") as f:
        f.write(cfg)
    kam = Child(
        [KAMAILIO, "-f", path, "-DD", "-E", "-m", 64, "-M", 8, "-l", f"udp:127.0.0.1:{sip_port}",
         "-w", work, "-Y", work, "-P", os.path.join(work, "kamailio.pid")],
        limit, work, "kamailio",
    )

    def answers():
        if not kam.alive():
            raise RuntimeError(f"kamailio exited: {open(kam.err_path).read()[-2000:]}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.2)
            me = s.getsockname()[1]
            s.sendto((f"OPTIONS sip:127.0.0.1:{sip_port} SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{time.monotonic_ns()}\r\n"
                      f"From: <sip:bench@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1:{sip_port}>\r\n"
                      f"Call-ID: ready-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\n"
                      "Max-Forwards: 5\r\nContent-Length: 0\r\n\r\n").encode(),
                     ("127.0.0.1", sip_port))
            try:
                return s.recv(4096).startswith(b"SIP/2.0 200")
            except OSError:
                return False

    wait_for(answers, 30, "kamailio's 200 to OPTIONS")
    return kam


def run_one(kind, n, a, bins):
    work = tempfile.mkdtemp(prefix=f"bench-media-{kind}-{n}-")
    sip_port = free_udp_port()
    limit = a.plays * 7.1 + n / a.rate + 60
    target = floor = ng_port = None
    result = {"kind": kind, "n": n}
    api = None
    sink = []
    try:
        if not a.no_media_sink and a.generator == "sipp":
            sink = media_sink(a, n)
        if kind in ("serve", "serve+rec"):
            cmd = [
                bins["callplane"], "serve",
                "--data-dir", os.path.join(work, "data"),
                "--sip", f"127.0.0.1:{sip_port}",
                "--api", "127.0.0.1:0",
                "--max-calls", 2 * n,
                "--sip-rate-limit", 0,
            ]
            if kind == "serve+rec":
                cmd += ["--recordings", os.path.join(work, "rec")]
            if a.media_workers is not None:
                cmd += ["--media-workers", a.media_workers]
            target = Child(cmd, limit, work, "serve")

            def listening():
                for line in target.text().splitlines():
                    if '"serve.listening"' in line:
                        return json.loads(line)
                if not target.alive():
                    raise RuntimeError(f"serve exited: {open(target.err_path).read()[-2000:]}")
                return None

            api = wait_for(listening, 30, "serve.listening")["api"]
        elif kind == "floor":
            target = floor = start_floor(work, sip_port, n, limit, a, bins)
        else:
            # rtpengine relays between the generator and the floor: kamailio on sip_port puts it
            # in each call's media path and forwards the call to the floor's sipp UAS.
            floor = start_floor(work, free_udp_port(), n, limit, a, bins)
            target, ng_port = start_rtpengine(work, n, limit, a)
            start_kamailio(work, sip_port, floor.sip, ng_port, limit)
        if target.pid is None:
            raise RuntimeError(f"{kind}: no pid")
        pid = target.pid
        time.sleep(1.0)
        idle_rss = rss_kb(pid)
        result["idle_rss_kb"] = idle_rss
        ticks_start = cpu_ticks(pid)
        if a.generator == "loadgen":
            # loadgen: N calls at --rate, each sending a prompt then silence (PCMU, 20 ms) for
            # as long as the pcap plays would last, then BYE; it reads what comes back.
            prompt = os.path.join(work, "prompt.wav")
            voice_wav(prompt, 3)
            uac = Child(
                [bins["callplane"], "loadgen", f"sip:bench@127.0.0.1:{sip_port}",
                 "--calls", n, "--concurrency", n, "--cps", a.rate,
                 "--hold", f"{a.plays * 7.05}s", "--play", prompt, "--media-workers", 1,
                 "--rtp-ports", f"{a.uac_media_port}-{a.uac_media_port + 3999}",
                 "--json", os.path.join(work, "loadgen.json"), "--progress", "never"],
                limit, work, "loadgen",
            )
        else:
            # media_uac.xml with --plays plays of the pcap.
            with open(os.path.join(REPO, "benches/sipp/media_uac.xml")) as f:
                scenario = f.read()
            play = re.search(r"<!-- PLAY -->(.*?)<!-- /PLAY -->", scenario, re.S).group(1)
            scenario = scenario.replace(
                re.search(r"<!-- PLAY -->.*?<!-- /PLAY -->", scenario, re.S).group(0), play * a.plays
            )
            with open(os.path.join(work, "media_uac.xml"), "w") as f:
                f.write(scenario)
            uac = Child(
                ["sipp", "-sf", os.path.join(work, "media_uac.xml"), "-i", "127.0.0.1",
                 "-mi", "127.0.0.1", "-mp", a.uac_media_port, "-p", free_udp_port(),
                 "-l", n, "-m", n, "-r", a.rate, "-timeout", f"{int(limit)}s", "-nostdin",
                 "-trace_stat", "-fd", 1, "-trace_err", f"127.0.0.1:{sip_port}"],
                limit, work, "media_uac",
            )
        samples = []  # (t, ticks, rss_kb, live, packets rtpengine relayed)
        events_seen = {"created": 0, "final": 0}
        offset = 0
        deadline = time.monotonic() + limit
        while uac.alive() and time.monotonic() < deadline:
            time.sleep(1.0)
            if not target.alive():
                raise RuntimeError(f"{kind} died: {open(target.err_path).read()[-2000:]}")
            t = time.monotonic()
            ticks, rss = cpu_ticks(pid), rss_kb(pid)
            if kind.startswith("serve"):
                with open(target.out_path, errors="replace") as f:
                    f.seek(offset)
                    chunk = f.read()
                cut = chunk.rfind("\n") + 1
                offset += len(chunk[:cut].encode())
                events_seen["created"] += chunk[:cut].count('"kind":"call.created"')
                events_seen["final"] += len(re.findall(r'"kind":"call\.(?:completed|failed)"', chunk[:cut]))
                live = events_seen["created"] - events_seen["final"]
            else:
                lines = [l for l in floor.text().splitlines() if l.startswith("floor t_ms=")]
                live = int(re.search(r"active=(\d+)", lines[-1]).group(1)) if lines else 0
            relayed = rtpengine_relayed(ng_port) if kind == "rtpengine" else None
            samples.append((t, ticks, rss, live, relayed))
        result["sipp_rc"] = uac.popen.wait(10)
        if a.generator == "loadgen":
            with open(os.path.join(work, "loadgen.json")) as f:
                lg = json.load(f)
            result["sipp_ok"] = lg["calls"]["answered"]
            result["sipp_failed"] = lg["calls"]["attempted"] - lg["calls"]["answered"]
            result["generator_lateness_p99_us"] = lg["generator"]["lateness_p99_us"]
            result["generator_valid"] = lg["generator"]["valid"]
            result["generator_loss_percent"] = lg["media"]["loss_percent"]
            result["generator_mos_in"] = (lg["media"]["mos_in"] or {}).get("mean")
        else:
            result["sipp_ok"], result["sipp_failed"] = sipp_stats(work)
        result["ticks_whole"] = cpu_ticks(pid) - ticks_start
        full = [s for s in samples if s[3] >= n]
        result["seconds_all_live"] = len(full)
        steady = full[1:-1]
        if len(steady) < 3:
            raise RuntimeError(f"{kind} N={n}: only {len(full)} samples with all {n} calls live "
                               f"(peak {max((s[3] for s in samples), default=0)})")
        window = steady[-1][0] - steady[0][0]
        cpu_s = (steady[-1][1] - steady[0][1]) / HZ
        result["window_s"] = window
        result["cpu_percent"] = 100 * cpu_s / window
        result["rss_per_call_kb"] = (statistics.mean(s[2] for s in steady) - idle_rss) / n
        result["peak_rss_kb"] = max(s[2] for s in samples)
        # What each call's generator sent: the pcap's packets per play, or loadgen's 50 a second.
        pcap_in = a.pcap_packets * a.plays if a.generator == "sipp" else round(a.plays * 7.05 * 50)
        if kind.startswith("serve"):
            m = metrics(api)
            target.stop(grace=20)
            calls = {}
            for line in target.text().splitlines():
                if not line.startswith("{"):
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                c = calls.setdefault(ev.get("call_id"), {})
                if ev.get("kind") == "media.first_packet_in":
                    c["first_in"] = ev["at_unix_us"]
                elif ev.get("kind") in ("call.completed", "call.failed"):
                    c["end"] = ev["at_unix_us"]
                    c["details"] = ev["details"]
            rate = 0.0
            pin = pout = 0
            used = 0
            for c in calls.values():
                d = c.get("details") or {}
                rtp = d.get("rtp")
                if not rtp or "first_in" not in c or not d.get("duration_ms"):
                    continue
                media_in_s = (c["end"] - c["first_in"]) / 1e6
                out_s = d["duration_ms"] / 1e3
                if media_in_s <= 0 or out_s <= 0:
                    continue
                rate += rtp["packets_in"] / media_in_s + rtp["packets_out"] / out_s
                pin += rtp["packets_in"]
                pout += rtp["packets_out"]
                used += 1
            result["calls_with_rtp"] = used
            result["packets_in"], result["packets_out"] = pin, pout
            result["metrics_in"], result["metrics_out"] = m.get("in"), m.get("out")
            result["in_per_call"] = pin / max(used, 1)
            result["pps"] = rate
            packets = rate * window
            if kind == "serve+rec":
                rec = os.path.join(work, "rec")
                wavs = [os.path.join(rec, f) for f in os.listdir(rec)] if os.path.isdir(rec) else []
                result["wav_files"] = len(wavs)
                result["wav_bytes"] = sum(os.path.getsize(w) for w in wavs)
                # Stereo 16-bit 8 kHz for the answered time of each call.
                secs = sum((c.get("details") or {}).get("duration_ms") or 0 for c in calls.values()) / 1e3
                result["wav_bytes_expected"] = int(secs * 8000 * 2 * 2)
        elif kind == "rtpengine":
            # rtpengine's own count: each packet relayed is one in and one out. Cross-check: the
            # floor's own in + out, every one of which went through rtpengine.
            packets = 2 * (steady[-1][4] - steady[0][4])
            result["pps"] = packets / window
            relayed = rtpengine_relayed(ng_port)
            result["packets_in"] = result["packets_out"] = relayed
            time.sleep(1.5)
            rows = [dict(x.split("=") for x in l.split()[1:])
                    for l in floor.text().splitlines() if l.startswith("floor t_ms=")]
            result["floor_in_out"] = int(rows[-1]["in"]) + int(rows[-1]["out"])
            result["in_per_call"] = int(rows[-1]["in"]) / n
            if not 0.97 * result["floor_in_out"] <= relayed <= 1.03 * result["floor_in_out"]:
                raise RuntimeError(f"rtpengine N={n}: relayed {relayed}, the floor counted "
                                   f"{result['floor_in_out']} in + out: the run is not valid")
        else:
            time.sleep(1.5)
            lines = [l for l in target.text().splitlines() if l.startswith("floor t_ms=")]
            rows = []
            for l in lines:
                kv = dict(x.split("=") for x in l.split()[1:])
                rows.append({k: int(v) for k, v in kv.items()})
            own = [r for r in rows if r["active"] >= n][1:-1]
            if len(own) < 3:
                raise RuntimeError(f"floor N={n}: only {len(own)} own reports with all sockets active")
            d_pkts = (own[-1]["in"] + own[-1]["out"]) - (own[0]["in"] + own[0]["out"])
            d_cpu = (own[-1]["utime_us"] + own[-1]["stime_us"]) - (own[0]["utime_us"] + own[0]["stime_us"])
            d_t = (own[-1]["t_ms"] - own[0]["t_ms"]) / 1e3
            result["own_cpu_percent"] = 100 * d_cpu / 1e6 / d_t
            result["own_us_per_packet"] = d_cpu / max(d_pkts, 1)
            result["pps"] = d_pkts / d_t
            result["packets_in"], result["packets_out"] = rows[-1]["in"], rows[-1]["out"]
            result["in_per_call"] = rows[-1]["in"] / n
            result["looped"] = rows[-1].get("looped", 0)
            packets = result["pps"] * window
            target.stop()
        result["pcap_in_per_call"] = pcap_in
        # Every datagram in came from sipp's pcap plays: more means a loop, far fewer a loss.
        if not 0.95 * pcap_in <= result["in_per_call"] <= 1.01 * pcap_in:
            raise RuntimeError(f"{kind} N={n}: {result['in_per_call']:.0f} packets in per call, "
                               f"sipp sent {pcap_in}: the run is not valid")
        result["us_per_packet"] = cpu_s * 1e6 / max(packets, 1)
        result["whole_us_per_packet"] = (
            result["ticks_whole"] / HZ * 1e6 / max(result["packets_in"] + result["packets_out"], 1)
        )
        return result
    finally:
        stop_all()
        for s in sink:
            s.close()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            result["workdir"] = work


def fingerprint(bins):
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip()
    sipp = subprocess.run(["sipp", "-v"], capture_output=True, text=True).stdout.strip().splitlines()
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024 // 1024} GiB"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "rustc": rustc,
        "sipp": next((s for s in sipp if "SIPp" in s), "?").strip(),
        "commit": subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--callplane", required=True, help="the release callplane binary")
    p.add_argument("--floor", required=True, help="the release floor_echo binary")
    p.add_argument("--calls", type=int, nargs="+", default=[100, 300])
    p.add_argument("--plays", type=int, default=4, help="pcap plays per call (7.05 s each)")
    p.add_argument("--rate", type=int, default=50, help="sipp call rate (calls/s)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--only", choices=["serve", "serve+rec", "floor", "rtpengine"], help="one scenario (profiling)")
    p.add_argument("--rtpengine", action="store_true",
                   help="also run rtpengine in userspace between the generator and the floor (B2's "
                        "second reference; kamailio puts it in each call's media path)")
    p.add_argument("--rtpengine-port", type=int, default=20000,
                   help="rtpengine's first media port (4 a call; below the ephemeral range)")
    p.add_argument("--uac-media-port", type=int, default=42000)
    p.add_argument("--uas-media-port", type=int, default=46000)
    p.add_argument("--floor-port", type=int, default=30000,
                   help="the floor's first port (below the ephemeral range, above serve's RTP ports)")
    p.add_argument("--media-workers", type=int, help="serve's --media-workers (default: one per core)")
    p.add_argument("--json", help="write every run's raw figures here")
    p.add_argument("--no-media-sink", action="store_true",
                   help="leave sipp's media ports unbound (ICMP port unreachable for every packet "
                        "sent to it, as before 2026-12-04 17:30)")
    p.add_argument("--keep", action="store_true", help="keep the work directories")
    p.add_argument("--generator", choices=["sipp", "loadgen"], default="sipp",
                   help="who places the calls: sipp's pcap player (PCMA 30 ms, raw sockets) or "
                        "callplane loadgen (PCMU 20 ms, one media worker, reads what comes back)")
    a = p.parse_args()
    if any(n < 1 or n > 1000 for n in a.calls) or not 1 <= a.plays <= 10 or a.rounds > 5:
        p.error("bounds: 1..1000 calls, 1..10 plays, at most 5 rounds")
    a.pcap_packets = pcap_packets(PCAP)
    bins = {"callplane": a.callplane, "floor": a.floor}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    fp = fingerprint(bins)
    fp["load_before"] = os.getloadavg()
    order = [a.only] if a.only else (
        ["serve", "floor", "rtpengine", "serve+rec", "floor"] if a.rtpengine
        else ["serve", "floor", "serve+rec", "floor"])
    runs = []
    try:
        for _ in range(a.rounds):
            for n in a.calls:
                for kind in order:
                    t0 = time.monotonic()
                    r = run_one(kind, n, a, bins)
                    r["load"] = os.getloadavg()[0]
                    runs.append(r)
                    print(f"{kind:9} N={n:3}: {r['us_per_packet']:.2f} µs/packet "
                          f"({r['cpu_percent']:.1f} % of a core, {r['pps']:.0f} packets/s, "
                          f"window {r['window_s']:.0f} s), RSS/call {r['rss_per_call_kb']:.1f} KiB, "
                          f"in/call {r['in_per_call']:.0f} (pcap {r['pcap_in_per_call']}), "
                          f"sipp ok {r['sipp_ok']}/{n}, load {r['load']:.2f} "
                          f"[{time.monotonic() - t0:.0f} s]", file=sys.stderr, flush=True)
    finally:
        stop_all()
    fp["load_after"] = os.getloadavg()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"fingerprint": fp, "runs": runs}, f, indent=1)
    print()
    print("machine: {cpu}, {cores} cores, {memory}; kernel {kernel}; {rustc}; {sipp}; commit {commit}; {date}".format(**fp))
    print("load average before / after: {:.2f} / {:.2f}".format(fp["load_before"][0], fp["load_after"][0]))
    print(f"generator: {a.generator}")
    print("sipp's media ports: " + ("unbound (--no-media-sink: an ICMP error for every packet sent to sipp)"
                                    if a.no_media_sink else "bound by the harness, never read (no ICMP)"))
    print()
    print("| N | serve µs/pkt | floor µs/pkt | ratio | serve+rec µs/pkt | rec on/off | rtpengine µs/pkt | serve / rtpengine | RSS/call serve | RSS/call serve+rec | CPU % serve / floor / rec |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in a.calls:
        by = lambda k: [r for r in runs if r["n"] == n and r["kind"] == k]  # noqa: E731
        s, f, rec, rte = by("serve"), by("floor"), by("serve+rec"), by("rtpengine")
        mean = lambda rs, key: statistics.mean(r[key] for r in rs) if rs else float("nan")  # noqa: E731
        su, fu, ru = mean(s, "us_per_packet"), mean(f, "us_per_packet"), mean(rec, "us_per_packet")
        eu = mean(rte, "us_per_packet")
        print(f"| {n} | {su:.2f} | {fu:.2f} | {su / fu:.2f}× | {ru:.2f} | {ru / su:.2f}× | {eu:.2f} | {su / eu:.2f}× | "
              f"{mean(s, 'rss_per_call_kb'):.1f} KiB | {mean(rec, 'rss_per_call_kb'):.1f} KiB | "
              f"{mean(s, 'cpu_percent'):.1f} / {mean(f, 'cpu_percent'):.1f} / {mean(rec, 'cpu_percent'):.1f} |")
    if len(a.calls) >= 2:
        # RSS/call above divides everything the process grew by under load by N, so what it grows
        # by once (allocator arenas, buffers of the threads) weighs more at a smaller N. The
        # slope between the smallest and the largest N is what one more call costs.
        lo, hi = min(a.calls), max(a.calls)
        print()
        for kind in ("serve", "serve+rec"):
            grown = lambda n: [r["rss_per_call_kb"] * n for r in runs if r["n"] == n and r["kind"] == kind]  # noqa: E731
            if grown(lo) and grown(hi) and hi > lo:
                slope = (statistics.mean(grown(hi)) - statistics.mean(grown(lo))) / (hi - lo)
                print(f"RSS per added call, N = {lo} to {hi}, {kind}: {slope:.1f} KiB")
    print()
    print("| run | N | µs/pkt (window) | µs/pkt (whole run) | floor's own µs/pkt | packets/s | in/call (pcap) | serve /metrics in/out vs events | sipp ok/failed | WAV bytes / expected | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        mcheck = (f"{r.get('metrics_in', 0):.0f}/{r.get('metrics_out', 0):.0f} vs {r['packets_in']}/{r['packets_out']}"
                  if r["kind"].startswith("serve") else
                  f"relayed {r['packets_in']} vs the floor's in + out {r['floor_in_out']}" if r["kind"] == "rtpengine"
                  else "-")
        wav = f"{r['wav_bytes']} / {r['wav_bytes_expected']}" if "wav_bytes" in r else "-"
        own = f"{r['own_us_per_packet']:.2f}" if "own_us_per_packet" in r else "-"
        print(f"| {r['kind']} | {r['n']} | {r['us_per_packet']:.2f} | {r['whole_us_per_packet']:.2f} | {own} | "
              f"{r['pps']:.0f} | {r['in_per_call']:.0f} ({r['pcap_in_per_call']}) | {mcheck} | "
              f"{r['sipp_ok']}/{r['sipp_failed']} | {wav} | {r['load']:.2f} |")


if __name__ == "__main__":
    main()
