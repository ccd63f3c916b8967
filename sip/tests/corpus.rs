//! Golden corpus: every RFC 4475 and RFC 5118 torture message, checked against the verdict of
//! its MANIFEST.tsv line.
//!
//! - VALID messages parse, survive `parse(print(parse(x))) == parse(x)`, and their important
//!   headers parse through the typed accessors.
//! - INVALID messages are refused: either `Message::parse` fails with the specific
//!   `ParseError` listed below (and, for a request, `reply_to_unparseable` builds the 400/505),
//!   or the parse succeeds and `validate_request` answers with the status listed below.
//! - WELLFORMED-SEMANTIC messages parse, and the stateless validation gives the status the RFC
//!   asks for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sip::message::validate::{
    ValidateConfig, reply_to_unparseable, validate_request, validate_response,
};
use sip::message::{HeaderName, Host, Message, Method, ParseError, Uri};

/// What the codec must do with one file.
#[derive(Debug)]
enum Expect {
    /// Parses, round-trips; validation (registrar configuration) gives this status, or `None`
    /// for "accepted".
    Valid(Option<u16>),
    /// `Message::parse` fails with this error; for requests the salvaged reply has this status
    /// (`None`: a response, dropped).
    ParseErr(fn(&ParseError) -> bool, Option<u16>),
    /// Parses; `validate_request` answers this status.
    Reject(u16),
    /// A response that parses but fails `validate_response` (dropped).
    DropResponse,
    /// INVALID per the RFC, but the RFC allows a liberal parser to accept it ("liberal-ok"),
    /// and we do: parses and validates as `Valid`. The reason is printed by the test.
    Liberal(&'static str),
}

fn expectations() -> BTreeMap<&'static str, Expect> {
    use Expect::*;
    let mut m = BTreeMap::new();
    // RFC 4475 §3.1.1: valid messages.
    m.insert("wsinv.dat", Valid(None));
    // An extension method nobody implements: 501 (RFC 3261 §8.2.1).
    m.insert("intmeth.dat", Valid(Some(501)));
    m.insert("esc01.dat", Valid(None));
    m.insert("escnull.dat", Valid(None));
    // RFC 4475 §3.1.1.5: "RE%47IST%45R" is not REGISTER: 501.
    m.insert("esc02.dat", Valid(Some(501)));
    m.insert("lwsdisp.dat", Valid(None));
    m.insert("longreq.dat", Valid(None));
    m.insert("dblreq.dat", Valid(None));
    m.insert("semiuri.dat", Valid(None));
    m.insert("transports.dat", Valid(None));
    m.insert("mpart01.dat", Valid(None));
    m.insert("unreason.dat", Valid(None));
    m.insert("noreason.dat", Valid(None));
    m.insert("inv2543.dat", Valid(None));
    // RFC 4475 §3.1.2: invalid messages.
    m.insert("badinv01.dat", Reject(400));
    m.insert(
        "clerr.dat",
        ParseErr(
            |e| matches!(e, ParseError::ContentLengthMismatch { declared: 9999, .. }),
            Some(400),
        ),
    );
    m.insert(
        "ncl.dat",
        ParseErr(|e| matches!(e, ParseError::BadContentLength), Some(400)),
    );
    m.insert("scalar02.dat", Reject(400));
    m.insert("scalarlg.dat", DropResponse);
    m.insert("quotbal.dat", Reject(400));
    m.insert(
        "ltgtruri.dat",
        ParseErr(|e| matches!(e, ParseError::BadRequestUri), Some(400)),
    );
    m.insert(
        "lwsruri.dat",
        ParseErr(|e| matches!(e, ParseError::BadRequestUri), Some(400)),
    );
    m.insert(
        "lwsstart.dat",
        ParseErr(|e| matches!(e, ParseError::BadStartLine), Some(400)),
    );
    m.insert(
        "trws.dat",
        ParseErr(|e| matches!(e, ParseError::BadStartLine), Some(400)),
    );
    m.insert("escruri.dat", Reject(400));
    m.insert(
        "baddate.dat",
        Liberal("the Date header is never interpreted, so its time zone cannot matter"),
    );
    m.insert("regbadct.dat", Reject(400));
    m.insert("badaspec.dat", Reject(400));
    m.insert("baddn.dat", Reject(400));
    m.insert(
        "badvers.dat",
        ParseErr(
            |e| matches!(e, ParseError::BadVersion(v) if v == "SIP/7.0"),
            Some(505),
        ),
    );
    m.insert("mismatch01.dat", Reject(400));
    m.insert("mismatch02.dat", Reject(501));
    m.insert(
        "bigcode.dat",
        ParseErr(|e| matches!(e, ParseError::BadStatusCode), None),
    );
    // RFC 4475 §3.2, §3.3: well-formed, semantically refused.
    m.insert("badbranch.dat", Reject(400));
    m.insert("insuf.dat", Reject(400));
    m.insert("unkscm.dat", Reject(416));
    m.insert("novelsc.dat", Reject(416));
    m.insert("unksm2.dat", Reject(400));
    m.insert("bext01.dat", Reject(420));
    m.insert("invut.dat", Reject(415));
    m.insert("regaut01.dat", Valid(None));
    m.insert("multi01.dat", Reject(400));
    m.insert(
        "mcl01.dat",
        ParseErr(
            |e| matches!(e, ParseError::MultipleContentLength),
            Some(400),
        ),
    );
    m.insert("bcast.dat", Valid(None));
    m.insert("zeromf.dat", Valid(None));
    m.insert("cparam01.dat", Valid(None));
    m.insert("cparam02.dat", Valid(None));
    m.insert("regescrt.dat", Valid(None));
    m.insert("sdp01.dat", Reject(406));
    // RFC 5118.
    m.insert("ipv6-good", Valid(None));
    m.insert(
        "ipv6-bad",
        ParseErr(|e| matches!(e, ParseError::BadRequestUri), Some(400)),
    );
    m.insert("port-ambiguous", Valid(None));
    m.insert("port-unambiguous", Valid(None));
    m.insert("via-received-param-with-delim", Valid(None));
    m.insert("via-received-param-no-delim", Valid(None));
    m.insert("ipv6-in-sdp", Valid(None));
    m.insert("mult-ip-in-header", Valid(None));
    m.insert("mult-ip-in-sdp", Valid(None));
    m.insert("ipv4-mapped-ipv6", Valid(None));
    m.insert("ipv6-bug-abnf-3-colons", Valid(None));
    m.insert("ipv6-correct-abnf-2-colons", Valid(None));
    m
}

