//! RTCP (RFC 3550 §6): sender and receiver reports, SDES, BYE, compound packets, NTP time and
//! round-trip time from LSR/DLSR.

use std::time::Duration;

use bytes::Bytes;

use super::{RtpError, Ssrc};

/// RTCP packet type: sender report.
pub const PT_SR: u8 = 200;
/// RTCP packet type: receiver report.
pub const PT_RR: u8 = 201;
/// RTCP packet type: source description.
pub const PT_SDES: u8 = 202;
/// RTCP packet type: goodbye.
pub const PT_BYE: u8 = 203;
/// SDES item type CNAME.
pub const SDES_CNAME: u8 = 1;

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A 64-bit NTP timestamp: seconds since 1900 in the high 32 bits, the fraction in the low 32.
/// The caller supplies it from the wall clock (this crate never reads a clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// From the time since the Unix epoch (what `SystemTime::duration_since(UNIX_EPOCH)` gives).
    pub fn from_unix(since_epoch: Duration) -> NtpTime {
        let secs = since_epoch.as_secs().wrapping_add(NTP_UNIX_OFFSET);
        let frac = ((since_epoch.subsec_nanos() as u64) << 32) / 1_000_000_000;
        NtpTime((secs << 32) | frac)
    }

    /// The middle 32 bits (16.16 fixed point seconds), as carried in LSR (RFC 3550 §6.4.1).
    pub fn middle32(self) -> u32 {
        (self.0 >> 16) as u32
    }
}

/// One reception report block (RFC 3550 §6.4.1), 24 bytes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: Ssrc,
    /// Fraction lost since the previous report, 8-bit fixed point (×256).
    pub fraction_lost: u8,
    /// Cumulative packets lost (signed 24 bits).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from the source (0: none).
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

/// A sender report (PT 200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderReport {
    /// The sender.
    pub ssrc: Ssrc,
    /// Wall-clock time of this report.
    pub ntp: NtpTime,
    /// The RTP timestamp corresponding to `ntp`.
    pub rtp_timestamp: u32,
    /// Packets sent since starting.
    pub packet_count: u32,
    /// Payload octets sent since starting.
    pub octet_count: u32,
    /// Reports about the sources this sender receives (at most 31).
    pub reports: Vec<ReportBlock>,
}

/// A receiver report (PT 201).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverReport {
    /// The reporter.
    pub ssrc: Ssrc,
    /// Reception reports (at most 31).
    pub reports: Vec<ReportBlock>,
}

/// One SDES chunk: a source and its items (type, value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesChunk {
    /// The described source.
    pub ssrc: Ssrc,
    /// The items as (type, value); type 1 is CNAME.
    pub items: Vec<(u8, Bytes)>,
}

impl SdesChunk {
    /// A chunk carrying only a CNAME (the one item RFC 3550 §6.5 requires).
    pub fn cname(ssrc: Ssrc, cname: &str) -> SdesChunk {
        SdesChunk {
            ssrc,
            items: vec![(SDES_CNAME, Bytes::copy_from_slice(cname.as_bytes()))],
        }
    }

    /// The CNAME item, if present.
    pub fn get_cname(&self) -> Option<&[u8]> {
        self.items
            .iter()
            .find(|(t, _)| *t == SDES_CNAME)
            .map(|(_, v)| v.as_ref())
    }
}

/// A source description packet (PT 202).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdes {
    /// The chunks (at most 31).
    pub chunks: Vec<SdesChunk>,
}

/// A goodbye packet (PT 203).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bye {
    /// The sources leaving (at most 31).
    pub ssrcs: Vec<Ssrc>,
    /// The optional reason text.
    pub reason: Option<Bytes>,
}

