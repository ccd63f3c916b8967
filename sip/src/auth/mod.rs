//! HTTP digest authentication for SIP (RFC 7616, RFC 8760, RFC 3261 §22), client and server side.
//!
//! Everything here is a pure function of its inputs: no clock and no randomness. Where the
//! protocol needs a fresh value (the client's `cnonce`, the salt of a server nonce) or the time
//! (nonce expiry), the caller passes it in.
//!
//! # Wire types
//! - [`Challenge`]: the value of a `WWW-Authenticate` or `Proxy-Authenticate` header field.
//! - [`Authorization`]: the value of an `Authorization` or `Proxy-Authorization` header field.
//!
//! Both parse from the header value (`Digest realm="x", nonce="y", ...`) with
//! [`Challenge::parse`] / [`Authorization::parse`] and print back with [`std::fmt::Display`];
//! for every value the parser returns, parsing what is printed gives the same value back.
//!
//! # Client side
//! [`answer`] computes the credentials for one challenge. [`DigestClient`] keeps the nonce count
//! per nonce across requests, picks one challenge per realm when a response carries several
//! (one per algorithm, RFC 8760 §2.4) and notices when the server rejected the credentials.
//!
//! # Server side
//! [`NonceIssuer`] makes stateless nonces (timestamp, caller salt and a truncated HMAC-SHA-256
//! bound to the realm) and verifies credentials against them, telling apart a wrong password
//! ([`Verification::BadResponse`]) from an authentic but expired nonce ([`Verification::Stale`],
//! answered with a new challenge carrying `stale=true`).
//!
//! # SIP specifics (RFC 3261 §22.4)
//! The `uri` parameter is the Request-URI of the request being authorized and the method is the
//! SIP method (for example `REGISTER` or `INVITE`); `qop=auth-int` hashes the SIP message body.
//!
//! # Not implemented
//! - `userhash` (RFC 7616 §3.4.4): parsed and printed as a flag, but the client always sends
//!   the plain user name and the server expects one. Few SIP peers offer it.
//! - `username*` and `charset` (RFC 7616 §3.4.4, §4): kept as extension parameters, not decoded.
//! - `Authentication-Info` / `rspauth` (mutual authentication): not computed.

mod client;
mod digest;
mod params;
mod server;
mod types;

pub use client::{ChallengeOutcome, ChallengePreference, DigestClient};
pub use digest::{answer, ha1, request_digest};
pub use server::{NonceIssuer, Verification};
pub use types::{Algorithm, AuthHeader, Authorization, Challenge, DigestHash, Qop};

use std::fmt;

/// A secret that proves the user's identity: the password itself, or the precomputed
/// `H(username ":" realm ":" password)` ("HA1") that a server may store instead of it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The clear-text password.
    Password(String),
    /// `HA1 = H(username ":" realm ":" password)` as lowercase or uppercase hex. It is only valid
    /// for the realm it was computed for and for algorithms based on `hash` (for example an MD5
    /// HA1 serves `MD5` and `MD5-sess`).
    Ha1 {
        /// The hash function the HA1 was computed with.
        hash: DigestHash,
        /// The hex digest.
        hex: String,
    },
}

impl fmt::Debug for Secret {
    // Credentials are never printed, not even in debug output (CONVENTIONS: credentials are
    // redacted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Password(<redacted>)"),
            Secret::Ha1 { hash, .. } => write!(f, "Ha1 {{ hash: {hash:?}, hex: <redacted> }}"),
        }
    }
}

/// A user name and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (the `username` parameter).
    pub username: String,
    /// The password or precomputed HA1.
    pub secret: Secret,
}

impl Credentials {
    /// Credentials from a user name and a clear-text password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            secret: Secret::Password(password.into()),
        }
    }
}

/// A header value that could not be parsed as a digest challenge or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The value holds no authentication scheme.
    #[error("empty authentication header value")]
    Empty,
    /// The raw value is not UTF-8 (RFC 3261 header values are UTF-8).
    #[error("header value is not UTF-8")]
    NotUtf8,
    /// The scheme is not `Digest` (for example `Basic`).
    #[error("unsupported authentication scheme `{0}`")]
    UnsupportedScheme(String),
    /// The parser met something else than what the grammar allows at byte `at`.
    #[error("expected {expected} at byte {at}")]
    Expected {
        /// What the grammar asks for there.
        expected: &'static str,
        /// The byte offset in the header value.
        at: usize,
    },
    /// A quoted string has no closing quote.
    #[error("unterminated quoted string starting at byte {at}")]
    UnterminatedQuote {
        /// The byte offset of the opening quote.
        at: usize,
    },
    /// A control character (or a CR/LF that is not line folding) where none is allowed.
    #[error("control character at byte {at}")]
    ControlCharacter {
        /// The byte offset of the character.
        at: usize,
    },
    /// A parameter appears twice. RFC 7235 §2.1: "Each parameter name MUST only occur once per
    /// challenge."
    #[error("parameter `{0}` appears more than once")]
    DuplicateParam(String),
    /// A parameter the grammar requires is absent.
    #[error("required parameter `{0}` is missing")]
    MissingParam(&'static str),
    /// A parameter has a value outside its grammar (for example `nc=xyz`).
    #[error("invalid value for parameter `{param}`")]
    InvalidValue {
        /// The parameter name.
        param: &'static str,
    },
}

/// Why credentials could not be computed or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A header value did not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The challenge names an algorithm this implementation does not know.
    #[error("unsupported digest algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    /// The challenge offers only qop values this implementation does not know.
    #[error("the challenge offers no supported qop value")]
    UnsupportedQop,
    /// A `-sess` algorithm was offered without `qop`: RFC 2617 §3.2.2 forbids sending the
    /// `cnonce` that the session key needs without a qop, so no verifiable answer exists.
    #[error("a -sess algorithm needs qop")]
    SessionWithoutQop,
    /// A precomputed HA1 was given for another hash function than the algorithm uses.
    #[error("the stored HA1 is for {have:?} but the algorithm needs {need:?}")]
    Ha1HashMismatch {
        /// The hash of the stored HA1.
        have: DigestHash,
        /// The hash the algorithm needs.
        need: DigestHash,
    },
    /// The nonce count is zero; RFC 7616 §3.4: the first request with a nonce has nc=00000001.
    #[error("nonce count must start at 1")]
    ZeroNonceCount,
    /// The nonce count would pass `ffffffff`; the client must get a new nonce.
    #[error("nonce count exhausted for this nonce")]
    NonceCountExhausted,
    /// A caller-given value holds characters that cannot be sent in a header (CR, LF, NUL...).
    #[error("`{0}` holds characters that cannot appear in a header")]
    InvalidValue(&'static str),
    /// The cnonce is empty; with a qop the server needs one.
    #[error("the cnonce must not be empty")]
    EmptyCnonce,
    /// [`DigestClient`] has no challenge it can answer (none given, or none supported).
    #[error("no usable digest challenge")]
    NoUsableChallenge,
}
