//! Regression tests for the review findings: session refresh failures, strict-routing next hop,
//! the INVITE client transaction after CANCEL, the To tag of the 200 to CANCEL, merged
//! requests, Session-Expires below the floor, folded lines in the stream framer, the 2xx while
//! a reliable provisional with SDP is unacknowledged, and the bounded fork list.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sip::dialog::{
    Dialog, DialogConfig, DialogError, DialogEvent, DialogState, InviteParams, InviteSession,
    MAX_FORKS, Output, next_hop,
};
use sip::endpoint::{Endpoint, EndpointConfig, EndpointEvent, EndpointOutput, Transmit};
use sip::message::{
    HeaderName, Host, Message, Method, NameAddr, Request, Response, StatusCode, Uri, Via,
    response_to,
};
use sip::transaction::{
    ClientInvite, ServerKey, Timer, TimerConfig, TransactionEvent, TransactionKey, Transport,
};
use sip::transport::{Framed, StreamFramer};

#[allow(clippy::disallowed_methods)] // the origin of virtual time; never compared with the clock
fn t0() -> Instant {
    Instant::now()
}

fn peer() -> SocketAddr {
    "198.51.100.9:40000".parse().expect("address")
}

fn drain(ep: &mut Endpoint) -> (Vec<Transmit>, Vec<EndpointEvent>) {
    let (mut t, mut e) = (vec![], vec![]);
    while let Some(o) = ep.poll_output() {
        match o {
            EndpointOutput::Transmit(x) => t.push(x),
            EndpointOutput::Event(x) => e.push(x),
        }
    }
    (t, e)
}

fn parse(t: &Transmit) -> Message {
    Message::parse(t.bytes.clone()).expect("the endpoint prints parseable messages")
}

fn responses(tx: &[Transmit]) -> Vec<Response> {
    tx.iter()
        .filter_map(|t| match parse(t) {
            Message::Response(r) => Some(r),
            Message::Request(_) => None,
        })
        .collect()
}

fn request(text: &str) -> Request {
    Request::parse(Bytes::from(text.to_owned())).expect("request parses")
}

fn status(code: u16) -> StatusCode {
    StatusCode::new(code).expect("status code")
}

const INVITE: &str = "INVITE sip:bob@192.0.2.1 SIP/2.0\r\n\
    Via: SIP/2.0/UDP 198.51.100.9:40000;branch=z9hG4bK776asdhds\r\n\
    Max-Forwards: 70\r\n\
    From: <sip:alice@example.com>;tag=1928301774\r\n\
    To: <sip:bob@example.net>\r\n\
    Call-ID: a84b4c76e66710@pc33\r\n\
    CSeq: 1 INVITE\r\n\
    Contact: <sip:alice@198.51.100.9:40000>\r\n\
    Content-Length: 0\r\n\r\n";

const CANCEL: &str = "CANCEL sip:bob@192.0.2.1 SIP/2.0\r\n\
    Via: SIP/2.0/UDP 198.51.100.9:40000;branch=z9hG4bK776asdhds\r\n\
    Max-Forwards: 70\r\n\
    From: <sip:alice@example.com>;tag=1928301774\r\n\
    To: <sip:bob@example.net>\r\n\
    Call-ID: a84b4c76e66710@pc33\r\n\
    CSeq: 1 CANCEL\r\n\
    Content-Length: 0\r\n\r\n";

// ---- UAC sessions with a session timer (findings 1 and 6) ----------------------------------

const OFFER: &[u8] = b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\n";

fn uac_session(se: Option<u32>) -> (InviteSession, Request) {
    let cfg = DialogConfig {
        session_expires: se,
        min_se: 90,
        seed: 3,
        ..DialogConfig::default()
    };
    let params = InviteParams {
        request_uri: Uri::parse("sip:bob@192.0.2.1").expect("uri"),
        from: NameAddr::parse_named(b"<sip:alice@example.com>", "From").expect("from"),
        from_tag: "ftag".into(),
        to: NameAddr::parse_named(b"<sip:bob@example.net>", "To").expect("to"),
        call_id: "cid@x".into(),
        cseq: 1,
        contact: NameAddr::parse_named(b"<sip:alice@192.0.2.9>", "Contact").expect("contact"),
        routes: vec![],
        body: Bytes::from_static(OFFER),
    };
    let mut s = InviteSession::uac(cfg, &params);
    let inv = match s.poll_output() {
        Some(Output::SendRequest(r)) => r,
        o => panic!("expected the INVITE, got {o:?}"),
    };
    (s, inv)
}

