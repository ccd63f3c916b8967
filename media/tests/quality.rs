//! E-model (ITU-T G.107) tests.

use media::codec::Codec;
use media::quality::{EModel, LossTracker, burst_ratio, mos_from_r};

#[test]
fn default_parameters_give_r_93_2_and_mos_4_41() {
    // G.107 §7.7: the default values give R = 93.2; Annex B maps that to MOS 4.41.
    let m = EModel::default();
    let r = m.r_factor();
    assert!((r - 93.2).abs() < 0.05, "R = {r}");
    let mos = m.mos();
    assert!((mos - 4.41).abs() < 0.005, "MOS = {mos}");
    assert_eq!(EModel::for_codec(Codec::Pcmu, false), m);
}

#[test]
fn mos_mapping_follows_annex_b() {
    assert_eq!(mos_from_r(-5.0), 1.0);
    assert_eq!(mos_from_r(0.0), 1.0);
    assert_eq!(mos_from_r(100.0), 4.5);
    assert_eq!(mos_from_r(120.0), 4.5);
    let r: f64 = 80.0;
    let expect = 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6;
    assert!((mos_from_r(r) - expect).abs() < 1e-12);
    assert!((mos_from_r(50.0) - 2.58).abs() < 0.01);
}

#[test]
fn mos_strictly_decreases_with_packet_loss() {
    for plc in [false, true] {
        let mut last = f64::MAX;
        for ppl in [0.0, 1.0, 2.0, 5.0, 10.0, 20.0] {
            let mos = EModel::for_codec(Codec::Pcmu, plc)
                .with_loss(ppl, 1.0)
                .mos();
            assert!(
                mos < last,
                "plc {plc}: MOS {mos} at {ppl}% not below {last}"
            );
            last = mos;
        }
    }
}

#[test]
fn plc_makes_loss_hurt_less() {
    let without = EModel::for_codec(Codec::Pcma, false)
        .with_loss(2.0, 1.0)
        .r_factor();
    let with = EModel::for_codec(Codec::Pcma, true)
        .with_loss(2.0, 1.0)
        .r_factor();
    assert!(with > without + 10.0, "with PLC {with}, without {without}");
    // G.113 values: 2 % random loss with PLC gives Ie,eff = 95·2/(2+25.1) ≈ 7.0.
    let base = EModel::default().r_factor();
    assert!((base - with - 95.0 * 2.0 / 27.1).abs() < 1e-9);
}

#[test]
fn bursty_loss_lowers_mos() {
    let random = EModel::for_codec(Codec::Pcmu, true)
        .with_loss(5.0, 1.0)
        .mos();
    let bursty = EModel::for_codec(Codec::Pcmu, true)
        .with_loss(5.0, 2.5)
        .mos();
    assert!(bursty < random, "bursty {bursty} vs random {random}");
}

#[test]
fn one_way_delay_above_about_177ms_lowers_r() {
    let base = EModel::default();
    let r = |d: f64| base.with_one_way_delay(d).r_factor();
    // Below the knee only the (well-cancelled, TELR 65 dB) echo terms cost a little.
    assert!(r(0.0) - r(100.0) < 3.0, "R at 100 ms: {}", r(100.0));
    let mut last = r(100.0);
    for d in [150.0, 177.3, 200.0, 300.0, 400.0] {
        assert!(r(d) < last, "R {} at {d} ms not below {last}", r(d));
        last = r(d);
    }
    // Above ~177 ms the absolute-delay term Idd dominates: R falls several times faster per
    // millisecond than below it (Cole & Rosenbluth's 0.024 vs 0.134 per ms).
    let slope_below = (r(100.0) - r(150.0)) / 50.0;
    let slope_above = (r(200.0) - r(300.0)) / 100.0;
    assert!(
        slope_above > 3.0 * slope_below,
        "{slope_below} vs {slope_above}"
    );
    assert!(
        r(0.0) - r(300.0) > 15.0,
        "300 ms costs {}",
        r(0.0) - r(300.0)
    );
    // With only the absolute delay (echo paths left at 0 ms), nothing is lost up to 100 ms.
    let mut ta_only = base;
    ta_only.ta = 100.0;
    assert_eq!(ta_only.r_factor(), base.r_factor());
}

