//! Reliable provisional responses (RFC 3262): PRACK, RSeq/RAck, retransmission, give-up.

mod dialog_common;

use bytes::Bytes;
use dialog_common::*;
use sip::dialog::{DialogError, DialogEvent, EndReason};
use sip::message::{HeaderName, Method, StatusCode};

const EARLY: &[u8] = b"v=0\r\no=bob 1 1 IN IP4 192.0.2.2\r\na=sendrecv\r\n";

#[test]
fn reliable_183_is_pracked_and_its_retransmission_stops() {
    let mut net = Net::new();
    let params = net.params("sip:bob@192.0.2.2");
    let a = net.call(&params);
    let now = net.now;
    net.last(BOB)
        .provisional(
            now,
            StatusCode::SESSION_PROGRESS,
            Bytes::from_static(EARLY),
            true,
        )
        .expect("reliable 183");
    net.pump();
    let p = net.responses(BOB, 183, "INVITE");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].header(HeaderName::Require).as_deref(), Some("100rel"));
    let rseq = p[0].header(HeaderName::RSeq).expect("RSeq");
    let prack = net.requests(ALICE, Method::Prack);
    assert_eq!(prack.len(), 1);
    assert_eq!(prack[0].cseq(), "2 PRACK");
    assert_eq!(
        prack[0].header(HeaderName::RAck),
        Some(format!("{rseq} 1 INVITE"))
    );
    assert_eq!(prack[0].to_tag(), p[0].to_tag());
    assert_eq!(
        prack[0].req().expect("req").uri.to_string(),
        "sip:bob@192.0.2.2:5060"
    );
    assert_eq!(net.responses(BOB, 200, "PRACK").len(), 1);
    assert!(
        net.events(BOB)
            .contains(&DialogEvent::PrackReceived { body: Bytes::new() })
    );
    assert!(matches!(
        net.events(ALICE)[..],
        [DialogEvent::Early {
            status: 183,
            reliable: true,
            ..
        }]
    ));
    // No retransmission of the 183 after the PRACK, and the call completes.
    net.run_for(secs(5));
    assert_eq!(net.responses(BOB, 183, "INVITE").len(), 1);
    let now = net.now;
    net.last(BOB).accept(now, Bytes::new()).expect("accept");
    net.pump();
    assert!(net.session(ALICE, a).is_confirmed());
    // The ACK follows the PRACK's CSeq space but keeps the INVITE's number.
    assert_eq!(net.requests(ALICE, Method::Ack)[0].cseq(), "1 ACK");
    // A BYE after that uses the next local CSeq (3).
    net.session(ALICE, a).bye(now).expect("bye");
    net.pump();
    assert_eq!(net.requests(ALICE, Method::Bye)[0].cseq(), "3 BYE");
}

#[test]
fn unacknowledged_reliable_183_is_retransmitted_then_rejected_with_5xx() {
    let mut net = Net::new();
    net.drop = Box::new(|w| w.req().is_some_and(|r| r.method == Method::Prack));
    let params = net.params("sip:bob@192.0.2.2");
    let _a = net.call(&params);
    let now = net.now;
    net.last(BOB)
        .provisional(
            now,
            StatusCode::SESSION_PROGRESS,
            Bytes::from_static(EARLY),
            true,
        )
        .expect("reliable 183");
    net.run_for(secs(40));
    let times: Vec<u128> = net
        .responses(BOB, 183, "INVITE")
        .iter()
        .map(|w| w.at.as_millis())
        .collect();
    // T1 doubling (RFC 3262 §3), for 64*T1 = 32 s.
    assert_eq!(times, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    // The same RSeq each time, PRACKed once by Alice (her PRACK transaction retransmits it).
    let rseqs: std::collections::BTreeSet<_> = net
        .responses(BOB, 183, "INVITE")
        .iter()
        .map(|w| w.header(HeaderName::RSeq))
        .collect();
    assert_eq!(rseqs.len(), 1);
    let pracks: std::collections::BTreeSet<_> = net
        .requests(ALICE, Method::Prack)
        .iter()
        .map(|w| w.cseq())
        .collect();
    assert_eq!(pracks.len(), 1);
    let rejected = net.responses(BOB, 500, "INVITE");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].at, secs(32));
    assert_eq!(
        net.events(BOB).last(),
        Some(&DialogEvent::Terminated {
            reason: EndReason::PrackTimeout
        })
    );
    assert_eq!(
        net.events(ALICE).last(),
        Some(&DialogEvent::Terminated {
            reason: EndReason::Rejected(500)
        })
    );
}

