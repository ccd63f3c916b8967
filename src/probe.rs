//! `callplane probe <sip-uri>`: a conformance run against a carrier trunk before the first
//! campaign (#11). It starts an engine of its own on a free local port and runs steps, each a
//! pass, a fail or a skip with its timing and the SIP ladder of its messages:
//!
//! | step | what | required when |
//! |---|---|---|
//! | `options` | OPTIONS answered with a final response (not 408/503) | always |
//! | `register` | REGISTER (digest answered) gets 2xx | registration is on |
//! | `invite` | an INVITE to `--number` is answered | a number is given |
//! | `session-timer` | the 2xx carries Session-Expires and a refresh sent now is accepted | `--require` |
//! | `hold` / `unhold` | re-INVITE `a=sendonly`, then `a=sendrecv`, accepted | `--require` |
//! | `100rel-required` | an INVITE with `Require: 100rel` is answered | `--require` |
//! | `100rel-off` | an INVITE without 100rel is answered, no provisional sent reliably | `--require` |
//! | `dtmf-rfc4733` | telephone-event negotiated and the digits sent as RFC 4733 events | `--require` |
//! | `dtmf-info` | every SIP INFO (`application/dtmf-relay`) answered 2xx | `--require` |
//! | `dtmf-inband` | an offer without telephone-event answered, tones sent in the audio | `--require` |
//! | `codec-<name>` | an INVITE offering only that codec is answered | codecs are configured |
//! | `srtp` | an RTP/SAVP offer (SDES `a=crypto`) answered with SRTP | `--srtp require` |
//! | `unregister` | REGISTER with Expires: 0 gets 2xx | never |
//!
//! A step that cannot run (no number, not configured, not in this build) is a skip, never a
//! pass. The run passes when every required step passed. What a peer did with DTMF cannot be
//! seen from here: those steps say what was sent and how the peer answered it.
//!
//! The ladders come from [`crate::net::sip::SipTrace`]: the SIP driver copies the start line,
//! Call-ID and CSeq of every message it sends or reads, retransmissions included.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use sip::auth::{
    AuthHeader, Authorization, Challenge, ChallengeOutcome, Credentials, DigestClient,
};
use sip::dialog::Rel100;
use sip::message::{HeaderName, Headers, Method, Request, Response, Uri};
use sip::transaction::Transport;
use tokio::sync::broadcast;

use crate::clock;
use crate::engine::{
    CallEvent, CallId, DtmfMode, Engine, EngineConfig, EngineHandle, OriginateRequest, PromptScope,
    Reoffer, SipOptions, random_u64,
};
use crate::net::sip::{SipTrace, TraceDirection, TraceLine};

/// The most ladder lines kept for one run (every step's messages, retransmissions included).
const TRACE_LINES: usize = 20_000;
/// How long a hangup waits for the trace to show the BYE (or CANCEL) it sent.
const BYE_TRACE_WAIT: Duration = Duration::from_secs(2);
/// The session interval the probe asks for: RFC 4028's floor, so that the peer's 2xx carries
/// the shortest interval it accepts; the refresh itself is sent at once, not at half of it.
const PROBE_SESSION_EXPIRES: u32 = 90;

/// What to probe and how.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// The trunk: `sip:host[:port][;transport=tcp]` (an IP-literal host).
    pub target: Uri,
    /// Where its requests go.
    pub destination: SocketAddr,
    /// Over which transport.
    pub transport: Transport,
    /// Where our SIP socket binds (port 0: any).
    pub bind: SocketAddr,
    /// Digest credentials (REGISTER, and the INVITE once the engine answers challenges).
    pub credentials: Option<Credentials>,
    /// Register (and unregister at the end).
    pub register: bool,
    /// The registration's Expires.
    pub register_expires_s: u32,
    /// The test number the INVITE steps call; `None`: those steps are skipped.
    pub number: Option<String>,
    /// The trunk's codecs: each gets an INVITE offering only it (required steps). Empty: the
    /// engine's codecs are tried, as information.
    pub codecs: Vec<media::sdp::AudioCodec>,
    /// The trunk's SRTP setting.
    pub srtp: crate::trunk::SrtpMode,
    /// The digits the DTMF steps send.
    pub dtmf: Vec<media::dtmf::Digit>,
    /// Steps that count although the configuration does not imply them (`hold`, `dtmf-info`...).
    pub require: Vec<String>,
    /// How long an INVITE may ring before CANCEL.
    pub ring_timeout: Duration,
    /// How long a re-INVITE, refresh or final event may take.
    pub step_timeout: Duration,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// It did what the trunk should do.
    Pass,
    /// It did not.
    Fail,
    /// It could not run (not configured, not given, not supported by callplane).
    Skip,
}

impl StepStatus {
    fn label(self) -> &'static str {
        match self {
            StepStatus::Pass => "PASS",
            StepStatus::Fail => "FAIL",
            StepStatus::Skip => "skip",
        }
    }
}

