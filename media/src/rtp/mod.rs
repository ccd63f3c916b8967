//! RTP and RTCP (RFC 3550): packets, sequence extension, receiver statistics.
//!
//! Everything here is our own code rather than webrtc-rs's `rtc-rtp`/`rtc-rtcp`: those pull in
//! some 75 crates (`url`, ICU, `nix`, `rand`) for what is, on the audio path, a 12-byte header,
//! and the per-packet path is the hottest in the media plane (see `benches/rtp.rs`).
//!
//! - [`packet`]: [`RtpPacket`], a parsed view whose payload is a zero-copy slice of the datagram,
//!   and [`RtpHeader`] which writes a header plus payload into a caller buffer.
//! - [`seq`]: 16 → 64-bit sequence extension with the probation logic of RFC 3550 A.1.
//! - [`stats`]: receiver statistics (loss, fraction lost, interarrival jitter per A.8, bursts).
//! - [`rtcp`]: SR, RR, SDES, BYE in compound packets, NTP time and round-trip time.

pub mod packet;
pub mod rtcp;
pub mod seq;
pub mod stats;

pub use packet::{RtpExtension, RtpHeader, RtpPacket, is_rtcp};
pub use rtcp::{
    Bye, NtpTime, ReceiverReport, ReportBlock, RtcpPacket, Sdes, SdesChunk, SenderReport,
    round_trip_time,
};
pub use seq::{SeqUpdate, SequenceTracker};
pub use stats::ReceiverStats;

use std::fmt;

/// A synchronization source identifier (RFC 3550 §3): the 32-bit id of one RTP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ssrc(pub u32);

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// An extended (64-bit) RTP sequence number: the 16-bit wire value plus the count of wraps,
/// so that ordering and gap arithmetic are plain integer arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// The 16-bit value carried on the wire.
    pub fn wire(self) -> u16 {
        self.0 as u16
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An RTP payload type (7 bits, RFC 3550 §5.1). Static assignments come from RFC 3551.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadType(u8);

impl PayloadType {
    /// PCMU (G.711 µ-law), static payload type 0.
    pub const PCMU: PayloadType = PayloadType(0);
    /// PCMA (G.711 A-law), static payload type 8.
    pub const PCMA: PayloadType = PayloadType(8);
    /// G.722, static payload type 9.
    pub const G722: PayloadType = PayloadType(9);
    /// Comfort noise (RFC 3389), static payload type 13.
    pub const CN: PayloadType = PayloadType(13);

    /// A payload type from its number; `None` above 127 (the field has 7 bits).
    pub const fn new(pt: u8) -> Option<PayloadType> {
        if pt <= 127 {
            Some(PayloadType(pt))
        } else {
            None
        }
    }

    /// The number, 0..=127.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why an RTP or RTCP packet was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than its fixed header, or shorter than its header fields claim.
    #[error("packet truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes required.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The version field is not 2.
    #[error("unsupported RTP/RTCP version {0}")]
    BadVersion(u8),
    /// The padding count is zero or larger than the payload.
    #[error("invalid padding")]
    BadPadding,
    /// The destination buffer is too small.
    #[error("buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes required.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A field holds a value that cannot be encoded (e.g. more than 15 CSRCs).
    #[error("invalid field: {0}")]
    Invalid(&'static str),
    /// An RTCP compound packet fails the validity checks of RFC 3550 A.2.
    #[error("invalid RTCP compound packet: {0}")]
    BadCompound(&'static str),
}
