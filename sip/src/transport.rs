//! Framing SIP over stream transports (TCP, TLS, WebSocket-less streams).
//!
//! RFC 3261 §18.3: on a stream, a message ends after the empty line that closes the header
//! section plus Content-Length body bytes; "In the case of stream-oriented transports such as
//! TCP, the Content-Length header field indicates the size of the body. All stream-oriented
//! transports MUST use Content-Length". CRLFs between messages are keep-alives (RFC 3261 §7.5,
//! RFC 5626 §3.5.1: a double CRLF is a ping that asks for a single-CRLF pong).
//!
//! [`StreamFramer`] is sans-IO: push the bytes read from the connection, then pull frames until
//! it returns `Ok(None)`. An `Err` means the stream can no longer be framed: close it.

use bytes::{Bytes, BytesMut};

use crate::message::{Message, ParseError};

/// The largest message accepted by default (headers and body), in bytes.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// One unit cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "almost every frame is a Message, moved once to the caller; boxing it would cost an allocation per message to shrink the rare variants"
)]
pub enum Framed {
    /// A complete, parsed message.
    Message(Message),
    /// A complete message (framing intact) that does not parse; `data` is its bytes, so the
    /// caller can answer with [`crate::message::validate::reply_to_unparseable`].
    Invalid {
        /// The message bytes.
        data: Bytes,
        /// Why it did not parse.
        error: ParseError,
    },
    /// A double CRLF keep-alive ping (RFC 5626 §3.5.1): answer with a single CRLF pong.
    Ping,
    /// A single CRLF: a keep-alive pong (or a stray CRLF, RFC 3261 §7.5), nothing to do.
    Pong,
}

/// Why a stream cannot be framed any further (close the connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The message would exceed the size limit.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The header section has no usable Content-Length (missing, malformed or conflicting,
    /// RFC 4475 §3.3.9: "TCP: framing error, close connection").
    #[error("cannot frame message: {0}")]
    Framing(ParseError),
}

/// Cuts a byte stream into SIP messages.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max_message_size: usize,
    /// Where the search for the end of the header section resumes (no rescans).
    scanned: usize,
    /// The total length of the message at the front, once its header section is complete.
    pending: Option<usize>,
}

impl Default for StreamFramer {
    fn default() -> StreamFramer {
        StreamFramer::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

impl StreamFramer {
    /// A framer that refuses messages larger than `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> StreamFramer {
        StreamFramer {
            buf: BytesMut::with_capacity(4096),
            max_message_size,
            scanned: 0,
            pending: None,
        }
    }

    /// Append bytes read from the connection.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next frame, `Ok(None)` when more bytes are needed.
    pub fn poll(&mut self) -> Result<Option<Framed>, FramingError> {
        if self.pending.is_none() {
            // Keep-alives between messages.
            if self.buf.starts_with(b"\r\n\r\n") {
                let _ = self.buf.split_to(4);
                return Ok(Some(Framed::Ping));
            }
            if self.buf.starts_with(b"\r\n") {
                // A lone CRLF is a pong; wait only if what follows might complete a ping.
                if self.buf.len() == 3 && self.buf[2] == b'\r' {
                    return Ok(None);
                }
                let _ = self.buf.split_to(2);
                self.scanned = 0;
                return Ok(Some(Framed::Pong));
            }
            if self.buf.first() == Some(&b'\n') {
                let _ = self.buf.split_to(1);
                return Ok(Some(Framed::Pong));
            }
            let from = self.scanned.saturating_sub(3);
            let end = match self.buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
                Some(i) => from + i + 4,
                None => {
                    self.scanned = self.buf.len();
                    if self.buf.len() > self.max_message_size {
                        return Err(FramingError::TooLarge {
                            limit: self.max_message_size,
                        });
                    }
                    return Ok(None);
                }
            };
            let body_len = content_length(&self.buf[..end]).map_err(FramingError::Framing)?;
            let total = end + body_len;
            if total > self.max_message_size {
                return Err(FramingError::TooLarge {
                    limit: self.max_message_size,
                });
            }
            self.pending = Some(total);
        }
        let total = self.pending.expect("set just above or on an earlier call");
        if self.buf.len() < total {
            return Ok(None);
        }
        self.pending = None;
        self.scanned = 0;
        let data = self.buf.split_to(total).freeze();
        Ok(Some(
            match crate::message::parse::parse_message(
                data.clone(),
                crate::message::parse::Framing::Stream,
            ) {
                Ok(m) => Framed::Message(m),
                Err(error) => Framed::Invalid { data, error },
            },
        ))
    }
}

