//! The endpoint router: datagrams in, transactions and TU events out, stateless replies, all in
//! virtual time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sip::endpoint::{Endpoint, EndpointConfig, EndpointEvent, EndpointOutput, Transmit};
use sip::message::{HeaderName, Message, Method, Request, Response, StatusCode};
use sip::transaction::{Terminated, TransactionKey, Transport};

#[allow(clippy::disallowed_methods)] // the origin of virtual time; never compared with the clock
fn t0() -> Instant {
    Instant::now()
}

fn peer() -> SocketAddr {
    "198.51.100.9:40000".parse().expect("addr")
}

fn endpoint() -> Endpoint {
    Endpoint::new(EndpointConfig {
        seed: 42,
        ..EndpointConfig::default()
    })
}

/// A request as a peer at 198.51.100.9 would send it; `via` is the whole top Via value.
fn raw(method: &str, uri: &str, via: &str, to: &str, cseq: &str, extra: &str) -> Bytes {
    Bytes::from(format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: {via}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=1928301774\r\n\
         To: {to}\r\n\
         Call-ID: a84b4c76e66710@pc33.example.com\r\n\
         CSeq: {cseq}\r\n\
         Contact: <sip:alice@198.51.100.9:40000>\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    ))
}

const VIA: &str = "SIP/2.0/UDP 198.51.100.9:40000;branch=z9hG4bK776asdhds";
const BOB: &str = "<sip:bob@example.net>";
const BOB_TAGGED: &str = "<sip:bob@example.net>;tag=314159";

fn invite() -> Bytes {
    raw("INVITE", "sip:bob@example.net", VIA, BOB, "1 INVITE", "")
}

fn drain(ep: &mut Endpoint) -> (Vec<Transmit>, Vec<EndpointEvent>) {
    let mut tx = Vec::new();
    let mut ev = Vec::new();
    while let Some(o) = ep.poll_output() {
        match o {
            EndpointOutput::Transmit(t) => tx.push(t),
            EndpointOutput::Event(e) => ev.push(e),
        }
    }
    (tx, ev)
}

fn parse_response(t: &Transmit) -> Response {
    match Message::parse(t.bytes.clone()).expect("the endpoint prints valid SIP") {
        Message::Response(r) => r,
        Message::Request(r) => panic!("expected a response, got {r:?}"),
    }
}

fn parse_request(t: &Transmit) -> Request {
    match Message::parse(t.bytes.clone()).expect("the endpoint prints valid SIP") {
        Message::Request(r) => r,
        Message::Response(r) => panic!("expected a request, got {r:?}"),
    }
}

fn new_request_key(events: &[EndpointEvent]) -> TransactionKey {
    events
        .iter()
        .find_map(|e| match e {
            EndpointEvent::NewRequest { key, .. } => Some(key.clone()),
            _ => None,
        })
        .expect("a NewRequest event")
}

/// What happened while timers ran: transmits and events, each with the instant it happened.
type Timed = (Vec<(Instant, Transmit)>, Vec<(Instant, EndpointEvent)>);

/// Run the endpoint's timers until none is left (or `until`).
fn run_timers(ep: &mut Endpoint, until: Instant) -> Timed {
    let mut tx = Vec::new();
    let mut ev = Vec::new();
    while let Some(at) = ep.poll_timeout() {
        if at > until {
            break;
        }
        ep.handle_timeout(at);
        let (t, e) = drain(ep);
        tx.extend(t.into_iter().map(|t| (at, t)));
        ev.extend(e.into_iter().map(|e| (at, e)));
    }
    (tx, ev)
}

