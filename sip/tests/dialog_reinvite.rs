//! re-INVITE (hold) and 491 glare with the §14.1 back-off.

mod dialog_common;

use bytes::Bytes;
use dialog_common::*;
use sip::dialog::DialogEvent;
use sip::message::{HeaderName, Method, StatusCode};

const HOLD: &[u8] = b"v=0\r\no=alice 1 2 IN IP4 192.0.2.1\r\na=sendonly\r\n";
const HELD: &[u8] = b"v=0\r\no=bob 1 2 IN IP4 192.0.2.2\r\na=recvonly\r\n";

#[test]
fn reinvite_for_hold_is_answered_and_acked() {
    let mut net = Net::new();
    let (a, b) = established(&mut net);
    let now = net.now;
    net.session(ALICE, a)
        .reinvite(now, Bytes::from_static(HOLD))
        .expect("reinvite");
    net.pump();
    let reinvite = net.requests(ALICE, Method::Invite);
    assert_eq!(reinvite.len(), 2);
    assert_eq!(reinvite[1].cseq(), "2 INVITE");
    assert!(reinvite[1].to_tag().is_some());
    assert!(reinvite[1].header(HeaderName::Contact).is_some());
    assert_eq!(
        net.events(BOB).last(),
        Some(&DialogEvent::ReInvite {
            offer: Bytes::from_static(HOLD)
        })
    );
    net.session(BOB, b)
        .answer_reinvite(now, StatusCode::OK, Bytes::from_static(HELD))
        .expect("answer");
    net.pump();
    let ok = net.responses(BOB, 200, "INVITE");
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[1].cseq(), "2 INVITE");
    let acks = net.requests(ALICE, Method::Ack);
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[1].cseq(), "2 ACK");
    assert_eq!(
        net.events(ALICE).last(),
        Some(&DialogEvent::ReInviteAccepted {
            answer: Bytes::from_static(HELD)
        })
    );
    // The ACK stopped Bob's 2xx retransmissions.
    net.run_for(secs(40));
    assert_eq!(net.responses(BOB, 200, "INVITE").len(), 2);
    assert!(net.session(BOB, b).is_confirmed());
}

#[test]
fn rejected_reinvite_keeps_the_session() {
    let mut net = Net::new();
    let (a, b) = established(&mut net);
    let now = net.now;
    net.session(ALICE, a)
        .reinvite(now, Bytes::from_static(HOLD))
        .expect("reinvite");
    net.pump();
    net.session(BOB, b)
        .answer_reinvite(now, StatusCode::new(488).expect("488"), Bytes::new())
        .expect("answer");
    net.pump();
    assert_eq!(
        net.events(ALICE).last(),
        Some(&DialogEvent::ReInviteRejected { status: 488 })
    );
    assert!(net.session(ALICE, a).is_confirmed());
}

#[test]
fn glare_gets_491_on_both_sides_and_retries_within_the_backoff_ranges() {
    let mut net = Net::new();
    let (a, b) = established(&mut net);
    let start = net.elapsed();
    let now = net.now;
    net.session(ALICE, a)
        .reinvite(now, Bytes::from_static(HOLD))
        .expect("reinvite");
    net.session(BOB, b)
        .reinvite(now, Bytes::from_static(HELD))
        .expect("reinvite");
    net.pump();
    assert_eq!(net.responses(ALICE, 491, "INVITE").len(), 1);
    assert_eq!(net.responses(BOB, 491, "INVITE").len(), 1);
    let backoff = |node| {
        net.events(node)
            .into_iter()
            .find_map(|e| match e {
                DialogEvent::ReInviteGlare { retry_after } => Some(retry_after),
                _ => None,
            })
            .expect("glare event")
    };
    // Alice owns the Call-ID: 2.1..4 s; Bob: 0..2 s; both in 10 ms units.
    let (ta, tb) = (backoff(ALICE), backoff(BOB));
    assert!(ta >= ms(2100) && ta <= secs(4), "{ta:?}");
    assert!(tb <= secs(2), "{tb:?}");
    assert_eq!(ta.as_millis() % 10, 0);
    assert_eq!(tb.as_millis() % 10, 0);

    // Answer every re-INVITE as it comes.
    let mut answered = 0;
    for _ in 0..500 {
        net.run_for(ms(10));
        for node in [ALICE, BOB] {
            let s = if node == ALICE { a } else { b };
            let pending = net.nodes[node]
                .events
                .iter()
                .filter(|(_, _, e)| matches!(e, DialogEvent::ReInvite { .. }))
                .count();
            if pending > answered_for(&net, node) {
                let now = net.now;
                net.session(node, s)
                    .answer_reinvite(now, StatusCode::OK, Bytes::new())
                    .expect("answer");
                answered += 1;
            }
        }
        net.pump();
    }
    assert_eq!(answered, 2);
    let bob_retry = net.requests(BOB, Method::Invite);
    let alice_retry = net.requests(ALICE, Method::Invite);
    assert_eq!(bob_retry.len(), 2);
    assert_eq!(
        alice_retry.len(),
        3,
        "initial INVITE, glared re-INVITE, retry"
    );
    assert_eq!(bob_retry[1].at - start, tb);
    assert_eq!(alice_retry[2].at - start, ta);
    assert_eq!(alice_retry[2].cseq(), "3 INVITE");
    assert_eq!(bob_retry[1].cseq(), "2 INVITE");
    assert!(
        net.events(ALICE)
            .iter()
            .any(|e| matches!(e, DialogEvent::ReInviteAccepted { .. }))
    );
    assert!(
        net.events(BOB)
            .iter()
            .any(|e| matches!(e, DialogEvent::ReInviteAccepted { .. }))
    );
}

