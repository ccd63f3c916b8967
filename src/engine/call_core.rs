//! The call as a sans-IO state machine (#12, Build point 1): [`CallCore`].
//!
//! The core owns the call's INVITE session, its SDP negotiator, its script runner, its phase
//! ([`CallState`]) and its timer table ([`Timers`]), and it has the contract of the `sip` and
//! `media` crates: [`CallCore::handle_input`] takes one input with the time it happened,
//! [`CallCore::poll_output`] hands out what the call wants done, in order, and
//! [`CallCore::poll_timeout`] says when it next wants [`CoreInput::Timeout`]. It never reads a
//! clock, opens a socket, touches a file or awaits: the tokio task in `call.rs` drives it
//! (sends its SIP through the engine's transport, runs its media session on a media worker,
//! loads its prompts, hands its recorded frames to the writer threads, stores its timeline),
//! and the engine scenarios in `call_core/tests.rs` drive it in virtual time through an in-memory
//! network (docs/media/callcore.md).
//!
//! Where the driver's work has a result the call must know (the transaction key of a request
//! sent, a send that failed, a prompt that could not load, a media worker that refused the
//! session), the driver feeds it back as an input before it polls the next output, so the core
//! sees the same order of things as when it did the I/O itself.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::rtp::Ssrc;
use media::sdp::{Negotiated, Negotiator, Sdp, SdpConfig, SdpError, SrtpPolicy};
use media::session::{MediaEvent, MediaSession, SessionConfig};
use media::srtp::{MasterKey, SrtpParams};
use serde_json::{Value, json};
use sip::dialog::{DialogConfig, DialogEvent, EndReason, InviteParams, InviteSession, Output};
use sip::endpoint::EndpointEvent;
use sip::message::{
    HeaderName, Host, Method, NameAddr, Request, Response, SipUri, StatusCode, Uri,
};
use sip::transaction::{TransactionKey, Transport};

use super::call_state::{CallState, OutcomeFacts, Timer, Timers, outcome};
use super::events::Outcome;
use super::limits::CallLimits;
use super::{
    CallRoute, DtmfMode, InboundAnswer, InboundConfig, OriginateRequest, PromptScope, Reoffer,
    SipOptions,
};
use crate::files::{ClosedRecording, RecordingNote};
use crate::net::media_workers::MediaSummary;
use crate::script::{Action, RecordMode, Script, ScriptInput, ScriptRunner};

/// What every call's core reads from its engine: our addresses, the limits, and the targets
/// cooling down after a 503. Plain data (the cooldown table behind a std mutex held for one
/// lookup or insert).
#[derive(Debug)]
pub(crate) struct CallEnv {
    /// Our SIP address as peers should see it (Via, Contact).
    pub(crate) advertise: SocketAddr,
    /// The same for TCP, when the engine listens on TCP.
    pub(crate) advertise_tcp: Option<SocketAddr>,
    /// Our TLS listener's address as peers reach it, when there is one.
    pub(crate) advertise_tls: Option<SocketAddr>,
    /// The address our SDP names for RTP (the RTP port pool's).
    pub(crate) media_ip: IpAddr,
    /// RTP timeout, session timers, longest call, refused media addresses.
    pub(crate) limits: CallLimits,
    /// Targets that answered 503 with Retry-After, and until when a failover call skips them
    /// (RFC 3261 §21.5.4, RFC 3263 §4.3); bounded by [`MAX_COOLDOWNS`].
    pub(crate) cooldowns: Mutex<HashMap<SocketAddr, Instant>>,
    /// A fresh SRTP master key for an offer or answer we make (`None`: no entropy, and no
    /// SRTP); [`os_srtp_key`] in the engine.
    pub(crate) srtp_key: fn() -> Option<MasterKey>,
}

/// The core's random numbers (tags, SSRCs, initial sequence numbers and timestamps, digest
/// cnonce seeds, SDP session ids): SplitMix64 from a seed the driver draws from the OS for each
/// call, so that the core itself reads no entropy and a test can replay a call exactly.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One input to the core; [`CallCore::handle_input`] takes it with the time it happened.
// The SIP event travels inline, as in `EndpointEvent` itself.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum CoreInput {
    /// A SIP event for this call.
    Sip {
        event: EndpointEvent,
        /// Why the connection failed, for a transport error.
        detail: Option<Arc<str>>,
    },
    /// Hang up now (the API, the CLI).
    Hangup,
    /// The engine drains: end within `grace`.
    Drain { grace: Duration },
    /// Hold, resume or refresh the answered session.
    Reoffer(Reoffer),
    /// The engine is gone: end the call here.
    EngineGone,
    /// [`CallCore::poll_timeout`] passed.
    Timeout,
    /// What became of a [`CoreOutput::SendRequest`]: the client transaction's key, or why it
    /// was not sent.
    RequestSent {
        /// Where it went (the driver's choice of next hop).
        destination: SocketAddr,
        result: Result<TransactionKey, String>,
    },
    /// What became of a [`CoreOutput::SendAck`].
    AckSent(Result<(), String>),
    /// What became of a [`CoreOutput::CancelInvite`].
    CancelSent(Result<(), String>),
    /// What became of a [`CoreOutput::StartMedia`]: a media worker runs the session now, or
    /// why none took it.
    MediaAttached(Result<(), String>),
    /// An event of the call's media session.
    Media(MediaEvent),
    /// What became of a [`CoreOutput::SendDtmf`].
    DtmfSent(Result<(), String>),
    /// What became of a [`CoreOutput::LoadPrompt`]: the prompt plays (its path and length), or
    /// why it does not.
    Prompt {
        file: String,
        path: PathBuf,
        result: Result<Duration, String>,
    },
    /// What the recording sink said.
    Record(RecordInput),
    /// [`CoreOutput::Finish`]: the media session has stopped (and said what it still had to).
    MediaStopped,
    /// [`CoreOutput::Finish`]: every recording segment is finished, and the media session's
    /// last figures: report the end.
    Finalize { media: Option<MediaSummary> },
}

/// What the recording sink (on the media worker) said, as the core hears it.
#[derive(Debug)]
pub(crate) enum RecordInput {
    /// A segment's file was opened at its first frame.
    Started {
        path: PathBuf,
        rate: u32,
        channels: u16,
    },
    /// The segment's file could not be opened.
    OpenFailed(String),
    /// What the recording said of a write, and the frames it had dropped by then.
    Write {
        note: RecordingNote,
        dropped_frames: u64,
    },
    /// A segment stopped and is being finished by its writer.
    Stopped,
    /// A segment's writer finished it (or failed to).
    Closed(ClosedRecording),
    /// A segment's writer did not finish it in time.
    CloseTimedOut,
}

/// A change to the running media session ([`media::session::MediaSession`]'s setters).
#[derive(Debug)]
pub(crate) enum MediaOp {
    StopPlayback,
    /// Report the peer's voice activity (a script's `listen`), or stop.
    DetectVoice(bool),
    /// Send the peer's audio back (a script's `echo`), or stop.
    Echo(bool),
    SetRemote(Option<SocketAddr>, Option<SocketAddr>),
    SetSrtp(Option<SrtpParams>),
    SetDirection {
        send: bool,
        expect_inbound: bool,
    },
    RearmRtpTimeout,
}

/// Where the media session's recorded frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameTarget {
    /// A new recording sink: the next segment of `base`, in `mode`.
    Sink { base: PathBuf, mode: RecordMode },
    /// Nowhere.
    Discard,
}

/// What the call wants done, in order ([`CallCore::poll_output`]).
#[derive(Debug)]
pub(crate) enum CoreOutput {
    /// A timeline event, stamped with the core's time.
    Event {
        at: Instant,
        kind: &'static str,
        details: Value,
    },
    /// Send a request (its transaction is the engine's); answer with [`CoreInput::RequestSent`].
    SendRequest {
        request: Request,
        transport: Transport,
        /// Over TLS: the name the certificate is checked against.
        tls_name: Option<String>,
        /// Where it goes when its next hop names no IP literal.
        peer: SocketAddr,
    },
    /// Send a response through its server transaction (errors are the driver's to log).
    SendResponse {
        to: TransactionKey,
        response: Response,
    },
    /// Send an ACK statelessly; answer with [`CoreInput::AckSent`].
    SendAck {
        ack: Request,
        transport: Transport,
        tls_name: Option<String>,
        peer: SocketAddr,
    },
    /// CANCEL the INVITE transaction `key`; answer with [`CoreInput::CancelSent`].
    CancelInvite { key: TransactionKey },
    /// Run this media session on the call's RTP sockets; answer with
    /// [`CoreInput::MediaAttached`].
    StartMedia {
        session: Box<MediaSession>,
        rtcp_mux: bool,
    },
    /// Change the running media session.
    Media(MediaOp),
    /// Route the recorded frames.
    RouteFrames(FrameTarget),
    /// Forget the media session at once, with no report (a failover to another target).
    DropMedia,
    /// Play a prompt (resolve `file`, load it decoded at `rate` Hz, play it); answer with
    /// [`CoreInput::Prompt`].
    LoadPrompt {
        file: String,
        prompts: Option<PathBuf>,
        scope: PromptScope,
        rate: Option<u32>,
    },
    /// Send DTMF digits through the media session; answer with [`CoreInput::DtmfSent`].
    SendDtmf(Vec<media::dtmf::Digit>),
    /// The call has ended at `at`: stop the media session and feed what it still says, then
    /// [`CoreInput::MediaStopped`]; finish every recording segment, feeding each
    /// [`RecordInput::Closed`]; then [`CoreInput::Finalize`]. The core then emits the final
    /// event and is done ([`CallCore::is_done`]).
    Finish { at: Instant },
}

/// How far the end of the call has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finishing {
    Live,
    /// [`CoreOutput::Finish`] is out.
    Stopping,
    /// The final event is out.
    Done,
}

/// How long after a hangup a call that has not ended by the protocol (no 487 to our CANCEL,
/// no provisional response to send the CANCEL after, no ACK for our 2xx before a BYE may go)
/// is torn down: it ends in our books and its slot is freed. (Eight T1: a CANCEL or a 2xx has
/// been sent four times by then.)
pub(crate) const HANGUP_TEARDOWN: Duration = Duration::from_secs(4);
/// The same at a drain's end: the drain must return soon after its grace.
pub(crate) const DRAIN_TEARDOWN: Duration = Duration::from_secs(1);

