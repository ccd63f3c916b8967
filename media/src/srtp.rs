//! SRTP and SRTCP (RFC 3711) keyed by SDES (RFC 4568), on `rtc-srtp`'s AES-CM + HMAC-SHA1.
//!
//! [`Srtp`] holds the two one-way contexts of a call: ours (we encrypt with the key we put in
//! our `a=crypto`) and the peer's (we decrypt with the key it put in its own). Keys come from the
//! caller ([`MasterKey`]): this crate has no randomness.
//!
//! Inbound packets are authenticated before anything else looks at them: a packet that fails
//! the HMAC, repeats an index inside the replay window, or is too short is an [`SrtpError`] that
//! the media session counts and drops. `rtc-srtp` keeps rollover and replay state per SSRC and
//! creates it for every SSRC it is shown, authentic or not; so a packet under an SSRC that has
//! not authenticated yet is first checked on a throw-away context, and only an authentic one
//! reaches the kept context. Forged packets under random SSRCs thus leave no state behind.

use std::fmt;

use rtc_srtp::context::Context;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;

/// The replay window (RFC 3711 §3.3.2: at least 64; libsrtp uses 128).
const REPLAY_WINDOW: usize = 128;
/// How many SSRCs of the peer may authenticate (a call has one; a few restarts are normal).
/// Beyond it a new SSRC's packets are refused, so the kept per-SSRC state stays bounded.
const MAX_REMOTE_SSRCS: usize = 16;

/// An SDES crypto suite this crate supports (RFC 4568 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// `AES_CM_128_HMAC_SHA1_80`: AES-128 counter mode, 80-bit HMAC-SHA1 tag.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`: the same with a 32-bit tag on RTP (80 bits on RTCP).
    AesCm128HmacSha1_32,
}

impl SrtpSuite {
    /// Every suite, in our order of preference.
    pub const ALL: [SrtpSuite; 2] = [
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32,
    ];

    /// The suite's name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// The suite named `name` (case-sensitive, as RFC 4568's grammar is), if supported.
    pub fn from_name(name: &str) -> Option<SrtpSuite> {
        SrtpSuite::ALL.into_iter().find(|s| s.name() == name)
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        }
    }
}

impl fmt::Display for SrtpSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A master key (16 bytes) followed by its master salt (14 bytes): the `inline:` key of both
/// supported suites. Its `Debug` does not show the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MasterKey(pub [u8; MasterKey::LEN]);

impl MasterKey {
    /// Key and salt length in bytes.
    pub const LEN: usize = 30;

    /// The key from its base64 text (the `inline:` value, RFC 4568 §6.1).
    pub fn from_base64(text: &str) -> Option<MasterKey> {
        let bytes = base64_decode(text)?;
        <[u8; MasterKey::LEN]>::try_from(bytes.as_slice())
            .ok()
            .map(MasterKey)
    }

    /// The key as base64 text, padded (40 characters).
    pub fn to_base64(&self) -> String {
        base64_encode(&self.0)
    }

    fn key(&self) -> &[u8] {
        &self.0[..16]
    }

    fn salt(&self) -> &[u8] {
        &self.0[16..]
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// What an SDES negotiation settled: the suite and each direction's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpParams {
    /// The suite both sides use.
    pub suite: SrtpSuite,
    /// Our key: what we encrypt with (sent in our `a=crypto`).
    pub local: MasterKey,
    /// The peer's key: what we decrypt with (from its `a=crypto`).
    pub remote: MasterKey,
}

/// Why a packet could not be protected or unprotected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// The authentication tag did not verify (wrong key, forged or corrupted packet).
    #[error("SRTP authentication failed")]
    Auth,
    /// The packet's index was seen before or is older than the replay window.
    #[error("SRTP replay")]
    Replay,
    /// Too short or not an RTP/RTCP packet at all.
    #[error("malformed SRTP packet")]
    Malformed,
    /// Too many different SSRCs from the peer.
    #[error("too many SRTP streams from the peer")]
    TooManyStreams,
    /// The crypto context could not be made (should not happen for the supported suites).
    #[error("SRTP context: {0}")]
    Context(String),
}

fn classify(e: &rtc_shared::error::Error) -> SrtpError {
    use rtc_shared::error::Error as E;
    match e {
        E::SrtpSsrcDuplicated(..) | E::SrtcpSsrcDuplicated(..) => SrtpError::Replay,
        E::ErrFailedToVerifyAuthTag
        | E::RtpFailedToVerifyAuthTag
        | E::RtcpFailedToVerifyAuthTag => SrtpError::Auth,
        _ => SrtpError::Malformed,
    }
}

/// The SRTP state of one call: both directions, RTP and RTCP.
pub struct Srtp {
    params: SrtpParams,
    tx: Context,
    rx: Context,
    /// SSRCs whose packets have authenticated in `rx` (RTP and RTCP share them).
    rx_ssrcs: Vec<u32>,
}

impl fmt::Debug for Srtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Srtp")
            .field("suite", &self.params.suite)
            .field("rx_ssrcs", &self.rx_ssrcs)
            .finish_non_exhaustive()
    }
}

