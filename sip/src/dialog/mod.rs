//! Dialogs and INVITE sessions (RFC 3261 §12–§15, RFC 3262, RFC 4028), sans-IO.
//!
//! This layer sits *on top of* the [`crate::endpoint::Endpoint`]: the application hands an
//! [`InviteSession`] the responses and in-dialog requests the endpoint reported, and carries
//! out what the session asks for:
//!
//! ```text
//! session.handle_response(now, response)            // EndpointEvent::Response
//! session.handle_request(now, request, key)          // EndpointEvent::InDialogRequest
//! session.handle_cancel(now)                         // EndpointEvent::CancelReceived
//! session.handle_timeout(now)                        // when poll_timeout() is due
//! while let Some(o) = session.poll_output() {
//!     match o {
//!         Output::SendRequest(r)  => endpoint.send_request(now, r, next_hop(&r), transport),
//!         Output::SendResponse { to, response } => endpoint.send_response(now, &to, response),
//!         Output::SendAck(ack)    => endpoint.send_stateless(next_hop(&ack), transport, ack),
//!         Output::CancelInvite    => endpoint.cancel(now, &invite_key),
//!         Output::Event(e)        => /* tell the call logic */,
//!     }
//! }
//! ```
//!
//! [`Dialog`] is the §12 dialog state (Call-ID, tags, CSeq numbers, route set, remote target)
//! and builds in-dialog requests; [`InviteSession`] is the INVITE usage: the offer/answer
//! transactions, the UAS 2xx retransmission (§13.3.1.4), the UAC ACK (§13.2.2.4), forking,
//! the CANCEL/2xx race, re-INVITE glare (§14.1), reliable provisional responses (RFC 3262) and
//! session timers (RFC 4028). Nothing here reads the clock or the OS random source: time is
//! an argument and randomness comes from [`DialogConfig::seed`].

mod session;

use std::time::Duration;

use bytes::Bytes;

use crate::endpoint::DialogKey;
use crate::message::{
    HeaderName, Headers, Host, Method, NameAddr, ParseError, Request, Response, StatusCode, Uri,
    Via, response_to,
};
use crate::transaction::{Branch, TimerConfig, Transport};

pub use session::{InviteSession, MAX_AUTH_RETRIES, MAX_FORKS, Role};

/// Settings of an [`InviteSession`].
#[derive(Debug, Clone)]
pub struct DialogConfig {
    /// T1, T2 (for the 2xx and reliable provisional retransmissions).
    pub timers: TimerConfig,
    /// The transport named in our Via headers.
    pub transport: Transport,
    /// The sent-by host of our Via headers.
    pub via_host: Host,
    /// The sent-by port of our Via headers.
    pub via_port: Option<u16>,
    /// The session interval we ask for (RFC 4028), in seconds; `None`: no session timer unless
    /// the peer asks for one.
    pub session_expires: Option<u32>,
    /// The smallest session interval we accept (RFC 4028 Min-SE; at least 90).
    pub min_se: u32,
    /// Entropy for branches, RSeq and the glare back-off, drawn by the application from a real
    /// random source. Two sessions must not share a seed.
    pub seed: u64,
    /// The methods we put in Allow.
    pub allow: Vec<Method>,
    /// What our initial INVITE says of reliable provisional responses (RFC 3262).
    pub rel100: Rel100,
}

/// What a UAC's initial INVITE says of reliable provisional responses (RFC 3262 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rel100 {
    /// `Supported: 100rel`: the UAS may send them reliably (we PRACK those it does).
    #[default]
    Supported,
    /// `Require: 100rel` too: the UAS must send them reliably or refuse the INVITE (420).
    Required,
    /// Neither: every provisional response comes unreliably.
    Off,
}

impl Default for DialogConfig {
    fn default() -> Self {
        DialogConfig {
            timers: TimerConfig::default(),
            transport: Transport::Udp,
            via_host: Host::Ipv4(std::net::Ipv4Addr::LOCALHOST),
            via_port: None,
            session_expires: None,
            min_se: MIN_SE_FLOOR,
            seed: 0,
            allow: default_allow(),
            rel100: Rel100::Supported,
        }
    }
}

