//! The SIP transport driver: one tokio task that owns the sans-IO [`Endpoint`] and its sockets.
//!
//! # Shape
//! [`SipTransport::bind`] binds the configured UDP socket and TCP listener (port 0 works; the
//! bound addresses are reported) and spawns the driver task. The task waits in one `select!` on:
//! - the command channel (bounded) fed by the clone-able [`SipHandle`];
//! - the next transaction deadline ([`Endpoint::poll_timeout`], slept with `sleep_until`);
//! - a UDP datagram (up to 65535 bytes, the largest a UDP datagram can be);
//! - a new TCP connection from the listener;
//! - a frame from one of the TCP connections.
//!
//! It feeds that one input to the endpoint, then drains [`Endpoint::poll_output`]: a
//! [`Transmit`] is sent on the UDP socket or on the right TCP connection, an [`EndpointEvent`] is
//! queued for the application's [`SipEvent`] channel. Then it sleeps again.
//!
//! # TCP
//! Every TCP connection (accepted, or opened on demand for a request to a TCP destination) is
//! its own task. It cuts the byte stream into messages with [`StreamFramer`] and forwards each
//! frame to the driver over one bounded channel shared by all connections; the driver writes to
//! a connection through that connection's own bounded channel. Connections are found by the
//! peer's address: a response to a request that came in over TCP goes back over the connection
//! it came in on (RFC 3261 §18.2.2: "the response MUST be sent using the existing connection to
//! the source of the original request"), because the endpoint addresses that response to the
//! request's source. When no connection to a destination exists (a request, or a response whose
//! connection closed: "If that connection is no longer open, the server SHOULD open a
//! connection to the IP address in the "received" parameter") one is opened. A failed connect
//! or write is reported to the endpoint as a transport error of the transactions that sent the
//! lost messages.
//!
//! # TLS
//! SIP over TLS (RFC 3261 §26.2) runs on the same connection tasks as TCP, with a rustls
//! session around the stream ([`crate::net::tls`]). A TLS listener (`SipConfig::tls`) accepts
//! connections and completes the handshake in the connection's task, bounded by
//! [`TlsContext::handshake_timeout`]. Outbound, a request sent with a server name
//! ([`SipHandle::send_request_named`]) goes over a connection to that address verified for
//! that name: connections are reused per (address, server name), and a request without one
//! reuses any TLS connection to the address (the one its INVITE went over, or one the peer
//! opened to us) or opens one verified against the IP address. A handshake that fails (unknown
//! CA, wrong name, timeout) fails the connection: the transactions whose messages waited on it
//! get a transport error at once, and the events this causes carry the TLS error as their
//! [`SipEvent::detail`] (`TLS: invalid peer certificate: UnknownIssuer`).
//!
//! # Backpressure
//! The application's event channel is bounded. When it is full the driver keeps the events in
//! order in a local queue and STOPS READING its sockets until the application has taken them:
//! datagrams wait in (and, past its size, are dropped by) the kernel's socket buffer, TCP
//! connections are throttled by their own flow control, and SIP's retransmissions recover what
//! was dropped. Commands and timers are still served meanwhile, so an application that awaits
//! a command reply before it reads its next event cannot deadlock the driver. No event is ever
//! dropped while the application holds the receiver; once it has dropped the receiver, events
//! are discarded and counted ([`SipStats::events_discarded`]).
//!
//! # Errors
//! A datagram that does not parse never ends the task: the endpoint counts it (and answers 400
//! when it can). Socket errors on receive are logged and the loop goes on. The task ends on
//! [`SipHandle::shutdown`] or when every [`SipHandle`] has been dropped.

use std::collections::{BTreeMap, VecDeque};
use std::future::pending;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ::sip::endpoint::{
    Endpoint, EndpointConfig, EndpointError, EndpointEvent, EndpointOutput, EndpointStats, Transmit,
};
use ::sip::message::validate::ValidateConfig;
use ::sip::message::{Message, Request, Response};
use ::sip::transaction::{TimerConfig, TransactionKey, Transport};
use ::sip::transport::{DEFAULT_MAX_MESSAGE_SIZE, Framed, StreamFramer};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant as TokioInstant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::net::tls::{self, TlsContext};

use super::inbound::{InboundLimits, SourceLimiter, trusts_destination};

/// The largest UDP payload there is (the IPv4 length field is 16 bits).
pub const MAX_DATAGRAM: usize = 65_535;

/// Settings of a [`SipTransport`].
#[derive(Debug, Clone)]
pub struct SipConfig {
    /// Where to bind the UDP socket (`None`: no UDP). Port 0 picks a free port.
    pub udp: Option<SocketAddr>,
    /// Where to bind the TCP listener (`None`: accept no TCP; outgoing TCP still works).
    pub tcp: Option<SocketAddr>,
    /// Where to bind the TLS listener (`None`: accept no TLS; outgoing TLS still works when
    /// `tls_context` is set). Needs `tls_context` with a server certificate.
    pub tls: Option<SocketAddr>,
    /// How TLS connects and accepts (`None`: no TLS at all: a TLS send is refused).
    pub tls_context: Option<TlsContext>,
    /// Mixed into every branch and tag the endpoint makes (draw it from a random source).
    pub seed: u64,
    /// T1, T2, T4.
    pub timers: TimerConfig,
    /// What the request validator accepts.
    pub validate: ValidateConfig,
    /// Capacity of the application's event channel.
    pub event_capacity: usize,
    /// Capacity of the command channel.
    pub command_capacity: usize,
    /// Capacity of each TCP connection's write queue; a message that does not fit is a
    /// transport error of its transaction (the peer is not reading).
    pub connection_queue: usize,
    /// How long an outgoing TCP connect may take.
    pub connect_timeout: Duration,
    /// The largest SIP message accepted on a TCP connection.
    pub max_stream_message: usize,
    /// Copy the first line, Call-ID and CSeq of every message sent and received here
    /// (`callplane probe`'s ladders); `None`: no copies.
    pub trace: Option<SipTrace>,
    /// The per-source rate limit on inbound messages ([`super::inbound`]).
    pub inbound: InboundLimits,
}

