//! The SIP endpoint: the router between the wire and the transaction user, sans-IO.
//!
//! An [`Endpoint`] owns every transaction of one SIP stack. The application feeds it what the
//! sockets received ([`Endpoint::handle_datagram`]) and what the TU wants to send
//! ([`Endpoint::send_request`], [`Endpoint::send_response`], [`Endpoint::cancel`]), calls
//! [`Endpoint::handle_timeout`] when [`Endpoint::poll_timeout`] says so, and drains
//! [`Endpoint::poll_output`]: datagrams to send ([`Transmit`]) and [`EndpointEvent`]s for the
//! TU.
//!
//! What it does with a received message:
//! - a datagram that does not parse is counted; if it is a request and enough of Via, From, To,
//!   Call-ID and CSeq can be salvaged, it is answered 400 (or 505) statelessly, else dropped;
//! - a request gets `received`/`rport` on its top Via (RFC 3261 §18.2.1, RFC 3581 §4), is
//!   validated (RFC 3261 §8.2: 400, 405, 415, 416, 420, 483, 501, 505 ... answered
//!   statelessly), and is matched to a server transaction (§17.2.3, with the RFC 2543 fallback):
//!   a retransmission goes to its transaction, an ACK for a non-2xx to its INVITE transaction, a
//!   CANCEL gets its own transaction, is answered and reported against the INVITE it cancels;
//!   anything else creates a server transaction and goes to the TU as a
//!   [`EndpointEvent::NewRequest`], or as an [`EndpointEvent::InDialogRequest`] when its To has
//!   a tag (an ACK for a 2xx is always in-dialog and has no transaction); a request without To
//!   tag whose From tag, Call-ID and CSeq equal those of a live server transaction it does not
//!   match (the same request merged over two forking paths, §8.2.2.2) is answered 482 (Loop
//!   Detected) statelessly and not reported;
//! - a response is matched to its client transaction (§17.1.3: branch and CSeq method); one
//!   that matches nothing is a stray and is dropped and counted (RFC 6026 changed §18.1.2 so
//!   that an element other than a stateless proxy discards such responses instead of passing
//!   them to the core).
//!
//! Responses go where RFC 3261 §18.2.2 and RFC 3581 say: back over the connection for a
//! reliable transport, else to the `received` address and the `rport` port (or the sent-by
//! port) of the top Via.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::message::validate::{ValidateConfig, reply_to_unparseable, validate_request};
use crate::message::{
    Header, HeaderName, Headers, Host, Message, Method, ParseError, Request, Response, StatusCode,
    Via, response_to,
};
use crate::transaction::{
    Branch, ClientInvite, ClientKey, ClientNonInvite, KeyError, Output, ServerInvite, ServerKey,
    ServerNonInvite, Terminated, TimerConfig, TransactionError, TransactionEvent, TransactionKey,
    Transport,
};

/// Settings of an [`Endpoint`].
#[derive(Debug, Clone, Default)]
pub struct EndpointConfig {
    /// T1, T2, T4.
    pub timers: TimerConfig,
    /// What the request validator accepts.
    pub validate: ValidateConfig,
    /// Mixed into every branch and tag the endpoint makes, so two endpoints (or two runs) do
    /// not collide. The application draws it from a real random source once at start-up; the
    /// endpoint never reads entropy itself.
    pub seed: u64,
}

/// Identifies a dialog from this side (RFC 3261 §12): Call-ID, local tag, remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogKey {
    /// The Call-ID.
    pub call_id: String,
    /// Our tag (the To tag of a request we receive).
    pub local_tag: String,
    /// The peer's tag (the From tag of a request we receive; empty if it sent none).
    pub remote_tag: String,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// Over which transport (for a reliable one: the connection to `destination`).
    pub transport: Transport,
    /// The printed message.
    pub bytes: Bytes,
    /// The transaction that sent it, if any, to report a send failure with
    /// [`Endpoint::handle_transport_error`].
    pub key: Option<TransactionKey>,
}

/// What the endpoint tells the transaction user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEvent {
    /// A request outside any dialog (no To tag) created a server transaction. Answer it with
    /// [`Endpoint::send_response`] and `key`.
    NewRequest {
        /// The server transaction.
        key: TransactionKey,
        /// The request, with `received`/`rport` filled on its top Via.
        request: Request,
        /// Where it came from.
        source: SocketAddr,
        /// Over which transport.
        transport: Transport,
    },
    /// A request within a dialog (its To has a tag). `key` is its server transaction, `None` for
    /// an ACK to a 2xx (which is no transaction of its own, §17).
    InDialogRequest {
        /// The dialog it names.
        dialog: DialogKey,
        /// Its server transaction, if it has one.
        key: Option<TransactionKey>,
        /// The request.
        request: Request,
        /// Where it came from.
        source: SocketAddr,
        /// Over which transport.
        transport: Transport,
    },
    /// A CANCEL matched the INVITE server transaction `invite`; the endpoint has answered the
    /// CANCEL with 200 (§9.2). The TU should now answer the INVITE with 487 if it has not sent a
    /// final response yet.
    CancelReceived {
        /// The INVITE server transaction being cancelled.
        invite: TransactionKey,
        /// The CANCEL.
        request: Request,
    },
    /// A response for one of our client transactions (provisional or final; every 2xx of an
    /// INVITE is passed up, RFC 6026).
    Response {
        /// The client transaction.
        key: TransactionKey,
        /// The response.
        response: Response,
    },
    /// A transaction timed out (Timer B or F for a client: no final response; Timer H for an
    /// INVITE server: no ACK). A UAC "MUST" treat a client timeout "as if a 408 (Request
    /// Timeout) status code has been received" (§8.1.3.1).
    TransactionTimeout {
        /// The transaction.
        key: TransactionKey,
        /// The Call-ID of the request that created it: the owner, so that a TU can route
        /// the event without having learnt `key` first (it may come before the TU has).
        call_id: String,
    },
    /// A transaction reported a transport failure; for a client transaction "the condition MUST
    /// be treated as a 503 (Service Unavailable) status code" (§8.1.3.1). A send that fails at
    /// once reports this right after [`Endpoint::send_request`] returned the key.
    TransportError {
        /// The transaction.
        key: TransactionKey,
        /// The Call-ID of the request that created it (see `TransactionTimeout`).
        call_id: String,
    },
    /// A transaction ended and was removed.
    TransactionTerminated {
        /// The transaction.
        key: TransactionKey,
        /// The Call-ID of the request that created it (see `TransactionTimeout`).
        call_id: String,
        /// Why.
        reason: Terminated,
    },
}

