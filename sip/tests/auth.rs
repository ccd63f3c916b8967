//! Digest authentication: RFC test vectors, header parsing and printing, the client's choices
//! and the server's verdicts.

use std::time::Duration;

use sip::auth::{
    Algorithm, AuthError, AuthHeader, Authorization, Challenge, ChallengeOutcome,
    ChallengePreference, Credentials, DigestClient, DigestHash, NonceIssuer, ParseError, Qop,
    Secret, Verification, answer, ha1,
};

const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

fn rfc7616_challenge(algorithm: &str) -> Challenge {
    // RFC 7616 §3.9.1, the WWW-Authenticate of the example.
    Challenge::parse(&format!(
        r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}""#
    ))
    .unwrap()
}

fn mufasa() -> Credentials {
    Credentials::new("Mufasa", "Circle of Life")
}

#[test]
fn rfc7616_example_md5_response() {
    let c = rfc7616_challenge("MD5");
    let a = answer(
        &c,
        &mufasa(),
        "GET",
        "/dir/index.html",
        b"",
        RFC7616_CNONCE,
        1,
    )
    .unwrap();
    assert_eq!(a.response, "8ca523f5e9506fed4657c9700eebdbec");
    assert_eq!(a.qop, Some(Qop::Auth), "auth is preferred over auth-int");
    assert_eq!(a.nc, Some(1));
    assert_eq!(a.opaque.as_deref(), Some(RFC7616_OPAQUE));
    assert!(a.to_string().contains("nc=00000001"));
}

#[test]
fn rfc7616_example_sha256_response() {
    let c = rfc7616_challenge("SHA-256");
    let a = answer(
        &c,
        &mufasa(),
        "GET",
        "/dir/index.html",
        b"",
        RFC7616_CNONCE,
        1,
    )
    .unwrap();
    assert_eq!(
        a.response,
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );
    assert_eq!(a.algorithm, Some(Algorithm::Sha256));
    let printed = a.to_string();
    assert!(printed.contains("algorithm=SHA-256"), "{printed}");
    assert!(
        printed.contains("qop=auth,"),
        "qop is a bare token: {printed}"
    );
}

#[test]
fn rfc2617_example_md5_qop_auth_response() {
    // RFC 2617 §3.5.
    let c = Challenge::parse(
        "Digest\r\n realm=\"testrealm@host.com\",\r\n qop=\"auth,auth-int\",\r\n \
         nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\",\r\n opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
    )
    .unwrap();
    assert_eq!(c.algorithm, None);
    let creds = Credentials::new("Mufasa", "Circle Of Life");
    let a = answer(&c, &creds, "GET", "/dir/index.html", b"", "0a4f113b", 1).unwrap();
    assert_eq!(a.response, "6629fae49393a05397450978507c4ef1");
    assert_eq!(
        a.algorithm, None,
        "an absent algorithm is not added to the answer"
    );
}

fn sip_challenge(extra: &str) -> Challenge {
    Challenge::parse(&format!(
        r#"Digest realm="atlanta.com", nonce="84a4cc6f"{extra}"#
    ))
    .unwrap()
}

fn alice() -> Credentials {
    Credentials::new("alice", "secret")
}

#[test]
fn challenge_without_qop_gets_an_rfc2069_answer() {
    let a = answer(
        &sip_challenge(""),
        &alice(),
        "REGISTER",
        "sip:atlanta.com",
        b"",
        "cn",
        1,
    )
    .unwrap();
    // H(HA1 ":" nonce ":" HA2), computed independently with Python's hashlib.
    assert_eq!(a.response, "2366a6a36e3f3aad27a3d88c758d3add");
    let printed = a.to_string();
    assert_eq!((a.qop, a.nc, a.cnonce), (None, None, None));
    assert!(
        !printed.contains("nc=") && !printed.contains("cnonce"),
        "{printed}"
    );
}

