//! The SIP transport driver and the RTP port pool on real loopback sockets.
//!
//! Every wait is for an event, bounded by a tokio timeout; nothing sleeps to let time pass.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use callplane::net::rtp_ports::{PortPoolError, RtpPortPool};
use callplane::net::sip::{NetError, SipConfig, SipEvent, SipTransport};
use sip::endpoint::EndpointEvent;
use sip::message::{HeaderName, Message, Method, Request, Response, StatusCode, response_to};
use sip::transaction::{TimerConfig, TransactionKey, Transport};
use tokio::sync::mpsc;
use tokio::time::timeout;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(10);

fn any_port() -> SocketAddr {
    SocketAddr::new(LOCALHOST, 0)
}

/// A driver on 127.0.0.1 with UDP and TCP on free ports and short timers (T1 = 10 ms, so
/// Timer F fires after 640 ms).
async fn driver(seed: u64) -> SipTransport {
    driver_with(SipConfig {
        udp: Some(any_port()),
        tcp: Some(any_port()),
        seed,
        timers: short_timers(),
        ..SipConfig::default()
    })
    .await
}

async fn driver_with(config: SipConfig) -> SipTransport {
    SipTransport::bind(config).await.expect("bind on loopback")
}

fn short_timers() -> TimerConfig {
    TimerConfig {
        t1: Duration::from_millis(10),
        t2: Duration::from_millis(40),
        t4: Duration::from_millis(50),
    }
}

/// A request from `local` to `remote` (no branch: the endpoint adds one).
#[allow(clippy::too_many_arguments)]
fn request(
    method: &str,
    local: SocketAddr,
    remote: SocketAddr,
    transport: Transport,
    call_id: &str,
    cseq: u32,
    to_tag: Option<&str>,
    body: &str,
) -> Request {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    let text = format!(
        "{method} sip:b@{remote} SIP/2.0\r\n\
         Via: SIP/2.0/{t} {local};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:a@{local}>;tag=from-a\r\n\
         To: <sip:b@{remote}>{to_tag}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:a@{local}>\r\n\
         {content_type}Content-Length: {len}\r\n\r\n{body}",
        t = transport.as_str(),
        len = body.len(),
    );
    Request::parse(Bytes::from(text)).expect("test request parses")
}

/// The next event that `pick` accepts (others are skipped), within [`WAIT`].
async fn expect<T>(
    events: &mut mpsc::Receiver<SipEvent>,
    what: &str,
    mut pick: impl FnMut(EndpointEvent) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            let ev = events.recv().await.expect("driver still running");
            if let Some(t) = pick(ev.event) {
                return t;
            }
        }
    };
    timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn expect_new_request(
    events: &mut mpsc::Receiver<SipEvent>,
    method: Method,
) -> (TransactionKey, Request) {
    expect(events, "a new request", |e| match e {
        EndpointEvent::NewRequest { key, request, .. } if request.method == method => {
            Some((key, request))
        }
        _ => None,
    })
    .await
}

async fn expect_response(
    events: &mut mpsc::Receiver<SipEvent>,
    for_key: &TransactionKey,
    status: u16,
) -> Response {
    expect(events, &format!("a {status} response"), |e| match e {
        EndpointEvent::Response { key, response }
            if &key == for_key && response.status.as_u16() == status =>
        {
            Some(response)
        }
        _ => None,
    })
    .await
}

