//! Forking (several early dialogs, the second 2xx ACKed and BYEd) and the CANCEL/2xx race.

mod dialog_common;

use bytes::Bytes;
use dialog_common::*;
use sip::dialog::{DialogEvent, EndReason};
use sip::message::{Method, StatusCode};

fn forking_net() -> Net {
    let mut net = Net::new();
    net.proxy = Some(Proxy {
        addr: addr("192.0.2.50:5060"),
        record_route: None,
        targets: vec![addr("192.0.2.2:5060"), addr("192.0.2.3:5060")],
    });
    net
}

#[test]
fn forked_invite_makes_two_early_dialogs_and_the_second_2xx_is_acked_then_byed() {
    let mut net = forking_net();
    let params = net.params("sip:bob@192.0.2.50");
    let a = net.call(&params);
    assert_eq!(net.nodes[BOB].sessions.len(), 1);
    assert_eq!(net.nodes[CAROL].sessions.len(), 1);
    let now = net.now;
    net.last(BOB)
        .provisional(now, StatusCode::RINGING, Bytes::new(), false)
        .expect("ring");
    net.last(CAROL)
        .provisional(now, StatusCode::RINGING, Bytes::new(), false)
        .expect("ring");
    net.pump();
    let early: Vec<String> = net
        .events(ALICE)
        .into_iter()
        .filter_map(|e| match e {
            DialogEvent::Early { remote_tag, .. } => Some(remote_tag),
            _ => None,
        })
        .collect();
    assert_eq!(early.len(), 2, "one early dialog per fork");
    assert_ne!(early[0], early[1]);

    net.run_for(ms(100));
    let now = net.now;
    net.last(BOB).accept(now, answer_sdp()).expect("accept");
    net.pump();
    net.run_for(ms(100));
    let now = net.now;
    net.last(CAROL).accept(now, answer_sdp()).expect("accept");
    net.pump();

    let bob_tag = net.responses(BOB, 200, "INVITE")[0].to_tag().expect("tag");
    let carol_tag = net.responses(CAROL, 200, "INVITE")[0]
        .to_tag()
        .expect("tag");
    // The first 2xx won.
    assert!(net.events(ALICE).contains(&DialogEvent::Confirmed {
        remote_tag: bob_tag.clone(),
        body: answer_sdp()
    }));
    assert!(net.session(ALICE, a).is_confirmed());
    assert_eq!(
        net.session(ALICE, a)
            .dialog()
            .expect("dialog")
            .id
            .remote_tag,
        bob_tag
    );
    // Both 2xx were ACKed, each in its own dialog and to its own Contact.
    let acks = net.requests(ALICE, Method::Ack);
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[0].to_tag(), Some(bob_tag.clone()));
    assert_eq!(acks[0].to, addr("192.0.2.2:5060"));
    assert_eq!(acks[1].to_tag(), Some(carol_tag.clone()));
    assert_eq!(acks[1].to, addr("192.0.2.3:5060"));
    assert_eq!(acks[1].cseq(), "1 ACK");
    // ... and the second dialog was hung up.
    let byes = net.requests(ALICE, Method::Bye);
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].to_tag(), Some(carol_tag));
    assert_eq!(byes[0].cseq(), "2 BYE");
    assert_eq!(byes[0].to, addr("192.0.2.3:5060"));
    assert_eq!(net.responses(CAROL, 200, "BYE").len(), 1);
    assert_eq!(
        net.events(CAROL).last(),
        Some(&DialogEvent::Terminated {
            reason: EndReason::RemoteBye
        })
    );
    assert!(net.last(BOB).is_confirmed());
    assert!(!net.session(ALICE, a).is_terminated());
}

#[test]
fn cancel_crossing_a_200_acks_then_byes() {
    let mut net = Net::new();
    let params = net.params("sip:bob@192.0.2.2");
    let a = net.call(&params);
    let now = net.now;
    net.last(BOB)
        .provisional(now, StatusCode::RINGING, Bytes::new(), false)
        .expect("ring");
    net.pump();
    // Alice hangs up while Bob answers: the CANCEL and the 200 cross on the wire.
    net.session(ALICE, a).cancel(now).expect("cancel");
    net.last(BOB).accept(now, answer_sdp()).expect("accept");
    net.pump();

    let cancel = net.requests(ALICE, Method::Cancel);
    assert_eq!(cancel.len(), 1);
    assert_eq!(cancel[0].cseq(), "1 CANCEL");
    // The CANCEL came too late: Bob's INVITE already had its 2xx, so no 487.
    assert!(net.responses(BOB, 487, "INVITE").is_empty());
    assert_eq!(net.responses(BOB, 200, "CANCEL").len(), 1);
    let ack = net.requests(ALICE, Method::Ack);
    let bye = net.requests(ALICE, Method::Bye);
    assert_eq!(ack.len(), 1);
    assert_eq!(bye.len(), 1);
    assert_eq!(ack[0].cseq(), "1 ACK");
    assert_eq!(bye[0].cseq(), "2 BYE");
    // ACK first, then BYE.
    let pos = |m: Method| {
        net.log
            .iter()
            .position(|w| w.req().is_some_and(|r| r.method == m))
            .expect("sent")
    };
    assert!(pos(Method::Ack) < pos(Method::Bye));
    assert_eq!(
        net.events(ALICE).last(),
        Some(&DialogEvent::Terminated {
            reason: EndReason::Cancelled
        })
    );
    assert_eq!(
        net.events(BOB).last(),
        Some(&DialogEvent::Terminated {
            reason: EndReason::RemoteBye
        })
    );
}

#[test]
fn cancel_before_answer_gets_487_and_ends_both_sides() {
    let mut net = Net::new();
    let params = net.params("sip:bob@192.0.2.2");
    let a = net.call(&params);
    let now = net.now;
    net.last(BOB)
        .provisional(now, StatusCode::RINGING, Bytes::new(), false)
        .expect("ring");
    net.pump();
    net.session(ALICE, a).cancel(now).expect("cancel");
    net.pump();
    assert_eq!(net.responses(BOB, 487, "INVITE").len(), 1);
    assert!(net.requests(ALICE, Method::Bye).is_empty());
    assert_eq!(
        net.events(ALICE).last(),
        Some(&DialogEvent::Terminated {
            reason: EndReason::Cancelled
        })
    );
    assert_eq!(
        net.events(BOB).last(),
        Some(&DialogEvent::Terminated {
            reason: EndReason::Cancelled
        })
    );
}

#[test]
fn rejected_invite_terminates_the_uac() {
    let mut net = Net::new();
    let params = net.params("sip:bob@192.0.2.2");
    let _a = net.call(&params);
    let now = net.now;
    net.last(BOB)
        .reject(now, StatusCode::new(486).expect("486"))
        .expect("reject");
    net.pump();
    assert_eq!(
        net.events(ALICE).last(),
        Some(&DialogEvent::Terminated {
            reason: EndReason::Rejected(486)
        })
    );
    // The ACK for a non-2xx is the transaction's (same branch), not the session's.
    assert!(net.requests(ALICE, Method::Ack).len() <= 1);
}

#[test]
fn invite_without_any_response_fails_with_408_at_timer_b() {
    let mut net = Net::new();
    // Nobody listens at 192.0.2.77.
    let params = net.params("sip:nobody@192.0.2.77");
    let _a = net.call(&params);
    net.run_for(secs(31));
    assert!(net.events(ALICE).is_empty());
    net.run_for(secs(2));
    assert_eq!(
        net.events(ALICE),
        vec![DialogEvent::Terminated {
            reason: EndReason::Rejected(408)
        }]
    );
}
