//! SIP over TLS (#11), on loopback, with a CA made by the test (the `openssl` CLI):
//! - `callplane call` over TLS to a callplane engine with a TLS listener: answered, and the BYE
//!   goes over the connection the INVITE opened (the callee accepted exactly one);
//! - through kamailio's tls module, a real TLS peer, to a callplane UAS behind it;
//! - a certificate from another CA, or for another name: the call fails at once (no wait for
//!   Timer B) with the certificate problem in `call.failed`'s reason.
//!
//! Needs `openssl` (and kamailio with its TLS module for the kamailio test). A missing tool
//! skips with a notice, except under `CI=true`, where it fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use callplane::engine::{Engine, EngineConfig};
use callplane::net::tls;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod common;
use common::*;

/// The PEM files a test uses: a CA, a server certificate for `localhost` and 127.0.0.1 signed by
/// it (with its key), and a second CA that signed nothing here.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = StdCommand::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn make_pki(dir: &Path) -> Pki {
    make_ca(dir, "test-ca");
    make_ca(dir, "other-ca");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "test-ca.pem",
            "-CAkey",
            "test-ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    Pki {
        ca: dir.join("test-ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

fn openssl_available() -> bool {
    tool_available("openssl", "version", "openssl")
}

/// A callplane engine answering every call, with a TLS listener presenting `pki`'s certificate.
async fn tls_callee(pki: &Pki) -> Engine {
    let mut config = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    config.sip_tls = Some("127.0.0.1:0".parse().expect("addr"));
    let read = |p: &Path| std::fs::read(p).expect("read PEM");
    config.tls = Some(tls::TlsContext {
        client: tls::client_config(&read(&pki.ca), "test-ca.pem").expect("CA"),
        server: Some(tls::server_config(&read(&pki.cert), &read(&pki.key)).expect("cert")),
        handshake_timeout: Duration::from_secs(5),
    });
    Engine::start(config).await.expect("callee starts")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test]
async fn call_over_tls_is_answered_and_hung_up_on_the_same_connection() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    let callee = tls_callee(&pki).await;
    let at = callee.handle.sip_local_tls_addr().expect("a TLS listener");
    let uri = format!("sip:test@{at};transport=tls");
    let (status, events, stderr) = run_call(
        dir.path(),
        &[
            "call",
            &uri,
            "--tls-ca",
            s(&pki.ca),
            "--hangup-after",
            "0.5",
            "--ring-timeout",
            "10",
        ],
    )
    .await;
    assert!(
        status.success(),
        "call over TLS failed ({status}): {:?}\n{stderr}",
        kinds(&events)
    );
    let sent = last_of(&events, "sip.invite_sent");
    assert_eq!(sent["details"]["transport"], "tls", "{sent}");
    assert_eq!(sent["details"]["destination"], at.to_string(), "{sent}");
    last_of(&events, "sip.bye_sent");
    let done = last_of(&events, "call.completed");
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    // The callee saw INVITE, ACK and BYE over TLS, on one accepted connection: the caller has
    // no TLS listener, so a second connection could only have come from it too.
    let stats = stats_once_the_bye_is_in(&callee.handle).await;
    assert_eq!(stats.tls_accepted, 1, "{stats:?}");
    assert_eq!(stats.tls_handshake_failures, 0, "{stats:?}");
    for method in ["INVITE", "ACK", "BYE"] {
        assert_eq!(
            stats.requests_in.get(method),
            Some(&1),
            "{method}: {stats:?}"
        );
    }
    assert_eq!(stats.datagrams_in, 0, "nothing came over UDP: {stats:?}");
    let _ = callee.handle.shutdown().await;
}

#[tokio::test]
async fn serve_with_a_tls_listener_answers_a_sips_call() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    let (serve, mut rx) = spawn_callplane(
        dir.path(),
        &[
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--sip-tls",
            "127.0.0.1:0",
            "--tls-cert",
            s(&pki.cert),
            "--tls-key",
            s(&pki.key),
        ],
    );
    let mut seen = Vec::new();
    let listening = wait_line(&mut rx, &mut seen, |v| v["kind"] == "serve.listening").await;
    let tls_at = listening["sip_tls"]
        .as_str()
        .unwrap_or_else(|| panic!("serve.listening names the TLS address: {listening}"))
        .to_owned();
    // sips: means TLS (no transport parameter); the certificate names 127.0.0.1 too.
    let uri = format!("sips:tls@{tls_at}");
    let (status, events, stderr) = run_call(
        dir.path(),
        &[
            "call",
            &uri,
            "--tls-ca",
            s(&pki.ca),
            "--hangup-after",
            "0.5",
            "--ring-timeout",
            "10",
        ],
    )
    .await;
    assert!(
        status.success(),
        "call exit {status}: {stderr}\n{:?}",
        kinds(&events)
    );
    let sent = last_of(&events, "sip.invite_sent");
    assert_eq!(sent["details"]["transport"], "tls", "{sent}");
    assert_eq!(sent["details"]["destination"], tls_at.as_str(), "{sent}");
    let created = wait_line(&mut rx, &mut seen, |v| v["kind"] == "call.created").await;
    assert_eq!(created["details"]["transport"], "tls", "{created}");
    let served = wait_line(&mut rx, &mut seen, |v| {
        v["kind"] == "call.completed" || v["kind"] == "call.failed"
    })
    .await;
    assert_eq!(served["details"]["outcome"], "answered", "{served}");
    assert!(
        kinds(&seen).contains(&"sip.bye_received"),
        "{:?}",
        kinds(&seen)
    );
    send_sigterm(&serve);
    let (status, stderr) = wait_child(serve, "callplane serve").await;
    assert!(status.success(), "serve exit {status}: {stderr}");
}