/// One message of a step's ladder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LadderLine {
    /// Milliseconds since the step started.
    pub t_ms: f64,
    /// `out` (we sent it) or `in`.
    pub direction: TraceDirection,
    /// The other end.
    pub peer: String,
    /// `INVITE` or `200 OK`.
    pub message: String,
    /// The CSeq value.
    pub cseq: String,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// `options`, `register`, `invite`, `hold`...
    pub name: String,
    /// Pass, fail or skip.
    pub status: StepStatus,
    /// Whether the run fails without it.
    pub required: bool,
    /// What was seen (a status, a reason).
    pub detail: String,
    /// How long it took.
    pub duration_ms: f64,
    /// Its SIP messages in order.
    pub ladder: Vec<LadderLine>,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    /// What was probed.
    pub target: String,
    /// Our SIP address.
    pub local: String,
    /// Every step, in the order run.
    pub steps: Vec<StepReport>,
    /// Whether every required step passed (the exit code is 0 only then).
    pub passed: bool,
    /// Ladder lines not kept because the trace was full.
    pub trace_dropped: u64,
}

/// Why the probe could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The engine did not start.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

/// Run every step against the trunk.
pub async fn run(config: ProbeConfig) -> Result<ProbeReport, ProbeError> {
    let trace = SipTrace::new(TRACE_LINES);
    let mut engine_config = EngineConfig::new(config.bind);
    engine_config.sip_trace = Some(trace.clone());
    engine_config.max_calls = 4;
    engine_config.limits.session_expires = Some(PROBE_SESSION_EXPIRES);
    engine_config.limits.min_se = sip::dialog::MIN_SE_FLOOR;
    if config.transport == Transport::Tcp {
        engine_config.sip_tcp = Some(config.bind);
    }
    let engine = Engine::start(engine_config).await?;
    let handle = engine.handle.clone();
    let mut probe = Probe {
        events: handle.subscribe(),
        handle: handle.clone(),
        trace: trace.clone(),
        config,
        steps: Vec::new(),
    };
    probe.run_steps().await;
    let _ = handle.drain(Duration::from_secs(1)).await;
    let _ = handle.shutdown().await;
    engine.join().await;
    let passed = probe
        .steps
        .iter()
        .all(|s| !s.required || s.status == StepStatus::Pass);
    Ok(ProbeReport {
        target: probe.config.target.to_string(),
        local: handle.sip_local_addr().to_string(),
        steps: probe.steps,
        passed,
        trace_dropped: trace.dropped(),
    })
}

struct Probe {
    handle: EngineHandle,
    events: broadcast::Receiver<CallEvent>,
    trace: SipTrace,
    config: ProbeConfig,
    steps: Vec<StepReport>,
}

/// A call placed by a step: its engine id and SIP Call-ID.
struct ProbeCall {
    id: CallId,
    sip_call_id: String,
    /// Its events so far.
    events: Vec<CallEvent>,
    ended: bool,
}

impl ProbeCall {
    fn final_event(&self) -> Option<&CallEvent> {
        self.events.iter().find(|e| e.is_final())
    }

    fn saw(&self, kind: &str) -> Option<&CallEvent> {
        self.events.iter().find(|e| e.kind == kind)
    }
}

