//! The call engine: one actor per call, one SIP dispatcher, one handle for the rest of the app.
//!
//! # Shape
//! [`Engine::start`] binds the SIP transport ([`crate::net::sip::SipTransport`]) and spawns the
//! dispatcher task. The dispatcher owns the transport's event receiver and a routing table:
//! - the SIP Call-ID of every live call → that call's bounded input channel. Every SIP event
//!   names its call: responses, in-dialog requests and CANCELs carry the Call-ID in the
//!   message, and the events that name only a client transaction (timeout, transport error)
//!   carry the Call-ID of the request that created it. A route is in the table before the
//!   call's first message leaves, so nothing can arrive for a call the dispatcher does not know
//!   yet, however soon after the send it comes (a send that fails at once reports its error
//!   before the call has even seen the transaction's key).
//!
//! A new INVITE creates an inbound call when the engine is under its capacity, not draining
//! and its store keeps up ([`sink`]); otherwise it is answered 503 with Retry-After (RFC 3261
//! §21.5.4), once and statelessly (no transaction is kept for a refused call, nothing is
//! retransmitted).
//!
//! # Ending
//! A call always ends: a hangup in any state makes the call send what the protocol asks (BYE,
//! CANCEL, 480) and, when that does not end it within 4 s (`call_core::HANGUP_TEARDOWN`; no 487 to a
//! CANCEL, no provisional response to send a CANCEL after, no ACK before a BYE may go), tears
//! it down and records so (`end_reason: "TornDown"`). A drain hangs the calls left at its
//! grace up the same way with a shorter bound, and the dispatcher itself aborts and records
//! any call still live [`DRAIN_ABORT_AFTER`] after the grace (a call waiting for a store that
//! is down to commit its final event included), so a drain always returns.
//!
//! Each call (the private `call` module) is a tokio task that owns its `InviteSession`, `MediaSession`, RTP
//! socket pair and recording writer. The rest of the application talks to the engine only
//! through [`EngineHandle`] commands and observes calls only through [`CallEvent`]s on a
//! broadcast channel.
//!
//! # Backpressure
//! The dispatcher never awaits a call: it `try_send`s into the call's channel and drops a SIP
//! input (logged) when that channel is full (a hangup or drain input waits for room in a task
//! of its own instead: those are never dropped). SIP retransmissions recover a dropped request or
//! response, and a call that cannot keep up with 64 queued SIP inputs is stuck anyway. Calls
//! await their sends to the dispatcher, which is safe because the dispatcher never blocks on
//! them. Event subscribers that lag lose the oldest events (tokio broadcast semantics) and are
//! told so by `RecvError::Lagged`.

mod call;
mod call_core;
mod call_media;
mod call_state;
pub mod events;
pub mod limits;
pub mod protect;
mod record_sink;
pub mod sink;
pub mod target;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sip::dialog::{default_allow, options_response};
use sip::endpoint::EndpointEvent;
use sip::message::{HeaderName, Method, Request, StatusCode, Uri, response_to};
use sip::transaction::{TransactionKey, Transport};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::files::{PromptCache, Recorder, RecorderStats};
use crate::net::rtp_ports::{PortPoolError, RtpPortPool};
use crate::net::sip::{NetError, SipConfig, SipEvent, SipHandle, SipTransport};
use crate::script::Script;

pub use events::{CallEvent, CallId, Outcome};
pub use sink::{Committed, EventQueue, EventSink, SinkGauge, SinkItem};

use call::{CallInput, CallSetup, InboundCall};

/// Capacity of each call's input channel.
const CALL_QUEUE: usize = 64;
/// Capacity of the engine's command channel.
const COMMAND_QUEUE: usize = 256;
/// Capacity of the event broadcast (per subscriber backlog).
const EVENT_QUEUE: usize = 4096;
/// How long after a drain's grace the dispatcher aborts a call that is still live (the call
/// itself tears down 1 s (`call_core::DRAIN_TEARDOWN`) after the grace; this is the bound when it
/// cannot, e.g. a task stuck on I/O).
pub const DRAIN_ABORT_AFTER: Duration = Duration::from_secs(2);
/// How long a shutdown waits for the recording writers to write what is queued.
const RECORDER_SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where the SIP UDP socket binds (port 0 picks one).
    pub sip_bind: SocketAddr,
    /// Where a SIP TCP listener binds (port 0 picks one); `None`: no TCP listener (calls to a
    /// `transport=tcp` destination then have no address to put in their Contact).
    pub sip_tcp: Option<SocketAddr>,
    /// Where a SIP TLS listener binds (port 0 picks one); needs `tls` with a certificate.
    /// `None`: no TLS listener (outbound TLS still works with `tls`; the Contact of such a call
    /// then names no reachable TLS address, so the callee's BYE needs our connection).
    pub sip_tls: Option<SocketAddr>,
    /// SIP over TLS: the CAs outbound connections trust and the listener's certificate
    /// (`None`: a `sips:` or `transport=tls` call fails with "no TLS transport available").
    pub tls: Option<crate::net::tls::TlsContext>,
    /// The address we put in Via, Contact and SDP (an unspecified `sip_bind` IP is no
    /// address a peer can reach).
    pub advertise_ip: IpAddr,
    /// The RTP port range (even/odd pairs are taken from it).
    pub rtp_ports: RangeInclusive<u16>,
    /// The most calls at once; a new INVITE beyond it gets 503.
    pub max_calls: usize,
    /// The Retry-After (seconds) of our 503s.
    pub retry_after_s: u32,
    /// What inbound calls do.
    pub inbound: InboundConfig,
    /// Where every event also goes, losslessly (the broadcast of [`EngineHandle::subscribe`]
    /// drops the oldest events of a lagging subscriber; this queue never drops one). The
    /// control plane's event pump reads it and stores each event. It is bounded: a call waits
    /// for room (backpressure), and over its high-water mark new calls are refused (503,
    /// [`EngineError::StoreBacklog`]). With a sink, a call's slot is freed only once its final
    /// event is committed, and an inbound call is answered only once its `call.created` is
    /// (see [`sink`]); without one (the `call` command) nothing waits.
    pub event_sink: Option<EventSink>,
    /// RTP timeout, session timers, longest call, refused media addresses.
    pub limits: limits::CallLimits,
    /// Decides per new INVITE whether it is taken and what it does (trunks, DIDs, allowed
    /// addresses); `None`: every INVITE gets [`EngineConfig::inbound`].
    pub router: Option<Arc<dyn InboundRouter>>,
    /// Copy the start line, Call-ID and CSeq of every SIP message sent and received
    /// (`callplane probe`'s ladders); `None`: no copies.
    pub sip_trace: Option<crate::net::sip::SipTrace>,
    /// The per-source SIP rate limit and the bound on half-open inbound INVITEs
    /// ([`protect`]).
    pub protection: protect::InboundProtection,
    /// The recording writer threads and their queues ([`crate::files::recorder`]).
    pub recorder: crate::files::RecorderConfig,
    /// Media worker threads that run every call's RTP ([`crate::net::media_workers`]; at
    /// least one). Default: one per core.
    pub media_workers: usize,
    /// Run the media workers under `SCHED_FIFO` at this priority (1–99; `None`: the fair
    /// scheduler, the default). [`crate::net::media_workers::WorkerOptions::realtime_priority`].
    pub media_priority: Option<u8>,
}

