//! The typed digest header values: [`Challenge`] and [`Authorization`], with their parameters.

use std::fmt;

use super::ParseError;
use super::params::{RawParam, is_name, parse_digest, write_quoted, write_token_or_quoted};

/// The hash function under a digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestHash {
    /// MD5 (RFC 1321): kept for backward compatibility; RFC 7616 §5.1 warns it is weak.
    Md5,
    /// SHA-256 (FIPS 180-4).
    Sha256,
    /// SHA-512/256 (FIPS 180-4), the strongest in RFC 7616.
    Sha512_256,
}

/// The `algorithm` parameter (RFC 7616 §3.3, RFC 8760 §2.2). Names are case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5`, the default when the parameter is absent.
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
    /// `SHA-512-256`.
    Sha512_256,
    /// `SHA-512-256-sess`.
    Sha512_256Sess,
    /// Any other name, as received.
    Other(String),
}

impl Algorithm {
    /// The algorithm with the given name (case-insensitive); unknown names become
    /// [`Algorithm::Other`].
    pub fn from_name(name: &str) -> Algorithm {
        const KNOWN: [(&str, Algorithm); 6] = [
            ("MD5", Algorithm::Md5),
            ("MD5-sess", Algorithm::Md5Sess),
            ("SHA-256", Algorithm::Sha256),
            ("SHA-256-sess", Algorithm::Sha256Sess),
            ("SHA-512-256", Algorithm::Sha512_256),
            ("SHA-512-256-sess", Algorithm::Sha512_256Sess),
        ];
        KNOWN
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or_else(|| Algorithm::Other(name.to_owned()), |(_, a)| a)
    }

    /// The name as RFC 7616 spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
            Algorithm::Other(s) => s,
        }
    }

    /// The hash function, or `None` for an unknown algorithm.
    pub fn hash(&self) -> Option<DigestHash> {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Some(DigestHash::Md5),
            Algorithm::Sha256 | Algorithm::Sha256Sess => Some(DigestHash::Sha256),
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => Some(DigestHash::Sha512_256),
            Algorithm::Other(_) => None,
        }
    }

    /// Whether this is a `-sess` variant, whose HA1 also covers the nonce and cnonce.
    pub fn is_session(&self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_token_or_quoted(f, self.as_str())
    }
}

/// A quality of protection value (RFC 7616 §3.3). Compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Qop {
    /// `auth`: authentication of the method and URI.
    Auth,
    /// `auth-int`: also covers a hash of the body.
    AuthInt,
    /// Any other value, as received.
    Other(String),
}

impl Qop {
    /// The qop with the given name (case-insensitive).
    pub fn from_name(name: &str) -> Qop {
        if name.eq_ignore_ascii_case("auth") {
            Qop::Auth
        } else if name.eq_ignore_ascii_case("auth-int") {
            Qop::AuthInt
        } else {
            Qop::Other(name.to_owned())
        }
    }

    /// The name as printed.
    pub fn as_str(&self) -> &str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
            Qop::Other(s) => s,
        }
    }
}

/// Which pair of headers a challenge came in, so the answer goes in the matching one
/// (RFC 3261 §22.2 and §22.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthHeader {
    /// `WWW-Authenticate` (in a 401), answered in `Authorization`.
    Www,
    /// `Proxy-Authenticate` (in a 407), answered in `Proxy-Authorization`.
    Proxy,
}

impl AuthHeader {
    /// The name of the header that carries the challenge.
    pub fn challenge_header(self) -> &'static str {
        match self {
            AuthHeader::Www => "WWW-Authenticate",
            AuthHeader::Proxy => "Proxy-Authenticate",
        }
    }

    /// The name of the header that carries the answer.
    pub fn credentials_header(self) -> &'static str {
        match self {
            AuthHeader::Www => "Authorization",
            AuthHeader::Proxy => "Proxy-Authorization",
        }
    }
}

