//! Virtual-time tests of the two server transaction machines (RFC 3261 §17.2, RFC 6026).

mod transaction_common;

use std::time::{Duration, Instant};

use sip::message::{Message, Method, Request};
use sip::transaction::{
    ServerInvite, ServerNonInvite, Terminated, Timer, TimerConfig, TransactionError,
    TransactionEvent, Transport,
};
use transaction_common::*;

fn invite() -> Request {
    request(Method::Invite, "z9hG4bKsrv1", 1)
}

fn ack_for(invite: &Request) -> Request {
    let mut ack = request(Method::Ack, "z9hG4bKsrv1", 1);
    ack.headers.set(
        sip::message::HeaderName::To,
        "<sip:bob@example.net>;tag=b5qt9xl",
    );
    ack.uri = invite.uri.clone();
    ack
}

fn statuses(log: &Log, t0: Instant) -> Vec<(u64, u16)> {
    log.sent
        .iter()
        .map(|(t, m)| match m {
            Message::Response(r) => (ms(t0, *t), r.status.as_u16()),
            Message::Request(r) => panic!("a server transaction sent a request: {r:?}"),
        })
        .collect()
}

fn udp_server(now: Instant) -> ServerInvite {
    ServerInvite::new(now, invite(), Transport::Udp, TimerConfig::default())
}

#[test]
fn server_invite_answers_100_at_once_and_resends_the_last_provisional_on_retransmission() {
    let start = t0();
    let mut txn = udp_server(start);
    let mut log = Log::default();
    log.drain(start, &mut txn);
    let t1 = start + Duration::from_millis(300);
    txn.handle_request(t1, invite());
    log.drain(t1, &mut txn);
    let t2 = start + Duration::from_millis(400);
    txn.send_response(t2, response(&invite(), 180))
        .expect("1xx in Proceeding");
    log.drain(t2, &mut txn);
    let t3 = start + Duration::from_millis(900);
    txn.handle_request(t3, invite());
    log.drain(t3, &mut txn);
    assert_eq!(
        statuses(&log, start),
        vec![(0, 100), (300, 100), (400, 180), (900, 180)]
    );
    let absorbed = log
        .events
        .iter()
        .filter(|(_, e)| *e == TransactionEvent::RetransmissionAbsorbed)
        .count();
    assert_eq!(absorbed, 2);
    assert_eq!(txn.state_name(), "Proceeding");
    assert_eq!(txn.poll_timeout(), None, "no timers while the TU thinks");
}