impl EngineConfig {
    /// Loopback defaults: SIP on `sip_bind`, RTP on 127.0.0.1 ports 20000-29999, 100 calls.
    pub fn new(sip_bind: SocketAddr) -> EngineConfig {
        let advertise_ip = if sip_bind.ip().is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            sip_bind.ip()
        };
        EngineConfig {
            sip_bind,
            sip_tcp: None,
            sip_tls: None,
            tls: None,
            advertise_ip,
            rtp_ports: 20000..=29999,
            max_calls: 100,
            retry_after_s: 5,
            inbound: InboundConfig::default(),
            event_sink: None,
            limits: limits::CallLimits::default(),
            router: None,
            sip_trace: None,
            protection: protect::InboundProtection::default(),
            recorder: crate::files::RecorderConfig::default(),
            media_workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            media_priority: None,
        }
    }
}

/// What the engine does with an inbound call.
#[derive(Debug, Clone, Default)]
pub struct InboundConfig {
    /// Run this script on every inbound call (it decides when to answer); without one,
    /// calls are answered at once and wait for the caller's BYE.
    pub script: Option<Arc<Script>>,
    /// Where prompt names and relative prompt paths resolve.
    pub prompts: Option<PathBuf>,
    /// Record inbound calls (stereo WAV, left: the caller) into this directory: the whole
    /// call without a script, the script's `record` segments with one.
    pub recordings: Option<PathBuf>,
    /// Digits to collect before reporting `gather.completed` (none when 0).
    pub gather_digits: usize,
    /// What a call to a given user (the Request-URI's user part, e.g. the dialed number
    /// `+15550100`) does instead of the above; users not listed get the above. This is how a
    /// test peer or `callplane demo`'s answerer plays a mix of callees on one port.
    pub by_user: Arc<std::collections::BTreeMap<String, InboundAnswer>>,
}

/// How an inbound call to one user is answered ([`InboundConfig::by_user`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundAnswer {
    /// Answered as [`InboundConfig`] says (its script, or at once), and once answered these
    /// digits are sent after `dtmf_after`, as a callee pressing keys (RFC 4733 when the caller
    /// offered telephone-event, in-band tones otherwise).
    Answer {
        /// The keys; empty: none.
        send_dtmf: Vec<media::dtmf::Digit>,
        /// How long after the answer (the ACK) they go.
        dtmf_after: Duration,
    },
    /// Refused with this final status (486 busy, 480, 603...; a status outside 400–699 is
    /// refused with 500).
    Reject(u16),
    /// Rings (180) and never answers: the caller's ring timeout (its CANCEL) ends the call.
    Ring,
}

/// What an outbound call does.
#[derive(Debug, Clone)]
pub struct OriginateRequest {
    /// The Request-URI and To.
    pub to: Uri,
    /// Where the INVITE goes (this slice does no DNS: the CLI resolves an IP-literal URI).
    pub destination: SocketAddr,
    /// Our From; `sip:callplane@<advertise_ip>` when `None`.
    pub from: Option<Uri>,
    /// A WAV prompt to play once answered.
    pub play: Option<PathBuf>,
    /// Digits to collect before reporting `gather.completed` (none when 0).
    pub gather_digits: usize,
    /// Record the call (stereo WAV, left: the callee) to this path.
    pub record: Option<PathBuf>,
    /// CANCEL when no final response came within this time.
    pub ring_timeout: Duration,
    /// The SIP transport of the call (UDP or TCP; a TCP call needs `EngineConfig::sip_tcp`
    /// so that the callee can reach our Contact).
    pub transport: Transport,
    /// Send BYE this long after the answer (`None`: wait for the peer's BYE).
    pub hangup_after: Option<Duration>,
    /// DTMF digits to send once answered (RFC 4733 when the callee accepted
    /// telephone-event, in-band tones otherwise); empty: none.
    pub send_dtmf: Vec<media::dtmf::Digit>,
    /// How long after the answer the digits go.
    pub dtmf_after: Duration,
    /// Run this script once answered (then `play`/`gather_digits` should be unset; `record`
    /// is where its `record` steps write).
    pub script: Option<Arc<Script>>,
    /// Where the script's prompt names and relative prompt paths resolve.
    pub prompts: Option<PathBuf>,
    /// Which files the script's prompts may name: any (a local operator's script) or only
    /// those inside `prompts` (a script that came through the API).
    pub prompt_scope: PromptScope,
    /// A label copied into every [`CallEvent::tag`] of this call (the control plane's call id).
    pub tag: Option<Arc<str>>,
    /// Variables the script starts with (a `branch` can go on them).
    pub variables: std::collections::BTreeMap<String, String>,
    /// End the call this long after the answer (`None`: the engine's
    /// [`limits::CallLimits::max_duration`]).
    pub max_duration: Option<Duration>,
    /// What a trunk adds to the INVITE to `to`/`destination`: outbound proxy, credentials,
    /// headers, advertised address (#11). Default: nothing.
    pub sip: SipOptions,
    /// Where to try next, in order, when the INVITE to `destination` gets a transport error,
    /// a timeout, 503 or 408 (RFC 3263 §4.3; trunk failover). Never after 486, 600, 603, 404
    /// or any other final response. Empty: no failover.
    pub alternates: Vec<CallRoute>,
}