/// A validation configuration for a registrar-capable UAS: the corpus has REGISTER requests
/// whose expected answer (200, or the 400 of §3.3.4) presumes the element handles REGISTER.
fn registrar() -> ValidateConfig {
    let mut cfg = ValidateConfig::default();
    cfg.methods.push(Method::Register);
    cfg
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// (file name, directory, verdict) from both manifests.
fn manifest() -> Vec<(String, PathBuf, String)> {
    let mut out = Vec::new();
    for dir in ["rfc4475", "rfc5118"] {
        let text = std::fs::read_to_string(fixtures().join(dir).join("MANIFEST.tsv"))
            .expect("manifest present");
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let cols: Vec<&str> = line.split('\t').collect();
            assert!(cols.len() >= 4, "manifest line has 4+ columns: {line}");
            out.push((cols[0].to_owned(), fixtures().join(dir), cols[3].to_owned()));
        }
    }
    out
}

/// Every corpus file on disk (manifests and checksums excluded).
fn files_on_disk() -> Vec<String> {
    let mut v = Vec::new();
    for dir in ["rfc4475", "rfc5118"] {
        for e in std::fs::read_dir(fixtures().join(dir)).expect("fixture dir") {
            let name = e
                .expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8 name");
            if name != "MANIFEST.tsv" && name != "SHA256SUMS" {
                v.push(name);
            }
        }
    }
    v.sort();
    v
}

