//! The RTP fixed header (RFC 3550 §5.1): parse into a zero-copy view, write into a caller buffer.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! |                           timestamp                           |
//! |           synchronization source (SSRC) identifier            |
//! |            contributing source (CSRC) identifiers             |
//! ```

use bytes::Bytes;

use super::{PayloadType, RtpError, Ssrc};

/// Length of the fixed RTP header.
pub const FIXED_HEADER_LEN: usize = 12;

/// A header extension (RFC 3550 §5.3.1): the profile-defined 16 bits and the data (a slice of the
/// original datagram).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpExtension {
    /// The 16-bit profile-defined value (e.g. 0xBEDE for RFC 8285 one-byte headers).
    pub profile: u16,
    /// The extension data, a multiple of 4 bytes.
    pub data: Bytes,
}

/// A parsed RTP packet. The payload and extension are [`Bytes`] slices of the received datagram:
/// parsing copies nothing but the fixed fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    /// The marker bit (for audio: the first packet of a talkspurt, or the start of a DTMF event).
    pub marker: bool,
    /// The payload type.
    pub payload_type: PayloadType,
    /// The 16-bit sequence number as sent.
    pub sequence: u16,
    /// The media timestamp.
    pub timestamp: u32,
    /// The stream's synchronization source.
    pub ssrc: Ssrc,
    csrc: [u32; 15],
    csrc_count: u8,
    /// The header extension, if the X bit was set.
    pub extension: Option<RtpExtension>,
    /// The payload, padding removed.
    pub payload: Bytes,
    /// The number of padding bytes that followed the payload (0 when the P bit was clear).
    pub padding: u8,
}

impl RtpPacket {
    /// Parses one RTP packet from a datagram.
    ///
    /// Rejects a version other than 2, a truncated header, CSRC list or extension, and a padding
    /// count of zero or one that runs past the header (RFC 3550 A.1's validity checks).
    pub fn parse(data: &Bytes) -> Result<RtpPacket, RtpError> {
        let b = data.as_ref();
        if b.len() < FIXED_HEADER_LEN {
            return Err(RtpError::Truncated {
                need: FIXED_HEADER_LEN,
                have: b.len(),
            });
        }
        let version = b[0] >> 6;
        // RFC 3550 A.1: "RTP version field must equal 2."
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let has_padding = b[0] & 0x20 != 0;
        let has_extension = b[0] & 0x10 != 0;
        let csrc_count = b[0] & 0x0f;
        let marker = b[1] & 0x80 != 0;
        let payload_type = PayloadType(b[1] & 0x7f);
        let sequence = u16::from_be_bytes([b[2], b[3]]);
        let timestamp = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let ssrc = Ssrc(u32::from_be_bytes([b[8], b[9], b[10], b[11]]));
        let mut off = FIXED_HEADER_LEN;
        let csrc_end = off + 4 * csrc_count as usize;
        if b.len() < csrc_end {
            return Err(RtpError::Truncated {
                need: csrc_end,
                have: b.len(),
            });
        }
        let mut csrc = [0u32; 15];
        for (i, c) in csrc.iter_mut().take(csrc_count as usize).enumerate() {
            let o = off + 4 * i;
            *c = u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        }
        off = csrc_end;
        let extension = if has_extension {
            if b.len() < off + 4 {
                return Err(RtpError::Truncated {
                    need: off + 4,
                    have: b.len(),
                });
            }
            let profile = u16::from_be_bytes([b[off], b[off + 1]]);
            let words = u16::from_be_bytes([b[off + 2], b[off + 3]]) as usize;
            let end = off + 4 + 4 * words;
            if b.len() < end {
                return Err(RtpError::Truncated {
                    need: end,
                    have: b.len(),
                });
            }
            let ext = RtpExtension {
                profile,
                data: data.slice(off + 4..end),
            };
            off = end;
            Some(ext)
        } else {
            None
        };
        let mut end = b.len();
        let mut padding = 0u8;
        if has_padding {
            // RFC 3550 §5.1: "The last octet of the padding contains a count of how many padding
            // octets should be ignored, including itself." A zero count, or one that eats into the
            // header, cannot have come from a conforming sender.
            let count = b[b.len() - 1];
            if count == 0 || (count as usize) > end - off {
                return Err(RtpError::BadPadding);
            }
            padding = count;
            end -= count as usize;
        }
        Ok(RtpPacket {
            marker,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            csrc,
            csrc_count,
            extension,
            payload: data.slice(off..end),
            padding,
        })
    }

