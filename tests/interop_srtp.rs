//! SRTP with SDES keys (RFC 3711, RFC 4568) between the `callplane` binary and baresip 1.0
//! (`mediaenc=srtp-mand`: RTP/SAVP only, its libsrtp underneath), both ways on loopback:
//!
//! - callplane calls baresip with `--srtp require` (our offer is RTP/SAVP);
//! - baresip calls `callplane serve` (its offer is RTP/SAVP, which we answer with SRTP).
//!
//! Each side's recording must hold the other side's tone. That the packets really were SRTP
//! under the negotiated keys is shown by both ends' authentication: our media session accepts
//! only packets whose HMAC verifies under baresip's key (`srtp: true`, no authentication
//! failures, hundreds of packets in), and baresip's libsrtp in mandatory mode drops any of ours
//! that do not verify under ours (it heard our tone). The media crate's tests check that the
//! payload on the wire is ciphertext.
//!
//! Needs the Debian package `baresip-core` (which ships `srtp.so`). Skipped with a notice
//! when baresip is missing, except under `CI=true`, where it fails.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;
use common::*;

/// Sample rate of every WAV the tests make (and of G.711).
const RATE: u32 = 8000;
/// Frequency of the tone baresip plays.
const PEER_HZ: u32 = 600;
/// Frequency of the prompt callplane plays.
const OUR_HZ: u32 = 1000;
/// Goertzel block: 20 ms, so both 600 Hz and 1 kHz fall exactly on a bin.
const BLOCK: usize = 160;

/// Whether baresip can run here; `false` means "skip" (and is only allowed outside CI).
fn baresip_available() -> bool {
    tool_available("baresip", "-h", "baresip-core")
}

/// A port that was free a moment ago for UDP and TCP, with the next port free for TCP too:
/// baresip's `sip_listen` port P binds UDP and TCP on P and SIP over TLS on TCP P+1.
fn free_sip_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind((LOCALHOST, 0)).expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        let Some(tls) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind((LOCALHOST, port)).is_ok()
            && TcpListener::bind((LOCALHOST, tls)).is_ok()
        {
            return port;
        }
    }
    panic!("no port free for UDP, TCP and TLS after 100 tries");
}

/// A TCP port that was free a moment ago and is not `sip_port`'s TLS port (`sip_port + 1`,
/// where baresip's own TLS listener would make the control socket fail with EADDRINUSE).
fn free_tcp_port(sip_port: u16) -> u16 {
    loop {
        let l = TcpListener::bind((LOCALHOST, 0)).expect("bind tcp");
        let port = l.local_addr().expect("addr").port();
        if port != sip_port.wrapping_add(1) {
            return port;
        }
    }
}

/// Mono 16-bit 8 kHz WAV: a sine of `hz` for `tone_ms`, then `silence_ms` of silence.
/// baresip hangs up when its source file ends, so its file is padded with silence.
fn write_tone(path: &Path, hz: u32, tone_ms: u32, silence_ms: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create the WAV");
    let tone = RATE * tone_ms / 1000;
    for n in 0..tone {
        let phase = 2.0 * std::f64::consts::PI * f64::from(hz) * f64::from(n) / f64::from(RATE);
        // Truncation is intended: the amplitude stays well inside i16.
        #[allow(clippy::cast_possible_truncation)]
        w.write_sample((8000.0 * phase.sin()) as i16)
            .expect("write sample");
    }
    for _ in 0..RATE * silence_ms / 1000 {
        w.write_sample(0i16).expect("write sample");
    }
    w.finalize().expect("finalize the WAV");
}

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

/// A running baresip with its control socket.
struct Baresip {
    child: Child,
    ctrl: TcpStream,
    /// Bytes read from the control socket and not yet parsed.
    buf: Vec<u8>,
    /// Every control message (event or response) seen so far, for failure messages.
    seen: Vec<Value>,
    /// baresip's stdout lines (its log with `-v`), kept so that its pipes are drained.
    _log: mpsc::Receiver<String>,
}

