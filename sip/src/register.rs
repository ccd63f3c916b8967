//! The registration client (RFC 3261 §10.2): one binding of one address-of-record, kept alive
//! by refreshes, answered through digest challenges, backed off on failure and removed on
//! request. Sans-IO: the caller sends what [`Registration::poll_output`] gives, feeds back the
//! final response ([`Registration::handle_response`]) or the failure
//! ([`Registration::handle_failure`]), and calls [`Registration::handle_timeout`] at
//! [`Registration::poll_timeout`].
//!
//! ```text
//!             start()                 2xx (granted g s)
//! Unregistered ───────► Registering ─────────────────────► Registered ──┐ refresh at
//!      ▲                 │  ▲   401/407 (answered),           │  ▲       │ g × [50 %, 90 %]
//!      │                 │  │   423 (Min-Expires)             │  └───────┘ (2xx)
//!      │                 │  └─────────── backoff elapsed ─┐   │ failure
//!      │                 └─ failure ───────────────────► Failed ◄┘
//!      │   unregister(): REGISTER Expires: 0 (when a binding may exist)
//!      └──────────────── Unregistering ◄── any state
//! ```
//!
//! Randomness is an argument too: every input that may schedule something takes a `random: u64`
//! the caller draws (the refresh fraction, the backoff jitter and the digest cnonce come from it).
//!
//! One request is outstanding at a time: each new request (a retry with credentials, a
//! refresh, the unregistration) takes CSeq + 1 on the same Call-ID (§10.2: "A UA MUST
//! increment the CSeq value by one for each REGISTER request with the same Call-ID"), and a
//! response whose CSeq is not the outstanding one is ignored.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::{
    AuthHeader, Authorization, Challenge, ChallengeOutcome, Credentials, DigestClient,
};
use crate::message::{
    HeaderName, Headers, Host, Method, NameAddr, Params, Request, Response, Uri, Via,
};

/// The settings of one registration.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// The Request-URI: the registrar's domain (`sip:example.net`), §10.2: "The "userinfo" and
    /// "@" components of the SIP URI MUST NOT be present."
    pub registrar: Uri,
    /// The address-of-record, put in To and From (§10.2: "the To header field contains the
    /// address of record whose registration is to be created").
    pub aor: Uri,
    /// Our Contact URI (`sip:user@ip:port;transport=tcp`).
    pub contact: Uri,
    /// The expiry asked for, seconds (RFC 3261 suggests 3600).
    pub expires_s: u32,
    /// The Call-ID of every REGISTER of this binding (§10.2: "a UA SHOULD use the same Call-ID
    /// for all registrations during a single boot cycle").
    pub call_id: String,
    /// The From tag.
    pub from_tag: String,
    /// The Via transport (`UDP`, `TCP`, `TLS`).
    pub via_transport: String,
    /// The Via sent-by host and port.
    pub via_host: Host,
    /// The Via sent-by port.
    pub via_port: Option<u16>,
    /// Route values (an outbound proxy as a loose route), in order.
    pub routes: Vec<NameAddr>,
    /// Digest credentials (`None`: a 401/407 fails the registration).
    pub credentials: Option<Credentials>,
    /// The realm those credentials are for (`None`: any).
    pub realm: Option<String>,
    /// The backoff after a failure.
    pub backoff: Backoff,
}

/// Exponential backoff after a failed attempt: `min × 2^(failures − 1)`, at most `max`, then
/// shortened by up to 20 % of jitter (from the caller's random value) so that many trunks that
/// failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// After the first failure.
    pub min: Duration,
    /// The cap.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The delay before the next attempt after `failures` consecutive failures (1 for the
    /// first), before jitter.
    pub fn base(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(20);
        self.min
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// [`Backoff::base`] minus up to 20 % drawn from `random`: in `[0.8 × base, base]`.
    pub fn delay(&self, failures: u32, random: u64) -> Duration {
        let base = self.base(failures);
        base.mul_f64(1.0 - 0.2 * unit(random))
    }
}

/// `random` mapped to `[0, 1)`.
fn unit(random: u64) -> f64 {
    (random >> 11) as f64 / (1u64 << 53) as f64
}

/// The refresh point: between 50 % and 90 % of the granted expiry, drawn from `random`.
pub fn refresh_after(granted_s: u32, random: u64) -> Duration {
    Duration::from_secs(u64::from(granted_s)).mul_f64(0.5 + 0.4 * unit(random))
}

/// Where a registration stands (what the application shows and stores).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// No binding and none asked for.
    Unregistered,
    /// The first REGISTER (or one after a failure) is on its way.
    Registering,
    /// Bound until `expires_at`; refreshed at `refresh_at`.
    Registered {
        /// The expiry the registrar granted, seconds.
        granted_s: u32,
        /// When the binding lapses unless refreshed.
        expires_at: Instant,
        /// When the refresh goes.
        refresh_at: Instant,
    },
    /// The last attempt failed; the next goes at `next_try`.
    Failed {
        /// The final status (0: no response: a timeout or a transport error).
        status: u16,
        /// Why, in words.
        reason: String,
        /// When the next attempt goes.
        next_try: Instant,
    },
    /// The REGISTER with `Expires: 0` is on its way.
    Unregistering,
}

