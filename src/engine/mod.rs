//! The call engine: one actor per call, one SIP dispatcher, one handle for the rest of the app.
//!
//! # Shape
//! [`Engine::start`] binds the SIP transport ([`crate::net::sip::SipTransport`]) and spawns the
//! dispatcher task. The dispatcher owns the transport's event receiver and a routing table:
//! - the SIP Call-ID of every live call → that call's bounded input channel. Responses,
//!   in-dialog requests and CANCELs all carry the Call-ID, and a route is in the table before
//!   the call's first message leaves, so nothing can arrive for a call the dispatcher does not
//!   know yet;
//! - the client transaction keys a call registered → its Call-ID, for the events that carry
//!   only a key (transaction timeout, transport error).
//!
//! A new INVITE creates an inbound call when the engine is under its capacity, not draining
//! and its store keeps up ([`sink`]); otherwise it is answered 503 with Retry-After (RFC 3261
//! §21.5.4).
//!
//! Each call (the private `call` module) is a tokio task that owns its `InviteSession`, `MediaSession`, RTP
//! socket pair and recording writer. The rest of the application talks to the engine only
//! through [`EngineHandle`] commands and observes calls only through [`CallEvent`]s on a
//! broadcast channel.
//!
//! # Backpressure
//! The dispatcher never awaits a call: it `try_send`s into the call's channel and drops the
//! input (logged) when that channel is full. SIP retransmissions recover a dropped request or
//! response, and a call that cannot keep up with 64 queued SIP inputs is stuck anyway. Calls
//! await their sends to the dispatcher, which is safe because the dispatcher never blocks on
//! them. Event subscribers that lag lose the oldest events (tokio broadcast semantics) and are
//! told so by `RecvError::Lagged`.

mod call;
pub mod events;
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
use tracing::Instrument;

use crate::files::PromptCache;
use crate::net::rtp_ports::{PortPoolError, RtpPortPool};
use crate::net::sip::{NetError, SipConfig, SipEvent, SipHandle, SipTransport};
use crate::script::Script;

pub use events::{CallEvent, CallId, Outcome};
pub use sink::{Committed, EventQueue, EventSink, SinkItem};

use call::{CallInput, CallSetup, InboundCall};

/// Capacity of each call's input channel.
const CALL_QUEUE: usize = 64;
/// Capacity of the engine's command channel.
const COMMAND_QUEUE: usize = 256;
/// Capacity of the event broadcast (per subscriber backlog).
const EVENT_QUEUE: usize = 4096;

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where the SIP UDP socket binds (port 0 picks one).
    pub sip_bind: SocketAddr,
    /// Where a SIP TCP listener binds (port 0 picks one); `None`: no TCP listener (calls to a
    /// `transport=tcp` destination then have no address to put in their Contact).
    pub sip_tcp: Option<SocketAddr>,
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
            advertise_ip,
            rtp_ports: 20000..=29999,
            max_calls: 100,
            retry_after_s: 5,
            inbound: InboundConfig::default(),
            event_sink: None,
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
}