/// SIP-level settings of one way to reach a callee (a trunk's, #11).
#[derive(Debug, Clone, Default)]
pub struct SipOptions {
    /// The trunk this goes through (timeline events name it).
    pub trunk_id: Option<String>,
    /// An outbound proxy: sent as a preloaded loose Route (RFC 3261 §8.1.2) on the INVITE and
    /// every in-dialog request without a route set of its own; the request goes to its address.
    pub outbound_proxy: Option<Uri>,
    /// Credentials that answer 401/407 challenges on the INVITE and in-dialog requests
    /// (RFC 3261 §22.2); `None`: a challenge fails the call.
    pub credentials: Option<sip::auth::Credentials>,
    /// The realm `credentials` are for (`None`: they answer any realm's challenge).
    pub realm: Option<String>,
    /// Extra header fields on the INVITE, in order (P-Asserted-Identity, Privacy, Diversion,
    /// a trunk's custom headers). Names and values are checked when the trunk is saved.
    pub headers: Vec<(String, String)>,
    /// The address put in Via, Contact and SDP instead of the engine's advertised one
    /// (a trunk behind a NAT of its own).
    pub advertise: Option<IpAddr>,
    /// Over TLS: the name the peer's certificate must carry (and the SNI we send). `None`: the
    /// host of the Request-URI when it is a name, else the destination's IP address. The CAs
    /// are the node's ([`EngineConfig::tls`]).
    pub tls_server_name: Option<String>,
    /// Codecs to offer, in order (a trunk's codec list); empty: the engine's default
    /// (PCMU, PCMA, G.722).
    pub codecs: Vec<media::sdp::AudioCodec>,
    /// How the call's DTMF digits travel.
    pub dtmf: DtmfMode,
    /// What the INVITE says of reliable provisional responses (RFC 3262).
    pub rel100: sip::dialog::Rel100,
    /// SRTP (SDES) for the call: `Off` offers RTP/AVP, `Offer` RTP/SAVP accepting a plain
    /// answer, `Require` RTP/SAVP ending the call on a plain answer. (Inbound RTP/SAVP offers
    /// are answered with SRTP whatever this is.)
    pub srtp: crate::trunk::SrtpMode,
}

/// How an outbound call sends its DTMF digits ([`SipOptions::dtmf`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtmfMode {
    /// RFC 4733 events when the callee accepted telephone-event, in-band tones otherwise.
    #[default]
    Auto,
    /// Offer no telephone-event: in-band tones in the audio.
    Inband,
    /// SIP INFO requests with `application/dtmf-relay` bodies (one per digit).
    Info,
}

/// A change of an answered call's session by re-INVITE or refresh ([`EngineHandle::reoffer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reoffer {
    /// Put the callee on hold: re-INVITE with `a=sendonly`.
    Hold,
    /// Take it off hold: re-INVITE with `a=sendrecv`.
    Resume,
    /// Refresh the session timer now (RFC 4028: UPDATE, or re-INVITE when the peer does not
    /// take UPDATE), as the refresher does at half the interval.
    RefreshSession,
}

/// One more way to reach the callee ([`OriginateRequest::alternates`]).
#[derive(Debug, Clone)]
pub struct CallRoute {
    /// The Request-URI and To.
    pub to: Uri,
    /// Where the INVITE goes.
    pub destination: SocketAddr,
    /// Over which transport.
    pub transport: Transport,
    /// What this route adds.
    pub sip: SipOptions,
    /// How the timeline names this target (`"trunk carrier-b 192.0.2.7:5060 (SRV 10 60)"`).
    pub label: String,
}

/// Decides, before a call exists, what happens to a new inbound INVITE: the control plane's
/// trunk and DID routing (#11). Called on the dispatcher task: it must not block (answer from
/// an in-memory snapshot).
pub trait InboundRouter: Send + Sync + std::fmt::Debug {
    /// The decision for `request` from `source` over `transport`.
    fn route(&self, source: SocketAddr, transport: Transport, request: &Request) -> InboundRoute;
}

/// What [`InboundRouter::route`] decided.
#[derive(Debug, Clone)]
pub enum InboundRoute {
    /// As the engine's [`InboundConfig`] says.
    Default,
    /// With this configuration instead (the DID's script), through this trunk.
    Answer {
        /// What the call does.
        config: InboundConfig,
        /// The trunk it came through (in `call.created`).
        trunk_id: Option<String>,
    },
    /// Answer with this final status (403: not from a trunk or an allowed address).
    Refuse(u16),
    /// Send nothing (a flood source, or `--unknown-sources drop`).
    Drop,
}

/// How an out-of-dialog request sent with [`EngineHandle::request`] ended without a final
/// response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Closed,
    /// Could not be sent (no route, connection refused, ...).
    #[error("transport error: {0}")]
    Transport(String),
    /// No final response before the transaction timed out (Timer F, 32 s).
    #[error("no response (timeout)")]
    Timeout,
    /// Another request with the same Call-ID is waiting for its answer.
    #[error("a request with this Call-ID is already outstanding")]
    Busy,
}

/// Which files a call's prompts may name.
///
/// A script from the local operator (the CLI's `--script`) may play any file the process can
/// read. A script from the API comes from a tenant of a shared server: its prompts are plain
/// names (checked by `script::check_prompt_names` before the call), and as defence in depth the
/// engine refuses any prompt that does not resolve, after following symlinks, to a file inside
/// the call's prompts directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PromptScope {
    /// Paths as given: absolute, relative to the prompts directory, `..` allowed.
    #[default]
    Local,
    /// Only files inside the call's prompts directory (without one, nothing plays).
    Confined,
}

/// Counters of the engine's prompt cache ([`EngineHandle::prompt_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptStats {
    /// How many times a prompt file was decoded (cache misses).
    pub decodes: u64,
    /// How many (file, rate) pairs are cached.
    pub cached: usize,
}

