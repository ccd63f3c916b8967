//! The server side: stateless nonces and the check of the client's credentials.

use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::digest::{DigestInput, compute};
use super::{Algorithm, AuthError, Authorization, Challenge, Qop, Secret};

/// The outcome of [`NonceIssuer::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The credentials are valid. `nc` is the nonce count the client used (with a qop): store
    /// it as the last one seen for this nonce and pass it back as `last_nc` next time.
    Ok {
        /// The client's nonce count, if it sent one.
        nc: Option<u32>,
    },
    /// The response is right but the nonce has expired: challenge again with `stale=true`
    /// (RFC 7616 §3.3: the server "should only set stale to true if it receives a request for
    /// which the nonce is invalid and the response is valid for that nonce").
    Stale,
    /// The response does not match: wrong password (or a tampered request).
    BadResponse,
    /// This server did not issue the nonce (or the opaque value differs): challenge again.
    BadNonce,
    /// The nonce count is not above the last one seen for this nonce: a replay.
    Replay,
    /// The credentials are for another realm.
    WrongRealm,
    /// The credentials use an algorithm this issuer does not offer.
    BadAlgorithm,
    /// The qop is missing or unknown, or `cnonce`/`nc` are missing with a qop.
    BadQop,
}

/// Issues stateless nonces for one realm and verifies credentials against them.
///
/// A nonce is `hex(timestamp) hex(salt) hex(MAC)`, where the MAC is HMAC-SHA-256 under the
/// secret key, truncated to 128 bits, of the timestamp, the salt and the realm. The server
/// keeps no table of issued nonces: the MAC proves that it issued one, and the timestamp says
/// when (RFC 7616 §3.3 suggests the same shape: "time-stamp H(time-stamp ":" ETag ":"
/// secret-data)").
///
/// # Replay
/// A stateless nonce alone cannot detect a replayed request within its lifetime. The caller
/// that wants replay protection keeps the last nonce count seen per nonce (a small map that
/// can forget entries older than the lifetime) and passes it as `last_nc`; [`Self::verify`]
/// then requires a strictly higher count and returns [`Verification::Replay`] otherwise. This
/// is strict: two requests sent concurrently with one nonce that arrive out of order make the
/// later-numbered one win and the other one be challenged again, which a client survives.
/// Retransmissions of one request never reach this check: the transaction layer absorbs them.
///
/// # URI check
/// RFC 7616 §3.4.6 asks the server to check that the `uri` parameter names the same resource
/// as the Request-URI. SIP URI equality (RFC 3261 §19.1.4) lives in the message codec, so the
/// caller does that comparison before or after [`Self::verify`].
#[derive(Clone)]
pub struct NonceIssuer {
    key: Vec<u8>,
    realm: String,
    algorithms: Vec<Algorithm>,
    lifetime: Duration,
    opaque: String,
    allow_rfc2069: bool,
}

impl std::fmt::Debug for NonceIssuer {
    // The key never appears in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceIssuer")
            .field("realm", &self.realm)
            .field("algorithms", &self.algorithms)
            .field("lifetime", &self.lifetime)
            .field("allow_rfc2069", &self.allow_rfc2069)
            .finish_non_exhaustive()
    }
}

/// Bytes of the HMAC kept in the nonce: 128 bits is beyond guessing and keeps nonces short.
const MAC_LEN: usize = 16;

impl NonceIssuer {
    /// An issuer for `realm` with the secret `key` (keep it secret, and the same across the
    /// servers that must accept each other's nonces). Defaults: algorithms SHA-256 then MD5
    /// (RFC 8760 §2.6: offer the preferred one first; MD5 for older phones), lifetime 300 s,
    /// qop required.
    pub fn new(key: impl Into<Vec<u8>>, realm: impl Into<String>) -> Self {
        let key = key.into();
        let realm = realm.into();
        let opaque = hex::encode(&hmac_sha256(&key, &[b"opaque:", realm.as_bytes()])[..8]);
        NonceIssuer {
            key,
            realm,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            lifetime: Duration::from_secs(300),
            opaque,
            allow_rfc2069: false,
        }
    }

    /// Offers these algorithms, most preferred first. Unknown ones ([`Algorithm::Other`]) are
    /// ignored; an empty list keeps the previous one.
    pub fn with_algorithms(mut self, algorithms: &[Algorithm]) -> Self {
        let known: Vec<Algorithm> = algorithms
            .iter()
            .filter(|a| a.hash().is_some())
            .cloned()
            .collect();
        if !known.is_empty() {
            self.algorithms = known;
        }
        self
    }

    /// How long a nonce stays fresh; after that, a right answer gets [`Verification::Stale`].
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Whether to accept RFC 2069 answers without qop (no nonce count, so no replay check).
    /// Off by default: the challenges offer `qop="auth"` and every current SIP client uses it.
    pub fn with_rfc2069(mut self, allow: bool) -> Self {
        self.allow_rfc2069 = allow;
        self
    }

    /// The realm of the challenges.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A challenge with a fresh nonce and the most preferred algorithm. `unix_secs` is the
    /// current time in seconds since the UNIX epoch; `salt` is 8 random bytes from the caller,
    /// so that two challenges issued in the same second differ. Set `stale = true` on the
    /// result to answer [`Verification::Stale`].
    pub fn issue(&self, unix_secs: u64, salt: [u8; 8]) -> Challenge {
        self.challenge(self.make_nonce(unix_secs, salt), self.algorithms[0].clone())
    }