/// The message with every Content-Length set to its body length, so that a message whose
/// Content-Length was written with leading zeros (or not at all, RFC 2543 style over UDP)
/// compares equal to its reprint, which always carries the exact length.
fn normalized(mut m: Message) -> Message {
    let len = m.body().len();
    m.headers_mut()
        .set(HeaderName::ContentLength, Bytes::from(len.to_string()));
    m
}

/// The typed accessors a transaction layer uses must all succeed on a valid message.
fn check_typed(name: &str, m: &Message) {
    let h = m.headers();
    let vias = h.vias().unwrap_or_else(|e| panic!("{name}: Via: {e}"));
    assert!(!vias.is_empty(), "{name}: at least one Via");
    h.top_via()
        .unwrap_or_else(|e| panic!("{name}: top Via: {e}"));
    h.from().unwrap_or_else(|e| panic!("{name}: From: {e}"));
    h.to().unwrap_or_else(|e| panic!("{name}: To: {e}"));
    h.call_id()
        .unwrap_or_else(|e| panic!("{name}: Call-ID: {e}"));
    let cseq = h.cseq().unwrap_or_else(|e| panic!("{name}: CSeq: {e}"));
    h.max_forwards()
        .unwrap_or_else(|e| panic!("{name}: Max-Forwards: {e}"));
    h.contacts()
        .unwrap_or_else(|e| panic!("{name}: Contact: {e}"));
    h.routes().unwrap_or_else(|e| panic!("{name}: Route: {e}"));
    h.record_routes()
        .unwrap_or_else(|e| panic!("{name}: Record-Route: {e}"));
    if let Message::Request(r) = m {
        assert_eq!(cseq.method, r.method, "{name}: CSeq method");
    }
}

fn check_valid(name: &str, data: &Bytes, status: Option<u16>) {
    let m = Message::parse(data.clone())
        .unwrap_or_else(|e| panic!("{name}: valid message refused: {e}"));
    let printed = m.to_bytes();
    let again =
        Message::parse(printed.clone()).unwrap_or_else(|e| panic!("{name}: reprint refused: {e}"));
    assert_eq!(
        normalized(again.clone()),
        normalized(m.clone()),
        "{name}: parse(print(parse(x))) == parse(x)"
    );
    assert_eq!(again.to_bytes(), printed, "{name}: printing is stable");
    check_typed(name, &m);
    match &m {
        Message::Request(r) => {
            let got = validate_request(r, &registrar())
                .err()
                .map(|rej| rej.status.as_u16());
            assert_eq!(got, status, "{name}: validation status");
        }
        Message::Response(r) => {
            validate_response(r).unwrap_or_else(|e| panic!("{name}: response refused: {e}"));
            assert_eq!(status, None);
        }
    }
}

