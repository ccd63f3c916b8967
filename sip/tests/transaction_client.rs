//! Virtual-time tests of the two client transaction machines (RFC 3261 §17.1, RFC 6026).

mod transaction_common;

use std::time::{Duration, Instant};

use sip::message::{HeaderName, Method};
use sip::transaction::{
    ClientInvite, ClientNonInvite, Output, Terminated, Timer, TimerConfig, TransactionEvent,
    Transport,
};
use transaction_common::*;

const INVITE_BRANCH: &str = "z9hG4bKnashds8";

fn udp_invite(now: Instant) -> ClientInvite {
    ClientInvite::new(
        now,
        request(Method::Invite, INVITE_BRANCH, 1),
        Transport::Udp,
        TimerConfig::default(),
    )
}

/// The REQUIRED schedule: over a dead UDP link an INVITE goes out at 0, 0.5, 1.5, 3.5, 7.5, 15.5
/// and 31.5 s (Timer A doubling from T1: 0.5, 1, 2, 4, 8, 16) and Timer B (64*T1) ends the
/// transaction at exactly 32 s, all in far less than a second of real time.
#[test]
fn invite_over_dead_link_retransmits_doubling_from_t1_and_times_out_at_timer_b() {
    #[allow(clippy::disallowed_methods)] // measuring the test's own real duration
    let wall = Instant::now();
    let start = t0();
    let mut txn = udp_invite(start);
    let log = run_alone(start, &mut txn);
    let sends = log.send_times(start);
    let intervals: Vec<u64> = sends.windows(2).map(|w| w[1] - w[0]).collect();
    let events = log.event_times(start);
    println!("dead-link INVITE sends (ms): {sends:?}");
    println!("dead-link INVITE intervals (ms): {intervals:?}");
    println!("dead-link INVITE events (ms): {events:?}");
    assert_eq!(sends, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(intervals, vec![500, 1000, 2000, 4000, 8000, 16000]);
    assert!(log.sent.iter().all(
        |(_, m)| matches!(m, sip::message::Message::Request(r) if r.method == Method::Invite)
    ));
    assert_eq!(
        events,
        vec![
            (32000, TransactionEvent::Timeout(Timer::B)),
            (32000, TransactionEvent::Terminated(Terminated::Timeout)),
        ]
    );
    assert_eq!(txn.terminated(), Some(Terminated::Timeout));
    let real = wall.elapsed();
    println!("real time for 32 s of virtual time: {real:?}");
    assert!(real < Duration::from_millis(500), "took {real:?}");
}

#[test]
fn invite_over_tcp_is_sent_once_and_times_out_at_timer_b() {
    let start = t0();
    let mut txn = ClientInvite::new(
        start,
        request(Method::Invite, INVITE_BRANCH, 1),
        Transport::Tcp,
        TimerConfig::default(),
    );
    assert_eq!(
        txn.timer(Timer::A),
        None,
        "Timer A is not used over a reliable transport"
    );
    let log = run_alone(start, &mut txn);
    assert_eq!(log.send_times(start), vec![0]);
    assert_eq!(
        log.events.first().map(|(t, e)| (ms(start, *t), e.clone())),
        Some((32000, TransactionEvent::Timeout(Timer::B)))
    );
}

#[test]
fn provisional_stops_invite_retransmissions_and_timer_b() {
    let start = t0();
    let mut txn = udp_invite(start);
    let mut log = Log::default();
    log.drain(start, &mut txn);
    let at = start + Duration::from_millis(700);
    txn.handle_timeout(start + Duration::from_millis(500));
    log.drain(start + Duration::from_millis(500), &mut txn);
    txn.handle_response(at, response(txn.request(), 180));
    log.drain(at, &mut txn);
    assert_eq!(txn.state_name(), "Proceeding");
    assert_eq!(txn.poll_timeout(), None, "no Timer A or B in Proceeding");
    assert_eq!(log.send_times(start), vec![0, 500]);
    assert!(
        matches!(&log.events[..], [(_, TransactionEvent::Provisional(r))] if r.status.as_u16() == 180)
    );
}

#[test]
fn ack_for_486_is_built_from_the_invite_and_the_response() {
    let start = t0();
    let mut invite = request(Method::Invite, INVITE_BRANCH, 314159);
    // A second Via below ours must not be copied: "The ACK MUST contain a single Via".
    invite.headers.push(
        HeaderName::Via,
        "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKother",
    );
    let mut txn = ClientInvite::new(
        start,
        invite.clone(),
        Transport::Udp,
        TimerConfig::default(),
    );
    let mut log = Log::default();
    log.drain(start, &mut txn);
    let busy = response(&invite, 486);
    txn.handle_response(start + Duration::from_millis(40), busy.clone());
    log.drain(start + Duration::from_millis(40), &mut txn);

    let ack = match &log.sent[1].1 {
        sip::message::Message::Request(r) => r.clone(),
        other => panic!("expected the ACK, got {other:?}"),
    };
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, invite.uri, "same Request-URI");
    let h = |r: &sip::message::Request, n: HeaderName| r.headers.get(&n).cloned();
    assert_eq!(h(&ack, HeaderName::CallId), h(&invite, HeaderName::CallId));
    assert_eq!(h(&ack, HeaderName::From), h(&invite, HeaderName::From));
    assert_eq!(
        h(&ack, HeaderName::To),
        busy.headers.get(&HeaderName::To).cloned(),
        "To from the response"
    );
    assert!(ack.headers.to().expect("To parses").tag() == Some("b5qt9xl"));
    assert_eq!(ack.headers.cseq().expect("CSeq parses").seq, 314159);
    assert_eq!(ack.headers.cseq().expect("CSeq parses").method, Method::Ack);
    let vias = ack.headers.vias().expect("Via parses");
    assert_eq!(vias.len(), 1, "a single Via");
    assert_eq!(
        vias[0].branch(),
        Some(INVITE_BRANCH),
        "same branch as the INVITE"
    );
    let routes: Vec<_> = ack.headers.get_all(&HeaderName::Route).cloned().collect();
    let orig_routes: Vec<_> = invite
        .headers
        .get_all(&HeaderName::Route)
        .cloned()
        .collect();
    assert_eq!(routes, orig_routes, "Route headers of the original request");
    assert!(ack.body.is_empty());
    assert_eq!(txn.ack(), Some(&ack));
    // The response went to the TU once.
    assert!(
        matches!(&log.events[..], [(_, TransactionEvent::Final(r))] if r.status.as_u16() == 486)
    );
    // And the ACK survives the codec.
    let printed = sip::message::Message::Request(ack).to_bytes();
    assert_eq!(
        wire(&sip::message::Message::parse(printed.clone()).expect("parses")).to_bytes(),
        printed
    );
}