#[tokio::test]
async fn the_callees_bye_reuses_the_callers_tls_connection() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    let callee = tls_callee(&pki).await;
    let mut callee_events = callee.handle.subscribe();
    let at = callee.handle.sip_local_tls_addr().expect("a TLS listener");
    let uri = format!("sip:test@{at};transport=tls");
    // The caller has no TLS listener: its Contact is no address the callee can open a TLS
    // connection to, so the callee's BYE arrives only over the caller's own connection.
    let (child, mut rx) = spawn_callplane(
        dir.path(),
        &["call", &uri, "--tls-ca", s(&pki.ca), "--ring-timeout", "10"],
    );
    let mut seen = Vec::new();
    let call_id = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match callee_events.recv().await {
                Ok(ev) if ev.kind == "sip.answered" => return ev.call_id,
                Ok(ev) => seen.push(ev.kind),
                Err(e) => panic!("callee events ended ({e}); saw {seen:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the callee did not answer in 10 s"));
    callee.handle.hangup(call_id).await.expect("hang up");
    let (status, stderr) = wait_child(child, "callplane call").await;
    let events = collect_lines(&mut rx).await;
    assert!(
        status.success(),
        "the caller did not end normally ({status}): {:?}\n{stderr}",
        kinds(&events)
    );
    last_of(&events, "sip.bye_received");
    let stats = callee.handle.sip_stats().await.expect("stats");
    assert_eq!(stats.tls_accepted, 1, "{stats:?}");
    assert_eq!(
        stats.tls_connected, 0,
        "no connection to the caller's Contact: {stats:?}"
    );
    assert_eq!(
        stats.responses_in.get(&200),
        Some(&1),
        "the BYE's 200: {stats:?}"
    );
    let _ = callee.handle.shutdown().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_call_at_once_naming_the_problem() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    let callee = tls_callee(&pki).await;
    let at = callee.handle.sip_local_tls_addr().expect("a TLS listener");
    let uri = format!("sip:test@{at};transport=tls");
    for (extra, expected) in [
        // The right name, the wrong CA.
        (vec!["--tls-ca", s(&pki.other_ca)], "UnknownIssuer"),
        // The right CA, the wrong name.
        (
            vec![
                "--tls-ca",
                s(&pki.ca),
                "--tls-server-name",
                "wrong.example.com",
            ],
            "certificate not valid for name \"wrong.example.com\"",
        ),
    ] {
        let mut args = vec!["call", uri.as_str(), "--ring-timeout", "30"];
        args.extend(extra);
        let started = Instant::now();
        let (status, events, stderr) = run_call(dir.path(), &args).await;
        let took = started.elapsed();
        assert_eq!(
            status.code(),
            Some(6),
            "a TLS failure is a network error: {:?}\n{stderr}",
            kinds(&events)
        );
        let failed = last_of(&events, "call.failed");
        assert_eq!(failed["details"]["outcome"], "network_error", "{failed}");
        let reason = failed["details"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("TLS: invalid peer certificate") && reason.contains(expected),
            "reason {reason:?} should name {expected:?}: {failed}"
        );
        // Timer B is 32 s; the process start-up and the handshake take well under 5.
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }
    let stats = callee.handle.sip_stats().await.expect("stats");
    assert_eq!(stats.requests_in.get("INVITE"), None, "{stats:?}");
    let _ = callee.handle.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_never_completes_the_handshake_fails_the_call_after_the_handshake_timeout() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    // Accepts TCP connections and says nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let at = silent.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        // Bounded: the call opens one connection.
        for _ in 0..4 {
            match silent.accept().await {
                Ok((stream, _)) => open.push(stream),
                Err(_) => break,
            }
        }
        open
    });
    let uri = format!("sip:test@{at};transport=tls");
    let started = Instant::now();
    let (status, events, stderr) = run_call(
        dir.path(),
        &[
            "call",
            &uri,
            "--tls-ca",
            s(&pki.ca),
            "--tls-handshake-timeout-ms",
            "600",
            "--ring-timeout",
            "30",
        ],
    )
    .await;
    let took = started.elapsed();
    held.abort();
    assert_eq!(status.code(), Some(6), "{:?}\n{stderr}", kinds(&events));
    let failed = last_of(&events, "call.failed");
    let reason = failed["details"]["reason"].as_str().unwrap_or_default();
    assert_eq!(
        reason,
        format!("TLS: handshake with {at} timed out after 600 ms"),
        "{failed}"
    );
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(5),
        "took {took:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// kamailio with its tls module as the TLS peer.

