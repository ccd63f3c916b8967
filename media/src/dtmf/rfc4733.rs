//! RFC 4733 telephone-events: payload, receiver and sender.
//!
//! Payload format (RFC 4733 §2.3):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     event     |E|R| volume    |          duration             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! One key press is one *event*: every packet of it carries the RTP timestamp of the event's
//! start, so the receiver keys events by timestamp. The sender emits a start packet (RTP marker
//! bit set), updates with a growing duration, and three copies of the end packet (E bit).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Digit, DtmfError};

/// The fixed part of one telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TelephoneEvent {
    /// Event code (0-15 are the DTMF keys, 16 is flash; RFC 4733 §3.2).
    pub event: u8,
    /// E bit: this packet ends the event.
    pub end: bool,
    /// Power level as −dBm0, 0..=63 (only the low 6 bits are sent).
    pub volume: u8,
    /// Duration of the event so far, in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Size of the payload in bytes.
    pub const LEN: usize = 4;

    /// Parses the first 4 bytes of `payload`. Extra bytes are ignored: RFC 4733 §2.3 defines
    /// one event per payload, and redundancy (RFC 2198) arrives under its own payload type.
    /// The R bit is reserved: "The receiver MUST ignore" it (RFC 4733 §2.3), so it is dropped.
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        let [event, flags, d0, d1, ..] = *payload else {
            return Err(DtmfError::Truncated(payload.len()));
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4 payload bytes. The R bit is sent as zero ("MUST be set to zero by the sender").
    pub fn to_bytes(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        let flags = (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3F);
        [self.event, flags, d[0], d[1]]
    }

    /// Appends the 4 payload bytes to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
}

/// Why a reported event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// An end packet (E bit) arrived.
    EndPacket,
    /// No packet of the event arrived for the receiver's timeout.
    Timeout,
    /// A packet of a newer event (another timestamp) arrived before this one ended.
    Superseded,
}

/// One key press as reported by [`DtmfReceiver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// The key.
    pub digit: Digit,
    /// The RTP timestamp of the event's start (the key of the event).
    pub timestamp: u32,
    /// Duration in RTP timestamp units (the largest duration seen).
    pub duration: u32,
    /// Duration in milliseconds at the receiver's clock rate.
    pub duration_ms: u32,
    /// How the event ended.
    pub ended: EndReason,
}

#[derive(Debug, Clone)]
struct Current {
    timestamp: u32,
    digit: Digit,
    duration: u16,
    last_seen: Instant,
}

/// Turns received telephone-event packets into one [`DtmfEvent`] per key press.
///
/// Feed every packet of the negotiated telephone-event payload type to
/// [`handle_packet`](Self::handle_packet); take reports from [`poll_event`](Self::poll_event).
/// Drive the timeout with [`poll_timeout`](Self::poll_timeout) /
/// [`handle_timeout`](Self::handle_timeout).
///
/// - An event is identified by its RTP timestamp; the first packet seen of a new timestamp
///   starts it, whether or not it is the start packet (a lost start is tolerated).
/// - It is reported once: on its first end packet; the retransmitted end packets (RFC 4733
///   §2.5.1.4: the final packet "SHOULD be sent a total of three times") and late updates carry
///   a timestamp already reported and are dropped.
/// - An event that never gets an end packet is reported when no packet of it arrived for
///   `timeout`, or as soon as a packet of a newer event arrives.
/// - Events that are not DTMF keys (codes above 15, e.g. flash) are ignored.
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    clock_rate: u32,
    timeout: Duration,
    current: Option<Current>,
    /// Timestamps of recently reported events, newest last (for end-packet deduplication).
    finished: VecDeque<u32>,
    events: VecDeque<DtmfEvent>,
}

/// How many reported timestamps the receiver remembers to drop retransmissions.
const FINISHED_MEMORY: usize = 8;

impl DtmfReceiver {
    /// Default time without packets after which an unfinished event is reported. The sender
    /// sends an update at least every ptime (and RFC 4733 §2.5.1.2 suggests 50 ms); a gap of
    /// 500 ms means the end packets were lost.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

    /// A receiver for a telephone-event stream at `clock_rate` Hz (usually 8000).
    pub fn new(clock_rate: u32) -> Self {
        DtmfReceiver {
            clock_rate: clock_rate.max(1),
            timeout: Self::DEFAULT_TIMEOUT,
            current: None,
            finished: VecDeque::with_capacity(FINISHED_MEMORY),
            events: VecDeque::new(),
        }
    }

    /// Sets the timeout after which an event without an end packet is reported.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Handles one telephone-event packet: its RTP timestamp, payload and arrival time.
    /// Errors only for a payload shorter than 4 bytes (the packet is then ignored).
    pub fn handle_packet(
        &mut self,
        rtp_timestamp: u32,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), DtmfError> {
        let ev = TelephoneEvent::parse(payload)?;
        let Some(digit) = Digit::from_event(ev.event) else {
            return Ok(());
        };
        if self.finished.contains(&rtp_timestamp) {
            // A retransmitted end packet or a late update of a reported event.
            return Ok(());
        }
        match &mut self.current {
            Some(cur) if cur.timestamp == rtp_timestamp => {
                cur.duration = cur.duration.max(ev.duration);
                cur.last_seen = now;
            }
            _ => {
                if let Some(old) = self.current.take() {
                    self.report(old, EndReason::Superseded);
                }
                self.current = Some(Current {
                    timestamp: rtp_timestamp,
                    digit,
                    duration: ev.duration,
                    last_seen: now,
                });
            }
        }
        if ev.end
            && let Some(mut cur) = self.current.take()
        {
            // The end packet carries the final duration (RFC 4733 §2.5.1.4).
            cur.duration = ev.duration.max(cur.duration);
            self.report(cur, EndReason::EndPacket);
        }
        Ok(())
    }