/// Answer the INVITE 200 with `se_hdr` as Session-Expires and `allow` as Allow (if any).
fn confirm(s: &mut InviteSession, inv: &Request, now: Instant, se_hdr: &str, allow: Option<&str>) {
    let mut ok = response_to(inv, StatusCode::OK, None);
    ok.add_to_tag("btag");
    ok.headers.push(HeaderName::Contact, "<sip:bob@192.0.2.1>");
    ok.headers
        .push(HeaderName::SessionExpires, se_hdr.to_string());
    ok.headers.push(HeaderName::Require, "timer");
    if let Some(allow) = allow {
        ok.headers.push(HeaderName::Allow, allow.to_string());
    }
    s.handle_response(now, ok);
    while let Some(o) = s.poll_output() {
        assert!(
            matches!(
                o,
                Output::SendAck(_) | Output::Event(DialogEvent::Confirmed { .. })
            ),
            "{o:?}"
        );
    }
    assert!(s.is_confirmed());
}

/// Step virtual time by 100 ms for `secs` seconds, handing every output to `on`.
fn run_until(
    s: &mut InviteSession,
    from: Instant,
    secs: u64,
    mut on: impl FnMut(&mut InviteSession, Instant, Output),
) -> Instant {
    let mut t = from;
    for _ in 0..secs * 10 {
        t += Duration::from_millis(100);
        s.handle_timeout(t);
        while let Some(o) = s.poll_output() {
            on(s, t, o);
        }
    }
    t
}

fn ok_with_se(req: &Request, se: &str) -> Response {
    let mut ok = response_to(req, StatusCode::OK, None);
    ok.headers.push(HeaderName::Contact, "<sip:bob@192.0.2.1>");
    ok.headers.push(HeaderName::SessionExpires, se.to_string());
    ok.headers.push(HeaderName::Require, "timer");
    ok
}

/// Finding 1: a peer that does not implement UPDATE answers the refresh 405. The session
/// switches to re-INVITE refreshes carrying the last local SDP (RFC 4028 §9) and the call stays
/// up (it used to do nothing and BYE itself at expiry).
#[test]
fn refresh_rejected_with_405_switches_to_reinvite_and_keeps_the_call() {
    let now = t0();
    let (mut s, inv) = uac_session(Some(1800));
    confirm(&mut s, &inv, now, "1800;refresher=uac", None);
    let mut sent = vec![];
    let mut reinvite_bodies = vec![];
    run_until(&mut s, now, 3 * 3600, |s, t, o| match o {
        Output::SendRequest(r) => {
            sent.push(r.method.clone());
            if r.method == Method::Update {
                let mut rej = response_to(&r, status(405), None);
                rej.headers
                    .push(HeaderName::Allow, "INVITE, ACK, CANCEL, BYE, OPTIONS");
                s.handle_response(t, rej);
            } else if r.method == Method::Invite {
                reinvite_bodies.push(r.body.clone());
                s.handle_response(t, ok_with_se(&r, "1800;refresher=uac"));
            }
        }
        Output::Event(DialogEvent::Terminated { reason }) => {
            panic!("session ended: {reason:?} after sending {sent:?}")
        }
        Output::Event(DialogEvent::ReInviteAccepted { .. }) => {
            panic!("a refresh re-INVITE is not the application's re-INVITE")
        }
        _ => {}
    });
    assert_eq!(
        sent.iter().filter(|m| **m == Method::Update).count(),
        1,
        "after the 405 no UPDATE is tried again: {sent:?}"
    );
    assert!(reinvite_bodies.len() >= 5, "{sent:?}");
    assert!(reinvite_bodies.iter().all(|b| b.as_ref() == OFFER));
    assert!(!s.refreshes_with_update());
}

