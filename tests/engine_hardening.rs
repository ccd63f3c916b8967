//! Calls always end, and overload and stray requests get the right SIP answer (issue #9, points 2
//! and 8): the real engine on loopback against hand-written SIP from a raw UDP socket, and the
//! real `serve` binary for the API hangup and the SIGTERM drain. Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{Method as HttpMethod, StatusCode as HttpStatus};
use bytes::Bytes;
use callplane::engine::{
    CallEvent, CallId, Engine, EngineConfig, EngineHandle, OriginateRequest, PromptScope,
};
use serde_json::{Value, json};
use sip::message::{HeaderName, Message, Request, Response, StatusCode, Uri, response_to};
use sip::transaction::Transport;
use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio::time::{Instant, timeout};

/// The longest a call may take to end after a hangup: the 4 s teardown and some slack.
const HANGUP_BOUND: Duration = Duration::from_secs(8);

async fn engine(tune: impl FnOnce(&mut EngineConfig)) -> Engine {
    let mut config = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    tune(&mut config);
    Engine::start(config).await.expect("engine starts")
}

fn originate_to(to: &str, destination: SocketAddr) -> OriginateRequest {
    OriginateRequest {
        sip: Default::default(),
        alternates: Vec::new(),
        to: Uri::parse(to.as_bytes()).expect("uri"),
        destination,
        from: None,
        play: None,
        gather_digits: 0,
        record: None,
        // Longer than any wait here: the ring timeout must not be what ends a call.
        ring_timeout: Duration::from_secs(120),
        transport: Transport::Udp,
        send_dtmf: Vec::new(),
        dtmf_after: Duration::ZERO,
        hangup_after: None,
        script: None,
        prompts: None,
        prompt_scope: PromptScope::Local,
        tag: None,
        variables: Default::default(),
        max_duration: None,
    }
}

/// The next event of `call` for which `pred` holds, within `limit` (an error listing what
/// came otherwise).
async fn try_wait_event(
    rx: &mut broadcast::Receiver<CallEvent>,
    call: CallId,
    limit: Duration,
    pred: impl Fn(&CallEvent) -> bool,
) -> Result<CallEvent, String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = match timeout(left, rx.recv()).await {
            Ok(Ok(ev)) => ev,
            Ok(Err(e)) => return Err(format!("event stream: {e}; saw {seen:?}")),
            Err(_) => {
                return Err(format!(
                    "call {call}: no such event within {limit:?}; saw {seen:?}"
                ));
            }
        };
        if ev.call_id != call {
            continue;
        }
        seen.push(ev.kind);
        if pred(&ev) {
            return Ok(ev);
        }
    }
}

/// [`try_wait_event`], panicking on timeout.
async fn wait_event(
    rx: &mut broadcast::Receiver<CallEvent>,
    call: CallId,
    limit: Duration,
    pred: impl Fn(&CallEvent) -> bool,
) -> CallEvent {
    try_wait_event(rx, call, limit, pred)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn final_event(
    rx: &mut broadcast::Receiver<CallEvent>,
    call: CallId,
    limit: Duration,
) -> CallEvent {
    wait_event(rx, call, limit, CallEvent::is_final).await
}

/// Wait (bounded) until the engine has freed every call slot.
async fn slots_freed(handle: &EngineHandle) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.active_calls() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} call slots still held",
            handle.active_calls()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A SIP peer on a raw UDP socket that answers exactly what the test tells it to.
struct Peer {
    sock: UdpSocket,
}

impl Peer {
    async fn bind() -> Peer {
        Peer {
            sock: UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("addr")
    }

    /// The next SIP message (bounded).
    async fn recv(&self, limit: Duration) -> Option<(Message, SocketAddr)> {
        let mut buf = vec![0u8; 65_535];
        let (n, from) = timeout(limit, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let msg = Message::parse(Bytes::copy_from_slice(&buf[..n])).expect("callplane sends SIP");
        Some((msg, from))
    }

    /// The next request with `method` (other messages are skipped).
    async fn request(&self, method: &str, limit: Duration) -> (Request, SocketAddr) {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Some((Message::Request(r), from)) if r.method.as_str() == method => {
                    return (r, from);
                }
                Some((m, _)) => seen.push(first_line(&m)),
                None => panic!("no {method} within {limit:?}; saw {seen:?}"),
            }
        }
    }

