//! Digest on the INVITE session's requests (RFC 3261 §22.2, §8.1.3.5): a 401/407 to our
//! INVITE, BYE, re-INVITE or UPDATE is answered once with credentials, with the next CSeq and
//! a new branch; a second challenge for the same realm without `stale=true` fails. Table
//! tests driving one `InviteSession` directly, with a `NonceIssuer` as the server.
#![allow(clippy::disallowed_methods)] // Instant::now: the origin of virtual time only

use std::time::Instant;

use bytes::Bytes;
use sip::auth::{
    Algorithm, AuthHeader, Authorization, Challenge, Credentials, NonceIssuer, Secret, Verification,
};
use sip::dialog::{
    DialogConfig, DialogEvent, EndReason, InviteParams, InviteSession, MAX_AUTH_RETRIES, Output,
};
use sip::message::{HeaderName, Method, NameAddr, Request, Response, StatusCode, Uri, response_to};

const NOW_UNIX: u64 = 1_800_000_000;

fn na(s: &str) -> NameAddr {
    NameAddr::parse_named(s.as_bytes(), "Contact").expect("name-addr")
}

fn params() -> InviteParams {
    InviteParams {
        request_uri: Uri::parse("sip:+15551234@192.0.2.9").expect("uri"),
        from: na("<sip:alice@192.0.2.1>"),
        from_tag: "ftag".into(),
        to: na("<sip:+15551234@192.0.2.9>"),
        call_id: "auth-test@192.0.2.1".into(),
        cseq: 1,
        contact: na("<sip:alice@192.0.2.1:5060>"),
        routes: Vec::new(),
        body: Bytes::from_static(b"v=0\r\n"),
    }
}

fn session(creds: Option<Credentials>) -> InviteSession {
    let mut s = InviteSession::uac(
        DialogConfig {
            seed: 7,
            ..DialogConfig::default()
        },
        &params(),
    );
    s.set_credentials(creds, 0x1234_5678);
    s
}

/// Drain the outputs: the requests sent and the events.
fn drain(s: &mut InviteSession) -> (Vec<Request>, Vec<DialogEvent>) {
    let (mut reqs, mut evs) = (Vec::new(), Vec::new());
    while let Some(o) = s.poll_output() {
        match o {
            Output::SendRequest(r) => reqs.push(r),
            Output::Event(e) => evs.push(e),
            _ => {}
        }
    }
    (reqs, evs)
}

fn challenge(req: &Request, status: u16, challenges: &[Challenge]) -> Response {
    let mut r = response_to(req, StatusCode::new(status).expect("status"), None);
    r.add_to_tag("srv");
    let name = if status == 401 {
        HeaderName::WwwAuthenticate
    } else {
        HeaderName::ProxyAuthenticate
    };
    for c in challenges {
        r.headers.push(name.clone(), c.to_string());
    }
    r
}

fn issuer(alg: Algorithm) -> NonceIssuer {
    NonceIssuer::new(b"k".to_vec(), "carrier.example").with_algorithms(&[alg])
}

fn creds_in(req: &Request, header: AuthHeader) -> Vec<Authorization> {
    let name = match header {
        AuthHeader::Www => HeaderName::Authorization,
        AuthHeader::Proxy => HeaderName::ProxyAuthorization,
    };
    req.headers
        .get_all(&name)
        .map(|v| Authorization::parse_bytes(v).expect("credentials parse"))
        .collect()
}

fn verify(iss: &NonceIssuer, req: &Request, header: AuthHeader, password: &str) -> Verification {
    let a = creds_in(req, header);
    assert_eq!(a.len(), 1, "one credentials header: {req:?}");
    assert_eq!(
        a[0].uri,
        req.uri.to_string(),
        "digest uri is the Request-URI"
    );
    iss.verify(
        NOW_UNIX,
        &a[0],
        req.method.as_str(),
        &req.body,
        &Secret::Password(password.into()),
        None,
    )
    .expect("verify")
}

fn cseq(r: &Request) -> u32 {
    r.headers.cseq().expect("cseq").seq
}

fn branch(r: &Request) -> String {
    r.headers.vias().expect("via")[0]
        .branch()
        .expect("branch")
        .to_owned()
}

