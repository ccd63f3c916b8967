//! The message parser: start line, header lines (unfolded), Content-Length framing.
//!
//! Header values and the body are [`Bytes`] slices of the input; only a folded header value is
//! copied (to unfold it). Header values are not interpreted here beyond Content-Length: the
//! typed accessors on [`Headers`] parse them on demand.

use bytes::{Bytes, BytesMut};

use super::headers::{Header, HeaderName, Headers};
use super::method::{Method, StatusCode, is_token_char};
use super::typed::parse_u32;
use super::uri::Uri;
use super::{Message, ParseError, Request, Response};

/// How the end of the body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// A datagram: without Content-Length the body is the rest of the datagram (RFC 3261
    /// §18.3); bytes beyond Content-Length are ignored (RFC 4475 §3.1.1.8).
    Datagram,
    /// One message cut from a stream: Content-Length is mandatory.
    Stream,
}

impl Message {
    /// Parse one message from a UDP datagram.
    ///
    /// Content-Length is honoured; without it the body is the rest of the datagram; a
    /// Content-Length larger than what is there is [`ParseError::ContentLengthMismatch`].
    pub fn parse(datagram: Bytes) -> Result<Message, ParseError> {
        parse_message(datagram, Framing::Datagram)
    }
}

impl Request {
    /// Parse a request from a datagram (see [`Message::parse`]).
    pub fn parse(datagram: Bytes) -> Result<Request, ParseError> {
        match Message::parse(datagram)? {
            Message::Request(r) => Ok(r),
            Message::Response(_) => Err(ParseError::WrongKind {
                expected: "request",
            }),
        }
    }
}

impl Response {
    /// Parse a response from a datagram (see [`Message::parse`]).
    pub fn parse(datagram: Bytes) -> Result<Response, ParseError> {
        match Message::parse(datagram)? {
            Message::Response(r) => Ok(r),
            Message::Request(_) => Err(ParseError::WrongKind {
                expected: "response",
            }),
        }
    }
}

enum StartLine {
    Request(Method, Uri),
    Response(StatusCode, Bytes),
}

