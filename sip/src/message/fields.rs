//! More typed headers: media types, option-tag lists, authentication, reliable provisionals,
//! session timers, identity, privacy, diversion, Reason, Retry-After.
//!
//! Like the core typed headers, each parses on demand from the raw value and prints back in
//! canonical form; `parse(print(x)) == x`.

use std::fmt;

use super::ParseError;
use super::headers::{HeaderName, Headers};
use super::method::{Method, is_token_char};
use super::params::Params;
use super::scan::{Scanner, split_commas, trim};
use super::typed::{NameAddr, parse_u32};

fn token_str<'a>(sc: &mut Scanner<'a>, name: &'static str) -> Result<&'a str, ParseError> {
    let t = sc.token();
    if t.is_empty() {
        return Err(ParseError::BadHeader { name });
    }
    // Token characters are ASCII.
    std::str::from_utf8(t).map_err(|_| ParseError::BadHeader { name })
}

/// Generic `;name[=value]` params with whitespace allowed around `;` and `=`.
fn semi_params(sc: &mut Scanner<'_>, name: &'static str) -> Result<Params, ParseError> {
    let bad = || ParseError::BadHeader { name };
    let mut params = Params::new();
    while sc.eat_sep(b';') {
        let n = token_str(sc, name)?;
        let v = if sc.eat_sep(b'=') {
            let v = match sc.peek() {
                Some(b'"') => sc.quoted().ok_or_else(bad)?,
                _ => sc.until(|b| matches!(b, b';' | b',' | b' ' | b'\t' | b'"')),
            };
            if v.is_empty() {
                return Err(bad());
            }
            Some(std::str::from_utf8(v).map_err(|_| bad())?)
        } else {
            None
        };
        params.push(n, v);
    }
    sc.ws();
    if !sc.at_end() {
        return Err(bad());
    }
    Ok(params)
}

/// The contents of a quoted-string with its backslash escapes resolved; a token is returned as
/// is. Useful on raw parameter values (`realm="a\"b"` gives `a"b`).
pub fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return v.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A media type (`Content-Type`, `Accept` entries): `type/subtype;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// The type (`application`).
    pub mtype: String,
    /// The subtype (`sdp`).
    pub subtype: String,
    /// Parameters (`boundary`, `charset`), values as written.
    pub params: Params,
}

impl MediaType {
    /// Parse `type/subtype *(; param)`.
    pub fn parse(v: &[u8]) -> Result<MediaType, ParseError> {
        const N: &str = "Content-Type";
        let mut sc = Scanner::new(v);
        sc.ws();
        let mtype = token_str(&mut sc, N)?.to_owned();
        if !sc.eat_sep(b'/') {
            return Err(ParseError::BadHeader { name: N });
        }
        let subtype = token_str(&mut sc, N)?.to_owned();
        let params = semi_params(&mut sc, N)?;
        Ok(MediaType {
            mtype,
            subtype,
            params,
        })
    }

    /// Whether this is `mtype/subtype` (case-insensitively).
    pub fn is(&self, mtype: &str, subtype: &str) -> bool {
        self.mtype.eq_ignore_ascii_case(mtype) && self.subtype.eq_ignore_ascii_case(subtype)
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.mtype, self.subtype, self.params)
    }
}

/// An authentication header value: a challenge (`WWW-Authenticate`, `Proxy-Authenticate`) or
/// credentials (`Authorization`, `Proxy-Authorization`). The digest details are left to
/// [`crate::auth`], which reads them from `params` or from the raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthValue {
    /// The scheme as written (`Digest`); compare case-insensitively.
    pub scheme: String,
    /// The comma-separated auth-params in order, values as written (quoted ones keep quotes).
    pub params: Params,
}

impl AuthValue {
    /// Parse `scheme LWS auth-param *(COMMA auth-param)`; a param may be a bare token68 /
    /// token (kept as a name without value).
    pub fn parse(v: &[u8], name: &'static str) -> Result<AuthValue, ParseError> {
        let bad = || ParseError::BadHeader { name };
        let mut sc = Scanner::new(v);
        sc.ws();
        let scheme = token_str(&mut sc, name)?.to_owned();
        let mut params = Params::new();
        sc.ws();
        while !sc.at_end() {
            let n = sc.until(|b| !(is_token_char(b) || b == b'/'));
            if n.is_empty() {
                return Err(bad());
            }
            let n = std::str::from_utf8(n).map_err(|_| bad())?;
            let value = if sc.eat_sep(b'=') {
                let v = match sc.peek() {
                    Some(b'"') => sc.quoted().ok_or_else(bad)?,
                    _ => sc.until(|b| matches!(b, b',' | b' ' | b'\t')),
                };
                Some(std::str::from_utf8(v).map_err(|_| bad())?)
            } else {
                None
            };
            params.push(n, value);
            sc.ws();
            if !sc.at_end() && !sc.eat_sep(b',') {
                return Err(bad());
            }
        }
        Ok(AuthValue { scheme, params })
    }

    /// A parameter with quotes and escapes removed (`realm`, `nonce`, ...).
    pub fn param(&self, name: &str) -> Option<String> {
        self.params.get(name).flatten().map(unquote)
    }
}

impl fmt::Display for AuthValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.scheme)?;
        for (i, (n, v)) in self.params.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            f.write_str(n)?;
            if let Some(v) = v {
                write!(f, "={v}")?;
            }
        }
        Ok(())
    }
}

/// RAck (RFC 3262 §7.2): `response-num CSeq-num Method`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RAck {
    /// The RSeq of the provisional response being acknowledged.
    pub rseq: u32,
    /// The CSeq number of the INVITE.
    pub cseq: u32,
    /// The CSeq method (INVITE).
    pub method: Method,
}

impl RAck {
    /// Parse a RAck value.
    pub fn parse(v: &[u8]) -> Result<RAck, ParseError> {
        let bad = || ParseError::BadHeader { name: "RAck" };
        let mut parts = v
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|p| !p.is_empty());
        let rseq = parts.next().and_then(parse_u32).ok_or_else(bad)?;
        let cseq = parts.next().and_then(parse_u32).ok_or_else(bad)?;
        let method = parts.next().and_then(Method::from_token).ok_or_else(bad)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(RAck { rseq, cseq, method })
    }
}

impl fmt::Display for RAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.rseq, self.cseq, self.method)
    }
}

/// Who refreshes the session (RFC 4028 `refresher`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// `uac`
    Uac,
    /// `uas`
    Uas,
}

/// Session-Expires (RFC 4028 §4): `delta-seconds *(; se-params)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionExpires {
    /// The session interval in seconds.
    pub delta: u32,
    /// The params (`refresher`, extensions), as written.
    pub params: Params,
}

