//! Engine scenarios in virtual time: a [`CallCore`] and a peer user agent talk through an
//! in-memory network, with the `sip` crate's transaction layer ([`Endpoint`]) on both sides, as
//! in the real engine. No socket, no thread, no clock: a scenario of minutes runs in
//! milliseconds, and every timer (ring timeout, teardown, RTP timeout, retransmissions) fires
//! at its exact virtual instant.
//!
//! The harness is the core's driver, as `call.rs` is in production: it sends the core's SIP
//! through our endpoint and feeds back the transaction keys, answers a media attach, and
//! completes the end of the call (the media session stopped, no recording) when the core asks.
//! The media session's own events (an RTP timeout) are what a media worker would report; a
//! scenario feeds them where it needs them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::sdp::{Negotiator, Sdp, SdpConfig};
use media::session::MediaEvent;
use serde_json::Value;
use sip::dialog::{DialogConfig, DialogEvent, InviteParams, InviteSession, Output, next_hop};
use sip::endpoint::{Endpoint, EndpointConfig, EndpointEvent, EndpointOutput};
use sip::message::{Host, Message, Method, NameAddr, StatusCode, Uri};
use sip::transaction::{TransactionKey, Transport};

use super::{CallCore, CallEnv, CoreInput, CoreOutput, Rng, resolve};
use crate::engine::limits::CallLimits;
use crate::engine::{InboundConfig, OriginateRequest, PromptScope, Reoffer};

const OURS: &str = "192.0.2.10:5060";
const PEER: &str = "192.0.2.20:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn env(limits: CallLimits) -> Arc<CallEnv> {
    Arc::new(CallEnv {
        advertise: addr(OURS),
        advertise_tcp: None,
        advertise_tls: None,
        media_ip: addr(OURS).ip(),
        limits,
        cooldowns: Mutex::default(),
        srtp_key: super::os_srtp_key,
    })
}

/// The limits of a scenario: no session timer (no refresh traffic to account for), the RTP
/// timeout and longest call the engine defaults to.
fn limits() -> CallLimits {
    CallLimits {
        session_expires: None,
        ..CallLimits::default()
    }
}

fn originate() -> OriginateRequest {
    OriginateRequest {
        sip: Default::default(),
        alternates: Vec::new(),
        to: Uri::parse(format!("sip:bob@{PEER}").as_bytes()).expect("uri"),
        destination: addr(PEER),
        from: None,
        play: None,
        gather_digits: 0,
        record: None,
        ring_timeout: Duration::from_secs(30),
        transport: Transport::Udp,
        send_dtmf: Vec::new(),
        dtmf_after: Duration::ZERO,
        hangup_after: None,
        script: None,
        prompts: None,
        prompt_scope: PromptScope::Local,
        tag: None,
        variables: Default::default(),
        max_duration: None,
    }
}

/// Whether to lose a message (sent by us when the flag is set).
type DropFilter = Box<dyn FnMut(bool, &Message) -> bool>;

/// One message on the wire.
#[derive(Debug, Clone)]
struct Wire {
    /// Sent by us (else by the peer).
    ours: bool,
    /// Where it was sent.
    to: SocketAddr,
    at: Duration,
    msg: Message,
}

impl Wire {
    fn method(&self) -> Option<&Method> {
        match &self.msg {
            Message::Request(r) => Some(&r.method),
            Message::Response(_) => None,
        }
    }

    fn status(&self) -> Option<u16> {
        match &self.msg {
            Message::Response(r) => Some(r.status.as_u16()),
            Message::Request(_) => None,
        }
    }
}

/// The far end: an endpoint and its INVITE sessions (the callee of an outbound call, the
/// caller of an inbound one).
struct Peer {
    ep: Endpoint,
    sessions: Vec<InviteSession>,
    /// Per session: its INVITE transaction.
    invite_keys: Vec<TransactionKey>,
    /// Our client transactions -> the session.
    req_keys: Vec<(TransactionKey, usize)>,
    events: Vec<DialogEvent>,
    negotiator: Negotiator,
}

/// The world of one call: the core, our endpoint, the peer, the wire and a virtual clock.
struct World {
    start: Instant,
    now: Instant,
    env: Arc<CallEnv>,
    core: Option<CallCore>,
    ours: Endpoint,
    peer: Peer,
    wire: Vec<Wire>,
    in_flight: VecDeque<(bool, Bytes)>,
    /// Drops a message (sent by us when the flag is set) instead of delivering it.
    drop: DropFilter,
    /// Timeline events: offset, kind, details.
    events: Vec<(Duration, &'static str, Value)>,
    /// What the core asked of the media session, in order (`start`, `drop`, `rearm`, ...;
    /// `play NAME`, `dtmf DIGITS`).
    media: Vec<String>,
    /// An inbound call's configuration, used when the peer's INVITE arrives.
    inbound: Option<InboundConfig>,
    /// The media worker refuses the session.
    refuse_media: bool,
    /// What the transport says of a failed connection, with a `TransportError`.
    transport_detail: Option<Arc<str>>,
}

fn dialog_config(host: &str, seed: u64) -> DialogConfig {
    let a = addr(host);
    DialogConfig {
        via_host: Host::parse(a.ip().to_string().as_bytes()).expect("host"),
        via_port: Some(a.port()),
        seed,
        ..DialogConfig::default()
    }
}

impl World {
    fn new() -> World {
        let start = crate::clock::now();
        World {
            start,
            now: start,
            env: env(limits()),
            core: None,
            ours: Endpoint::new(EndpointConfig {
                seed: 11,
                ..EndpointConfig::default()
            }),
            peer: Peer {
                ep: Endpoint::new(EndpointConfig {
                    seed: 22,
                    ..EndpointConfig::default()
                }),
                sessions: Vec::new(),
                invite_keys: Vec::new(),
                req_keys: Vec::new(),
                events: Vec::new(),
                negotiator: Negotiator::new(SdpConfig::new(addr(PEER).ip(), 40_000, 7)),
            },
            wire: Vec::new(),
            in_flight: VecDeque::new(),
            drop: Box::new(|_, _| false),
            events: Vec::new(),
            media: Vec::new(),
            inbound: None,
            refuse_media: false,
            transport_detail: None,
        }
    }