/// Why the engine refused.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The SIP transport did not start.
    #[error("SIP transport: {0}")]
    Net(#[from] NetError),
    /// The RTP port range is invalid.
    #[error("RTP ports: {0}")]
    Ports(#[from] PortPoolError),
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Closed,
    /// The engine is draining and takes no new calls.
    #[error("the engine is draining")]
    Draining,
    /// The engine is at `max_calls`.
    #[error("at capacity ({0} calls)")]
    AtCapacity(usize),
    /// The store is behind: the event queue is over its high-water mark.
    #[error("the store is behind (event queue over its high-water mark)")]
    StoreBacklog,
    /// The recording writer threads did not start.
    #[error("recording writer: {0}")]
    Recorder(std::io::Error),
    /// The media worker threads did not start.
    #[error("media workers: {0}")]
    MediaWorkers(std::io::Error),
}

/// A command to the dispatcher.
#[derive(Debug)]
enum Command {
    Originate {
        request: Box<OriginateRequest>,
        reply: oneshot::Sender<Result<CallId, EngineError>>,
    },
    Hangup(CallId),
    Reoffer(CallId, Reoffer),
    Drain {
        grace: Duration,
        reply: oneshot::Sender<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// From a call: I have ended.
    Ended {
        call_ident: String,
    },
    /// Route the final response (or failure) of the out-of-dialog request with this Call-ID
    /// and CSeq number to `reply` ([`EngineHandle::request`]).
    Expect {
        call_id: String,
        cseq: u32,
        reply: oneshot::Sender<Result<sip::message::Response, RequestError>>,
    },
    /// Stop waiting for that request.
    Forget {
        call_id: String,
    },
}

/// The clone-able handle to a running engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<CallEvent>,
    sip_local: SocketAddr,
    sip_local_tcp: Option<SocketAddr>,
    prompts: Arc<std::sync::Mutex<PromptCache>>,
    active: Arc<std::sync::atomic::AtomicUsize>,
    draining: Arc<std::sync::atomic::AtomicBool>,
    sip: SipHandle,
    advertise_ip: IpAddr,
    /// The store queue's counters (never a sender: see [`SinkGauge`]).
    sink: Option<SinkGauge>,
    /// INVITEs refused by the half-open bound, by reason ([`protect`]).
    half_open_refusals: Arc<HalfOpenRefusals>,
    /// The recording writer threads (for their counters).
    recorder: Arc<Recorder>,
    /// The media workers (for their counters).
    media_workers: Arc<crate::net::media_workers::MediaWorkers>,
}

/// INVITEs the dispatcher refused by the half-open bound.
#[derive(Debug, Default)]
struct HalfOpenRefusals {
    in_all: AtomicU64,
    per_source: AtomicU64,
}

impl EngineHandle {
    async fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| EngineError::Closed)?;
        rx.await.map_err(|_| EngineError::Closed)
    }

    /// Place a call. Subscribe first to see its whole timeline.
    pub async fn originate(&self, request: OriginateRequest) -> Result<CallId, EngineError> {
        self.command(|reply| Command::Originate {
            request: Box::new(request),
            reply,
        })
        .await?
    }

    /// Sends an out-of-dialog request (REGISTER, OPTIONS) that no call owns and returns its
    /// final response (provisional ones are skipped). The request must carry its Call-ID,
    /// CSeq, From, To and a top Via (the transport adds the branch when it has none); a
    /// Call-ID may be reused by the next request once this one has returned (a registration's
    /// refreshes). Bounded by the transaction's own timeout (Timer F) plus a margin.
    pub async fn request(
        &self,
        request: Request,
        destination: SocketAddr,
        transport: Transport,
    ) -> Result<sip::message::Response, RequestError> {
        let call_id = request
            .headers
            .call_id()
            .map_err(|e| RequestError::Transport(format!("no Call-ID: {e}")))?
            .to_owned();
        let cseq = request
            .headers
            .cseq()
            .map_err(|e| RequestError::Transport(format!("no CSeq: {e}")))?
            .seq;
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Expect {
                call_id: call_id.clone(),
                cseq,
                reply: tx,
            })
            .await
            .map_err(|_| RequestError::Closed)?;
        if let Err(e) = self.sip.send_request(request, destination, transport).await {
            let _ = self.commands.send(Command::Forget { call_id }).await;
            return Err(RequestError::Transport(e.to_string()));
        }
        // Timer F is 64*T1 = 32 s; the margin covers a TCP connect and a slow dispatcher.
        match tokio::time::timeout(Duration::from_secs(40), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RequestError::Closed),
            Err(_) => {
                let _ = self.commands.send(Command::Forget { call_id }).await;
                Err(RequestError::Timeout)
            }
        }
    }

    /// Hang up (BYE when answered, CANCEL while ringing, 480 for an unanswered inbound call).
    pub async fn hangup(&self, call: CallId) -> Result<(), EngineError> {
        self.commands
            .send(Command::Hangup(call))
            .await
            .map_err(|_| EngineError::Closed)
    }

    /// Re-INVITE (hold, resume) or refresh an answered call; the outcome is in its timeline
    /// (`sip.reoffer_sent`, `sip.reinvite_accepted`/`sip.reinvite_rejected`,
    /// `sip.session_refreshed`, or `sip.reoffer_failed` when it could not be sent).
    pub async fn reoffer(&self, call: CallId, what: Reoffer) -> Result<(), EngineError> {
        self.commands
            .send(Command::Reoffer(call, what))
            .await
            .map_err(|_| EngineError::Closed)
    }

    /// Every call's events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.events.subscribe()
    }

    /// Counters of the shared prompt cache.
    pub fn prompt_stats(&self) -> PromptStats {
        // Held for two reads only; a poisoned lock still holds valid counters.
        let cache = self
            .prompts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        PromptStats {
            decodes: cache.decodes(),
            cached: cache.len(),
        }
    }

    /// The SIP transport's counters (`Err` when it has stopped).
    /// The engine adds its own drop reasons (`half_open`, `half_open_per_source`) to
    /// [`crate::net::sip::SipStats::dropped`].
    pub async fn sip_stats(&self) -> Result<crate::net::sip::SipStats, EngineError> {
        let mut stats = self.sip.stats().await?;
        for (reason, n) in [
            ("half_open", &self.half_open_refusals.in_all),
            ("half_open_per_source", &self.half_open_refusals.per_source),
        ] {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                *stats.dropped.entry(reason.to_owned()).or_insert(0) += n;
            }
        }
        Ok(stats)
    }

    /// The IP written into our Via, Contact, From and SDP.
    pub fn advertise_ip(&self) -> IpAddr {
        self.advertise_ip
    }

    /// How many calls are live now.
    pub fn active_calls(&self) -> usize {
        self.active.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the engine drains (takes no new calls): from [`EngineHandle::drain`] on.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether new calls are refused because the store is behind ([`EngineConfig::event_sink`]
    /// over its high-water mark); always `false` without a sink.
    pub fn store_backlogged(&self) -> bool {
        self.sink.as_ref().is_some_and(SinkGauge::is_backlogged)
    }

    /// [`EngineHandle::store_backlogged`], counting a refusal when it is (for a caller that
    /// refuses a new call on it, as the API does before writing the call's row).
    pub fn refuse_for_store_backlog(&self) -> bool {
        match &self.sink {
            Some(sink) if sink.is_backlogged() => {
                sink.on_refused();
                true
            }
            _ => false,
        }
    }

    /// The event queue's (depth, capacity), when there is a sink: events not yet committed.
    pub fn event_queue(&self) -> Option<(usize, usize)> {
        self.sink.as_ref().map(|s| (s.depth(), s.capacity()))
    }

    /// New calls refused so far because the store was behind (when there is a sink).
    pub fn store_backlog_refusals(&self) -> Option<u64> {
        self.sink.as_ref().map(SinkGauge::refusals)
    }

    /// What the recording writer threads are doing: queue depth, lag, frames dropped.
    pub fn recording_stats(&self) -> RecorderStats {
        self.recorder.stats()
    }

    /// What the media workers did: sessions, datagrams, how late they served deadlines.
    pub fn media_worker_stats(&self) -> crate::net::media_workers::MediaWorkerStats {
        self.media_workers.stats()
    }

    /// How late the media workers served their deadlines so far (a histogram).
    pub fn media_worker_lateness(&self) -> crate::net::media_workers::LatenessHistogram {
        self.media_workers.lateness()
    }

    /// Where SIP listens (UDP).
    pub fn sip_local_addr(&self) -> SocketAddr {
        self.sip_local
    }

    /// Where SIP listens on TCP, when it does.
    pub fn sip_local_tcp_addr(&self) -> Option<SocketAddr> {
        self.sip_local_tcp
    }

    /// Where SIP listens on TLS, when it does.
    pub fn sip_local_tls_addr(&self) -> Option<SocketAddr> {
        self.sip.local_addrs().tls
    }

    /// Stop taking calls (new INVITEs get 503 with Retry-After), give live calls `grace` to
    /// end, then hang them up. Returns when no call is left: at most [`DRAIN_ABORT_AFTER`]
    /// after `grace`, as calls that do not end are torn down.
    pub async fn drain(&self, grace: Duration) -> Result<(), EngineError> {
        self.command(|reply| Command::Drain { grace, reply }).await
    }

    /// Stop the dispatcher and the SIP transport (live calls lose their SIP path: drain first).
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        self.command(|reply| Command::Shutdown { reply }).await
    }
}

