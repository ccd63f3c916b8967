//! INVITE sessions driven through real endpoints over an in-memory network: call set-up, ACK,
//! BYE from either side, the UAS 2xx retransmission, route sets, 481.

mod dialog_common;

use dialog_common::*;
use sip::dialog::{DialogEvent, EndReason};
use sip::message::{HeaderName, Method};

#[test]
fn basic_call_setup_invite_180_200_ack() {
    let mut net = Net::new();
    let (_a, _b) = established(&mut net);
    let invite = net.requests(ALICE, Method::Invite);
    assert_eq!(invite.len(), 1);
    assert_eq!(invite[0].cseq(), "1 INVITE");
    assert_eq!(invite[0].to_tag(), None);
    assert_eq!(invite[0].sender_tag().as_deref(), Some("alicetag1"));
    let supported = invite[0].header(HeaderName::Supported).expect("Supported");
    assert!(supported.contains("100rel") && supported.contains("timer"));
    assert!(invite[0].header(HeaderName::Contact).is_some());
    assert_eq!(
        invite[0].header(HeaderName::MaxForwards).as_deref(),
        Some("70")
    );

    let ringing = net.responses(BOB, 180, "INVITE");
    assert_eq!(ringing.len(), 1);
    let bob_tag = ringing[0].to_tag().expect("180 has a To tag");
    let ok = net.responses(BOB, 200, "INVITE");
    assert_eq!(ok.len(), 1, "no retransmission once the ACK came");
    assert_eq!(ok[0].to_tag().as_deref(), Some(bob_tag.as_str()));
    assert_eq!(
        ok[0].header(HeaderName::Contact).as_deref(),
        Some("<sip:bob@192.0.2.2:5060>")
    );

    let ack = net.requests(ALICE, Method::Ack);
    assert_eq!(ack.len(), 1);
    assert_eq!(ack[0].cseq(), "1 ACK");
    assert_eq!(ack[0].to_tag().as_deref(), Some(bob_tag.as_str()));
    // The ACK goes to the remote target (Bob's Contact), a new transaction (branch).
    assert_eq!(
        ack[0].req().expect("req").uri.to_string(),
        "sip:bob@192.0.2.2:5060"
    );
    assert_ne!(
        ack[0].msg.headers().top_via().expect("via").branch(),
        invite[0].msg.headers().top_via().expect("via").branch()
    );

    assert!(matches!(
        net.events(ALICE)[..],
        [
            DialogEvent::Early { status: 180, .. },
            DialogEvent::Confirmed { .. }
        ]
    ));
    assert!(matches!(
        &net.events(BOB)[..],
        [DialogEvent::Confirmed { .. }]
    ));

    // Nothing is retransmitted later either.
    net.run_for(secs(40));
    assert_eq!(net.responses(BOB, 200, "INVITE").len(), 1);
    assert!(net.requests(BOB, Method::Bye).is_empty());
}

#[test]
fn bye_from_caller_ends_both_sides() {
    let mut net = Net::new();
    let (a, b) = established(&mut net);
    let now = net.now;
    net.session(ALICE, a).bye(now).expect("bye");
    net.pump();
    let bye = net.requests(ALICE, Method::Bye);
    assert_eq!(bye.len(), 1);
    assert_eq!(bye[0].cseq(), "2 BYE");
    assert_eq!(bye[0].sender_tag().as_deref(), Some("alicetag1"));
    assert!(bye[0].to_tag().is_some());
    assert_eq!(
        bye[0].req().expect("req").uri.to_string(),
        "sip:bob@192.0.2.2:5060"
    );
    assert!(bye[0].routes().is_empty());
    assert_eq!(net.responses(BOB, 200, "BYE").len(), 1);
    assert!(net.session(ALICE, a).is_terminated());
    assert!(net.session(BOB, b).is_terminated());
    assert_eq!(
        net.events(BOB).last(),
        Some(&DialogEvent::Terminated {
            reason: EndReason::RemoteBye
        })
    );
    assert_eq!(
        net.events(ALICE).last(),
        Some(&DialogEvent::Terminated {
            reason: EndReason::LocalBye
        })
    );
}

#[test]
fn bye_from_callee_uses_its_own_cseq_and_swapped_tags() {
    let mut net = Net::new();
    let (a, b) = established(&mut net);
    let bob_tag = net.responses(BOB, 200, "INVITE")[0].to_tag().expect("tag");
    let now = net.now;
    net.session(BOB, b).bye(now).expect("bye");
    net.pump();
    let bye = net.requests(BOB, Method::Bye);
    assert_eq!(bye.len(), 1);
    assert_eq!(bye[0].cseq(), "1 BYE");
    assert_eq!(bye[0].sender_tag(), Some(bob_tag));
    assert_eq!(bye[0].to_tag().as_deref(), Some("alicetag1"));
    // Request-URI = Alice's Contact (the remote target).
    assert_eq!(
        bye[0].req().expect("req").uri.to_string(),
        "sip:alice@192.0.2.1:5060"
    );
    assert_eq!(net.responses(ALICE, 200, "BYE").len(), 1);
    assert!(net.session(ALICE, a).is_terminated());
}