impl Default for SipConfig {
    fn default() -> SipConfig {
        SipConfig {
            udp: None,
            tcp: None,
            tls: None,
            tls_context: None,
            seed: 0,
            timers: TimerConfig::default(),
            validate: ValidateConfig::default(),
            event_capacity: 1024,
            command_capacity: 1024,
            connection_queue: 256,
            connect_timeout: Duration::from_secs(5),
            max_stream_message: DEFAULT_MAX_MESSAGE_SIZE,
            trace: None,
            inbound: InboundLimits::default(),
        }
    }
}

/// Which way a traced message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceDirection {
    /// We sent it.
    Out,
    /// We received it.
    In,
}

/// One traced SIP message: what a ladder diagram shows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    /// When the driver sent or read it (monotonic).
    pub at: std::time::Instant,
    /// Sent or received.
    pub direction: TraceDirection,
    /// The other end.
    pub peer: SocketAddr,
    /// `INVITE` (a request's method) or `200 OK` (a response's status and reason).
    pub first: String,
    /// The Call-ID (empty when it has none).
    pub call_id: String,
    /// The CSeq value (`1 INVITE`; empty when it has none).
    pub cseq: String,
}

/// A bounded copy of the SIP messages a driver sends and receives (every datagram and stream
/// message, retransmissions included), for `callplane probe`. Clone-able: the driver appends,
/// the reader copies lines out with [`SipTrace::lines_for`]. Past `capacity` lines new ones are counted, not kept.
#[derive(Debug, Clone)]
pub struct SipTrace {
    inner: std::sync::Arc<std::sync::Mutex<TraceBuf>>,
}

#[derive(Debug, Default)]
struct TraceBuf {
    lines: Vec<TraceLine>,
    capacity: usize,
    dropped: u64,
}

impl SipTrace {
    /// A trace keeping at most `capacity` lines.
    pub fn new(capacity: usize) -> SipTrace {
        SipTrace {
            inner: std::sync::Arc::new(std::sync::Mutex::new(TraceBuf {
                capacity,
                ..TraceBuf::default()
            })),
        }
    }

    /// The lines so far with this Call-ID, in order (they stay in the trace).
    pub fn lines_for(&self, call_id: &str) -> Vec<TraceLine> {
        self.lock()
            .lines
            .iter()
            .filter(|l| l.call_id == call_id)
            .cloned()
            .collect()
    }

    /// Lines not kept because the trace was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TraceBuf> {
        // Held for one push or one copy; a poisoned lock still holds valid lines.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Record one message (its raw bytes; only the start line and two headers are read).
    fn record(&self, direction: TraceDirection, peer: SocketAddr, bytes: &[u8]) {
        let mut buf = self.lock();
        if buf.lines.len() >= buf.capacity {
            buf.dropped += 1;
            return;
        }
        let Some(line) = trace_line(direction, peer, bytes) else {
            return;
        };
        buf.lines.push(line);
    }
}

/// The ladder view of a raw message: its start line, Call-ID and CSeq (first 4 KiB read).
fn trace_line(direction: TraceDirection, peer: SocketAddr, bytes: &[u8]) -> Option<TraceLine> {
    let head = &bytes[..bytes.len().min(4096)];
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let start = lines.next()?.trim();
    if start.is_empty() {
        return None; // a keep-alive
    }
    let first = match start.strip_prefix("SIP/2.0 ") {
        Some(status) => status.to_owned(),
        None => start.split(' ').next().unwrap_or_default().to_owned(),
    };
    let (mut call_id, mut cseq) = (String::new(), String::new());
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i") {
            call_id = value.trim().to_owned();
        } else if name.eq_ignore_ascii_case("cseq") {
            cseq = value.trim().to_owned();
        }
    }
    let cut = |mut s: String| {
        if s.len() > 120 {
            let mut end = 120;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        s
    };
    Some(TraceLine {
        at: now(),
        direction,
        peer,
        first: cut(first),
        call_id: cut(call_id),
        cseq: cut(cseq),
    })
}

/// Why the transport could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Binding a socket failed.
    #[error("cannot bind SIP {transport} on {addr}: {source}")]
    Bind {
        /// Which socket.
        transport: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The driver task has ended (shut down, or every handle dropped).
    #[error("the SIP transport has shut down")]
    Closed,
    /// The endpoint refused the command.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// No socket for that transport (UDP not bound, TLS not configured, or SCTP/WS, which
    /// this driver lacks).
    #[error("no {0} transport available")]
    NoTransport(&'static str),
    /// A TLS listener was asked for without a certificate and key.
    #[error("the SIP TLS listener on {0} needs a certificate and key (--tls-cert, --tls-key)")]
    TlsWithoutCertificate(SocketAddr),
    /// The server name of a TLS send is not a DNS name or an IP address.
    #[error("{0}")]
    TlsServerName(String),
}

/// An endpoint event, as the application receives it.
#[derive(Debug, Clone)]
pub struct SipEvent {
    /// When the driver read the input that caused it (monotonic clock).
    pub at: std::time::Instant,
    /// What happened. Requests carry their source address and transport.
    pub event: EndpointEvent,
    /// For a transport error caused by a failed connection: why it failed (a TLS handshake
    /// error names the certificate problem, `TLS: invalid peer certificate: UnknownIssuer`).
    pub detail: Option<std::sync::Arc<str>>,
}

/// Where the driver listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddrs {
    /// The bound UDP address.
    pub udp: Option<SocketAddr>,
    /// The bound TCP listener address.
    pub tcp: Option<SocketAddr>,
    /// The bound TLS listener address.
    pub tls: Option<SocketAddr>,
}