#[test]
fn burst_ratio_from_mean_burst_length() {
    // Random loss at 10 %: expected burst length 1/(1 − 0.1) gives BurstR 1.
    assert!((burst_ratio(10.0, 1.0 / 0.9) - 1.0).abs() < 1e-12);
    assert!((burst_ratio(10.0, 3.0) - 2.7).abs() < 1e-12);
    assert_eq!(burst_ratio(0.0, 0.0), 1.0);
}

#[test]
fn loss_tracker_counts_loss_and_bursts() {
    let mut t = LossTracker::new();
    // 20 slots: bursts of 3 and 1 lost.
    for i in 0..20 {
        t.observe(matches!(i, 5..=7 | 15));
    }
    assert!((t.loss_percent() - 20.0).abs() < 1e-12);
    assert!((t.mean_burst_len() - 2.0).abs() < 1e-12);
    assert!((t.burst_ratio() - 1.6).abs() < 1e-12);
    t.observe_lost(4);
    assert!((t.mean_burst_len() - 8.0 / 3.0).abs() < 1e-12);
    let m = t.emodel(Codec::Pcmu, true, 50.0);
    assert!(m.mos() < EModel::default().mos());
}

// ---------------------------------------------------------------------------------------------
// The session's figures, driven with synthetic RTP at synthetic times (sans-IO, virtual time).
// ---------------------------------------------------------------------------------------------

mod figures {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use media::codec::Codec;
    use media::quality::EModel;
    use media::rtp::{PayloadType, ReceiverReport, ReportBlock, RtcpPacket, RtpHeader, Ssrc};
    use media::session::{
        Input, MediaEvent, MediaSession, Output, QualityReport, QualityScope, RemoteQuality,
        SessionConfig,
    };

    /// An arbitrary origin for virtual time: the only clock read.
    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    const MS: Duration = Duration::from_millis(1);
    const PEER: &str = "10.0.0.1:4000";
    const PEER_SSRC: u32 = 0xa11ce;
    const OUR_SSRC: u32 = 0xb0b;

    fn peer() -> SocketAddr {
        PEER.parse().expect("literal")
    }

    /// A deterministic xorshift generator (no dependency).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// One synthetic sender: packet `i` carries sequence `seq0 + i` and timestamp
    /// `i × ptime × 8`, leaves at `first + i × ptime × (1 + drift)`.
    struct Sender {
        ptime_ms: u32,
        drift: f64,
        first: Duration,
        seq0: u16,
    }

    impl Sender {
        fn new(ptime_ms: u32) -> Sender {
            Sender {
                ptime_ms,
                drift: 0.0,
                first: 700 * MS,
                seq0: 65_000, // wraps during every test
            }
        }
        fn send_time(&self, i: u64) -> Duration {
            self.first
                + Duration::from_secs_f64(
                    i as f64 * self.ptime_ms as f64 / 1000.0 * (1.0 + self.drift),
                )
        }
        fn packet(&self, i: u64) -> Bytes {
            let samples = (self.ptime_ms * 8) as usize;
            RtpHeader::new(
                PayloadType::PCMU,
                self.seq0.wrapping_add(i as u16),
                (i as u32).wrapping_mul(samples as u32),
                Ssrc(PEER_SSRC),
            )
            .to_vec(&vec![0x55; samples])
            .expect("packet")
            .into()
        }
    }

    struct Run {
        session: MediaSession,
        events: Vec<MediaEvent>,
        now: Instant,
    }

    impl Run {
        fn new(start: Instant) -> Run {
            let mut c = SessionConfig::new(Codec::Pcmu, PayloadType::PCMU, Ssrc(OUR_SSRC));
            c.remote_rtp = Some(peer());
            Run {
                session: MediaSession::new(c, start),
                events: vec![],
                now: start,
            }
        }

        fn drain(&mut self) -> Option<Instant> {
            while let Some(o) = self.session.poll_output() {
                match o {
                    Output::Event(e) => self.events.push(e),
                    Output::Timeout(at) => return Some(at),
                    Output::Transmit(_) | Output::Record(_) => {}
                }
            }
            None
        }

        /// Runs the session's timers up to `to`.
        fn advance(&mut self, to: Instant) {
            while let Some(at) = self.drain() {
                if at > to {
                    break;
                }
                self.now = at.max(self.now);
                self.session
                    .handle_input(Input::Timeout(self.now))
                    .expect("timeout");
            }
            self.now = self.now.max(to);
        }

