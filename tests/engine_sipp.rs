//! End-to-end tests of the `callplane` binary (`call`, `serve`) against the real sipp, on
//! loopback UDP: real processes, real sockets, every wait bounded by a timeout.
//!
//! Needs the Debian package `sip-tester` (binary `sipp`). When sipp is missing the tests are
//! skipped with a notice, except under `CI=true`, where they fail: CI must install it.

use std::path::{Path, PathBuf};

mod common;
use common::*;

#[tokio::test]
async fn call_to_sipp_uas_is_answered_and_completes_after_hangup_after() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = spawn_sipp_on_free_port(dir.path(), |port| {
        [
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
            "-timeout",
            "30s",
            "-trace_err",
        ]
        .map(String::from)
        .to_vec()
    })
    .await;
    let uri = format!("sip:service@127.0.0.1:{port}");
    let (status, events, stderr) = run_call(
        dir.path(),
        &["call", &uri, "--hangup-after", "1", "--ring-timeout", "10"],
    )
    .await;
    assert!(
        status.success(),
        "call exit {status}: {stderr}\nevents {events:#?}"
    );
    let ks = kinds(&events);
    for k in [
        "call.created",
        "sip.invite_sent",
        "sip.answered",
        "sip.bye_sent",
        "call.completed",
    ] {
        assert!(ks.contains(&k), "{k} missing from {ks:?}");
    }
    let done = last_of(&events, "call.completed");
    assert_eq!(done["details"]["outcome"], "answered");
    assert_eq!(done["details"]["sip_status"], 200);
    let duration = done["details"]["duration_ms"]
        .as_u64()
        .expect("duration_ms");
    assert!(
        (900..5000).contains(&duration),
        "duration {duration} ms for --hangup-after 1"
    );
    // Offsets are monotonic along the timeline.
    let offsets: Vec<u64> = events
        .iter()
        .filter_map(|e| e["offset_us"].as_u64())
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[0] <= w[1]),
        "offsets {offsets:?}"
    );
    let (sipp_status, sipp_err) = wait_child(sipp, "sipp").await;
    assert!(
        sipp_status.success(),
        "sipp UAS failed ({sipp_status}): {sipp_err}"
    );
}

#[tokio::test]
async fn call_to_busy_uas_exits_with_busy_code_and_reports_486_with_q850_cause() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = sipp_uas_scenario(dir.path(), "busy_uas.xml", &[]).await;
    let uri = format!("sip:busy@127.0.0.1:{port}");
    let (status, events, stderr) =
        run_call(dir.path(), &["call", &uri, "--ring-timeout", "10"]).await;
    assert_eq!(
        status.code(),
        Some(2),
        "busy exit code; stderr {stderr}\nevents {events:#?}"
    );
    let failed = last_of(&events, "call.failed");
    assert_eq!(failed["details"]["outcome"], "busy");
    assert_eq!(failed["details"]["sip_status"], 486);
    assert_eq!(failed["details"]["reason"], "Busy Here");
    assert_eq!(failed["details"]["q850_cause"], 17);
    assert!(
        kinds(&events).contains(&"sip.trying"),
        "{:?}",
        kinds(&events)
    );
    assert!(!kinds(&events).contains(&"sip.answered"));
    let (sipp_status, sipp_err) = wait_child(sipp, "sipp").await;
    assert!(
        sipp_status.success(),
        "sipp busy UAS failed ({sipp_status}): {sipp_err}"
    );
}

