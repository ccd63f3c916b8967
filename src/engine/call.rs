//! One call's task: the driver of its [`CallCore`] (call_core.rs), in the run-loop shape of
//! ARCHITECTURE.md: feed one input, carry out the core's outputs (SIP through the engine's
//! transport, the media session on a media worker, prompts from the shared cache, recorded
//! frames to the writer threads, events to the timeline), sleep until the core's next deadline
//! or the next input. The call's logic is all in the core; this file holds its I/O.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sip::dialog::{InviteSession, Output, next_hop};
use sip::endpoint::EndpointEvent;
use sip::message::{Message, Request, StatusCode};
use sip::transaction::{TransactionKey, Transport};
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;

use super::call_core::{
    self, CallCore, CallEnv, CoreInput, CoreOutput, FrameTarget, RecordInput, Rng, resolve,
};
use super::call_media::CallMedia;
use super::events::{CallEvent, CallId, Outcome};
use super::record_sink::{self, RecordNote, RecordSink};
use super::sink::{CallSink, Committed, EventSink};
use super::{Command, InboundConfig, OriginateRequest, PromptScope, Reoffer, random_u64};
use crate::clock;
use crate::files::{ClosedRecording, Closing, Prompt, PromptCache, Recorder};
use crate::net::media_workers::{FrameRoute, MediaWorkers, WorkerEvent};
use crate::net::rtp_ports::{PlainRtpPair, RtpPortPool, RtpSocketPair};
use crate::net::sip::SipHandle;

/// What every call shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) sip: SipHandle,
    pub(crate) pool: Arc<RtpPortPool>,
    pub(crate) events: broadcast::Sender<CallEvent>,
    /// The lossless copy of every event ([`crate::engine::EngineConfig::event_sink`]).
    pub(crate) event_sink: Option<EventSink>,
    pub(crate) engine: mpsc::Sender<Command>,
    /// What the calls' cores read: our addresses, the limits, the 503 cooldowns.
    pub(crate) env: Arc<CallEnv>,
    /// Decoded prompts, shared by every call: a prompt is decoded once, not once per call.
    /// A std mutex, locked only inside a blocking task for one `get` (never across an await).
    pub(crate) prompts: Arc<std::sync::Mutex<PromptCache>>,
    /// The recording writer threads: a call hands them frames and never touches the disk.
    pub(crate) recorder: Arc<Recorder>,
    /// The media workers that run the calls' media sessions.
    pub(crate) media_workers: Arc<MediaWorkers>,
}

/// How long an ending call waits for its recording's writer to finish the file (the final
/// flush, rename and hash; longer only when the disk is far behind).
const RECORDING_CLOSE_WAIT: Duration = Duration::from_secs(20);

/// How long an ending call waits for its media worker to report the session's end (it answers
/// within a millisecond unless the worker is stuck).
const WORKER_STOP_WAIT: Duration = Duration::from_secs(2);

/// An input from the dispatcher.
// The SIP event travels inline, as in `EndpointEvent` itself: one move through the channel is
// cheaper than a heap allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum CallInput {
    /// A SIP event for this call, with the time the driver saw it.
    Sip {
        at: Instant,
        event: EndpointEvent,
        /// Why the connection failed, for a transport error ([`SipEvent::detail`]).
        ///
        /// [`SipEvent::detail`]: crate::net::sip::SipEvent::detail
        detail: Option<Arc<str>>,
    },
    /// Hang up now.
    Hangup,
    /// The engine drains: end within `grace`.
    Drain { grace: Duration },
    /// Hold, resume or refresh the answered session ([`super::EngineHandle::reoffer`]).
    Reoffer(Reoffer),
}

/// How the call starts.
#[derive(Debug)]
pub(crate) enum CallSetup {
    Outbound(Box<OriginateRequest>),
    Inbound(Box<InboundCall>),
}

/// A new INVITE.
#[derive(Debug)]
pub(crate) struct InboundCall {
    pub(crate) at: Instant,
    pub(crate) invite: Request,
    pub(crate) key: TransactionKey,
    pub(crate) source: SocketAddr,
    /// The transport the INVITE came over; the call's own requests (BYE) use it too.
    pub(crate) transport: Transport,
    pub(crate) config: InboundConfig,
    /// The trunk it came through, when the router knew ([`super::InboundRouter`]).
    pub(crate) trunk_id: Option<String>,
}

/// How long an inbound call waits for its `call.created` to be committed before it answers;
/// past it the INVITE gets 503 (an answered call must have a row, even after a kill -9).
const CREATED_COMMIT_WAIT: Duration = Duration::from_secs(2);