/// RFC 4028 §5: "the minimum allowed value for Min-SE ... is 90 seconds".
pub const MIN_SE_FLOOR: u32 = 90;

/// The methods an [`InviteSession`] handles.
pub fn default_allow() -> Vec<Method> {
    vec![
        Method::Invite,
        Method::Ack,
        Method::Cancel,
        Method::Bye,
        Method::Options,
        Method::Prack,
        Method::Update,
    ]
}

/// What an [`InviteSession`] asks its driver to do.
// A request travels inline, as in EndpointOutput: one move is cheaper than a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this request in a new client transaction ([`crate::endpoint::Endpoint::send_request`])
    /// towards [`next_hop`] of it. Its top Via already carries a fresh branch.
    SendRequest(Request),
    /// Send this response through the server transaction `to`.
    SendResponse {
        /// The server transaction (of the INVITE for 1xx/2xx, of the request otherwise).
        to: crate::transaction::TransactionKey,
        /// The response.
        response: Response,
    },
    /// Send this ACK (for a 2xx) outside any transaction
    /// ([`crate::endpoint::Endpoint::send_stateless`]) towards [`next_hop`] of it.
    SendAck(Request),
    /// Cancel our initial INVITE ([`crate::endpoint::Endpoint::cancel`] with its key).
    CancelInvite,
    /// Tell the call logic.
    Event(DialogEvent),
}

/// What happened to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogEvent {
    /// UAC: a provisional response with a To tag created or updated an early dialog.
    Early {
        /// The peer's tag (one per fork).
        remote_tag: String,
        /// The status (180, 183...).
        status: u16,
        /// Its body (an early answer, possibly empty).
        body: Bytes,
        /// Whether it was sent reliably (RFC 3262) and we PRACKed it.
        reliable: bool,
    },
    /// The dialog is confirmed: UAC on the 2xx (the ACK is sent), UAS on the ACK.
    Confirmed {
        /// The peer's tag.
        remote_tag: String,
        /// The body of the 2xx (UAC) or of the ACK (UAS).
        body: Bytes,
    },
    /// UAS: a PRACK acknowledged our reliable provisional response.
    PrackReceived {
        /// The PRACK body (an answer, possibly empty).
        body: Bytes,
    },
    /// The peer sent a re-INVITE: answer it with [`InviteSession::answer_reinvite`].
    ReInvite {
        /// The offer (empty for an offerless re-INVITE).
        offer: Bytes,
    },
    /// Our re-INVITE was answered with a 2xx (the ACK is sent).
    ReInviteAccepted {
        /// The answer.
        answer: Bytes,
    },
    /// Our re-INVITE was rejected; the session goes on unchanged.
    ReInviteRejected {
        /// The status code.
        status: u16,
    },
    /// Our re-INVITE met glare (491); it is retried after the back-off (§14.1).
    ReInviteGlare {
        /// How long we wait.
        retry_after: Duration,
    },
    /// The session timer was refreshed (RFC 4028), by us or by the peer.
    Refreshed {
        /// The new session interval, in seconds.
        interval: u32,
    },
    /// A request of this session was challenged (401/407, RFC 3261 §22.2): one event per
    /// realm of the response (the first challenge of each).
    AuthChallenge {
        /// 401 or 407.
        status: u16,
        /// The realm of the challenge.
        realm: String,
        /// Its algorithm (`MD5` when it names none).
        algorithm: String,
        /// The method of the challenged request.
        method: Method,
        /// Whether the server said the nonce was stale (the credentials were right).
        stale: bool,
    },
    /// The challenged request was sent again with credentials (a new CSeq and branch).
    AuthRetry {
        /// Its method.
        method: Method,
        /// The CSeq number of the new request.
        cseq: u32,
    },
    /// A challenge could not be answered: no credentials, nothing supported, the credentials
    /// were rejected (a second challenge for the realm without `stale=true`), or
    /// [`MAX_AUTH_RETRIES`] were used up. The 401/407 then counts as the request's final
    /// response.
    AuthFailed {
        /// The method of the challenged request.
        method: Method,
        /// 401 or 407.
        status: u16,
        /// Why, for the timeline.
        reason: String,
    },
    /// The session ended (no more events follow). After a local BYE, a 401/407 to it is still
    /// answered (an [`DialogEvent::AuthRetry`] can follow).
    Terminated {
        /// Why.
        reason: EndReason,
    },
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// We sent BYE.
    LocalBye,
    /// The peer sent BYE.
    RemoteBye,
    /// The INVITE was rejected with this status (UAC), or we rejected it (UAS).
    Rejected(u16),
    /// The INVITE was cancelled (by us as UAC, or by the peer as UAS).
    Cancelled,
    /// UAS: the ACK for our 2xx never came (§13.3.1.4); we sent BYE.
    AckTimeout,
    /// UAS: no PRACK for a reliable provisional within 64*T1 (RFC 3262 §3); we sent a 5xx.
    PrackTimeout,
    /// The session timer expired (RFC 4028 §10); we sent BYE.
    SessionExpired,
    /// An in-dialog request got 481 or 408 (§12.2.1.2): the dialog is gone.
    DialogGone(u16),
}

