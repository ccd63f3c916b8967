//! In-process tests of the engine API: two engines on loopback call each other.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sip::message::Uri;
use tokio::sync::broadcast;
use tokio::time::timeout;

use super::*;
use crate::script::parse;

const WAIT: Duration = Duration::from_secs(20);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

async fn engine(inbound: InboundConfig, max_calls: usize) -> Engine {
    engine_with_workers(
        inbound,
        max_calls,
        EngineConfig::new(loopback()).media_workers,
    )
    .await
}

/// An engine whose calls' media runs in `media_workers` workers.
async fn engine_with_workers(
    inbound: InboundConfig,
    max_calls: usize,
    media_workers: usize,
) -> Engine {
    let mut config = EngineConfig::new(loopback());
    config.inbound = inbound;
    config.max_calls = max_calls;
    config.media_workers = media_workers;
    Engine::start(config).await.expect("engine starts")
}

fn request_to(target: &Engine) -> OriginateRequest {
    let dest = target.handle.sip_local_addr();
    OriginateRequest {
        sip: Default::default(),
        alternates: Vec::new(),
        to: Uri::parse(format!("sip:test@{dest}").as_bytes()).expect("uri"),
        destination: dest,
        from: None,
        play: None,
        gather_digits: 0,
        record: None,
        ring_timeout: Duration::from_secs(10),
        transport: sip::transaction::Transport::Udp,
        send_dtmf: Vec::new(),
        dtmf_after: Duration::ZERO,
        hangup_after: None,
        script: None,
        prompts: None,
        prompt_scope: crate::engine::PromptScope::Local,
        tag: None,
        variables: Default::default(),
        max_duration: None,
    }
}

/// Every event of `call` up to and including its final one.
async fn timeline(rx: &mut broadcast::Receiver<CallEvent>, call: Option<CallId>) -> Vec<CallEvent> {
    let mut out = Vec::new();
    loop {
        let ev = timeout(WAIT, rx.recv())
            .await
            .expect("the call ended in time")
            .expect("events flow");
        if call.is_some_and(|c| c != ev.call_id) {
            continue;
        }
        let last = ev.is_final();
        out.push(ev);
        if last {
            return out;
        }
    }
}

fn kinds(events: &[CallEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind).collect()
}

fn details<'a>(events: &'a [CallEvent], kind: &str) -> &'a Value {
    &events
        .iter()
        .rev()
        .find(|e| e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", kinds(events)))
        .details
}

fn write_tone(path: &Path, ms: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create");
    for n in 0..(8 * ms) {
        let v = (f64::from(n) / 8000.0 * 1000.0 * std::f64::consts::TAU).sin() * 8000.0;
        w.write_sample(v as i16).expect("sample");
    }
    w.finalize().expect("finalize");
}

#[tokio::test]
async fn scripted_callee_plays_a_prompt_the_caller_records_then_hangs_up() {
    prompt_record_hangup(EngineConfig::new(loopback()).media_workers).await;
}

/// The same call with one media worker per engine: all of an engine's sessions share it,
/// its tick and its epoll set.
#[tokio::test]
async fn one_media_worker_per_engine_plays_records_and_reports_the_same() {
    prompt_record_hangup(1).await;
}