/// Emits timeline events for one call.
struct Timeline {
    id: CallId,
    started: Instant,
    /// The wall clock at `started` (µs since the Unix epoch): an event's `at_unix_us` is this
    /// plus its offset, so that both name the same instant.
    started_unix: i64,
    events: broadcast::Sender<CallEvent>,
    sink: Option<CallSink>,
    tag: Option<Arc<str>>,
    /// Set by whoever emits the call's final event: the call, or the dispatcher aborting it
    /// ([`Abort`]); there is exactly one.
    final_sent: Arc<AtomicBool>,
}

impl Timeline {
    fn emit(&self, kind: &'static str, details: Value) {
        let _ = self.emit_inner(clock::now(), kind, details, false);
    }

    /// Emits an event that happened at `at` (the call core's time).
    fn emit_at(&self, at: Instant, kind: &'static str, details: Value) {
        let _ = self.emit_inner(at, kind, details, false);
    }

    /// Emits an event and returns what fires once the store has committed it (`None` without
    /// a sink: nothing to wait for).
    fn emit_committed(
        &self,
        at: Instant,
        kind: &'static str,
        details: Value,
    ) -> Option<tokio::sync::oneshot::Receiver<Committed>> {
        self.emit_inner(at, kind, details, true)
    }

    fn emit_inner(
        &self,
        at: Instant,
        kind: &'static str,
        details: Value,
        want_commit: bool,
    ) -> Option<tokio::sync::oneshot::Receiver<Committed>> {
        if (kind == "call.completed" || kind == "call.failed")
            && self.final_sent.swap(true, Ordering::SeqCst)
        {
            return None;
        }
        let offset = at.saturating_duration_since(self.started);
        let before = self.started.saturating_duration_since(at);
        let us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let at_unix_us = self
            .started_unix
            .saturating_add(us(offset))
            .saturating_sub(us(before));
        let ev = CallEvent {
            call_id: self.id,
            kind,
            at_unix_us,
            offset_us: u64::try_from(offset.as_micros()).unwrap_or(u64::MAX),
            details,
            tag: self.tag.clone(),
        };
        tracing::debug!(call = %self.id, kind, "call event");
        let wait = match &self.sink {
            Some(sink) => sink.push(ev.clone(), want_commit),
            None => None,
        };
        // Err only means nobody subscribes right now: events are not kept for later.
        let _ = self.events.send(ev);
        wait
    }

    /// Sends what a full store queue held back, waiting for room.
    async fn flush_sink(&self) {
        if let Some(sink) = &self.sink {
            sink.flush().await;
        }
    }
}

/// What the dispatcher keeps to end a call whose task does not end by itself (a drain's last
/// resort): the task to abort and what its final event needs.
#[derive(Debug)]
pub(crate) struct Abort {
    task: tokio::task::AbortHandle,
    id: CallId,
    tag: Option<Arc<str>>,
    started: Instant,
    started_unix: i64,
    final_sent: Arc<AtomicBool>,
    /// The call's end of the store queue (shared with the task: what it held back stays in
    /// order before the final event).
    sink: Option<CallSink>,
}

impl Abort {
    /// Abort the task (its RTP ports and files are released as it is dropped) and record the
    /// end, unless the call already had.
    pub(crate) fn abort(self, shared: &Shared) {
        self.task.abort();
        let timeline = Timeline {
            id: self.id,
            started: self.started,
            started_unix: self.started_unix,
            events: shared.events.clone(),
            sink: self.sink.clone(),
            tag: self.tag,
            final_sent: self.final_sent,
        };
        timeline.emit(
            "call.failed",
            json!({
                "outcome": Outcome::Failed,
                "reason": "the call did not end within the drain",
                "end_reason": "Aborted",
                "teardown": "drain",
            }),
        );
        // The aborted task no longer sends what a full queue held back: send it (and the final
        // event) from here, in order, as room comes.
        if let Some(sink) = self.sink {
            tokio::spawn(async move { sink.flush().await });
        }
    }
}

/// Spawn the call task.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    id: CallId,
    call_ident: String,
    setup: CallSetup,
    rx: mpsc::Receiver<CallInput>,
) -> Abort {
    let tag = match &setup {
        CallSetup::Outbound(req) => req.tag.clone(),
        CallSetup::Inbound(_) => None,
    };
    let final_sent = Arc::new(AtomicBool::new(false));
    let started = clock::now();
    let started_unix = clock::unix_us();
    let sink = shared.event_sink.clone().map(CallSink::new);
    let timeline = Timeline {
        id,
        started,
        started_unix,
        events: shared.events.clone(),
        sink: sink.clone(),
        tag: tag.clone(),
        final_sent: final_sent.clone(),
    };
    let task = tokio::spawn(
        run(shared, timeline, call_ident, setup, rx)
            .instrument(tracing::info_span!("call", call = %id)),
    );
    Abort {
        task: task.abort_handle(),
        id,
        tag,
        started,
        started_unix,
        final_sent,
        sink,
    }
}