/// The index of the next `\n` at or after `from`.
///
/// This scan covers every header byte, so it looks at eight bytes per step (SWAR: a word
/// has a `\n` byte iff `(x ^ 0x0a..) - 0x01..` has a high bit set where `x ^ 0x0a..` had
/// none), in safe code.
#[inline]
pub(crate) fn find_lf(b: &[u8], from: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const LF: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    let hay = b.get(from..)?;
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in chunks.by_ref() {
        let x = u64::from_le_bytes(chunk.try_into().expect("chunks_exact gives 8 bytes")) ^ LF;
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(from + base + (found.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == b'\n')
        .map(|i| from + base + i)
}

/// `line` without its trailing `\r`.
#[inline]
fn strip_cr(b: &[u8], start: usize, lf: usize) -> usize {
    if lf > start && b[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    }
}

/// RFC 3261 §7.1 `SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT`; ABNF literals are
/// case-insensitive. `Ok(())` for 2.0, `BadVersion` for another well-formed version.
fn check_version(v: &[u8]) -> Result<(), ParseError> {
    if v.len() >= 4 && v[..4].eq_ignore_ascii_case(b"SIP/") {
        let num = &v[4..];
        if num == b"2.0" {
            return Ok(());
        }
        if let Some(dot) = num.iter().position(|&b| b == b'.') {
            let (maj, min) = (&num[..dot], &num[dot + 1..]);
            if !maj.is_empty()
                && !min.is_empty()
                && maj.iter().all(u8::is_ascii_digit)
                && min.iter().all(u8::is_ascii_digit)
            {
                return Err(ParseError::BadVersion(
                    String::from_utf8_lossy(v).into_owned(),
                ));
            }
        }
    }
    Err(ParseError::BadStartLine)
}

fn parse_start_line(data: &Bytes, start: usize, end: usize) -> Result<StartLine, ParseError> {
    let line = &data[start..end];
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = line
            .iter()
            .position(|&b| b == b' ')
            .ok_or(ParseError::BadStartLine)?;
        check_version(&line[..sp])?;
        let rest = &line[sp + 1..];
        if rest.len() < 3 || (rest.len() > 3 && rest[3] != b' ') {
            return Err(ParseError::BadStatusCode);
        }
        let code = &rest[..3];
        if !code.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadStatusCode);
        }
        let n = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
        let status = StatusCode::new(n).ok_or(ParseError::BadStatusCode)?;
        // RFC 4475 §3.1.1.13: the reason phrase may be empty ("SIP/2.0 100 ").
        let reason_start = start + sp + 1 + (rest.len().min(4));
        Ok(StartLine::Response(status, data.slice(reason_start..end)))
    } else {
        // Request-Line = Method SP Request-URI SP SIP-Version: exactly one SP between the
        // elements (RFC 4475 §3.1.2.9, §3.1.2.10 are rejected).
        let sp1 = line
            .iter()
            .position(|&b| b == b' ')
            .ok_or(ParseError::BadStartLine)?;
        let sp2 = line
            .iter()
            .rposition(|&b| b == b' ')
            .ok_or(ParseError::BadStartLine)?;
        if sp2 <= sp1 + 1 {
            return Err(ParseError::BadStartLine);
        }
        let method = Method::from_token(&line[..sp1]).ok_or(ParseError::BadStartLine)?;
        let version = &line[sp2 + 1..];
        if version.is_empty() {
            return Err(ParseError::BadStartLine);
        }
        check_version(version)?;
        let uri = &line[sp1 + 1..sp2];
        if uri.first() == Some(&b' ') || uri.last() == Some(&b' ') {
            return Err(ParseError::BadStartLine);
        }
        // RFC 4475 §3.1.2.8: LWS inside the Request-URI is malformed.
        let uri = Uri::parse(uri).map_err(|_| ParseError::BadRequestUri)?;
        Ok(StartLine::Request(method, uri))
    }
}