/// A command or input the session refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// A header the dialog needs did not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The request is not an INVITE, or has no From tag.
    #[error("not a dialog-creating INVITE")]
    NotAnInvite,
    /// The command does not fit the session's state.
    #[error("not possible in state {0}")]
    InvalidState(&'static str),
    /// RFC 3262 §3: "The UAS MUST NOT send a second reliable provisional response until the
    /// first is acknowledged."
    #[error("a reliable provisional response is still unacknowledged")]
    ReliableOutstanding,
    /// The peer does not support 100rel, so a provisional response cannot be sent reliably.
    #[error("the peer does not support 100rel")]
    NoReliableSupport,
}

/// Early or confirmed (§12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a provisional response.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
}

/// The state of one dialog (RFC 3261 §12): "the dialog ID, a local sequence number ..., a
/// remote sequence number ..., a local URI, a remote URI, remote target, a boolean flag called
/// "secure", and a route set".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Call-ID, local tag, remote tag.
    pub id: DialogKey,
    /// Early or confirmed.
    pub state: DialogState,
    /// The CSeq of the last request we sent (`None`: empty, §12.1.1).
    pub local_seq: Option<u32>,
    /// The CSeq of the last request the peer sent (`None`: empty).
    pub remote_seq: Option<u32>,
    /// Our address (From of our requests), with our tag.
    pub local_uri: NameAddr,
    /// The peer's address (To of our requests), with its tag.
    pub remote_uri: NameAddr,
    /// Where our requests go (the peer's Contact).
    pub remote_target: Uri,
    /// The Route headers of our requests, in order.
    pub route_set: Vec<NameAddr>,
    /// Whether the dialog was set up over sips (§12.1.1).
    pub secure: bool,
}