impl Baresip {
    /// Write a config for a headless baresip in `dir` (account `alice`, auto-answer, plays
    /// `source`, records both directions with `sndfile`), start it, wait until it is ready and
    /// connect to its control socket.
    async fn start(dir: &Path, source: &Path, mediaenc: &str) -> (Self, u16) {
        let sip_port = free_sip_port();
        let ctrl_port = free_tcp_port(sip_port);
        let config = format!(
            "poll_method\t\tpoll\n\
             sip_listen\t\t127.0.0.1:{sip_port}\n\
             net_interface\t\t127.0.0.1\n\
             dns_server\t\t127.0.0.1:53\n\
             audio_source\t\taufile,{source}\n\
             audio_alert\t\taufile,{source}\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             module\t\t\tg711.so\n\
             module\t\t\taufile.so\n\
             module\t\t\tsndfile.so\n\
             module\t\t\tsrtp.so\n\
             module_app\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             module_app\t\tctrl_tcp.so\n\
             ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}\n\
             snd_path\t\t{dir}\n",
            source = source.display(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("config"), config).expect("write baresip config");
        // answermode=auto: answer incoming calls at once. regint=0: no REGISTER. mediaenc:
        // srtp-mand offers and answers RTP/SAVP with SDES a=crypto (RFC 4568) and nothing else.
        std::fs::write(
            dir.join("accounts"),
            format!("<sip:alice@127.0.0.1>;regint=0;answermode=auto;mediaenc={mediaenc}\n"),
        )
        .expect("write baresip accounts");
        // stdbuf -o0: unbuffered stdout, so its log arrives as it is written
        // rather than in 4 KiB blocks. stdbuf execs baresip, so the pid (and kill-on-drop) is
        // baresip's own.
        let mut child = Command::new("stdbuf")
            .args(["-o0", "baresip"])
            .arg("-f")
            .arg(dir)
            .arg("-v")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start baresip");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, mut log) = mpsc::channel(4096);
        // Its log goes to stdout; its call status line ("[0:00:02] audio=..."), redrawn with a
        // carriage return, goes to stderr: that line is the call timer the DTMF test waits on.
        forward_lines(stdout, tx.clone());
        forward_lines(stderr, tx);
        // The control socket listens before baresip prints that it is ready.
        let mut early = Vec::new();
        loop {
            let line = timeout(RUN_WAIT, log.recv())
                .await
                .expect("baresip got ready in time")
                .unwrap_or_else(|| panic!("baresip exited before it was ready: {early:#?}"));
            let ready = line.contains("baresip is ready");
            early.push(line);
            if ready {
                break;
            }
        }
        let ctrl = TcpStream::connect((LOCALHOST, ctrl_port))
            .await
            .expect("connect to baresip's control socket");
        let bs = Self {
            child,
            ctrl,
            buf: Vec::new(),
            seen: Vec::new(),
            _log: log,
        };
        (bs, sip_port)
    }

    /// Send one command as a netstring of JSON, as `ctrl_tcp` expects.
    async fn command(&mut self, command: &str, params: &str) {
        let body = json!({ "command": command, "params": params, "token": command }).to_string();
        let msg = format!("{}:{body},", body.len());
        self.ctrl
            .write_all(msg.as_bytes())
            .await
            .expect("write to baresip's control socket");
    }

    /// The next netstring from the control socket, parsed as JSON.
    async fn next_message(&mut self) -> Value {
        loop {
            if let Some(colon) = self.buf.iter().position(|&b| b == b':') {
                let len: usize = std::str::from_utf8(&self.buf[..colon])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("bad netstring from baresip: {:?}", self.buf));
                let end = colon + 1 + len;
                if self.buf.len() > end {
                    assert_eq!(self.buf[end], b',', "netstring ends with a comma");
                    let v: Value = serde_json::from_slice(&self.buf[colon + 1..end])
                        .expect("baresip sends JSON");
                    self.buf.drain(..=end);
                    self.seen.push(v.clone());
                    return v;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = timeout(RUN_WAIT, self.ctrl.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("baresip said nothing in time; saw {:#?}", self.seen))
                .expect("read baresip's control socket");
            assert!(
                n > 0,
                "baresip closed its control socket; saw {:#?}",
                self.seen
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Wait for the control-socket message for which `pred` holds.
    async fn wait_message(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.next_message().await;
            if pred(&v) {
                return v;
            }
        }
    }

    /// Wait for the response to the command sent with `token` and assert it succeeded.
    async fn expect_ok(&mut self, token: &str) {
        let r = self
            .wait_message(|v| v["response"] == true && v["token"] == token)
            .await;
        assert_eq!(r["ok"], true, "baresip refused {token}: {r}");
    }

    /// Wait for a call event of `kind` (e.g. `CALL_ESTABLISHED`).
    async fn wait_event(&mut self, kind: &str) -> Value {
        self.wait_message(|v| v["event"] == true && v["type"] == kind)
            .await
    }

    /// Ask baresip to quit and wait for it to exit (so its dump files are complete).
    async fn quit(mut self) {
        self.command("quit", "").await;
        let status = timeout(RUN_WAIT, self.child.wait())
            .await
            .expect("baresip quit in time")
            .expect("wait for baresip");
        assert!(status.success(), "baresip exit {status}");
    }

    /// The WAV `sndfile` wrote for the audio baresip decoded (what it heard from us).
    fn heard_wav(dir: &Path) -> PathBuf {
        let mut decs: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read baresip's dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("dump-") && n.ends_with("-dec.wav"))
            })
            .collect();
        assert_eq!(
            decs.len(),
            1,
            "one decode dump in {}: {decs:?}",
            dir.display()
        );
        decs.remove(0)
    }
}

/// Forward what `from` writes, split into lines at '\r' or '\n', to `tx`.
fn forward_lines(mut from: impl AsyncRead + Unpin + Send + 'static, tx: mpsc::Sender<String>) {
    tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&chunk[..n]);
            while let Some(end) = pending.iter().position(|&b| b == b'\r' || b == b'\n') {
                let line = String::from_utf8_lossy(&pending[..end]).into_owned();
                pending.drain(..=end);
                if !line.trim().is_empty() && tx.send(line).await.is_err() {
                    return;
                }
            }
        }
    });
}