/// The call task.
async fn run(
    shared: Arc<Shared>,
    timeline: Timeline,
    call_ident: String,
    setup: CallSetup,
    rx: mpsc::Receiver<CallInput>,
) {
    let id = timeline.id;
    let sink = timeline.sink.clone();
    // The set-up's future and the call are boxed: the task's future then holds neither (nor a
    // second copy of the call, as a match on the set-up's result would keep), and the set-up's
    // state lives only while it runs. Measured (`size_of_val`, release): the task's future was
    // 14.1 KB before the core existed, 14.3 KB with it unboxed; now 3.4 KB plus the 5.5 KB call.
    let call = Box::pin(Call::start(shared.clone(), timeline, &call_ident, setup))
        .await
        .map(Box::new);
    match call {
        Some(mut call) => call.run(rx).await,
        None => tracing::warn!(call = %id, "call could not start"),
    }
    // The slot is freed only once the final event is committed (without a store: now).
    if let Some(sink) = sink {
        sink.settle().await;
    }
    // The dispatcher may be gone at shutdown; nothing left to tell then.
    let _ = shared.engine.send(Command::Ended { call_ident }).await;
}

/// The call task's state: the core and what it cannot hold (the sockets, the media worker's
/// handle, the recording segments being finished, the timeline's channels).
struct Call {
    shared: Arc<Shared>,
    timeline: Timeline,
    core: CallCore,
    /// The call's RTP/RTCP pair, out of the runtime's reactor: the media worker reads and
    /// writes duplicates of its descriptors (the runtime would wake on every datagram for a
    /// socket no task reads: 18 % of `serve`'s CPU at 300 calls, measured). Kept for the whole
    /// call: a failover offers the same port to the next target.
    rtp: Option<PlainRtpPair>,
    media: Option<CallMedia>,
    /// Segments whose sink went with a dropped session (a failover), reported at the end.
    orphans: record_sink::Orphans,
    /// Recording segments being finished by their writer, oldest first.
    closing: VecDeque<Closing>,
    /// Segments opened so far (the next file is segment `n`); the sinks count them.
    record_segments: Arc<AtomicU32>,
    /// The core asked to finish the call ([`CoreOutput::Finish`]), at this instant.
    finish_at: Option<Instant>,
    /// The call came in over TLS: its requests reuse that connection while it is open
    /// ([`destination`]).
    inbound_tls: bool,
}