/// A digest challenge: the value of a `WWW-Authenticate` or `Proxy-Authenticate` header.
///
/// ```
/// use sip::auth::{Algorithm, Challenge, Qop};
/// let c = Challenge::parse(r#"Digest realm="atlanta.com", nonce="84a4", qop="auth,auth-int", algorithm=SHA-256, stale=TRUE"#)?;
/// assert_eq!(c.realm, "atlanta.com");
/// assert_eq!(c.qop, Some(vec![Qop::Auth, Qop::AuthInt]));
/// assert_eq!(c.algorithm, Some(Algorithm::Sha256));
/// assert!(c.stale);
/// assert_eq!(Challenge::parse(&c.to_string())?, c);
/// # Ok::<(), sip::auth::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The protection space (`realm`), required.
    pub realm: String,
    /// The `domain` parameter: space-separated URIs, kept as received.
    pub domain: Option<String>,
    /// The server nonce, required.
    pub nonce: String,
    /// The `opaque` value the client must return unchanged.
    pub opaque: Option<String>,
    /// `stale=true`: the previous credentials were right but their nonce had expired.
    pub stale: bool,
    /// The `algorithm`; `None` means MD5 (see [`Challenge::effective_algorithm`]).
    pub algorithm: Option<Algorithm>,
    /// The offered qop values; `None` is an RFC 2069 challenge without qop.
    pub qop: Option<Vec<Qop>>,
    /// `userhash=true` (RFC 7616 §3.3). Not acted on: see the module docs.
    pub userhash: bool,
    /// Other parameters, in order, names as received and values unescaped.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Parses a header value such as `Digest realm="x", nonce="y", qop="auth"`.
    pub fn parse(value: &str) -> Result<Challenge, ParseError> {
        let mut c = Challenge {
            realm: String::new(),
            domain: None,
            nonce: String::new(),
            opaque: None,
            stale: false,
            algorithm: None,
            qop: None,
            userhash: false,
            params: Vec::new(),
        };
        let (mut realm, mut nonce) = (None, None);
        for RawParam { name, value } in parse_digest(value)? {
            match name.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value),
                "domain" => c.domain = Some(value),
                "nonce" => nonce = Some(value),
                "opaque" => c.opaque = Some(value),
                // RFC 7616 §3.3: "If stale is any value other than true ... the client will
                // want to re-prompt the user": only `true` (any case) counts.
                "stale" => c.stale = value.eq_ignore_ascii_case("true"),
                "algorithm" => c.algorithm = Some(Algorithm::from_name(&value)),
                "qop" => c.qop = Some(parse_qop_list(&value)?),
                "userhash" => c.userhash = value.eq_ignore_ascii_case("true"),
                _ => c.params.push((name, value)),
            }
        }
        c.realm = realm.ok_or(ParseError::MissingParam("realm"))?;
        c.nonce = nonce.ok_or(ParseError::MissingParam("nonce"))?;
        Ok(c)
    }

    /// Parses a raw header value as the codec holds it (for example
    /// `headers.get(&HeaderName::WwwAuthenticate)`); it must be UTF-8.
    pub fn parse_bytes(value: &[u8]) -> Result<Challenge, ParseError> {
        Challenge::parse(std::str::from_utf8(value).map_err(|_| ParseError::NotUtf8)?)
    }

    /// The algorithm in force: the `algorithm` parameter, or MD5 when it is absent
    /// (RFC 7616 §3.3: "If this is not present, it is assumed to be "MD5"").
    pub fn effective_algorithm(&self) -> Algorithm {
        self.algorithm.clone().unwrap_or(Algorithm::Md5)
    }
}

/// `qop-options = "qop" EQUAL LDQUOT qop-value *("," qop-value) RDQUOT`.
fn parse_qop_list(value: &str) -> Result<Vec<Qop>, ParseError> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let item = item.trim_matches([' ', '\t']);
        if item.is_empty() {
            continue;
        }
        if !super::params::is_token(item) {
            return Err(ParseError::InvalidValue { param: "qop" });
        }
        out.push(Qop::from_name(item));
    }
    Ok(out)
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest realm=")?;
        write_quoted(f, &self.realm)?;
        if let Some(d) = &self.domain {
            f.write_str(", domain=")?;
            write_quoted(f, d)?;
        }
        f.write_str(", nonce=")?;
        write_quoted(f, &self.nonce)?;
        if let Some(o) = &self.opaque {
            f.write_str(", opaque=")?;
            write_quoted(f, o)?;
        }
        if self.stale {
            f.write_str(", stale=true")?;
        }
        if let Some(a) = &self.algorithm {
            write!(f, ", algorithm={a}")?;
        }
        if let Some(qops) = &self.qop {
            // Only tokens go in the list, so a hand-built value with a comma or quote in an
            // `Other` cannot change the list's meaning.
            let list: Vec<&str> = qops
                .iter()
                .map(Qop::as_str)
                .filter(|q| super::params::is_token(q))
                .collect();
            f.write_str(", qop=")?;
            write_quoted(f, &list.join(","))?;
        }
        if self.userhash {
            f.write_str(", userhash=true")?;
        }
        write_extra(f, &self.params)
    }
}

fn write_extra(f: &mut fmt::Formatter<'_>, params: &[(String, String)]) -> fmt::Result {
    for (name, value) in params {
        // A hand-built name that is not a token would break the header; skip it.
        if !is_name(name) {
            continue;
        }
        write!(f, ", {name}=")?;
        write_token_or_quoted(f, value)?;
    }
    Ok(())
}

