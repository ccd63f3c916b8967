//! RTP/RTCP wire format, sequence extension and RFC 3550 receiver statistics.

use std::time::{Duration, Instant};

use bytes::Bytes;
use media::rtp::seq::{MIN_SEQUENTIAL, SeqUpdate, SequenceTracker};
use media::rtp::{
    Bye, NtpTime, PayloadType, ReceiverReport, ReceiverStats, RtcpPacket, RtpError, RtpHeader,
    RtpPacket, Sdes, SdesChunk, SenderReport, SeqNo, Ssrc, round_trip_time,
};

/// An arbitrary origin for virtual time: the only clock read; everything after it is arithmetic.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

#[test]
fn rtp_parse_reads_every_header_field() {
    // V=2 P=0 X=1 CC=2, M=1 PT=8, seq 0x1234, ts 0xdeadbeef, ssrc 0x01020304,
    // CSRCs 5, 6, extension 0xBEDE with one word, payload "abc".
    let mut v = vec![0x92, 0x88, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4];
    v.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 6]);
    v.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
    v.extend_from_slice(b"abc");
    let p = RtpPacket::parse(&Bytes::from(v.clone())).unwrap();
    assert!(p.marker);
    assert_eq!(p.payload_type, PayloadType::PCMA);
    assert_eq!(p.sequence, 0x1234);
    assert_eq!(p.timestamp, 0xdeadbeef);
    assert_eq!(p.ssrc, Ssrc(0x01020304));
    assert_eq!(p.csrcs(), &[5, 6]);
    let ext = p.extension.as_ref().unwrap();
    assert_eq!(ext.profile, 0xbede);
    assert_eq!(&ext.data[..], &[0x10, 0xaa, 0, 0]);
    assert_eq!(&p.payload[..], b"abc");
    // Serializing the parsed header and payload gives back the same bytes.
    assert_eq!(p.header().to_vec(&p.payload).unwrap(), v);
}

#[test]
fn rtp_payload_is_a_zero_copy_slice_of_the_datagram() {
    let v = RtpHeader::new(PayloadType::PCMU, 1, 160, Ssrc(9))
        .to_vec(&[7u8; 160])
        .unwrap();
    let datagram = Bytes::from(v);
    let p = RtpPacket::parse(&datagram).unwrap();
    assert_eq!(p.payload.as_ptr(), datagram[12..].as_ptr());
}

#[test]
fn rtp_padding_is_stripped() {
    let mut v = RtpHeader::new(PayloadType::PCMU, 1, 2, Ssrc(3))
        .to_vec(b"hello")
        .unwrap();
    v[0] |= 0x20;
    v.extend_from_slice(&[0, 0, 3]);
    let p = RtpPacket::parse(&Bytes::from(v)).unwrap();
    assert_eq!(&p.payload[..], b"hello");
    assert_eq!(p.padding, 3);
}

#[test]
fn rtp_rejects_bad_version_and_truncation() {
    assert_eq!(
        RtpPacket::parse(&Bytes::from_static(&[0x40; 12])),
        Err(RtpError::BadVersion(1))
    );
    assert!(matches!(
        RtpPacket::parse(&Bytes::from_static(&[0x80, 0, 0])),
        Err(RtpError::Truncated { .. })
    ));
    // CC = 3 but no CSRCs present.
    let mut v = RtpHeader::new(PayloadType::PCMU, 1, 2, Ssrc(3))
        .to_vec(&[])
        .unwrap();
    v[0] |= 3;
    assert!(matches!(
        RtpPacket::parse(&Bytes::from(v)),
        Err(RtpError::Truncated { .. })
    ));
    // Padding count larger than the payload.
    let mut v = RtpHeader::new(PayloadType::PCMU, 1, 2, Ssrc(3))
        .to_vec(&[1, 9])
        .unwrap();
    v[0] |= 0x20;
    assert_eq!(RtpPacket::parse(&Bytes::from(v)), Err(RtpError::BadPadding));
}

#[test]
fn rtp_write_refuses_a_short_buffer() {
    let mut buf = [0u8; 20];
    let h = RtpHeader::new(PayloadType::PCMU, 1, 2, Ssrc(3));
    assert_eq!(
        h.write(&[0u8; 160], &mut buf),
        Err(RtpError::BufferTooSmall {
            need: 172,
            have: 20
        })
    );
}