#[test]
fn every_corpus_file_gets_its_manifest_verdict() {
    let manifest = manifest();
    let expect = expectations();
    let on_disk = files_on_disk();
    let listed: Vec<String> = {
        let mut v: Vec<String> = manifest.iter().map(|(n, _, _)| n.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(
        on_disk, listed,
        "every file on disk is in a manifest and the other way round"
    );

    let mut checked = 0;
    let mut liberal = Vec::new();
    for (name, dir, verdict) in &manifest {
        let data = Bytes::from(std::fs::read(dir.join(name)).expect("fixture readable"));
        let e = expect
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name}: no expectation"));
        // The expectation must agree with the manifest's verdict.
        match (verdict.as_str(), e) {
            ("VALID" | "VALID(tolerate)", Expect::Valid(_)) => {}
            (
                "INVALID",
                Expect::ParseErr(..)
                | Expect::Reject(_)
                | Expect::DropResponse
                | Expect::Liberal(_),
            ) => {}
            (
                "WELLFORMED-SEMANTIC",
                Expect::Reject(_) | Expect::Valid(_) | Expect::ParseErr(..),
            ) => {}
            (v, e) => panic!("{name}: expectation {e:?} contradicts verdict {v}"),
        }
        match e {
            Expect::Valid(status) => check_valid(name, &data, *status),
            Expect::Liberal(why) => {
                check_valid(name, &data, None);
                liberal.push(format!("{name}: {why}"));
            }
            Expect::ParseErr(is_expected, reply) => {
                let err = Message::parse(data.clone()).expect_err(name);
                assert!(is_expected(&err), "{name}: unexpected error {err:?}");
                let got = reply_to_unparseable(&data, &err).map(|r| r.status.as_u16());
                assert_eq!(got, *reply, "{name}: reply to unparseable");
            }
            Expect::Reject(status) => {
                let m = Message::parse(data.clone())
                    .unwrap_or_else(|e| panic!("{name}: should parse: {e}"));
                let Message::Request(r) = m else {
                    panic!("{name}: expected a request")
                };
                let rej = validate_request(&r, &registrar()).expect_err(name);
                assert_eq!(rej.status.as_u16(), *status, "{name}: {}", rej.reason);
                // The rejection must be sendable: a response built from the request that
                // parses again.
                let resp = rej.to_response(&r);
                Message::parse(resp.to_bytes())
                    .unwrap_or_else(|e| panic!("{name}: rejection reprint: {e}"));
            }
            Expect::DropResponse => {
                let m = Message::parse(data.clone())
                    .unwrap_or_else(|e| panic!("{name}: should parse: {e}"));
                let Message::Response(r) = m else {
                    panic!("{name}: expected a response")
                };
                assert!(
                    validate_response(&r).is_err(),
                    "{name}: response must be dropped"
                );
            }
        }
        checked += 1;
    }
    for l in &liberal {
        println!("liberal: {l}");
    }
    println!("corpus: {checked} files checked");
    assert_eq!(checked, 61, "all 49 RFC 4475 + 12 RFC 5118 files");
}

fn load(dir: &str, name: &str) -> Message {
    Message::parse(Bytes::from(
        std::fs::read(fixtures().join(dir).join(name)).expect("fixture"),
    ))
    .expect("parses")
}

fn req(dir: &str, name: &str) -> sip::message::Request {
    match load(dir, name) {
        Message::Request(r) => r,
        Message::Response(_) => panic!("{name} is a request"),
    }
}

#[test]
fn wsinv_unfolds_and_reads_compact_and_odd_spacing() {
    let r = req("rfc4475", "wsinv.dat");
    let h = &r.headers;
    assert_eq!(h.max_forwards(), Ok(Some(68)));
    assert_eq!(h.cseq().map(|c| c.seq), Ok(9));
    assert_eq!(h.to().expect("To").tag(), Some("1918181833n"));
    let from = h.from().expect("From");
    assert_eq!(from.display.as_deref(), Some(r#"J Rosenberg \\\""#));
    assert_eq!(from.tag(), Some("98asjd8"));
    let vias = h.vias().expect("Via");
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].transport, "UDP");
    assert_eq!(vias[1].transport, "TCP");
    assert_eq!(vias[1].branch(), Some("z9hG4bK9ikj8"));
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    let c = h.contacts().expect("Contact");
    assert_eq!(c[0].q(), Some("0.33"));
    assert_eq!(c[0].params.get("newparam"), Some(Some("newvalue")));
    assert_eq!(r.body.len(), 150);
    assert_eq!(
        h.get(&HeaderName::Other("NewFangledHeader".into()))
            .map(|v| &v[..]),
        Some(&b"newfangled value continued newfangled value"[..])
    );
}

#[test]
fn esc01_escapes_compare_equal_to_plain_characters() {
    let r = req("rfc4475", "esc01.dat");
    let to = r.headers.to().expect("To");
    assert!(
        to.uri
            .equivalent(&Uri::parse("sip:user@example.com").expect("uri"))
    );
    assert_eq!(
        to.uri.to_string(),
        "sip:%75se%72@example.com",
        "escapes print back as received"
    );
    // %3A and %40 are reserved: not equivalent to ':' and '@'.
    assert_eq!(
        r.uri.as_sip().and_then(|u| u.user.as_deref()),
        Some("sips%3Auser%40example.com")
    );
}

#[test]
fn escnull_keeps_two_distinct_contacts() {
    let r = req("rfc4475", "escnull.dat");
    let c = r.headers.contacts().expect("Contact");
    assert_eq!(c.len(), 2);
    assert!(!c[0].uri.equivalent(&c[1].uri));
    assert_eq!(
        c[1].uri
            .as_sip()
            .and_then(|u| u.user_unescaped())
            .map(|u| u.len()),
        Some(2)
    );
}

#[test]
fn semiuri_user_part_holds_the_semicolon() {
    let r = req("rfc4475", "semiuri.dat");
    let u = r.uri.as_sip().expect("sip uri");
    assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
    assert_eq!(u.host, Host::Domain("example.com".into()));
    assert!(u.params.is_empty());
}

#[test]
fn cparam01_and_cparam02_place_unknownparam_correctly() {
    let c1 = req("rfc4475", "cparam01.dat")
        .headers
        .contacts()
        .expect("Contact")
        .remove(0);
    assert!(c1.params.contains("unknownparam"), "contact-param");
    assert!(c1.uri.as_sip().expect("sip").params.is_empty());
    let c2 = req("rfc4475", "cparam02.dat")
        .headers
        .contacts()
        .expect("Contact")
        .remove(0);
    assert!(c2.params.is_empty());
    assert!(
        c2.uri
            .as_sip()
            .expect("sip")
            .params
            .contains("unknownparam"),
        "url-param"
    );
}

#[test]
fn regescrt_keeps_the_escaped_route_in_the_contact_uri() {
    let c = req("rfc4475", "regescrt.dat")
        .headers
        .contacts()
        .expect("Contact")
        .remove(0);
    assert_eq!(
        c.uri.as_sip().expect("sip").headers.get("Route"),
        Some(Some("%3Csip:sip.example.com%3E"))
    );
}

#[test]
fn dblreq_ignores_the_trailing_bytes() {
    let r = req("rfc4475", "dblreq.dat");
    assert_eq!(r.method, Method::Register);
    assert!(r.body.is_empty());
}

#[test]
fn esc02_method_is_an_extension_not_register() {
    let r = req("rfc4475", "esc02.dat");
    assert_eq!(r.method, Method::Extension("RE%47IST%45R".into()));
    // "C%6Fntact" is a different header, not a Contact.
    assert_eq!(r.headers.contacts().expect("Contact").len(), 2);
}

#[test]
fn bext01_lists_every_unsupported_require_tag() {
    let r = req("rfc4475", "bext01.dat");
    let rej = validate_request(&r, &ValidateConfig::default()).expect_err("420");
    assert_eq!(rej.status.as_u16(), 420);
    let unsupported = rej
        .extra
        .iter()
        .find(|h| h.name == HeaderName::Unsupported)
        .expect("Unsupported header");
    assert_eq!(
        &unsupported.value[..],
        b"nothingSupportsThis, nothingSupportsThisEither"
    );
}

#[test]
fn regaut01_is_405_for_an_element_that_is_not_a_registrar() {
    let r = req("rfc4475", "regaut01.dat");
    let rej = validate_request(&r, &ValidateConfig::default()).expect_err("405");
    assert_eq!(rej.status.as_u16(), 405);
    assert!(rej.extra.iter().any(|h| h.name == HeaderName::Allow));
}

#[test]
fn zeromf_options_is_answered_but_an_invite_would_get_483() {
    let r = req("rfc4475", "zeromf.dat");
    assert_eq!(validate_request(&r, &ValidateConfig::default()), Ok(()));
    let text = String::from_utf8(r.to_bytes().to_vec())
        .expect("ascii")
        .replace("OPTIONS", "INVITE");
    let Message::Request(inv) = Message::parse(Bytes::from(text)).expect("parses") else {
        panic!("request")
    };
    assert_eq!(
        validate_request(&inv, &ValidateConfig::default()).map_err(|r| r.status.as_u16()),
        Err(483)
    );
}

#[test]
fn rfc5118_ipv6_hosts_ports_and_received() {
    let u = req("rfc5118", "port-ambiguous").uri;
    let s = u.as_sip().expect("sip");
    assert_eq!(s.host, Host::Ipv6("2001:db8::10:5070".into()));
    assert_eq!(s.port, None);
    let s = req("rfc5118", "port-unambiguous")
        .uri
        .as_sip()
        .cloned()
        .expect("sip");
    assert_eq!(
        s.host.ipv6_addr(),
        Some("2001:db8::10".parse().expect("v6"))
    );
    assert_eq!(s.port, Some(5070));
    let v = req("rfc5118", "via-received-param-with-delim")
        .headers
        .top_via()
        .expect("Via");
    assert_eq!(v.received(), Some("[2001:db8::9:255]"));
    let v = req("rfc5118", "via-received-param-no-delim")
        .headers
        .top_via()
        .expect("Via");
    assert_eq!(v.received(), Some("2001:db8::9:255"));
    let vias = req("rfc5118", "mult-ip-in-header")
        .headers
        .vias()
        .expect("Via");
    assert_eq!(vias[0].sent_by(), "[2001:db8::9:1]:6050");
}

#[test]
fn bcast_second_via_is_the_broadcast_address() {
    let m = load("rfc4475", "bcast.dat");
    let vias = m.headers().vias().expect("Via");
    assert_eq!(
        vias[1].host,
        Host::Ipv4("255.255.255.255".parse().expect("v4"))
    );
}

#[test]
fn truncation_at_every_offset_never_panics() {
    for (name, dir, _) in manifest() {
        let data = std::fs::read(dir.join(&name)).expect("fixture");
        for cut in 0..=data.len() {
            let b = Bytes::copy_from_slice(&data[..cut]);
            match Message::parse(b.clone()) {
                Ok(Message::Request(r)) => {
                    let _ = validate_request(&r, &ValidateConfig::default());
                    let _ = r.to_bytes();
                }
                Ok(Message::Response(r)) => {
                    let _ = validate_response(&r);
                    let _ = r.to_bytes();
                }
                Err(e) => {
                    let _ = reply_to_unparseable(&b, &e);
                }
            }
        }
    }
}

#[test]
fn fixtures_are_byte_exact_copies() {
    // The torture messages depend on exact bytes (mpart01 mixes bare CR and LF on purpose), so
    // an editor or a git line-ending conversion must not silently "fix" them.
    use sha2::{Digest, Sha256};
    let mut verified = 0;
    for dir in ["rfc4475", "rfc5118"] {
        let sums = std::fs::read_to_string(fixtures().join(dir).join("SHA256SUMS"))
            .expect("checksums present");
        for line in sums.lines().filter(|l| !l.trim().is_empty()) {
            let (hash, name) = line.split_once("  ").expect("sha256sum format");
            let data = std::fs::read(fixtures().join(dir).join(name)).expect("fixture");
            assert_eq!(
                hex::encode(Sha256::digest(&data)),
                hash,
                "{dir}/{name} was modified"
            );
            verified += 1;
        }
    }
    assert_eq!(verified, 61);
}