/// Counters of the driver and of its endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SipStats {
    /// The endpoint's own counters (parsed, malformed, stray responses, ...).
    pub endpoint: EndpointStats,
    /// Live client transactions.
    pub client_transactions: usize,
    /// Live server transactions.
    pub server_transactions: usize,
    /// Requests handed to the application, by method (retransmissions absorbed by a
    /// transaction are not counted: this is one per server transaction, plus ACKs for 2xx).
    pub requests_in: BTreeMap<String, u64>,
    /// Requests the application sent, by method (transactions and stateless ACKs; a
    /// transaction's retransmissions count once).
    pub requests_out: BTreeMap<String, u64>,
    /// Responses handed to the application, by status code.
    pub responses_in: BTreeMap<u16, u64>,
    /// Responses the application sent, by status code (the endpoint's own automatic answers,
    /// such as 100 Trying or 400 to a malformed request, are not counted).
    pub responses_out: BTreeMap<u16, u64>,
    /// UDP datagrams received.
    pub datagrams_in: u64,
    /// UDP datagrams sent.
    pub datagrams_out: u64,
    /// Messages sent over TCP (queued to a connection).
    pub stream_messages_out: u64,
    /// Messages that could not be sent (socket error, no connection, full queue).
    pub send_errors: u64,
    /// TCP connections accepted.
    pub tcp_accepted: u64,
    /// TCP connections opened by us.
    pub tcp_connected: u64,
    /// TCP and TLS connections open now.
    pub tcp_open: usize,
    /// TLS connections accepted (handshake completed).
    pub tls_accepted: u64,
    /// TLS connections opened by us (handshake completed).
    pub tls_connected: u64,
    /// TLS handshakes that failed (either direction; timeouts included).
    pub tls_handshake_failures: u64,
    /// Events discarded because the application dropped its event receiver.
    pub events_discarded: u64,
    /// Inbound messages dropped by the inbound protection, by reason: `rate_limit` (the
    /// source was over its rate, [`super::inbound`]); the engine adds its own reasons
    /// (`half_open`...) when it reports these stats.
    pub dropped: BTreeMap<String, u64>,
}

