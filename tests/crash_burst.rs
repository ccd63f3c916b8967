//! What was accepted is never lost (#9 point 3): with a failing webhook and a burst of inbound
//! calls, `kill -9` of `callplane serve` mid-burst and a restart on the same data directory leave
//! a call row for every call sipp saw answered. sipp's own record (`-trace_msg`: every 200 OK to
//! an INVITE it received, with its Call-ID) is the reference, not ours.
//!
//! Real processes on loopback: serve (SQLite), a sipp UAC burst, a webhook receiver that answers
//! 500 to everything.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;
use common::*;

/// Calls in the burst, and its rate (calls/s).
const CALLS: u32 = 200;
const RATE: u32 = 100;
/// How long sipp holds each answered call before its BYE (ms).
const HOLD_MS: u32 = 2000;
/// Kill once this many calls are live: mid-burst.
const KILL_AT_ACTIVE: f64 = 60.0;
/// Upper bound for any one wait.
const WAIT: Duration = Duration::from_secs(60);
/// Extra `serve` flags: the failing receiver is on loopback, which webhooks may reach only when allowed.
const SERVE_EXTRA: &[&str] = &["--webhook-allow-cidr", "127.0.0.0/8"];

/// Starts `serve` quietly: its stdout is drained by a task that forwards only `serve.*` lines
/// (serve prints every call event, and an unread pipe would block it mid-burst), stderr goes to
/// `log`.
fn spawn_serve(dir: &Path, args: &[&str], log: &Path) -> (Child, mpsc::Receiver<String>) {
    let log = std::fs::File::create(log).expect("serve log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_callplane"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start serve");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("\"kind\":\"serve.") {
                let _ = tx.try_send(line);
            }
        }
    });
    (child, rx)
}

/// A webhook receiver that answers every request with 500 (a receiver that is down).
async fn failing_receiver() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let _ = timeout(Duration::from_secs(5), conn.read(&mut buf)).await;
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\
                          connection: close\r\n\r\n",
                    )
                    .await;
                let _ = conn.shutdown().await;
            });
        }
    });
    port
}

/// One metric's value (summed over its labels) from a Prometheus text page.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The Call-IDs of the INVITEs sipp received a 200 OK for, from its `-trace_msg` log.
fn answered_call_ids(log: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    // Blocks are separated by a dashed line with a timestamp; each says sent or received.
    for block in log.split("-----------------------------------------------") {
        if !block.contains("message received") {
            continue;
        }
        let Some(start) = block.find("SIP/2.0 ") else {
            continue;
        };
        let msg = &block[start..];
        if !msg.starts_with("SIP/2.0 200") {
            continue;
        }
        let header = |name: &str| {
            msg.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let is_invite = header("CSeq").is_some_and(|c| c.ends_with("INVITE"));
        if is_invite && let Some(id) = header("Call-ID").or_else(|| header("i")) {
            ids.insert(id);
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_with_a_failing_webhook_loses_no_answered_call() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("UTF-8 path").to_owned();
    let mut args = vec![
        "serve",
        "--sip",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--max-calls",
        "1000",
        "--rate-limit",
        "0",
        "--webhook-retry-base-ms",
        "100",
    ];
    args.extend(SERVE_EXTRA);
    let (mut serve, mut lines) = spawn_serve(dir.path(), &args, &dir.path().join("serve1.log"));
    let (base, key, seen) = serve_started(&mut lines).await;
    let key = key.unwrap_or_else(|| panic!("a bootstrap key on an empty database: {seen:?}"));
    let sip = seen
        .iter()
        .find(|v| v["kind"] == "serve.listening")
        .and_then(|v| v["sip"].as_str())
        .expect("serve.listening names the SIP address")
        .to_owned();
    let api = ServeClient::new(base.clone(), key.clone());

    // One webhook of the inbound tenant, its receiver failing every delivery.
    let hook_port = failing_receiver().await;
    let (status, hook) = api
        .send(
            reqwest::Method::POST,
            "/v1/webhooks",
            Some(&json!({"url": format!("http://127.0.0.1:{hook_port}/hook")})),
        )
        .await;
    assert_eq!(status, 201, "{hook}");

    // The burst. sipp's message log records every 200 OK it received.
    let messages = dir.path().join("sipp_messages.log");
    let sipp_args: Vec<String> = [
        "-sn",
        "uac",
        // No -p: sipp takes the first free port from 5060 up.
        "-i",
        "127.0.0.1",
        "-r",
        &RATE.to_string(),
        "-m",
        &CALLS.to_string(),
        "-l",
        &CALLS.to_string(),
        "-d",
        &HOLD_MS.to_string(),
        // Calls the kill cut off fail after 5 s of silence instead of waiting for Timer B.
        "-recv_timeout",
        "5000",
        "-timeout",
        "50s",
        "-trace_msg",
        "-message_file",
        messages.to_str().expect("UTF-8 path"),
        &sip,
    ]
    .map(String::from)
    .to_vec();
    let sipp = spawn_sipp(dir.path(), &sipp_args);

    // Mid-burst: once enough calls are live (polled: /metrics has no push).
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut active = 0.0;
    while active < KILL_AT_ACTIVE {
        let page = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        active = metric(&page, "callplane_active_calls");
        assert!(
            tokio::time::Instant::now() < deadline,
            "{KILL_AT_ACTIVE} calls were not live within {WAIT:?} (last {active})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serve.start_kill().expect("kill -9 serve");
    timeout(WAIT, serve.wait())
        .await
        .expect("serve died in time")
        .expect("wait for serve");

    // sipp finishes (the rest of its calls fail against the dead port); then the restart.
    let (sipp_status, sipp_err) = wait_child(sipp, "sipp burst").await;
    let log = std::fs::read_to_string(&messages).expect("sipp's message log");
    let answered = answered_call_ids(&log);
    let (mut serve2, mut lines2) = spawn_serve(dir.path(), &args, &dir.path().join("serve2.log"));
    let (base2, _, _) = serve_started(&mut lines2).await;
    let api = ServeClient::new(base2, key);

    let mut rows = BTreeSet::new();
    let mut total = 0;
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let path = match &cursor {
            Some(c) => format!("/v1/calls?limit=500&cursor={c}"),
            None => "/v1/calls?limit=500".to_owned(),
        };
        let page = api.get(&path).await;
        for c in page["items"].as_array().expect("items") {
            total += 1;
            if let Some(id) = c["sip_call_id"].as_str() {
                rows.insert(id.to_owned());
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let missing: Vec<&String> = answered.difference(&rows).collect();
    eprintln!(
        "sipp ({sipp_status}) saw {} calls answered; {total} call rows after the restart, {} with \
         a Call-ID; {} answered calls missing",
        answered.len(),
        rows.len(),
        missing.len()
    );
    assert!(
        !answered.is_empty(),
        "sipp saw no call answered before the kill: {sipp_err}"
    );
    assert!(
        missing.is_empty(),
        "{} of {} calls sipp saw answered have no call row after kill -9 and restart: {:?}",
        missing.len(),
        answered.len(),
        missing.iter().take(10).collect::<Vec<_>>()
    );
    serve2.start_kill().expect("stop the second serve");
    let _ = timeout(WAIT, serve2.wait()).await;
}
