//! A headless baresip 1.0 (Debian package `baresip-core`) driven over its TCP control socket,
//! shared by the test crates that call it or are called by it (tests/interop_baresip.rs,
//! tests/quality.rs).

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::{LOCALHOST, RUN_WAIT, tool_available};

/// Sample rate of the WAVs [`write_tone_hz`] makes (and of G.711).
pub(crate) const WAV_RATE: u32 = 8000;

/// Whether baresip can run here; `false` means "skip" (and is only allowed outside CI).
pub(crate) fn baresip_available() -> bool {
    tool_available("baresip", "-h", "baresip-core")
}

/// A port that was free a moment ago for UDP and TCP, with the next port free for TCP too:
/// baresip's `sip_listen` port P binds UDP and TCP on P and SIP over TLS on TCP P+1.
pub(crate) fn free_sip_port() -> u16 {
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
pub(crate) fn free_ctrl_port(sip_port: u16) -> u16 {
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
pub(crate) fn write_tone_hz(path: &Path, hz: u32, tone_ms: u32, silence_ms: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: WAV_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create the WAV");
    let tone = WAV_RATE * tone_ms / 1000;
    for n in 0..tone {
        let phase = 2.0 * std::f64::consts::PI * f64::from(hz) * f64::from(n) / f64::from(WAV_RATE);
        // Truncation is intended: the amplitude stays well inside i16.
        #[allow(clippy::cast_possible_truncation)]
        w.write_sample((8000.0 * phase.sin()) as i16)
            .expect("write sample");
    }
    for _ in 0..WAV_RATE * silence_ms / 1000 {
        w.write_sample(0i16).expect("write sample");
    }
    w.finalize().expect("finalize the WAV");
}

/// A running baresip with its control socket.
pub(crate) struct Baresip {
    child: Child,
    ctrl: TcpStream,
    /// Bytes read from the control socket and not yet parsed.
    buf: Vec<u8>,
    /// Every control message (event or response) seen so far, for failure messages.
    seen: Vec<Value>,
    /// baresip's stdout lines (its log with `-v`).
    log: mpsc::Receiver<String>,
}

impl Baresip {
    /// Write a config for a headless baresip in `dir` (account `alice`, auto-answer, plays
    /// `source`, records both directions with `sndfile`), start it, wait until it is ready and
    /// connect to its control socket.
    pub(crate) async fn start(dir: &Path, source: &Path) -> (Self, u16) {
        let sip_port = free_sip_port();
        let ctrl_port = free_ctrl_port(sip_port);
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
             module_app\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             module_app\t\tctrl_tcp.so\n\
             ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}\n\
             snd_path\t\t{dir}\n",
            source = source.display(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("config"), config).expect("write baresip config");
        // answermode=auto: answer incoming calls at once. regint=0: no REGISTER.
        std::fs::write(
            dir.join("accounts"),
            "<sip:alice@127.0.0.1>;regint=0;answermode=auto\n",
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
            log,
        };
        (bs, sip_port)
    }

    /// Send one command as a netstring of JSON, as `ctrl_tcp` expects.
    pub(crate) async fn command(&mut self, command: &str, params: &str) {
        let body = json!({ "command": command, "params": params, "token": command }).to_string();
        let msg = format!("{}:{body},", body.len());
        self.ctrl
            .write_all(msg.as_bytes())
            .await
            .expect("write to baresip's control socket");
    }

    /// The next netstring from the control socket, parsed as JSON.
    pub(crate) async fn next_message(&mut self) -> Value {
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
    pub(crate) async fn wait_message(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.next_message().await;
            if pred(&v) {
                return v;
            }
        }
    }

    /// Wait for the response to the command sent with `token` and assert it succeeded.
    pub(crate) async fn expect_ok(&mut self, token: &str) {
        let r = self
            .wait_message(|v| v["response"] == true && v["token"] == token)
            .await;
        assert_eq!(r["ok"], true, "baresip refused {token}: {r}");
    }

    /// Wait for a call event of `kind` (e.g. `CALL_ESTABLISHED`).
    pub(crate) async fn wait_event(&mut self, kind: &str) -> Value {
        self.wait_message(|v| v["event"] == true && v["type"] == kind)
            .await
    }

    /// Wait for a line of baresip's log for which `pred` holds.
    pub(crate) async fn wait_log(&mut self, pred: impl Fn(&str) -> bool) {
        let mut skipped = Vec::new();
        loop {
            let line = timeout(RUN_WAIT, self.log.recv())
                .await
                .unwrap_or_else(|_| panic!("no expected baresip log line in time: {skipped:#?}"))
                .unwrap_or_else(|| panic!("baresip's stdout closed: {skipped:#?}"));
            if pred(&line) {
                return;
            }
            skipped.push(line);
        }
    }

    /// Ask baresip to quit and wait for it to exit (so its dump files are complete).
    pub(crate) async fn quit(mut self) {
        self.command("quit", "").await;
        let status = timeout(RUN_WAIT, self.child.wait())
            .await
            .expect("baresip quit in time")
            .expect("wait for baresip");
        assert!(status.success(), "baresip exit {status}");
    }

    /// The WAV `sndfile` wrote for the audio baresip decoded (what it heard from us).
    pub(crate) fn heard_wav(dir: &Path) -> PathBuf {
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
pub(crate) fn forward_lines(
    mut from: impl AsyncRead + Unpin + Send + 'static,
    tx: mpsc::Sender<String>,
) {
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