async fn prompt_record_hangup(media_workers: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tone(&dir.path().join("hello.wav"), 600);
    let script = parse(
        r#"{"version": 1, "steps": [
            {"answer": {}}, {"play": {"file": "hello"}}, {"hangup": {"reason": "bye_now"}}
        ]}"#,
    )
    .expect("script");
    let callee = engine_with_workers(
        InboundConfig {
            script: Some(Arc::new(script)),
            prompts: Some(dir.path().to_path_buf()),
            ..InboundConfig::default()
        },
        10,
        media_workers,
    )
    .await;
    let caller = engine_with_workers(InboundConfig::default(), 10, media_workers).await;
    let mut callee_events = callee.handle.subscribe();
    let mut caller_events = caller.handle.subscribe();
    let wav = dir.path().join("heard.wav");
    let mut request = request_to(&callee);
    request.record = Some(wav.clone());
    let id = caller.handle.originate(request).await.expect("originate");

    let out = timeline(&mut caller_events, Some(id)).await;
    let ks = kinds(&out);
    for k in [
        "call.created",
        "sip.invite_sent",
        "sip.ringing",
        "sip.answered",
        "media.first_packet_in",
        "sip.bye_received",
        "recording.ready",
        "call.completed",
    ] {
        assert!(ks.contains(&k), "{k} missing from {ks:?}");
    }
    let done = details(&out, "call.completed");
    assert_eq!(done["outcome"], "answered");
    assert!(
        done["duration_ms"].as_u64().expect("duration") >= 500,
        "{done}"
    );
    // The whole call's quality comes once, before the final event, every key present; a
    // clean loopback call shows no loss and G.711's MOS (docs/media/quality.md).
    let calls: Vec<(usize, &CallEvent)> = out
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == "media.quality" && e.details["scope"] == "call")
        .collect();
    assert_eq!(calls.len(), 1, "{ks:?}");
    let (at, q) = calls[0];
    let ended = out.iter().position(|e| e.kind == "call.completed");
    assert!(ended.is_some_and(|e| at < e), "{ks:?}");
    let q = &q.details;
    for key in [
        "scope",
        "codec",
        "ptime_ms",
        "expected",
        "received",
        "lost",
        "loss_percent",
        "late",
        "late_percent",
        "concealed",
        "max_burst",
        "burst_ratio",
        "jitter_us",
        "rtt_us",
        "playout_delay_us",
        "one_way_delay_us",
        "r",
        "mos",
        "remote",
    ] {
        assert!(q.get(key).is_some(), "{key} missing from {q}");
    }
    assert_eq!(q["lost"], 0, "{q}");
    assert_eq!(q["loss_percent"], 0.0, "{q}");
    assert_eq!(q["ptime_ms"], 20, "{q}");
    assert_eq!(q["expected"], q["received"], "{q}");
    assert_eq!(q["expected"], done["rtp"]["expected_in"], "{q} vs {done}");
    assert!(q["mos"].as_f64().expect("mos") >= 4.3, "{q}");

    let inbound = timeline(&mut callee_events, None).await;
    let ks = kinds(&inbound);
    for k in [
        "prompt.started",
        "prompt.finished",
        "sip.bye_sent",
        "call.completed",
    ] {
        assert!(ks.contains(&k), "{k} missing from {ks:?}");
    }
    let done = details(&inbound, "call.completed");
    assert_eq!(done["hangup_reason"], "bye_now");
    assert_eq!(done["script"]["outcome"]["kind"], "hangup");

    // What the caller recorded on its left channel is the callee's tone.
    let mut reader = hound::WavReader::open(&wav).expect("recording");
    let left: Vec<f64> = reader
        .samples::<i16>()
        .map(|s| f64::from(s.expect("sample")))
        .step_by(2)
        .collect();
    let rms = (left.iter().map(|s| s * s).sum::<f64>() / left.len() as f64).sqrt();
    assert!(rms > 1000.0, "left RMS {rms}");
}

#[tokio::test]
async fn a_full_engine_answers_503_and_the_caller_reports_network_error() {
    let callee = engine(InboundConfig::default(), 0).await;
    let caller = engine(InboundConfig::default(), 10).await;
    let mut events = caller.handle.subscribe();
    let id = caller
        .handle
        .originate(request_to(&callee))
        .await
        .expect("originate");
    let out = timeline(&mut events, Some(id)).await;
    let failed = details(&out, "call.failed");
    assert_eq!(failed["outcome"], "network_error");
    assert_eq!(failed["sip_status"], 503);
}