impl Probe {
    fn required(&self, name: &str, implied: bool) -> bool {
        implied
            || self
                .config
                .require
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name) || r == "all")
    }

    fn push(
        &mut self,
        name: &str,
        implied: bool,
        status: StepStatus,
        detail: String,
        started: Instant,
        ladder: Vec<TraceLine>,
    ) {
        let required = self.required(name, implied);
        let ladder = to_ladder(ladder, started);
        self.steps.push(StepReport {
            name: name.to_owned(),
            status,
            required,
            detail,
            duration_ms: millis(clock::now().saturating_duration_since(started)),
            ladder,
        });
    }

    fn skip(&mut self, name: &str, implied: bool, why: &str) {
        let now = clock::now();
        self.push(
            name,
            implied,
            StepStatus::Skip,
            why.to_owned(),
            now,
            Vec::new(),
        );
    }

    /// The lines of `call_id` sent or read from `since` on.
    fn ladder(&self, call_id: &str, since: Instant) -> Vec<TraceLine> {
        self.trace
            .lines_for(call_id)
            .into_iter()
            .filter(|l| l.at >= since)
            .collect()
    }

    async fn run_steps(&mut self) {
        self.options().await;
        let registered = if self.config.register {
            self.register(self.config.register_expires_s, "register")
                .await
        } else {
            self.skip(
                "register",
                false,
                "registration not configured (--register)",
            );
            false
        };
        if self.config.number.is_some() {
            self.call_steps().await;
        } else {
            let why = "no test number (--number)";
            for name in [
                "invite",
                "session-timer",
                "hold",
                "unhold",
                "100rel-required",
                "100rel-off",
                "dtmf-rfc4733",
                "dtmf-info",
                "dtmf-inband",
            ] {
                self.skip(name, name == "invite", why);
            }
            for codec in self.codec_list() {
                let name = codec_step(codec);
                self.skip(&name, !self.config.codecs.is_empty(), why);
            }
        }
        self.srtp().await;
        if registered {
            self.register(0, "unregister").await;
        }
    }

    fn codec_list(&self) -> Vec<media::sdp::AudioCodec> {
        if self.config.codecs.is_empty() {
            vec![
                media::sdp::AudioCodec::Pcmu,
                media::sdp::AudioCodec::Pcma,
                media::sdp::AudioCodec::G722,
            ]
        } else {
            self.config.codecs.clone()
        }
    }

    async fn srtp(&mut self) {
        use crate::trunk::SrtpMode;
        let mode = self.config.srtp;
        let required = mode == SrtpMode::Require;
        if mode == SrtpMode::Off {
            self.skip("srtp", false, "SRTP not configured (--srtp offer|require)");
            return;
        }
        if self.config.number.is_none() {
            self.skip("srtp", required, "no test number (--number)");
            return;
        }
        let sip = SipOptions {
            srtp: mode,
            ..SipOptions::default()
        };
        let (started, call_id, result) = self.short_call(sip, Vec::new()).await;
        let ladder = call_id
            .map(|c| self.ladder(&c, started))
            .unwrap_or_default();
        let (status, detail) = match result {
            Err(why) => (StepStatus::Fail, why),
            Ok(call) => match call.saw("media.srtp") {
                Some(ev) => (
                    StepStatus::Pass,
                    format!(
                        "RTP/SAVP offer answered with a=crypto; suite {}",
                        ev.details["suite"].as_str().unwrap_or("?")
                    ),
                ),
                None => (
                    StepStatus::Fail,
                    "RTP/SAVP offered, answered with plain RTP/AVP".to_owned(),
                ),
            },
        };
        self.push("srtp", required, status, detail, started, ladder);
    }

    // ---- out-of-dialog requests ----------------------------------------------------------

    fn host_uri(&self) -> String {
        match self.config.target.as_sip() {
            Some(s) => {
                let host = s.host.to_string();
                match s.port {
                    Some(p) => format!("sip:{host}:{p}"),
                    None => format!("sip:{host}"),
                }
            }
            None => self.config.target.to_string(),
        }
    }

    fn user(&self) -> String {
        self.config
            .credentials
            .as_ref()
            .map_or_else(|| "probe".to_owned(), |c| c.username.clone())
    }

    /// An out-of-dialog request with the headers §8.1.1 asks for (the transport adds the
    /// Via branch).
    fn request(&self, method: Method, uri: &str, call_id: &str, cseq: u32) -> Option<Request> {
        let local = self.local_for_transport();
        let host = self
            .config
            .target
            .as_sip()
            .map_or_else(String::new, |s| s.host.to_string());
        let user = self.user();
        let mut headers = Headers::new();
        headers.push(
            HeaderName::Via,
            format!("SIP/2.0/{} {};rport", self.config.transport.as_str(), local),
        );
        headers.push(HeaderName::MaxForwards, "70");
        let aor = if method == Method::Register {
            format!("<sip:{user}@{host}>")
        } else {
            format!("<{uri}>")
        };
        headers.push(
            HeaderName::From,
            format!("<sip:{user}@{host}>;tag={:08x}", random_u64() as u32),
        );
        headers.push(HeaderName::To, aor);
        headers.push(HeaderName::CallId, call_id.to_owned());
        headers.push(HeaderName::CSeq, format!("{cseq} {}", method.as_str()));
        headers.push(HeaderName::Contact, format!("<sip:{user}@{local}>"));
        if method == Method::Options {
            headers.push(HeaderName::Accept, "application/sdp");
        }
        headers.push(HeaderName::ContentLength, "0");
        let uri = Uri::parse(uri.as_bytes()).ok()?;
        Some(Request {
            method,
            uri,
            headers,
            body: bytes::Bytes::new(),
        })
    }

    fn local_for_transport(&self) -> SocketAddr {
        let port = match self.config.transport {
            Transport::Tcp => self
                .handle
                .sip_local_tcp_addr()
                .unwrap_or_else(|| self.handle.sip_local_addr())
                .port(),
            _ => self.handle.sip_local_addr().port(),
        };
        SocketAddr::new(self.handle.advertise_ip(), port)
    }

    async fn options(&mut self) {
        let started = clock::now();
        let call_id = format!("{:016x}@probe", random_u64());
        let uri = self.host_uri();
        let Some(req) = self.request(Method::Options, &uri, &call_id, 1) else {
            self.skip(
                "options",
                true,
                "the trunk URI makes no OPTIONS Request-URI",
            );
            return;
        };
        let (status, detail) = match self
            .handle
            .request(req, self.config.destination, self.config.transport)
            .await
        {
            Ok(resp) => {
                let code = resp.status.as_u16();
                let detail = status_text(&resp);
                if code == 408 || code == 503 {
                    (StepStatus::Fail, format!("{detail}: not available"))
                } else {
                    (StepStatus::Pass, detail)
                }
            }
            Err(e) => (StepStatus::Fail, e.to_string()),
        };
        let ladder = self.ladder(&call_id, started);
        self.push("options", true, status, detail, started, ladder);
    }

    /// REGISTER (`expires` 0: unregister), answering 401/407 with the credentials.
    async fn register(&mut self, expires: u32, name: &str) -> bool {
        let started = clock::now();
        let call_id = format!("{:016x}@probe", random_u64());
        let uri = self.host_uri();
        let mut client = self.config.credentials.clone().map(DigestClient::new);
        let mut sent: Vec<(AuthHeader, Authorization)> = Vec::new();
        let mut outcome = (StepStatus::Fail, String::from("no answer"));
        // A 401/407 is answered at most twice (a stale nonce, then a fresh one): no loop.
        for cseq in 1..=3u32 {
            let Some(mut req) = self.request(Method::Register, &uri, &call_id, cseq) else {
                outcome = (StepStatus::Fail, "no REGISTER Request-URI".to_owned());
                break;
            };
            req.headers.push(HeaderName::Expires, expires.to_string());
            for (header, authz) in &sent {
                let name = match header {
                    AuthHeader::Www => HeaderName::Authorization,
                    AuthHeader::Proxy => HeaderName::ProxyAuthorization,
                };
                req.headers.push(name, authz.to_string());
            }
            let resp = match self
                .handle
                .request(req, self.config.destination, self.config.transport)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    outcome = (StepStatus::Fail, e.to_string());
                    break;
                }
            };
            let code = resp.status.as_u16();
            if resp.status.is_success() {
                let granted = resp
                    .headers
                    .get(&HeaderName::Expires)
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                let mut detail = status_text(&resp);
                if cseq > 1 {
                    detail.push_str(" after digest");
                }
                if let Some(g) = granted {
                    detail.push_str(&format!(", Expires {g}"));
                }
                outcome = (StepStatus::Pass, detail);
                break;
            }
            if code != 401 && code != 407 {
                outcome = (StepStatus::Fail, status_text(&resp));
                break;
            }
            let Some(client) = client.as_mut() else {
                outcome = (
                    StepStatus::Fail,
                    format!(
                        "{}: credentials needed (--username/--password)",
                        status_text(&resp)
                    ),
                );
                break;
            };
            match answer_challenge(client, &resp, &sent, &uri) {
                Ok(next) => sent = next,
                Err(why) => {
                    outcome = (StepStatus::Fail, format!("{}: {why}", status_text(&resp)));
                    break;
                }
            }
        }
        let ladder = self.ladder(&call_id, started);
        let passed = outcome.0 == StepStatus::Pass;
        let implied = name == "register";
        self.push(name, implied, outcome.0, outcome.1, started, ladder);
        passed
    }

    // ---- calls ---------------------------------------------------------------------------

    fn originate(
        &self,
        sip: SipOptions,
        dtmf: Vec<media::dtmf::Digit>,
        hangup: Option<Duration>,
    ) -> Option<OriginateRequest> {
        let number = self.config.number.as_deref()?;
        let target = self.config.target.as_sip()?;
        let host = target.host.to_string();
        let mut to = match target.port {
            Some(p) => format!("sip:{number}@{host}:{p}"),
            None => format!("sip:{number}@{host}"),
        };
        if self.config.transport == Transport::Tcp {
            to.push_str(";transport=tcp");
        }
        let to = Uri::parse(to.as_bytes()).ok()?;
        let from = Uri::parse(format!("sip:{}@{host}", self.user()).as_bytes()).ok();
        Some(OriginateRequest {
            to,
            destination: self.config.destination,
            from,
            play: None,
            gather_digits: 0,
            record: None,
            ring_timeout: self.config.ring_timeout,
            transport: self.config.transport,
            hangup_after: hangup,
            send_dtmf: dtmf,
            dtmf_after: Duration::from_millis(300),
            script: None,
            prompts: None,
            prompt_scope: PromptScope::Local,
            tag: Some("probe".into()),
            variables: Default::default(),
            max_duration: Some(Duration::from_secs(120)),
            sip: SipOptions {
                credentials: self.config.credentials.clone(),
                ..sip
            },
            alternates: Vec::new(),
        })
    }

    /// Places a call and waits for its `call.created` (for the SIP Call-ID).
    async fn place(&mut self, request: OriginateRequest) -> Result<ProbeCall, String> {
        let id = self
            .handle
            .originate(request)
            .await
            .map_err(|e| e.to_string())?;
        let mut call = ProbeCall {
            id,
            sip_call_id: String::new(),
            events: Vec::new(),
            ended: false,
        };
        if let Some(ev) = self
            .wait(&mut call, &["call.created"], Duration::from_secs(5))
            .await
        {
            call.sip_call_id = ev.details["sip_call_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
        Ok(call)
    }

    /// The next event of `call` of one of `kinds`, or its final event, within `within`.
    async fn wait(
        &mut self,
        call: &mut ProbeCall,
        kinds: &[&str],
        within: Duration,
    ) -> Option<CallEvent> {
        if call.ended {
            return call.final_event().cloned();
        }
        let deadline = tokio::time::Instant::from_std(clock::now() + within);
        loop {
            let ev = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(ev)) => ev,
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    tracing::warn!(missed = n, "probe: events lost");
                    continue;
                }
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
            };
            if ev.call_id != call.id {
                continue;
            }
            call.events.push(ev.clone());
            if ev.is_final() {
                call.ended = true;
                return Some(ev);
            }
            if kinds.contains(&ev.kind) {
                return Some(ev);
            }
        }
    }

    /// Hang up (when live) and wait for the final event, and for the BYE in the trace.
    async fn end(&mut self, call: &mut ProbeCall) {
        if !call.ended {
            let _ = self.handle.hangup(call.id).await;
            let within = self.config.step_timeout;
            self.wait(call, &[], within).await;
            // The call's final event and the SIP driver's copy of the BYE it sent come from two
            // tasks, in no promised order: wait for the copy (bounded; nothing notifies of a
            // trace line), so the ladder of the step that hung up shows it.
            let deadline = clock::now() + BYE_TRACE_WAIT;
            while clock::now() < deadline
                && !self.trace.lines_for(&call.sip_call_id).iter().any(|l| {
                    l.direction == TraceDirection::Out && (l.first == "BYE" || l.first == "CANCEL")
                })
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Waits for the answer; `Err` with the reason when the call failed.
    async fn answered(&mut self, call: &mut ProbeCall) -> Result<CallEvent, String> {
        let within = self.config.ring_timeout + Duration::from_secs(5);
        match self.wait(call, &["sip.answered"], within).await {
            Some(ev) if ev.kind == "sip.answered" => Ok(ev),
            Some(ev) => Err(failure_text(&ev.details)),
            None => Err("no answer within the ring timeout".to_owned()),
        }
    }

    async fn call_steps(&mut self) {
        self.invite_and_session_steps().await;
        for (name, rel100) in [
            ("100rel-required", Rel100::Required),
            ("100rel-off", Rel100::Off),
        ] {
            self.rel100_step(name, rel100).await;
        }
        self.dtmf_step("dtmf-rfc4733", DtmfMode::Auto).await;
        self.dtmf_step("dtmf-info", DtmfMode::Info).await;
        self.dtmf_step("dtmf-inband", DtmfMode::Inband).await;
        for codec in self.codec_list() {
            self.codec_step(codec).await;
        }
    }

    /// `invite`, then in the same call `session-timer`, `hold` and `unhold`.
    async fn invite_and_session_steps(&mut self) {
        let started = clock::now();
        let Some(request) = self.originate(SipOptions::default(), Vec::new(), None) else {
            self.skip(
                "invite",
                true,
                "the trunk URI and number make no Request-URI",
            );
            return;
        };
        let mut call = match self.place(request).await {
            Ok(c) => c,
            Err(e) => {
                self.push("invite", true, StepStatus::Fail, e, started, Vec::new());
                return;
            }
        };
        let answer = self.answered(&mut call).await;
        let ladder = self.ladder(&call.sip_call_id, started);
        let (status, detail) = match &answer {
            Ok(_) => (StepStatus::Pass, "answered 200".to_owned()),
            Err(why) => (StepStatus::Fail, why.clone()),
        };
        self.push("invite", true, status, detail, started, ladder);
        let Ok(answered) = answer else {
            for name in ["session-timer", "hold", "unhold"] {
                self.skip(name, false, "the INVITE was not answered");
            }
            return;
        };
        // session-timer: the interval in the 2xx, then a refresh sent now.
        let started = clock::now();
        let interval = answered.details["session_expires"].as_u64();
        let (status, detail) = match interval {
            None => (
                StepStatus::Fail,
                format!(
                    "the 200 carried no Session-Expires (asked for {PROBE_SESSION_EXPIRES} s): no session timer"
                ),
            ),
            Some(interval) => {
                let _ = self.handle.reoffer(call.id, Reoffer::RefreshSession).await;
                let within = self.config.step_timeout;
                match self
                    .wait(
                        &mut call,
                        &["sip.session_refreshed", "sip.reoffer_failed"],
                        within,
                    )
                    .await
                {
                    Some(ev) if ev.kind == "sip.session_refreshed" => (
                        StepStatus::Pass,
                        format!(
                            "Session-Expires {interval} s agreed; refresh accepted (interval {})",
                            ev.details["interval"]
                        ),
                    ),
                    Some(ev) if ev.kind == "sip.reoffer_failed" => (
                        StepStatus::Fail,
                        format!(
                            "refresh not sent: {}",
                            ev.details["reason"].as_str().unwrap_or_default()
                        ),
                    ),
                    Some(ev) => (
                        StepStatus::Fail,
                        format!("the call ended: {}", failure_text(&ev.details)),
                    ),
                    None => (
                        StepStatus::Fail,
                        "the refresh was not answered 2xx (rejected or timed out)".to_owned(),
                    ),
                }
            }
        };
        let ladder = self.ladder(&call.sip_call_id, started);
        self.push("session-timer", false, status, detail, started, ladder);
        let mut last_started = clock::now();
        for (name, what, want) in [
            ("hold", Reoffer::Hold, "sendonly"),
            ("unhold", Reoffer::Resume, "sendrecv"),
        ] {
            let started = clock::now();
            last_started = started;
            let (status, detail) = if call.ended {
                (StepStatus::Skip, "the call has ended".to_owned())
            } else {
                let _ = self.handle.reoffer(call.id, what).await;
                let within = self.config.step_timeout;
                match self
                    .wait(
                        &mut call,
                        &[
                            "sip.reinvite_accepted",
                            "sip.reinvite_rejected",
                            "sip.reoffer_failed",
                        ],
                        within,
                    )
                    .await
                {
                    Some(ev) if ev.kind == "sip.reinvite_accepted" => {
                        let got = ev.details["direction"].as_str().unwrap_or("?").to_owned();
                        if got == want || (what == Reoffer::Hold && got == "inactive") {
                            (
                                StepStatus::Pass,
                                format!("re-INVITE answered 200; media now {got}"),
                            )
                        } else {
                            (
                                StepStatus::Fail,
                                format!(
                                    "re-INVITE answered 200 but media now {got} (expected {want})"
                                ),
                            )
                        }
                    }
                    Some(ev) if ev.kind == "sip.reinvite_rejected" => (
                        StepStatus::Fail,
                        format!("re-INVITE rejected {}", ev.details["sip_status"]),
                    ),
                    Some(ev) if ev.kind == "sip.reoffer_failed" => (
                        StepStatus::Fail,
                        format!(
                            "re-INVITE not sent: {}",
                            ev.details["reason"].as_str().unwrap_or_default()
                        ),
                    ),
                    Some(ev) => (
                        StepStatus::Fail,
                        format!("the call ended: {}", failure_text(&ev.details)),
                    ),
                    None => (StepStatus::Fail, "no answer to the re-INVITE".to_owned()),
                }
            };
            let ladder = self.ladder(&call.sip_call_id, started);
            self.push(name, false, status, detail, started, ladder);
        }
        // The BYE belongs to the last step's ladder.
        self.end(&mut call).await;
        let ladder = to_ladder(self.ladder(&call.sip_call_id, last_started), last_started);
        if let Some(last) = self.steps.last_mut() {
            last.ladder = ladder;
        }
    }

    /// One short call (answered, then BYE) with `sip`; the step's outcome and its events.
    async fn short_call(
        &mut self,
        sip: SipOptions,
        dtmf: Vec<media::dtmf::Digit>,
    ) -> (Instant, Option<String>, Result<ProbeCall, String>) {
        let started = clock::now();
        let hangup = if dtmf.is_empty() {
            300
        } else {
            300 + 300 + 120 * dtmf.len() as u64 + 500
        };
        let Some(request) = self.originate(sip, dtmf, Some(Duration::from_millis(hangup))) else {
            return (
                started,
                None,
                Err("the trunk URI and number make no Request-URI".to_owned()),
            );
        };
        let mut call = match self.place(request).await {
            Ok(c) => c,
            Err(e) => return (started, None, Err(e)),
        };
        let sip_call_id = Some(call.sip_call_id.clone());
        if let Err(why) = self.answered(&mut call).await {
            self.end(&mut call).await;
            return (started, sip_call_id, Err(why));
        }
        let within = self.config.step_timeout + Duration::from_millis(hangup);
        self.wait(&mut call, &[], within).await;
        self.end(&mut call).await;
        (started, sip_call_id, Ok(call))
    }

    async fn rel100_step(&mut self, name: &str, rel100: Rel100) {
        let sip = SipOptions {
            rel100,
            ..SipOptions::default()
        };
        let (started, call_id, result) = self.short_call(sip, Vec::new()).await;
        let (status, detail) = match result {
            Err(why) => (StepStatus::Fail, why),
            Ok(call) => {
                let reliable = call
                    .events
                    .iter()
                    .find(|e| e.kind == "sip.ringing" || e.kind == "sip.early_media")
                    .map(|e| e.details["reliable"].as_bool().unwrap_or(false));
                let (status, detail) = match (rel100, reliable) {
                    (Rel100::Required, Some(true)) => (StepStatus::Pass, "answered; the provisional came reliably (RSeq) and was PRACKed".to_owned()),
                    (Rel100::Required, Some(false)) => (StepStatus::Fail, "answered, but a provisional came unreliably despite Require: 100rel (send it reliably or refuse with 420)".to_owned()),
                    (Rel100::Required, None) => (StepStatus::Pass, "answered without a provisional response (nothing to PRACK)".to_owned()),
                    (_, Some(true)) => (StepStatus::Fail, "a provisional came with Require: 100rel although we did not offer it".to_owned()),
                    (_, _) => (StepStatus::Pass, "answered; provisional responses unreliable".to_owned()),
                };
                (status, detail)
            }
        };
        let ladder = call_id
            .map(|c| self.ladder(&c, started))
            .unwrap_or_default();
        self.push(name, false, status, detail, started, ladder);
    }

    async fn dtmf_step(&mut self, name: &str, mode: DtmfMode) {
        let digits = self.config.dtmf.clone();
        let sip = SipOptions {
            dtmf: mode,
            ..SipOptions::default()
        };
        let (started, call_id, result) = self.short_call(sip, digits).await;
        let ladder = call_id
            .map(|c| self.ladder(&c, started))
            .unwrap_or_default();
        let (status, detail) = match result {
            Err(why) => (StepStatus::Fail, why),
            Ok(call) => {
                let sent = call.saw("dtmf.sent").map(|e| e.details.clone());
                let method = sent
                    .as_ref()
                    .and_then(|d| d["method"].as_str())
                    .unwrap_or("");
                let text = sent
                    .as_ref()
                    .and_then(|d| d["digits"].as_str())
                    .unwrap_or("")
                    .to_owned();
                match (mode, method) {
                    (_, "") => (
                        StepStatus::Fail,
                        "the digits were not sent (the call ended first)".to_owned(),
                    ),
                    (DtmfMode::Auto, "rfc4733") => (
                        StepStatus::Pass,
                        format!("telephone-event negotiated; {text:?} sent as RFC 4733 events"),
                    ),
                    (DtmfMode::Auto, other) => (
                        StepStatus::Fail,
                        format!("the answer has no telephone-event: {text:?} went {other}"),
                    ),
                    (DtmfMode::Info, _) => info_outcome(&ladder, &text),
                    (DtmfMode::Inband, _) => (
                        StepStatus::Pass,
                        format!(
                            "offer without telephone-event answered; {text:?} sent as in-band tones (detection at the far end is not observable)"
                        ),
                    ),
                }
            }
        };
        self.push(name, false, status, detail, started, ladder);
    }

    async fn codec_step(&mut self, codec: media::sdp::AudioCodec) {
        let name = codec_step(codec);
        let implied = !self.config.codecs.is_empty();
        let sip = SipOptions {
            codecs: vec![codec],
            ..SipOptions::default()
        };
        let (started, call_id, result) = self.short_call(sip, Vec::new()).await;
        let ladder = call_id
            .map(|c| self.ladder(&c, started))
            .unwrap_or_default();
        let (status, detail) = match result {
            Err(why) => (StepStatus::Fail, why),
            Ok(_) => (
                StepStatus::Pass,
                format!("an offer of only {} was answered", codec.encoding_name()),
            ),
        };
        self.push(&name, implied, status, detail, started, ladder);
    }
}

fn to_ladder(lines: Vec<TraceLine>, started: Instant) -> Vec<LadderLine> {
    lines
        .into_iter()
        .map(|l| LadderLine {
            t_ms: millis(l.at.saturating_duration_since(started)),
            direction: l.direction,
            peer: l.peer.to_string(),
            message: l.first,
            cseq: l.cseq,
        })
        .collect()
}

fn codec_step(codec: media::sdp::AudioCodec) -> String {
    format!("codec-{}", codec.encoding_name().to_ascii_lowercase())
}

/// `dtmf-info` passes when every INFO we sent got a 2xx.
fn info_outcome(ladder: &[TraceLine], digits: &str) -> (StepStatus, String) {
    let sent: Vec<&TraceLine> = ladder
        .iter()
        .filter(|l| l.direction == TraceDirection::Out && l.first == "INFO")
        .collect();
    if sent.is_empty() {
        return (StepStatus::Fail, "no INFO was sent".to_owned());
    }
    let mut cseqs: Vec<&str> = sent.iter().map(|l| l.cseq.as_str()).collect();
    cseqs.dedup();
    let mut failed = Vec::new();
    for cseq in &cseqs {
        let answer = ladder
            .iter()
            .filter(|l| l.direction == TraceDirection::In && l.cseq == *cseq)
            .map(|l| l.first.as_str())
            .find(|f| !f.starts_with('1'));
        match answer {
            Some(a) if a.starts_with('2') => {}
            Some(a) => failed.push(format!("{cseq}: {a}")),
            None => failed.push(format!("{cseq}: no answer")),
        }
    }
    if failed.is_empty() {
        (
            StepStatus::Pass,
            format!(
                "{digits:?} sent as {} INFO (application/dtmf-relay), each answered 2xx",
                cseqs.len()
            ),
        )
    } else {
        (
            StepStatus::Fail,
            format!("INFO not accepted: {}", failed.join(", ")),
        )
    }
}

/// Answers a 401/407: the credentials for the retry, or why not.
fn answer_challenge(
    client: &mut DigestClient,
    resp: &Response,
    sent: &[(AuthHeader, Authorization)],
    uri: &str,
) -> Result<Vec<(AuthHeader, Authorization)>, String> {
    let (header, name) = if resp.status.as_u16() == 401 {
        (AuthHeader::Www, HeaderName::WwwAuthenticate)
    } else {
        (AuthHeader::Proxy, HeaderName::ProxyAuthenticate)
    };
    let challenges: Vec<Challenge> = resp
        .headers
        .get_all(&name)
        .filter_map(|v| Challenge::parse_bytes(v).ok())
        .collect();
    let ours: Vec<Authorization> = sent
        .iter()
        .filter(|(h, _)| *h == header)
        .map(|(_, a)| a.clone())
        .collect();
    match client.handle_challenges(header, &challenges, &ours) {
        Ok(ChallengeOutcome::Retry) => {}
        Ok(ChallengeOutcome::Rejected { realm }) => {
            return Err(format!("credentials rejected for realm {realm:?}"));
        }
        Err(e) => return Err(e.to_string()),
    }
    let cnonce = format!("{:016x}", random_u64());
    client
        .authorize("REGISTER", uri, b"", &cnonce)
        .map_err(|e| e.to_string())
}

fn status_text(resp: &Response) -> String {
    let reason = String::from_utf8_lossy(&resp.reason);
    format!("{} {}", resp.status.as_u16(), reason.trim())
}

/// A final event's status and reason, for a step's detail.
fn failure_text(details: &Value) -> String {
    let status = details["sip_status"].as_u64();
    let reason = details["reason"]
        .as_str()
        .or_else(|| details["end_reason"].as_str())
        .unwrap_or("");
    let outcome = details["outcome"].as_str().unwrap_or("failed");
    match status {
        Some(s) => format!("{outcome}: {s} {reason}").trim().to_owned(),
        None => format!("{outcome} {reason}").trim().to_owned(),
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// The report as text: every step's ladder, then the pass/fail table.
pub fn render_text(report: &ProbeReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "callplane probe {} (from {})",
        report.target, report.local
    );
    for step in &report.steps {
        let _ = writeln!(
            out,
            "\n== {} [{}] {:.0} ms: {}",
            step.name,
            step.status.label(),
            step.duration_ms,
            step.detail
        );
        for l in &step.ladder {
            let arrow = match l.direction {
                TraceDirection::Out => "-->",
                TraceDirection::In => "<--",
            };
            let _ = writeln!(
                out,
                "  {:>9.1} ms  {arrow} {:<22} {:<18} {}",
                l.t_ms, l.message, l.cseq, l.peer
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{:<18} {:<6} {:<9} {:>8}  detail",
        "step", "result", "required", "ms"
    );
    for step in &report.steps {
        let _ = writeln!(
            out,
            "{:<18} {:<6} {:<9} {:>8.0}  {}",
            step.name,
            step.status.label(),
            if step.required { "yes" } else { "no" },
            step.duration_ms,
            step.detail
        );
    }
    if report.trace_dropped > 0 {
        let _ = writeln!(
            out,
            "({} ladder lines not kept: trace full)",
            report.trace_dropped
        );
    }
    let _ = writeln!(
        out,
        "\nresult: {}",
        if report.passed {
            "PASS (every required step passed)"
        } else {
            "FAIL (a required step did not pass)"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(direction: TraceDirection, first: &str, cseq: &str) -> TraceLine {
        TraceLine {
            at: clock::now(),
            direction,
            peer: "127.0.0.1:5060".parse().expect("addr"),
            first: first.to_owned(),
            call_id: "c".to_owned(),
            cseq: cseq.to_owned(),
        }
    }

    #[test]
    fn info_passes_only_when_every_info_got_a_2xx() {
        let ok = [
            line(TraceDirection::Out, "INFO", "2 INFO"),
            line(TraceDirection::In, "200 OK", "2 INFO"),
            line(TraceDirection::Out, "INFO", "3 INFO"),
            line(TraceDirection::In, "200 OK", "3 INFO"),
        ];
        assert_eq!(info_outcome(&ok, "12").0, StepStatus::Pass);
        let refused = [
            line(TraceDirection::Out, "INFO", "2 INFO"),
            line(TraceDirection::In, "405 Method Not Allowed", "2 INFO"),
        ];
        let (status, detail) = info_outcome(&refused, "1");
        assert_eq!(status, StepStatus::Fail);
        assert!(detail.contains("405"), "{detail}");
        let unanswered = [line(TraceDirection::Out, "INFO", "2 INFO")];
        assert_eq!(info_outcome(&unanswered, "1").0, StepStatus::Fail);
        assert_eq!(info_outcome(&[], "1").0, StepStatus::Fail);
    }

    #[test]
    fn the_run_passes_only_when_every_required_step_passed() {
        let step = |status, required| StepReport {
            name: "x".to_owned(),
            status,
            required,
            detail: String::new(),
            duration_ms: 1.0,
            ladder: Vec::new(),
        };
        let report = |steps: Vec<StepReport>| {
            let passed = steps
                .iter()
                .all(|s| !s.required || s.status == StepStatus::Pass);
            ProbeReport {
                target: "sip:x".to_owned(),
                local: "127.0.0.1:1".to_owned(),
                steps,
                passed,
                trace_dropped: 0,
            }
        };
        let ok = report(vec![
            step(StepStatus::Pass, true),
            step(StepStatus::Fail, false),
        ]);
        assert!(ok.passed);
        assert!(render_text(&ok).contains("result: PASS"));
        let skipped = report(vec![step(StepStatus::Skip, true)]);
        assert!(!skipped.passed, "a required skip is no pass");
        assert!(render_text(&skipped).contains("result: FAIL"));
    }
}
