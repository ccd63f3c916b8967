//! Two `MediaSession`s over an in-memory link with loss, delay and reordering, in virtual time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::codec::Codec;
use media::dtmf::Digit;
use media::rtp::{NtpTime, PayloadType, RtpHeader, RtpPacket, Ssrc};
use media::session::{
    DtmfMethod, Input, MediaEvent, MediaSession, Output, QualityReport, SessionConfig, Transmit,
};

/// An arbitrary origin for virtual time: the only clock read; everything after it is arithmetic.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

const MS: Duration = Duration::from_millis(1);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

/// A deterministic xorshift generator so runs are reproducible without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// How the link treats each datagram.
struct LinkProfile {
    loss_percent: u64,
    /// Base one-way delay.
    delay: Duration,
    /// Extra random delay up to this (reorders packets when larger than the ptime).
    jitter_ms: u64,
    /// Fixed per-packet extra delays, cycled (overrides `jitter_ms` when non-empty).
    pattern_ms: Vec<u64>,
}

impl LinkProfile {
    fn clean() -> Self {
        LinkProfile {
            loss_percent: 0,
            delay: 10 * MS,
            jitter_ms: 0,
            pattern_ms: vec![],
        }
    }
}

struct InFlight {
    at: Instant,
    order: u64,
    to_b: bool,
    source: SocketAddr,
    bytes: Bytes,
}

struct Events {
    a: Vec<MediaEvent>,
    b: Vec<MediaEvent>,
    b_records: usize,
    b_nonsilent_records: usize,
}