/// One output of the endpoint.
// An event carries a whole Request inline: one memcpy through the output queue is cheaper than
// a heap allocation per event, which boxing would add.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointOutput {
    /// Send a datagram.
    Transmit(Transmit),
    /// Tell the TU.
    Event(EndpointEvent),
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams that parsed as SIP messages.
    pub parsed: u64,
    /// Datagrams that did not.
    pub malformed: u64,
    /// Responses that matched no client transaction (dropped).
    pub stray_responses: u64,
    /// ACKs that matched nothing and named no dialog (dropped).
    pub stray_acks: u64,
    /// Request retransmissions absorbed by a server transaction.
    pub retransmissions_absorbed: u64,
    /// Requests answered without a transaction, by status code.
    pub stateless_replies: BTreeMap<u16, u64>,
}

/// A TU command the endpoint refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No live transaction has that key.
    #[error("no such transaction")]
    UnknownTransaction,
    /// The request cannot start a transaction (no Via, or a malformed one).
    #[error("cannot send the request: {0}")]
    BadRequest(#[from] KeyError),
    /// ACK is not sent through a transaction; use [`Endpoint::send_stateless`].
    #[error("an ACK is not a transaction: send it with send_stateless")]
    AckIsNotATransaction,
    /// A client transaction with the same key already exists.
    #[error("a transaction with this branch and method already exists")]
    DuplicateTransaction,
    /// The transaction refused the response.
    #[error(transparent)]
    Transaction(#[from] TransactionError),
    /// CANCEL is only for an INVITE that has had no final response (§9.1).
    #[error("nothing to cancel: not an INVITE client transaction awaiting its final response")]
    NotCancellable,
}

#[derive(Debug)]
enum ClientTxn {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

#[derive(Debug)]
enum ServerTxn {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

macro_rules! dispatch {
    ($e:expr, $t:ident => $body:expr, $A:ident, $B:ident) => {
        match $e {
            $A::Invite($t) => $body,
            $A::NonInvite($t) => $body,
        }
    };
}

impl ClientTxn {
    fn poll_output(&mut self) -> Option<Output> {
        dispatch!(self, t => t.poll_output(), ClientTxn, ClientTxn)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        dispatch!(self, t => t.poll_timeout(), ClientTxn, ClientTxn)
    }
    fn handle_timeout(&mut self, now: Instant) {
        dispatch!(self, t => t.handle_timeout(now), ClientTxn, ClientTxn)
    }
    fn handle_transport_error(&mut self, now: Instant) {
        dispatch!(self, t => t.handle_transport_error(now), ClientTxn, ClientTxn)
    }
    fn handle_response(&mut self, now: Instant, r: Response) {
        dispatch!(self, t => t.handle_response(now, r), ClientTxn, ClientTxn)
    }
}

impl ServerTxn {
    fn poll_output(&mut self) -> Option<Output> {
        dispatch!(self, t => t.poll_output(), ServerTxn, ServerTxn)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        dispatch!(self, t => t.poll_timeout(), ServerTxn, ServerTxn)
    }
    fn handle_timeout(&mut self, now: Instant) {
        dispatch!(self, t => t.handle_timeout(now), ServerTxn, ServerTxn)
    }
    fn handle_transport_error(&mut self, now: Instant) {
        dispatch!(self, t => t.handle_transport_error(now), ServerTxn, ServerTxn)
    }
    fn handle_request(&mut self, now: Instant, r: Request) {
        dispatch!(self, t => t.handle_request(now, r), ServerTxn, ServerTxn)
    }
    fn send_response(&mut self, now: Instant, r: Response) -> Result<(), TransactionError> {
        dispatch!(self, t => t.send_response(now, r), ServerTxn, ServerTxn)
    }
}

#[derive(Debug)]
struct ClientEntry {
    txn: ClientTxn,
    /// The Call-ID of the request: every event that names only this transaction names it too.
    call_id: String,
    destination: SocketAddr,
    transport: Transport,
    /// The deadline last pushed on the timer heap (older heap entries are stale).
    deadline: Option<Instant>,
    /// A CANCEL asked for before any provisional response: sent when one arrives (§9.1).
    cancel_pending: bool,
}

#[derive(Debug)]
struct ServerEntry {
    txn: ServerTxn,
    /// The Call-ID of the request (see [`ClientEntry::call_id`]).
    call_id: String,
    reply_to: SocketAddr,
    transport: Transport,
    deadline: Option<Instant>,
    /// The entry of this transaction in [`Endpoint::merge_index`], removed with it.
    merge_key: Option<MergeKey>,
}

/// What identifies one request outside a dialog across forking paths (RFC 3261 §8.2.2.2): the
/// From tag, Call-ID and CSeq (number and method) of a request without To tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MergeKey {
    call_id: String,
    from_tag: String,
    seq: u32,
    method: Method,
}

impl MergeKey {
    /// The key of a request without To tag (and with a From tag), else `None`.
    fn of(req: &Request) -> Option<MergeKey> {
        if req.headers.to().ok()?.tag().is_some() {
            return None;
        }
        let from_tag = req.headers.from().ok()?.tag()?.to_owned();
        let cseq = req.headers.cseq().ok()?;
        Some(MergeKey {
            call_id: req.headers.call_id().ok()?.to_owned(),
            from_tag,
            seq: cseq.seq,
            method: cseq.method,
        })
    }
}

/// The router. See the [module documentation](self).
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    clients: HashMap<ClientKey, ClientEntry>,
    servers: HashMap<ServerKey, ServerEntry>,
    /// Deadlines of all transactions; an entry is live only if it equals the transaction's
    /// recorded `deadline` (lazy deletion keeps updates O(log n)).
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_keys: HashMap<u64, TransactionKey>,
    /// The live server transactions of requests outside a dialog, by [`MergeKey`], to detect
    /// merged requests (§8.2.2.2). Bounded by the server transactions: an entry leaves with its
    /// transaction.
    merge_index: HashMap<MergeKey, ServerKey>,
    next_timer_id: u64,
    counter: u64,
    stateless_tag: String,
    out: VecDeque<EndpointOutput>,
    stats: EndpointStats,
}

/// SplitMix64: a bijective mixer, so distinct counters give distinct branches.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Endpoint {
    /// An endpoint with no transactions.
    pub fn new(config: EndpointConfig) -> Endpoint {
        let stateless_tag = format!(
            "sl{:012x}",
            mix(config.seed ^ 0x5f5f_5f5f) & 0xffff_ffff_ffff
        );
        Endpoint {
            config,
            clients: HashMap::new(),
            servers: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_keys: HashMap::new(),
            merge_index: HashMap::new(),
            next_timer_id: 0,
            counter: 0,
            stateless_tag,
            out: VecDeque::new(),
            stats: EndpointStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// The number of live client and server transactions.
    pub fn transaction_count(&self) -> (usize, usize) {
        (self.clients.len(), self.servers.len())
    }

    /// A fresh RFC 3261 branch (magic cookie + 64 bits from the seed and a counter).
    pub fn new_branch(&mut self) -> Branch {
        self.counter += 1;
        Branch::from_u64(mix(self.config.seed ^ self.counter))
    }

    /// A fresh tag for From or To (RFC 3261 §19.3: at least 32 bits of randomness).
    pub fn new_tag(&mut self) -> String {
        self.counter += 1;
        format!(
            "{:016x}",
            mix(self.config.seed.rotate_left(17) ^ self.counter)
        )
    }

    /// The next thing to send or report.
    pub fn poll_output(&mut self) -> Option<EndpointOutput> {
        self.out.pop_front()
    }

    /// The earliest transaction deadline. (Takes `&mut self` to discard stale heap entries.)
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if self.timer_is_live(at, id) {
                return Some(at);
            }
            self.timers.pop();
            self.timer_keys.remove(&id);
        }
        None
    }

    /// Fire the timers of every transaction that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(key) = self.timer_keys.remove(&id) else {
                continue;
            };
            if !self.deadline_matches(&key, at) {
                continue;
            }
            match &key {
                TransactionKey::Client(k) => {
                    if let Some(e) = self.clients.get_mut(k) {
                        e.deadline = None;
                        e.txn.handle_timeout(now);
                    }
                    self.pump_client(k);
                }
                TransactionKey::Server(k) => {
                    if let Some(e) = self.servers.get_mut(k) {
                        e.deadline = None;
                        e.txn.handle_timeout(now);
                    }
                    self.pump_server(k);
                }
            }
        }
    }

    /// The transport failed to send for the transaction `key` (from [`Transmit::key`]).
    pub fn handle_transport_error(&mut self, now: Instant, key: &TransactionKey) {
        match key {
            TransactionKey::Client(k) => {
                if let Some(e) = self.clients.get_mut(k) {
                    e.txn.handle_transport_error(now);
                    self.pump_client(k);
                }
            }
            TransactionKey::Server(k) => {
                if let Some(e) = self.servers.get_mut(k) {
                    e.txn.handle_transport_error(now);
                    self.pump_server(k);
                }
            }
        }
    }

    /// One SIP message arrived from `source` over `transport` (a UDP datagram, or one message
    /// cut from a stream by [`crate::transport`]).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        bytes: Bytes,
    ) {
        match Message::parse(bytes.clone()) {
            Ok(message) => self.handle_message(now, source, transport, message),
            Err(err) => self.handle_unparseable(source, transport, &bytes, &err),
        }
    }

    /// One message already parsed (e.g. by [`crate::transport::StreamFramer`] on a stream).
    pub fn handle_message(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        message: Message,
    ) {
        self.stats.parsed += 1;
        match message {
            Message::Request(req) => self.on_request(now, source, transport, req),
            Message::Response(resp) => self.on_response(now, resp),
        }
    }

    /// A message that did not parse (e.g. [`crate::transport::Framed::Invalid`]): counted, and
    /// a request is answered 400 (or 505) statelessly when enough of it can be salvaged.
    pub fn handle_unparseable(
        &mut self,
        source: SocketAddr,
        transport: Transport,
        data: &Bytes,
        error: &ParseError,
    ) {
        self.stats.malformed += 1;
        // No response is ever sent to an ACK (RFC 3261 §17: an ACK is not answered), however
        // broken it is.
        if is_ack_datagram(data) {
            return;
        }
        if let Some(mut reply) = reply_to_unparseable(data, error) {
            let Ok(via) = reply.headers.top_via() else {
                return;
            };
            reply.add_to_tag(&self.stateless_tag);
            let destination = reply_address(&filled_via(via, source), source, transport);
            self.send_stateless_response(destination, transport, reply);
        }
    }

    /// Start a client transaction for `request` (anything but ACK) towards `destination`. The
    /// request must carry its top Via; when that Via has no branch, a fresh one is added
    /// (nothing else is changed). Returns the transaction's key.
    pub fn send_request(
        &mut self,
        now: Instant,
        mut request: Request,
        destination: SocketAddr,
        transport: Transport,
    ) -> Result<TransactionKey, EndpointError> {
        if request.method == Method::Ack {
            return Err(EndpointError::AckIsNotATransaction);
        }
        let mut via = request.headers.top_via().map_err(KeyError::from)?;
        if via.branch().is_none() {
            let branch = self.new_branch();
            via.params.set("branch", Some(branch.as_str()));
            request.headers = replace_top_via(&request.headers, &via);
        }
        let key = ClientKey::from_request(&request)?;
        if self.clients.contains_key(&key) {
            return Err(EndpointError::DuplicateTransaction);
        }
        // The owner of every event of this transaction (§8.1.1.4: every request has one).
        let call_id = request
            .headers
            .call_id()
            .map_err(KeyError::from)?
            .to_owned();
        let txn = if request.method == Method::Invite {
            ClientTxn::Invite(ClientInvite::new(
                now,
                request,
                transport,
                self.config.timers,
            ))
        } else {
            ClientTxn::NonInvite(ClientNonInvite::new(
                now,
                request,
                transport,
                self.config.timers,
            ))
        };
        self.clients.insert(
            key.clone(),
            ClientEntry {
                txn,
                call_id,
                destination,
                transport,
                deadline: None,
                cancel_pending: false,
            },
        );
        self.pump_client(&key);
        Ok(TransactionKey::Client(key))
    }

    /// Send a response through the server transaction `key`. (The TU adds the To tag.)
    pub fn send_response(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        response: Response,
    ) -> Result<(), EndpointError> {
        let TransactionKey::Server(k) = key else {
            return Err(EndpointError::UnknownTransaction);
        };
        let entry = self
            .servers
            .get_mut(k)
            .ok_or(EndpointError::UnknownTransaction)?;
        let result = entry.txn.send_response(now, response);
        self.pump_server(k);
        Ok(result?)
    }

    /// Answer the request of the server transaction `key` with a final `response` sent once,
    /// statelessly, and forget the transaction: the response is not retransmitted (no Timer G)
    /// and no ACK is awaited (the ACK for it is absorbed, as for the endpoint's own stateless
    /// rejections, whose To tag it gets when it has none). A retransmitted request then makes a
    /// new transaction and is answered again. This is how an overloaded element refuses work
    /// (RFC 3261 §21.5.4 503, RFC 7339): keeping a transaction per refused request is the
    /// state it has no room for.
    pub fn send_response_stateless(
        &mut self,
        key: &TransactionKey,
        mut response: Response,
    ) -> Result<(), EndpointError> {
        let TransactionKey::Server(k) = key else {
            return Err(EndpointError::UnknownTransaction);
        };
        if !response.status.is_final() {
            return Err(EndpointError::Transaction(TransactionError::InvalidState {
                status: response.status.as_u16(),
                state: "stateless (a final response is needed)",
            }));
        }
        let entry = self
            .servers
            .remove(k)
            .ok_or(EndpointError::UnknownTransaction)?;
        // Its heap timers die with it: `deadline_matches` finds no transaction.
        if let Some(mk) = entry.merge_key
            && self.merge_index.get(&mk) == Some(k)
        {
            self.merge_index.remove(&mk);
        }
        response.add_to_tag(&self.stateless_tag);
        self.send_stateless_response(entry.reply_to, entry.transport, response);
        Ok(())
    }

    /// Send a message outside any transaction: the ACK for a 2xx (§13.2.2.4) or a 2xx
    /// retransmission by a UAS core after its transaction ended.
    pub fn send_stateless(
        &mut self,
        destination: SocketAddr,
        transport: Transport,
        message: &Message,
    ) {
        self.out.push_back(EndpointOutput::Transmit(Transmit {
            destination,
            transport,
            bytes: message.to_bytes(),
            key: None,
        }));
    }

    /// Cancel the INVITE client transaction `invite` (§9.1). The CANCEL is built from the
    /// INVITE and starts its own non-INVITE client transaction, whose key is returned. "If no
    /// provisional response has been received, the CANCEL request MUST NOT be sent; rather, the
    /// client MUST wait for the arrival of a provisional response before sending the request":
    /// in that case it is sent when the first provisional response arrives (and never, if a
    /// final response comes first).
    pub fn cancel(
        &mut self,
        now: Instant,
        invite: &TransactionKey,
    ) -> Result<TransactionKey, EndpointError> {
        let TransactionKey::Client(k) = invite else {
            return Err(EndpointError::NotCancellable);
        };
        let entry = self
            .clients
            .get_mut(k)
            .ok_or(EndpointError::UnknownTransaction)?;
        let ClientTxn::Invite(txn) = &entry.txn else {
            return Err(EndpointError::NotCancellable);
        };
        let cancel_key = ClientKey {
            branch: k.branch.clone(),
            method: Method::Cancel,
        };
        if txn.is_calling() {
            entry.cancel_pending = true;
            Ok(TransactionKey::Client(cancel_key))
        } else if txn.is_proceeding() {
            let cancel = build_cancel(txn.request());
            let (destination, transport) = (entry.destination, entry.transport);
            let key = self.send_request(now, cancel, destination, transport)?;
            self.invite_cancel_sent(now, k);
            Ok(key)
        } else {
            Err(EndpointError::NotCancellable)
        }
    }

    fn on_response(&mut self, now: Instant, resp: Response) {
        let Ok(key) = ClientKey::from_response(&resp) else {
            self.stats.stray_responses += 1;
            return;
        };
        match self.clients.get_mut(&key) {
            Some(entry) => {
                entry.txn.handle_response(now, resp);
                self.pump_client(&key);
                self.flush_pending_cancel(now, &key);
            }
            // §18.1.2 as RFC 6026 amended it: a response that matches no client transaction
            // is silently discarded by anything but a stateless proxy.
            None => self.stats.stray_responses += 1,
        }
    }

    fn flush_pending_cancel(&mut self, now: Instant, key: &ClientKey) {
        let Some(entry) = self.clients.get_mut(key) else {
            return;
        };
        if !entry.cancel_pending {
            return;
        }
        let ClientTxn::Invite(txn) = &entry.txn else {
            return;
        };
        if txn.is_calling() {
            return;
        }
        entry.cancel_pending = false;
        if txn.is_proceeding() {
            let cancel = build_cancel(txn.request());
            let (destination, transport) = (entry.destination, entry.transport);
            // The key is fresh (the INVITE's branch with method CANCEL): cannot collide.
            if self
                .send_request(now, cancel, destination, transport)
                .is_ok()
            {
                self.invite_cancel_sent(now, key);
            }
        }
        // Otherwise a final response came first, and there is nothing left to cancel.
    }

    /// A CANCEL for the INVITE client transaction `key` went out: from now on the transaction
    /// gives up 64*T1 later if no final response arrives (§9.1, [`ClientInvite::cancel_sent`]).
    fn invite_cancel_sent(&mut self, now: Instant, key: &ClientKey) {
        if let Some(ClientEntry {
            txn: ClientTxn::Invite(txn),
            ..
        }) = self.clients.get_mut(key)
        {
            txn.cancel_sent(now);
        }
        self.pump_client(key);
    }

    fn on_request(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        mut req: Request,
    ) {
        // §18.2.1 and RFC 3581 §4: record where the request really came from on its top Via.
        let via = match req.headers.top_via() {
            Ok(via) => {
                let filled = filled_via(via.clone(), source);
                if filled != via {
                    req.headers = replace_top_via(&req.headers, &filled);
                }
                filled
            }
            Err(_) => {
                // Without a usable Via there is nowhere to send a response (§18.2.2).
                self.stats.malformed += 1;
                return;
            }
        };
        let reply_to = reply_address(&via, source, transport);
        if let Err(rejection) = validate_request(&req, &self.config.validate) {
            // An ACK is never answered: a bad one is dropped.
            if req.method != Method::Ack {
                let mut resp = rejection.to_response(&req);
                resp.add_to_tag(&self.stateless_tag);
                self.send_stateless_response(reply_to, transport, resp);
            }
            return;
        }
        let key = match ServerKey::from_request(&req) {
            Ok(k) => k,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        if req.method == Method::Ack {
            self.on_ack(now, source, transport, key, req);
            return;
        }
        if let Some(entry) = self.servers.get_mut(&key) {
            // A retransmission (§17.2.3 matched it): the transaction absorbs it.
            entry.txn.handle_request(now, req);
            self.pump_server(&key);
            return;
        }
        let dialog = dialog_key(&req);
        let method = req.method.clone();
        let merge_key = if method == Method::Cancel {
            // A CANCEL is matched to its INVITE by branch (§9.2), not merged.
            None
        } else {
            MergeKey::of(&req)
        };
        if let Some(mk) = &merge_key
            && let Some(other) = self.merge_index.get(mk)
            && *other != key
            && self.servers.contains_key(other)
        {
            // §8.2.2.2: "If the request has no tag in the To header field, the UAS core MUST
            // check the request against ongoing transactions. If the From tag, Call-ID, and
            // CSeq exactly match those associated with an ongoing transaction, but the request
            // does not match that transaction (based on the matching rules in Section 17.2.3),
            // the UAS core SHOULD generate a 482 (Loop Detected) response and pass it to the
            // server transaction." Answered statelessly: a retransmission of the merged copy
            // simply gets the 482 again.
            let mut resp = response_to(&req, StatusCode::new(482).expect("482 is a status"), None);
            resp.add_to_tag(&self.stateless_tag);
            self.send_stateless_response(reply_to, transport, resp);
            return;
        }
        if let Some(mk) = &merge_key {
            self.merge_index.insert(mk.clone(), key.clone());
        }
        let txn = if method == Method::Invite {
            ServerTxn::Invite(ServerInvite::new(
                now,
                req.clone(),
                transport,
                self.config.timers,
            ))
        } else {
            ServerTxn::NonInvite(ServerNonInvite::new(
                now,
                req.clone(),
                transport,
                self.config.timers,
            ))
        };
        self.servers.insert(
            key.clone(),
            ServerEntry {
                txn,
                call_id: req.headers.call_id().map(str::to_owned).unwrap_or_default(),
                reply_to,
                transport,
                deadline: None,
                merge_key,
            },
        );
        let tkey = TransactionKey::Server(key.clone());
        if method == Method::Cancel {
            self.on_cancel(now, key, req);
            return;
        }
        let event = match dialog {
            Some(dialog) => EndpointEvent::InDialogRequest {
                dialog,
                key: Some(tkey),
                request: req,
                source,
                transport,
            },
            None => EndpointEvent::NewRequest {
                key: tkey,
                request: req,
                source,
                transport,
            },
        };
        self.out.push_back(EndpointOutput::Event(event));
        self.pump_server(&key);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        key: ServerKey,
        ack: Request,
    ) {
        if let Some(entry) = self.servers.get_mut(&key)
            && let ServerTxn::Invite(txn) = &entry.txn
            && (matches!(key, ServerKey::Rfc3261 { .. }) || rfc2543_ack_to_tag_matches(txn, &ack))
        {
            // §17.2.3: "the method of the request matches the one that created the
            // transaction, except for ACK, where the method of the request that created the
            // transaction is INVITE": the ACK for our non-2xx (or, in Accepted, RFC 6026).
            entry.txn.handle_request(now, ack);
            self.pump_server(&key);
            return;
        }
        match dialog_key(&ack) {
            // The ACK for one of our stateless rejections: nothing to do.
            Some(d) if d.local_tag == self.stateless_tag => {}
            // The ACK for a 2xx is its own transaction-less request (§17): to the dialog.
            Some(dialog) => {
                self.out
                    .push_back(EndpointOutput::Event(EndpointEvent::InDialogRequest {
                        dialog,
                        key: None,
                        request: ack,
                        source,
                        transport,
                    }))
            }
            None => self.stats.stray_acks += 1,
        }
    }

    fn on_cancel(&mut self, now: Instant, cancel_key: ServerKey, cancel: Request) {
        let invite_key = cancel_key.with_method(Method::Invite);
        let invite_to = match self.servers.get(&invite_key) {
            Some(ServerEntry {
                txn: ServerTxn::Invite(t),
                ..
            }) => Some(
                t.last_response()
                    .and_then(|r| r.headers.get(&HeaderName::To).cloned()),
            ),
            _ => None,
        };
        let mut resp;
        match invite_to {
            // §9.2: "If the UAS did not find a transaction for the CANCEL request, it SHOULD
            // respond to the CANCEL with a 481 (Call Leg/Transaction Does Not Exist)."
            None => {
                resp = response_to(&cancel, StatusCode::CALL_TRANSACTION_DOES_NOT_EXIST, None);
                resp.add_to_tag(&self.stateless_tag);
            }
            // "Regardless of the method of the original request, as long as the CANCEL matched
            // an existing transaction, the UAS answers the CANCEL request itself with a 200 (OK)
            // response." and "The To tag of the response to the CANCEL and the To tag in the
            // response to the original request SHOULD be the same."
            Some(to) => {
                resp = response_to(&cancel, StatusCode::OK, None);
                if let Some(to) = to {
                    resp.headers.set(HeaderName::To, to);
                }
                // §8.2.6.2: a final response MUST carry a To tag. Before the INVITE got a tagged
                // response (only 100 Trying, or nothing yet) there is none to copy, and the tag
                // the TU will put on its 487 is not known here: use a fresh one.
                if resp.headers.to().is_ok_and(|t| t.tag().is_none()) {
                    let tag = self.new_tag();
                    resp.add_to_tag(&tag);
                }
                self.out
                    .push_back(EndpointOutput::Event(EndpointEvent::CancelReceived {
                        invite: TransactionKey::Server(invite_key),
                        request: cancel,
                    }));
            }
        }
        if let Some(entry) = self.servers.get_mut(&cancel_key) {
            // A fresh non-INVITE transaction accepts any final response.
            let _ = entry.txn.send_response(now, resp);
        }
        self.pump_server(&cancel_key);
    }

    fn send_stateless_response(
        &mut self,
        destination: SocketAddr,
        transport: Transport,
        resp: Response,
    ) {
        *self
            .stats
            .stateless_replies
            .entry(resp.status.as_u16())
            .or_insert(0) += 1;
        self.out.push_back(EndpointOutput::Transmit(Transmit {
            destination,
            transport,
            bytes: resp.to_bytes(),
            key: None,
        }));
    }

    fn timer_is_live(&self, at: Instant, id: u64) -> bool {
        self.timer_keys
            .get(&id)
            .is_some_and(|k| self.deadline_matches(k, at))
    }

    fn deadline_matches(&self, key: &TransactionKey, at: Instant) -> bool {
        match key {
            TransactionKey::Client(k) => {
                self.clients.get(k).is_some_and(|e| e.deadline == Some(at))
            }
            TransactionKey::Server(k) => {
                self.servers.get(k).is_some_and(|e| e.deadline == Some(at))
            }
        }
    }

    fn schedule(&mut self, key: TransactionKey, at: Instant) {
        let id = self.next_timer_id;
        self.next_timer_id += 1;
        self.timers.push(Reverse((at, id)));
        self.timer_keys.insert(id, key);
    }

    /// Drain a client transaction's outputs into the endpoint's, remove it if it ended, and
    /// reschedule its deadline.
    fn pump_client(&mut self, key: &ClientKey) {
        let Some(entry) = self.clients.get_mut(key) else {
            return;
        };
        let mut ended = None;
        while let Some(o) = entry.txn.poll_output() {
            let tkey = || TransactionKey::Client(key.clone());
            let out = match o {
                Output::Transmit(m) => EndpointOutput::Transmit(Transmit {
                    destination: entry.destination,
                    transport: entry.transport,
                    bytes: m.to_bytes(),
                    key: Some(tkey()),
                }),
                Output::Event(
                    TransactionEvent::Provisional(response) | TransactionEvent::Final(response),
                ) => EndpointOutput::Event(EndpointEvent::Response {
                    key: tkey(),
                    response,
                }),
                Output::Event(TransactionEvent::Timeout(_)) => {
                    EndpointOutput::Event(EndpointEvent::TransactionTimeout {
                        key: tkey(),
                        call_id: entry.call_id.clone(),
                    })
                }
                Output::Event(TransactionEvent::TransportError) => {
                    EndpointOutput::Event(EndpointEvent::TransportError {
                        key: tkey(),
                        call_id: entry.call_id.clone(),
                    })
                }
                Output::Event(TransactionEvent::Terminated(reason)) => {
                    ended = Some(reason);
                    EndpointOutput::Event(EndpointEvent::TransactionTerminated {
                        key: tkey(),
                        call_id: entry.call_id.clone(),
                        reason,
                    })
                }
                // Server-only events never come from a client transaction.
                Output::Event(
                    TransactionEvent::Ack(_) | TransactionEvent::RetransmissionAbsorbed,
                ) => continue,
            };
            self.out.push_back(out);
        }
        if ended.is_some() {
            self.clients.remove(key);
            return;
        }
        let next = entry.txn.poll_timeout();
        if next != entry.deadline {
            entry.deadline = next;
            if let Some(at) = next {
                self.schedule(TransactionKey::Client(key.clone()), at);
            }
        }
    }

    fn pump_server(&mut self, key: &ServerKey) {
        let Some(entry) = self.servers.get_mut(key) else {
            return;
        };
        let mut ended = None;
        while let Some(o) = entry.txn.poll_output() {
            let tkey = || TransactionKey::Server(key.clone());
            let out = match o {
                Output::Transmit(m) => EndpointOutput::Transmit(Transmit {
                    destination: entry.reply_to,
                    transport: entry.transport,
                    bytes: m.to_bytes(),
                    key: Some(tkey()),
                }),
                Output::Event(TransactionEvent::RetransmissionAbsorbed) => {
                    self.stats.retransmissions_absorbed += 1;
                    continue;
                }
                Output::Event(TransactionEvent::Ack(request)) => {
                    // RFC 6026: an ACK matched in Accepted goes to the TU (the dialog).
                    match dialog_key(&request) {
                        Some(dialog) => EndpointOutput::Event(EndpointEvent::InDialogRequest {
                            dialog,
                            key: Some(tkey()),
                            request,
                            source: entry.reply_to,
                            transport: entry.transport,
                        }),
                        None => continue,
                    }
                }
                Output::Event(TransactionEvent::Timeout(_)) => {
                    EndpointOutput::Event(EndpointEvent::TransactionTimeout {
                        key: tkey(),
                        call_id: entry.call_id.clone(),
                    })
                }
                Output::Event(TransactionEvent::TransportError) => {
                    EndpointOutput::Event(EndpointEvent::TransportError {
                        key: tkey(),
                        call_id: entry.call_id.clone(),
                    })
                }
                Output::Event(TransactionEvent::Terminated(reason)) => {
                    ended = Some(reason);
                    EndpointOutput::Event(EndpointEvent::TransactionTerminated {
                        key: tkey(),
                        call_id: entry.call_id.clone(),
                        reason,
                    })
                }
                Output::Event(TransactionEvent::Provisional(_) | TransactionEvent::Final(_)) => {
                    continue;
                }
            };
            self.out.push_back(out);
        }
        if ended.is_some() {
            if let Some(entry) = self.servers.remove(key)
                && let Some(mk) = entry.merge_key
                && self.merge_index.get(&mk) == Some(key)
            {
                self.merge_index.remove(&mk);
            }
            return;
        }
        let next = entry.txn.poll_timeout();
        if next != entry.deadline {
            entry.deadline = next;
            if let Some(at) = next {
                self.schedule(TransactionKey::Server(key.clone()), at);
            }
        }
    }
}

