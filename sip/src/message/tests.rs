//! Unit tests of the codec: framing, folding, names, typed headers, printing, responses.

use bytes::{Bytes, BytesMut};

use super::validate::{ValidateConfig, reply_to_unparseable, validate_request};
use super::*;

fn parse(s: &str) -> Result<Message, ParseError> {
    Message::parse(Bytes::copy_from_slice(s.as_bytes()))
}

fn request(s: &str) -> Request {
    match parse(s).unwrap_or_else(|e| panic!("parse: {e}")) {
        Message::Request(r) => r,
        Message::Response(_) => panic!("expected a request"),
    }
}

const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP a.example.com;branch=z9hG4bKa1;rport, SIP/2.0/TCP b.example.com:5070;branch=z9hG4bKb2\r\n\
Via: SIP/2.0/UDP c.example.com;branch=z9hG4bKc3;received=192.0.2.1\r\n\
Max-Forwards: 70\r\n\
f: \"Alice, A.\" <sip:alice@example.com>;tag=a1\r\n\
t: <sip:bob@example.com>\r\n\
i: call-1@example.com\r\n\
CSeq: 314 INVITE\r\n\
m: <sip:alice@192.0.2.1:5060>;expires=60;q=0.5, \"B\" <sip:a2@192.0.2.2>\r\n\
X-Custom:   some  value  \r\n\
c: application/sdp\r\n\
l: 4\r\n\
\r\n\
v=0\r\n";

#[test]
fn parses_compact_forms_and_comma_joined_vias_in_order() {
    let r = request(INVITE);
    assert_eq!(r.method, Method::Invite);
    let vias = r.headers.vias().expect("vias");
    let hosts: Vec<String> = vias.iter().map(Via::sent_by).collect();
    assert_eq!(
        hosts,
        ["a.example.com", "b.example.com:5070", "c.example.com"]
    );
    assert_eq!(vias[0].rport(), Some(None));
    assert_eq!(vias[2].received(), Some("192.0.2.1"));
    assert_eq!(
        r.headers.top_via().expect("top").branch(),
        Some("z9hG4bKa1")
    );
    let from = r.headers.from().expect("from");
    assert_eq!(from.display.as_deref(), Some("Alice, A."));
    assert_eq!(from.tag(), Some("a1"));
    assert_eq!(r.headers.to().expect("to").tag(), None);
    assert_eq!(r.headers.call_id(), Ok("call-1@example.com"));
    assert_eq!(
        r.headers.cseq(),
        Ok(CSeq {
            seq: 314,
            method: Method::Invite
        })
    );
    let contacts = r.headers.contacts().expect("contacts");
    assert_eq!(contacts.len(), 2);
    assert_eq!(contacts[0].expires(), Some(60));
    assert_eq!(contacts[1].display.as_deref(), Some("B"));
    assert_eq!(r.headers.max_forwards(), Ok(Some(70)));
    assert_eq!(r.headers.content_length(), Ok(Some(4)));
    assert_eq!(&r.body[..], b"v=0\r");
    assert_eq!(
        r.headers
            .get(&HeaderName::Other("x-custom".into()))
            .map(|v| &v[..]),
        Some(&b"some  value"[..])
    );
}

#[test]
fn header_values_and_body_are_slices_of_the_datagram() {
    let data = Bytes::copy_from_slice(INVITE.as_bytes());
    let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
    let Message::Request(r) = Message::parse(data.clone()).expect("parses") else {
        panic!("request")
    };
    for h in r.headers.iter() {
        assert!(
            range.contains(&(h.value.as_ptr() as usize)),
            "{:?} copied",
            h.name
        );
    }
    assert!(range.contains(&(r.body.as_ptr() as usize)));
}

#[test]
fn folded_lines_unfold_to_single_spaces() {
    let r = request(
        "OPTIONS sip:a@b SIP/2.0\r\nSubject: one\r\n   two\r\n\tthree\r\nVia: SIP/2.0/UDP h\r\n ;branch=z9hG4bKx\r\n\r\n",
    );
    assert_eq!(
        r.headers.get(&HeaderName::Subject).map(|v| &v[..]),
        Some(&b"one two three"[..])
    );
    assert_eq!(r.headers.top_via().expect("via").branch(), Some("z9hG4bKx"));
}

