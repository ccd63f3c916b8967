//! Any bytes as a UDP datagram: parsing never panics, and a message that parses prints to bytes
//! that parse back to an equal message (the round trip of CONVENTIONS.md, under fuzzing).
//!
//! The printer normalises Content-Length on purpose (it writes the body length, adding the
//! header when the datagram had none and dropping duplicates), so the comparison leaves the
//! Content-Length headers out; printing the re-parsed message must then give the same bytes
//! again (printing is a fixpoint after one round).
//!
//! The typed header accessors, request validation, the error replies and the digest parsers
//! run on every parsed message too (no panic); Via, CSeq and name-addr values that parse must
//! print to text that parses back equal.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sip::auth::{Authorization, Challenge};
use sip::message::validate::{
    ValidateConfig, reply_to_unparseable, validate_request, validate_response,
};
use sip::message::{CSeq, HeaderName, Headers, Message, NameAddr, Via};

fn without_content_length(m: &Message) -> Message {
    let mut m = m.clone();
    m.headers_mut().remove(&HeaderName::ContentLength);
    m
}

fn typed_headers(h: &Headers) {
    if let Ok(vias) = h.vias() {
        for v in vias {
            let s = v.to_string();
            let again = Via::parse(s.as_bytes())
                .unwrap_or_else(|e| panic!("Via {s:?} does not re-parse: {e:?}"));
            assert_eq!(v, again, "Via re-parses differently: {s:?}");
        }
    }
    if let Ok(c) = h.cseq() {
        let s = c.to_string();
        let again = CSeq::parse(s.as_bytes())
            .unwrap_or_else(|e| panic!("CSeq {s:?} does not re-parse: {e:?}"));
        assert_eq!(c, again, "CSeq re-parses differently: {s:?}");
    }
    let mut addrs = Vec::new();
    addrs.extend(h.from().ok());
    addrs.extend(h.to().ok());
    addrs.extend(h.contacts().unwrap_or_default());
    addrs.extend(h.routes().unwrap_or_default());
    addrs.extend(h.record_routes().unwrap_or_default());
    for a in addrs {
        let s = a.to_string();
        let again = NameAddr::parse_named(s.as_bytes(), "fuzz")
            .unwrap_or_else(|e| panic!("name-addr {s:?} does not re-parse: {e:?}"));
        assert_eq!(a, again, "name-addr re-parses differently: {s:?}");
    }
    let _ = (
        h.call_id(),
        h.max_forwards(),
        h.content_length(),
        h.expires(),
        h.contact_is_star(),
    );
    let _ = (
        h.content_type(),
        h.require(),
        h.proxy_require(),
        h.supported(),
        h.unsupported(),
        h.allow(),
    );
    let _ = (
        h.www_authenticate(),
        h.proxy_authenticate(),
        h.authorization(),
        h.proxy_authorization(),
    );
    let _ = (
        h.rseq(),
        h.rack(),
        h.session_expires(),
        h.min_se(),
        h.privacy(),
        h.reasons(),
        h.retry_after(),
    );
    let _ = (
        h.p_asserted_identity(),
        h.p_preferred_identity(),
        h.diversion(),
        h.user_agent(),
        h.server(),
    );
    for name in [HeaderName::WwwAuthenticate, HeaderName::ProxyAuthenticate] {
        for v in h.get_all(&name) {
            let _ = Challenge::parse_bytes(v);
        }
    }
    for name in [HeaderName::Authorization, HeaderName::ProxyAuthorization] {
        for v in h.get_all(&name) {
            let _ = Authorization::parse_bytes(v);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let datagram = Bytes::copy_from_slice(data);
    let msg = match Message::parse(datagram.clone()) {
        Ok(m) => m,
        Err(e) => {
            let _ = reply_to_unparseable(&datagram, &e);
            return;
        }
    };
    let printed = msg.to_bytes();
    let again = match Message::parse(printed.clone()) {
        Ok(m) => m,
        Err(e) => panic!(
            "printed message does not re-parse: {e:?}\ninput: {datagram:?}\nprinted: {printed:?}"
        ),
    };
    assert_eq!(
        without_content_length(&msg),
        without_content_length(&again),
        "re-parsed message differs\nprinted: {printed:?}"
    );
    assert_eq!(printed, again.to_bytes(), "printing is not a fixpoint");
    typed_headers(msg.headers());
    match &msg {
        Message::Request(r) => {
            if let Err(rej) = validate_request(r, &ValidateConfig::default()) {
                let _ = rej.to_response(r).to_bytes();
            }
        }
        Message::Response(r) => {
            let _ = validate_response(r);
        }
    }
});
