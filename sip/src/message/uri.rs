//! URIs: `sip:`/`sips:` (RFC 3261 §19.1), `tel:` (RFC 3966), and any other scheme kept opaque.
//!
//! Every textual component is kept exactly as received, `%HH` escapes included, so printing a
//! parsed URI gives back its original text (scheme names print in lower case). Escapes are
//! decoded only to compare URIs ([`Uri::equivalent`], RFC 3261 §19.1.4).

use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};

use super::ParseError;
use super::params::Params;

/// The host part of a SIP URI or Via.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A host name, kept as written (compare case-insensitively).
    Domain(String),
    /// A dotted-quad IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 reference, stored as written *without* the brackets (which are added on print).
    /// The text is kept rather than an [`Ipv6Addr`] so that it prints back unchanged, and because
    /// RFC 5118 §4.10 asks us to tolerate the `:::` form that RFC 3261's ABNF allowed.
    Ipv6(String),
}

impl Host {
    /// Parse a host: `[v6]`, dotted quad, or a host name (RFC 3261 §25.1 `host`).
    pub fn parse(s: &[u8]) -> Result<Host, ParseError> {
        if s.is_empty() {
            return Err(ParseError::BadUri);
        }
        if s[0] == b'[' {
            let inner = s
                .strip_prefix(b"[")
                .and_then(|r| r.strip_suffix(b"]"))
                .ok_or(ParseError::BadUri)?;
            if inner.is_empty()
                || !inner.contains(&b':')
                || !inner
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return Err(ParseError::BadUri);
            }
            return Ok(Host::Ipv6(String::from_utf8_lossy(inner).into_owned()));
        }
        let mut dotted_digits = true;
        for &b in s {
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_') {
                return Err(ParseError::BadUri);
            }
            dotted_digits &= b.is_ascii_digit() || b == b'.';
        }
        // Checked above: ASCII only.
        let text = std::str::from_utf8(s).map_err(|_| ParseError::BadUri)?;
        if dotted_digits && let Ok(ip) = text.parse::<Ipv4Addr>() {
            return Ok(Host::Ipv4(ip));
        }
        Ok(Host::Domain(text.to_owned()))
    }

    /// The IPv6 address, when this is a well-formed IPv6 reference.
    pub fn ipv6_addr(&self) -> Option<Ipv6Addr> {
        match self {
            Host::Ipv6(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// Whether two hosts denote the same host: names case-insensitively, IPv6 references by
    /// address value when both are well-formed (so `::1` equals `0:0::1`).
    pub fn equivalent(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Domain(a), Host::Domain(b)) => a.eq_ignore_ascii_case(b),
            (Host::Ipv4(a), Host::Ipv4(b)) => a == b,
            (Host::Ipv6(a), Host::Ipv6(b)) => match (self.ipv6_addr(), other.ipv6_addr()) {
                (Some(x), Some(y)) => x == y,
                _ => a.eq_ignore_ascii_case(b),
            },
            _ => false,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(ip) => write!(f, "{ip}"),
            Host::Ipv6(ip) => write!(f, "[{ip}]"),
        }
    }
}

/// A URI in a Request-URI or a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// `tel:` (RFC 3966).
    Tel(TelUri),
    /// Any other scheme (`mailto:`, `http:`, `urn:`, ...), kept opaque.
    Other {
        /// The scheme as written (without the colon).
        scheme: String,
        /// Everything after the first colon, as written.
        text: String,
    },
}

/// A `sip:` or `sips:` URI (RFC 3261 §19.1.1). Text components keep their `%HH` escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part (may hold `;` as in RFC 4475 §3.1.1.9), escapes kept.
    pub user: Option<String>,
    /// The password, escapes kept.
    pub password: Option<String>,
    /// The host.
    pub host: Host,
    /// The port, when written.
    pub port: Option<u16>,
    /// The uri-parameters (`;transport=tcp;lr`).
    pub params: Params,
    /// The headers component (`?Route=...&Subject=...`), escapes kept.
    pub headers: Params,
}

/// A `tel:` URI (RFC 3966).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri {
    /// The number as written, visual separators included (`+1-201-555-0123`).
    pub number: String,
    /// Parameters such as `phone-context`, `ext`, `isub`.
    pub params: Params,
}

impl TelUri {
    /// The `phone-context` parameter.
    pub fn phone_context(&self) -> Option<&str> {
        self.params.get("phone-context").flatten()
    }

