//! RFC 3550 receiver statistics for one source: loss (A.3), interarrival jitter (A.8), bursts.

use std::time::{Duration, Instant};

use super::Ssrc;
use super::rtcp::{NtpTime, ReportBlock};
use super::seq::{MIN_SEQUENTIAL, SeqUpdate, SequenceTracker};

/// What a receiver knows about one source, and the state to build its RTCP report block.
#[derive(Debug, Clone)]
pub struct ReceiverStats {
    clock_rate: u32,
    probation: u8,
    seq: Option<SequenceTracker>,
    epoch: Option<Instant>,
    transit: Option<u32>,
    jitter: f64,
    expected_prior: u64,
    received_prior: u64,
    max_burst: u64,
    last_fraction: u8,
    last_sr: Option<(u32, Instant)>,
}

impl ReceiverStats {
    /// Statistics for a source whose RTP clock runs at `clock_rate` Hz (8000 for G.711 and, by
    /// RFC 3551's historical error, for G.722). `probation` as in [`SequenceTracker::new`].
    pub fn new(clock_rate: u32, probation: u8) -> ReceiverStats {
        ReceiverStats {
            clock_rate: clock_rate.max(1),
            probation,
            seq: None,
            epoch: None,
            transit: None,
            jitter: 0.0,
            expected_prior: 0,
            received_prior: 0,
            max_burst: 0,
            last_fraction: 0,
            last_sr: None,
        }
    }

    /// Statistics for an unknown source: probation of [`MIN_SEQUENTIAL`] packets.
    pub fn with_probation(clock_rate: u32) -> ReceiverStats {
        ReceiverStats::new(clock_rate, MIN_SEQUENTIAL)
    }

    /// Records one received data packet: its sequence number, RTP timestamp and arrival time.
    pub fn on_packet(&mut self, seq: u16, rtp_timestamp: u32, now: Instant) -> SeqUpdate {
        self.record(seq, Some(rtp_timestamp), now)
    }

    /// Records a packet for loss and sequence accounting only, leaving the jitter estimate
    /// alone: for RFC 4733 telephone-event packets, whose timestamp is the event's start and
    /// would read as jitter (RFC 4733 §2.5.1.2 keeps it fixed for the whole event).
    pub fn on_packet_without_timing(&mut self, seq: u16, now: Instant) -> SeqUpdate {
        self.record(seq, None, now)
    }

    fn record(&mut self, seq: u16, rtp_timestamp: Option<u32>, now: Instant) -> SeqUpdate {
        let probation = self.probation;
        let tracker = self
            .seq
            .get_or_insert_with(|| SequenceTracker::new(seq, probation));
        let prev_max = tracker.max_seq();
        let was_valid = tracker.is_valid() && tracker.received() > 0;
        let update = tracker.update(seq);
        match update {
            SeqUpdate::InOrder(s) => {
                if was_valid && s.0 > prev_max.0 + 1 {
                    self.max_burst = self.max_burst.max(s.0 - prev_max.0 - 1);
                }
            }
            SeqUpdate::Restarted(_) => {
                self.expected_prior = 0;
                self.received_prior = 0;
                self.transit = None;
            }
            SeqUpdate::Late(_) => {}
            SeqUpdate::Probation | SeqUpdate::BadJump => return update,
        }
        if let Some(ts) = rtp_timestamp {
            self.update_jitter(ts, now);
        }
        update
    }

    /// RFC 3550 A.8: `D = (Rj - Ri) - (Sj - Si)`; `J += (|D| - J) / 16`, with the arrival time
    /// `R` converted to the RTP clock of the stream.
    fn update_jitter(&mut self, rtp_timestamp: u32, now: Instant) {
        let epoch = *self.epoch.get_or_insert(now);
        let elapsed = now.saturating_duration_since(epoch);
        // u64 arithmetic (a u128 division costs as much as the rest of this function); only
        // the low 32 bits matter, as RTP timestamps wrap.
        let rate = self.clock_rate as u64;
        let arrival = (elapsed.as_secs().wrapping_mul(rate)
            + elapsed.subsec_nanos() as u64 * rate / 1_000_000_000) as u32;
        let transit = arrival.wrapping_sub(rtp_timestamp);
        if let Some(prev) = self.transit {
            let d = transit.wrapping_sub(prev) as i32;
            self.jitter += (d.unsigned_abs() as f64 - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    /// Interarrival jitter in RTP timestamp units (RFC 3550 A.8).
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// Interarrival jitter as a duration.
    pub fn jitter_duration(&self) -> Duration {
        Duration::from_secs_f64(self.jitter / self.clock_rate as f64)
    }

    /// Packets expected (RFC 3550 A.3): highest extended sequence − base + 1.
    pub fn expected(&self) -> u64 {
        self.seq.as_ref().map_or(0, SequenceTracker::expected)
    }

    /// Packets received (duplicates included, as RFC 3550 A.3 counts them).
    pub fn received(&self) -> u64 {
        self.seq.as_ref().map_or(0, SequenceTracker::received)
    }

    /// Cumulative packets lost: expected − received (negative when duplicates outnumber loss).
    pub fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.received() as i64
    }

    /// The longest run of consecutive sequence numbers seen missing when a later packet arrived.
    pub fn max_burst_loss(&self) -> u64 {
        self.max_burst
    }

    /// The highest extended sequence number received, once the source is valid.
    pub fn max_seq(&self) -> Option<super::SeqNo> {
        self.seq
            .as_ref()
            .filter(|t| t.is_valid())
            .map(SequenceTracker::max_seq)
    }

    /// The fraction lost in the last interval closed by [`ReceiverStats::report_block`], as the
    /// 8-bit fixed-point RTCP value (lost/expected × 256).
    pub fn last_fraction_lost(&self) -> u8 {
        self.last_fraction
    }

    /// Records a sender report from this source: its NTP timestamp (whose middle 32 bits become
    /// LSR) and when it arrived (for DLSR).
    pub fn on_sender_report(&mut self, ntp: NtpTime, now: Instant) {
        self.last_sr = Some((ntp.middle32(), now));
    }

    /// Builds the report block about this source and closes the loss interval (RFC 3550 A.3):
    /// the fraction lost covers the packets since the previous call.
    pub fn report_block(&mut self, ssrc: Ssrc, now: Instant) -> ReportBlock {
        let expected = self.expected();
        let received = self.received();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        self.last_fraction = fraction;
        // RFC 3550 §6.4.1: cumulative lost is a signed 24-bit field; clamp rather than wrap.
        let lost = self.cumulative_lost().clamp(-0x80_0000, 0x7f_ffff) as i32;
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => {
                let delay = now.saturating_duration_since(at);
                // DLSR is "expressed in units of 1/65536 seconds".
                let dlsr = (delay.as_nanos() * 65536 / 1_000_000_000).min(u32::MAX as u128);
                (lsr, dlsr as u32)
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc,
            fraction_lost: fraction,
            cumulative_lost: lost,
            highest_seq: self.seq.as_ref().map_or(0, |t| t.max_seq().0 as u32),
            jitter: self.jitter as u32,
            lsr,
            dlsr,
        }
    }
}
