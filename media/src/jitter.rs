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
//! Slots are counted in sequence numbers, one frame per packet; the stream is re-anchored after
//! an underrun longer than `max_delay` (silence suppression, a stopped sender).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::rtp::SeqNo;

/// Settings for a [`JitterBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// The smallest depth (default 20 ms).
    pub min_delay: Duration,
    /// The largest depth (default 200 ms).
    pub max_delay: Duration,
    /// The depth to start with (default 40 ms).
    pub initial_delay: Duration,
    /// Audio per packet (the negotiated ptime, default 20 ms).
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
    /// was lost, or the buffer is deepening and `seq` will still be played next.
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
    /// Frames reported missing (concealed).
    pub missing: u64,
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
            self.target = self
                .target
                .saturating_sub(self.config.frame)
                .max(self.config.min_delay);
            self.pending_shed += 1;
            self.since_late = 0;
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
            let buffered = self
                .packets
                .last_key_value()
                .map_or(0, |(k, _)| (k + 1).saturating_sub(self.next_seq));
            if buffered > self.frames(self.target) + 1
                && self.packets.remove(&self.next_seq).is_some()
            {
                self.stats.shed += 1;
                self.pending_shed -= 1;
                self.next_seq += 1;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        match self.packets.remove(&seq) {
            Some((timestamp, payload)) => {
                self.underrun_run = 0;
                self.stats.played += 1;
                Some(Frame::Audio {
                    seq: SeqNo(seq),
                    timestamp,
                    payload,
                })
            }
            None => {
                if self.packets.is_empty() {
                    self.underrun_run += 1;
                    if self.underrun_run as u64 > self.frames(self.config.max_delay) {
                        // The sender has stopped (or suppresses silence): wait for the next
                        // packet and buffer afresh instead of reporting loss forever.
                        self.state = State::Idle;
                        self.underrun_run = 0;
                        self.last_arrival = None;
                        return None;
                    }
                }
                self.stats.missing += 1;
                Some(Frame::Missing { seq: SeqNo(seq) })
            }
        }
    }
}
