//! Table and scenario tests of the registration machine (virtual time: no clock is read).

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
    let authz = Authorization::parse(header(&again, &HeaderName::Authorization).unwrap()).unwrap();
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
    let authz = Authorization::parse(header(&third, &HeaderName::Authorization).unwrap()).unwrap();
    let first_nonce = Authorization::parse(header(&second, &HeaderName::Authorization).unwrap())
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
