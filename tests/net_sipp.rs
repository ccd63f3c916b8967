//! Interop of the SIP transport driver with the real sipp, on loopback UDP.
//!
//! Needs the Debian package `sip-tester` (binary `sipp`). When sipp is missing the tests are
//! skipped with a notice, except under `CI=true`, where they fail: CI must install it.
//!
//! sipp runs as a child process under a tokio timeout, killed when the test drops it; its exit
//! code is 0 only when every call of its scenario succeeded.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use bytes::Bytes;
use callplane::net::sip::{SipConfig, SipEvent, SipHandle, SipTransport};
use sip::endpoint::EndpointEvent;
use sip::message::{HeaderName, Method, Request, StatusCode, response_to};
use sip::transaction::Transport;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;
use common::*;

/// Upper bound for one sipp run (its own `-timeout` is shorter).
const SIPP_WAIT: Duration = Duration::from_secs(60);

/// What sipp left in its working directory (error logs), for a failure message.
fn sipp_logs(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if let Ok(text) = std::fs::read_to_string(&path) {
            out.push_str(&format!("--- {}\n{}\n", path.display(), text));
        }
    }
    out
}

/// The contents of sipp's `-trace_err` logs (empty when it logged nothing).
fn sipp_error_log(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.to_string_lossy().ends_with("_errors.log") {
            out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    out
}

/// Wait for sipp to exit; its exit status and what it wrote on stderr. (Dropping this future
/// kills sipp.)
async fn wait_sipp(child: Child) -> (ExitStatus, String) {
    let out = timeout(SIPP_WAIT, child.wait_with_output())
        .await
        .expect("sipp finished within its time limit")
        .expect("wait for sipp");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ANSWER_SDP: &str = "v=0\r\no=callplane 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
                          t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// A tiny UAS on the driver: INVITE → 180 then 200 with an SDP answer; BYE → 200. Runs until
/// the event channel closes.
async fn answer_calls(
    handle: &SipHandle,
    events: &mut mpsc::Receiver<SipEvent>,
    contact: SocketAddr,
) {
    let mut calls = 0u32;
    while let Some(ev) = events.recv().await {
        match ev.event {
            EndpointEvent::NewRequest { key, request, .. } if request.method == Method::Invite => {
                calls += 1;
                let tag = format!("cp{calls}");
                let mut ringing = response_to(&request, StatusCode::RINGING, None);
                ringing.add_to_tag(&tag);
                handle
                    .send_response(key.clone(), ringing)
                    .await
                    .expect("180");
                let mut ok = response_to(&request, StatusCode::OK, None);
                ok.add_to_tag(&tag);
                ok.headers
                    .push(HeaderName::Contact, format!("<sip:callplane@{contact}>"));
                ok.headers.push(HeaderName::ContentType, "application/sdp");
                ok.body = Bytes::from_static(ANSWER_SDP.as_bytes());
                handle.send_response(key, ok).await.expect("200");
            }
            EndpointEvent::InDialogRequest {
                key: Some(key),
                request,
                ..
            } if request.method == Method::Bye => {
                handle
                    .send_response(key, response_to(&request, StatusCode::OK, None))
                    .await
                    .expect("200 to BYE");
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn sipp_uac_places_five_calls_that_the_driver_answers() {
    if !sipp_available() {
        return;
    }
    let mut uas = SipTransport::bind(SipConfig {
        udp: Some(SocketAddr::new(LOCALHOST, 0)),
        seed: 0x5199,
        ..SipConfig::default()
    })
    .await
    .expect("bind");
    let ours = uas.local_addrs().udp.expect("udp");
    let dir = tempfile::tempdir().expect("tempdir");
    // No -p: sipp takes the first free port from 5060 up (nobody calls it back).
    let args: Vec<String> = ["-sn", "uac", "-i", "127.0.0.1", "-mi", "127.0.0.1"]
        .iter()
        .map(|s| s.to_string())
        .chain(
            [
                "-m",
                "5",
                "-r",
                "5",
                "-l",
                "5",
                "-d",
                "200",
                "-timeout",
                "30s",
                "-timeout_error",
                "-nostdin",
                "-trace_err",
            ]
            .iter()
            .map(|s| s.to_string()),
        )
        .chain([ours.to_string()])
        .collect();
    let sipp = spawn_sipp(dir.path(), &args);

    let handle = uas.handle.clone();
    let (status, stderr) = tokio::select! {
        exit = wait_sipp(sipp) => exit,
        () = answer_calls(&handle, &mut uas.events, ours) => panic!("the driver stopped"),
    };
    assert!(
        status.success(),
        "sipp UAC failed ({status}): {stderr}\nits logs:\n{}",
        sipp_logs(dir.path())
    );
    // -trace_err logs every message sipp did not expect (a stray retransmission, a wrong
    // header): there must be none.
    let unexpected = sipp_error_log(dir.path());
    assert!(
        unexpected.is_empty(),
        "sipp saw unexpected messages:\n{unexpected}"
    );
    let stats = handle.stats().await.expect("stats");
    assert_eq!(stats.requests_in.get("INVITE"), Some(&5), "{stats:?}");
    assert_eq!(stats.requests_in.get("BYE"), Some(&5), "{stats:?}");
    assert_eq!(stats.endpoint.malformed, 0, "{stats:?}");
    uas.shutdown().await;
}

#[tokio::test]
async fn driver_options_is_answered_by_a_sipp_uas() {
    if !sipp_available() {
        return;
    }
    let mut uac = SipTransport::bind(SipConfig {
        udp: Some(SocketAddr::new(LOCALHOST, 0)),
        seed: 0x0917,
        ..SipConfig::default()
    })
    .await
    .expect("bind");
    let ours = uac.local_addrs().udp.expect("udp");
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = fixture("options_uas.xml");
    let (sipp, port) = spawn_sipp_on_free_port(dir.path(), |port| {
        vec![
            "-sf".into(),
            scenario.display().to_string(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            "1".into(),
            "-timeout".into(),
            "30s".into(),
            "-timeout_error".into(),
            "-nostdin".into(),
            "-trace_err".into(),
        ]
    })
    .await;

    let sipp_addr = SocketAddr::new(LOCALHOST, port);
    let text = format!(
        "OPTIONS sip:sipp@{sipp_addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {ours};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:callplane@{ours}>;tag=cp-options\r\n\
         To: <sip:sipp@{sipp_addr}>\r\n\
         Call-ID: options-to-sipp@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Contact: <sip:callplane@{ours}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let options = Request::parse(Bytes::from(text)).expect("parse");
    let key = uac
        .handle
        .send_request(options, sipp_addr, Transport::Udp)
        .await
        .expect("OPTIONS");
    let wait = async {
        loop {
            match uac.events.recv().await.expect("driver running").event {
                EndpointEvent::Response { key: k, response }
                    if k == key && response.status.is_final() =>
                {
                    return response;
                }
                EndpointEvent::TransactionTimeout { key: k, .. }
                | EndpointEvent::TransportError { key: k, .. }
                    if k == key =>
                {
                    panic!("OPTIONS to sipp failed: {}", sipp_logs(dir.path()))
                }
                _ => {}
            }
        }
    };
    let response = timeout(SIPP_WAIT, wait).await.expect("a final response");
    assert_eq!(response.status.as_u16(), 200);
    let to = response.headers.to().expect("To");
    assert!(to.tag().is_some_and(|t| t.contains("SIPpTag01")), "{to:?}");

    let (status, stderr) = wait_sipp(sipp).await;
    assert!(
        status.success(),
        "sipp UAS failed ({status}): {stderr}\nits logs:\n{}",
        sipp_logs(dir.path())
    );
    uac.shutdown().await;
}