#[test]
fn sequence_extension_counts_wraparound() {
    let mut t = SequenceTracker::new(65534, 0);
    assert_eq!(t.update(65534), SeqUpdate::InOrder(SeqNo(65534)));
    assert_eq!(t.update(65535), SeqUpdate::InOrder(SeqNo(65535)));
    assert_eq!(t.update(0), SeqUpdate::InOrder(SeqNo(65536)));
    assert_eq!(t.update(1), SeqUpdate::InOrder(SeqNo(65537)));
    // A packet from before the wrap arriving late maps below the wrap.
    assert_eq!(t.update(65535), SeqUpdate::Late(SeqNo(65535)));
    assert_eq!(t.expected(), 4);
    assert_eq!(t.received(), 5);
}

#[test]
fn sequence_probation_requires_min_sequential_packets() {
    let mut t = SequenceTracker::new(100, MIN_SEQUENTIAL);
    assert_eq!(t.update(100), SeqUpdate::Probation);
    assert!(!t.is_valid());
    assert_eq!(t.update(101), SeqUpdate::InOrder(SeqNo(101)));
    assert!(t.is_valid());
    // An out-of-sequence packet during probation restarts the probation.
    let mut t = SequenceTracker::new(100, MIN_SEQUENTIAL);
    assert_eq!(t.update(100), SeqUpdate::Probation);
    assert_eq!(t.update(500), SeqUpdate::Probation);
    assert_eq!(t.update(501), SeqUpdate::InOrder(SeqNo(501)));
}

#[test]
fn sequence_large_jump_is_a_restart_only_when_confirmed() {
    let mut t = SequenceTracker::new(10, 0);
    for s in 10..20 {
        assert!(matches!(t.update(s), SeqUpdate::InOrder(_)));
    }
    // A jump beyond MAX_DROPOUT: dropped...
    assert_eq!(t.update(40_000), SeqUpdate::BadJump);
    // ...then a normal packet continues the old numbering.
    assert_eq!(t.update(20), SeqUpdate::InOrder(SeqNo(20)));
    // A jump followed by its successor is a restarted sender.
    assert_eq!(t.update(50_000), SeqUpdate::BadJump);
    assert_eq!(t.update(50_001), SeqUpdate::Restarted(SeqNo(50_001)));
    assert_eq!(t.expected(), 1);
}

#[test]
fn stats_count_loss_and_reordering() {
    let t0 = t0();
    let mut s = ReceiverStats::new(8000, 0);
    // 1..=10 with 4 and 5 lost, 8 and 7 swapped, 9 duplicated.
    for (i, seq) in [1u16, 2, 3, 6, 8, 7, 9, 9, 10].iter().enumerate() {
        let at = t0 + Duration::from_millis(20 * i as u64);
        s.on_packet(*seq, *seq as u32 * 160, at);
    }
    assert_eq!(s.expected(), 10);
    assert_eq!(s.received(), 9);
    // Duplicates count as received (RFC 3550 A.3), so 2 lost - 1 duplicate.
    assert_eq!(s.cumulative_lost(), 1);
    assert_eq!(s.max_burst_loss(), 2);
    let block = s.report_block(Ssrc(1), t0);
    assert_eq!(block.highest_seq, 10);
    assert_eq!(block.cumulative_lost, 1);
    // Interval: expected 10, received 9 → lost 1 → 256/10 = 25.
    assert_eq!(block.fraction_lost, 25);
    // Next interval: 11..=20 with 3 lost.
    for seq in 11u16..=20 {
        if [12, 15, 16].contains(&seq) {
            continue;
        }
        s.on_packet(
            seq,
            seq as u32 * 160,
            t0 + Duration::from_millis(20 * seq as u64),
        );
    }
    let block = s.report_block(Ssrc(1), t0);
    assert_eq!(block.fraction_lost, 76); // (3 << 8) / 10
    assert_eq!(block.cumulative_lost, 4);
}