async fn options_round_trip(transport: Transport) -> (SipTransport, SipTransport) {
    let mut a = driver(1).await;
    let mut b = driver(2).await;
    let (a_addr, b_addr) = match transport {
        Transport::Udp => (a.local_addrs().udp, b.local_addrs().udp),
        _ => (a.local_addrs().tcp, b.local_addrs().tcp),
    };
    let (a_addr, b_addr) = (a_addr.expect("bound"), b_addr.expect("bound"));
    let options = request("OPTIONS", a_addr, b_addr, transport, "opt-1", 1, None, "");
    let key = a
        .handle
        .send_request(options, b_addr, transport)
        .await
        .expect("OPTIONS accepted");

    let (server_key, req) = expect_new_request(&mut b.events, Method::Options).await;
    let mut ok = response_to(&req, StatusCode::OK, None);
    ok.add_to_tag("b-tag");
    b.handle
        .send_response(server_key, ok)
        .await
        .expect("200 accepted");

    let resp = expect_response(&mut a.events, &key, 200).await;
    assert_eq!(resp.headers.call_id().expect("Call-ID"), "opt-1");
    (a, b)
}

#[tokio::test]
async fn options_over_udp_is_answered_by_the_peer_application() {
    let (a, b) = options_round_trip(Transport::Udp).await;
    let sa = a.handle.stats().await.expect("stats");
    let sb = b.handle.stats().await.expect("stats");
    assert!(sa.datagrams_out >= 1 && sa.datagrams_in >= 1, "{sa:?}");
    assert_eq!(sb.requests_in.get("OPTIONS"), Some(&1), "{sb:?}");
    assert_eq!(sb.endpoint.malformed, 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn options_over_tcp_gets_its_response_on_the_same_connection() {
    let (a, b) = options_round_trip(Transport::Tcp).await;
    let sa = a.handle.stats().await.expect("stats");
    let sb = b.handle.stats().await.expect("stats");
    // A opened one connection; B accepted it and answered over it, opening none of its own
    // (RFC 3261 §18.2.2).
    assert_eq!((sa.tcp_connected, sa.tcp_accepted), (1, 0), "{sa:?}");
    assert_eq!((sb.tcp_connected, sb.tcp_accepted), (0, 1), "{sb:?}");
    assert_eq!(sb.stream_messages_out, 1);
    assert_eq!(
        sa.datagrams_out + sb.datagrams_out,
        0,
        "nothing went over UDP"
    );
    a.shutdown().await;
    b.shutdown().await;
}

async fn invite_call_flow(transport: Transport) {
    let mut a = driver(3).await;
    let mut b = driver(4).await;
    let pick = |t: &SipTransport| match transport {
        Transport::Udp => t.local_addrs().udp.expect("udp"),
        _ => t.local_addrs().tcp.expect("tcp"),
    };
    let (a_addr, b_addr) = (pick(&a), pick(&b));
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 4000 RTP/AVP 0\r\n";

    // INVITE ->
    let invite = request("INVITE", a_addr, b_addr, transport, "call-1", 1, None, sdp);
    let invite_key = a
        .handle
        .send_request(invite, b_addr, transport)
        .await
        .expect("INVITE accepted");
    let (server_key, req) = expect_new_request(&mut b.events, Method::Invite).await;
    assert_eq!(req.body.as_ref(), sdp.as_bytes());

    // <- 180, <- 200 (with the answer and a Contact)
    let mut ringing = response_to(&req, StatusCode::RINGING, None);
    ringing.add_to_tag("b-call");
    b.handle
        .send_response(server_key.clone(), ringing)
        .await
        .expect("180");
    expect_response(&mut a.events, &invite_key, 180).await;
    let mut ok = response_to(&req, StatusCode::OK, None);
    ok.add_to_tag("b-call");
    ok.headers
        .push(HeaderName::Contact, format!("<sip:b@{b_addr}>"));
    ok.headers.push(HeaderName::ContentType, "application/sdp");
    ok.body = Bytes::from(sdp);
    b.handle.send_response(server_key, ok).await.expect("200");
    let ok = expect_response(&mut a.events, &invite_key, 200).await;
    assert_eq!(ok.body.as_ref(), sdp.as_bytes());
    let to_tag = ok.headers.to().expect("To").tag().map(str::to_owned);
    assert_eq!(to_tag.as_deref(), Some("b-call"));

    // ACK -> (for a 2xx: no transaction, RFC 3261 §13.2.2.4; it needs its own branch)
    let mut ack = request(
        "ACK",
        a_addr,
        b_addr,
        transport,
        "call-1",
        1,
        Some("b-call"),
        "",
    );
    let via = format!(
        "SIP/2.0/{} {a_addr};rport;branch=z9hG4bKack1",
        transport.as_str()
    );
    ack.headers.set(HeaderName::Via, via);
    a.handle
        .send_stateless(Message::Request(ack), b_addr, transport)
        .await
        .expect("ACK sent");
    let dialog = expect(&mut b.events, "the ACK", |e| match e {
        EndpointEvent::InDialogRequest {
            dialog,
            key: None,
            request,
            ..
        } if request.method == Method::Ack => Some(dialog),
        _ => None,
    })
    .await;
    assert_eq!(
        (dialog.call_id.as_str(), dialog.local_tag.as_str()),
        ("call-1", "b-call")
    );

    // BYE -> , <- 200
    let bye = request(
        "BYE",
        a_addr,
        b_addr,
        transport,
        "call-1",
        2,
        Some("b-call"),
        "",
    );
    let bye_key = a
        .handle
        .send_request(bye, b_addr, transport)
        .await
        .expect("BYE accepted");
    let (bye_server, bye_req) = expect(&mut b.events, "the BYE", |e| match e {
        EndpointEvent::InDialogRequest {
            key: Some(key),
            request,
            ..
        } if request.method == Method::Bye => Some((key, request)),
        _ => None,
    })
    .await;
    b.handle
        .send_response(bye_server, response_to(&bye_req, StatusCode::OK, None))
        .await
        .expect("200 to BYE");
    expect_response(&mut a.events, &bye_key, 200).await;

    let sb = b.handle.stats().await.expect("stats");
    for m in ["INVITE", "ACK", "BYE"] {
        assert_eq!(sb.requests_in.get(m), Some(&1), "{m}: {sb:?}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn invite_ringing_ok_ack_bye_over_udp() {
    invite_call_flow(Transport::Udp).await;
}

#[tokio::test]
async fn invite_ringing_ok_ack_bye_over_tcp() {
    invite_call_flow(Transport::Tcp).await;
}

#[tokio::test]
async fn garbage_datagram_is_counted_as_malformed_and_the_driver_keeps_working() {
    let mut a = driver(5).await;
    let mut b = driver(6).await;
    let b_addr = b.local_addrs().udp.expect("udp");
    let a_addr = a.local_addrs().udp.expect("udp");
    let junk = std::net::UdpSocket::bind(any_port()).expect("bind");
    junk.send_to(b"\x00\x01\x02 this is not SIP \xff\xfe", b_addr)
        .expect("send garbage");
    junk.send_to(b"", b_addr).expect("send an empty datagram");

    // Datagrams reach B's socket in order: once the OPTIONS sent after them has been answered,
    // the garbage has been read and handled.
    let options = request(
        "OPTIONS",
        a_addr,
        b_addr,
        Transport::Udp,
        "after-junk",
        1,
        None,
        "",
    );
    let key = a
        .handle
        .send_request(options, b_addr, Transport::Udp)
        .await
        .expect("OPTIONS");
    let (server_key, req) = expect_new_request(&mut b.events, Method::Options).await;
    b.handle
        .send_response(server_key, response_to(&req, StatusCode::OK, None))
        .await
        .expect("200");
    expect_response(&mut a.events, &key, 200).await;

    let sb = b.handle.stats().await.expect("stats");
    assert_eq!(sb.endpoint.malformed, 2, "{sb:?}");
    assert_eq!(sb.endpoint.parsed, 1, "{sb:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn request_to_a_closed_udp_port_ends_in_timeout_or_transport_error() {
    let mut a = driver(7).await;
    let a_addr = a.local_addrs().udp.expect("udp");
    let closed = {
        let s = std::net::UdpSocket::bind(any_port()).expect("bind");
        s.local_addr().expect("addr")
    };
    let options = request(
        "OPTIONS",
        a_addr,
        closed,
        Transport::Udp,
        "nobody",
        1,
        None,
        "",
    );
    let key = a
        .handle
        .send_request(options, closed, Transport::Udp)
        .await
        .expect("OPTIONS");
    // Linux does not report ICMP port unreachable on an unconnected UDP socket, so this is
    // normally Timer F (64*T1 = 640 ms here); a transport error is as good.
    let ended = expect(&mut a.events, "the failure", |e| match e {
        EndpointEvent::TransactionTimeout { key: k, .. }
        | EndpointEvent::TransportError { key: k, .. }
            if k == key =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    assert_eq!(ended, ());
    let sa = a.handle.stats().await.expect("stats");
    assert_eq!(sa.client_transactions, 0, "the transaction is gone: {sa:?}");
    a.shutdown().await;
}

#[tokio::test]
async fn tcp_request_to_a_closed_port_is_a_transport_error() {
    let mut a = driver(8).await;
    let a_addr = a.local_addrs().tcp.expect("tcp");
    let closed = {
        let l = std::net::TcpListener::bind(any_port()).expect("bind");
        l.local_addr().expect("addr")
    };
    let options = request(
        "OPTIONS",
        a_addr,
        closed,
        Transport::Tcp,
        "refused",
        1,
        None,
        "",
    );
    let key = a
        .handle
        .send_request(options, closed, Transport::Tcp)
        .await
        .expect("OPTIONS");
    // The connect is refused: the transaction hears of it at once (RFC 3261 §8.1.3.1: treated
    // as a 503), long before Timer F.
    expect(&mut a.events, "the transport error", |e| match e {
        EndpointEvent::TransportError { key: k, .. } if k == key => Some(()),
        _ => None,
    })
    .await;
    let sa = a.handle.stats().await.expect("stats");
    assert_eq!(sa.send_errors, 1, "{sa:?}");
    assert_eq!(sa.tcp_open, 0, "{sa:?}");
    a.shutdown().await;
}

#[tokio::test]
async fn a_full_event_channel_delays_events_but_loses_none_and_commands_still_run() {
    let mut a = driver(9).await;
    let mut b = driver_with(SipConfig {
        udp: Some(any_port()),
        seed: 10,
        event_capacity: 1,
        ..SipConfig::default()
    })
    .await;
    let a_addr = a.local_addrs().udp.expect("udp");
    let b_addr = b.local_addrs().udp.expect("udp");
    let mut keys = Vec::new();
    for i in 0..5 {
        let call_id = format!("burst-{i}");
        let req = request(
            "OPTIONS",
            a_addr,
            b_addr,
            Transport::Udp,
            &call_id,
            1,
            None,
            "",
        );
        keys.push(
            a.handle
                .send_request(req, b_addr, Transport::Udp)
                .await
                .expect("OPTIONS"),
        );
    }
    // B's application has not read anything yet and its channel holds one event: the driver
    // must still answer commands.
    let stats = timeout(WAIT, b.handle.stats())
        .await
        .expect("a command is served while the event channel is full")
        .expect("stats");
    assert!(stats.requests_in.get("OPTIONS").copied().unwrap_or(0) >= 1);

    let mut seen = Vec::new();
    while seen.len() < 5 {
        let (server_key, req) = expect_new_request(&mut b.events, Method::Options).await;
        seen.push(req.headers.call_id().expect("Call-ID").to_owned());
        b.handle
            .send_response(server_key, response_to(&req, StatusCode::OK, None))
            .await
            .expect("200");
    }
    seen.sort();
    assert_eq!(
        seen,
        ["burst-0", "burst-1", "burst-2", "burst-3", "burst-4"]
    );
    for key in &keys {
        expect_response(&mut a.events, key, 200).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_the_sockets_and_refuses_later_commands() {
    let t = driver(11).await;
    let addrs = t.local_addrs();
    let handle = t.handle.clone();
    t.shutdown().await;
    let err = handle.stats().await.expect_err("the driver is gone");
    assert!(matches!(err, NetError::Closed), "{err:?}");
    // The ports are free again.
    std::net::UdpSocket::bind(addrs.udp.expect("udp")).expect("UDP port released");
    std::net::TcpListener::bind(addrs.tcp.expect("tcp")).expect("TCP port released");
}

#[tokio::test]
async fn sending_over_an_unbound_transport_is_refused() {
    let t = driver_with(SipConfig {
        tcp: Some(any_port()),
        ..SipConfig::default()
    })
    .await;
    let here = t.local_addrs().tcp.expect("tcp");
    let req = request("OPTIONS", here, here, Transport::Udp, "no-udp", 1, None, "");
    let err = t
        .handle
        .send_request(req, here, Transport::Udp)
        .await
        .expect_err("no UDP socket");
    assert!(matches!(err, NetError::NoTransport("UDP")), "{err:?}");
    t.shutdown().await;
}

// RTP port pool. Each test takes a window of ports that were all free a moment ago (a fixed
// range can be held by anything else on the machine: an engine's RTP, another test run).

/// The first port of `len` consecutive UDP ports, all free a moment ago, the first one odd
/// when `odd` (else even). Bounded: at most 50 tries.
fn free_udp_window(len: u16, odd: bool) -> u16 {
    for _ in 0..50 {
        let seed = std::net::UdpSocket::bind((LOCALHOST, 0))
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let base = if (seed % 2 == 1) == odd {
            seed
        } else {
            seed - 1
        };
        let Some(end) = base.checked_add(len) else {
            continue;
        };
        let held: Vec<_> = (base..end)
            .map_while(|p| std::net::UdpSocket::bind((LOCALHOST, p)).ok())
            .collect();
        if held.len() == usize::from(len) {
            return base;
        }
    }
    panic!("no window of {len} free UDP ports in 50 tries");
}

#[tokio::test]
async fn rtp_pool_hands_out_even_odd_pairs_until_exhausted_and_reuses_freed_ones() {
    // b..=b+6 (b odd) holds the pairs b+1/b+2, b+3/b+4, b+5/b+6.
    let b = free_udp_window(7, true);
    let pool = RtpPortPool::new(LOCALHOST, b..=b + 6).expect("pool");
    assert_eq!(pool.stats().total, 3);
    let mut pairs = Vec::new();
    for _ in 0..3 {
        pairs.push(pool.allocate().await.expect("a free pair"));
    }
    for p in &pairs {
        assert_eq!(p.rtp_port() % 2, 0, "RTP on an even port");
        assert_eq!(p.rtcp_port(), p.rtp_port() + 1, "RTCP on the next port");
        assert_eq!(p.rtp.local_addr().expect("addr").port(), p.rtp_port());
        assert_eq!(p.rtcp.local_addr().expect("addr").port(), p.rtcp_port());
        assert_eq!(p.rtp.local_addr().expect("addr").ip(), LOCALHOST);
    }
    let mut ports: Vec<u16> = pairs.iter().map(|p| p.rtp_port()).collect();
    ports.sort_unstable();
    assert_eq!(ports, [b + 1, b + 3, b + 5]);
    let s = pool.stats();
    assert_eq!((s.free, s.used), (0, 3));

    let err = pool.allocate().await.expect_err("the pool is exhausted");
    assert!(
        matches!(err, PortPoolError::Exhausted { total: 3, .. }),
        "{err}"
    );

    let freed = pairs.remove(1);
    let freed_port = freed.rtp_port();
    drop(freed);
    let s = pool.stats();
    assert_eq!((s.free, s.used), (1, 2));
    let again = pool.allocate().await.expect("the freed pair");
    assert_eq!(again.rtp_port(), freed_port);
}

#[tokio::test]
async fn rtp_pool_hands_out_pairs_at_random_not_in_sequence() {
    // 200 pairs; 20 calls in a row must not get predictable (consecutive) ports.
    let pool = RtpPortPool::new(LOCALHOST, 23300..=23699).expect("pool");
    let mut pairs = Vec::new();
    for _ in 0..20 {
        pairs.push(pool.allocate().await.expect("a free pair"));
    }
    let ports: Vec<u16> = pairs.iter().map(|p| p.rtp_port()).collect();
    for p in &ports {
        assert!((23300..=23698).contains(p) && p % 2 == 0, "{ports:?}");
    }
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 20, "all distinct: {ports:?}");
    let steps_of_one_pair = ports.windows(2).filter(|w| w[1] == w[0] + 2).count();
    assert!(steps_of_one_pair < 5, "sequential allocation: {ports:?}");
    // Still freed on drop, and a freed pair is not handed out again at once.
    let freed = pairs.pop().expect("a pair").rtp_port();
    assert_eq!(pool.stats().used, 19);
    let next = pool.allocate().await.expect("a free pair");
    assert_ne!(next.rtp_port(), freed, "a just-freed pair is reused last");
}

#[tokio::test]
async fn rtp_pool_skips_ports_held_by_other_programs() {
    // Pairs b/b+1 and b+2/b+3 (b even); somebody else holds b+1 (the RTCP port of the first).
    let b = free_udp_window(4, false);
    let _other = std::net::UdpSocket::bind((LOCALHOST, b + 1)).expect("bind b+1");
    let pool = RtpPortPool::new(LOCALHOST, b..=b + 3).expect("pool");
    let pair = pool.allocate().await.expect("the pair nobody holds");
    assert_eq!(pair.rtp_port(), b + 2);
    // The busy pair is not leased: it stays in the pool, but cannot be bound now.
    assert_eq!(pool.stats().free, 1);
    let err = pool.allocate().await.expect_err("only a busy pair is left");
    assert!(
        matches!(err, PortPoolError::AllBusy { tried: 1, .. }),
        "{err}"
    );
    assert_eq!(pool.stats().free, 1, "a failed bind leaks no pair");
}

#[tokio::test]
async fn rtp_pool_rejects_a_range_without_a_pair() {
    for range in [23201..=23201, 23203..=23204, 0..=1, 65535..=65535] {
        let err = RtpPortPool::new(LOCALHOST, range.clone()).expect_err("no pair");
        assert!(
            matches!(err, PortPoolError::EmptyRange { .. }),
            "{range:?}: {err}"
        );
    }
    let pool = RtpPortPool::new(LOCALHOST, 0..=3).expect("port 0 is skipped");
    assert_eq!(pool.stats().total, 1);
}

#[tokio::test]
async fn tcp_keepalive_ping_gets_a_pong_and_a_bad_frame_is_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = driver(12).await;
    let tcp = t.local_addrs().tcp.expect("tcp");
    let mut peer = tokio::net::TcpStream::connect(tcp).await.expect("connect");
    // A framed message that is not SIP, then an RFC 5626 double-CRLF ping. Frames of one
    // connection are handled in order, so once the pong is back the bad frame has been seen.
    peer.write_all(b"HELLO there\r\nContent-Length: 0\r\n\r\n\r\n\r\n")
        .await
        .expect("write");
    let mut pong = [0u8; 2];
    timeout(WAIT, peer.read_exact(&mut pong))
        .await
        .expect("a pong in time")
        .expect("read the pong");
    assert_eq!(&pong, b"\r\n");
    let stats = t.handle.stats().await.expect("stats");
    assert_eq!(stats.endpoint.malformed, 1, "{stats:?}");
    assert_eq!((stats.tcp_accepted, stats.tcp_open), (1, 1), "{stats:?}");
    t.shutdown().await;
}
