//! Stateless validation of received messages: the checks a UAS makes before a request reaches a
//! transaction (RFC 3261 §8.2.1–§8.2.3, §16.3), producing the response status RFC 3261 and
//! RFC 4475 ask for.
//!
//! Messages that do not even parse are handled by [`reply_to_unparseable`], which builds the
//! 400 (or 505) from whatever header lines can be salvaged, so the sender still gets an answer.

use bytes::Bytes;

use super::headers::{Header, HeaderName, Headers};
use super::method::{Method, StatusCode};
use super::print::response_to;
use super::scan::{split_commas, trim};
use super::uri::Uri;
use super::{ParseError, Request, Response};

/// What the validating element supports.
#[derive(Debug, Clone)]
pub struct ValidateConfig {
    /// Methods this element implements. A standard method that is not listed gets 405 (with
    /// Allow); an extension method that is not listed gets 501 (RFC 3261 §8.2.1).
    pub methods: Vec<Method>,
    /// Option tags this element supports (for Require, RFC 3261 §8.2.2.3).
    pub supported: Vec<String>,
    /// Check Proxy-Require as well (only a proxy does, RFC 3261 §16.3 step 5).
    pub is_proxy: bool,
    /// Body types this element accepts (`type/subtype`, compared case-insensitively).
    pub accepted_content_types: Vec<String>,
    /// Whether `tel:` Request-URIs are accepted (else 416).
    pub accept_tel: bool,
    /// Answer 483 to a request with Max-Forwards 0 that would have to be forwarded (every
    /// method but OPTIONS, which the element answers itself, RFC 3261 §16.3 step 3).
    pub reject_max_forwards_zero: bool,
}

impl Default for ValidateConfig {
    fn default() -> ValidateConfig {
        ValidateConfig {
            methods: vec![
                Method::Invite,
                Method::Ack,
                Method::Bye,
                Method::Cancel,
                Method::Options,
                Method::Prack,
                Method::Update,
                Method::Info,
                Method::Notify,
                Method::Refer,
                Method::Message,
            ],
            supported: vec!["100rel".into(), "timer".into(), "replaces".into()],
            is_proxy: false,
            accepted_content_types: vec![
                "application/sdp".into(),
                "multipart/mixed".into(),
                "application/dtmf-relay".into(),
                "application/dtmf".into(),
                "message/sipfrag".into(),
                "text/plain".into(),
            ],
            accept_tel: true,
            reject_max_forwards_zero: true,
        }
    }
}

/// A request refused before it reaches a transaction, and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The status of the response to send.
    pub status: StatusCode,
    /// A precise reason phrase ("Missing Call-ID header", "CSeq method mismatch", ...).
    pub reason: &'static str,
    /// Headers the response must carry (`Unsupported` for 420, `Allow` for 405, `Accept` for
    /// 415 and 406).
    pub extra: Vec<Header>,
}

impl Rejection {
    fn new(status: u16, reason: &'static str) -> Rejection {
        Rejection {
            status: StatusCode::new(status).expect("status codes used here are in 100..=699"),
            reason,
            extra: Vec::new(),
        }
    }

    fn bad(reason: &'static str) -> Rejection {
        Rejection::new(400, reason)
    }

    /// The response to send for `req` (RFC 3261 §8.2.6: Via, From, To, Call-ID, CSeq copied),
    /// with the extra headers. The caller adds a To tag if it wants one.
    pub fn to_response(&self, req: &Request) -> Response {
        let mut r = response_to(req, self.status, Some(self.reason));
        for h in &self.extra {
            r.headers.push_header(h.clone());
        }
        r
    }
}

fn header_error(
    e: &ParseError,
    missing: &'static str,
    malformed: &'static str,
    multiple: &'static str,
) -> Rejection {
    match e {
        ParseError::MissingHeader { .. } => Rejection::bad(missing),
        ParseError::MultipleValues { .. } => Rejection::bad(multiple),
        _ => Rejection::bad(malformed),
    }
}

/// `type/subtype` of a media-type value, without parameters, trimmed.
fn media_type(v: &[u8]) -> &[u8] {
    trim(v.split(|&b| b == b';').next().unwrap_or(v))
}