    /// The contributing sources (at most 15).
    pub fn csrcs(&self) -> &[u32] {
        &self.csrc[..self.csrc_count as usize]
    }

    /// The header fields, for re-serializing this packet with [`RtpHeader::write`].
    pub fn header(&self) -> RtpHeader<'_> {
        RtpHeader {
            marker: self.marker,
            payload_type: self.payload_type,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
            csrcs: self.csrcs(),
            extension: self
                .extension
                .as_ref()
                .map(|e| (e.profile, e.data.as_ref())),
        }
    }
}

/// The header of an outgoing packet; [`RtpHeader::write`] serializes it and a payload into a
/// caller-provided buffer (no allocation on the send path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader<'a> {
    /// The marker bit.
    pub marker: bool,
    /// The payload type.
    pub payload_type: PayloadType,
    /// The 16-bit sequence number.
    pub sequence: u16,
    /// The media timestamp.
    pub timestamp: u32,
    /// The synchronization source.
    pub ssrc: Ssrc,
    /// Contributing sources (at most 15).
    pub csrcs: &'a [u32],
    /// An optional header extension: profile value and data (length a multiple of 4).
    pub extension: Option<(u16, &'a [u8])>,
}

impl<'a> RtpHeader<'a> {
    /// A header with no CSRCs and no extension.
    pub fn new(payload_type: PayloadType, sequence: u16, timestamp: u32, ssrc: Ssrc) -> Self {
        RtpHeader {
            marker: false,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            csrcs: &[],
            extension: None,
        }
    }

    /// The header's length in bytes.
    pub fn len(&self) -> usize {
        FIXED_HEADER_LEN + 4 * self.csrcs.len() + self.extension.map_or(0, |(_, d)| 4 + d.len())
    }

    /// Always false: a header has at least 12 bytes. (Present for clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the header followed by `payload` into `buf`; returns the number of bytes written.
    pub fn write(&self, payload: &[u8], buf: &mut [u8]) -> Result<usize, RtpError> {
        if self.csrcs.len() > 15 {
            return Err(RtpError::Invalid("more than 15 CSRCs"));
        }
        if let Some((_, d)) = self.extension
            && (!d.len().is_multiple_of(4) || d.len() / 4 > u16::MAX as usize)
        {
            return Err(RtpError::Invalid("extension length not a multiple of 4"));
        }
        let hlen = self.len();
        let need = hlen + payload.len();
        if buf.len() < need {
            return Err(RtpError::BufferTooSmall {
                need,
                have: buf.len(),
            });
        }
        buf[0] = 0x80 | if self.extension.is_some() { 0x10 } else { 0 } | self.csrcs.len() as u8;
        buf[1] = (self.marker as u8) << 7 | self.payload_type.get();
        buf[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        buf[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.0.to_be_bytes());
        let mut off = FIXED_HEADER_LEN;
        for c in self.csrcs {
            buf[off..off + 4].copy_from_slice(&c.to_be_bytes());
            off += 4;
        }
        if let Some((profile, d)) = self.extension {
            buf[off..off + 2].copy_from_slice(&profile.to_be_bytes());
            buf[off + 2..off + 4].copy_from_slice(&((d.len() / 4) as u16).to_be_bytes());
            buf[off + 4..off + 4 + d.len()].copy_from_slice(d);
            off += 4 + d.len();
        }
        buf[off..off + payload.len()].copy_from_slice(payload);
        Ok(need)
    }

    /// Serializes into a new vector (convenience for tests and cold paths).
    pub fn to_vec(&self, payload: &[u8]) -> Result<Vec<u8>, RtpError> {
        let mut v = vec![0u8; self.len() + payload.len()];
        let n = self.write(payload, &mut v)?;
        v.truncate(n);
        Ok(v)
    }
}

/// Tells RTCP from RTP on a multiplexed port (RFC 5761 §4): RTCP packet types 192–223 occupy
/// what would be RTP payload types 64–95 with the marker bit set.
pub fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 2 && (192..=223).contains(&data[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_padding_count_is_rejected() {
        let mut v = RtpHeader::new(PayloadType::PCMU, 1, 2, Ssrc(3))
            .to_vec(&[1, 2, 0])
            .unwrap();
        v[0] |= 0x20;
        assert_eq!(RtpPacket::parse(&Bytes::from(v)), Err(RtpError::BadPadding));
    }

    #[test]
    fn rtcp_demux_by_second_byte() {
        assert!(is_rtcp(&[0x80, 200]));
        assert!(!is_rtcp(&[0x80, 0]));
        assert!(!is_rtcp(&[0x80, 0x80 | 8]));
    }
}
