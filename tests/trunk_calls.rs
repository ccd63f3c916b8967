//! Calls through trunks (issue #11, points 2, 4 and the in-call half of 5/7): digest on the
//! INVITE and the BYE, the outbound proxy as a preloaded route, the trunk's headers and
//! advertised address, and failover between targets. The real engine on loopback against the
//! real sipp; every wait bounded, every sipp killed when its test ends (`kill_on_drop`).
//!
//! Needs the Debian package `sip-tester` (binary `sipp`). When sipp is missing the tests are
//! skipped with a notice, except under `CI=true`, where they fail.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use callplane::engine::{
    CallEvent, CallId, CallRoute, Engine, EngineConfig, OriginateRequest, PromptScope, SipOptions,
};
use common::*;
use serde_json::Value;
use sip::auth::{Authorization, Credentials, NonceIssuer, Secret, Verification};
use sip::message::Uri;
use sip::transaction::Transport;
use tokio::process::Child;
use tokio::sync::broadcast;
use tokio::time::{Instant, timeout};

/// The longest any one call here may take (the tests are meant to stay well below it).
const CALL_LIMIT: Duration = Duration::from_secs(15);

async fn engine() -> Engine {
    Engine::start(EngineConfig::new("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("engine starts")
}

fn originate(to: &str, destination: SocketAddr, sip: SipOptions) -> OriginateRequest {
    OriginateRequest {
        sip,
        alternates: Vec::new(),
        to: Uri::parse(to.as_bytes()).expect("uri"),
        destination,
        from: None,
        play: None,
        gather_digits: 0,
        record: None,
        ring_timeout: Duration::from_secs(12),
        transport: Transport::Udp,
        send_dtmf: Vec::new(),
        dtmf_after: Duration::ZERO,
        hangup_after: Some(Duration::from_millis(500)),
        script: None,
        prompts: None,
        prompt_scope: PromptScope::Local,
        tag: None,
        variables: Default::default(),
        max_duration: None,
    }
}

fn credentials(password: &str) -> Option<Credentials> {
    Some(Credentials::new("alice", password))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(LOCALHOST, port)
}

/// Every event of `call` up to and including its final one (bounded by [`CALL_LIMIT`]).
async fn events_until_final(
    rx: &mut broadcast::Receiver<CallEvent>,
    call: CallId,
) -> Vec<CallEvent> {
    let deadline = Instant::now() + CALL_LIMIT;
    let mut seen: Vec<CallEvent> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, rx.recv()).await {
            Ok(Ok(ev)) if ev.call_id == call => {
                let done = ev.is_final();
                seen.push(ev);
                if done {
                    return seen;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("event stream: {e}; saw {:?}", kinds_of(&seen)),
            Err(_) => panic!(
                "call {call}: no final event within {CALL_LIMIT:?}; saw {:#?}",
                seen.iter()
                    .map(|e| (e.kind, &e.details))
                    .collect::<Vec<_>>()
            ),
        }
    }
}

fn kinds_of(events: &[CallEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind).collect()
}

fn of_kind<'a>(events: &'a [CallEvent], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| &e.details)
        .collect()
}

/// Start a sipp UAS running `scenario` (a fixture, or `None` for the built-in `uas`) for one
/// call, with `extra` arguments.
async fn sipp_uas(dir: &Path, scenario: Option<&str>, extra: &[String]) -> (Child, u16) {
    let scenario = scenario.map(|s| fixture(s).to_str().expect("utf-8 path").to_owned());
    spawn_sipp_on_free_port(dir, |port| {
        let mut args: Vec<String> = match &scenario {
            Some(s) => vec!["-sf".into(), s.clone()],
            None => vec!["-sn".into(), "uas".into()],
        };
        args.extend(
            [
                "-i",
                "127.0.0.1",
                "-mi",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-m",
                "1",
                "-timeout",
                "20s",
                "-trace_err",
            ]
            .map(String::from),
        );
        args.extend(extra.iter().cloned());
        args
    })
    .await
}

async fn sipp_succeeded(sipp: Child, what: &str) {
    let (status, stderr) = wait_child(sipp, what).await;
    assert!(status.success(), "{what} failed ({status}): {stderr}");
}

