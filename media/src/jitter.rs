//! An adaptive playout (jitter) buffer.
//!
//! Packets go in with their extended sequence number, RTP timestamp and arrival time; the
//! caller pops one frame per packetization interval (its own 20 ms tick). The buffer reorders,
//! drops duplicates, drops and counts packets that arrive after their slot was played, and
//! returns [`Frame::Missing`] for a slot whose packet never came, so the caller can conceal it.
//!
//! The depth (how long a packet waits between arrival and playout) adapts between
//! [`JitterConfig::min_delay`] and [`JitterConfig::max_delay`]:
//! - it rises at once with the RFC 3550 A.8 interarrival-jitter estimate (depth ≈ one frame +
//!   3 J), and by one frame for each late packet (late audio is lost audio); the buffer deepens
//!   by playing one [`Frame::Missing`] (concealment) per frame of extra depth without advancing;
//! - it falls by one frame after `relax_after` frames without a late packet when the estimate
//!   allows, shedding one buffered frame to cut latency.
//!
//! Slots are counted in sequence numbers, one frame per packet of the *sender's* packet interval
//! ([`JitterBuffer::set_frame`]: the caller measures it from RTP timestamps). The caller pops
//! by demand, not by tick: whenever its playout needs more samples than it holds, it pops one
//! packet's worth, so a 30 ms sender played out on a 20 ms tick pops twice every three ticks.
//!
//! A slot whose packet is missing is one of two things:
//! - a **gap**: later packets are buffered, so this one is lost or very late. The slot is
//!   played as [`Frame::Missing`] and the playout point moves on (counted in
//!   [`JitterStats::missing`]); should the packet come after all, it is [`Insert::Late`];
//! - an **underrun**: nothing is buffered (the sender's clock is slower than ours, or arrival
//!   jitter outran the depth). The playout point *holds*: [`Frame::Missing`] is played for
//!   the same slot, which then plays when its packet arrives (counted in
//!   [`JitterStats::underruns`]). An underrun is concealment, never loss, and never makes the
//!   packet late. Should later packets then arrive without the one(s) held for, the held
//!   frames were the lost packets' concealment: the playout moves past them at once
//!   (recounted as missing), so a loss at the edge of the buffer costs one frame per lost
//!   packet, not two, and adds no delay.
//!
//! Clock drift the other way (a sender slightly faster than our clock) fills the buffer: when
//! the least it held over a window of [`DRIFT_WINDOW`] pops exceeds the target depth by more
//! than two frames, one buffered frame is shed ([`JitterStats::shed`]). Shedding and stretching
//! are concealment too, never loss.
//!
//! The stream is re-anchored after an underrun longer than `max_delay` (silence suppression, a
//! stopped sender).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::rtp::SeqNo;

/// Pops over which the least-buffered depth is watched for a sender faster than our clock.
pub const DRIFT_WINDOW: u32 = 50;

/// Settings for a [`JitterBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// The smallest depth (default 20 ms).
    pub min_delay: Duration,
    /// The largest depth (default 200 ms).
    pub max_delay: Duration,
    /// The depth to start with (default 40 ms).
    pub initial_delay: Duration,
    /// Audio per packet: the sender's packet interval (default 20 ms; the session starts with
    /// the negotiated ptime and moves to the measured one, [`JitterBuffer::set_frame`]).
    pub frame: Duration,
    /// The RTP clock rate (default 8000).
    pub clock_rate: u32,
    /// Frames played without a late packet before the depth may shrink (default 250, 5 s).
    pub relax_after: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            initial_delay: Duration::from_millis(40),
            frame: Duration::from_millis(20),
            clock_rate: 8000,
            relax_after: 250,
        }
    }
}

/// One frame's worth of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A received packet, in order.
    Audio {
        /// Its extended sequence number.
        seq: SeqNo,
        /// Its RTP timestamp.
        timestamp: u32,
        /// Its payload (still encoded).
        payload: Bytes,
    },
    /// No audio for this slot: conceal (repeat, fade, or insert silence). Either the packet
    /// is missing while later ones are here (a gap: lost or late), or the buffer is deepening
    /// or has run dry (an underrun), and `seq` will still be played next.
    Missing {
        /// The sequence number that was expected.
        seq: SeqNo,
    },
}

/// What [`JitterBuffer::insert`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Buffered for playout.
    Queued,
    /// Already buffered: dropped.
    Duplicate,
    /// Its slot was already played: dropped.
    Late,
    /// Too far ahead of the playout point to buffer (more than `max_delay` plus a second):
    /// dropped. A sequence restart is handled by the caller resetting the buffer.
    TooEarly,
}

/// Counters for quality reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JitterStats {
    /// Packets accepted into the buffer.
    pub queued: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Packets dropped for arriving after their slot was played.
    pub late: u64,
    /// Packets dropped for arriving too far ahead.
    pub too_early: u64,
    /// Frames played from a packet.
    pub played: u64,
    /// Frames reported missing because their packet never came while later ones did (a gap:
    /// network loss or a late packet), concealed.
    pub missing: u64,
    /// Frames concealed because nothing was buffered (an underrun: the playout point held).
    pub underruns: u64,
    /// Buffered frames dropped to shrink the depth.
    pub shed: u64,
    /// Concealment frames played to deepen the buffer.
    pub stretched: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No packet yet, or re-anchoring after a long underrun.
    Idle,
    /// Holding the first packet until `start`.
    Buffering { start: Instant },
    /// Playing one slot per pop.
    Playing,
}

