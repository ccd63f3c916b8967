//! Typed header values, parsed on demand from the raw values kept in [`Headers`].
//!
//! Each type parses one header *value* (after a list header was split at its top-level commas)
//! and prints it back in canonical form; `parse(print(x)) == x` holds for all of them.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::ParseError;
use super::headers::{HeaderName, Headers};
use super::method::{Method, is_token_char};
use super::params::Params;
use super::scan::{Scanner, split_commas, trim};
use super::uri::{Host, Uri, put_decimal};

/// Parse `*( SEMI generic-param )` (RFC 3261 §25.1), whitespace allowed around `;` and `=`.
/// `gen-value = token / host / quoted-string`; quoted values keep their quotes.
fn parse_generic_params(sc: &mut Scanner<'_>, name: &'static str) -> Result<Params, ParseError> {
    let bad = || ParseError::BadHeader { name };
    let mut params = Params::new();
    loop {
        if !sc.eat_sep(b';') {
            break;
        }
        if params.is_empty() {
            // One allocation for all the names and values.
            params.reserve(sc.rest().len());
        }
        let n = sc.token();
        if n.is_empty() {
            return Err(bad());
        }
        let n = std::str::from_utf8(n).map_err(|_| bad())?;
        let v = if sc.eat_sep(b'=') {
            let v = if sc.peek() == Some(b'"') {
                sc.quoted().ok_or_else(bad)?
            } else {
                let v = sc.until(|b| matches!(b, b';' | b',' | b' ' | b'\t' | b'"' | b'<' | b'>'));
                if v.is_empty() {
                    return Err(bad());
                }
                v
            };
            Some(std::str::from_utf8(v).map_err(|_| bad())?)
        } else {
            None
        };
        params.push(n, v);
    }
    sc.ws();
    Ok(params)
}

/// One Via header value (RFC 3261 §20.42): `SIP/2.0/UDP host:port;branch=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The transport, upper-cased (`UDP`, `TCP`, `TLS`, `SCTP`, `WS`, or an extension token).
    pub transport: String,
    /// The sent-by host.
    pub host: Host,
    /// The sent-by port, when written.
    pub port: Option<u16>,
    /// The via-params (`branch`, `received`, `rport`, `maddr`, `ttl`, extensions).
    pub params: Params,
}

impl Via {
    /// A Via with a branch, as a UAC or proxy makes it.
    pub fn new(transport: &str, host: Host, port: Option<u16>, branch: &str) -> Via {
        let mut params = Params::new();
        params.push("branch", Some(branch));
        Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        }
    }

    /// Parse one Via value (not a comma list).
    pub fn parse(v: &[u8]) -> Result<Via, ParseError> {
        const NAME: &str = "Via";
        let bad = || ParseError::BadHeader { name: NAME };
        let mut sc = Scanner::new(v);
        sc.ws();
        let proto = sc.token();
        if !proto.eq_ignore_ascii_case(b"SIP") || !sc.eat_sep(b'/') {
            return Err(bad());
        }
        let version = sc.token();
        if version != b"2.0" || !sc.eat_sep(b'/') {
            return Err(bad());
        }
        let transport = sc.token();
        if transport.is_empty() {
            return Err(bad());
        }
        let transport = String::from_utf8_lossy(transport).to_ascii_uppercase();
        // LWS is mandatory between sent-protocol and sent-by.
        let before = sc.pos;
        sc.ws();
        if sc.pos == before {
            return Err(bad());
        }
        let host_bytes = if sc.peek() == Some(b'[') {
            let start = sc.pos;
            sc.until(|b| b == b']');
            if !sc.eat(b']') {
                return Err(bad());
            }
            &sc.s[start..sc.pos]
        } else {
            sc.until(|b| matches!(b, b':' | b';' | b' ' | b'\t' | b','))
        };
        let host = Host::parse(host_bytes).map_err(|_| bad())?;
        let mut port = None;
        if sc.eat_sep(b':') {
            let p = sc.until(|b| !b.is_ascii_digit());
            port = Some(parse_u16(p).ok_or_else(bad)?);
        }
        let params = parse_generic_params(&mut sc, NAME)?;
        if !sc.at_end() {
            return Err(bad());
        }
        Ok(Via {
            transport,
            host,
            port,
            params,
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch").flatten()
    }

    /// The `received` parameter (RFC 5118 §4.5: with or without brackets, as written).
    pub fn received(&self) -> Option<&str> {
        self.params.get("received").flatten()
    }

    /// The `rport` parameter (RFC 3581): `None` absent, `Some(None)` requested (no value),
    /// `Some(Some(port))` filled in. A value that is not a port counts as absent.
    pub fn rport(&self) -> Option<Option<u16>> {
        match self.params.get("rport")? {
            None => Some(None),
            Some(v) => parse_u16(v.as_bytes()).map(Some),
        }
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&str> {
        self.params.get("maddr").flatten()
    }

    /// The sent-by as printed: `host` or `host:port`.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_string(),
        }
    }

    /// Whether the branch carries the RFC 3261 magic cookie `z9hG4bK` and something after it
    /// (RFC 4475 §3.2.1: a bare cookie is not a transaction identifier).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > 7 && b.starts_with("z9hG4bK"))
    }
}