/// A running engine.
#[derive(Debug)]
pub struct Engine {
    /// The handle.
    pub handle: EngineHandle,
    task: JoinHandle<()>,
}

impl Engine {
    /// Bind SIP, create the RTP pool and spawn the dispatcher on the current runtime.
    pub async fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        let pool = Arc::new(RtpPortPool::new(
            config.advertise_ip,
            config.rtp_ports.clone(),
        )?);
        let transport = SipTransport::bind(SipConfig {
            udp: Some(config.sip_bind),
            tcp: config.sip_tcp,
            tls: config.sip_tls,
            tls_context: config.tls.clone(),
            seed: random_u64(),
            trace: config.sip_trace.clone(),
            inbound: config.protection.sip.clone(),
            ..SipConfig::default()
        })
        .await?;
        // The driver task detaches; it ends on `shutdown` or when every handle is dropped.
        let SipTransport {
            handle: sip_handle,
            events: sip_events,
            ..
        } = transport;
        let sip_local = sip_handle
            .local_addrs()
            .udp
            .expect("the transport was configured with a UDP socket");
        let sip_local_tcp = sip_handle.local_addrs().tcp;
        let sip_local_tls = sip_handle.local_addrs().tls;
        let sip_for_handle = sip_handle.clone();
        let advertise_ip = config.advertise_ip;
        let sink = config.event_sink.as_ref().map(|s| s.gauge().clone());
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let prompts = Arc::new(std::sync::Mutex::new(PromptCache::default()));
        let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let half_open_refusals = Arc::new(HalfOpenRefusals::default());
        let recorder =
            Arc::new(Recorder::start(config.recorder.clone()).map_err(EngineError::Recorder)?);
        let media_workers = Arc::new(
            crate::net::media_workers::MediaWorkers::start_with(
                crate::net::media_workers::WorkerOptions {
                    realtime_priority: config.media_priority,
                    ..crate::net::media_workers::WorkerOptions::new(config.media_workers.max(1))
                },
            )
            .map_err(EngineError::MediaWorkers)?,
        );
        let media_ip = pool.ip();
        let shared = Arc::new(call::Shared {
            sip: sip_handle.clone(),
            pool,
            events: events.clone(),
            event_sink: config.event_sink.clone(),
            engine: commands.clone(),
            env: Arc::new(call_core::CallEnv {
                advertise: SocketAddr::new(config.advertise_ip, sip_local.port()),
                advertise_tcp: sip_local_tcp
                    .map(|a| SocketAddr::new(config.advertise_ip, a.port())),
                advertise_tls: sip_local_tls
                    .map(|a| SocketAddr::new(config.advertise_ip, a.port())),
                media_ip,
                limits: config.limits.clone(),
                cooldowns: Default::default(),
                srtp_key: call_core::os_srtp_key,
            }),
            prompts: prompts.clone(),
            recorder: recorder.clone(),
            media_workers: media_workers.clone(),
        });
        let dispatcher = Dispatcher {
            sip_events,
            sip: sip_handle,
            commands: command_rx,
            shared,
            config,
            calls: HashMap::new(),
            by_id: HashMap::new(),
            next_id: 1,
            draining: None,
            drain_abort_at: None,
            draining_flag: draining.clone(),
            active: active.clone(),
            clients: HashMap::new(),
            half_open: protect::HalfOpen::default(),
            half_open_refusals: half_open_refusals.clone(),
        };
        let task = tokio::spawn(dispatcher.run());
        Ok(Engine {
            handle: EngineHandle {
                commands,
                events,
                sip_local,
                sip_local_tcp,
                prompts,
                active: active.clone(),
                draining,
                sip: sip_for_handle,
                advertise_ip,
                sink,
                half_open_refusals,
                recorder,
                media_workers,
            },
            task,
        })
    }

    /// Wait for the dispatcher to end (after [`EngineHandle::shutdown`]).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "engine dispatcher task failed");
        }
    }
}

/// A live call as the dispatcher sees it.
#[derive(Debug)]
struct Route {
    id: CallId,
    tx: mpsc::Sender<CallInput>,
    /// What the dispatcher needs to end the call itself when its task does not
    /// ([`DRAIN_ABORT_AFTER`]).
    abort: Option<call::Abort>,
}