        fn deliver(&mut self, at: Instant, bytes: Bytes) {
            self.advance(at);
            self.session
                .handle_input(Input::Receive {
                    now: at,
                    source: peer(),
                    bytes,
                })
                .expect("receive");
            self.drain();
        }

        fn stop(&mut self, at: Instant) {
            self.advance(at);
            self.session
                .handle_input(Input::Stop { now: at })
                .expect("stop");
            self.drain();
        }

        fn reports(&self) -> Vec<QualityReport> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    MediaEvent::Quality(q) => Some(q.clone()),
                    _ => None,
                })
                .collect()
        }

        fn intervals(&self) -> Vec<QualityReport> {
            let r: Vec<_> = self
                .reports()
                .into_iter()
                .filter(|q| q.scope == QualityScope::Interval)
                .collect();
            assert!(!r.is_empty(), "no interval report");
            r
        }

        fn call(&self) -> QualityReport {
            let mut c: Vec<_> = self
                .reports()
                .into_iter()
                .filter(|q| q.scope == QualityScope::Call)
                .collect();
            assert_eq!(c.len(), 1, "exactly one call report: {:?}", self.reports());
            c.remove(0)
        }
    }

    /// Sends `n` packets from `sender` with a fixed 10 ms network delay plus `extra(i)`,
    /// skipping those `drop(i)` says, delivering in arrival order; stops 1 s after the last.
    fn stream(
        sender: &Sender,
        n: u64,
        drop: impl Fn(u64) -> bool,
        extra: impl Fn(u64) -> Duration,
    ) -> Run {
        let start = t0();
        let mut arrivals: Vec<(Instant, u64)> = (0..n)
            .filter(|i| !drop(*i))
            .map(|i| (start + sender.send_time(i) + 10 * MS + extra(i), i))
            .collect();
        arrivals.sort();
        let mut run = Run::new(start);
        let mut last = start;
        for (at, i) in arrivals {
            run.deliver(at, sender.packet(i));
            last = at;
        }
        run.stop(last + 1000 * MS);
        run
    }

    fn no_extra(_: u64) -> Duration {
        Duration::ZERO
    }

    fn assert_clean(run: &Run, n: u64, ptime_ms: u64) {
        for q in run.intervals().iter().chain([run.call()].iter()) {
            assert_eq!((q.lost, q.late), (0, 0), "{q:?}");
            assert_eq!(q.loss_percent, 0.0, "{q:?}");
            assert_eq!(q.max_burst, 0, "{q:?}");
            assert_eq!(q.burst_ratio, 1.0, "{q:?}");
            assert_eq!(q.ptime, Some(MS * ptime_ms as u32), "{q:?}");
            assert!(q.mos >= 4.3, "{q:?}");
            // G.711, no loss, 60-90 ms of one-way delay (buffer + ptime): the default set's
            // R = 93.2 less 1.7-2.4 of echo impairment (Idte, Idle), MOS 4.36-4.38.
            assert!(q.r_factor > 90.5 && q.r_factor < 93.3, "{q:?}");
        }
        let call = run.call();
        eprintln!("call: {call:?}");
        assert_eq!((call.expected, call.received), (n, n), "{call:?}");
        // The interval reports add up to the call (one ends with the stop).
        let sum: u64 = run.intervals().iter().map(|q| q.expected).sum();
        assert!(sum <= n && sum + 300 >= n, "{sum} of {n}");
    }

    #[test]
    fn a_clean_30ms_sender_into_a_20ms_session_shows_no_loss_and_no_underruns() {
        let sender = Sender::new(30);
        let n = 1000; // 30 s
        let run = stream(&sender, n, |_| false, no_extra);
        assert_clean(&run, n, 30);
        // Not one concealed frame in any report: the playout pops by samples, not by tick,
        // and did not run before the first packet (700 ms after the session started).
        for q in run.intervals() {
            assert_eq!(q.concealed, 0, "{q:?}");
        }
        let js = run.session.jitter_stats();
        // The only underruns are those after the stream stopped, before the buffer idles:
        // max_delay (200 ms) in 30 ms frames.
        assert_eq!((js.missing, js.late, js.underruns), (0, 0, 6), "{js:?}");
    }

    #[test]
    fn a_clean_20ms_sender_shows_no_loss_and_no_concealment() {
        let sender = Sender::new(20);
        let n = 1500;
        let run = stream(&sender, n, |_| false, no_extra);
        assert_clean(&run, n, 20);
        for q in run.intervals() {
            assert_eq!(q.concealed, 0, "{q:?}");
        }
    }

    #[test]
    fn the_first_report_does_not_count_the_wait_for_the_first_packet() {
        let mut sender = Sender::new(20);
        // The peer's first packet comes 4 s after the session started: 200 ticks of our
        // playout clock with nothing to play.
        sender.first = 4000 * MS;
        let run = stream(&sender, 100, |_| false, no_extra);
        let first = &run.intervals()[0];
        assert_eq!(first.concealed, 0, "{first:?}");
        assert_eq!((first.lost, first.late), (0, 0), "{first:?}");
        assert!(first.mos >= 4.3, "{first:?}");
        assert!(first.received > 0 && first.received < 100, "{first:?}");
    }

    fn drifting(drift: f64) -> Run {
        let mut sender = Sender::new(20);
        sender.drift = drift;
        stream(&sender, 3000, |_| false, no_extra) // 60 s
    }

    #[test]
    fn a_sender_half_a_percent_slow_or_fast_loses_nothing() {
        for drift in [0.005, -0.005] {
            let run = drifting(drift);
            for q in run.intervals().iter().chain([run.call()].iter()) {
                assert_eq!((q.lost, q.late), (0, 0), "drift {drift}: {q:?}");
                assert!(q.mos >= 4.3, "drift {drift}: {q:?}");
                assert!(q.playout_delay <= 100 * MS, "drift {drift}: {q:?}");
            }
            let call = run.call();
            eprintln!("drift {drift}: {call:?} {:?}", run.session.jitter_stats());
            assert_eq!(call.received, 3000);
            // 0.5 % of 3000 frames is 15: the buffer takes (slow sender: stretches) or gives
            // back (fast: sheds) about that many frames; never a gap.
            let js = run.session.jitter_stats();
            assert_eq!((js.missing, js.late, js.too_early), (0, 0, 0), "{js:?}");
            if drift > 0.0 {
                assert!(js.underruns <= 10 + 20, "{js:?}");
            } else {
                assert!((10..=20).contains(&js.shed), "{js:?}");
            }
        }
    }

    /// Independent G.107 §7.5 burst ratio of a drop pattern over `expected` slots: the mean
    /// length of the observed runs of consecutive losses divided by the mean run length of
    /// random loss at the same rate, 1/(1 − p).
    fn burst_ratio_of(dropped: &[u64], expected: u64) -> (f64, u64) {
        let mut runs = 0u64;
        let mut longest = 0u64;
        let mut cur = 0u64;
        let mut prev: Option<u64> = None;
        for &d in dropped {
            if prev.is_some_and(|p| p + 1 == d) {
                cur += 1;
            } else {
                runs += 1;
                cur = 1;
            }
            longest = longest.max(cur);
            prev = Some(d);
        }
        let p = dropped.len() as f64 / expected as f64;
        let mean_run = dropped.len() as f64 / runs as f64;
        (mean_run * (1.0 - p), longest)
    }

    #[test]
    fn a_seeded_drop_pattern_is_reported_exactly() {
        let n = 3000u64;
        let mut rng = Rng(0x5eed_1234_abcd);
        // 3 % random, plus bursts of 2-6 starting with 0.6 % probability: about 5 % in all.
        let mut dropped = Vec::new();
        let mut burst_left = 0;
        for i in 0..n {
            // The first and last packets arrive: RFC 3550 cannot see loss outside them.
            let edge = i < 5 || i >= n - 5;
            if burst_left == 0 && rng.unit() < 0.006 {
                burst_left = 2 + rng.next() % 5;
            }
            let lose = burst_left > 0 || rng.unit() < 0.03;
            burst_left = burst_left.saturating_sub(1);
            if lose && !edge {
                dropped.push(i);
            }
        }
        let share = dropped.len() as f64 / n as f64;
        assert!((0.04..0.07).contains(&share), "induced {share}");
        let run = stream(
            &Sender::new(20),
            n,
            |i| dropped.binary_search(&i).is_ok(),
            no_extra,
        );
        let call = run.call();
        eprintln!("call: {call:?}");
        assert_eq!(call.expected, n);
        assert_eq!(call.lost, dropped.len() as u64);
        assert_eq!(call.received, n - dropped.len() as u64);
        assert_eq!(call.late, 0);
        assert!((call.loss_percent - 100.0 * share).abs() < 1e-9, "{call:?}");
        let (burst_r, longest) = burst_ratio_of(&dropped, n);
        assert!(burst_r > 1.2, "the pattern is bursty: {burst_r}");
        assert!(
            (call.burst_ratio - burst_r).abs() < 1e-9,
            "{} vs {burst_r}",
            call.burst_ratio
        );
        assert_eq!(call.max_burst, longest);
        // Markov cross-check (G.107 §7.5: BurstR = 1/(p + q)), p = P(loss | last received),
        // q = P(received | last lost), over the sequence: equal up to edge effects.
        let lost: Vec<bool> = (0..n).map(|i| dropped.binary_search(&i).is_ok()).collect();
        let (mut r_to_l, mut l_to_r) = (0f64, 0f64);
        for w in lost.windows(2) {
            match (w[0], w[1]) {
                (false, true) => r_to_l += 1.0,
                (true, false) => l_to_r += 1.0,
                _ => {}
            }
        }
        let nl = dropped.len() as f64;
        let markov = 1.0 / (r_to_l / (n as f64 - nl) + l_to_r / nl);
        assert!((markov - burst_r).abs() < 0.01, "{markov} vs {burst_r}");
        // MOS: the G.107 model with exactly these inputs.
        let want = EModel::for_codec(Codec::Pcmu, false)
            .with_loss(100.0 * share, burst_r)
            .with_one_way_delay(call.one_way_delay.as_secs_f64() * 1000.0);
        assert!(
            (call.mos - want.mos()).abs() < 0.01,
            "{} vs {}",
            call.mos,
            want.mos()
        );
        assert!((call.r_factor - want.r_factor()).abs() < 0.01);
        // Intervals: they cover the sequence numbers from the first on without overlap, and
        // their losses are exactly the drops among them (no reordering here). The stream's
        // tail after the last interval is in the call report only.
        // Each lost packet was concealed once; the other concealed frames are the 10 underruns
        // after the stream stopped (max_delay, before the buffer idles).
        assert_eq!(
            call.concealed,
            call.lost + 10,
            "{:?}",
            run.session.jitter_stats()
        );
        let intervals = run.intervals();
        let lost_sum: u64 = intervals.iter().map(|q| q.lost).sum();
        let expected_sum: u64 = intervals.iter().map(|q| q.expected).sum();
        assert!(expected_sum > n - 250, "{expected_sum}");
        let dropped_in = dropped.iter().filter(|d| **d < expected_sum).count() as u64;
        assert_eq!(lost_sum, dropped_in);
        for q in &intervals {
            // BurstR may fall below 1 in an interval (loss more scattered than random).
            assert!(q.burst_ratio > 0.0 && q.max_burst <= longest, "{q:?}");
        }
    }

    #[test]
    fn a_late_packet_is_late_not_lost() {
        // Packet 100 is held 200 ms: packets 101.. arrive and play before it.
        let run = stream(
            &Sender::new(20),
            500,
            |_| false,
            |i| if i == 100 { 200 * MS } else { Duration::ZERO },
        );
        let call = run.call();
        assert_eq!(
            (call.lost, call.late, call.received),
            (0, 1, 500),
            "{call:?}"
        );
        assert!((call.late_percent - 0.2).abs() < 1e-9, "{call:?}");
        assert!(call.concealed >= 1, "its slot was concealed: {call:?}");
        assert_eq!(call.max_burst, 0);
        // The listener lost it: the E-model sees 0.2 % (random) loss.
        let want = EModel::for_codec(Codec::Pcmu, false)
            .with_loss(0.2, 1.0)
            .with_one_way_delay(call.one_way_delay.as_secs_f64() * 1000.0);
        assert!((call.mos - want.mos()).abs() < 1e-9);
    }

    #[test]
    fn reordering_within_the_buffer_is_not_loss() {
        // Every 10th packet arrives 25 ms late, after the next one: reordered, well within the
        // 40 ms playout depth.
        let run = stream(
            &Sender::new(20),
            1000,
            |_| false,
            |i| if i % 10 == 5 { 25 * MS } else { Duration::ZERO },
        );
        for q in run.intervals().iter().chain([run.call()].iter()) {
            assert_eq!((q.lost, q.late, q.max_burst), (0, 0, 0), "{q:?}");
            assert_eq!(q.burst_ratio, 1.0);
            assert!(q.mos >= 4.3, "{q:?}");
        }
    }

    #[test]
    fn the_far_ends_report_about_us_is_passed_on() {
        let start = t0();
        let sender = Sender::new(20);
        let mut run = Run::new(start);
        for i in 0..300 {
            run.deliver(start + sender.send_time(i) + 10 * MS, sender.packet(i));
        }
        let rr = RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: Ssrc(PEER_SSRC),
            reports: vec![ReportBlock {
                ssrc: Ssrc(OUR_SSRC),
                fraction_lost: 64,
                cumulative_lost: 7,
                highest_seq: 1234,
                jitter: 80,
                lsr: 0,
                dlsr: 0,
            }],
        });
        let bytes = RtcpPacket::write_compound(&[rr]).expect("rtcp");
        run.deliver(start + 6800 * MS, bytes.into());
        run.stop(start + 7000 * MS);
        let call = run.call();
        assert_eq!(
            call.remote,
            Some(RemoteQuality {
                loss_percent: 25.0,
                jitter: 10 * MS,
                cumulative_lost: 7,
            })
        );
        assert_eq!(call.rtt, None, "no SR of ours was echoed");
        // Before that report, the first interval had no remote view.
        assert_eq!(run.intervals()[0].remote, None);
    }

    #[test]
    fn no_packets_no_report() {
        let start = t0();
        let mut run = Run::new(start);
        run.stop(start + 12_000 * MS);
        assert!(run.reports().is_empty(), "{:?}", run.reports());
    }
}