#[test]
fn stats_jitter_matches_hand_computed_rfc3550_a8() {
    // 8 kHz clock, packets every 160 timestamp units (20 ms). Arrival offsets from the nominal
    // 20 ms grid, in ms: 0, 2, 0, 0, 1. In RTP units: 0, 16, 0, 0, 8.
    // Transit differences D: 16, -16, 0, 8 → |D| = 16, 16, 0, 8.
    // J1 = 0 + (16 - 0)/16 = 1
    // J2 = 1 + (16 - 1)/16 = 1.9375
    // J3 = 1.9375 + (0 - 1.9375)/16 = 1.81640625
    // J4 = 1.81640625 + (8 - 1.81640625)/16 = 2.2028808...
    let t0 = t0();
    let offsets_ms = [0u64, 2, 0, 0, 1];
    let mut s = ReceiverStats::new(8000, 0);
    for (i, off) in offsets_ms.iter().enumerate() {
        let at = t0 + Duration::from_millis(20 * i as u64 + off);
        s.on_packet(1000 + i as u16, 5000 + 160 * i as u32, at);
    }
    let mut j = 0.0f64;
    for d in [16.0, 16.0, 0.0, 8.0] {
        j += (d - j) / 16.0;
    }
    assert_eq!(j, 2.202880859375);
    assert_eq!(s.jitter(), j);
    assert_eq!(s.report_block(Ssrc(7), t0).jitter, 2);
}

fn block(ssrc: u32) -> media::rtp::ReportBlock {
    media::rtp::ReportBlock {
        ssrc: Ssrc(ssrc),
        fraction_lost: 25,
        cumulative_lost: -3,
        highest_seq: 0x0001_0005,
        jitter: 42,
        lsr: 0x1234_5678,
        dlsr: 0x0001_8000,
    }
}

#[test]
fn rtcp_compound_round_trips() {
    let packets = vec![
        RtcpPacket::SenderReport(SenderReport {
            ssrc: Ssrc(0xaabbccdd),
            ntp: NtpTime(0xe000_0000_8000_0000),
            rtp_timestamp: 160_000,
            packet_count: 1000,
            octet_count: 160_000,
            reports: vec![block(1), block(2)],
        }),
        RtcpPacket::Sdes(Sdes {
            chunks: vec![SdesChunk::cname(Ssrc(0xaabbccdd), "callplane@host")],
        }),
        RtcpPacket::Bye(Bye {
            ssrcs: vec![Ssrc(0xaabbccdd)],
            reason: Some(Bytes::from_static(b"hangup")),
        }),
    ];
    let wire = RtcpPacket::write_compound(&packets).unwrap();
    assert_eq!(wire.len() % 4, 0);
    let parsed = RtcpPacket::parse_compound(&Bytes::from(wire)).unwrap();
    assert_eq!(parsed, packets);
    let RtcpPacket::Sdes(sdes) = &parsed[1] else {
        panic!("expected SDES")
    };
    assert_eq!(sdes.chunks[0].get_cname(), Some(&b"callplane@host"[..]));

    let rr = vec![RtcpPacket::ReceiverReport(ReceiverReport {
        ssrc: Ssrc(5),
        reports: vec![block(9)],
    })];
    let wire = RtcpPacket::write_compound(&rr).unwrap();
    assert_eq!(wire.len(), 8 + 24);
    assert_eq!(RtcpPacket::parse_compound(&Bytes::from(wire)).unwrap(), rr);
}

#[test]
fn rtcp_rejects_invalid_compounds() {
    // First packet is a BYE: RFC 3550 A.2 says the first must be SR or RR.
    let bye = RtcpPacket::write_compound(&[RtcpPacket::Bye(Bye {
        ssrcs: vec![Ssrc(1)],
        reason: None,
    })])
    .unwrap();
    assert!(matches!(
        RtcpPacket::parse_compound(&Bytes::from(bye)),
        Err(RtpError::BadCompound(_))
    ));
    // Length field claims more than the datagram holds.
    let mut rr = RtcpPacket::write_compound(&[RtcpPacket::ReceiverReport(ReceiverReport {
        ssrc: Ssrc(5),
        reports: vec![],
    })])
    .unwrap();
    rr[3] = 9;
    assert!(matches!(
        RtcpPacket::parse_compound(&Bytes::from(rr)),
        Err(RtpError::Truncated { .. })
    ));
}

