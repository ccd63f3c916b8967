//! `callplane loadgen` against real peers (#13): its counts against the peer's own counters,
//! and a run on a starved CPU marked invalid.
//!
//! - against a sipp UAS that answers or refuses with 486 at random: the INVITEs, 200s, 486s and
//!   BYEs sipp itself counted (`-trace_counts`) equal the report's attempts, status mix and
//!   answers; the echoed audio comes back whole;
//! - against `callplane serve`: the calls serve's API lists are the loadgen's, Call-ID for
//!   Call-ID, answered, and serve received the packets loadgen sent;
//! - a generator pinned to one core at nice 19 beside two busy loops falls behind its
//!   schedule: the run is marked invalid (exit 4) and the report says why. The same run on a
//!   free CPU in the first test is valid.
//!
//! The tests take a lock each: the starved run pins busy loops to a core, which must not slow
//! the other tests' generators.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use std::net::SocketAddr;

use common::impair::{ImpairRelay, Impairment, induced};
use common::{fixture, free_udp_port, spawn_callplane, spawn_sipp_on_free_port, wait_child};
use serde_json::Value;
use tokio::process::Command;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `callplane loadgen` with `args` (after `prefix`, e.g. `nice`/`taskset`), bounded; its
/// exit code and the JSON report it wrote.
async fn loadgen(dir: &Path, prefix: &[&str], args: &[&str]) -> (i32, Value, String) {
    let report = dir.join("report.json");
    let bin = env!("CARGO_BIN_EXE_callplane");
    let mut all: Vec<&str> = prefix.to_vec();
    all.push(bin);
    all.push("loadgen");
    all.extend_from_slice(args);
    let report_arg = report.to_str().expect("utf-8 path");
    all.extend_from_slice(&["--json", report_arg, "--progress", "never"]);
    let child = Command::new(all[0])
        .args(&all[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start loadgen");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("loadgen finished within 120 s")
        .expect("wait for loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("loadgen wrote no report ({e}); stderr: {stderr}"));
    let json: Value = serde_json::from_str(&text).expect("the report is JSON");
    (
        out.status.code().unwrap_or(-1),
        json,
        format!("{stdout}\n{stderr}"),
    )
}

/// The last line of sipp's `-trace_counts` file, by column.
fn sipp_counts(dir: &Path) -> BTreeMap<String, u64> {
    let file = std::fs::read_dir(dir)
        .expect("read the test directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("_counts.csv"))
        .expect("sipp wrote its counts file");
    let text = std::fs::read_to_string(&file).expect("read the counts");
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().expect("a header").split(';').collect();
    let last: Vec<&str> = lines.next_back().expect("a row").split(';').collect();
    header
        .iter()
        .zip(last.iter())
        .filter_map(|(h, v)| Some(((*h).to_owned(), v.trim().parse().ok()?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_sipp_uas_the_counts_agree_with_sipps_own() {
    let _serial = SERIAL.lock().await;
    if !common::sipp_available() {
        return;
    }
    const CALLS: u64 = 40;
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = fixture("mix_uas.xml");
    let scenario = scenario.to_str().expect("utf-8 path").to_owned();
    let (sipp, port) = spawn_sipp_on_free_port(dir.path(), |port| {
        [
            "-sf",
            &scenario,
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &free_udp_port().to_string(),
            "-rtp_echo",
            "-m",
            &CALLS.to_string(),
            "-timeout",
            "90s",
            "-trace_counts",
            "-trace_err",
        ]
        .map(String::from)
        .to_vec()
    })
    .await;
    let uri = format!("sip:load@127.0.0.1:{port}");
    let calls = CALLS.to_string();
    // The lateness bound is lifted: this test is about counts, not about this machine's load.
    let (code, report, output) = loadgen(
        dir.path(),
        &[],
        &[
            &uri,
            "--calls",
            &calls,
            "--cps",
            "20",
            "--concurrency",
            "15",
            "--hold",
            "1500ms",
            "--max-lateness",
            "10s",
        ],
    )
    .await;
    assert_eq!(code, 0, "loadgen passed: {output}");
    let (status, stderr) = wait_child(sipp, "sipp").await;
    assert!(status.success(), "sipp completed every call: {stderr}");
    let counts = sipp_counts(dir.path());
    let n = |k: &str| *counts.get(k).unwrap_or_else(|| panic!("{k} in {counts:?}"));
    let mix = &report["status_mix"];
    let answered = report["calls"]["answered"].as_u64().expect("answered");
    assert_eq!(report["calls"]["attempted"], CALLS);
    assert_eq!(n("0_INVITE_Recv"), CALLS, "{counts:?}");
    assert_eq!(n("3_200_Sent"), answered, "{counts:?} {report}");
    assert_eq!(mix["200"].as_u64().unwrap_or(0), answered);
    assert_eq!(n("5_BYE_Recv"), answered, "a BYE for every answer");
    assert_eq!(mix["486"].as_u64().unwrap_or(0), n("7_486_Sent"));
    assert_eq!(
        report["outcomes"]["busy"].as_u64().unwrap_or(0),
        n("7_486_Sent")
    );
    assert!(
        answered > 0 && n("7_486_Sent") > 0,
        "both answers happened: {counts:?}"
    );
    assert_eq!(report["calls"]["unfinished"], 0);
    assert_eq!(report["calls"]["dropped"], 0);
    // sipp sends 180 before its 200: every answered call has a ringing latency, no call a 100.
    assert_eq!(report["setup"]["ringing_ms"]["n"], answered);
    assert_eq!(report["setup"]["answer_ms"]["n"], answered);
    assert!(report["setup"]["trying_ms"].is_null());
    // sipp echoes what loadgen sends: what comes back is what went out, none of it lost.
    let media = &report["media"];
    let out = media["packets_out"].as_u64().expect("packets out");
    let back = media["packets_in"].as_u64().expect("packets in");
    assert!(
        out >= answered * 60,
        "about 75 packets per 1.5 s call: {media}"
    );
    assert!(
        back + answered * 3 >= out && back <= out,
        "the echo returned what was sent, but for what was in flight at the BYE: {media}"
    );
    assert_eq!(media["lost_in"], 0, "{media}");
    assert!(
        media["mos_in"]["min"].as_f64().expect("a MOS") > 4.0,
        "{media}"
    );
    // The echo of silence is silence: every answered call is flagged silent, none one-way.
    assert_eq!(media["silent"], answered);
    assert_eq!(media["one_way"], 0);
    assert_eq!(report["generator"]["valid"], true);
    // Its one media worker runs at real-time priority (the default) where the kernel allows
    // it (root, as in CI), and the report says which.
    let privileged = std::thread::spawn(|| sched::set_current_thread_fifo(1).is_ok())
        .join()
        .expect("the probe ran");
    assert_eq!(
        report["generator"]["realtime_workers"],
        u64::from(privileged),
        "{}",
        report["generator"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_serve_the_calls_are_the_ones_its_api_lists() {
    let _serial = SERIAL.lock().await;
    const CALLS: usize = 12;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let (mut serve, mut rx) = spawn_callplane(
        dir.path(),
        &[
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8 path"),
        ],
    );
    let (api, key, seen) = common::serve_started(&mut rx).await;
    let key = key.expect("a bootstrap key");
    let sip = seen
        .iter()
        .find(|v| v["kind"] == "serve.listening")
        .and_then(|v| v["sip"].as_str())
        .expect("serve.listening names the SIP address")
        .to_owned();
    let uri = format!("sip:load@{sip}");
    let csv = dir.path().join("rows.csv");
    let calls = CALLS.to_string();
    let (code, report, output) = loadgen(
        dir.path(),
        &[],
        &[
            &uri,
            "--calls",
            &calls,
            "--cps",
            "10",
            "--concurrency",
            "6",
            "--hold",
            "1s",
            "--max-lateness",
            "10s",
            "--csv",
            csv.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    assert_eq!(code, 0, "loadgen passed: {output}");
    assert_eq!(report["calls"]["answered"], CALLS as u64, "{report}");
    assert_eq!(report["status_mix"]["200"], CALLS as u64);
    // serve answers at once: no 18x.
    assert!(report["setup"]["ringing_ms"].is_null(), "{report}");
    let client = common::ServeClient::new(api, key);
    // The final events are stored after the BYE's answer: poll (bounded) until every call is
    // final in the store.
    let body = client
        .poll("/v1/calls?limit=500", Duration::from_secs(20), |b| {
            b["items"].as_array().is_some_and(|calls| {
                calls.len() == CALLS
                    && calls
                        .iter()
                        .all(|c| c["status"] == "completed" || c["status"] == "failed")
            })
        })
        .await;
    let listed = body["items"].as_array().expect("a list");
    for c in listed {
        assert_eq!(c["direction"], "inbound", "{c}");
        assert_eq!(c["outcome"], "answered", "{c}");
        assert_eq!(c["sip_status"], 200, "{c}");
    }
    let theirs: BTreeSet<String> = listed
        .iter()
        .map(|c| c["sip_call_id"].as_str().expect("a Call-ID").to_owned())
        .collect();
    let text = std::fs::read_to_string(&csv).expect("the CSV");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "sip_call_id")
        .expect("a sip_call_id column");
    let ours: BTreeSet<String> = lines
        .map(|l| l.split(',').nth(col).expect("the column").to_owned())
        .collect();
    assert_eq!(ours.len(), CALLS);
    assert_eq!(ours, theirs, "the same calls, Call-ID for Call-ID");
    // RTP both ways, from serve's own final events: it received what loadgen sent and sent what
    // loadgen received, but for the packets in flight when the BYE crossed (a few per call).
    let (mut serve_in, mut serve_out) = (0u64, 0u64);
    for c in listed {
        let id = c["id"].as_str().expect("an id");
        let events = client
            .get(&format!("/v1/calls/{id}/events?limit=5000"))
            .await;
        let last = events["items"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["kind"] == "call.completed"))
            .unwrap_or_else(|| panic!("call.completed in {events}"));
        serve_in += last["details"]["rtp"]["packets_in"]
            .as_u64()
            .expect("packets_in");
        serve_out += last["details"]["rtp"]["packets_out"]
            .as_u64()
            .expect("packets_out");
    }
    let media = &report["media"];
    let (ours_out, ours_in) = (
        media["packets_out"].as_u64().expect("out"),
        media["packets_in"].as_u64().expect("in"),
    );
    let slack = 3 * CALLS as u64;
    assert!(
        serve_in <= ours_out && serve_in + slack >= ours_out,
        "serve received {serve_in} of the {ours_out} loadgen sent"
    );
    assert!(
        ours_in <= serve_out && ours_in + slack >= serve_out,
        "loadgen received {ours_in} of the {serve_out} serve sent"
    );
    assert!(
        ours_out >= CALLS as u64 * 40,
        "a second of audio per call: {media}"
    );
    common::send_sigterm(&serve);
    let _ = tokio::time::timeout(Duration::from_secs(20), serve.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generator_starved_of_cpu_marks_its_run_invalid() {
    let _serial = SERIAL.lock().await;
    if !common::sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (sipp, port) = spawn_sipp_on_free_port(dir.path(), |port| {
        [
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &free_udp_port().to_string(),
            "-rtp_echo",
            "-timeout",
            "90s",
        ]
        .map(String::from)
        .to_vec()
    })
    .await;
    // Two busy loops on CPU 0 at the default priority; the generator on CPU 0 too, at nice 19
    // and with its media workers at normal priority (its default real-time priority would
    // put them ahead of the loops): it gets about 1 % of that CPU (CFS weights 15 against
    // 2 × 1024).
    let hogs: Vec<tokio::process::Child> = (0..2)
        .map(|_| {
            Command::new("taskset")
                .args(["-c", "0", "sh", "-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start a busy loop")
        })
        .collect();
    let uri = format!("sip:load@127.0.0.1:{port}");
    let (code, report, output) = loadgen(
        dir.path(),
        &["nice", "-n", "19", "taskset", "-c", "0"],
        &[
            &uri,
            "--calls",
            "40",
            "--cps",
            "40",
            "--concurrency",
            "40",
            "--hold",
            "2s",
            "--media-priority",
            "0",
        ],
    )
    .await;
    drop(hogs);
    drop(sipp);
    assert_eq!(code, 4, "an invalid run exits 4: {output}");
    let generator = &report["generator"];
    assert_eq!(generator["valid"], false, "{generator}");
    assert!(
        generator["lateness_p99_us"].as_u64().expect("a p99") > 2_000,
        "{generator}"
    );
    let why = generator["invalid_reason"].as_str().expect("a reason");
    assert!(why.contains("fell behind"), "{why}");
    assert!(
        output.contains("INVALID RUN"),
        "the Markdown says so: {output}"
    );
    assert_eq!(report["passed"], false);
}

/// One call through an [`ImpairRelay`] to a sipp that echoes it: the report and the relay's
/// log. The relay sits on the return leg (sipp's echo back to loadgen).
async fn call_through(
    dir: &Path,
    impairment: Impairment,
) -> (
    Value,
    common::impair::ImpairLog,
    Vec<BTreeMap<String, String>>,
) {
    std::fs::create_dir_all(dir).expect("a directory for the run");
    let relay: std::cell::RefCell<Option<ImpairRelay>> = std::cell::RefCell::new(None);
    let echo_port = std::cell::Cell::new(0u16);
    let scenario = fixture("echo_relay_uas.xml");
    let (sipp, port) = spawn_sipp_on_free_port(dir, |port| {
        let mp = free_udp_port();
        echo_port.set(mp);
        let r = ImpairRelay::start(SocketAddr::from((common::LOCALHOST, mp)), impairment);
        let front = r.front().port();
        *relay.borrow_mut() = Some(r);
        [
            "-sf",
            scenario.to_str().expect("utf-8 path"),
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &mp.to_string(),
            "-rtp_echo",
            "-set",
            "relay_port",
            &front.to_string(),
            "-m",
            "1",
            "-timeout",
            "60s",
            "-trace_err",
        ]
        .map(String::from)
        .to_vec()
    })
    .await;
    let relay = relay.into_inner().expect("the relay started");
    // sipp binds its echo port at start; nothing notifies of a bind: poll, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while std::net::UdpSocket::bind((common::LOCALHOST, echo_port.get())).is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sipp bound its echo port"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let uri = format!("sip:echo@127.0.0.1:{port}");
    let csv = dir.join("rows.csv");
    let (code, report, output) = loadgen(
        dir,
        &[],
        &[
            &uri,
            "--calls",
            "1",
            "--hold",
            "8s",
            "--max-lateness",
            "10s",
            "--csv",
            csv.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    assert_eq!(code, 0, "loadgen passed: {output}");
    let (status, stderr) = wait_child(sipp, "sipp").await;
    assert!(status.success(), "sipp: {stderr}");
    let log = relay.log();
    drop(relay);
    let text = std::fs::read_to_string(&csv).expect("the CSV");
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .expect("a header")
        .split(',')
        .map(str::to_owned)
        .collect();
    let rows = lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(str::to_owned))
                .collect()
        })
        .collect();
    (report, log, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn induced_loss_duplicates_reordering_and_jitter_are_reported_as_the_relay_made_them() {
    let _serial = SERIAL.lock().await;
    if !common::sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let clean = Impairment {
        seed: 0x5EED_0013,
        lead: 10,
        drop_permille: 0,
        dup_permille: 0,
        base_delay: Duration::from_millis(2),
        jitter: Duration::ZERO,
    };
    // 4 % loss and 2 % duplicates at random; 0–60 ms of random delay, which reorders packets
    // sent 20 ms apart.
    let impaired = Impairment {
        drop_permille: 40,
        dup_permille: 20,
        jitter: Duration::from_millis(60),
        ..clean
    };
    let (clean_report, _, _) = call_through(&dir.path().join("clean"), clean).await;
    let (report, log, rows) = call_through(&dir.path().join("impaired"), impaired).await;
    let row = &rows[0];
    let num = |k: &str| -> f64 {
        row[k]
            .parse()
            .unwrap_or_else(|_| panic!("{k} = {:?} in {row:?}", row[k]))
    };
    let expected = num("expected_in") as u64;
    let first = log.sent[0].seq;
    let truth = induced(&log, first, expected);
    eprintln!("relay: {truth:?}; loadgen: {row:?}");
    assert!(expected > 350, "8 s of 20 ms packets: {expected}");
    assert!(
        truth.lost > 5 && truth.duplicates > 2 && truth.reordered > 20,
        "{truth:?}"
    );
    // Counted exactly as the relay made them.
    assert_eq!(num("lost_in") as u64, truth.lost, "loss");
    assert_eq!(num("duplicates") as u64, truth.duplicates, "duplicates");
    assert_eq!(num("reordered") as u64, truth.reordered, "reordering");
    // The RFC 3550 jitter of the order the relay sent in, within 10 % and 0.5 ms (loopback and
    // the receive path add a little of their own).
    let jitter = num("jitter_us");
    assert!(
        (jitter - truth.mean_jitter_us).abs() <= 0.1 * truth.mean_jitter_us + 500.0,
        "jitter {jitter} µs against the relay's {} µs",
        truth.mean_jitter_us
    );
    // And the aggregate moves as it should against the clean call.
    let (c, m) = (&clean_report["media"], &report["media"]);
    assert_eq!(c["lost_in"], 0, "{c}");
    assert_eq!(
        (c["reordered"].as_u64(), c["duplicates"].as_u64()),
        (Some(0), Some(0))
    );
    let clean_mos = c["mos_in"]["mean"].as_f64().expect("a MOS");
    let mos = m["mos_in"]["mean"].as_f64().expect("a MOS");
    assert!(clean_mos > 4.3, "{c}");
    // 4 % random loss without concealment costs about 2 MOS points in G.107 (Bpl 4.3); late
    // packets cost more.
    assert!(mos < clean_mos - 1.5, "MOS {mos} against {clean_mos}");
    assert!(
        m["jitter_us"]["mean"].as_f64() > c["jitter_us"]["mean"].as_f64(),
        "{m} {c}"
    );
    assert!(m["loss_percent"].as_f64().expect("loss") > 2.0, "{m}");
}

/// A "voice" WAV (`loadgen`'s own generator: seeded tones, so that two seeds correlate near 0
/// and one seed with itself near 1).
fn write_voice(path: &Path, seed: u64, ms: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create the prompt");
    for s in callplane::loadgen::answer::voice(seed, ms) {
        w.write_sample(s).expect("a sample");
    }
    w.finalize().expect("finish the prompt");
}

/// Three calls to `uri` at 5 calls/s with `extra` arguments, run in `dir` (made here).
async fn three_calls(
    dir: std::path::PathBuf,
    uri: String,
    extra: Vec<String>,
) -> (i32, Value, String) {
    std::fs::create_dir_all(&dir).expect("dir");
    let mut args: Vec<&str> = vec![&uri, "--calls", "3", "--cps", "5", "--max-lateness", "10s"];
    args.extend(extra.iter().map(String::as_str));
    loadgen(&dir, &[], &args).await
}

/// `serve` running `script` on every inbound call; its child, its stdout and its SIP address.
async fn serve_with_script(
    dir: &Path,
    script: &Value,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::Receiver<String>,
    String,
) {
    let script_path = dir.join("script.json");
    std::fs::write(&script_path, script.to_string()).expect("write the script");
    let data = dir.join("data");
    let (child, mut rx) = spawn_callplane(
        dir,
        &[
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8 path"),
            "--script",
            script_path.to_str().expect("utf-8 path"),
        ],
    );
    let (_, _, seen) = common::serve_started(&mut rx).await;
    let sip = seen
        .iter()
        .find(|v| v["kind"] == "serve.listening")
        .and_then(|v| v["sip"].as_str())
        .expect("serve.listening names the SIP address")
        .to_owned();
    (child, rx, sip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prompt_check_passes_the_right_prompt_and_flags_a_wrong_one_and_silence() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (right, wrong) = (dir.path().join("right.wav"), dir.path().join("wrong.wav"));
    write_voice(&right, 11, 2500);
    write_voice(&wrong, 12, 2500);
    // A callee that answers, waits 300 ms, plays `right.wav`, and waits for our BYE.
    let plays = dir.path().join("plays");
    std::fs::create_dir_all(&plays).expect("dir");
    let script = serde_json::json!({"version": 1, "steps": [
        {"answer": {}},
        {"pause": {"ms": 300}},
        {"play": {"file": right.to_str().expect("utf-8 path"), "barge_in": false}},
        {"pause": {"ms": 30000}}
    ]});
    let (mut serve, _rx, sip) = serve_with_script(&plays, &script).await;
    let uri = format!("sip:prompt@{sip}");
    let run = |expect: std::path::PathBuf, sub: &'static str| {
        let expect = expect.to_str().expect("utf-8 path").to_owned();
        three_calls(
            dir.path().join(sub),
            uri.clone(),
            vec![
                "--hold".into(),
                "4s".into(),
                "--expect-prompt".into(),
                expect,
            ],
        )
    };
    let (code, report, output) = run(right.clone(), "right").await;
    assert_eq!(code, 0, "the right prompt passes: {output}");
    let p = &report["prompt"];
    assert_eq!(
        (p["checked"].as_u64(), p["passed"].as_u64()),
        (Some(3), Some(3)),
        "{p}"
    );
    assert!(p["score"]["min"].as_f64().expect("a score") > 0.9, "{p}");
    let (code, report, output) = run(wrong.clone(), "wrong").await;
    assert_eq!(code, 3, "a wrong prompt fails the run: {output}");
    let p = &report["prompt"];
    assert_eq!(p["failed"], 3, "{p}");
    assert!(p["score"]["max"].as_f64().expect("a score") < 0.3, "{p}");
    common::send_sigterm(&serve);
    let _ = tokio::time::timeout(Duration::from_secs(20), serve.wait()).await;

    // A callee that answers and says nothing.
    let quiet = dir.path().join("quiet");
    std::fs::create_dir_all(&quiet).expect("dir");
    let script = serde_json::json!({"version": 1, "steps": [
        {"answer": {}},
        {"pause": {"ms": 30000}}
    ]});
    let (mut serve, _rx2, sip) = serve_with_script(&quiet, &script).await;
    let uri = format!("sip:prompt@{sip}");
    let dir2 = dir.path().join("silence");
    std::fs::create_dir_all(&dir2).expect("dir");
    let (code, report, output) = loadgen(
        &dir2,
        &[],
        &[
            &uri,
            "--calls",
            "2",
            "--hold",
            "3s",
            "--max-lateness",
            "10s",
            "--expect-prompt",
            right.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    assert_eq!(code, 3, "silence fails the prompt check: {output}");
    assert_eq!(report["prompt"]["failed"], 2, "{report}");
    assert_eq!(
        report["media"]["silent"], 2,
        "and both calls are flagged silent"
    );
    common::send_sigterm(&serve);
    let _ = tokio::time::timeout(Duration::from_secs(20), serve.wait()).await;
}

/// A callee script: gather up to `#`, send back what was gathered, wait for the caller's BYE.
fn say_back_script() -> Value {
    serde_json::json!({"version": 1, "steps": [
        {"answer": {}},
        {"gather": {"max_digits": 16, "first_digit_timeout_ms": 10000}},
        {"send_dtmf": {"from": "digits"}},
        {"pause": {"ms": 60000}}
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_round_trip_against_a_serve_script_that_says_the_digits_back() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let callee = dir.path().join("callee");
    std::fs::create_dir_all(&callee).expect("dir");
    let (mut serve, _rx, sip) = serve_with_script(&callee, &say_back_script()).await;
    let uri = format!("sip:dtmf@{sip}");
    let run = |expect: &'static str, sub: &'static str| {
        let args = [
            "--hold",
            "5s",
            "--send-dtmf",
            "2580*#",
            "--dtmf-after",
            "500ms",
            "--expect-dtmf",
            expect,
        ];
        three_calls(
            dir.path().join(sub),
            uri.clone(),
            args.map(String::from).to_vec(),
        )
    };
    let (code, report, output) = run("2580*", "match").await;
    assert_eq!(code, 0, "every call said the digits back: {output}");
    let d = &report["dtmf"];
    assert_eq!(
        (d["matched"].as_u64(), d["mismatched"].as_u64()),
        (Some(3), Some(0)),
        "{d}"
    );
    assert_eq!(d["sent"], "2580*#");
    // Expecting other digits than the callee says back fails the run.
    let (code, report, output) = run("2581*", "mismatch").await;
    assert_eq!(code, 3, "{output}");
    assert_eq!(report["dtmf"]["mismatched"], 3, "{report}");
    common::send_sigterm(&serve);
    let _ = tokio::time::timeout(Duration::from_secs(20), serve.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_list_per_call_sends_keys_waits_for_them_back_and_hangs_up() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let callee = dir.path().join("callee");
    std::fs::create_dir_all(&callee).expect("dir");
    let (mut serve, _rx, sip) = serve_with_script(&callee, &say_back_script()).await;
    // Each call's steps: wait, send the keys, wait for five keys back, hang up. The hold (60 s)
    // is only a bound: the script ends every call.
    let caller = dir.path().join("caller");
    std::fs::create_dir_all(&caller).expect("dir");
    let steps = caller.join("steps.json");
    let caller_script = serde_json::json!({"version": 1, "steps": [
        {"pause": {"ms": 300}},
        {"send_dtmf": {"digits": "2580*#"}},
        {"gather": {"max_digits": 5, "first_digit_timeout_ms": 8000, "store_as": "back"}},
        {"branch": {"on": "back", "cases": {"2580*": [{"hangup": {"reason": "heard_back"}}]},
                    "default": [{"hangup": {"reason": "wrong_keys"}}]}}
    ]});
    std::fs::write(&steps, caller_script.to_string()).expect("write the steps");
    let csv = caller.join("calls.csv");
    let (code, report, output) = three_calls(
        caller.clone(),
        format!("sip:steps@{sip}"),
        [
            "--script",
            steps.to_str().expect("utf-8 path"),
            "--hold",
            "60s",
            "--expect-dtmf",
            "2580*",
            "--csv",
            csv.to_str().expect("utf-8 path"),
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["calls"]["answered"], 3, "{report}");
    assert_eq!(report["dtmf"]["matched"], 3, "{report}");
    assert_eq!(report["settings"]["script"], steps.to_str().expect("utf-8"));
    // Every call ended by its script's hangup (our BYE), well before the 60 s hold.
    let text = std::fs::read_to_string(&csv).expect("the CSV");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let (reason, duration) = (col("end_reason"), col("duration_ms"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3, "{text}");
    for row in rows {
        assert_eq!(row[reason], "LocalBye", "{text}");
        let ms: u64 = row[duration].parse().expect("a duration");
        assert!(ms < 30_000, "the script hung up, not the hold: {text}");
    }
    common::send_sigterm(&serve);
    let _ = tokio::time::timeout(Duration::from_secs(20), serve.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_list_that_listens_for_the_prompt_to_end_keys_in_time_and_one_that_does_not_misses()
{
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let callee = dir.path().join("callee");
    std::fs::create_dir_all(&callee).expect("dir");
    // The callee plays a 2 s prompt that keys cannot interrupt (keys during it are dropped),
    // then gathers and says back what it gathered.
    let prompt = callee.join("menu.wav");
    write_voice(&prompt, 11, 2000);
    let callee_script = serde_json::json!({"version": 1, "steps": [
        {"answer": {}},
        {"play": {"file": prompt.to_str().expect("utf-8 path"), "barge_in": false}},
        {"gather": {"max_digits": 16, "first_digit_timeout_ms": 3000, "retries": 0}},
        {"send_dtmf": {"from": "digits"}},
        {"pause": {"ms": 60000}}
    ]});
    let (mut serve, _rx, sip) = serve_with_script(&callee, &callee_script).await;
    let run = |first: Value, sub: &'static str| {
        let caller = dir.path().join(sub);
        std::fs::create_dir_all(&caller).expect("dir");
        let steps = caller.join("steps.json");
        let script = serde_json::json!({"version": 1, "steps": [
            first,
            {"send_dtmf": {"digits": "47#"}},
            {"pause": {"ms": 2500}},
            {"hangup": {}}
        ]});
        std::fs::write(&steps, script.to_string()).expect("write the steps");
        let args = [
            "--script".to_owned(),
            steps.to_str().expect("utf-8 path").to_owned(),
            "--hold".to_owned(),
            "30s".to_owned(),
            "--expect-dtmf".to_owned(),
            "47".to_owned(),
        ];
        three_calls(caller, format!("sip:menu@{sip}"), args.to_vec())
    };
    // Listening until the prompt has played and 600 ms of quiet followed: the keys land in
    // the gather and come back.
    let listen = serde_json::json!(
        {"listen": {"until": "silence", "silence_ms": 600, "timeout_ms": 10000}});
    let (code, report, output) = run(listen, "listens").await;
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["dtmf"]["matched"], 3, "{report}");
    // A fixed 300 ms wait keys during the prompt: the keys are lost, nothing comes back.
    let (code, report, output) = run(serde_json::json!({"pause": {"ms": 300}}), "waits").await;
    assert_eq!(code, 3, "{output}");
    assert_eq!(report["dtmf"]["mismatched"], 3, "{report}");
    common::send_sigterm(&serve);
    let _ = tokio::time::timeout(Duration::from_secs(20), serve.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_mix_is_what_the_caller_meets() {
    let _serial = SERIAL.lock().await;
    const CALLS: u64 = 30;
    let dir = tempfile::tempdir().expect("temp dir");
    let callee_json = dir.path().join("callee.json");
    let calls = CALLS.to_string();
    // The caller's calls and one to a routed number.
    let callee_calls = (CALLS + 1).to_string();
    let (mut callee, mut rx) = spawn_callplane(
        dir.path(),
        &[
            "loadgen",
            "--answer",
            "--listen",
            "127.0.0.1:0",
            "--mix",
            "human=40,voicemail=10,silence=10,sit=10,no_answer=10,busy=10,reject=10",
            "--route",
            "forbid*=forbidden",
            "--seed",
            "3",
            "--calls",
            &callee_calls,
            "--json",
            callee_json.to_str().expect("utf-8 path"),
        ],
    );
    let line = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the callee started within 20 s")
        .expect("a first line");
    let listening: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(listening["kind"], "loadgen.listening");
    let sip = listening["sip"].as_str().expect("an address").to_owned();
    let csv = dir.path().join("caller.csv");
    let (code, report, output) = loadgen(
        dir.path(),
        &[],
        &[
            &format!("sip:x@{sip}"),
            "--calls",
            &calls,
            "--cps",
            "20",
            "--concurrency",
            "30",
            "--hold",
            "3s",
            "--ring-timeout",
            "1500ms",
            "--max-lateness",
            "10s",
            "--csv",
            csv.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    assert_eq!(code, 0, "{output}");
    // A number the route sends to `forbidden`.
    let forbidden_dir = dir.path().join("forbidden");
    std::fs::create_dir_all(&forbidden_dir).expect("dir");
    let forbid_uri = format!("sip:forbid-1@{sip}");
    let (_, forbid, _) = loadgen(&forbidden_dir, &[], &[&forbid_uri, "--calls", "1"]).await;
    assert_eq!(forbid["status_mix"]["403"], 1, "{forbid}");
    let status = tokio::time::timeout(Duration::from_secs(30), callee.wait())
        .await
        .expect("the callee ended after --calls calls")
        .expect("wait");
    assert!(status.success());
    let callee: Value =
        serde_json::from_str(&std::fs::read_to_string(&callee_json).expect("the callee's report"))
            .expect("JSON");
    let b = &callee["behaviours"];
    let n = |name: &str, key: &str| b[name][key].as_u64().unwrap_or(0);
    assert_eq!(callee["calls"], CALLS + 1, "{callee}");
    let mix = &report["status_mix"];
    let count = |k: &str| mix[k].as_u64().unwrap_or(0);
    assert_eq!(count("486"), n("busy", "calls"), "{mix} {callee}");
    assert_eq!(count("603"), n("reject", "calls"), "{mix} {callee}");
    assert_eq!(
        report["outcomes"]["no_answer"].as_u64().unwrap_or(0),
        n("no_answer", "calls"),
        "the caller's ring timeout cancelled every no_answer call"
    );
    let answering = ["human", "voicemail", "silence", "sit"];
    let answered: u64 = answering.iter().map(|k| n(k, "answered")).sum();
    assert_eq!(report["calls"]["answered"], answered, "{callee}");
    assert_eq!(count("200"), answered);
    // Seed 3 draws (the draws follow the INVITEs' order, so the counts are the same on every
    // run): some of each kind of ending.
    assert!(
        n("human", "calls") > 0 && n("no_answer", "calls") > 0,
        "{callee}"
    );
    assert!(n("busy", "calls") + n("reject", "calls") > 0, "{callee}");
    assert!(n("sit", "calls") > 0, "{callee}");
    // The caller's rows: each human pressed 1 after its hello; each SIT call was hung up by
    // the callee (RemoteBye) before the caller's 3 s hold.
    let text = std::fs::read_to_string(&csv).expect("the CSV");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect("a column");
    let (dtmf, end) = (col("dtmf_received"), col("end_reason"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let pressed = rows.iter().filter(|r| r[dtmf] == "1").count() as u64;
    assert_eq!(pressed, n("human", "calls"), "{callee}");
    let hung_up = rows.iter().filter(|r| r[end] == "RemoteBye").count() as u64;
    assert_eq!(hung_up, n("sit", "calls"), "{callee}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_callee_sends_the_prompt_back_and_an_early_media_callee_is_heard_before_its_answer()
{
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut callee, mut rx) = spawn_callplane(
        dir.path(),
        &[
            "loadgen",
            "--answer",
            "--listen",
            "127.0.0.1:0",
            "--route",
            "early*=early_media",
            "--route",
            "*=echo",
            "--calls",
            "9",
        ],
    );
    let line = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the callee started within 20 s")
        .expect("a first line");
    let listening: Value = serde_json::from_str(&line).expect("a JSON line");
    let sip = listening["sip"].as_str().expect("an address").to_owned();
    let prompt = dir.path().join("mine.wav");
    write_voice(&prompt, 5, 2000);
    let other = dir.path().join("other.wav");
    write_voice(&other, 6, 2000);
    let run = |expect: &std::path::Path, sub: &'static str| {
        let args = [
            "--play",
            prompt.to_str().expect("utf-8 path"),
            "--expect-prompt",
            expect.to_str().expect("utf-8 path"),
            "--hold",
            "3s",
        ]
        .map(String::from)
        .to_vec();
        three_calls(dir.path().join(sub), format!("sip:echo@{sip}"), args)
    };
    // What comes back is what we played: our own prompt passes the check...
    let (code, report, output) = run(&prompt, "own").await;
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["prompt"]["passed"], 3, "{report}");
    assert_eq!(report["media"]["silent"], 0, "{report}");
    // ...and another prompt does not.
    let (code, report, output) = run(&other, "other").await;
    assert_eq!(code, 3, "{output}");
    assert_eq!(report["prompt"]["failed"], 3, "{report}");
    // The echo answers first and hears after: no early media.
    assert_eq!(report["setup"]["early_media_calls"], 0, "{report}");
    // An early-media callee: 183 with SDP and its 1.2 s "hello" before the 200. Its audio
    // comes before its answer on every call, and the answer after the announcement.
    let (code, report, output) = three_calls(
        dir.path().join("early"),
        format!("sip:early-1@{sip}"),
        ["--hold", "2s"].map(String::from).to_vec(),
    )
    .await;
    assert_eq!(code, 0, "{output}");
    let setup = &report["setup"];
    assert_eq!(setup["early_media_calls"], 3, "{setup}");
    let audio = setup["first_audio_ms"]["max"]
        .as_f64()
        .expect("first audio");
    let answer = setup["answer_ms"]["min"].as_f64().expect("answer");
    assert!(audio + 1000.0 < answer, "{setup}");
    let status = tokio::time::timeout(Duration::from_secs(30), callee.wait())
        .await
        .expect("the callee ended after its 9 calls")
        .expect("wait");
    assert!(status.success());
}