impl SessionExpires {
    /// Parse a Session-Expires (or, with `name = "Min-SE"`, a Min-SE) value.
    pub fn parse(v: &[u8], name: &'static str) -> Result<SessionExpires, ParseError> {
        let mut sc = Scanner::new(v);
        sc.ws();
        let delta =
            parse_u32(sc.until(|b| !b.is_ascii_digit())).ok_or(ParseError::BadHeader { name })?;
        let params = semi_params(&mut sc, name)?;
        Ok(SessionExpires { delta, params })
    }

    /// The `refresher` parameter, when it is `uac` or `uas`.
    pub fn refresher(&self) -> Option<Refresher> {
        match self.params.get("refresher").flatten() {
            Some(r) if r.eq_ignore_ascii_case("uac") => Some(Refresher::Uac),
            Some(r) if r.eq_ignore_ascii_case("uas") => Some(Refresher::Uas),
            _ => None,
        }
    }
}

impl fmt::Display for SessionExpires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.delta, self.params)
    }
}

/// One Reason value (RFC 3326): `protocol ;cause=N ;text="..."`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// `SIP`, `Q.850`, or an extension token.
    pub protocol: String,
    /// The params, values as written.
    pub params: Params,
}

impl Reason {
    /// Parse one Reason value (not a comma list).
    pub fn parse(v: &[u8]) -> Result<Reason, ParseError> {
        const N: &str = "Reason";
        let mut sc = Scanner::new(v);
        sc.ws();
        let protocol = token_str(&mut sc, N)?.to_owned();
        let params = semi_params(&mut sc, N)?;
        Ok(Reason { protocol, params })
    }

    /// The `cause` parameter as a number.
    pub fn cause(&self) -> Option<u16> {
        self.params
            .get("cause")
            .flatten()
            .and_then(|c| c.parse().ok())
    }

    /// The `text` parameter, unquoted.
    pub fn text(&self) -> Option<String> {
        self.params.get("text").flatten().map(unquote)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.protocol, self.params)
    }
}

/// Retry-After (RFC 3261 §20.33): `delta-seconds [comment] *(; params)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryAfter {
    /// Seconds to wait.
    pub seconds: u32,
    /// The comment without its parentheses, when present.
    pub comment: Option<String>,
    /// Params such as `duration`.
    pub params: Params,
}