#[test]
fn new_invite_creates_a_server_transaction_answers_100_and_reaches_the_tu() {
    let now = t0();
    let mut ep = endpoint();
    ep.handle_datagram(now, peer(), Transport::Udp, invite());
    let (tx, ev) = drain(&mut ep);
    assert_eq!(tx.len(), 1);
    assert_eq!(parse_response(&tx[0]).status, StatusCode::TRYING);
    assert_eq!(tx[0].destination, peer());
    match &ev[..] {
        [
            EndpointEvent::NewRequest {
                key: TransactionKey::Server(_),
                request,
                source,
                transport,
            },
        ] => {
            assert_eq!(request.method, Method::Invite);
            assert_eq!(*source, peer());
            assert_eq!(*transport, Transport::Udp);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(ep.transaction_count(), (0, 1));
    assert_eq!(ep.stats().parsed, 1);
}

#[test]
fn retransmitted_invite_is_absorbed_and_the_last_provisional_resent() {
    let now = t0();
    let mut ep = endpoint();
    ep.handle_datagram(now, peer(), Transport::Udp, invite());
    let (_, ev) = drain(&mut ep);
    let key = new_request_key(&ev);
    let req = match &ev[0] {
        EndpointEvent::NewRequest { request, .. } => request.clone(),
        _ => unreachable!("checked above"),
    };
    let mut ringing = sip::message::response_to(&req, StatusCode::RINGING, None);
    ringing.add_to_tag("314159");
    ep.send_response(now, &key, ringing).expect("1xx");
    drain(&mut ep);
    ep.handle_datagram(
        now + Duration::from_millis(500),
        peer(),
        Transport::Udp,
        invite(),
    );
    let (tx, ev) = drain(&mut ep);
    assert!(
        ev.is_empty(),
        "a retransmission is not a new request: {ev:?}"
    );
    assert_eq!(tx.len(), 1);
    assert_eq!(parse_response(&tx[0]).status, StatusCode::RINGING);
    assert_eq!(ep.stats().retransmissions_absorbed, 1);
    assert_eq!(ep.transaction_count(), (0, 1));
}

#[test]
fn a_stateless_final_response_is_sent_once_and_forgets_the_transaction() {
    let start = t0();
    let mut ep = endpoint();
    ep.handle_datagram(start, peer(), Transport::Udp, invite());
    let (_, ev) = drain(&mut ep);
    let key = new_request_key(&ev);
    let EndpointEvent::NewRequest { request, .. } = &ev[0] else {
        unreachable!("checked")
    };
    let busy = sip::message::response_to(request, StatusCode::SERVICE_UNAVAILABLE, None);
    ep.send_response_stateless(&key, busy).expect("sent");
    let (tx, ev) = drain(&mut ep);
    assert_eq!(tx.len(), 1, "one 503");
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(tx[0].destination, peer());
    assert_eq!(tx[0].key, None, "no transaction sent it");
    let sent = parse_response(&tx[0]);
    assert_eq!(sent.status, StatusCode::SERVICE_UNAVAILABLE);
    let tag = sent
        .headers
        .to()
        .expect("To")
        .tag()
        .expect("a To tag")
        .to_owned();
    assert_eq!(ep.transaction_count(), (0, 0), "no transaction is kept");
    assert_eq!(ep.stats().stateless_replies.get(&503), Some(&1));
    // No Timer G: nothing is retransmitted, and nothing times out.
    let (tx, ev) = run_timers(&mut ep, start + Duration::from_secs(60));
    assert!(tx.is_empty() && ev.is_empty(), "{tx:?} {ev:?}");
    // Its ACK is absorbed; a retransmitted INVITE is a new request, answered again.
    let to = format!("{BOB};tag={tag}");
    let ack = raw("ACK", "sip:bob@example.net", VIA, &to, "1 ACK", "");
    ep.handle_datagram(start + Duration::from_secs(1), peer(), Transport::Udp, ack);
    let (tx, ev) = drain(&mut ep);
    assert!(tx.is_empty() && ev.is_empty(), "{tx:?} {ev:?}");
    ep.handle_datagram(
        start + Duration::from_secs(2),
        peer(),
        Transport::Udp,
        invite(),
    );
    let (_, ev) = drain(&mut ep);
    assert!(
        matches!(ev[..], [EndpointEvent::NewRequest { .. }]),
        "{ev:?}"
    );
    // A provisional cannot be sent this way, and a client key is no server transaction.
    let key = new_request_key(&ev);
    let ringing = sip::message::response_to(
        match &ev[0] {
            EndpointEvent::NewRequest { request, .. } => request,
            _ => unreachable!("checked"),
        },
        StatusCode::RINGING,
        None,
    );
    assert!(ep.send_response_stateless(&key, ringing).is_err());
    assert_eq!(ep.transaction_count(), (0, 1));
}

#[test]
fn a_transport_error_names_the_call_id_of_its_transaction() {
    let start = t0();
    let mut ep = endpoint();
    let dest: SocketAddr = "203.0.113.7:5060".parse().expect("addr");
    let key = ep
        .send_request(start, our_invite(Some("z9hG4bKfail")), dest, Transport::Udp)
        .expect("sent");
    drain(&mut ep);
    ep.handle_transport_error(start, &key);
    let (_, ev) = drain(&mut ep);
    assert_eq!(
        ev,
        vec![
            EndpointEvent::TransportError {
                key: key.clone(),
                call_id: "out1@192.0.2.1".to_owned()
            },
            EndpointEvent::TransactionTerminated {
                key,
                call_id: "out1@192.0.2.1".to_owned(),
                reason: Terminated::TransportError
            },
        ]
    );
}

#[test]
fn ack_for_a_non_2xx_is_matched_to_the_invite_transaction_and_stops_timer_g() {
    let start = t0();
    let mut ep = endpoint();
    ep.handle_datagram(start, peer(), Transport::Udp, invite());
    let (_, ev) = drain(&mut ep);
    let key = new_request_key(&ev);
    let EndpointEvent::NewRequest { request, .. } = &ev[0] else {
        unreachable!("checked")
    };
    let mut busy = sip::message::response_to(request, StatusCode::new(486).expect("code"), None);
    busy.add_to_tag("314159");
    ep.send_response(start, &key, busy).expect("final");
    drain(&mut ep);
    // Timer G resends it at 500 ms.
    let (tx, _) = run_timers(&mut ep, start + Duration::from_millis(600));
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].0, start + Duration::from_millis(500));
    let ack = raw("ACK", "sip:bob@example.net", VIA, BOB_TAGGED, "1 ACK", "");
    ep.handle_datagram(
        start + Duration::from_millis(700),
        peer(),
        Transport::Udp,
        ack,
    );
    let (tx, ev) = drain(&mut ep);
    assert!(
        tx.is_empty() && ev.is_empty(),
        "the ACK is absorbed by the transaction: {ev:?}"
    );
    let (tx, ev) = run_timers(&mut ep, start + Duration::from_secs(60));
    assert!(tx.is_empty(), "no more 486 after the ACK");
    assert_eq!(
        ev,
        vec![(
            start + Duration::from_millis(5700),
            EndpointEvent::TransactionTerminated {
                key,
                call_id: "a84b4c76e66710@pc33.example.com".to_owned(),
                reason: Terminated::Completed
            }
        )],
        "Timer I (T4) after the ACK"
    );
    assert_eq!(ep.transaction_count(), (0, 0));
}