/// Why a request got no final response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No final response in time (Timer F).
    Timeout,
    /// It could not be sent, or the connection failed.
    Transport,
}

/// What the registration asks of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this request (to the registrar, or the outbound proxy).
    Send(Box<Request>),
    /// The state changed (each successful refresh is reported too: its expiry moved).
    State(RegistrationState),
}

/// More than this many challenges answered in a row for one attempt is a loop (a registrar
/// that keeps saying stale=true): the attempt fails.
const MAX_CHALLENGES_PER_ATTEMPT: u32 = 4;
/// Two 423s in one attempt: the registrar's Min-Expires did not satisfy it.
const MAX_INTERVAL_RETRIES: u32 = 2;
/// The longest expiry asked for, whatever a Min-Expires says (a day).
const MAX_EXPIRES_S: u32 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Register,
    Unregister,
}

#[derive(Debug, Clone)]
struct Outstanding {
    cseq: u32,
    purpose: Purpose,
    /// The credentials the request carried, per header kind.
    sent: Vec<(AuthHeader, Authorization)>,
}

/// One registration binding (see the module docs).
#[derive(Debug)]
pub struct Registration {
    config: RegistrationConfig,
    state: RegistrationState,
    digest: Option<DigestClient>,
    cseq: u32,
    expires_s: u32,
    outstanding: Option<Outstanding>,
    /// When the next REGISTER goes (refresh or retry); `None` while one is outstanding.
    next_at: Option<Instant>,
    /// Consecutive failed attempts.
    failures: u32,
    /// Challenges answered and 423s obeyed in the current attempt.
    challenges: u32,
    interval_retries: u32,
    /// A binding may exist at the registrar (a 2xx was seen since the last unregistration).
    bound: bool,
    /// Set by [`Registration::unregister`]: nothing is sent after the unregistration ends.
    stopped: bool,
    out: VecDeque<Output>,
}

impl Registration {
    /// A registration that has not started (call [`Registration::start`]).
    pub fn new(config: RegistrationConfig) -> Registration {
        let digest = config.credentials.clone().map(|c| match &config.realm {
            Some(realm) => DigestClient::new(c.clone()).with_realm(realm.clone(), c),
            None => DigestClient::new(c),
        });
        Registration {
            expires_s: config.expires_s.clamp(1, MAX_EXPIRES_S),
            config,
            state: RegistrationState::Unregistered,
            digest,
            cseq: 0,
            outstanding: None,
            next_at: None,
            failures: 0,
            challenges: 0,
            interval_retries: 0,
            bound: false,
            stopped: false,
            out: VecDeque::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> &RegistrationState {
        &self.state
    }

    /// Consecutive failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The CSeq of the request outstanding, if any.
    pub fn outstanding_cseq(&self) -> Option<u32> {
        self.outstanding.as_ref().map(|o| o.cseq)
    }

    /// Sends the first REGISTER.
    pub fn start(&mut self, now: Instant, random: u64) {
        if self.outstanding.is_some() || self.stopped {
            return;
        }
        let _ = now;
        self.begin_attempt();
        self.set_state(RegistrationState::Registering);
        self.send(Purpose::Register, random);
    }

    /// Sends the refresh or the retry when it is due.
    pub fn handle_timeout(&mut self, now: Instant, random: u64) {
        if self.stopped || self.outstanding.is_some() {
            return;
        }
        if self.next_at.is_some_and(|at| at <= now) {
            self.next_at = None;
            self.begin_attempt();
            if !matches!(self.state, RegistrationState::Registered { .. }) {
                // A refresh keeps showing Registered: the binding holds until it expires.
                self.set_state(RegistrationState::Registering);
            }
            self.send(Purpose::Register, random);
        }
    }

    /// The earliest time [`Registration::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outstanding.is_some() || self.stopped {
            None
        } else {
            self.next_at
        }
    }

    /// The next request to send or state change to report.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Removes the binding: a REGISTER with `Expires: 0` when one may exist (else the state
    /// just becomes Unregistered). Whatever was outstanding is forgotten; nothing is sent after
    /// the unregistration's own answer.
    pub fn unregister(&mut self, _now: Instant, random: u64) {
        self.stopped = true;
        self.next_at = None;
        self.outstanding = None;
        if self.bound || matches!(self.state, RegistrationState::Registering) {
            self.begin_attempt();
            self.set_state(RegistrationState::Unregistering);
            self.send(Purpose::Unregister, random);
        } else {
            self.set_state(RegistrationState::Unregistered);
        }
    }

