//! Printing messages, and building responses from requests.

use bytes::{BufMut, Bytes, BytesMut};

use super::headers::{Header, HeaderName, Headers};
use super::method::StatusCode;
use super::typed::NameAddr;
use super::{Message, Request, Response};

/// Write the header lines, then a Content-Length equal to the body length (replacing the first
/// Content-Length line in place, dropping any others, or appending one), then the empty line
/// and the body.
fn print_headers_and_body(headers: &Headers, body: &Bytes, out: &mut BytesMut) {
    let mut wrote_cl = false;
    for h in headers {
        if h.name == HeaderName::ContentLength {
            if wrote_cl {
                continue;
            }
            wrote_cl = true;
            put_name(h, out);
            put_len(body.len(), out);
            out.put_slice(b"\r\n");
            continue;
        }
        put_name(h, out);
        out.put_slice(&h.value);
        out.put_slice(b"\r\n");
    }
    if !wrote_cl {
        out.put_slice(b"Content-Length: ");
        put_len(body.len(), out);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
}

#[inline]
fn put_name(h: &Header, out: &mut BytesMut) {
    match &h.raw_name {
        Some(raw) => out.put_slice(raw),
        None => out.put_slice(h.name.as_str().as_bytes()),
    }
    out.put_slice(b": ");
}

fn put_len(n: usize, out: &mut BytesMut) {
    let mut buf = [0u8; 20];
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

fn estimate(headers: &Headers, body: &Bytes) -> usize {
    64 + body.len()
        + headers
            .iter()
            .map(|h| h.value.len() + h.name.as_str().len() + 4)
            .sum::<usize>()
}

impl Request {
    /// Print the request (with a correct Content-Length).
    pub fn print(&self, out: &mut BytesMut) {
        out.reserve(estimate(&self.headers, &self.body) + 64);
        out.put_slice(self.method.as_str().as_bytes());
        out.put_u8(b' ');
        self.uri.print(out);
        out.put_slice(b" SIP/2.0\r\n");
        print_headers_and_body(&self.headers, &self.body, out);
    }

    /// The printed request as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.print(&mut out);
        out.freeze()
    }
}

impl Response {
    /// Print the response (with a correct Content-Length).
    pub fn print(&self, out: &mut BytesMut) {
        out.reserve(estimate(&self.headers, &self.body) + self.reason.len());
        out.put_slice(b"SIP/2.0 ");
        put_len(usize::from(self.status.as_u16()), out);
        out.put_u8(b' ');
        out.put_slice(&self.reason);
        out.put_slice(b"\r\n");
        print_headers_and_body(&self.headers, &self.body, out);
    }

    /// The printed response as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.print(&mut out);
        out.freeze()
    }

    /// Add `;tag=<tag>` to the To header when it has no tag yet (RFC 3261 §8.2.6.2: "the UAS
    /// MUST add a tag to the To header field in the response" unless the request had one).
    /// Returns whether a tag was added. A To that does not parse is left alone (`false`).
    pub fn add_to_tag(&mut self, tag: &str) -> bool {
        let Ok(to) = self.headers.to() else {
            return false;
        };
        if to.tag().is_some() {
            return false;
        }
        let Some(old) = self.headers.get(&HeaderName::To) else {
            return false;
        };
        let mut v = BytesMut::with_capacity(old.len() + tag.len() + 5);
        v.put_slice(old);
        v.put_slice(b";tag=");
        v.put_slice(tag.as_bytes());
        self.headers.set(HeaderName::To, v.freeze());
        true
    }

    /// The To header as typed value, with its tag (shortcut for `headers.to()`).
    pub fn to_header(&self) -> Result<NameAddr, super::ParseError> {
        self.headers.to()
    }
}

impl Message {
    /// Print the message (with a correct Content-Length).
    pub fn print(&self, out: &mut BytesMut) {
        match self {
            Message::Request(r) => r.print(out),
            Message::Response(r) => r.print(out),
        }
    }

    /// The printed message as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

/// Build a response to `req` as RFC 3261 §8.2.6.2 asks: the Via lines in order, From, To,
/// Call-ID and CSeq copied; Content-Length 0; no body. The To tag is NOT added here (the caller
/// chooses it; see [`Response::add_to_tag`]). `reason` defaults to the canonical phrase.
pub fn response_to(req: &Request, status: StatusCode, reason: Option<&str>) -> Response {
    let mut headers = Headers::with_capacity(8);
    // "The Via header field values in the response MUST equal the Via header field values in
    // the request and MUST maintain the same ordering."
    for h in req.headers.iter() {
        if matches!(h.name, HeaderName::Via) {
            headers.push(HeaderName::Via, h.value.clone());
        }
    }
    // "The From field of the response MUST equal the From header field of the request";
    // "The Call-ID header field of the response MUST equal the Call-ID header field of the
    // request"; "The CSeq header field of the response MUST equal the CSeq field of the
    // request"; To is copied and the caller adds the tag.
    for name in [
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        if let Some(v) = req.headers.get(&name) {
            headers.push(name, v.clone());
        }
    }
    headers.push(HeaderName::ContentLength, Bytes::from_static(b"0"));
    let reason = reason.unwrap_or_else(|| status.canonical_reason());
    Response {
        status,
        reason: Bytes::copy_from_slice(reason.as_bytes()),
        headers,
        body: Bytes::new(),
    }
}