    /// Whether this is a global number (`+` followed by digits).
    pub fn is_global(&self) -> bool {
        self.number.starts_with('+')
    }
}

/// Bytes allowed anywhere in a SIP URI: RFC 3261 §25.1 `unreserved`, `reserved`, `escaped`,
/// `user-unreserved`, `param-unreserved`, `hnv-unreserved` and the brackets of an IPv6
/// reference. That is every visible ASCII character except `<`, `>`, `"`, `\\`, `{`, `}`,
/// `|`, `^` and backquote. A table, because every URI byte goes through it.
static URI_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0x21;
    while i < 0x7f {
        t[i] = !matches!(
            i as u8,
            b'<' | b'>' | b'"' | b'\\' | b'{' | b'}' | b'|' | b'^' | b'`'
        );
        i += 1;
    }
    t
};

#[inline]
fn is_uri_char(b: u8) -> bool {
    URI_CHARS[usize::from(b)]
}

impl Uri {
    /// Parse a URI. `sip:`/`sips:` and `tel:` are parsed into their parts; any other
    /// `scheme:rest` is kept as [`Uri::Other`]. Whitespace anywhere is an error.
    pub fn parse(input: impl AsRef<[u8]>) -> Result<Uri, ParseError> {
        let s = input.as_ref();
        let colon = s
            .iter()
            .position(|&b| b == b':')
            .ok_or(ParseError::BadUri)?;
        let (scheme, rest) = (&s[..colon], &s[colon + 1..]);
        // RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
        if scheme.is_empty()
            || !scheme[0].is_ascii_alphabetic()
            || !scheme
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        {
            return Err(ParseError::BadUri);
        }
        if scheme.eq_ignore_ascii_case(b"sip") {
            return SipUri::parse_rest(false, rest).map(Uri::Sip);
        }
        if scheme.eq_ignore_ascii_case(b"sips") {
            return SipUri::parse_rest(true, rest).map(Uri::Sip);
        }
        // RFC 3261 §25.1: an absoluteURI is made of `uric` characters, so `<`, `>` and `"`
        // cannot appear in one; accepting them would let `To: i:>` parse as an addr-spec that
        // prints as the unparseable `<i:>>`. Octets above 0x7f are tolerated (UTF-8 from
        // carriers).
        if rest.is_empty() || !rest.iter().all(|&b| is_uri_char(b) || b >= 0x80) {
            return Err(ParseError::BadUri);
        }
        if scheme.eq_ignore_ascii_case(b"tel") {
            TelUri::parse_rest(rest).map(Uri::Tel)
        } else {
            let text = std::str::from_utf8(rest).map_err(|_| ParseError::BadUri)?;
            Ok(Uri::Other {
                scheme: String::from_utf8_lossy(scheme).into_owned(),
                text: text.to_owned(),
            })
        }
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// The scheme in lower case (`"sip"`, `"sips"`, `"tel"`) or as written for others.
    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other { scheme, .. } => scheme,
        }
    }

    /// RFC 3261 §19.1.4 URI comparison (and, for `tel:`, RFC 3966 §4: visual separators are
    /// ignored). Other schemes compare their text case-insensitively after unescaping.
    pub fn equivalent(&self, other: &Uri) -> bool {
        match (self, other) {
            (Uri::Sip(a), Uri::Sip(b)) => a.equivalent(b),
            (Uri::Tel(a), Uri::Tel(b)) => a.equivalent(b),
            (
                Uri::Other {
                    scheme: sa,
                    text: ta,
                },
                Uri::Other {
                    scheme: sb,
                    text: tb,
                },
            ) => sa.eq_ignore_ascii_case(sb) && unescape(ta).eq_ignore_ascii_case(&unescape(tb)),
            _ => false,
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Tel(u) => u.fmt(f),
            Uri::Other { scheme, text } => write!(f, "{scheme}:{text}"),
        }
    }
}

impl std::str::FromStr for Uri {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Uri, ParseError> {
        Uri::parse(s)
    }
}

/// Parse `;a=b;c` URI parameters (no whitespace allowed inside a URI).
fn parse_uri_params(s: &[u8], into: &mut Params, sep: u8) -> Result<(), ParseError> {
    into.reserve(s.len());
    for p in s.split(|&b| b == sep) {
        if p.is_empty() {
            // `;;` or a trailing `;`: tolerated, nothing to record.
            continue;
        }
        let (n, v) = match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], Some(&p[i + 1..])),
            None => (p, None),
        };
        if n.is_empty() {
            return Err(ParseError::BadUri);
        }
        let n = std::str::from_utf8(n).map_err(|_| ParseError::BadUri)?;
        let v = v
            .map(|v| std::str::from_utf8(v).map_err(|_| ParseError::BadUri))
            .transpose()?;
        into.push(n, v);
    }
    Ok(())
}