impl Via {
    /// Append the value to `out` (same text as `Display`).
    pub fn print(&self, out: &mut BytesMut) {
        out.put_slice(b"SIP/2.0/");
        out.put_slice(self.transport.as_bytes());
        out.put_u8(b' ');
        self.host.print(out);
        if let Some(p) = self.port {
            out.put_u8(b':');
            put_decimal(u32::from(p), out);
        }
        self.params.print(out);
    }

    /// The value as a header value buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        self.print(&mut out);
        out.freeze()
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

fn parse_u16(p: &[u8]) -> Option<u16> {
    parse_u32(p).and_then(|n| u16::try_from(n).ok())
}

/// Decimal digits to u32 (leading zeros allowed, RFC 4475 §3.1.1.1); `None` on overflow.
pub(crate) fn parse_u32(p: &[u8]) -> Option<u32> {
    if p.is_empty() || !p.iter().all(u8::is_ascii_digit) {
        return None;
    }
    p.iter().try_fold(0u32, |n, &d| {
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

/// A name-addr or addr-spec with header parameters: the value of From, To, Contact, Route,
/// Record-Route, P-Asserted-Identity, Refer-To, Diversion and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name as written: the contents of the quoted-string (backslash escapes kept,
    /// without the quotes), or the token words of an unquoted name.
    pub display: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// The header parameters (`tag`, `expires`, `q`, ...), after the `>`.
    pub params: Params,
}

impl NameAddr {
    /// A bare `<uri>`.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display: None,
            uri,
            params: Params::new(),
        }
    }

    /// Parse one value (not a comma list). `name` is used in the error.
    pub fn parse_named(v: &[u8], name: &'static str) -> Result<NameAddr, ParseError> {
        let bad = || ParseError::BadHeader { name };
        let mut sc = Scanner::new(v);
        sc.ws();
        let mut display = None;
        let uri;
        if sc.peek() == Some(b'"') {
            let q = sc.quoted().ok_or_else(bad)?;
            display = Some(
                std::str::from_utf8(&q[1..q.len() - 1])
                    .map_err(|_| bad())?
                    .to_owned(),
            );
            sc.ws();
            uri = angle_uri(&mut sc).ok_or_else(bad)?;
        } else if sc.rest().contains(&b'<') {
            // `*(token LWS) <uri>`; RFC 4475 §3.1.1.6: no LWS before `<` is fine.
            let words = trim(sc.until(|b| b == b'<'));
            if !words.is_empty() {
                // RFC 4475 §3.1.2.15: non-token characters (`,`, `"`, ...) in an unquoted
                // display name are malformed. UTF-8 bytes are tolerated: carriers send unquoted
                // non-ASCII names, and they cannot be confused with any delimiter.
                if !words
                    .iter()
                    .all(|&b| is_token_char(b) || b == b' ' || b == b'\t' || b >= 0x80)
                {
                    return Err(bad());
                }
                display = Some(std::str::from_utf8(words).map_err(|_| bad())?.to_owned());
            }
            uri = angle_uri(&mut sc).ok_or_else(bad)?;
        } else {
            // addr-spec: "If the URI is not enclosed in angle brackets, any semicolon-delimited
            // parameters are header-parameters, not URI parameters." (RFC 3261 §20)
            let u = sc.until(|b| matches!(b, b';' | b' ' | b'\t' | b','));
            // "... URIs that contain a comma, question mark, or semicolon ... MUST be enclosed
            // in angle brackets" (RFC 3261 §20; RFC 4475 §3.1.2.13).
            if u.contains(&b'?') {
                return Err(bad());
            }
            uri = Uri::parse(u).map_err(|_| bad())?;
        }
        let params = parse_generic_params(&mut sc, name)?;
        if !sc.at_end() {
            // RFC 4475 §3.3.8: a second value where one is allowed.
            return Err(if sc.peek() == Some(b',') {
                ParseError::MultipleValues { name }
            } else {
                bad()
            });
        }
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }

    /// The display name with its quoted-string escapes resolved (`\"` gives `"`).
    pub fn display_text(&self) -> Option<String> {
        self.display
            .as_deref()
            .map(|d| super::fields::unquote(&format!("\"{d}\"")))
    }

    /// Set the display name from plain text, escaping `"` and `\` so it prints as a valid
    /// quoted-string (RFC 3261 §25.1 `quoted-pair`). CR and LF, which cannot be carried, are
    /// replaced by spaces.
    pub fn set_display_text(&mut self, text: &str) {
        let mut d = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '"' | '\\' => {
                    d.push('\\');
                    d.push(c);
                }
                '\r' | '\n' => d.push(' '),
                c => d.push(c),
            }
        }
        self.display = Some(d);
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag").flatten()
    }

    /// The `expires` parameter of a Contact, when it is a number.
    pub fn expires(&self) -> Option<u32> {
        self.params
            .get("expires")
            .flatten()
            .and_then(|v| parse_u32(v.as_bytes()))
    }

    /// The `q` parameter of a Contact, as written.
    pub fn q(&self) -> Option<&str> {
        self.params.get("q").flatten()
    }
}