    /// An outbound call to the peer.
    fn dial(req: OriginateRequest) -> World {
        let mut w = World::new();
        let core = CallCore::outbound(
            w.env.clone(),
            w.now,
            Duration::ZERO,
            Rng::new(1),
            "call-1",
            &req,
            30_000,
        );
        w.core = Some(core);
        w.pump();
        w
    }

    /// The peer calls us; the call runs `config`.
    fn called(config: InboundConfig) -> World {
        let mut w = World::new();
        w.inbound = Some(config);
        let mut params = InviteParams {
            request_uri: Uri::parse(format!("sip:callplane@{OURS}").as_bytes()).expect("uri"),
            from: NameAddr::new(Uri::parse(format!("sip:alice@{PEER}").as_bytes()).expect("uri")),
            from_tag: "alicetag".into(),
            to: NameAddr::new(Uri::parse(format!("sip:callplane@{OURS}").as_bytes()).expect("uri")),
            call_id: "call-in-1".into(),
            cseq: 1,
            contact: NameAddr::new(
                Uri::parse(format!("sip:alice@{PEER}").as_bytes()).expect("uri"),
            ),
            routes: Vec::new(),
            body: Bytes::new(),
        };
        params.body = Bytes::from(w.peer.negotiator.create_offer().to_bytes());
        let session = InviteSession::uac(dialog_config(PEER, 5), &params);
        w.peer.sessions.push(session);
        w.pump();
        w
    }

