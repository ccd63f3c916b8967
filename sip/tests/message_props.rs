//! Property tests: for generated requests, responses, URIs, Via and name-addr values,
//! `parse(print(x)) == x`; and arbitrary bytes never make the parser panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use sip::message::validate::{ValidateConfig, validate_request, validate_response};
use sip::message::{
    CSeq, Header, HeaderName, Headers, Host, Message, Method, NameAddr, Params, Request, Response,
    SipUri, StatusCode, TelUri, Uri, Via,
};
use sip::transport::{Framed, StreamFramer};

const CASES: u32 = 512;

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,11}"
}

/// A URI parameter name: `paramchar`s without escapes.
fn pname() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.!*_+'~-]{0,11}"
}

fn domain() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,8}){0,3}"
}

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        domain().prop_map(Host::Domain),
        any::<[u8; 4]>().prop_map(|o| Host::Ipv4(o.into())),
        any::<[u16; 8]>().prop_map(|s| Host::Ipv6(std::net::Ipv6Addr::from(s).to_string())),
    ]
}

/// A URI component with escapes: unreserved characters, user-unreserved ones and `%HH`.
fn escaped_text(extra: &'static str) -> impl Strategy<Value = String> {
    let unit = prop_oneof![
        4 => proptest::char::ranges(vec!['a'..='z', 'A'..='Z', '0'..='9'].into()).prop_map(|c| c.to_string()),
        1 => proptest::sample::select(extra.chars().collect::<Vec<_>>()).prop_map(|c| c.to_string()),
        1 => any::<u8>().prop_map(|b| format!("%{b:02X}")),
    ];
    proptest::collection::vec(unit, 1..10).prop_map(|v| v.concat())
}

fn uri_params() -> impl Strategy<Value = Params> {
    proptest::collection::vec(
        (
            pname(),
            proptest::option::of(escaped_text("-_.!~*'()[]/:&+$")),
        ),
        0..4,
    )
    .prop_map(|v| {
        let mut p = Params::new();
        for (n, val) in v {
            p.push(n, val);
        }
        p
    })
}

fn uri_headers() -> impl Strategy<Value = Params> {
    proptest::collection::vec((pname(), escaped_text("-_.!~*'()[]/?:+$")), 0..3).prop_map(|v| {
        let mut p = Params::new();
        for (n, val) in v {
            p.push(n, Some(val));
        }
        p
    })
}

fn sip_uri() -> impl Strategy<Value = SipUri> {
    (
        any::<bool>(),
        proptest::option::of(escaped_text("-_.!~*'()&=+$,;?/")),
        proptest::option::of(escaped_text("-_.!~*'()&=+$,")),
        host(),
        proptest::option::of(any::<u16>()),
        uri_params(),
        uri_headers(),
    )
        .prop_map(|(secure, user, password, host, port, params, headers)| {
            let password = if user.is_some() { password } else { None };
            SipUri {
                secure,
                user,
                password,
                host,
                port,
                params,
                headers,
            }
        })
}

fn uri() -> impl Strategy<Value = Uri> {
    prop_oneof![
        4 => sip_uri().prop_map(Uri::Sip),
        1 => ("\\+?[0-9][0-9().-]{0,14}", uri_params())
            .prop_map(|(number, params)| Uri::Tel(TelUri { number, params })),
        1 => ("(urn|mailto|http|im)", "[a-zA-Z0-9:/._@-]{1,20}")
            .prop_map(|(scheme, text)| Uri::Other { scheme, text }),
    ]
}

/// `;name[=value]` header params: token or quoted-string values.
fn header_params() -> impl Strategy<Value = Params> {
    let value = prop_oneof![
        token(),
        "[ a-zA-Z0-9,;:<>@=]{0,10}".prop_map(|s| format!("\"{s}\""))
    ];
    proptest::collection::vec((token(), proptest::option::of(value)), 0..4).prop_map(|v| {
        let mut p = Params::new();
        for (n, val) in v {
            p.push(n, val);
        }
        p
    })
}