#[test]
fn header_names_match_case_insensitively_and_keep_their_spelling() {
    let r = request("OPTIONS sip:a@b SIP/2.0\r\ncall-id: x\r\nCONTENT-LENGTH : 0\r\n\r\n");
    assert_eq!(r.headers.call_id(), Ok("x"));
    let printed = r.to_bytes();
    assert_eq!(
        &printed[..],
        b"OPTIONS sip:a@b SIP/2.0\r\ncall-id: x\r\nCONTENT-LENGTH: 0\r\n\r\n"
    );
}

#[test]
fn every_known_name_and_compact_form_maps_to_its_variant() {
    let names = [
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Diversion",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "In-Reply-To",
        "Max-Forwards",
        "MIME-Version",
        "Min-Expires",
        "Min-SE",
        "Organization",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Priority",
        "Privacy",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Reason",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "Server",
        "Session-Expires",
        "Subject",
        "Subscription-State",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
        "Accept-Contact",
        "Reject-Contact",
        "Request-Disposition",
        "Identity",
    ];
    for n in names {
        let parsed = HeaderName::from_bytes(n.as_bytes());
        assert!(!matches!(parsed, HeaderName::Other(_)), "{n} is known");
        assert_eq!(parsed.as_str(), n);
        assert_eq!(
            HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()),
            parsed
        );
    }
    for (c, long) in [
        ("i", HeaderName::CallId),
        ("m", HeaderName::Contact),
        ("e", HeaderName::ContentEncoding),
        ("l", HeaderName::ContentLength),
        ("c", HeaderName::ContentType),
        ("f", HeaderName::From),
        ("s", HeaderName::Subject),
        ("k", HeaderName::Supported),
        ("t", HeaderName::To),
        ("v", HeaderName::Via),
        ("o", HeaderName::Event),
        ("r", HeaderName::ReferTo),
        ("b", HeaderName::ReferredBy),
        ("x", HeaderName::SessionExpires),
        ("u", HeaderName::AllowEvents),
        ("a", HeaderName::AcceptContact),
        ("j", HeaderName::RejectContact),
        ("d", HeaderName::RequestDisposition),
        ("y", HeaderName::Identity),
    ] {
        assert_eq!(HeaderName::from_bytes(c.as_bytes()), long);
        assert_eq!(
            HeaderName::from_bytes(c.to_ascii_uppercase().as_bytes()),
            long
        );
    }
    assert_eq!(
        HeaderName::from_bytes(b"X-Very-Long-Extension-Header-Name"),
        HeaderName::Other("X-Very-Long-Extension-Header-Name".into())
    );
}

#[test]
fn content_length_rules_for_datagrams() {
    // Larger than what is there.
    assert!(matches!(
        parse("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nabc"),
        Err(ParseError::ContentLengthMismatch {
            declared: 10,
            available: 3
        })
    ));
    // Missing: the rest of the datagram.
    assert_eq!(
        &request("OPTIONS sip:a@b SIP/2.0\r\n\r\nabc").body[..],
        b"abc"
    );
    // Smaller: the extra bytes are ignored.
    assert_eq!(
        &request("OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\n\r\nabc").body[..],
        b"a"
    );
    assert_eq!(
        parse("OPTIONS sip:a@b SIP/2.0\r\nl: -1\r\n\r\n"),
        Err(ParseError::BadContentLength)
    );
    assert_eq!(
        parse("OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\nl: 2\r\n\r\nab"),
        Err(ParseError::MultipleContentLength)
    );
    // Two equal values are not a conflict.
    assert_eq!(
        &request("OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 1\r\n\r\nab").body[..],
        b"a"
    );
}