    /// Takes the final response to the outstanding request (others are ignored).
    pub fn handle_response(&mut self, now: Instant, response: &Response, random: u64) {
        let Some(out) = self.outstanding.as_ref() else {
            return;
        };
        let cseq = response.headers.cseq().ok();
        if cseq.as_ref().map(|c| c.seq) != Some(out.cseq) || response.status.is_provisional() {
            return;
        }
        let Some(out) = self.outstanding.take() else {
            return;
        };
        let status = response.status.as_u16();
        match status {
            200..=299 => self.on_success(now, response, out.purpose, random),
            401 | 407 => self.on_challenge(now, response, out, random),
            423 => self.on_interval_too_brief(now, response, out.purpose, random),
            _ => {
                let retry_after = if status == 503 {
                    response
                        .headers
                        .retry_after()
                        .ok()
                        .flatten()
                        .map(|r| Duration::from_secs(u64::from(r.seconds.clamp(1, 3600))))
                } else {
                    None
                };
                let reason = String::from_utf8_lossy(&response.reason).into_owned();
                self.fail(now, out.purpose, status, reason, retry_after, random);
            }
        }
    }

    /// The outstanding request got no final response.
    pub fn handle_failure(&mut self, now: Instant, failure: Failure, random: u64) {
        let Some(out) = self.outstanding.take() else {
            return;
        };
        let reason = match failure {
            Failure::Timeout => "no response (timeout)",
            Failure::Transport => "transport error",
        };
        self.fail(now, out.purpose, 0, reason.to_owned(), None, random);
    }

    fn begin_attempt(&mut self) {
        self.challenges = 0;
        self.interval_retries = 0;
    }

    fn on_success(&mut self, now: Instant, response: &Response, purpose: Purpose, random: u64) {
        if purpose == Purpose::Unregister {
            self.bound = false;
            self.set_state(RegistrationState::Unregistered);
            return;
        }
        // §10.2.4: the 2xx lists every current binding; ours carries its expiry in an
        // `expires` parameter, else the Expires header applies, else what we asked for.
        let ours = response
            .headers
            .contacts()
            .ok()
            .and_then(|cs| {
                cs.into_iter()
                    .find(|c| c.uri.equivalent(&self.config.contact))
            })
            .and_then(|c| c.expires());
        let granted = ours
            .or_else(|| response.headers.expires().ok().flatten())
            .unwrap_or(self.expires_s);
        if granted == 0 {
            self.bound = false;
            self.fail(
                now,
                purpose,
                response.status.as_u16(),
                "the registrar granted 0 s".to_owned(),
                None,
                random,
            );
            return;
        }
        self.bound = true;
        self.failures = 0;
        let refresh_at = now + refresh_after(granted, random);
        self.next_at = Some(refresh_at);
        self.set_state(RegistrationState::Registered {
            granted_s: granted,
            expires_at: now + Duration::from_secs(u64::from(granted)),
            refresh_at,
        });
    }

    fn on_challenge(&mut self, now: Instant, response: &Response, out: Outstanding, random: u64) {
        let status = response.status.as_u16();
        let header = if status == 401 {
            AuthHeader::Www
        } else {
            AuthHeader::Proxy
        };
        let reason = String::from_utf8_lossy(&response.reason).into_owned();
        if self.digest.is_none() {
            let why = format!("{reason} (no credentials configured)");
            self.fail(now, out.purpose, status, why, None, random);
            return;
        }
        self.challenges += 1;
        if self.challenges > MAX_CHALLENGES_PER_ATTEMPT {
            let why = format!("{reason} (challenge loop)");
            self.fail(now, out.purpose, status, why, None, random);
            return;
        }
        let name = match header {
            AuthHeader::Www => HeaderName::WwwAuthenticate,
            AuthHeader::Proxy => HeaderName::ProxyAuthenticate,
        };
        let challenges: Vec<Challenge> = response
            .headers
            .get_all(&name)
            .filter_map(|v| Challenge::parse_bytes(v).ok())
            .collect();
        let sent: Vec<Authorization> = out
            .sent
            .iter()
            .filter(|(h, _)| *h == header)
            .map(|(_, a)| a.clone())
            .collect();
        let outcome = match self.digest.as_mut() {
            Some(d) => d.handle_challenges(header, &challenges, &sent),
            None => return,
        };
        match outcome {
            Ok(ChallengeOutcome::Retry) => self.send(out.purpose, random),
            Ok(ChallengeOutcome::Rejected { realm }) => {
                // RFC 3261 §22.1: do not re-attempt with rejected credentials; the next
                // attempt (after the backoff) starts without any.
                if let Some(d) = self.digest.as_mut() {
                    d.clear();
                }
                let why = format!("{reason} (credentials rejected for realm {realm:?})");
                self.fail(now, out.purpose, status, why, None, random);
            }
            Err(e) => {
                let why = format!("{reason} ({e})");
                self.fail(now, out.purpose, status, why, None, random);
            }
        }
    }

    fn on_interval_too_brief(
        &mut self,
        now: Instant,
        response: &Response,
        purpose: Purpose,
        random: u64,
    ) {
        // §10.2.8: "the UA MAY retry the registration with an expiration interval greater than
        // or equal to the one in the Min-Expires header field".
        let min = response
            .headers
            .single_u32(&HeaderName::MinExpires, "Min-Expires")
            .ok()
            .flatten();
        self.interval_retries += 1;
        match min {
            Some(min)
                if purpose == Purpose::Register
                    && min > self.expires_s
                    && min <= MAX_EXPIRES_S
                    && self.interval_retries <= MAX_INTERVAL_RETRIES =>
            {
                self.expires_s = min;
                self.send(purpose, random);
            }
            _ => self.fail(
                now,
                purpose,
                423,
                "Interval Too Brief (no usable Min-Expires)".to_owned(),
                None,
                random,
            ),
        }
    }