impl Dialog {
    /// The UAC side of a dialog created by `response` to our `invite` (§12.1.2).
    pub fn uac(invite: &Request, response: &Response) -> Result<Dialog, DialogError> {
        let from = invite.headers.from()?;
        let to = response.headers.to()?;
        let local_tag = from.tag().ok_or(DialogError::NotAnInvite)?.to_owned();
        // "The route set MUST be set to the list of URIs in the Record-Route header field from
        // the response, taken in reverse order and preserving all URI parameters."
        let mut route_set = response.headers.record_routes()?;
        route_set.reverse();
        // "The remote target MUST be set to the URI from the Contact header field of the
        // response." A response without one (broken peer) falls back to the Request-URI.
        let remote_target = first_contact(&response.headers)?.unwrap_or(invite.uri.clone());
        let cseq = invite.headers.cseq()?;
        Ok(Dialog {
            id: DialogKey {
                call_id: invite.headers.call_id()?.to_owned(),
                local_tag,
                remote_tag: to.tag().unwrap_or_default().to_owned(),
            },
            state: if response.status.is_success() {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            // "The local sequence number MUST be set to the value of the sequence number in the
            // CSeq header field of the request." "The remote sequence number MUST be empty".
            local_seq: Some(cseq.seq),
            remote_seq: None,
            local_uri: from,
            remote_uri: to,
            remote_target,
            route_set,
            secure: is_sips(&invite.uri),
        })
    }

    /// The UAS side of a dialog created by our response (with To tag `local_tag`) to `invite`
    /// (§12.1.1).
    pub fn uas(
        invite: &Request,
        local_tag: &str,
        state: DialogState,
    ) -> Result<Dialog, DialogError> {
        let from = invite.headers.from()?;
        let mut to = invite.headers.to()?;
        to.params.set("tag", Some(local_tag));
        // "The route set MUST be set to the list of URIs in the Record-Route header field from
        // the request, taken in order and preserving all URI parameters."
        let route_set = invite.headers.record_routes()?;
        // "The remote target MUST be set to the URI from the Contact header field of the
        // request."
        let remote_target = first_contact(&invite.headers)?.unwrap_or(from.uri.clone());
        Ok(Dialog {
            id: DialogKey {
                call_id: invite.headers.call_id()?.to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag: from.tag().unwrap_or_default().to_owned(),
            },
            state,
            // "The remote sequence number MUST be set to the value of the sequence number in
            // the CSeq header field of the request. The local sequence number MUST be empty."
            local_seq: None,
            remote_seq: Some(invite.headers.cseq()?.seq),
            local_uri: to,
            remote_uri: from,
            remote_target,
            route_set,
            secure: is_sips(&invite.uri),
        })
    }

    /// The next local CSeq number, and remember it.
    pub fn next_seq(&mut self) -> u32 {
        // §12.2.1.1: "the CSeq number MUST be incremented by one" ... an empty local sequence
        // starts anywhere; 1 keeps traces readable.
        let next = self.local_seq.map_or(1, |s| s.wrapping_add(1));
        self.local_seq = Some(next);
        next
    }

    /// Build a request within the dialog (§12.2.1.1) with CSeq `seq`: To, From, Call-ID from
    /// the dialog, Request-URI and Route from the remote target and the route set (loose or
    /// strict routing), `via` as the single Via.
    pub fn request(&self, method: Method, seq: u32, via: &Via) -> Request {
        let mut headers = Headers::with_capacity(10);
        headers.push(HeaderName::Via, via.to_bytes());
        let (uri, routes) = self.request_uri_and_routes();
        for r in routes {
            headers.push(HeaderName::Route, r.to_bytes());
        }
        headers.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
        headers.push(HeaderName::From, self.local_uri.to_bytes());
        headers.push(HeaderName::To, self.remote_uri.to_bytes());
        headers.push(HeaderName::CallId, self.id.call_id.clone());
        headers.push(HeaderName::CSeq, format!("{seq} {method}"));
        Request {
            method,
            uri,
            headers,
            body: Bytes::new(),
        }
    }

    /// The Request-URI and Route values of a request in this dialog (§12.2.1.1).
    fn request_uri_and_routes(&self) -> (Uri, Vec<NameAddr>) {
        match self.route_set.first() {
            // "If the route set is empty, the UAC MUST place the remote target URI into the
            // Request-URI. The UAC MUST NOT add a Route header field to the request."
            None => (self.remote_target.clone(), Vec::new()),
            // "If the route set is not empty, and the first URI in the route set contains the
            // lr parameter ..., the UAC MUST place the remote target URI into the Request-URI
            // and MUST include a Route header field containing the route set values in order"
            Some(first) if first.uri.as_sip().is_some_and(|u| u.lr()) => {
                (self.remote_target.clone(), self.route_set.clone())
            }
            // "If the route set is not empty, and its first URI does not contain the lr
            // parameter, the UAC MUST place the first URI from the route set into the
            // Request-URI ... The UAC MUST add a Route header field containing the remainder of
            // the route set values in order ... The UAC MUST then place the remote target URI
            // into the Route header field as the last value."
            Some(first) => {
                let mut routes: Vec<NameAddr> = self.route_set[1..].to_vec();
                routes.push(NameAddr::new(self.remote_target.clone()));
                (first.uri.clone(), routes)
            }
        }
    }

    /// Where a request built by [`Dialog::request`] goes first (§8.1.2, §12.2.1.1): the first
    /// URI of the route set whether it is a loose router (it is then the top Route) or a strict
    /// one (it is then the Request-URI), else the remote target.
    pub fn next_hop(&self) -> Uri {
        match self.route_set.first() {
            Some(first) => first.uri.clone(),
            None => self.remote_target.clone(),
        }
    }

    /// Check the CSeq of a request the peer sent in this dialog, and remember it (§12.2.2):
    /// `false` means "out of order", to be answered 500.
    pub fn accept_remote_seq(&mut self, seq: u32) -> bool {
        // "If the remote sequence number was not empty, but the sequence number of the request
        // is lower than the remote sequence number, the request is out of order and MUST be
        // rejected with a 500 (Server Internal Error) response. If the remote sequence number
        // was not empty, and the sequence number of the request is greater than the remote
        // sequence number, the request is in order." "If the remote sequence number is empty,
        // it MUST be set to the value of the sequence number in the CSeq header field value in
        // the request."
        match self.remote_seq {
            Some(r) if seq < r => false,
            _ => {
                self.remote_seq = Some(seq);
                true
            }
        }
    }

    /// A target refresh (§12.2.1.2 / §12.2.2): "the remote target URI ... MUST be replaced with
    /// the URI from the Contact header field" of a target refresh request or its 2xx.
    pub fn refresh_target(&mut self, headers: &Headers) {
        if let Ok(Some(uri)) = first_contact(headers) {
            self.remote_target = uri;
        }
    }
}

fn first_contact(headers: &Headers) -> Result<Option<Uri>, ParseError> {
    Ok(headers.contacts()?.into_iter().next().map(|c| c.uri))
}

fn is_sips(uri: &Uri) -> bool {
    uri.as_sip().is_some_and(|u| u.secure)
}

/// Where a request goes first (§8.1.2): its Request-URI when it has no Route or was built for a
/// strict router (§12.2.1.1), else the URI of its top Route. The application resolves it
/// (RFC 3263) to an address for the endpoint.
///
/// §8.1.2: "If the first element in the route set indicated a strict router (resulting in
/// forming the request as described in Section 12.2.1.1), the procedures MUST be applied to the
/// Request-URI of the request. Otherwise, the procedures are applied to the first Route header
/// field value". A request carries no mark of how it was formed, so this reads it back from its
/// shape: the Request-URI is a strict router (a SIP URI without `lr`) and the Route values end
/// with the remote target, which §12.2.1.1 puts last. A loose-routed request from an RFC 3261
/// route set has `lr` on its top *and* last Route values (every RFC 3261 proxy record-routes
/// with `lr`), so it keeps going to its top Route; so does a single Route (a preloaded outbound
/// proxy), `lr` or not. The shapes this cannot tell apart are a loose route set whose last proxy
/// is a strict router, and a strict route set of one element (its request carries the remote
/// target as its only Route, like a preloaded proxy without `lr`): build requests with [`Dialog::request`] and use
/// [`Dialog::next_hop`] when the dialog is at hand, which knows its route set.
pub fn next_hop(request: &Request) -> Uri {
    let routes = match request.headers.routes() {
        Ok(routes) if !routes.is_empty() => routes,
        _ => return request.uri.clone(),
    };
    let has_lr = |u: &Uri| u.as_sip().is_some_and(|s| s.lr());
    let strict_shape = !has_lr(&request.uri)
        && request.uri.as_sip().is_some()
        && routes.len() >= 2
        && (!has_lr(&routes[0].uri) || !has_lr(&routes[routes.len() - 1].uri));
    if strict_shape {
        request.uri.clone()
    } else {
        routes[0].uri.clone()
    }
}

/// The parameters of an out-of-dialog INVITE ([`uac_invite`]).
#[derive(Debug, Clone)]
pub struct InviteParams {
    /// The Request-URI.
    pub request_uri: Uri,
    /// From (without tag: `from_tag` is added).
    pub from: NameAddr,
    /// Our From tag (e.g. [`crate::endpoint::Endpoint::new_tag`]).
    pub from_tag: String,
    /// To (no tag).
    pub to: NameAddr,
    /// The Call-ID (globally unique, §8.1.1.4).
    pub call_id: String,
    /// The first CSeq number.
    pub cseq: u32,
    /// Our Contact.
    pub contact: NameAddr,
    /// A preloaded route set (outbound proxy), as Route values in order.
    pub routes: Vec<NameAddr>,
    /// The SDP offer (may be empty).
    pub body: Bytes,
}

/// An out-of-dialog INVITE built as §8.1.1 asks: Via (with `branch`), Max-Forwards, From with
/// tag, To, Call-ID, CSeq, Contact, Supported: 100rel, timer, Allow, and when
/// `config.session_expires` is set, Session-Expires and Min-SE (RFC 4028 §7.1).
pub fn uac_invite(params: &InviteParams, config: &DialogConfig, branch: &Branch) -> Request {
    let mut headers = Headers::with_capacity(14);
    headers.push(HeaderName::Via, our_via(config, branch).to_bytes());
    for r in &params.routes {
        headers.push(HeaderName::Route, r.to_bytes());
    }
    headers.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
    let mut from = params.from.clone();
    from.params.set("tag", Some(params.from_tag.as_str()));
    headers.push(HeaderName::From, from.to_bytes());
    headers.push(HeaderName::To, params.to.to_bytes());
    headers.push(HeaderName::CallId, params.call_id.clone());
    headers.push(HeaderName::CSeq, format!("{} INVITE", params.cseq));
    headers.push(HeaderName::Contact, params.contact.to_bytes());
    match config.rel100 {
        Rel100::Supported => {
            headers.push(HeaderName::Supported, Bytes::from_static(b"100rel, timer"))
        }
        // RFC 3262 §4: "the UAC MAY include the option tag 100rel in the Require header
        // field" to insist; it must be in Supported as well then.
        Rel100::Required => {
            headers.push(HeaderName::Supported, Bytes::from_static(b"100rel, timer"));
            headers.push(HeaderName::Require, Bytes::from_static(b"100rel"));
        }
        Rel100::Off => headers.push(HeaderName::Supported, Bytes::from_static(b"timer")),
    }
    headers.push(HeaderName::Allow, allow_value(&config.allow));
    if let Some(se) = config.session_expires {
        headers.push(
            HeaderName::SessionExpires,
            se.max(config.min_se).to_string(),
        );
        headers.push(HeaderName::MinSe, config.min_se.to_string());
    }
    let mut req = Request {
        method: Method::Invite,
        uri: params.request_uri.clone(),
        headers,
        body: Bytes::new(),
    };
    set_body(&mut req.headers, &mut req.body, params.body.clone());
    req
}

/// Our Via with `branch` and `rport` (RFC 3581).
pub(crate) fn our_via(config: &DialogConfig, branch: &Branch) -> Via {
    let mut via = Via::new(
        config.transport.as_str(),
        config.via_host.clone(),
        config.via_port,
        branch.as_str(),
    );
    via.params.push("rport", None::<&str>);
    via
}

pub(crate) fn allow_value(allow: &[Method]) -> String {
    allow
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Put an SDP body (or none) on a message.
pub(crate) fn set_body(headers: &mut Headers, body_slot: &mut Bytes, body: Bytes) {
    headers.remove(&HeaderName::ContentType);
    if !body.is_empty() {
        headers.push(
            HeaderName::ContentType,
            Bytes::from_static(b"application/sdp"),
        );
    }
    *body_slot = body;
}

/// The answer to an out-of-dialog OPTIONS (§11.2): 200 with Allow, Accept and Supported, To tag
/// `to_tag`.
pub fn options_response(
    request: &Request,
    to_tag: &str,
    allow: &[Method],
    accept: &[&str],
    supported: &[&str],
) -> Response {
    let mut resp = response_to(request, StatusCode::OK, None);
    resp.add_to_tag(to_tag);
    // "Allow, Accept, Accept-Encoding, Accept-Language, and Supported header fields SHOULD be
    // present in a 200 (OK) response to an OPTIONS request."
    resp.headers.push(HeaderName::Allow, allow_value(allow));
    if !accept.is_empty() {
        resp.headers.push(HeaderName::Accept, accept.join(", "));
    }
    if !supported.is_empty() {
        resp.headers
            .push(HeaderName::Supported, supported.join(", "));
    }
    resp
}

/// The answer to an in-dialog request that names no dialog we know (§12.2.2): "If the UAS
/// receives a request ... (and it) does not match any existing dialog, the UAS ... SHOULD
/// respond to the request with a 481 (Call/Transaction Does Not Exist) status code". `None` for
/// an ACK, which is never answered.
pub fn unknown_dialog_response(request: &Request) -> Option<Response> {
    (request.method != Method::Ack)
        .then(|| response_to(request, StatusCode::CALL_TRANSACTION_DOES_NOT_EXIST, None))
}

/// The §14.1 back-off after a 491 to our re-INVITE, from one random value supplied by the
/// caller: "If the UAC is the owner of the Call-ID of the dialog ID (meaning it generated the
/// value), T has a randomly chosen value between 2.1 and 4 seconds in units of 10 ms. If the
/// UAC is not the owner of the Call-ID of the dialog ID, T has a randomly chosen value of
/// between 0 and 2 seconds in units of 10 ms."
pub fn glare_backoff(owns_call_id: bool, random: u64) -> Duration {
    let tens = if owns_call_id {
        210 + random % 191 // 210..=400
    } else {
        random % 201 // 0..=200
    };
    Duration::from_millis(tens * 10)
}

/// SplitMix64 step: a deterministic stream from the seed.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_invite_supports_requires_or_omits_100rel_as_configured() {
        let params = InviteParams {
            request_uri: Uri::parse(b"sip:bob@192.0.2.2").expect("uri"),
            from: NameAddr::new(Uri::parse(b"sip:alice@192.0.2.1").expect("uri")),
            from_tag: "a1".to_owned(),
            to: NameAddr::new(Uri::parse(b"sip:bob@192.0.2.2").expect("uri")),
            call_id: "c1".to_owned(),
            cseq: 1,
            contact: NameAddr::new(Uri::parse(b"sip:alice@192.0.2.1").expect("uri")),
            routes: Vec::new(),
            body: Bytes::new(),
        };
        let invite = |rel100| {
            let config = DialogConfig {
                rel100,
                ..DialogConfig::default()
            };
            uac_invite(&params, &config, &Branch::new("z9hG4bKx"))
        };
        let requires = |r: &Request| r.headers.require().expect("Require").contains(&"100rel");
        let supported = invite(Rel100::Supported);
        assert!(supported.headers.supports("100rel") && !requires(&supported));
        let required = invite(Rel100::Required);
        assert!(required.headers.supports("100rel") && requires(&required));
        let off = invite(Rel100::Off);
        assert!(!off.headers.supports("100rel") && !requires(&off));
        assert!(off.headers.supports("timer"));
    }