#[derive(Debug)]
enum Command {
    SendRequest {
        request: Request,
        destination: SocketAddr,
        transport: Transport,
        server_name: Option<String>,
        reply: oneshot::Sender<Result<TransactionKey, NetError>>,
    },
    SendResponse {
        key: TransactionKey,
        response: Response,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    SendResponseStateless {
        key: TransactionKey,
        response: Response,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    SendStateless {
        message: Box<Message>,
        destination: SocketAddr,
        transport: Transport,
        server_name: Option<String>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Cancel {
        key: TransactionKey,
        reply: oneshot::Sender<Result<TransactionKey, NetError>>,
    },
    Stats {
        reply: oneshot::Sender<SipStats>,
    },
    HasStream {
        peer: SocketAddr,
        tls: bool,
        reply: oneshot::Sender<bool>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// The application's side of the driver: a clone-able command sender.
#[derive(Debug, Clone)]
pub struct SipHandle {
    commands: mpsc::Sender<Command>,
    local: LocalAddrs,
}

impl SipHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Closed)?;
        rx.await.map_err(|_| NetError::Closed)
    }

    /// Where the driver listens.
    pub fn local_addrs(&self) -> LocalAddrs {
        self.local
    }

    /// Start a client transaction for `request` (anything but ACK) to `destination`; returns
    /// its key. The request needs its top Via (a branch is added when it has none). Over TCP a
    /// connection is opened when none to `destination` exists.
    pub async fn send_request(
        &self,
        request: Request,
        destination: SocketAddr,
        transport: Transport,
    ) -> Result<TransactionKey, NetError> {
        self.send_request_named(request, destination, transport, None)
            .await
    }

    /// [`SipHandle::send_request`] with the TLS server name to verify the peer's certificate
    /// against (and send as SNI) when a new TLS connection has to be opened; TLS connections
    /// are reused per (destination, server name). Ignored for other transports. `None`: any
    /// TLS connection to `destination`, or a new one verified against its IP address.
    pub async fn send_request_named(
        &self,
        request: Request,
        destination: SocketAddr,
        transport: Transport,
        server_name: Option<String>,
    ) -> Result<TransactionKey, NetError> {
        self.call(|reply| Command::SendRequest {
            request,
            destination,
            transport,
            server_name,
            reply,
        })
        .await?
    }

    /// Answer the server transaction `key` (the caller adds the To tag).
    pub async fn send_response(
        &self,
        key: TransactionKey,
        response: Response,
    ) -> Result<(), NetError> {
        self.call(|reply| Command::SendResponse {
            key,
            response,
            reply,
        })
        .await?
    }

    /// Answer the server transaction `key` with a final response sent once and forget the
    /// transaction ([`Endpoint::send_response_stateless`]): for overload replies, which must
    /// cost no state and are not retransmitted.
    pub async fn send_response_stateless(
        &self,
        key: TransactionKey,
        response: Response,
    ) -> Result<(), NetError> {
        self.call(|reply| Command::SendResponseStateless {
            key,
            response,
            reply,
        })
        .await?
    }

    /// Send a message outside any transaction: the ACK for a 2xx (RFC 3261 §13.2.2.4), or a
    /// 2xx retransmitted by the UAS core.
    pub async fn send_stateless(
        &self,
        message: Message,
        destination: SocketAddr,
        transport: Transport,
    ) -> Result<(), NetError> {
        self.send_stateless_named(message, destination, transport, None)
            .await
    }

    /// [`SipHandle::send_stateless`] with a TLS server name (see
    /// [`SipHandle::send_request_named`]).
    pub async fn send_stateless_named(
        &self,
        message: Message,
        destination: SocketAddr,
        transport: Transport,
        server_name: Option<String>,
    ) -> Result<(), NetError> {
        self.call(|reply| Command::SendStateless {
            message: Box::new(message),
            destination,
            transport,
            server_name,
            reply,
        })
        .await?
    }

    /// Cancel the INVITE client transaction `key` (RFC 3261 §9.1); returns the CANCEL's key.
    pub async fn cancel(&self, key: TransactionKey) -> Result<TransactionKey, NetError> {
        self.call(|reply| Command::Cancel { key, reply }).await?
    }

    /// The counters.
    pub async fn stats(&self) -> Result<SipStats, NetError> {
        self.call(|reply| Command::Stats { reply }).await
    }

    /// Whether a TCP (`Transport::Tcp`) or TLS (`Transport::Tls`) connection with `peer` is
    /// open now (either direction). For other transports: `false`.
    pub async fn has_stream(&self, peer: SocketAddr, transport: Transport) -> bool {
        let tls = match transport {
            Transport::Tcp => false,
            Transport::Tls => true,
            _ => return false,
        };
        self.call(|reply| Command::HasStream { peer, tls, reply })
            .await
            .unwrap_or(false)
    }

    /// Stop the driver: close the sockets and every TCP connection. Returns when it has
    /// stopped (or at once if it already had).
    pub async fn shutdown(&self) {
        // Err means the driver is gone already: that is what was asked for.
        let _ = self.call(|reply| Command::Shutdown { reply }).await;
    }
}

/// A running SIP transport: the handle, the event receiver and the driver task.
#[derive(Debug)]
pub struct SipTransport {
    /// Send commands.
    pub handle: SipHandle,
    /// Receive events. See the module documentation for what happens when it is full.
    pub events: mpsc::Receiver<SipEvent>,
    task: JoinHandle<()>,
}

impl SipTransport {
    /// Bind the configured sockets and spawn the driver on the current tokio runtime.
    pub async fn bind(config: SipConfig) -> Result<SipTransport, NetError> {
        let udp = match config.udp {
            Some(addr) => Some(
                UdpSocket::bind(addr)
                    .await
                    .map_err(|source| NetError::Bind {
                        transport: "UDP",
                        addr,
                        source,
                    })?,
            ),
            None => None,
        };
        let tcp = match config.tcp {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| NetError::Bind {
                        transport: "TCP",
                        addr,
                        source,
                    })?,
            ),
            None => None,
        };
        let tls_listener = match config.tls {
            Some(addr) => {
                if config
                    .tls_context
                    .as_ref()
                    .and_then(|c| c.server.as_ref())
                    .is_none()
                {
                    return Err(NetError::TlsWithoutCertificate(addr));
                }
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| NetError::Bind {
                            transport: "TLS",
                            addr,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let bound = |r: io::Result<SocketAddr>, transport, addr| {
            r.map_err(|source| NetError::Bind {
                transport,
                addr,
                source,
            })
        };
        let local = LocalAddrs {
            udp: match (&udp, config.udp) {
                (Some(s), Some(a)) => Some(bound(s.local_addr(), "UDP", a)?),
                _ => None,
            },
            tcp: match (&tcp, config.tcp) {
                (Some(s), Some(a)) => Some(bound(s.local_addr(), "TCP", a)?),
                _ => None,
            },
            tls: match (&tls_listener, config.tls) {
                (Some(s), Some(a)) => Some(bound(s.local_addr(), "TLS", a)?),
                _ => None,
            },
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(config.command_capacity.max(1));
        let (ev_tx, ev_rx) = mpsc::channel(config.event_capacity.max(1));
        let (conn_tx, conn_rx) = mpsc::channel(1024);
        let endpoint = Endpoint::new(EndpointConfig {
            timers: config.timers,
            validate: config.validate.clone(),
            seed: config.seed,
        });
        let driver = Driver {
            endpoint,
            udp,
            tcp,
            tls: tls_listener,
            commands: cmd_rx,
            events: ev_tx,
            pending: VecDeque::new(),
            conn_tx,
            conn_rx,
            conns: BTreeMap::new(),
            next_conn: 0,
            tls_hint: None,
            failure: None,
            stats: SipStats::default(),
            limiter: SourceLimiter::new(config.inbound.clone()),
            config,
        };
        let task = tokio::spawn(driver.run());
        Ok(SipTransport {
            handle: SipHandle {
                commands: cmd_tx,
                local,
            },
            events: ev_rx,
            task,
        })
    }

    /// Where the driver listens.
    pub fn local_addrs(&self) -> LocalAddrs {
        self.handle.local
    }

    /// Shut the driver down and wait for its task to end.
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
        // A JoinError here means the task panicked or was aborted: it has ended either way.
        let _ = self.task.await;
    }
}

/// What a connection task tells the driver.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "almost every event is a Frame, moved once to the driver; boxing it would cost an allocation per message"
)]
enum ConnEvent {
    /// One frame cut from the stream.
    Frame {
        peer: SocketAddr,
        tls: bool,
        frame: Framed,
    },
    /// The connection ended; `undelivered` are the transactions whose messages were not
    /// written (connect failed, handshake failed, write failed), `error` why it could not be
    /// used when it never was (connect or handshake).
    Closed {
        id: u64,
        key: ConnKey,
        undelivered: Vec<TransactionKey>,
        error: Option<String>,
    },
    /// A TLS handshake completed (`outbound`: we connected).
    Handshake { outbound: bool },
}

/// How the driver finds a stream connection: the peer, whether it is TLS, and for TLS
/// connections we opened the server name they were verified for (`None` for accepted ones and
/// for those verified against the IP address). Ordered so that all connections to one peer
/// over one transport are adjacent, the unnamed one first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ConnKey {
    peer: SocketAddr,
    tls: bool,
    name: Option<String>,
}