/// Finding 1: a 2xx whose Allow lacks UPDATE makes the first refresh a re-INVITE.
#[test]
fn peer_allow_without_update_refreshes_with_reinvite() {
    let now = t0();
    let (mut s, inv) = uac_session(Some(1800));
    confirm(
        &mut s,
        &inv,
        now,
        "1800;refresher=uac",
        Some("INVITE, ACK, CANCEL, BYE"),
    );
    let mut first = None;
    run_until(&mut s, now, 901, |_s, _t, o| {
        if let Output::SendRequest(r) = o {
            first.get_or_insert(r.method);
        }
    });
    assert_eq!(first, Some(Method::Invite));
}

/// Finding 1: a refresh UPDATE rejected with a status that does not end the dialog (500) is
/// re-armed as if refreshed: no BYE, further refreshes follow.
#[test]
fn refresh_rejected_with_500_is_rearmed_and_keeps_the_call() {
    let now = t0();
    let (mut s, inv) = uac_session(Some(1800));
    confirm(&mut s, &inv, now, "1800;refresher=uac", None);
    let mut updates = 0;
    run_until(&mut s, now, 3 * 3600, |s, t, o| match o {
        Output::SendRequest(r) => {
            assert_ne!(r.method, Method::Bye, "BYE after a refresh failed with 500");
            if r.method == Method::Update {
                updates += 1;
                s.handle_response(t, response_to(&r, StatusCode::SERVER_INTERNAL_ERROR, None));
            }
        }
        Output::Event(DialogEvent::Terminated { reason }) => panic!("ended: {reason:?}"),
        _ => {}
    });
    assert!(updates >= 5, "{updates} refreshes in 3 h");
    assert!(s.refreshes_with_update());
}

/// Finding 1: a refresh UPDATE meeting glare (491) is retried after the §14.1 back-off (at
/// most 4 s later), not dropped until the session expires.
#[test]
fn refresh_update_491_is_retried_after_the_backoff() {
    let now = t0();
    let (mut s, inv) = uac_session(Some(1800));
    confirm(&mut s, &inv, now, "1800;refresher=uac", None);
    let mut updates: Vec<Instant> = vec![];
    run_until(&mut s, now, 1000, |s, t, o| {
        if let Output::SendRequest(r) = o {
            assert_ne!(r.method, Method::Bye);
            if r.method == Method::Update {
                updates.push(t);
                let reply = if updates.len() == 1 {
                    response_to(&r, status(491), None)
                } else {
                    ok_with_se(&r, "1800;refresher=uac")
                };
                s.handle_response(t, reply);
            }
        }
    });
    assert_eq!(updates.len(), 2, "one retry after the 491");
    assert!(updates[1] - updates[0] <= Duration::from_secs(4));
}

/// Finding 1: 481 to the refresh still ends the dialog (§12.2.1.2).
#[test]
fn refresh_update_481_still_ends_the_dialog() {
    let now = t0();
    let (mut s, inv) = uac_session(Some(1800));
    confirm(&mut s, &inv, now, "1800;refresher=uac", None);
    run_until(&mut s, now, 901, |s, t, o| {
        if let Output::SendRequest(r) = o
            && r.method == Method::Update
        {
            s.handle_response(t, response_to(&r, status(481), None));
        }
    });
    assert!(s.is_terminated());
}

/// Finding 1: a 2xx to the refresh without Session-Expires means "no session expiration" (RFC
/// 4028 §7.2): the session must not BYE.
#[test]
fn refresh_answered_without_session_expires_does_not_bye() {
    let now = t0();
    let (mut s, inv) = uac_session(Some(1800));
    confirm(&mut s, &inv, now, "1800;refresher=uac", None);
    run_until(&mut s, now, 3600, |s, t, o| {
        if let Output::SendRequest(r) = &o {
            if r.method == Method::Update {
                s.handle_response(t, response_to(r, StatusCode::OK, None));
            }
            assert_ne!(r.method, Method::Bye, "BYE after a refresh 2xx without SE");
        }
    });
    assert!(!s.is_terminated());
    assert_eq!(s.poll_timeout(), None, "no session timer left running");
}