impl Call {
    async fn start(
        shared: Arc<Shared>,
        timeline: Timeline,
        call_ident: &str,
        setup: CallSetup,
    ) -> Option<Call> {
        let now = clock::now();
        let wall = Duration::from_micros(u64::try_from(clock::unix_us()).unwrap_or(0));
        match setup {
            CallSetup::Outbound(req) => {
                timeline.emit_at(
                    now,
                    "call.created",
                    json!({"direction": "outbound", "to": req.to.to_string(), "sip_call_id": call_ident}),
                );
                let rtp = match shared.pool.allocate().await {
                    Ok(r) => r,
                    Err(e) => {
                        let details = json!({"outcome": Outcome::Failed, "reason": format!("no RTP port: {e}")});
                        timeline.emit("call.failed", details);
                        return None;
                    }
                };
                let core = CallCore::outbound(
                    shared.env.clone(),
                    now,
                    wall,
                    Rng::new(random_u64()),
                    call_ident,
                    &req,
                    rtp.rtp_port(),
                );
                Some(Call::new(shared, timeline, core, rtp, false))
            }
            CallSetup::Inbound(inbound) => {
                let InboundCall {
                    at,
                    invite,
                    key,
                    source,
                    transport,
                    config,
                    trunk_id,
                } = *inbound;
                let secure_uri = invite.uri.as_sip().is_some_and(|u| u.secure);
                let (dialog_config, contact) =
                    call_core::identity(&shared.env, transport, None, secure_uri, random_u64());
                let from = invite
                    .headers
                    .from()
                    .map(|f| f.uri.to_string())
                    .unwrap_or_default();
                let created = timeline.emit_committed(
                    at,
                    "call.created",
                    json!({
                        "direction": "inbound",
                        "from": from,
                        "to": invite.uri.to_string(),
                        "sip_call_id": call_ident,
                        "source": source.to_string(),
                        "transport": call_core::transport_name(transport),
                        "trunk_id": trunk_id,
                    }),
                );
                let local_tag = format!("{:016x}", random_u64());
                let mut session =
                    match InviteSession::uas(at, dialog_config, invite, key, local_tag, contact) {
                        Ok(s) => s,
                        Err(e) => {
                            timeline.emit(
                                "call.failed",
                                json!({"outcome": Outcome::Failed, "reason": e.to_string()}),
                            );
                            return None;
                        }
                    };
                // An answered call must have a row: answer only once `call.created` is
                // committed (bounded; 503 past it, the store is too far behind).
                if let Some(created) = created {
                    let committed = tokio::time::timeout(CREATED_COMMIT_WAIT, async {
                        timeline.flush_sink().await;
                        created.await
                    })
                    .await;
                    if !matches!(committed, Ok(Ok(Committed::Stored))) {
                        tracing::warn!(
                            stored = ?committed.ok().and_then(Result::ok),
                            "call.created not committed in time; refusing the INVITE with 503"
                        );
                        let _ = session.reject(clock::now(), StatusCode::SERVICE_UNAVAILABLE);
                        let mut sip = shared.sip.clone();
                        flush_rejection(&mut session, &mut sip).await;
                        timeline.emit(
                            "call.failed",
                            json!({"outcome": Outcome::Failed, "sip_status": 503,
                                "reason": "the store is behind", "end_reason": "store_backlog"}),
                        );
                        return None;
                    }
                }
                let rtp = match shared.pool.allocate().await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "no RTP port for an inbound call");
                        // Rejected below through the session, so that the caller hears 503.
                        let _ = session.reject(at, StatusCode::SERVICE_UNAVAILABLE);
                        let mut call_shared_sip = shared.sip.clone();
                        flush_rejection(&mut session, &mut call_shared_sip).await;
                        timeline.emit(
                            "call.failed",
                            json!({"outcome": Outcome::Failed, "sip_status": 503, "reason": "no RTP port"}),
                        );
                        return None;
                    }
                };
                let record = config
                    .recordings
                    .as_ref()
                    .map(|dir| dir.join(format!("call-{}-{}.wav", timeline.id, clock::unix_us())));
                // The wall clock at `at`, the instant the core starts from.
                let wall = wall.saturating_sub(now.saturating_duration_since(at));
                let core = CallCore::inbound(
                    shared.env.clone(),
                    at,
                    wall,
                    Rng::new(random_u64()),
                    call_ident,
                    session,
                    source,
                    transport,
                    &config,
                    rtp.rtp_port(),
                    record,
                );
                Some(Call::new(
                    shared,
                    timeline,
                    core,
                    rtp,
                    transport == Transport::Tls,
                ))
            }
        }
    }

    fn new(
        shared: Arc<Shared>,
        timeline: Timeline,
        core: CallCore,
        rtp_pair: RtpSocketPair,
        inbound_tls: bool,
    ) -> Call {
        let rtp_port = rtp_pair.rtp_port();
        let rtp = match rtp_pair.into_plain() {
            Ok(pair) => Some(pair),
            Err(e) => {
                // Deregistering a socket fails only on a broken reactor; the call goes on
                // without media (the attach fails and says so).
                tracing::warn!(error = %e, rtp_port, "RTP sockets lost leaving the runtime");
                None
            }
        };
        Call {
            shared,
            timeline,
            core,
            rtp,
            media: None,
            orphans: record_sink::Orphans::default(),
            closing: VecDeque::new(),
            record_segments: Arc::new(AtomicU32::new(0)),
            finish_at: None,
            inbound_tls,
        }
    }

    async fn run(&mut self, mut rx: mpsc::Receiver<CallInput>) {
        // Once the dispatcher is gone its channel is closed for good: not polled again.
        let mut engine_gone = false;
        loop {
            self.flush().await;
            if let Some(at) = self.finish_at.take() {
                self.finish(at).await;
            }
            // Events a full store queue held back: wait for room (backpressure), in order.
            self.timeline.flush_sink().await;
            if self.core.is_done() {
                return;
            }
            let deadline = self.core.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            let input = tokio::select! {
                input = rx.recv(), if !engine_gone => match input {
                    Some(CallInput::Sip { at, event, detail }) => {
                        self.core.handle_input(at, CoreInput::Sip { event, detail });
                        continue;
                    }
                    Some(CallInput::Hangup) => CoreInput::Hangup,
                    Some(CallInput::Drain { grace }) => CoreInput::Drain { grace },
                    Some(CallInput::Reoffer(what)) => CoreInput::Reoffer(what),
                    // The dispatcher is gone (engine shut down): end the call here.
                    None => {
                        engine_gone = true;
                        CoreInput::EngineGone
                    }
                },
                () = sleep => CoreInput::Timeout,
                closed = next_closed(&mut self.closing) => CoreInput::Record(RecordInput::Closed(closed)),
                event = next_worker_event(&mut self.media) => {
                    self.worker_event(event);
                    continue;
                }
            };
            self.core.handle_input(clock::now(), input);
        }
    }

    /// What the call's media worker said: to the core, but the session's summary, kept for
    /// the final event.
    fn worker_event(&mut self, event: WorkerEvent) {
        let now = clock::now();
        match event {
            WorkerEvent::Media(e) => self.core.handle_input(now, CoreInput::Media(*e)),
            // The call routes its frames to a sink or nowhere (route_frames): none come here.
            WorkerEvent::Records(_) => {}
            WorkerEvent::Sink(note) => {
                for note in record_sink::notes(note) {
                    let input = match note {
                        RecordNote::Started {
                            path,
                            rate,
                            channels,
                        } => RecordInput::Started {
                            path,
                            rate,
                            channels,
                        },
                        RecordNote::OpenFailed(e) => RecordInput::OpenFailed(e),
                        RecordNote::Write {
                            note,
                            dropped_frames,
                        } => RecordInput::Write {
                            note,
                            dropped_frames,
                        },
                        RecordNote::Done(None) => continue,
                        RecordNote::Done(Some(closing)) => {
                            self.closing.push_back(closing);
                            RecordInput::Stopped
                        }
                    };
                    self.core.handle_input(now, CoreInput::Record(input));
                }
            }
            WorkerEvent::Stopped(s) => {
                if let Some(media) = self.media.as_mut() {
                    media.summary = Some(*s);
                }
            }
        }
    }

    /// Carry out what the core asks for, feeding back what it must know, until it waits.
    async fn flush(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                CoreOutput::Event { at, kind, details } => self.timeline.emit_at(at, kind, details),
                CoreOutput::SendRequest {
                    request,
                    transport,
                    tls_name,
                    peer,
                } => {
                    let destination = destination(
                        self.shared.sip.clone(),
                        self.inbound_tls,
                        &request,
                        peer,
                        transport,
                    )
                    .await;
                    let result = self
                        .shared
                        .sip
                        .clone()
                        .send_request_named(request, destination, transport, tls_name)
                        .await
                        .map_err(|e| e.to_string());
                    let input = CoreInput::RequestSent {
                        destination,
                        result,
                    };
                    self.core.handle_input(clock::now(), input);
                }
                CoreOutput::SendResponse { to, response } => {
                    if let Err(e) = self.shared.sip.clone().send_response(to, response).await {
                        tracing::warn!(error = %e, "response not sent");
                    }
                }
                CoreOutput::SendAck {
                    ack,
                    transport,
                    tls_name,
                    peer,
                } => {
                    let destination = destination(
                        self.shared.sip.clone(),
                        self.inbound_tls,
                        &ack,
                        peer,
                        transport,
                    )
                    .await;
                    let result = self
                        .shared
                        .sip
                        .clone()
                        .send_stateless_named(
                            Message::Request(ack),
                            destination,
                            transport,
                            tls_name,
                        )
                        .await
                        .map_err(|e| e.to_string());
                    self.core
                        .handle_input(clock::now(), CoreInput::AckSent(result));
                }
                CoreOutput::CancelInvite { key } => {
                    let result = self
                        .shared
                        .sip
                        .clone()
                        .cancel(key)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    self.core
                        .handle_input(clock::now(), CoreInput::CancelSent(result));
                }
                CoreOutput::StartMedia { session, rtcp_mux } => {
                    let attached = match &self.rtp {
                        Some(p) => self
                            .shared
                            .media_workers
                            .attach(*session, &p.rtp, &p.rtcp, rtcp_mux, FrameRoute::Call)
                            .map_err(|e| e.to_string()),
                        None => Err("the call has no RTP sockets".to_owned()),
                    };
                    let result = attached.map(|link| {
                        self.media = Some(CallMedia {
                            link,
                            summary: None,
                        });
                    });
                    self.core
                        .handle_input(clock::now(), CoreInput::MediaAttached(result));
                }
                CoreOutput::Media(op) => {
                    if let Some(media) = self.media.as_mut() {
                        media.apply(op, clock::now());
                    }
                }
                CoreOutput::RouteFrames(target) => {
                    let route = match target {
                        FrameTarget::Sink { base, mode } => {
                            FrameRoute::Sink(Box::new(RecordSink::new(
                                Arc::clone(&self.shared.recorder),
                                base,
                                Arc::clone(&self.record_segments),
                                mode,
                                Arc::clone(&self.orphans),
                            )))
                        }
                        FrameTarget::Discard => FrameRoute::Discard,
                    };
                    if let Some(media) = self.media.as_mut() {
                        media.route_frames(route);
                    }
                }
                // Its recording sink, if any, hands its segment to `orphans`.
                CoreOutput::DropMedia => self.media = None,
                CoreOutput::LoadPrompt {
                    file,
                    prompts,
                    scope,
                    rate,
                } => {
                    let (path, result) = self.play_prompt(&file, prompts, scope, rate).await;
                    let input = CoreInput::Prompt { file, path, result };
                    self.core.handle_input(clock::now(), input);
                }
                CoreOutput::SendDtmf(digits) => {
                    let result = match self.media.as_mut() {
                        Some(media) => media.send_dtmf(digits),
                        None => Err("no media session".to_owned()),
                    };
                    self.core
                        .handle_input(clock::now(), CoreInput::DtmfSent(result));
                }
                // Carried out by the run loop once this flush is done (`finish` flushes what
                // the ending call still says as it comes).
                CoreOutput::Finish { at } => self.finish_at = Some(at),
            }
        }
    }

    /// Resolve, load and play a prompt: the path shown, and its length or why it does not
    /// play.
    async fn play_prompt(
        &mut self,
        file: &str,
        prompts: Option<PathBuf>,
        scope: PromptScope,
        rate: Option<u32>,
    ) -> (PathBuf, Result<Duration, String>) {
        let resolved = match scope {
            PromptScope::Local => resolve_prompt(file, prompts.as_deref(), PromptScope::Local),
            // Confinement follows symlinks on disk, so it runs on a blocking thread.
            PromptScope::Confined => {
                let name = file.to_owned();
                tokio::task::spawn_blocking(move || {
                    resolve_prompt(&name, prompts.as_deref(), PromptScope::Confined)
                })
                .await
                .unwrap_or_else(|e| Err(format!("prompt resolver failed: {e}")))
            }
        };
        let path = match resolved {
            Ok(path) => path,
            // Refused: the timeline shows the name as given, never where it would lead.
            Err(e) => return (PathBuf::from(file), Err(e)),
        };
        let loaded = match rate {
            Some(rate) => load_cached(&self.shared.prompts, path.clone(), rate).await,
            None => Err("no media session".to_owned()),
        };
        let codec_rate = rate.unwrap_or(8000);
        let started = match self.media.as_mut() {
            Some(media) => loaded.and_then(|prompt| {
                media
                    .play(prompt.samples.clone(), prompt.rate, codec_rate)
                    .map(|()| prompt.duration)
            }),
            None => Err("no media session".to_owned()),
        };
        (path, started)
    }

    /// The call has ended: stop its media session, finish its recordings, and let the core
    /// report the end.
    async fn finish(&mut self, ended_at: Instant) {
        if let Some(media) = self.media.as_mut() {
            media.stop(ended_at);
        }
        self.settle_worker_media().await;
        self.feed(CoreInput::MediaStopped).await;
        let orphans = std::mem::take(
            &mut *self
                .orphans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        // Older than the segments the sinks finished: first.
        for closing in orphans.into_iter().rev() {
            self.feed(CoreInput::Record(RecordInput::Stopped)).await;
            self.closing.push_front(closing);
        }
        self.settle_recordings().await;
        let summary = self.media.as_ref().and_then(CallMedia::summary);
        self.feed(CoreInput::Finalize { media: summary }).await;
    }

    /// One input to the core, and what it asks for at once (an ending call's events go out as
    /// they happen, not after the last recording is closed).
    async fn feed(&mut self, input: CoreInput) {
        self.core.handle_input(clock::now(), input);
        self.flush().await;
    }

    /// A worker's session was asked to stop: take in what it still says (the call's quality
    /// report, the last frames) up to its summary, for at most [`WORKER_STOP_WAIT`].
    async fn settle_worker_media(&mut self) {
        let deadline = tokio::time::Instant::from_std(clock::now() + WORKER_STOP_WAIT);
        loop {
            let Some(media) = self.media.as_mut() else {
                return;
            };
            if media.summary.is_some() {
                return;
            }
            match tokio::time::timeout_at(deadline, media.link.events.recv()).await {
                Ok(Some(event)) => {
                    self.worker_event(event);
                    self.flush().await;
                }
                Ok(None) | Err(_) => {
                    tracing::warn!("the media worker did not report the session's end");
                    return;
                }
            }
        }
    }

    /// Wait (bounded) for the writers to finish every segment being closed, and tell the core.
    async fn settle_recordings(&mut self) {
        let deadline = tokio::time::Instant::from_std(clock::now() + RECORDING_CLOSE_WAIT);
        while let Some(closing) = self.closing.pop_front() {
            let input = match tokio::time::timeout_at(deadline, closing).await {
                Ok(closed) => RecordInput::Closed(closed),
                Err(_) => RecordInput::CloseTimedOut,
            };
            self.feed(CoreInput::Record(input)).await;
        }
    }
}