#[test]
fn two_percent_random_loss_on_g711_without_plc_by_hand() {
    // G.107 §7.5 with G.113's G.711 values without PLC (Ie = 0, Bpl = 4.3), Ppl = 2,
    // BurstR = 1: Ie,eff = 95 · 2 / (2 + 4.3) = 30.1587. With the default set's R = 93.2 (no
    // delay), R = 93.2 − 30.16 = 63.04, and Annex B:
    // MOS = 1 + 0.035 · 63.04 + 63.04 · 3.04 · 36.96 · 7e-6 = 1 + 2.2064 + 0.0496 = 3.256.
    let m = EModel::for_codec(Codec::Pcmu, false).with_loss(2.0, 1.0);
    let r = m.r_factor();
    assert!((r - 63.04).abs() < 0.05, "R = {r}");
    assert!((EModel::default().r_factor() - r - 30.1587).abs() < 1e-3);
    assert!((m.mos() - 3.256).abs() < 0.005, "MOS = {}", m.mos());
    // The same loss in bursts (BurstR 2): Ie,eff = 95 · 2 / (1 + 4.3) = 35.85.
    let b = EModel::for_codec(Codec::Pcmu, false).with_loss(2.0, 2.0);
    assert!((EModel::default().r_factor() - b.r_factor() - 35.849).abs() < 1e-3);
}