/// Finding 6: a 2xx with Session-Expires: 0 (below the 90 s floor of RFC 4028 §5) is raised to
/// our Min-SE instead of making the session BYE at once.
#[test]
fn session_expires_zero_in_2xx_is_raised_to_min_se() {
    let now = t0();
    let (mut s, inv) = uac_session(Some(1800));
    confirm(&mut s, &inv, now, "0;refresher=uas", None);
    let mut bye_at = None;
    run_until(&mut s, now, 120, |_s, t, o| {
        if let Output::SendRequest(r) = &o
            && r.method == Method::Bye
        {
            bye_at.get_or_insert(t);
        }
    });
    // Min-SE 90, the peer refreshes: BYE at 90 - min(32, 90/3) = 60 s, not within 2 s.
    let bye_at = bye_at.expect("the session still expires without refresh");
    assert!(
        bye_at - now >= Duration::from_secs(60),
        "{:?}",
        bye_at - now
    );
}

// ---- finding 2: strict routing -------------------------------------------------------------

/// RFC 3261 §8.1.2 / §12.2.1.1: with a strict router (no `lr`) first in the route set, the
/// request goes to the Request-URI (the strict router), not to the top Route.
#[test]
fn next_hop_of_a_strict_routed_request_is_the_request_uri() {
    let inv = request(
        "INVITE sip:bob@192.0.2.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.9;branch=z9hG4bKx\r\n\
         Max-Forwards: 70\r\n\
         Record-Route: <sip:p1.example.com>, <sip:p2.example.com;lr>\r\n\
         From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:alice@198.51.100.9>\r\nContent-Length: 0\r\n\r\n",
    );
    let d = Dialog::uas(&inv, "t", DialogState::Confirmed).expect("dialog");
    let via = Via::new(
        "UDP",
        Host::parse(b"192.0.2.1").expect("host"),
        None,
        "z9hG4bKq",
    );
    let bye = d.request(Method::Bye, 1, &via);
    assert_eq!(bye.uri.to_string(), "sip:p1.example.com");
    assert_eq!(next_hop(&bye).to_string(), "sip:p1.example.com");
    assert_eq!(d.next_hop().to_string(), "sip:p1.example.com");
}

/// The loose-routing next hops are unchanged: the top Route (all `lr`, or a single preloaded
/// proxy with or without `lr`), and the Request-URI without any Route.
#[test]
fn next_hop_of_loose_routed_requests_is_the_top_route() {
    let inv = request(
        "INVITE sip:bob@192.0.2.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.9;branch=z9hG4bKx\r\n\
         Max-Forwards: 70\r\n\
         Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
         From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:alice@198.51.100.9>\r\nContent-Length: 0\r\n\r\n",
    );
    let d = Dialog::uas(&inv, "t", DialogState::Confirmed).expect("dialog");
    let via = Via::new(
        "UDP",
        Host::parse(b"192.0.2.1").expect("host"),
        None,
        "z9hG4bKq",
    );
    let bye = d.request(Method::Bye, 1, &via);
    assert_eq!(next_hop(&bye).to_string(), "sip:p1.example.com;lr");
    assert_eq!(d.next_hop().to_string(), "sip:p1.example.com;lr");
    let mut preloaded = request(INVITE);
    preloaded
        .headers
        .push(HeaderName::Route, "<sip:outbound.example.com>");
    assert_eq!(next_hop(&preloaded).to_string(), "sip:outbound.example.com");
    assert_eq!(next_hop(&request(INVITE)).to_string(), "sip:bob@192.0.2.1");
}

// ---- finding 3: INVITE client transaction after CANCEL -------------------------------------