/// One queued write: the bytes and the transaction that sent them.
type Outgoing = (Bytes, Option<TransactionKey>);

#[derive(Debug)]
struct Conn {
    id: u64,
    tx: mpsc::Sender<Outgoing>,
}

#[derive(Debug)]
struct Driver {
    endpoint: Endpoint,
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    tls: Option<TcpListener>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<SipEvent>,
    /// Events the application's channel had no room for yet (in order).
    pending: VecDeque<SipEvent>,
    conn_tx: mpsc::Sender<ConnEvent>,
    conn_rx: mpsc::Receiver<ConnEvent>,
    conns: BTreeMap<ConnKey, Conn>,
    next_conn: u64,
    /// The TLS server name of the command being served, for the transmits it causes.
    tls_hint: Option<(SocketAddr, String)>,
    /// Why the connection whose loss is being reported failed, for the events it causes.
    failure: Option<std::sync::Arc<str>>,
    stats: SipStats,
    /// The per-source rate limit, applied before parsing.
    limiter: SourceLimiter,
    config: SipConfig,
}

/// The clock, read here and only here for SIP: the endpoint takes `std::time::Instant`s.
fn now() -> std::time::Instant {
    TokioInstant::now().into_std()
}

async fn recv_udp(sock: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => pending().await,
    }
}

async fn accept_tcp(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => pending().await,
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(TokioInstant::from_std(at)).await,
        None => pending().await,
    }
}