struct Dispatcher {
    sip_events: mpsc::Receiver<SipEvent>,
    sip: SipHandle,
    commands: mpsc::Receiver<Command>,
    shared: Arc<call::Shared>,
    config: EngineConfig,
    /// SIP Call-ID → call.
    calls: HashMap<String, Route>,
    by_id: HashMap<CallId, String>,
    next_id: u64,
    /// Set once draining: who waits for the last call to end.
    draining: Option<Vec<oneshot::Sender<()>>>,
    /// When the calls still live after a drain's grace are aborted.
    drain_abort_at: Option<tokio::time::Instant>,
    /// `draining.is_some()`, published for [`EngineHandle::is_draining`].
    draining_flag: Arc<std::sync::atomic::AtomicBool>,
    /// `calls.len()`, published for [`EngineHandle::active_calls`].
    active: Arc<std::sync::atomic::AtomicUsize>,
    /// Out-of-dialog requests waiting for their final response: Call-ID → (CSeq, waiter).
    clients: HashMap<String, ClientWaiter>,
    /// Inbound calls whose 2xx has not been acknowledged yet ([`protect`]).
    half_open: protect::HalfOpen,
    half_open_refusals: Arc<HalfOpenRefusals>,
}

/// An [`EngineHandle::request`] waiting for its answer.
#[derive(Debug)]
struct ClientWaiter {
    cseq: u32,
    reply: oneshot::Sender<Result<sip::message::Response, RequestError>>,
}

/// At most this many out-of-dialog requests wait at once (registrations, OPTIONS pings and
/// probes of every trunk): a bound, not a tuning knob.
const MAX_CLIENTS: usize = 4096;