#[test]
fn challenged_invite_is_sent_again_with_credentials() {
    // (status, algorithm, header)
    let table = [
        (401, Algorithm::Md5, AuthHeader::Www),
        (407, Algorithm::Sha256, AuthHeader::Proxy),
        (401, Algorithm::Sha256, AuthHeader::Www),
        (407, Algorithm::Md5, AuthHeader::Proxy),
    ];
    for (status, alg, header) in table {
        let now = Instant::now();
        let mut s = session(Some(Credentials::new("alice", "s3cret")));
        let (sent, _) = drain(&mut s);
        let invite = sent[0].clone();
        let iss = issuer(alg.clone());
        s.handle_response(
            now,
            challenge(&invite, status, &[iss.issue(NOW_UNIX, [1; 8])]),
        );
        let (sent, events) = drain(&mut s);
        assert_eq!(sent.len(), 1, "{status} {alg:?}: one retry");
        let retry = &sent[0];
        assert_eq!(retry.method, Method::Invite);
        assert_eq!(cseq(retry), cseq(&invite) + 1, "CSeq + 1");
        assert_ne!(branch(retry), branch(&invite), "a new branch");
        assert_eq!(
            retry.headers.call_id().expect("call-id"),
            invite.headers.call_id().expect("call-id")
        );
        assert_eq!(
            retry.headers.from().expect("from").tag(),
            Some("ftag"),
            "same From tag"
        );
        assert_eq!(
            retry.headers.to().expect("to").tag(),
            None,
            "To without tag"
        );
        assert_eq!(retry.body, invite.body);
        assert!(
            matches!(
                verify(&iss, retry, header, "s3cret"),
                Verification::Ok { nc: Some(1) }
            ),
            "{status} {alg:?}: the server accepts the credentials"
        );
        assert!(
            matches!(&events[..], [
                DialogEvent::AuthChallenge { status: st, realm, algorithm, method: Method::Invite, stale: false },
                DialogEvent::AuthRetry { method: Method::Invite, cseq: 2 },
            ] if *st == status && realm == "carrier.example" && algorithm == alg.as_str()),
            "{events:?}"
        );
        // The answer to the retry confirms the call.
        let mut ok = response_to(retry, StatusCode::OK, None);
        ok.add_to_tag("srv");
        ok.headers.push(HeaderName::Contact, "<sip:b@192.0.2.9>");
        s.handle_response(now, ok);
        assert!(s.is_confirmed(), "{status} {alg:?}: confirmed");
    }
}

#[test]
fn a_second_challenge_for_the_realm_fails_and_a_stale_one_is_retried() {
    // Whether the second challenge says stale=true.
    for stale in [false, true] {
        let now = Instant::now();
        let mut s = session(Some(Credentials::new("alice", "wrong")));
        let (sent, _) = drain(&mut s);
        let iss = issuer(Algorithm::Md5);
        s.handle_response(
            now,
            challenge(&sent[0], 401, &[iss.issue(NOW_UNIX, [1; 8])]),
        );
        let (sent, _) = drain(&mut s);
        assert_eq!(sent.len(), 1);
        assert_eq!(
            verify(&iss, &sent[0], AuthHeader::Www, "right"),
            Verification::BadResponse
        );
        let mut again = iss.issue(NOW_UNIX, [2; 8]);
        again.stale = stale;
        s.handle_response(now, challenge(&sent[0], 401, &[again]));
        let (more, events) = drain(&mut s);
        if stale {
            assert_eq!(more.len(), 1, "a stale nonce is retried");
            assert_eq!(cseq(&more[0]), 3);
            // A third challenge: the retries are used up (MAX_AUTH_RETRIES = 2).
            let mut third = iss.issue(NOW_UNIX, [3; 8]);
            third.stale = true;
            s.handle_response(now, challenge(&more[0], 401, &[third]));
            let (none, events) = drain(&mut s);
            assert!(none.is_empty(), "no third retry: {none:?}");
            assert!(events.iter().any(|e| matches!(e, DialogEvent::AuthFailed { reason, .. } if reason.contains("retries"))), "{events:?}");
        } else {
            assert!(more.is_empty(), "no loop: {more:?}");
            assert!(
                events.iter().any(|e| matches!(e, DialogEvent::AuthFailed { method: Method::Invite, status: 401, reason } if reason.contains("rejected"))),
                "{events:?}"
            );
            assert!(
                events.contains(&DialogEvent::Terminated {
                    reason: EndReason::Rejected(401)
                }),
                "{events:?}"
            );
        }
        assert_eq!(MAX_AUTH_RETRIES, 2);
    }
}

#[test]
fn without_credentials_a_challenge_ends_the_call_with_its_status() {
    for status in [401u16, 407] {
        let now = Instant::now();
        let mut s = session(None);
        let (sent, _) = drain(&mut s);
        let iss = issuer(Algorithm::Md5);
        s.handle_response(
            now,
            challenge(&sent[0], status, &[iss.issue(NOW_UNIX, [1; 8])]),
        );
        let (more, events) = drain(&mut s);
        assert!(more.is_empty());
        assert!(
            events
                .iter()
                .any(|e| matches!(e, DialogEvent::AuthChallenge { .. }))
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, DialogEvent::AuthFailed { .. }))
        );
        assert_eq!(
            events.last(),
            Some(&DialogEvent::Terminated {
                reason: EndReason::Rejected(status)
            })
        );
    }
}

/// A confirmed session (INVITE answered without challenge).
fn confirmed() -> InviteSession {
    let now = Instant::now();
    let mut s = session(Some(Credentials::new("alice", "s3cret")));
    let (sent, _) = drain(&mut s);
    let mut ok = response_to(&sent[0], StatusCode::OK, None);
    ok.add_to_tag("srv");
    ok.headers.push(HeaderName::Contact, "<sip:b@192.0.2.9>");
    s.handle_response(now, ok);
    drain(&mut s);
    assert!(s.is_confirmed());
    s
}