#[test]
fn rtt_from_sender_report_to_receiver_report_with_known_delays() {
    // We send an SR at wall-clock T; it takes 30 ms to reach the peer, the peer holds it for
    // 250 ms (DLSR) before sending its RR, which takes 40 ms back. RTT = 70 ms.
    let t0 = t0();
    let wall = Duration::from_secs(1_700_000_000);
    let sr_ntp = NtpTime::from_unix(wall);
    let sr = RtcpPacket::SenderReport(SenderReport {
        ssrc: Ssrc(0x1111),
        ntp: sr_ntp,
        rtp_timestamp: 0,
        packet_count: 1,
        octet_count: 160,
        reports: vec![],
    });
    let wire = Bytes::from(RtcpPacket::write_compound(&[sr]).unwrap());
    // Peer side: receive the SR 30 ms later (its monotonic clock), answer 250 ms after that.
    let mut peer = ReceiverStats::new(8000, 0);
    peer.on_packet(1, 0, t0);
    let RtcpPacket::SenderReport(got) = &RtcpPacket::parse_compound(&wire).unwrap()[0] else {
        panic!("expected SR")
    };
    peer.on_sender_report(got.ntp, t0 + Duration::from_millis(30));
    let rb = peer.report_block(Ssrc(0x1111), t0 + Duration::from_millis(280));
    assert_eq!(rb.lsr, sr_ntp.middle32());
    let rr = RtcpPacket::ReceiverReport(ReceiverReport {
        ssrc: Ssrc(0x2222),
        reports: vec![rb],
    });
    let wire = Bytes::from(RtcpPacket::write_compound(&[rr]).unwrap());
    let RtcpPacket::ReceiverReport(back) = &RtcpPacket::parse_compound(&wire).unwrap()[0] else {
        panic!("expected RR")
    };
    // The RR reaches us 30 + 250 + 40 ms after the SR left.
    let arrival = NtpTime::from_unix(wall + Duration::from_millis(320));
    let rtt = round_trip_time(arrival, &back.reports[0]).unwrap();
    // 16.16 fixed point: accurate to 1/65536 s per term.
    let err = rtt.as_secs_f64() - 0.070;
    assert!(err.abs() < 3.0 / 65536.0, "rtt {rtt:?}");
    // No SR received yet → no RTT.
    let mut fresh = ReceiverStats::new(8000, 0);
    assert_eq!(
        round_trip_time(arrival, &fresh.report_block(Ssrc(1), t0)),
        None
    );
}

mod roundtrip {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn rtp_write_then_parse_is_identity(
            marker: bool,
            pt in 0u8..128,
            seq: u16,
            ts: u32,
            ssrc: u32,
            csrcs in proptest::collection::vec(any::<u32>(), 0..16),
            ext in proptest::option::of((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..4usize).prop_map(|v| v.repeat(4)))),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut h = RtpHeader::new(PayloadType::new(pt).unwrap(), seq, ts, Ssrc(ssrc));
            h.marker = marker;
            h.csrcs = &csrcs[..csrcs.len().min(15)];
            h.extension = ext.as_ref().map(|(p, d)| (*p, &d[..]));
            let wire = h.to_vec(&payload).unwrap();
            let p = RtpPacket::parse(&Bytes::from(wire)).unwrap();
            prop_assert_eq!(p.header(), h);
            prop_assert_eq!(&p.payload[..], &payload[..]);
        }

        #[test]
        fn rtcp_receiver_report_round_trips(
            ssrc: u32,
            blocks in proptest::collection::vec(
                (any::<u32>(), any::<u8>(), -0x80_0000i32..0x80_0000, any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
                0..32,
            ),
            cname in "[a-z0-9@.]{1,40}",
        ) {
            let reports = blocks
                .iter()
                .map(|&(s, f, l, h, j, lsr, dlsr)| media::rtp::ReportBlock {
                    ssrc: Ssrc(s),
                    fraction_lost: f,
                    cumulative_lost: l,
                    highest_seq: h,
                    jitter: j,
                    lsr,
                    dlsr,
                })
                .collect();
            let packets = vec![
                RtcpPacket::ReceiverReport(ReceiverReport { ssrc: Ssrc(ssrc), reports }),
                RtcpPacket::Sdes(Sdes { chunks: vec![SdesChunk::cname(Ssrc(ssrc), &cname)] }),
            ];
            let wire = RtcpPacket::write_compound(&packets);
            if blocks.len() > 31 {
                prop_assert!(wire.is_err());
            } else {
                let parsed = RtcpPacket::parse_compound(&Bytes::from(wire.unwrap())).unwrap();
                prop_assert_eq!(parsed, packets);
            }
        }

        #[test]
        fn rtp_parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = RtpPacket::parse(&Bytes::from(data.clone()));
            let _ = RtcpPacket::parse_compound(&Bytes::from(data));
        }
    }
}
