//! Transaction identifiers: how a message finds its transaction (RFC 3261 §17.1.3, §17.2.3).

use std::fmt;

use crate::message::{Method, ParseError, Request, Response};

use super::first_via_element;
use crate::message::HeaderName;

/// The prefix of every RFC 3261 branch: "The branch ID inserted by an element compliant with
/// this specification MUST always begin with the characters "z9hG4bK"." (§8.1.1.7)
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// A Via `branch` parameter: the transaction identifier of RFC 3261.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Branch(String);

impl Branch {
    /// A branch as written.
    pub fn new(s: impl Into<String>) -> Branch {
        Branch(s.into())
    }

    /// The text of the branch.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it carries the magic cookie (and something after it, RFC 4475 §3.2.1), i.e. is
    /// unique per transaction and can key one.
    pub fn is_rfc3261(&self) -> bool {
        self.0.len() > MAGIC_COOKIE.len() && self.0.starts_with(MAGIC_COOKIE)
    }

    /// A fresh RFC 3261 branch from a 64-bit value (the caller supplies the entropy, e.g. a seed
    /// mixed with a counter): `z9hG4bK` followed by 16 hex digits.
    pub fn from_u64(value: u64) -> Branch {
        Branch(format!("{MAGIC_COOKIE}{value:016x}"))
    }
}

impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why no transaction key could be computed for a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A header the key needs is missing or malformed.
    #[error("cannot key the transaction: {0}")]
    Header(#[from] ParseError),
    /// The top Via has no branch (a client transaction always sets one).
    #[error("top Via has no branch parameter")]
    NoBranch,
}

/// The key of a client transaction (§17.1.3): "the branch parameter in the top Via header field
/// of the response \[equals\] the branch parameter in the top Via header field of the request that
/// created the transaction" and "the method parameter in the CSeq header field matches the method
/// of the request that created the transaction".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// The branch of our top Via.
    pub branch: Branch,
    /// The method of the request (CANCEL has its own transaction, with the INVITE's branch).
    pub method: Method,
}

impl ClientKey {
    /// The key of a request we send: its top Via branch and its method.
    pub fn from_request(request: &Request) -> Result<ClientKey, KeyError> {
        let via = request.headers.top_via()?;
        let branch = via.branch().ok_or(KeyError::NoBranch)?;
        Ok(ClientKey {
            branch: Branch::new(branch),
            method: request.method.clone(),
        })
    }

    /// The key a received response names: its top Via branch and its CSeq method.
    pub fn from_response(response: &Response) -> Result<ClientKey, KeyError> {
        let via = response.headers.top_via()?;
        let branch = via.branch().ok_or(KeyError::NoBranch)?;
        let cseq = response.headers.cseq()?;
        Ok(ClientKey {
            branch: Branch::new(branch),
            method: cseq.method,
        })
    }
}

/// The key of a server transaction (§17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerKey {
    /// The RFC 3261 rule, for a top Via branch with the magic cookie: "the branch parameter in
    /// the request is equal to the one in the top Via header field of the request that created
    /// the transaction", "the sent-by value in the top Via of the request is equal to the one in
    /// the request that created the transaction", and "the method of the request matches the one
    /// that created the transaction, except for ACK, where the method of the request that created
    /// the transaction is INVITE".
    Rfc3261 {
        /// The top Via branch.
        branch: Branch,
        /// The top Via sent-by (`host[:port]`, host lower-cased).
        sent_by: String,
        /// The method (INVITE for an ACK).
        method: Method,
    },
    /// The RFC 2543 fallback for a branch without the magic cookie.
    Rfc2543(Box<Rfc2543Key>),
}

/// The RFC 2543 transaction key (§17.2.3): "The INVITE request matches a transaction if the
/// Request-URI, To tag, From tag, Call-ID, CSeq, and top Via header field match those of the
/// INVITE request which created the transaction. ... The ACK request matches a transaction if
/// the Request-URI, From tag, Call-ID, CSeq number (not the method), and top Via header field
/// match those of the INVITE request which created the transaction, and the To tag of the ACK
/// matches the To tag of the response sent by the server transaction."
///
/// The To tag is left out of the key so that one key serves the INVITE (whose To has no tag) and
/// its ACK (whose To carries the response's tag); two requests that differ only in their To tag
/// would be the same transaction, which RFC 2543 peers do not send in practice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rfc2543Key {
    /// The Request-URI as printed.
    pub request_uri: String,
    /// The From tag, if any.
    pub from_tag: Option<String>,
    /// The Call-ID.
    pub call_id: String,
    /// The CSeq number.
    pub cseq: u32,
    /// The method (INVITE for an ACK).
    pub method: Method,
    /// The top Via value as received.
    pub top_via: String,
}