/// A command to the dispatcher.
#[derive(Debug)]
enum Command {
    Originate {
        request: Box<OriginateRequest>,
        reply: oneshot::Sender<Result<CallId, EngineError>>,
    },
    Hangup(CallId),
    Drain {
        grace: Duration,
        reply: oneshot::Sender<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// From a call: route events of this client transaction to me.
    RegisterKey {
        key: TransactionKey,
        call_ident: String,
    },
    /// From a call: I have ended.
    Ended {
        call_ident: String,
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
    sip: SipHandle,
    advertise_ip: IpAddr,
    sink: Option<EventSink>,
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

    /// Hang up (BYE when answered, CANCEL while ringing, 480 for an unanswered inbound call).
    pub async fn hangup(&self, call: CallId) -> Result<(), EngineError> {
        self.commands
            .send(Command::Hangup(call))
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
    pub async fn sip_stats(&self) -> Result<crate::net::sip::SipStats, EngineError> {
        Ok(self.sip.stats().await?)
    }

    /// The IP written into our Via, Contact, From and SDP.
    pub fn advertise_ip(&self) -> IpAddr {
        self.advertise_ip
    }

    /// How many calls are live now.
    pub fn active_calls(&self) -> usize {
        self.active.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether new calls are refused because the store is behind ([`EngineConfig::event_sink`]
    /// over its high-water mark); always `false` without a sink.
    pub fn store_backlogged(&self) -> bool {
        self.sink.as_ref().is_some_and(EventSink::is_backlogged)
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
        self.sink.as_ref().map(EventSink::refusals)
    }

    /// Where SIP listens (UDP).
    pub fn sip_local_addr(&self) -> SocketAddr {
        self.sip_local
    }

    /// Where SIP listens on TCP, when it does.
    pub fn sip_local_tcp_addr(&self) -> Option<SocketAddr> {
        self.sip_local_tcp
    }

    /// Stop taking calls (new INVITEs get 503 with Retry-After), give live calls `grace` to
    /// end, then hang them up. Returns when no call is left.
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
            seed: random_u64(),
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
        let sip_for_handle = sip_handle.clone();
        let advertise_ip = config.advertise_ip;
        let sink = config.event_sink.clone();
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let prompts = Arc::new(std::sync::Mutex::new(PromptCache::default()));
        let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let shared = Arc::new(call::Shared {
            sip: sip_handle.clone(),
            pool,
            events: events.clone(),
            event_sink: config.event_sink.clone(),
            engine: commands.clone(),
            advertise: SocketAddr::new(config.advertise_ip, sip_local.port()),
            advertise_tcp: sip_local_tcp.map(|a| SocketAddr::new(config.advertise_ip, a.port())),
            prompts: prompts.clone(),
        });
        let dispatcher = Dispatcher {
            sip_events,
            sip: sip_handle,
            commands: command_rx,
            shared,
            config,
            calls: HashMap::new(),
            by_id: HashMap::new(),
            keys: HashMap::new(),
            next_id: 1,
            draining: None,
            active: active.clone(),
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
                sip: sip_for_handle,
                advertise_ip,
                sink,
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
    /// Client transaction → SIP Call-ID.
    keys: HashMap<TransactionKey, String>,
    next_id: u64,
    /// Set once draining: who waits for the last call to end.
    draining: Option<Vec<oneshot::Sender<()>>>,
    /// `calls.len()`, published for [`EngineHandle::active_calls`].
    active: Arc<std::sync::atomic::AtomicUsize>,
}

impl Dispatcher {
    async fn run(mut self) {
        loop {
            tokio::select! {
                // Commands first: a call's RegisterKey must be seen before the events of
                // that transaction, which can only come later over the network.
                biased;
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.sip.shutdown().await;
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
            }
        }
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Originate { request, reply } => {
                let _ = reply.send(self.originate(*request));
            }
            Command::Hangup(id) => {
                if let Some(route) = self.by_id.get(&id).and_then(|i| self.calls.get(i)) {
                    deliver(route, CallInput::Hangup);
                }
            }
            Command::Drain { grace, reply } => {
                let waiters = self.draining.get_or_insert_with(Vec::new);
                waiters.push(reply);
                for route in self.calls.values() {
                    deliver(route, CallInput::Drain { grace });
                }
                self.check_drained();
            }
            Command::RegisterKey { key, call_ident } => {
                if self.calls.contains_key(&call_ident) {
                    self.keys.insert(key, call_ident);
                }
            }
            Command::Ended { call_ident } => {
                if let Some(route) = self.calls.remove(&call_ident) {
                    self.by_id.remove(&route.id);
                }
                self.active
                    .store(self.calls.len(), std::sync::atomic::Ordering::Relaxed);
                self.keys.retain(|_, v| *v != call_ident);
                self.check_drained();
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn check_drained(&mut self) {
        if self.calls.is_empty()
            && let Some(waiters) = self.draining.as_mut()
        {
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
        self.calls.insert(call_ident, Route { id, tx });
        self.active
            .store(self.calls.len(), std::sync::atomic::Ordering::Relaxed);
        (id, rx)
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
            .filter(|s| s.is_backlogged())
        {
            sink.on_refused();
            return Err(EngineError::StoreBacklog);
        }
        let call_ident = format!("{:016x}@callplane", random_u64());
        let (id, rx) = self.new_route(call_ident.clone());
        tokio::spawn(
            call::run(
                self.shared.clone(),
                id,
                call_ident,
                CallSetup::Outbound(Box::new(request)),
                rx,
            )
            .instrument(tracing::info_span!("call", call = %id)),
        );
        Ok(id)
    }

    fn handle_sip(&mut self, ev: SipEvent) {
        let at = ev.at;
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
                match self.calls.get(&dialog.call_id) {
                    Some(route) => deliver(route, CallInput::Sip { at, event }),
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
                    Some(route) => deliver(route, CallInput::Sip { at, event }),
                    // A response to the BYE of a call that has ended: nothing to do.
                    None => tracing::debug!(?ident, "SIP event for no live call"),
                }
            }
            event @ (EndpointEvent::TransactionTimeout { .. }
            | EndpointEvent::TransportError { .. }) => {
                let key = match &event {
                    EndpointEvent::TransactionTimeout { key }
                    | EndpointEvent::TransportError { key } => key,
                    _ => return,
                };
                if let Some(route) = self.keys.get(key).and_then(|i| self.calls.get(i)) {
                    deliver(route, CallInput::Sip { at, event });
                }
            }
            EndpointEvent::TransactionTerminated { key, .. } => {
                self.keys.remove(&key);
            }
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
                    let mut resp = response_to(&request, StatusCode::SERVICE_UNAVAILABLE, None);
                    resp.add_to_tag(&format!("{:08x}", random_u64() as u32));
                    // §21.5.4: "The server MAY include a Retry-After header field".
                    resp.headers.push(
                        HeaderName::RetryAfter,
                        self.config.retry_after_s.to_string(),
                    );
                    self.respond(key, resp);
                    return;
                }
                let (id, rx) = self.new_route(ident.clone());
                tokio::spawn(
                    call::run(
                        self.shared.clone(),
                        id,
                        ident,
                        CallSetup::Inbound(Box::new(InboundCall {
                            at,
                            invite: request,
                            key,
                            source,
                            transport,
                            config: self.config.inbound.clone(),
                        })),
                        rx,
                    )
                    .instrument(tracing::info_span!("call", call = %id)),
                );
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
