//! Session timers (RFC 4028): negotiation, refresh before expiry, BYE on expiry, 422 retry.

mod dialog_common;

use bytes::Bytes;
use dialog_common::*;
use sip::dialog::{DialogConfig, DialogEvent, EndReason};
use sip::message::{HeaderName, Method};

fn timer_net(alice_se: u32, others_min_se: u32) -> Net {
    Net::with_configs(
        DialogConfig {
            session_expires: Some(alice_se),
            ..DialogConfig::default()
        },
        DialogConfig {
            min_se: others_min_se,
            ..DialogConfig::default()
        },
    )
}

#[test]
fn session_timer_is_negotiated_and_refreshed_by_the_uac_before_expiry() {
    let mut net = timer_net(120, 90);
    let (a, b) = established(&mut net);
    let invite = &net.requests(ALICE, Method::Invite)[0];
    assert_eq!(
        invite.header(HeaderName::SessionExpires).as_deref(),
        Some("120")
    );
    assert_eq!(invite.header(HeaderName::MinSe).as_deref(), Some("90"));
    let ok = &net.responses(BOB, 200, "INVITE")[0];
    assert_eq!(
        ok.header(HeaderName::SessionExpires).as_deref(),
        Some("120;refresher=uac")
    );
    assert_eq!(ok.header(HeaderName::Require).as_deref(), Some("timer"));

    net.run_for(secs(200));
    let updates: Vec<_> = net.requests(ALICE, Method::Update);
    let at: Vec<u64> = updates.iter().map(|w| w.at.as_secs()).collect();
    // Refreshes at half the interval, each restarting the clock.
    assert_eq!(at, vec![60, 120, 180]);
    assert_eq!(updates[0].cseq(), "2 UPDATE");
    assert_eq!(
        updates[0].header(HeaderName::SessionExpires).as_deref(),
        Some("120;refresher=uac")
    );
    assert_eq!(net.responses(BOB, 200, "UPDATE").len(), 3);
    let refreshed = |node| {
        net.events(node)
            .iter()
            .filter(|e| matches!(e, DialogEvent::Refreshed { interval: 120 }))
            .count()
    };
    assert_eq!(refreshed(ALICE), 3);
    assert_eq!(refreshed(BOB), 3);
    // Nobody hung up.
    assert!(net.requests(ALICE, Method::Bye).is_empty());
    assert!(net.requests(BOB, Method::Bye).is_empty());
    assert!(net.session(ALICE, a).is_confirmed());
    assert!(net.session(BOB, b).is_confirmed());
}

#[test]
fn session_expiry_without_refresh_sends_bye() {
    let mut net = timer_net(120, 90);
    // Every refresh is lost.
    net.drop = Box::new(|w| w.req().is_some_and(|r| r.method == Method::Update));
    let (_a, b) = established(&mut net);
    net.run_for(secs(100));
    // Bob (not the refresher) gives up min(32, 120/3) = 32 s before the end: at 88 s.
    let bye = net.requests(BOB, Method::Bye);
    assert_eq!(bye.len(), 1);
    assert_eq!(bye[0].at, secs(88));
    assert_eq!(bye[0].cseq(), "1 BYE");
    assert!(net.session(BOB, b).is_terminated());
    assert!(net.events(BOB).contains(&DialogEvent::Terminated {
        reason: EndReason::SessionExpired
    }));
}

#[test]
fn uas_refreshes_when_the_uac_does_not_support_timer() {
    // Bob asks for a session timer on a call from a UA without `timer`: Bob refreshes.
    let mut net = Net::with_configs(
        DialogConfig::default(),
        DialogConfig {
            session_expires: Some(100),
            ..DialogConfig::default()
        },
    );
    let datagram = bytes::Bytes::from_static(
        b"INVITE sip:bob@192.0.2.2:5060 SIP/2.0\r\n\
          Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKnotimer\r\n\
          Max-Forwards: 70\r\n\
          From: <sip:old@example.com>;tag=x1\r\n\
          To: <sip:bob@example.com>\r\n\
          Call-ID: old-ua@192.0.2.9\r\n\
          CSeq: 1 INVITE\r\n\
          Contact: <sip:old@192.0.2.9:5060>\r\n\
          Content-Length: 0\r\n\r\n",
    );
    let now = net.now;
    net.nodes[BOB].ep.handle_datagram(
        now,
        addr("192.0.2.9:5060"),
        sip::transaction::Transport::Udp,
        datagram,
    );
    net.pump();
    net.last(BOB).accept(now, Bytes::new()).expect("accept");
    net.pump();
    let ok = &net.responses(BOB, 200, "INVITE")[0];
    assert_eq!(
        ok.header(HeaderName::SessionExpires).as_deref(),
        Some("100;refresher=uas")
    );
    assert_eq!(ok.header(HeaderName::Require), None);
}

#[test]
fn too_small_session_expires_gets_422_and_the_uac_retries_with_min_se() {
    let mut net = timer_net(90, 300);
    let params = net.params("sip:bob@192.0.2.2");
    let a = net.call(&params);
    let rejected = net.responses(BOB, 422, "INVITE");
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0].header(HeaderName::MinSe).as_deref(),
        Some("300")
    );
    let invites = net.requests(ALICE, Method::Invite);
    assert_eq!(invites.len(), 2, "retried once");
    assert_eq!(invites[1].cseq(), "2 INVITE");
    assert_eq!(
        invites[1].header(HeaderName::SessionExpires).as_deref(),
        Some("300")
    );
    assert_eq!(invites[1].header(HeaderName::MinSe).as_deref(), Some("300"));
    assert_eq!(invites[1].sender_tag(), invites[0].sender_tag());
    assert_eq!(
        invites[1].header(HeaderName::CallId),
        invites[0].header(HeaderName::CallId)
    );
    assert_ne!(
        invites[1].msg.headers().top_via().expect("via").branch(),
        invites[0].msg.headers().top_via().expect("via").branch()
    );
    let now = net.now;
    net.last(BOB).accept(now, answer_sdp()).expect("accept");
    net.pump();
    let ok = net.responses(BOB, 200, "INVITE");
    assert_eq!(
        ok[0].header(HeaderName::SessionExpires).as_deref(),
        Some("300;refresher=uac")
    );
    assert_eq!(ok[0].cseq(), "2 INVITE");
    assert!(net.session(ALICE, a).is_confirmed());
    assert_eq!(
        net.requests(ALICE, Method::Ack).last().expect("ack").cseq(),
        "2 ACK"
    );
    // Only the 422 is in Bob's first session; the second one is live.
    assert!(net.nodes[BOB].sessions[0].is_terminated());
    assert!(net.nodes[BOB].sessions[1].is_confirmed());
}
