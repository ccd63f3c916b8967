//! Sequence-number extension and source validation (RFC 3550 Appendix A.1).
//!
//! The 16-bit wire sequence number wraps every 65 536 packets (22 minutes of 20 ms audio), so we
//! keep a count of wraps ("cycles") and hand out a 64-bit [`SeqNo`]. A source is validated by
//! seeing `probation` packets in sequence; a jump larger than `MAX_DROPOUT` is treated as a
//! restarted sender only when the packet after it follows it.

use super::SeqNo;

/// RFC 3550 A.1: a forward jump up to this many packets is a gap (loss), not a restart.
pub const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: a backward step up to this many packets is reordering (or a duplicate).
pub const MAX_MISORDER: u16 = 100;
/// RFC 3550 A.1: consecutive packets needed before a new source is accepted.
pub const MIN_SEQUENTIAL: u8 = 2;

const RTP_SEQ_MOD: u64 = 1 << 16;

/// What [`SequenceTracker::update`] made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqUpdate {
    /// A valid packet, in order or after a gap; the new highest sequence number.
    InOrder(SeqNo),
    /// A valid packet older than (or equal to) the highest seen: reordered or duplicated.
    Late(SeqNo),
    /// The source is still on probation; the packet should not be used yet.
    Probation,
    /// A large jump: dropped, unless the next packet follows it (then the sender restarted).
    BadJump,
    /// The sender restarted its sequence (two packets in a row after a large jump); statistics
    /// were reset and this packet starts the new numbering.
    Restarted(SeqNo),
}

impl SeqUpdate {
    /// The extended sequence number when the packet is usable.
    pub fn seq(self) -> Option<SeqNo> {
        match self {
            SeqUpdate::InOrder(s) | SeqUpdate::Late(s) | SeqUpdate::Restarted(s) => Some(s),
            SeqUpdate::Probation | SeqUpdate::BadJump => None,
        }
    }
}

/// The per-source state of RFC 3550 A.1 (`source` minus the jitter fields, which live in
/// [`super::ReceiverStats`]).
#[derive(Debug, Clone)]
pub struct SequenceTracker {
    max_seq: u16,
    cycles: u64,
    base_seq: u64,
    bad_seq: u32,
    probation: u8,
    received: u64,
}

impl SequenceTracker {
    /// Prepares to track a source whose first packet carries `seq`; feed that packet (and every
    /// later one) to [`SequenceTracker::update`]. `probation` is the number of in-sequence
    /// packets required before the source is valid: [`MIN_SEQUENTIAL`] for an unknown source,
    /// 0 when signalling (SDP) already told us to expect it (RFC 3550 A.1: "the probation may
    /// be skipped ... if the source is known").
    pub fn new(seq: u16, probation: u8) -> SequenceTracker {
        let mut t = SequenceTracker {
            max_seq: seq,
            cycles: 0,
            base_seq: seq as u64,
            bad_seq: RTP_SEQ_MOD as u32 + 1,
            probation,
            received: 0,
        };
        t.init(seq);
        if probation > 0 {
            // A.1: `init_seq(s, seq); s->max_seq = seq - 1;` so that the first packet counts as
            // the first in-sequence one.
            t.max_seq = seq.wrapping_sub(1);
        }
        t
    }

    fn init(&mut self, seq: u16) {
        self.base_seq = seq as u64;
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD as u32 + 1;
        self.cycles = 0;
        self.received = 0;
    }

    /// The extended sequence number `seq` maps to, relative to the highest seen, without
    /// updating state (`None` before validation).
    pub fn extend(&self, seq: u16) -> SeqNo {
        let max = self.cycles + self.max_seq as u64;
        let delta = seq.wrapping_sub(self.max_seq) as i16 as i64;
        SeqNo(max.saturating_add_signed(delta))
    }

    /// Feeds one packet's sequence number (RFC 3550 A.1 `update_seq`).
    pub fn update(&mut self, seq: u16) -> SeqUpdate {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            // "Source is not valid until MIN_SEQUENTIAL packets with sequential sequence
            // numbers have been received."
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init(seq);
                    self.received += 1;
                    return SeqUpdate::InOrder(SeqNo(seq as u64));
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return SeqUpdate::Probation;
        }
        let result;
        if udelta < MAX_DROPOUT {
            // In order, with permissible gap.
            if udelta == 0 && self.received == 0 {
                // The first packet of a source accepted without probation.
                result = SeqUpdate::InOrder(SeqNo(self.cycles + seq as u64));
            } else if udelta == 0 {
                result = SeqUpdate::Late(SeqNo(self.cycles + seq as u64));
            } else {
                if seq < self.max_seq {
                    // Sequence number wrapped: count another 64K cycle.
                    self.cycles += RTP_SEQ_MOD;
                }
                self.max_seq = seq;
                result = SeqUpdate::InOrder(SeqNo(self.cycles + seq as u64));
            }
        } else if udelta as u64 <= RTP_SEQ_MOD - MAX_MISORDER as u64 {
            // The sequence number made a very large jump.
            if seq as u32 == self.bad_seq {
                // "Two sequential packets -- assume that the other side restarted without
                // telling us so just re-sync (i.e., pretend this was the first packet)."
                self.init(seq);
                self.received = 1;
                return SeqUpdate::Restarted(SeqNo(seq as u64));
            }
            self.bad_seq = (seq as u32 + 1) & (RTP_SEQ_MOD as u32 - 1);
            return SeqUpdate::BadJump;
        } else {
            // Duplicate or reordered packet.
            result = SeqUpdate::Late(self.extend(seq));
        }
        self.received += 1;
        result
    }

    /// The highest extended sequence number received.
    pub fn max_seq(&self) -> SeqNo {
        SeqNo(self.cycles + self.max_seq as u64)
    }

    /// The extended sequence number the statistics start from.
    pub fn base_seq(&self) -> SeqNo {
        SeqNo(self.base_seq)
    }

    /// Packets received since validation, duplicates included (RFC 3550 A.3 counts them, which
    /// is why "cumulative lost" can go negative).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets expected: highest extended sequence − base + 1 (RFC 3550 A.3).
    pub fn expected(&self) -> u64 {
        if self.probation > 0 {
            return 0;
        }
        (self.max_seq().0 + 1).saturating_sub(self.base_seq)
    }

    /// Whether the source has passed probation.
    pub fn is_valid(&self) -> bool {
        self.probation == 0
    }
}
