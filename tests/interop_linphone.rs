//! Interop with linphonec (Belledonne's liblinphone 5.1, Debian package `linphone-cli`): it answers
//! a `callplane call` and audio flows both ways, on loopback UDP, real processes, every wait
//! bounded by a timeout.
//!
//! linphonec runs headless: no sound card here, so its rc file makes it use files (`soundcard use
//! files`), it plays a 1 kHz tone made at run time (`play`), and auto-answers (`-a`). Without the
//! file source it answers but sends no RTP at all ("No card defined for capture!"). With
//! `bind_address=127.0.0.1` and `ipv6=0` its SDP says `c=IN IP4 127.0.0.1` (its identity still
//! shows the host's IPv6 address in its log, which does not matter here).
//!
//! When linphonec is missing the test is skipped with a notice, except under `CI=true`, where it
//! fails: CI must install it.

use std::fs::File;
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::{Instant, timeout};

mod common;
use common::*;

/// The tone linphonec plays, in Hz.
const TONE_HZ: f64 = 1000.0;

/// Whether linphonec can run here; `false` means "skip" (and is only allowed outside CI).
fn linphonec_available() -> bool {
    tool_available("linphonec", "-v", "linphone-cli")
}

/// Waits until something listens on UDP `port` (our own bind gets "address in use").
async fn wait_udp_bound(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match UdpSocket::bind((LOCALHOST, port)) {
            Err(e) if e.kind() == ErrorKind::AddrInUse => return,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The rc file of a headless linphonec listening on 127.0.0.1:`sip_port`, with every file it
/// keeps under `dir`. Without `auto_net_state_mon=0` and the `[storage]` paths it never listens.
fn write_linphonerc(dir: &Path, sip_port: u16, rtp_port: u16) -> std::path::PathBuf {
    let d = dir.display();
    let rc = format!(
        "[net]\nauto_net_state_mon=0\n\
         [sip]\nsip_port={sip_port}\nsip_tcp_port=0\nsip_tls_port=0\nbind_address=127.0.0.1\nipv6=0\n\
         [rtp]\naudio_rtp_port={rtp_port}\n\
         [storage]\nuri={d}/linphone.db\ncall_logs_db_uri={d}/call-logs.db\n\
         zrtp_secrets_file={d}/zrtp-secrets.db\nlime_x3dh_db_path={d}/lime.db\n\
         [sound]\nechocancellation=0\n"
    );
    let path = dir.join("linphonerc");
    std::fs::write(&path, rc).expect("write the linphonerc");
    path
}

/// Start linphonec with `rc`, auto-answering; its stdout goes to `out`, commands to its stdin.
fn spawn_linphonec(dir: &Path, rc: &Path, out: &Path) -> (Child, ChildStdin) {
    let stdout = File::create(out).expect("create linphonec's stdout file");
    let mut child = Command::new("timeout")
        .args(["60", "linphonec", "-a", "-d", "5", "-c"])
        .arg(rc)
        .arg("-l")
        .arg(dir.join("linphonec.log"))
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start linphonec");
    let stdin = child.stdin.take().expect("stdin is piped");
    (child, stdin)
}

/// One channel of an interleaved stereo 16-bit WAV.
fn channel(path: &Path, ch: usize) -> Vec<f64> {
    let mut reader = hound::WavReader::open(path).expect("open the recording");
    assert_eq!(reader.spec().channels, 2, "call recordings are stereo");
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    samples
        .chunks_exact(2)
        .map(|frame| f64::from(frame[ch]))
        .collect()
}

#[tokio::test]
async fn linphonec_answers_a_callplane_call_and_audio_flows_both_ways() {
    if !linphonec_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sip_port, rtp_port) = (free_udp_port(), free_udp_port());
    let rc = write_linphonerc(dir.path(), sip_port, rtp_port);
    let tone = dir.path().join("tone.wav");
    write_tone(&tone, 5000);
    let lin_out = dir.path().join("linphonec.out");
    let (mut linphonec, mut stdin) = spawn_linphonec(dir.path(), &rc, &lin_out);
    // Commands are read in order from stdin: audio source = the tone file, before any call.
    let setup = format!("soundcard use files\nplay {}\n", tone.display());
    stdin
        .write_all(setup.as_bytes())
        .await
        .expect("send linphonec its setup commands");
    stdin.flush().await.expect("flush");
    wait_udp_bound(sip_port, "linphonec").await;

    let rec = dir.path().join("call.wav");
    let uri = format!("sip:linphone@127.0.0.1:{sip_port}");
    let (status, events, stderr) = run_call(
        dir.path(),
        &[
            "call",
            &uri,
            "--play",
            tone.to_str().expect("utf-8 path"),
            "--record",
            rec.to_str().expect("utf-8 path"),
            "--hangup-after",
            "3",
            "--ring-timeout",
            "10",
        ],
    )
    .await;
    assert!(
        status.success(),
        "call exit {status}: {stderr}\nevents {events:#?}"
    );
    let ks = kinds(&events);
    for k in [
        "sip.answered",
        "media.first_packet_out",
        "media.first_packet_in",
        "recording.ready",
        "sip.bye_sent",
        "call.completed",
    ] {
        assert!(ks.contains(&k), "{k} missing from {ks:?}");
    }
    let done = events.last().expect("events");
    assert_eq!(done["kind"], "call.completed", "{done}");
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    assert_eq!(done["details"]["end_reason"], "LocalBye", "{done}");

    // Left = what linphonec sent: its 1 kHz tone, not silence or comfort noise. A sine at f
    // crosses zero 2f times a second; PCMU/PCMA keeps that.
    let left = channel(&rec, 0);
    let rms = (left.iter().map(|s| s * s).sum::<f64>() / left.len() as f64).sqrt();
    assert!(
        rms > 1000.0,
        "left channel RMS {rms}: linphonec's tone did not arrive"
    );
    // Between the first and the last loud sample; exact zeros (PCMU has them) keep the sign.
    let first = left
        .iter()
        .position(|s| s.abs() > 500.0)
        .expect("a loud sample");
    let last = left
        .iter()
        .rposition(|s| s.abs() > 500.0)
        .expect("a loud sample");
    let signs: Vec<bool> = left[first..=last]
        .iter()
        .filter(|s| **s != 0.0)
        .map(|s| *s < 0.0)
        .collect();
    let crossings = signs.windows(2).filter(|w| w[0] != w[1]).count();
    let hz = crossings as f64 / 2.0 / ((last - first + 1) as f64 / 8000.0);
    assert!(
        (hz - TONE_HZ).abs() < 100.0,
        "left channel is {hz:.0} Hz, expected linphonec's {TONE_HZ} Hz tone"
    );

    // linphonec's own view: the call ended by our BYE (no error), and its call log has it.
    stdin
        .write_all(b"call-logs\nquit\n")
        .await
        .expect("send linphonec quit");
    stdin.flush().await.expect("flush");
    let lin_status = timeout(RUN_WAIT, linphonec.wait())
        .await
        .expect("linphonec quit in time")
        .expect("wait for linphonec");
    let out = std::fs::read_to_string(&lin_out).expect("read linphonec's output");
    assert!(lin_status.success(), "linphonec exit {lin_status}: {out}");
    assert!(
        out.contains("connected") && out.contains("ended (No error)"),
        "linphonec did not see the call connect and end cleanly: {out}"
    );
    assert!(
        out.contains("Status: completed"),
        "linphonec's call log lacks a completed call: {out}"
    );
}