/// One packet of a compound RTCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    /// Sender report.
    SenderReport(SenderReport),
    /// Receiver report.
    ReceiverReport(ReceiverReport),
    /// Source description.
    Sdes(Sdes),
    /// Goodbye.
    Bye(Bye),
    /// Any other type (APP, feedback, XR...), kept as its header fields and body.
    Other {
        /// Packet type.
        packet_type: u8,
        /// The 5-bit count/format field.
        count: u8,
        /// The body after the 4-byte header (padding removed).
        body: Bytes,
    },
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn parse_block(b: &[u8]) -> ReportBlock {
    // Sign-extend the 24-bit cumulative lost.
    let lost = (((b[5] as u32) << 16 | (b[6] as u32) << 8 | b[7] as u32) << 8) as i32 >> 8;
    ReportBlock {
        ssrc: Ssrc(be32(b, 0)),
        fraction_lost: b[4],
        cumulative_lost: lost,
        highest_seq: be32(b, 8),
        jitter: be32(b, 12),
        lsr: be32(b, 16),
        dlsr: be32(b, 20),
    }
}

fn parse_blocks(body: &[u8], count: usize) -> Result<Vec<ReportBlock>, RtpError> {
    if body.len() < count * 24 {
        return Err(RtpError::Truncated {
            need: count * 24,
            have: body.len(),
        });
    }
    Ok((0..count)
        .map(|i| parse_block(&body[i * 24..i * 24 + 24]))
        .collect())
}

impl RtcpPacket {
    /// Parses a compound RTCP packet, applying the validity checks of RFC 3550 A.2: every
    /// packet has version 2, only the last may be padded, the first is an SR or RR, and the
    /// lengths add up to the datagram's length exactly.
    pub fn parse_compound(data: &Bytes) -> Result<Vec<RtcpPacket>, RtpError> {
        let b = data.as_ref();
        let mut out = Vec::with_capacity(3);
        let mut off = 0;
        while off < b.len() {
            if b.len() - off < 4 {
                return Err(RtpError::Truncated {
                    need: off + 4,
                    have: b.len(),
                });
            }
            let version = b[off] >> 6;
            if version != 2 {
                return Err(RtpError::BadVersion(version));
            }
            let padded = b[off] & 0x20 != 0;
            let count = b[off] & 0x1f;
            let pt = b[off + 1];
            let words = u16::from_be_bytes([b[off + 2], b[off + 3]]) as usize;
            let end = off + 4 * (words + 1);
            if end > b.len() {
                return Err(RtpError::Truncated {
                    need: end,
                    have: b.len(),
                });
            }
            if off == 0 && pt != PT_SR && pt != PT_RR {
                // A.2: "the payload type field of the first RTCP packet in a compound packet
                // must be equal to SR or RR."
                return Err(RtpError::BadCompound("first packet is not SR or RR"));
            }
            let mut body_end = end;
            if padded {
                // A.2: "the padding bit should be zero for the first packet of a compound RTCP
                // packet because padding should only be applied, if it is needed, to the last
                // packet."
                if end != b.len() {
                    return Err(RtpError::BadCompound(
                        "padding on a packet that is not last",
                    ));
                }
                let pad = b[end - 1] as usize;
                if pad == 0 || pad > end - off - 4 {
                    return Err(RtpError::BadPadding);
                }
                body_end -= pad;
            }
            let body = &b[off + 4..body_end];
            let pkt = match pt {
                PT_SR => {
                    if body.len() < 24 {
                        return Err(RtpError::Truncated {
                            need: off + 28,
                            have: b.len(),
                        });
                    }
                    RtcpPacket::SenderReport(SenderReport {
                        ssrc: Ssrc(be32(body, 0)),
                        ntp: NtpTime((be32(body, 4) as u64) << 32 | be32(body, 8) as u64),
                        rtp_timestamp: be32(body, 12),
                        packet_count: be32(body, 16),
                        octet_count: be32(body, 20),
                        reports: parse_blocks(&body[24..], count as usize)?,
                    })
                }
                PT_RR => {
                    if body.len() < 4 {
                        return Err(RtpError::Truncated {
                            need: off + 8,
                            have: b.len(),
                        });
                    }
                    RtcpPacket::ReceiverReport(ReceiverReport {
                        ssrc: Ssrc(be32(body, 0)),
                        reports: parse_blocks(&body[4..], count as usize)?,
                    })
                }
                PT_SDES => RtcpPacket::Sdes(parse_sdes(data, off + 4, body_end, count as usize)?),
                PT_BYE => {
                    let n = count as usize;
                    if body.len() < 4 * n {
                        return Err(RtpError::Truncated {
                            need: off + 4 + 4 * n,
                            have: b.len(),
                        });
                    }
                    let ssrcs = (0..n).map(|i| Ssrc(be32(body, 4 * i))).collect();
                    let reason = if body.len() > 4 * n {
                        let len = body[4 * n] as usize;
                        let start = off + 4 + 4 * n + 1;
                        if start + len > body_end {
                            return Err(RtpError::Truncated {
                                need: start + len,
                                have: body_end,
                            });
                        }
                        Some(data.slice(start..start + len))
                    } else {
                        None
                    };
                    RtcpPacket::Bye(Bye { ssrcs, reason })
                }
                _ => RtcpPacket::Other {
                    packet_type: pt,
                    count,
                    body: data.slice(off + 4..body_end),
                },
            };
            out.push(pkt);
            off = end;
        }
        if out.is_empty() {
            return Err(RtpError::Truncated { need: 4, have: 0 });
        }
        Ok(out)
    }