#[test]
fn uas_retransmits_2xx_until_ack_then_byes_at_64_t1() {
    let mut net = Net::new();
    // Every ACK is lost.
    net.drop = Box::new(|w| w.req().is_some_and(|r| r.method == Method::Ack));
    let params = net.params("sip:bob@192.0.2.2");
    let _a = net.call(&params);
    let now = net.now;
    net.last(BOB).accept(now, answer_sdp()).expect("accept");
    net.run_for(secs(40));
    let times: Vec<u128> = net
        .responses(BOB, 200, "INVITE")
        .iter()
        .map(|w| w.at.as_millis())
        .collect();
    // T1 = 500 ms doubling up to T2 = 4 s, until 64*T1 = 32 s.
    assert_eq!(
        times,
        vec![
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    let bye = net.requests(BOB, Method::Bye);
    assert_eq!(bye.len(), 1);
    assert_eq!(bye[0].at, secs(32));
    assert_eq!(bye[0].cseq(), "1 BYE");
    assert_eq!(
        net.events(BOB).last(),
        Some(&DialogEvent::Terminated {
            reason: EndReason::AckTimeout
        })
    );
    // Alice ACKed every 2xx she got (§13.2.2.4) and took the BYE.
    assert_eq!(net.requests(ALICE, Method::Ack).len(), 11);
    assert_eq!(
        net.events(ALICE).last(),
        Some(&DialogEvent::Terminated {
            reason: EndReason::RemoteBye
        })
    );
}

#[test]
fn route_set_from_record_route_is_used_for_bye() {
    let mut net = Net::new();
    net.proxy = Some(Proxy {
        addr: addr("192.0.2.100:5060"),
        record_route: Some("<sip:192.0.2.100;lr>".into()),
        targets: Vec::new(),
    });
    let mut params = net.params("sip:bob@192.0.2.2");
    params.routes = vec![na("<sip:192.0.2.100;lr>")];
    let a = net.call(&params);
    let now = net.now;
    net.last(BOB).accept(now, answer_sdp()).expect("accept");
    net.pump();
    // The UAS copied the Record-Route into its 2xx.
    let ok = net.responses(BOB, 200, "INVITE");
    assert_eq!(
        ok[0].header(HeaderName::RecordRoute).as_deref(),
        Some("<sip:192.0.2.100;lr>")
    );
    // ACK and BYE from Alice: Route = the route set, Request-URI = Bob's Contact, sent to the
    // proxy.
    let ack = net.requests(ALICE, Method::Ack);
    assert_eq!(ack[0].routes(), vec!["sip:192.0.2.100;lr".to_string()]);
    assert_eq!(ack[0].to, addr("192.0.2.100:5060"));
    assert!(net.session(BOB, 0).is_confirmed());
    let now = net.now;
    net.session(ALICE, a).bye(now).expect("bye");
    net.pump();
    let bye = net.requests(ALICE, Method::Bye);
    assert_eq!(bye[0].routes(), vec!["sip:192.0.2.100;lr".to_string()]);
    assert_eq!(
        bye[0].req().expect("req").uri.to_string(),
        "sip:bob@192.0.2.2:5060"
    );
    assert_eq!(bye[0].to, addr("192.0.2.100:5060"));
    assert_eq!(net.responses(BOB, 200, "BYE").len(), 1);
    assert!(net.session(BOB, 0).is_terminated());
}

#[test]
fn callee_bye_follows_record_route_in_request_order() {
    let mut net = Net::new();
    net.proxy = Some(Proxy {
        addr: addr("192.0.2.100:5060"),
        record_route: Some("<sip:192.0.2.100;lr>".into()),
        targets: Vec::new(),
    });
    let mut params = net.params("sip:bob@192.0.2.2");
    params.routes = vec![na("<sip:192.0.2.100;lr>")];
    let _a = net.call(&params);
    let now = net.now;
    net.last(BOB).accept(now, answer_sdp()).expect("accept");
    net.pump();
    net.last(BOB).bye(now).expect("bye");
    net.pump();
    let bye = net.requests(BOB, Method::Bye);
    assert_eq!(bye[0].routes(), vec!["sip:192.0.2.100;lr".to_string()]);
    assert_eq!(
        bye[0].req().expect("req").uri.to_string(),
        "sip:alice@192.0.2.1:5060"
    );
    assert_eq!(bye[0].to, addr("192.0.2.100:5060"));
    assert_eq!(net.responses(ALICE, 200, "BYE").len(), 1);
}

#[test]
fn bye_for_unknown_dialog_gets_481() {
    let mut net = Net::new();
    let datagram = bytes::Bytes::from_static(
        b"BYE sip:bob@192.0.2.2:5060 SIP/2.0\r\n\
          Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnope1\r\n\
          Max-Forwards: 70\r\n\
          From: <sip:alice@example.com>;tag=ghost\r\n\
          To: <sip:bob@example.com>;tag=nobody\r\n\
          Call-ID: no-such-call@192.0.2.1\r\n\
          CSeq: 7 BYE\r\n\
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
    let r = net.responses(BOB, 481, "BYE");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].cseq(), "7 BYE");
    assert_eq!(r[0].to, addr("192.0.2.1:5060"));
}

#[test]
fn request_on_a_terminated_dialog_gets_481() {
    let mut net = Net::new();
    let (a, b) = established(&mut net);
    let now = net.now;
    net.session(ALICE, a).bye(now).expect("bye");
    net.pump();
    // Bob (whose BYE crossed Alice's, say) sends a request in the dialog Alice has ended.
    let mut dialog = net.session(BOB, b).dialog().expect("dialog").clone();
    let seq = dialog.next_seq();
    let via = sip::message::Via::new(
        "UDP",
        sip::message::Host::parse(b"192.0.2.2").expect("host"),
        Some(5060),
        "z9hG4bKlatebye1",
    );
    let bye = dialog.request(Method::Bye, seq, &via);
    net.nodes[BOB]
        .ep
        .send_request(
            now,
            bye,
            addr("192.0.2.1:5060"),
            sip::transaction::Transport::Udp,
        )
        .expect("sent");
    net.pump();
    let r = net.responses(ALICE, 481, "BYE");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].cseq(), format!("{seq} BYE"));
}