/// RFC 3261 §9.1: without a final response 64*T1 after the CANCEL, the INVITE client
/// transaction is destroyed (it used to live forever in Proceeding).
#[test]
fn invite_client_transaction_is_destroyed_64t1_after_cancel() {
    let now = t0();
    let mut ep = Endpoint::new(EndpointConfig {
        seed: 7,
        ..Default::default()
    });
    let inv = request(INVITE);
    let key = ep
        .send_request(now, inv.clone(), peer(), Transport::Udp)
        .expect("sent");
    drain(&mut ep);
    let mut ringing = response_to(&inv, status(180), None);
    ringing.add_to_tag("b1");
    ep.handle_datagram(now, peer(), Transport::Udp, ringing.to_bytes());
    drain(&mut ep);
    ep.cancel(now, &key).expect("cancel");
    let (tx, _) = drain(&mut ep);
    let cancel = match parse(&tx[0]) {
        Message::Request(r) => r,
        Message::Response(r) => panic!("{r:?}"),
    };
    assert_eq!(cancel.method, Method::Cancel);
    let ok = response_to(&cancel, StatusCode::OK, None);
    ep.handle_datagram(now, peer(), Transport::Udp, ok.to_bytes());
    drain(&mut ep);
    // The peer never sends the 487.
    let mut timed_out = false;
    let mut t = now;
    for _ in 0..3600 {
        t += Duration::from_secs(1);
        ep.handle_timeout(t);
        let (_, ev) = drain(&mut ep);
        timed_out |= ev
            .iter()
            .any(|e| matches!(e, EndpointEvent::TransactionTimeout { key: k, .. } if *k == key));
    }
    assert!(timed_out, "the TU hears of the timeout");
    assert_eq!(ep.transaction_count().0, 0, "{:?}", ep.transaction_count());
}

/// `ClientInvite::cancel_sent` arms Timer B 64*T1 from the CANCEL, also in Proceeding.
#[test]
fn client_invite_times_out_64t1_after_cancel_sent() {
    let now = t0();
    let config = TimerConfig::default();
    let inv = request(INVITE);
    let mut txn = ClientInvite::new(now, inv.clone(), Transport::Udp, config);
    let mut ringing = response_to(&inv, status(180), None);
    ringing.add_to_tag("b1");
    let later = now + Duration::from_secs(10);
    txn.handle_response(later, ringing);
    assert!(txn.is_proceeding());
    assert_eq!(txn.timer(Timer::B), None);
    txn.cancel_sent(later);
    assert_eq!(txn.timer(Timer::B), Some(later + config.t1x64()));
    txn.handle_timeout(later + config.t1x64() - Duration::from_millis(1));
    assert!(!txn.is_terminated());
    txn.handle_timeout(later + config.t1x64());
    assert!(txn.is_terminated());
    let mut saw_timeout = false;
    while let Some(o) = txn.poll_output() {
        saw_timeout |= matches!(
            o,
            sip::transaction::Output::Event(TransactionEvent::Timeout(Timer::B))
        );
    }
    assert!(saw_timeout);
}

// ---- finding 4: To tag of the 200 to CANCEL ------------------------------------------------

/// RFC 3261 §8.2.6.2: a final response MUST carry a To tag, also the 200 to a CANCEL arriving
/// while only 100 Trying has been sent.
#[test]
fn cancel_200_has_a_to_tag_when_only_100_was_sent() {
    let now = t0();
    let mut ep = Endpoint::new(EndpointConfig::default());
    ep.handle_datagram(
        now,
        peer(),
        Transport::Udp,
        Bytes::from_static(INVITE.as_bytes()),
    );
    drain(&mut ep);
    ep.handle_datagram(
        now,
        peer(),
        Transport::Udp,
        Bytes::from_static(CANCEL.as_bytes()),
    );
    let (tx, ev) = drain(&mut ep);
    assert!(
        ev.iter()
            .any(|e| matches!(e, EndpointEvent::CancelReceived { .. }))
    );
    let r = responses(&tx)
        .into_iter()
        .find(|r| r.headers.cseq().expect("cseq").method == Method::Cancel)
        .expect("a response to the CANCEL");
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.to().expect("To").tag().is_some());
}

// ---- finding 5: merged requests ------------------------------------------------------------