/// The RFC 2543 rule's last condition (§17.2.3): "the To tag of the ACK matches the To tag of
/// the response sent by the server transaction" (the key itself leaves the To tag out). Before
/// any tagged final response there is nothing to compare, and the ACK is taken.
fn rfc2543_ack_to_tag_matches(txn: &ServerInvite, ack: &Request) -> bool {
    let Some(sent) = txn.last_response().filter(|r| r.status.is_final()) else {
        return true;
    };
    let sent_tag = sent
        .headers
        .to()
        .ok()
        .and_then(|t| t.tag().map(str::to_owned));
    let ack_tag = ack
        .headers
        .to()
        .ok()
        .and_then(|t| t.tag().map(str::to_owned));
    sent_tag == ack_tag
}

/// Whether a datagram's start line is an ACK request line.
fn is_ack_datagram(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|&c| c != b'\r' && c != b'\n')
        .unwrap_or(bytes.len());
    bytes[start..].starts_with(b"ACK ")
}

/// The dialog a received request names, if its To has a tag (§12.2.2).
fn dialog_key(req: &Request) -> Option<DialogKey> {
    let to = req.headers.to().ok()?;
    let local_tag = to.tag()?.to_owned();
    let remote_tag = req
        .headers
        .from()
        .ok()
        .and_then(|f| f.tag().map(str::to_owned))
        .unwrap_or_default();
    let call_id = req.headers.call_id().ok()?.to_owned();
    Some(DialogKey {
        call_id,
        local_tag,
        remote_tag,
    })
}