impl RetryAfter {
    /// Parse a Retry-After value. An overlarge number is an error (RFC 4475 §3.1.2.5).
    pub fn parse(v: &[u8]) -> Result<RetryAfter, ParseError> {
        const N: &str = "Retry-After";
        let bad = ParseError::BadHeader { name: N };
        let mut sc = Scanner::new(v);
        sc.ws();
        let seconds = parse_u32(sc.until(|b| !b.is_ascii_digit())).ok_or(bad.clone())?;
        sc.ws();
        let mut comment = None;
        if sc.eat(b'(') {
            let mut depth = 1;
            let start = sc.pos;
            while let Some(b) = sc.peek() {
                sc.pos += 1;
                match b {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b'\\' => sc.pos += 1,
                    _ => {}
                }
            }
            if depth != 0 {
                return Err(bad);
            }
            let text = &sc.s[start..sc.pos - 1];
            comment = Some(
                std::str::from_utf8(text)
                    .map_err(|_| bad.clone())?
                    .to_owned(),
            );
        }
        let params = semi_params(&mut sc, N)?;
        Ok(RetryAfter {
            seconds,
            comment,
            params,
        })
    }
}

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.seconds)?;
        if let Some(c) = &self.comment {
            write!(f, " ({c})")?;
        }
        write!(f, "{}", self.params)
    }
}

impl Headers {
    /// Content-Type, when present.
    pub fn content_type(&self) -> Result<Option<MediaType>, ParseError> {
        self.get(&HeaderName::ContentType)
            .map(|v| MediaType::parse(v))
            .transpose()
    }

    /// The tokens of a comma-list header over all its lines (Require, Supported, Unsupported,
    /// Proxy-Require, Allow, Accept-Encoding...). A non-token entry is an error.
    pub fn tokens(&self, name: &HeaderName) -> Result<Vec<&str>, ParseError> {
        let label = static_name(name);
        let mut out = Vec::new();
        for v in self.get_all(name) {
            for t in split_commas(v) {
                if !t.iter().all(|&b| is_token_char(b)) {
                    return Err(ParseError::BadHeader { name: label });
                }
                out.push(
                    std::str::from_utf8(t).map_err(|_| ParseError::BadHeader { name: label })?,
                );
            }
        }
        Ok(out)
    }

    /// Require option tags.
    pub fn require(&self) -> Result<Vec<&str>, ParseError> {
        self.tokens(&HeaderName::Require)
    }

    /// Proxy-Require option tags.
    pub fn proxy_require(&self) -> Result<Vec<&str>, ParseError> {
        self.tokens(&HeaderName::ProxyRequire)
    }

    /// Supported option tags.
    pub fn supported(&self) -> Result<Vec<&str>, ParseError> {
        self.tokens(&HeaderName::Supported)
    }

    /// Unsupported option tags.
    pub fn unsupported(&self) -> Result<Vec<&str>, ParseError> {
        self.tokens(&HeaderName::Unsupported)
    }

    /// Whether `tag` is listed in Supported or Require (e.g. `100rel`, `timer`).
    pub fn supports(&self, tag: &str) -> bool {
        [HeaderName::Supported, HeaderName::Require]
            .iter()
            .any(|n| {
                self.get_all(n)
                    .any(|v| split_commas(v).any(|t| t.eq_ignore_ascii_case(tag.as_bytes())))
            })
    }

    /// Allow: the methods listed.
    pub fn allow(&self) -> Result<Vec<Method>, ParseError> {
        self.tokens(&HeaderName::Allow)?
            .into_iter()
            .map(|t| {
                Method::from_token(t.as_bytes()).ok_or(ParseError::BadHeader { name: "Allow" })
            })
            .collect()
    }

    fn auth_values(&self, name: &HeaderName) -> Result<Vec<AuthValue>, ParseError> {
        // One challenge or credential per line: auth-params themselves are comma separated, so
        // a line cannot be split at commas without knowing the scheme.
        let label = static_name(name);
        self.get_all(name)
            .map(|v| AuthValue::parse(v, label))
            .collect()
    }

    /// WWW-Authenticate challenges, one per line.
    pub fn www_authenticate(&self) -> Result<Vec<AuthValue>, ParseError> {
        self.auth_values(&HeaderName::WwwAuthenticate)
    }