/// At most this many targets are remembered as cooling down after a 503 with Retry-After.
const MAX_COOLDOWNS: usize = 1024;
/// The longest Retry-After honoured (a hostile or broken peer could ask for years).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How long the INVITE to one target may go without any response (not even 100 Trying)
/// before the call moves to the next target, when there is one. Timer B (64*T1 = 32 s) is far
/// too long for a caller waiting on a ring: a live UDP peer answers an INVITE with 100 within
/// a few hundred milliseconds (§17.2.1 asks for it within 200 ms), so four seconds without a
/// byte means the target is gone. This is how a call to two targets, the first of which never
/// answers, succeeds on the second within Timer B of the first attempt. Without another target
/// the INVITE simply waits for Timer B (or the ring timeout).
pub(crate) const NO_RESPONSE_FAILOVER: Duration = Duration::from_secs(4);

/// How long a call that sent BYE with credentials configured waits for the BYE's final
/// response, so that a 401/407 to it can be answered (RFC 3261 §22.2) before the call ends.
const BYE_AUTH_WAIT: Duration = Duration::from_secs(4);

/// One way to reach the callee: the primary target of an [`OriginateRequest`] or one of its
/// alternates.
#[derive(Debug, Clone)]
struct Target {
    to: Uri,
    destination: SocketAddr,
    transport: Transport,
    sip: SipOptions,
    label: String,
}

impl Target {
    fn primary(req: &OriginateRequest) -> Target {
        let label = match &req.sip.trunk_id {
            Some(t) => format!("trunk {t} {}", req.destination),
            None => req.destination.to_string(),
        };
        Target {
            to: req.to.clone(),
            destination: req.destination,
            transport: req.transport,
            sip: req.sip.clone(),
            label,
        }
    }

    fn alternate(route: &CallRoute) -> Target {
        Target {
            to: route.to.clone(),
            destination: route.destination,
            transport: route.transport,
            sip: route.sip.clone(),
            label: route.label.clone(),
        }
    }
}

/// The outbound proxy of `sip` as a preloaded loose route (RFC 3261 §8.1.2: "the UAC MUST put
/// the URI of the outbound proxy in a Route header field" when told to, with `lr` so that the
/// Request-URI stays the callee's).
fn preloaded_route(sip: &SipOptions) -> Option<NameAddr> {
    let mut uri = sip.outbound_proxy.clone()?;
    if let Uri::Sip(s) = &mut uri
        && !s.lr()
    {
        s.params.set("lr", None::<&str>);
    }
    Some(NameAddr::new(uri))
}

/// A trunk's extra INVITE headers, minus any whose name or value could not go on the wire
/// (they are checked when the trunk is saved; this is the last line).
fn extra_headers(sip: &SipOptions) -> Vec<(HeaderName, String)> {
    const MAX_EXTRA_HEADERS: usize = 32;
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
    sip.headers
        .iter()
        .filter(|(n, v)| {
            let ok = !n.is_empty()
                && n.len() <= 64
                && n.bytes().all(tchar)
                && v.len() <= 1024
                && !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
            if !ok {
                tracing::warn!(header = %n, "extra header dropped: not a valid header field");
            }
            ok
        })
        .take(MAX_EXTRA_HEADERS)
        .map(|(n, v)| (HeaderName::from_bytes(n.as_bytes()), v.clone()))
        .collect()
}