impl SipUri {
    /// A plain `sip:user@host` URI.
    pub fn new(user: Option<&str>, host: Host, port: Option<u16>) -> SipUri {
        SipUri {
            secure: false,
            user: user.map(str::to_owned),
            password: None,
            host,
            port,
            params: Params::new(),
            headers: Params::new(),
        }
    }

    fn parse_rest(secure: bool, s: &[u8]) -> Result<SipUri, ParseError> {
        // One pass: every byte allowed, and where the first `@` is. The user part may hold
        // `;`, `?`, `:` (RFC 4475 §3.1.1.2, §3.1.1.9), but never an unescaped `@`, nor can the
        // host part: so the first `@` ends the userinfo.
        let mut at = None;
        for (i, &b) in s.iter().enumerate() {
            if !is_uri_char(b) {
                return Err(ParseError::BadUri);
            }
            if b == b'@' && at.is_none() {
                at = Some(i);
            }
        }
        let (user, password, rest) = match at {
            Some(at) => {
                let userinfo = &s[..at];
                let (u, p) = match userinfo.iter().position(|&b| b == b':') {
                    Some(c) => (&userinfo[..c], Some(&userinfo[c + 1..])),
                    None => (userinfo, None),
                };
                if u.is_empty() {
                    return Err(ParseError::BadUri);
                }
                let u = std::str::from_utf8(u)
                    .map_err(|_| ParseError::BadUri)?
                    .to_owned();
                let p = p
                    .map(|p| std::str::from_utf8(p).map(str::to_owned))
                    .transpose()
                    .map_err(|_| ParseError::BadUri)?;
                (Some(u), p, &s[at + 1..])
            }
            None => (None, None, s),
        };
        let host_end = if rest.first() == Some(&b'[') {
            rest.iter()
                .position(|&b| b == b']')
                .map(|i| i + 1)
                .ok_or(ParseError::BadUri)?
        } else {
            rest.iter()
                .position(|&b| matches!(b, b':' | b';' | b'?'))
                .unwrap_or(rest.len())
        };
        let host = Host::parse(&rest[..host_end])?;
        let mut rest = &rest[host_end..];
        let mut port = None;
        if let Some(r) = rest.strip_prefix(b":") {
            let end = r
                .iter()
                .position(|&b| matches!(b, b';' | b'?'))
                .unwrap_or(r.len());
            port = Some(parse_port(&r[..end])?);
            rest = &r[end..];
        }
        let (param_part, header_part) = match rest.iter().position(|&b| b == b'?') {
            Some(q) => (&rest[..q], Some(&rest[q + 1..])),
            None => (rest, None),
        };
        if !param_part.is_empty() && param_part[0] != b';' {
            return Err(ParseError::BadUri);
        }
        let mut params = Params::new();
        if let Some(p) = param_part.strip_prefix(b";") {
            parse_uri_params(p, &mut params, b';')?;
        }
        let mut headers = Params::new();
        if let Some(h) = header_part {
            parse_uri_params(h, &mut headers, b'&')?;
        }
        Ok(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// The `transport` parameter.
    pub fn transport(&self) -> Option<&str> {
        self.params.get("transport").flatten()
    }

    /// Whether the `lr` parameter is present (loose routing, RFC 3261 §19.1.1).
    pub fn lr(&self) -> bool {
        self.params.contains("lr")
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&str> {
        self.params.get("maddr").flatten()
    }

    /// The user part with `%HH` escapes decoded (lossy for non-UTF-8).
    pub fn user_unescaped(&self) -> Option<String> {
        self.user
            .as_deref()
            .map(|u| String::from_utf8_lossy(&percent_decode(u)).into_owned())
    }

    /// RFC 3261 §19.1.4 comparison.
    pub fn equivalent(&self, other: &SipUri) -> bool {
        // "A SIP and SIPS URI are never equivalent."
        if self.secure != other.secure {
            return false;
        }
        // "Comparison of the userinfo of SIP and SIPS URIs is case-sensitive. ... Characters
        // other than those in the "reserved" set are equivalent to their "%" HEX HEX encoding."
        if self.user.as_deref().map(unescape) != other.user.as_deref().map(unescape)
            || self.password.as_deref().map(unescape) != other.password.as_deref().map(unescape)
        {
            return false;
        }
        // "A URI omitting any component with a default value will not match a URI explicitly
        // containing that component with its default value."
        if !self.host.equivalent(&other.host) || self.port != other.port {
            return false;
        }
        for (name, _) in self.params.iter() {
            // A repeated parameter (which RFC 3261 §19.1.1 forbids) counts by its first
            // occurrence on both sides, so the comparison stays symmetric and reflexive.
            let v = self.params.get(name).flatten();
            match other.params.get(name) {
                // "Any uri-parameter appearing in both URIs must match."
                Some(w) => {
                    if !opt_eq_ci(v, w) {
                        return false;
                    }
                }
                // "A user, ttl, or method uri-parameter appearing in only one URI never
                // matches"; "A URI that includes an maddr parameter will not match a URI that
                // contains no maddr parameter." (and transport, see `is_sticky_param`); "All
                // other uri-parameters appearing in only one URI are ignored".
                None => {
                    if is_sticky_param(name) {
                        return false;
                    }
                }
            }
        }
        for (name, _) in other.params.iter() {
            if is_sticky_param(name) && !self.params.contains(name) {
                return false;
            }
        }
        // "URI header components are never ignored. Any present header component MUST be
        // present in both URIs and match for the URIs to match."
        normalized_headers(&self.headers) == normalized_headers(&other.headers)
    }
}

/// Parameters whose presence in only one of two URIs makes them differ. The rule text names
/// user, ttl, method and maddr; `transport` is added because the section's own examples list
/// `sip:bob@biloxi.com` and `sip:bob@biloxi.com;transport=udp` as "not equivalent (can resolve
/// to different transports)", and routing on such a pair must not treat them as one target.
/// URI headers (or tel: parameters) as a sorted list of comparison forms: order does not
/// matter, every entry counts.
fn normalized_headers(h: &Params) -> Vec<(String, Option<String>)> {
    let mut v: Vec<(String, Option<String>)> = h
        .iter()
        .map(|(n, v)| {
            (
                unescape(n).to_ascii_lowercase(),
                v.map(|v| unescape(v).to_ascii_lowercase()),
            )
        })
        .collect();
    v.sort();
    v
}

fn is_sticky_param(name: &str) -> bool {
    ["user", "ttl", "method", "maddr", "transport"]
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

fn opt_eq_ci(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => unescape(a).eq_ignore_ascii_case(&unescape(b)),
        _ => false,
    }
}

fn parse_port(s: &[u8]) -> Result<u16, ParseError> {
    if s.is_empty() || s.len() > 5 || !s.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadUri);
    }
    let n = s.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).map_err(|_| ParseError::BadUri)
}

