//! End-to-end scenarios of the `callplane` binary against the real sipp (and against itself),
//! on loopback: the CANCEL/200 race, early media, in-band DTMF, recording both directions,
//! signals during `call`, SIP over TCP; plus the engine's shared prompt cache, in process.
//! Real processes, real sockets, every wait bounded by a timeout.
//!
//! Needs the Debian package `sip-tester` (binary `sipp`). When sipp is missing the tests are
//! skipped with a notice, except under `CI=true`, where they fail: CI must install it.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Child;
use tokio::time::timeout;

mod common;
use common::*;

/// Arguments to run sipp with scenario `xml` on `port` (`None`: sipp takes the first free port
/// from 5060 up, fine for a caller nobody calls back), with RTP on loopback (sipp takes the first
/// free media port from 6000 up and puts it in its SDP).
fn sipp_args(xml: &str, port: Option<u16>, extra: &[&str]) -> Vec<String> {
    let scenario = fixture(xml);
    let mut args: Vec<String> = [
        "-sf",
        scenario.to_str().expect("utf-8 path"),
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
    .map(String::from)
    .to_vec();
    if let Some(port) = port {
        args.extend(["-p".to_owned(), port.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

async fn assert_sipp_ok(sipp: Child) {
    let (status, err) = wait_child(sipp, "sipp").await;
    assert!(status.success(), "sipp failed ({status}): {err}");
}

fn position(events: &[Value], kind: &str) -> usize {
    events
        .iter()
        .position(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", kinds(events)))
}

fn offset_us(events: &[Value], kind: &str) -> u64 {
    events[position(events, kind)]["offset_us"]
        .as_u64()
        .expect("offset_us")
}

fn write_wav(path: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create");
    for s in samples {
        w.write_sample(*s).expect("sample");
    }
    w.finalize().expect("finalize");
}

/// `ms` milliseconds of a 1 kHz sine at 8 kHz.
fn tone_1k(ms: u32) -> Vec<i16> {
    (0..8 * ms)
        .map(|n| ((f64::from(n) / 8000.0 * 1000.0 * std::f64::consts::TAU).sin() * 8000.0) as i16)
        .collect()
}

/// One channel of an interleaved stereo WAV, and its rate.
fn channel(path: &Path, ch: usize) -> (Vec<f64>, u32) {
    let mut reader = hound::WavReader::open(path).expect("open the recording");
    let spec = reader.spec();
    assert_eq!(spec.channels, 2, "recordings are stereo");
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    (
        samples.chunks_exact(2).map(|f| f64::from(f[ch])).collect(),
        spec.sample_rate,
    )
}

fn rms(x: &[f64]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|s| s * s).sum::<f64>() / x.len() as f64).sqrt()
}

/// The share of `x`'s energy at `freq` (Goertzel), 0..1 (about 1 for a pure tone).
fn tone_share(x: &[f64], rate: u32, freq: f64) -> f64 {
    let n = x.len() as f64;
    let w = std::f64::consts::TAU * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for v in x {
        let s0 = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let energy: f64 = x.iter().map(|s| s * s).sum();
    if energy == 0.0 {
        return 0.0;
    }
    // A pure sine of amplitude A over n samples: power = (A n / 2)^2, energy = A^2 n / 2.
    power / (energy * n / 2.0)
}

// ---------------------------------------------------------------------------------------------
// 1. The prompt cache, in process: two calls playing one prompt decode it once.

#[tokio::test]
async fn two_calls_playing_the_same_prompt_decode_it_once() {
    use callplane::engine::{Engine, EngineConfig, OriginateRequest};
    let dir = tempfile::tempdir().expect("tempdir");
    let prompt = dir.path().join("hello.wav");
    write_wav(&prompt, &tone_1k(400));
    let callee = Engine::start(EngineConfig::new("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("callee starts");
    let caller = Engine::start(EngineConfig::new("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("caller starts");
    let dest = callee.handle.sip_local_addr();
    let mut events = caller.handle.subscribe();
    let mut calls = Vec::new();
    for _ in 0..2 {
        let request = OriginateRequest {
            sip: Default::default(),
            alternates: Vec::new(),
            to: sip::message::Uri::parse(format!("sip:test@{dest}").as_bytes()).expect("uri"),
            destination: dest,
            from: None,
            play: Some(prompt.clone()),
            gather_digits: 0,
            record: None,
            ring_timeout: Duration::from_secs(10),
            transport: sip::transaction::Transport::Udp,
            send_dtmf: Vec::new(),
            dtmf_after: Duration::ZERO,
            hangup_after: Some(Duration::from_millis(600)),
            script: None,
            prompts: None,
            prompt_scope: callplane::engine::PromptScope::Local,
            tag: None,
            variables: Default::default(),
            max_duration: None,
        };
        calls.push(caller.handle.originate(request).await.expect("originate"));
    }
    let mut started = 0;
    let mut ended = 0;
    while ended < calls.len() {
        let ev = timeout(RUN_WAIT, events.recv())
            .await
            .expect("the calls ended in time")
            .expect("events flow");
        if ev.kind == "prompt.started" {
            started += 1;
        }
        if ev.is_final() {
            assert_eq!(ev.kind, "call.completed", "{:?}", ev.details);
            ended += 1;
        }
    }
    assert_eq!(started, 2, "both calls played the prompt");
    let stats = caller.handle.prompt_stats();
    assert_eq!(stats.decodes, 1, "one decode for two calls: {stats:?}");
    assert_eq!(stats.cached, 1);
    for engine in [caller, callee] {
        engine.handle.shutdown().await.expect("shutdown");
        engine.join().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 2a. CANCEL racing a 200 OK.

#[tokio::test]
async fn a_200_crossing_our_cancel_is_acked_then_byed_and_reported_as_no_answer() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = spawn_sipp_on_free_port(dir.path(), |port| {
        sipp_args("cancel_race_uas.xml", Some(port), &[])
    })
    .await;
    let uri = format!("sip:race@127.0.0.1:{port}");
    let (status, events, stderr) =
        run_call(dir.path(), &["call", &uri, "--ring-timeout", "1"]).await;
    // We cancelled because nobody answered within the ring timeout; the 200 that crossed the
    // CANCEL does not make the call answered (it was ended at once), so: no answer, exit 3.
    assert_eq!(
        status.code(),
        Some(3),
        "no-answer exit code; stderr {stderr}\nevents {events:#?}"
    );
    let failed = last_of(&events, "call.failed");
    assert_eq!(failed["details"]["outcome"], "no_answer", "{failed}");
    assert!(
        failed["details"]["race"].is_string(),
        "the race is noted: {failed}"
    );
    let cancel = position(&events, "sip.cancel_sent");
    let ok = position(&events, "sip.answered_after_cancel");
    let ack = position(&events, "sip.ack_sent");
    let bye = position(&events, "sip.bye_sent");
    assert!(
        cancel < ok && ok < ack && ack < bye,
        "CANCEL, then 200, ACK, BYE: {:?}",
        kinds(&events)
    );
    assert!(!kinds(&events).contains(&"sip.answered"));
    assert_sipp_ok(sipp).await;
}

// ---------------------------------------------------------------------------------------------
// 2b. 183 with early media.

#[tokio::test]
async fn early_media_from_a_183_is_heard_and_recorded_before_the_answer() {
    if !sipp_available() {
        return;
    }
    assert!(Path::new(G711A_PCAP).exists(), "{G711A_PCAP} is missing");
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = spawn_sipp_on_free_port(dir.path(), |port| {
        sipp_args("early_media_uas.xml", Some(port), &[])
    })
    .await;
    let uri = format!("sip:early@127.0.0.1:{port}");
    let wav = dir.path().join("early.wav");
    let wav_arg = wav.to_str().expect("utf-8 path");
    let (status, events, stderr) = run_call(
        dir.path(),
        &["call", &uri, "--record", wav_arg, "--ring-timeout", "10"],
    )
    .await;
    assert!(
        status.success(),
        "call exit {status}: {stderr}\nevents {events:#?}"
    );
    let early = &events[position(&events, "sip.early_media")];
    assert_eq!(early["details"]["sip_status"], 183);
    let first_in = position(&events, "media.first_packet_in");
    let answered = position(&events, "sip.answered");
    assert!(
        position(&events, "sip.early_media") < first_in && first_in < answered,
        "early media flows before the answer: {:?}",
        kinds(&events)
    );
    // sipp answers 2 s after the 183: the first ~1.5 s of the recording are early media.
    let early_ms =
        (offset_us(&events, "sip.answered") - offset_us(&events, "recording.started")) / 1000;
    assert!(early_ms >= 1000, "early media lasted {early_ms} ms");
    let (left, rate) = channel(&wav, 0);
    let early_samples = (early_ms as usize - 200) * rate as usize / 1000;
    let early_left = rms(&left[..early_samples.min(left.len())]);
    // Silence (or nothing) records as RMS ~0; the pcap's opening speech is quiet but clear.
    assert!(
        early_left > 100.0,
        "left channel RMS {early_left} during early media: no speech recorded"
    );
    assert_sipp_ok(sipp).await;
}

// ---------------------------------------------------------------------------------------------
// 2c. In-band DTMF over PCMU.

/// G.711 µ-law of a 16-bit sample (ITU-T G.711, with the usual 0x84 bias).
fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0 };
    if s < 0 {
        s = -s;
    }
    s = s.min(CLIP) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while s & mask == 0 && exponent > 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// PCM of DTMF `digits` at 8 kHz: `tone_ms` of each digit's two tones, `gap_ms` of silence
/// after each, with silence before the first.
fn dtmf_pcm(digits: &str, tone_ms: u32, gap_ms: u32) -> Vec<i16> {
    let mut out = vec![0i16; 8 * 200];
    for d in digits.chars() {
        let (low, high) = match d {
            '1' => (697.0, 1209.0),
            '2' => (697.0, 1336.0),
            '3' => (697.0, 1477.0),
            _ => panic!("digit {d} not in this test's table"),
        };
        // About -10 dBm0 per tone (0 dBm0 is a sine of peak ~22700 in 16-bit linear).
        let amp = 7200.0;
        for n in 0..8 * tone_ms {
            let t = f64::from(n) / 8000.0;
            let v = amp * (std::f64::consts::TAU * low * t).sin()
                + amp * (std::f64::consts::TAU * high * t).sin();
            out.push(v as i16);
        }
        out.extend(std::iter::repeat_n(0i16, (8 * gap_ms) as usize));
    }
    out.extend(std::iter::repeat_n(0i16, 8 * 300));
    out
}

/// A libpcap file of PCMU RTP packets (160 samples / 20 ms each) carrying `pcm`, in
/// Ethernet/IPv4/UDP frames, as sipp's `play_pcap_audio` reads them.
fn write_rtp_pcap(path: &Path, pcm: &[i16]) {
    let mut out = Vec::new();
    // Global header: magic, version 2.4, zone, sigfigs, snaplen, link type 1 (Ethernet).
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, chunk) in pcm.chunks(160).enumerate() {
        let i = i as u32;
        let mut rtp = vec![0x80, 0x00];
        rtp.extend_from_slice(&(i as u16).to_be_bytes());
        rtp.extend_from_slice(&(i * 160).to_be_bytes());
        rtp.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        rtp.extend(chunk.iter().map(|s| linear_to_ulaw(*s)));
        rtp.resize(12 + 160, 0xff);
        let udp_len = (8 + rtp.len()) as u16;
        let mut udp = Vec::new();
        udp.extend_from_slice(&40000u16.to_be_bytes());
        udp.extend_from_slice(&40002u16.to_be_bytes());
        udp.extend_from_slice(&udp_len.to_be_bytes());
        udp.extend_from_slice(&0u16.to_be_bytes()); // no checksum (allowed over IPv4)
        udp.extend_from_slice(&rtp);
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&(20 + udp_len).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        let sum = {
            let mut acc: u32 = ip
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum();
            while acc > 0xffff {
                acc = (acc & 0xffff) + (acc >> 16);
            }
            !(acc as u16)
        };
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&udp);
        let usec = i * 20_000;
        out.extend_from_slice(&(usec / 1_000_000).to_le_bytes());
        out.extend_from_slice(&(usec % 1_000_000).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).expect("write the pcap");
}

#[test]
fn ulaw_encoding_matches_g711_reference_points() {
    assert_eq!(linear_to_ulaw(0), 0xff);
    assert_eq!(linear_to_ulaw(-1), 0x7f);
    assert_eq!(linear_to_ulaw(32767), 0x80);
    assert_eq!(linear_to_ulaw(-32768), 0x00);
}

#[tokio::test]
async fn serve_detects_inband_dtmf_when_telephone_event_is_not_offered() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    write_rtp_pcap(&dir.path().join("dtmf12.pcap"), &dtmf_pcm("12", 80, 80));
    let (serve, mut rx) = spawn_callplane(
        dir.path(),
        &["serve", "--sip", "127.0.0.1:0", "--gather", "2"],
    );
    let mut seen = Vec::new();
    let listening = wait_line(&mut rx, &mut seen, |v| v["kind"] == "serve.listening").await;
    let sip_addr = listening["sip"].as_str().expect("sip address").to_owned();
    let sipp = spawn_sipp(
        dir.path(),
        &sipp_args("inband_dtmf_uac.xml", None, &[&sip_addr]),
    );
    assert_sipp_ok(sipp).await;
    let done = wait_line(&mut rx, &mut seen, |v| {
        v["kind"] == "call.completed" || v["kind"] == "call.failed"
    })
    .await;
    assert_eq!(done["details"]["digits"], "12", "{done}\n{seen:#?}");
    let methods: Vec<&str> = seen
        .iter()
        .filter(|e| e["kind"] == "dtmf.received")
        .filter_map(|e| e["details"]["method"].as_str())
        .collect();
    assert_eq!(methods, ["inband", "inband"], "{seen:#?}");
    send_sigterm(&serve);
    let (status, stderr) = wait_child(serve, "callplane serve").await;
    assert!(status.success(), "serve exit {status}: {stderr}");
}

// ---------------------------------------------------------------------------------------------
// 2d. Recording both directions.

#[tokio::test]
async fn recording_puts_our_prompt_on_the_right_and_the_callee_on_the_left() {
    if !sipp_available() {
        return;
    }
    assert!(Path::new(G711A_PCAP).exists(), "{G711A_PCAP} is missing");
    let dir = tempfile::tempdir().expect("tempdir");
    let prompt = dir.path().join("prompt.wav");
    write_wav(&prompt, &tone_1k(1500));
    // pcap_uas.xml plays g711a.pcap after the ACK and hangs up 3 s later.
    let (sipp, port) = spawn_sipp_on_free_port(dir.path(), |port| {
        sipp_args("pcap_uas.xml", Some(port), &[])
    })
    .await;
    let uri = format!("sip:play@127.0.0.1:{port}");
    let wav = dir.path().join("out.wav");
    let (status, events, stderr) = run_call(
        dir.path(),
        &[
            "call",
            &uri,
            "--play",
            prompt.to_str().expect("utf-8 path"),
            "--record",
            wav.to_str().expect("utf-8 path"),
            "--ring-timeout",
            "10",
        ],
    )
    .await;
    assert!(
        status.success(),
        "call exit {status}: {stderr}\nevents {events:#?}"
    );
    for k in ["prompt.started", "prompt.finished", "recording.ready"] {
        assert!(kinds(&events).contains(&k), "{k} in {:?}", kinds(&events));
    }
    let (right, rate) = channel(&wav, 1);
    let (left, _) = channel(&wav, 0);
    let ms = |m: usize| m * rate as usize / 1000;
    assert!(right.len() > ms(2500), "the recording lasts the call");
    // The prompt plays from the answer for 1.5 s; take 200..1300 ms to skip the edges.
    let during = &right[ms(200)..ms(1300)];
    let share = tone_share(during, rate, 1000.0);
    assert!(
        rms(during) > 1000.0 && share > 0.8,
        "right channel during the prompt: RMS {}, 1 kHz share {share}",
        rms(during)
    );
    let after = &right[ms(1800)..ms(2500)];
    assert!(
        rms(after) < 50.0,
        "right after the prompt: RMS {}",
        rms(after)
    );
    let left_rms = rms(&left);
    assert!(left_rms > 300.0, "left channel RMS {left_rms}: no speech");
    assert!(
        tone_share(&left[ms(200)..ms(1300)], rate, 1000.0) < 0.5,
        "our prompt leaked into the left channel"
    );
    assert_sipp_ok(sipp).await;
}

// ---------------------------------------------------------------------------------------------
// 3. SIGINT/SIGTERM during `callplane call`.

fn send_signal(child: &Child, signal: &str) {
    let pid = child.id().expect("child is running");
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

#[tokio::test]
async fn sigint_while_ringing_cancels_and_exits_with_the_cancelled_code() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = spawn_sipp_on_free_port(dir.path(), |port| {
        sipp_args("noanswer_uas.xml", Some(port), &[])
    })
    .await;
    let uri = format!("sip:ring@127.0.0.1:{port}");
    let (call, mut rx) = spawn_callplane(dir.path(), &["call", &uri, "--ring-timeout", "30"]);
    let mut seen = Vec::new();
    wait_line(&mut rx, &mut seen, |v| v["kind"] == "sip.ringing").await;
    send_signal(&call, "-INT");
    let (status, stderr) = wait_child(call, "callplane call").await;
    seen.extend(collect_lines(&mut rx).await);
    // Cancelled by us (not a ring timeout): outcome `cancelled`, exit 1.
    assert_eq!(status.code(), Some(1), "{stderr}\n{seen:#?}");
    let failed = last_of(&seen, "call.failed");
    assert_eq!(failed["details"]["outcome"], "cancelled", "{failed}");
    assert!(kinds(&seen).contains(&"sip.cancel_sent"));
    assert_sipp_ok(sipp).await;
}

#[tokio::test]
async fn sigterm_when_answered_sends_bye_and_exits_zero() {
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
    let uri = format!("sip:answer@127.0.0.1:{port}");
    let (call, mut rx) = spawn_callplane(dir.path(), &["call", &uri, "--ring-timeout", "10"]);
    let mut seen = Vec::new();
    wait_line(&mut rx, &mut seen, |v| v["kind"] == "sip.answered").await;
    send_signal(&call, "-TERM");
    let (status, stderr) = wait_child(call, "callplane call").await;
    seen.extend(collect_lines(&mut rx).await);
    assert_eq!(status.code(), Some(0), "{stderr}\n{seen:#?}");
    let done = last_of(&seen, "call.completed");
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    assert!(kinds(&seen).contains(&"sip.bye_sent"));
    assert_sipp_ok(sipp).await;
}

// ---------------------------------------------------------------------------------------------
// 4. SIP over TCP, callplane to callplane.

#[tokio::test]
async fn call_over_tcp_between_two_callplane_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, mut rx) = spawn_callplane(
        dir.path(),
        &["serve", "--sip", "127.0.0.1:0", "--sip-tcp", "127.0.0.1:0"],
    );
    let mut seen = Vec::new();
    let listening = wait_line(&mut rx, &mut seen, |v| v["kind"] == "serve.listening").await;
    let tcp = listening["sip_tcp"]
        .as_str()
        .expect("a TCP address")
        .to_owned();
    let uri = format!("sip:tcp@{tcp};transport=tcp");
    let (status, events, stderr) = run_call(
        dir.path(),
        &["call", &uri, "--hangup-after", "1", "--ring-timeout", "10"],
    )
    .await;
    assert!(
        status.success(),
        "call exit {status}: {stderr}\nevents {events:#?}"
    );
    let sent = last_of(&events, "sip.invite_sent");
    assert_eq!(sent["details"]["transport"], "tcp", "{sent}");
    assert_eq!(sent["details"]["destination"], tcp.as_str());
    assert!(kinds(&events).contains(&"media.first_packet_in"));
    let done = last_of(&events, "call.completed");
    assert_eq!(done["details"]["outcome"], "answered");
    let created = wait_line(&mut rx, &mut seen, |v| v["kind"] == "call.created").await;
    assert_eq!(created["details"]["transport"], "tcp", "{created}");
    let served = wait_line(&mut rx, &mut seen, |v| {
        v["kind"] == "call.completed" || v["kind"] == "call.failed"
    })
    .await;
    assert_eq!(served["details"]["outcome"], "answered", "{served}");
    assert!(kinds(&seen).contains(&"sip.bye_received"), "{seen:#?}");
    send_sigterm(&serve);
    let (status, stderr) = wait_child(serve, "callplane serve").await;
    assert!(status.success(), "serve exit {status}: {stderr}");
}

// ---------------------------------------------------------------------------------------------
// Sending DTMF: `call --send-dtmf` to `serve --gather`.

#[tokio::test]
async fn call_sends_rfc4733_digits_that_serve_gathers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, mut rx) = spawn_callplane(
        dir.path(),
        &["serve", "--sip", "127.0.0.1:0", "--gather", "2"],
    );
    let mut seen = Vec::new();
    let listening = wait_line(&mut rx, &mut seen, |v| v["kind"] == "serve.listening").await;
    let sip_addr = listening["sip"].as_str().expect("sip address").to_owned();
    let uri = format!("sip:dtmf@{sip_addr}");
    let (status, events, stderr) = run_call(
        dir.path(),
        &[
            "call",
            &uri,
            "--send-dtmf",
            "12",
            "--dtmf-after",
            "0.2",
            "--hangup-after",
            "2",
            "--ring-timeout",
            "10",
        ],
    )
    .await;
    assert!(
        status.success(),
        "call exit {status}: {stderr}\nevents {events:#?}"
    );
    let sent = last_of(&events, "dtmf.sent");
    assert_eq!(sent["details"]["digits"], "12", "{sent}");
    assert_eq!(sent["details"]["method"], "rfc4733", "{sent}");
    let done = wait_line(&mut rx, &mut seen, |v| {
        v["kind"] == "call.completed" || v["kind"] == "call.failed"
    })
    .await;
    assert_eq!(done["details"]["digits"], "12", "{done}\n{seen:#?}");
    let methods: Vec<&str> = seen
        .iter()
        .filter(|e| e["kind"] == "dtmf.received")
        .filter_map(|e| e["details"]["method"].as_str())
        .collect();
    assert_eq!(methods, ["rfc4733", "rfc4733"], "{seen:#?}");
    send_sigterm(&serve);
    let (status, stderr) = wait_child(serve, "callplane serve").await;
    assert!(status.success(), "serve exit {status}: {stderr}");
}