/// Digest credentials: the value of an `Authorization` or `Proxy-Authorization` header.
///
/// ```
/// use sip::auth::{Authorization, Qop};
/// let a = Authorization::parse(r#"Digest username="bob", realm="biloxi.com", nonce="dcd98b", uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1""#)?;
/// assert_eq!(a.nc, Some(1));
/// assert_eq!(a.qop, Some(Qop::Auth));
/// assert_eq!(Authorization::parse(&a.to_string())?, a);
/// # Ok::<(), sip::auth::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The user name.
    pub username: String,
    /// The realm, copied from the challenge.
    pub realm: String,
    /// The nonce, copied from the challenge.
    pub nonce: String,
    /// The digest URI: in SIP, the Request-URI (RFC 3261 §22.4).
    pub uri: String,
    /// The request digest, hex.
    pub response: String,
    /// The algorithm, copied from the challenge (`None` when the challenge had none).
    pub algorithm: Option<Algorithm>,
    /// The client nonce; present exactly when `qop` is.
    pub cnonce: Option<String>,
    /// The `opaque` value, copied from the challenge.
    pub opaque: Option<String>,
    /// The chosen qop; `None` for an RFC 2069 answer.
    pub qop: Option<Qop>,
    /// The nonce count (`nc`, 8 hex digits on the wire); present exactly when `qop` is.
    pub nc: Option<u32>,
    /// `userhash=true`: `username` is a hash (not produced by this implementation).
    pub userhash: bool,
    /// Other parameters, in order, names as received and values unescaped.
    pub params: Vec<(String, String)>,
}

impl Authorization {
    /// Parses a header value such as `Digest username="u", realm="r", nonce="n", uri="sip:x",
    /// response="..."`.
    pub fn parse(value: &str) -> Result<Authorization, ParseError> {
        let mut a = Authorization {
            username: String::new(),
            realm: String::new(),
            nonce: String::new(),
            uri: String::new(),
            response: String::new(),
            algorithm: None,
            cnonce: None,
            opaque: None,
            qop: None,
            nc: None,
            userhash: false,
            params: Vec::new(),
        };
        let (mut username, mut realm, mut nonce, mut uri, mut response) =
            (None, None, None, None, None);
        for RawParam { name, value } in parse_digest(value)? {
            match name.to_ascii_lowercase().as_str() {
                "username" => username = Some(value),
                "realm" => realm = Some(value),
                "nonce" => nonce = Some(value),
                "uri" => uri = Some(value),
                "response" => response = Some(value),
                "algorithm" => a.algorithm = Some(Algorithm::from_name(&value)),
                "cnonce" => a.cnonce = Some(value),
                "opaque" => a.opaque = Some(value),
                "qop" => {
                    if !super::params::is_token(&value) {
                        return Err(ParseError::InvalidValue { param: "qop" });
                    }
                    a.qop = Some(Qop::from_name(&value));
                }
                "nc" => a.nc = Some(parse_nc(&value)?),
                "userhash" => a.userhash = value.eq_ignore_ascii_case("true"),
                _ => a.params.push((name, value)),
            }
        }
        a.username = username.ok_or(ParseError::MissingParam("username"))?;
        a.realm = realm.ok_or(ParseError::MissingParam("realm"))?;
        a.nonce = nonce.ok_or(ParseError::MissingParam("nonce"))?;
        a.uri = uri.ok_or(ParseError::MissingParam("uri"))?;
        a.response = response.ok_or(ParseError::MissingParam("response"))?;
        Ok(a)
    }

    /// Parses a raw header value as the codec holds it; it must be UTF-8.
    pub fn parse_bytes(value: &[u8]) -> Result<Authorization, ParseError> {
        Authorization::parse(std::str::from_utf8(value).map_err(|_| ParseError::NotUtf8)?)
    }

    /// The algorithm in force (MD5 when the parameter is absent).
    pub fn effective_algorithm(&self) -> Algorithm {
        self.algorithm.clone().unwrap_or(Algorithm::Md5)
    }
}

/// `nc-value = 8LHEX`; shorter values are accepted, since the number is what counts.
fn parse_nc(value: &str) -> Result<u32, ParseError> {
    if value.is_empty() || value.len() > 8 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParseError::InvalidValue { param: "nc" });
    }
    u32::from_str_radix(value, 16).map_err(|_| ParseError::InvalidValue { param: "nc" })
}

impl fmt::Display for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest username=")?;
        write_quoted(f, &self.username)?;
        f.write_str(", realm=")?;
        write_quoted(f, &self.realm)?;
        f.write_str(", nonce=")?;
        write_quoted(f, &self.nonce)?;
        f.write_str(", uri=")?;
        write_quoted(f, &self.uri)?;
        f.write_str(", response=")?;
        write_quoted(f, &self.response)?;
        if let Some(a) = &self.algorithm {
            write!(f, ", algorithm={a}")?;
        }
        if let Some(c) = &self.cnonce {
            f.write_str(", cnonce=")?;
            write_quoted(f, c)?;
        }
        if let Some(o) = &self.opaque {
            f.write_str(", opaque=")?;
            write_quoted(f, o)?;
        }
        if let Some(q) = &self.qop {
            // RFC 3261 §25.1 and RFC 7616 §3.4: `message-qop = "qop" EQUAL qop-value`, a bare
            // token (unlike the quoted list of the challenge).
            f.write_str(", qop=")?;
            write_token_or_quoted(f, q.as_str())?;
        }
        if let Some(nc) = self.nc {
            write!(f, ", nc={nc:08x}")?;
        }
        if self.userhash {
            f.write_str(", userhash=true")?;
        }
        write_extra(f, &self.params)
    }
}
