//! Test harness shared by the end-to-end test crates: spawning the `callplane` binary and
//! sipp, reading the JSON event lines `callplane` prints, and making WAV prompts.

// Each test crate (`mod common;`) uses a different subset of these helpers, so in any one
// crate some of them are unused.
#![allow(dead_code)]

pub(crate) mod api;
pub(crate) mod baresip;
pub(crate) mod campaign;
pub(crate) mod db;
pub(crate) mod dns;
pub(crate) mod impair;
pub(crate) mod kamailio;
pub(crate) mod relay;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

pub(crate) const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Upper bound for one process run.
pub(crate) const RUN_WAIT: Duration = Duration::from_secs(60);

/// Whether sipp can run here; `false` means "skip" (and is only allowed outside CI).
pub(crate) fn sipp_available() -> bool {
    tool_available("sipp", "-v", "sip-tester")
}

/// Whether the peer program `bin` can run here (probed with `bin probe_arg`); `false` means
/// "skip", which is only allowed outside CI: under `CI=true` a missing peer fails the test,
/// because CI must install the Debian `package` that ships it.
pub(crate) fn tool_available(bin: &str, probe_arg: &str, package: &str) -> bool {
    let found = std::process::Command::new(bin)
        .arg(probe_arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !in_ci,
            "{bin} is not installed: CI must install the Debian package `{package}`"
        );
        eprintln!("SKIPPED: {bin} is not installed (Debian package `{package}`)");
    }
    found
}

/// A UDP port that was free a moment ago.
pub(crate) fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind((LOCALHOST, 0)).expect("bind");
    s.local_addr().expect("addr").port()
}

/// A TCP port that was free a moment ago (for peers that must be told a concrete port).
pub(crate) fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind((LOCALHOST, 0)).expect("bind");
    l.local_addr().expect("addr").port()
}

/// Starts a long-running sipp (a UAS, or a UAC that waits) on a UDP port that was free: sipp
/// must be given a concrete port, and one taken by bind-and-release can be taken by another
/// program before sipp binds it. Then sipp exits at once; this notices and tries another port
/// (at most 5). `args(port)` gives sipp's arguments for `-p port`. Returns sipp and its port
/// once sipp itself holds the port (checked in /proc, not by a failing bind of ours).
pub(crate) async fn spawn_sipp_on_free_port(
    dir: &Path,
    args: impl Fn(u16) -> Vec<String>,
) -> (Child, u16) {
    let mut failures = Vec::new();
    for _ in 0..5 {
        let port = free_udp_port();
        let mut child = spawn_sipp(dir, &args(port));
        let pid = child.id().expect("sipp is running");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("poll sipp") {
                failures.push(format!("port {port}: sipp exited {status}"));
                break;
            }
            // sipp itself must hold the port: another program (an rtpengine of a parallel
            // test, say) may have taken it between our probe and sipp's bind, and then sipp is
            // about to exit while the port looks busy.
            if holds_udp_port(pid, port) {
                return (child, port);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sipp did not bind 127.0.0.1:{port} within 10 s"
            );
            // Polling a socket state nothing notifies of: bounded by the deadline above.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    panic!("sipp did not start on a free port: {failures:?}");
}

/// Whether process `pid` holds a UDP socket bound to local port `port` (IPv4 or IPv6): the
/// socket inodes of /proc/net/udp{,6} on that port against the links in /proc/<pid>/fd.
pub(crate) fn holds_udp_port(pid: u32, port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && fields[1].ends_with(&wanted) {
                inodes.push(format!("socket:[{}]", fields[9]));
            }
        }
    }
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
    })
}

