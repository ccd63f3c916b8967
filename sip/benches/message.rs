//! SIP codec throughput: parse and print of a realistic carrier INVITE with SDP and of a 200 OK.
//!
//! Run: `CARGO_TARGET_DIR=/work/tgt/sipmsg cargo bench -p callplane-sip --bench message -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)]

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use sip::message::Message;

/// An INVITE as a carrier SBC sends it: two Vias, Record-Route, P-Asserted-Identity,
/// session timer headers, and an SDP offer (PCMU, PCMA, telephone-event).
const INVITE: &[u8] = b"INVITE sip:+14155550123@198.51.100.20:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-524287-1---7f3a2b1c9d8e;rport\r\n\
Via: SIP/2.0/UDP 10.20.30.40:5060;received=203.0.113.9;branch=z9hG4bK8a6c9e3f01\r\n\
Max-Forwards: 68\r\n\
Record-Route: <sip:203.0.113.5;lr;ftag=as4f2a9c01>\r\n\
Contact: <sip:+12125550199@203.0.113.5:5060;transport=udp>\r\n\
To: <sip:+14155550123@carrier.example.net;user=phone>\r\n\
From: \"ACME Corp\" <sip:+12125550199@carrier.example.net;user=phone>;tag=as4f2a9c01\r\n\
Call-ID: 3c2b8e1f4a5d6c7b8e9f0a1b2c3d4e5f@203.0.113.5\r\n\
CSeq: 102 INVITE\r\n\
P-Asserted-Identity: \"ACME Corp\" <sip:+12125550199@carrier.example.net;user=phone>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, PRACK, UPDATE\r\n\
Supported: replaces, timer, 100rel\r\n\
Session-Expires: 1800;refresher=uac\r\n\
User-Agent: CarrierSBC 4.2\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 238\r\n\
\r\n\
v=0\r\n\
o=- 1695301234 1695301234 IN IP4 203.0.113.5\r\n\
s=SBC\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
m=audio 31234 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

const OK: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.10\r\n\
Record-Route: <sip:203.0.113.5;lr;ftag=9fxced76sl>\r\n\
From: <sip:+12125550199@carrier.example.net>;tag=9fxced76sl\r\n\
To: <sip:+14155550123@carrier.example.net>;tag=8321234356\r\n\
Call-ID: 3848276298220188511@192.0.2.10\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:+14155550123@198.51.100.20:5060>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\n\
Content-Length: 0\r\n\
\r\n";

fn codec(c: &mut Criterion) {
    let invite = Bytes::from_static(INVITE);
    let ok = Bytes::from_static(OK);
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("parse_invite_{}B", INVITE.len()), |b| {
        b.iter(|| Message::parse(black_box(invite.clone())).expect("parses"))
    });
    g.bench_function("parse_invite_and_read_txn_headers", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(invite.clone())).expect("parses");
            let h = m.headers();
            let via = h.top_via().expect("via");
            let cseq = h.cseq().expect("cseq");
            let call_id = h.call_id().expect("call-id").len();
            let from = h.from().expect("from");
            let to = h.to().expect("to");
            black_box((via, cseq, call_id, from, to));
        })
    });
    let parsed = Message::parse(invite.clone()).expect("parses");
    let mut out = BytesMut::with_capacity(2048);
    g.bench_function("print_invite", |b| {
        b.iter(|| {
            out.clear();
            black_box(&parsed).print(&mut out);
            black_box(out.len())
        })
    });
    g.bench_function(format!("parse_200_ok_{}B", OK.len()), |b| {
        b.iter(|| Message::parse(black_box(ok.clone())).expect("parses"))
    });
    let parsed_ok = Message::parse(ok.clone()).expect("parses");
    g.bench_function("print_200_ok", |b| {
        b.iter(|| {
            out.clear();
            black_box(&parsed_ok).print(&mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