    /// Proxy-Authenticate challenges, one per line.
    pub fn proxy_authenticate(&self) -> Result<Vec<AuthValue>, ParseError> {
        self.auth_values(&HeaderName::ProxyAuthenticate)
    }

    /// Authorization credentials, one per line.
    pub fn authorization(&self) -> Result<Vec<AuthValue>, ParseError> {
        self.auth_values(&HeaderName::Authorization)
    }

    /// Proxy-Authorization credentials, one per line.
    pub fn proxy_authorization(&self) -> Result<Vec<AuthValue>, ParseError> {
        self.auth_values(&HeaderName::ProxyAuthorization)
    }

    /// RSeq (RFC 3262), when present.
    pub fn rseq(&self) -> Result<Option<u32>, ParseError> {
        self.single_u32(&HeaderName::RSeq, "RSeq")
    }

    /// RAck (RFC 3262), when present.
    pub fn rack(&self) -> Result<Option<RAck>, ParseError> {
        self.get(&HeaderName::RAck)
            .map(|v| RAck::parse(v))
            .transpose()
    }

    /// Session-Expires (RFC 4028), when present.
    pub fn session_expires(&self) -> Result<Option<SessionExpires>, ParseError> {
        self.get(&HeaderName::SessionExpires)
            .map(|v| SessionExpires::parse(v, "Session-Expires"))
            .transpose()
    }

    /// Min-SE (RFC 4028) in seconds, when present.
    pub fn min_se(&self) -> Result<Option<u32>, ParseError> {
        self.get(&HeaderName::MinSe)
            .map(|v| SessionExpires::parse(v, "Min-SE").map(|s| s.delta))
            .transpose()
    }

    /// P-Asserted-Identity values (RFC 3325), in order.
    pub fn p_asserted_identity(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs(&HeaderName::PAssertedIdentity, "P-Asserted-Identity")
    }

    /// P-Preferred-Identity values (RFC 3325), in order.
    pub fn p_preferred_identity(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs(&HeaderName::PPreferredIdentity, "P-Preferred-Identity")
    }

    /// Privacy values (RFC 3323: `priv-value *(";" priv-value)`), e.g. `["id", "critical"]`.
    pub fn privacy(&self) -> Result<Vec<&str>, ParseError> {
        let mut out = Vec::new();
        for v in self.get_all(&HeaderName::Privacy) {
            for p in v.split(|&b| b == b';').map(trim).filter(|p| !p.is_empty()) {
                if !p.iter().all(|&b| is_token_char(b)) {
                    return Err(ParseError::BadHeader { name: "Privacy" });
                }
                out.push(
                    std::str::from_utf8(p)
                        .map_err(|_| ParseError::BadHeader { name: "Privacy" })?,
                );
            }
        }
        Ok(out)
    }

    /// Diversion values (RFC 5806), most recent first, with `reason`, `counter`... params.
    pub fn diversion(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs(&HeaderName::Diversion, "Diversion")
    }

    /// Reason values (RFC 3326), in order.
    pub fn reasons(&self) -> Result<Vec<Reason>, ParseError> {
        self.get_all(&HeaderName::Reason)
            .flat_map(|v| split_commas(v))
            .map(Reason::parse)
            .collect()
    }

    /// Retry-After, when present.
    pub fn retry_after(&self) -> Result<Option<RetryAfter>, ParseError> {
        self.get(&HeaderName::RetryAfter)
            .map(|v| RetryAfter::parse(v))
            .transpose()
    }

    /// User-Agent as text (raw, lossy for non-UTF-8 bytes).
    pub fn user_agent(&self) -> Option<String> {
        self.get(&HeaderName::UserAgent)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Server as text (raw, lossy for non-UTF-8 bytes).
    pub fn server(&self) -> Option<String> {
        self.get(&HeaderName::Server)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// A `'static` label for errors; extension names get a generic label.
fn static_name(name: &HeaderName) -> &'static str {
    match name {
        HeaderName::Require => "Require",
        HeaderName::ProxyRequire => "Proxy-Require",
        HeaderName::Supported => "Supported",
        HeaderName::Unsupported => "Unsupported",
        HeaderName::Allow => "Allow",
        HeaderName::WwwAuthenticate => "WWW-Authenticate",
        HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
        HeaderName::Authorization => "Authorization",
        HeaderName::ProxyAuthorization => "Proxy-Authorization",
        HeaderName::AcceptEncoding => "Accept-Encoding",
        HeaderName::ContentEncoding => "Content-Encoding",
        _ => "extension",
    }
}