/// Timer D: over UDP the transaction stays in Completed for 32 s re-ACKing retransmitted finals
/// without passing them up; over TCP it terminates at once.
#[test]
fn timer_d_reacks_retransmitted_finals_for_32s_on_udp() {
    let start = t0();
    let mut txn = udp_invite(start);
    let mut log = Log::default();
    log.drain(start, &mut txn);
    let t1 = start + Duration::from_millis(100);
    txn.handle_response(t1, response(txn.request(), 486));
    log.drain(t1, &mut txn);
    assert_eq!(txn.state_name(), "Completed");
    assert_eq!(txn.timer(Timer::D), Some(t1 + Duration::from_secs(32)));
    let t2 = start + Duration::from_millis(600);
    txn.handle_response(t2, response(txn.request(), 486));
    log.drain(t2, &mut txn);
    let rest = run_alone(t1, &mut txn);
    assert_eq!(
        log.send_times(start),
        vec![0, 100, 600],
        "INVITE, ACK, ACK again"
    );
    assert!(matches!(&log.sent[2].1, sip::message::Message::Request(r) if r.method == Method::Ack));
    let finals = log
        .events
        .iter()
        .filter(|(_, e)| matches!(e, TransactionEvent::Final(_)))
        .count();
    assert_eq!(finals, 1, "the retransmitted 486 is not passed up");
    assert_eq!(
        rest.event_times(start),
        vec![(32100, TransactionEvent::Terminated(Terminated::Completed))]
    );
}

