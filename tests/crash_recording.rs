//! `kill -9` of `callplane serve` in the middle of a recorded call loses at most about a second
//! of the recording: the writer makes the `.wav.part` a valid WAV at every flush (one a second
//! of audio, fsync'd), and the next `serve` start repairs and renames it (`recording.recovered`).
//!
//! Real processes on loopback UDP: serve records, a `callplane call` plays a long tone into it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

mod common;
use common::*;

/// Upper bound for any one wait.
const WAIT: Duration = Duration::from_secs(30);
/// Audio that must be on disk before the kill, so the check means something.
const RECORDED_BEFORE_KILL: Duration = Duration::from_secs(3);
/// When to kill, in microseconds of call audio: 0.7 s after the flush at 3 s.
const KILL_AT_US: u64 = 3_700_000;

/// Start the callplane binary with `args`; its stdout lines come on the returned channel.
fn spawn_callplane(dir: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_callplane"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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

/// The next JSON line for which `pred` holds (panics after the time limit).
async fn wait_line(
    rx: &mut mpsc::Receiver<String>,
    seen: &mut Vec<Value>,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let line = timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("the expected line did not come in time; saw {seen:#?}"))
            .unwrap_or_else(|| panic!("stdout closed before the expected line; saw {seen:#?}"));
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        seen.push(v.clone());
        if pred(&v) {
            return v;
        }
    }
}

fn is_kind(v: &Value, kind: &str) -> bool {
    v["kind"] == kind
}

/// Start `serve` recording into `recordings`; returns once it listens.
async fn start_serve(
    dir: &Path,
    port: u16,
    recordings: &Path,
    seen: &mut Vec<Value>,
) -> (Child, mpsc::Receiver<String>) {
    let sip = format!("127.0.0.1:{port}");
    let (child, mut rx) = spawn_callplane(
        dir,
        &[
            "serve",
            "--sip",
            &sip,
            // A free port: the default 8080 collides with anything else on the machine.
            "--api",
            "127.0.0.1:0",
            "--recordings",
            recordings.to_str().expect("utf-8 path"),
        ],
    );
    wait_line(&mut rx, seen, |v| is_kind(v, "serve.listening")).await;
    (child, rx)
}

/// The one `*.wav.part` in `dir`, if any.
fn part_file(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_str().is_some_and(|s| s.ends_with(".wav.part")))
}

fn unix_us_now() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_micros()).expect("fits")
}