/// One call's logic, with no I/O ([the module docs](self)).
pub(crate) struct CallCore {
    env: Arc<CallEnv>,
    /// The time of the latest input: what the core's events are stamped with and its
    /// deadlines counted from.
    now: Instant,
    /// What the call wants done, oldest first.
    out: VecDeque<CoreOutput>,
    finishing: Finishing,
    call_ident: String,
    session: InviteSession,
    negotiator: Negotiator,
    /// A media worker runs the call's media session (from [`CoreInput::MediaAttached`] until
    /// the session is dropped by a failover).
    media_on: bool,
    /// Where the call is in its life.
    state: CallState,
    /// Every deadline of the call but its SIP session's and its script's.
    timers: Timers,
    /// The RTP port our SDP names.
    rtp_port: u16,
    rtcp_mux: bool,
    /// Where SIP goes when a URI names no IP literal: the peer we know.
    peer: SocketAddr,
    outbound: bool,
    invite_key: Option<TransactionKey>,
    hangup_after: Option<Duration>,
    /// Why a teardown ([`Timer::Teardown`]) is pending (`hangup`, `drain`).
    teardown: Option<&'static str>,
    /// Why the call was torn down, once it was (it did not end by the protocol in time).
    torn_down: Option<&'static str>,
    /// Final status of our INVITE: code, reason phrase, Q.850 cause.
    final_status: Option<(u16, String, Option<u16>)>,
    trying_seen: bool,
    /// Whether the peer answered our INVITE with anything at all.
    any_response: bool,
    local_failure: bool,
    ring_timed_out: bool,
    play: Option<PathBuf>,
    gather_digits: usize,
    digits: String,
    gather_done: bool,
    /// Where recordings go: the whole call (no script) or each script `record` segment.
    record: Option<PathBuf>,
    /// A recording sink is in the media worker: it opens the segment at its first frame and
    /// writes each frame on the worker's thread (record_sink.rs).
    sink_set: bool,
    record_error: Option<String>,
    /// Script-driven recording: whether frames are wanted now, and in which mode.
    record_active: bool,
    record_mode: RecordMode,
    recordings: Vec<Value>,
    /// The codec's sample rate once media runs (prompts are decoded to it).
    media_rate: Option<u32>,
    script: Option<Arc<Script>>,
    /// Variables an outbound call's script starts with (the API's `variables`).
    preset_variables: BTreeMap<String, String>,
    prompts: Option<PathBuf>,
    /// Which files `prompts`-relative names may reach ([`super::call::resolve_prompt`]).
    prompt_scope: PromptScope,
    runner: Option<ScriptRunner>,
    script_inputs: VecDeque<ScriptInput>,
    script_result: Option<Value>,
    hangup_reason: Option<String>,
    /// UAS: the INVITE's offer, kept until the script answers.
    pending_offer: Option<Bytes>,
    /// UAS: the SDP answer a 183 carried (a script's `early_media`); the 200 carries it again
    /// (RFC 3261 §13.2.1: one answer to the offer).
    early_answer: Option<Bytes>,
    /// The SIP transport of this call's requests and ACKs.
    transport: Transport,
    /// Over TLS: the name the peer's certificate is checked against (`None`: its address).
    tls_name: Option<String>,
    /// Why our INVITE could not be delivered (a TLS handshake error, a refused connection):
    /// the final event's `reason` when no response says more.
    transport_failure: Option<Arc<str>>,
    /// Digits to send once answered, and how long after the answer ([`Timer::Dtmf`]).
    send_dtmf: Vec<media::dtmf::Digit>,
    dtmf_after: Duration,
    /// Whether the negotiated media has telephone-event (how our digits travel).
    telephone_event: bool,
    /// How our digits travel ([`DtmfMode::Info`]: SIP INFO instead of media).
    dtmf_mode: DtmfMode,
    /// INFO digits not sent yet: one INFO is outstanding at a time, the next goes on its
    /// final response.
    info_digits: VecDeque<media::dtmf::Digit>,
    /// A 2xx arrived after our CANCEL (the §9.1 race): we ACK it and BYE at once.
    answered_after_cancel: bool,
    /// Prompts asked for and not yet handed to the driver ([`CoreOutput::LoadPrompt`]).
    pending_plays: VecDeque<String>,
    /// Why we ended the call ourselves when no SIP reason says it (`rtp_timeout`,
    /// `max_duration`, `media_address_refused`): the final event's `end_reason`, and a detail.
    end_cause: Option<(&'static str, Option<String>)>,
    /// The longest this call may last from its answer ([`Timer::MaxDuration`]; before the
    /// answer: counted from the start).
    max_duration: Option<Duration>,
    /// Outbound: the target the INVITE goes to now, the ones left to fail over to, and the
    /// attempt number (1 for the first target).
    target: Option<Target>,
    targets: VecDeque<Target>,
    attempt: u32,
    /// The client transactions of INVITEs given up for a retry or another target: their late
    /// failures and responses no longer concern the call.
    old_invites: Vec<TransactionKey>,
    /// Digits handed to the media session, reported as sent once it took them: the text and
    /// how they travel.
    dtmf_pending: Option<(String, &'static str)>,
    /// Requests handed to the driver whose [`CoreInput::RequestSent`] has not come: method,
    /// whether it is the initial INVITE, CSeq.
    sending: VecDeque<(Method, bool, u32)>,
    /// The Unix time at an instant of the core's clock: our RTCP sender reports' NTP time.
    wall_anchor: (Instant, Duration),
    rng: Rng,
    /// A BYE of ours awaits its final response (which may be a challenge to answer; how long
    /// the call waits for it: [`Timer::ByeWait`]).
    bye_outstanding: bool,
}

/// The SDP policy for a call's SRTP mode.
fn srtp_policy(mode: crate::trunk::SrtpMode) -> SrtpPolicy {
    match mode {
        crate::trunk::SrtpMode::Off => SrtpPolicy::Off,
        crate::trunk::SrtpMode::Offer => SrtpPolicy::Offer,
        crate::trunk::SrtpMode::Require => SrtpPolicy::Require,
    }
}

/// A fresh SDES master key and salt from the OS's CSPRNG (`None` if it fails: then the call
/// neither offers nor accepts SRTP, and a call that requires it fails).
pub(crate) fn os_srtp_key() -> Option<MasterKey> {
    let mut key = [0u8; MasterKey::LEN];
    match getrandom::fill(&mut key) {
        Ok(()) => Some(MasterKey(key)),
        Err(e) => {
            tracing::warn!(error = %e, "no randomness for an SRTP key");
            None
        }
    }
}

/// Whether an answer error is about SRTP (the call ends for it rather than going on mute).
fn is_srtp_error(e: &SdpError) -> bool {
    matches!(
        e,
        SdpError::SrtpRequired | SdpError::BadCryptoAnswer(_) | SdpError::NoCryptoSuite
    )
}

fn advertise_uri(user: Option<&str>, at: SocketAddr) -> Uri {
    let host = match at.ip() {
        IpAddr::V4(v4) => Host::Ipv4(v4),
        IpAddr::V6(v6) => Host::Ipv6(v6.to_string()),
    };
    Uri::Sip(SipUri::new(user, host, Some(at.port())))
}

/// A URI's address when its host is an IP literal; `fallback` otherwise (no DNS here).
pub(crate) fn resolve(uri: &Uri, fallback: SocketAddr) -> SocketAddr {
    if let Some(s) = uri.as_sip() {
        let tls = s.secure || s.transport().is_some_and(|t| t.eq_ignore_ascii_case("tls"));
        let port = s.port.unwrap_or(if tls { 5061 } else { 5060 });
        match &s.host {
            Host::Ipv4(ip) => return SocketAddr::new(IpAddr::V4(*ip), port),
            Host::Ipv6(text) => {
                if let Ok(ip) = text.parse::<Ipv6Addr>() {
                    return SocketAddr::new(IpAddr::V6(ip), port);
                }
            }
            Host::Domain(_) => {}
        }
    }
    fallback
}

impl CallCore {
    /// An outbound call to `req`'s targets (its own, then its alternates), offering RTP on
    /// `rtp_port`: the INVITE is the first output. `wall` is the Unix time at `now`.
    pub(crate) fn outbound(
        env: Arc<CallEnv>,
        now: Instant,
        wall: Duration,
        mut rng: Rng,
        call_ident: &str,
        req: &OriginateRequest,
        rtp_port: u16,
    ) -> CallCore {
        let mut targets: VecDeque<Target> = std::iter::once(Target::primary(req))
            .chain(req.alternates.iter().map(Target::alternate))
            .collect();
        let first =
            next_target(&env, &mut targets, now).expect("the primary target is always there");
        let (mut dialog_config, contact) = identity(
            &env,
            first.transport,
            first.sip.advertise,
            first.to.as_sip().is_some_and(|u| u.secure),
            rng.next(),
        );
        dialog_config.rel100 = first.sip.rel100;
        let mut negotiator = outbound_negotiator(&env, rtp_port, &first.sip, rng.next());
        let offer = negotiator.create_offer();
        let from = req
            .from
            .clone()
            .unwrap_or_else(|| advertise_uri(Some("callplane"), env.advertise));
        let params = InviteParams {
            request_uri: first.to.clone(),
            from: NameAddr::new(from),
            from_tag: format!("{:016x}", rng.next()),
            to: NameAddr::new(first.to.clone()),
            call_id: call_ident.to_owned(),
            cseq: 1,
            contact,
            routes: preloaded_route(&first.sip).into_iter().collect(),
            body: Bytes::from(offer.to_bytes()),
        };
        let mut session =
            InviteSession::uac_with_headers(dialog_config, &params, &extra_headers(&first.sip));
        session.set_credentials(first.sip.credentials.clone(), rng.next());
        session.set_credentials_realm(first.sip.realm.clone());
        let mut call = CallCore::new(
            env,
            now,
            wall,
            rng,
            call_ident,
            session,
            negotiator,
            rtp_port,
            first.destination,
            true,
            Some(now + req.ring_timeout),
            req.hangup_after,
            req.play.clone(),
            req.gather_digits,
            req.record.clone(),
        );
        call.emit_target(1, &first);
        call.transport = first.transport;
        call.tls_name = tls_name(&first.to, &first.sip);
        call.target = Some(first);
        call.targets = targets;
        call.attempt = 1;
        if let Some(max) = req.max_duration {
            call.max_duration = Some(max);
            call.timers.set(Timer::MaxDuration, now.checked_add(max));
        }
        call.send_dtmf = req.send_dtmf.clone();
        call.dtmf_after = req.dtmf_after;
        call.dtmf_mode = req.sip.dtmf;
        if let Some(script) = &req.script {
            call.script = Some(script.clone());
            call.preset_variables = req.variables.clone();
            call.prompts = req.prompts.clone();
            call.prompt_scope = req.prompt_scope;
            // A script with `record` steps records when they say so; without any, a call
            // asked to record (the API's or a campaign's `record`) records from its first
            // frame, as a call without a script does.
            if script.has_record_step() {
                call.record_active = false;
            }
        }
        call
    }

    /// An inbound call: `session` holds the INVITE (received at `now` from `source` over
    /// `transport`), whose offer is `offer`; the call answers, rings or rejects it by
    /// `config`, with RTP on `rtp_port` and its recording (if any) at `record`. `wall` is the
    /// Unix time at `now`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn inbound(
        env: Arc<CallEnv>,
        now: Instant,
        wall: Duration,
        mut rng: Rng,
        call_ident: &str,
        session: InviteSession,
        source: SocketAddr,
        transport: Transport,
        config: &InboundConfig,
        rtp_port: u16,
        record: Option<PathBuf>,
    ) -> CallCore {
        let offer = session.invite().body.clone();
        // Our policy for offers we make (an offerless INVITE) is plain RTP; an RTP/SAVP
        // offer is answered with SRTP (RFC 4568) with this key.
        let negotiator = Negotiator::new(SdpConfig {
            srtp_key: (env.srtp_key)(),
            ..SdpConfig::new(env.media_ip, rtp_port, rng.next() >> 1)
        });
        let mut call = CallCore::new(
            env,
            now,
            wall,
            rng,
            call_ident,
            session,
            negotiator,
            rtp_port,
            source,
            false,
            None,
            None,
            None,
            config.gather_digits,
            record,
        );
        call.transport = transport;
        if let Ok(sdp) = Sdp::parse(&offer)
            && let Some(refused) = call.refused_media(&sdp, true)
        {
            call.end_cause = Some(("media_address_refused", Some(refused.to_string())));
            let _ = call.session.reject(now, StatusCode::new(488).expect("488"));
            return call;
        }
        let dialed = call
            .session
            .invite()
            .uri
            .as_sip()
            .and_then(|u| u.user_unescaped());
        match dialed.and_then(|user| config.by_user.get(&user)) {
            Some(InboundAnswer::Reject(status)) => {
                let status = StatusCode::new(*status)
                    .filter(|s| (400..700).contains(&s.as_u16()))
                    .unwrap_or(StatusCode::SERVER_INTERNAL_ERROR);
                call.end_cause = Some(("rejected_by_route", None));
                let _ = call.session.reject(now, status);
                return call;
            }
            Some(InboundAnswer::Ring) => {
                call.ring(now);
                return call;
            }
            Some(InboundAnswer::Answer {
                send_dtmf,
                dtmf_after,
            }) => {
                call.send_dtmf = send_dtmf.clone();
                call.dtmf_after = *dtmf_after;
            }
            None => {}
        }
        match &config.script {
            Some(script) => {
                // The script decides when to answer (its `answer` step); until then the
                // caller hears ringing, and may CANCEL (§9.1 needs a provisional first).
                call.ring(now);
                // As for an outbound call: `record` steps say when, else the whole call.
                if script.has_record_step() {
                    call.record_active = false;
                }
                call.pending_offer = Some(offer);
                call.prompts = config.prompts.clone();
                call.runner = Some(ScriptRunner::new(script, now));
                call.script = Some(script.clone());
                call.drive_script(now);
            }
            None => call.answer_inbound(now, &offer),
        }
        call
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        env: Arc<CallEnv>,
        now: Instant,
        wall: Duration,
        rng: Rng,
        call_ident: &str,
        session: InviteSession,
        negotiator: Negotiator,
        rtp_port: u16,
        peer: SocketAddr,
        outbound: bool,
        ring_deadline: Option<Instant>,
        hangup_after: Option<Duration>,
        play: Option<PathBuf>,
        gather_digits: usize,
        record: Option<PathBuf>,
    ) -> CallCore {
        let max_duration = env.limits.max_duration;
        let mut timers = Timers::default();
        timers.set(Timer::Ring, ring_deadline);
        timers.set(
            Timer::MaxDuration,
            max_duration.and_then(|d| now.checked_add(d)),
        );
        CallCore {
            env,
            now,
            out: VecDeque::new(),
            finishing: Finishing::Live,
            call_ident: call_ident.to_owned(),
            session,
            negotiator,
            media_on: false,
            state: CallState::Dialing,
            timers,
            rtp_port,
            rtcp_mux: false,
            peer,
            outbound,
            invite_key: None,
            hangup_after,
            teardown: None,
            torn_down: None,
            final_status: None,
            trying_seen: false,
            any_response: false,
            local_failure: false,
            ring_timed_out: false,
            play,
            gather_digits,
            digits: String::new(),
            gather_done: false,
            record_active: record.is_some(),
            record,
            sink_set: false,
            record_error: None,
            record_mode: RecordMode::Stereo,
            recordings: Vec::new(),
            media_rate: None,
            script: None,
            prompts: None,
            prompt_scope: PromptScope::Local,
            runner: None,
            script_inputs: VecDeque::new(),
            preset_variables: BTreeMap::new(),
            script_result: None,
            hangup_reason: None,
            pending_offer: None,
            early_answer: None,
            pending_plays: VecDeque::new(),
            transport: Transport::Udp,
            tls_name: None,
            transport_failure: None,
            send_dtmf: Vec::new(),
            dtmf_after: Duration::ZERO,
            telephone_event: false,
            dtmf_mode: DtmfMode::Auto,
            info_digits: VecDeque::new(),
            answered_after_cancel: false,
            end_cause: None,
            max_duration,
            target: None,
            targets: VecDeque::new(),
            attempt: 0,
            old_invites: Vec::new(),
            dtmf_pending: None,
            sending: VecDeque::new(),
            bye_outstanding: false,
            wall_anchor: (now, wall),
            rng,
        }
    }

    /// Queue a timeline event, stamped with the core's time.
    fn emit(&mut self, kind: &'static str, details: Value) {
        self.out.push_back(CoreOutput::Event {
            at: self.now,
            kind,
            details,
        });
    }

    /// Queue a change to the media session, when one runs.
    fn media_op(&mut self, op: MediaOp) {
        if self.media_on {
            self.out.push_back(CoreOutput::Media(op));
        }
    }

    /// The media address of `sdp` that the policy refuses, if any (`initial`: the call's first
    /// offer/answer, where `0.0.0.0` is no hold).
    fn refused_media(
        &self,
        sdp: &Sdp,
        initial: bool,
    ) -> Option<super::limits::MediaAddressRefused> {
        let refused = self.env.limits.media_addresses.check(sdp, initial).err()?;
        tracing::info!(%refused, "SDP refused (--allow-media-address allows a range)");
        Some(refused)
    }

    /// We end the call for `cause` (the first cause stays).
    fn end_for(&mut self, now: Instant, cause: &'static str, detail: Option<String>) {
        if self.session.is_terminated() {
            return;
        }
        self.end_cause.get_or_insert((cause, detail));
        self.hang_up(now);
    }

    /// UAS: send 180 Ringing.
    fn ring(&mut self, now: Instant) {
        match self
            .session
            .provisional(now, StatusCode::RINGING, Bytes::new(), false)
        {
            Ok(()) => self.state.on_provisional(false),
            Err(e) => tracing::debug!(error = %e, "no 180"),
        }
    }

    /// UAS: 183 Session Progress with our SDP answer, and the media from now on (a script's
    /// `early_media`): the caller hears what the script plays before the answer. Nothing
    /// when the call is answered, already has media, or its INVITE had no offer (our offer
    /// then goes in the 200); an unusable offer is left for the answer to reject.
    fn early_media_inbound(&mut self, now: Instant) {
        if self.media_on || self.early_answer.is_some() {
            return;
        }
        let Some(offer) = self.pending_offer.clone().filter(|o| !o.is_empty()) else {
            return;
        };
        let answered = Sdp::parse(&offer).and_then(|sdp| self.negotiator.receive_offer(&sdp));
        match answered {
            Ok((answer, negotiated)) => {
                let body = Bytes::from(answer.to_bytes());
                match self.session.provisional(
                    now,
                    StatusCode::SESSION_PROGRESS,
                    body.clone(),
                    false,
                ) {
                    Ok(()) => {
                        self.state.on_provisional(true);
                        self.early_answer = Some(body);
                        self.emit(
                            "sip.early_media",
                            json!({"sip_status": 183, "reliable": false, "sent": true}),
                        );
                        self.start_media(now, &negotiated);
                    }
                    Err(e) => tracing::debug!(error = %e, "no 183"),
                }
            }
            Err(e) => tracing::info!(error = %e, "unusable offer: no early media"),
        }
    }

    /// UAS: answer the INVITE with our SDP answer (or an offer, for an offerless INVITE).
    fn answer_inbound(&mut self, now: Instant, offer: &Bytes) {
        if let Some(answer) = self.early_answer.take() {
            // The 183's answer, again; the media runs since.
            if let Err(e) = self.session.accept(now, answer) {
                tracing::warn!(error = %e, "could not accept");
            }
            return;
        }
        if offer.is_empty() {
            // RFC 3264 §5 / RFC 3261 §13.2.1: with no offer in the INVITE, the 2xx carries our
            // offer and the ACK the answer.
            let sdp = self.negotiator.create_offer();
            if let Err(e) = self.session.accept(now, Bytes::from(sdp.to_bytes())) {
                tracing::warn!(error = %e, "could not accept");
            }
            return;
        }
        let answered = Sdp::parse(offer).and_then(|sdp| self.negotiator.receive_offer(&sdp));
        match answered {
            Ok((answer, negotiated)) => {
                match self.session.accept(now, Bytes::from(answer.to_bytes())) {
                    Ok(()) => self.start_media(now, &negotiated),
                    Err(e) => tracing::warn!(error = %e, "could not accept"),
                }
            }
            Err(e) => {
                let status =
                    StatusCode::new(e.sip_status()).unwrap_or(StatusCode::new(488).expect("488"));
                tracing::info!(error = %e, "unusable offer; rejecting");
                if is_srtp_error(&e) {
                    self.end_cause = Some(("srtp_negotiation_failed", Some(e.to_string())));
                }
                let _ = self.session.reject(now, status);
            }
        }
    }

    fn start_media(&mut self, now: Instant, negotiated: &Negotiated) {
        if self.media_on {
            return;
        }
        let mut cfg = SessionConfig::from_negotiated(negotiated, Ssrc(self.rng.next() as u32));
        cfg.rtp_timeout = self.env.limits.rtp_timeout.unwrap_or(Duration::MAX);
        // Recording frames are produced only when someone may want them; a script may start
        // recording at any time, so a scripted call with a destination always asks.
        cfg.record = self.record.is_some();
        self.media_rate = Some(negotiated.codec.sample_rate());
        // A wall-clock anchor makes our RTCP an SR, whose echo (LSR/DLSR) in the peer's report
        // gives the RTT that `media.quality` reports and the E-model's delay uses.
        let unix = self.wall_anchor.1 + now.saturating_duration_since(self.wall_anchor.0);
        cfg.wallclock = Some((now, media::rtp::NtpTime::from_unix(unix)));
        cfg.initial_sequence = self.rng.next() as u16;
        cfg.initial_timestamp = self.rng.next() as u32;
        self.rtcp_mux = cfg.rtcp_mux;
        self.telephone_event = negotiated.telephone_event.is_some();
        if let Some(srtp) = &negotiated.srtp {
            self.emit("media.srtp", json!({"suite": srtp.suite.name()}));
        }
        let session = MediaSession::new(cfg, now);
        // The session runs from here on for what the call asks of it; the worker's answer
        // (MediaAttached) comes before any other output is polled.
        self.media_on = true;
        self.out.push_back(CoreOutput::StartMedia {
            session: Box::new(session),
            rtcp_mux: self.rtcp_mux,
        });
    }

    /// The media worker took the session, or refused it.
    fn media_attached(&mut self, now: Instant, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.route_frames();
                if let Some(path) = self.play.clone() {
                    self.play_prompt(&path.display().to_string());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no media worker took the call");
                self.media_on = false;
                self.end_for(now, "media_failed", Some(e));
            }
        }
    }