    fn core(&mut self) -> &mut CallCore {
        self.core.as_mut().expect("the call exists")
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Feed the core one input now, then carry out its outputs.
    fn input(&mut self, input: CoreInput) {
        let now = self.now;
        self.core().handle_input(now, input);
        self.pump();
    }

    /// Carry out the core's outputs, the endpoints' and the peer's, and deliver every message,
    /// until nothing moves (a network with no latency).
    fn pump(&mut self) {
        loop {
            let mut progress = self.drive_core();
            progress |= self.drive_peer();
            while let Some(o) = self.ours.poll_output() {
                progress = true;
                match o {
                    EndpointOutput::Transmit(t) => self.transmit(true, t.destination, t.bytes),
                    EndpointOutput::Event(e) => self.our_event(e),
                }
            }
            while let Some(o) = self.peer.ep.poll_output() {
                progress = true;
                match o {
                    EndpointOutput::Transmit(t) => self.transmit(false, t.destination, t.bytes),
                    EndpointOutput::Event(e) => self.peer_event(e),
                }
            }
            while let Some((ours, bytes)) = self.in_flight.pop_front() {
                progress = true;
                let now = self.now;
                if ours {
                    self.peer
                        .ep
                        .handle_datagram(now, addr(OURS), Transport::Udp, bytes);
                } else {
                    self.ours
                        .handle_datagram(now, addr(PEER), Transport::Udp, bytes);
                }
            }
            if !progress {
                break;
            }
        }
    }

    /// Every message reaches the other side whatever its destination (the peer answers for
    /// every address), unless the drop filter loses it; the log keeps the destination.
    fn transmit(&mut self, ours: bool, to: SocketAddr, bytes: Bytes) {
        let msg = Message::parse(bytes.clone()).expect("both sides send parseable messages");
        let dropped = (self.drop)(ours, &msg);
        self.wire.push(Wire {
            ours,
            to,
            at: self.elapsed(),
            msg,
        });
        if !dropped {
            self.in_flight.push_back((ours, bytes));
        }
    }

    /// The core's driver: what `call.rs` does with each output, on the in-memory network.
    fn drive_core(&mut self) -> bool {
        let mut progress = false;
        let now = self.now;
        while let Some(out) = self.core.as_mut().and_then(CallCore::poll_output) {
            progress = true;
            match out {
                CoreOutput::Event { at, kind, details } => {
                    self.events.push((at - self.start, kind, details));
                }
                CoreOutput::SendRequest { request, peer, .. } => {
                    let destination = resolve(&next_hop(&request), peer);
                    let result = self
                        .ours
                        .send_request(now, request, destination, Transport::Udp)
                        .map_err(|e| e.to_string());
                    self.core().handle_input(
                        now,
                        CoreInput::RequestSent {
                            destination,
                            result,
                        },
                    );
                }
                CoreOutput::SendResponse { to, response } => {
                    let _ = self.ours.send_response(now, &to, response);
                }
                CoreOutput::SendAck { ack, peer, .. } => {
                    let destination = resolve(&next_hop(&ack), peer);
                    self.ours
                        .send_stateless(destination, Transport::Udp, &Message::Request(ack));
                    self.core().handle_input(now, CoreInput::AckSent(Ok(())));
                }
                CoreOutput::CancelInvite { key } => {
                    let result = self
                        .ours
                        .cancel(now, &key)
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    self.core().handle_input(now, CoreInput::CancelSent(result));
                }
                CoreOutput::StartMedia { .. } => {
                    let result = if self.refuse_media {
                        Err("no media worker".to_owned())
                    } else {
                        self.media.push("start".into());
                        Ok(())
                    };
                    self.core()
                        .handle_input(now, CoreInput::MediaAttached(result));
                }
                CoreOutput::Media(op) => self.media.push(format!("{op:?}")),
                CoreOutput::RouteFrames(target) => self.media.push(format!("route {target:?}")),
                CoreOutput::DropMedia => self.media.push("drop".into()),
                CoreOutput::LoadPrompt { file, .. } => {
                    self.media.push(format!("play {file}"));
                    let input = CoreInput::Prompt {
                        path: file.clone().into(),
                        file,
                        result: Ok(Duration::from_secs(1)),
                    };
                    self.core().handle_input(now, input);
                }
                CoreOutput::SendDtmf(digits) => {
                    let text: String = digits.iter().map(|d| d.as_char()).collect();
                    self.media.push(format!("dtmf {text}"));
                    self.core().handle_input(now, CoreInput::DtmfSent(Ok(())))
                }
                CoreOutput::Finish { .. } => {
                    self.media.push("stop".into());
                    self.core().handle_input(now, CoreInput::MediaStopped);
                    self.core()
                        .handle_input(now, CoreInput::Finalize { media: None });
                }
            }
        }
        progress
    }

    /// What our endpoint said: the INVITE that starts an inbound call (the dispatcher's part),
    /// else to the call.
    fn our_event(&mut self, event: EndpointEvent) {
        let now = self.now;
        if let EndpointEvent::NewRequest {
            key,
            request,
            source,
            transport,
            ..
        } = event
        {
            if request.method != Method::Invite || self.core.is_some() {
                return;
            }
            let config = self.inbound.clone().expect("an inbound scenario");
            let (dialog_config, contact) = super::identity(&self.env, transport, None, false, 3);
            let session =
                InviteSession::uas(now, dialog_config, request, key, "ourtag".into(), contact)
                    .expect("a valid INVITE");
            let core = CallCore::inbound(
                self.env.clone(),
                now,
                Duration::ZERO,
                Rng::new(2),
                "call-in-1",
                session,
                source,
                transport,
                &config,
                30_000,
                None,
            );
            self.core = Some(core);
            return;
        }
        if self.core.is_some() {
            let detail = match &event {
                EndpointEvent::TransportError { .. } => self.transport_detail.clone(),
                _ => None,
            };
            self.core()
                .handle_input(now, CoreInput::Sip { event, detail });
        }
    }

    /// The peer's user agent: its sessions' outputs.
    fn drive_peer(&mut self) -> bool {
        let mut progress = false;
        let now = self.now;
        let p = &mut self.peer;
        for idx in 0..p.sessions.len() {
            while let Some(o) = p.sessions[idx].poll_output() {
                progress = true;
                match o {
                    Output::SendRequest(r) => {
                        let dest = resolve(&next_hop(&r), addr(OURS));
                        let initial = r.method == Method::Invite
                            && r.headers.to().is_ok_and(|t| t.tag().is_none());
                        if let Ok(key) = p.ep.send_request(now, r, dest, Transport::Udp) {
                            if initial {
                                p.invite_keys.push(key.clone());
                            }
                            p.req_keys.push((key, idx));
                        }
                    }
                    Output::SendAck(a) => {
                        let dest = resolve(&next_hop(&a), addr(OURS));
                        p.ep.send_stateless(dest, Transport::Udp, &Message::Request(a));
                    }
                    Output::SendResponse { to, response } => {
                        let _ = p.ep.send_response(now, &to, response);
                    }
                    Output::CancelInvite => {
                        if let Some(k) = p.invite_keys.get(idx).cloned() {
                            let _ = p.ep.cancel(now, &k);
                        }
                    }
                    // The peer accepts every re-INVITE with its own answer.
                    Output::Event(DialogEvent::ReInvite { offer }) => {
                        let answer = Sdp::parse(&offer)
                            .ok()
                            .and_then(|sdp| p.negotiator.receive_offer(&sdp).ok())
                            .map(|(answer, _)| Bytes::from(answer.to_bytes()))
                            .unwrap_or_default();
                        let _ = p.sessions[idx].answer_reinvite(now, StatusCode::OK, answer);
                    }
                    Output::Event(e) => p.events.push(e),
                }
            }
        }
        progress
    }

    fn peer_event(&mut self, event: EndpointEvent) {
        let now = self.now;
        let p = &mut self.peer;
        match event {
            EndpointEvent::NewRequest { key, request, .. } if request.method == Method::Invite => {
                let s = InviteSession::uas(
                    now,
                    dialog_config(PEER, 9 + p.sessions.len() as u64),
                    request,
                    key.clone(),
                    format!("bobtag{}", p.sessions.len()),
                    NameAddr::new(Uri::parse(format!("sip:bob@{PEER}").as_bytes()).expect("uri")),
                )
                .expect("a valid INVITE");
                p.sessions.push(s);
                p.invite_keys.push(key);
            }
            EndpointEvent::InDialogRequest {
                dialog,
                key,
                request,
                ..
            } => {
                if let Some(s) = p.sessions.iter_mut().find(|s| s.matches(&dialog)) {
                    s.handle_request(now, request, key);
                }
            }
            EndpointEvent::CancelReceived { invite, .. } => {
                if let Some(i) = p.invite_keys.iter().position(|k| *k == invite) {
                    p.sessions[i].handle_cancel(now);
                }
            }
            EndpointEvent::Response { key, response } => {
                if let Some((_, i)) = p.req_keys.iter().find(|(k, _)| *k == key) {
                    p.sessions[*i].handle_response(now, response);
                }
            }
            EndpointEvent::TransactionTimeout { key, .. }
            | EndpointEvent::TransportError { key, .. } => {
                if let (Some((_, i)), TransactionKey::Client(k)) =
                    (p.req_keys.iter().find(|(k, _)| *k == key), &key)
                {
                    p.sessions[*i].handle_transaction_timeout(now, &k.method);
                }
            }
            _ => {}
        }
    }

    /// Advance virtual time by `d`, firing every timer of every machine on the way.
    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        // A machine whose deadline does not move once it has fired would spin here forever.
        let mut fired_at_now = 0;
        loop {
            self.pump();
            let next = [
                self.core.as_ref().and_then(CallCore::poll_timeout),
                self.ours.poll_timeout(),
                self.peer.ep.poll_timeout(),
            ]
            .into_iter()
            .chain(self.peer.sessions.iter().map(InviteSession::poll_timeout))
            .flatten()
            .min();
            match next {
                Some(t) if t <= until => {
                    if t <= self.now {
                        fired_at_now += 1;
                        assert!(fired_at_now < 1000, "a deadline that does not move: {t:?}");
                    } else {
                        fired_at_now = 0;
                    }
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.ours.handle_timeout(now);
                    self.peer.ep.handle_timeout(now);
                    for s in &mut self.peer.sessions {
                        s.handle_timeout(now);
                    }
                    if let Some(core) = self.core.as_mut()
                        && core.poll_timeout().is_some_and(|t| t <= now)
                    {
                        core.handle_input(now, CoreInput::Timeout);
                    }
                }
                _ => break,
            }
        }
        self.now = until;
        self.pump();
    }