#[test]
fn start_line_errors_are_specific() {
    assert_eq!(parse(""), Err(ParseError::Empty));
    assert_eq!(parse("\r\n\r\n"), Err(ParseError::Empty));
    assert_eq!(
        parse("OPTIONS sip:a@b SIP/2.0\r\n"),
        Err(ParseError::Incomplete)
    );
    assert_eq!(
        parse("OPTIONS  sip:a@b SIP/2.0\r\n\r\n"),
        Err(ParseError::BadStartLine)
    );
    assert_eq!(
        parse("OPTIONS sip:a@b SIP/2.0 \r\n\r\n"),
        Err(ParseError::BadStartLine)
    );
    assert_eq!(
        parse("OPTIONS sip:a@b HTTP/1.1\r\n\r\n"),
        Err(ParseError::BadStartLine)
    );
    assert_eq!(
        parse("OPTIONS sip:a@b SIP/3.0\r\n\r\n"),
        Err(ParseError::BadVersion("SIP/3.0".into()))
    );
    assert_eq!(
        parse("OPTIONS <sip:a@b> SIP/2.0\r\n\r\n"),
        Err(ParseError::BadRequestUri)
    );
    assert_eq!(
        parse("SIP/2.0 99 Low\r\n\r\n"),
        Err(ParseError::BadStatusCode)
    );
    assert_eq!(
        parse("SIP/2.0 700 High\r\n\r\n"),
        Err(ParseError::BadStatusCode)
    );
    assert_eq!(
        parse("SIP/2.0 2000 Long\r\n\r\n"),
        Err(ParseError::BadStatusCode)
    );
    assert_eq!(
        parse("SIP/1.0 200 OK\r\n\r\n"),
        Err(ParseError::BadVersion("SIP/1.0".into()))
    );
    assert_eq!(
        parse("OPTIONS sip:a@b SIP/2.0\r\nNo colon here\r\n\r\n"),
        Err(ParseError::BadHeaderLine)
    );
    assert_eq!(
        parse("OPTIONS sip:a@b SIP/2.0\r\n folded-first: x\r\n\r\n"),
        Err(ParseError::BadHeaderLine)
    );
    // The version literal is case-insensitive ABNF.
    assert!(parse("OPTIONS sip:a@b sip/2.0\r\n\r\n").is_ok());
}

#[test]
fn responses_keep_empty_and_utf8_reasons() {
    let Ok(Message::Response(r)) = parse("SIP/2.0 100 \r\n\r\n") else {
        panic!("response")
    };
    assert_eq!(r.status, StatusCode::TRYING);
    assert!(r.reason.is_empty());
    let Ok(Message::Response(r)) = parse("SIP/2.0 200 Ça va\r\n\r\n") else {
        panic!("response")
    };
    assert_eq!(&r.reason[..], "Ça va".as_bytes());
    assert_eq!(
        &r.to_bytes()[..],
        "SIP/2.0 200 Ça va\r\nContent-Length: 0\r\n\r\n".as_bytes()
    );
}