fn via() -> impl Strategy<Value = Via> {
    (
        prop_oneof![
            Just("UDP".to_owned()),
            Just("TCP".to_owned()),
            Just("TLS".to_owned()),
            "[A-Z]{2,6}"
        ],
        host(),
        proptest::option::of(any::<u16>()),
        "[a-zA-Z0-9.-]{1,16}",
        header_params(),
    )
        .prop_map(|(transport, host, port, branch, extra)| {
            let mut v = Via::new(&transport, host, port, &format!("z9hG4bK{branch}"));
            for (n, val) in extra.iter() {
                v.params.push(n, val);
            }
            v
        })
}

fn name_addr() -> impl Strategy<Value = NameAddr> {
    (
        proptest::option::of("[ a-zA-Z0-9,;:<>@=]{0,12}|[a-z]{1,5}\\\\\"[a-z]{0,3}"),
        uri(),
        header_params(),
    )
        .prop_map(|(display, uri, params)| NameAddr {
            display,
            uri,
            params,
        })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Ack),
        Just(Method::Bye),
        Just(Method::Cancel),
        Just(Method::Options),
        Just(Method::Register),
        Just(Method::Prack),
        Just(Method::Update),
        "[A-Z]{3,10}".prop_map(|t| Method::from_token(t.as_bytes()).expect("token")),
    ]
}

fn header_value() -> impl Strategy<Value = Bytes> {
    // No CR/LF, no leading or trailing whitespace (it is trimmed on parse).
    "([!-~\u{80}-\u{10ff}]([ -~\u{80}-\u{10ff}]{0,40}[!-~])?)?".prop_map(Bytes::from)
}