    /// The peer's session (the only one unless the call failed over).
    fn callee(&mut self) -> &mut InviteSession {
        self.peer
            .sessions
            .last_mut()
            .expect("the peer has a session")
    }

    /// The peer's SDP answer to our INVITE's offer.
    fn peer_answer_sdp(&mut self) -> Bytes {
        let offer = self.callee().invite().body.clone();
        let sdp = Sdp::parse(&offer).expect("our offer parses");
        let (answer, _) = self
            .peer
            .negotiator
            .receive_offer(&sdp)
            .expect("a codec in common");
        Bytes::from(answer.to_bytes())
    }

    /// The peer answers with SDP.
    fn peer_answers(&mut self) {
        let now = self.now;
        let answer = self.peer_answer_sdp();
        self.callee().accept(now, answer).expect("accept");
        self.pump();
    }

    fn peer_rings(&mut self) {
        let now = self.now;
        self.callee()
            .provisional(now, StatusCode::RINGING, Bytes::new(), false)
            .expect("180");
        self.pump();
    }

    fn peer_early_media(&mut self) {
        let now = self.now;
        let answer = self.peer_answer_sdp();
        self.callee()
            .provisional(now, StatusCode::new(183).expect("183"), answer, false)
            .expect("183");
        self.pump();
    }

    fn peer_rejects(&mut self, status: u16) {
        let now = self.now;
        self.callee()
            .reject(now, StatusCode::new(status).expect("status"))
            .expect("reject");
        self.pump();
    }

    fn peer_hangs_up(&mut self) {
        let now = self.now;
        self.callee().bye(now).expect("BYE");
        self.pump();
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.events.iter().map(|(_, k, _)| *k).collect()
    }

    fn event(&self, kind: &str) -> Option<&(Duration, &'static str, Value)> {
        self.events.iter().find(|(_, k, _)| *k == kind)
    }

    /// The final event's details.
    fn last(&self) -> &Value {
        let (_, kind, details) = self.events.last().expect("events");
        assert!(
            *kind == "call.completed" || *kind == "call.failed",
            "the call ended: {:?}",
            self.kinds()
        );
        details
    }

    fn done(&self) -> bool {
        self.core.as_ref().is_some_and(CallCore::is_done)
    }

    fn sent(&self, ours: bool, method: Method) -> Vec<&Wire> {
        self.wire
            .iter()
            .filter(|w| w.ours == ours && w.method() == Some(&method))
            .collect()
    }