impl Driver {
    async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let deadline = self.endpoint.poll_timeout();
            // Backpressure: no new socket input while the application has not taken the
            // events already produced (see the module documentation).
            let reading = self.pending.is_empty();
            tokio::select! {
                // Commands first: they free the application, which may be what unblocks the
                // event channel.
                biased;
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.close();
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    // Every handle is gone: nobody can send or stop us any more.
                    None => {
                        self.close();
                        return;
                    }
                },
                // Wait for room; the permit is released at once and `flush_events` takes it
                // again (the driver is the only sender, so the room cannot vanish meanwhile).
                room = async { self.events.reserve().await.map(drop) }, if !reading => match room {
                    Ok(()) => self.flush_events(),
                    Err(_) => {
                        self.stats.events_discarded += self.pending.len() as u64;
                        self.pending.clear();
                    }
                },
                () = sleep_until(deadline) => self.endpoint.handle_timeout(now()),
                r = recv_udp(self.udp.as_ref(), &mut buf), if reading => match r {
                    Ok((n, source)) => {
                        self.stats.datagrams_in += 1;
                        // Before parsing: a flood costs a lookup per datagram, no more.
                        if self.limiter.admit(now(), source.ip()) {
                            let bytes = Bytes::copy_from_slice(&buf[..n]);
                            if let Some(trace) = &self.config.trace {
                                trace.record(TraceDirection::In, source, &bytes);
                            }
                            self.endpoint.handle_datagram(now(), source, Transport::Udp, bytes);
                        } else {
                            self.count_dropped("rate_limit");
                        }
                    }
                    // E.g. ECONNREFUSED from an earlier ICMP port unreachable: not fatal.
                    Err(e) => tracing::debug!(error = %e, "SIP UDP receive error"),
                },
                r = accept_tcp(self.tcp.as_ref()), if reading => match r {
                    Ok((stream, peer)) => {
                        self.stats.tcp_accepted += 1;
                        self.start_connection(peer, false, None, ConnStart::Accepted(stream));
                    }
                    Err(e) => {
                        // EMFILE and friends: log, and do not spin on them.
                        tracing::warn!(error = %e, "SIP TCP accept error");
                        tokio::task::yield_now().await;
                    }
                },
                r = accept_tcp(self.tls.as_ref()), if reading => match r {
                    Ok((stream, peer)) => {
                        self.start_connection(peer, true, None, ConnStart::Accepted(stream));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "SIP TLS accept error");
                        tokio::task::yield_now().await;
                    }
                },
                ev = self.conn_rx.recv(), if reading => {
                    // `self` holds a sender, so the channel never closes while we run.
                    if let Some(ev) = ev {
                        self.on_conn_event(ev);
                    }
                }
            }
            self.drain().await;
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::SendRequest {
                request,
                destination,
                transport,
                server_name,
                reply,
            } => {
                let method = request.method.as_str().to_owned();
                let result = self.check_transport(transport).and_then(|()| {
                    self.set_tls_hint(destination, transport, server_name)?;
                    self.endpoint
                        .send_request(now(), request, destination, transport)
                        .map_err(NetError::from)
                });
                if result.is_ok() {
                    *self.stats.requests_out.entry(method).or_insert(0) += 1;
                }
                let _ = reply.send(result);
            }
            Command::SendResponse {
                key,
                response,
                reply,
            } => {
                let status = response.status.as_u16();
                let result = self
                    .endpoint
                    .send_response(now(), &key, response)
                    .map_err(NetError::from);
                if result.is_ok() {
                    *self.stats.responses_out.entry(status).or_insert(0) += 1;
                }
                let _ = reply.send(result);
            }
            Command::SendResponseStateless {
                key,
                response,
                reply,
            } => {
                let status = response.status.as_u16();
                let result = self
                    .endpoint
                    .send_response_stateless(&key, response)
                    .map_err(NetError::from);
                if result.is_ok() {
                    *self.stats.responses_out.entry(status).or_insert(0) += 1;
                }
                let _ = reply.send(result);
            }
            Command::SendStateless {
                message,
                destination,
                transport,
                server_name,
                reply,
            } => {
                let result = self.check_transport(transport).and_then(|()| {
                    self.set_tls_hint(destination, transport, server_name)?;
                    self.endpoint
                        .send_stateless(destination, transport, &message);
                    Ok(())
                });
                if result.is_ok() {
                    match &*message {
                        Message::Request(r) => {
                            *self
                                .stats
                                .requests_out
                                .entry(r.method.as_str().to_owned())
                                .or_insert(0) += 1;
                        }
                        Message::Response(r) => {
                            *self
                                .stats
                                .responses_out
                                .entry(r.status.as_u16())
                                .or_insert(0) += 1;
                        }
                    }
                }
                let _ = reply.send(result);
            }
            Command::Cancel { key, reply } => {
                let result = self.endpoint.cancel(now(), &key).map_err(NetError::from);
                let _ = reply.send(result);
            }
            Command::Stats { reply } => {
                let mut stats = self.stats.clone();
                stats.endpoint = self.endpoint.stats().clone();
                (stats.client_transactions, stats.server_transactions) =
                    self.endpoint.transaction_count();
                stats.tcp_open = self.conns.len();
                let _ = reply.send(stats);
            }
            Command::HasStream { peer, tls, reply } => {
                let _ = reply.send(self.find_conn(peer, tls, None).is_some());
            }
            // Handled in the loop, which has to return.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn check_transport(&self, transport: Transport) -> Result<(), NetError> {
        match transport {
            Transport::Udp if self.udp.is_some() => Ok(()),
            Transport::Udp => Err(NetError::NoTransport("UDP")),
            Transport::Tcp => Ok(()),
            Transport::Tls if self.config.tls_context.is_some() => Ok(()),
            other => Err(NetError::NoTransport(other.as_str())),
        }
    }

    /// Remember the server name of a TLS send for the transmits it causes (taken in
    /// `transmit`, cleared after the drain that follows the command).
    fn set_tls_hint(
        &mut self,
        destination: SocketAddr,
        transport: Transport,
        server_name: Option<String>,
    ) -> Result<(), NetError> {
        self.tls_hint = None;
        if transport != Transport::Tls {
            return Ok(());
        }
        if let Some(name) = server_name {
            tls::server_name(&name).map_err(NetError::TlsServerName)?;
            self.tls_hint = Some((destination, name));
        }
        Ok(())
    }

    fn on_conn_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Frame { peer, frame, .. }
                if matches!(frame, Framed::Message(_) | Framed::Invalid { .. })
                    && !self.limiter.admit(now(), peer.ip()) =>
            {
                self.count_dropped("rate_limit");
            }
            ConnEvent::Frame { peer, tls, frame } => {
                let transport = if tls { Transport::Tls } else { Transport::Tcp };
                match frame {
                    Framed::Message(m) => {
                        if let Some(trace) = &self.config.trace {
                            trace.record(TraceDirection::In, peer, &m.to_bytes());
                        }
                        self.endpoint.handle_message(now(), peer, transport, m)
                    }
                    Framed::Invalid { data, error } => self
                        .endpoint
                        .handle_unparseable(peer, transport, &data, &error),
                    // RFC 5626 §3.5.1: a double-CRLF ping is answered with a single-CRLF pong.
                    Framed::Ping => {
                        if let Some(c) = self
                            .find_conn(peer, tls, None)
                            .and_then(|k| self.conns.get(&k))
                        {
                            let _ = c.tx.try_send((Bytes::from_static(b"\r\n"), None));
                        }
                    }
                    Framed::Pong => {}
                }
            }
            ConnEvent::Handshake { outbound } => {
                if outbound {
                    self.stats.tls_connected += 1;
                } else {
                    self.stats.tls_accepted += 1;
                }
            }
            ConnEvent::Closed {
                id,
                key,
                undelivered,
                error,
            } => {
                // Only forget the connection if it is this one (a newer one may have replaced it).
                if self.conns.get(&key).is_some_and(|c| c.id == id) {
                    self.conns.remove(&key);
                }
                if key.tls && error.as_deref().is_some_and(|e| e.starts_with("TLS")) {
                    self.stats.tls_handshake_failures += 1;
                }
                self.failure = error.map(std::sync::Arc::from);
                let now = now();
                for key in undelivered {
                    self.stats.send_errors += 1;
                    self.endpoint.handle_transport_error(now, &key);
                }
            }
        }
    }

    /// The connection a message to `peer` goes over: the one verified for `name` when given,
    /// else any to `peer` over that transport (the unnamed one first).
    fn find_conn(&self, peer: SocketAddr, tls: bool, name: Option<&str>) -> Option<ConnKey> {
        let probe = ConnKey {
            peer,
            tls,
            name: name.map(str::to_owned),
        };
        if name.is_some() {
            return self.conns.contains_key(&probe).then_some(probe);
        }
        self.conns
            .range(probe..)
            .next()
            .map(|(k, _)| k)
            .filter(|k| k.peer == peer && k.tls == tls)
            .cloned()
    }

    /// Send what the endpoint asks to send and queue its events, until it has nothing left.
    async fn drain(&mut self) {
        while let Some(out) = self.endpoint.poll_output() {
            match out {
                EndpointOutput::Transmit(t) => self.transmit(t).await,
                EndpointOutput::Event(event) => {
                    if let Some(method) = request_method(&event) {
                        *self.stats.requests_in.entry(method).or_insert(0) += 1;
                    }
                    if let EndpointEvent::Response { response, .. } = &event {
                        *self
                            .stats
                            .responses_in
                            .entry(response.status.as_u16())
                            .or_insert(0) += 1;
                    }
                    let detail = match &event {
                        EndpointEvent::TransportError { .. } => self.failure.clone(),
                        _ => None,
                    };
                    self.pending.push_back(SipEvent {
                        at: now(),
                        event,
                        detail,
                    });
                }
            }
        }
        self.tls_hint = None;
        self.failure = None;
        self.flush_events();
    }

    /// Hand queued events to the application as far as its channel has room.
    fn flush_events(&mut self) {
        while !self.pending.is_empty() {
            match self.events.try_reserve() {
                Ok(permit) => {
                    if let Some(ev) = self.pending.pop_front() {
                        permit.send(ev);
                    }
                }
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    self.stats.events_discarded += self.pending.len() as u64;
                    self.pending.clear();
                }
            }
        }
    }

    fn count_dropped(&mut self, reason: &str) {
        match self.stats.dropped.get_mut(reason) {
            Some(n) => *n += 1,
            None => {
                self.stats.dropped.insert(reason.to_owned(), 1);
            }
        }
    }

    async fn transmit(&mut self, t: Transmit) {
        if let Some(trace) = &self.config.trace {
            trace.record(TraceDirection::Out, t.destination, &t.bytes);
        }
        // What we send to a peer (a request, an INVITE 2xx) exempts its answers and its
        // in-dialog requests from the rate limit.
        if trusts_destination(&t.bytes) {
            self.limiter.trust(now(), t.destination.ip());
        }
        match t.transport {
            Transport::Udp => {
                let Some(sock) = &self.udp else {
                    self.send_failed(t.key);
                    return;
                };
                match sock.send_to(&t.bytes, t.destination).await {
                    Ok(_) => self.stats.datagrams_out += 1,
                    Err(e) => {
                        tracing::debug!(error = %e, to = %t.destination, "SIP UDP send error");
                        self.send_failed(t.key);
                    }
                }
            }
            Transport::Tcp | Transport::Tls => {
                let tls = t.transport == Transport::Tls;
                if tls && self.config.tls_context.is_none() {
                    self.send_failed(t.key);
                    return;
                }
                let name = match &self.tls_hint {
                    Some((to, name)) if tls && *to == t.destination => Some(name.clone()),
                    _ => None,
                };
                let key = match self.find_conn(t.destination, tls, name.as_deref()) {
                    Some(key) => key,
                    None => {
                        if !tls {
                            self.stats.tcp_connected += 1;
                        }
                        self.start_connection(t.destination, tls, name, ConnStart::Connect)
                    }
                };
                let conn = self
                    .conns
                    .get(&key)
                    .expect("a connection was just registered for this destination");
                match conn.tx.try_send((t.bytes, t.key)) {
                    Ok(()) => self.stats.stream_messages_out += 1,
                    // Full: the peer is not reading; closed: the connection just ended (its
                    // Closed event may still be on the way). Either way the message is lost.
                    Err(e) => {
                        let (_, key) = e.into_inner();
                        self.send_failed(key);
                    }
                }
            }
            // Commands refuse these transports, and the endpoint only answers over the
            // transport a request came in on.
            _ => self.send_failed(t.key),
        }
    }

    fn send_failed(&mut self, key: Option<TransactionKey>) {
        self.stats.send_errors += 1;
        if let Some(key) = key {
            self.endpoint.handle_transport_error(now(), &key);
        }
    }

    /// Register a connection under its key and spawn its task; returns the key.
    fn start_connection(
        &mut self,
        peer: SocketAddr,
        tls: bool,
        name: Option<String>,
        start: ConnStart,
    ) -> ConnKey {
        let id = self.next_conn;
        self.next_conn += 1;
        let (tx, rx) = mpsc::channel(self.config.connection_queue.max(1));
        let key = ConnKey { peer, tls, name };
        self.conns.insert(key.clone(), Conn { id, tx });
        let security = if tls {
            let ctx = self
                .config
                .tls_context
                .as_ref()
                .expect("TLS connections exist only when a TLS context is configured");
            Security::Tls {
                connector: TlsConnector::from(ctx.client.clone()),
                acceptor: ctx.server.clone().map(TlsAcceptor::from),
                timeout: ctx.handshake_timeout,
            }
        } else {
            Security::Plain
        };
        let conn = Connection {
            id,
            key: key.clone(),
            to_driver: self.conn_tx.clone(),
            writes: rx,
            framer: StreamFramer::new(self.config.max_stream_message),
        };
        tokio::spawn(conn.run(start, security, self.config.connect_timeout));
        key
    }

    /// Drop the sockets and every connection's write channel (which ends their tasks).
    fn close(&mut self) {
        self.udp = None;
        self.tcp = None;
        self.tls = None;
        self.conns.clear();
        self.flush_events();
    }
}