#[tokio::test]
async fn serve_answers_sipp_uac_calls_and_exits_zero_on_sigterm() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, mut rx) = spawn_callplane(dir.path(), &["serve", "--sip", "127.0.0.1:0"]);
    let mut seen = Vec::new();
    let listening = wait_line(&mut rx, &mut seen, |v| v["kind"] == "serve.listening").await;
    let sip_addr = listening["sip"].as_str().expect("sip address").to_owned();
    let calls = 3;
    let sipp = spawn_sipp(
        dir.path(),
        &[
            "-sn",
            "uac",
            &sip_addr,
            "-i",
            "127.0.0.1",
            "-m",
            &calls.to_string(),
            "-r",
            "10",
            "-d",
            "300",
            "-timeout",
            "30s",
            "-trace_err",
        ]
        .map(String::from),
    );
    let (sipp_status, sipp_err) = wait_child(sipp, "sipp").await;
    assert!(
        sipp_status.success(),
        "sipp UAC failed ({sipp_status}): {sipp_err}"
    );
    let mut completed = 0;
    while completed < calls {
        let done = wait_line(&mut rx, &mut seen, |v| {
            v["kind"] == "call.completed" || v["kind"] == "call.failed"
        })
        .await;
        assert_eq!(done["kind"], "call.completed", "{done}");
        assert_eq!(done["details"]["outcome"], "answered");
        assert!(done["details"]["duration_ms"].as_u64().is_some());
        completed += 1;
    }
    let ks = kinds(&seen);
    assert_eq!(
        ks.iter().filter(|k| **k == "sip.bye_received").count(),
        calls
    );
    send_sigterm(&serve);
    let (status, stderr) = wait_child(serve, "callplane serve").await;
    assert!(
        status.success(),
        "serve exit {status} after SIGTERM: {stderr}"
    );
}

/// Root mean square of one channel of an interleaved stereo WAV.
fn channel_rms(path: &Path, channel: usize) -> f64 {
    let mut reader = hound::WavReader::open(path).expect("open the recording");
    let spec = reader.spec();
    assert_eq!(spec.channels, 2, "recordings are stereo");
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let picked: Vec<f64> = samples
        .chunks_exact(2)
        .map(|frame| f64::from(frame[channel]))
        .collect();
    assert!(!picked.is_empty(), "the recording has audio frames");
    (picked.iter().map(|s| s * s).sum::<f64>() / picked.len() as f64).sqrt()
}

#[tokio::test]
async fn call_records_the_audio_a_sipp_uas_plays_on_the_left_channel() {
    if !sipp_available() {
        return;
    }
    assert!(
        Path::new(G711A_PCAP).exists(),
        "{G711A_PCAP} is missing (it ships with the sip-tester package)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = sipp_uas_scenario(dir.path(), "pcap_uas.xml", &[]).await;
    let uri = format!("sip:play@127.0.0.1:{port}");
    let wav = dir.path().join("out.wav");
    let wav_arg = wav.to_str().expect("utf-8 path");
    // No --hangup-after: sipp hangs up after 3 s of the pcap.
    let (status, events, stderr) = run_call(
        dir.path(),
        &["call", &uri, "--record", wav_arg, "--ring-timeout", "10"],
    )
    .await;
    assert!(
        status.success(),
        "call exit {status}: {stderr}\nevents {events:#?}"
    );
    let ks = kinds(&events);
    for k in [
        "sip.answered",
        "media.first_packet_in",
        "media.first_packet_out",
        "recording.started",
        "sip.bye_received",
        "recording.stopped",
        "recording.ready",
        "call.completed",
    ] {
        assert!(ks.contains(&k), "{k} missing from {ks:?}");
    }
    let done = last_of(&events, "call.completed");
    assert_eq!(done["details"]["recording"]["path"], wav_arg);
    assert!(
        wav.exists(),
        "the finished recording is at {}",
        wav.display()
    );
    let left = channel_rms(&wav, 0);
    let right = channel_rms(&wav, 1);
    // Left is what the callee sent (speech from the pcap); right is what we sent (silence).
    assert!(left > 300.0, "left channel RMS {left}: no speech recorded");
    assert!(
        right < 50.0,
        "right channel RMS {right}: we sent only silence"
    );
    let (sipp_status, sipp_err) = wait_child(sipp, "sipp").await;
    assert!(
        sipp_status.success(),
        "sipp pcap UAS failed ({sipp_status}): {sipp_err}"
    );
}

#[tokio::test]
async fn serve_gathers_rfc4733_digits_a_sipp_uac_sends() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, mut rx) = spawn_callplane(
        dir.path(),
        &["serve", "--sip", "127.0.0.1:0", "--gather", "2"],
    );
    let mut seen = Vec::new();
    let listening = wait_line(&mut rx, &mut seen, |v| v["kind"] == "serve.listening").await;
    let sip_addr = listening["sip"].as_str().expect("sip address").to_owned();
    let scenario = fixture("dtmf_uac.xml");
    let sipp = spawn_sipp(
        dir.path(),
        &[
            "-sf",
            scenario.to_str().expect("utf-8 path"),
            &sip_addr,
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-m",
            "1",
            "-timeout",
            "30s",
            "-trace_err",
        ]
        .map(String::from),
    );
    let (sipp_status, sipp_err) = wait_child(sipp, "sipp").await;
    assert!(
        sipp_status.success(),
        "sipp DTMF UAC failed ({sipp_status}): {sipp_err}"
    );
    let done = wait_line(&mut rx, &mut seen, |v| {
        v["kind"] == "call.completed" || v["kind"] == "call.failed"
    })
    .await;
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    assert_eq!(done["details"]["digits"], "12");
    let digits: Vec<&str> = seen
        .iter()
        .filter(|e| e["kind"] == "dtmf.received")
        .map(|e| {
            assert_eq!(e["details"]["method"], "rfc4733");
            e["details"]["digit"].as_str().expect("digit")
        })
        .collect();
    assert_eq!(digits, ["1", "2"]);
    assert_eq!(
        last_of(&seen, "gather.completed")["details"]["digits"],
        "12"
    );
    send_sigterm(&serve);
    let (status, stderr) = wait_child(serve, "callplane serve").await;
    assert!(
        status.success(),
        "serve exit {status} after SIGTERM: {stderr}"
    );
}

