//! The INVITE session: one INVITE dialog usage, as UAC or as UAS.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    Dialog, DialogConfig, DialogError, DialogEvent, DialogState, EndReason, InviteParams, Output,
    allow_value, glare_backoff, mix, our_via, set_body, uac_invite,
};
use crate::auth::{
    AuthHeader, Authorization, Challenge, ChallengeOutcome, Credentials, DigestClient,
};
use crate::endpoint::DialogKey;
use crate::message::{
    HeaderName, Method, NameAddr, Refresher, Request, Response, StatusCode, response_to,
};
use crate::transaction::{Branch, TransactionKey};

/// Which side of the INVITE we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We sent the INVITE (and generated the Call-ID).
    Uac,
    /// We received it.
    Uas,
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// UAC: INVITE sent, no final response yet (early dialogs may exist).
    Calling,
    /// UAS: INVITE received, no final response sent yet.
    Proceeding,
    /// UAS: 2xx sent, waiting for the ACK (§13.3.1.4).
    Accepted,
    /// The dialog is confirmed.
    Confirmed,
    /// Over.
    Terminated,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Calling => "Calling",
            Phase::Proceeding => "Proceeding",
            Phase::Accepted => "Accepted",
            Phase::Confirmed => "Confirmed",
            Phase::Terminated => "Terminated",
        }
    }
}

/// The session's timers; a table of deadlines indexed by this enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// UAS: 64*T1 after the 2xx without ACK: BYE (§13.3.1.4).
    AckTimeout,
    /// UAS: retransmit the 2xx (T1 doubling up to T2).
    Retransmit2xx,
    /// UAS: 64*T1 after a reliable provisional without PRACK (RFC 3262 §3).
    PrackTimeout,
    /// UAS: retransmit the reliable provisional (T1 doubling).
    RetransmitReliable,
    /// Send a session refresh (RFC 4028 §10, at half the interval).
    Refresh,
    /// The session expires (RFC 4028 §10): BYE.
    Expire,
    /// Retry a re-INVITE after 491 (§14.1).
    GlareRetry,
}

const TIMERS: [Timer; 7] = [
    Timer::AckTimeout,
    Timer::Retransmit2xx,
    Timer::PrackTimeout,
    Timer::RetransmitReliable,
    Timer::Refresh,
    Timer::Expire,
    Timer::GlareRetry,
];

/// One early dialog of a (possibly forked) INVITE, UAC side.
#[derive(Debug, Clone)]
struct Fork {
    dialog: Dialog,
    /// The RSeq of the last reliable provisional we PRACKed (RFC 3262 §4).
    last_rseq: Option<u32>,
}

/// UAS: a 2xx retransmitted until its ACK (§13.3.1.4).
#[derive(Debug, Clone)]
struct Pending2xx {
    response: Response,
    key: TransactionKey,
    cseq: u32,
    interval: Duration,
    /// For the initial INVITE (its ACK confirms the dialog).
    initial: bool,
}

/// UAS: a reliable provisional waiting for its PRACK.
#[derive(Debug, Clone)]
struct Reliable {
    response: Response,
    rseq: u32,
    interval: Duration,
}

/// A request of ours that a 401/407 may challenge (RFC 3261 §22.2), with the digest state of
/// its chain of retries.
#[derive(Debug, Clone)]
struct Challengeable {
    /// The request as last sent.
    request: Request,
    /// Its CSeq number.
    seq: u32,
    /// The digest client of this chain (`None` until the first challenge): a fresh one per
    /// request, so that a second challenge for a realm it answered is a rejection.
    client: Option<DigestClient>,
    /// Retries with credentials so far.
    retries: u32,
}

/// At most this many sent requests are remembered for a challenge (the initial INVITE, a BYE,
/// a refresh or two): older ones are forgotten, and a late challenge to them is not answered.
const MAX_CHALLENGEABLE: usize = 8;

/// At most this many retries with credentials per request (the first answer, then one more
/// when the server says the nonce was stale); past it the 401/407 is final. Together with
/// [`DigestClient`]'s rejection of a second non-stale challenge for the same realm this is the
/// guard against challenge loops.
pub const MAX_AUTH_RETRIES: u32 = 2;

/// At most this many challenge header values of one response are read (a hostile peer could
/// send thousands).
const MAX_CHALLENGES: usize = 8;

/// The negotiated session timer (RFC 4028).
#[derive(Debug, Clone, Copy)]
struct SessionTimer {
    interval: u32,
    we_refresh: bool,
}

/// One INVITE dialog usage (RFC 3261 §13–§15) with PRACK (RFC 3262) and session timers
/// (RFC 4028). See the [module documentation](super) for the run loop.
///
/// Session refreshes (when we are the refresher) go out as an UPDATE without body, or as a
/// re-INVITE re-offering the last local session description once the peer showed it does not
/// take UPDATE (an Allow without it, or 405/501 to our UPDATE). Their outcome is reported as
/// [`DialogEvent::Refreshed`], never as a re-INVITE event. A refresh answered 408/481 (or timed
/// out) ends the dialog (§12.2.1.2); 491 is retried after the §14.1 back-off; any other
/// failure re-arms the timers as if the refresh had succeeded. A 2xx without Session-Expires
/// stops the session timer (RFC 4028 §7.2), and an interval below 90 s (or our Min-SE) is
/// raised to it.
///
/// ```text
/// UAC:  Calling --1xx--> (early dialogs) --2xx/ACK--> Confirmed --BYE--> Terminated
///          \--3xx-6xx / 487 after CANCEL------------------------------> Terminated
/// UAS:  Proceeding --1xx--> (early dialog) --2xx--> Accepted --ACK--> Confirmed --BYE--> Terminated
///          \--reject / CANCEL (487)------------------------------------------------> Terminated
/// ```
#[derive(Debug)]
pub struct InviteSession {
    role: Role,
    config: DialogConfig,
    phase: Phase,
    /// The INVITE that created the session (the last one sent, after a 422 retry).
    invite: Request,
    /// UAS: the INVITE server transaction.
    invite_key: Option<TransactionKey>,
    local_contact: NameAddr,
    /// UAS: our To tag.
    local_tag: String,
    /// UAC: early dialogs, one per fork.
    forks: Vec<Fork>,
    /// The dialog of this session (UAS from its first tagged response; UAC once confirmed).
    dialog: Option<Dialog>,
    cancelled: bool,
    retried_422: bool,
    out: VecDeque<Output>,
    timers: [Option<Instant>; TIMERS.len()],
    counter: u64,
    pending_2xx: Option<Pending2xx>,
    reliable: Option<Reliable>,
    next_rseq: u32,
    /// The ACKs we sent for 2xx responses: (remote tag, CSeq, ACK), resent on a retransmitted
    /// 2xx (§13.2.2.4).
    acks: Vec<(String, u32, Request)>,
    /// Our re-INVITE in progress: its CSeq and offer.
    local_reinvite: Option<(u32, Bytes)>,
    /// The offer to send again when the glare back-off ends.
    glare_body: Option<Bytes>,
    /// The peer's re-INVITE waiting for our answer.
    remote_reinvite: Option<(TransactionKey, Request)>,
    session_timer: Option<SessionTimer>,
    /// The session description we last offered or answered.
    local_body: Bytes,
    /// Whether the peer takes UPDATE for a session refresh: cleared when its Allow lacks UPDATE
    /// or it answered our refresh UPDATE 405/501, after which we refresh with re-INVITE.
    update_allowed: bool,
    /// The CSeq of our re-INVITE in progress when it is a session refresh (RFC 4028 §9) rather
    /// than an application offer: its outcome is reported as a refresh, not as a re-INVITE.
    refresh_reinvite: Option<u32>,
    /// New early dialogs (To tags) ignored because [`MAX_FORKS`] were already tracked.
    ignored_forks: u64,
    /// Credentials for 401/407 challenges ([`InviteSession::set_credentials`]).
    credentials: Option<Credentials>,
    /// The only realm `credentials` answer ([`InviteSession::set_credentials_realm`]).
    credentials_realm: Option<String>,
    /// The caller's entropy for the digest `cnonce` values.
    cnonce_entropy: u64,
    /// Requests a challenge may still come for.
    challengeable: VecDeque<Challengeable>,
}

/// The most early dialogs (forks) one UAC INVITE tracks; further To tags in provisional
/// responses are ignored (and counted), so a hostile or looping forker cannot grow the session
/// without bound. A 2xx from an untracked fork is still ACKed and BYEd.
pub const MAX_FORKS: usize = 16;