#[test]
fn loss_pattern_decides_slots_after_the_reorder_window() {
    use media::quality::{LossPattern, REORDER_WINDOW};
    let mut p = LossPattern::new();
    let mut out: Vec<bool> = Vec::new();
    let w = REORDER_WINDOW as u64;
    // 100, 102, 101 (reordered within the window), 105 (103, 104 lost), then far ahead.
    for s in [100u64, 102, 101, 105] {
        p.on_received(s, |l| out.push(l));
    }
    assert!(out.is_empty(), "nothing decided within the window");
    p.on_received(105 + w, |l| out.push(l));
    // 100..=105+w−w: 100, 101, 102 arrived, 103, 104 lost, 105 arrived.
    assert_eq!(out, [false, false, false, true, true, false]);
    // A packet older than the decided ones is ignored (RFC 3550 still counts it received).
    p.on_received(103, |l| out.push(l));
    assert_eq!(out.len(), 6);
    // Flushing decides the rest: 106 ..= 105+w−1 lost, 105+w arrived.
    p.flush(|l| out.push(l));
    assert_eq!(out.len() as u64, 6 + w);
    assert_eq!(out.iter().filter(|l| **l).count() as u64, 2 + w - 1);
    let mut t = LossTracker::new();
    for l in &out {
        t.observe(*l);
    }
    assert_eq!(t.max_burst(), w - 1);
    assert_eq!(t.bursts(), 2);
}