fn context(suite: SrtpSuite, key: &MasterKey, replay: bool) -> Result<Context, SrtpError> {
    let provider =
        rtc_srtp::crypto::default_provider().map_err(|e| SrtpError::Context(e.to_string()))?;
    let (rtp, rtcp) = if replay {
        (
            Some(srtp_replay_protection(REPLAY_WINDOW)),
            Some(srtcp_replay_protection(REPLAY_WINDOW)),
        )
    } else {
        (None, None)
    };
    Context::new(
        key.key(),
        key.salt(),
        suite.profile(),
        rtp,
        rtcp,
        provider.crypto(),
    )
    .map_err(|e| SrtpError::Context(e.to_string()))
}

/// The SSRC of an RTP packet (bytes 8..12) or an RTCP packet (4..8), if long enough.
fn ssrc_at(packet: &[u8], at: usize) -> Option<u32> {
    let b = packet.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl Srtp {
    /// The contexts for `params`.
    pub fn new(params: SrtpParams) -> Result<Srtp, SrtpError> {
        Ok(Srtp {
            tx: context(params.suite, &params.local, false)?,
            rx: context(params.suite, &params.remote, true)?,
            params,
            rx_ssrcs: Vec::new(),
        })
    }

    /// What this state was made from.
    pub fn params(&self) -> &SrtpParams {
        &self.params
    }

    /// Encrypts and authenticates an RTP packet.
    pub fn protect_rtp(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        self.tx
            .encrypt_rtp(packet)
            .map(|b| b.to_vec())
            .map_err(|e| classify(&e))
    }

    /// Encrypts and authenticates an RTCP compound packet (SRTCP with the E flag set).
    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        self.tx
            .encrypt_rtcp(packet)
            .map(|b| b.to_vec())
            .map_err(|e| classify(&e))
    }

    /// Authenticates and decrypts an SRTP packet: the plain RTP packet.
    pub fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let ssrc = ssrc_at(packet, 8).ok_or(SrtpError::Malformed)?;
        self.unprotect(packet, ssrc, false)
    }

    /// Authenticates and decrypts an SRTCP packet: the plain RTCP compound packet.
    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let ssrc = ssrc_at(packet, 4).ok_or(SrtpError::Malformed)?;
        self.unprotect(packet, ssrc, true)
    }

    fn unprotect(&mut self, packet: &[u8], ssrc: u32, rtcp: bool) -> Result<Vec<u8>, SrtpError> {
        let decrypt = |ctx: &mut Context| {
            if rtcp {
                ctx.decrypt_rtcp(packet)
            } else {
                ctx.decrypt_rtp(packet)
            }
        };
        if !self.rx_ssrcs.contains(&ssrc) {
            if self.rx_ssrcs.len() >= MAX_REMOTE_SSRCS {
                return Err(SrtpError::TooManyStreams);
            }
            // A stream not seen yet: check it where a forgery leaves no state behind.
            let mut probe = context(self.params.suite, &self.params.remote, false)?;
            decrypt(&mut probe).map_err(|e| classify(&e))?;
            self.rx_ssrcs.push(ssrc);
        }
        decrypt(&mut self.rx)
            .map(|b| b.to_vec())
            .map_err(|e| classify(&e))
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` on any other character.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() % 4 == 1 || text.len() > 1024 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in text.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(suite: SrtpSuite, a: u8, b: u8) -> SrtpParams {
        SrtpParams {
            suite,
            local: MasterKey([a; 30]),
            remote: MasterKey([b; 30]),
        }
    }

    fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&1234u32.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn base64_round_trips_and_rejects_garbage() {
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)), Some(bytes));
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_decode("Zm8"), Some(b"fo".to_vec()));
        assert_eq!(base64_decode("Zm9v!mFy"), None);
        assert_eq!(base64_decode("Z"), None);
    }

    #[test]
    fn master_key_parses_only_30_bytes() {
        let k = MasterKey([7; 30]);
        assert_eq!(k.to_base64().len(), 40);
        assert_eq!(MasterKey::from_base64(&k.to_base64()), Some(k));
        assert_eq!(MasterKey::from_base64(&base64_encode(&[7; 29])), None);
        assert_eq!(format!("{k:?}"), "MasterKey(..)");
    }

    #[test]
    fn both_suites_round_trip_rtp_and_rtcp_and_hide_the_payload() {
        for suite in SrtpSuite::ALL {
            let mut a = Srtp::new(params(suite, 1, 2)).expect("a");
            let mut b = Srtp::new(params(suite, 2, 1)).expect("b");
            let plain = rtp(10, 0xdead_beef, &[0x55; 160]);
            let wire = a.protect_rtp(&plain).expect("protect");
            let tag = if suite == SrtpSuite::AesCm128HmacSha1_80 {
                10
            } else {
                4
            };
            assert_eq!(wire.len(), plain.len() + tag);
            assert_eq!(wire[..12], plain[..12], "the header stays in the clear");
            assert!(
                !wire[12..].windows(8).any(|w| w == [0x55; 8]),
                "payload encrypted"
            );
            assert_eq!(b.unprotect_rtp(&wire).expect("unprotect"), plain);

            // An RR with no report blocks: V=2, PT=201, length 1, SSRC.
            let rr = [0x80, 201, 0, 1, 0xde, 0xad, 0xbe, 0xef];
            let wire = a.protect_rtcp(&rr).expect("protect rtcp");
            assert_eq!(b.unprotect_rtcp(&wire).expect("unprotect rtcp"), rr);
        }
    }

    #[test]
    fn wrong_key_tampering_and_replay_are_refused() {
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let mut a = Srtp::new(params(suite, 1, 2)).expect("a");
        let mut b = Srtp::new(params(suite, 2, 1)).expect("b");
        let mut wrong = Srtp::new(params(suite, 2, 9)).expect("wrong");
        let wire = a.protect_rtp(&rtp(1, 5, &[1; 160])).expect("protect");
        assert_eq!(wrong.unprotect_rtp(&wire), Err(SrtpError::Auth));
        let mut tampered = wire.clone();
        tampered[20] ^= 1;
        assert_eq!(b.unprotect_rtp(&tampered), Err(SrtpError::Auth));
        assert!(b.unprotect_rtp(&wire).is_ok());
        assert_eq!(b.unprotect_rtp(&wire), Err(SrtpError::Replay));
        assert_eq!(b.unprotect_rtp(&wire[..5]), Err(SrtpError::Malformed));
        assert_eq!(b.unprotect_rtp(&[]), Err(SrtpError::Malformed));
        // Later packets still pass after all that.
        let next = a.protect_rtp(&rtp(2, 5, &[1; 160])).expect("protect");
        assert!(b.unprotect_rtp(&next).is_ok());
    }

    #[test]
    fn forged_packets_under_new_ssrcs_leave_no_state() {
        let suite = SrtpSuite::AesCm128HmacSha1_32;
        let mut b = Srtp::new(params(suite, 2, 1)).expect("b");
        for ssrc in 0..1000u32 {
            let mut forged = rtp(1, ssrc, &[0; 164]);
            forged[20] = 1;
            assert_eq!(b.unprotect_rtp(&forged), Err(SrtpError::Auth));
        }
        assert!(b.rx_ssrcs.is_empty());
        let mut a = Srtp::new(params(suite, 1, 2)).expect("a");
        let wire = a.protect_rtp(&rtp(1, 77, &[3; 160])).expect("protect");
        assert!(b.unprotect_rtp(&wire).is_ok());
        assert_eq!(b.rx_ssrcs, [77]);
    }

    /// libsrtp's own known answer (`srtp_driver`'s AES_CM_128_HMAC_SHA1_80 vector): what
    /// baresip's libsrtp sends for this key and packet is what we decrypt, byte for byte.
    #[test]
    fn libsrtp_known_answer_vector() {
        let key: [u8; 30] = [
            0xe1, 0xf9, 0x7a, 0x0d, 0x3e, 0x01, 0x8b, 0xe0, 0xd6, 0x4f, 0xa3, 0x2c, 0x06, 0xde,
            0x41, 0x39, 0x0e, 0xc6, 0x75, 0xad, 0x49, 0x8a, 0xfe, 0xeb, 0xb6, 0x96, 0x0b, 0x3a,
            0xab, 0xe6,
        ];
        let mut plain = vec![
            0x80, 0x0f, 0x12, 0x34, 0xde, 0xca, 0xfb, 0xad, 0xca, 0xfe, 0xba, 0xbe,
        ];
        plain.extend_from_slice(&[0xab; 16]);
        let mut cipher = plain[..12].to_vec();
        cipher.extend_from_slice(&[
            0x4e, 0x55, 0xdc, 0x4c, 0xe7, 0x99, 0x78, 0xd8, 0x8c, 0xa4, 0xd2, 0x15, 0x94, 0x9d,
            0x24, 0x02, 0xb7, 0x8d, 0x6a, 0xcc, 0x99, 0xea, 0x17, 0x9b, 0x8d, 0xbb,
        ]);
        let p = SrtpParams {
            suite: SrtpSuite::AesCm128HmacSha1_80,
            local: MasterKey(key),
            remote: MasterKey(key),
        };
        let mut s = Srtp::new(p).expect("srtp");
        assert_eq!(s.protect_rtp(&plain).expect("protect"), cipher);
        assert_eq!(s.unprotect_rtp(&cipher).expect("unprotect"), plain);
    }

    #[test]
    fn rollover_past_sequence_65535_keeps_decrypting() {
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let mut a = Srtp::new(params(suite, 1, 2)).expect("a");
        let mut b = Srtp::new(params(suite, 2, 1)).expect("b");
        for i in 0..200u32 {
            let seq = (65_400 + i) as u16;
            let wire = a
                .protect_rtp(&rtp(seq, 9, &[i as u8; 20]))
                .expect("protect");
            assert!(b.unprotect_rtp(&wire).is_ok(), "seq {seq} after {i}");
        }
    }
}
