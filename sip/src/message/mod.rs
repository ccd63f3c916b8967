//! The SIP message codec: requests, responses, headers and URIs.
//!
//! Parsing is zero-copy where it can be: header values and bodies are [`Bytes`] slices of the
//! received datagram (a folded header is the one exception: it is unfolded into a new buffer).
//! Typed headers are parsed on demand from those raw values, so a header the stack never looks
//! at is printed back exactly as it arrived.
//!
//! ```
//! use bytes::Bytes;
//! use sip::message::{Message, StatusCode, response_to};
//! use sip::message::validate::{ValidateConfig, validate_request};
//!
//! let datagram = Bytes::from_static(
//!     b"OPTIONS sip:bob@example.com SIP/2.0\r\n\
//!       v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9;rport\r\n\
//!       f: <sip:alice@example.com>;tag=9fxced76sl\r\n\
//!       t: <sip:bob@example.com>\r\n\
//!       i: 3848276298220188511@192.0.2.1\r\n\
//!       CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nl: 0\r\n\r\n",
//! );
//! let Message::Request(req) = Message::parse(datagram)? else { unreachable!() };
//! assert_eq!(req.headers.top_via()?.branch(), Some("z9hG4bK74bf9"));
//! assert_eq!(req.headers.cseq()?.seq, 1);
//! validate_request(&req, &ValidateConfig::default()).expect("a well-formed OPTIONS");
//!
//! let mut ok = response_to(&req, StatusCode::OK, None);
//! ok.add_to_tag("a6c85cf");
//! let wire = ok.to_bytes(); // "SIP/2.0 200 OK\r\nVia: ...\r\nContent-Length: 0\r\n\r\n"
//! assert!(wire.starts_with(b"SIP/2.0 200 OK\r\n"));
//! # Ok::<(), sip::message::ParseError>(())
//! ```
//!
//! Requests that do not parse can still be answered (400, or 505 for a wrong SIP version) with
//! [`validate::reply_to_unparseable`]; well-formed requests get the stateless checks of
//! [`validate::validate_request`] (400, 405, 415, 416, 420, 483, 501, 406). Stream transports
//! cut messages with [`crate::transport::StreamFramer`].

use bytes::Bytes;

mod fields;
mod headers;
mod method;
mod params;
pub(crate) mod parse;
mod print;
mod scan;
mod typed;
pub mod uri;
pub mod validate;

pub use fields::{
    AuthValue, MediaType, RAck, Reason, Refresher, RetryAfter, SessionExpires, unquote,
};
pub use headers::{Header, HeaderName, Headers};
pub use method::{Method, StatusCode};
pub use params::Params;
pub use print::response_to;
pub use typed::{CSeq, NameAddr, Via};
pub use uri::{Host, SipUri, TelUri, Uri};

/// Why a message (or a header value) did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but whitespace.
    #[error("empty message")]
    Empty,
    /// The start line is neither a Request-Line nor a Status-Line (RFC 3261 §7.1, §7.2),
    /// e.g. doubled or trailing spaces (RFC 4475 §3.1.2.9, §3.1.2.10).
    #[error("malformed start line")]
    BadStartLine,
    /// A well-formed SIP-Version other than SIP/2.0 (RFC 4475 §3.1.2.16): a request gets 505.
    #[error("unsupported SIP version {0}")]
    BadVersion(String),
    /// The Request-URI is not a URI (RFC 4475 §3.1.2.7, §3.1.2.8, RFC 5118 §4.2).
    #[error("malformed Request-URI")]
    BadRequestUri,
    /// The status code is not three digits in 100..=699 (RFC 4475 §3.1.2.19).
    #[error("malformed status code")]
    BadStatusCode,
    /// A header line without a `name:` (or with a non-token name).
    #[error("malformed header line")]
    BadHeaderLine,
    /// The header section is not terminated by an empty line.
    #[error("header section not terminated by an empty line")]
    Incomplete,
    /// A header value that does not match its grammar.
    #[error("malformed {name} header")]
    BadHeader {
        /// The header name (canonical form).
        name: &'static str,
    },
    /// A header that must appear once appeared several times, or with several values
    /// (RFC 4475 §3.3.8).
    #[error("multiple values in single-valued {name} header")]
    MultipleValues {
        /// The header name (canonical form).
        name: &'static str,
    },
    /// A mandatory header is missing (RFC 3261 §8.1.1).
    #[error("missing {name} header")]
    MissingHeader {
        /// The header name (canonical form).
        name: &'static str,
    },
    /// Content-Length is not a non-negative decimal (RFC 4475 §3.1.2.3).
    #[error("malformed Content-Length")]
    BadContentLength,
    /// Several Content-Length headers that disagree (RFC 4475 §3.3.9).
    #[error("conflicting Content-Length headers")]
    MultipleContentLength,
    /// Content-Length promises more bytes than the datagram holds (RFC 4475 §3.1.2.2).
    #[error("Content-Length {declared} larger than the {available} body bytes present")]
    ContentLengthMismatch {
        /// The Content-Length value.
        declared: usize,
        /// The bytes after the empty line.
        available: usize,
    },
    /// A stream message without Content-Length (RFC 3261 §18.3: it MUST be present).
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// A URI that does not parse.
    #[error("malformed URI")]
    BadUri,
    /// A response was given to a request parser, or the other way round.
    #[error("expected a {expected}")]
    WrongKind {
        /// "request" or "response".
        expected: &'static str,
    },
    /// The message exceeds the configured size limit.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

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
    /// The Request-URI (prints back its original text, escapes included).
    pub uri: Uri,
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

#[cfg(test)]
mod tests;