#[test]
fn ack_for_a_2xx_goes_to_the_dialog_without_a_transaction() {
    let now = t0();
    let mut ep = endpoint();
    let ack = raw(
        "ACK",
        "sip:bob@192.0.2.4",
        "SIP/2.0/UDP 198.51.100.9:40000;branch=z9hG4bKnew2",
        BOB_TAGGED,
        "1 ACK",
        "",
    );
    ep.handle_datagram(now, peer(), Transport::Udp, ack);
    let (tx, ev) = drain(&mut ep);
    assert!(tx.is_empty());
    match &ev[..] {
        [
            EndpointEvent::InDialogRequest {
                dialog,
                key: None,
                request,
                ..
            },
        ] => {
            assert_eq!(dialog.call_id, "a84b4c76e66710@pc33.example.com");
            assert_eq!(dialog.local_tag, "314159");
            assert_eq!(dialog.remote_tag, "1928301774");
            assert_eq!(request.method, Method::Ack);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(ep.transaction_count(), (0, 0));
}

#[test]
fn request_with_a_to_tag_is_in_dialog_with_a_server_transaction() {
    let now = t0();
    let mut ep = endpoint();
    let bye = raw(
        "BYE",
        "sip:bob@192.0.2.4",
        "SIP/2.0/UDP 198.51.100.9:40000;branch=z9hG4bKbye1",
        BOB_TAGGED,
        "2 BYE",
        "",
    );
    ep.handle_datagram(now, peer(), Transport::Udp, bye);
    let (tx, ev) = drain(&mut ep);
    assert!(tx.is_empty(), "no 100 for a non-INVITE");
    let key = match &ev[..] {
        [
            EndpointEvent::InDialogRequest {
                key: Some(key),
                dialog,
                ..
            },
        ] => {
            assert_eq!(dialog.local_tag, "314159");
            key.clone()
        }
        other => panic!("unexpected {other:?}"),
    };
    let EndpointEvent::InDialogRequest { request, .. } = &ev[0] else {
        unreachable!("checked")
    };
    ep.send_response(
        now,
        &key,
        sip::message::response_to(request, StatusCode::OK, None),
    )
    .expect("200");
    let (tx, _) = drain(&mut ep);
    assert_eq!(parse_response(&tx[0]).status, StatusCode::OK);
}

#[test]
fn cancel_is_its_own_transaction_answered_200_and_reported_against_the_invite() {
    let now = t0();
    let mut ep = endpoint();
    ep.handle_datagram(now, peer(), Transport::Udp, invite());
    let (_, ev) = drain(&mut ep);
    let invite_key = new_request_key(&ev);
    let cancel = raw("CANCEL", "sip:bob@example.net", VIA, BOB, "1 CANCEL", "");
    ep.handle_datagram(
        now + Duration::from_millis(200),
        peer(),
        Transport::Udp,
        cancel,
    );
    let (tx, ev) = drain(&mut ep);
    assert_eq!(tx.len(), 1);
    let ok = parse_response(&tx[0]);
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.headers.cseq().expect("CSeq").method, Method::Cancel);
    match &ev[..] {
        [EndpointEvent::CancelReceived { invite, request }] => {
            assert_eq!(*invite, invite_key);
            assert_eq!(request.method, Method::Cancel);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        ep.transaction_count(),
        (0, 2),
        "INVITE and CANCEL are distinct transactions"
    );
}

#[test]
fn cancel_matching_nothing_gets_481() {
    let now = t0();
    let mut ep = endpoint();
    let cancel = raw("CANCEL", "sip:bob@example.net", VIA, BOB, "1 CANCEL", "");
    ep.handle_datagram(now, peer(), Transport::Udp, cancel);
    let (tx, ev) = drain(&mut ep);
    assert!(ev.is_empty());
    assert_eq!(parse_response(&tx[0]).status.as_u16(), 481);
}

/// A branch without the magic cookie falls back to the RFC 2543 key (§17.2.3): the INVITE
/// retransmission and the ACK for the non-2xx (which carries the response's To tag) both match.
#[test]
fn rfc2543_request_without_magic_cookie_is_matched_by_the_fallback_key() {
    let now = t0();
    let mut ep = endpoint();
    let old_via = "SIP/2.0/UDP 198.51.100.9:40000;branch=1234abcd";
    let old_invite = raw(
        "INVITE",
        "sip:bob@example.net",
        old_via,
        BOB,
        "7 INVITE",
        "",
    );
    ep.handle_datagram(now, peer(), Transport::Udp, old_invite.clone());
    let (_, ev) = drain(&mut ep);
    let key = new_request_key(&ev);
    assert!(
        matches!(
            &key,
            TransactionKey::Server(sip::transaction::ServerKey::Rfc2543(_))
        ),
        "{key:?}"
    );
    let EndpointEvent::NewRequest { request, .. } = &ev[0] else {
        unreachable!("checked")
    };
    let request = request.clone();

    ep.handle_datagram(
        now + Duration::from_millis(500),
        peer(),
        Transport::Udp,
        old_invite,
    );
    let (tx, ev) = drain(&mut ep);
    assert!(ev.is_empty());
    assert_eq!(tx.len(), 1, "the 100 is resent");
    assert_eq!(ep.stats().retransmissions_absorbed, 1);

    let mut not_found =
        sip::message::response_to(&request, StatusCode::new(404).expect("code"), None);
    not_found.add_to_tag("314159");
    ep.send_response(now, &key, not_found).expect("final");
    drain(&mut ep);
    let ack = raw(
        "ACK",
        "sip:bob@example.net",
        old_via,
        BOB_TAGGED,
        "7 ACK",
        "",
    );
    ep.handle_datagram(
        now + Duration::from_millis(600),
        peer(),
        Transport::Udp,
        ack,
    );
    let (tx, ev) = drain(&mut ep);
    assert!(
        tx.is_empty() && ev.is_empty(),
        "the ACK matched the INVITE transaction: {ev:?}"
    );
    // Confirmed: Timer I (T4) ends it; without the match Timer H would have fired at 32 s.
    let (_, ev) = run_timers(&mut ep, now + Duration::from_secs(60));
    assert_eq!(
        ev,
        vec![(
            now + Duration::from_millis(5600),
            EndpointEvent::TransactionTerminated {
                key,
                call_id: "a84b4c76e66710@pc33.example.com".to_owned(),
                reason: Terminated::Completed
            }
        )]
    );
}

fn stateless(bytes: Bytes) -> (Endpoint, Response) {
    let mut ep = endpoint();
    ep.handle_datagram(t0(), peer(), Transport::Udp, bytes);
    let (tx, ev) = drain(&mut ep);
    assert!(
        ev.is_empty(),
        "a rejected request does not reach the TU: {ev:?}"
    );
    assert_eq!(tx.len(), 1, "exactly one stateless answer");
    assert_eq!(tx[0].destination, peer());
    assert_eq!(
        ep.transaction_count(),
        (0, 0),
        "no transaction for a stateless answer"
    );
    let r = parse_response(&tx[0]);
    (ep, r)
}

#[test]
fn unparseable_request_gets_a_stateless_400_and_is_counted() {
    // A Content-Length larger than the body: does not parse.
    let bad = Bytes::from(
        "OPTIONS sip:bob@example.net SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.9:40000;branch=z9hG4bKbad1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.net>\r\n\
         Call-ID: bad1@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 999\r\n\r\nshort",
    );
    let (ep, r) = stateless(bad);
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(ep.stats().malformed, 1);
    assert_eq!(ep.stats().stateless_replies.get(&400), Some(&1));
}

#[test]
fn garbage_is_dropped_and_counted() {
    let mut ep = endpoint();
    ep.handle_datagram(
        t0(),
        peer(),
        Transport::Udp,
        Bytes::from_static(b"\x00\x01 hello"),
    );
    assert_eq!(drain(&mut ep), (vec![], vec![]));
    assert_eq!(ep.stats().malformed, 1);
    assert!(ep.stats().stateless_replies.is_empty());
}

#[test]
fn missing_call_id_gets_400() {
    let bytes = Bytes::from(
        "OPTIONS sip:bob@example.net SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.9:40000;branch=z9hG4bKnc1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.net>\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    );
    let mut ep = endpoint();
    ep.handle_datagram(t0(), peer(), Transport::Udp, bytes);
    let (tx, ev) = drain(&mut ep);
    assert!(ev.is_empty());
    // Either the parser or the validator refuses it; the answer is a 400 either way.
    assert_eq!(parse_response(&tx[0]).status, StatusCode::BAD_REQUEST);
}

#[test]
fn unknown_method_gets_501() {
    let (ep, r) = stateless(raw("FOO", "sip:bob@example.net", VIA, BOB, "1 FOO", ""));
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(ep.stats().stateless_replies.get(&501), Some(&1));
}

#[test]
fn unsupported_uri_scheme_gets_416() {
    let (_, r) = stateless(raw(
        "OPTIONS",
        "mailto:bob@example.net",
        VIA,
        BOB,
        "1 OPTIONS",
        "",
    ));
    assert_eq!(r.status, StatusCode::UNSUPPORTED_URI_SCHEME);
}

#[test]
fn unknown_require_gets_420_with_unsupported() {
    let (_, r) = stateless(raw(
        "INVITE",
        "sip:bob@example.net",
        VIA,
        BOB,
        "1 INVITE",
        "Require: nonsense-ext\r\n",
    ));
    assert_eq!(r.status, StatusCode::BAD_EXTENSION);
    let unsupported = r
        .headers
        .get(&HeaderName::Unsupported)
        .expect("Unsupported header");
    assert_eq!(&unsupported[..], b"nonsense-ext");
}

#[test]
fn max_forwards_zero_gets_483() {
    let bytes = Bytes::from(
        String::from_utf8(raw("INVITE", "sip:bob@example.net", VIA, BOB, "1 INVITE", "").to_vec())
            .expect("utf8")
            .replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    let (_, r) = stateless(bytes);
    assert_eq!(r.status, StatusCode::TOO_MANY_HOPS);
}

#[test]
fn sip_version_3_gets_505() {
    let bytes = Bytes::from(
        String::from_utf8(invite().to_vec())
            .expect("utf8")
            .replacen("SIP/2.0\r\n", "SIP/7.0\r\n", 1),
    );
    let (ep, r) = stateless(bytes);
    assert_eq!(r.status, StatusCode::VERSION_NOT_SUPPORTED);
    assert_eq!(ep.stats().malformed, 1);
}

#[test]
fn unsupported_body_type_gets_415() {
    let bytes = Bytes::from(
        "INVITE sip:bob@example.net SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.9:40000;branch=z9hG4bK415\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.net>\r\n\
         Call-ID: b415@x\r\nCSeq: 1 INVITE\r\nContent-Type: application/x-unknown\r\nContent-Length: 4\r\n\r\nabcd",
    );
    let (_, r) = stateless(bytes);
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[test]
fn broken_ack_is_never_answered() {
    let mut ep = endpoint();
    let ack = raw(
        "ACK",
        "sip:bob@example.net",
        VIA,
        BOB_TAGGED,
        "1 ACK",
        "Require: nonsense-ext\r\n",
    );
    ep.handle_datagram(t0(), peer(), Transport::Udp, ack);
    let (tx, _) = drain(&mut ep);
    assert!(tx.is_empty());
}

#[test]
fn rport_and_received_are_filled_and_used_for_the_response() {
    let mut ep = endpoint();
    // The peer is behind a NAT: it thinks it is 10.0.0.5:5060 and asks for rport.
    let via = "SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKnat1";
    ep.handle_datagram(
        t0(),
        peer(),
        Transport::Udp,
        raw("OPTIONS", "sip:bob@example.net", via, BOB, "1 OPTIONS", ""),
    );
    let (_, ev) = drain(&mut ep);
    let EndpointEvent::NewRequest { key, request, .. } = &ev[0] else {
        panic!("{ev:?}")
    };
    let top = request.headers.top_via().expect("Via");
    assert_eq!(top.received(), Some("198.51.100.9"));
    assert_eq!(top.rport(), Some(Some(40000)));
    ep.send_response(
        t0(),
        key,
        sip::message::response_to(request, StatusCode::OK, None),
    )
    .expect("200");
    let (tx, _) = drain(&mut ep);
    assert_eq!(
        tx[0].destination,
        peer(),
        "to the received address and the rport port"
    );
    let resp = parse_response(&tx[0]);
    let via = resp.headers.top_via().expect("Via");
    assert_eq!(via.received(), Some("198.51.100.9"));
    assert_eq!(via.rport(), Some(Some(40000)));
}

#[test]
fn received_without_rport_uses_the_sent_by_port() {
    let mut ep = endpoint();
    let via = "SIP/2.0/UDP client.example.com:5070;branch=z9hG4bKdom1";
    ep.handle_datagram(
        t0(),
        peer(),
        Transport::Udp,
        raw("OPTIONS", "sip:bob@example.net", via, BOB, "1 OPTIONS", ""),
    );
    let (_, ev) = drain(&mut ep);
    let EndpointEvent::NewRequest { key, request, .. } = &ev[0] else {
        panic!("{ev:?}")
    };
    let top = request.headers.top_via().expect("Via");
    assert_eq!(
        top.received(),
        Some("198.51.100.9"),
        "sent-by is a domain name"
    );
    assert_eq!(top.rport(), None);
    ep.send_response(
        t0(),
        key,
        sip::message::response_to(request, StatusCode::OK, None),
    )
    .expect("200");
    let (tx, _) = drain(&mut ep);
    assert_eq!(
        tx[0].destination,
        "198.51.100.9:5070".parse::<SocketAddr>().expect("addr")
    );
}

#[test]
fn same_ip_without_rport_adds_nothing_and_tcp_replies_on_the_connection() {
    let mut ep = endpoint();
    let via = "SIP/2.0/TCP 198.51.100.9:5060;branch=z9hG4bKtcp1";
    ep.handle_datagram(
        t0(),
        peer(),
        Transport::Tcp,
        raw("OPTIONS", "sip:bob@example.net", via, BOB, "1 OPTIONS", ""),
    );
    let (_, ev) = drain(&mut ep);
    let EndpointEvent::NewRequest { key, request, .. } = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(request.headers.top_via().expect("Via").received(), None);
    ep.send_response(
        t0(),
        key,
        sip::message::response_to(request, StatusCode::OK, None),
    )
    .expect("200");
    let (tx, _) = drain(&mut ep);
    assert_eq!(
        tx[0].destination,
        peer(),
        "over TCP: back on the connection to the source"
    );
    assert_eq!(tx[0].transport, Transport::Tcp);
    // Timer J is zero on TCP: the transaction is gone already.
    assert_eq!(ep.transaction_count(), (0, 0));
}

#[test]
fn stray_response_is_dropped_and_counted() {
    let mut ep = endpoint();
    let resp = Bytes::from(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnobody\r\n\
         From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.net>;tag=2\r\nCall-ID: stray@x\r\n\
         CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    );
    ep.handle_datagram(t0(), peer(), Transport::Udp, resp);
    assert_eq!(drain(&mut ep), (vec![], vec![]));
    assert_eq!(ep.stats().stray_responses, 1);
}

fn our_invite(branch: Option<&str>) -> Request {
    let via = match branch {
        Some(b) => format!("SIP/2.0/UDP 192.0.2.1:5060;branch={b}"),
        None => "SIP/2.0/UDP 192.0.2.1:5060".to_owned(),
    };
    Request::parse(Bytes::from(format!(
        "INVITE sip:bob@example.net SIP/2.0\r\nVia: {via}\r\nRoute: <sip:p1.example.net;lr>\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=ours1\r\nTo: <sip:bob@example.net>\r\nCall-ID: out1@192.0.2.1\r\n\
         CSeq: 5 INVITE\r\nContact: <sip:alice@192.0.2.1>\r\nContent-Length: 0\r\n\r\n"
    )))
    .expect("parses")
}

fn reply_to(req: &Request, code: u16) -> Bytes {
    let mut r = sip::message::response_to(req, StatusCode::new(code).expect("code"), None);
    if code > 100 {
        r.add_to_tag("theirs9");
    }
    r.to_bytes()
}

#[test]
fn send_request_fills_a_branch_and_responses_are_routed_to_it() {
    let start = t0();
    let mut ep = endpoint();
    let dest: SocketAddr = "203.0.113.7:5060".parse().expect("addr");
    let key = ep
        .send_request(start, our_invite(None), dest, Transport::Udp)
        .expect("sent");
    let (tx, _) = drain(&mut ep);
    assert_eq!(tx[0].destination, dest);
    let sent = parse_request(&tx[0]);
    let branch = sent
        .headers
        .top_via()
        .expect("Via")
        .branch()
        .map(str::to_owned)
        .expect("branch filled");
    assert!(
        branch.starts_with("z9hG4bK") && branch.len() > 7,
        "{branch}"
    );
    assert_eq!(
        sent.headers.get(&HeaderName::Route),
        our_invite(None).headers.get(&HeaderName::Route)
    );
    // A second request gets a different branch.
    let other = ep
        .send_request(start, our_invite(None), dest, Transport::Udp)
        .expect("sent");
    assert_ne!(key, other);
    drain(&mut ep);

    ep.handle_datagram(
        start + Duration::from_millis(50),
        dest,
        Transport::Udp,
        reply_to(&sent, 180),
    );
    let (_, ev) = drain(&mut ep);
    match &ev[..] {
        [EndpointEvent::Response { key: k, response }] => {
            assert_eq!(*k, key);
            assert_eq!(response.status, StatusCode::RINGING);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Same branch, other CSeq method: not this transaction (§17.1.3).
    let mut wrong = Response::parse(reply_to(&sent, 200)).expect("parses");
    wrong.headers.set(HeaderName::CSeq, "5 BYE");
    ep.handle_datagram(start, dest, Transport::Udp, wrong.to_bytes());
    assert_eq!(ep.stats().stray_responses, 1);
}

#[test]
fn client_invite_through_the_endpoint_retransmits_and_times_out() {
    let start = t0();
    let mut ep = endpoint();
    let dest: SocketAddr = "203.0.113.7:5060".parse().expect("addr");
    let key = ep
        .send_request(start, our_invite(Some("z9hG4bKdead")), dest, Transport::Udp)
        .expect("sent");
    drain(&mut ep);
    let (tx, ev) = run_timers(&mut ep, start + Duration::from_secs(60));
    let times: Vec<u128> = tx.iter().map(|(t, _)| (*t - start).as_millis()).collect();
    assert_eq!(times, vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(
        ev,
        vec![
            (
                start + Duration::from_secs(32),
                EndpointEvent::TransactionTimeout {
                    key: key.clone(),
                    call_id: "out1@192.0.2.1".to_owned()
                }
            ),
            (
                start + Duration::from_secs(32),
                EndpointEvent::TransactionTerminated {
                    key,
                    call_id: "out1@192.0.2.1".to_owned(),
                    reason: Terminated::Timeout
                }
            ),
        ]
    );
    assert_eq!(ep.transaction_count(), (0, 0));
}

#[test]
fn ack_for_a_non_2xx_is_built_by_the_client_transaction_and_sent() {
    let start = t0();
    let mut ep = endpoint();
    let dest: SocketAddr = "203.0.113.7:5060".parse().expect("addr");
    let invite = our_invite(Some("z9hG4bKbusy"));
    ep.send_request(start, invite.clone(), dest, Transport::Udp)
        .expect("sent");
    drain(&mut ep);
    ep.handle_datagram(start, dest, Transport::Udp, reply_to(&invite, 486));
    let (tx, ev) = drain(&mut ep);
    assert!(
        matches!(&ev[..], [EndpointEvent::Response { response, .. }] if response.status.as_u16() == 486)
    );
    let ack = parse_request(&tx[0]);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(
        ack.headers.top_via().expect("Via").branch(),
        Some("z9hG4bKbusy")
    );
    assert_eq!(ack.headers.to().expect("To").tag(), Some("theirs9"));
    assert_eq!(tx[0].destination, dest);
}

#[test]
fn cancel_waits_for_a_provisional_and_is_built_per_section_9_1() {
    let start = t0();
    let mut ep = endpoint();
    let dest: SocketAddr = "203.0.113.7:5060".parse().expect("addr");
    let invite = our_invite(Some("z9hG4bKcan1"));
    let key = ep
        .send_request(start, invite.clone(), dest, Transport::Udp)
        .expect("sent");
    drain(&mut ep);
    let cancel_key = ep.cancel(start, &key).expect("cancellable");
    let (tx, _) = drain(&mut ep);
    assert!(
        tx.is_empty(),
        "no CANCEL before a provisional response (§9.1)"
    );
    ep.handle_datagram(
        start + Duration::from_millis(100),
        dest,
        Transport::Udp,
        reply_to(&invite, 100),
    );
    let (tx, _) = drain(&mut ep);
    let cancel = parse_request(&tx[0]);
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.uri, invite.uri);
    assert_eq!(
        cancel.headers.top_via().expect("Via").branch(),
        Some("z9hG4bKcan1")
    );
    assert_eq!(cancel.headers.cseq().expect("CSeq").seq, 5);
    assert_eq!(cancel.headers.cseq().expect("CSeq").method, Method::Cancel);
    for h in [
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::Route,
    ] {
        assert_eq!(cancel.headers.get(&h), invite.headers.get(&h), "{h:?}");
    }
    assert_eq!(ep.transaction_count(), (2, 0));
    // The 200 to the CANCEL goes to the CANCEL transaction, not the INVITE one.
    ep.handle_datagram(
        start + Duration::from_millis(150),
        dest,
        Transport::Udp,
        reply_to(&cancel, 200),
    );
    let (_, ev) = drain(&mut ep);
    assert!(
        matches!(&ev[0], EndpointEvent::Response { key, .. } if *key == cancel_key),
        "{ev:?}"
    );
}

/// Two endpoints back to back: INVITE, 180, 200, and the ACK for the 2xx reaching the callee's
/// TU as an in-dialog request.
#[test]
fn two_endpoints_complete_an_invite_200_ack_exchange() {
    let start = t0();
    let alice_addr: SocketAddr = "192.0.2.1:5060".parse().expect("addr");
    let bob_addr: SocketAddr = "203.0.113.7:5060".parse().expect("addr");
    let mut alice = Endpoint::new(EndpointConfig {
        seed: 1,
        ..EndpointConfig::default()
    });
    let mut bob = Endpoint::new(EndpointConfig {
        seed: 2,
        ..EndpointConfig::default()
    });
    let invite = our_invite(None);
    let call = alice
        .send_request(start, invite, bob_addr, Transport::Udp)
        .expect("sent");
    let (tx, _) = drain(&mut alice);
    bob.handle_datagram(start, alice_addr, Transport::Udp, tx[0].bytes.clone());
    let (tx, ev) = drain(&mut bob);
    let EndpointEvent::NewRequest { key, request, .. } = &ev[0] else {
        panic!("{ev:?}")
    };
    alice.handle_datagram(start, bob_addr, Transport::Udp, tx[0].bytes.clone()); // 100
    let tag = bob.new_tag();
    let mut ok = sip::message::response_to(request, StatusCode::OK, None);
    ok.add_to_tag(&tag);
    bob.send_response(start, key, ok).expect("200");
    let (tx, _) = drain(&mut bob);
    assert_eq!(tx[0].destination, alice_addr);
    alice.handle_datagram(start, bob_addr, Transport::Udp, tx[0].bytes.clone());
    let (_, ev) = drain(&mut alice);
    let finals: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            EndpointEvent::Response { key, response } if response.status.is_final() => {
                Some((key.clone(), response.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].0, call);
    // Alice's dialog layer builds the ACK for the 2xx (new branch) and sends it statelessly.
    let ok = &finals[0].1;
    let mut ack = our_invite(None);
    ack.method = Method::Ack;
    let branch = alice.new_branch();
    ack.headers.set(
        HeaderName::Via,
        format!("SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"),
    );
    ack.headers.set(
        HeaderName::To,
        ok.headers.get(&HeaderName::To).expect("To").clone(),
    );
    ack.headers.set(HeaderName::CSeq, "5 ACK");
    alice.send_stateless(bob_addr, Transport::Udp, &Message::Request(ack));
    let (tx, _) = drain(&mut alice);
    bob.handle_datagram(start, alice_addr, Transport::Udp, tx[0].bytes.clone());
    let (_, ev) = drain(&mut bob);
    match &ev[..] {
        [
            EndpointEvent::InDialogRequest {
                dialog,
                key: None,
                request,
                ..
            },
        ] => {
            assert_eq!(request.method, Method::Ack);
            assert_eq!(dialog.local_tag, tag);
            assert_eq!(dialog.remote_tag, "ours1");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Bob's INVITE server transaction ends by Timer L, Alice's client by Timer M.
    let (_, ev) = run_timers(&mut bob, start + Duration::from_secs(60));
    assert!(ev.iter().any(|(t, e)| *t == start + Duration::from_secs(32)
        && matches!(
            e,
            EndpointEvent::TransactionTerminated {
                reason: Terminated::Accepted,
                ..
            }
        )));
    let (_, ev) = run_timers(&mut alice, start + Duration::from_secs(60));
    assert!(ev.iter().any(|(_, e)| matches!(
        e,
        EndpointEvent::TransactionTerminated {
            reason: Terminated::Accepted,
            ..
        }
    )));
}

/// RFC 2543 matching also needs the ACK's To tag to be that of the response the transaction
/// sent; an ACK with another tag is not this transaction's (it goes to the dialog layer).
#[test]
fn rfc2543_ack_with_another_to_tag_does_not_match() {
    let now = t0();
    let mut ep = endpoint();
    let old_via = "SIP/2.0/UDP 198.51.100.9:40000;branch=1234abcd";
    ep.handle_datagram(
        now,
        peer(),
        Transport::Udp,
        raw(
            "INVITE",
            "sip:bob@example.net",
            old_via,
            BOB,
            "7 INVITE",
            "",
        ),
    );
    let (_, ev) = drain(&mut ep);
    let key = new_request_key(&ev);
    let EndpointEvent::NewRequest { request, .. } = &ev[0] else {
        unreachable!("checked")
    };
    let mut busy = sip::message::response_to(request, StatusCode::new(486).expect("code"), None);
    busy.add_to_tag("314159");
    ep.send_response(now, &key, busy).expect("final");
    drain(&mut ep);
    let other = "<sip:bob@example.net>;tag=999";
    ep.handle_datagram(
        now,
        peer(),
        Transport::Udp,
        raw("ACK", "sip:bob@example.net", old_via, other, "7 ACK", ""),
    );
    let (_, ev) = drain(&mut ep);
    assert!(
        matches!(&ev[..], [EndpointEvent::InDialogRequest { key: None, .. }]),
        "{ev:?}"
    );
    // The transaction is still waiting for its ACK: Timer G keeps resending the 486.
    let (tx, _) = run_timers(&mut ep, now + Duration::from_millis(500));
    assert_eq!(tx.len(), 1);
}

/// Over a stream the framer parses; the endpoint takes its messages (and its invalid frames)
/// without parsing again, and answers on the connection.
#[test]
fn framed_stream_messages_are_routed_and_invalid_frames_answered() {
    use sip::transport::{Framed, StreamFramer};
    let mut framer = StreamFramer::new(sip::transport::DEFAULT_MAX_MESSAGE_SIZE);
    let tcp_via = "SIP/2.0/TCP 198.51.100.9:40000;branch=z9hG4bKtcp9";
    framer.push(&raw(
        "INVITE",
        "sip:bob@example.net",
        tcp_via,
        BOB,
        "1 INVITE",
        "",
    ));
    framer.push(b"OPTIONS sip:bob@example.net SIP/2.0\r\nVia: SIP/2.0/TCP 198.51.100.9:40000;branch=z9hG4bKtcpbad\r\n\
                  From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.net>\r\nCall-ID: tcpbad@x\r\n\
                  CSeq: x OPTIONS\r\nContent-Length: 0\r\n\r\n");
    let mut ep = endpoint();
    let now = t0();
    while let Some(frame) = framer.poll().expect("frames") {
        match frame {
            Framed::Message(m) => ep.handle_message(now, peer(), Transport::Tcp, m),
            Framed::Invalid { data, error } => {
                ep.handle_unparseable(peer(), Transport::Tcp, &data, &error)
            }
            Framed::Ping | Framed::Pong => {}
        }
    }
    let (tx, ev) = drain(&mut ep);
    assert!(
        matches!(&ev[..], [EndpointEvent::NewRequest { .. }]),
        "{ev:?}"
    );
    let statuses: Vec<u16> = tx
        .iter()
        .map(|t| parse_response(t).status.as_u16())
        .collect();
    assert_eq!(
        statuses,
        vec![100, 400],
        "100 for the INVITE, 400 for the malformed CSeq"
    );
    assert!(
        tx.iter()
            .all(|t| t.destination == peer() && t.transport == Transport::Tcp)
    );
}
