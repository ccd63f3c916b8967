#!/usr/bin/env python3
"""Burst benchmark of `callplane serve`: how fast a burst of inbound calls lands in the store.

sipp (UAC) calls `serve` at --rate calls/s for --seconds; serve answers, sipp hangs up after
--hold-ms. Measured from serve's /metrics (callplane_events_total = events stored,
callplane_calls_total = calls whose final event is stored), polled every 50 ms:
  - events/s stored during the burst and over the whole run (burst start -> last call stored);
  - the lag between sipp's end (its last BYE answered) and the last call's final event stored.
Each scenario runs against a fresh serve: without a webhook, and with one webhook whose receiver
answers 500 to everything (a failing receiver; deliveries pile up and are retried).

SQLite in a temporary data directory by default; PostgreSQL when DATABASE_URL is set (use an
empty database, or one where the first tenant may get a bench key). docs/benchmarks.md says how
to run it and how to read it. Standard library only. Every wait is bounded.
"""

import argparse
import http.server
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Failing(http.server.BaseHTTPRequestHandler):
    """A webhook receiver that answers 500 to every delivery."""

    hits = 0

    def do_POST(self):
        Failing.hits += 1
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(min(length, 1 << 20))
        self.send_response(500)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def start_failing_receiver():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Serve:
    """A running `callplane serve`: its SIP and API addresses, and an owner key."""

    def __init__(self, binary, data_dir, database_url, max_calls, extra_args, log_path):
        args = [
            binary, "serve",
            "--sip", "127.0.0.1:0",
            "--api", "127.0.0.1:0",
            "--data-dir", data_dir,
            "--max-calls", str(max_calls),
            "--rate-limit", "0",
        ] + extra_args
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        env.pop("DATABASE_URL", None)
        if database_url:
            args += ["--database-url", database_url]
        self.binary, self.data_dir, self.database_url = binary, data_dir, database_url
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, env=env)
        self.key = None
        self.listening = None
        self._ready = threading.Event()
        # serve prints every call event on stdout: keep draining it, or serve blocks on the pipe.
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(60):
            self.stop()
            sys.exit(f"serve did not print serve.listening within 60 s (log: {log_path})")
        if self.listening is None:
            sys.exit(f"serve exited before listening (log: {log_path})")
        self.sip = self.listening["sip"]
        self.api = "http://" + self.listening["api"]
        if self.key is None:
            self.key = self._admin_key()

    def _read(self):
        for raw in self.proc.stdout:
            if self._ready.is_set():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if line.get("kind") == "serve.bootstrap":
                self.key = line.get("key")
            elif line.get("kind") == "serve.listening":
                self.listening = line
                self._ready.set()
        self._ready.set()

    def _admin_key(self):
        """A key for the inbound tenant (the oldest) of a database that was not empty."""
        base = [self.binary, "admin", "--data-dir", self.data_dir]
        if self.database_url:
            base += ["--database-url", self.database_url]
        tenants = subprocess.run(base + ["list-tenants"], capture_output=True, timeout=30,
                                 check=True, text=True).stdout.split("\n")
        first = json.loads(next(t for t in tenants if t.strip()))
        out = subprocess.run(base + ["create-key", "--tenant", first["id"], "--role", "owner",
                                     "--name", "bench"],
                             capture_output=True, timeout=30, check=True, text=True).stdout
        return json.loads(out)["key"]

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api + path, data=data, method=method)
        req.add_header("authorization", "Bearer " + self.key)
        if data is not None:
            req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def metrics(self):
        with urllib.request.urlopen(self.api + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        sums = {"events": 0, "calls": 0, "active": 0, "backlog": 0}
        for line in text.splitlines():
            m = re.match(r"^(callplane_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
            if not m:
                continue
            name, value = m.group(1), float(m.group(3))
            key = {
                "callplane_events_total": "events",
                "callplane_calls_total": "calls",
                "callplane_active_calls": "active",
                "callplane_webhook_backlog": "backlog",
            }.get(name)
            if key:
                sums[key] += value
        return sums

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def sipp_stats(path):
    """sipp's last -trace_stat row: (successful calls, failed calls)."""
    try:
        with open(path) as f:
            rows = [r.rstrip("\n").split(";") for r in f if r.strip()]
    except OSError:
        return None, None
    if len(rows) < 2:
        return None, None
    head, last = rows[0], rows[-1]
    col = lambda name: int(last[head.index(name)]) if name in head else None
    return col("SuccessfulCall(C)"), col("FailedCall(C)")


def run(args, webhook, work):
    label = "failing webhook" if webhook else "no webhook"
    calls = max(1, int(args.rate * args.seconds))
    data_dir = os.path.join(work, f"data-{'hook' if webhook else 'plain'}")
    serve = Serve(args.bin, data_dir, args.database_url,
                  max_calls=max(100, int(args.rate * (args.hold_ms / 1000 + 2) * 2)),
                  # The failing receiver listens on loopback, which webhooks reach only when allowed.
                  extra_args=["--webhook-allow-cidr", "127.0.0.0/8"]
                  + shlex.split(os.environ.get("CALLPLANE_BENCH_SERVE_ARGS", ""))
                  + args.serve_arg,
                  log_path=os.path.join(work, f"serve-{'hook' if webhook else 'plain'}.log"))
    receiver = None
    try:
        if webhook:
            receiver = start_failing_receiver()
            port = receiver.server_address[1]
            serve.request("POST", "/v1/webhooks", {"url": f"http://127.0.0.1:{port}/hook"})
        before = serve.metrics()
        stat = os.path.join(work, f"sipp-{'hook' if webhook else 'plain'}.csv")
        sipp = [
            "sipp", "-sn", "uac", "-i", "127.0.0.1",  # no -p: sipp takes a free port from 5060 up
            "-r", str(args.rate), "-rp", "1000", "-m", str(calls), "-l", str(args.limit),
            "-d", str(args.hold_ms), "-timeout", f"{int(args.seconds) + 120}s", "-nostdin",
            "-trace_stat", "-stf", stat, "-fd", "1", "-trace_err", serve.sip,
        ]
        t0 = time.monotonic()
        peak_rate, last = 0.0, (t0, before["events"])
        proc = subprocess.Popen(sipp, cwd=work, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # Sample while sipp runs (bounded by sipp's own -timeout, plus a margin).
        deadline = t0 + args.seconds + 180
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.25)
            now, m = time.monotonic(), serve.metrics()
            if now - last[0] >= 1.0:
                peak_rate = max(peak_rate, (m["events"] - last[1]) / (now - last[0]))
                last = (now, m["events"])
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        t_end = time.monotonic()
        at_end = serve.metrics()
        ok, failed = sipp_stats(stat)
        # sipp's count of the calls it made; all of them when its statistics are missing.
        made = (ok or 0) + (failed or 0) if ok is not None or failed is not None else calls
        # Until every call sipp made has its final event stored (bounded).
        target = before["calls"] + made
        done_at, m = None, at_end
        limit = t_end + args.drain_limit_s
        while time.monotonic() < limit:
            m = serve.metrics()
            if m["calls"] >= target:
                done_at = time.monotonic()
                break
            time.sleep(0.05)
        stored = m["events"] - before["events"]
        burst = t_end - t0
        total = (done_at or time.monotonic()) - t0
        return {
            "scenario": label,
            "database": serve.listening.get("database"),
            "rate": args.rate,
            "calls": calls,
            "sipp_ok": ok,
            "sipp_failed": failed,
            "burst_s": burst,
            "events": stored,
            "events_per_s_burst": (at_end["events"] - before["events"]) / burst,
            "events_per_s_peak": peak_rate,
            "events_per_s_total": stored / total,
            "lag_s": (done_at - t_end) if done_at else None,
            "stored_calls": m["calls"] - before["calls"],
            "backlog": m["backlog"],
            "webhook_hits": Failing.hits if webhook else 0,
        }
    finally:
        serve.stop()
        if receiver:
            receiver.shutdown()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=50, help="calls per second (default 50)")
    p.add_argument("--seconds", type=float, default=5, help="burst length (default 5)")
    p.add_argument("--hold-ms", type=int, default=1000, help="sipp's pause before BYE")
    p.add_argument("--limit", type=int, default=2000, help="sipp's most simultaneous calls")
    p.add_argument("--webhook", choices=["none", "failing", "both"], default="both")
    p.add_argument("--drain-limit-s", type=float, default=300,
                   help="longest wait for the last call to be stored after sipp ends")
    p.add_argument("--bin", default=os.path.join(REPO, "target", "release", "callplane"))
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    p.add_argument("--json", action="store_true", help="print JSON lines, not a table")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="an extra argument for serve (repeat it; e.g. a webhook allow flag)")
    args = p.parse_args()
    if args.rate * args.seconds > 20000 or args.seconds > 120:
        sys.exit("refusing more than 20000 calls or 120 s in one run")
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"{args.bin} is not an executable: cargo build --release, or pass --bin")
    scenarios = {"none": [False], "failing": [True], "both": [False, True]}[args.webhook]
    results = []
    with tempfile.TemporaryDirectory(prefix="callplane-bench-") as work:
        for webhook in scenarios:
            Failing.hits = 0
            results.append(run(args, webhook, work))
            if args.json:
                print(json.dumps(results[-1]), flush=True)
    if args.json:
        return
    fmt = lambda v, f="{:.1f}": "-" if v is None else f.format(v)
    cols = ["scenario", "db", "calls", "sipp ok/fail", "events", "ev/s burst", "ev/s peak",
            "ev/s total", "lag last call (s)", "stored calls", "backlog"]
    rows = [[r["scenario"], r["database"], str(r["calls"]), f"{r['sipp_ok']}/{r['sipp_failed']}",
             fmt(r["events"], "{:.0f}"), fmt(r["events_per_s_burst"]), fmt(r["events_per_s_peak"]),
             fmt(r["events_per_s_total"]), fmt(r["lag_s"], "{:.2f}"),
             fmt(r["stored_calls"], "{:.0f}"), fmt(r["backlog"], "{:.0f}")] for r in results]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    print(f"rate {args.rate}/s for {args.seconds} s, hold {args.hold_ms} ms")
    print(line(cols))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


if __name__ == "__main__":
    main()
