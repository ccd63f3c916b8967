//! The `a=crypto` attribute of SDES-SRTP (RFC 4568 §9.1):
//!
//! ```text
//! a=crypto:<tag> <crypto-suite> inline:<base64 key||salt>[|<lifetime>][|<MKI>:<length>] [<session-params>]
//! ```
//!
//! We support one key per line, without an MKI and without session parameters (RFC 4568 §6.3:
//! a line with a parameter the answerer does not understand is not acceptable); such lines are
//! parsed into an error so that the negotiation can skip them and try the next one.

use std::fmt;

use crate::srtp::{MasterKey, SrtpSuite};

/// A usable `a=crypto` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptoAttr {
    /// The tag (1 to 9 digits) that an answer echoes.
    pub tag: u32,
    /// The crypto suite.
    pub suite: SrtpSuite,
    /// Master key and salt.
    pub key: MasterKey,
    /// The key's lifetime in packets, when given (informational: we never reach it in a call).
    pub lifetime: Option<u64>,
}

/// Why an `a=crypto` line cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Not `tag suite key-params`.
    #[error("malformed a=crypto")]
    Malformed,
    /// A suite we do not implement.
    #[error("unsupported crypto suite {0}")]
    UnsupportedSuite(String),
    /// The key is not `inline:` base64 of 30 bytes.
    #[error("bad SRTP key")]
    BadKey,
    /// A master key identifier (MKI), which we do not support.
    #[error("MKI is not supported")]
    Mki,
    /// More than one key, which we do not support.
    #[error("several keys are not supported")]
    SeveralKeys,
    /// Session parameters (UNENCRYPTED_SRTP, KDR, FEC_ORDER...), which we do not support.
    #[error("unsupported session parameter {0}")]
    SessionParam(String),
}

impl CryptoAttr {
    /// Parses the value of an `a=crypto` attribute (what follows `a=crypto:`).
    pub fn parse(value: &str) -> Result<CryptoAttr, CryptoError> {
        let mut words = value.split_ascii_whitespace();
        let tag = words.next().ok_or(CryptoError::Malformed)?;
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CryptoError::Malformed);
        }
        let tag: u32 = tag.parse().map_err(|_| CryptoError::Malformed)?;
        let suite_name = words.next().ok_or(CryptoError::Malformed)?;
        let key_params = words.next().ok_or(CryptoError::Malformed)?;
        let suite = SrtpSuite::from_name(suite_name)
            .ok_or_else(|| CryptoError::UnsupportedSuite(suite_name.chars().take(64).collect()))?;
        if let Some(param) = words.next() {
            return Err(CryptoError::SessionParam(param.chars().take(64).collect()));
        }
        if key_params.contains(';') {
            return Err(CryptoError::SeveralKeys);
        }
        let info = key_params
            .strip_prefix("inline:")
            .ok_or(CryptoError::BadKey)?;
        let mut parts = info.split('|');
        let key = parts
            .next()
            .and_then(MasterKey::from_base64)
            .ok_or(CryptoError::BadKey)?;
        let mut lifetime = None;
        for part in parts {
            if part.contains(':') {
                return Err(CryptoError::Mki);
            }
            if lifetime.is_some() {
                return Err(CryptoError::Malformed);
            }
            lifetime = Some(parse_lifetime(part).ok_or(CryptoError::Malformed)?);
        }
        Ok(CryptoAttr {
            tag,
            suite,
            key,
            lifetime,
        })
    }
}

/// `2^20` or a decimal count, at most 2^48 (RFC 3711's SRTP limit).
fn parse_lifetime(s: &str) -> Option<u64> {
    let n = match s.strip_prefix("2^") {
        Some(exp) => {
            let exp: u32 = exp.parse().ok()?;
            (exp <= 48).then(|| 1u64 << exp)?
        }
        None => s.parse().ok()?,
    };
    (n > 0 && n <= 1 << 48).then_some(n)
}