/// The adaptive playout buffer.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    config: JitterConfig,
    packets: BTreeMap<u64, (u32, Bytes)>,
    state: State,
    next_seq: u64,
    target: Duration,
    desired: Duration,
    pending_stretch: u32,
    pending_shed: u32,
    since_late: u32,
    underrun_run: u32,
    /// Consecutive pops that held the playout point on an empty buffer.
    held: u32,
    window_pops: u32,
    window_min: u64,
    last_arrival: Option<(Instant, u32)>,
    jitter: f64,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(config: JitterConfig) -> JitterBuffer {
        let target = config
            .initial_delay
            .clamp(config.min_delay, config.max_delay);
        JitterBuffer {
            config,
            packets: BTreeMap::new(),
            state: State::Idle,
            next_seq: 0,
            target,
            desired: config.min_delay,
            pending_stretch: 0,
            pending_shed: 0,
            since_late: 0,
            underrun_run: 0,
            held: 0,
            window_pops: 0,
            window_min: u64::MAX,
            last_arrival: None,
            jitter: 0.0,
            stats: JitterStats::default(),
        }
    }

    /// The current depth target.
    pub fn delay(&self) -> Duration {
        self.target
    }

    /// The interarrival jitter estimate (RFC 3550 A.8, in seconds).
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter)
    }

    /// Counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets currently buffered.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Forgets all packets and re-anchors on the next insert (a new SSRC or a sequence restart).
    pub fn reset(&mut self) {
        self.packets.clear();
        self.state = State::Idle;
        self.last_arrival = None;
        self.underrun_run = 0;
        self.held = 0;
        self.window_pops = 0;
        self.window_min = u64::MAX;
    }

    /// The audio per packet now assumed (the sender's packet interval).
    pub fn frame(&self) -> Duration {
        self.config.frame
    }

    /// Sets the audio per packet to the sender's measured packet interval (clamped to
    /// 1..=200 ms). The depth target is kept in time and rounded up to whole frames.
    pub fn set_frame(&mut self, frame: Duration) {
        let frame = frame.clamp(Duration::from_millis(1), Duration::from_millis(200));
        if frame == self.config.frame {
            return;
        }
        self.config.frame = frame;
        self.target = self.round_to_frame(self.target);
        self.desired = self.round_to_frame(self.desired);
    }

    fn frames(&self, d: Duration) -> u64 {
        (d.as_nanos() / self.config.frame.as_nanos().max(1)) as u64
    }

    /// Offers a packet to the buffer.
    pub fn insert(&mut self, seq: SeqNo, timestamp: u32, now: Instant, payload: Bytes) -> Insert {
        self.observe_arrival(timestamp, now);
        self.place(seq, timestamp, now, payload)
    }

    /// Fills a sequence slot with an empty payload without touching the jitter estimate: for
    /// packets of the stream that carry no audio (RFC 4733 events, comfort noise), so that
    /// their sequence numbers play out as silence rather than as loss.
    pub fn insert_filler(&mut self, seq: SeqNo, timestamp: u32, now: Instant) -> Insert {
        self.place(seq, timestamp, now, Bytes::new())
    }

    fn place(&mut self, seq: SeqNo, timestamp: u32, now: Instant, payload: Bytes) -> Insert {
        let s = seq.0;
        match self.state {
            State::Idle => {
                self.next_seq = s;
                self.state = State::Buffering {
                    start: now.checked_add(self.target).unwrap_or(now),
                };
            }
            State::Buffering { .. } => {
                // A packet older than the one we anchored on: still playable, move the anchor.
                if s < self.next_seq {
                    self.next_seq = s;
                }
            }
            State::Playing => {
                if s < self.next_seq {
                    self.stats.late += 1;
                    self.on_late();
                    return Insert::Late;
                }
            }
        }
        let horizon = self
            .frames(self.config.max_delay.saturating_add(Duration::from_secs(1)))
            .max(1);
        if s > self.next_seq.saturating_add(horizon) {
            self.stats.too_early += 1;
            return Insert::TooEarly;
        }
        if self.packets.contains_key(&s) {
            self.stats.duplicates += 1;
            return Insert::Duplicate;
        }
        self.packets.insert(s, (timestamp, payload));
        self.stats.queued += 1;
        Insert::Queued
    }

    /// RFC 3550 A.8 over arrivals, in seconds, driving the depth target.
    fn observe_arrival(&mut self, timestamp: u32, now: Instant) {
        if let Some((at, ts)) = self.last_arrival {
            let arrival = if now >= at {
                now.duration_since(at).as_secs_f64()
            } else {
                -(at.duration_since(now).as_secs_f64())
            };
            let sent = timestamp.wrapping_sub(ts) as i32 as f64 / self.config.clock_rate as f64;
            let d = (arrival - sent).abs();
            // A sender restart or silence gap shows up as a huge D; do not let one outlier blow
            // the estimate to the maximum.
            let d = d.min(self.config.max_delay.as_secs_f64());
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_arrival = Some((now, timestamp));
        let from_jitter = self.config.frame + Duration::from_secs_f64(3.0 * self.jitter);
        self.desired = self.round_to_frame(from_jitter);
        if self.desired > self.target {
            self.deepen(self.desired);
        }
    }

    fn deepen(&mut self, to: Duration) {
        let extra = self.frames(to.saturating_sub(self.target)) as u32;
        if matches!(self.state, State::Playing) {
            self.pending_stretch += extra;
            self.pending_shed = 0;
        }
        self.target = to;
    }

    fn round_to_frame(&self, d: Duration) -> Duration {
        let f = self.config.frame.as_nanos().max(1);
        let n = d.as_nanos().div_ceil(f);
        Duration::from_nanos((n * f) as u64).clamp(self.config.min_delay, self.config.max_delay)
    }

    fn on_late(&mut self) {
        self.since_late = 0;
        let to = (self.target + self.config.frame).min(self.config.max_delay);
        self.deepen(to);
    }

    /// Takes the frame for the current slot. Call once per frame interval; returns `None` while
    /// buffering (before the first packet has waited out the depth) and when idle.
    pub fn pop(&mut self, now: Instant) -> Option<Frame> {
        match self.state {
            State::Idle => return None,
            State::Buffering { start } => {
                if now < start {
                    return None;
                }
                self.state = State::Playing;
            }
            State::Playing => {}
        }
        self.since_late = self.since_late.saturating_add(1);
        if self.since_late >= self.config.relax_after && self.desired < self.target {
            let to = self
                .target
                .saturating_sub(self.config.frame)
                .max(self.desired)
                .max(self.config.min_delay);
            if to < self.target {
                self.target = to;
                self.pending_shed += 1;
            }
            self.since_late = 0;
        }
        // Clock drift: a sender faster than our clock keeps more buffered than the target.
        let buffered = self.buffered();
        self.window_min = self.window_min.min(buffered);
        self.window_pops += 1;
        if self.window_pops >= DRIFT_WINDOW {
            // Two frames of slack: a loss at the edge of a shallow buffer holds the playout
            // point once (an underrun), which must not read as drift.
            if self.window_min > self.frames(self.target).max(1) + 2 && self.pending_shed == 0 {
                self.pending_shed = 1;
            }
            self.window_pops = 0;
            self.window_min = u64::MAX;
        }
        if self.pending_stretch > 0 {
            // Deepening: hold the playout point for one frame.
            self.pending_stretch -= 1;
            self.stats.stretched += 1;
            return Some(Frame::Missing {
                seq: SeqNo(self.next_seq),
            });
        }
        if self.pending_shed > 0 {
            // Shallower: skip one buffered frame, but only when there is surplus audio.
            if self.buffered() > self.frames(self.target) + 1
                && self.packets.remove(&self.next_seq).is_some()
            {
                self.stats.shed += 1;
                self.pending_shed -= 1;
                self.next_seq += 1;
            }
        }
        if self.held > 0
            && let Some((&first, _)) = self.packets.first_key_value()
            && first > self.next_seq
        {
            // We held on an empty buffer, and now later packets are here but not the ones we
            // held for: those were lost, and the held frames already concealed them. Move on
            // without concealing them twice (nor adding delay), and count them as gaps.
            let covered = (first - self.next_seq).min(self.held as u64);
            self.next_seq += covered;
            self.stats.underruns = self.stats.underruns.saturating_sub(covered);
            self.stats.missing += covered;
        }
        let seq = self.next_seq;
        if let Some((timestamp, payload)) = self.packets.remove(&seq) {
            self.held = 0;
            self.next_seq += 1;
            self.underrun_run = 0;
            self.stats.played += 1;
            return Some(Frame::Audio {
                seq: SeqNo(seq),
                timestamp,
                payload,
            });
        }
        if self.packets.is_empty() {
            // Underrun: nothing to play yet. Hold the playout point; the packet for this slot
            // plays when it comes.
            self.underrun_run += 1;
            if self.underrun_run as u64 > self.frames(self.config.max_delay) {
                // The sender has stopped (or suppresses silence): wait for the next packet and
                // buffer afresh instead of concealing forever.
                self.state = State::Idle;
                self.underrun_run = 0;
                self.held = 0;
                self.last_arrival = None;
                return None;
            }
            self.stats.underruns += 1;
            self.held += 1;
            return Some(Frame::Missing { seq: SeqNo(seq) });
        }
        // A gap: later packets are here, this one is lost (or late).
        self.held = 0;
        self.next_seq += 1;
        self.underrun_run = 0;
        self.stats.missing += 1;
        Some(Frame::Missing { seq: SeqNo(seq) })
    }

    /// Slots from the playout point to the newest buffered packet (0 when empty).
    fn buffered(&self) -> u64 {
        self.packets
            .last_key_value()
            .map_or(0, |(k, _)| (k + 1).saturating_sub(self.next_seq))
    }
}