/// Parse one message; `data` may hold trailing bytes after the body (ignored).
pub(crate) fn parse_message(data: Bytes, framing: Framing) -> Result<Message, ParseError> {
    let b: &[u8] = &data;
    // RFC 3261 §7.5: "Implementations processing SIP messages over stream-oriented transports
    // MUST ignore any CRLF appearing before the start-line"; harmless for datagrams too.
    let mut pos = 0;
    while pos < b.len() && (b[pos] == b'\r' || b[pos] == b'\n') {
        pos += 1;
    }
    if pos >= b.len() {
        return Err(ParseError::Empty);
    }
    let lf = find_lf(b, pos).ok_or(ParseError::Incomplete)?;
    let start_line = parse_start_line(&data, pos, strip_cr(b, pos, lf))?;
    pos = lf + 1;

    // Typical INVITEs carry 15 to 25 header lines: one allocation, no regrowth.
    let mut headers = Headers::with_capacity(24);
    let mut content_length: Option<usize> = None;
    let body_start;
    loop {
        let lf = find_lf(b, pos).ok_or(ParseError::Incomplete)?;
        let line_end = strip_cr(b, pos, lf);
        if line_end == pos {
            body_start = lf + 1;
            break;
        }
        if b[pos] == b' ' || b[pos] == b'\t' {
            // A continuation line with no header before it.
            return Err(ParseError::BadHeaderLine);
        }
        // header-name HCOLON: token, optional SP/HT, ':' (RFC 3261 §7.3.1).
        let mut i = pos;
        while i < line_end && is_token_char(b[i]) {
            i += 1;
        }
        let name_end = i;
        while i < line_end && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if name_end == pos || i >= line_end || b[i] != b':' {
            return Err(ParseError::BadHeaderLine);
        }
        let mut vstart = i + 1;
        while vstart < line_end && (b[vstart] == b' ' || b[vstart] == b'\t') {
            vstart += 1;
        }
        let mut vend = line_end;
        // Folding: following lines that start with SP/HT continue this value.
        let mut next = lf + 1;
        let mut folded: Option<BytesMut> = None;
        while next < b.len() && (b[next] == b' ' || b[next] == b'\t') {
            let lf2 = find_lf(b, next).ok_or(ParseError::Incomplete)?;
            let end2 = strip_cr(b, next, lf2);
            let cont = trim_ws(&b[next..end2]);
            let buf = folded.get_or_insert_with(|| {
                let mut m = BytesMut::with_capacity(128);
                m.extend_from_slice(trim_ws_end(&b[vstart..vend]));
                m
            });
            if !cont.is_empty() {
                // "All linear white space, including folding, has the same semantics as SP."
                if !buf.is_empty() {
                    buf.extend_from_slice(b" ");
                }
                buf.extend_from_slice(cont);
            }
            next = lf2 + 1;
        }
        while vend > vstart && (b[vend - 1] == b' ' || b[vend - 1] == b'\t') {
            vend -= 1;
        }
        let value = match folded {
            Some(buf) => buf.freeze(),
            None => data.slice(vstart..vend),
        };
        let raw = &b[pos..name_end];
        let name = HeaderName::from_bytes(raw);
        if name == HeaderName::ContentLength {
            // RFC 4475 §3.1.2.3: negative or non-numeric is malformed.
            let n = parse_u32(&value).ok_or(ParseError::BadContentLength)? as usize;
            match content_length {
                // RFC 4475 §3.3.9: conflicting values leave the framing unknowable.
                Some(prev) if prev != n => return Err(ParseError::MultipleContentLength),
                _ => content_length = Some(n),
            }
        }
        // Keep the received spelling only when it differs from the canonical one, so the
        // common case costs no extra reference count.
        let raw_name = if raw == name.as_str().as_bytes() {
            None
        } else {
            Some(data.slice(pos..name_end))
        };
        headers.push_header(Header {
            name,
            raw_name,
            value,
        });
        pos = next;
    }

    let available = b.len() - body_start.min(b.len());
    let body = match (content_length, framing) {
        (Some(n), _) if n > available => {
            return Err(ParseError::ContentLengthMismatch {
                declared: n,
                available,
            });
        }
        (Some(n), _) => data.slice(body_start..body_start + n),
        (None, Framing::Datagram) => data.slice(body_start.min(b.len())..),
        (None, Framing::Stream) => return Err(ParseError::MissingContentLength),
    };

    Ok(match start_line {
        StartLine::Request(method, uri) => Message::Request(Request {
            method,
            uri,
            headers,
            body,
        }),
        StartLine::Response(status, reason) => Message::Response(Response {
            status,
            reason,
            headers,
            body,
        }),
    })
}

fn trim_ws(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(v.len());
    trim_ws_end(&v[s..])
}

fn trim_ws_end(v: &[u8]) -> &[u8] {
    let e = v
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(0, |e| e + 1);
    &v[..e]
}

#[cfg(test)]
mod tests {
    use super::find_lf;

    #[test]
    fn find_lf_agrees_with_a_byte_scan_at_every_alignment() {
        let mut data = vec![0x8au8; 40];
        for lf_at in 0..data.len() {
            data.iter_mut().for_each(|b| *b = 0x8a);
            data[lf_at] = b'\n';
            if lf_at > 0 {
                // A byte just below '\n' next to it must not produce a false match.
                data[lf_at - 1] = 0x0b;
            }
            for from in 0..data.len() {
                let expected = data[from..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map(|i| i + from);
                assert_eq!(find_lf(&data, from), expected, "lf at {lf_at}, from {from}");
            }
        }
        assert_eq!(find_lf(b"abc", 5), None);
        assert_eq!(find_lf(b"", 0), None);
    }
}