    /// Appends this packet to `out` in wire format (no padding).
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), RtpError> {
        let start = out.len();
        match self {
            RtcpPacket::SenderReport(sr) => {
                check_count(sr.reports.len())?;
                header(out, sr.reports.len() as u8, PT_SR);
                out.extend_from_slice(&sr.ssrc.0.to_be_bytes());
                out.extend_from_slice(&sr.ntp.0.to_be_bytes());
                out.extend_from_slice(&sr.rtp_timestamp.to_be_bytes());
                out.extend_from_slice(&sr.packet_count.to_be_bytes());
                out.extend_from_slice(&sr.octet_count.to_be_bytes());
                sr.reports.iter().for_each(|r| write_block(r, out));
            }
            RtcpPacket::ReceiverReport(rr) => {
                check_count(rr.reports.len())?;
                header(out, rr.reports.len() as u8, PT_RR);
                out.extend_from_slice(&rr.ssrc.0.to_be_bytes());
                rr.reports.iter().for_each(|r| write_block(r, out));
            }
            RtcpPacket::Sdes(sdes) => {
                check_count(sdes.chunks.len())?;
                header(out, sdes.chunks.len() as u8, PT_SDES);
                for c in &sdes.chunks {
                    let chunk_start = out.len();
                    out.extend_from_slice(&c.ssrc.0.to_be_bytes());
                    for (t, v) in &c.items {
                        if *t == 0 || v.len() > 255 {
                            return Err(RtpError::Invalid("SDES item type 0 or longer than 255"));
                        }
                        out.push(*t);
                        out.push(v.len() as u8);
                        out.extend_from_slice(v);
                    }
                    // §6.5: the item list ends with a null octet, then pads to a 32-bit boundary.
                    out.push(0);
                    while !(out.len() - chunk_start).is_multiple_of(4) {
                        out.push(0);
                    }
                }
            }
            RtcpPacket::Bye(bye) => {
                check_count(bye.ssrcs.len())?;
                header(out, bye.ssrcs.len() as u8, PT_BYE);
                bye.ssrcs
                    .iter()
                    .for_each(|s| out.extend_from_slice(&s.0.to_be_bytes()));
                if let Some(reason) = &bye.reason {
                    if reason.len() > 255 {
                        return Err(RtpError::Invalid("BYE reason longer than 255"));
                    }
                    out.push(reason.len() as u8);
                    out.extend_from_slice(reason);
                    while !(out.len() - start).is_multiple_of(4) {
                        out.push(0);
                    }
                }
            }
            RtcpPacket::Other {
                packet_type,
                count,
                body,
            } => {
                if !body.len().is_multiple_of(4) || *count > 31 {
                    return Err(RtpError::Invalid("RTCP body not a multiple of 4"));
                }
                header(out, *count, *packet_type);
                out.extend_from_slice(body);
            }
        }
        let words = (out.len() - start) / 4 - 1;
        if words > u16::MAX as usize {
            return Err(RtpError::Invalid("RTCP packet too long"));
        }
        out[start + 2..start + 4].copy_from_slice(&(words as u16).to_be_bytes());
        Ok(())
    }

    /// Serializes a compound packet.
    pub fn write_compound(packets: &[RtcpPacket]) -> Result<Vec<u8>, RtpError> {
        let mut out = Vec::with_capacity(128);
        for p in packets {
            p.write(&mut out)?;
        }
        Ok(out)
    }
}

