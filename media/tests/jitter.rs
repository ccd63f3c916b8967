//! The adaptive playout buffer in virtual time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use media::jitter::{Frame, Insert, JitterBuffer, JitterConfig};
use media::rtp::SeqNo;

/// An arbitrary origin for virtual time: the only clock read; everything after it is arithmetic.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

const MS: Duration = Duration::from_millis(1);

fn payload(seq: u64) -> Bytes {
    Bytes::from(vec![seq as u8; 4])
}

fn seqs(frames: &[Frame]) -> Vec<Option<u64>> {
    frames
        .iter()
        .map(|f| match f {
            Frame::Audio { seq, .. } => Some(seq.0),
            Frame::Missing { .. } => None,
        })
        .collect()
}

/// Pops once per 20 ms from `from` for `n` ticks.
fn drain(jb: &mut JitterBuffer, from: Instant, n: u32) -> Vec<Frame> {
    (0..n).filter_map(|i| jb.pop(from + 20 * MS * i)).collect()
}

#[test]
fn holds_the_first_packet_for_the_initial_delay() {
    let t0 = t0();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    jb.insert(SeqNo(1), 160, t0, payload(1));
    assert_eq!(jb.pop(t0 + 39 * MS), None);
    assert!(matches!(
        jb.pop(t0 + 40 * MS),
        Some(Frame::Audio { seq: SeqNo(1), .. })
    ));
}

#[test]
fn reorders_dedupes_and_conceals_loss() {
    let t0 = t0();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    // 1, 3, 2, 2 (duplicate), 5 (4 lost), 6
    for (i, s) in [1u64, 3, 2, 2, 5, 6].iter().enumerate() {
        let r = jb.insert(SeqNo(*s), *s as u32 * 160, t0 + MS * i as u32, payload(*s));
        assert_eq!(
            r,
            if i == 3 {
                Insert::Duplicate
            } else {
                Insert::Queued
            }
        );
    }
    let out = drain(&mut jb, t0 + 40 * MS, 6);
    assert_eq!(
        seqs(&out),
        [Some(1), Some(2), Some(3), None, Some(5), Some(6)]
    );
    assert_eq!(
        out[0],
        Frame::Audio {
            seq: SeqNo(1),
            timestamp: 160,
            payload: payload(1)
        }
    );
    let st = jb.stats();
    assert_eq!((st.duplicates, st.missing, st.played), (1, 1, 5));
}

#[test]
fn late_packets_are_dropped_counted_and_deepen_the_buffer() {
    let t0 = t0();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    jb.insert(SeqNo(1), 160, t0, payload(1));
    jb.insert(SeqNo(3), 480, t0 + 40 * MS, payload(3));
    let out = drain(&mut jb, t0 + 40 * MS, 2);
    assert_eq!(seqs(&out), [Some(1), None]);
    let before = jb.delay();
    assert_eq!(
        jb.insert(SeqNo(2), 320, t0 + 61 * MS, payload(2)),
        Insert::Late
    );
    assert_eq!(jb.stats().late, 1);
    assert!(jb.delay() > before, "{:?} -> {:?}", before, jb.delay());
    // The extra frame of depth is taken by holding the playout point once (concealment)...
    assert_eq!(jb.pop(t0 + 80 * MS), Some(Frame::Missing { seq: SeqNo(3) }));
    assert_eq!(jb.stats().stretched, 1);
    // ...then the stream continues where it was.
    assert!(matches!(
        jb.pop(t0 + 100 * MS),
        Some(Frame::Audio { seq: SeqNo(3), .. })
    ));
}

/// A deterministic pseudo-random generator (xorshift) so the test needs no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn run_stream(max_jitter_ms: u64, packets: u64) -> (JitterBuffer, Vec<Frame>) {
    let t0 = t0();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut arrivals: Vec<(Instant, u64)> = (0..packets)
        .map(|s| {
            let delay = if max_jitter_ms == 0 {
                0
            } else {
                rng.next() % max_jitter_ms
            };
            (t0 + 20 * MS * s as u32 + MS * delay as u32, s)
        })
        .collect();
    arrivals.sort();
    let mut out = Vec::new();
    let mut next_arrival = 0;
    // Step virtual time in 1 ms increments; pop on each 20 ms tick.
    for ms in 0..(packets * 20 + 400) {
        let now = t0 + MS * ms as u32;
        while next_arrival < arrivals.len() && arrivals[next_arrival].0 <= now {
            let s = arrivals[next_arrival].1;
            jb.insert(SeqNo(s), s as u32 * 160, now, payload(s));
            next_arrival += 1;
        }
        if ms % 20 == 0 {
            out.extend(jb.pop(now));
        }
    }
    (jb, out)
}