/// RFC 3261 §8.2.2.2: the same INVITE arriving over a second path (same From tag, Call-ID and
/// CSeq, no To tag, another branch) gets 482 and does not reach the TU twice.
#[test]
fn merged_request_is_answered_482() {
    let now = t0();
    let mut ep = Endpoint::new(EndpointConfig::default());
    ep.handle_datagram(
        now,
        peer(),
        Transport::Udp,
        Bytes::from_static(INVITE.as_bytes()),
    );
    let (_, ev1) = drain(&mut ep);
    let second = INVITE.replace("z9hG4bK776asdhds", "z9hG4bKother1");
    ep.handle_datagram(now, peer(), Transport::Udp, Bytes::from(second));
    let (tx2, ev2) = drain(&mut ep);
    let news = ev1
        .iter()
        .chain(ev2.iter())
        .filter(|e| matches!(e, EndpointEvent::NewRequest { .. }))
        .count();
    assert_eq!(news, 1);
    let r482: Vec<Response> = responses(&tx2)
        .into_iter()
        .filter(|r| r.status.as_u16() == 482)
        .collect();
    assert_eq!(r482.len(), 1);
    assert!(r482[0].headers.to().expect("To").tag().is_some());
    assert_eq!(
        ep.transaction_count().1,
        1,
        "no transaction for the merged copy"
    );
}

/// The merge index is bounded by the live server transactions: once the first transaction has
/// ended, a request with the same From tag, Call-ID and CSeq is new again.
#[test]
fn merge_index_entry_leaves_with_its_transaction() {
    let now = t0();
    let mut ep = Endpoint::new(EndpointConfig::default());
    let options = INVITE
        .replace("INVITE sip", "OPTIONS sip")
        .replace("1 INVITE", "1 OPTIONS");
    ep.handle_datagram(now, peer(), Transport::Udp, Bytes::from(options.clone()));
    let (_, ev) = drain(&mut ep);
    let (key, req) = match &ev[..] {
        [EndpointEvent::NewRequest { key, request, .. }] => (key.clone(), request.clone()),
        other => panic!("{other:?}"),
    };
    let mut ok = response_to(&req, StatusCode::OK, None);
    ok.add_to_tag("x");
    ep.send_response(now, &key, ok).expect("answered");
    drain(&mut ep);
    let mut t = now;
    while ep.transaction_count().1 > 0 {
        t += Duration::from_secs(1);
        assert!(
            t - now < Duration::from_secs(120),
            "the transaction never ended"
        );
        ep.handle_timeout(t);
        drain(&mut ep);
    }
    let again = options.replace("z9hG4bK776asdhds", "z9hG4bKother2");
    ep.handle_datagram(t, peer(), Transport::Udp, Bytes::from(again));
    let (tx, ev) = drain(&mut ep);
    assert!(
        ev.iter()
            .any(|e| matches!(e, EndpointEvent::NewRequest { .. }))
    );
    assert!(responses(&tx).iter().all(|r| r.status.as_u16() != 482));
}

// ---- finding 7: folded lines in the stream framer ------------------------------------------

/// A folded continuation line " l: 4" belongs to Subject (RFC 3261 §7.3.1); the framer used to
/// read it as a Content-Length header.
#[test]
fn folded_line_is_not_a_content_length() {
    let msg: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
        Max-Forwards: 70\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\n\
        CSeq: 1 OPTIONS\r\nSubject: hello\r\n l: 4\r\nContent-Length: 0\r\n\r\n";
    let m = Message::parse(Bytes::from_static(msg)).expect("valid for the parser");
    assert_eq!(m.body().len(), 0);
    let mut f = StreamFramer::default();
    f.push(msg);
    match f.poll() {
        Ok(Some(Framed::Message(_))) => {}
        other => panic!("framer disagrees with the parser: {other:?}"),
    }
}

// ---- finding 8: 2xx while a reliable provisional with SDP is unacknowledged ----------------