    /// Every response that arrives within `window`.
    async fn responses_for(&self, window: Duration) -> Vec<Response> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.recv(left).await {
                Some((Message::Response(r), _)) => out.push(r),
                Some(_) => {}
                None => return out,
            }
        }
    }

    /// The next final response (bounded).
    async fn final_response(&self, limit: Duration) -> Response {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Some((Message::Response(r), _)) if r.status.is_final() => return r,
                Some(_) => {}
                None => panic!("no final response within {limit:?}"),
            }
        }
    }

    async fn send(&self, bytes: &[u8], to: SocketAddr) {
        self.sock.send_to(bytes, to).await.expect("send");
    }

    /// Answer `req` with `status`, To tag `tag` and an optional SDP body.
    async fn answer(&self, req: &Request, to: SocketAddr, status: u16, sdp: Option<&str>) {
        let mut r = response_to(req, StatusCode::new(status).expect("status"), None);
        r.add_to_tag("peer1");
        r.headers
            .push(HeaderName::Contact, format!("<sip:peer@{}>", self.addr()));
        if let Some(sdp) = sdp {
            r.headers.push(HeaderName::ContentType, "application/sdp");
            r.body = Bytes::from(sdp.to_owned());
        }
        self.send(&r.to_bytes(), to).await;
    }
}

fn first_line(m: &Message) -> String {
    match m {
        Message::Request(r) => r.method.as_str().to_owned(),
        Message::Response(r) => r.status.as_u16().to_string(),
    }
}

/// An SDP offer/answer for PCMU at `port` on loopback.
fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