#[tokio::test]
async fn hangup_while_ringing_cancels_both_sides() {
    // The callee's script never answers.
    let script = parse(r#"{"version": 1, "steps": [{"pause": {"ms": 60000}}]}"#).expect("script");
    let callee = engine(
        InboundConfig {
            script: Some(Arc::new(script)),
            ..InboundConfig::default()
        },
        10,
    )
    .await;
    let caller = engine(InboundConfig::default(), 10).await;
    let mut callee_events = callee.handle.subscribe();
    let mut events = caller.handle.subscribe();
    let id = caller
        .handle
        .originate(request_to(&callee))
        .await
        .expect("originate");
    loop {
        let ev = timeout(WAIT, events.recv())
            .await
            .expect("ringing in time")
            .expect("events");
        if ev.kind == "sip.ringing" {
            break;
        }
    }
    caller.handle.hangup(id).await.expect("hangup");
    let out = timeline(&mut events, Some(id)).await;
    assert!(
        kinds(&out).contains(&"sip.cancel_sent"),
        "{:?}",
        kinds(&out)
    );
    let failed = details(&out, "call.failed");
    assert_eq!(failed["outcome"], "cancelled");
    assert_eq!(failed["sip_status"], 487);
    let inbound = timeline(&mut callee_events, None).await;
    assert_eq!(details(&inbound, "call.failed")["outcome"], "cancelled");
}

#[tokio::test]
async fn drain_refuses_new_calls_and_returns_when_none_is_left() {
    let callee = engine(InboundConfig::default(), 10).await;
    timeout(WAIT, callee.handle.drain(Duration::from_secs(1)))
        .await
        .expect("drained in time")
        .expect("drain");
    let err = callee
        .handle
        .originate(request_to(&callee))
        .await
        .expect_err("a draining engine places no calls");
    assert!(matches!(err, EngineError::Draining), "{err}");
    callee.handle.shutdown().await.expect("shutdown");
    timeout(WAIT, callee.join()).await.expect("dispatcher ends");
}

#[tokio::test]
async fn inbound_calls_are_answered_by_the_dialed_user() {
    use media::dtmf::Digit;
    let routes = [
        ("busy", InboundAnswer::Reject(486)),
        ("ring", InboundAnswer::Ring),
        (
            "press",
            InboundAnswer::Answer {
                send_dtmf: vec![Digit::from_char('4').expect("digit")],
                dtmf_after: Duration::from_millis(200),
            },
        ),
    ];
    let callee = engine(
        InboundConfig {
            by_user: Arc::new(routes.into_iter().map(|(u, a)| (u.to_owned(), a)).collect()),
            ..InboundConfig::default()
        },
        10,
    )
    .await;
    let caller = engine(InboundConfig::default(), 10).await;
    let mut events = caller.handle.subscribe();
    let to = |user: &str| {
        let mut r = request_to(&callee);
        r.to = Uri::parse(format!("sip:{user}@{}", r.destination).as_bytes()).expect("uri");
        r
    };

    let id = caller
        .handle
        .originate(to("busy"))
        .await
        .expect("originate");
    let out = timeline(&mut events, Some(id)).await;
    let failed = details(&out, "call.failed");
    assert_eq!(
        (failed["outcome"].as_str(), failed["sip_status"].as_i64()),
        (Some("busy"), Some(486)),
        "{failed}"
    );

    let mut ring = to("ring");
    ring.ring_timeout = Duration::from_millis(700);
    let id = caller.handle.originate(ring).await.expect("originate");
    let out = timeline(&mut events, Some(id)).await;
    assert!(kinds(&out).contains(&"sip.ringing"), "{:?}", kinds(&out));
    assert_eq!(details(&out, "call.failed")["outcome"], "no_answer");

    let mut press = to("press");
    press.gather_digits = 1;
    press.hangup_after = Some(Duration::from_secs(3));
    let id = caller.handle.originate(press).await.expect("originate");
    let out = timeline(&mut events, Some(id)).await;
    assert_eq!(
        details(&out, "gather.completed")["digits"],
        "4",
        "{:?}",
        kinds(&out)
    );
    assert_eq!(details(&out, "call.completed")["outcome"], "answered");

    // A user not listed gets the default: answered at once.
    let mut other = to("someone");
    other.hangup_after = Some(Duration::from_millis(100));
    let id = caller.handle.originate(other).await.expect("originate");
    let out = timeline(&mut events, Some(id)).await;
    assert_eq!(details(&out, "call.completed")["outcome"], "answered");
}