/// The Content-Length of a complete header section (start line included).
fn content_length(head: &[u8]) -> Result<usize, ParseError> {
    let mut found: Option<usize> = None;
    let mut lines = head.split(|&b| b == b'\n').skip(1).peekable();
    while let Some(line) = lines.next() {
        // RFC 3261 §7.3.1: a line starting with SP or HT continues the previous header field
        // (which, if it were Content-Length, the loop below already consumed): it names no
        // header, whatever it contains (" l: 4" under Subject is part of the Subject).
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            continue;
        }
        let colon = match line.iter().position(|&b| b == b':') {
            Some(c) => c,
            None => continue,
        };
        // The name starts at the line start (no leading whitespace, see above); only the
        // whitespace before the colon is allowed (`Content-Length : 5`, §7.3.1).
        let name = trim_end(&line[..colon]);
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let mut value = trim(&line[colon + 1..]).to_vec();
        while let Some(next) = lines.peek() {
            if next.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                value.extend_from_slice(trim(next));
                lines.next();
            } else {
                break;
            }
        }
        if value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadContentLength);
        }
        let n = value
            .iter()
            .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0'));
        match found {
            Some(prev) if prev != n => return Err(ParseError::MultipleContentLength),
            _ => found = Some(n),
        }
    }
    found.ok_or(ParseError::MissingContentLength)
}

fn trim_end(v: &[u8]) -> &[u8] {
    let e = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(0, |e| e + 1);
    &v[..e]
}

fn trim(v: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let s = v.iter().position(|b| !is_ws(b)).unwrap_or(v.len());
    let e = v.iter().rposition(|b| !is_ws(b)).map_or(s, |e| e + 1);
    &v[s..e]
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b.example SIP/2.0\r\nVia: SIP/2.0/TCP h.example;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello";

    #[test]
    fn frames_two_messages_split_at_every_offset() {
        let mut two = OPTIONS.to_vec();
        two.extend_from_slice(OPTIONS);
        for cut in 0..two.len() {
            let mut f = StreamFramer::default();
            let mut got = Vec::new();
            f.push(&two[..cut]);
            while let Some(fr) = f.poll().expect("frames") {
                got.push(fr);
            }
            f.push(&two[cut..]);
            while let Some(fr) = f.poll().expect("frames") {
                got.push(fr);
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            for fr in got {
                match fr {
                    Framed::Message(m) => assert_eq!(&m.body()[..], b"hello"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(f.buffered(), 0);
        }
    }

    #[test]
    fn double_crlf_is_a_ping_single_crlf_a_pong() {
        let mut f = StreamFramer::default();
        f.push(b"\r\n\r\n");
        assert_eq!(f.poll(), Ok(Some(Framed::Ping)));
        f.push(b"\r\n");
        assert_eq!(f.poll(), Ok(Some(Framed::Pong)));
        f.push(b"\r\n\r\n");
        f.push(OPTIONS);
        assert_eq!(f.poll(), Ok(Some(Framed::Ping)));
        assert!(matches!(f.poll(), Ok(Some(Framed::Message(_)))));
    }

    #[test]
    fn missing_content_length_on_a_stream_is_a_framing_error() {
        let mut f = StreamFramer::default();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n");
        assert_eq!(
            f.poll(),
            Err(FramingError::Framing(ParseError::MissingContentLength))
        );
    }

    #[test]
    fn conflicting_content_lengths_are_a_framing_error() {
        let mut f = StreamFramer::default();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 13\r\nl: 5\r\n\r\n");
        assert_eq!(
            f.poll(),
            Err(FramingError::Framing(ParseError::MultipleContentLength))
        );
    }

    #[test]
    fn oversized_header_section_is_refused_not_buffered_forever() {
        let mut f = StreamFramer::new(1024);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\n");
        for _ in 0..100 {
            f.push(b"X-Filler: 0123456789\r\n");
        }
        assert_eq!(f.poll(), Err(FramingError::TooLarge { limit: 1024 }));
    }

    #[test]
    fn oversized_content_length_is_refused_before_the_body_arrives() {
        let mut f = StreamFramer::new(1024);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n");
        assert_eq!(f.poll(), Err(FramingError::TooLarge { limit: 1024 }));
    }

    #[test]
    fn unparseable_but_framed_message_is_reported_and_framing_continues() {
        let mut f = StreamFramer::default();
        f.push(b"BAD LINE\r\nl: 0\r\n\r\n");
        f.push(OPTIONS);
        assert!(matches!(
            f.poll(),
            Ok(Some(Framed::Invalid {
                error: ParseError::BadStartLine,
                ..
            }))
        ));
        assert!(matches!(f.poll(), Ok(Some(Framed::Message(_)))));
    }
}