/// sipp running the fixture scenario `scenario` for one call as a UAS on a free port of
/// 127.0.0.1 (media on 127.0.0.1 too, errors traced, 30 s at most), with `extra` arguments
/// appended: the process and its SIP port.
pub(crate) async fn sipp_uas_scenario(dir: &Path, scenario: &str, extra: &[&str]) -> (Child, u16) {
    let scenario = fixture(scenario);
    let scenario = scenario.to_str().expect("utf-8 path").to_owned();
    spawn_sipp_on_free_port(dir, |port| {
        let port = port.to_string();
        let mut args: Vec<String> = [
            "-sf",
            &scenario,
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-mi",
            "127.0.0.1",
            "-m",
            "1",
            "-timeout",
            "30s",
            "-trace_err",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    })
    .await
}

/// A small HTTP client for a running `callplane serve` (base URL and bearer key).
#[derive(Debug, Clone)]
pub(crate) struct ServeClient {
    /// `http://ip:port`.
    pub(crate) base: String,
    /// The bearer key.
    pub(crate) key: String,
    http: reqwest::Client,
}

impl ServeClient {
    /// A client for `base` with `key`.
    pub(crate) fn new(base: impl Into<String>, key: impl Into<String>) -> ServeClient {
        ServeClient {
            base: base.into(),
            key: key.into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
        }
    }

    /// Sends `method path` with an optional JSON body: the status and the JSON (or text) body.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GET `path`, expecting 200.
    pub(crate) async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Polls GET `path` until `done` holds of the body (bounded by `limit`; the API has no push
    /// for a row's state, so this polls), panicking with the last body seen.
    pub(crate) async fn poll(
        &self,
        path: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let body = self.get(path).await;
            if done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "GET {path} did not reach the expected state within {limit:?}: {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The path of the sipp scenario `name` under `tests/fixtures/sipp`.
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sipp")
        .join(name)
}

/// Start sipp in `dir` (its log files land there).
pub(crate) fn spawn_sipp(dir: &Path, args: &[String]) -> Child {
    Command::new("sipp")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start sipp")
}

/// Wait for a child; its exit status and stderr. (Dropping this future kills it.)
pub(crate) async fn wait_child(child: Child, what: &str) -> (ExitStatus, String) {
    let out = timeout(RUN_WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} finished within its time limit"))
        .unwrap_or_else(|e| panic!("wait for {what}: {e}"));
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Start the callplane binary with `args`; its stdout lines come on the returned channel.
pub(crate) fn spawn_callplane(dir: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut args: Vec<&str> = args.to_vec();
    // Tests run in parallel: a serve that is not told where the API goes gets a free port
    // rather than the fixed default.
    if args.first() == Some(&"serve") && !args.contains(&"--api") {
        args.extend(["--api", "127.0.0.1:0"]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_callplane"))
        .args(&args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start callplane");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Every JSON line received so far and until the channel closes.
pub(crate) async fn collect_lines(rx: &mut mpsc::Receiver<String>) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Some(line)) = timeout(RUN_WAIT, rx.recv()).await {
        out.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")));
    }
    out
}

/// The next JSON line for which `pred` holds (panics after the time limit).
pub(crate) async fn wait_line(
    rx: &mut mpsc::Receiver<String>,
    seen: &mut Vec<Value>,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let line = timeout(RUN_WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("the expected line did not come within {RUN_WAIT:?}; saw {seen:#?}")
            })
            .unwrap_or_else(|| panic!("stdout closed before the expected line; saw {seen:#?}"));
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        seen.push(v.clone());
        if pred(&v) {
            return v;
        }
    }
}

/// Waits until a line of each of `kinds` has come, in any order (the code promises a set of
/// events, not their order: a packet can arrive before the recording has started). Only lines
/// still to come count, not those already in `seen`. Returns the first line of each kind, in
/// the order of `kinds`; panics after `limit`, naming what is missing and what was seen.
pub(crate) async fn wait_for_all(
    rx: &mut mpsc::Receiver<String>,
    seen: &mut Vec<Value>,
    kinds: &[&str],
    limit: Duration,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut found: Vec<Option<Value>> = vec![None; kinds.len()];
    while found.iter().any(Option::is_none) {
        let missing = || -> Vec<&str> {
            kinds
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_none())
                .map(|(k, _)| *k)
                .collect()
        };
        let line = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{:?} did not come within {limit:?}; saw {:?}",
                    missing(),
                    kinds_of(seen)
                )
            })
            .unwrap_or_else(|| {
                panic!(
                    "stdout closed before {:?}; saw {:?}",
                    missing(),
                    kinds_of(seen)
                )
            });
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        seen.push(v.clone());
        if let Some(i) = kinds.iter().position(|k| v["kind"] == *k)
            && found[i].is_none()
        {
            found[i] = Some(v);
        }
    }
    found.into_iter().flatten().collect()
}

fn kinds_of(seen: &[Value]) -> Vec<String> {
    seen.iter()
        .map(|v| v["kind"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// What `serve` printed up to `serve.listening`: the API's base URL (`http://ip:port`), the
/// bootstrap key when the database was empty, and every line seen.
pub(crate) async fn serve_started(
    rx: &mut mpsc::Receiver<String>,
) -> (String, Option<String>, Vec<Value>) {
    let mut seen = Vec::new();
    let listening = wait_line(rx, &mut seen, |v| v["kind"] == "serve.listening").await;
    let api = listening["api"]
        .as_str()
        .unwrap_or_else(|| panic!("serve.listening names the API address: {listening}"));
    let key = seen
        .iter()
        .find(|v| v["kind"] == "serve.bootstrap")
        .and_then(|v| v["key"].as_str())
        .map(str::to_owned);
    (format!("http://{api}"), key, seen)
}

/// The `kind` of every event, in order.
pub(crate) fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["kind"].as_str()).collect()
}

/// The last event of `kind` (panics, listing the kinds seen, when there is none).
pub(crate) fn last_of<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    events
        .iter()
        .rev()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", kinds(events)))
}

/// Run `callplane call` to completion: exit status, stdout events, stderr.
pub(crate) async fn run_call(dir: &Path, args: &[&str]) -> (ExitStatus, Vec<Value>, String) {
    let (child, mut rx) = spawn_callplane(dir, args);
    let (status, stderr) = wait_child(child, "callplane call").await;
    let events = collect_lines(&mut rx).await;
    (status, events, stderr)
}

/// Send SIGTERM to a running child (through `kill`, as the crate forbids `unsafe`).
pub(crate) fn send_sigterm(child: &Child) {
    let pid = child.id().expect("child is running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}");
}
/// sipp's own G.711 A-law RTP capture (shipped with the Debian package `sip-tester`).
pub(crate) const G711A_PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

/// A 1 kHz tone, mono 16-bit 8 kHz, `ms` long: made at run time (no binary fixture).
pub(crate) fn write_tone(path: &Path, ms: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create the tone");
    for n in 0..(8 * ms) {
        let t = f64::from(n) / 8000.0;
        let v = (t * 1000.0 * std::f64::consts::TAU).sin() * 8000.0;
        w.write_sample(v as i16).expect("write a sample");
    }
    w.finalize().expect("finish the tone");
}