/// A request as a peer at `from` would send it to `to`, outside any dialog unless `to_tag`.
#[allow(clippy::too_many_arguments)]
fn raw_request(
    method: &str,
    from: SocketAddr,
    to: SocketAddr,
    call_id: &str,
    to_tag: Option<&str>,
    cseq: u32,
    content_type: Option<&str>,
    body: &str,
) -> Vec<u8> {
    let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let ct = content_type
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} sip:callplane@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK{call_id}{cseq}{method}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tester@{from}>;tag=t{cseq}\r\n\
         To: <sip:callplane@{to}>{tag}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:tester@{from}>\r\n\
         {ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---- point 2: a send that fails at once ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_fails_at_once_ends_the_call_as_network_error() {
    let e = engine(|c| c.max_calls = BURST).await;
    let mut rx = e.handle.subscribe();
    // Nothing must be sent to it; it only gives the 1 MB INVITE a reachable address.
    let silent = Peer::bind().await;
    let big_user = "a".repeat(1 << 20);
    let cases = [
        (
            "port 0",
            "sip:x@127.0.0.1:0".to_owned(),
            "127.0.0.1:0".parse().expect("addr"),
        ),
        (
            "a 1 MB user part (EMSGSIZE)",
            format!("sip:{big_user}@{}", silent.addr()),
            silent.addr(),
        ),
        (
            "an IPv6 address from the IPv4 socket (EAFNOSUPPORT)",
            "sip:x@[::1]:5060".to_owned(),
            "[::1]:5060".parse().expect("addr"),
        ),
    ];
    // Every case is tried, and all that failed are reported together.
    let mut failures = Vec::new();
    for (what, to, destination) in cases {
        let started = Instant::now();
        let call = e
            .handle
            .originate(originate_to(&to, destination))
            .await
            .unwrap_or_else(|err| panic!("{what}: originate: {err}"));
        match try_wait_event(&mut rx, call, Duration::from_secs(5), CallEvent::is_final).await {
            Ok(end) if end.kind == "call.failed" && end.details["outcome"] == "network_error" => {
                eprintln!("{what}: ended in {:?}", started.elapsed());
            }
            Ok(end) => failures.push(format!("{what}: {} {}", end.kind, end.details)),
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    // The failure races the call's own progress: many at once must all end too.
    let mut calls = std::collections::BTreeSet::new();
    for _ in 0..BURST {
        let call = e
            .handle
            .originate(originate_to(
                "sip:x@127.0.0.1:0",
                "127.0.0.1:0".parse().expect("addr"),
            ))
            .await
            .expect("originate");
        calls.insert(call);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ended = 0;
    while !calls.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, rx.recv()).await {
            Ok(Ok(ev)) if ev.is_final() && calls.remove(&ev.call_id) => {
                ended += 1;
                if ev.details["outcome"] != "network_error" {
                    failures.push(format!("burst call {}: {}", ev.call_id, ev.details));
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("event stream: {e}"),
            Err(_) => {
                failures.push(format!(
                    "burst: {ended} of {BURST} calls to port 0 ended; {} never did",
                    calls.len()
                ));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    slots_freed(&e.handle).await;
    e.handle.shutdown().await.expect("shutdown");
}

/// How many calls the burst places at once.
const BURST: usize = 200;

// ---- point 2: hangup in any state ----------------------------------------------------------

/// How far the peer lets an outbound call get before the test hangs up.
#[derive(Debug, Clone, Copy)]
enum Reached {
    /// The INVITE arrived; no answer at all.
    Dialing,
    /// 180 Ringing; CANCEL is ignored (no 487).
    Ringing,
    /// 183 with SDP; CANCEL is ignored.
    EarlyMedia,
    /// 180 Ringing; the CANCEL is answered 200 and the INVITE 487 (the normal case).
    RingingThenCancelled,
    /// 200 with SDP, ACKed.
    Answered,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_ends_an_outbound_call_in_every_state_even_when_the_peer_never_completes_it() {
    let e = engine(|_| {}).await;
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let rtp_port = rtp.local_addr().expect("addr").port();
    // Every state is tried, and all that failed are reported together.
    let mut failures = Vec::new();
    for reached in [
        Reached::Dialing,
        Reached::Ringing,
        Reached::EarlyMedia,
        Reached::RingingThenCancelled,
        Reached::Answered,
    ] {
        let peer = Peer::bind().await;
        let mut rx = e.handle.subscribe();
        let call = e
            .handle
            .originate(originate_to(&format!("sip:x@{}", peer.addr()), peer.addr()))
            .await
            .expect("originate");
        let (invite, from) = peer.request("INVITE", Duration::from_secs(5)).await;
        let wait_for = match reached {
            Reached::Dialing => "sip.invite_sent",
            Reached::Ringing | Reached::RingingThenCancelled => {
                peer.answer(&invite, from, 180, None).await;
                "sip.ringing"
            }
            Reached::EarlyMedia => {
                peer.answer(&invite, from, 183, Some(&sdp(rtp_port))).await;
                "sip.early_media"
            }
            Reached::Answered => {
                peer.answer(&invite, from, 200, Some(&sdp(rtp_port))).await;
                "sip.ack_sent"
            }
        };
        wait_event(&mut rx, call, Duration::from_secs(5), |ev| {
            ev.kind == wait_for
        })
        .await;
        let hung_up = Instant::now();
        e.handle.hangup(call).await.expect("hangup");
        if let Reached::RingingThenCancelled = reached {
            let (cancel, from) = peer.request("CANCEL", Duration::from_secs(5)).await;
            peer.answer(&cancel, from, 200, None).await;
            peer.answer(&invite, from, 487, None).await;
        }
        let end = match try_wait_event(&mut rx, call, HANGUP_BOUND, CallEvent::is_final).await {
            Ok(end) => end,
            Err(e) => {
                failures.push(format!("{reached:?}: {e}"));
                continue;
            }
        };
        eprintln!(
            "{reached:?}: ended {:?} after the hangup: {}",
            hung_up.elapsed(),
            end.details
        );
        let expected = match reached {
            Reached::Answered => ("answered", "LocalBye", Value::Null),
            // Ended by the protocol: no teardown, and at once.
            Reached::RingingThenCancelled => ("cancelled", "Cancelled", Value::Null),
            _ => ("cancelled", "TornDown", json!("hangup")),
        };
        let got = (
            end.details["outcome"].as_str().unwrap_or_default(),
            end.details["end_reason"].as_str().unwrap_or_default(),
            end.details["teardown"].clone(),
        );
        if got != expected {
            failures.push(format!("{reached:?}: {}", end.details));
        }
        if matches!(reached, Reached::Answered | Reached::RingingThenCancelled)
            && hung_up.elapsed() > Duration::from_secs(2)
        {
            failures.push(format!("{reached:?}: took {:?}", hung_up.elapsed()));
        }
        match reached {
            Reached::Answered => {
                peer.request("BYE", Duration::from_secs(5)).await;
            }
            // The CANCEL went out (the peer just never answered it).
            Reached::Ringing | Reached::EarlyMedia => {
                peer.request("CANCEL", Duration::from_secs(5)).await;
            }
            Reached::Dialing | Reached::RingingThenCancelled => {}
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    slots_freed(&e.handle).await;
    e.handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_ends_an_inbound_call_whose_200_is_never_acked() {
    let e = engine(|_| {}).await;
    let mut rx = e.handle.subscribe();
    let peer = Peer::bind().await;
    let target = e.handle.sip_local_addr();
    let invite = raw_request(
        "INVITE",
        peer.addr(),
        target,
        "noack1",
        None,
        1,
        Some("application/sdp"),
        &sdp(peer.addr().port() + 2),
    );
    peer.send(&invite, target).await;
    let created = timeout(Duration::from_secs(5), async {
        loop {
            let ev = rx.recv().await.expect("events");
            if ev.kind == "call.created" {
                return ev;
            }
        }
    })
    .await
    .expect("the INVITE made a call");
    let ok = peer.final_response(Duration::from_secs(5)).await;
    assert_eq!(ok.status.as_u16(), 200);
    // No ACK: §15 forbids our BYE until it comes, so only the teardown can end the call.
    let hung_up = Instant::now();
    e.handle.hangup(created.call_id).await.expect("hangup");
    let end = final_event(&mut rx, created.call_id, HANGUP_BOUND).await;
    eprintln!(
        "ended {:?} after the hangup: {}",
        hung_up.elapsed(),
        end.details
    );
    assert_eq!(end.details["end_reason"], "TornDown", "{:?}", end.details);
    assert_eq!(end.details["teardown"], "hangup", "{:?}", end.details);
    slots_freed(&e.handle).await;
    e.handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_ends_even_a_call_whose_task_is_stuck_on_io() {
    // The call's prompt is a FIFO nobody writes: loading it blocks the call task for ever, so
    // the call never sees the drain. The dispatcher's last resort must end it.
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("stuck.wav");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo");
    let e = engine(|_| {}).await;
    let mut rx = e.handle.subscribe();
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let peer = Peer::bind().await;
    let mut request = originate_to(&format!("sip:x@{}", peer.addr()), peer.addr());
    request.play = Some(fifo.clone());
    let call = e.handle.originate(request).await.expect("originate");
    let (invite, from) = peer.request("INVITE", Duration::from_secs(5)).await;
    let port = rtp.local_addr().expect("addr").port();
    peer.answer(&invite, from, 200, Some(&sdp(port))).await;
    wait_event(&mut rx, call, Duration::from_secs(5), |ev| {
        ev.kind == "sip.answered"
    })
    .await;
    let asked = Instant::now();
    let drained = timeout(
        Duration::from_secs(10),
        e.handle.drain(Duration::from_millis(500)),
    )
    .await;
    let took = asked.elapsed();
    let end = try_wait_event(&mut rx, call, Duration::from_secs(1), CallEvent::is_final).await;
    // Unblock the loader (a writer opens the FIFO, then closes it: the read sees EOF), or the
    // runtime would wait for that blocking thread for ever.
    let unblock = tokio::task::spawn_blocking(move || {
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
    });
    let _ = timeout(Duration::from_secs(5), unblock).await;
    eprintln!("drain returned after {took:?}: {end:?}");
    assert!(drained.is_ok(), "the drain did not return within 10 s");
    assert!(took < Duration::from_secs(4), "the drain took {took:?}");
    let end = end.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(end.kind, "call.failed", "{:?}", end.details);
    assert_eq!(end.details["end_reason"], "Aborted", "{:?}", end.details);
    assert_eq!(e.handle.active_calls(), 0);
    e.handle.shutdown().await.expect("shutdown");
}

// ---- point 8: SIP answers -------------------------------------------------------------------

/// Sends one INVITE, never ACKs, and counts the 503s that arrive within Timer G's span.
async fn count_503s(target: SocketAddr, call_id: &str) -> Vec<Response> {
    let peer = Peer::bind().await;
    let invite = raw_request(
        "INVITE",
        peer.addr(),
        target,
        call_id,
        None,
        1,
        Some("application/sdp"),
        &sdp(peer.addr().port() + 2),
    );
    peer.send(&invite, target).await;
    // Timer G would resend a stateful 503 at 0.5 s and 1.5 s (T1 = 500 ms).
    peer.responses_for(Duration::from_millis(2500))
        .await
        .into_iter()
        .filter(|r| r.status.as_u16() == 503)
        .collect()
}

/// Two sockets holding an even port and the odd one above it (an RTP/RTCP pair nobody else
/// can take while they live).
fn held_port_pair() -> [std::net::UdpSocket; 2] {
    for _ in 0..200 {
        let even = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = even.local_addr().expect("addr").port();
        if !port.is_multiple_of(2) || port == u16::MAX {
            continue;
        }
        if let Ok(odd) = std::net::UdpSocket::bind(("127.0.0.1", port + 1)) {
            return [even, odd];
        }
    }
    panic!("no free even/odd port pair in 200 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_503s_are_sent_once_statelessly_at_capacity_while_draining_and_without_rtp_ports()
{
    let full = engine(|c| c.max_calls = 0).await;
    let draining = engine(|_| {}).await;
    draining
        .handle
        .drain(Duration::from_secs(1))
        .await
        .expect("drain");
    assert!(draining.handle.is_draining());
    // No RTP port: the engine's only pair is held by another socket.
    let held = held_port_pair();
    let first = held[0].local_addr().expect("addr").port();
    let no_ports = engine(|c| c.rtp_ports = first..=first + 1).await;
    let (at_capacity, at_drain, at_no_port) = tokio::join!(
        count_503s(full.handle.sip_local_addr(), "full1"),
        count_503s(draining.handle.sip_local_addr(), "drain1"),
        count_503s(no_ports.handle.sip_local_addr(), "noport1"),
    );
    let no_port = at_no_port.first().cloned();
    assert_eq!(
        at_no_port.len(),
        1,
        "no RTP port: {} 503s",
        at_no_port.len()
    );
    assert!(
        no_port.is_some_and(|r| r.headers.to().expect("To").tag().is_some()),
        "no RTP port: a final response carries a To tag"
    );
    no_ports.handle.shutdown().await.expect("shutdown");
    for (what, got) in [("at capacity", at_capacity), ("draining", at_drain)] {
        assert_eq!(got.len(), 1, "{what}: {} 503s", got.len());
        assert!(
            got[0].headers.get(&HeaderName::RetryAfter).is_some(),
            "{what}: Retry-After"
        );
        assert!(
            got[0].headers.to().expect("To").tag().is_some(),
            "{what}: a final response carries a To tag"
        );
    }
    let stats = full.handle.sip_stats().await.expect("stats");
    assert_eq!(
        stats.server_transactions, 0,
        "no transaction kept: {stats:?}"
    );
    full.handle.shutdown().await.expect("shutdown");
    draining.handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_dialog_bye_update_and_prack_get_481() {
    let e = engine(|_| {}).await;
    let target = e.handle.sip_local_addr();
    let peer = Peer::bind().await;
    for (n, (method, to_tag)) in [
        ("BYE", None),
        ("UPDATE", None),
        ("PRACK", None),
        ("BYE", Some("nosuchdialog")),
    ]
    .into_iter()
    .enumerate()
    {
        let cseq = n as u32 + 1;
        let req = raw_request(
            method,
            peer.addr(),
            target,
            &format!("stray{n}"),
            to_tag,
            cseq,
            None,
            "",
        );
        peer.send(&req, target).await;
        let r = peer.final_response(Duration::from_secs(5)).await;
        assert_eq!(
            r.status.as_u16(),
            481,
            "{method} (To tag {to_tag:?}) got {} {}",
            r.status.as_u16(),
            String::from_utf8_lossy(&r.reason)
        );
    }
    e.handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_whose_body_is_not_sdp_gets_415_with_accept() {
    let e = engine(|_| {}).await;
    let mut rx = e.handle.subscribe();
    let target = e.handle.sip_local_addr();
    let peer = Peer::bind().await;
    let invite = raw_request(
        "INVITE",
        peer.addr(),
        target,
        "notsdp1",
        None,
        1,
        Some("text/plain"),
        "hello, this is no session description",
    );
    peer.send(&invite, target).await;
    let r = peer.final_response(Duration::from_secs(5)).await;
    assert_eq!(r.status.as_u16(), 415, "{r:?}");
    let accept = r
        .headers
        .get(&HeaderName::Accept)
        .map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(accept.as_deref(), Some("application/sdp"));
    // No call was made for it.
    assert!(
        rx.try_recv().is_err(),
        "the refused INVITE made no call event"
    );
    assert_eq!(e.handle.active_calls(), 0);
    e.handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_while_the_node_drains() {
    let store = common::db::sqlite_store().await;
    let api = common::api::TestApi::start(store).await;
    let before = api.send(HttpMethod::GET, "/readyz", None, None).await;
    let body = before.json();
    assert_eq!(body["components"]["engine"]["draining"], false, "{body}");
    assert_eq!(body["components"]["engine"]["status"], "healthy", "{body}");
    api.state
        .engine
        .drain(Duration::from_secs(1))
        .await
        .expect("drain");
    let during = api.send(HttpMethod::GET, "/readyz", None, None).await;
    let body = during.json();
    assert_eq!(during.status, HttpStatus::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "critical", "{body}");
    assert_eq!(body["components"]["engine"]["draining"], true, "{body}");
    api.stop().await;
}

// ---- point 2 through `serve`: the API hangup and the SIGTERM drain --------------------------

/// Polls `GET /v1/calls/{id}` until the call has ended (bounded); the row.
async fn call_row_when_ended(
    http: &reqwest::Client,
    api: &str,
    key: &str,
    id: &str,
    limit: Duration,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let row: Value = http
            .get(format!("{api}/v1/calls/{id}"))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET call")
            .json()
            .await
            .expect("JSON");
        if row["status"] == "completed" || row["status"] == "failed" {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "call not ended in {limit:?}: {row:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post_call(http: &reqwest::Client, api: &str, key: &str, to: &str) -> String {
    let resp = http
        .post(format!("{api}/v1/calls"))
        .bearer_auth(key)
        .json(&json!({"to": to, "ring_timeout_s": 120}))
        .send()
        .await
        .expect("POST /v1/calls");
    let status = resp.status();
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_ends_unsendable_and_hung_up_calls_and_drains_in_time_past_a_silent_peer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (child, mut rx) = common::spawn_callplane(
        dir.path(),
        &[
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--drain-timeout",
            "1",
        ],
    );
    let (api, key, mut seen) = common::serve_started(&mut rx).await;
    let key = key.expect("a bootstrap key");
    let http = reqwest::Client::new();

    // An address the socket cannot reach: ends at once as network_error.
    let id = post_call(&http, &api, &key, "sip:x@[::1]:5060").await;
    let row = call_row_when_ended(&http, &api, &key, &id, Duration::from_secs(5)).await;
    assert_eq!(row["outcome"], "network_error", "{row:#}");

    // A peer that swallows the INVITE: the API hangup (202) ends the call.
    let silent = Peer::bind().await;
    let id = post_call(&http, &api, &key, &format!("sip:x@{}", silent.addr())).await;
    silent.request("INVITE", Duration::from_secs(5)).await;
    let resp = http
        .post(format!("{api}/v1/calls/{id}/hangup"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("POST hangup");
    assert_eq!(resp.status(), 202);
    let row = call_row_when_ended(&http, &api, &key, &id, HANGUP_BOUND).await;
    assert_eq!(row["outcome"], "cancelled", "{row:#}");

    // Another silent call, then SIGTERM: the drain ends within its timeout (1 s) and the
    // teardown bounds, not at Timer B (32 s).
    let silent2 = Peer::bind().await;
    let id = post_call(&http, &api, &key, &format!("sip:x@{}", silent2.addr())).await;
    silent2.request("INVITE", Duration::from_secs(5)).await;
    let asked = Instant::now();
    common::send_sigterm(&child);
    let exited = timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!("serve still draining 10 s after SIGTERM with --drain-timeout 1")
        })
        .expect("wait for serve");
    let took = asked.elapsed();
    eprintln!("serve drained and exited {took:?} after SIGTERM");
    assert!(exited.status.success(), "serve exit {}", exited.status);
    while let Ok(line) = rx.try_recv() {
        seen.push(serde_json::from_str(&line).expect("JSON line"));
    }
    while let Ok(Some(line)) = timeout(Duration::from_secs(2), rx.recv()).await {
        seen.push(serde_json::from_str(&line).expect("JSON line"));
    }
    let end = seen
        .iter()
        .find(|v| {
            v["tag"] == id.as_str() && (v["kind"] == "call.failed" || v["kind"] == "call.completed")
        })
        .unwrap_or_else(|| panic!("no final event for {id}: {:?}", common::kinds(&seen)));
    assert_eq!(end["details"]["end_reason"], "TornDown", "{end}");
    assert_eq!(end["details"]["teardown"], "drain", "{end}");
    assert!(took < Duration::from_secs(6), "drain took {took:?}");
}