#[test]
fn timer_d_is_zero_on_tcp() {
    let start = t0();
    let mut txn = ClientInvite::new(
        start,
        request(Method::Invite, INVITE_BRANCH, 1),
        Transport::Tcp,
        TimerConfig::default(),
    );
    let at = start + Duration::from_millis(80);
    txn.handle_response(at, response(txn.request(), 603));
    let mut log = Log::default();
    log.drain(at, &mut txn);
    assert_eq!(txn.terminated(), Some(Terminated::Completed));
    let sent_ack = log
        .sent
        .iter()
        .any(|(_, m)| matches!(m, sip::message::Message::Request(r) if r.method == Method::Ack));
    assert!(sent_ack, "the ACK is sent even over a reliable transport");
    assert_eq!(
        log.events.last().map(|(t, e)| (ms(start, *t), e.clone())),
        Some((80, TransactionEvent::Terminated(Terminated::Completed)))
    );
}

/// RFC 6026: a 2xx moves the INVITE client to Accepted; later 2xx (retransmissions or other
/// forks) still reach the TU, with no ACK from the transaction; Timer M (64*T1) ends it.
#[test]
fn timer_m_passes_further_2xx_to_tu_until_64_t1() {
    let start = t0();
    let mut txn = udp_invite(start);
    let mut log = Log::default();
    log.drain(start, &mut txn);
    let t1 = start + Duration::from_millis(200);
    txn.handle_response(t1, response(txn.request(), 200));
    log.drain(t1, &mut txn);
    assert_eq!(txn.state_name(), "Accepted");
    assert_eq!(txn.timer(Timer::M), Some(t1 + Duration::from_secs(32)));
    assert_eq!(txn.timer(Timer::A), None);
    let t2 = start + Duration::from_millis(700);
    txn.handle_response(t2, response(txn.request(), 200));
    log.drain(t2, &mut txn);
    let rest = run_alone(t2, &mut txn);
    assert_eq!(
        log.send_times(start),
        vec![0],
        "no ACK from the transaction for a 2xx"
    );
    assert!(rest.sent.is_empty());
    let finals: Vec<u64> = log
        .event_times(start)
        .into_iter()
        .filter_map(|(t, e)| matches!(e, TransactionEvent::Final(_)).then_some(t))
        .collect();
    assert_eq!(finals, vec![200, 700]);
    assert_eq!(
        rest.event_times(start),
        vec![(32200, TransactionEvent::Terminated(Terminated::Accepted))]
    );
}

#[test]
fn transport_error_in_calling_terminates_and_informs_tu() {
    let start = t0();
    let mut txn = udp_invite(start);
    let mut log = Log::default();
    log.drain(start, &mut txn);
    txn.handle_transport_error(start);
    log.drain(start, &mut txn);
    assert_eq!(txn.terminated(), Some(Terminated::TransportError));
    assert_eq!(
        log.events
            .iter()
            .map(|(_, e)| e.clone())
            .collect::<Vec<_>>(),
        vec![
            TransactionEvent::TransportError,
            TransactionEvent::Terminated(Terminated::TransportError)
        ]
    );
    assert_eq!(txn.poll_timeout(), None);
}

fn udp_options(now: Instant) -> ClientNonInvite {
    ClientNonInvite::new(
        now,
        request(Method::Options, "z9hG4bKopt1", 7),
        Transport::Udp,
        TimerConfig::default(),
    )
}