    #[test]
    fn glare_backoff_stays_in_the_rfc_ranges() {
        for r in [0u64, 1, 190, 191, 200, 201, u64::MAX, 12345] {
            let own = glare_backoff(true, r);
            assert!(own >= Duration::from_millis(2100) && own <= Duration::from_secs(4));
            let other = glare_backoff(false, r);
            assert!(other <= Duration::from_secs(2));
            assert_eq!(own.as_millis() % 10, 0);
        }
    }

    fn parse_request(text: &str) -> Request {
        match crate::message::Message::parse(Bytes::from(text.to_owned())).expect("parses") {
            crate::message::Message::Request(r) => r,
            crate::message::Message::Response(_) => panic!("not a request"),
        }
    }

    const INVITE: &str = "INVITE sip:bob@192.0.2.2 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKrr\r\n\
        Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n\
        From: <sip:alice@example.com>;tag=a1\r\n\
        To: <sip:bob@example.com>\r\n\
        Call-ID: rr@192.0.2.1\r\n\
        CSeq: 10 INVITE\r\n\
        Contact: <sip:alice@192.0.2.1>\r\n\
        Max-Forwards: 68\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn route_set_is_reversed_for_the_uac_and_kept_in_order_for_the_uas() {
        let invite = parse_request(INVITE);
        let uas = Dialog::uas(&invite, "b1", DialogState::Confirmed).expect("uas dialog");
        let uris: Vec<String> = uas.route_set.iter().map(|r| r.uri.to_string()).collect();
        assert_eq!(uris, ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]);
        assert_eq!(uas.remote_target.to_string(), "sip:alice@192.0.2.1");
        assert_eq!(uas.remote_seq, Some(10));
        assert_eq!(uas.local_seq, None);
        assert_eq!(uas.id.local_tag, "b1");
        assert_eq!(uas.id.remote_tag, "a1");

        // The 2xx as the UAC sees it: same Record-Route, Bob's tag and Contact.
        let mut ok = response_to(&invite, StatusCode::OK, None);
        ok.add_to_tag("b1");
        for rr in invite.headers.get_all(&HeaderName::RecordRoute) {
            ok.headers.push(HeaderName::RecordRoute, rr.clone());
        }
        ok.headers.push(HeaderName::Contact, "<sip:bob@192.0.2.2>");
        let uac = Dialog::uac(&invite, &ok).expect("uac dialog");
        let uris: Vec<String> = uac.route_set.iter().map(|r| r.uri.to_string()).collect();
        assert_eq!(uris, ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]);
        assert_eq!(uac.remote_target.to_string(), "sip:bob@192.0.2.2");
        assert_eq!(uac.local_seq, Some(10));
        assert_eq!(uac.state, DialogState::Confirmed);
        assert_eq!(uac.id.remote_tag, "b1");
    }

    #[test]
    fn unknown_dialog_gets_481_but_ack_gets_nothing() {
        let invite = parse_request(INVITE);
        let r = unknown_dialog_response(&invite).expect("a response");
        assert_eq!(r.status, StatusCode::CALL_TRANSACTION_DOES_NOT_EXIST);
        let mut ack = invite.clone();
        ack.method = Method::Ack;
        assert!(unknown_dialog_response(&ack).is_none());
    }

    #[test]
    fn strict_route_puts_first_route_in_request_uri_and_target_last() {
        let na = |s: &str| NameAddr::parse_named(s.as_bytes(), "Route").expect("route");
        let d = Dialog {
            id: DialogKey {
                call_id: "c".into(),
                local_tag: "l".into(),
                remote_tag: "r".into(),
            },
            state: DialogState::Confirmed,
            local_seq: Some(1),
            remote_seq: None,
            local_uri: na("<sip:a@x>;tag=l"),
            remote_uri: na("<sip:b@y>;tag=r"),
            remote_target: Uri::parse("sip:b@192.0.2.2").expect("uri"),
            route_set: vec![na("<sip:p1.example.com>"), na("<sip:p2.example.com;lr>")],
            secure: false,
        };
        let via = Via::new("UDP", Host::Domain("x".into()), None, "z9hG4bKx");
        let r = d.request(Method::Bye, 2, &via);
        assert_eq!(r.uri.to_string(), "sip:p1.example.com");
        let routes = r.headers.routes().expect("routes");
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1].uri.to_string(), "sip:b@192.0.2.2");
    }
}