impl SipUri {
    /// Append the URI to `out`: the same text as `Display`, without the formatting machinery
    /// (this runs for every Request-URI printed).
    pub fn print(&self, out: &mut BytesMut) {
        out.put_slice(if self.secure { b"sips:" } else { b"sip:" });
        if let Some(u) = &self.user {
            out.put_slice(u.as_bytes());
            if let Some(p) = &self.password {
                out.put_u8(b':');
                out.put_slice(p.as_bytes());
            }
            out.put_u8(b'@');
        }
        self.host.print(out);
        if let Some(p) = self.port {
            out.put_u8(b':');
            put_decimal(u32::from(p), out);
        }
        self.params.print(out);
        for (i, (n, v)) in self.headers.iter().enumerate() {
            out.put_u8(if i == 0 { b'?' } else { b'&' });
            out.put_slice(n.as_bytes());
            if let Some(v) = v {
                out.put_u8(b'=');
                out.put_slice(v.as_bytes());
            }
        }
    }
}

impl Host {
    /// Append the host to `out` (IPv6 in brackets), as `Display` does.
    pub fn print(&self, out: &mut BytesMut) {
        match self {
            Host::Domain(d) => out.put_slice(d.as_bytes()),
            Host::Ipv4(ip) => {
                for (i, o) in ip.octets().iter().enumerate() {
                    if i > 0 {
                        out.put_u8(b'.');
                    }
                    put_decimal(u32::from(*o), out);
                }
            }
            Host::Ipv6(s) => {
                out.put_u8(b'[');
                out.put_slice(s.as_bytes());
                out.put_u8(b']');
            }
        }
    }
}