#[tokio::test]
async fn invite_challenged_401_md5_is_answered_and_the_call_completes() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = sipp_uas(dir.path(), Some("auth_invite_uas.xml"), &[]).await;
    let engine = engine().await;
    let mut rx = engine.handle.subscribe();
    let sip = SipOptions {
        credentials: credentials("s3cret"),
        ..Default::default()
    };
    let call = engine
        .handle
        .originate(originate(
            &format!("sip:+15550001@127.0.0.1:{port}"),
            addr(port),
            sip,
        ))
        .await
        .expect("originate");
    let events = events_until_final(&mut rx, call).await;
    let last = events.last().expect("final");
    assert_eq!(last.kind, "call.completed", "{:?}", kinds_of(&events));
    assert_eq!(last.details["sip_status"], 200, "{}", last.details);
    let challenges = of_kind(&events, "sip.auth_challenge");
    assert_eq!(challenges.len(), 1, "{challenges:?}");
    assert_eq!(challenges[0]["status"], 401);
    assert_eq!(challenges[0]["realm"], "carrier.test");
    assert_eq!(challenges[0]["algorithm"], "MD5");
    assert_eq!(challenges[0]["method"], "INVITE");
    assert_eq!(challenges[0]["stale"], false);
    let retries = of_kind(&events, "sip.auth_retry");
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert_eq!(retries[0]["method"], "INVITE");
    assert_eq!(retries[0]["cseq"], 2);
    // sipp checked the credentials with its own digest code (verifyauth) before its 200.
    sipp_succeeded(sipp, "sipp digest UAS").await;
}

#[tokio::test]
async fn invite_challenged_407_sha256_qop_auth_is_answered() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let issuer = NonceIssuer::new(b"trunk-test-key".to_vec(), "carrier.test")
        .with_algorithms(&[sip::auth::Algorithm::Sha256]);
    let nonce = issuer.issue(unix, [7; 8]).nonce;
    let log = dir.path().join("proxy_messages.log");
    let (sipp, port) = sipp_uas(
        dir.path(),
        Some("auth_proxy_uas.xml"),
        &[
            "-key".into(),
            "nonce".into(),
            nonce.clone(),
            "-trace_msg".into(),
            "-message_file".into(),
            log.display().to_string(),
        ],
    )
    .await;
    let engine = engine().await;
    let mut rx = engine.handle.subscribe();
    let sip = SipOptions {
        credentials: credentials("s3cret"),
        ..Default::default()
    };
    let call = engine
        .handle
        .originate(originate(
            &format!("sip:+15550002@127.0.0.1:{port}"),
            addr(port),
            sip,
        ))
        .await
        .expect("originate");
    let events = events_until_final(&mut rx, call).await;
    let last = events.last().expect("final");
    assert_eq!(
        last.kind,
        "call.completed",
        "{:?} {}",
        kinds_of(&events),
        last.details
    );
    let challenges = of_kind(&events, "sip.auth_challenge");
    assert_eq!(challenges.len(), 1, "{challenges:?}");
    assert_eq!(challenges[0]["status"], 407);
    assert_eq!(challenges[0]["algorithm"], "SHA-256");
    sipp_succeeded(sipp, "sipp 407 UAS").await;
    // sipp 3.6 verifies MD5 only: check the SHA-256 answer it received here, as a server would.
    let text = std::fs::read_to_string(&log).expect("sipp message log");
    let line = text
        .lines()
        .find(|l| l.starts_with("Proxy-Authorization:"))
        .unwrap_or_else(|| panic!("no Proxy-Authorization in what sipp received:\n{text}"));
    let authz = Authorization::parse(line.trim_start_matches("Proxy-Authorization:").trim())
        .expect("credentials parse");
    assert_eq!(authz.nonce, nonce);
    let verdict = issuer
        .verify(
            unix,
            &authz,
            "INVITE",
            b"",
            &Secret::Password("s3cret".into()),
            None,
        )
        .expect("verify");
    // The body is not hashed with qop=auth, so the empty body above is right.
    assert!(
        matches!(verdict, Verification::Ok { nc: Some(1) }),
        "{verdict:?} for {authz:?}"
    );
}