    /// Ask for a prompt (a path, or a name under the prompts directory). The driver resolves,
    /// loads and plays it ([`CoreOutput::LoadPrompt`]; decoding touches the disk) and says
    /// how that went ([`CoreInput::Prompt`]).
    fn play_prompt(&mut self, file: &str) {
        self.pending_plays.push_back(file.to_owned());
    }

    /// A prompt started, or could not. When it cannot play, say so on the timeline and let the
    /// script go on as if it had finished.
    fn prompt_result(
        &mut self,
        file: &str,
        path: &std::path::Path,
        started: Result<Duration, String>,
    ) {
        let shown = path.display().to_string();
        let started = if self.media_on {
            started
        } else {
            Err("no media session".to_owned())
        };
        match started {
            Ok(duration) => self.emit(
                "prompt.started",
                json!({"file": file, "path": shown, "duration_ms": duration.as_millis() as u64}),
            ),
            Err(e) => {
                tracing::warn!(error = %e, file, "prompt not played");
                self.emit(
                    "prompt.finished",
                    json!({"file": file, "path": shown, "error": e}),
                );
                self.script_input(ScriptInput::PromptFinished);
            }
        }
    }

    /// Queue an input for the script, if the call runs one.
    fn script_input(&mut self, input: ScriptInput) {
        if self.runner.is_some() {
            self.script_inputs.push_back(input);
        }
    }

    /// Run the script until it waits: perform its actions, feed it queued inputs.
    fn drive_script(&mut self, now: Instant) {
        if self.state.ended().is_some()
            && self.runner.as_ref().is_some_and(|r| !r.is_finished())
            && !self.script_inputs.contains(&ScriptInput::HangupByPeer)
        {
            self.script_inputs.push_back(ScriptInput::HangupByPeer);
        }
        loop {
            if let Some(action) = self.runner.as_mut().and_then(ScriptRunner::poll_action) {
                self.perform(now, action);
                continue;
            }
            let Some(input) = self.script_inputs.pop_front() else {
                break;
            };
            if let Some(runner) = self.runner.as_mut() {
                runner.handle(now, input);
            }
            self.note_variables();
        }
    }

    /// Report what the script's steps stored since the last look (a gather's digits, a
    /// listen's ending), each store once: not the variables the call started with.
    fn note_variables(&mut self) {
        let Some(runner) = self.runner.as_mut() else {
            return;
        };
        for (k, v) in runner.take_stored() {
            self.emit("gather.completed", json!({"variable": k, "digits": v}));
        }
    }

    fn perform(&mut self, now: Instant, action: Action) {
        match action {
            Action::Answer => match self.pending_offer.take() {
                Some(offer) => self.answer_inbound(now, &offer),
                None => {
                    if self.state.answered_at().is_some() {
                        self.script_input(ScriptInput::Answered);
                    }
                }
            },
            Action::Play { file } => self.play_prompt(&file),
            Action::StopPlayback => self.media_op(MediaOp::StopPlayback),
            Action::DetectVoice(on) => self.media_op(MediaOp::DetectVoice(on)),
            Action::EarlyMedia => self.early_media_inbound(now),
            Action::Echo(on) => self.media_op(MediaOp::Echo(on)),
            Action::StartRecording { mode } => {
                if self.record.is_none() {
                    tracing::warn!("the script records, but no recording destination is set");
                    self.script_input(ScriptInput::RecordingStopped);
                } else {
                    self.record_mode = mode;
                    self.record_active = true;
                    // RecordingStarted is fed when the first frame opens the file.
                    self.route_frames();
                }
            }
            Action::StopRecording => {
                self.record_active = false;
                self.close_recording();
                self.script_input(ScriptInput::RecordingStopped);
            }
            Action::Hangup { reason } => {
                self.hangup_reason = Some(reason);
                self.hang_up(now);
            }
            Action::OptOut { reason } => {
                // The control plane (the campaign worker) suppresses the number on this event.
                self.emit("script.opt_out", json!({"reason": reason}));
            }
            Action::SendDtmf { digits } => {
                self.send_dtmf = digits
                    .chars()
                    .filter_map(|c| media::dtmf::Digit::from_char(c).ok())
                    .collect();
                self.send_digits();
            }
            Action::Finished { result } => {
                self.script_result = serde_json::to_value(&result).ok();
            }
        }
    }

    /// Finish the open recording segment, if any. Never waits: the worker finishes the sink
    /// ([`RecordInput::Stopped`] then says `recording.stopped`), its writer thread finishes the
    /// file, and `recording.ready` comes when it has ([`RecordInput::Closed`]).
    fn close_recording(&mut self) {
        self.record_active = false;
        self.route_frames();
    }

    /// Tells the media worker where recorded frames go now: to a new recording sink when the
    /// call records and none is set, nowhere when it does not.
    fn route_frames(&mut self) {
        let wanted = self.record_active && self.record_error.is_none();
        if !self.media_on {
            return;
        }
        let route = match (&self.record, wanted, self.sink_set) {
            (Some(base), true, false) => FrameTarget::Sink {
                base: base.clone(),
                mode: self.record_mode,
            },
            (_, false, true) => FrameTarget::Discard,
            // A call that never records hears of no frames either.
            (_, false, false) if self.record.is_some() => FrameTarget::Discard,
            _ => return,
        };
        self.sink_set = matches!(route, FrameTarget::Sink { .. });
        self.out.push_back(CoreOutput::RouteFrames(route));
    }

    /// What the recording sink said, in order with the session's events.
    fn record_input(&mut self, note: RecordInput) {
        match note {
            RecordInput::Started {
                path,
                rate,
                channels,
            } => {
                self.emit(
                    "recording.started",
                    json!({"path": path.display().to_string(), "rate": rate, "channels": channels}),
                );
                self.script_input(ScriptInput::RecordingStarted);
            }
            RecordInput::OpenFailed(error) => {
                tracing::warn!(%error, "recording not started");
                self.emit("recording.failed", json!({"error": error}));
                self.record_error = Some(error);
                self.route_frames();
                self.script_input(ScriptInput::RecordingStopped);
            }
            RecordInput::Write {
                note,
                dropped_frames,
            } => self.recording_note(note, dropped_frames),
            RecordInput::Stopped => self.emit("recording.stopped", json!({})),
            RecordInput::Closed(closed) => self.recording_closed(closed),
            RecordInput::CloseTimedOut => {
                let e = "the recording writer did not finish the recording in time".to_owned();
                tracing::warn!("{e}");
                self.emit("recording.failed", json!({"error": e}));
                self.record_error = Some(e);
            }
        }
    }

