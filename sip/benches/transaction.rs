//! Transaction layer costs: creating client and server transactions, and finding the
//! transaction a received response belongs to among 10 000 live ones.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use sip::endpoint::{Endpoint, EndpointConfig, EndpointOutput};
use sip::message::{Request, Response, StatusCode};
use sip::transaction::{ClientInvite, ClientKey, ServerInvite, TimerConfig, Transport};

const LIVE: usize = 10_000;

fn invite(branch: &str) -> Request {
    Request::parse(Bytes::from(format!(
        "INVITE sip:bob@example.net SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
         To: <sip:bob@example.net>\r\n\
         Call-ID: a84b4c76e66710@pc33.example.com\r\n\
         CSeq: 314159 INVITE\r\n\
         Contact: <sip:alice@192.0.2.1>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: 0\r\n\r\n"
    )))
    .expect("valid INVITE")
}

fn ringing(req: &Request) -> Response {
    let mut r = sip::message::response_to(req, StatusCode::RINGING, None);
    r.add_to_tag("a6c85cf");
    r
}

#[allow(clippy::disallowed_methods)] // the benchmark's origin of virtual time
fn now() -> Instant {
    Instant::now()
}

fn benches(c: &mut Criterion) {
    let t = now();
    let cfg = TimerConfig::default();
    let req = invite("z9hG4bKbench0");

    c.bench_function("client_invite_new", |b| {
        b.iter(|| {
            let mut txn = ClientInvite::new(t, black_box(req.clone()), Transport::Udp, cfg);
            black_box(txn.poll_output());
            txn
        })
    });

    c.bench_function("server_invite_new", |b| {
        b.iter(|| {
            let mut txn = ServerInvite::new(t, black_box(req.clone()), Transport::Udp, cfg);
            black_box(txn.poll_output());
            txn
        })
    });

    // 10 000 client transactions keyed as the endpoint keys them; the response names one.
    let mut map: HashMap<ClientKey, usize> = HashMap::with_capacity(LIVE);
    let mut responses = Vec::with_capacity(LIVE);
    for i in 0..LIVE {
        let r = invite(&format!("z9hG4bK{i:016x}"));
        map.insert(ClientKey::from_request(&r).expect("key"), i);
        responses.push(ringing(&r));
    }
    let probe = &responses[LIVE / 2];
    c.bench_function("lookup_10000_by_response_key", |b| {
        b.iter(|| {
            let key = ClientKey::from_response(black_box(probe)).expect("key");
            black_box(map.get(&key).copied())
        })
    });
    let probe_key = ClientKey::from_response(probe).expect("key");
    c.bench_function("lookup_10000_prebuilt_key", |b| {
        b.iter(|| black_box(map.get(black_box(&probe_key)).copied()))
    });

    // The whole path: a 180 datagram parsed, matched among 10 000 INVITE client transactions
    // inside an Endpoint, handed to its transaction, and the event drained.
    let mut ep = Endpoint::new(EndpointConfig {
        seed: 7,
        ..EndpointConfig::default()
    });
    let dest: SocketAddr = "203.0.113.7:5060".parse().expect("addr");
    let mut datagrams = Vec::with_capacity(LIVE);
    for i in 0..LIVE {
        let r = invite(&format!("z9hG4bK{i:016x}"));
        datagrams.push(ringing(&r).to_bytes());
        ep.send_request(t, r, dest, Transport::Udp).expect("sent");
    }
    while ep.poll_output().is_some() {}
    let datagram = datagrams[LIVE / 2].clone();
    c.bench_function("endpoint_180_among_10000", |b| {
        b.iter(|| {
            ep.handle_datagram(t, dest, Transport::Udp, black_box(datagram.clone()));
            let mut n = 0;
            while let Some(o) = ep.poll_output() {
                if let EndpointOutput::Event(_) = o {
                    n += 1;
                }
            }
            black_box(n)
        })
    });
}

criterion_group!(transaction, benches);
criterion_main!(transaction);