#[tokio::test]
async fn bye_challenged_401_is_answered_once() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = sipp_uas(dir.path(), Some("auth_bye_uas.xml"), &[]).await;
    let engine = engine().await;
    let mut rx = engine.handle.subscribe();
    let sip = SipOptions {
        credentials: credentials("s3cret"),
        ..Default::default()
    };
    let call = engine
        .handle
        .originate(originate(
            &format!("sip:+15550003@127.0.0.1:{port}"),
            addr(port),
            sip,
        ))
        .await
        .expect("originate");
    let events = events_until_final(&mut rx, call).await;
    let last = events.last().expect("final");
    assert_eq!(last.kind, "call.completed", "{:?}", kinds_of(&events));
    let challenges = of_kind(&events, "sip.auth_challenge");
    assert_eq!(challenges.len(), 1, "{challenges:?}");
    assert_eq!(challenges[0]["method"], "BYE");
    let retries = of_kind(&events, "sip.auth_retry");
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert_eq!(retries[0]["method"], "BYE");
    assert_eq!(retries[0]["cseq"], 3);
    // sipp accepted the second BYE only with valid credentials and CSeq 3.
    sipp_succeeded(sipp, "sipp BYE digest UAS").await;
}

#[tokio::test]
async fn wrong_password_fails_with_401_after_one_retry() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = sipp_uas(dir.path(), Some("auth_invite_uas.xml"), &[]).await;
    let engine = engine().await;
    let mut rx = engine.handle.subscribe();
    let sip = SipOptions {
        credentials: credentials("wrong"),
        ..Default::default()
    };
    let call = engine
        .handle
        .originate(originate(
            &format!("sip:+15550004@127.0.0.1:{port}"),
            addr(port),
            sip,
        ))
        .await
        .expect("originate");
    let events = events_until_final(&mut rx, call).await;
    let last = events.last().expect("final");
    assert_eq!(last.kind, "call.failed", "{:?}", kinds_of(&events));
    assert_eq!(last.details["sip_status"], 401, "{}", last.details);
    assert_eq!(
        last.details["end_reason"], "auth_failed",
        "{}",
        last.details
    );
    assert!(
        last.details["end_detail"]
            .as_str()
            .is_some_and(|d| d.contains("rejected")),
        "{}",
        last.details
    );
    assert_eq!(
        of_kind(&events, "sip.auth_retry").len(),
        1,
        "{:?}",
        kinds_of(&events)
    );
    assert_eq!(of_kind(&events, "sip.auth_challenge").len(), 2);
    assert_eq!(of_kind(&events, "sip.auth_failed").len(), 1);
    // sipp fails its scenario if a third INVITE comes within 1.5 s of its second 401.
    sipp_succeeded(sipp, "sipp digest UAS (wrong password)").await;
}

#[tokio::test]
async fn outbound_proxy_gets_the_invite_and_the_bye_with_a_loose_route() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = sipp_uas(dir.path(), Some("proxy_route_uas.xml"), &[]).await;
    let engine = engine().await;
    let mut rx = engine.handle.subscribe();
    let sip = SipOptions {
        trunk_id: Some("trunk-7".into()),
        // No `lr`: the call adds it (a loose route keeps the callee in the Request-URI).
        outbound_proxy: Some(Uri::parse(format!("sip:127.0.0.1:{port}").as_bytes()).expect("uri")),
        headers: vec![("X-Trunk".into(), "trunk-7".into())],
        advertise: Some("127.0.0.2".parse().expect("ip")),
        credentials: None,
        ..SipOptions::default()
    };
    // The callee's address is unreachable TEST-NET: everything must go through the proxy.
    let call = engine
        .handle
        .originate(originate("sip:callee@192.0.2.55:5060", addr(port), sip))
        .await
        .expect("originate");
    let events = events_until_final(&mut rx, call).await;
    let last = events.last().expect("final");
    assert_eq!(
        last.kind,
        "call.completed",
        "{:?} {}",
        kinds_of(&events),
        last.details
    );
    let sent = of_kind(&events, "sip.invite_sent");
    assert_eq!(sent[0]["destination"], format!("127.0.0.1:{port}"));
    let targets = of_kind(&events, "call.target");
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0]["trunk_id"], "trunk-7");
    // sipp checked Route, Request-URI, Via (advertised address, rport), Contact, SDP c= and
    // the trunk header on the INVITE, and the Route on the ACK and the BYE.
    sipp_succeeded(sipp, "sipp proxy UAS").await;
}

/// An alternate target through the built-in sipp UAS.
fn alternate(port: u16, label: &str) -> CallRoute {
    CallRoute {
        to: Uri::parse(format!("sip:+15550009@127.0.0.1:{port}").as_bytes()).expect("uri"),
        destination: addr(port),
        transport: Transport::Udp,
        sip: SipOptions {
            trunk_id: Some("backup".into()),
            ..Default::default()
        },
        label: label.into(),
    }
}

