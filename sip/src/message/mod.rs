//! The SIP message codec: requests, responses, headers and URIs.
//!
//! Parsing is zero-copy where it can be: header values and bodies are [`Bytes`] slices of the
//! received datagram (a folded header is the one exception: it is unfolded into a new buffer).
//! Typed headers are parsed on demand from those raw values, so a header the stack never looks
//! at is printed back exactly as it arrived.

use bytes::Bytes;

mod headers;
mod method;

pub use headers::{Header, HeaderName, Headers};
pub use method::{Method, StatusCode};

/// A SIP request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request (`INVITE sip:bob@example.com SIP/2.0`).
    Request(Request),
    /// A response (`SIP/2.0 200 OK`).
    Response(Response),
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method of the start line.
    pub method: Method,
    /// The Request-URI, kept as received; see `uri` module for the typed form.
    pub uri: Bytes,
    /// The header fields, in order.
    pub headers: Headers,
    /// The message body (possibly empty).
    pub body: Bytes,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code of the start line.
    pub status: StatusCode,
    /// The reason phrase (may be empty, may hold UTF-8 or escapes).
    pub reason: Bytes,
    /// The header fields, in order.
    pub headers: Headers,
    /// The message body (possibly empty).
    pub body: Bytes,
}

impl Message {
    /// The header fields of either kind of message.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    /// The header fields of either kind of message, mutably.
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    /// The body of either kind of message.
    pub fn body(&self) -> &Bytes {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }
}