fn media_matches(accept: &[u8], have: &str) -> bool {
    let accept = media_type(accept);
    if accept == b"*/*" {
        return true;
    }
    if let Some(prefix) = accept.strip_suffix(b"/*") {
        return have.len() > prefix.len()
            && have.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix);
    }
    accept.eq_ignore_ascii_case(have.as_bytes())
}

/// Validate a parsed request the way a UAS does before processing it. `Ok(())` means: hand it
/// to the transaction layer. An `Err` for an ACK means "drop it" (an ACK is never answered;
/// only the header checks of step 1 and 3 apply to it). The checks, in order:
///
/// 1. mandatory headers present and well-formed: Via (with an RFC 3261 branch), From, To,
///    Call-ID, CSeq (each exactly once), Max-Forwards if present → 400;
/// 2. the method: unknown extension → 501, known but not implemented → 405 (with Allow);
/// 3. CSeq method equal to the request method → 400 (RFC 4475 §3.1.2.17);
/// 4. the Request-URI scheme → 416; escaped headers in the Request-URI → 400;
/// 5. Max-Forwards 0 on a request that would be forwarded → 483;
/// 6. Require (and Proxy-Require for a proxy) → 420 with Unsupported;
/// 7. REGISTER: To must be a sip/sips AOR → 400;
/// 8. the body's Content-Type (and Content-Encoding) → 415 with Accept;
/// 9. an INVITE whose Accept excludes every type we could answer with → 406.
pub fn validate_request(req: &Request, cfg: &ValidateConfig) -> Result<(), Rejection> {
    let h = &req.headers;
    // RFC 3261 §8.1.1: "A valid SIP request formulated by a UAC MUST, at a minimum, contain the
    // following header fields: To, From, CSeq, Call-ID, Max-Forwards, and Via".
    let vias = h
        .vias()
        .map_err(|_| Rejection::bad("Malformed Via header"))?;
    let top = vias
        .first()
        .ok_or_else(|| Rejection::bad("Missing Via header"))?;
    // RFC 4475 §3.2.1: a branch of just the magic cookie is no transaction identifier; a
    // stateless 400 is the answer it allows.
    if top
        .branch()
        .is_some_and(|b| b.eq_ignore_ascii_case("z9hG4bK"))
    {
        return Err(Rejection::bad("Invalid Via branch"));
    }
    h.from().map_err(|e| {
        header_error(
            &e,
            "Missing From header",
            "Malformed From header",
            "Multiple From headers",
        )
    })?;
    let to = h.to().map_err(|e| {
        header_error(
            &e,
            "Missing To header",
            "Malformed To header",
            "Multiple To headers",
        )
    })?;
    h.call_id().map_err(|e| {
        header_error(
            &e,
            "Missing Call-ID header",
            "Malformed Call-ID header",
            "Multiple Call-ID headers",
        )
    })?;
    let cseq = h.cseq().map_err(|e| {
        header_error(
            &e,
            "Missing CSeq header",
            "Malformed CSeq header",
            "Multiple CSeq headers",
        )
    })?;
    let max_forwards = h.max_forwards().map_err(|e| {
        header_error(
            &e,
            "Missing Max-Forwards header",
            "Malformed Max-Forwards header",
            "Multiple Max-Forwards headers",
        )
    })?;
    if let Some(Err(_)) = h.get(&HeaderName::Contact).map(|_| h.contacts()) {
        return Err(Rejection::bad("Malformed Contact header"));
    }

    if !cfg.methods.contains(&req.method) {
        return Err(match req.method {
            // RFC 3261 §8.2.1: "If a UAS recognizes but does not support the method, it MUST
            // return a 405 (Method Not Allowed)"; "the UAS MUST ... add an Allow header field".
            Method::Extension(_) => Rejection::new(501, "Not Implemented"),
            _ => {
                let allow: Vec<&str> = cfg.methods.iter().map(Method::as_str).collect();
                let mut r = Rejection::new(405, "Method Not Allowed");
                r.extra
                    .push(Header::new(HeaderName::Allow, allow.join(", ")));
                r
            }
        });
    }
    // RFC 3261 §8.1.1.5: the CSeq method "MUST match that of the request".
    if cseq.method != req.method {
        return Err(Rejection::bad(
            "CSeq method does not match the request method",
        ));
    }

    // An ACK is never answered (RFC 3261 §17.1.1.3: it is not a transaction of its own), so
    // the checks below, whose only purpose is to pick a response, do not apply: a caller drops
    // an ACK that fails the structural checks above.
    if req.method == Method::Ack {
        return Ok(());
    }

    match &req.uri {
        Uri::Sip(u) => {
            // RFC 4475 §3.1.2.11: headers in a Request-URI are meaningless and must not be
            // forwarded; rejecting is the answer the RFC allows.
            if !u.headers.is_empty() {
                return Err(Rejection::bad("Request-URI carries escaped headers"));
            }
        }
        Uri::Tel(_) if cfg.accept_tel => {}
        // RFC 3261 §8.2.2.1: "If the Request-URI uses a scheme not supported by the UAS, it
        // SHOULD reject the request with a 416 (Unsupported URI Scheme) response."
        _ => return Err(Rejection::new(416, "Unsupported URI Scheme")),
    }

    // RFC 3261 §16.3 step 3: "If the Max-Forwards value is zero, the element MUST NOT forward
    // the request. If the request was for OPTIONS, the element MAY act as the final recipient
    // and respond per Section 11. Otherwise, the element MUST return a 483".
    if cfg.reject_max_forwards_zero && max_forwards == Some(0) && req.method != Method::Options {
        return Err(Rejection::new(483, "Too Many Hops"));
    }

    // RFC 3261 §8.2.2.3: "If a UAS does not understand an option-tag listed in a Require
    // header field, it MUST respond by generating a response with status code 420 (Bad
    // Extension). The UAS MUST add an Unsupported header field". Not for ACK and CANCEL.
    if req.method != Method::Ack && req.method != Method::Cancel {
        let mut unsupported: Vec<&[u8]> = Vec::new();
        let names: &[HeaderName] = if cfg.is_proxy {
            &[HeaderName::Require, HeaderName::ProxyRequire]
        } else {
            &[HeaderName::Require]
        };
        for name in names {
            for v in h.get_all(name) {
                for tag in split_commas(v) {
                    if !cfg
                        .supported
                        .iter()
                        .any(|s| s.as_bytes().eq_ignore_ascii_case(tag))
                    {
                        unsupported.push(tag);
                    }
                }
            }
        }
        if !unsupported.is_empty() {
            let mut value = Vec::new();
            for (i, t) in unsupported.iter().enumerate() {
                if i > 0 {
                    value.extend_from_slice(b", ");
                }
                value.extend_from_slice(t);
            }
            let mut r = Rejection::new(420, "Bad Extension");
            r.extra
                .push(Header::new(HeaderName::Unsupported, Bytes::from(value)));
            return Err(r);
        }
    }

    if req.method == Method::Register && !matches!(&to.uri, Uri::Sip(_)) {
        // RFC 4475 §3.3.4: "a registrar ... would reject this request with a 400 Bad Request,
        // since the To: field is required to contain a SIP or SIPS URI as an AOR".
        return Err(Rejection::bad("To of REGISTER is not a SIP or SIPS URI"));
    }

    let accept_header = || {
        let mut r = Rejection::new(415, "Unsupported Media Type");
        r.extra.push(Header::new(
            HeaderName::Accept,
            cfg.accepted_content_types.join(", "),
        ));
        r
    };
    if !req.body.is_empty() {
        // RFC 3261 §8.2.3: "If a UAS does not understand the type, encoding or language of
        // the body, it MUST reject the request with a 415 (Unsupported Media Type) response ...
        // MUST list the ... formats it understands in an Accept header field".
        match h.get(&HeaderName::ContentType) {
            Some(ct) => {
                let t = media_type(ct);
                if !cfg
                    .accepted_content_types
                    .iter()
                    .any(|a| a.as_bytes().eq_ignore_ascii_case(t))
                {
                    return Err(accept_header());
                }
            }
            None => return Err(Rejection::bad("Body without Content-Type")),
        }
        if let Some(enc) = h.get(&HeaderName::ContentEncoding)
            && split_commas(enc).any(|e| !e.eq_ignore_ascii_case(b"identity"))
        {
            return Err(accept_header());
        }
    }

    // RFC 3261 §21.4.7 / RFC 4475 §3.3.15: nothing we could answer an INVITE with is in Accept.
    if req.method == Method::Invite {
        let accepts: Vec<&[u8]> = h
            .get_all(&HeaderName::Accept)
            .flat_map(|v| split_commas(v))
            .collect();
        if !accepts.is_empty()
            && !accepts.iter().any(|a| {
                cfg.accepted_content_types
                    .iter()
                    .any(|t| media_matches(a, t))
            })
        {
            let mut r = Rejection::new(406, "Not Acceptable");
            r.extra.push(Header::new(
                HeaderName::Accept,
                cfg.accepted_content_types.join(", "),
            ));
            return Err(r);
        }
    }
    Ok(())
}