/// How many 200s to re-INVITEs `node` has sent.
fn answered_for(net: &Net, node: usize) -> usize {
    net.sent(node)
        .into_iter()
        .filter(|w| {
            w.resp().is_some_and(|r| r.status.as_u16() == 200)
                && w.cseq().ends_with("INVITE")
                && !w.cseq().starts_with("1 ")
        })
        .map(|w| w.cseq())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

#[test]
fn reinvite_while_peer_reinvite_unanswered_gets_500_with_retry_after() {
    let mut net = Net::new();
    let (a, b) = established(&mut net);
    let now = net.now;
    net.session(ALICE, a)
        .reinvite(now, Bytes::from_static(HOLD))
        .expect("reinvite");
    net.pump();
    // Bob has not answered yet; Alice's session refuses a second one of her own...
    assert!(
        net.session(ALICE, a)
            .reinvite(now, Bytes::from_static(HOLD))
            .is_err()
    );
    // ... and Bob cannot start one either (§14.1), it would glare.
    assert!(
        net.session(BOB, b)
            .reinvite(now, Bytes::from_static(HELD))
            .is_err()
    );
    // A second INVITE from Alice's side on the wire (a buggy peer) gets 500 + Retry-After.
    let mut dialog = net.session(ALICE, a).dialog().expect("dialog").clone();
    let seq = dialog.next_seq();
    let via = sip::message::Via::new(
        "UDP",
        sip::message::Host::parse(b"192.0.2.1").expect("host"),
        Some(5060),
        "z9hG4bKsecondinvite",
    );
    let second = dialog.request(Method::Invite, seq, &via);
    net.nodes[ALICE]
        .ep
        .send_request(
            now,
            second,
            addr("192.0.2.2:5060"),
            sip::transaction::Transport::Udp,
        )
        .expect("sent");
    net.pump();
    let r = net.responses(BOB, 500, "INVITE");
    assert_eq!(r.len(), 1);
    let retry: u32 = r[0]
        .header(HeaderName::RetryAfter)
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry <= 10);
}

#[test]
fn reinvite_contact_refreshes_the_remote_target() {
    let mut net = Net::new();
    let (a, b) = established(&mut net);
    let now = net.now;
    // Bob moves to a new address and re-INVITEs with his new Contact.
    let mut dialog = net.session(BOB, b).dialog().expect("dialog").clone();
    let seq = dialog.next_seq();
    let via = sip::message::Via::new(
        "UDP",
        sip::message::Host::parse(b"192.0.2.2").expect("host"),
        Some(5060),
        "z9hG4bKmoved",
    );
    let mut moved = dialog.request(Method::Invite, seq, &via);
    moved
        .headers
        .push(HeaderName::Contact, "<sip:bob@192.0.2.3:5070>");
    net.nodes[BOB]
        .ep
        .send_request(
            now,
            moved,
            addr("192.0.2.1:5060"),
            sip::transaction::Transport::Udp,
        )
        .expect("sent");
    net.pump();
    assert!(matches!(
        net.events(ALICE).last(),
        Some(DialogEvent::ReInvite { .. })
    ));
    net.session(ALICE, a)
        .answer_reinvite(now, StatusCode::OK, Bytes::new())
        .expect("answer");
    net.pump();
    let ok = net.responses(ALICE, 200, "INVITE");
    assert_eq!(ok.len(), 1);
    assert_eq!(
        ok[0].header(HeaderName::Contact).as_deref(),
        Some("<sip:alice@192.0.2.1:5060>")
    );
    net.session(ALICE, a).bye(now).expect("bye");
    net.pump();
    let bye = net.requests(ALICE, Method::Bye);
    assert_eq!(
        bye[0].req().expect("req").uri.to_string(),
        "sip:bob@192.0.2.3:5070"
    );
    assert_eq!(bye[0].to, addr("192.0.2.3:5070"));
}