impl Dispatcher {
    async fn run(mut self) {
        loop {
            let abort_at = self.drain_abort_at;
            let abort = async {
                match abort_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // Commands first: they end calls and free slots.
                biased;
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.sip.shutdown().await;
                        self.shutdown_recorder().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.handle_command(cmd),
                    // Unreachable while we hold `shared.engine`, kept for completeness.
                    None => return,
                },
                ev = self.sip_events.recv() => match ev {
                    Some(ev) => self.handle_sip(ev),
                    None => {
                        tracing::warn!("SIP transport stopped; engine dispatcher ends");
                        return;
                    }
                },
                () = abort => self.abort_calls(),
            }
        }
    }

    /// Let the recording writers finish what is queued (bounded). Recordings of calls still
    /// live (a shutdown without a drain) are not waited for: they stay `.part` files for
    /// recovery, as after a crash.
    async fn shutdown_recorder(&self) {
        let recorder = self.shared.recorder.clone();
        let done = tokio::task::spawn_blocking(move || recorder.shutdown(RECORDER_SHUTDOWN_WAIT))
            .await
            .unwrap_or(false);
        if !done {
            let open = self.shared.recorder.stats().open;
            tracing::warn!(open, "recording writers not finished at shutdown");
        }
    }

    /// The drain's last resort: end every call still live, whatever its task is doing.
    fn abort_calls(&mut self) {
        self.drain_abort_at = None;
        for (ident, route) in std::mem::take(&mut self.calls) {
            self.by_id.remove(&route.id);
            tracing::warn!(call = %route.id, sip_call_id = %ident, "call still live after the drain: aborted");
            if let Some(abort) = route.abort {
                abort.abort(&self.shared);
            }
        }
        self.half_open.clear();
        self.active.store(0, std::sync::atomic::Ordering::Relaxed);
        self.check_drained();
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Originate { request, reply } => {
                let _ = reply.send(self.originate(*request));
            }
            Command::Hangup(id) => {
                if let Some(route) = self.by_id.get(&id).and_then(|i| self.calls.get(i)) {
                    deliver_control(route, CallInput::Hangup);
                }
            }
            Command::Reoffer(id, what) => {
                if let Some(route) = self.by_id.get(&id).and_then(|i| self.calls.get(i)) {
                    deliver_control(route, CallInput::Reoffer(what));
                }
            }
            Command::Drain { grace, reply } => {
                let waiters = self.draining.get_or_insert_with(Vec::new);
                waiters.push(reply);
                self.draining_flag
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let abort_at = tokio::time::Instant::now() + grace + DRAIN_ABORT_AFTER;
                self.drain_abort_at =
                    Some(self.drain_abort_at.map_or(abort_at, |a| a.min(abort_at)));
                for route in self.calls.values() {
                    deliver_control(route, CallInput::Drain { grace });
                }
                self.check_drained();
            }
            Command::Ended { call_ident } => {
                if let Some(route) = self.calls.remove(&call_ident) {
                    self.by_id.remove(&route.id);
                }
                self.half_open.remove(&call_ident);
                self.active
                    .store(self.calls.len(), std::sync::atomic::Ordering::Relaxed);
                self.check_drained();
            }
            Command::Expect {
                call_id,
                cseq,
                reply,
            } => {
                if self.calls.contains_key(&call_id)
                    || self.clients.contains_key(&call_id)
                    || self.clients.len() >= MAX_CLIENTS
                {
                    let _ = reply.send(Err(RequestError::Busy));
                } else {
                    self.clients.insert(call_id, ClientWaiter { cseq, reply });
                }
            }
            Command::Forget { call_id } => {
                self.clients.remove(&call_id);
            }
            Command::Shutdown { .. } => {}
        }
    }

    /// Hands a final response or a failure to the [`EngineHandle::request`] waiting for it;
    /// false when none waits for this Call-ID.
    fn answer_client(&mut self, event: &EndpointEvent) -> bool {
        let (call_id, result) = match event {
            EndpointEvent::Response { response, .. } => {
                let Ok(call_id) = response.headers.call_id() else {
                    return false;
                };
                let Some(waiter) = self.clients.get(call_id) else {
                    return false;
                };
                // A late answer to an earlier request of the same Call-ID (a registration
                // refresh) is not this request's.
                if response.headers.cseq().map(|c| c.seq).ok() != Some(waiter.cseq)
                    || response.status.is_provisional()
                {
                    return true;
                }
                (call_id.to_owned(), Ok(response.clone()))
            }
            EndpointEvent::TransactionTimeout {
                call_id,
                key: TransactionKey::Client(_),
                ..
            } => (call_id.clone(), Err(RequestError::Timeout)),
            EndpointEvent::TransportError {
                call_id,
                key: TransactionKey::Client(_),
            } => (
                call_id.clone(),
                Err(RequestError::Transport("the send failed".to_owned())),
            ),
            _ => return false,
        };
        match self.clients.remove(&call_id) {
            Some(waiter) => {
                let _ = waiter.reply.send(result);
                true
            }
            None => false,
        }
    }

    fn check_drained(&mut self) {
        if self.calls.is_empty()
            && let Some(waiters) = self.draining.as_mut()
        {
            self.drain_abort_at = None;
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    fn new_route(&mut self, call_ident: String) -> (CallId, mpsc::Receiver<CallInput>) {
        let id = CallId(self.next_id);
        self.next_id += 1;
        let (tx, rx) = mpsc::channel(CALL_QUEUE);
        self.by_id.insert(id, call_ident.clone());
        self.calls.insert(
            call_ident,
            Route {
                id,
                tx,
                abort: None,
            },
        );
        self.active
            .store(self.calls.len(), std::sync::atomic::Ordering::Relaxed);
        (id, rx)
    }

    fn set_abort(&mut self, call_ident: &str, abort: call::Abort) {
        if let Some(route) = self.calls.get_mut(call_ident) {
            route.abort = Some(abort);
        }
    }

    fn originate(&mut self, request: OriginateRequest) -> Result<CallId, EngineError> {
        if self.draining.is_some() {
            return Err(EngineError::Draining);
        }
        if self.calls.len() >= self.config.max_calls {
            return Err(EngineError::AtCapacity(self.config.max_calls));
        }
        if let Some(sink) = self
            .config
            .event_sink
            .as_ref()
            .map(EventSink::gauge)
            .filter(|s| s.is_backlogged())
        {
            sink.on_refused();
            return Err(EngineError::StoreBacklog);
        }
        let call_ident = format!("{:016x}@callplane", random_u64());
        let (id, rx) = self.new_route(call_ident.clone());
        let abort = call::spawn(
            self.shared.clone(),
            id,
            call_ident.clone(),
            CallSetup::Outbound(Box::new(request)),
            rx,
        );
        self.set_abort(&call_ident, abort);
        Ok(id)
    }

    fn handle_sip(&mut self, ev: SipEvent) {
        let at = ev.at;
        let detail = ev.detail;
        if !self.clients.is_empty() && self.answer_client(&ev.event) {
            return;
        }
        match ev.event {
            EndpointEvent::NewRequest {
                key,
                request,
                source,
                transport,
            } => self.new_request(at, key, request, source, transport),
            event @ EndpointEvent::InDialogRequest { .. } => {
                let EndpointEvent::InDialogRequest {
                    dialog,
                    key,
                    request,
                    ..
                } = &event
                else {
                    return;
                };
                if request.method == Method::Ack {
                    // The 2xx of an inbound call was acknowledged: it is established.
                    self.half_open.remove(&dialog.call_id);
                }
                match self.calls.get(&dialog.call_id) {
                    Some(route) => deliver(
                        route,
                        CallInput::Sip {
                            at,
                            event,
                            detail: detail.clone(),
                        },
                    ),
                    None => {
                        // §12.2.2: a request for a dialog we do not know gets 481.
                        if let (Some(key), Some(resp)) =
                            (key.clone(), sip::dialog::unknown_dialog_response(request))
                        {
                            self.respond(key, resp);
                        }
                    }
                }
            }
            event @ (EndpointEvent::Response { .. } | EndpointEvent::CancelReceived { .. }) => {
                let ident = match &event {
                    EndpointEvent::Response { response, .. } => {
                        response.headers.call_id().ok().map(str::to_owned)
                    }
                    EndpointEvent::CancelReceived { request, .. } => {
                        request.headers.call_id().ok().map(str::to_owned)
                    }
                    _ => None,
                };
                match ident.as_ref().and_then(|i| self.calls.get(i)) {
                    Some(route) => deliver(
                        route,
                        CallInput::Sip {
                            at,
                            event,
                            detail: detail.clone(),
                        },
                    ),
                    // A response to the BYE of a call that has ended: nothing to do.
                    None => tracing::debug!(?ident, "SIP event for no live call"),
                }
            }
            // These name a transaction and its owner: routed by the owner, which is known
            // from the call's creation on, never by a key the call would have to register
            // first (an immediate send failure reports before the call has its key).
            event @ (EndpointEvent::TransactionTimeout {
                key: TransactionKey::Client(_),
                ..
            }
            | EndpointEvent::TransportError {
                key: TransactionKey::Client(_),
                ..
            }) => {
                let (EndpointEvent::TransactionTimeout { call_id, .. }
                | EndpointEvent::TransportError { call_id, .. }) = &event
                else {
                    return;
                };
                match self.calls.get(call_id) {
                    Some(route) => deliver(
                        route,
                        CallInput::Sip {
                            at,
                            event,
                            detail: detail.clone(),
                        },
                    ),
                    None => tracing::debug!(%call_id, "transaction failure for no live call"),
                }
            }
            // A server transaction's failure (no ACK for a non-2xx, a response that could not
            // be sent) needs nothing from a call; a terminated transaction neither.
            EndpointEvent::TransactionTimeout { .. }
            | EndpointEvent::TransportError { .. }
            | EndpointEvent::TransactionTerminated { .. } => {}
        }
    }

    fn respond(&self, key: TransactionKey, response: sip::message::Response) {
        let sip = self.sip.clone();
        // Not awaited here: the dispatcher must keep routing while the driver sends.
        tokio::spawn(async move {
            if let Err(e) = sip.send_response(key, response).await {
                tracing::warn!(error = %e, "could not send a response");
            }
        });
    }

    /// Answer once, without keeping the transaction (overload replies).
    fn respond_stateless(&self, key: TransactionKey, response: sip::message::Response) {
        let sip = self.sip.clone();
        tokio::spawn(async move {
            if let Err(e) = sip.send_response_stateless(key, response).await {
                tracing::warn!(error = %e, "could not send a stateless response");
            }
        });
    }

    fn new_request(
        &mut self,
        at: std::time::Instant,
        key: TransactionKey,
        request: Request,
        source: SocketAddr,
        transport: Transport,
    ) {
        match request.method {
            Method::Invite => {
                let Ok(ident) = request.headers.call_id().map(str::to_owned) else {
                    return;
                };
                let (config, trunk_id) = match self
                    .config
                    .router
                    .as_ref()
                    .map(|r| r.route(source, transport, &request))
                {
                    None | Some(InboundRoute::Default) => (self.config.inbound.clone(), None),
                    Some(InboundRoute::Answer { config, trunk_id }) => (config, trunk_id),
                    Some(InboundRoute::Refuse(code)) => {
                        let status = StatusCode::new(code)
                            .filter(|s| s.is_final())
                            .unwrap_or(StatusCode::new(403).expect("403"));
                        let resp = response_to(&request, status, None);
                        self.respond_stateless(key, resp);
                        return;
                    }
                    Some(InboundRoute::Drop) => return,
                };
                if self.calls.contains_key(&ident) {
                    // A second INVITE with a live Call-ID but no To tag: a loop or a
                    // misbehaving peer (§8.2.2.2 merged request).
                    let resp = response_to(&request, StatusCode::new(482).expect("482"), None);
                    self.respond(key, resp);
                    return;
                }
                let unavailable = if self.draining.is_some() {
                    Some("draining")
                } else if self.calls.len() >= self.config.max_calls {
                    Some("at capacity")
                } else if let Some(sink) = self
                    .config
                    .event_sink
                    .as_ref()
                    .map(EventSink::gauge)
                    .filter(|s| s.is_backlogged())
                {
                    // What was accepted is never lost: while the store is behind, take no more.
                    sink.on_refused();
                    Some("store backlog")
                } else {
                    None
                };
                if let Some(why) = unavailable {
                    tracing::info!(why, "INVITE refused with 503");
                    // Sent once and statelessly (the endpoint adds its stateless To tag and
                    // absorbs the ACK): an overloaded node keeps no transaction per refusal
                    // and does not retransmit; a retransmitted INVITE is refused again.
                    let mut resp = response_to(&request, StatusCode::SERVICE_UNAVAILABLE, None);
                    // §21.5.4: "The server MAY include a Retry-After header field".
                    resp.headers.push(
                        HeaderName::RetryAfter,
                        self.config.retry_after_s.to_string(),
                    );
                    self.respond_stateless(key, resp);
                    return;
                }
                if let Err(reason) = self.half_open.check(
                    self.config
                        .protection
                        .half_open_bounds(self.config.max_calls),
                    source.ip(),
                ) {
                    let counter = match reason {
                        "half_open" => &self.half_open_refusals.in_all,
                        _ => &self.half_open_refusals.per_source,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(reason, %source, "INVITE refused with 503: too many half-open");
                    let mut resp = response_to(&request, StatusCode::SERVICE_UNAVAILABLE, None);
                    resp.headers.push(
                        HeaderName::RetryAfter,
                        self.config.retry_after_s.to_string(),
                    );
                    self.respond_stateless(key, resp);
                    return;
                }
                if let Some(resp) = unsupported_body(&request) {
                    self.respond(key, resp);
                    return;
                }
                self.half_open.insert(ident.clone(), source.ip());
                let (id, rx) = self.new_route(ident.clone());
                let abort = call::spawn(
                    self.shared.clone(),
                    id,
                    ident.clone(),
                    CallSetup::Inbound(Box::new(InboundCall {
                        at,
                        invite: request,
                        key,
                        source,
                        transport,
                        config,
                        trunk_id,
                    })),
                    rx,
                );
                self.set_abort(&ident, abort);
            }
            Method::Options => {
                let tag = format!("{:08x}", random_u64() as u32);
                let resp = options_response(
                    &request,
                    &tag,
                    &default_allow(),
                    &["application/sdp"],
                    &["100rel", "timer"],
                );
                self.respond(key, resp);
            }
            // An ACK without a transaction is never answered (§17.2.3).
            Method::Ack => {}
            // Requests that only exist inside a dialog, without a To tag: no dialog matches.
            // §15.1.2: "If the BYE does not match an existing dialog, the UAS core SHOULD
            // generate a 481 (Call/Transaction Does Not Exist) response"; RFC 3311 §5.2 and
            // RFC 3262 §3 (via §12.2.2) say the same of UPDATE and PRACK.
            Method::Bye | Method::Update | Method::Prack => {
                let mut resp =
                    response_to(&request, StatusCode::CALL_TRANSACTION_DOES_NOT_EXIST, None);
                resp.add_to_tag(&format!("{:08x}", random_u64() as u32));
                self.respond(key, resp);
            }
            _ => {
                let mut resp = response_to(&request, StatusCode::new(405).expect("405"), None);
                // §21.4.6: "The response MUST include an Allow header field".
                let allow = default_allow()
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                resp.headers.push(HeaderName::Allow, allow);
                self.respond(key, resp);
            }
        }
    }
}

/// The 415 for an INVITE whose body is not a session description we can answer (RFC 3261
/// §8.2.3: "If a UAS does not understand the type ... of the body, it MUST reject the request
/// with a 415 (Unsupported Media Type) response" with an Accept header listing what it takes).
/// An INVITE without a body is a late offer (RFC 3264 §5) and goes through.
fn unsupported_body(request: &Request) -> Option<sip::message::Response> {
    if request.body.is_empty() {
        return None;
    }
    let is_sdp = matches!(
        request.headers.content_type(),
        Ok(Some(t)) if t.mtype.eq_ignore_ascii_case("application")
            && t.subtype.eq_ignore_ascii_case("sdp")
    );
    if is_sdp {
        return None;
    }
    let mut resp = response_to(
        request,
        StatusCode::new(415).expect("415 is a status"),
        None,
    );
    resp.add_to_tag(&format!("{:08x}", random_u64() as u32));
    resp.headers.push(HeaderName::Accept, "application/sdp");
    Some(resp)
}

/// Hand a control input (hangup, drain) to a call: never dropped. When the call's queue is
/// full it waits for room in a task of its own (the dispatcher never waits), which ends with
/// the call at the latest.
fn deliver_control(route: &Route, input: CallInput) {
    if let Err(mpsc::error::TrySendError::Full(input)) = route.tx.try_send(input) {
        let tx = route.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(input).await;
        });
    }
}

/// Hand an input to a call without waiting (see the module docs on backpressure).
fn deliver(route: &Route, input: CallInput) {
    if let Err(e) = route.tx.try_send(input) {
        match e {
            mpsc::error::TrySendError::Full(_) => {
                tracing::warn!(call = %route.id, "call input queue full; input dropped")
            }
            // The call is ending; its Ended command is on its way.
            mpsc::error::TrySendError::Closed(_) => {}
        }
    }
}

/// 64 random bits from the OS-seeded hasher keys of the standard library (no RNG crate
/// needed for tags, Call-IDs and SSRCs, which must be unpredictable enough to be unique).
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    RandomState::new().hash_one((n, crate::clock::unix_us()))
}
