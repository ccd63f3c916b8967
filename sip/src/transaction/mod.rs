//! The four RFC 3261 §17 transaction machines, with the RFC 6026 corrections.
//!
//! - [`ClientInvite`] (§17.1.1, RFC 6026): sends an INVITE, retransmits it on Timer A,
//!   gives up on Timer B, builds and sends the ACK for a non-2xx final response, and on a 2xx
//!   waits in Accepted for Timer M, passing further 2xx responses up.
//! - [`ClientNonInvite`] (§17.1.2): sends any other request, retransmits on Timer E, gives up
//!   on Timer F, absorbs response retransmissions for Timer K.
//! - [`ServerInvite`] (§17.2.1, RFC 6026): answers 100 Trying, retransmits a non-2xx final
//!   on Timer G until the ACK comes or Timer H fires; after a 2xx waits in Accepted for Timer L.
//! - [`ServerNonInvite`] (§17.2.2): absorbs request retransmissions, resending the last
//!   response, for Timer J.
//!
//! Each machine is sans-IO and follows the crate's run-loop shape: feed an input
//! (`handle_response`, `handle_request`, `send_response`, `handle_timeout`,
//! `handle_transport_error`), then drain [`Output`]s with `poll_output()` and read the next
//! deadline with `poll_timeout()`. A machine never reads the clock: `now` is an argument.
//!
//! Which transaction a message belongs to is decided by a [`TransactionKey`] (§17.1.3, §17.2.3),
//! which the [`crate::endpoint`] computes and uses as the key of its maps.

mod client_invite;
mod client_non_invite;
mod key;
mod server_invite;
mod server_non_invite;
mod timer;

use std::fmt;

use crate::message::{Message, Request, Response};

pub use client_invite::{ClientInvite, build_ack};
pub use client_non_invite::ClientNonInvite;
pub use key::{Branch, ClientKey, KeyError, MAGIC_COOKIE, Rfc2543Key, ServerKey, TransactionKey};
pub use server_invite::ServerInvite;
pub use server_non_invite::ServerNonInvite;
pub use timer::{Timer, TimerConfig};

/// The transport a message travels over. Reliability decides the timers: RFC 3261 §17 does not
/// retransmit over reliable transports and zeroes Timers D, I, J and K there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: unreliable, the transaction layer retransmits.
    Udp,
    /// TCP: reliable.
    Tcp,
    /// TLS over TCP: reliable.
    Tls,
    /// SCTP: reliable.
    Sctp,
    /// WebSocket (RFC 7118): reliable.
    Ws,
    /// Secure WebSocket (RFC 7118): reliable.
    Wss,
}

impl Transport {
    /// Whether the transport delivers reliably (everything but UDP).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The transport token of a Via header (`UDP`, `TCP`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// The transport from a Via transport token (case-insensitive); `None` when unknown.
    pub fn from_token(token: &str) -> Option<Transport> {
        [
            Transport::Udp,
            Transport::Tcp,
            Transport::Tls,
            Transport::Sctp,
            Transport::Ws,
            Transport::Wss,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(token))
    }

    /// The default port of RFC 3261 §18.2.2 / §19.1.2: 5061 for TLS (and WSS), 5060 otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls | Transport::Wss => 5061,
            _ => 5060,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a transaction asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this message to the transaction's peer (the request's destination for a client
    /// transaction, the response address of §18.2.2 for a server transaction).
    Transmit(Message),
    /// Tell the transaction user something.
    Event(TransactionEvent),
}

/// What a transaction tells its user (the TU of RFC 3261).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionEvent {
    /// Client: a provisional (1xx) response.
    Provisional(Response),
    /// Client: a final response. For an INVITE, every 2xx received in Accepted is passed up too
    /// (RFC 6026), so the TU sees each 2xx of a forked call.
    Final(Response),
    /// Server INVITE in Accepted: an ACK that matched the transaction, passed to the TU
    /// (RFC 6026).
    Ack(Request),
    /// Server: a retransmission of the request was absorbed (the last response, if any, was
    /// sent again).
    RetransmissionAbsorbed,
    /// The transaction timed out (Timer B, F or H).
    Timeout(Timer),
    /// The transport reported a failure to send.
    TransportError,
    /// The transaction ended; it will produce nothing more and can be dropped.
    Terminated(Terminated),
}

/// Why a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Terminated {
    /// Normally, after a final response and the wait for retransmissions (Timers D, I, J, K).
    Completed,
    /// Normally, after a 2xx to an INVITE and the RFC 6026 wait (Timers L, M).
    Accepted,
    /// No response (Timers B, F) or no ACK (Timer H).
    Timeout,
    /// The transport failed to deliver a message.
    TransportError,
}

/// A TU command that the transaction's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// The response cannot be sent in the current state (e.g. a second final response).
    #[error("cannot send a {status} response in state {state}")]
    InvalidState {
        /// The status that was refused.
        status: u16,
        /// The name of the state the transaction was in.
        state: &'static str,
    },
}

/// The first element of a Via header value that may hold a comma-separated list: the top Via
/// of a message whose first Via line is `a, b` is `a`. Commas inside quoted strings do not count.
pub(crate) fn first_via_element(value: &bytes::Bytes) -> bytes::Bytes {
    trim(value.slice(..first_via_end(value)))
}

/// The index of the comma that ends the first element of a Via value (its length if none).
pub(crate) fn first_via_end(value: &[u8]) -> usize {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, &b) in value.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => return i,
            _ => {}
        }
    }
    value.len()
}

fn trim(b: bytes::Bytes) -> bytes::Bytes {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    b.slice(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_via_element_splits_a_comma_list_outside_quotes() {
        let v =
            bytes::Bytes::from_static(b"SIP/2.0/UDP a;x=\"p,q\";branch=z9hG4bK1 , SIP/2.0/UDP b");
        assert_eq!(
            &first_via_element(&v)[..],
            b"SIP/2.0/UDP a;x=\"p,q\";branch=z9hG4bK1"
        );
        let single = bytes::Bytes::from_static(b"SIP/2.0/TCP h:5060;branch=z9hG4bKx");
        assert_eq!(first_via_element(&single), single);
    }

    #[test]
    fn transport_tokens_and_reliability() {
        assert_eq!(Transport::from_token("udp"), Some(Transport::Udp));
        assert_eq!(Transport::from_token("TLS"), Some(Transport::Tls));
        assert_eq!(Transport::from_token("QUIC"), None);
        assert!(!Transport::Udp.is_reliable());
        assert!(Transport::Tcp.is_reliable());
        assert_eq!(Transport::Tls.default_port(), 5061);
    }
}