/// The method of a request event, for [`SipStats::requests_in`].
fn request_method(event: &EndpointEvent) -> Option<String> {
    match event {
        EndpointEvent::NewRequest { request, .. }
        | EndpointEvent::InDialogRequest { request, .. } => {
            Some(request.method.as_str().to_owned())
        }
        _ => None,
    }
}

#[derive(Debug)]
enum ConnStart {
    Accepted(TcpStream),
    Connect,
}

/// Whether a connection is plain TCP or TLS, and how its handshake is made.
enum Security {
    Plain,
    Tls {
        connector: TlsConnector,
        acceptor: Option<TlsAcceptor>,
        timeout: Duration,
    },
}

/// One TCP or TLS connection's task: reads and frames, writes what the driver queues.
#[derive(Debug)]
struct Connection {
    id: u64,
    key: ConnKey,
    to_driver: mpsc::Sender<ConnEvent>,
    writes: mpsc::Receiver<Outgoing>,
    framer: StreamFramer,
}

impl Connection {
    async fn run(mut self, start: ConnStart, security: Security, connect_timeout: Duration) {
        let peer = self.key.peer;
        let mut undelivered = Vec::new();
        let mut error = None;
        let inbound = matches!(start, ConnStart::Accepted(_));
        let tcp = match start {
            ConnStart::Accepted(s) => Some(s),
            ConnStart::Connect => {
                match tokio::time::timeout(connect_timeout, TcpStream::connect(peer)).await {
                    Ok(Ok(s)) => Some(s),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %peer, "SIP TCP connect failed");
                        error = Some(format!("connect to {peer} failed: {e}"));
                        None
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "SIP TCP connect timed out");
                        error = Some(format!("connect to {peer} timed out"));
                        None
                    }
                }
            }
        };
        let ended = match (tcp, security) {
            (None, _) => Ok(()),
            (Some(stream), Security::Plain) => {
                let _ = stream.set_nodelay(true);
                self.serve(stream, &mut undelivered).await
            }
            (
                Some(stream),
                Security::Tls {
                    connector,
                    acceptor,
                    timeout,
                },
            ) => {
                let _ = stream.set_nodelay(true);
                match self
                    .handshake(stream, inbound, connector, acceptor, timeout)
                    .await
                {
                    Ok(TlsStream::Client(s)) => {
                        let _ = self
                            .to_driver
                            .send(ConnEvent::Handshake { outbound: true })
                            .await;
                        self.serve(s, &mut undelivered).await
                    }
                    Ok(TlsStream::Server(s)) => {
                        let _ = self
                            .to_driver
                            .send(ConnEvent::Handshake { outbound: false })
                            .await;
                        self.serve(s, &mut undelivered).await
                    }
                    Err(e) => {
                        tracing::info!(error = %e, %peer, "SIP TLS handshake failed");
                        error = Some(e);
                        Ok(())
                    }
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, %peer, "SIP stream connection ended");
        }
        // Whatever is still queued will never be written.
        self.writes.close();
        while let Ok((_, key)) = self.writes.try_recv() {
            undelivered.extend(key);
        }
        let _ = self
            .to_driver
            .send(ConnEvent::Closed {
                id: self.id,
                key: self.key.clone(),
                undelivered,
                error,
            })
            .await;
    }

    /// The TLS handshake, as client (a connection we opened) or server (one we accepted),
    /// bounded by `timeout`. The error names what failed, prefixed `TLS: `.
    async fn handshake(
        &self,
        stream: TcpStream,
        inbound: bool,
        connector: TlsConnector,
        acceptor: Option<TlsAcceptor>,
        timeout: Duration,
    ) -> Result<TlsStream, String> {
        let work = async {
            match (&self.key.name, acceptor, inbound) {
                (_, Some(acceptor), true) => acceptor
                    .accept(stream)
                    .await
                    .map(|s| TlsStream::Server(Box::new(s))),
                (_, None, true) => Err(io::Error::other("no server certificate")),
                (name, _, false) => {
                    let name = match name {
                        Some(n) => tls::server_name(n),
                        None => tls::server_name(&self.key.peer.ip().to_string()),
                    }
                    .map_err(io::Error::other)?;
                    connector
                        .connect(name, stream)
                        .await
                        .map(|s| TlsStream::Client(Box::new(s)))
                }
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("TLS: {}", tls_error_text(&e))),
            Err(_) => Err(format!(
                "TLS: handshake with {} timed out after {} ms",
                self.key.peer,
                timeout.as_millis()
            )),
        }
    }

    async fn serve<S>(&mut self, stream: S, undelivered: &mut Vec<TransactionKey>) -> io::Result<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                r = reader.read(&mut buf) => {
                    let n = r?;
                    if n == 0 {
                        return Ok(());
                    }
                    self.framer.push(&buf[..n]);
                    loop {
                        match self.framer.poll() {
                            Ok(Some(frame)) => {
                                // Backpressure: while the driver is busy, stop reading.
                                let ev = ConnEvent::Frame {
                                    peer: self.key.peer,
                                    tls: self.key.tls,
                                    frame,
                                };
                                if self.to_driver.send(ev).await.is_err() {
                                    return Ok(());
                                }
                            }
                            Ok(None) => break,
                            // RFC 4475 §3.3.9: "TCP: framing error, close connection".
                            Err(e) => {
                                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                            }
                        }
                    }
                }
                w = self.writes.recv() => match w {
                    Some((bytes, key)) => {
                        // One write per message: a TLS record layer would otherwise buffer it.
                        let written = match writer.write_all(&bytes).await {
                            Ok(()) => writer.flush().await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = written {
                            undelivered.extend(key);
                            return Err(e);
                        }
                    }
                    // The driver dropped us (shutdown, or it replaced this connection).
                    None => {
                        let _ = writer.shutdown().await;
                        return Ok(());
                    }
                },
            }
        }
    }
}

/// A completed TLS session of either side.
enum TlsStream {
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The text of a handshake error: rustls' own error when it is one (`invalid peer
/// certificate: UnknownIssuer`), else the I/O error.
fn tls_error_text(e: &io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}
