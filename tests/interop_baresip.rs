//! End-to-end interop of the `callplane` binary with baresip 1.0, a real softphone, on loopback:
//! calls in both directions, audio both ways (each side's recording is checked for the other
//! side's tone), RFC 4733 DTMF from baresip, and BYE from either side.
//!
//! Needs the Debian package `baresip-core`. When baresip is missing the tests are skipped with a
//! notice, except under `CI=true`, where they fail: CI must install it.
//!
//! DTMF is checked both ways: baresip's `sndcode` to `callplane serve`, and `callplane call
//! --send-dtmf` to baresip, which reports each telephone-event on its control socket.

use std::path::{Path, PathBuf};

mod common;
use common::baresip::*;
use common::*;

/// Sample rate of every WAV the tests make (and of G.711).
const RATE: u32 = 8000;
/// Frequency of the tone baresip plays.
const PEER_HZ: u32 = 600;
/// Frequency of the prompt callplane plays.
const OUR_HZ: u32 = 1000;
/// Goertzel block: 20 ms, so both 600 Hz and 1 kHz fall exactly on a bin.
const BLOCK: usize = 160;

/// One channel of a 16-bit WAV file.
fn read_channel(path: &Path, channel: usize) -> Vec<f64> {
    let mut reader =
        hound::WavReader::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let spec = reader.spec();
    assert_eq!(spec.sample_rate, RATE, "{} sample rate", path.display());
    assert_eq!(spec.bits_per_sample, 16, "{} sample size", path.display());
    let channels = usize::from(spec.channels);
    assert!(
        channel < channels,
        "{} has {channels} channels",
        path.display()
    );
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    samples
        .chunks_exact(channels)
        .map(|frame| f64::from(frame[channel]))
        .collect()
}

/// How many 20 ms blocks of `samples` are a clear tone at `hz`: loud enough (RMS above 100, far
/// above silence and G.711 idle noise) and with at least 80% of the block's energy in the
/// Goertzel bin of `hz` (a pure tone has ~100%, noise or another tone has ~0%).
fn tone_blocks(samples: &[f64], hz: u32) -> usize {
    let n = BLOCK as f64;
    let k = f64::from(hz) * n / f64::from(RATE);
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * k / n).cos();
    samples
        .chunks_exact(BLOCK)
        .filter(|block| {
            let (mut s1, mut s2) = (0.0f64, 0.0f64);
            for &x in *block {
                let s0 = x + coeff * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            let bin_power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
            let energy: f64 = block.iter().map(|x| x * x).sum();
            // Parseval: a real tone on bin k puts N·E/2 into |X_k|², so this ratio is ~1 for it.
            energy / n > 100.0 * 100.0 && 2.0 * bin_power / (n * energy) > 0.8
        })
        .count()
}