fn check_count(n: usize) -> Result<(), RtpError> {
    if n > 31 {
        Err(RtpError::Invalid("more than 31 items in an RTCP packet"))
    } else {
        Ok(())
    }
}

fn header(out: &mut Vec<u8>, count: u8, pt: u8) {
    out.extend_from_slice(&[0x80 | count, pt, 0, 0]);
}

fn write_block(r: &ReportBlock, out: &mut Vec<u8>) {
    out.extend_from_slice(&r.ssrc.0.to_be_bytes());
    out.push(r.fraction_lost);
    let lost = (r.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32).to_be_bytes();
    out.extend_from_slice(&lost[1..4]);
    out.extend_from_slice(&r.highest_seq.to_be_bytes());
    out.extend_from_slice(&r.jitter.to_be_bytes());
    out.extend_from_slice(&r.lsr.to_be_bytes());
    out.extend_from_slice(&r.dlsr.to_be_bytes());
}

fn parse_sdes(data: &Bytes, start: usize, end: usize, count: usize) -> Result<Sdes, RtpError> {
    let b = data.as_ref();
    let mut off = start;
    let mut chunks = Vec::with_capacity(count.min(4));
    for _ in 0..count {
        if off + 4 > end {
            return Err(RtpError::Truncated {
                need: off + 4,
                have: end,
            });
        }
        let chunk_start = off;
        let ssrc = Ssrc(be32(b, off));
        off += 4;
        let mut items = Vec::new();
        loop {
            if off >= end {
                return Err(RtpError::BadCompound(
                    "SDES chunk without terminating null item",
                ));
            }
            let t = b[off];
            if t == 0 {
                off += 1;
                break;
            }
            if off + 2 > end {
                return Err(RtpError::Truncated {
                    need: off + 2,
                    have: end,
                });
            }
            let len = b[off + 1] as usize;
            if off + 2 + len > end {
                return Err(RtpError::Truncated {
                    need: off + 2 + len,
                    have: end,
                });
            }
            items.push((t, data.slice(off + 2..off + 2 + len)));
            off += 2 + len;
        }
        // Chunks start on 32-bit boundaries.
        off = chunk_start + (off - chunk_start).div_ceil(4) * 4;
        if off > end {
            return Err(RtpError::Truncated {
                need: off,
                have: end,
            });
        }
        chunks.push(SdesChunk { ssrc, items });
    }
    Ok(Sdes { chunks })
}

/// Round-trip time from a report block about our own stream (RFC 3550 §6.4.1):
/// `A - LSR - DLSR`, where `A` is the middle 32 bits of the wall-clock NTP time `now` at which
/// the report arrived. `None` when the peer has not yet received an SR from us (LSR = 0).
pub fn round_trip_time(now: NtpTime, block: &ReportBlock) -> Option<Duration> {
    if block.lsr == 0 {
        return None;
    }
    let rtt = now
        .middle32()
        .wrapping_sub(block.lsr)
        .wrapping_sub(block.dlsr);
    if rtt > u32::MAX / 2 {
        // Clock steps or a bogus DLSR give a "negative" RTT: report zero rather than ~18 hours.
        return Some(Duration::ZERO);
    }
    Some(Duration::from_nanos(rtt as u64 * 1_000_000_000 / 65536))
}
