//! Property tests: any sequence of inputs leaves the machines consistent: no panic, nothing
//! after Terminated, at most one outcome for the TU, and (except where the RFC waits for the
//! TU) termination once the inputs stop.

mod transaction_common;

use std::time::Duration;

use proptest::prelude::*;
use sip::message::{Message, Method};
use sip::transaction::{
    ClientInvite, ClientNonInvite, Output, ServerInvite, ServerNonInvite, TimerConfig,
    TransactionEvent, Transport,
};
use transaction_common::*;

#[derive(Debug, Clone)]
enum Input {
    Response(u16),
    Request(bool), // true: ACK, false: retransmitted request
    Advance(u64),
    TransportError,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        prop::sample::select(vec![100u16, 180, 183, 200, 202, 302, 404, 486, 503, 603])
            .prop_map(Input::Response),
        any::<bool>().prop_map(Input::Request),
        (0u64..40_000).prop_map(Input::Advance),
        Just(Input::TransportError),
    ]
}

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![Just(Transport::Udp), Just(Transport::Tcp)]
}

/// Collect outputs, checking nothing follows Terminated.
fn collect(
    m: &mut impl Machine,
    ended: &mut bool,
    out: &mut Vec<Output>,
) -> Result<(), TestCaseError> {
    while let Some(o) = m.poll_output() {
        prop_assert!(!*ended, "output after Terminated: {o:?}");
        if matches!(o, Output::Event(TransactionEvent::Terminated(_))) {
            *ended = true;
        }
        out.push(o);
    }
    Ok(())
}

proptest! {
    #[test]
    fn client_invite_stays_consistent(inputs in prop::collection::vec(input(), 0..40), tp in transport()) {
        let start = t0();
        let invite = request(Method::Invite, "z9hG4bKprop", 1);
        let mut txn = ClientInvite::new(start, invite.clone(), tp, TimerConfig::default());
        let (mut now, mut ended, mut out) = (start, false, Vec::new());
        for i in inputs {
            match i {
                Input::Response(c) => txn.handle_response(now, response(&invite, c)),
                Input::Advance(ms) => { now += Duration::from_millis(ms); txn.handle_timeout(now); }
                Input::TransportError => txn.handle_transport_error(now),
                Input::Request(_) => {}
            }
            collect(&mut txn, &mut ended, &mut out)?;
        }
        let proceeding = txn.state_name() == "Proceeding";
        let log = run_alone(now, &mut txn);
        prop_assert!(ended || proceeding || txn.is_terminated(), "left in {}", txn.state_name());
        prop_assert!(log.sent.iter().all(|(_, m)| matches!(m, Message::Request(_))));
        let finals: Vec<u16> = out.iter().filter_map(|o| match o {
            Output::Event(TransactionEvent::Final(r)) => Some(r.status.as_u16()),
            _ => None,
        }).collect();
        let non_2xx = finals.iter().filter(|c| **c >= 300).count();
        prop_assert!(non_2xx <= 1, "{finals:?}");
        prop_assert!(non_2xx == 0 || finals.iter().all(|c| *c >= 300), "2xx and non-2xx both passed up: {finals:?}");
        // No provisional after a final.
        let first_final = out.iter().position(|o| matches!(o, Output::Event(TransactionEvent::Final(_))));
        if let Some(f) = first_final {
            prop_assert!(!out[f..].iter().any(|o| matches!(o, Output::Event(TransactionEvent::Provisional(_)))));
        }
    }

    #[test]
    fn client_non_invite_stays_consistent(inputs in prop::collection::vec(input(), 0..40), tp in transport()) {
        let start = t0();
        let req = request(Method::Options, "z9hG4bKprop", 1);
        let mut txn = ClientNonInvite::new(start, req.clone(), tp, TimerConfig::default());
        let (mut now, mut ended, mut out) = (start, false, Vec::new());
        for i in inputs {
            match i {
                Input::Response(c) => txn.handle_response(now, response(&req, c)),
                Input::Advance(ms) => { now += Duration::from_millis(ms); txn.handle_timeout(now); }
                Input::TransportError => txn.handle_transport_error(now),
                Input::Request(_) => {}
            }
            collect(&mut txn, &mut ended, &mut out)?;
        }
        run_alone(now, &mut txn);
        prop_assert!(txn.is_terminated(), "non-INVITE always ends (Timer F or K)");
        let finals = out.iter().filter(|o| matches!(o, Output::Event(TransactionEvent::Final(_)))).count();
        prop_assert!(finals <= 1);
    }

    #[test]
    fn server_invite_stays_consistent(inputs in prop::collection::vec(input(), 0..40), tp in transport()) {
        let start = t0();
        let invite = request(Method::Invite, "z9hG4bKprop", 1);
        let mut ack = request(Method::Ack, "z9hG4bKprop", 1);
        ack.headers.set(sip::message::HeaderName::To, "<sip:bob@example.net>;tag=b5qt9xl");
        let mut txn = ServerInvite::new(start, invite.clone(), tp, TimerConfig::default());
        let (mut now, mut ended, mut out) = (start, false, Vec::new());
        let mut accepted_finals = Vec::new();
        for i in inputs {
            match i {
                Input::Response(c) => {
                    if txn.send_response(now, response(&invite, c)).is_ok() && c >= 200 {
                        accepted_finals.push(c);
                    }
                }
                Input::Request(true) => txn.handle_request(now, ack.clone()),
                Input::Request(false) => txn.handle_request(now, invite.clone()),
                Input::Advance(ms) => { now += Duration::from_millis(ms); txn.handle_timeout(now); }
                Input::TransportError => txn.handle_transport_error(now),
            }
            collect(&mut txn, &mut ended, &mut out)?;
        }
        // Finals accepted: either one non-2xx, or any number of 2xx (the TU's retransmissions).
        let non_2xx = accepted_finals.iter().filter(|c| **c >= 300).count();
        prop_assert!(non_2xx <= 1 && (non_2xx == 0 || accepted_finals.len() == 1), "{accepted_finals:?}");
        let waiting_for_tu = txn.state_name() == "Proceeding";
        run_alone(now, &mut txn);
        prop_assert!(waiting_for_tu || txn.is_terminated(), "left in {}", txn.state_name());
    }

    #[test]
    fn server_non_invite_stays_consistent(inputs in prop::collection::vec(input(), 0..40), tp in transport()) {
        let start = t0();
        let req = request(Method::Register, "z9hG4bKprop", 1);
        let mut txn = ServerNonInvite::new(start, req.clone(), tp, TimerConfig::default());
        let (mut now, mut ended, mut out) = (start, false, Vec::new());
        let mut finals = 0;
        for i in inputs {
            match i {
                Input::Response(c) => {
                    if txn.send_response(now, response(&req, c)).is_ok() && c >= 200 {
                        finals += 1;
                    }
                }
                Input::Request(_) => txn.handle_request(now, req.clone()),
                Input::Advance(ms) => { now += Duration::from_millis(ms); txn.handle_timeout(now); }
                Input::TransportError => txn.handle_transport_error(now),
            }
            collect(&mut txn, &mut ended, &mut out)?;
        }
        prop_assert!(finals <= 1);
        let waiting_for_tu = matches!(txn.state_name(), "Trying" | "Proceeding");
        run_alone(now, &mut txn);
        prop_assert!(waiting_for_tu || txn.is_terminated());
    }
}