#[test]
fn depth_stays_small_on_a_clean_link() {
    let (jb, out) = run_stream(0, 500);
    // Starts at the 40 ms initial depth and relaxes to the 20 ms minimum, shedding one frame.
    assert_eq!(jb.delay(), 20 * MS);
    let st = jb.stats();
    // Nothing is missing (no gap); the only concealment is the 10 (max_delay) underrun frames
    // after the stream ends, before the buffer goes idle.
    assert_eq!(
        (st.late, st.missing, st.underruns, st.shed, st.stretched),
        (0, 0, 10, 1, 0)
    );
    assert_eq!(seqs(&out).iter().flatten().count(), 499);
}

#[test]
fn depth_grows_with_jitter_and_stays_bounded() {
    let (jb, _) = run_stream(80, 1000);
    assert!(
        jb.delay() >= 80 * MS,
        "depth {:?} for 0–80 ms jitter",
        jb.delay()
    );
    assert!(jb.delay() <= 200 * MS);
    // Once adapted, few packets are late.
    assert!(jb.stats().late < 50, "{:?}", jb.stats());
    let (jb, _) = run_stream(1000, 300);
    assert_eq!(jb.delay(), 200 * MS, "capped at max_delay");
}

#[test]
fn long_silence_reanchors_instead_of_reporting_loss_forever() {
    let t0 = t0();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    jb.insert(SeqNo(1), 160, t0, payload(1));
    let out = drain(&mut jb, t0 + 40 * MS, 30);
    // One frame, then at most max_delay (10 frames) of concealment, then idle.
    assert_eq!(out.len(), 11);
    let later = t0 + 2000 * MS;
    jb.insert(SeqNo(90), 90 * 160, later, payload(90));
    assert_eq!(jb.pop(later), None, "buffering again");
    let f = drain(&mut jb, later + 100 * MS, 1);
    assert!(matches!(f[0], Frame::Audio { seq: SeqNo(90), .. }));
}

#[test]
fn an_empty_buffer_holds_the_playout_point_instead_of_losing_the_slot() {
    let t0 = t0();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    jb.insert(SeqNo(1), 160, t0, payload(1));
    assert!(matches!(
        jb.pop(t0 + 40 * MS),
        Some(Frame::Audio { seq: SeqNo(1), .. })
    ));
    // Packet 2 is not here yet and nothing else is: an underrun, the slot is held.
    assert_eq!(jb.pop(t0 + 60 * MS), Some(Frame::Missing { seq: SeqNo(2) }));
    assert_eq!(
        jb.insert(SeqNo(2), 320, t0 + 65 * MS, payload(2)),
        Insert::Queued,
        "not late: its slot was held"
    );
    assert!(matches!(
        jb.pop(t0 + 80 * MS),
        Some(Frame::Audio { seq: SeqNo(2), .. })
    ));
    let st = jb.stats();
    assert_eq!((st.underruns, st.missing, st.late), (1, 0, 0), "{st:?}");
}

#[test]
fn frames_held_for_packets_that_never_come_count_as_their_concealment() {
    let t0 = t0();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    jb.insert(SeqNo(1), 160, t0, payload(1));
    assert!(jb.pop(t0 + 40 * MS).is_some());
    // 2 and 3 are lost; the buffer is empty for two slots.
    assert_eq!(jb.pop(t0 + 60 * MS), Some(Frame::Missing { seq: SeqNo(2) }));
    assert_eq!(jb.pop(t0 + 80 * MS), Some(Frame::Missing { seq: SeqNo(2) }));
    jb.insert(SeqNo(4), 640, t0 + 85 * MS, payload(4));
    // The two held frames were 2's and 3's concealment: 4 plays next, with no added delay.
    assert!(matches!(
        jb.pop(t0 + 100 * MS),
        Some(Frame::Audio { seq: SeqNo(4), .. })
    ));
    let st = jb.stats();
    assert_eq!((st.underruns, st.missing, st.late), (0, 2, 0), "{st:?}");
}

#[test]
fn the_frame_follows_the_senders_ptime() {
    let mut jb = JitterBuffer::new(JitterConfig::default());
    jb.set_frame(30 * MS);
    assert_eq!(jb.frame(), 30 * MS);
    // The 40 ms initial depth rounds up to whole 30 ms frames.
    assert_eq!(jb.delay(), 60 * MS);
    // Out-of-range frames are clamped.
    jb.set_frame(Duration::ZERO);
    assert_eq!(jb.frame(), MS);
}