#[test]
fn auth_int_hashes_the_body_when_it_is_the_only_qop() {
    let c = sip_challenge(r#", qop="auth-int""#);
    let a = answer(
        &c,
        &alice(),
        "REGISTER",
        "sip:atlanta.com",
        b"v=0\r\n",
        "0a4f113b",
        2,
    )
    .unwrap();
    assert_eq!(a.qop, Some(Qop::AuthInt));
    assert_eq!(a.response, "ec235e79a8324135ba0199f7d135e18f");
    let other_body = answer(
        &c,
        &alice(),
        "REGISTER",
        "sip:atlanta.com",
        b"v=1\r\n",
        "0a4f113b",
        2,
    )
    .unwrap();
    assert_ne!(other_body.response, a.response);
}

#[test]
fn session_and_sha512_256_algorithms_match_independent_values() {
    for (alg, expected) in [
        ("MD5-sess", "7ca75d88475a7ff23db04a3b2e13a270"),
        (
            "SHA-256-sess",
            "289afabf4db95ebd2042ec851dcff69bb922088ffd247ec17d993ada2a92dda5",
        ),
        (
            "SHA-512-256",
            "a99fa70ba3aee6db5f5d2c20669dff94a448a6f24bb58c3f4be919978b0e7caf",
        ),
    ] {
        let c = sip_challenge(&format!(r#", qop="auth", algorithm={alg}"#));
        let a = answer(
            &c,
            &alice(),
            "REGISTER",
            "sip:atlanta.com",
            b"",
            "0a4f113b",
            1,
        )
        .unwrap();
        assert_eq!(a.response, expected, "{alg}");
    }
}

#[test]
fn answer_rejects_what_it_cannot_answer() {
    let run = |c: &Challenge| answer(c, &alice(), "INVITE", "sip:bob@b.com", b"", "cn", 1);
    assert_eq!(
        run(&sip_challenge(", algorithm=SHA-1, qop=auth")),
        Err(AuthError::UnsupportedAlgorithm("SHA-1".into()))
    );
    assert_eq!(
        run(&sip_challenge(r#", qop="auth-conf""#)),
        Err(AuthError::UnsupportedQop)
    );
    assert_eq!(
        run(&sip_challenge(", algorithm=MD5-sess")),
        Err(AuthError::SessionWithoutQop)
    );
    let c = sip_challenge(", qop=auth");
    assert_eq!(
        answer(&c, &alice(), "INVITE", "sip:bob@b.com", b"", "cn", 0),
        Err(AuthError::ZeroNonceCount)
    );
    assert_eq!(
        answer(&c, &alice(), "INVITE", "sip:bob@b.com", b"", "", 1),
        Err(AuthError::EmptyCnonce)
    );
    let evil = Credentials::new("alice\r\nVia: x", "secret");
    assert_eq!(
        answer(&c, &evil, "INVITE", "sip:bob@b.com", b"", "cn", 1),
        Err(AuthError::InvalidValue("username"))
    );
}

#[test]
fn precomputed_ha1_gives_the_password_answer_and_must_match_the_hash() {
    let c = sip_challenge(", qop=auth");
    let by_password = answer(&c, &alice(), "INVITE", "sip:b@b.com", b"", "cn", 1).unwrap();
    let hex = ha1(DigestHash::Md5, "alice", "atlanta.com", "secret");
    assert_eq!(hex, "4c00389f118405a62dc666c595d7e0d8");
    let creds = Credentials {
        username: "alice".into(),
        secret: Secret::Ha1 {
            hash: DigestHash::Md5,
            hex: hex.to_uppercase(),
        },
    };
    assert_eq!(
        answer(&c, &creds, "INVITE", "sip:b@b.com", b"", "cn", 1).unwrap(),
        by_password
    );
    let sha = sip_challenge(", qop=auth, algorithm=SHA-256");
    assert_eq!(
        answer(&sha, &creds, "INVITE", "sip:b@b.com", b"", "cn", 1),
        Err(AuthError::Ha1HashMismatch {
            have: DigestHash::Md5,
            need: DigestHash::Sha256
        })
    );
    assert!(
        !format!("{creds:?}").contains("4c00"),
        "debug output redacts the HA1"
    );
}

// ---------------------------------------------------------------- parsing and printing

#[test]
fn challenge_parses_every_parameter_kind() {
    let c = Challenge::parse(
        "digest REALM=\"a \\\"quoted\\\", realm\" , Nonce=abc/def+==, qop=\"auth,auth-int\", \
         algorithm=\"md5-SESS\", opaque=\"..\", stale=TRUE, domain=\"sip:a.com sip:b.com\", \
         userhash=true, charset=UTF-8",
    )
    .unwrap();
    assert_eq!(c.realm, r#"a "quoted", realm"#);
    assert_eq!(c.nonce, "abc/def+==");
    assert_eq!(c.qop, Some(vec![Qop::Auth, Qop::AuthInt]));
    assert_eq!(c.algorithm, Some(Algorithm::Md5Sess));
    assert_eq!(c.opaque.as_deref(), Some(".."));
    assert!(c.stale && c.userhash);
    assert_eq!(c.domain.as_deref(), Some("sip:a.com sip:b.com"));
    assert_eq!(c.params, vec![("charset".to_string(), "UTF-8".to_string())]);
}

#[test]
fn stale_is_true_only_for_true() {
    assert!(!sip_challenge(", stale=false").stale);
    assert!(!sip_challenge(", stale=yes").stale);
    assert!(sip_challenge(r#", stale="true""#).stale);
}

#[test]
fn parse_errors_are_specific() {
    assert_eq!(
        Challenge::parse(r#"Digest realm="x""#),
        Err(ParseError::MissingParam("nonce"))
    );
    assert_eq!(
        Challenge::parse(r#"Digest nonce="x""#),
        Err(ParseError::MissingParam("realm"))
    );
    assert_eq!(
        Challenge::parse(r#"Basic realm="x""#),
        Err(ParseError::UnsupportedScheme("Basic".into()))
    );
    assert_eq!(Challenge::parse(""), Err(ParseError::Empty));
    assert_eq!(
        Challenge::parse_bytes(b"Digest realm=\"\xff\""),
        Err(ParseError::NotUtf8)
    );
    assert!(Challenge::parse_bytes(b"Digest realm=\"r\", nonce=n").is_ok());
    assert_eq!(
        Challenge::parse(r#"Digest realm="x", nonce="y", Nonce="z""#),
        Err(ParseError::DuplicateParam("Nonce".into()))
    );
    assert!(matches!(
        Challenge::parse(r#"Digest realm="x" nonce="y""#),
        Err(ParseError::Expected {
            expected: "`,`",
            ..
        })
    ));
    assert!(matches!(
        Challenge::parse("Digest realm=\"x\u{1}\", nonce=y"),
        Err(ParseError::ControlCharacter { .. })
    ));
    let base = r#"Digest username="u", realm="r", nonce="n", uri="sip:x", response="00""#;
    assert!(Authorization::parse(base).is_ok());
    assert_eq!(
        Authorization::parse(&format!("{base}, nc=00000000g")),
        Err(ParseError::InvalidValue { param: "nc" })
    );
    assert_eq!(
        Authorization::parse(r#"Digest username="u", realm="r", nonce="n", response="00""#),
        Err(ParseError::MissingParam("uri"))
    );
}

#[test]
fn challenge_with_escapes_survives_print_and_parse() {
    let c = Challenge {
        realm: "back\\slash \"quote\" , comma".into(),
        domain: Some("sip:a.com".into()),
        nonce: "n\u{7f}é".into(),
        opaque: Some(String::new()),
        stale: true,
        algorithm: Some(Algorithm::Other("x y".into())),
        qop: Some(vec![Qop::AuthInt, Qop::Other("future".into())]),
        userhash: true,
        params: vec![
            ("ext".into(), "a=b, c".into()),
            ("tok".into(), "plain".into()),
        ],
    };
    let printed = c.to_string();
    assert!(
        printed.starts_with(r#"Digest realm="back\\slash \"quote\" , comma""#),
        "{printed}"
    );
    assert_eq!(Challenge::parse(&printed).unwrap(), c);
}

#[test]
fn authorization_survives_print_and_parse() {
    let a = Authorization::parse(
        "Digest username=\"bob\\\\x\", realm=\"biloxi.com\", nonce=\"dcd98b\", \
         uri=\"sip:bob@biloxi.com;transport=tcp\", qop=AUTH, nc=1a, cnonce=\"0a4f113b\", \
         response=\"6629FAE49393A05397450978507C4EF1\", algorithm=SHA-256-sess, opaque=\"o\", \
         x-ext=\"v\\\"\"",
    )
    .unwrap();
    assert_eq!(a.username, "bob\\x");
    assert_eq!(a.nc, Some(0x1a));
    assert_eq!(a.qop, Some(Qop::Auth));
    assert_eq!(a.algorithm, Some(Algorithm::Sha256Sess));
    assert_eq!(a.params, vec![("x-ext".to_string(), "v\"".to_string())]);
    let printed = a.to_string();
    assert!(
        printed.contains("nc=0000001a") && printed.contains("qop=auth"),
        "{printed}"
    );
    assert_eq!(Authorization::parse(&printed).unwrap(), a);
}

#[test]
fn printing_never_emits_a_line_break() {
    let mut c = sip_challenge("");
    c.realm = "evil\r\nVia: SIP/2.0/UDP x".into();
    let printed = c.to_string();
    assert!(
        !printed.contains('\r') && !printed.contains('\n'),
        "{printed}"
    );
}

// ---------------------------------------------------------------- DigestClient

fn chal(s: &str) -> Challenge {
    Challenge::parse(s).unwrap()
}

#[test]
fn client_counts_nonce_uses_and_resets_on_a_new_nonce() {
    let mut client = DigestClient::new(alice());
    assert!(
        client
            .authorize("REGISTER", "sip:a.com", b"", "c0")
            .unwrap()
            .is_empty()
    );
    let c1 = chal(r#"Digest realm="a.com", nonce="n1", qop="auth""#);
    assert_eq!(
        client.handle_challenges(AuthHeader::Www, &[c1], &[]),
        Ok(ChallengeOutcome::Retry)
    );
    let ncs: Vec<Option<u32>> = (0..3)
        .map(|i| {
            client
                .authorize("REGISTER", "sip:a.com", b"", &format!("c{i}"))
                .unwrap()[0]
                .1
                .nc
        })
        .collect();
    assert_eq!(ncs, [Some(1), Some(2), Some(3)]);
    let sent = client
        .authorize("REGISTER", "sip:a.com", b"", "c4")
        .unwrap();
    let stale = chal(r#"Digest realm="a.com", nonce="n2", qop="auth", stale=true"#);
    let sent_auth: Vec<Authorization> = sent.into_iter().map(|(_, a)| a).collect();
    assert_eq!(
        client.handle_challenges(AuthHeader::Www, &[stale], &sent_auth),
        Ok(ChallengeOutcome::Retry),
        "a stale nonce is retried with the same credentials"
    );
    let next = client
        .authorize("REGISTER", "sip:a.com", b"", "c5")
        .unwrap();
    assert_eq!((next[0].1.nonce.as_str(), next[0].1.nc), ("n2", Some(1)));
}

#[test]
fn client_reports_rejected_credentials() {
    let mut client = DigestClient::new(alice());
    let c = chal(r#"Digest realm="a.com", nonce="n1", qop="auth""#);
    client
        .handle_challenges(AuthHeader::Www, &[c], &[])
        .unwrap();
    let sent: Vec<Authorization> = client
        .authorize("REGISTER", "sip:a.com", b"", "c")
        .unwrap()
        .into_iter()
        .map(|x| x.1)
        .collect();
    let again = chal(r#"Digest realm="a.com", nonce="n2", qop="auth""#);
    assert_eq!(
        client.handle_challenges(AuthHeader::Www, &[again], &sent),
        Ok(ChallengeOutcome::Rejected {
            realm: "a.com".into()
        })
    );
}

#[test]
fn client_takes_the_topmost_supported_challenge_by_default() {
    // RFC 8760 §2.4: the UAC uses the topmost header field it supports.
    let challenges = [
        chal(r#"Digest realm="a.com", nonce="n", qop="auth", algorithm=SHA-1"#),
        chal(r#"Digest realm="a.com", nonce="n", qop="auth", algorithm=SHA-256"#),
        chal(r#"Digest realm="a.com", nonce="n", qop="auth", algorithm=MD5"#),
    ];
    let mut client = DigestClient::new(alice());
    client
        .handle_challenges(AuthHeader::Www, &challenges, &[])
        .unwrap();
    let a = client.authorize("INVITE", "sip:b@a.com", b"", "c").unwrap();
    assert_eq!(a.len(), 1, "one answer per realm");
    assert_eq!(a[0].1.algorithm, Some(Algorithm::Sha256));
}

#[test]
fn client_with_strongest_policy_ignores_a_weak_first_challenge() {
    let challenges = [
        chal(r#"Digest realm="a.com", nonce="n", qop="auth", algorithm=MD5"#),
        chal(r#"Digest realm="a.com", nonce="n", qop="auth", algorithm=SHA-256"#),
    ];
    let mut top = DigestClient::new(alice());
    top.handle_challenges(AuthHeader::Www, &challenges, &[])
        .unwrap();
    assert_eq!(
        top.authorize("INVITE", "sip:b", b"", "c").unwrap()[0]
            .1
            .algorithm,
        Some(Algorithm::Md5)
    );
    let mut strong = DigestClient::new(alice()).with_preference(ChallengePreference::Strongest);
    strong
        .handle_challenges(AuthHeader::Www, &challenges, &[])
        .unwrap();
    assert_eq!(
        strong.authorize("INVITE", "sip:b", b"", "c").unwrap()[0]
            .1
            .algorithm,
        Some(Algorithm::Sha256)
    );
}

#[test]
fn client_answers_proxy_and_registrar_realms_with_their_own_credentials() {
    let mut client =
        DigestClient::new(alice()).with_realm("proxy.net", Credentials::new("p", "pw"));
    client
        .handle_challenges(
            AuthHeader::Proxy,
            &[chal(r#"Digest realm="proxy.net", nonce="p1", qop="auth""#)],
            &[],
        )
        .unwrap();
    client
        .handle_challenges(
            AuthHeader::Www,
            &[chal(r#"Digest realm="a.com", nonce="w1", qop="auth""#)],
            &[],
        )
        .unwrap();
    let creds = client.authorize("INVITE", "sip:b@a.com", b"", "c").unwrap();
    let summary: Vec<(AuthHeader, &str)> = creds
        .iter()
        .map(|(h, a)| (*h, a.username.as_str()))
        .collect();
    assert_eq!(
        summary,
        [(AuthHeader::Proxy, "p"), (AuthHeader::Www, "alice")]
    );
    assert_eq!(
        AuthHeader::Proxy.credentials_header(),
        "Proxy-Authorization"
    );
}

#[test]
fn client_refuses_a_realm_it_cannot_answer() {
    let mut client = DigestClient::new(alice());
    let only_sha1 = chal(r#"Digest realm="a.com", nonce="n", qop="auth", algorithm=SHA-1"#);
    assert_eq!(
        client.handle_challenges(AuthHeader::Www, &[only_sha1], &[]),
        Err(AuthError::NoUsableChallenge)
    );
    assert_eq!(
        client.handle_challenges(AuthHeader::Www, &[], &[]),
        Err(AuthError::NoUsableChallenge)
    );
}

// ---------------------------------------------------------------- NonceIssuer

const NOW: u64 = 1_764_000_000;
const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn issuer() -> NonceIssuer {
    NonceIssuer::new(KEY.to_vec(), "callplane.test").with_lifetime(Duration::from_secs(60))
}

fn client_answer(c: &Challenge, password: &str, nc: u32) -> Authorization {
    let creds = Credentials::new("alice", password);
    // The answer goes through the wire format, as it would in a real exchange.
    let a = answer(c, &creds, "REGISTER", "sip:callplane.test", b"", "cn-1", nc).unwrap();
    Authorization::parse(&a.to_string()).unwrap()
}

fn pw() -> Secret {
    Secret::Password("secret".into())
}

#[test]
fn issued_challenge_answered_by_the_client_verifies() {
    let srv = issuer();
    let c = Challenge::parse(&srv.issue(NOW, [7; 8]).to_string()).unwrap();
    assert_eq!(c.algorithm, Some(Algorithm::Sha256));
    assert_eq!(c.qop, Some(vec![Qop::Auth]));
    assert!(c.opaque.is_some());
    let a = client_answer(&c, "secret", 1);
    assert_eq!(
        srv.verify(NOW + 5, &a, "REGISTER", b"", &pw(), None),
        Ok(Verification::Ok { nc: Some(1) })
    );
    let stored = Secret::Ha1 {
        hash: DigestHash::Sha256,
        hex: ha1(DigestHash::Sha256, "alice", "callplane.test", "secret"),
    };
    assert_eq!(
        srv.verify(NOW, &a, "REGISTER", b"", &stored, None),
        Ok(Verification::Ok { nc: Some(1) })
    );
}

#[test]
fn every_offered_algorithm_verifies() {
    let srv = issuer();
    let all = srv.issue_all(NOW, [1; 8]);
    let algs: Vec<_> = all.iter().map(|c| c.algorithm.clone().unwrap()).collect();
    assert_eq!(algs, [Algorithm::Sha256, Algorithm::Md5]);
    for c in &all {
        let a = client_answer(c, "secret", 1);
        assert_eq!(
            srv.verify(NOW, &a, "REGISTER", b"", &pw(), None),
            Ok(Verification::Ok { nc: Some(1) })
        );
    }
}

#[test]
fn wrong_password_is_a_bad_response_even_on_an_expired_nonce() {
    let srv = issuer();
    let a = client_answer(&srv.issue(NOW, [0; 8]), "wrong", 1);
    assert_eq!(
        srv.verify(NOW, &a, "REGISTER", b"", &pw(), None),
        Ok(Verification::BadResponse)
    );
    assert_eq!(
        srv.verify(NOW + 3600, &a, "REGISTER", b"", &pw(), None),
        Ok(Verification::BadResponse),
        "stale is only reported when the response is right"
    );
    assert_eq!(
        srv.verify(NOW, &a, "INVITE", b"", &pw(), None),
        Ok(Verification::BadResponse),
        "the method is covered"
    );
}

#[test]
fn expired_nonce_with_right_password_is_stale() {
    let srv = issuer();
    let a = client_answer(&srv.issue(NOW, [0; 8]), "secret", 1);
    assert_eq!(
        srv.verify(NOW + 60, &a, "REGISTER", b"", &pw(), None),
        Ok(Verification::Ok { nc: Some(1) })
    );
    assert_eq!(
        srv.verify(NOW + 61, &a, "REGISTER", b"", &pw(), None),
        Ok(Verification::Stale)
    );
    let mut again = srv.issue(NOW + 61, [1; 8]);
    again.stale = true;
    assert!(again.to_string().contains("stale=true"));
}

#[test]
fn tampered_or_foreign_nonce_is_bad() {
    let srv = issuer();
    let c = srv.issue(NOW, [0; 8]);
    // Move the timestamp forward to stretch the nonce's life, and answer that nonce correctly.
    let mut forged = c.clone();
    let mut bytes = forged.nonce.into_bytes();
    bytes[15] = if bytes[15] == b'f' { b'0' } else { b'f' };
    forged.nonce = String::from_utf8(bytes).unwrap();
    let a = client_answer(&forged, "secret", 1);
    assert_eq!(
        srv.verify(NOW, &a, "REGISTER", b"", &pw(), None),
        Ok(Verification::BadNonce)
    );
    let other = NonceIssuer::new(b"another key".to_vec(), "callplane.test");
    let a = client_answer(&other.issue(NOW, [0; 8]), "secret", 1);
    assert_eq!(
        srv.verify(NOW, &a, "REGISTER", b"", &pw(), None),
        Ok(Verification::BadNonce)
    );
    let mut a = client_answer(&c, "secret", 1);
    a.opaque = Some("changed".into());
    assert_eq!(
        srv.verify(NOW, &a, "REGISTER", b"", &pw(), None),
        Ok(Verification::BadNonce)
    );
}

#[test]
fn nonce_count_must_increase_over_the_last_seen() {
    let srv = issuer();
    let c = srv.issue(NOW, [0; 8]);
    let a2 = client_answer(&c, "secret", 2);
    assert_eq!(
        srv.verify(NOW, &a2, "REGISTER", b"", &pw(), Some(1)),
        Ok(Verification::Ok { nc: Some(2) })
    );
    assert_eq!(
        srv.verify(NOW, &a2, "REGISTER", b"", &pw(), Some(2)),
        Ok(Verification::Replay)
    );
    assert_eq!(
        srv.verify(NOW, &a2, "REGISTER", b"", &pw(), Some(5)),
        Ok(Verification::Replay)
    );
}

#[test]
fn realm_algorithm_and_qop_are_checked() {
    let srv = issuer().with_algorithms(&[Algorithm::Sha256]);
    let c = srv.issue(NOW, [0; 8]);
    let mut wrong_realm = c.clone();
    wrong_realm.realm = "elsewhere".into();
    assert_eq!(
        srv.verify(
            NOW,
            &client_answer(&wrong_realm, "secret", 1),
            "REGISTER",
            b"",
            &pw(),
            None
        ),
        Ok(Verification::WrongRealm)
    );
    let mut md5 = c.clone();
    md5.algorithm = Some(Algorithm::Md5);
    assert_eq!(
        srv.verify(
            NOW,
            &client_answer(&md5, "secret", 1),
            "REGISTER",
            b"",
            &pw(),
            None
        ),
        Ok(Verification::BadAlgorithm)
    );
    let mut no_qop = c.clone();
    no_qop.qop = None;
    let a = client_answer(&no_qop, "secret", 1);
    assert_eq!(
        srv.verify(NOW, &a, "REGISTER", b"", &pw(), None),
        Ok(Verification::BadQop)
    );
    let lenient = issuer()
        .with_algorithms(&[Algorithm::Sha256])
        .with_rfc2069(true);
    assert_eq!(
        lenient.verify(NOW, &a, "REGISTER", b"", &pw(), None),
        Ok(Verification::Ok { nc: None })
    );
}

#[test]
fn uppercase_response_hex_is_accepted() {
    let srv = issuer();
    let mut a = client_answer(&srv.issue(NOW, [0; 8]), "secret", 1);
    a.response = a.response.to_uppercase();
    assert_eq!(
        srv.verify(NOW, &a, "REGISTER", b"", &pw(), None),
        Ok(Verification::Ok { nc: Some(1) })
    );
}

#[test]
fn same_second_challenges_differ_by_salt() {
    let srv = issuer();
    assert_ne!(srv.issue(NOW, [0; 8]).nonce, srv.issue(NOW, [1; 8]).nonce);
    assert!(
        !format!("{srv:?}").contains("0123456789"),
        "debug output hides the key"
    );
}

// ---------------------------------------------------------------- property

mod roundtrip {
    use proptest::prelude::*;
    use sip::auth::{Algorithm, Authorization, Challenge, Qop};

    /// Any text without CR/LF (which no header can carry; the printer replaces them).
    fn text() -> impl Strategy<Value = String> {
        "[^\r\n]{0,12}"
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9.!%*_+`'~-]{1,8}"
    }

    proptest! {
        #[test]
        fn printed_challenge_parses_back_equal(
            realm in text(), nonce in text(), opaque in proptest::option::of(text()),
            stale: bool, alg in proptest::option::of(text()),
            qop in proptest::option::of(proptest::collection::vec(token(), 0..3)),
            ext in proptest::collection::vec((token(), text()), 0..3),
        ) {
            let mut params: Vec<(String, String)> = Vec::new();
            for (n, v) in ext {
                let lower = n.to_ascii_lowercase();
                let known = ["realm", "domain", "nonce", "opaque", "stale", "algorithm", "qop", "userhash"];
                if !known.contains(&lower.as_str()) && !params.iter().any(|(p, _)| p.eq_ignore_ascii_case(&n)) {
                    params.push((n, v));
                }
            }
            let c = Challenge {
                realm, domain: None, nonce, opaque, stale,
                algorithm: alg.map(|a| Algorithm::from_name(&a)),
                qop: qop.map(|q| q.iter().map(|s| Qop::from_name(s)).collect()),
                userhash: false, params,
            };
            prop_assert_eq!(Challenge::parse(&c.to_string()).unwrap(), c);
        }

        #[test]
        fn printed_authorization_parses_back_equal(
            username in text(), uri in text(), response in text(), cnonce in text(),
            nc: u32, qop in token(),
        ) {
            let a = Authorization {
                username, realm: "r".into(), nonce: "n".into(), uri, response,
                algorithm: Some(Algorithm::Sha256), cnonce: Some(cnonce), opaque: None,
                qop: Some(Qop::from_name(&qop)), nc: Some(nc), userhash: false, params: Vec::new(),
            };
            prop_assert_eq!(Authorization::parse(&a.to_string()).unwrap(), a);
        }
    }
}