#[tokio::test]
async fn a_silent_first_target_fails_over_to_the_second_within_five_seconds() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A bound socket that never answers: no ICMP error, no response, only silence.
    let silent = std::net::UdpSocket::bind((LOCALHOST, 0)).expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let (sipp, port) = sipp_uas(dir.path(), None, &[]).await;
    let engine = engine().await;
    let mut rx = engine.handle.subscribe();
    let mut req = originate(
        &format!("sip:+15550005@{silent_addr}"),
        silent_addr,
        SipOptions {
            trunk_id: Some("primary".into()),
            ..Default::default()
        },
    );
    req.alternates = vec![alternate(port, "backup sipp")];
    let started = Instant::now();
    let call = engine.handle.originate(req).await.expect("originate");
    let events = events_until_final(&mut rx, call).await;
    let answered = events
        .iter()
        .find(|e| e.kind == "sip.answered")
        .unwrap_or_else(|| panic!("not answered: {:?}", kinds_of(&events)));
    let answered_after = Duration::from_micros(answered.offset_us);
    eprintln!("failover: answered by the second target {answered_after:?} after the start");
    assert!(
        answered_after < Duration::from_millis(5500),
        "answered after {answered_after:?} (4 s rule + setup)"
    );
    assert!(started.elapsed() < CALL_LIMIT);
    let targets = of_kind(&events, "call.target");
    assert_eq!(targets.len(), 2, "{targets:?}");
    assert_eq!(targets[0]["attempt"], 1);
    assert_eq!(targets[0]["destination"], silent_addr.to_string());
    assert_eq!(targets[0]["trunk_id"], "primary");
    assert_eq!(targets[1]["attempt"], 2);
    assert_eq!(targets[1]["label"], "backup sipp");
    assert_eq!(targets[1]["destination"], format!("127.0.0.1:{port}"));
    assert_eq!(targets[1]["transport"], "udp");
    assert_eq!(targets[1]["trunk_id"], "backup");
    let failovers = of_kind(&events, "call.failover");
    assert_eq!(failovers.len(), 1);
    assert_eq!(failovers[0]["reason"], "no_response");
    let last = events.last().expect("final");
    assert_eq!(last.kind, "call.completed", "{}", last.details);
    sipp_succeeded(sipp, "sipp backup UAS").await;
    // The silent target got our INVITE (and was then given up).
    let mut buf = [0u8; 4096];
    silent.set_nonblocking(true).expect("nonblocking");
    let n = silent
        .recv(&mut buf)
        .expect("the first target got the INVITE");
    assert!(
        buf[..n].starts_with(b"INVITE "),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test]
async fn a_503_from_the_first_target_fails_over_but_a_486_does_not() {
    if !sipp_available() {
        return;
    }
    // (scenario of the first target, whether the call fails over)
    for (first, fails_over) in [("unavailable_uas.xml", true), ("busy_uas.xml", false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first_sipp, first_port) = sipp_uas(dir.path(), Some(first), &[]).await;
        let (second_sipp, second_port) = sipp_uas(dir.path(), None, &[]).await;
        let engine = engine().await;
        let mut rx = engine.handle.subscribe();
        let mut req = originate(
            &format!("sip:+15550006@127.0.0.1:{first_port}"),
            addr(first_port),
            SipOptions::default(),
        );
        req.alternates = vec![alternate(second_port, "second")];
        let call = engine.handle.originate(req).await.expect("originate");
        let events = events_until_final(&mut rx, call).await;
        let last = events.last().expect("final");
        let targets = of_kind(&events, "call.target");
        let failovers = of_kind(&events, "call.failover");
        if fails_over {
            assert_eq!(
                last.kind,
                "call.completed",
                "{first}: {:?}",
                kinds_of(&events)
            );
            assert_eq!(targets.len(), 2, "{first}: {targets:?}");
            assert_eq!(failovers.len(), 1);
            assert_eq!(failovers[0]["reason"], "503");
            assert_eq!(last.details["sip_status"], 200);
            sipp_succeeded(second_sipp, "sipp second target").await;
        } else {
            assert_eq!(last.kind, "call.failed", "{first}: {:?}", kinds_of(&events));
            assert_eq!(last.details["sip_status"], 486);
            assert_eq!(
                targets.len(),
                1,
                "{first}: no failover after 486: {targets:?}"
            );
            assert!(failovers.is_empty(), "{failovers:?}");
            // The second target never saw an INVITE: its sipp is still waiting (killed on drop).
            drop(second_sipp);
        }
        sipp_succeeded(first_sipp, first).await;
    }
}