    /// The next reported key press, oldest first.
    pub fn poll_event(&mut self) -> Option<DtmfEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if an event is
    /// in progress.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.as_ref().map(|c| c.last_seen + self.timeout)
    }

    /// Reports the event in progress if no packet of it arrived for the timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(cur) = &self.current
            && now >= cur.last_seen + self.timeout
        {
            let cur = self.current.take().expect("checked just above");
            self.report(cur, EndReason::Timeout);
        }
    }

    fn report(&mut self, cur: Current, ended: EndReason) {
        if self.finished.len() == FINISHED_MEMORY {
            self.finished.pop_front();
        }
        self.finished.push_back(cur.timestamp);
        let duration = cur.duration as u32;
        self.events.push_back(DtmfEvent {
            digit: cur.digit,
            timestamp: cur.timestamp,
            duration,
            duration_ms: (duration as u64 * 1000 / self.clock_rate as u64) as u32,
            ended,
        });
    }
}

/// One telephone-event packet to send: what a session needs to build the RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPacket {
    /// RTP marker bit: set on the first packet of the event only (RFC 4733 §2.5.1.1), so a
    /// receiver can tell a new event from a retransmission.
    pub marker: bool,
    /// RTP timestamp: the event's start timestamp, the same for every packet of the event.
    pub timestamp: u32,
    /// The payload fields.
    pub event: TelephoneEvent,
}

impl DtmfPacket {
    /// The 4 payload bytes.
    pub fn payload(&self) -> [u8; 4] {
        self.event.to_bytes()
    }
}

/// Produces the packet sequence of one key press; the session takes one packet per ptime.
///
/// For a 100 ms digit at ptime 20 ms and 8 kHz: a start packet (marker, duration 160), updates
/// with durations 320, 480, 640, then three end packets with duration 800. RFC 4733 §2.5.1.4:
/// "The final packet for each event and for each segment SHOULD be sent a total of three times
/// at the interval used by the source for updates" — one per `next_packet` call, i.e. per ptime.
/// Durations above 65 535 units (8.19 s at 8 kHz) are clamped rather than split into segments.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    digit: Digit,
    timestamp: u32,
    volume: u8,
    step: u32,
    total: u32,
    /// Duration carried by the next non-end packet.
    next_duration: u32,
    started: bool,
    ends_left: u8,
}

impl DtmfSender {
    /// Default volume, in −dBm0 (a typical key press level).
    pub const DEFAULT_VOLUME: u8 = 10;
    /// Copies of the end packet that are sent.
    pub const END_PACKETS: u8 = 3;

    /// A sender for `digit` starting at RTP timestamp `start_timestamp`, lasting
    /// `duration_ms`, with one packet every `ptime_ms` at `clock_rate` Hz.
    pub fn new(
        digit: Digit,
        start_timestamp: u32,
        duration_ms: u32,
        ptime_ms: u32,
        clock_rate: u32,
    ) -> Result<Self, DtmfError> {
        if ptime_ms == 0 || clock_rate == 0 {
            return Err(DtmfError::BadTiming);
        }
        let step = (clock_rate as u64 * ptime_ms as u64 / 1000).max(1) as u32;
        let total =
            (clock_rate as u64 * duration_ms as u64 / 1000).clamp(1, u16::MAX as u64) as u32;
        Ok(DtmfSender {
            digit,
            timestamp: start_timestamp,
            volume: Self::DEFAULT_VOLUME,
            step: step.min(u16::MAX as u32),
            total,
            next_duration: step.min(total),
            started: false,
            ends_left: Self::END_PACKETS,
        })
    }

    /// Sets the volume (−dBm0, 0..=63).
    pub fn with_volume(mut self, volume: u8) -> Self {
        self.volume = volume.min(63);
        self
    }

    /// The digit being sent.
    pub fn digit(&self) -> Digit {
        self.digit
    }

    /// The next packet, or `None` once the last end packet was given out.
    pub fn next_packet(&mut self) -> Option<DtmfPacket> {
        let marker = !self.started;
        self.started = true;
        if self.next_duration < self.total {
            let ev = self.event(self.next_duration as u16, false);
            self.next_duration += self.step;
            return Some(DtmfPacket {
                marker,
                timestamp: self.timestamp,
                event: ev,
            });
        }
        if self.ends_left == 0 {
            return None;
        }
        self.ends_left -= 1;
        Some(DtmfPacket {
            marker,
            timestamp: self.timestamp,
            event: self.event(self.total as u16, true),
        })
    }

    /// True once every packet was given out.
    pub fn is_finished(&self) -> bool {
        self.ends_left == 0
    }

    /// Total duration in RTP timestamp units.
    pub fn duration(&self) -> u32 {
        self.total
    }

    fn event(&self, duration: u16, end: bool) -> TelephoneEvent {
        TelephoneEvent {
            event: self.digit.event(),
            end,
            volume: self.volume,
            duration,
        }
    }
}

impl Iterator for DtmfSender {
    type Item = DtmfPacket;
    fn next(&mut self) -> Option<DtmfPacket> {
        self.next_packet()
    }
}