fn header() -> impl Strategy<Value = Header> {
    let known = proptest::sample::select(vec![
        (HeaderName::Via, Some("v")),
        (HeaderName::From, Some("f")),
        (HeaderName::To, Some("t")),
        (HeaderName::CallId, Some("i")),
        (HeaderName::CSeq, None),
        (HeaderName::Contact, Some("m")),
        (HeaderName::Route, None),
        (HeaderName::Subject, Some("s")),
        (HeaderName::MaxForwards, None),
        (HeaderName::UserAgent, None),
    ]);
    prop_oneof![
        (known, any::<bool>(), header_value()).prop_map(|((name, compact), use_compact, value)| {
            let raw_name = compact
                .filter(|_| use_compact)
                .map(|c: &'static str| Bytes::from_static(c.as_bytes()));
            Header {
                name,
                raw_name,
                value,
            }
        }),
        ("X-[A-Za-z0-9-]{1,12}", header_value()).prop_map(|(n, value)| Header {
            name: HeaderName::Other(n),
            raw_name: None,
            value
        }),
    ]
}

fn headers_and_body() -> impl Strategy<Value = (Headers, Bytes)> {
    (
        proptest::collection::vec(header(), 0..12),
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(hs, body, at)| {
            let mut headers = Headers::new();
            // Content-Length somewhere in the list, with the right value, as print writes it.
            let pos = at.index(hs.len() + 1);
            for (i, h) in hs.into_iter().enumerate() {
                if i == pos {
                    headers.push(HeaderName::ContentLength, body.len().to_string());
                }
                headers.push_header(h);
            }
            if headers.get(&HeaderName::ContentLength).is_none() {
                headers.push(HeaderName::ContentLength, body.len().to_string());
            }
            (headers, Bytes::from(body))
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        // 512 by default; `PROPTEST_CASES=100000` for a longer soak.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn uri_print_parse_round_trips(u in uri()) {
        let text = u.to_string();
        prop_assert_eq!(Uri::parse(&text), Ok(u.clone()), "{}", text);
        let mut printed = BytesMut::new();
        u.print(&mut printed);
        prop_assert_eq!(&printed[..], text.as_bytes(), "print and Display agree");
        prop_assert!(u.equivalent(&u));
    }

    #[test]
    fn uri_equivalence_is_symmetric(a in uri(), b in uri()) {
        prop_assert_eq!(a.equivalent(&b), b.equivalent(&a));
    }

    #[test]
    fn uri_equivalence_ignores_host_case_param_order_and_unreserved_escapes(u in sip_uri()) {
        let mut v = u.clone();
        if let Host::Domain(d) = &v.host {
            v.host = Host::Domain(d.to_ascii_uppercase());
        }
        let mut reordered = Params::new();
        let mut seen = Vec::new();
        // Keep only first occurrences (duplicates are not valid URIs), reversed.
        for (n, val) in u.params.iter() {
            if !seen.iter().any(|s: &String| s.eq_ignore_ascii_case(n)) {
                seen.push(n.to_owned());
            }
            let _ = val;
        }
        for n in seen.iter().rev() {
            reordered.push(n.as_str(), u.params.get(n).flatten());
        }
        v.params = reordered;
        // Escape the first unreserved letter of the user part.
        if let Some(user) = &v.user
            && let Some(i) = user.find(|c: char| c.is_ascii_alphabetic())
            && !user[..i].ends_with('%')
            && !user[..i.saturating_sub(1)].ends_with('%')
        {
            let c = user.as_bytes()[i];
            v.user = Some(format!("{}%{:02X}{}", &user[..i], c, &user[i + 1..]));
        }
        prop_assert!(u.equivalent(&v), "{} vs {}", u, v);
        prop_assert!(v.equivalent(&u), "{} vs {}", v, u);
    }

    #[test]
    fn via_print_parse_round_trips(v in via()) {
        let text = v.to_string();
        prop_assert_eq!(&v.to_bytes()[..], text.as_bytes(), "print and Display agree");
        prop_assert_eq!(Via::parse(text.as_bytes()), Ok(v), "{}", text);
    }

    #[test]
    fn name_addr_print_parse_round_trips(n in name_addr()) {
        let text = n.to_string();
        prop_assert_eq!(&n.to_bytes()[..], text.as_bytes(), "print and Display agree");
        prop_assert_eq!(NameAddr::parse_named(text.as_bytes(), "To"), Ok(n), "{}", text);
    }

    #[test]
    fn cseq_print_parse_round_trips(seq in any::<u32>(), m in method()) {
        let c = CSeq { seq, method: m };
        prop_assert_eq!(CSeq::parse(c.to_string().as_bytes()), Ok(c));
    }

    #[test]
    fn request_print_parse_round_trips(m in method(), u in uri(), (headers, body) in headers_and_body()) {
        let req = Request { method: m, uri: u, headers, body };
        let printed = req.to_bytes();
        prop_assert_eq!(Request::parse(printed.clone()), Ok(req), "{:?}", printed);
    }

    #[test]
    fn response_print_parse_round_trips(code in 100u16..700, reason in "([!-~]([ -~]{0,20}[!-~])?)?", (headers, body) in headers_and_body()) {
        let status = StatusCode::new(code).expect("in range");
        let resp = Response { status, reason: Bytes::from(reason), headers, body };
        let mut out = BytesMut::new();
        resp.print(&mut out);
        prop_assert_eq!(Response::parse(out.freeze()), Ok(resp));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(m) = Message::parse(Bytes::from(data)) {
            exercise(&m);
        }
    }

    #[test]
    fn arbitrary_header_values_never_panic_any_typed_accessor(
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no line breaks", |b| *b != b'\r' && *b != b'\n'), 0..80), 1..6),
    ) {
        let names = ["Via", "From", "To", "Contact", "CSeq", "Call-ID", "Max-Forwards", "Content-Type", "Require",
            "WWW-Authenticate", "RAck", "Session-Expires", "Reason", "Retry-After", "Privacy", "Diversion"];
        for name in names {
            let mut text = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
            for v in &values {
                text.extend_from_slice(name.as_bytes());
                text.extend_from_slice(b": ");
                text.extend_from_slice(v);
                text.extend_from_slice(b"\r\n");
            }
            text.extend_from_slice(b"\r\n");
            if let Ok(m) = Message::parse(Bytes::from(text)) {
                exercise(&m);
            }
        }
    }

    #[test]
    fn stream_framer_gives_the_same_messages_however_the_bytes_are_chunked(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 1..5),
        cuts in proptest::collection::vec(1usize..40, 1..30),
    ) {
        let mut wire = Vec::new();
        for body in &bodies {
            wire.extend_from_slice(b"\r\n\r\n");
            let req = Request {
                method: Method::Message,
                uri: Uri::parse("sip:a@b").expect("uri"),
                headers: Headers::new(),
                body: Bytes::from(body.clone()),
            };
            wire.extend_from_slice(&req.to_bytes());
        }
        let mut framer = StreamFramer::default();
        let mut got = Vec::new();
        let mut pings = 0;
        let mut pos = 0;
        let mut i = 0;
        while pos < wire.len() {
            let n = cuts[i % cuts.len()].min(wire.len() - pos);
            framer.push(&wire[pos..pos + n]);
            pos += n;
            i += 1;
            while let Some(f) = framer.poll().expect("frames") {
                match f {
                    Framed::Message(m) => got.push(m.body().clone()),
                    Framed::Ping => pings += 1,
                    Framed::Pong => {}
                    Framed::Invalid { error, .. } => prop_assert!(false, "invalid: {error}"),
                }
            }
        }
        let want: Vec<Bytes> = bodies.into_iter().map(Bytes::from).collect();
        prop_assert_eq!(got, want);
        prop_assert!(pings <= 5);
    }

    #[test]
    fn mutated_valid_message_never_panics(pos in 0usize..400, byte in any::<u8>(), cut in 0usize..420) {
        let base = b"INVITE sip:bob@example.com;transport=tcp SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1;rport\r\nFrom: \"A \\\"B\\\"\" <sip:a@example.com>;tag=1\r\nTo: <tel:+1-555-0100;phone-context=x>\r\nCall-ID: c@h\r\nCSeq: 1 INVITE\r\nContact: <sip:a@1.2.3.4>;expires=60, *\r\nContent-Length: 4\r\n\r\nbody";
        let mut data = base.to_vec();
        let pos = pos % data.len();
        data[pos] = byte;
        data.truncate(cut.min(data.len()));
        if let Ok(m) = Message::parse(Bytes::from(data)) {
            exercise(&m);
        }
    }
}

/// Every typed accessor and the validators, for the no-panic properties.
fn exercise(m: &Message) {
    let h = m.headers();
    let _ = (
        h.top_via(),
        h.vias(),
        h.from(),
        h.to(),
        h.cseq(),
        h.call_id(),
        h.contacts(),
        h.max_forwards(),
    );
    let _ = (
        h.routes(),
        h.record_routes(),
        h.content_length(),
        h.expires(),
        h.content_type(),
        h.require(),
    );
    let _ = (
        h.supported(),
        h.allow(),
        h.www_authenticate(),
        h.authorization(),
        h.rseq(),
        h.rack(),
    );
    let _ = (
        h.session_expires(),
        h.min_se(),
        h.p_asserted_identity(),
        h.privacy(),
        h.diversion(),
    );
    let _ = (
        h.reasons(),
        h.retry_after(),
        h.user_agent(),
        h.contact_is_star(),
    );
    match m {
        Message::Request(r) => {
            let _ = validate_request(r, &ValidateConfig::default());
        }
        Message::Response(r) => {
            let _ = validate_response(r);
        }
    }
    let _ = m.to_bytes();
}