#[test]
fn in_dialog_requests_are_answered_once_with_a_new_cseq() {
    // BYE (the session has ended when its 401 comes) and re-INVITE.
    for method in [Method::Bye, Method::Invite] {
        for status in [401u16, 407] {
            let now = Instant::now();
            let mut s = confirmed();
            match method {
                Method::Bye => s.bye(now).expect("bye"),
                _ => s
                    .reinvite(now, Bytes::from_static(b"v=0\r\n"))
                    .expect("reinvite"),
            }
            let (sent, _) = drain(&mut s);
            let req = sent
                .iter()
                .find(|r| r.method == method)
                .expect("sent")
                .clone();
            let iss = issuer(Algorithm::Sha256);
            s.handle_response(now, challenge(&req, status, &[iss.issue(NOW_UNIX, [4; 8])]));
            let (retry, events) = drain(&mut s);
            assert_eq!(retry.len(), 1, "{method:?} {status}: one retry");
            assert_eq!(retry[0].method, method);
            assert_eq!(cseq(&retry[0]), cseq(&req) + 1);
            assert_ne!(branch(&retry[0]), branch(&req));
            assert_eq!(retry[0].headers.to().expect("to").tag(), Some("srv"));
            let header = if status == 401 {
                AuthHeader::Www
            } else {
                AuthHeader::Proxy
            };
            assert!(matches!(
                verify(&iss, &retry[0], header, "s3cret"),
                Verification::Ok { .. }
            ));
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, DialogEvent::AuthRetry { method: m, .. } if *m == method))
            );
            // The same realm again: no second retry.
            s.handle_response(
                now,
                challenge(&retry[0], status, &[iss.issue(NOW_UNIX, [5; 8])]),
            );
            let (none, events) = drain(&mut s);
            assert!(none.is_empty(), "{method:?}: no loop");
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, DialogEvent::AuthFailed { .. }))
            );
            if method == Method::Invite {
                // The re-INVITE retry's final answer is reported as a rejection.
                assert!(
                    events.contains(&DialogEvent::ReInviteRejected { status }),
                    "{events:?}"
                );
                assert!(s.is_confirmed());
            }
        }
    }
}

#[test]
fn a_challenge_after_cancel_is_not_answered() {
    let now = Instant::now();
    let mut s = session(Some(Credentials::new("alice", "s3cret")));
    let (sent, _) = drain(&mut s);
    s.cancel(now).expect("cancel");
    drain(&mut s);
    let iss = issuer(Algorithm::Md5);
    s.handle_response(
        now,
        challenge(&sent[0], 401, &[iss.issue(NOW_UNIX, [1; 8])]),
    );
    let (more, events) = drain(&mut s);
    assert!(more.is_empty());
    assert!(events.contains(&DialogEvent::Terminated {
        reason: EndReason::Cancelled
    }));
}

#[test]
fn retarget_keeps_call_id_and_from_tag_and_takes_the_next_cseq() {
    let now = Instant::now();
    let mut s = session(None);
    let (sent, _) = drain(&mut s);
    let first = sent[0].clone();
    let mut next = params();
    next.request_uri = Uri::parse("sip:+15551234@198.51.100.7:5070").expect("uri");
    next.to = na("<sip:+15551234@198.51.100.7:5070>");
    next.routes = vec![na("<sip:198.51.100.1;lr>")];
    let config = DialogConfig {
        via_host: sip::message::Host::Ipv4("203.0.113.9".parse().expect("ip")),
        via_port: Some(5099),
        ..DialogConfig::default()
    };
    s.retarget(
        &config,
        &next,
        &[(HeaderName::Other("X-Trunk".into()), "b".into())],
    )
    .expect("retarget while calling");
    let (sent, _) = drain(&mut s);
    assert_eq!(sent.len(), 1);
    let second = &sent[0];
    assert_eq!(second.uri.to_string(), "sip:+15551234@198.51.100.7:5070");
    assert_eq!(cseq(second), cseq(&first) + 1);
    assert_ne!(branch(second), branch(&first));
    assert_eq!(
        second.headers.call_id().expect("call-id"),
        first.headers.call_id().expect("call-id")
    );
    assert_eq!(second.headers.from().expect("from").tag(), Some("ftag"));
    assert_eq!(second.headers.routes().expect("routes").len(), 1);
    let via = &second.headers.vias().expect("via")[0];
    assert_eq!(via.host.to_string(), "203.0.113.9");
    assert!(
        second
            .headers
            .get(&HeaderName::Other("X-Trunk".into()))
            .is_some()
    );
    // A response to the first INVITE no longer concerns the session.
    let mut late = response_to(&first, StatusCode::OK, None);
    late.add_to_tag("old");
    late.headers
        .push(HeaderName::Contact, "<sip:old@192.0.2.9>");
    s.handle_response(now, late);
    assert!(!s.is_confirmed());
    // The second target answers.
    let mut ok = response_to(second, StatusCode::OK, None);
    ok.add_to_tag("new");
    ok.headers.push(HeaderName::Contact, "<sip:b@198.51.100.7>");
    s.handle_response(now, ok);
    assert!(s.is_confirmed());
    // Not once confirmed.
    assert!(s.retarget(&config, &next, &[]).is_err());
}