    /// A recording segment's writer finished it.
    fn recording_closed(&mut self, closed: ClosedRecording) {
        let loss = closed.loss;
        match closed.result {
            Ok(done) => {
                let info = json!({
                    "path": done.path.display().to_string(),
                    "duration_ms": done.duration.as_millis() as u64,
                    "channels": done.channels,
                    "sha256": done.sha256,
                    "bytes": done.bytes,
                    // Frames the writer's full queue dropped (silence in the file instead).
                    "dropped_frames": loss.dropped_frames,
                    "dropped_ms": loss.dropped.as_millis() as u64,
                });
                self.emit("recording.ready", info.clone());
                self.recordings.push(info);
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording not finalized");
                if !closed.failure_reported {
                    self.emit(
                        "recording.failed",
                        json!({"error": e, "dropped_frames": loss.dropped_frames}),
                    );
                }
                self.record_error = Some(e);
            }
        }
    }

    /// Take one input, which happened at `now` (never earlier than the previous input's).
    pub(crate) fn handle_input(&mut self, now: Instant, input: CoreInput) {
        self.now = self.now.max(now);
        let now = self.now;
        match input {
            CoreInput::Sip { event, detail } => {
                if let (EndpointEvent::TransportError { key, .. }, Some(detail)) = (&event, detail)
                    && key.method() == &Method::Invite
                {
                    self.transport_failure = Some(detail);
                }
                self.handle_sip(now, event);
            }
            CoreInput::Hangup => self.hang_up(now),
            CoreInput::Drain { grace } => {
                self.timers.set_earlier(Timer::Drain, now + grace);
            }
            CoreInput::Reoffer(what) => self.reoffer(now, what),
            CoreInput::EngineGone => {
                self.hang_up(now);
                self.state.end_unless_ended(EndReason::LocalBye, now);
            }
            CoreInput::Timeout => self.handle_deadlines(now),
            CoreInput::RequestSent {
                destination,
                result,
            } => self.request_sent(now, destination, result),
            CoreInput::AckSent(result) => match result {
                Ok(()) => self.emit("sip.ack_sent", json!({})),
                Err(e) => tracing::warn!(error = %e, "ACK not sent"),
            },
            CoreInput::CancelSent(result) => match result {
                Ok(()) => {
                    self.state.on_cancel_sent();
                    self.emit("sip.cancel_sent", json!({}));
                }
                Err(e) => tracing::warn!(error = %e, "CANCEL not sent"),
            },
            CoreInput::MediaAttached(result) => self.media_attached(now, result),
            CoreInput::Media(event) => self.media_event(event),
            CoreInput::DtmfSent(result) => self.dtmf_sent(result),
            CoreInput::Prompt { file, path, result } => self.prompt_result(&file, &path, result),
            CoreInput::Record(note) => self.record_input(note),
            CoreInput::MediaStopped => {
                // The worker finished the sink with the session (or never answered: the sink
                // is gone).
                self.sink_set = false;
                self.close_recording();
            }
            CoreInput::Finalize { media } => self.finalize(media),
        }
    }

    /// The next thing the call wants done, in order; `None` when it waits for an input or a
    /// deadline. Driving the SIP session and the script happens here, so every output of
    /// one input is out before the next input comes.
    pub(crate) fn poll_output(&mut self) -> Option<CoreOutput> {
        loop {
            if let Some(out) = self.out.pop_front() {
                return Some(out);
            }
            if let Some(out) = self.session.poll_output() {
                self.session_output(out);
                continue;
            }
            if let Some(file) = self.pending_plays.pop_front() {
                return Some(CoreOutput::LoadPrompt {
                    file,
                    prompts: self.prompts.clone(),
                    scope: self.prompt_scope,
                    rate: self.media_rate,
                });
            }
            // The script reacts to what the outputs and inputs queued for it (a prompt ended,
            // the peer hung up) before the call sleeps or finishes.
            if self.finishing == Finishing::Live && self.runner.is_some() {
                self.drive_script(self.now);
                if !self.out.is_empty() || !self.pending_plays.is_empty() {
                    continue;
                }
                if let Some(out) = self.session.poll_output() {
                    self.session_output(out);
                    continue;
                }
            }
            let ended = self.state.ended();
            if let Some((_, at)) = ended
                && self.finishing == Finishing::Live
                && !self.awaiting_bye_answer(self.now)
            {
                self.finishing = Finishing::Stopping;
                return Some(CoreOutput::Finish { at });
            }
            return None;
        }
    }

    /// Whether the call is over: its final event is out.
    pub(crate) fn is_done(&self) -> bool {
        self.finishing == Finishing::Done
    }

    /// When the call next wants [`CoreInput::Timeout`]: the earliest of its timer table, its
    /// SIP session's and its script's.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        [
            self.session.poll_timeout(),
            self.timers.poll_timeout(),
            self.runner.as_ref().and_then(ScriptRunner::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fire what is due at `now`: the SIP session's timers, then the table's in
    /// [`Timer::ALL`] order, then the script's.
    fn handle_deadlines(&mut self, now: Instant) {
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
        }
        for timer in Timer::ALL {
            if self.timers.take_due(timer, now) {
                self.on_timer(now, timer);
            }
        }
        if self
            .runner
            .as_ref()
            .and_then(ScriptRunner::poll_timeout)
            .is_some_and(|t| t <= now)
            && let Some(runner) = self.runner.as_mut()
        {
            runner.handle(now, ScriptInput::Timeout);
        }
    }