    fn responses(&self, ours: bool, status: u16) -> Vec<&Wire> {
        self.wire
            .iter()
            .filter(|w| w.ours == ours && w.status() == Some(status))
            .collect()
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn an_answered_call_that_the_callee_hangs_up_is_completed_with_its_duration() {
    let mut w = World::dial(originate());
    assert_eq!(w.sent(true, Method::Invite).len(), 1);
    w.peer_rings();
    w.run_for(secs(2));
    w.peer_answers();
    assert!(w.core().state.answered_at().is_some());
    assert_eq!(w.media.first().map(String::as_str), Some("start"));
    assert_eq!(w.sent(true, Method::Ack).len(), 1, "our ACK of the 200");
    w.run_for(secs(10));
    w.peer_hangs_up();
    w.run_for(secs(1));
    assert!(w.done());
    assert_eq!(
        w.kinds(),
        [
            "call.target",
            "sip.invite_sent",
            "sip.trying",
            "sip.ringing",
            // The session hands out its ACK before it reports the confirmed dialog.
            "sip.ack_sent",
            "sip.answered",
            "sip.bye_received",
            "call.completed"
        ]
    );
    let last = w.last();
    assert_eq!(last["outcome"], "answered");
    assert_eq!(last["end_reason"], "RemoteBye");
    assert_eq!(
        last["duration_ms"], 10_000,
        "answered at 2 s, BYE at 12 s: {last}"
    );
    assert_eq!(w.responses(true, 200).len(), 1, "we answer the BYE");
}

#[test]
fn busy_is_busy_and_nothing_is_sent_after_the_ack() {
    let mut w = World::dial(originate());
    w.run_for(ms(300));
    w.peer_rejects(486);
    w.run_for(secs(40));
    assert!(w.done());
    let last = w.last();
    assert_eq!(last["outcome"], "busy");
    assert_eq!(last["sip_status"], 486);
    assert!(
        !w.media.iter().any(|m| m == "start"),
        "no media for a rejected call: {:?}",
        w.media
    );
    // The transaction layer ACKs the 486 (§17.1.1.3); the call sends no BYE or CANCEL.
    assert!(w.sent(true, Method::Bye).is_empty());
    assert!(w.sent(true, Method::Cancel).is_empty());
}

#[test]
fn the_ring_timeout_cancels_at_its_instant_and_ends_as_no_answer() {
    let mut req = originate();
    req.ring_timeout = secs(20);
    let mut w = World::dial(req);
    w.peer_rings();
    w.run_for(secs(19));
    assert!(
        w.sent(true, Method::Cancel).is_empty(),
        "not before the timeout"
    );
    w.run_for(secs(2));
    let cancels = w.sent(true, Method::Cancel);
    assert_eq!(cancels.len(), 1);
    assert_eq!(
        cancels[0].at,
        secs(20),
        "the CANCEL goes at the ring timeout"
    );
    assert!(w.done(), "the peer's 487 ends it: {:?}", w.kinds());
    assert_eq!(w.last()["outcome"], "no_answer");
    assert_eq!(w.last()["sip_status"], 487);
}

#[test]
fn a_200_crossing_our_cancel_is_acked_then_byed_and_stays_no_answer() {
    let mut req = originate();
    req.ring_timeout = secs(5);
    let mut w = World::dial(req);
    w.peer_rings();
    // The CANCEL is lost on its way: the callee answers as if it never came.
    w.drop =
        Box::new(|ours, m| ours && matches!(m, Message::Request(r) if r.method == Method::Cancel));
    w.run_for(secs(5));
    assert_eq!(w.sent(true, Method::Cancel).len(), 1);
    w.drop = Box::new(|_, _| false);
    w.peer_answers();
    w.run_for(secs(2));
    assert_eq!(w.sent(true, Method::Ack).len(), 1, "the 2xx is ACKed");
    assert_eq!(
        w.sent(true, Method::Bye).len(),
        1,
        "and the unwanted dialog BYEd"
    );
    assert!(w.done(), "{:?}", w.kinds());
    assert!(w.event("sip.answered_after_cancel").is_some());
    let last = w.last();
    assert_eq!(last["outcome"], "no_answer", "{last}");
    assert_eq!(last["race"], "200 OK crossed our CANCEL; ACKed, then BYE");
}

#[test]
fn early_media_starts_the_media_before_the_answer_and_the_answer_rearms_its_timeout() {
    let mut w = World::dial(originate());
    w.peer_early_media();
    assert_eq!(w.media, ["start"], "media runs on the 183's SDP");
    assert!(w.event("sip.early_media").is_some());
    w.run_for(secs(3));
    w.peer_answers();
    assert_eq!(
        w.media,
        ["start", "RearmRtpTimeout"],
        "the answer starts the RTP timeout's count; no second session"
    );
    w.input(CoreInput::Hangup);
    w.run_for(secs(1));
    assert!(w.done());
    assert_eq!(w.last()["outcome"], "answered");
    assert_eq!(w.last()["duration_ms"], 0);
}

#[test]
fn a_re_invite_to_hold_is_answered_and_changes_the_media_direction() {
    let mut w = World::dial(originate());
    w.peer_answers();
    let now = w.now;
    w.peer
        .negotiator
        .set_direction(media::sdp::Direction::SendOnly);
    let offer = Bytes::from(w.peer.negotiator.create_offer().to_bytes());
    w.callee().reinvite(now, offer).expect("re-INVITE");
    w.pump();
    assert_eq!(w.responses(true, 200).len(), 1, "we answer the re-INVITE");
    assert!(
        w.media
            .iter()
            .any(|m| m.contains("SetDirection { send: false, expect_inbound: false }")),
        "a peer that holds us (sendonly): we answer recvonly, send nothing, and its silence \
         is no RTP timeout: {:?}",
        w.media
    );
    // And our own hold the other way.
    w.input(CoreInput::Reoffer(Reoffer::Hold));
    assert_eq!(w.sent(true, Method::Invite).len(), 2);
    assert!(w.event("sip.reoffer_sent").is_some());
    assert!(
        w.event("sip.reinvite_accepted").is_some(),
        "{:?}",
        w.kinds()
    );
}

#[test]
fn our_hangup_of_an_answered_call_sends_bye_and_completes_on_its_200() {
    let mut w = World::dial(originate());
    w.peer_answers();
    w.run_for(secs(3));
    w.input(CoreInput::Hangup);
    assert_eq!(w.sent(true, Method::Bye).len(), 1);
    w.run_for(secs(1));
    assert!(w.done());
    assert!(w.event("sip.bye_sent").is_some());
    let last = w.last();
    assert_eq!(last["outcome"], "answered");
    assert_eq!(last["end_reason"], "LocalBye");
    assert_eq!(last["duration_ms"], 3000);
    assert_eq!(w.media.last().map(String::as_str), Some("stop"));
}

#[test]
fn a_callee_that_never_answers_our_cancel_is_torn_down_after_the_hangup_bound() {
    let mut w = World::dial(originate());
    w.peer_rings();
    // Every CANCEL (and retransmission) is lost: no 487 ever ends the INVITE.
    w.drop =
        Box::new(|ours, m| ours && matches!(m, Message::Request(r) if r.method == Method::Cancel));
    w.run_for(secs(2));
    w.input(CoreInput::Hangup);
    assert_eq!(w.sent(true, Method::Cancel).len(), 1);
    w.run_for(super::HANGUP_TEARDOWN - ms(1));
    assert!(!w.done(), "not before the teardown bound: {:?}", w.kinds());
    w.run_for(ms(1));
    assert!(w.done(), "{:?}", w.kinds());
    let last = w.last();
    assert_eq!(last["teardown"], "hangup");
    assert_eq!(last["end_reason"], "TornDown");
    assert_eq!(last["outcome"], "cancelled");
}

#[test]
fn our_bye_ends_the_call_at_once_without_waiting_for_its_answer() {
    let mut w = World::dial(originate());
    w.peer_answers();
    // The BYE is lost; the dialog ends when it is sent (§15.1.1), the transaction retries it.
    w.drop =
        Box::new(|ours, m| ours && matches!(m, Message::Request(r) if r.method == Method::Bye));
    w.input(CoreInput::Hangup);
    assert!(w.done(), "{:?}", w.kinds());
    assert_eq!(w.last()["end_reason"], "LocalBye");
    assert!(w.last().get("teardown").is_none());
}

#[test]
fn rtp_silence_after_the_answer_hangs_up_with_rtp_timeout() {
    let mut w = World::dial(originate());
    w.peer_answers();
    w.run_for(secs(30));
    // What the media worker reports when the session's RTP timeout passes.
    w.input(CoreInput::Media(MediaEvent::RtpTimeout));
    assert_eq!(w.sent(true, Method::Bye).len(), 1);
    w.run_for(secs(1));
    assert!(w.done());
    assert_eq!(w.last()["end_reason"], "rtp_timeout");
}

#[test]
fn an_rtp_timeout_before_the_answer_does_not_end_the_call() {
    let mut w = World::dial(originate());
    w.peer_early_media();
    w.input(CoreInput::Media(MediaEvent::RtpTimeout));
    w.run_for(secs(1));
    assert!(w.sent(true, Method::Cancel).is_empty());
    assert!(!w.done());
}

#[test]
fn a_drain_hangs_up_at_its_grace_and_tears_down_one_second_later() {
    let mut w = World::dial(originate());
    w.peer_rings();
    // The callee never answers the CANCEL (no 487): only the drain's teardown ends the call.
    w.drop =
        Box::new(|ours, m| ours && matches!(m, Message::Request(r) if r.method == Method::Cancel));
    w.input(CoreInput::Drain { grace: secs(5) });
    w.run_for(secs(5) - ms(1));
    assert!(
        w.sent(true, Method::Cancel).is_empty(),
        "the grace is the call's"
    );
    w.run_for(ms(1));
    assert_eq!(w.sent(true, Method::Cancel).len(), 1);
    w.run_for(super::DRAIN_TEARDOWN - ms(1));
    assert!(!w.done());
    w.run_for(ms(1));
    assert!(w.done(), "{:?}", w.kinds());
    let last = w.last();
    assert_eq!(last["teardown"], "drain");
    assert_eq!(last["outcome"], "cancelled");
}

#[test]
fn the_longest_call_is_ended_at_its_instant_after_the_answer() {
    let mut req = originate();
    req.max_duration = Some(secs(60));
    let mut w = World::dial(req);
    w.run_for(secs(4));
    w.peer_answers();
    w.run_for(secs(60) - ms(1));
    assert!(w.sent(true, Method::Bye).is_empty());
    w.run_for(ms(1));
    assert_eq!(w.sent(true, Method::Bye).len(), 1);
    w.run_for(secs(1));
    assert_eq!(w.last()["end_reason"], "max_duration");
    assert_eq!(w.last()["duration_ms"], 60_000);
}

#[test]
fn a_send_that_fails_ends_the_call_as_a_network_error() {
    let mut w = World::new();
    let mut core = CallCore::outbound(
        w.env.clone(),
        w.now,
        Duration::ZERO,
        Rng::new(1),
        "call-1",
        &originate(),
        30_000,
    );
    // The driver could not send the INVITE (a refused TLS connection, a full socket).
    while let Some(out) = core.poll_output() {
        match out {
            CoreOutput::Event { at, kind, details } => w.events.push((at - w.start, kind, details)),
            CoreOutput::SendRequest { .. } => {
                core.handle_input(
                    w.now,
                    CoreInput::RequestSent {
                        destination: addr(PEER),
                        result: Err("connection refused".into()),
                    },
                );
                break;
            }
            other => panic!("the INVITE comes first: {other:?}"),
        }
    }
    w.core = Some(core);
    w.pump();
    assert!(w.done(), "{:?}", w.kinds());
    let last = w.last();
    assert_eq!(last["outcome"], "network_error", "{last}");
    assert_eq!(last["reason"], "connection refused");
}

#[test]
fn a_transport_error_on_the_invite_ends_the_call_with_what_the_transport_said() {
    let mut w = World::dial(originate());
    w.run_for(ms(100));
    // The connection under the INVITE broke (a TLS handshake refused, a TCP reset).
    w.transport_detail = Some(Arc::from("TLS handshake failed: unknown issuer"));
    let key = w.core().invite_key.clone().expect("the INVITE is out");
    let now = w.now;
    w.ours.handle_transport_error(now, &key);
    w.pump();
    assert!(w.done(), "{:?}", w.kinds());
    let last = w.last();
    assert_eq!(last["outcome"], "network_error", "{last}");
    assert_eq!(last["reason"], "TLS handshake failed: unknown issuer");
}

#[test]
fn a_media_worker_that_refuses_the_session_ends_the_answered_call() {
    let mut w = World::dial(originate());
    w.refuse_media = true;
    w.peer_answers();
    assert_eq!(w.sent(true, Method::Bye).len(), 1);
    w.run_for(secs(1));
    assert_eq!(w.last()["end_reason"], "media_failed");
}

#[test]
fn an_inbound_call_is_answered_and_the_caller_hangs_up() {
    let mut w = World::called(InboundConfig::default());
    assert_eq!(w.responses(true, 200).len(), 1, "answered at once");
    assert_eq!(w.media.first().map(String::as_str), Some("start"));
    assert!(
        w.peer
            .events
            .iter()
            .any(|e| matches!(e, DialogEvent::Confirmed { .. })),
        "the caller's session is confirmed"
    );
    w.run_for(secs(7));
    w.peer_hangs_up();
    w.run_for(secs(1));
    assert!(w.done());
    let last = w.last();
    assert_eq!(last["outcome"], "answered");
    assert_eq!(last["end_reason"], "RemoteBye");
    assert_eq!(last["duration_ms"], 7000);
}

#[test]
fn an_inbound_caller_that_cancels_a_ringing_call_gets_487() {
    let mut config = InboundConfig::default();
    let by_user = [("callplane".to_owned(), crate::engine::InboundAnswer::Ring)];
    config.by_user = Arc::new(by_user.into_iter().collect());
    let mut w = World::called(config);
    assert_eq!(w.responses(true, 180).len(), 1);
    w.run_for(secs(3));
    let now = w.now;
    w.callee().cancel(now).expect("CANCEL");
    w.pump();
    w.run_for(secs(1));
    assert_eq!(w.responses(true, 487).len(), 1);
    assert!(w.done(), "{:?}", w.kinds());
    assert_ne!(w.last()["outcome"], "answered");
}

#[test]
fn an_hour_long_call_ends_at_its_maximum_duration_in_virtual_time() {
    let mut req = originate();
    req.max_duration = Some(secs(3600));
    let mut w = World::dial(req);
    w.peer_answers();
    w.run_for(secs(3600));
    assert!(w.done());
    assert_eq!(w.last()["duration_ms"], 3_600_000);
    assert_eq!(w.last()["end_reason"], "max_duration");
}

#[test]
fn a_503_moves_the_invite_to_the_next_target_which_answers() {
    let alternate = "192.0.2.30:5060";
    let mut req = originate();
    req.alternates.push(crate::engine::CallRoute {
        to: Uri::parse(format!("sip:bob@{alternate}").as_bytes()).expect("uri"),
        destination: addr(alternate),
        transport: Transport::Udp,
        sip: Default::default(),
        label: "carrier-b".into(),
    });
    let mut w = World::dial(req);
    w.run_for(ms(200));
    w.peer_rejects(503);
    let invites = w.sent(true, Method::Invite);
    assert_eq!(
        invites.len(),
        2,
        "the INVITE goes to the next target at once"
    );
    assert_eq!(invites[0].to, addr(PEER));
    assert_eq!(invites[1].to, addr(alternate));
    let failover = &w.event("call.failover").expect("call.failover").2;
    assert_eq!(failover["reason"], "503");
    assert_eq!(failover["to"], "carrier-b");
    let targets: Vec<_> = w
        .events
        .iter()
        .filter(|(_, k, _)| *k == "call.target")
        .map(|(_, _, d)| d["attempt"].clone())
        .collect();
    assert_eq!(targets, [1, 2]);
    w.peer_answers();
    w.run_for(secs(2));
    w.input(CoreInput::Hangup);
    w.run_for(secs(1));
    assert!(w.done());
    let last = w.last();
    assert_eq!(last["outcome"], "answered", "{last}");
    assert_eq!(
        last["sip_status"], 200,
        "the answering target's status, not the 503"
    );
}

#[test]
fn digits_to_send_go_to_the_media_session_at_their_delay_after_the_answer() {
    let mut req = originate();
    req.send_dtmf = "12#"
        .chars()
        .map(|c| media::dtmf::Digit::from_char(c).expect("digit"))
        .collect();
    req.dtmf_after = secs(2);
    let mut w = World::dial(req);
    w.run_for(secs(1));
    w.peer_answers();
    w.run_for(secs(2) - ms(1));
    assert!(
        !w.media.iter().any(|m| m.starts_with("dtmf")),
        "{:?}",
        w.media
    );
    w.run_for(ms(1));
    assert!(w.media.iter().any(|m| m == "dtmf 12#"), "{:?}", w.media);
    let (at, _, sent) = w.event("dtmf.sent").expect("dtmf.sent");
    assert_eq!(*at, secs(3), "answered at 1 s, sent 2 s later");
    assert_eq!(sent["digits"], "12#");
}

/// An inbound call that runs a script: the script answers, asks its question, stores the
/// caller's key and hangs up.
#[test]
fn an_inbound_script_answers_asks_gathers_a_key_and_hangs_up() {
    let script = crate::script::parse(
        r#"{"version": 1, "steps": [
            {"answer": {}},
            {"gather": {"prompt": "question", "max_digits": 1, "store_as": "answer",
                        "first_digit_timeout_ms": 5000}},
            {"hangup": {"reason": "done"}}
        ]}"#,
    )
    .expect("a valid script");
    let config = InboundConfig {
        script: Some(Arc::new(script)),
        ..InboundConfig::default()
    };
    let mut w = World::called(config);
    assert_eq!(
        w.responses(true, 180).len(),
        1,
        "it rings until the script answers"
    );
    assert_eq!(w.responses(true, 200).len(), 1, "the script's answer step");
    assert!(
        w.media.iter().any(|m| m == "play question"),
        "the gather's prompt plays once the caller's ACK confirms the call: {:?}",
        w.media
    );
    w.run_for(secs(2));
    // The caller presses 1 during the prompt (what the media worker reports).
    w.input(CoreInput::Media(MediaEvent::Dtmf {
        digit: media::dtmf::Digit::from_char('1').expect("digit"),
        duration: Some(ms(100)),
        method: media::session::DtmfMethod::Rfc4733,
    }));
    let gathered = &w.event("gather.completed").expect("gather.completed").2;
    assert_eq!(gathered["variable"], "answer");
    assert_eq!(gathered["digits"], "1");
    assert_eq!(w.sent(true, Method::Bye).len(), 1, "the script hangs up");
    w.run_for(secs(1));
    assert!(w.done(), "{:?}", w.kinds());
    let last = w.last();
    assert_eq!(last["hangup_reason"], "done", "{last}");
    assert_eq!(last["script"]["variables"]["answer"], "1", "{last}");
}

#[test]
fn a_silent_caller_hits_the_gathers_first_digit_timeout_at_its_instant() {
    let script = crate::script::parse(
        r#"{"version": 1, "steps": [
            {"answer": {}},
            {"gather": {"prompt": "question", "max_digits": 1, "store_as": "answer",
                        "first_digit_timeout_ms": 5000, "retries": 0,
                        "on_failure": [{"hangup": {"reason": "no_input"}}]}}
        ]}"#,
    )
    .expect("a valid script");
    let config = InboundConfig {
        script: Some(Arc::new(script)),
        ..InboundConfig::default()
    };
    let mut w = World::called(config);
    w.run_for(secs(1));
    // The prompt ends (the media worker's report); the first-digit timer starts now.
    w.input(CoreInput::Media(MediaEvent::PlaybackFinished));
    w.run_for(secs(5) - ms(1));
    assert!(w.sent(true, Method::Bye).is_empty(), "{:?}", w.kinds());
    w.run_for(ms(1));
    assert_eq!(w.sent(true, Method::Bye).len(), 1, "{:?}", w.kinds());
    w.run_for(secs(1));
    assert_eq!(w.last()["hangup_reason"], "no_input");
}