#[test]
fn second_reliable_provisional_waits_for_the_first_prack() {
    let mut net = Net::new();
    net.drop = Box::new(|w| w.req().is_some_and(|r| r.method == Method::Prack));
    let params = net.params("sip:bob@192.0.2.2");
    let _a = net.call(&params);
    let now = net.now;
    net.last(BOB)
        .provisional(now, StatusCode::SESSION_PROGRESS, Bytes::new(), true)
        .expect("reliable 183");
    assert_eq!(
        net.last(BOB)
            .provisional(now, StatusCode::RINGING, Bytes::new(), true),
        Err(DialogError::ReliableOutstanding)
    );
}

#[test]
fn reliable_provisional_needs_100rel_support() {
    let mut net = Net::new();
    let datagram = bytes::Bytes::from_static(
        b"INVITE sip:bob@192.0.2.2:5060 SIP/2.0\r\n\
          Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKno100rel\r\n\
          Max-Forwards: 70\r\n\
          From: <sip:alice@example.com>;tag=x1\r\n\
          To: <sip:bob@example.com>\r\n\
          Call-ID: old-ua@192.0.2.1\r\n\
          CSeq: 1 INVITE\r\n\
          Contact: <sip:alice@192.0.2.1:5060>\r\n\
          Content-Length: 0\r\n\r\n",
    );
    let now = net.now;
    net.nodes[BOB].ep.handle_datagram(
        now,
        addr("192.0.2.1:5060"),
        sip::transaction::Transport::Udp,
        datagram,
    );
    net.pump();
    assert_eq!(
        net.last(BOB)
            .provisional(now, StatusCode::SESSION_PROGRESS, Bytes::new(), true),
        Err(DialogError::NoReliableSupport)
    );
    // Unreliably it goes out.
    net.last(BOB)
        .provisional(now, StatusCode::SESSION_PROGRESS, Bytes::new(), false)
        .expect("183");
    net.pump();
    let p = net.responses(BOB, 183, "INVITE");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].header(HeaderName::RSeq), None);
}

#[test]
fn require_100rel_makes_every_provisional_reliable() {
    let mut net = Net::new();
    let datagram = bytes::Bytes::from_static(
        b"INVITE sip:bob@192.0.2.2:5060 SIP/2.0\r\n\
          Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKreq100rel\r\n\
          Max-Forwards: 70\r\n\
          From: <sip:alice@example.com>;tag=x1\r\n\
          To: <sip:bob@example.com>\r\n\
          Call-ID: strict@192.0.2.1\r\n\
          CSeq: 1 INVITE\r\n\
          Require: 100rel\r\n\
          Contact: <sip:alice@192.0.2.1:5060>\r\n\
          Content-Length: 0\r\n\r\n",
    );
    let now = net.now;
    net.nodes[BOB].ep.handle_datagram(
        now,
        addr("192.0.2.1:5060"),
        sip::transaction::Transport::Udp,
        datagram,
    );
    net.pump();
    net.last(BOB)
        .provisional(now, StatusCode::RINGING, Bytes::new(), false)
        .expect("180");
    net.pump();
    let p = net.responses(BOB, 180, "INVITE");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].header(HeaderName::Require).as_deref(), Some("100rel"));
    assert!(p[0].header(HeaderName::RSeq).is_some());
}