    /// `timer` fired.
    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Ring => {
                self.ring_timed_out = true;
                tracing::info!("ring timeout: cancelling");
                self.state.on_hangup(false);
                if let Err(e) = self.session.cancel(now) {
                    tracing::debug!(error = %e, "cancel after ring timeout");
                }
            }
            Timer::Dtmf => self.send_digits(),
            Timer::Hangup => self.hang_up(now),
            Timer::Drain => {
                self.hang_up(now);
                self.tear_down_by(now + DRAIN_TEARDOWN, "drain");
            }
            Timer::Teardown => {
                if self.state.ended().is_none() && !self.session.is_terminated() {
                    tracing::warn!(
                        why = ?self.teardown,
                        sip_call_id = %self.call_ident,
                        "the call did not end after its hangup: torn down"
                    );
                    let reason = if self.state.answered_at().is_some() {
                        EndReason::LocalBye
                    } else {
                        EndReason::Cancelled
                    };
                    self.torn_down = self.teardown;
                    self.state.end_unless_ended(reason, now);
                }
            }
            Timer::Failover => {
                tracing::info!("no response to the INVITE: trying the next target");
                self.fail_over(now, "no_response");
            }
            Timer::ByeWait => self.bye_outstanding = false,
            Timer::MaxDuration => {
                tracing::info!("maximum call duration reached");
                self.end_for(now, "max_duration", None);
            }
        }
    }

    /// Hand the digits to send to the media session (which paces them).
    fn send_digits(&mut self) {
        let digits = std::mem::take(&mut self.send_dtmf);
        if self.dtmf_mode == DtmfMode::Info {
            self.send_info_digits(&digits);
            return;
        }
        if !self.media_on {
            tracing::warn!("no media session: DTMF not sent");
            return;
        }
        let text: String = digits.iter().map(|d| d.as_char()).collect();
        let method = if self.telephone_event {
            "rfc4733"
        } else {
            "inband"
        };
        self.dtmf_pending = Some((text, method));
        self.out.push_back(CoreOutput::SendDtmf(digits));
    }

    /// The media session took the digits, or did not.
    fn dtmf_sent(&mut self, result: Result<(), String>) {
        let Some((text, method)) = self.dtmf_pending.take() else {
            return;
        };
        match result {
            Ok(()) => self.emit("dtmf.sent", json!({"digits": text, "method": method})),
            Err(e) => tracing::warn!(error = %e, "DTMF not sent"),
        }
    }

    /// One INFO per digit (`application/dtmf-relay`, the de facto format of RFC 6086 DTMF),
    /// each after the previous one's final response.
    fn send_info_digits(&mut self, digits: &[media::dtmf::Digit]) {
        let text: String = digits.iter().map(|d| d.as_char()).collect();
        self.info_digits = digits.iter().copied().collect();
        self.next_info_digit();
        self.emit("dtmf.sent", json!({"digits": text, "method": "info"}));
    }

    fn next_info_digit(&mut self) {
        let Some(d) = self.info_digits.pop_front() else {
            return;
        };
        let body = format!("Signal={}\r\nDuration=160\r\n", d.as_char());
        if let Err(e) = self
            .session
            .info("application/dtmf-relay", Bytes::from(body))
        {
            tracing::warn!(error = %e, "DTMF INFO not sent");
            self.info_digits.clear();
        }
    }

    /// Hold, resume or refresh (the outcome comes back as dialog events).
    fn reoffer(&mut self, now: Instant, what: Reoffer) {
        let result = match what {
            Reoffer::Hold | Reoffer::Resume => {
                let direction = if what == Reoffer::Hold {
                    media::sdp::Direction::SendOnly
                } else {
                    media::sdp::Direction::SendRecv
                };
                self.negotiator.set_direction(direction);
                let offer = Bytes::from(self.negotiator.create_offer().to_bytes());
                self.session.reinvite(now, offer)
            }
            Reoffer::RefreshSession => self.session.refresh_now(now),
        };
        let what = match what {
            Reoffer::Hold => "hold",
            Reoffer::Resume => "resume",
            Reoffer::RefreshSession => "refresh",
        };
        match result {
            Ok(()) => self.emit("sip.reoffer_sent", json!({"purpose": what})),
            Err(e) => self.emit(
                "sip.reoffer_failed",
                json!({"purpose": what, "reason": e.to_string()}),
            ),
        }
    }

    /// Tear the call down at `at` (or earlier, when already due) unless it ends before.
    fn tear_down_by(&mut self, at: Instant, why: &'static str) {
        if self.session.is_terminated() || self.state.ended().is_some() {
            return;
        }
        if self.timers.set_earlier(Timer::Teardown, at) {
            self.teardown = Some(why);
        }
    }

    /// End the call from our side, whatever its state: by the protocol, and by tearing it
    /// down [`HANGUP_TEARDOWN`] later when the protocol has not ended it by then.
    fn hang_up(&mut self, now: Instant) {
        self.protocol_hang_up(now);
        self.tear_down_by(now + HANGUP_TEARDOWN, "hangup");
    }

    fn protocol_hang_up(&mut self, now: Instant) {
        if self.session.is_terminated() {
            return;
        }
        let bye_on_confirm = if self.session.is_confirmed() {
            let _ = self.session.bye(now);
            false
        } else if self.outbound {
            self.timers.clear(Timer::Ring);
            self.session.cancel(now).is_err()
        } else {
            // Err: we sent 200 and wait for the ACK; §15 lets us BYE only once it came.
            self.session
                .reject(now, StatusCode::new(480).expect("480"))
                .is_err()
        };
        self.state.on_hangup(bye_on_confirm);
    }

    fn handle_sip(&mut self, now: Instant, event: EndpointEvent) {
        match event {
            EndpointEvent::Response { key, response } => {
                if key.method() == &Method::Invite && self.invite_key.as_ref() == Some(&key) {
                    // Any response (even 100) shows the target is alive.
                    self.timers.clear(Timer::Failover);
                    let status = response.status.as_u16();
                    if status == 503 {
                        self.note_retry_after(now, &response);
                    }
                    // RFC 3263 §4.3 and trunk failover: 503 and 408 move on to the next target
                    // (the transaction layer has ACKed them); every other final response is
                    // the callee's answer.
                    if matches!(status, 503 | 408) && self.fail_over(now, &status.to_string()) {
                        return;
                    }
                    self.note_invite_response(&response);
                } else if key.method() == &Method::Bye && response.status.is_final() {
                    self.bye_outstanding = false;
                }
                let info_done = key.method() == &Method::Info && response.status.is_final();
                self.session.handle_response(now, response);
                if info_done {
                    self.next_info_digit();
                }
            }
            EndpointEvent::InDialogRequest { key, request, .. } => {
                self.session.handle_request(now, request, key);
            }
            EndpointEvent::CancelReceived { .. } => self.session.handle_cancel(now),
            EndpointEvent::TransactionTimeout { key, .. }
            | EndpointEvent::TransportError { key, .. } => {
                // Only our requests' transactions concern the session (a server transaction
                // that timed out has nothing more to tell it).
                if !matches!(key, TransactionKey::Client(_)) || self.old_invites.contains(&key) {
                    return;
                }
                if key.method() == &Method::Bye {
                    self.bye_outstanding = false;
                }
                if key.method() == &Method::Invite && self.invite_key.as_ref() == Some(&key) {
                    if self.fail_over(now, "timeout") {
                        return;
                    }
                    self.local_failure = true;
                }
                self.session.handle_transaction_timeout(now, key.method());
            }
            EndpointEvent::NewRequest { .. } | EndpointEvent::TransactionTerminated { .. } => {}
        }
    }

    fn note_invite_response(&mut self, response: &Response) {
        let status = response.status.as_u16();
        self.any_response = true;
        if status == 100 {
            if !self.trying_seen {
                self.trying_seen = true;
                self.emit("sip.trying", json!({"sip_status": 100}));
            }
            return;
        }
        if response.status.is_final() && self.final_status.is_none() {
            let q850 = response.headers.reasons().ok().and_then(|rs| {
                rs.iter()
                    .find(|r| r.protocol.eq_ignore_ascii_case("Q.850"))
                    .and_then(|r| r.cause())
            });
            let reason = String::from_utf8_lossy(&response.reason).into_owned();
            self.final_status = Some((status, reason, q850));
            if response.status.is_success() && self.state.cancel_sent() {
                // §9.1: "the CANCEL has no effect" on a request that already got its final
                // response; the session layer ACKs this 2xx and BYEs the unwanted dialog.
                self.answered_after_cancel = true;
                self.emit("sip.answered_after_cancel", json!({"sip_status": status}));
            }
        }
    }

    /// One output of the SIP session: handled here (its events), or handed to the driver.
    fn session_output(&mut self, out: Output) {
        match out {
            Output::SendRequest(mut request) => {
                self.route_in_dialog(&mut request);
                // The initial INVITE (or its retry with credentials, or to another target)
                // has no To tag; a re-INVITE has one.
                let initial_invite = request.method == Method::Invite && !has_to_tag(&request);
                let cseq = request.headers.cseq().map(|c| c.seq).unwrap_or_default();
                self.sending
                    .push_back((request.method.clone(), initial_invite, cseq));
                self.out.push_back(CoreOutput::SendRequest {
                    request,
                    transport: self.transport,
                    tls_name: self.tls_name.clone(),
                    peer: self.peer,
                });
            }
            Output::SendResponse { to, response } => {
                self.out
                    .push_back(CoreOutput::SendResponse { to, response });
            }
            Output::SendAck(mut ack) => {
                self.route_in_dialog(&mut ack);
                self.out.push_back(CoreOutput::SendAck {
                    ack,
                    transport: self.transport,
                    tls_name: self.tls_name.clone(),
                    peer: self.peer,
                });
            }
            Output::CancelInvite => {
                if let Some(key) = self.invite_key.clone() {
                    self.out.push_back(CoreOutput::CancelInvite { key });
                }
            }
            Output::Event(event) => self.dialog_event(event),
        }
    }

    /// What became of the oldest request handed to the driver.
    fn request_sent(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        result: Result<TransactionKey, String>,
    ) {
        let Some((method, initial_invite, cseq)) = self.sending.pop_front() else {
            tracing::warn!("a send result for no request");
            return;
        };
        match result {
            Ok(key) => {
                if initial_invite {
                    if let Some(old) = self.invite_key.replace(key.clone()) {
                        self.old_invites.push(old);
                    }
                    if !self.targets.is_empty() {
                        self.timers
                            .set(Timer::Failover, Some(now + NO_RESPONSE_FAILOVER));
                    }
                    self.emit(
                        "sip.invite_sent",
                        json!({
                            "destination": destination.to_string(),
                            "transport": transport_name(self.transport),
                            "cseq": cseq,
                            "attempt": self.attempt,
                        }),
                    );
                }
                if method == Method::Bye {
                    if !self.bye_outstanding && self.timers.get(Timer::ByeWait).is_none() {
                        self.emit("sip.bye_sent", json!({}));
                    }
                    self.bye_outstanding = true;
                    if self
                        .target
                        .as_ref()
                        .is_some_and(|t| t.sip.credentials.is_some())
                        && self.timers.get(Timer::ByeWait).is_none()
                    {
                        self.timers.set(Timer::ByeWait, Some(now + BYE_AUTH_WAIT));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, %method, "request not sent");
                if initial_invite && self.fail_over(now, "transport_error") {
                    return;
                }
                if method == Method::Invite {
                    self.local_failure = true;
                    self.transport_failure = Some(Arc::from(e));
                }
                self.session.handle_transaction_timeout(now, &method);
            }
        }
    }

    fn dialog_event(&mut self, event: DialogEvent) {
        let now = self.now;
        match event {
            DialogEvent::Early {
                status,
                body,
                reliable,
                ..
            } => {
                self.state.on_provisional(!body.is_empty());
                if body.is_empty() {
                    self.emit(
                        "sip.ringing",
                        json!({"sip_status": status, "reliable": reliable}),
                    );
                } else {
                    self.emit(
                        "sip.early_media",
                        json!({"sip_status": status, "reliable": reliable}),
                    );
                    let sdp = Sdp::parse(&body);
                    if let Some(refused) =
                        sdp.as_ref().ok().and_then(|s| self.refused_media(s, true))
                    {
                        self.end_for(now, "media_address_refused", Some(refused.to_string()));
                    } else if !self.media_on {
                        match sdp.and_then(|s| self.negotiator.receive_answer(&s)) {
                            Ok(neg) => self.start_media(now, &neg),
                            Err(e) if is_srtp_error(&e) => {
                                tracing::info!(error = %e, "SRTP negotiation failed");
                                self.end_for(now, "srtp_negotiation_failed", Some(e.to_string()));
                            }
                            Err(_) => {}
                        }
                    }
                }
            }
            DialogEvent::Confirmed { body, .. } => {
                let bye_pending = self.state.on_confirmed(now);
                self.timers.clear(Timer::Ring);
                self.emit(
                    "sip.answered",
                    json!({"sip_status": 200, "session_expires": self.session.session_interval()}),
                );
                if let Some(max) = self.max_duration {
                    self.timers.set(Timer::MaxDuration, now.checked_add(max));
                }
                // Early media may have been silent for long: the answer starts the count.
                self.media_op(MediaOp::RearmRtpTimeout);
                let refused = Sdp::parse(&body)
                    .ok()
                    .and_then(|s| self.refused_media(&s, true));
                if let Some(refused) = refused {
                    self.end_for(now, "media_address_refused", Some(refused.to_string()));
                } else if !self.media_on && !body.is_empty() {
                    match Sdp::parse(&body).and_then(|s| self.negotiator.receive_answer(&s)) {
                        Ok(neg) => self.start_media(now, &neg),
                        Err(e) if is_srtp_error(&e) => {
                            tracing::info!(error = %e, "SRTP negotiation failed");
                            self.end_for(now, "srtp_negotiation_failed", Some(e.to_string()));
                        }
                        Err(e) => tracing::warn!(error = %e, "unusable SDP answer"),
                    }
                }
                if let Some(after) = self.hangup_after {
                    self.timers.set(Timer::Hangup, Some(now + after));
                }
                if !self.send_dtmf.is_empty() {
                    self.timers.set(Timer::Dtmf, Some(now + self.dtmf_after));
                }
                if bye_pending {
                    let _ = self.session.bye(now);
                }
                if self.runner.is_some() {
                    // Inbound: the script's `answer` step waits for this.
                    self.script_input(ScriptInput::Answered);
                } else if self.outbound
                    && let Some(script) = self.script.clone()
                {
                    self.runner = Some(ScriptRunner::new_answered_with(
                        &script,
                        now,
                        std::mem::take(&mut self.preset_variables),
                    ));
                }
            }
            DialogEvent::ReInvite { offer } => {
                let sdp = Sdp::parse(&offer);
                if let Some(refused) = sdp.as_ref().ok().and_then(|s| self.refused_media(s, false))
                {
                    tracing::info!(%refused, "re-INVITE refused with 488");
                    let status = StatusCode::new(488).expect("488");
                    let _ = self.session.answer_reinvite(now, status, Bytes::new());
                    return;
                }
                let answered = sdp.and_then(|s| self.negotiator.receive_offer(&s));
                match answered {
                    Ok((answer, neg)) => {
                        self.media_op(MediaOp::SetRemote(neg.remote_rtp, neg.remote_rtcp));
                        self.media_op(MediaOp::SetSrtp(neg.srtp));
                        // Hold (sendonly, inactive, c=0.0.0.0) is no silence to end the call
                        // for; and c=0.0.0.0 means: send nothing.
                        self.media_op(MediaOp::SetDirection {
                            send: neg.direction.sends() && neg.remote_rtp.is_some(),
                            expect_inbound: neg.direction.receives() && !neg.remote_hold,
                        });
                        let _ = self.session.answer_reinvite(
                            now,
                            StatusCode::OK,
                            Bytes::from(answer.to_bytes()),
                        );
                    }
                    Err(e) => {
                        let status = StatusCode::new(e.sip_status())
                            .unwrap_or(StatusCode::new(488).expect("488"));
                        let _ = self.session.answer_reinvite(now, status, Bytes::new());
                    }
                }
            }
            DialogEvent::AuthChallenge {
                status,
                realm,
                algorithm,
                method,
                stale,
            } => self.emit(
                "sip.auth_challenge",
                json!({"status": status, "realm": realm, "algorithm": algorithm,
                    "method": method.as_str(), "stale": stale}),
            ),
            DialogEvent::AuthRetry { method, cseq } => {
                if method == Method::Invite && self.state.answered_at().is_none() {
                    // The challenge was not the callee's answer: the retry's is.
                    self.final_status = None;
                }
                self.emit(
                    "sip.auth_retry",
                    json!({"method": method.as_str(), "cseq": cseq}),
                );
            }
            DialogEvent::AuthFailed {
                method,
                status,
                reason,
            } => {
                tracing::info!(%method, status, %reason, "challenge not answered");
                self.emit(
                    "sip.auth_failed",
                    json!({"method": method.as_str(), "status": status, "reason": reason}),
                );
                if method == Method::Invite && self.state.answered_at().is_none() {
                    self.end_cause.get_or_insert(("auth_failed", Some(reason)));
                }
            }
            DialogEvent::Terminated { reason } => {
                if reason == EndReason::RemoteBye {
                    self.emit("sip.bye_received", json!({}));
                }
                self.state.on_terminated(reason, now);
            }
            DialogEvent::ReInviteAccepted { answer } => {
                match Sdp::parse(&answer).and_then(|s| self.negotiator.receive_answer(&s)) {
                    Ok(neg) => {
                        self.media_op(MediaOp::SetRemote(neg.remote_rtp, neg.remote_rtcp));
                        self.media_op(MediaOp::SetDirection {
                            send: neg.direction.sends() && neg.remote_rtp.is_some(),
                            expect_inbound: neg.direction.receives() && !neg.remote_hold,
                        });
                        self.emit(
                            "sip.reinvite_accepted",
                            json!({"sip_status": 200, "direction": neg.direction.as_str()}),
                        );
                    }
                    Err(e) => self.emit(
                        "sip.reinvite_accepted",
                        json!({"sip_status": 200, "answer_error": e.to_string()}),
                    ),
                }
            }
            DialogEvent::ReInviteRejected { status } => {
                self.emit("sip.reinvite_rejected", json!({"sip_status": status}))
            }
            DialogEvent::Refreshed { interval } => {
                self.emit("sip.session_refreshed", json!({"interval": interval}))
            }
            other => tracing::debug!(?other, "dialog event"),
        }
    }

    /// Drain the media session; whether it produced anything but its next deadline.
    fn media_event(&mut self, event: MediaEvent) {
        match event {
            MediaEvent::FirstPacketIn { source } => self.emit(
                "media.first_packet_in",
                json!({"source": source.to_string()}),
            ),
            MediaEvent::FirstPacketOut => self.emit("media.first_packet_out", json!({})),
            MediaEvent::PlaybackFinished => {
                self.emit("prompt.finished", json!({}));
                self.script_input(ScriptInput::PromptFinished);
            }
            MediaEvent::PlaybackStopped => self.emit("prompt.interrupted", json!({})),
            MediaEvent::Dtmf {
                digit,
                duration,
                method,
            } => {
                let method = match method {
                    media::session::DtmfMethod::Rfc4733 => "rfc4733",
                    media::session::DtmfMethod::Inband => "inband",
                };
                self.emit(
                    "dtmf.received",
                    json!({
                        "digit": digit.as_char().to_string(),
                        "duration_ms": duration.map(|d| d.as_millis() as u64),
                        "method": method,
                    }),
                );
                self.script_input(ScriptInput::Dtmf(digit.as_char()));
                if self.runner.is_none() && !self.gather_done && self.gather_digits > 0 {
                    self.digits.push(digit.as_char());
                    if self.digits.len() >= self.gather_digits {
                        self.gather_done = true;
                        self.emit("gather.completed", json!({"digits": self.digits}));
                    }
                }
            }
            MediaEvent::RtpTimeout if self.state.answered_at().is_some() => {
                tracing::info!("no RTP or RTCP from the peer: ending the call");
                self.end_for(self.now, "rtp_timeout", None);
            }
            MediaEvent::Quality(q) => self.emit("media.quality", quality_json(&q)),
            MediaEvent::Voice { active } => self.script_input(ScriptInput::Voice(active)),
            other => tracing::debug!(?other, "media event"),
        }
    }

    /// What the recording said of a write, on the timeline.
    fn recording_note(&mut self, note: RecordingNote, dropped_frames: u64) {
        match note {
            RecordingNote::Lagging {
                lag,
                queue_depth,
                queue_capacity,
                dropped_frames,
            } => {
                tracing::warn!(?lag, queue_depth, dropped_frames, "recording lags behind");
                self.emit(
                    "recording.lagging",
                    json!({
                        "lag_ms": lag.as_millis() as u64,
                        "queue_depth": queue_depth,
                        "queue_capacity": queue_capacity,
                        "dropped_frames": dropped_frames,
                    }),
                );
            }
            RecordingNote::CaughtUp {
                lag,
                lagged_for,
                dropped_frames,
            } => self.emit(
                "recording.caught_up",
                json!({
                    "lag_ms": lag.as_millis() as u64,
                    "lagged_ms": lagged_for.as_millis() as u64,
                    "dropped_frames": dropped_frames,
                }),
            ),
            RecordingNote::Failed { error } => {
                tracing::warn!(%error, "recording failed");
                self.emit(
                    "recording.failed",
                    json!({"error": error, "dropped_frames": dropped_frames}),
                );
                self.record_error = Some(error);
                self.route_frames();
                self.script_input(ScriptInput::RecordingStopped);
            }
        }
    }

    /// The session ended: stop media, close the recording, report the outcome.
    /// Every part of the call has stopped ([`CoreOutput::Finish`]): emit the final event.
    fn finalize(&mut self, media: Option<MediaSummary>) {
        if self.finishing != Finishing::Stopping {
            tracing::warn!("finalize before the call asked to finish");
            return;
        }
        self.finishing = Finishing::Done;
        let Some((reason, ended_at)) = self.state.ended() else {
            tracing::warn!("finalize before the call ended");
            return;
        };
        let answered_at = self.state.answered_at();
        let recording = self.recordings.last().cloned().unwrap_or(Value::Null);
        let outcome = match self.torn_down {
            // Torn down after a hangup the peer never completed.
            Some(_) if answered_at.is_some() => Outcome::Answered,
            Some(_) if self.outbound => Outcome::Cancelled,
            Some(_) => Outcome::Failed,
            None => self.outcome(reason),
        };
        let (status, phrase, q850) = match (&self.final_status, answered_at) {
            (Some((s, r, q)), _) => (Some(*s), Some(r.clone()), *q),
            (None, Some(_)) => (Some(200), Some("OK".to_owned()), None),
            (None, None) => match reason {
                EndReason::Rejected(code) => (Some(code), None, None),
                _ => (None, None, None),
            },
        };
        // No response said why: say what kept the INVITE from its peer (a TLS handshake).
        let phrase = match (&self.final_status, &self.transport_failure) {
            (None, Some(why)) if answered_at.is_none() => Some(why.to_string()),
            _ => phrase,
        };
        let duration_ms =
            answered_at.map(|a| ended_at.saturating_duration_since(a).as_millis() as u64);
        // Why we ended it ourselves first; then a teardown (the peer never completed our
        // hangup); else the SIP reason.
        let end_reason = match (&self.end_cause, self.torn_down) {
            (Some((cause, _)), _) => (*cause).to_owned(),
            (None, Some(_)) => "TornDown".to_owned(),
            (None, None) => format!("{reason:?}"),
        };
        let mut details = json!({
            "outcome": outcome,
            "sip_status": status,
            "reason": phrase,
            "q850_cause": q850,
            "end_reason": end_reason,
            "duration_ms": duration_ms,
            "recording": recording,
        });
        if let Some(summary) = media {
            let MediaSummary {
                stats: sent,
                expected_in,
                lost_in,
                srtp,
                record_frames_dropped,
            } = summary;
            details["rtp"] = json!({
                "packets_in": sent.packets_received,
                "packets_out": sent.packets_sent,
                "expected_in": expected_in,
                "lost_in": lost_in.max(0),
                // Dropped, not counted above: other sources than the peer's, payload types not
                // negotiated, datagrams that were not RTP/RTCP, out-of-sequence packets.
                "stray_source": sent.stray_source,
                "stray_payload_type": sent.stray_payload_type,
                "stray_garbage": sent.stray_garbage,
                "stray_sequence": sent.stray_sequence,
                "ssrc_changes": sent.ssrc_changes,
                "srtp": srtp,
                // SRTP packets dropped: authentication failed (wrong key, forged), replayed.
                "srtp_auth_failed": sent.srtp_auth_failed,
                "srtp_replayed": sent.srtp_replayed,
                // Reordering and duplicates among the packets counted in; how much of the
                // inbound audio played out was voiced (a silent call has packets, none voiced).
                "reordered": sent.reordered,
                "duplicates": sent.duplicates,
                "played_ms": sent.played_ms,
                "voiced_ms": sent.voiced_ms,
            });
            if record_frames_dropped > 0 {
                details["rtp"]["record_frames_dropped"] = json!(record_frames_dropped);
            }
        }
        if let Some((_, Some(detail))) = &self.end_cause {
            details["end_detail"] = json!(detail);
        }
        if self.gather_digits > 0 || !self.digits.is_empty() {
            details["digits"] = json!(self.digits);
        }
        if self.recordings.len() > 1 {
            details["recordings"] = json!(self.recordings);
        }
        if let Some(result) = self.script_result.take() {
            details["script"] = result;
        }
        if let Some(reason) = &self.hangup_reason {
            details["hangup_reason"] = json!(reason);
        }
        if let Some(why) = self.torn_down {
            details["teardown"] = json!(why);
        }
        if let Some(e) = &self.record_error {
            details["recording_error"] = json!(e);
        }
        if self.answered_after_cancel {
            // The outcome stays what made us cancel (no answer in time, or a hangup): the
            // callee's 200 crossed our CANCEL and the session was ended at once.
            details["race"] = json!("200 OK crossed our CANCEL; ACKed, then BYE");
        }
        tracing::info!(outcome = ?outcome, ?status, "call ended");
        self.emit(outcome.final_kind(), details);
    }

    fn awaiting_bye_answer(&self, now: Instant) -> bool {
        self.bye_outstanding && self.timers.get(Timer::ByeWait).is_some_and(|t| now < t)
    }

    /// An in-dialog request (or ACK) without a route set of its own goes through the target's
    /// outbound proxy, as a preloaded route (RFC 3261 §8.1.2, §12.2.1.1).
    fn route_in_dialog(&self, request: &mut Request) {
        if !has_to_tag(request) || request.headers.get(&HeaderName::Route).is_some() {
            return;
        }
        if let Some(route) = self.target.as_ref().and_then(|t| preloaded_route(&t.sip)) {
            request.headers.push(HeaderName::Route, route.to_bytes());
        }
    }

    /// Remember a 503's Retry-After for its target (failover calls skip it meanwhile).
    fn note_retry_after(&self, now: Instant, response: &Response) {
        let Some(target) = &self.target else { return };
        let Ok(Some(ra)) = response.headers.retry_after() else {
            return;
        };
        if ra.seconds == 0 {
            return;
        }
        let until = now + Duration::from_secs(u64::from(ra.seconds)).min(MAX_RETRY_AFTER);
        let mut cooldowns = self
            .env
            .cooldowns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cooldowns.len() >= MAX_COOLDOWNS {
            cooldowns.retain(|_, t| *t > now);
        }
        if cooldowns.len() < MAX_COOLDOWNS || cooldowns.contains_key(&target.destination) {
            cooldowns.insert(target.destination, until);
        }
    }

    /// Send the INVITE to the next target (trunk failover, RFC 3263 §4.3), when there is one
    /// and the call still may: nothing final from the callee, no CANCEL, no hangup. Returns
    /// whether it did.
    fn fail_over(&mut self, now: Instant, reason: &str) -> bool {
        if self.targets.is_empty()
            || !self.outbound
            || !self.state.is_setting_up()
            || self.session.is_terminated()
            || self.session.is_confirmed()
        {
            return false;
        }
        let Some(next) = next_target(&self.env, &mut self.targets, now) else {
            return false;
        };
        let from = match self.session.invite().headers.from() {
            Ok(f) => f,
            Err(_) => return false,
        };
        let session_id = self.rng.next();
        let mut negotiator = outbound_negotiator(&self.env, self.rtp_port, &next.sip, session_id);
        let offer = negotiator.create_offer();
        let seed = self.rng.next();
        let (mut config, contact) = identity(
            &self.env,
            next.transport,
            next.sip.advertise,
            next.to.as_sip().is_some_and(|u| u.secure),
            seed,
        );
        config.rel100 = next.sip.rel100;
        let params = InviteParams {
            request_uri: next.to.clone(),
            from,
            // The session keeps its Call-ID, From tag and CSeq sequence.
            from_tag: String::new(),
            to: NameAddr::new(next.to.clone()),
            call_id: String::new(),
            cseq: 0,
            contact,
            routes: preloaded_route(&next.sip).into_iter().collect(),
            body: Bytes::from(offer.to_bytes()),
        };
        self.session
            .set_credentials(next.sip.credentials.clone(), self.rng.next());
        self.session.set_credentials_realm(next.sip.realm.clone());
        if let Err(e) = self
            .session
            .retarget(&config, &params, &extra_headers(&next.sip))
        {
            tracing::warn!(error = %e, "failover not possible");
            return false;
        }
        let from_label = self
            .target
            .as_ref()
            .map(|t| t.label.clone())
            .unwrap_or_default();
        tracing::info!(from = %from_label, to = %next.label, reason, "failing over to the next target");
        self.emit(
            "call.failover",
            json!({"from": from_label, "reason": reason, "to": next.label}),
        );
        self.attempt += 1;
        self.emit_target(self.attempt, &next);
        // What the previous target said or set up is forgotten: its early media, its status.
        if let Some(old) = self.invite_key.take() {
            self.old_invites.push(old);
        }
        self.timers.clear(Timer::Failover);
        self.state.on_retarget();
        self.final_status = None;
        self.local_failure = false;
        self.any_response = false;
        // Its recording sink, if any, leaves its segment to be finished at the end.
        if std::mem::take(&mut self.media_on) {
            self.out.push_back(CoreOutput::DropMedia);
        }
        self.sink_set = false;
        self.negotiator = negotiator;
        self.peer = next.destination;
        self.transport = next.transport;
        self.tls_name = tls_name(&next.to, &next.sip);
        self.target = Some(next);
        true
    }

    fn outcome(&self, reason: EndReason) -> Outcome {
        outcome(
            reason,
            self.state.answered_at().is_some(),
            OutcomeFacts {
                outbound: self.outbound,
                local_failure: self.local_failure,
                ring_timed_out: self.ring_timed_out,
                any_response: self.any_response,
            },
        )
    }
}