fn uas_session(now: Instant) -> (InviteSession, TransactionKey, Request) {
    let inv = request(&INVITE.replace(
        "Content-Length: 0\r\n",
        "Supported: 100rel\r\nContent-Length: 0\r\n",
    ));
    let key = TransactionKey::Server(ServerKey::from_request(&inv).expect("key"));
    let s = InviteSession::uas(
        now,
        DialogConfig::default(),
        inv.clone(),
        key.clone(),
        "uastag".into(),
        NameAddr::parse_named(b"<sip:bob@192.0.2.1>", "Contact").expect("contact"),
    )
    .expect("session");
    (s, key, inv)
}

fn sent_responses(s: &mut InviteSession) -> Vec<Response> {
    let mut v = vec![];
    while let Some(o) = s.poll_output() {
        if let Output::SendResponse { response, .. } = o {
            v.push(response);
        }
    }
    v
}

fn sent_statuses(s: &mut InviteSession) -> Vec<u16> {
    sent_responses(s)
        .iter()
        .map(|r| r.status.as_u16())
        .collect()
}

/// RFC 3262 §3: no 2xx while a reliable provisional carrying SDP awaits its PRACK; `accept`
/// refuses (and sends nothing) until the PRACK arrives.
#[test]
fn accept_waits_for_the_prack_of_a_reliable_provisional_with_sdp() {
    let now = t0();
    let (mut s, _key, _inv) = uas_session(now);
    s.provisional(now, status(183), Bytes::from_static(OFFER), true)
        .expect("183 sent");
    let sent = sent_responses(&mut s);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].status.as_u16(), 183);
    let rseq = sent[0].headers.rseq().expect("RSeq").expect("RSeq");
    assert_eq!(
        s.accept(now, Bytes::from_static(OFFER)),
        Err(DialogError::ReliableOutstanding)
    );
    assert!(sent_statuses(&mut s).is_empty(), "no 200 before the PRACK");
    let prack = request(&format!(
        "PRACK sip:bob@192.0.2.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.9:40000;branch=z9hG4bKprack1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=1928301774\r\n\
         To: <sip:bob@example.net>;tag=uastag\r\n\
         Call-ID: a84b4c76e66710@pc33\r\n\
         CSeq: 2 PRACK\r\n\
         RAck: {rseq} 1 INVITE\r\n\
         Content-Length: 0\r\n\r\n"
    ));
    let pkey = TransactionKey::Server(ServerKey::from_request(&prack).expect("key"));
    s.handle_request(now, prack, Some(pkey));
    assert_eq!(sent_statuses(&mut s), [200], "the PRACK is answered");
    s.accept(now, Bytes::from_static(OFFER))
        .expect("accept after the PRACK");
    assert_eq!(sent_statuses(&mut s), [200], "the 2xx to the INVITE");
}

/// A reliable provisional without SDP does not hold the 2xx back.
#[test]
fn accept_after_a_reliable_provisional_without_sdp_is_allowed() {
    let now = t0();
    let (mut s, _key, _inv) = uas_session(now);
    s.provisional(now, status(180), Bytes::new(), true)
        .expect("180 sent");
    assert_eq!(sent_statuses(&mut s), [180]);
    s.accept(now, Bytes::from_static(OFFER)).expect("accept");
    assert_eq!(sent_statuses(&mut s), [200]);
}

// ---- finding 10: bounded fork list ---------------------------------------------------------

/// At most MAX_FORKS early dialogs are tracked; further To tags are ignored and counted.
#[test]
fn early_dialogs_are_capped() {
    let now = t0();
    let (mut s, inv) = uac_session(None);
    let mut early = 0;
    for i in 0..MAX_FORKS + 4 {
        let mut ringing = response_to(&inv, status(180), None);
        ringing.add_to_tag(&format!("fork{i}"));
        ringing
            .headers
            .push(HeaderName::Contact, format!("<sip:bob{i}@192.0.2.1>"));
        s.handle_response(now, ringing);
        while let Some(o) = s.poll_output() {
            if matches!(o, Output::Event(DialogEvent::Early { .. })) {
                early += 1;
            }
        }
    }
    assert_eq!(MAX_FORKS, 16);
    assert_eq!(early, MAX_FORKS);
    assert_eq!(s.ignored_forks(), 4);
}