/// `"<" URI ">"` at the cursor.
fn angle_uri(sc: &mut Scanner<'_>) -> Option<Uri> {
    if !sc.eat(b'<') {
        return None;
    }
    let u = sc.until(|b| b == b'>');
    if !sc.eat(b'>') {
        return None;
    }
    Uri::parse(u).ok()
}

impl NameAddr {
    /// Append the value to `out` (same text as `Display`).
    pub fn print(&self, out: &mut BytesMut) {
        if let Some(d) = &self.display {
            out.put_u8(b'"');
            out.put_slice(d.as_bytes());
            out.put_slice(b"\" ");
        }
        out.put_u8(b'<');
        self.uri.print(out);
        out.put_u8(b'>');
        self.params.print(out);
    }

    /// The value as a header value buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        self.print(&mut out);
        out.freeze()
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "\"{d}\" ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// The CSeq header (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number; "MUST be expressible as a 32-bit unsigned integer".
    pub seq: u32,
    /// The method.
    pub method: Method,
}

impl CSeq {
    /// Parse a CSeq value.
    pub fn parse(v: &[u8]) -> Result<CSeq, ParseError> {
        let bad = || ParseError::BadHeader { name: "CSeq" };
        let mut sc = Scanner::new(v);
        sc.ws();
        let seq = parse_u32(sc.until(|b| !b.is_ascii_digit())).ok_or_else(bad)?;
        let before = sc.pos;
        sc.ws();
        if sc.pos == before {
            return Err(bad());
        }
        let method = Method::from_token(sc.token()).ok_or_else(bad)?;
        sc.ws();
        if !sc.at_end() {
            return Err(bad());
        }
        Ok(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// The values of every line called `name`, split at top-level commas, in order.
fn list_values<'a>(h: &'a Headers, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
    h.get_all(name).flat_map(|v| split_commas(v))
}

/// The only line called `name`: an error when there are several (RFC 4475 §3.3.8).
fn single<'a>(
    h: &'a Headers,
    name: &'a HeaderName,
    label: &'static str,
) -> Result<Option<&'a Bytes>, ParseError> {
    let mut it = h.get_all(name);
    let first = it.next();
    if it.next().is_some() {
        return Err(ParseError::MultipleValues { name: label });
    }
    Ok(first)
}