/// Our Via and Contact for a call over `transport`, with `ip` instead of the engine's
/// advertised address when given (a trunk's `advertise`).
pub(crate) fn identity(
    env: &CallEnv,
    transport: Transport,
    ip: Option<IpAddr>,
    secure_uri: bool,
    seed: u64,
) -> (DialogConfig, NameAddr) {
    // Over TCP, Via and Contact name our TCP listener (§18.2.2: a response goes back over
    // the request's connection; later requests to us open one to the Contact).
    let (mut advertise, contact_transport) = match (transport, env.advertise_tcp) {
        (Transport::Tcp, Some(tcp)) => (tcp, Some("tcp")),
        (Transport::Tcp, None) => (env.advertise, Some("tcp")),
        // Over TLS the Contact names our TLS listener with `transport=tls` (a `sips:` Contact
        // would promise TLS on every hop to us, RFC 3261 §26.2.2, which a carrier's path does
        // not give); only a `sips:` Request-URI gets a `sips:` Contact, as §8.1.1.8 requires.
        (Transport::Tls, _) => (env.advertise_tls.unwrap_or(env.advertise), Some("tls")),
        _ => (env.advertise, None),
    };
    if let Some(ip) = ip {
        advertise.set_ip(ip);
    }
    let dialog_config = DialogConfig {
        transport,
        via_host: match advertise.ip() {
            IpAddr::V4(v4) => Host::Ipv4(v4),
            IpAddr::V6(v6) => Host::Ipv6(v6.to_string()),
        },
        via_port: Some(advertise.port()),
        seed,
        session_expires: env.limits.session_expires,
        min_se: env.limits.min_se,
        ..DialogConfig::default()
    };
    let mut contact_uri = advertise_uri(Some("callplane"), advertise);
    if let Uri::Sip(sip) = &mut contact_uri {
        if secure_uri && transport == Transport::Tls {
            sip.secure = true;
        } else if let Some(t) = contact_transport {
            sip.params.set("transport", Some(t));
        }
    }
    (dialog_config, NameAddr::new(contact_uri))
}