/// Runs A and B until `until`, delivering A→B traffic through `profile` and B→A cleanly.
/// `a_src` is the address B sees A's packets come from (a NAT can rewrite it).
#[allow(clippy::too_many_arguments)]
fn run(
    a: &mut MediaSession,
    b: &mut MediaSession,
    start: Instant,
    until: Instant,
    profile: &LinkProfile,
    a_src: SocketAddr,
    b_src: SocketAddr,
    seed: u64,
) -> Events {
    let mut rng = Rng(seed);
    let mut flight: Vec<InFlight> = Vec::new();
    let mut ev = Events {
        a: vec![],
        b: vec![],
        b_records: 0,
        b_nonsilent_records: 0,
    };
    let mut now = start;
    let mut order = 0u64;
    let mut sent_a = 0usize;
    loop {
        // Drain both sessions.
        let mut a_next = None;
        while let Some(o) = a.poll_output() {
            match o {
                Output::Transmit(Transmit { bytes, .. }) => {
                    if rng.chance(profile.loss_percent) {
                        sent_a += 1;
                        continue;
                    }
                    let extra = if !profile.pattern_ms.is_empty() {
                        profile.pattern_ms[sent_a % profile.pattern_ms.len()]
                    } else if profile.jitter_ms > 0 {
                        rng.next() % profile.jitter_ms
                    } else {
                        0
                    };
                    sent_a += 1;
                    order += 1;
                    flight.push(InFlight {
                        at: now + profile.delay + MS * extra as u32,
                        order,
                        to_b: true,
                        source: a_src,
                        bytes: Bytes::from(bytes),
                    });
                }
                Output::Event(e) => ev.a.push(e),
                Output::Record(_) => {}
                Output::Timeout(at) => {
                    a_next = Some(at);
                    break;
                }
            }
        }
        let mut b_next = None;
        while let Some(o) = b.poll_output() {
            match o {
                Output::Transmit(Transmit { bytes, .. }) => {
                    order += 1;
                    flight.push(InFlight {
                        at: now + 10 * MS,
                        order,
                        to_b: false,
                        source: b_src,
                        bytes: Bytes::from(bytes),
                    });
                }
                Output::Event(e) => ev.b.push(e),
                Output::Record(r) => {
                    ev.b_records += 1;
                    // Left channel = inbound.
                    if r.samples.chunks(2).any(|lr| lr[0].unsigned_abs() > 1000) {
                        ev.b_nonsilent_records += 1;
                    }
                }
                Output::Timeout(at) => {
                    b_next = Some(at);
                    break;
                }
            }
        }
        let next_delivery = flight.iter().map(|f| (f.at, f.order)).min();
        let mut next = [a_next, b_next, next_delivery.map(|d| d.0)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(until);
        if next > until {
            break;
        }
        next = next.max(now);
        now = next;
        if let Some((at, ord)) = next_delivery
            && at <= now
        {
            let i = flight.iter().position(|f| f.order == ord).expect("present");
            let f = flight.swap_remove(i);
            let input = Input::Receive {
                now,
                source: f.source,
                bytes: f.bytes,
            };
            if f.to_b {
                b.handle_input(input)
            } else {
                a.handle_input(input)
            }
            .expect("receive");
            continue;
        }
        if a_next.is_some_and(|t| t <= now) {
            a.handle_input(Input::Timeout(now)).expect("timeout");
        }
        if b_next.is_some_and(|t| t <= now) {
            b.handle_input(Input::Timeout(now)).expect("timeout");
        }
    }
    ev
}

const A_ADDR: &str = "10.0.0.1:4000";
const B_ADDR: &str = "10.0.0.2:5000";

fn config(ssrc: u32, remote: &str, te: bool) -> SessionConfig {
    let mut c = SessionConfig::new(Codec::Pcmu, PayloadType::PCMU, Ssrc(ssrc));
    c.remote_rtp = Some(addr(remote));
    c.remote_rtcp = Some({
        let mut r = addr(remote);
        r.set_port(r.port() + 1);
        r
    });
    c.telephone_event = if te { PayloadType::new(101) } else { None };
    c.initial_sequence = 65_500; // wraps during the tests
    c.initial_timestamp = 0xffff_f000;
    c
}

fn pair(te: bool, start: Instant) -> (MediaSession, MediaSession) {
    let mut ca = config(0xa, B_ADDR, te);
    let mut cb = config(0xb, A_ADDR, te);
    cb.record = true;
    ca.wallclock = Some((
        start,
        NtpTime::from_unix(Duration::from_secs(1_700_000_000)),
    ));
    cb.wallclock = Some((
        start,
        NtpTime::from_unix(Duration::from_secs(1_700_000_000)),
    ));
    (MediaSession::new(ca, start), MediaSession::new(cb, start))
}

fn digits(events: &[MediaEvent]) -> (String, Vec<DtmfMethod>) {
    let mut s = String::new();
    let mut m = Vec::new();
    for e in events {
        if let MediaEvent::Dtmf { digit, method, .. } = e {
            s.push(digit.as_char());
            m.push(*method);
        }
    }
    (s, m)
}

fn qualities(events: &[MediaEvent]) -> Vec<QualityReport> {
    events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Quality(q) => Some(q.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn rfc4733_dtmf_survives_ten_percent_loss() {
    let start = t0();
    let (mut a, mut b) = pair(true, start);
    a.handle_input(Input::SendDtmf(Digit::parse_str("1234567890*#").unwrap()))
        .unwrap();
    let profile = LinkProfile {
        loss_percent: 10,
        ..LinkProfile::clean()
    };
    let ev = run(
        &mut a,
        &mut b,
        start,
        start + 5000 * MS,
        &profile,
        addr(A_ADDR),
        addr(B_ADDR),
        7,
    );
    let (got, methods) = digits(&ev.b);
    assert_eq!(got, "1234567890*#");
    assert!(methods.iter().all(|m| *m == DtmfMethod::Rfc4733));
    for e in &ev.b {
        if let MediaEvent::Dtmf { duration, .. } = e {
            let d = duration.expect("RFC 4733 reports a duration");
            assert!(d >= 60 * MS && d <= 100 * MS, "{d:?}");
        }
    }
}

#[test]
fn inband_dtmf_is_sent_and_detected_without_telephone_event() {
    let start = t0();
    let (mut a, mut b) = pair(false, start);
    a.handle_input(Input::SendDtmf(Digit::parse_str("159#").unwrap()))
        .unwrap();
    let ev = run(
        &mut a,
        &mut b,
        start,
        start + 3000 * MS,
        &LinkProfile::clean(),
        addr(A_ADDR),
        addr(B_ADDR),
        1,
    );
    let (got, methods) = digits(&ev.b);
    assert_eq!(got, "159#");
    assert!(methods.iter().all(|m| *m == DtmfMethod::Inband));
}

#[test]
fn jitter_matches_rfc3550_hand_computation() {
    let start = t0();
    let (mut a, mut b) = pair(true, start);
    // Per-packet extra delays in ms, cycled. In RTP units (8 kHz) each ms is 8.
    let pattern = vec![0u64, 2, 0, 0, 1];
    let profile = LinkProfile {
        pattern_ms: pattern.clone(),
        ..LinkProfile::clean()
    };
    let n_packets = 100u64;
    // A sends one packet every 20 ms from `start`; stop just after the 100th.
    let until = start + MS * (20 * (n_packets as u32 - 1) + 10 + 3);
    run(
        &mut a,
        &mut b,
        start,
        until,
        &profile,
        addr(A_ADDR),
        addr(B_ADDR),
        3,
    );
    // Hand computation (RFC 3550 A.8): transit changes by the delay difference only, as the
    // timestamps advance exactly with the 20 ms send clock.
    let mut j = 0.0f64;
    for i in 1..n_packets as usize {
        let d = (pattern[i % 5] as f64 - pattern[(i - 1) % 5] as f64) * 8.0;
        j += (d.abs() - j) / 16.0;
    }
    let got = b.receiver_stats().jitter();
    assert!((got - j).abs() < 1e-9, "session {got} vs hand {j}");
    assert_eq!(b.receiver_stats().received(), n_packets);
    assert_eq!(b.receiver_stats().cumulative_lost(), 0);
}

#[test]
fn receiver_reports_carry_jitter_and_rtt_back_to_the_sender() {
    let start = t0();
    let (mut a, mut b) = pair(true, start);
    let profile = LinkProfile {
        pattern_ms: vec![0, 4],
        ..LinkProfile::clean()
    };
    run(
        &mut a,
        &mut b,
        start,
        start + 11_000 * MS,
        &profile,
        addr(A_ADDR),
        addr(B_ADDR),
        3,
    );
    let report = a.last_remote_report().expect("B sent an RR about A");
    // |D| alternates 32 units: J converges to 32.
    assert!((30..=32).contains(&report.jitter), "{report:?}");
    assert_eq!(report.fraction_lost, 0);
    // RTT: 10 ms each way plus 0 or 4 ms on A→B for the SR. Reported in 1/65536 s.
    let rtt = a.rtt().expect("rtt from LSR/DLSR");
    assert!(rtt >= 19 * MS && rtt <= 25 * MS, "{rtt:?}");
}

#[test]
fn mos_falls_with_loss() {
    let mut mos = Vec::new();
    for loss in [0u64, 5, 20] {
        let start = t0();
        let (mut a, mut b) = pair(true, start);
        let profile = LinkProfile {
            loss_percent: loss,
            ..LinkProfile::clean()
        };
        let ev = run(
            &mut a,
            &mut b,
            start,
            start + 10_100 * MS,
            &profile,
            addr(A_ADDR),
            addr(B_ADDR),
            11,
        );
        let q = qualities(&ev.b);
        assert_eq!(q.len(), 2, "one report per 5 s");
        let last = q.last().unwrap();
        if loss == 0 {
            assert_eq!(last.loss_percent, 0.0);
            assert_eq!(last.lost, 0);
        } else {
            assert!(last.loss_percent > loss as f64 / 2.0, "{last:?}");
            assert!(last.lost > 0);
        }
        mos.push(last.mos);
    }
    assert!(mos[0] > 4.0, "{mos:?}");
    assert!(mos[0] > mos[1] && mos[1] > mos[2], "{mos:?}");
}

#[test]
fn reordering_and_jitter_are_absorbed_by_the_playout_buffer() {
    let start = t0();
    let (mut a, mut b) = pair(true, start);
    let tone: Arc<[i16]> = (0..8000 * 3)
        .map(|i| ((i as f64 * 0.2).sin() * 8000.0) as i16)
        .collect::<Vec<_>>()
        .into();
    a.handle_input(Input::Play {
        pcm: tone,
        rate: 8000,
    })
    .unwrap();
    // Up to 60 ms of random delay: packets arrive out of order.
    let profile = LinkProfile {
        jitter_ms: 60,
        ..LinkProfile::clean()
    };
    let ev = run(
        &mut a,
        &mut b,
        start,
        start + 4000 * MS,
        &profile,
        addr(A_ADDR),
        addr(B_ADDR),
        5,
    );
    assert!(ev.a.contains(&MediaEvent::PlaybackFinished));
    let js = b.jitter_stats();
    assert!(js.played >= 190, "{js:?}");
    // After adaptation only the first packets may be late.
    assert!(js.late < 10, "{js:?}");
    assert!(
        ev.b_nonsilent_records >= 140,
        "heard {} frames of tone",
        ev.b_nonsilent_records
    );
    assert!(ev.b_records >= 199);
}

#[test]
fn symmetric_rtp_latches_to_the_first_source_and_drops_others() {
    let start = t0();
    let (mut a, mut b) = pair(true, start);
    // B was told (by SDP) A is at 10.0.0.1:4000, but A is behind a NAT: its packets come
    // from 203.0.113.5:6000.
    let nat = addr("203.0.113.5:6000");
    let ev = run(
        &mut a,
        &mut b,
        start,
        start + 200 * MS,
        &LinkProfile::clean(),
        nat,
        addr(B_ADDR),
        1,
    );
    assert!(ev.b.contains(&MediaEvent::Latched(nat)));
    assert!(ev.b.contains(&MediaEvent::FirstPacketIn { source: nat }));
    assert_eq!(b.remote_rtp(), Some(nat));
    // B now sends to the NAT address.
    let now = start + 220 * MS;
    b.handle_input(Input::Timeout(now)).unwrap();
    let mut dest = None;
    while let Some(o) = b.poll_output() {
        match o {
            Output::Transmit(t) if !t.rtcp => dest = Some(t.destination),
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert_eq!(dest, Some(nat));
    // A valid packet from elsewhere is stray.
    let p = RtpHeader::new(PayloadType::PCMU, 1, 1, Ssrc(0xa))
        .to_vec(&[0xff; 160])
        .unwrap();
    let before = b.receiver_stats().received();
    let strays = b.stats().stray_source;
    b.handle_input(Input::Receive {
        now,
        source: addr("198.51.100.9:7000"),
        bytes: p.into(),
    })
    .unwrap();
    assert_eq!(b.stats().stray_source, strays + 1);
    assert_eq!(b.receiver_stats().received(), before);
}

#[test]
fn stray_packets_are_counted_and_dropped() {
    let start = t0();
    let (_, mut b) = pair(true, start);
    let src = addr(A_ADDR);
    let rx = |b: &mut MediaSession, bytes: Vec<u8>| {
        b.handle_input(Input::Receive {
            now: start,
            source: src,
            bytes: bytes.into(),
        })
        .unwrap()
    };
    rx(&mut b, b"\x01\x02garbage".to_vec());
    rx(&mut b, vec![]);
    // PT 18 (G.729) was not negotiated.
    rx(
        &mut b,
        RtpHeader::new(PayloadType::new(18).unwrap(), 1, 1, Ssrc(1))
            .to_vec(&[0; 20])
            .unwrap(),
    );
    // Malformed RTCP (type 201 with a bad length).
    rx(&mut b, vec![0x81, 201, 0, 9, 0, 0, 0, 1]);
    let s = b.stats();
    assert_eq!(
        (s.stray_garbage, s.stray_payload_type, s.packets_received),
        (3, 1, 0)
    );
    // None of these latched the session or started a stream.
    assert_eq!(b.remote_rtp(), Some(addr(A_ADDR)));
    let mut events = vec![];
    while let Some(Output::Event(e)) = b.poll_output() {
        events.push(e);
    }
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn a_new_ssrc_is_a_new_stream() {
    let start = t0();
    let (_, mut b) = pair(true, start);
    let src = addr(A_ADDR);
    for i in 0..10u16 {
        let p = RtpHeader::new(PayloadType::PCMU, 100 + i, 160 * i as u32, Ssrc(1))
            .to_vec(&[0xff; 160])
            .unwrap();
        b.handle_input(Input::Receive {
            now: start + MS * 20 * i as u32,
            source: src,
            bytes: p.into(),
        })
        .unwrap();
    }
    assert_eq!(b.receiver_stats().received(), 10);
    // The peer restarts with a new SSRC and an unrelated sequence number.
    let p = RtpHeader::new(PayloadType::PCMU, 40_000, 0, Ssrc(2))
        .to_vec(&[0xff; 160])
        .unwrap();
    b.handle_input(Input::Receive {
        now: start + 220 * MS,
        source: src,
        bytes: p.into(),
    })
    .unwrap();
    assert_eq!(b.receiver_stats().received(), 1, "statistics restarted");
    assert_eq!(b.receiver_stats().max_seq().map(|s| s.0), Some(40_000));
    let mut events = vec![];
    loop {
        match b.poll_output() {
            Some(Output::Event(e)) => events.push(e),
            Some(Output::Timeout(_)) | None => break,
            _ => {}
        }
    }
    assert_eq!(events[0], MediaEvent::FirstPacketIn { source: src });
    assert!(events.contains(&MediaEvent::NewSsrc(Ssrc(2))));
}

#[test]
fn rtp_timeout_fires_after_the_configured_silence() {
    let start = t0();
    let mut cb = config(0xb, A_ADDR, true);
    cb.rtp_timeout = Duration::from_secs(3);
    let mut b = MediaSession::new(cb, start);
    let p = RtpHeader::new(PayloadType::PCMU, 1, 0, Ssrc(1))
        .to_vec(&[0xff; 160])
        .unwrap();
    let last_packet = start + 1000 * MS;
    b.handle_input(Input::Receive {
        now: last_packet,
        source: addr(A_ADDR),
        bytes: p.into(),
    })
    .unwrap();
    let mut fired_at = None;
    let mut now = start;
    while now < start + 10_000 * MS {
        b.handle_input(Input::Timeout(now)).unwrap();
        loop {
            match b.poll_output() {
                Some(Output::Event(MediaEvent::RtpTimeout)) => {
                    assert!(fired_at.is_none(), "fires once");
                    fired_at = Some(now);
                }
                Some(Output::Timeout(at)) => {
                    now = at;
                    break;
                }
                None => panic!("stopped"),
                _ => {}
            }
        }
    }
    assert_eq!(fired_at, Some(last_packet + Duration::from_secs(3)));
}

#[test]
fn rtcp_goes_to_port_plus_one_or_the_rtp_port_with_mux() {
    for mux in [false, true] {
        let start = t0();
        let mut c = config(0xa, B_ADDR, true);
        c.rtcp_mux = mux;
        if mux {
            c.remote_rtcp = None;
        }
        c.rtcp_interval = Duration::from_secs(5);
        let mut a = MediaSession::new(c, start);
        a.handle_input(Input::Timeout(start + 5000 * MS)).unwrap();
        let mut rtcp = vec![];
        while let Some(o) = a.poll_output() {
            match o {
                Output::Transmit(t) if t.rtcp => rtcp.push(t),
                Output::Timeout(_) => break,
                _ => {}
            }
        }
        assert_eq!(rtcp.len(), 1);
        let want = if mux {
            "10.0.0.2:5000"
        } else {
            "10.0.0.2:5001"
        };
        assert_eq!(rtcp[0].destination, addr(want));
        assert!(media::rtp::is_rtcp(&rtcp[0].bytes));
    }
}

#[test]
fn outbound_stream_is_paced_every_ptime_with_silence_when_idle() {
    let start = t0();
    let (mut a, _) = pair(true, start);
    a.handle_input(Input::Timeout(start + 1000 * MS)).unwrap();
    let mut packets = vec![];
    let mut events = vec![];
    while let Some(o) = a.poll_output() {
        match o {
            Output::Transmit(t) if !t.rtcp => {
                packets.push(RtpPacket::parse(&t.bytes.into()).unwrap())
            }
            Output::Event(e) => events.push(e),
            Output::Timeout(at) => {
                assert_eq!(at, start + 1020 * MS);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(packets.len(), 51, "ticks at 0, 20, ..., 1000 ms");
    assert!(packets[0].marker && !packets[1].marker);
    for w in packets.windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence.wrapping_add(1));
        assert_eq!(w[1].timestamp, w[0].timestamp.wrapping_add(160));
    }
    // µ-law silence.
    assert!(packets[5].payload.iter().all(|&b| b == 0xff));
    assert_eq!(events, vec![MediaEvent::FirstPacketOut]);
}

#[test]
fn stop_sends_bye_and_the_peer_reports_it() {
    let start = t0();
    let (mut a, mut b) = pair(true, start);
    run(
        &mut a,
        &mut b,
        start,
        start + 100 * MS,
        &LinkProfile::clean(),
        addr(A_ADDR),
        addr(B_ADDR),
        1,
    );
    a.handle_input(Input::Stop {
        now: start + 100 * MS,
    })
    .unwrap();
    let mut bye = None;
    while let Some(o) = a.poll_output() {
        if let Output::Transmit(t) = o {
            bye = Some(t);
        }
    }
    let bye = bye.expect("an RTCP BYE");
    assert!(bye.rtcp);
    assert!(a.poll_timeout().is_none());
    b.handle_input(Input::Receive {
        now: start + 110 * MS,
        source: addr(A_ADDR),
        bytes: bye.bytes.into(),
    })
    .unwrap();
    let mut saw = false;
    loop {
        match b.poll_output() {
            Some(Output::Event(e)) => saw |= e == MediaEvent::RemoteBye,
            Some(Output::Timeout(_)) | None => break,
            Some(_) => {}
        }
    }
    assert!(saw);
}

#[test]
fn sessions_configured_from_an_sdp_exchange_carry_audio_and_dtmf() {
    use media::sdp::{AudioCodec, Negotiator, Sdp, SdpConfig};
    let ip_a = "10.0.0.1".parse().unwrap();
    let ip_b = "10.0.0.2".parse().unwrap();
    let mut na = Negotiator::new(SdpConfig::new(ip_a, 4000, 1));
    let mut nb = Negotiator::new(SdpConfig {
        codecs: vec![AudioCodec::G722, AudioCodec::Pcma],
        ..SdpConfig::new(ip_b, 5000, 2)
    });
    let offer = na.create_offer();
    let (answer, neg_b) = nb
        .receive_offer(&Sdp::parse(&offer.to_bytes()).unwrap())
        .unwrap();
    let neg_a = na
        .receive_answer(&Sdp::parse(&answer.to_bytes()).unwrap())
        .unwrap();
    // The offerer preferred PCMU, which B lacks; PCMA comes before G.722 in A's list.
    assert_eq!(neg_a.codec, AudioCodec::Pcma);
    let start = t0();
    let mut a = MediaSession::new(SessionConfig::from_negotiated(&neg_a, Ssrc(0xa)), start);
    let mut cb = SessionConfig::from_negotiated(&neg_b, Ssrc(0xb));
    cb.record = true;
    let mut b = MediaSession::new(cb, start);
    let tone: Arc<[i16]> = (0..8000)
        .map(|i| ((i as f64 * 0.3).sin() * 8000.0) as i16)
        .collect::<Vec<_>>()
        .into();
    a.handle_input(Input::Play {
        pcm: tone,
        rate: 8000,
    })
    .unwrap();
    a.handle_input(Input::SendDtmf(Digit::parse_str("7").unwrap()))
        .unwrap();
    // rtcp-mux was negotiated: RTP and RTCP share the port.
    let ev = run(
        &mut a,
        &mut b,
        start,
        start + 1500 * MS,
        &LinkProfile::clean(),
        addr("10.0.0.1:4000"),
        addr("10.0.0.2:5000"),
        1,
    );
    assert_eq!(digits(&ev.b).0, "7");
    assert!(ev.b_nonsilent_records > 30, "{}", ev.b_nonsilent_records);
    assert_eq!(b.stats().stray_payload_type, 0);
}

#[test]
fn a_recvonly_session_sends_no_rtp() {
    let start = t0();
    let mut c = config(0xa, B_ADDR, true);
    c.send = false;
    let mut a = MediaSession::new(c, start);
    a.handle_input(Input::Timeout(start + 1000 * MS)).unwrap();
    while let Some(o) = a.poll_output() {
        match o {
            Output::Transmit(t) => assert!(t.rtcp, "RTP sent while recvonly"),
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert_eq!(a.stats().packets_sent, 0);
}

#[test]
fn huge_intervals_mean_never_rather_than_overflow() {
    let start = t0();
    let mut c = config(0xa, B_ADDR, true);
    c.rtp_timeout = Duration::MAX;
    c.rtcp_interval = Duration::MAX;
    c.quality_interval = Duration::MAX;
    let mut a = MediaSession::new(c, start);
    a.handle_input(Input::Timeout(start + 100 * MS)).unwrap();
    assert_eq!(a.poll_timeout(), Some(start + 120 * MS));
}

#[test]
fn g722_runs_at_16_khz_with_an_8_khz_rtp_clock() {
    let start = t0();
    let mk = |ssrc, remote: &str| {
        let mut c = SessionConfig::new(Codec::G722, PayloadType::G722, Ssrc(ssrc));
        c.remote_rtp = Some(addr(remote));
        c.record = true;
        c
    };
    let mut a = MediaSession::new(mk(0xa, B_ADDR), start);
    let b_cfg = mk(0xb, A_ADDR);
    let mut b = MediaSession::new(b_cfg, start);
    let tone: Arc<[i16]> = (0..16000)
        .map(|i| ((i as f64 * 0.1).sin() * 8000.0) as i16)
        .collect::<Vec<_>>()
        .into();
    a.handle_input(Input::Play {
        pcm: tone,
        rate: 16000,
    })
    .unwrap();
    a.handle_input(Input::Timeout(start + 40 * MS)).unwrap();
    let mut packets = vec![];
    while let Some(o) = a.poll_output() {
        match o {
            Output::Transmit(t) if !t.rtcp => {
                packets.push(RtpPacket::parse(&t.bytes.into()).unwrap())
            }
            Output::Record(r) => assert_eq!((r.samples.len(), r.rate), (640, 16000)),
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert_eq!(packets.len(), 3);
    assert_eq!(packets[1].timestamp.wrapping_sub(packets[0].timestamp), 160);
    assert_eq!(packets[0].payload.len(), 160, "64 kbit/s for 20 ms");
    let ev = run(
        &mut a,
        &mut b,
        start + 40 * MS,
        start + 1000 * MS,
        &LinkProfile::clean(),
        addr(A_ADDR),
        addr(B_ADDR),
        1,
    );
    assert!(ev.b_nonsilent_records > 20, "{}", ev.b_nonsilent_records);
}

// ---- latching against off-path packets (issue #9) -----------------------------------------

/// A PCMU packet.
fn pcmu(seq: u16, ssrc: u32) -> Bytes {
    RtpHeader::new(PayloadType::PCMU, seq, 160 * u32::from(seq), Ssrc(ssrc))
        .to_vec(&[0xff; 160])
        .unwrap()
        .into()
}

fn receive(s: &mut MediaSession, now: Instant, source: &str, bytes: Bytes) {
    s.handle_input(Input::Receive {
        now,
        source: addr(source),
        bytes,
    })
    .unwrap();
}

/// Every event queued now (up to the next timeout).
fn events_now(s: &mut MediaSession) -> Vec<MediaEvent> {
    let mut out = vec![];
    loop {
        match s.poll_output() {
            Some(Output::Event(e)) => out.push(e),
            Some(Output::Timeout(_)) | None => return out,
            _ => {}
        }
    }
}

const INTRUDER: &str = "10.0.0.1:4444";

#[test]
fn packets_from_an_unnamed_source_do_not_latch_before_the_peer_speaks() {
    // B's SDP says A is at A_ADDR. Before A's first packet, someone on A's host (another port)
    // sprays packets with a foreign SSRC and random sequence numbers at B's port.
    let start = t0();
    let (_, mut b) = pair(false, start);
    let mut rng = Rng(7);
    for i in 0..100u32 {
        receive(
            &mut b,
            start + MS * i,
            INTRUDER,
            pcmu(rng.next() as u16, 0xbad),
        );
    }
    assert_eq!(b.stats().packets_received, 0);
    assert_eq!(b.stats().stray_source, 100);
    assert_eq!(
        b.remote_rtp(),
        Some(addr(A_ADDR)),
        "not latched to the intruder"
    );
    assert!(events_now(&mut b).is_empty());
    // Then the peer: 50 packets in sequence, all counted, none lost.
    for i in 0..50u16 {
        receive(
            &mut b,
            start + 100 * MS + MS * 20 * u32::from(i),
            A_ADDR,
            pcmu(1000 + i, 0xa),
        );
    }
    let stats = b.stats();
    assert_eq!((stats.packets_received, stats.stray_source), (50, 100));
    assert_eq!(b.receiver_stats().received(), 50);
    assert_eq!(b.receiver_stats().cumulative_lost(), 0);
    assert_eq!(
        events_now(&mut b),
        vec![MediaEvent::FirstPacketIn {
            source: addr(A_ADDR)
        }]
    );
}

#[test]
fn the_signalled_address_displaces_a_learned_source_and_its_packets_become_strays() {
    // An intruder sends a well-formed stream first: after its probation it is learned (it
    // could have been the peer behind a NAT). Then the address the SDP named speaks: it takes
    // over, and the intruder's packets are recounted as strays.
    let start = t0();
    let (_, mut b) = pair(false, start);
    for i in 0..10u16 {
        receive(
            &mut b,
            start + MS * 20 * u32::from(i),
            INTRUDER,
            pcmu(500 + i, 0xbad),
        );
    }
    assert_eq!(
        b.remote_rtp(),
        Some(addr(INTRUDER)),
        "learned after its probation"
    );
    let learned = b.stats().packets_received;
    assert_eq!(learned, 10 - u64::from(media::session::LATCH_PROBATION) + 1);
    let t = start + 200 * MS;
    for i in 0..20u16 {
        receive(
            &mut b,
            t + MS * 20 * u32::from(i),
            A_ADDR,
            pcmu(40_000 + i, 0xa),
        );
        // The intruder keeps going: from now on it is only stray.
        receive(
            &mut b,
            t + MS * 20 * u32::from(i),
            INTRUDER,
            pcmu(510 + i, 0xbad),
        );
    }
    assert_eq!(b.remote_rtp(), Some(addr(A_ADDR)));
    let stats = b.stats();
    assert_eq!(stats.packets_received, 20, "{stats:?}");
    assert_eq!(stats.stray_source, 10 + 20, "{stats:?}");
    assert_eq!(
        stats.ssrc_changes, 0,
        "a displaced source is no SSRC change of the peer"
    );
    assert_eq!(b.receiver_stats().received(), 20);
    assert_eq!(b.receiver_stats().cumulative_lost(), 0);
    let events = events_now(&mut b);
    assert!(
        events.contains(&MediaEvent::Latched(addr(A_ADDR))),
        "{events:?}"
    );
}

#[test]
fn once_latched_a_foreign_ssrc_from_another_source_changes_nothing_but_a_new_ssrc_from_the_peer_starts_a_stream()
 {
    let start = t0();
    let (_, mut b) = pair(false, start);
    let mut seq = 100u16;
    let mut now = start;
    for round in 0..50u32 {
        receive(&mut b, now, A_ADDR, pcmu(seq, 0xa));
        seq += 1;
        // Two foreign packets per peer packet, the second one with the peer's own SSRC.
        receive(&mut b, now, INTRUDER, pcmu(round as u16 * 7, 0xbad));
        receive(&mut b, now, "192.0.2.66:4000", pcmu(seq, 0xa));
        now += 20 * MS;
    }
    let stats = b.stats();
    assert_eq!((stats.packets_received, stats.stray_source), (50, 100));
    assert_eq!(b.receiver_stats().received(), 50);
    assert_eq!(b.receiver_stats().cumulative_lost(), 0);
    assert!(
        !events_now(&mut b)
            .iter()
            .any(|e| matches!(e, MediaEvent::NewSsrc(_))),
        "no foreign SSRC became a stream"
    );
    // The peer restarts its stream under a new SSRC (RFC 3550 §8.2): a new stream.
    for i in 0..10u16 {
        receive(
            &mut b,
            now + MS * 20 * u32::from(i),
            A_ADDR,
            pcmu(7 + i, 0xa2),
        );
    }
    assert_eq!(b.stats().ssrc_changes, 1);
    assert_eq!(b.stats().packets_received, 60);
    assert_eq!(b.receiver_stats().received(), 10);
    assert!(events_now(&mut b).contains(&MediaEvent::NewSsrc(Ssrc(0xa2))));
}

#[test]
fn a_session_refresh_with_the_same_address_keeps_the_latch() {
    let start = t0();
    let (_, mut b) = pair(false, start);
    let nat = "203.0.113.5:6000";
    for i in 0..10u16 {
        receive(&mut b, start + MS * 20 * u32::from(i), nat, pcmu(i, 0xa));
    }
    assert_eq!(b.remote_rtp(), Some(addr(nat)));
    // A re-INVITE that repeats the SDP (a refresh) must not reopen latching to the intruder.
    b.set_remote(Some(addr(A_ADDR)), None);
    assert_eq!(b.remote_rtp(), Some(addr(nat)));
    let strays = b.stats().stray_source;
    for i in 0..10u16 {
        receive(
            &mut b,
            start + 200 * MS + MS * u32::from(i),
            INTRUDER,
            pcmu(300 + i, 0xbad),
        );
    }
    assert_eq!(b.stats().stray_source, strays + 10);
    assert_eq!(b.remote_rtp(), Some(addr(nat)));
}

fn rtcp_rr(ssrc: u32) -> Bytes {
    use media::rtp::{ReceiverReport, RtcpPacket};
    RtcpPacket::write_compound(&[RtcpPacket::ReceiverReport(ReceiverReport {
        ssrc: Ssrc(ssrc),
        reports: vec![],
    })])
    .unwrap()
    .into()
}

/// Steps `s` through its timeouts until `until`; the instants RtpTimeout fired at.
fn timeouts_until(s: &mut MediaSession, from: Instant, until: Instant) -> Vec<Instant> {
    let mut fired = vec![];
    let mut now = from;
    while now < until {
        s.handle_input(Input::Timeout(now)).unwrap();
        loop {
            match s.poll_output() {
                Some(Output::Event(MediaEvent::RtpTimeout)) => fired.push(now),
                Some(Output::Timeout(at)) => {
                    now = at;
                    break;
                }
                None => return fired,
                _ => {}
            }
        }
    }
    fired
}

#[test]
fn rtcp_from_the_peer_counts_as_life_and_rtcp_from_elsewhere_does_not() {
    let start = t0();
    let mut c = config(0xb, A_ADDR, false);
    c.rtp_timeout = Duration::from_secs(3);
    let mut b = MediaSession::new(c, start);
    receive(&mut b, start, A_ADDR, pcmu(1, 0xa));
    // The peer's RTCP (its RTP port + 1) at 2 s: the silence is counted from there.
    receive(&mut b, start + 2000 * MS, "10.0.0.1:4001", rtcp_rr(0xa));
    // An intruder's RTCP at 4 s, from another host, then from another port of the peer's host
    // once RTCP latched: neither is the peer.
    receive(&mut b, start + 4000 * MS, "192.0.2.66:4001", rtcp_rr(0xa));
    receive(&mut b, start + 4000 * MS, INTRUDER, rtcp_rr(0xa));
    assert_eq!(b.stats().rtcp_received, 1);
    assert_eq!(b.stats().stray_source, 2);
    let fired = timeouts_until(&mut b, start, start + 10_000 * MS);
    assert_eq!(fired, vec![start + 5000 * MS]);
}

#[test]
fn the_rtp_timeout_is_suspended_while_the_peer_holds_us() {
    let start = t0();
    let mut c = config(0xb, A_ADDR, false);
    c.rtp_timeout = Duration::from_secs(3);
    let mut b = MediaSession::new(c, start);
    receive(&mut b, start, A_ADDR, pcmu(1, 0xa));
    // At 1 s the peer puts us on hold (a=inactive): no RTP expected, nothing sent.
    let hold = start + 1000 * MS;
    b.set_direction(false, false, hold);
    let fired = timeouts_until(&mut b, start, start + 60_000 * MS);
    assert!(fired.is_empty(), "no timeout on hold: {fired:?}");
    // Resumed at 60 s: the silence counts from the resume.
    let resume = start + 60_000 * MS;
    b.set_direction(true, true, resume);
    let fired = timeouts_until(&mut b, resume, resume + 10_000 * MS);
    assert_eq!(fired, vec![resume + 3000 * MS]);
}

#[test]
fn a_session_from_an_sdp_on_hold_expects_no_rtp() {
    use media::sdp::{Negotiator, Sdp, SdpConfig};
    let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                 m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";
    let mut n = Negotiator::new(SdpConfig::new(addr(B_ADDR).ip(), 5000, 1));
    let (_, neg) = n
        .receive_offer(&Sdp::parse(offer.as_bytes()).unwrap())
        .unwrap();
    let c = SessionConfig::from_negotiated(&neg, Ssrc(0xb));
    assert!(!c.expect_inbound, "a sendonly offerer holds us");
    let mut c = c;
    c.rtp_timeout = Duration::from_secs(3);
    let start = t0();
    let mut b = MediaSession::new(c, start);
    assert!(timeouts_until(&mut b, start, start + 20_000 * MS).is_empty());
}

fn pcmu_filled(seq: u16, ssrc: u32, byte: u8) -> Bytes {
    RtpHeader::new(PayloadType::PCMU, seq, 160 * u32::from(seq), Ssrc(ssrc))
        .to_vec(&[byte; 160])
        .unwrap()
        .into()
}

#[test]
fn duplicates_and_reordered_packets_are_counted_apart() {
    let start = t0();
    let (_, mut b) = pair(false, start);
    // 1000..1040 in order, except: 1011 before 1010 (one reordered), 1020 twice more and
    // 1025 once more (three duplicates).
    let mut order: Vec<u16> = (1000..1040).collect();
    order.swap(10, 11);
    order.insert(21, 1020);
    order.insert(22, 1020);
    order.push(1025);
    for (i, seq) in order.into_iter().enumerate() {
        receive(&mut b, start + MS * 20 * i as u32, A_ADDR, pcmu(seq, 0xa));
    }
    let stats = b.stats();
    assert_eq!((stats.reordered, stats.duplicates), (1, 3));
    assert_eq!(stats.packets_received, 43);
    // Then 1040 is lost and 1041 arrives: RFC 3550's count (received includes duplicates)
    // says -2 lost; the call's quality report counts each packet once and says 1.
    receive(&mut b, start + MS * 20 * 44, A_ADDR, pcmu(1041, 0xa));
    assert_eq!(b.receiver_stats().cumulative_lost(), -2);
    b.handle_input(Input::Stop {
        now: start + MS * 20 * 45,
    })
    .unwrap();
    let call = qualities(&events_now(&mut b))
        .into_iter()
        .find(|q| q.scope == media::session::QualityScope::Call)
        .expect("the call's report");
    assert_eq!((call.expected, call.received, call.lost), (42, 41, 1));
}

#[test]
fn voiced_ticks_count_audio_above_the_threshold_and_not_silence() {
    for (byte, voiced) in [(0xffu8, false), (0x80u8, true)] {
        let start = t0();
        let (_, mut b) = pair(false, start);
        for i in 0..50u16 {
            let at = start + MS * 20 * u32::from(i);
            receive(&mut b, at, A_ADDR, pcmu_filled(1000 + i, 0xa, byte));
            timeouts_until(&mut b, at, at + MS * 20);
        }
        let stats = b.stats();
        assert!(stats.played_ms >= 800, "{stats:?}");
        if voiced {
            assert!(stats.voiced_ms >= 800, "{stats:?}");
        } else {
            assert_eq!(stats.voiced_ms, 0, "{stats:?}");
        }
    }
}

/// Steps `s` through its deadlines from `from` to `until`; the voice events, with when.
fn voice_until(s: &mut MediaSession, from: Instant, until: Instant) -> Vec<(Instant, bool)> {
    let mut heard = vec![];
    let mut now = from;
    while now < until {
        s.handle_input(Input::Timeout(now)).unwrap();
        loop {
            match s.poll_output() {
                Some(Output::Event(MediaEvent::Voice { active })) => heard.push((now, active)),
                Some(Output::Timeout(at)) => {
                    now = at.max(now + Duration::from_micros(1));
                    break;
                }
                None => return heard,
                _ => {}
            }
        }
    }
    heard
}

#[test]
fn voice_events_say_when_the_peers_audio_starts_and_ends_and_only_while_asked() {
    // 1 s of audio, 1 s of silence, 0.2 s of audio, 1 s of silence (PCMU 0x80 is loud, 0xff
    // is silence). Detection on from the start, from within the first silence, or never.
    let plan: Vec<u8> = [(0x80u8, 50), (0xff, 50), (0x80, 10), (0xff, 50)]
        .iter()
        .flat_map(|&(byte, n)| std::iter::repeat_n(byte, n))
        .collect();
    let hang = media::session::VOICE_HANGOVER_MS;
    for (detect_from, want) in [
        (Some(0), vec![true, false, true, false]),
        (Some(70), vec![true, false]),
        (None, vec![]),
    ] {
        let start = t0();
        let (_, mut b) = pair(false, start);
        let mut heard = vec![];
        for (i, byte) in plan.iter().enumerate() {
            if Some(i) == detect_from {
                b.handle_input(Input::DetectVoice(true)).unwrap();
            }
            let at = start + MS * 20 * i as u32;
            receive(&mut b, at, A_ADDR, pcmu_filled(1000 + i as u16, 0xa, *byte));
            heard.extend(voice_until(&mut b, at, at + MS * 20));
        }
        let flips: Vec<bool> = heard.iter().map(|&(_, a)| a).collect();
        assert_eq!(flips, want, "{detect_from:?}: {heard:?}");
        // Each end comes on the tick that completes VOICE_HANGOVER_MS of quiet: the audio's
        // length less its last tick, plus the hangover (and at most two ticks of playout
        // jitter); the playout delays both edges alike.
        let spans: Vec<u64> = heard
            .chunks(2)
            .map(|p| p[1].0.duration_since(p[0].0).as_millis() as u64)
            .collect();
        let audio: &[u64] = if detect_from == Some(0) {
            &[1000, 200]
        } else if detect_from.is_some() {
            &[200]
        } else {
            &[]
        };
        assert_eq!(spans.len(), audio.len());
        for (span, ms) in spans.iter().zip(audio) {
            assert!(
                (ms + hang - 20..=ms + hang + 40).contains(span),
                "{span} ms for {ms} ms of audio"
            );
        }
    }
}

#[test]
fn echo_sends_the_peers_own_audio_back_in_order_and_only_while_on() {
    for echo in [true, false] {
        let start = t0();
        let (_, mut b) = pair(false, start);
        if echo {
            b.handle_input(Input::Echo(true)).unwrap();
        }
        // 60 packets, each filled with its own PCMU code (none of them zero: 0x7f, 0xff).
        let fill = |i: usize| 0x20 + (i % 0x50) as u8;
        let mut sent = vec![];
        for i in 0..60usize {
            let at = start + MS * 20 * i as u32;
            receive(
                &mut b,
                at,
                A_ADDR,
                pcmu_filled(1000 + i as u16, 0xa, fill(i)),
            );
            let mut now = at;
            while now < at + MS * 20 {
                b.handle_input(Input::Timeout(now)).unwrap();
                loop {
                    match b.poll_output() {
                        Some(Output::Transmit(t)) if !t.rtcp => {
                            let packet = RtpPacket::parse(&t.bytes.into()).unwrap();
                            sent.push(packet.payload.to_vec());
                        }
                        Some(Output::Timeout(next)) => {
                            now = next.max(now + Duration::from_micros(1));
                            break;
                        }
                        None => {
                            now = at + MS * 20;
                            break;
                        }
                        _ => {}
                    }
                }
            }
        }
        // Whole packets of one code each: what went back, in order, without repeats.
        let codes: Vec<u8> = sent
            .iter()
            .filter(|p| p.iter().all(|&x| x == p[0]) && p[0] != 0xff && p[0] != 0x7f)
            .map(|p| p[0])
            .collect();
        if echo {
            let want: Vec<u8> = (0..60).map(fill).collect();
            let first = want
                .iter()
                .position(|&c| Some(&c) == codes.first())
                .expect("the echo starts with one of ours");
            assert!(codes.len() >= 50, "{} packets echoed", codes.len());
            assert_eq!(
                codes,
                want[first..first + codes.len()],
                "in order, each once"
            );
        } else {
            assert!(codes.is_empty(), "silence only without echo: {codes:?}");
        }
    }
}