impl InviteSession {
    fn blank(role: Role, config: DialogConfig, invite: Request, contact: NameAddr) -> Self {
        let next_rseq = (mix(config.seed ^ 0x5253_4551) % 0x7fff_fffe) as u32 + 1;
        InviteSession {
            role,
            config,
            phase: Phase::Calling,
            invite,
            invite_key: None,
            local_contact: contact,
            local_tag: String::new(),
            forks: Vec::new(),
            dialog: None,
            cancelled: false,
            retried_422: false,
            out: VecDeque::new(),
            timers: [None; TIMERS.len()],
            counter: 0,
            pending_2xx: None,
            reliable: None,
            next_rseq,
            acks: Vec::new(),
            local_reinvite: None,
            glare_body: None,
            remote_reinvite: None,
            session_timer: None,
            local_body: Bytes::new(),
            update_allowed: true,
            refresh_reinvite: None,
            ignored_forks: 0,
            credentials: None,
            credentials_realm: None,
            cnonce_entropy: 0,
            challengeable: VecDeque::new(),
        }
    }

    /// UAC: a session for a new INVITE built from `params` ([`super::uac_invite`]). The first
    /// output is [`Output::SendRequest`] with the INVITE.
    pub fn uac(config: DialogConfig, params: &InviteParams) -> InviteSession {
        InviteSession::uac_with_headers(config, params, &[])
    }

    /// [`InviteSession::uac`] with extra header fields on the INVITE (a trunk's
    /// P-Asserted-Identity, Privacy, custom headers), after the standard ones, in order. They
    /// stay on the INVITE's retries (digest, 422) but not on in-dialog requests.
    pub fn uac_with_headers(
        config: DialogConfig,
        params: &InviteParams,
        headers: &[(HeaderName, String)],
    ) -> InviteSession {
        let mut s = InviteSession::blank(
            Role::Uac,
            config,
            Request {
                method: Method::Invite,
                uri: params.request_uri.clone(),
                headers: Default::default(),
                body: Bytes::new(),
            },
            params.contact.clone(),
        );
        let branch = s.new_branch();
        s.invite = uac_invite(params, &s.config, &branch);
        for (name, value) in headers {
            s.invite.headers.push(name.clone(), value.clone());
        }
        s.local_body = params.body.clone();
        let invite = s.invite.clone();
        s.send_tracked(invite);
        s
    }

    /// Answer 401/407 challenges to our requests (the INVITE, BYE, re-INVITE, UPDATE) with
    /// `credentials` (RFC 3261 §22.2): the request goes again with the same Call-ID, From and
    /// To, the next CSeq, a new branch and an `Authorization` / `Proxy-Authorization` for each
    /// challenge. `cnonce_entropy` is a random value from the application: the `cnonce` of
    /// each answer is derived from it (this crate draws no randomness). `None`: a challenge
    /// is final ([`DialogEvent::AuthFailed`]).
    pub fn set_credentials(&mut self, credentials: Option<Credentials>, cnonce_entropy: u64) {
        self.credentials = credentials;
        self.cnonce_entropy = cnonce_entropy;
    }

    /// Answers challenges only for `realm` (`None`: any realm): a challenge for another realm
    /// fails the request instead of sending our credentials to whoever asks (a trunk's
    /// configured realm).
    pub fn set_credentials_realm(&mut self, realm: Option<String>) {
        self.credentials_realm = realm;
    }

    /// UAC, before any final response: send the INVITE to another target instead (failover,
    /// RFC 3263 §4.3): the same Call-ID and From tag, the next CSeq, a new branch, and the
    /// Request-URI, To, Contact, routes, body and extra `headers` of `params` (its `call_id`,
    /// `from_tag` and `cseq` are ignored). `config` replaces the session's transport and Via
    /// address. Early dialogs of the previous target are forgotten; responses to the previous
    /// INVITE are ignored from now on.
    pub fn retarget(
        &mut self,
        config: &DialogConfig,
        params: &InviteParams,
        headers: &[(HeaderName, String)],
    ) -> Result<(), DialogError> {
        self.require_phase(Phase::Calling)?;
        if self.role != Role::Uac || self.cancelled {
            return Err(DialogError::InvalidState(
                "retarget() is for an uncancelled UAC",
            ));
        }
        let old = self.invite.headers.cseq()?.seq;
        let from = self.invite.headers.from()?;
        let mut params = params.clone();
        params.call_id = self.invite.headers.call_id()?.to_owned();
        params.from_tag = from.tag().unwrap_or_default().to_owned();
        params.cseq = old.wrapping_add(1);
        self.config.transport = config.transport;
        self.config.via_host = config.via_host.clone();
        self.config.via_port = config.via_port;
        let branch = self.new_branch();
        let mut invite = super::uac_invite(&params, &self.config, &branch);
        for (name, value) in headers {
            invite.headers.push(name.clone(), value.clone());
        }
        self.invite = invite.clone();
        self.local_contact = params.contact.clone();
        self.local_body = params.body.clone();
        self.forks.clear();
        self.retried_422 = false;
        self.challengeable.clear();
        self.send_tracked(invite);
        Ok(())
    }

    /// Send a request a challenge may come for, and remember it.
    fn send_tracked(&mut self, request: Request) {
        if let Ok(cseq) = request.headers.cseq() {
            if self.challengeable.len() >= MAX_CHALLENGEABLE {
                self.challengeable.pop_front();
            }
            self.challengeable.push_back(Challengeable {
                request: request.clone(),
                seq: cseq.seq,
                client: None,
                retries: 0,
            });
        }
        self.out.push_back(Output::SendRequest(request));
    }

    /// A 401/407 to a request of ours: send it again with credentials when we can (returns
    /// `true`: the response is consumed), else report why not (`false`: the response is
    /// handled as any final response).
    fn on_challenge(&mut self, resp: &Response, seq: u32, method: &Method) -> bool {
        let Some(idx) = self
            .challengeable
            .iter()
            .position(|c| c.seq == seq && c.request.method == *method)
        else {
            return false;
        };
        let status = resp.status.as_u16();
        let (header, challenge_name, credentials_name) = if status == 401 {
            (
                AuthHeader::Www,
                HeaderName::WwwAuthenticate,
                HeaderName::Authorization,
            )
        } else {
            (
                AuthHeader::Proxy,
                HeaderName::ProxyAuthenticate,
                HeaderName::ProxyAuthorization,
            )
        };
        let challenges: Vec<Challenge> = resp
            .headers
            .get_all(&challenge_name)
            .take(MAX_CHALLENGES)
            .filter_map(|v| Challenge::parse_bytes(v).ok())
            .collect();
        let mut realms: Vec<&str> = Vec::new();
        for c in &challenges {
            if !realms.contains(&c.realm.as_str()) {
                realms.push(&c.realm);
                self.out
                    .push_back(Output::Event(DialogEvent::AuthChallenge {
                        status,
                        realm: c.realm.clone(),
                        algorithm: c.effective_algorithm().as_str().to_owned(),
                        method: method.clone(),
                        stale: c.stale,
                    }));
            }
        }
        let initial = *method == Method::Invite && self.role == Role::Uac && {
            self.invite.headers.cseq().is_ok_and(|c| c.seq == seq)
        };
        let fail = |s: &mut Self, reason: String| {
            s.event(DialogEvent::AuthFailed {
                method: method.clone(),
                status,
                reason,
            });
            false
        };
        if initial && (self.phase != Phase::Calling || self.cancelled) {
            return false;
        }
        let Some(mut entry) = self.challengeable.remove(idx) else {
            return false;
        };
        let Some(credentials) = self.credentials.clone() else {
            return fail(self, "challenged, and no credentials are configured".into());
        };
        if challenges.is_empty() {
            return fail(self, format!("{status} without a digest challenge"));
        }
        if let Some(realm) = &self.credentials_realm
            && let Some(other) = challenges.iter().find(|c| &c.realm != realm)
        {
            return fail(
                self,
                format!(
                    "challenged for realm {:?}; the credentials are for realm {realm:?}",
                    other.realm
                ),
            );
        }
        if entry.retries >= MAX_AUTH_RETRIES {
            return fail(
                self,
                format!("still challenged after {MAX_AUTH_RETRIES} retries"),
            );
        }
        let sent: Vec<Authorization> = entry
            .request
            .headers
            .get_all(&credentials_name)
            .filter_map(|v| Authorization::parse_bytes(v).ok())
            .collect();
        let client = entry
            .client
            .get_or_insert_with(|| DigestClient::new(credentials));
        match client.handle_challenges(header, &challenges, &sent) {
            Ok(ChallengeOutcome::Retry) => {}
            Ok(ChallengeOutcome::Rejected { realm }) => {
                return fail(self, format!("credentials rejected for realm {realm:?}"));
            }
            Err(e) => return fail(self, e.to_string()),
        }
        // §22.2 / §8.1.3.5: the retry is a new request: "the same value of the Call-ID, To tag
        // and From tag", and a CSeq one higher (§12.2.1.1 for in-dialog requests).
        let new_seq = if initial {
            seq.wrapping_add(1)
        } else {
            match self.dialog.as_mut() {
                Some(d) => d.next_seq(),
                None => return fail(self, "no dialog to send the retry in".into()),
            }
        };
        let mut req = entry.request.clone();
        let branch = self.new_branch();
        req.headers
            .set(HeaderName::Via, our_via(&self.config, &branch).to_bytes());
        req.headers
            .set(HeaderName::CSeq, format!("{new_seq} {}", method.as_str()));
        req.headers.remove(&HeaderName::Authorization);
        req.headers.remove(&HeaderName::ProxyAuthorization);
        let cnonce = format!("{:016x}", mix(self.cnonce_entropy ^ self.random()));
        let uri = req.uri.to_string();
        let answers = match client.authorize(method.as_str(), &uri, &req.body, &cnonce) {
            Ok(a) => a,
            Err(e) => return fail(self, e.to_string()),
        };
        for (h, a) in answers {
            let name = match h {
                AuthHeader::Www => HeaderName::Authorization,
                AuthHeader::Proxy => HeaderName::ProxyAuthorization,
            };
            req.headers.push(name, a.to_string());
        }
        if initial {
            self.invite = req.clone();
            self.forks.clear();
        }
        if let Some((s, _)) = self.local_reinvite.as_mut()
            && *s == seq
        {
            *s = new_seq;
            if self.refresh_reinvite == Some(seq) {
                self.refresh_reinvite = Some(new_seq);
            }
        }
        entry.request = req.clone();
        entry.seq = new_seq;
        entry.retries += 1;
        self.challengeable.push_back(entry);
        self.event(DialogEvent::AuthRetry {
            method: method.clone(),
            cseq: new_seq,
        });
        self.out.push_back(Output::SendRequest(req));
        true
    }

