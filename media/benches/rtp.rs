//! RTP hot path: parse, serialize, receiver statistics, and a whole `MediaSession` round trip.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use std::net::SocketAddr;

use media::codec::Codec;
use media::rtp::{PayloadType, ReceiverStats, RtpHeader, RtpPacket, Ssrc};
use media::session::{Input, MediaSession, Output, SessionConfig};

/// An arbitrary origin for virtual time: the only clock read; everything after it is arithmetic.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn rtp(c: &mut Criterion) {
    let payload = [0x55u8; 160];
    let wire = Bytes::from(
        RtpHeader::new(PayloadType::PCMU, 4242, 160 * 4242, Ssrc(0xdead_beef))
            .to_vec(&payload)
            .expect("fits"),
    );
    c.bench_function("rtp_parse_g711_20ms", |b| {
        b.iter(|| RtpPacket::parse(black_box(&wire)).expect("valid"))
    });
    let mut buf = [0u8; 1500];
    let mut seq = 0u16;
    c.bench_function("rtp_serialize_g711_20ms", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let h = RtpHeader::new(PayloadType::PCMU, seq, seq as u32 * 160, Ssrc(1));
            h.write(black_box(&payload), &mut buf).expect("fits")
        })
    });
    let t0 = t0();
    let mut stats = ReceiverStats::new(8000, 0);
    let mut n = 0u32;
    c.bench_function("rtp_receiver_stats_update", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            stats.on_packet(
                n as u16,
                n.wrapping_mul(160),
                t0 + Duration::from_micros(n as u64 * 20_000),
            )
        })
    });
}

/// One call leg for one ptime: an inbound G.711 packet is received (parse, checks, statistics,
/// jitter buffer), the 20 ms tick plays it out (decode), records a stereo frame, encodes the
/// outbound frame and builds its packet; the outputs are drained.
fn session(c: &mut Criterion) {
    let start = t0();
    let mut cfg = SessionConfig::new(Codec::Pcmu, PayloadType::PCMU, Ssrc(0xa));
    cfg.remote_rtp = Some("10.0.0.2:5000".parse().expect("literal"));
    cfg.telephone_event = PayloadType::new(101);
    cfg.record = true;
    let mut s = MediaSession::new(cfg, start);
    let source: SocketAddr = "10.0.0.2:5000".parse().expect("literal");
    let payload = [0x55u8; 160];
    let mut buf = [0u8; 172];
    let mut i = 0u32;
    let mut sent = 0u64;
    c.bench_function("session_round_trip_g711_20ms", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let now = start + Duration::from_millis(20 * i as u64);
            let h = RtpHeader::new(PayloadType::PCMU, i as u16, i.wrapping_mul(160), Ssrc(0xb));
            let n = h.write(&payload, &mut buf).expect("fits");
            let bytes = Bytes::copy_from_slice(&buf[..n]);
            s.handle_input(Input::Receive { now, source, bytes })
                .expect("receive");
            s.handle_input(Input::Timeout(now)).expect("tick");
            while let Some(o) = s.poll_output() {
                match o {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => sent += t.bytes.len() as u64,
                    other => {
                        black_box(other);
                    }
                }
            }
        })
    });
    black_box(sent);
}

criterion_group!(benches, rtp, session);
criterion_main!(benches);