impl Uri {
    /// Append the URI to `out`; the same text as `Display`.
    pub fn print(&self, out: &mut BytesMut) {
        match self {
            Uri::Sip(u) => u.print(out),
            other => {
                // BytesMut's fmt::Write never fails.
                let _ = write!(out, "{other}");
            }
        }
    }
}

/// Decimal digits of `n`, without going through `fmt`.
pub(crate) fn put_decimal(n: u32, out: &mut BytesMut) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&buf[i..]);
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)?;
        for (i, (n, v)) in self.headers.iter().enumerate() {
            f.write_str(if i == 0 { "?" } else { "&" })?;
            f.write_str(n)?;
            if let Some(v) = v {
                write!(f, "={v}")?;
            }
        }
        Ok(())
    }
}

impl TelUri {
    fn parse_rest(s: &[u8]) -> Result<TelUri, ParseError> {
        let end = s.iter().position(|&b| b == b';').unwrap_or(s.len());
        let number = &s[..end];
        // RFC 3966: global-number-digits = "+" *phonedigit DIGIT *phonedigit; local numbers are
        // hex digits, '*', '#' and visual separators.
        let ok = |b: &u8| {
            b.is_ascii_hexdigit() || matches!(b, b'-' | b'.' | b'(' | b')' | b'*' | b'#' | b'+')
        };
        if number.is_empty() || !number.iter().all(ok) {
            return Err(ParseError::BadUri);
        }
        let mut params = Params::new();
        if end < s.len() {
            parse_uri_params(&s[end + 1..], &mut params, b';')?;
        }
        Ok(TelUri {
            number: String::from_utf8_lossy(number).into_owned(),
            params,
        })
    }

    /// RFC 3966 §4 comparison: numbers equal ignoring visual separators, same parameters
    /// (case-insensitive, in any order).
    pub fn equivalent(&self, other: &TelUri) -> bool {
        let digits = |s: &str| -> String {
            s.chars()
                .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
                .map(|c| c.to_ascii_lowercase())
                .collect()
        };
        digits(&self.number) == digits(&other.number)
            && normalized_headers(&self.params) == normalized_headers(&other.params)
    }
}

impl fmt::Display for TelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tel:{}{}", self.number, self.params)
    }
}