/// kamailio, killed (and waited for) on drop.
struct Kamailio {
    child: Option<Child>,
    log: tokio::sync::mpsc::Receiver<String>,
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM: kamailio's main process then ends its children too (SIGKILL would orphan
        // them). Reaped with a bounded poll (no runtime is needed for `try_wait`); SIGKILL
        // after 5 s.
        if let Some(pid) = child.id() {
            let _ = StdCommand::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.start_kill();
        let _ = child.try_wait();
    }
}

fn kamailio_available() -> bool {
    tool_available("kamailio", "-v", "kamailio")
        && (Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so").exists()
            || Path::new("/usr/lib/kamailio/modules/tls.so").exists()
            || {
                let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
                assert!(!in_ci, "CI must install kamailio-tls-modules");
                eprintln!("SKIPPED: kamailio's tls module is not installed (kamailio-tls-modules)");
                false
            })
}

/// Start kamailio with tests/fixtures/kamailio/tls.cfg, TLS on a free port, forwarding to
/// `uas`; returns it once it listens (its log says so) and its TLS address.
async fn start_kamailio(dir: &Path, pki: &Pki, uas: SocketAddr) -> (Kamailio, SocketAddr) {
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kamailio/tls.cfg"),
    )
    .expect("read tls.cfg");
    let tls_port = free_tcp_port();
    let cfg = template
        .replace("@TLS_PORT@", &tls_port.to_string())
        .replace("@UDP_PORT@", &free_udp_port().to_string())
        .replace("@UAS@", &uas.to_string())
        .replace("@CERT@", s(&pki.cert))
        .replace("@KEY@", s(&pki.key));
    let cfg_path = dir.join("kamailio.cfg");
    std::fs::write(&cfg_path, cfg).expect("write kamailio.cfg");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).expect("run dir");
    let mut child = Command::new("kamailio")
        .args(["-f", s(&cfg_path), "-DD", "-E", "-m", "64", "-M", "8"])
        .args(["-Y", s(&run)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start kamailio");
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, log) = tokio::sync::mpsc::channel(4096);
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
    let mut k = Kamailio {
        child: Some(child),
        log,
    };
    let addr: SocketAddr = ([127, 0, 0, 1], tls_port).into();
    // Ready when its TLS port accepts (bounded: 10 s, 50 ms apart).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        if let Some(c) = k.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            let mut seen = Vec::new();
            while let Ok(l) = k.log.try_recv() {
                seen.push(l);
            }
            panic!("kamailio exited ({status}): {}", seen.join("\n"));
        }
        assert!(
            Instant::now() < deadline,
            "kamailio did not listen on {addr} in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (k, addr)
}

/// The engine's SIP counters once a BYE came in (at most 5 s): a caller's call ends when its
/// BYE is sent, not when it arrives, so the BYE may still be on its way.
async fn stats_once_the_bye_is_in(
    handle: &callplane::engine::EngineHandle,
) -> callplane::net::sip::SipStats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = handle.sip_stats().await.expect("stats");
        if stats.requests_in.contains_key("BYE") || tokio::time::Instant::now() >= deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn call_through_kamailio_over_tls_is_answered_and_hung_up() {
    if !openssl_available() || !kamailio_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    // The UAS behind kamailio: plain UDP.
    let uas = Engine::start(EngineConfig::new("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("UAS starts");
    let (mut kamailio, at) = start_kamailio(dir.path(), &pki, uas.handle.sip_local_addr()).await;
    // Verified by name: kamailio's certificate says localhost.
    let uri = format!("sip:test@{at};transport=tls");
    let (status, events, stderr) = run_call(
        dir.path(),
        &[
            "call",
            &uri,
            "--tls-ca",
            s(&pki.ca),
            "--tls-server-name",
            "localhost",
            "--hangup-after",
            "0.5",
            "--ring-timeout",
            "10",
        ],
    )
    .await;
    if !status.success() {
        let mut log = Vec::new();
        while let Ok(l) = kamailio.log.try_recv() {
            log.push(l);
        }
        panic!(
            "call through kamailio failed ({status}): {:?}\n{stderr}\nkamailio:\n{}",
            kinds(&events),
            log.join("\n")
        );
    }
    assert_eq!(
        last_of(&events, "sip.invite_sent")["details"]["transport"],
        "tls"
    );
    last_of(&events, "sip.bye_sent");
    assert_eq!(
        last_of(&events, "call.completed")["details"]["outcome"],
        "answered"
    );
    // The UAS got the INVITE, the ACK and the BYE through kamailio (so the in-dialog requests
    // followed the TLS record-route). The caller's call ends once its BYE is sent, not when
    // the BYE arrives: the BYE may still be on its way through kamailio (bounded wait).
    let stats = stats_once_the_bye_is_in(&uas.handle).await;
    for method in ["INVITE", "ACK", "BYE"] {
        assert_eq!(
            stats.requests_in.get(method),
            Some(&1),
            "{method}: {stats:?}"
        );
    }
    drop(kamailio);
    let _ = uas.handle.shutdown().await;
}