impl Headers {
    /// The first Via value (the top one).
    pub fn top_via(&self) -> Result<Via, ParseError> {
        let v = list_values(self, &HeaderName::Via)
            .next()
            .ok_or(ParseError::MissingHeader { name: "Via" })?;
        Via::parse(v)
    }

    /// Every Via value, over all Via lines, in order.
    pub fn vias(&self) -> Result<Vec<Via>, ParseError> {
        list_values(self, &HeaderName::Via)
            .map(Via::parse)
            .collect()
    }

    /// The CSeq header.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        let v = single(self, &HeaderName::CSeq, "CSeq")?
            .ok_or(ParseError::MissingHeader { name: "CSeq" })?;
        CSeq::parse(v)
    }

    /// The Call-ID (`word ["@" word]`): one line, no whitespace inside.
    pub fn call_id(&self) -> Result<&str, ParseError> {
        let v = single(self, &HeaderName::CallId, "Call-ID")?
            .ok_or(ParseError::MissingHeader { name: "Call-ID" })?;
        let bad = ParseError::BadHeader { name: "Call-ID" };
        if v.is_empty() || v.iter().any(|&b| b <= b' ' || b == 0x7f) {
            return Err(bad);
        }
        std::str::from_utf8(v).map_err(|_| bad)
    }

    fn single_name_addr(
        &self,
        name: &HeaderName,
        label: &'static str,
    ) -> Result<NameAddr, ParseError> {
        let v = single(self, name, label)?.ok_or(ParseError::MissingHeader { name: label })?;
        // No comma split first: parse_named reports a top-level comma after the value as
        // MultipleValues, which saves a scan on every From and To read.
        NameAddr::parse_named(v, label)
    }

    /// The From header.
    pub fn from(&self) -> Result<NameAddr, ParseError> {
        self.single_name_addr(&HeaderName::From, "From")
    }

    /// The To header.
    pub fn to(&self) -> Result<NameAddr, ParseError> {
        self.single_name_addr(&HeaderName::To, "To")
    }

    /// Max-Forwards, when present.
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        self.single_u32(&HeaderName::MaxForwards, "Max-Forwards")
    }

    /// Content-Length, when present.
    pub fn content_length(&self) -> Result<Option<u32>, ParseError> {
        self.single_u32(&HeaderName::ContentLength, "Content-Length")
    }

    /// Expires, when present (delta-seconds).
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.single_u32(&HeaderName::Expires, "Expires")
    }

    pub(crate) fn single_u32(
        &self,
        name: &HeaderName,
        label: &'static str,
    ) -> Result<Option<u32>, ParseError> {
        single(self, name, label)?
            .map(|v| parse_u32(trim(v)).ok_or(ParseError::BadHeader { name: label }))
            .transpose()
    }

    /// Whether the Contact is the REGISTER wildcard `*` (RFC 3261 §10.2.2).
    pub fn contact_is_star(&self) -> bool {
        list_values(self, &HeaderName::Contact).any(|v| v == b"*")
    }

    /// Every Contact value in order. A lone `*` gives an empty list (see
    /// [`Headers::contact_is_star`]); `*` mixed with addresses is an error.
    pub fn contacts(&self) -> Result<Vec<NameAddr>, ParseError> {
        if self.contact_is_star() {
            return if list_values(self, &HeaderName::Contact).count() == 1 {
                Ok(Vec::new())
            } else {
                Err(ParseError::BadHeader { name: "Contact" })
            };
        }
        self.name_addrs(&HeaderName::Contact, "Contact")
    }

    /// Every Route value in order.
    pub fn routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs(&HeaderName::Route, "Route")
    }

    /// Every Record-Route value in order.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs(&HeaderName::RecordRoute, "Record-Route")
    }

    pub(crate) fn name_addrs(
        &self,
        name: &HeaderName,
        label: &'static str,
    ) -> Result<Vec<NameAddr>, ParseError> {
        list_values(self, name)
            .map(|v| NameAddr::parse_named(v, label))
            .collect()
    }
}