    /// UAS: a session for a received INVITE (its server transaction `key`), answering with To
    /// tag `local_tag` and Contact `contact`. An INVITE whose Session-Expires is below our
    /// Min-SE is answered 422 at once (RFC 4028 §8.1) and the session is terminated.
    pub fn uas(
        now: Instant,
        config: DialogConfig,
        invite: Request,
        key: TransactionKey,
        local_tag: String,
        contact: NameAddr,
    ) -> Result<InviteSession, DialogError> {
        if invite.method != Method::Invite {
            return Err(DialogError::NotAnInvite);
        }
        invite.headers.cseq()?;
        invite.headers.call_id()?;
        invite.headers.from()?;
        invite.headers.to()?;
        let mut s = InviteSession::blank(Role::Uas, config, invite, contact);
        s.phase = Phase::Proceeding;
        s.invite_key = Some(key);
        s.local_tag = local_tag;
        s.update_allowed = peer_allows_update(&s.invite.headers);
        if let Ok(Some(se)) = s.invite.headers.session_expires()
            && se.delta < s.config.min_se
        {
            // RFC 4028 §8.1: "If the value of the Session-Expires header field is less than
            // the value of the Min-SE ... the UAS MUST reject it with a 422 ... and MUST include
            // a Min-SE header field containing its minimum".
            let mut r = s.invite_response(StatusCode::new(422).expect("422 is a status"));
            r.headers
                .push(HeaderName::MinSe, s.config.min_se.to_string());
            s.send_invite_response(r);
            s.terminate(now, EndReason::Rejected(422));
        }
        Ok(s)
    }

    /// Our side.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The INVITE that created the session.
    pub fn invite(&self) -> &Request {
        &self.invite
    }

    /// The dialog, once there is one (UAS: from the first tagged response; UAC: confirmed).
    pub fn dialog(&self) -> Option<&Dialog> {
        self.dialog.as_ref()
    }

    /// Whether the session is over.
    pub fn is_terminated(&self) -> bool {
        self.phase == Phase::Terminated
    }

    /// Whether the session is in a confirmed dialog.
    pub fn is_confirmed(&self) -> bool {
        self.phase == Phase::Confirmed
    }

    /// How many new early dialogs (To tags of provisional responses) were ignored because
    /// [`MAX_FORKS`] were already tracked.
    pub fn ignored_forks(&self) -> u64 {
        self.ignored_forks
    }

    /// Whether session refreshes use UPDATE (`true`) or re-INVITE (`false`, after the peer
    /// showed it does not take UPDATE: an Allow without it, or a 405/501 to our UPDATE).
    pub fn refreshes_with_update(&self) -> bool {
        self.update_allowed
    }