#[tokio::test]
async fn call_to_baresip_exchanges_audio_both_ways_and_ends_with_our_bye() {
    if !baresip_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bs_dir = dir.path().join("baresip");
    std::fs::create_dir(&bs_dir).expect("mkdir");
    // 3 s of tone, then silence so baresip does not hang up before we do.
    let peer_wav = dir.path().join("peer.wav");
    write_tone_hz(&peer_wav, PEER_HZ, 3000, 10_000);
    let prompt = dir.path().join("prompt.wav");
    write_tone_hz(&prompt, OUR_HZ, 2000, 0);
    let (mut baresip, sip_port) = Baresip::start(&bs_dir, &peer_wav).await;

    let ours = dir.path().join("ours.wav");
    // baresip answers only a Request-URI whose user is its account user.
    let uri = format!("sip:alice@127.0.0.1:{sip_port}");
    let (child, mut rx) = spawn_callplane(
        dir.path(),
        &[
            "call",
            &uri,
            "--play",
            prompt.to_str().expect("utf-8 path"),
            "--record",
            ours.to_str().expect("utf-8 path"),
            "--hangup-after",
            "4",
            "--ring-timeout",
            "10",
        ],
    );
    let (status, stderr) = wait_child(child, "callplane call").await;
    let events = collect_lines(&mut rx).await;
    assert!(
        status.success(),
        "call exit {status}: {stderr}\nevents {events:#?}"
    );
    let ks = kinds(&events);
    for k in [
        "sip.answered",
        "media.first_packet_in",
        "media.first_packet_out",
        "prompt.finished",
        "sip.bye_sent",
        "recording.ready",
        "call.completed",
    ] {
        assert!(ks.contains(&k), "{k} missing from {ks:?}");
    }
    let done = last_of(&events, "call.completed");
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    assert_eq!(done["details"]["end_reason"], "LocalBye", "{done}");

    // baresip saw the call established (auto-answer) and then closed by our BYE: re reports a
    // BYE from the peer as ECONNRESET, "Connection reset by peer" (its own hangup says "by user").
    baresip.wait_event("CALL_ESTABLISHED").await;
    let closed = baresip.wait_event("CALL_CLOSED").await;
    assert_eq!(closed["param"], "Connection reset by peer", "{closed}");
    baresip.quit().await;

    // Our recording: left is what baresip sent (its 600 Hz tone, 3 s of it), right is our prompt.
    let left = read_channel(&ours, 0);
    let peer_tone = tone_blocks(&left, PEER_HZ);
    assert!(
        peer_tone >= 100,
        "only {peer_tone} blocks of 20 ms with baresip's {PEER_HZ} Hz tone in our left channel"
    );
    assert_eq!(
        tone_blocks(&left, OUR_HZ),
        0,
        "our own prompt leaked into the left (remote) channel"
    );
    let right = read_channel(&ours, 1);
    let our_tone = tone_blocks(&right, OUR_HZ);
    assert!(
        our_tone >= 50,
        "only {our_tone} blocks of our {OUR_HZ} Hz prompt in our right channel"
    );

    // baresip's own recording of what it decoded holds our 2 s prompt.
    let heard = read_channel(&Baresip::heard_wav(&bs_dir), 0);
    let heard_tone = tone_blocks(&heard, OUR_HZ);
    assert!(
        heard_tone >= 50,
        "only {heard_tone} blocks of our {OUR_HZ} Hz prompt in baresip's recording \
         ({} samples)",
        heard.len()
    );
    assert_eq!(
        tone_blocks(&heard, PEER_HZ),
        0,
        "baresip's recording holds its own tone"
    );
}

#[tokio::test]
async fn baresip_calls_serve_sends_rfc4733_digits_and_hangs_up() {
    if !baresip_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let recordings = dir.path().join("recordings");
    std::fs::create_dir(&recordings).expect("mkdir");
    let bs_dir = dir.path().join("baresip");
    std::fs::create_dir(&bs_dir).expect("mkdir");
    let peer_wav = dir.path().join("peer.wav");
    write_tone_hz(&peer_wav, PEER_HZ, 10_000, 10_000);

    let (serve, mut rx) = spawn_callplane(
        dir.path(),
        &[
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--recordings",
            recordings.to_str().expect("utf-8 path"),
            "--gather",
            "4",
        ],
    );
    let mut seen = Vec::new();
    let listening = wait_line(&mut rx, &mut seen, |v| v["kind"] == "serve.listening").await;
    let sip_addr = listening["sip"].as_str().expect("sip address").to_owned();

    let (mut baresip, _) = Baresip::start(&bs_dir, &peer_wav).await;
    baresip.command("dial", &format!("sip:x@{sip_addr}")).await;
    baresip.expect_ok("dial").await;
    baresip.wait_event("CALL_ESTABLISHED").await;
    wait_line(&mut rx, &mut seen, |v| v["kind"] == "media.first_packet_in").await;

    // baresip's call timer reads one second: its tone has been flowing that long. (While it
    // sends telephone-events it sends no audio, so the tone check below needs this head start.)
    baresip.wait_log(|l| l.starts_with("[0:00:01]")).await;
    // baresip sends these as RFC 4733 telephone-events (its default).
    baresip.command("sndcode", "1234").await;
    baresip.expect_ok("sndcode").await;
    let gathered = wait_line(&mut rx, &mut seen, |v| v["kind"] == "gather.completed").await;
    assert_eq!(gathered["details"]["digits"], "1234", "{gathered}");

    // More tone after the digits, then BYE from baresip's side.
    baresip.wait_log(|l| l.starts_with("[0:00:04]")).await;
    baresip.command("hangup", "").await;
    baresip.expect_ok("hangup").await;
    let done = wait_line(&mut rx, &mut seen, |v| {
        v["kind"] == "call.completed" || v["kind"] == "call.failed"
    })
    .await;
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    assert_eq!(done["details"]["end_reason"], "RemoteBye", "{done}");
    assert_eq!(done["details"]["digits"], "1234", "{done}");
    let digits: Vec<&str> = seen
        .iter()
        .filter(|e| e["kind"] == "dtmf.received")
        .map(|e| {
            assert_eq!(e["details"]["method"], "rfc4733", "{e}");
            e["details"]["digit"].as_str().expect("digit")
        })
        .collect();
    assert_eq!(digits, ["1", "2", "3", "4"]);
    assert!(
        kinds(&seen).contains(&"sip.bye_received"),
        "no sip.bye_received in {:?}",
        kinds(&seen)
    );

    // Our recording's left channel holds baresip's tone.
    let path = done["details"]["recording"]["path"]
        .as_str()
        .expect("recording path");
    let path = if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        dir.path().join(path)
    };
    let left = read_channel(&path, 0);
    let peer_tone = tone_blocks(&left, PEER_HZ);
    assert!(
        peer_tone >= 50,
        "only {peer_tone} blocks of 20 ms with baresip's {PEER_HZ} Hz tone in {}",
        path.display()
    );

    baresip.quit().await;
    send_sigterm(&serve);
    let (status, stderr) = wait_child(serve, "callplane serve").await;
    assert!(
        status.success(),
        "serve exit {status} after SIGTERM: {stderr}"
    );
}