#[test]
fn an_inbound_script_with_early_media_sends_183_with_sdp_plays_then_answers_with_the_same_sdp() {
    let script = crate::script::parse(
        r#"{"version": 1, "steps": [
            {"early_media": {}},
            {"play": {"file": "announcement", "barge_in": false}},
            {"answer": {}},
            {"pause": {"ms": 60000}}
        ]}"#,
    )
    .expect("a valid script");
    let config = InboundConfig {
        script: Some(Arc::new(script)),
        ..InboundConfig::default()
    };
    let mut w = World::called(config);
    let body = |wire: &Wire| match &wire.msg {
        Message::Response(r) => r.body.clone(),
        Message::Request(_) => panic!("a response"),
    };
    assert_eq!(w.responses(true, 180).len(), 1, "it rings first");
    let early: Vec<Bytes> = w.responses(true, 183).into_iter().map(body).collect();
    assert_eq!(early.len(), 1, "one 183");
    assert!(
        early[0].starts_with(b"v=0"),
        "the 183 carries our SDP answer"
    );
    assert_eq!(w.media.first().map(String::as_str), Some("start"));
    assert!(
        w.media.iter().any(|m| m == "play announcement"),
        "the announcement plays before the answer: {:?}",
        w.media
    );
    assert!(w.responses(true, 200).is_empty(), "not answered yet");
    let (_, _, details) = w.event("sip.early_media").expect("sip.early_media");
    assert_eq!(details["sent"], true);
    w.run_for(secs(2));
    w.input(CoreInput::Media(MediaEvent::PlaybackFinished));
    let answers: Vec<Bytes> = w.responses(true, 200).into_iter().map(body).collect();
    assert_eq!(answers.len(), 1, "the script's answer step");
    assert_eq!(answers[0], early[0], "the 200 repeats the 183's answer");
    assert_eq!(
        w.media.iter().filter(|m| *m == "start").count(),
        1,
        "the media started once, at the 183"
    );
    w.run_for(secs(1));
    w.peer_hangs_up();
    w.run_for(secs(1));
    assert!(w.done());
    assert_eq!(w.last()["outcome"], "answered");
}