#[tokio::test]
async fn serve_runs_a_script_that_answers_records_and_gathers_digits() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    write_tone(&dir.path().join("question.wav"), 2000);
    let script = r#"{
        "version": 1,
        "steps": [
            { "answer": {} },
            { "record": { "action": "start" } },
            { "gather": { "prompt": "question", "max_digits": 2, "store_as": "choice" } },
            { "record": { "action": "stop" } },
            { "pause": { "ms": 20000 } }
        ]
    }"#;
    let script_path = dir.path().join("survey.json");
    std::fs::write(&script_path, script).expect("write the script");
    let recordings = dir.path().join("rec");
    let (serve, mut rx) = spawn_callplane(
        dir.path(),
        &[
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--script",
            script_path.to_str().expect("utf-8 path"),
            "--recordings",
            recordings.to_str().expect("utf-8 path"),
        ],
    );
    let mut seen = Vec::new();
    let listening = wait_line(&mut rx, &mut seen, |v| v["kind"] == "serve.listening").await;
    let sip_addr = listening["sip"].as_str().expect("sip address").to_owned();
    let scenario = fixture("dtmf_uac.xml");
    let sipp = spawn_sipp(
        dir.path(),
        &[
            "-sf",
            scenario.to_str().expect("utf-8 path"),
            &sip_addr,
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-m",
            "1",
            "-timeout",
            "30s",
            "-trace_err",
        ]
        .map(String::from),
    );
    let (sipp_status, sipp_err) = wait_child(sipp, "sipp").await;
    assert!(
        sipp_status.success(),
        "sipp DTMF UAC failed ({sipp_status}): {sipp_err}"
    );
    let done = wait_line(&mut rx, &mut seen, |v| {
        v["kind"] == "call.completed" || v["kind"] == "call.failed"
    })
    .await;
    let ks = kinds(&seen);
    for k in [
        "sip.answered",
        "prompt.started",
        "recording.started",
        "dtmf.received",
        "gather.completed",
        "recording.stopped",
        "recording.ready",
        "sip.bye_received",
    ] {
        assert!(ks.contains(&k), "{k} missing from {ks:?}");
    }
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    let script_result = &done["details"]["script"];
    assert_eq!(script_result["variables"]["choice"], "12", "{done}");
    // The caller hung up during the pause.
    assert_eq!(script_result["outcome"]["kind"], "peer_hangup", "{done}");
    // The digit barged in on the 2 s prompt.
    assert!(ks.contains(&"prompt.interrupted"), "{ks:?}");
    let gathered = last_of(&seen, "gather.completed");
    assert_eq!(gathered["details"]["digits"], "12");
    assert_eq!(gathered["details"]["variable"], "choice");
    // The recording was stopped after the gather, so it is shorter than the call.
    let rec = &done["details"]["recording"];
    let path = PathBuf::from(rec["path"].as_str().expect("recording path"));
    assert!(path.starts_with(&recordings) && path.exists(), "{rec}");
    let rec_ms = rec["duration_ms"].as_u64().expect("recording duration");
    let call_ms = done["details"]["duration_ms"]
        .as_u64()
        .expect("call duration");
    assert!(
        rec_ms > 0 && rec_ms < call_ms,
        "recording {rec_ms} ms, call {call_ms} ms"
    );
    // Right channel: what we sent, the tone, until the barge-in.
    assert!(
        channel_rms(&path, 1) > 100.0,
        "the prompt is in the recording"
    );
    send_sigterm(&serve);
    let (status, stderr) = wait_child(serve, "callplane serve").await;
    assert!(
        status.success(),
        "serve exit {status} after SIGTERM: {stderr}"
    );
}