#[tokio::test]
async fn call_sends_rfc4733_digits_that_baresip_receives() {
    if !baresip_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bs_dir = dir.path().join("baresip");
    std::fs::create_dir(&bs_dir).expect("mkdir");
    // Tone then silence, so baresip's source outlasts the call and it does not hang up first.
    let peer_wav = dir.path().join("peer.wav");
    write_tone_hz(&peer_wav, PEER_HZ, 3000, 10_000);
    let (mut baresip, sip_port) = Baresip::start(&bs_dir, &peer_wav).await;

    let uri = format!("sip:alice@127.0.0.1:{sip_port}");
    let (child, mut rx) = spawn_callplane(
        dir.path(),
        &[
            "call",
            &uri,
            "--send-dtmf",
            "1234",
            "--dtmf-after",
            "1",
            "--hangup-after",
            "4",
            "--ring-timeout",
            "10",
        ],
    );
    let (status, stderr) = wait_child(child, "callplane call").await;
    let events = collect_lines(&mut rx).await;
    assert!(
        status.success(),
        "call exit {status}: {stderr}\nevents {events:#?}"
    );
    let done = last_of(&events, "call.completed");
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    assert_eq!(done["details"]["end_reason"], "LocalBye", "{done}");
    // baresip's SDP answer lists telephone-event/8000, so the digits go out as RFC 4733 events.
    let sent = last_of(&events, "dtmf.sent");
    assert_eq!(sent["details"]["digits"], "1234", "{sent}");
    assert_eq!(sent["details"]["method"], "rfc4733", "{sent}");

    // baresip reports each telephone-event it decodes on its control socket: CALL_DTMF_START
    // with the key when the event begins, CALL_DTMF_END once its end packet arrives. Its events
    // wait in the socket, so they can be read after the call. Each digit must start and end
    // before the next one starts, in the order sent, and nothing else may be reported.
    baresip.wait_event("CALL_ESTABLISHED").await;
    let mut received = Vec::new();
    loop {
        let v = baresip.wait_message(|v| v["event"] == true).await;
        match v["type"].as_str() {
            Some("CALL_DTMF_START") => {
                received.push(format!("start {}", v["param"].as_str().unwrap_or("?")));
            }
            Some("CALL_DTMF_END") => received.push("end".to_owned()),
            Some("CALL_CLOSED") => {
                assert_eq!(v["param"], "Connection reset by peer", "{v}");
                break;
            }
            _ => {}
        }
    }
    assert_eq!(
        received,
        [
            "start 1", "end", "start 2", "end", "start 3", "end", "start 4", "end"
        ],
        "the DTMF events baresip reported"
    );
    baresip.quit().await;
}
