//! A client and a server INVITE transaction talking across an in-memory link that drops,
//! delays, duplicates and reorders, stepped in virtual time from deadline to deadline.

mod transaction_common;

use std::time::{Duration, Instant};

use sip::message::{Message, Method, Request};
use sip::transaction::{
    ClientInvite, ServerInvite, Terminated, TimerConfig, TransactionEvent, Transport,
};
use transaction_common::*;

/// The UAS core: answers `plan` (delay after the INVITE arrived, status) through its server
/// transaction, created when the first INVITE arrives.
struct Uas {
    txn: Option<ServerInvite>,
    created: Option<Instant>,
    plan: Vec<(Duration, u16)>,
    next: usize,
    log: Log,
    requests_seen: Vec<(Instant, Request)>,
}

impl Uas {
    fn next_action(&self) -> Option<Instant> {
        Some(self.created? + self.plan.get(self.next)?.0)
    }
}

struct Outcome {
    client: Log,
    server: Log,
    client_end: Option<Terminated>,
    server_end: Option<Terminated>,
    acks_at_server: Vec<Request>,
    invites_at_server: usize,
}

fn run(start: Instant, mut link: Link, plan: Vec<(Duration, u16)>) -> Outcome {
    let invite = request(Method::Invite, "z9hG4bK74bf9", 1);
    let mut client = ClientInvite::new(start, invite, Transport::Udp, TimerConfig::default());
    let mut clog = Log::default();
    let mut uas = Uas {
        txn: None,
        created: None,
        plan,
        next: 0,
        log: Log::default(),
        requests_seen: Vec::new(),
    };
    let mut now = start;
    let mut steps = 0;
    loop {
        // Outputs first, so what was produced at `now` goes on the wire at `now`.
        let before = clog.sent.len();
        clog.drain(now, &mut client);
        for (_, m) in &clog.sent[before..] {
            link.send(now, Dir::ToServer, m.clone());
        }
        if let Some(txn) = uas.txn.as_mut() {
            let before = uas.log.sent.len();
            uas.log.drain(now, txn);
            for (_, m) in &uas.log.sent[before..] {
                link.send(now, Dir::ToClient, m.clone());
            }
        }
        let Some(at) = earliest(&[
            client.poll_timeout(),
            uas.txn.as_ref().and_then(ServerInvite::poll_timeout),
            link.next_delivery(),
            uas.next_action(),
        ]) else {
            break;
        };
        assert!(at >= now, "time never goes backwards");
        now = at;
        steps += 1;
        assert!(steps < 100_000, "scenario does not settle");
        while let Some((dir, msg)) = link.take_due(now) {
            match (dir, msg) {
                (Dir::ToServer, Message::Request(req)) => {
                    uas.requests_seen.push((now, req.clone()));
                    match uas.txn.as_mut() {
                        Some(txn) => txn.handle_request(now, req),
                        None if req.method == Method::Invite => {
                            uas.txn = Some(ServerInvite::new(
                                now,
                                req,
                                Transport::Udp,
                                TimerConfig::default(),
                            ));
                            uas.created = Some(now);
                        }
                        None => {}
                    }
                }
                (Dir::ToClient, Message::Response(resp)) => client.handle_response(now, resp),
                (dir, msg) => panic!("unexpected {msg:?} going {dir:?}"),
            }
        }
        if uas.next_action().is_some_and(|t| t <= now)
            && let Some(txn) = uas.txn.as_mut()
        {
            let code = uas.plan[uas.next].1;
            uas.next += 1;
            let resp = response(txn.request(), code);
            // The TU may be late (the transaction already Completed); then it is refused.
            let _ = txn.send_response(now, resp);
        }
        client.handle_timeout(now);
        if let Some(txn) = uas.txn.as_mut() {
            txn.handle_timeout(now);
        }
    }
    let acks_at_server = uas
        .requests_seen
        .iter()
        .filter(|(_, r)| r.method == Method::Ack)
        .map(|(_, r)| r.clone())
        .collect();
    let invites_at_server = uas
        .requests_seen
        .iter()
        .filter(|(_, r)| r.method == Method::Invite)
        .count();
    Outcome {
        client: clog,
        server: uas.log,
        client_end: client.terminated(),
        server_end: uas.txn.as_ref().and_then(ServerInvite::terminated),
        acks_at_server,
        invites_at_server,
    }
}

fn client_statuses(log: &Log, t0: Instant) -> Vec<(u64, &'static str, u16)> {
    log.events
        .iter()
        .filter_map(|(t, e)| match e {
            TransactionEvent::Provisional(r) => Some((ms(t0, *t), "1xx", r.status.as_u16())),
            TransactionEvent::Final(r) => Some((ms(t0, *t), "final", r.status.as_u16())),
            _ => None,
        })
        .collect()
}