    fn fail(
        &mut self,
        now: Instant,
        purpose: Purpose,
        status: u16,
        reason: String,
        retry_after: Option<Duration>,
        random: u64,
    ) {
        if purpose == Purpose::Unregister {
            // The unregistration is best effort: whatever the answer, we are done.
            self.set_state(RegistrationState::Unregistered);
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let delay = retry_after.unwrap_or_else(|| self.config.backoff.delay(self.failures, random));
        let next_try = now + delay;
        self.next_at = Some(next_try);
        self.set_state(RegistrationState::Failed {
            status,
            reason,
            next_try,
        });
    }

    fn set_state(&mut self, state: RegistrationState) {
        let changed = std::mem::discriminant(&state) != std::mem::discriminant(&self.state)
            || matches!(
                state,
                RegistrationState::Registered { .. } | RegistrationState::Failed { .. }
            );
        self.state = state.clone();
        if changed {
            self.out.push_back(Output::State(state));
        }
    }

    fn send(&mut self, purpose: Purpose, random: u64) {
        self.cseq = self.cseq.wrapping_add(1).max(1);
        let expires = match purpose {
            Purpose::Register => self.expires_s,
            Purpose::Unregister => 0,
        };
        let c = &self.config;
        let mut headers = Headers::with_capacity(12);
        let mut params = Params::new();
        params.push("rport", None::<&str>);
        let via = Via {
            transport: c.via_transport.to_ascii_uppercase(),
            host: c.via_host.clone(),
            port: c.via_port,
            params,
        };
        headers.push(HeaderName::Via, via.to_bytes());
        for r in &c.routes {
            headers.push(HeaderName::Route, r.to_bytes());
        }
        headers.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
        let mut from = NameAddr::new(c.aor.clone());
        from.params.push("tag", Some(c.from_tag.as_str()));
        headers.push(HeaderName::From, from.to_bytes());
        headers.push(HeaderName::To, NameAddr::new(c.aor.clone()).to_bytes());
        headers.push(HeaderName::CallId, c.call_id.clone());
        headers.push(HeaderName::CSeq, format!("{} REGISTER", self.cseq));
        let mut contact = NameAddr::new(c.contact.clone());
        contact.params.push("expires", Some(expires.to_string()));
        headers.push(HeaderName::Contact, contact.to_bytes());
        headers.push(HeaderName::Expires, expires.to_string());
        let mut sent = Vec::new();
        if let Some(digest) = self.digest.as_mut() {
            let cnonce = format!("{random:016x}");
            let uri = c.registrar.to_string();
            // An error here (a nonce count run out) just sends the request without
            // credentials: the registrar challenges again with a fresh nonce.
            for (header, authz) in digest
                .authorize("REGISTER", &uri, b"", &cnonce)
                .unwrap_or_default()
            {
                let name = match header {
                    AuthHeader::Www => HeaderName::Authorization,
                    AuthHeader::Proxy => HeaderName::ProxyAuthorization,
                };
                headers.push(name, authz.to_string());
                sent.push((header, authz));
            }
        }
        headers.push(HeaderName::ContentLength, Bytes::from_static(b"0"));
        let request = Request {
            method: Method::Register,
            uri: c.registrar.clone(),
            headers,
            body: Bytes::new(),
        };
        self.outstanding = Some(Outstanding {
            cseq: self.cseq,
            purpose,
            sent,
        });
        self.out.push_back(Output::Send(Box::new(request)));
    }
}

#[cfg(test)]
/// Table and scenario tests (virtual time: no clock is read by the machine).
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::auth::{NonceIssuer, Secret, Verification};
    use crate::message::{StatusCode, response_to};

    #[allow(clippy::disallowed_methods)] // any base instant will do; the machine never reads the clock
    fn t0() -> Instant {
        Instant::now()
    }

    fn config() -> RegistrationConfig {
        RegistrationConfig {
            registrar: Uri::parse("sip:carrier.example").unwrap(),
            aor: Uri::parse("sip:alice@carrier.example").unwrap(),
            contact: Uri::parse("sip:alice@192.0.2.10:5060").unwrap(),
            expires_s: 3600,
            call_id: "reg-1@192.0.2.10".to_owned(),
            from_tag: "ft1".to_owned(),
            via_transport: "udp".to_owned(),
            via_host: Host::parse(b"192.0.2.10").unwrap(),
            via_port: Some(5060),
            routes: Vec::new(),
            credentials: Some(Credentials::new("alice", "secret")),
            realm: None,
            backoff: Backoff::default(),
        }
    }