impl fmt::Display for CryptoAttr {
    /// The attribute value, without the lifetime (we never send one).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} inline:{}",
            self.tag,
            self.suite,
            self.key.to_base64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "WnD7c1ksDGs+dIefCEo8omPg4uO8DYIinNGL5yxQ";

    #[test]
    fn crypto_lines_parse_or_say_why_not() {
        let key = MasterKey::from_base64(KEY).expect("key");
        let ok = |tag, suite, lifetime| {
            Ok(CryptoAttr {
                tag,
                suite,
                key,
                lifetime,
            })
        };
        use SrtpSuite::*;
        let cases: &[(&str, Result<CryptoAttr, CryptoError>)] = &[
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:WnD7c1ksDGs+dIefCEo8omPg4uO8DYIinNGL5yxQ",
                ok(1, AesCm128HmacSha1_80, None),
            ),
            (
                "2 AES_CM_128_HMAC_SHA1_32 inline:WnD7c1ksDGs+dIefCEo8omPg4uO8DYIinNGL5yxQ|2^20",
                ok(2, AesCm128HmacSha1_32, Some(1 << 20)),
            ),
            (
                "7  AES_CM_128_HMAC_SHA1_80   inline:WnD7c1ksDGs+dIefCEo8omPg4uO8DYIinNGL5yxQ|1000",
                ok(7, AesCm128HmacSha1_80, Some(1000)),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:WnD7c1ksDGs+dIefCEo8omPg4uO8DYIinNGL5yxQ|2^20|1:4",
                Err(CryptoError::Mki),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:WnD7c1ksDGs+dIefCEo8omPg4uO8DYIinNGL5yxQ|1:4",
                Err(CryptoError::Mki),
            ),
            (
                "1 AES_256_CM_HMAC_SHA1_80 inline:WnD7c1ksDGs+dIefCEo8omPg4uO8DYIinNGL5yxQ",
                Err(CryptoError::UnsupportedSuite(
                    "AES_256_CM_HMAC_SHA1_80".into(),
                )),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:WnD7c1ksDGs+dIefCEo8omPg4uO8DYIinNGL5yxQ UNENCRYPTED_SRTP",
                Err(CryptoError::SessionParam("UNENCRYPTED_SRTP".into())),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:WnD7c1ksDGs+dIefCEo8omPg4uO8DYIinNGL5yxQ;inline:WnD7c1ksDGs+dIefCEo8omPg4uO8DYIinNGL5yxQ",
                Err(CryptoError::SeveralKeys),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:WnD7c1ksDGs+dIefCEo8omPg4uO8DYIin",
                Err(CryptoError::BadKey),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!c1ksDGs+dIefCEo8omPg4uO8DYIinNGL5yxQ",
                Err(CryptoError::BadKey),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 uri:https://example.com/key",
                Err(CryptoError::BadKey),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:WnD7c1ksDGs+dIefCEo8omPg4uO8DYIinNGL5yxQ|2^49",
                Err(CryptoError::Malformed),
            ),
            (
                "x AES_CM_128_HMAC_SHA1_80 inline:AAAA",
                Err(CryptoError::Malformed),
            ),
            (
                "1234567890 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
                Err(CryptoError::Malformed),
            ),
            ("1 AES_CM_128_HMAC_SHA1_80", Err(CryptoError::Malformed)),
            ("", Err(CryptoError::Malformed)),
        ];
        for (line, want) in cases {
            assert_eq!(&CryptoAttr::parse(line), want, "{line}");
        }
    }

    #[test]
    fn printing_round_trips() {
        let attr = CryptoAttr {
            tag: 3,
            suite: SrtpSuite::AesCm128HmacSha1_32,
            key: MasterKey([0x42; 30]),
            lifetime: None,
        };
        let text = attr.to_string();
        assert!(
            text.starts_with("3 AES_CM_128_HMAC_SHA1_32 inline:"),
            "{text}"
        );
        assert_eq!(CryptoAttr::parse(&text), Ok(attr));
    }
}