/// INVITE → 100 → 180 → 486 → ACK with every kind of fault on the way: the first INVITE and the
/// first 100 are lost (two retransmissions, one absorbed by the server, which resends its 100),
/// that resent 100 is duplicated, the 180 is delayed past the 486 (reordered), the first 486 is
/// lost (Timer G resends it) and the first ACK is lost (Timer G resends the 486 again and the
/// client re-ACKs from Completed). Outcome: the caller's TU sees exactly one 486, the 180 that
/// comes late is dropped, both transactions end normally (Timer I on the server, Timer D on the
/// client).
#[test]
fn invite_486_ack_exchange_survives_loss_duplication_and_reordering() {
    let start = t0();
    let mut link = Link::new(Duration::from_millis(10));
    link.script = vec![
        (Dir::ToServer, 0, Fault::Drop),      // INVITE #0
        (Dir::ToClient, 0, Fault::Drop),      // 100 Trying
        (Dir::ToClient, 1, Fault::Duplicate), // 100 resent on retransmission
        (Dir::ToClient, 2, Fault::Delay(Duration::from_millis(3000))), // 180, arrives after the 486
        (Dir::ToClient, 3, Fault::Drop),      // 486 #0
        (Dir::ToServer, 3, Fault::Drop),      // ACK #0
    ];
    let plan = vec![
        (Duration::from_millis(1500), 180),
        (Duration::from_millis(2500), 486),
    ];
    let out = run(start, link, plan);

    // Server side: created by the INVITE sent at 500 ms (arrived 510), absorbed the one sent at
    // 1500 ms, 180 at 2010, 486 at 3010 then Timer G at +500 and +1000.
    let server_sent: Vec<(u64, u16)> = out
        .server
        .sent
        .iter()
        .map(|(t, m)| match m {
            Message::Response(r) => (ms(start, *t), r.status.as_u16()),
            Message::Request(_) => panic!("server sent a request"),
        })
        .collect();
    assert_eq!(
        server_sent,
        vec![
            (510, 100),
            (1510, 100),
            (2010, 180),
            (3010, 486),
            (3510, 486),
            (4510, 486)
        ]
    );
    assert_eq!(out.invites_at_server, 2);
    assert_eq!(
        out.server.event_times(start)[0],
        (1510, TransactionEvent::RetransmissionAbsorbed)
    );

    // Client side: INVITE at 0, 500, 1500; ACK at 3520 (lost) and 4520.
    let client_sent: Vec<(u64, Method)> = out
        .client
        .sent
        .iter()
        .map(|(t, m)| match m {
            Message::Request(r) => (ms(start, *t), r.method.clone()),
            Message::Response(_) => panic!("client sent a response"),
        })
        .collect();
    assert_eq!(
        client_sent,
        vec![
            (0, Method::Invite),
            (500, Method::Invite),
            (1500, Method::Invite),
            (3520, Method::Ack),
            (4520, Method::Ack)
        ]
    );
    assert_eq!(
        client_statuses(&out.client, start),
        vec![(1520, "1xx", 100), (1527, "1xx", 100), (3520, "final", 486)],
        "the duplicated 100 reaches the TU twice (Proceeding passes 1xx up); the late 180 does not"
    );

    // The ACK that got through acknowledges the 486 correctly.
    assert_eq!(out.acks_at_server.len(), 1);
    let ack = &out.acks_at_server[0];
    assert_eq!(
        ack.headers.top_via().expect("Via").branch(),
        Some("z9hG4bK74bf9")
    );
    assert_eq!(ack.headers.to().expect("To").tag(), Some("b5qt9xl"));
    assert_eq!(ack.headers.cseq().expect("CSeq").seq, 1);

    assert_eq!(out.server_end, Some(Terminated::Completed));
    assert_eq!(out.client_end, Some(Terminated::Completed));
    let server_end = out.server.events.last().map(|(t, _)| ms(start, *t));
    assert_eq!(server_end, Some(4530 + 5000), "Timer I = T4 after the ACK");
    let client_end = out.client.events.last().map(|(t, _)| ms(start, *t));
    assert_eq!(
        client_end,
        Some(3520 + 32000),
        "Timer D = 32 s after the 486"
    );
}

/// The same exchange over 40 seeded random links (20 % loss, 10 % duplication, up to 300 ms of
/// jitter that reorders): every run ends with the caller's TU seeing exactly one 486 and no
/// provisional after it, and both transactions ending normally.
#[test]
fn invite_486_outcome_is_the_same_over_random_lossy_links() {
    let mut total_sent = 0;
    let mut invites_received = 0;
    for seed in 1..=40u64 {
        let start = t0();
        let mut link = Link::new(Duration::from_millis(20));
        link.random = Some((
            seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            20,
            10,
            Duration::from_millis(300),
        ));
        let plan = vec![
            (Duration::from_millis(100), 180),
            (Duration::from_millis(400), 486),
        ];
        let out = run(start, link, plan);
        let statuses = client_statuses(&out.client, start);
        let finals: Vec<u16> = statuses
            .iter()
            .filter(|(_, k, _)| *k == "final")
            .map(|(_, _, s)| *s)
            .collect();
        assert_eq!(finals, vec![486], "seed {seed}: {statuses:?}");
        let final_at = statuses
            .iter()
            .position(|(_, k, _)| *k == "final")
            .expect("one final");
        assert_eq!(
            final_at,
            statuses.len() - 1,
            "seed {seed}: no provisional after the final"
        );
        assert_eq!(out.client_end, Some(Terminated::Completed), "seed {seed}");
        assert_eq!(out.server_end, Some(Terminated::Completed), "seed {seed}");
        assert!(!out.acks_at_server.is_empty(), "seed {seed}");
        total_sent += out.client.sent.len() + out.server.sent.len();
        invites_received += out.invites_at_server;
    }
    // The links really were faulty: a clean run sends 5 messages (INVITE, 100, 180, 486, ACK)
    // and the server sees one INVITE.
    assert!(total_sent > 40 * 5, "{total_sent}");
    assert!(invites_received > 40, "{invites_received}");
}