    /// The next output that is a request (states skipped), or None.
    fn next_request(r: &mut Registration) -> Option<Request> {
        while let Some(o) = r.poll_output() {
            if let Output::Send(req) = o {
                return Some(*req);
            }
        }
        None
    }

    fn states(r: &mut Registration) -> Vec<RegistrationState> {
        let mut v = Vec::new();
        while let Some(o) = r.poll_output() {
            match o {
                Output::State(s) => v.push(s),
                Output::Send(req) => panic!("unexpected request {req:?}"),
            }
        }
        v
    }

    fn reply(req: &Request, status: u16, headers: &[(HeaderName, &str)]) -> Response {
        let mut resp = response_to(req, StatusCode::new(status).unwrap(), None);
        for (n, v) in headers {
            resp.headers.push(n.clone(), v.to_string());
        }
        resp
    }

    fn cseq(req: &Request) -> u32 {
        req.headers.cseq().unwrap().seq
    }

    fn header<'a>(req: &'a Request, name: &HeaderName) -> Option<&'a str> {
        req.headers
            .get(name)
            .map(|v| std::str::from_utf8(v).unwrap())
    }

    fn ok_with_expires(req: &Request, granted: u32) -> Response {
        let contact = format!("<sip:alice@192.0.2.10:5060>;expires={granted}");
        reply(req, 200, &[(HeaderName::Contact, contact.as_str())])
    }

    const ISSUER_KEY: &[u8] = b"test key";

    fn challenge(req: &Request, issuer: &NonceIssuer, at: u64, stale: bool) -> Response {
        let mut c = issuer.issue(at, [1; 8]);
        c.stale = stale;
        reply(
            req,
            401,
            &[(HeaderName::WwwAuthenticate, c.to_string().as_str())],
        )
    }

    #[test]
    fn first_register_follows_rfc3261_10_2() {
        let now = t0();
        let mut r = Registration::new(config());
        r.start(now, 1);
        let first = r.poll_output().unwrap();
        assert_eq!(first, Output::State(RegistrationState::Registering));
        let req = next_request(&mut r).unwrap();
        assert_eq!(req.method, Method::Register);
        assert_eq!(req.uri.to_string(), "sip:carrier.example");
        let from = req.headers.from().unwrap();
        let to = req.headers.to().unwrap();
        assert_eq!(from.uri.to_string(), "sip:alice@carrier.example");
        assert_eq!(to.uri.to_string(), "sip:alice@carrier.example");
        assert_eq!(from.tag(), Some("ft1"));
        assert_eq!(to.tag(), None);
        assert_eq!(req.headers.call_id().unwrap(), "reg-1@192.0.2.10");
        assert_eq!(cseq(&req), 1);
        assert_eq!(req.headers.max_forwards().unwrap(), Some(70));
        let via = req.headers.top_via().unwrap();
        assert_eq!(via.branch(), None, "the transport adds the branch");
        assert_eq!(via.rport(), Some(None));
        let contacts = req.headers.contacts().unwrap();
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts[0].expires(), Some(3600));
        assert_eq!(req.headers.expires().unwrap(), Some(3600));
        assert!(req.headers.get(&HeaderName::Authorization).is_none());
        assert_eq!(
            r.poll_timeout(),
            None,
            "nothing is due while the request is out"
        );
    }

    #[test]
    fn refresh_time_is_inside_50_to_90_percent_of_granted() {
        // (granted seconds, random) → the refresh falls in [50 %, 90 %] of granted, same Call-ID,
        // CSeq + 1.
        let table: &[(u32, u64)] = &[
            (3600, 0),
            (3600, u64::MAX),
            (3600, u64::MAX / 2),
            (60, 0x1234_5678_9abc_def0),
            (4, u64::MAX),
            (4, 0),
            (1, 7),
            (86_400, 42),
        ];
        for &(granted, random) in table {
            let now = t0();
            let mut r = Registration::new(config());
            r.start(now, random);
            let req = next_request(&mut r).unwrap();
            r.handle_response(now, &ok_with_expires(&req, granted), random);
            let RegistrationState::Registered {
                granted_s,
                expires_at,
                refresh_at,
            } = r.state().clone()
            else {
                panic!("not registered: {:?}", r.state());
            };
            assert_eq!(granted_s, granted);
            assert_eq!(expires_at - now, Duration::from_secs(u64::from(granted)));
            let after = (refresh_at - now).as_secs_f64();
            let g = f64::from(granted);
            assert!(
                after >= 0.5 * g - 1e-6 && after <= 0.9 * g + 1e-6,
                "granted {granted}, random {random:#x}: refresh after {after} s"
            );
            assert_eq!(r.poll_timeout(), Some(refresh_at));
            // Not yet due: nothing goes.
            r.handle_timeout(refresh_at - Duration::from_millis(1), random);
            assert_eq!(next_request(&mut r), None);
            r.handle_timeout(refresh_at, random);
            let refresh = r.poll_output().unwrap();
            let Output::Send(refresh) = refresh else {
                panic!("a refresh keeps the Registered state and sends: {refresh:?}");
            };
            assert_eq!(
                refresh.headers.call_id().unwrap(),
                req.headers.call_id().unwrap()
            );
            assert_eq!(cseq(&refresh), cseq(&req) + 1);
        }
    }

    #[test]
    fn granted_expiry_comes_from_our_contact_then_expires_header_then_request() {
        let ours = "<sip:alice@192.0.2.10:5060>;expires=120";
        let other = "<sip:bob@198.51.100.1>;expires=999";
        let table: &[(&[(HeaderName, &str)], u32)] = &[
            (&[(HeaderName::Contact, ours)], 120),
            (
                &[(HeaderName::Contact, other), (HeaderName::Contact, ours)],
                120,
            ),
            (
                &[(HeaderName::Contact, other), (HeaderName::Expires, "300")],
                300,
            ),
            (
                &[(HeaderName::Contact, ours), (HeaderName::Expires, "300")],
                120,
            ),
            (&[(HeaderName::Expires, "45")], 45),
            (&[], 3600),
        ];
        for (headers, want) in table {
            let now = t0();
            let mut r = Registration::new(config());
            r.start(now, 0);
            let req = next_request(&mut r).unwrap();
            r.handle_response(now, &reply(&req, 200, headers), 0);
            match r.state() {
                RegistrationState::Registered { granted_s, .. } => {
                    assert_eq!(granted_s, want, "{headers:?}")
                }
                s => panic!("{headers:?}: {s:?}"),
            }
        }
    }

    #[test]
    fn challenge_is_answered_with_same_call_id_and_next_cseq_and_verifies() {
        let now = t0();
        let issuer = NonceIssuer::new(ISSUER_KEY, "carrier.example");
        let mut r = Registration::new(config());
        r.start(now, 1);
        let req = next_request(&mut r).unwrap();
        r.handle_response(now, &challenge(&req, &issuer, 1000, false), 2);
        let again = next_request(&mut r).unwrap();
        assert_eq!(r.state(), &RegistrationState::Registering);
        assert_eq!(
            again.headers.call_id().unwrap(),
            req.headers.call_id().unwrap()
        );
        assert_eq!(cseq(&again), 2);
        let authz =
            Authorization::parse(header(&again, &HeaderName::Authorization).unwrap()).unwrap();
        assert_eq!(authz.username, "alice");
        assert_eq!(authz.uri, "sip:carrier.example");
        let v = issuer
            .verify(
                1000,
                &authz,
                "REGISTER",
                b"",
                &Secret::Password("secret".into()),
                None,
            )
            .unwrap();
        assert!(matches!(v, Verification::Ok { .. }), "{v:?}");
        r.handle_response(now, &ok_with_expires(&again, 60), 3);
        assert!(matches!(r.state(), RegistrationState::Registered { .. }));
        // The refresh carries credentials at once, with the next nonce count.
        let at = r.poll_timeout().unwrap();
        r.handle_timeout(at, 4);
        let refresh = next_request(&mut r).unwrap();
        let authz =
            Authorization::parse(header(&refresh, &HeaderName::Authorization).unwrap()).unwrap();
        assert_eq!(authz.nc, Some(2));
        assert_eq!(cseq(&refresh), 3);
    }

    #[test]
    fn proxy_challenge_is_answered_in_proxy_authorization() {
        let now = t0();
        let issuer = NonceIssuer::new(ISSUER_KEY, "proxy.example");
        let mut r = Registration::new(config());
        r.start(now, 1);
        let req = next_request(&mut r).unwrap();
        let c = issuer.issue(5, [2; 8]).to_string();
        r.handle_response(
            now,
            &reply(&req, 407, &[(HeaderName::ProxyAuthenticate, c.as_str())]),
            2,
        );
        let again = next_request(&mut r).unwrap();
        assert!(header(&again, &HeaderName::ProxyAuthorization).is_some());
        assert!(header(&again, &HeaderName::Authorization).is_none());
    }

    #[test]
    fn stale_nonce_is_answered_again_with_the_same_credentials() {
        let now = t0();
        let issuer = NonceIssuer::new(ISSUER_KEY, "carrier.example");
        let mut r = Registration::new(config());
        r.start(now, 1);
        let req = next_request(&mut r).unwrap();
        r.handle_response(now, &challenge(&req, &issuer, 1000, false), 2);
        let second = next_request(&mut r).unwrap();
        r.handle_response(now, &challenge(&second, &issuer, 2000, true), 3);
        let third = next_request(&mut r).unwrap();
        assert_eq!(cseq(&third), 3);
        let authz =
            Authorization::parse(header(&third, &HeaderName::Authorization).unwrap()).unwrap();
        let first_nonce =
            Authorization::parse(header(&second, &HeaderName::Authorization).unwrap())
                .unwrap()
                .nonce;
        assert_ne!(authz.nonce, first_nonce, "the fresh nonce is used");
        assert_eq!(authz.nc, Some(1));
        r.handle_response(now, &ok_with_expires(&third, 60), 4);
        assert!(matches!(r.state(), RegistrationState::Registered { .. }));
        assert_eq!(r.failures(), 0);
    }

    #[test]
    fn wrong_password_stops_retrying_with_credentials_until_the_backoff() {
        let now = t0();
        let issuer = NonceIssuer::new(ISSUER_KEY, "carrier.example");
        let mut r = Registration::new(config());
        r.start(now, 0);
        let req = next_request(&mut r).unwrap();
        r.handle_response(now, &challenge(&req, &issuer, 1000, false), 0);
        let second = next_request(&mut r).unwrap();
        // A second, non-stale challenge for the same realm: the credentials are wrong.
        r.handle_response(now, &challenge(&second, &issuer, 1001, false), 0);
        let st = states(&mut r);
        let Some(RegistrationState::Failed {
            status,
            reason,
            next_try,
        }) = st.last().cloned()
        else {
            panic!("{st:?}");
        };
        assert_eq!(status, 401);
        assert!(reason.contains("rejected"), "{reason}");
        assert_eq!(next_try - now, Duration::from_secs(5));
        assert_eq!(r.poll_timeout(), Some(next_try));
        r.handle_timeout(next_try - Duration::from_millis(1), 0);
        assert_eq!(
            next_request(&mut r),
            None,
            "nothing is sent before the backoff"
        );
        r.handle_timeout(next_try, 0);
        let retry = next_request(&mut r).unwrap();
        assert!(
            header(&retry, &HeaderName::Authorization).is_none(),
            "the rejected credentials are not re-sent"
        );
        assert_eq!(cseq(&retry), 3);
        assert_eq!(r.state(), &RegistrationState::Registering);
    }

    #[test]
    fn challenge_without_credentials_fails() {
        let now = t0();
        let mut cfg = config();
        cfg.credentials = None;
        let issuer = NonceIssuer::new(ISSUER_KEY, "carrier.example");
        let mut r = Registration::new(cfg);
        r.start(now, 0);
        let req = next_request(&mut r).unwrap();
        r.handle_response(now, &challenge(&req, &issuer, 1, false), 0);
        assert!(matches!(
            r.state(),
            RegistrationState::Failed { status: 401, .. }
        ));
        assert_eq!(next_request(&mut r), None);
    }

    #[test]
    fn endless_stale_challenges_end_the_attempt() {
        let now = t0();
        let issuer = NonceIssuer::new(ISSUER_KEY, "carrier.example");
        let mut r = Registration::new(config());
        r.start(now, 0);
        let mut sent = 1;
        let mut req = next_request(&mut r).unwrap();
        for i in 0..10 {
            r.handle_response(now, &challenge(&req, &issuer, 1000 + i, i > 0), 0);
            match next_request(&mut r) {
                Some(next) => {
                    req = next;
                    sent += 1;
                }
                None => break,
            }
        }
        assert!(
            sent <= 1 + MAX_CHALLENGES_PER_ATTEMPT as usize,
            "{sent} requests"
        );
        assert!(matches!(
            r.state(),
            RegistrationState::Failed { status: 401, .. }
        ));
    }

    #[test]
    fn interval_too_brief_retries_with_min_expires() {
        let now = t0();
        let mut cfg = config();
        cfg.expires_s = 60;
        let mut r = Registration::new(cfg);
        r.start(now, 0);
        let req = next_request(&mut r).unwrap();
        r.handle_response(
            now,
            &reply(&req, 423, &[(HeaderName::MinExpires, "1800")]),
            0,
        );
        let again = next_request(&mut r).unwrap();
        assert_eq!(cseq(&again), 2);
        assert_eq!(again.headers.expires().unwrap(), Some(1800));
        assert_eq!(again.headers.contacts().unwrap()[0].expires(), Some(1800));
        r.handle_response(now, &reply(&again, 200, &[]), 0);
        assert!(matches!(
            r.state(),
            RegistrationState::Registered {
                granted_s: 1800,
                ..
            }
        ));
        // A 423 without a usable Min-Expires fails.
        let mut r = Registration::new(config());
        r.start(now, 0);
        let req = next_request(&mut r).unwrap();
        r.handle_response(now, &reply(&req, 423, &[]), 0);
        assert!(matches!(
            r.state(),
            RegistrationState::Failed { status: 423, .. }
        ));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::default();
        let want = [5u64, 10, 20, 40, 80, 160, 300, 300, 300];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(
                b.base(i as u32 + 1),
                Duration::from_secs(*w),
                "failure {}",
                i + 1
            );
        }
        assert_eq!(b.base(u32::MAX), Duration::from_secs(300));
        for random in [0, 1, u64::MAX / 3, u64::MAX] {
            let d = b.delay(3, random);
            assert!(
                d >= Duration::from_secs(16) && d <= Duration::from_secs(20),
                "{d:?}"
            );
        }
        // The machine: each failed attempt doubles the wait (random 0: no jitter).
        let mut now = t0();
        let mut r = Registration::new(config());
        r.start(now, 0);
        let mut waits = Vec::new();
        for _ in 0..want.len() {
            let req = next_request(&mut r).expect("an attempt");
            r.handle_response(now, &reply(&req, 500, &[]), 0);
            let RegistrationState::Failed {
                status, next_try, ..
            } = r.state().clone()
            else {
                panic!("{:?}", r.state());
            };
            assert_eq!(status, 500);
            waits.push((next_try - now).as_secs());
            now = next_try;
            r.handle_timeout(now, 0);
        }
        assert_eq!(waits, want);
        // A success resets the backoff.
        let req = next_request(&mut r).unwrap();
        r.handle_response(now, &ok_with_expires(&req, 60), 0);
        assert_eq!(r.failures(), 0);
    }

    #[test]
    fn service_unavailable_respects_retry_after() {
        let now = t0();
        let mut r = Registration::new(config());
        r.start(now, 0);
        let req = next_request(&mut r).unwrap();
        r.handle_response(
            now,
            &reply(&req, 503, &[(HeaderName::RetryAfter, "42")]),
            u64::MAX,
        );
        let RegistrationState::Failed {
            status, next_try, ..
        } = r.state().clone()
        else {
            panic!("{:?}", r.state());
        };
        assert_eq!(status, 503);
        assert_eq!(next_try - now, Duration::from_secs(42));
    }

    #[test]
    fn timeout_and_transport_error_fail_with_status_0() {
        for failure in [Failure::Timeout, Failure::Transport] {
            let now = t0();
            let mut r = Registration::new(config());
            r.start(now, 0);
            let _ = next_request(&mut r).unwrap();
            r.handle_failure(now, failure, 0);
            assert!(
                matches!(r.state(), RegistrationState::Failed { status: 0, .. }),
                "{failure:?}: {:?}",
                r.state()
            );
            assert!(r.poll_timeout().is_some());
        }
    }

    #[test]
    fn forbidden_fails_and_schedules_the_next_try() {
        let now = t0();
        let mut r = Registration::new(config());
        r.start(now, 0);
        let req = next_request(&mut r).unwrap();
        r.handle_response(now, &reply(&req, 403, &[]), 0);
        let st = states(&mut r);
        assert!(
            matches!(st.last(), Some(RegistrationState::Failed { status: 403, next_try, .. }) if *next_try > now),
            "{st:?}"
        );
    }

    #[test]
    fn a_response_to_another_cseq_is_ignored() {
        let now = t0();
        let mut r = Registration::new(config());
        r.start(now, 0);
        let req = next_request(&mut r).unwrap();
        let mut stale = ok_with_expires(&req, 60);
        stale.headers.set(HeaderName::CSeq, "99 REGISTER");
        r.handle_response(now, &stale, 0);
        assert_eq!(r.state(), &RegistrationState::Registering);
        assert_eq!(r.outstanding_cseq(), Some(1));
    }

    #[test]
    fn unregister_sends_expires_zero_and_stops() {
        let now = t0();
        let mut r = Registration::new(config());
        r.start(now, 0);
        let req = next_request(&mut r).unwrap();
        r.handle_response(now, &ok_with_expires(&req, 60), 0);
        let _ = states(&mut r);
        r.unregister(now, 0);
        assert_eq!(
            r.poll_output(),
            Some(Output::State(RegistrationState::Unregistering))
        );
        let un = next_request(&mut r).unwrap();
        assert_eq!(cseq(&un), 2);
        assert_eq!(un.headers.call_id().unwrap(), "reg-1@192.0.2.10");
        assert_eq!(un.headers.expires().unwrap(), Some(0));
        let contacts = un.headers.contacts().unwrap();
        assert_eq!(contacts[0].uri.to_string(), "sip:alice@192.0.2.10:5060");
        assert_eq!(contacts[0].expires(), Some(0));
        r.handle_response(now, &reply(&un, 200, &[]), 0);
        assert_eq!(r.state(), &RegistrationState::Unregistered);
        assert_eq!(r.poll_timeout(), None);
        r.handle_timeout(now + Duration::from_secs(10_000), 0);
        assert_eq!(
            next_request(&mut r),
            None,
            "nothing after the unregistration"
        );
        // Never registered: nothing to remove, nothing sent.
        let mut r = Registration::new(config());
        r.unregister(now, 0);
        assert_eq!(r.poll_output(), None);
        assert_eq!(r.state(), &RegistrationState::Unregistered);
    }

    #[test]
    fn unregister_is_answered_through_a_challenge() {
        let now = t0();
        let issuer = NonceIssuer::new(ISSUER_KEY, "carrier.example");
        let mut r = Registration::new(config());
        r.start(now, 0);
        let req = next_request(&mut r).unwrap();
        r.handle_response(now, &ok_with_expires(&req, 60), 0);
        r.unregister(now, 0);
        let un = next_request(&mut r).unwrap();
        r.handle_response(now, &challenge(&un, &issuer, 7, false), 0);
        let un2 = next_request(&mut r).unwrap();
        assert_eq!(un2.headers.expires().unwrap(), Some(0));
        assert!(header(&un2, &HeaderName::Authorization).is_some());
        r.handle_response(now, &reply(&un2, 500, &[]), 0);
        assert_eq!(r.state(), &RegistrationState::Unregistered, "best effort");
    }
}