/// The name the first hop's TLS certificate must carry: the trunk's, else the outbound proxy's
/// or the Request-URI's host when it is a name (an IP literal is checked as an address).
fn tls_name(to: &Uri, sip: &super::SipOptions) -> Option<String> {
    let domain = |u: &Uri| {
        u.as_sip().and_then(|u| match &u.host {
            Host::Domain(d) => Some(d.to_string()),
            _ => None,
        })
    };
    sip.tls_server_name
        .clone()
        .or_else(|| match &sip.outbound_proxy {
            Some(proxy) => domain(proxy),
            None => domain(to),
        })
}

/// The SDP negotiator of an outbound call on `rtp`, its c= line naming `ip` when given (a
/// trunk's `advertise`), else the RTP pool's address.
fn outbound_negotiator(
    env: &CallEnv,
    rtp_port: u16,
    sip: &SipOptions,
    session_id: u64,
) -> Negotiator {
    let mut config = SdpConfig {
        srtp: srtp_policy(sip.srtp),
        srtp_key: (env.srtp_key)(),
        ..SdpConfig::new(
            sip.advertise.unwrap_or(env.media_ip),
            rtp_port,
            session_id >> 1,
        )
    };
    if !sip.codecs.is_empty() {
        config.codecs = sip.codecs.clone();
    }
    if sip.dtmf == DtmfMode::Inband {
        config.telephone_event = None;
    }
    Negotiator::new(config)
}

/// The next target to try: the first one left, except that one still within the Retry-After
/// of its last 503 is skipped while another is left after it.
fn next_target(env: &CallEnv, targets: &mut VecDeque<Target>, now: Instant) -> Option<Target> {
    loop {
        let t = targets.pop_front()?;
        let cooling = targets.front().is_some() && {
            let cooldowns = env
                .cooldowns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            cooldowns
                .get(&t.destination)
                .is_some_and(|until| *until > now)
        };
        if !cooling {
            return Some(t);
        }
        tracing::info!(target = %t.label, "target skipped: within the Retry-After of its 503");
    }
}

impl CallCore {
    /// `call.target`: the target an INVITE goes to (every attempt, the first included).
    fn emit_target(&mut self, attempt: u32, t: &Target) {
        self.emit(
            "call.target",
            json!({
                "attempt": attempt,
                "label": t.label,
                "destination": t.destination.to_string(),
                "transport": transport_name(t.transport),
                "trunk_id": t.sip.trunk_id,
            }),
        );
    }
}

fn has_to_tag(request: &Request) -> bool {
    request.headers.to().is_ok_and(|t| t.tag().is_some())
}

/// The name of a transport, as in a Via header, lower case.
pub(crate) fn transport_name(t: Transport) -> String {
    format!("{t:?}").to_ascii_lowercase()
}

/// The `media.quality` event's details (docs/media/quality.md): every key present, `null`
/// where unknown. Percentages and the burst ratio keep 4 decimals, R and MOS 2.
fn quality_json(q: &media::session::QualityReport) -> Value {
    let round = |x: f64, places: i32| {
        let f = 10f64.powi(places);
        (x * f).round() / f
    };
    let us = |d: Duration| d.as_micros() as u64;
    json!({
        "scope": match q.scope {
            media::session::QualityScope::Interval => "interval",
            media::session::QualityScope::Call => "call",
        },
        "codec": q.codec.rtpmap_name(),
        "ptime_ms": q.ptime.map(|p| (p.as_secs_f64() * 1000.0).round() as u64),
        "expected": q.expected,
        "received": q.received,
        "lost": q.lost,
        "loss_percent": round(q.loss_percent, 4),
        "late": q.late,
        "late_percent": round(q.late_percent, 4),
        "concealed": q.concealed,
        "max_burst": q.max_burst,
        "burst_ratio": round(q.burst_ratio, 4),
        "jitter_us": us(q.jitter),
        "rtt_us": q.rtt.map(us),
        "playout_delay_us": us(q.playout_delay),
        "one_way_delay_us": us(q.one_way_delay),
        "r": round(q.r_factor, 2),
        "mos": round(q.mos, 2),
        "remote": q.remote.map(|r| json!({
            "loss_percent": round(r.loss_percent, 4),
            "jitter_us": us(r.jitter),
            "cumulative_lost": r.cumulative_lost,
        })),
    })
}

#[cfg(test)]
mod tests;