/// The top Via with `received` and `rport` filled as a server must fill them.
///
/// RFC 3261 §18.2.1: "If the host portion of the "sent-by" parameter contains a domain name, or
/// if it contains an IP address that differs from the packet source address, the server MUST add
/// a "received" parameter to that Via header field value. This parameter MUST contain the source
/// address from which the packet was received."
///
/// RFC 3581 §4: "If this Via header field value contains an "rport" parameter with no value, it
/// MUST set the value of the parameter to the source port of the request. ... the server MUST
/// insert a "received" parameter containing the source IP address that the request came from,
/// even if it is identical to the value of the "sent-by" component."
fn filled_via(mut via: Via, source: SocketAddr) -> Via {
    let asked_rport = via.rport() == Some(None);
    let same_ip = match (&via.host, source.ip()) {
        (Host::Ipv4(a), IpAddr::V4(b)) => *a == b,
        (h @ Host::Ipv6(_), IpAddr::V6(b)) => h.ipv6_addr() == Some(b),
        _ => false,
    };
    if !same_ip || asked_rport {
        via.params.set("received", Some(source.ip().to_string()));
    }
    if asked_rport {
        via.params.set("rport", Some(source.port().to_string()));
    }
    via
}

/// Where a response to a request with this (filled) top Via goes (§18.2.2, RFC 3581 §4).
fn reply_address(via: &Via, source: SocketAddr, transport: Transport) -> SocketAddr {
    // "If the "sent-protocol" is a reliable transport protocol such as TCP or SCTP, or TLS over
    // those, the response MUST be sent using the existing connection to the source of the
    // original request" (§18.2.2).
    if transport.is_reliable() {
        return source;
    }
    let default_port = transport.default_port();
    // "Otherwise, if the Via header field value contains a "maddr" parameter, the response MUST
    // be forwarded to the address listed there, using the port indicated in "sent-by", or port
    // 5060 if none is present." (Only an IP literal can be used without DNS.)
    if let Some(ip) = via.maddr().and_then(parse_ip) {
        return SocketAddr::new(ip, via.port.unwrap_or(default_port));
    }
    // "Otherwise (for unreliable unicast transports), if the top Via has a "received"
    // parameter, the response MUST be sent to the address in the "received" parameter, using
    // the port indicated in the "sent-by" value, or using port 5060 if none is specified
    // explicitly." RFC 3581 §4: "the response MUST be sent to the IP address listed in the
    // "received" parameter, and the port in the "rport" parameter."
    let ip = via.received().and_then(parse_ip).or(match &via.host {
        Host::Ipv4(a) => Some(IpAddr::V4(*a)),
        h @ Host::Ipv6(_) => h.ipv6_addr().map(IpAddr::V6),
        Host::Domain(_) => None,
    });
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port.unwrap_or(default_port),
    };
    SocketAddr::new(ip.unwrap_or(source.ip()), port)
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// `headers` with the first Via value replaced by `via` (the rest of that line's comma list and
/// every other line kept as they were).
fn replace_top_via(headers: &Headers, via: &Via) -> Headers {
    let mut out = Headers::with_capacity(headers.len());
    let mut done = false;
    for h in headers {
        if !done && h.name.matches(&HeaderName::Via) {
            done = true;
            let rest = &h.value[crate::transaction::first_via_end(&h.value)..];
            let mut value = BytesMut::new();
            value.extend_from_slice(via.to_string().as_bytes());
            value.extend_from_slice(rest);
            out.push_header(Header {
                name: HeaderName::Via,
                raw_name: h.raw_name.clone(),
                value: value.freeze(),
            });
        } else {
            out.push_header(h.clone());
        }
    }
    out
}

/// The CANCEL for an INVITE (§9.1): "The Request-URI, Call-ID, To, the numeric part of CSeq, and
/// From header fields in the CANCEL request MUST be identical to those in the request being
/// cancelled, including tags. A CANCEL constructed by a client MUST have only a single Via header
/// field value matching the top Via value in the request being cancelled. ... If the request
/// being cancelled contains a Route header field, the CANCEL request MUST include that Route
/// header field's values."
pub fn build_cancel(invite: &Request) -> Request {
    let mut headers = Headers::with_capacity(8);
    if let Some(via) = invite.headers.get(&HeaderName::Via) {
        headers.push(HeaderName::Via, crate::transaction::first_via_element(via));
    }
    for route in invite.headers.get_all(&HeaderName::Route) {
        headers.push(HeaderName::Route, route.clone());
    }
    headers.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
    for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
        if let Some(v) = invite.headers.get(&name) {
            headers.push(name, v.clone());
        }
    }
    if let Ok(cseq) = invite.headers.cseq() {
        headers.push(HeaderName::CSeq, format!("{} CANCEL", cseq.seq));
    }
    Request {
        method: Method::Cancel,
        uri: invite.uri.clone(),
        headers,
        body: Bytes::new(),
    }
}