    /// One challenge per offered algorithm, most preferred first, all with the same nonce; put
    /// each in its own `WWW-Authenticate` (or `Proxy-Authenticate`) header, in this order
    /// (RFC 8760 §2.4).
    pub fn issue_all(&self, unix_secs: u64, salt: [u8; 8]) -> Vec<Challenge> {
        let nonce = self.make_nonce(unix_secs, salt);
        self.algorithms
            .iter()
            .map(|a| self.challenge(nonce.clone(), a.clone()))
            .collect()
    }

    fn challenge(&self, nonce: String, algorithm: Algorithm) -> Challenge {
        Challenge {
            realm: self.realm.clone(),
            domain: None,
            nonce,
            opaque: Some(self.opaque.clone()),
            stale: false,
            algorithm: Some(algorithm),
            qop: Some(vec![Qop::Auth]),
            userhash: false,
            params: Vec::new(),
        }
    }

    fn make_nonce(&self, unix_secs: u64, salt: [u8; 8]) -> String {
        let ts = unix_secs.to_be_bytes();
        let mac = self.nonce_mac(&ts, &salt);
        let mut s = String::with_capacity(2 * (8 + 8 + MAC_LEN));
        s.push_str(&hex::encode(ts));
        s.push_str(&hex::encode(salt));
        s.push_str(&hex::encode(&mac[..MAC_LEN]));
        s
    }

    fn nonce_mac(&self, ts: &[u8; 8], salt: &[u8; 8]) -> [u8; 32] {
        hmac_sha256(&self.key, &[b"nonce:", ts, salt, self.realm.as_bytes()])
    }

    /// The timestamp of a nonce this issuer made, or `None` if it did not make it.
    fn open_nonce(&self, nonce: &str) -> Option<u64> {
        if nonce.len() != 2 * (8 + 8 + MAC_LEN) {
            return None;
        }
        let raw = hex::decode(nonce).ok()?;
        let ts: [u8; 8] = raw[..8].try_into().expect("length checked above");
        let salt: [u8; 8] = raw[8..16].try_into().expect("length checked above");
        let mac = self.nonce_mac(&ts, &salt);
        ct_eq(&mac[..MAC_LEN], &raw[16..]).then(|| u64::from_be_bytes(ts))
    }

    /// Checks credentials received at `unix_secs` in a request with this SIP `method` and
    /// `body`, against the user's `secret` (password or HA1; the caller looked the user up by
    /// `authorization.username`). `last_nc` is the last nonce count accepted for this nonce,
    /// if the caller keeps them (see the type docs).
    ///
    /// The checks run in this order: realm, algorithm, nonce authenticity, qop, response,
    /// freshness, replay; so [`Verification::Stale`] is only reported for a right response.
    /// `Err` is for the caller's own mistakes (an HA1 for another hash than the algorithm).
    pub fn verify(
        &self,
        unix_secs: u64,
        authorization: &Authorization,
        method: &str,
        body: &[u8],
        secret: &Secret,
        last_nc: Option<u32>,
    ) -> Result<Verification, AuthError> {
        let a = authorization;
        if a.realm != self.realm {
            return Ok(Verification::WrongRealm);
        }
        let algorithm = a.effective_algorithm();
        if !self.algorithms.contains(&algorithm) {
            return Ok(Verification::BadAlgorithm);
        }
        let Some(issued_at) = self.open_nonce(&a.nonce) else {
            return Ok(Verification::BadNonce);
        };
        // RFC 7616 §3.4: the opaque "MUST be returned by the client unchanged". Lenient on a
        // missing one: the nonce authenticates itself, the opaque adds nothing to check.
        if a.opaque.as_ref().is_some_and(|o| *o != self.opaque) {
            return Ok(Verification::BadNonce);
        }
        let qop = match (&a.qop, &a.cnonce, a.nc) {
            (Some(q @ (Qop::Auth | Qop::AuthInt)), Some(cnonce), Some(nc))
                if !cnonce.is_empty() =>
            {
                Some((q, nc, cnonce.as_str()))
            }
            (None, None, None) if self.allow_rfc2069 && !algorithm.is_session() => None,
            _ => return Ok(Verification::BadQop),
        };
        let expected = compute(
            &DigestInput {
                algorithm: &algorithm,
                username: &a.username,
                realm: &a.realm,
                nonce: &a.nonce,
                method,
                uri: &a.uri,
                body,
                qop,
            },
            secret,
        )?;
        if !ct_eq(
            expected.as_bytes(),
            a.response.to_ascii_lowercase().as_bytes(),
        ) {
            return Ok(Verification::BadResponse);
        }
        if unix_secs.saturating_sub(issued_at) > self.lifetime.as_secs() {
            return Ok(Verification::Stale);
        }
        if let (Some(last), Some(nc)) = (last_nc, a.nc)
            && nc <= last
        {
            return Ok(Verification::Replay);
        }
        Ok(Verification::Ok { nc: a.nc })
    }
}

/// Equality in time independent of where the inputs differ, so that a forger learns nothing
/// from how fast a guess is rejected.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC-SHA-256 (RFC 2104) of the concatenation of `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_hashes_keys_longer_than_a_block() {
        // RFC 4231 test case 6: 131-byte key of 0xaa.
        let mac = hmac_sha256(
            &[0xaa; 131],
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn nonce_opens_only_with_the_same_key_and_realm() {
        let a = NonceIssuer::new(b"k1".to_vec(), "r");
        let n = a.make_nonce(1000, [1; 8]);
        assert_eq!(a.open_nonce(&n), Some(1000));
        assert_eq!(NonceIssuer::new(b"k2".to_vec(), "r").open_nonce(&n), None);
        assert_eq!(NonceIssuer::new(b"k1".to_vec(), "r2").open_nonce(&n), None);
        assert_eq!(a.open_nonce("zz"), None);
        assert_eq!(a.open_nonce(&"g".repeat(n.len())), None);
    }
}