/// Timer E doubles from T1 and caps at T2 (0.5, 1, 2, 4, 4, 4, ...); Timer F ends it at 32 s.
#[test]
fn non_invite_retransmissions_cap_at_t2_and_timer_f_fires_at_32s() {
    let start = t0();
    let mut txn = udp_options(start);
    let log = run_alone(start, &mut txn);
    let sends = log.send_times(start);
    let intervals: Vec<u64> = sends.windows(2).map(|w| w[1] - w[0]).collect();
    println!("dead-link OPTIONS sends (ms): {sends:?}");
    assert_eq!(
        sends,
        vec![
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(
        intervals,
        vec![500, 1000, 2000, 4000, 4000, 4000, 4000, 4000, 4000, 4000]
    );
    assert_eq!(
        log.event_times(start),
        vec![
            (32000, TransactionEvent::Timeout(Timer::F)),
            (32000, TransactionEvent::Terminated(Terminated::Timeout)),
        ]
    );
}

#[test]
fn non_invite_over_tcp_is_never_retransmitted() {
    let start = t0();
    let mut txn = ClientNonInvite::new(
        start,
        request(Method::Options, "z9hG4bKopt1", 7),
        Transport::Tcp,
        TimerConfig::default(),
    );
    assert_eq!(txn.timer(Timer::E), None);
    let log = run_alone(start, &mut txn);
    assert_eq!(log.send_times(start), vec![0]);
    assert_eq!(
        log.events[0],
        (
            start + Duration::from_secs(32),
            TransactionEvent::Timeout(Timer::F)
        )
    );
}

/// "If Timer E fires while in the Proceeding state, ... Timer E MUST be reset with a value of T2".
#[test]
fn non_invite_in_proceeding_retransmits_every_t2() {
    let start = t0();
    let mut txn = udp_options(start);
    let mut log = Log::default();
    log.drain(start, &mut txn);
    let t1 = start + Duration::from_millis(100);
    txn.handle_response(t1, response(txn.request(), 100));
    log.drain(t1, &mut txn);
    assert_eq!(txn.state_name(), "Proceeding");
    let rest = run_alone(t1, &mut txn);
    let mut sends = log.send_times(start);
    sends.extend(rest.send_times(start));
    // 500 was armed in Trying; from then on every T2.
    assert_eq!(
        sends,
        vec![0, 500, 4500, 8500, 12500, 16500, 20500, 24500, 28500]
    );
    assert_eq!(
        rest.events[0],
        (
            start + Duration::from_secs(32),
            TransactionEvent::Timeout(Timer::F)
        )
    );
}

/// Timer K: after the final response, retransmissions of it are absorbed for T4 over UDP; over
/// TCP the transaction ends at once.
#[test]
fn timer_k_absorbs_responses_for_t4_on_udp_and_zero_on_tcp() {
    let start = t0();
    let mut txn = udp_options(start);
    let mut log = Log::default();
    log.drain(start, &mut txn);
    let t1 = start + Duration::from_millis(50);
    txn.handle_response(t1, response(txn.request(), 200));
    txn.handle_response(
        t1 + Duration::from_millis(500),
        response(txn.request(), 200),
    );
    log.drain(t1, &mut txn);
    assert_eq!(txn.timer(Timer::K), Some(t1 + Duration::from_secs(5)));
    assert_eq!(txn.timer(Timer::E), None);
    assert_eq!(txn.timer(Timer::F), None);
    let rest = run_alone(t1, &mut txn);
    let finals = log
        .events
        .iter()
        .filter(|(_, e)| matches!(e, TransactionEvent::Final(_)))
        .count();
    assert_eq!(finals, 1);
    assert_eq!(
        rest.event_times(start),
        vec![(5050, TransactionEvent::Terminated(Terminated::Completed))]
    );

    let mut tcp = ClientNonInvite::new(
        start,
        request(Method::Bye, "z9hG4bKbye1", 8),
        Transport::Tcp,
        TimerConfig::default(),
    );
    tcp.handle_response(t1, response(tcp.request(), 200));
    assert_eq!(tcp.terminated(), Some(Terminated::Completed));
    let mut out = Vec::new();
    while let Some(o) = tcp.poll_output() {
        out.push(o);
    }
    assert!(matches!(
        out.last(),
        Some(Output::Event(TransactionEvent::Terminated(
            Terminated::Completed
        )))
    ));
}

#[test]
fn non_invite_transport_error_terminates() {
    let start = t0();
    let mut txn = udp_options(start);
    txn.handle_transport_error(start);
    assert_eq!(txn.terminated(), Some(Terminated::TransportError));
}