#[test]
fn options_out_of_dialog_answered_with_allow_and_supported() {
    let mut net = Net::new();
    let datagram = bytes::Bytes::from_static(
        b"OPTIONS sip:bob@192.0.2.2:5060 SIP/2.0\r\n\
          Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKopt1\r\n\
          Max-Forwards: 70\r\n\
          From: <sip:alice@example.com>;tag=o1\r\n\
          To: <sip:bob@example.com>\r\n\
          Call-ID: opt@192.0.2.1\r\n\
          CSeq: 1 OPTIONS\r\n\
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
    let r = net.responses(BOB, 200, "OPTIONS");
    assert_eq!(r.len(), 1);
    let allow = r[0].header(HeaderName::Allow).expect("Allow");
    assert!(allow.contains("INVITE") && allow.contains("PRACK") && allow.contains("UPDATE"));
    assert_eq!(
        r[0].header(HeaderName::Accept).as_deref(),
        Some("application/sdp")
    );
    assert_eq!(
        r[0].header(HeaderName::Supported).as_deref(),
        Some("100rel, timer")
    );
    assert!(r[0].to_tag().is_some());
}

#[test]
fn in_dialog_options_answered_and_out_of_order_cseq_gets_500() {
    let mut net = Net::new();
    let (_a, b) = established(&mut net);
    let mut dialog = net.session(BOB, b).dialog().expect("dialog").clone();
    let via = |branch: &str| {
        sip::message::Via::new(
            "UDP",
            sip::message::Host::parse(b"192.0.2.2").expect("host"),
            Some(5060),
            branch,
        )
    };
    let now = net.now;
    for (seq, branch) in [(5, "z9hG4bKopt5"), (4, "z9hG4bKopt4")] {
        let req = dialog.request(Method::Options, seq, &via(branch));
        net.nodes[BOB]
            .ep
            .send_request(
                now,
                req,
                addr("192.0.2.1:5060"),
                sip::transaction::Transport::Udp,
            )
            .expect("sent");
        net.pump();
    }
    let ok = net.responses(ALICE, 200, "OPTIONS");
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].cseq(), "5 OPTIONS");
    assert!(
        ok[0]
            .header(HeaderName::Allow)
            .expect("Allow")
            .contains("BYE")
    );
    // §12.2.2: lower than the remote sequence number: out of order, 500.
    let bad = net.responses(ALICE, 500, "OPTIONS");
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].cseq(), "4 OPTIONS");
    // The dialog goes on.
    let _ = dialog.next_seq();
    assert!(net.session(ALICE, 0).is_confirmed());
}