/// The rtp details of a final event: SRTP on, packets in, nothing failed authentication.
fn assert_srtp_flowed(done: &Value) {
    let rtp = &done["details"]["rtp"];
    assert_eq!(rtp["srtp"], true, "{done}");
    assert_eq!(rtp["srtp_auth_failed"], 0, "{done}");
    assert_eq!(rtp["srtp_replayed"], 0, "{done}");
    let packets_in = rtp["packets_in"].as_u64().unwrap_or(0);
    assert!(
        packets_in >= 100,
        "only {packets_in} SRTP packets in: {done}"
    );
}

/// The one WAV file in `dir`.
fn only_wav(dir: &Path) -> PathBuf {
    let mut wavs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the recordings dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    assert_eq!(
        wavs.len(),
        1,
        "one recording in {}: {wavs:?}",
        dir.display()
    );
    wavs.remove(0)
}

#[tokio::test]
async fn srtp_call_to_baresip_carries_audio_both_ways() {
    if !baresip_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bs_dir = dir.path().join("baresip");
    std::fs::create_dir(&bs_dir).expect("mkdir");
    let peer_wav = dir.path().join("peer.wav");
    write_tone(&peer_wav, PEER_HZ, 3000, 10_000);
    let prompt = dir.path().join("prompt.wav");
    write_tone(&prompt, OUR_HZ, 2000, 0);
    let (mut baresip, sip_port) = Baresip::start(&bs_dir, &peer_wav, "srtp-mand").await;

    let ours = dir.path().join("ours.wav");
    let uri = format!("sip:alice@127.0.0.1:{sip_port}");
    let (child, mut rx) = spawn_callplane(
        dir.path(),
        &[
            "call",
            &uri,
            "--srtp",
            "require",
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
    let srtp = last_of(&events, "media.srtp");
    let suite = srtp["details"]["suite"].as_str().unwrap_or("");
    assert!(suite.starts_with("AES_CM_128_HMAC_SHA1_"), "{srtp}");
    let done = last_of(&events, "call.completed");
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    assert_eq!(done["details"]["end_reason"], "LocalBye", "{done}");
    assert_srtp_flowed(done);

    baresip.wait_event("CALL_ESTABLISHED").await;
    baresip.wait_event("CALL_CLOSED").await;
    baresip.quit().await;

    // Our recording: left is baresip's 600 Hz tone, decrypted.
    let left = read_channel(&ours, 0);
    let peer_tone = tone_blocks(&left, PEER_HZ);
    assert!(
        peer_tone >= 100,
        "only {peer_tone} blocks of 20 ms with baresip's {PEER_HZ} Hz tone in our recording"
    );
    // baresip's recording of what it decrypted and decoded holds our 2 s prompt.
    let heard = read_channel(&Baresip::heard_wav(&bs_dir), 0);
    let heard_tone = tone_blocks(&heard, OUR_HZ);
    assert!(
        heard_tone >= 50,
        "only {heard_tone} blocks of our {OUR_HZ} Hz prompt in baresip's recording"
    );
}

#[tokio::test]
async fn baresip_srtp_offer_is_answered_with_srtp_and_audio_flows_both_ways() {
    if !baresip_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let recordings = dir.path().join("recordings");
    std::fs::create_dir(&recordings).expect("mkdir");
    let bs_dir = dir.path().join("baresip");
    std::fs::create_dir(&bs_dir).expect("mkdir");
    let peer_wav = dir.path().join("peer.wav");
    write_tone(&peer_wav, PEER_HZ, 10_000, 10_000);
    let prompt = dir.path().join("prompt.wav");
    write_tone(&prompt, OUR_HZ, 2000, 0);
    // Answer, record the whole call, play our tone, wait a little, hang up.
    let script = dir.path().join("script.json");
    let steps = json!({
        "version": 1,
        "steps": [
            { "answer": {} },
            { "record": { "action": "start" } },
            { "play": { "file": prompt.to_str().expect("utf-8 path"), "barge_in": false } },
            { "pause": { "ms": 1000 } },
            { "hangup": {} }
        ]
    });
    std::fs::write(&script, steps.to_string()).expect("write the script");

    let (serve, mut rx) = spawn_callplane(
        dir.path(),
        &[
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--recordings",
            recordings.to_str().expect("utf-8 path"),
            "--script",
            script.to_str().expect("utf-8 path"),
        ],
    );
    let mut seen = Vec::new();
    let listening = wait_line(&mut rx, &mut seen, |v| v["kind"] == "serve.listening").await;
    let sip_addr = listening["sip"].as_str().expect("sip address").to_owned();

    let (mut baresip, _) = Baresip::start(&bs_dir, &peer_wav, "srtp-mand").await;
    baresip.command("dial", &format!("sip:x@{sip_addr}")).await;
    baresip.expect_ok("dial").await;
    baresip.wait_event("CALL_ESTABLISHED").await;
    let srtp = wait_line(&mut rx, &mut seen, |v| v["kind"] == "media.srtp").await;
    let suite = srtp["details"]["suite"].as_str().unwrap_or("");
    assert!(suite.starts_with("AES_CM_128_HMAC_SHA1_"), "{srtp}");
    let done = wait_line(&mut rx, &mut seen, |v| {
        v["kind"] == "call.completed" || v["kind"] == "call.failed"
    })
    .await;
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    assert_srtp_flowed(&done);
    // Our hangup step sent BYE: baresip reports it as "Connection reset by peer".
    let closed = baresip.wait_event("CALL_CLOSED").await;
    assert_eq!(closed["param"], "Connection reset by peer", "{closed}");
    baresip.quit().await;

    let ours = only_wav(&recordings);
    let left = read_channel(&ours, 0);
    let peer_tone = tone_blocks(&left, PEER_HZ);
    assert!(
        peer_tone >= 50,
        "only {peer_tone} blocks of baresip's {PEER_HZ} Hz tone in {}",
        ours.display()
    );
    let heard = read_channel(&Baresip::heard_wav(&bs_dir), 0);
    let heard_tone = tone_blocks(&heard, OUR_HZ);
    assert!(
        heard_tone >= 50,
        "only {heard_tone} blocks of our {OUR_HZ} Hz prompt in baresip's recording"
    );

    send_sigterm(&serve);
    let (status, stderr) = wait_child(serve, "callplane serve").await;
    assert!(
        status.success(),
        "serve exit {status} after SIGTERM: {stderr}"
    );
}

/// sipp's built-in UAS answers any offer with plain `RTP/AVP`: `--srtp require` must end the
/// call with a clear reason, `--srtp offer` must go on with plain RTP.
#[tokio::test]
async fn a_plain_answer_ends_a_require_call_and_is_used_under_offer() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut sipp, port) = spawn_sipp_on_free_port(dir.path(), |port| {
        [
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "2",
            "-timeout",
            "30s",
            "-nostdin",
        ]
        .map(String::from)
        .to_vec()
    })
    .await;
    let uri = format!("sip:srtp@127.0.0.1:{port}");
    let call = |mode: &'static str| {
        let uri = uri.clone();
        let dir = dir.path().to_owned();
        async move {
            let args = [
                "call",
                &uri,
                "--srtp",
                mode,
                "--hangup-after",
                "1",
                "--ring-timeout",
                "10",
            ];
            run_call(&dir, &args).await
        }
    };

    let (_, events, stderr) = call("require").await;
    let done = events
        .iter()
        .rev()
        .find(|e| e["kind"] == "call.completed" || e["kind"] == "call.failed")
        .unwrap_or_else(|| panic!("no final event: {events:#?}\n{stderr}"));
    assert_eq!(
        done["details"]["end_reason"], "srtp_negotiation_failed",
        "{done}"
    );
    assert_eq!(
        done["details"]["end_detail"], "SRTP required, the answer is plain RTP",
        "{done}"
    );
    assert!(!kinds(&events).contains(&"media.srtp"), "{events:#?}");
    assert!(done["details"]["rtp"].is_null(), "no media ran: {done}");

    let (status, events, stderr) = call("offer").await;
    assert!(status.success(), "offer: {status}: {stderr}\n{events:#?}");
    let done = last_of(&events, "call.completed");
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    assert_eq!(done["details"]["end_reason"], "LocalBye", "{done}");
    assert_eq!(done["details"]["rtp"]["srtp"], false, "{done}");
    assert!(!kinds(&events).contains(&"media.srtp"), "{events:#?}");

    let status = timeout(RUN_WAIT, sipp.wait())
        .await
        .expect("sipp ends after its 2 calls")
        .expect("wait for sipp");
    assert!(status.success(), "sipp exit {status}");
}