/// Decode every well-formed `%HH`; anything else is kept literally.
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The comparison form of a URI component (RFC 3261 §19.1.4): escapes of unreserved
/// characters are decoded; escapes of reserved characters stay escaped (upper-case hex), since
/// `%40` is *not* equivalent to `@`.
fn unescape(s: &str) -> String {
    const RESERVED: &[u8] = b";/?:@&=+$,";
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            let c = h << 4 | l;
            // `%25` stays escaped too: decoding it would make `%2540` look like `%40`.
            if RESERVED.contains(&c) || c == b'%' || !c.is_ascii() {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
            } else {
                out.push(char::from(c));
            }
            i += 3;
            continue;
        }
        let ch_len = utf8_len(b[i]);
        out.push_str(s.get(i..i + ch_len).unwrap_or("?"));
        i += ch_len.max(1);
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Uri {
        Uri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn rfc3261_19_1_4_equivalent_examples() {
        for (a, b) in [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            (
                "sip:carol@chicago.com;newparam=5",
                "sip:carol@chicago.com;security=on",
            ),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
        ] {
            assert!(u(a).equivalent(&u(b)), "{a} == {b}");
            assert!(u(b).equivalent(&u(a)), "{b} == {a}");
        }
    }

    #[test]
    fn rfc3261_19_1_4_not_equivalent_examples() {
        for (a, b) in [
            (
                "SIP:ALICE@AtLanTa.CoM;Transport=udp",
                "sip:alice@AtLanTa.CoM;Transport=UDP",
            ),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            (
                "sip:bob@biloxi.com",
                "sip:bob@biloxi.com:6000;transport=tcp",
            ),
            (
                "sip:carol@chicago.com",
                "sip:carol@chicago.com?Subject=next%20meeting",
            ),
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
            ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
            (
                "sip:alice@atlanta.com",
                "sip:alice@atlanta.com;maddr=239.255.255.1",
            ),
            ("sip:alice@atlanta.com;user=phone", "sip:alice@atlanta.com"),
            // %40 is a reserved character: not the same as '@' in the user part.
            ("sip:a%40b@atlanta.com", "sip:a%2540b@atlanta.com"),
        ] {
            assert!(!u(a).equivalent(&u(b)), "{a} != {b}");
            assert!(!u(b).equivalent(&u(a)), "{b} != {a}");
        }
    }

    #[test]
    fn prints_back_the_original_text_with_escapes() {
        for s in [
            "sip:%75se%72@example.com",
            "sip:user;par=u%40example.net@example.com",
            "sips:alice:secret@[2001:db8::10]:5061;transport=tls;lr?Subject=hi%20there&X=1",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "tel:+1-201-555-0123;phone-context=example.com",
            "urn:service:sos",
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        ] {
            assert_eq!(u(s).to_string(), s);
        }
    }

    #[test]
    fn parses_the_parts_of_a_sip_uri() {
        let Uri::Sip(s) = u("sips:alice:pw@[2001:db8::1]:5061;transport=tls;lr;maddr=10.0.0.1?h=v")
        else {
            panic!("sip uri")
        };
        assert!(s.secure);
        assert_eq!(s.user.as_deref(), Some("alice"));
        assert_eq!(s.password.as_deref(), Some("pw"));
        assert_eq!(s.host.ipv6_addr(), Some("2001:db8::1".parse().expect("v6")));
        assert_eq!(s.port, Some(5061));
        assert_eq!(s.transport(), Some("tls"));
        assert!(s.lr());
        assert_eq!(s.maddr(), Some("10.0.0.1"));
        assert_eq!(s.headers.get("h"), Some(Some("v")));
        assert_eq!(
            u("sip:10.1.2.3").as_sip().map(|s| s.host.clone()),
            Some(Host::Ipv4([10, 1, 2, 3].into()))
        );
    }

    #[test]
    fn tel_uri_compares_without_visual_separators() {
        let Uri::Tel(t) = u("tel:+1-201-555-0123;phone-context=example.com") else {
            panic!("tel")
        };
        assert!(t.is_global());
        assert_eq!(t.phone_context(), Some("example.com"));
        assert!(
            u("tel:+1(201)555.0123;PHONE-CONTEXT=example.com")
                .equivalent(&u("tel:+12015550123;phone-context=EXAMPLE.com"))
        );
        assert!(!u("tel:+12015550123").equivalent(&u("tel:+12015550124")));
    }

    #[test]
    fn unknown_schemes_are_kept_opaque() {
        assert_eq!(
            u("soap.beep://192.0.2.103:3002"),
            Uri::Other {
                scheme: "soap.beep".into(),
                text: "//192.0.2.103:3002".into()
            }
        );
        assert_eq!(
            u("nobodyKnowsThisScheme:totallyopaquecontent").scheme(),
            "nobodyKnowsThisScheme"
        );
    }

    #[test]
    fn malformed_uris_are_errors() {
        for s in [
            "",
            "sip:",
            "sip:user@",
            "sip:@host",
            "<sip:a@b>",
            "sip:a b@c",
            "sip:2001:db8::10",
            "sip:host:99999",
            "sip:host:",
            "sip:[::1",
            "sip:[zz::1]",
            "sip:host;=v",
            "tel:",
            "tel:abc g",
            "1sip:x",
        ] {
            assert!(Uri::parse(s).is_err(), "{s:?} must not parse");
        }
    }

    #[test]
    fn rfc5118_three_colon_ipv6_is_tolerated_and_printed_unchanged() {
        let s = "sip:user@[2001:db8:::192.0.2.1]";
        assert_eq!(u(s).to_string(), s);
        assert!(u(s).as_sip().is_some_and(|s| s.host.ipv6_addr().is_none()));
    }

    #[test]
    fn absolute_uri_rejects_angle_brackets_and_quotes_so_it_prints_back_parseable() {
        // Found by the `message` fuzz target: `To: i:>` parsed as an addr-spec whose printed
        // form `<i:>>` no longer parsed.
        for s in ["i:>", "urn:a<b", "tel:+1\"2", "x:{y}"] {
            assert!(Uri::parse(s).is_err(), "{s:?} must not parse");
        }
        assert_eq!(u("urn:service:sos").to_string(), "urn:service:sos");
        let raw = b"R S:c SIP/2.0\nT:i:>\n\n";
        let parsed = crate::message::Message::parse(bytes::Bytes::from_static(raw));
        if let Ok(m) = parsed {
            assert!(
                m.headers().to().is_err(),
                "To: i:> is not a valid name-addr"
            );
        }
    }
}