/// Timer G retransmits the final response at T1, 2T1, 4T1 ... capped at T2; without an ACK
/// Timer H (64*T1) ends the transaction with a timeout.
#[test]
fn timer_g_retransmits_486_capped_at_t2_until_timer_h() {
    let start = t0();
    let mut txn = udp_server(start);
    let mut log = Log::default();
    log.drain(start, &mut txn);
    txn.send_response(start, response(&invite(), 486))
        .expect("final in Proceeding");
    assert_eq!(
        txn.timer(Timer::G),
        Some(start + Duration::from_millis(500))
    );
    assert_eq!(txn.timer(Timer::H), Some(start + Duration::from_secs(32)));
    let rest = run_alone(start, &mut txn);
    let times: Vec<u64> = statuses(&rest, start)
        .into_iter()
        .filter(|(_, s)| *s == 486)
        .map(|(t, _)| t)
        .collect();
    println!("dead-link 486 sends (ms): {times:?}");
    assert_eq!(
        times,
        vec![
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(
        rest.event_times(start),
        vec![
            (32000, TransactionEvent::Timeout(Timer::H)),
            (32000, TransactionEvent::Terminated(Terminated::Timeout)),
        ]
    );
}

#[test]
fn timer_g_is_not_used_on_tcp_but_timer_h_is() {
    let start = t0();
    let mut txn = ServerInvite::new(start, invite(), Transport::Tcp, TimerConfig::default());
    txn.send_response(start, response(&invite(), 486))
        .expect("final");
    assert_eq!(txn.timer(Timer::G), None);
    let log = run_alone(start, &mut txn);
    assert_eq!(statuses(&log, start), vec![(0, 100), (0, 486)]);
    assert_eq!(
        log.events[0],
        (
            start + Duration::from_secs(32),
            TransactionEvent::Timeout(Timer::H)
        )
    );
}

/// The ACK stops Timer G and H; Timer I (T4 over UDP) absorbs ACK retransmissions, then ends.
#[test]
fn ack_confirms_and_timer_i_ends_after_t4_on_udp() {
    let start = t0();
    let mut txn = udp_server(start);
    let mut log = Log::default();
    txn.send_response(start, response(&invite(), 486))
        .expect("final");
    log.drain(start, &mut txn);
    let t1 = start + Duration::from_millis(700);
    txn.handle_timeout(start + Duration::from_millis(500));
    log.drain(start + Duration::from_millis(500), &mut txn);
    txn.handle_request(t1, ack_for(&invite()));
    log.drain(t1, &mut txn);
    assert_eq!(txn.state_name(), "Confirmed");
    assert_eq!(txn.timer(Timer::G), None);
    assert_eq!(txn.timer(Timer::H), None);
    assert_eq!(txn.timer(Timer::I), Some(t1 + Duration::from_secs(5)));
    // A retransmitted ACK and INVITE are absorbed silently.
    txn.handle_request(t1 + Duration::from_millis(10), ack_for(&invite()));
    txn.handle_request(t1 + Duration::from_millis(20), invite());
    let rest = run_alone(t1, &mut txn);
    assert!(rest.sent.is_empty(), "nothing is sent in Confirmed");
    assert_eq!(statuses(&log, start), vec![(0, 100), (0, 486), (500, 486)]);
    assert_eq!(
        rest.events.last(),
        Some(&(
            t1 + Duration::from_secs(5),
            TransactionEvent::Terminated(Terminated::Completed)
        ))
    );
}

#[test]
fn timer_i_is_zero_on_tcp() {
    let start = t0();
    let mut txn = ServerInvite::new(start, invite(), Transport::Tcp, TimerConfig::default());
    txn.send_response(start, response(&invite(), 404))
        .expect("final");
    txn.handle_request(start + Duration::from_millis(30), ack_for(&invite()));
    assert_eq!(txn.terminated(), Some(Terminated::Completed));
}

/// RFC 6026: after a 2xx the server sits in Accepted for Timer L (64*T1): INVITE retransmissions
/// are absorbed (not resent, not new requests), the TU's own 2xx retransmissions pass through,
/// an ACK goes up to the TU, and the transaction itself never retransmits the 2xx.
#[test]
fn timer_l_absorbs_invite_retransmissions_and_passes_2xx_and_ack() {
    let start = t0();
    let mut txn = udp_server(start);
    let mut log = Log::default();
    let ok = response(&invite(), 200);
    txn.send_response(start, ok.clone()).expect("2xx");
    log.drain(start, &mut txn);
    assert_eq!(txn.state_name(), "Accepted");
    assert_eq!(txn.timer(Timer::L), Some(start + Duration::from_secs(32)));
    assert_eq!(
        txn.timer(Timer::G),
        None,
        "the transaction does not retransmit a 2xx"
    );
    let t1 = start + Duration::from_millis(500);
    txn.handle_request(t1, invite());
    log.drain(t1, &mut txn);
    txn.send_response(t1, ok.clone())
        .expect("TU retransmits its 2xx");
    log.drain(t1, &mut txn);
    let t2 = start + Duration::from_millis(600);
    let ack = ack_for(&invite());
    txn.handle_request(t2, ack.clone());
    log.drain(t2, &mut txn);
    assert_eq!(
        txn.send_response(t2, response(&invite(), 486)),
        Err(TransactionError::InvalidState {
            status: 486,
            state: "Accepted"
        })
    );
    let rest = run_alone(t2, &mut txn);
    assert_eq!(statuses(&log, start), vec![(0, 100), (0, 200), (500, 200)]);
    assert!(rest.sent.is_empty());
    assert_eq!(
        log.event_times(start),
        vec![
            (500, TransactionEvent::RetransmissionAbsorbed),
            (600, TransactionEvent::Ack(ack))
        ]
    );
    assert_eq!(
        rest.event_times(start),
        vec![(32000, TransactionEvent::Terminated(Terminated::Accepted))]
    );
}

#[test]
fn completed_resends_final_on_invite_retransmission_and_refuses_a_second_final() {
    let start = t0();
    let mut txn = ServerInvite::new(start, invite(), Transport::Tcp, TimerConfig::default());
    txn.send_response(start, response(&invite(), 486))
        .expect("final");
    let mut log = Log::default();
    log.drain(start, &mut txn);
    txn.handle_request(start + Duration::from_millis(5), invite());
    log.drain(start + Duration::from_millis(5), &mut txn);
    assert_eq!(statuses(&log, start), vec![(0, 100), (0, 486), (5, 486)]);
    assert!(txn.send_response(start, response(&invite(), 500)).is_err());
}

#[test]
fn transport_error_in_completed_terminates_the_invite_server() {
    let start = t0();
    let mut txn = udp_server(start);
    txn.handle_transport_error(start);
    assert_eq!(
        txn.state_name(),
        "Proceeding",
        "RFC 6026: Proceeding informs the TU and stays"
    );
    txn.send_response(start, response(&invite(), 480))
        .expect("final");
    txn.handle_transport_error(start);
    assert_eq!(txn.terminated(), Some(Terminated::TransportError));
}

fn register() -> Request {
    request(Method::Register, "z9hG4bKreg1", 2)
}

/// Trying discards retransmissions; Proceeding resends the provisional; Completed resends the
/// final until Timer J (64*T1 over UDP).
#[test]
fn non_invite_server_absorbs_retransmissions_and_timer_j_ends_it_at_64_t1() {
    let start = t0();
    let mut txn = ServerNonInvite::new(start, register(), Transport::Udp, TimerConfig::default());
    let mut log = Log::default();
    txn.handle_request(start + Duration::from_millis(500), register());
    log.drain(start + Duration::from_millis(500), &mut txn);
    assert!(log.sent.is_empty(), "Trying discards retransmissions");
    let t1 = start + Duration::from_millis(600);
    txn.send_response(t1, response(&register(), 100))
        .expect("1xx");
    txn.handle_request(t1 + Duration::from_millis(900), register());
    log.drain(t1, &mut txn);
    let t2 = start + Duration::from_millis(2000);
    txn.send_response(t2, response(&register(), 200))
        .expect("final");
    assert_eq!(txn.timer(Timer::J), Some(t2 + Duration::from_secs(32)));
    txn.handle_request(t2 + Duration::from_millis(1500), register());
    log.drain(t2, &mut txn);
    assert_eq!(
        txn.send_response(t2, response(&register(), 500))
            .map_err(|_| ()),
        Err(())
    );
    let rest = run_alone(t2, &mut txn);
    assert_eq!(
        statuses(&log, start),
        vec![(600, 100), (600, 100), (2000, 200), (2000, 200)]
    );
    // One each in Trying (discarded), Proceeding and Completed.
    let absorbed = log
        .events
        .iter()
        .filter(|(_, e)| *e == TransactionEvent::RetransmissionAbsorbed)
        .count();
    assert_eq!(absorbed, 3);
    assert_eq!(
        rest.event_times(start),
        vec![(34000, TransactionEvent::Terminated(Terminated::Completed))]
    );
}

#[test]
fn timer_j_is_zero_on_tcp() {
    let start = t0();
    let mut txn = ServerNonInvite::new(start, register(), Transport::Tcp, TimerConfig::default());
    txn.send_response(start, response(&register(), 200))
        .expect("final");
    assert_eq!(txn.terminated(), Some(Terminated::Completed));
}