/// An outbound call's preset variables (a campaign's contact columns, the API's `variables`)
/// are its inputs: the timeline reports only what the script itself stores. And a call asked to
/// record whose script never says when records the whole call.
#[test]
fn preset_variables_are_not_reported_as_gathered() {
    let script = crate::script::parse(
        r#"{"version": 1, "steps": [
            {"gather": {"max_digits": 1, "store_as": "answer", "first_digit_timeout_ms": 5000}},
            {"hangup": {"reason": "done"}}
        ]}"#,
    )
    .expect("a valid script");
    let mut req = originate();
    req.script = Some(Arc::new(script));
    req.record = Some(std::path::PathBuf::from("/data/recordings/call-1.wav"));
    // `answer` is preset to the very key the callee will press: the gather still reports.
    req.variables = [("phone", "+33640000003"), ("name", "Ada"), ("answer", "7")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut w = World::dial(req);
    w.peer_answers();
    w.run_for(secs(1));
    // A call asked to record whose script has no record step records from its first frame.
    assert!(
        w.media.iter().any(|m| m.starts_with("route Sink")),
        "{:?}",
        w.media
    );
    w.input(CoreInput::Media(MediaEvent::Dtmf {
        digit: media::dtmf::Digit::from_char('7').expect("digit"),
        duration: Some(ms(100)),
        method: media::session::DtmfMethod::Rfc4733,
    }));
    let gathered: Vec<&Value> = w
        .events
        .iter()
        .filter(|(_, k, _)| *k == "gather.completed")
        .map(|(_, _, d)| d)
        .collect();
    assert_eq!(
        gathered.len(),
        1,
        "only the script's own answer: {gathered:?}"
    );
    assert_eq!(gathered[0]["variable"], "answer");
    assert_eq!(gathered[0]["digits"], "7");
    w.run_for(secs(1));
    assert!(w.done(), "{:?}", w.kinds());
    // The result still carries every variable, the preset ones included.
    let vars = &w.last()["script"]["variables"];
    assert_eq!(vars["phone"], "+33640000003", "{vars}");
    assert_eq!(vars["answer"], "7", "{vars}");
}

/// A script with a record step decides when the call records: nothing is routed to a
/// recording before that step runs.
#[test]
fn a_script_with_a_record_step_records_only_from_that_step() {
    let script = crate::script::parse(
        r#"{"version": 1, "steps": [
            {"pause": {"ms": 1000}},
            {"branch": {"on": "x", "cases": {"1": [{"record": {"action": "start"}}]}}},
            {"hangup": {}}
        ]}"#,
    )
    .expect("a valid script");
    assert!(script.has_record_step(), "nested in a branch case");
    let mut req = originate();
    req.script = Some(Arc::new(script));
    req.record = Some(std::path::PathBuf::from("/data/recordings/call-1.wav"));
    let mut w = World::dial(req);
    w.peer_answers();
    w.run_for(secs(2));
    assert!(
        !w.media.iter().any(|m| m.starts_with("route Sink")),
        "x is unset: the record step never ran: {:?}",
        w.media
    );
}