#[tokio::test]
async fn kill_9_of_serve_mid_call_keeps_the_recording_up_to_a_second_before_the_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recordings = dir.path().join("rec");
    std::fs::create_dir(&recordings).expect("create the recordings dir");
    let tone = dir.path().join("tone.wav");
    write_tone(&tone, 30_000);

    let mut seen = Vec::new();
    let port = free_udp_port();
    let (mut serve, mut serve_rx) = start_serve(dir.path(), port, &recordings, &mut seen).await;

    // The caller keeps sending audio for longer than the test runs.
    let uri = format!("sip:rec@127.0.0.1:{port}");
    let (_caller, _caller_rx) = spawn_callplane(
        dir.path(),
        &[
            "call",
            &uri,
            "--play",
            tone.to_str().expect("utf-8 path"),
            "--hangup-after",
            "60",
            "--ring-timeout",
            "10",
        ],
    );
    // Both come, in no promised order: the first packet can arrive before the recording has
    // started (and the other way round).
    let both = wait_for_all(
        &mut serve_rx,
        &mut seen,
        &["recording.started", "media.first_packet_in"],
        WAIT,
    )
    .await;
    let started = &both[0];
    let rate = started["details"]["rate"].as_u64().expect("rate");
    let channels = started["details"]["channels"].as_u64().expect("channels");
    let rec_start_us = started["at_unix_us"].as_u64().expect("at_unix_us");

    // Poll the .part until more than RECORDED_BEFORE_KILL of audio is durably on disk, and kill
    // late in the next second of audio: the worst case, where most of a second is only in memory.
    let bytes_per_sec = rate * channels * 2;
    let want = 44 + bytes_per_sec * RECORDED_BEFORE_KILL.as_secs();
    let deadline = Instant::now() + WAIT;
    let part = loop {
        let found = part_file(&recordings);
        if let Some(p) = &found
            && std::fs::metadata(p).is_ok_and(|m| m.len() >= want)
            && unix_us_now().saturating_sub(rec_start_us) >= KILL_AT_US
        {
            break found.expect("checked");
        }
        assert!(
            Instant::now() < deadline,
            "the recording did not reach {want} bytes in time: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // SIGKILL: no drain, no finalize, no destructor.
    let kill_us = unix_us_now();
    serve.start_kill().expect("kill -9 serve");
    timeout(WAIT, serve.wait())
        .await
        .expect("serve died in time")
        .expect("wait for serve");
    let part_len = std::fs::metadata(&part)
        .expect("the .part outlives the kill")
        .len();
    let audio_at_kill = Duration::from_micros(kill_us.saturating_sub(rec_start_us));

    // The next start repairs the .part and says so.
    let port2 = free_udp_port();
    let (mut serve2, mut rx2) = {
        let sip = format!("127.0.0.1:{port2}");
        spawn_callplane(
            dir.path(),
            &[
                "serve",
                "--sip",
                &sip,
                "--api",
                "127.0.0.1:0",
                "--recordings",
                recordings.to_str().expect("utf-8 path"),
            ],
        )
    };
    let recovered = wait_line(&mut rx2, &mut seen, |v| {
        is_kind(v, "recording.recovered") || is_kind(v, "serve.listening")
    })
    .await;
    assert_eq!(
        recovered["kind"],
        "recording.recovered",
        "serve did not recover {} before listening",
        part.display()
    );
    let wav = PathBuf::from(recovered["path"].as_str().expect("recovered path"));
    assert_eq!(wav.with_extension("wav.part"), part, "{recovered}");
    assert!(!part.exists(), "the .part is gone after recovery");

    let reader = hound::WavReader::open(&wav).expect("hound reads the recovered WAV");
    let spec = reader.spec();
    assert_eq!(
        (u64::from(spec.sample_rate), u64::from(spec.channels)),
        (rate, channels)
    );
    let recovered_len =
        Duration::from_secs_f64(f64::from(reader.duration()) / f64::from(spec.sample_rate));
    eprintln!(
        "recorded at the kill {audio_at_kill:?} (.part {part_len} bytes), recovered {recovered_len:?}"
    );
    assert!(
        recovered_len + Duration::from_secs(1) >= audio_at_kill,
        "recovered {recovered_len:?} of audio, but {audio_at_kill:?} had been recorded at the kill \
         (.part was {part_len} bytes)"
    );
    // And nothing invented: not more than was recorded.
    assert!(
        recovered_len <= audio_at_kill + Duration::from_millis(500),
        "recovered {recovered_len:?}, more than the {audio_at_kill:?} recorded"
    );

    // The call the kill left live is ended at its recording's last frame, not at this restart
    // (docs/api.md "Estimated ends"), and says its end is estimated.
    let listening = wait_line(&mut rx2, &mut seen, |v| is_kind(v, "serve.listening")).await;
    let key = seen
        .iter()
        .find(|v| is_kind(v, "serve.bootstrap"))
        .and_then(|v| v["key"].as_str())
        .expect("the first start printed the bootstrap key")
        .to_owned();
    let api = ServeClient::new(
        format!("http://{}", listening["api"].as_str().expect("api address")),
        key,
    );
    // The only call: the inbound one (its recording is named by the engine, not by the row).
    let list = api.get("/v1/calls").await;
    let call_id = list["items"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the call is listed: {list:#}"));
    let call = api.get(&format!("/v1/calls/{call_id}")).await;
    // Its recovered recording is attached to it, found through its `recording.started`.
    assert_eq!(
        call["recordings"].as_array().map(Vec::len),
        Some(1),
        "{call:#}"
    );
    let ended_at = call["ended_at_us"].as_u64().expect("ended_at_us");
    assert_eq!(call["estimated_end"], true, "{call:#}");
    assert!(
        ended_at <= kill_us && ended_at + 1_500_000 >= kill_us,
        "ended_at {ended_at} is not within 1.5 s before the kill at {kill_us}: {call:#}"
    );
    serve2.start_kill().expect("stop the second serve");
    let _ = timeout(WAIT, serve2.wait()).await;
}