/// Why a received response is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseProblem {
    /// A mandatory header is missing or malformed (RFC 4475 §3.1.2.5: discard silently).
    #[error("response header: {0}")]
    Header(#[from] ParseError),
}

/// Validate a parsed response: Via, From, To, Call-ID and CSeq must be present and well-formed.
/// A response that fails is discarded (a response is never answered).
pub fn validate_response(resp: &Response) -> Result<(), ResponseProblem> {
    let h = &resp.headers;
    h.top_via()?;
    h.vias()?;
    h.from()?;
    h.to()?;
    h.call_id()?;
    h.cseq()?;
    Ok(())
}

/// Best-effort answer to a request that did not parse: the header lines are re-read leniently
/// and, when Via, From, To, Call-ID and CSeq can be salvaged, a 400 (or 505 for
/// [`ParseError::BadVersion`]) is built, as RFC 3261 §16.3 and RFC 4475 ask ("400 Bad
/// Request"). Returns `None` for responses and for data too broken to answer (then: drop).
pub fn reply_to_unparseable(datagram: &Bytes, err: &ParseError) -> Option<Response> {
    let b: &[u8] = datagram;
    let start = b.iter().position(|&c| c != b'\r' && c != b'\n')?;
    if b.len() - start >= 4 && b[start..start + 4].eq_ignore_ascii_case(b"SIP/") {
        return None;
    }
    // "The ACK ... MUST NOT be responded to" in effect: no response is ever sent to an ACK.
    if b[start..].starts_with(b"ACK ") {
        return None;
    }
    let mut headers = Headers::new();
    let mut lines = b[start..].split(|&c| c == b'\n').skip(1).peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(trim(&line[..colon]));
        let mut value = trim(&line[colon + 1..]).to_vec();
        while let Some(next) = lines.peek() {
            if next.first().is_some_and(|&c| c == b' ' || c == b'\t') {
                let cont = next.strip_suffix(b"\r").unwrap_or(next);
                value.push(b' ');
                value.extend_from_slice(trim(cont));
                lines.next();
            } else {
                break;
            }
        }
        if matches!(
            name,
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
        ) {
            headers.push(name, Bytes::from(value));
        }
    }
    for name in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        headers.get(&name)?;
    }
    let (status, reason) = match err {
        // RFC 3261 §8.2.1 / RFC 4475 §3.1.2.16: "505 (Version Not Supported)".
        ParseError::BadVersion(_) => (StatusCode::VERSION_NOT_SUPPORTED, "Version Not Supported"),
        ParseError::BadRequestUri => (StatusCode::BAD_REQUEST, "Malformed Request-URI"),
        ParseError::BadStartLine => (StatusCode::BAD_REQUEST, "Malformed Request-Line"),
        ParseError::ContentLengthMismatch { .. } => (
            StatusCode::BAD_REQUEST,
            "Content-Length larger than message",
        ),
        ParseError::BadContentLength => (StatusCode::BAD_REQUEST, "Malformed Content-Length"),
        ParseError::MultipleContentLength => {
            (StatusCode::BAD_REQUEST, "Conflicting Content-Length")
        }
        _ => (StatusCode::BAD_REQUEST, "Bad Request"),
    };
    let req = Request {
        method: Method::Options,
        uri: Uri::Other {
            scheme: "x".into(),
            text: "x".into(),
        },
        headers,
        body: Bytes::new(),
    };
    Some(response_to(&req, status, Some(reason)))
}