/// The path of recording segment `n` (0-based): the base path, then `<stem>-2.wav`, ...
pub(super) fn segment_path(base: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return base.to_path_buf();
    }
    let stem = base
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("recording");
    base.with_file_name(format!("{stem}-{}.wav", n + 1))
}

/// Where a prompt file is: a bare name is `<prompts>/<name>.wav`; a relative path is taken
/// under `prompts` when set; an absolute path as is.
///
/// [`PromptScope::Confined`] (a script from the API) refuses, with one message whether or not
/// the file exists (so the refusal is no existence oracle), every name that is absolute or has
/// a component other than a plain name (`..`, `.`), and a call without a prompts directory.
/// What is left names something inside the directory; it is then canonicalised (following
/// symlinks) and refused unless it still lies inside the canonical directory. The canonical
/// path is returned so that the file loaded is the one checked. `Confined` touches the disk:
/// call it on a blocking thread (`Local` does not).
pub(crate) fn resolve_prompt(
    file: &str,
    prompts: Option<&Path>,
    scope: PromptScope,
) -> Result<PathBuf, String> {
    let path = Path::new(file);
    if scope == PromptScope::Confined {
        let plain = path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if file.is_empty() || !plain || file.contains('\\') {
            return Err("refused: not a prompt name inside the tenant's prompts directory".into());
        }
    }
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let relative = if path.extension().is_none() && !file.contains('/') {
        PathBuf::from(format!("{file}.wav"))
    } else {
        path.to_path_buf()
    };
    let Some(dir) = prompts else {
        return match scope {
            PromptScope::Local => Ok(relative),
            PromptScope::Confined => Err("refused: this call has no prompts directory".into()),
        };
    };
    let joined = dir.join(relative);
    if scope == PromptScope::Local {
        return Ok(joined);
    }
    match crate::files::resolve_inside(dir, &joined) {
        Ok(Some(real)) => Ok(real),
        Ok(None) => {
            Err("refused: the prompt resolves outside the tenant's prompts directory".into())
        }
        Err(e) => Err(format!("prompt {file:?} not found: {e}")),
    }
}