    /// Whether an in-dialog request with `key` (as the endpoint reports it) belongs here.
    pub fn matches(&self, key: &DialogKey) -> bool {
        self.dialog.iter().any(|d| d.id == *key) || self.forks.iter().any(|f| f.dialog.id == *key)
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    fn timer(&mut self, t: Timer) -> &mut Option<Instant> {
        &mut self.timers[t as usize]
    }

    fn random(&mut self) -> u64 {
        self.counter += 1;
        mix(self.config.seed ^ self.counter.rotate_left(29))
    }

    fn new_branch(&mut self) -> Branch {
        Branch::from_u64(self.random())
    }

    fn event(&mut self, e: DialogEvent) {
        self.out.push_back(Output::Event(e));
    }

    fn terminate(&mut self, _now: Instant, reason: EndReason) {
        if self.phase == Phase::Terminated {
            return;
        }
        self.phase = Phase::Terminated;
        self.timers = [None; TIMERS.len()];
        self.pending_2xx = None;
        self.reliable = None;
        self.event(DialogEvent::Terminated { reason });
    }

    /// A request in `dialog` with the next local CSeq (`seq` for ACK).
    fn build(&mut self, dialog: &mut Dialog, method: Method, ack_seq: Option<u32>) -> Request {
        let branch = self.new_branch();
        let seq = match ack_seq {
            Some(s) => s,
            None => dialog.next_seq(),
        };
        let mut req = dialog.request(method.clone(), seq, &our_via(&self.config, &branch));
        // §12.2.1.1 / §8.1.1.8: a target refresh request carries our Contact.
        if matches!(method, Method::Invite | Method::Update) {
            req.headers
                .push(HeaderName::Contact, self.local_contact.to_bytes());
        }
        req
    }

    /// Build and send a request in the session's dialog.
    fn send_in_dialog(&mut self, method: Method, body: Bytes) -> Option<Request> {
        let mut dialog = self.dialog.take()?;
        let mut req = self.build(&mut dialog, method, None);
        self.dialog = Some(dialog);
        set_body(&mut req.headers, &mut req.body, body);
        Some(req)
    }

    // ---- UAS commands -------------------------------------------------------------------

    /// A response to the initial INVITE with our To tag, the Record-Route copied and our
    /// Contact.
    fn invite_response(&self, status: StatusCode) -> Response {
        let mut r = response_to(&self.invite, status, None);
        if status != StatusCode::TRYING {
            r.add_to_tag(&self.local_tag);
        }
        if status.is_provisional() || status.is_success() {
            // §12.1.1: "the UAS MUST copy all Record-Route header field values from the
            // request into the response ... and MUST maintain the order of those values. The
            // UAS MUST add a Contact header field to the response."
            for rr in self.invite.headers.get_all(&HeaderName::RecordRoute) {
                r.headers.push(HeaderName::RecordRoute, rr.clone());
            }
            r.headers
                .push(HeaderName::Contact, self.local_contact.to_bytes());
        }
        r
    }

    fn send_invite_response(&mut self, response: Response) {
        if let Some(key) = self.invite_key.clone() {
            self.out
                .push_back(Output::SendResponse { to: key, response });
        }
    }

    fn require_phase(&self, phase: Phase) -> Result<(), DialogError> {
        if self.phase == phase {
            Ok(())
        } else {
            Err(DialogError::InvalidState(self.phase.name()))
        }
    }

    /// UAS: send a provisional response (180, 183...) with `body`. With `reliable`, it is sent
    /// reliably (RFC 3262 §3: Require: 100rel, RSeq) and retransmitted until PRACKed.
    pub fn provisional(
        &mut self,
        now: Instant,
        status: StatusCode,
        body: Bytes,
        reliable: bool,
    ) -> Result<(), DialogError> {
        self.require_phase(Phase::Proceeding)?;
        if !status.is_provisional() {
            return Err(DialogError::InvalidState("provisional() needs a 1xx"));
        }
        // RFC 3262 §3: a UAC that put 100rel in Require insists on reliable provisional
        // responses, so every non-100 provisional to it is sent reliably.
        let reliable = reliable
            || (status != StatusCode::TRYING
                && self
                    .invite
                    .headers
                    .require()
                    .is_ok_and(|r| r.iter().any(|t| t.eq_ignore_ascii_case("100rel"))));
        if reliable {
            // RFC 3262 §3: only when "the request contained a Supported or Require header
            // field with the option tag 100rel".
            if !self.invite.headers.supports("100rel") {
                return Err(DialogError::NoReliableSupport);
            }
            if self.reliable.is_some() {
                return Err(DialogError::ReliableOutstanding);
            }
        }
        let mut r = self.invite_response(status);
        set_body(&mut r.headers, &mut r.body, body);
        if status != StatusCode::TRYING && self.dialog.is_none() {
            self.dialog = Some(Dialog::uas(
                &self.invite,
                &self.local_tag,
                DialogState::Early,
            )?);
        }
        if reliable {
            let rseq = self.next_rseq;
            // "Each subsequent reliable provisional response for the same request MUST use a
            // sequence number one higher than the previous."
            self.next_rseq = self.next_rseq.wrapping_add(1);
            r.headers
                .push(HeaderName::Require, Bytes::from_static(b"100rel"));
            r.headers.push(HeaderName::RSeq, rseq.to_string());
            let t1 = self.config.timers.t1;
            // "The reliable provisional response is passed to the transaction layer
            // periodically with an interval that starts at T1 seconds and doubles for each
            // retransmission."
            *self.timer(Timer::RetransmitReliable) = Some(now + t1);
            // "If a reliable provisional response is retransmitted for 64*T1 seconds without
            // reception of a corresponding PRACK, the UAS SHOULD reject the original request
            // with a 5xx response."
            *self.timer(Timer::PrackTimeout) = Some(now + self.config.timers.t1x64());
            self.reliable = Some(Reliable {
                response: r.clone(),
                rseq,
                interval: t1,
            });
        }
        self.send_invite_response(r);
        Ok(())
    }

    /// UAS: answer the INVITE with 200 and `body`. The 2xx is retransmitted until the ACK
    /// arrives; without one for 64*T1 the session sends BYE (§13.3.1.4).
    ///
    /// Fails with [`DialogError::ReliableOutstanding`] (nothing is sent) while a reliable
    /// provisional response that carried a session description awaits its PRACK: call it
    /// again after [`DialogEvent::PrackReceived`] (or reject the call).
    pub fn accept(&mut self, now: Instant, body: Bytes) -> Result<(), DialogError> {
        self.require_phase(Phase::Proceeding)?;
        // RFC 3262 §3: "The UAS MAY send a final response to the initial request before having
        // received PRACKs for all unacknowledged reliable provisional responses, unless the
        // final response is 2xx and any of the unacknowledged reliable provisional responses
        // contained a session description. In that case, it MUST NOT send a final response
        // until those provisional responses are acknowledged."
        if self
            .reliable
            .as_ref()
            .is_some_and(|r| !r.response.body.is_empty())
        {
            return Err(DialogError::ReliableOutstanding);
        }
        let mut r = self.invite_response(StatusCode::OK);
        r.headers
            .push(HeaderName::Allow, allow_value(&self.config.allow));
        set_body(&mut r.headers, &mut r.body, body.clone());
        let invite = self.invite.clone();
        self.negotiate_timer_as_uas(&invite, &mut r);
        let mut dialog = match self.dialog.take() {
            Some(d) => d,
            None => Dialog::uas(&self.invite, &self.local_tag, DialogState::Early)?,
        };
        dialog.state = DialogState::Confirmed;
        self.dialog = Some(dialog);
        self.local_body = body;
        // A final response ends the reliable provisional retransmissions.
        self.reliable = None;
        *self.timer(Timer::RetransmitReliable) = None;
        *self.timer(Timer::PrackTimeout) = None;
        let key = self.invite_key.clone().ok_or(DialogError::NotAnInvite)?;
        let cseq = self.invite.headers.cseq()?.seq;
        self.start_2xx(now, key, cseq, r, true);
        self.phase = Phase::Accepted;
        self.arm_session_timer(now);
        Ok(())
    }

    /// Send a 2xx and retransmit it until the ACK (§13.3.1.4).
    fn start_2xx(
        &mut self,
        now: Instant,
        key: TransactionKey,
        cseq: u32,
        response: Response,
        initial: bool,
    ) {
        let t1 = self.config.timers.t1;
        // "The 2xx response is passed to the transport with an interval that starts at T1
        // seconds and doubles for each retransmission until it reaches T2 seconds."
        *self.timer(Timer::Retransmit2xx) = Some(now + t1);
        *self.timer(Timer::AckTimeout) = Some(now + self.config.timers.t1x64());
        self.out.push_back(Output::SendResponse {
            to: key.clone(),
            response: response.clone(),
        });
        self.pending_2xx = Some(Pending2xx {
            response,
            key,
            cseq,
            interval: t1,
            initial,
        });
    }

    /// UAS: reject the INVITE with a final non-2xx `status`.
    pub fn reject(&mut self, now: Instant, status: StatusCode) -> Result<(), DialogError> {
        self.require_phase(Phase::Proceeding)?;
        if !status.is_final() || status.is_success() {
            return Err(DialogError::InvalidState("reject() needs a 3xx-6xx"));
        }
        let r = self.invite_response(status);
        self.send_invite_response(r);
        self.terminate(now, EndReason::Rejected(status.as_u16()));
        Ok(())
    }

    /// UAS: the endpoint reported a CANCEL for our INVITE (and answered it 200). Before a final
    /// response, §9.2: the UAS "SHOULD then respond to the INVITE with a 487 (Request
    /// Terminated)". After one, nothing happens.
    pub fn handle_cancel(&mut self, now: Instant) {
        if self.phase == Phase::Proceeding {
            let r = self.invite_response(StatusCode::REQUEST_TERMINATED);
            self.send_invite_response(r);
            self.terminate(now, EndReason::Cancelled);
        }
    }

    // ---- UAC commands -------------------------------------------------------------------

    /// UAC: cancel the INVITE (§9.1). Asks the driver for the CANCEL ([`Output::CancelInvite`]);
    /// a 2xx that still arrives is ACKed and then BYEd (§9.1, §15).
    pub fn cancel(&mut self, _now: Instant) -> Result<(), DialogError> {
        self.require_phase(Phase::Calling)?;
        if self.role != Role::Uac {
            return Err(DialogError::InvalidState("cancel() is for the UAC"));
        }
        if !self.cancelled {
            self.cancelled = true;
            self.out.push_back(Output::CancelInvite);
        }
        Ok(())
    }

    // ---- both sides ---------------------------------------------------------------------

    /// Hang up: BYE in the confirmed dialog (§15.1.1). The session ends at once.
    pub fn bye(&mut self, now: Instant) -> Result<(), DialogError> {
        // §15: "The callee's UA MUST NOT send a BYE on a confirmed dialog until it has
        // received an ACK for its 2xx response or until the server transaction times out."
        self.require_phase(Phase::Confirmed)?;
        if let Some(bye) = self.send_in_dialog(Method::Bye, Bytes::new()) {
            self.send_tracked(bye);
        }
        self.terminate(now, EndReason::LocalBye);
        Ok(())
    }

    /// Send a re-INVITE with `offer` (e.g. `a=sendonly` for hold). §14.1: "a UAC MUST NOT
    /// initiate a new INVITE transaction within a dialog while another INVITE transaction is
    /// in progress in either direction." That includes a session refresh re-INVITE (sent when
    /// the peer does not take UPDATE, see [`InviteSession::refreshes_with_update`]): meanwhile
    /// this fails with [`DialogError::InvalidState`]; try again after the next event.
    pub fn reinvite(&mut self, _now: Instant, offer: Bytes) -> Result<(), DialogError> {
        self.require_phase(Phase::Confirmed)?;
        if self.local_reinvite.is_some() || self.remote_reinvite.is_some() {
            return Err(DialogError::InvalidState("an INVITE is in progress"));
        }
        self.send_reinvite(offer);
        Ok(())
    }

    fn send_reinvite(&mut self, offer: Bytes) {
        let Some(mut req) = self.send_in_dialog(Method::Invite, offer.clone()) else {
            return;
        };
        req.headers
            .push(HeaderName::Supported, Bytes::from_static(b"100rel, timer"));
        if let Some(st) = self.session_timer {
            req.headers.push(
                HeaderName::SessionExpires,
                format!("{};refresher=uac", st.interval),
            );
        }
        let seq = req.headers.cseq().map(|c| c.seq).unwrap_or_default();
        self.local_reinvite = Some((seq, offer));
        self.send_tracked(req);
    }

    /// Send an INFO (RFC 6086) with `body` of `content_type` in the confirmed dialog, e.g.
    /// `application/dtmf-relay` for a key press. Its response concerns nobody here (a 481 or
    /// 408 to it does not end the session: the INVITE usage is not the INFO's).
    pub fn info(&mut self, content_type: &str, body: Bytes) -> Result<(), DialogError> {
        self.require_phase(Phase::Confirmed)?;
        if let Some(mut req) = self.send_in_dialog(Method::Info, Bytes::new()) {
            if !body.is_empty() {
                req.headers
                    .push(HeaderName::ContentType, content_type.to_owned());
            }
            req.body = body;
            self.out.push_back(Output::SendRequest(req));
        }
        Ok(())
    }

    /// The session interval in force (RFC 4028), in seconds; `None`: no session timer.
    pub fn session_interval(&self) -> Option<u32> {
        self.session_timer.map(|st| st.interval)
    }

    /// Refresh the session now, as the refresher does at half the interval (RFC 4028 §10: an
    /// UPDATE, or a re-INVITE when the peer does not take UPDATE), whoever the refresher is;
    /// reported as [`DialogEvent::Refreshed`]. Fails when no session timer is in force.
    pub fn refresh_now(&mut self, now: Instant) -> Result<(), DialogError> {
        self.require_phase(Phase::Confirmed)?;
        if self.session_timer.is_none() {
            return Err(DialogError::InvalidState("no session timer in force"));
        }
        self.send_refresh(now);
        Ok(())
    }

    /// Answer the peer's re-INVITE ([`DialogEvent::ReInvite`]) with `status` and, for a 2xx,
    /// the answer `body`.
    pub fn answer_reinvite(
        &mut self,
        now: Instant,
        status: StatusCode,
        body: Bytes,
    ) -> Result<(), DialogError> {
        let (key, req) = self
            .remote_reinvite
            .take()
            .ok_or(DialogError::InvalidState("no re-INVITE to answer"))?;
        let mut r = response_to(&req, status, None);
        if status.is_success() {
            r.headers
                .push(HeaderName::Contact, self.local_contact.to_bytes());
            set_body(&mut r.headers, &mut r.body, body.clone());
            self.local_body = body;
            let refreshed = self.negotiate_timer_as_uas(&req, &mut r);
            let cseq = req.headers.cseq()?.seq;
            self.start_2xx(now, key, cseq, r, false);
            if refreshed {
                self.arm_session_timer(now);
                self.refreshed_event();
            }
        } else {
            self.out.push_back(Output::SendResponse {
                to: key,
                response: r,
            });
        }
        Ok(())
    }

    // ---- session timers (RFC 4028) ------------------------------------------------------

    /// Put Session-Expires (and Require: timer) on our 2xx to `req`; returns whether a
    /// session timer is now in force.
    fn negotiate_timer_as_uas(&mut self, req: &Request, r: &mut Response) -> bool {
        let asked = req.headers.session_expires().ok().flatten();
        let uac_supports = req.headers.supports("timer");
        // RFC 4028 §5: no session interval below the 90 s floor, whatever the configuration.
        let floor = self.config.min_se.max(super::MIN_SE_FLOOR);
        let interval = match (&asked, self.config.session_expires) {
            (Some(se), _) => se.delta.max(floor),
            (None, Some(ours)) => ours.max(floor),
            (None, None) => return false,
        };
        // RFC 4028 §9: "If the request contained a refresher parameter, the UAS MUST set the
        // value of the refresher parameter in the Session-Expires header field in the 2xx
        // response to the value in the request." Else a UAC that supports timer is asked to
        // refresh (it made the request); one that does not leaves it to us.
        let refresher = asked
            .as_ref()
            .and_then(|se| se.refresher())
            .unwrap_or(if uac_supports {
                Refresher::Uac
            } else {
                Refresher::Uas
            });
        if uac_supports {
            // "the UAS MUST include a Require header field in the 2xx with the value timer"
            // when the UAC supports it (so that it knows the timer is in force).
            r.headers
                .push(HeaderName::Require, Bytes::from_static(b"timer"));
        }
        let who = match refresher {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        };
        r.headers.push(
            HeaderName::SessionExpires,
            format!("{interval};refresher={who}"),
        );
        self.session_timer = Some(SessionTimer {
            interval,
            we_refresh: refresher == Refresher::Uas,
        });
        true
    }

    /// Read the session timer from a 2xx to a request we sent (we were its UAC). Returns
    /// whether a session timer is in force; without Session-Expires in the 2xx it is not, and
    /// any running one is stopped.
    fn timer_from_response(&mut self, r: &Response) -> bool {
        match r.headers.session_expires().ok().flatten() {
            Some(se) => {
                // RFC 4028 §4/§5: a session interval below the Min-SE floor of 90 seconds (or
                // our own Min-SE) is invalid; a 2xx carrying one (0, say) would make us BYE
                // at once, so it is raised to the smallest interval we accept.
                let interval = se.delta.max(super::MIN_SE_FLOOR).max(self.config.min_se);
                self.session_timer = Some(SessionTimer {
                    interval,
                    // RFC 4028 §7.2: refresher=uac in the answer to our request means us.
                    we_refresh: se.refresher() != Some(Refresher::Uas),
                });
                true
            }
            None => {
                // RFC 4028 §7.2: "If the 2xx response did not contain a Session-Expires header
                // field, there is no session expiration."
                self.session_timer = None;
                *self.timer(Timer::Refresh) = None;
                *self.timer(Timer::Expire) = None;
                false
            }
        }
    }

    fn arm_session_timer(&mut self, now: Instant) {
        let Some(st) = self.session_timer else {
            return;
        };
        let interval = u64::from(st.interval);
        // RFC 4028 §10: the refresher sends its refresh "when half the session expiration
        // interval has elapsed"; the other side sends BYE "before the session expires ... at
        // the minimum of 32 seconds and one third of the session interval" before its end.
        *self.timer(Timer::Refresh) = st
            .we_refresh
            .then(|| now + Duration::from_millis(interval * 500));
        let margin = (interval / 3).min(32);
        *self.timer(Timer::Expire) = Some(now + Duration::from_secs(interval - margin));
    }

    fn refreshed_event(&mut self) {
        if let Some(st) = self.session_timer {
            self.event(DialogEvent::Refreshed {
                interval: st.interval,
            });
        }
    }

    fn send_refresh(&mut self, now: Instant) {
        let Some(st) = self.session_timer else {
            return;
        };
        if !self.update_allowed {
            // RFC 4028 §9: the refresh may be a re-INVITE; the peer does not take UPDATE, so
            // re-offer the session description we last offered or answered (no change to
            // the media), with Session-Expires (send_reinvite adds it).
            if self.local_reinvite.is_some() || self.remote_reinvite.is_some() {
                // §14.1: no second INVITE transaction while one is in progress. That one
                // refreshes the session itself when it succeeds; try again after a back-off
                // in case it does not.
                let r = self.random();
                *self.timer(Timer::Refresh) = Some(now + glare_backoff(self.role == Role::Uac, r));
                return;
            }
            let body = self.local_body.clone();
            self.send_reinvite(body);
            self.refresh_reinvite = self.local_reinvite.as_ref().map(|(seq, _)| *seq);
            return;
        }
        // A session refresh by UPDATE without a body (RFC 4028 §9, RFC 3311): it needs no new
        // offer/answer and cannot collide with a re-INVITE of the peer.
        if let Some(mut req) = self.send_in_dialog(Method::Update, Bytes::new()) {
            req.headers
                .push(HeaderName::Supported, Bytes::from_static(b"timer"));
            req.headers.push(
                HeaderName::SessionExpires,
                format!("{};refresher=uac", st.interval),
            );
            req.headers
                .push(HeaderName::MinSe, self.config.min_se.to_string());
            self.send_tracked(req);
        }
    }

    // ---- inputs -------------------------------------------------------------------------

    /// Fire the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in TIMERS {
            if self.timers[t as usize].is_some_and(|at| at <= now) {
                self.timers[t as usize] = None;
                self.on_timer(now, t);
            }
        }
    }

    fn on_timer(&mut self, now: Instant, t: Timer) {
        match t {
            Timer::AckTimeout => {
                // §13.3.1.4: "If the server retransmits the 2xx response for 64*T1 seconds
                // without receiving an ACK, the dialog is confirmed, but the session SHOULD be
                // terminated. This is accomplished with a BYE".
                self.pending_2xx = None;
                *self.timer(Timer::Retransmit2xx) = None;
                if let Some(bye) = self.send_in_dialog(Method::Bye, Bytes::new()) {
                    self.send_tracked(bye);
                }
                self.terminate(now, EndReason::AckTimeout);
            }
            Timer::Retransmit2xx => {
                let t2 = self.config.timers.t2;
                if let Some(p) = &mut self.pending_2xx {
                    p.interval = (p.interval * 2).min(t2);
                    let (next, key, response) =
                        (now + p.interval, p.key.clone(), p.response.clone());
                    *self.timer(Timer::Retransmit2xx) = Some(next);
                    self.out
                        .push_back(Output::SendResponse { to: key, response });
                }
            }
            Timer::PrackTimeout => {
                self.reliable = None;
                *self.timer(Timer::RetransmitReliable) = None;
                if self.phase == Phase::Proceeding {
                    let r = self.invite_response(StatusCode::SERVER_INTERNAL_ERROR);
                    self.send_invite_response(r);
                    self.terminate(now, EndReason::PrackTimeout);
                }
            }
            Timer::RetransmitReliable => {
                if let Some(rel) = &mut self.reliable {
                    rel.interval *= 2;
                    let (next, response) = (now + rel.interval, rel.response.clone());
                    *self.timer(Timer::RetransmitReliable) = Some(next);
                    self.send_invite_response(response);
                }
            }
            Timer::Refresh => {
                if self.phase == Phase::Confirmed {
                    self.send_refresh(now);
                }
            }
            Timer::Expire => {
                // RFC 4028 §10: "the UA SHOULD send a BYE request to terminate the session."
                if let Some(bye) = self.send_in_dialog(Method::Bye, Bytes::new()) {
                    self.send_tracked(bye);
                }
                self.terminate(now, EndReason::SessionExpired);
            }
            Timer::GlareRetry => {
                if self.phase != Phase::Confirmed || self.glare_body.is_none() {
                    return;
                }
                if self.local_reinvite.is_none() && self.remote_reinvite.is_none() {
                    if let Some(body) = self.glare_body.take() {
                        self.send_reinvite(body);
                    }
                } else {
                    // The peer's re-INVITE got in first and is still being answered: wait
                    // another back-off rather than cause a second glare.
                    let r = self.random();
                    let again = glare_backoff(self.role == Role::Uac, r);
                    *self.timer(Timer::GlareRetry) = Some(now + again);
                }
            }
        }
    }

    /// A response to a request this session sent (from [`crate::endpoint::EndpointEvent::Response`]).
    pub fn handle_response(&mut self, now: Instant, response: Response) {
        let Ok(cseq) = response.headers.cseq() else {
            return;
        };
        if matches!(response.status.as_u16(), 401 | 407)
            && self.on_challenge(&response, cseq.seq, &cseq.method)
        {
            return;
        }
        match cseq.method {
            Method::Invite => {
                if response.status.is_success() && self.reack(&response, cseq.seq) {
                    return;
                }
                let initial = self.role == Role::Uac
                    && self.invite.headers.cseq().is_ok_and(|c| c.seq == cseq.seq);
                if initial {
                    self.on_invite_response(now, response);
                } else if self
                    .local_reinvite
                    .as_ref()
                    .is_some_and(|(s, _)| *s == cseq.seq)
                {
                    self.on_reinvite_response(now, response);
                }
            }
            Method::Update => self.on_update_response(now, response),
            _ => {}
        }
    }

    /// A client transaction this session started timed out or failed
    /// ([`crate::endpoint::EndpointEvent::TransactionTimeout`] or `TransportError`, whose key
    /// names the `method`). §8.1.3.1: the UAC "MUST treat" it "as if a 408 (Request Timeout)
    /// status code has been received": the initial INVITE fails, and an in-dialog INVITE or
    /// UPDATE ends the dialog (§12.2.1.2).
    pub fn handle_transaction_timeout(&mut self, now: Instant, method: &Method) {
        match method {
            Method::Invite if self.phase == Phase::Calling && self.role == Role::Uac => {
                let reason = if self.cancelled {
                    EndReason::Cancelled
                } else {
                    EndReason::Rejected(408)
                };
                self.terminate(now, reason);
            }
            Method::Invite if self.local_reinvite.is_some() => {
                self.local_reinvite = None;
                self.terminate(now, EndReason::DialogGone(408));
            }
            Method::Update if self.phase == Phase::Confirmed => {
                self.terminate(now, EndReason::DialogGone(408));
            }
            _ => {}
        }
    }

    /// A retransmitted 2xx: "The UAC core MUST generate an ACK request for each 2xx received
    /// from the transaction layer" (§13.2.2.4): the same ACK again.
    fn reack(&mut self, response: &Response, seq: u32) -> bool {
        let Some(tag) = to_tag(response) else {
            return false;
        };
        match self.acks.iter().find(|(t, s, _)| *t == tag && *s == seq) {
            Some((_, _, ack)) => {
                self.out.push_back(Output::SendAck(ack.clone()));
                true
            }
            None => false,
        }
    }

    fn on_invite_response(&mut self, now: Instant, resp: Response) {
        let status = resp.status;
        let tag = to_tag(&resp);
        if status.is_provisional() {
            let Some(tag) = tag else { return };
            if self.phase != Phase::Calling || status == StatusCode::TRYING {
                return;
            }
            self.on_early(&resp, tag);
            return;
        }
        if status.is_success() {
            let Some(tag) = tag else { return };
            let Ok(mut dialog) = Dialog::uac(&self.invite, &resp) else {
                return;
            };
            // The INVITE's CSeq, before the early dialog's requests (PRACK) moved it on.
            let seq = dialog.local_seq.unwrap_or_default();
            // §13.2.2.4: "If the dialog identifier in the 2xx response matches the dialog
            // identifier of an existing dialog, the dialog MUST be transitioned to the
            // "confirmed" state, and the route set for the dialog MUST be recomputed based on
            // the 2xx response": the fresh dialog has the 2xx's route set and target; the CSeq
            // numbers already used in the early dialog carry over.
            if let Some(f) = self.forks.iter().find(|f| f.dialog.id.remote_tag == tag) {
                dialog.local_seq = dialog.local_seq.max(f.dialog.local_seq);
                dialog.remote_seq = f.dialog.remote_seq;
            }
            // §13.2.2.4: "The header fields of the ACK are constructed in the same way as for
            // any request sent within a dialog ... with the exception of the CSeq ... The
            // sequence number of the CSeq header field MUST be the same as the INVITE being
            // acknowledged, but the CSeq method MUST be ACK."
            let ack = self.build(&mut dialog, Method::Ack, Some(seq));
            self.acks.push((tag.clone(), seq, ack.clone()));
            self.out.push_back(Output::SendAck(ack));
            if self.phase == Phase::Calling && !self.cancelled {
                self.dialog = Some(dialog);
                if !peer_allows_update(&resp.headers) {
                    self.update_allowed = false;
                }
                // The other early dialogs are kept: a later 2xx on one of them is ACKed and
                // BYEd with the CSeq numbers that dialog has already used.
                self.phase = Phase::Confirmed;
                if self.timer_from_response(&resp) {
                    self.arm_session_timer(now);
                }
                self.event(DialogEvent::Confirmed {
                    remote_tag: tag,
                    body: resp.body.clone(),
                });
            } else {
                // A second 2xx from another fork (§13.2.2.4: "If the dialog identifier in the
                // 2xx response matches the dialog identifier of an existing dialog, the dialog
                // MUST be transitioned to the "confirmed" state" ... a UAC that wants only one
                // dialog sends BYE after the ACK), or a 2xx that crossed our CANCEL (§9.1: the
                // CANCEL has no effect on a request that already got a final response): the
                // session is not wanted, so ACK it and hang it up.
                let bye = self.build(&mut dialog, Method::Bye, None);
                self.out.push_back(Output::SendRequest(bye));
                if self.phase == Phase::Calling {
                    self.terminate(now, EndReason::Cancelled);
                }
            }
            return;
        }
        if self.phase != Phase::Calling {
            return;
        }
        if status.as_u16() == 422 && !self.retried_422 && !self.cancelled {
            // RFC 4028 §7.4: "the UAC MUST ... retry the request ... with a Session-Expires
            // whose value is the Min-SE of the 422", and a CSeq one higher.
            if let Ok(Some(min)) = resp.headers.min_se() {
                self.retried_422 = true;
                self.retry_with_min_se(min.max(self.config.min_se).max(super::MIN_SE_FLOOR));
                return;
            }
        }
        let reason = if self.cancelled {
            EndReason::Cancelled
        } else {
            EndReason::Rejected(status.as_u16())
        };
        self.terminate(now, reason);
    }

    fn retry_with_min_se(&mut self, min: u32) {
        let mut req = self.invite.clone();
        let branch = self.new_branch();
        let via = our_via(&self.config, &branch);
        let seq = req.headers.cseq().map(|c| c.seq).unwrap_or_default();
        req.headers.set(HeaderName::Via, via.to_bytes());
        req.headers
            .set(HeaderName::CSeq, format!("{} INVITE", seq.wrapping_add(1)));
        req.headers.set(HeaderName::SessionExpires, min.to_string());
        req.headers.set(HeaderName::MinSe, min.to_string());
        self.config.min_se = min;
        self.invite = req.clone();
        self.forks.clear();
        self.send_tracked(req);
    }

    fn on_early(&mut self, resp: &Response, tag: String) {
        let idx = match self
            .forks
            .iter()
            .position(|f| f.dialog.id.remote_tag == tag)
        {
            Some(i) => i,
            None => {
                if self.forks.len() >= MAX_FORKS {
                    // A bounded fork list: the extra early dialog is not tracked (its 2xx, if
                    // any, is still ACKed and BYEd).
                    self.ignored_forks += 1;
                    return;
                }
                let Ok(dialog) = Dialog::uac(&self.invite, resp) else {
                    return;
                };
                self.forks.push(Fork {
                    dialog,
                    last_rseq: None,
                });
                self.forks.len() - 1
            }
        };
        let rseq = resp.headers.rseq().ok().flatten();
        let reliable = resp
            .headers
            .require()
            .is_ok_and(|r| r.iter().any(|t| t.eq_ignore_ascii_case("100rel")))
            && rseq.is_some();
        if let (true, Some(rseq)) = (reliable, rseq) {
            let last = self.forks[idx].last_rseq;
            // RFC 3262 §4: a retransmission (same RSeq) or an out-of-order response is not
            // PRACKed again: "the UAC MUST NOT acknowledge it" unless it is "one higher than
            // the last".
            if last.is_some_and(|l| rseq != l.wrapping_add(1)) {
                return;
            }
            self.forks[idx].last_rseq = Some(rseq);
            let seq = resp.headers.cseq().map(|c| c.seq).unwrap_or_default();
            let mut dialog = self.forks[idx].dialog.clone();
            let mut prack = self.build(&mut dialog, Method::Prack, None);
            self.forks[idx].dialog = dialog;
            // "The RAck header field contains two numbers and a method tag. The first number
            // is the value from the RSeq header in the provisional response that is being
            // acknowledged. The next number, and the method, are copied from the CSeq in the
            // response that is being acknowledged."
            prack
                .headers
                .push(HeaderName::RAck, format!("{rseq} {seq} INVITE"));
            self.out.push_back(Output::SendRequest(prack));
        }
        self.event(DialogEvent::Early {
            remote_tag: tag,
            status: resp.status.as_u16(),
            body: resp.body.clone(),
            reliable,
        });
    }

    fn on_reinvite_response(&mut self, now: Instant, resp: Response) {
        let status = resp.status;
        if status.is_provisional() {
            return;
        }
        let Some((seq, offer)) = self.local_reinvite.take() else {
            return;
        };
        // A session refresh by re-INVITE (RFC 4028 §9) is reported as a refresh, not as the
        // application's re-INVITE.
        let refresh = self.refresh_reinvite.take() == Some(seq);
        if status.is_success() {
            let Some(mut dialog) = self.dialog.take() else {
                return;
            };
            // §12.2.1.2: a 2xx to a target refresh request replaces the remote target.
            dialog.refresh_target(&resp.headers);
            let ack = self.build(&mut dialog, Method::Ack, Some(seq));
            let tag = dialog.id.remote_tag.clone();
            self.dialog = Some(dialog);
            self.acks.push((tag, seq, ack.clone()));
            self.out.push_back(Output::SendAck(ack));
            self.local_body = offer;
            if self.timer_from_response(&resp) {
                self.arm_session_timer(now);
                if refresh {
                    self.refreshed_event();
                }
            }
            if !refresh {
                self.event(DialogEvent::ReInviteAccepted {
                    answer: resp.body.clone(),
                });
            }
            return;
        }
        if refresh {
            match status.as_u16() {
                // §12.2.1.2: 481/408 end the dialog.
                code @ (481 | 408) => self.terminate(now, EndReason::DialogGone(code)),
                491 => self.retry_refresh_after_glare(now),
                _ => self.rearm_after_failed_refresh(now),
            }
            return;
        }
        match status.as_u16() {
            491 => {
                let r = self.random();
                let retry_after = glare_backoff(self.role == Role::Uac, r);
                self.glare_body = Some(offer);
                *self.timer(Timer::GlareRetry) = Some(now + retry_after);
                self.event(DialogEvent::ReInviteGlare { retry_after });
            }
            // §12.2.1.2: "If the response for a request within a dialog is a 481
            // (Call/Transaction Does Not Exist) or a 408 (Request Timeout), the UAC SHOULD
            // terminate the dialog."
            code @ (481 | 408) => self.terminate(now, EndReason::DialogGone(code)),
            code => self.event(DialogEvent::ReInviteRejected { status: code }),
        }
    }

    fn on_update_response(&mut self, now: Instant, resp: Response) {
        let status = resp.status;
        if status.is_provisional() {
            return;
        }
        if status.is_success() {
            if let Some(d) = &mut self.dialog {
                d.refresh_target(&resp.headers);
            }
            if self.timer_from_response(&resp) {
                self.arm_session_timer(now);
                self.refreshed_event();
            }
            return;
        }
        match status.as_u16() {
            422 => {
                // RFC 4028 §7.4 for a refresh: retry with the peer's Min-SE.
                if let (Ok(Some(min)), Some(st)) = (resp.headers.min_se(), &mut self.session_timer)
                {
                    st.interval = st.interval.max(min);
                    self.config.min_se = self.config.min_se.max(min);
                    self.send_refresh(now);
                }
            }
            // §12.2.1.2: "If the response for a request within a dialog is a 481
            // (Call/Transaction Does Not Exist) or a 408 (Request Timeout), the UAC SHOULD
            // terminate the dialog."
            code @ (481 | 408) => self.terminate(now, EndReason::DialogGone(code)),
            // The peer does not implement UPDATE (405 Method Not Allowed, 501 Not
            // Implemented): RFC 4028 §9 lets the refresh be a re-INVITE, so switch to that for
            // this and every later refresh instead of letting the session expire.
            405 | 501 => {
                self.update_allowed = false;
                self.send_refresh(now);
            }
            // RFC 3311 §5.2 glare on UPDATE: retry after the §14.1 back-off.
            491 => self.retry_refresh_after_glare(now),
            // Any other failure leaves the dialog and the session as they were (§12.2.1.2
            // ends the dialog only for 481/408): keep the call up and refresh again at the
            // next half interval, as if this refresh had succeeded.
            _ => self.rearm_after_failed_refresh(now),
        }
    }

    /// Our refresh met glare (491): try it again after the §14.1 back-off.
    fn retry_refresh_after_glare(&mut self, now: Instant) {
        let r = self.random();
        let retry_after = glare_backoff(self.role == Role::Uac, r);
        *self.timer(Timer::Refresh) = Some(now + retry_after);
    }

    /// A refresh failed with a status that does not end the dialog: re-arm the timers as if it
    /// had succeeded.
    fn rearm_after_failed_refresh(&mut self, now: Instant) {
        if self.phase == Phase::Confirmed {
            self.arm_session_timer(now);
        }
    }

    /// A request in this session's dialog (from
    /// [`crate::endpoint::EndpointEvent::InDialogRequest`]): `key` is its server transaction
    /// (`None` for an ACK).
    pub fn handle_request(&mut self, now: Instant, req: Request, key: Option<TransactionKey>) {
        if req.method == Method::Ack {
            self.on_ack(now, &req);
            return;
        }
        let Some(key) = key else { return };
        let reply = |s: &mut Self, status: u16| {
            let status = StatusCode::new(status).expect("a valid status code");
            let r = response_to(&req, status, None);
            s.out.push_back(Output::SendResponse {
                to: key.clone(),
                response: r,
            });
        };
        let Ok(cseq) = req.headers.cseq() else {
            return reply(self, 400);
        };
        let from_tag = req
            .headers
            .from()
            .ok()
            .and_then(|f| f.tag().map(str::to_owned));
        let ours = self
            .dialog
            .as_ref()
            .is_some_and(|d| Some(&d.id.remote_tag) == from_tag.as_ref());
        // §12.2.2: a request that matches no dialog of ours gets 481.
        if self.phase == Phase::Terminated || !ours {
            return reply(self, 481);
        }
        let in_order = self
            .dialog
            .as_mut()
            .is_some_and(|d| d.accept_remote_seq(cseq.seq));
        if !in_order {
            return reply(self, 500);
        }
        match req.method {
            Method::Bye => {
                // §15.1.2: "the UAS core ... SHOULD terminate the session ... and MUST generate
                // a 2xx response to the BYE"; a BYE before our final response: "the UAS MUST
                // respond to the BYE with 200 and then respond to the original request with
                // 487".
                reply(self, 200);
                if self.phase == Phase::Proceeding {
                    let r = self.invite_response(StatusCode::REQUEST_TERMINATED);
                    self.send_invite_response(r);
                }
                self.terminate(now, EndReason::RemoteBye);
            }
            Method::Invite => self.on_reinvite(req, key),
            Method::Update => self.on_update(now, req, key),
            Method::Prack => self.on_prack(now, req, key),
            Method::Options => {
                let mut r = response_to(&req, StatusCode::OK, None);
                r.headers
                    .push(HeaderName::Allow, allow_value(&self.config.allow));
                r.headers
                    .push(HeaderName::Accept, Bytes::from_static(b"application/sdp"));
                r.headers
                    .push(HeaderName::Supported, Bytes::from_static(b"100rel, timer"));
                self.out.push_back(Output::SendResponse {
                    to: key,
                    response: r,
                });
            }
            _ => {
                let mut r = response_to(&req, StatusCode::new(405).expect("405"), None);
                r.headers
                    .push(HeaderName::Allow, allow_value(&self.config.allow));
                self.out.push_back(Output::SendResponse {
                    to: key,
                    response: r,
                });
            }
        }
    }

    fn on_ack(&mut self, now: Instant, ack: &Request) {
        let Ok(cseq) = ack.headers.cseq() else { return };
        let Some(p) = self.pending_2xx.as_ref().filter(|p| p.cseq == cseq.seq) else {
            return;
        };
        let initial = p.initial;
        self.pending_2xx = None;
        *self.timer(Timer::Retransmit2xx) = None;
        *self.timer(Timer::AckTimeout) = None;
        if initial && self.phase == Phase::Accepted {
            self.phase = Phase::Confirmed;
            let remote_tag = self
                .dialog
                .as_ref()
                .map(|d| d.id.remote_tag.clone())
                .unwrap_or_default();
            let _ = now;
            self.event(DialogEvent::Confirmed {
                remote_tag,
                body: ack.body.clone(),
            });
        }
    }

    fn on_reinvite(&mut self, req: Request, key: TransactionKey) {
        let respond = |s: &mut Self, r: Response| {
            s.out.push_back(Output::SendResponse {
                to: key.clone(),
                response: r,
            })
        };
        // §14.2: "A UAS that receives an INVITE on a dialog while an INVITE it had sent on that
        // dialog is in progress MUST return a 491 (Request Pending) response to the received
        // INVITE."
        if self.local_reinvite.is_some() || self.phase == Phase::Calling {
            let r = response_to(&req, StatusCode::new(491).expect("491"), None);
            return respond(self, r);
        }
        // "A UAS that receives a second INVITE before it sends the final response to a first
        // INVITE with a lower CSeq sequence number on the same dialog MUST return a 500 (Server
        // Internal Error) response to the second INVITE and MUST include a Retry-After header
        // field with a randomly chosen value of between 0 and 10 seconds."
        if self.remote_reinvite.is_some() || self.phase != Phase::Confirmed {
            let mut r = response_to(&req, StatusCode::SERVER_INTERNAL_ERROR, None);
            let secs = self.random() % 11;
            r.headers.push(HeaderName::RetryAfter, secs.to_string());
            return respond(self, r);
        }
        if let Some(d) = &mut self.dialog {
            // §12.2.2: a target refresh request replaces the remote target.
            d.refresh_target(&req.headers);
        }
        let offer = req.body.clone();
        self.remote_reinvite = Some((key, req));
        self.event(DialogEvent::ReInvite { offer });
    }

    fn on_update(&mut self, now: Instant, req: Request, key: TransactionKey) {
        if !req.body.is_empty() {
            // An UPDATE carrying an offer (RFC 3311) would need the offer/answer engine,
            // which this session leaves to the application through re-INVITE.
            let r = response_to(&req, StatusCode::new(488).expect("488"), None);
            self.out.push_back(Output::SendResponse {
                to: key,
                response: r,
            });
            return;
        }
        if let Some(d) = &mut self.dialog {
            d.refresh_target(&req.headers);
        }
        let mut r = response_to(&req, StatusCode::OK, None);
        r.headers
            .push(HeaderName::Contact, self.local_contact.to_bytes());
        let refreshed = self.negotiate_timer_as_uas(&req, &mut r);
        self.out.push_back(Output::SendResponse {
            to: key,
            response: r,
        });
        if refreshed {
            self.arm_session_timer(now);
            self.refreshed_event();
        }
    }

    fn on_prack(&mut self, now: Instant, req: Request, key: TransactionKey) {
        let rack = req.headers.rack().ok().flatten();
        let invite_seq = self.invite.headers.cseq().map(|c| c.seq).ok();
        let matched = match (&self.reliable, &rack) {
            (Some(rel), Some(rack)) => {
                rack.rseq == rel.rseq
                    && Some(rack.cseq) == invite_seq
                    && rack.method == Method::Invite
            }
            _ => false,
        };
        // RFC 3262 §3: "If the PRACK does not match any unacknowledged reliable provisional
        // response, the UAS MUST respond to the PRACK with a 481 response."
        let status = if matched {
            StatusCode::OK
        } else {
            StatusCode::CALL_TRANSACTION_DOES_NOT_EXIST
        };
        let r = response_to(&req, status, None);
        self.out.push_back(Output::SendResponse {
            to: key,
            response: r,
        });
        if matched {
            let _ = now;
            self.reliable = None;
            *self.timer(Timer::RetransmitReliable) = None;
            *self.timer(Timer::PrackTimeout) = None;
            self.event(DialogEvent::PrackReceived { body: req.body });
        }
    }
}

/// Whether the peer's Allow (in `headers`) admits UPDATE: `false` only when an Allow is present
/// and omits it (RFC 3261 §20.5: "the absence of an Allow header field MUST NOT be interpreted
/// to mean that the UA sending the message supports no methods").
fn peer_allows_update(headers: &crate::message::Headers) -> bool {
    match headers.allow() {
        Ok(allow) => allow.is_empty() || allow.contains(&Method::Update),
        Err(_) => true,
    }
}

fn to_tag(r: &Response) -> Option<String> {
    r.headers.to().ok().and_then(|t| t.tag().map(str::to_owned))
}