#[tokio::test]
async fn call_cancels_after_ring_timeout_and_exits_with_no_answer_code() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = sipp_uas_scenario(dir.path(), "noanswer_uas.xml", &[]).await;
    let uri = format!("sip:nobody@127.0.0.1:{port}");
    let (status, events, stderr) =
        run_call(dir.path(), &["call", &uri, "--ring-timeout", "1"]).await;
    assert_eq!(
        status.code(),
        Some(3),
        "no-answer exit code; stderr {stderr}\nevents {events:#?}"
    );
    let ks = kinds(&events);
    for k in ["sip.ringing", "sip.cancel_sent", "call.failed"] {
        assert!(ks.contains(&k), "{k} missing from {ks:?}");
    }
    let failed = last_of(&events, "call.failed");
    assert_eq!(failed["details"]["outcome"], "no_answer");
    assert_eq!(failed["details"]["sip_status"], 487);
    // The CANCEL left after the ring timeout, not before.
    let cancel = last_of(&events, "sip.cancel_sent")["offset_us"]
        .as_u64()
        .expect("offset");
    assert!(cancel >= 1_000_000, "CANCEL at {cancel} µs");
    let (sipp_status, sipp_err) = wait_child(sipp, "sipp").await;
    assert!(
        sipp_status.success(),
        "sipp no-answer UAS failed ({sipp_status}): {sipp_err}"
    );
}

#[tokio::test]
async fn serve_drains_on_sigterm_refusing_new_calls_with_503_and_hanging_up_live_ones() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, mut rx) = spawn_callplane(
        dir.path(),
        &["serve", "--sip", "127.0.0.1:0", "--drain-timeout", "1"],
    );
    let mut seen = Vec::new();
    let listening = wait_line(&mut rx, &mut seen, |v| v["kind"] == "serve.listening").await;
    let sip_addr = listening["sip"].as_str().expect("sip address").to_owned();
    let live = spawn_sipp(
        dir.path(),
        &[
            "-sf",
            fixture("uac_wait_bye.xml").to_str().expect("utf-8 path"),
            &sip_addr,
            "-i",
            "127.0.0.1",
            "-m",
            "1",
            "-timeout",
            "30s",
            "-trace_err",
        ]
        .map(String::from),
    );
    wait_line(&mut rx, &mut seen, |v| v["kind"] == "sip.answered").await;
    send_sigterm(&serve);
    wait_line(&mut rx, &mut seen, |v| v["kind"] == "serve.draining").await;
    let late = spawn_sipp(
        dir.path(),
        &[
            "-sf",
            fixture("uac_expect_503.xml").to_str().expect("utf-8 path"),
            &sip_addr,
            "-i",
            "127.0.0.1",
            "-m",
            "1",
            "-timeout",
            "30s",
            "-trace_err",
        ]
        .map(String::from),
    );
    let (late_status, late_err) = wait_child(late, "sipp (late caller)").await;
    assert!(
        late_status.success(),
        "the late INVITE did not get 503 + Retry-After ({late_status}): {late_err}"
    );
    let (live_status, live_err) = wait_child(live, "sipp (live call)").await;
    assert!(
        live_status.success(),
        "the live call did not get our BYE ({live_status}): {live_err}"
    );
    let done = wait_line(&mut rx, &mut seen, |v| {
        v["kind"] == "call.completed" || v["kind"] == "call.failed"
    })
    .await;
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    assert!(kinds(&seen).contains(&"sip.bye_sent"), "{:?}", kinds(&seen));
    let (status, stderr) = wait_child(serve, "callplane serve").await;
    assert!(
        status.success(),
        "serve exit {status} after draining: {stderr}"
    );
    // Only the live call was a call: the refused one never became one.
    assert_eq!(
        kinds(&seen)
            .iter()
            .filter(|k| **k == "call.created")
            .count(),
        1
    );
}