/// Where a request of ours goes: its next hop (§8.1.2), except on an inbound TLS call while
/// the connection its INVITE came over is open: there, over that connection (the connection
/// reuse of RFC 5923, which TLS peers expect: their Contact is often an IP address their
/// certificate does not name, or not listening at all). A free function: a borrow of the call
/// held across the await would need the call to be `Sync`, which its SRTP contexts are not.
async fn destination(
    sip: SipHandle,
    inbound_tls: bool,
    request: &Request,
    peer: SocketAddr,
    transport: Transport,
) -> SocketAddr {
    if transport == Transport::Tls && inbound_tls && sip.has_stream(peer, Transport::Tls).await {
        return peer;
    }
    resolve(&next_hop(request), peer)
}

/// The next event of the call's media worker; never, before its media starts.
async fn next_worker_event(media: &mut Option<CallMedia>) -> WorkerEvent {
    match media.as_mut() {
        Some(media) => match media.link.events.recv().await {
            Some(event) => event,
            // The worker is gone (it never drops a live session's channel otherwise).
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// The first recording segment being closed, once its writer has finished it (pending while
/// none is).
async fn next_closed(closing: &mut VecDeque<Closing>) -> ClosedRecording {
    match closing.front_mut() {
        Some(first) => {
            let closed = first.await;
            closing.pop_front();
            closed
        }
        None => std::future::pending().await,
    }
}

/// A prompt from the shared cache, decoded on a blocking thread when it is not cached. The
/// lock is taken inside the blocking task, so no await ever holds it.
pub(crate) async fn load_cached(
    cache: &Arc<std::sync::Mutex<PromptCache>>,
    path: PathBuf,
    rate: u32,
) -> Result<Prompt, String> {
    let cache = cache.clone();
    tokio::task::spawn_blocking(move || {
        // A poisoned lock only means another decode panicked; the cache itself stays valid.
        let mut cache = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.get(&path, rate).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("prompt loader failed: {e}"))?
}

/// Send the 503 of an inbound call refused for want of an RTP port: an overload reply, so sent
/// once and statelessly, like the dispatcher's capacity 503 (no retransmission to keep going).
async fn flush_rejection(session: &mut InviteSession, sip: &mut SipHandle) {
    while let Some(out) = session.poll_output() {
        if let Output::SendResponse { to, response } = out
            && let Err(e) = sip.send_response_stateless(to, response).await
        {
            tracing::warn!(error = %e, "503 not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip::message::Uri;

    #[test]
    fn resolve_uses_ip_literal_hosts_and_falls_back_for_names() {
        let fallback: SocketAddr = "192.0.2.1:5060".parse().expect("addr");
        let uri = Uri::parse(b"sip:bob@127.0.0.1:5080").expect("uri");
        assert_eq!(
            resolve(&uri, fallback),
            "127.0.0.1:5080".parse().expect("addr")
        );
        let uri = Uri::parse(b"sip:bob@127.0.0.1").expect("uri");
        assert_eq!(
            resolve(&uri, fallback),
            "127.0.0.1:5060".parse().expect("addr")
        );
        let uri = Uri::parse(b"sip:bob@[::1]:5062").expect("uri");
        assert_eq!(resolve(&uri, fallback), "[::1]:5062".parse().expect("addr"));
        let uri = Uri::parse(b"sip:bob@example.com").expect("uri");
        assert_eq!(resolve(&uri, fallback), fallback);
    }

    #[test]
    fn prompt_names_resolve_under_the_prompts_directory() {
        let dir = Path::new("/srv/prompts");
        let local = |file: &str, dir: Option<&Path>| {
            resolve_prompt(file, dir, PromptScope::Local).expect("local paths are allowed")
        };
        assert_eq!(
            local("welcome", Some(dir)),
            PathBuf::from("/srv/prompts/welcome.wav")
        );
        assert_eq!(
            local("fr/welcome.wav", Some(dir)),
            PathBuf::from("/srv/prompts/fr/welcome.wav")
        );
        assert_eq!(local("/abs/x.wav", Some(dir)), PathBuf::from("/abs/x.wav"));
        assert_eq!(local("welcome", None), PathBuf::from("welcome.wav"));
    }

    #[test]
    fn confined_prompts_resolve_only_inside_the_prompts_directory() {
        let data = tempfile::tempdir().expect("tempdir");
        let tenant = data.path().join("prompts").join("ten_a");
        let other = data.path().join("prompts").join("ten_b");
        std::fs::create_dir_all(&tenant).expect("mkdir");
        std::fs::create_dir_all(&other).expect("mkdir");
        std::fs::write(tenant.join("hello.wav"), b"x").expect("write");
        std::fs::write(other.join("secret.wav"), b"x").expect("write");
        let confined = |file: &str| resolve_prompt(file, Some(&tenant), PromptScope::Confined);

        let real_tenant = std::fs::canonicalize(&tenant).expect("canonical");
        assert_eq!(confined("hello"), Ok(real_tenant.join("hello.wav")));
        assert_eq!(confined("hello.wav"), Ok(real_tenant.join("hello.wav")));

        // Refused before the disk is looked at: one message whether the target exists or not.
        let secret = other.join("secret.wav").display().to_string();
        let refusals = [
            confined("../ten_b/secret.wav"),
            confined("../ten_b/missing.wav"),
            confined(&secret),
            confined("/etc/passwd"),
            confined("/no/such/file.wav"),
            confined(".."),
            confined("./hello.wav"),
            confined(""),
        ];
        for refused in &refusals {
            assert_eq!(refused, &refusals[0]);
        }
        assert!(
            refusals[0]
                .as_ref()
                .is_err_and(|e| e.starts_with("refused"))
        );

        // A symlink inside the directory that leads out of it is refused too.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(other.join("secret.wav"), tenant.join("link.wav"))
                .expect("symlink");
            let linked = confined("link").expect_err("a link out is refused");
            assert!(linked.contains("outside"), "{linked}");
        }
        assert!(confined("missing").is_err_and(|e| e.contains("not found")));
        assert!(
            resolve_prompt("hello", None, PromptScope::Confined).is_err(),
            "a confined call without a prompts directory plays nothing"
        );
    }

    #[test]
    fn later_recording_segments_get_numbered_names() {
        let base = Path::new("/rec/call-1.wav");
        assert_eq!(segment_path(base, 0), PathBuf::from("/rec/call-1.wav"));
        assert_eq!(segment_path(base, 1), PathBuf::from("/rec/call-1-2.wav"));
        assert_eq!(segment_path(base, 2), PathBuf::from("/rec/call-1-3.wav"));
    }
}