#[test]
fn print_replaces_or_inserts_the_right_content_length() {
    let mut r = request(INVITE);
    r.body = Bytes::from_static(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n");
    let again = Request::parse(r.to_bytes()).expect("reparses");
    assert_eq!(
        again.headers.content_length(),
        Ok(Some(r.body.len() as u32))
    );
    assert_eq!(again.body, r.body);
    r.headers.remove(&HeaderName::ContentLength);
    let printed = r.to_bytes();
    assert!(
        printed.windows(19).any(|w| w == b"Content-Length: 29\r"),
        "{printed:?}"
    );
}

#[test]
fn print_writes_compact_names_as_received() {
    let r = request(INVITE);
    let mut out = BytesMut::new();
    Message::Request(r).print(&mut out);
    let text = std::str::from_utf8(&out).expect("utf-8");
    assert!(text.starts_with("INVITE sip:bob@example.com SIP/2.0\r\nv: SIP/2.0/UDP a.example.com;branch=z9hG4bKa1;rport, "));
    assert!(text.contains("\r\nl: 4\r\n\r\nv=0\r"));
}

#[test]
fn response_to_copies_the_rfc3261_8_2_6_2_headers() {
    let r = request(INVITE);
    let mut resp = response_to(&r, StatusCode::RINGING, None);
    assert_eq!(resp.status.as_u16(), 180);
    assert_eq!(&resp.reason[..], b"Ringing");
    assert_eq!(resp.headers.vias(), r.headers.vias());
    assert_eq!(resp.headers.from(), r.headers.from());
    assert_eq!(resp.headers.to(), r.headers.to());
    assert_eq!(resp.headers.call_id(), r.headers.call_id());
    assert_eq!(resp.headers.cseq(), r.headers.cseq());
    assert_eq!(resp.headers.content_length(), Ok(Some(0)));
    assert!(resp.headers.get(&HeaderName::Contact).is_none());
    assert!(resp.add_to_tag("b7"));
    assert_eq!(resp.headers.to().expect("to").tag(), Some("b7"));
    // A second tag is never added.
    assert!(!resp.add_to_tag("other"));
    let back = Response::parse(resp.to_bytes()).expect("reparses");
    assert_eq!(back, resp);
}

#[test]
fn typed_extension_headers() {
    let r = request(
        "INVITE sip:a@b SIP/2.0\r\n\
Content-Type: multipart/mixed ; boundary=\"unique-boundary-1\"\r\n\
Require: 100rel\r\nSupported: timer, replaces\r\nk: path\r\nAllow: INVITE, ACK, BYE\r\n\
WWW-Authenticate: Digest realm=\"atlanta.com\", nonce=\"84a4cc6f\", qop=\"auth,auth-int\", algorithm=MD5\r\n\
Proxy-Authorization: Digest username=\"alice\", realm=\"x\", response=\"abc\"\r\n\
RSeq: 988789\r\nRAck: 776656 1 INVITE\r\nSession-Expires: 1800;refresher=uas\r\nMin-SE: 90\r\n\
P-Asserted-Identity: \"Cullen\" <sip:fluffy@cisco.com>, <tel:+14085264000>\r\nPrivacy: id; critical\r\n\
Diversion: <sip:+15551230000@x.example>;reason=user-busy;counter=1\r\n\
Reason: Q.850;cause=16;text=\"Normal call clearing\", SIP ;cause=200\r\n\
Retry-After: 18000 (in a meeting);duration=3600\r\nUser-Agent: Acme/1.0 (build 7)\r\nExpires: 300\r\n\r\n",
    );
    let h = &r.headers;
    let ct = h.content_type().expect("ok").expect("present");
    assert!(ct.is("Multipart", "MIXED"));
    assert_eq!(
        ct.params.get("boundary").flatten().map(unquote).as_deref(),
        Some("unique-boundary-1")
    );
    assert_eq!(h.require(), Ok(vec!["100rel"]));
    assert_eq!(h.supported(), Ok(vec!["timer", "replaces", "path"]));
    assert!(h.supports("100rel") && h.supports("TIMER") && !h.supports("gruu"));
    assert_eq!(
        h.allow(),
        Ok(vec![Method::Invite, Method::Ack, Method::Bye])
    );
    let ch = h.www_authenticate().expect("ok").remove(0);
    assert_eq!(ch.scheme, "Digest");
    assert_eq!(ch.param("qop").as_deref(), Some("auth,auth-int"));
    assert_eq!(ch.param("algorithm").as_deref(), Some("MD5"));
    assert_eq!(
        AuthValue::parse(ch.to_string().as_bytes(), "WWW-Authenticate"),
        Ok(ch)
    );
    assert_eq!(
        h.proxy_authorization().expect("ok")[0]
            .param("username")
            .as_deref(),
        Some("alice")
    );
    assert_eq!(h.rseq(), Ok(Some(988789)));
    assert_eq!(
        h.rack(),
        Ok(Some(RAck {
            rseq: 776656,
            cseq: 1,
            method: Method::Invite
        }))
    );
    let se = h.session_expires().expect("ok").expect("present");
    assert_eq!((se.delta, se.refresher()), (1800, Some(Refresher::Uas)));
    assert_eq!(h.min_se(), Ok(Some(90)));
    let pai = h.p_asserted_identity().expect("ok");
    assert_eq!(pai.len(), 2);
    assert!(matches!(pai[1].uri, Uri::Tel(_)));
    assert_eq!(h.privacy(), Ok(vec!["id", "critical"]));
    assert_eq!(
        h.diversion().expect("ok")[0].params.get("reason"),
        Some(Some("user-busy"))
    );
    let reasons = h.reasons().expect("ok");
    assert_eq!(reasons[0].protocol, "Q.850");
    assert_eq!(reasons[0].cause(), Some(16));
    assert_eq!(reasons[0].text().as_deref(), Some("Normal call clearing"));
    assert_eq!(reasons[1].cause(), Some(200));
    let ra = h.retry_after().expect("ok").expect("present");
    assert_eq!(
        (ra.seconds, ra.comment.as_deref()),
        (18000, Some("in a meeting"))
    );
    assert_eq!(RetryAfter::parse(ra.to_string().as_bytes()), Ok(ra));
    assert_eq!(h.user_agent().as_deref(), Some("Acme/1.0 (build 7)"));
    assert_eq!(h.expires(), Ok(Some(300)));
}

#[test]
fn malformed_typed_headers_are_errors_not_panics() {
    let r = request(
        "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.15;;,;,,\r\nFrom: \"unterminated <sip:a@b>\r\n\
To: sip:a@b?x=y\r\nCSeq: 99999999999 OPTIONS\r\nCall-ID: a b\r\nMax-Forwards: -1\r\nRAck: 1 x\r\n\
Retry-After: 5 (open\r\nContact: *, <sip:a@b>\r\n\r\n",
    );
    let h = &r.headers;
    assert!(matches!(
        h.vias(),
        Err(ParseError::BadHeader { name: "Via" })
    ));
    assert!(matches!(
        h.from(),
        Err(ParseError::BadHeader { name: "From" })
    ));
    assert!(matches!(h.to(), Err(ParseError::BadHeader { name: "To" })));
    assert!(matches!(
        h.cseq(),
        Err(ParseError::BadHeader { name: "CSeq" })
    ));
    assert!(matches!(
        h.call_id(),
        Err(ParseError::BadHeader { name: "Call-ID" })
    ));
    assert!(h.max_forwards().is_err());
    assert!(h.rack().is_err());
    assert!(h.retry_after().is_err());
    assert!(h.contacts().is_err());
    let none = request("OPTIONS sip:a@b SIP/2.0\r\n\r\n");
    assert_eq!(
        none.headers.cseq(),
        Err(ParseError::MissingHeader { name: "CSeq" })
    );
    assert_eq!(
        none.headers.top_via(),
        Err(ParseError::MissingHeader { name: "Via" })
    );
}

#[test]
fn contact_star_is_recognised() {
    let r = request("REGISTER sip:r SIP/2.0\r\nContact: *\r\nExpires: 0\r\n\r\n");
    assert!(r.headers.contact_is_star());
    assert_eq!(r.headers.contacts(), Ok(Vec::new()));
}

#[test]
fn validation_order_and_statuses() {
    let base = "OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n";
    let cfg = ValidateConfig::default();
    let check = |extra: &str, method_line: Option<&str>| {
        let mut text = base.to_owned();
        if let Some(m) = method_line {
            text = text.replacen("OPTIONS sip:a@example.com", m, 1);
        }
        text.push_str(extra);
        text.push_str("\r\n");
        validate_request(&request(&text), &cfg).map_err(|r| r.status.as_u16())
    };
    assert_eq!(check("", None), Ok(()));
    assert_eq!(check("Require: foo\r\n", None), Err(420));
    assert_eq!(check("Require: timer\r\n", None), Ok(()));
    assert_eq!(
        check("Proxy-Require: foo\r\n", None),
        Ok(()),
        "a UAS ignores Proxy-Require"
    );
    assert_eq!(check("", Some("OPTIONS tel:+15551234")), Ok(()));
    assert_eq!(check("", Some("OPTIONS mailto:a@b")), Err(416));
    assert_eq!(check("", Some("FOO sip:a@example.com")), Err(501));
    assert_eq!(check("", Some("REGISTER sip:a@example.com")), Err(405));
    assert_eq!(
        check("", Some("BYE sip:a@example.com")),
        Err(400),
        "CSeq method mismatch"
    );
    assert_eq!(
        check(
            "Content-Type: application/sdp\r\nContent-Length: 3\r\n\r\nabc",
            None
        ),
        Ok(())
    );
    assert_eq!(
        check(
            "Content-Type: image/png\r\nContent-Length: 3\r\n\r\nabc",
            None
        ),
        Err(415)
    );
    assert_eq!(check("Content-Length: 3\r\n\r\nabc", None), Err(400));
}

#[test]
fn unparseable_requests_get_400_or_505_when_salvageable() {
    let bad_version = Bytes::from_static(
        b"OPTIONS sip:a@b SIP/3.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
    );
    let err = Message::parse(bad_version.clone()).expect_err("bad version");
    let resp = reply_to_unparseable(&bad_version, &err).expect("answerable");
    assert_eq!(resp.status, StatusCode::VERSION_NOT_SUPPORTED);
    assert_eq!(resp.headers.call_id(), Ok("c"));
    // No Via: nothing to answer to.
    let no_via = Bytes::from_static(b"OPTIONS  sip:a@b SIP/2.0\r\nCall-ID: c\r\n\r\n");
    let err = Message::parse(no_via.clone()).expect_err("bad line");
    assert_eq!(reply_to_unparseable(&no_via, &err), None);
    // A response is never answered.
    let resp = Bytes::from_static(b"SIP/2.0 999 X\r\nVia: SIP/2.0/UDP h\r\n\r\n");
    let err = Message::parse(resp.clone()).expect_err("bad code");
    assert_eq!(reply_to_unparseable(&resp, &err), None);
}

#[test]
fn display_text_is_escaped_on_set_and_unescaped_on_read() {
    let mut n = NameAddr::new(Uri::parse("sip:a@b").expect("uri"));
    n.set_display_text("Say \"hi\" \\ bye");
    assert_eq!(n.to_string(), r#""Say \"hi\" \\ bye" <sip:a@b>"#);
    let back = NameAddr::parse_named(n.to_string().as_bytes(), "From").expect("parses");
    assert_eq!(back.display_text().as_deref(), Some("Say \"hi\" \\ bye"));
    assert_eq!(back, n);
}

#[test]
fn ack_is_never_answered() {
    let ack = request(
        "ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 ACK\r\nRequire: nothing\r\nContent-Type: x/y\r\nl: 1\r\n\r\nz",
    );
    assert_eq!(validate_request(&ack, &ValidateConfig::default()), Ok(()));
    let broken = Bytes::from_static(
        b"ACK sip:a@b SIP/7.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 ACK\r\n\r\n",
    );
    let err = Message::parse(broken.clone()).expect_err("bad version");
    assert_eq!(reply_to_unparseable(&broken, &err), None);
}

#[test]
fn unquoted_display_names_allow_tokens_and_utf8_but_not_delimiters() {
    let ok = NameAddr::parse_named("José  Pérez<sip:j@example.com>;tag=1".as_bytes(), "From")
        .expect("utf-8 words");
    assert_eq!(ok.display.as_deref(), Some("José  Pérez"));
    assert_eq!(
        NameAddr::parse_named(ok.to_string().as_bytes(), "From"),
        Ok(ok)
    );
    assert!(NameAddr::parse_named(b"Bell, Alexander <sip:a@b>", "From").is_err());
    assert!(NameAddr::parse_named(b"A \"B <sip:a@b>", "From").is_err());
}

#[test]
fn a_canonically_spaced_message_prints_back_byte_for_byte() {
    let wire = "INVITE sip:+14155550123@198.51.100.20:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-524287-1;rport\r\n\
Max-Forwards: 68\r\n\
Record-Route: <sip:203.0.113.5;lr;ftag=as4f2a9c01>\r\n\
To: <sip:+14155550123@carrier.example.net;user=phone>\r\n\
From: \"ACME\" <sip:+12125550199@carrier.example.net;user=phone>;tag=as4f2a9c01\r\n\
Call-ID: 3c2b8e1f@203.0.113.5\r\n\
CSeq: 102 INVITE\r\n\
P-Charging-Vector: icid-value=AyretyU0dm+6O2IrT5tAFrbHLso=\r\n\
x-weird-Case: kept as is\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 5\r\n\
\r\n\
v=0\r\n";
    let data = Bytes::copy_from_slice(wire.as_bytes());
    assert_eq!(
        Message::parse(data.clone()).expect("parses").to_bytes(),
        data
    );
}