impl ServerKey {
    /// The key of a received request. An ACK gets the INVITE's key (it belongs to the INVITE
    /// server transaction when it acknowledges a non-2xx); a CANCEL gets its own (§9.2: "the
    /// CANCEL ... constitutes its own transaction").
    pub fn from_request(request: &Request) -> Result<ServerKey, KeyError> {
        let via = request.headers.top_via()?;
        let method = match request.method {
            Method::Ack => Method::Invite,
            ref m => m.clone(),
        };
        if via.has_rfc3261_branch() {
            let branch = via.branch().ok_or(KeyError::NoBranch)?;
            return Ok(ServerKey::Rfc3261 {
                branch: Branch::new(branch),
                sent_by: via.sent_by().to_ascii_lowercase(),
                method,
            });
        }
        let top_via = request
            .headers
            .get(&HeaderName::Via)
            .map(|v| String::from_utf8_lossy(&first_via_element(v)).into_owned())
            .unwrap_or_default();
        let from = request.headers.from()?;
        Ok(ServerKey::Rfc2543(Box::new(Rfc2543Key {
            request_uri: request.uri.to_string(),
            from_tag: from.tag().map(str::to_owned),
            call_id: request.headers.call_id()?.to_owned(),
            cseq: request.headers.cseq()?.seq,
            method,
            top_via,
        })))
    }

    /// The same key with another method: the INVITE transaction a CANCEL targets is found with
    /// the CANCEL's key and method INVITE (§9.2).
    pub fn with_method(&self, method: Method) -> ServerKey {
        match self {
            ServerKey::Rfc3261 {
                branch, sent_by, ..
            } => ServerKey::Rfc3261 {
                branch: branch.clone(),
                sent_by: sent_by.clone(),
                method,
            },
            ServerKey::Rfc2543(k) => ServerKey::Rfc2543(Box::new(Rfc2543Key {
                method,
                ..(**k).clone()
            })),
        }
    }

    /// The method of the transaction.
    pub fn method(&self) -> &Method {
        match self {
            ServerKey::Rfc3261 { method, .. } => method,
            ServerKey::Rfc2543(k) => &k.method,
        }
    }
}

/// Either kind of transaction key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransactionKey {
    /// A client transaction (we sent the request).
    Client(ClientKey),
    /// A server transaction (we received the request).
    Server(ServerKey),
}

impl TransactionKey {
    /// The method of the transaction.
    pub fn method(&self) -> &Method {
        match self {
            TransactionKey::Client(k) => &k.method,
            TransactionKey::Server(k) => k.method(),
        }
    }
}

impl From<ClientKey> for TransactionKey {
    fn from(k: ClientKey) -> Self {
        TransactionKey::Client(k)
    }
}

impl From<ServerKey> for TransactionKey {
    fn from(k: ServerKey) -> Self {
        TransactionKey::Server(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(method: &str, via: &str, cseq: &str) -> Request {
        Request::parse(Bytes::from(format!(
            "{method} sip:bob@example.net SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
             From: <sip:a@example.com>;tag=f1\r\nTo: <sip:bob@example.net>\r\nCall-ID: c1@x\r\n\
             CSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
        )))
        .expect("parses")
    }

    #[test]
    fn ack_keys_to_its_invite_and_cancel_has_its_own_key() {
        let via = "SIP/2.0/UDP Host.Example.COM:5060;branch=z9hG4bKabc";
        let invite = ServerKey::from_request(&req("INVITE", via, "1 INVITE")).expect("key");
        let ack = ServerKey::from_request(&req("ACK", via, "1 ACK")).expect("key");
        let cancel = ServerKey::from_request(&req("CANCEL", via, "1 CANCEL")).expect("key");
        assert_eq!(invite, ack);
        assert_ne!(invite, cancel);
        assert_eq!(cancel.with_method(Method::Invite), invite);
        let lower = "SIP/2.0/UDP host.example.com:5060;branch=z9hG4bKabc";
        assert_eq!(
            ServerKey::from_request(&req("INVITE", lower, "1 INVITE")).expect("key"),
            invite
        );
        let other_port = "SIP/2.0/UDP host.example.com:5070;branch=z9hG4bKabc";
        assert_ne!(
            ServerKey::from_request(&req("INVITE", other_port, "1 INVITE")).expect("key"),
            invite
        );
    }

    #[test]
    fn branch_without_cookie_uses_the_rfc2543_key() {
        let via = "SIP/2.0/UDP h:5060;branch=abc";
        let key = ServerKey::from_request(&req("INVITE", via, "9 INVITE")).expect("key");
        match &key {
            ServerKey::Rfc2543(k) => {
                assert_eq!(k.cseq, 9);
                assert_eq!(k.call_id, "c1@x");
                assert_eq!(k.from_tag.as_deref(), Some("f1"));
                assert_eq!(k.top_via, via);
            }
            other => panic!("expected the RFC 2543 key, got {other:?}"),
        }
        let bare_cookie = "SIP/2.0/UDP h:5060;branch=z9hG4bK";
        assert!(matches!(
            ServerKey::from_request(&req("INVITE", bare_cookie, "9 INVITE")).expect("key"),
            ServerKey::Rfc2543(_)
        ));
    }

    #[test]
    fn client_key_of_a_response_uses_the_cseq_method() {
        let r = Response::parse(Bytes::from_static(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKq\r\nFrom: <sip:a@b>;tag=1\r\n\
              To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 4 CANCEL\r\nContent-Length: 0\r\n\r\n",
        ))
        .expect("parses");
        let key = ClientKey::from_response(&r).expect("key");
        assert_eq!(
            key,
            ClientKey {
                branch: Branch::new("z9hG4bKq"),
                method: Method::Cancel
            }
        );
        assert!(Branch::from_u64(7).is_rfc3261());
        assert_eq!(Branch::from_u64(7).as_str(), "z9hG4bK0000000000000007");
    }
}
