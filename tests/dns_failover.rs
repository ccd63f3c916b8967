//! RFC 3263 against a real DNS server on loopback (tests/common/dns.rs): the resolver follows
//! NAPTR → SRV → A into the ordered target list, caches by TTL, and a call to a domain fails
//! over from a target that never answers to the next one.

mod common;

use std::net::Ipv4Addr;

use callplane::net::dns::{DnsConfig, DnsError, Resolver};
use common::dns::{DnsServer, Rec};
use sip::message::Uri;
use sip::transaction::Transport;

fn uri(s: &str) -> Uri {
    Uri::parse(s.as_bytes()).expect("a URI")
}

#[tokio::test]
async fn resolve_uri_follows_naptr_srv_and_a_records_in_priority_order() {
    let dns = DnsServer::start(
        vec![
            (
                "carrier.test",
                Rec::Naptr(10, 10, "SIP+D2U", "_sip._udp.carrier.test."),
            ),
            (
                "carrier.test",
                Rec::Naptr(20, 10, "SIP+D2T", "_sip._tcp.carrier.test."),
            ),
            (
                "_sip._udp.carrier.test",
                Rec::Srv(20, 0, 5062, "sip2.carrier.test."),
            ),
            (
                "_sip._udp.carrier.test",
                Rec::Srv(10, 60, 5061, "sip1.carrier.test."),
            ),
            (
                "_sip._tcp.carrier.test",
                Rec::Srv(10, 0, 5070, "sip1.carrier.test."),
            ),
            ("sip1.carrier.test", Rec::A(Ipv4Addr::new(127, 0, 0, 11))),
            ("sip2.carrier.test", Rec::A(Ipv4Addr::new(127, 0, 0, 12))),
            ("plain.test", Rec::A(Ipv4Addr::new(127, 0, 0, 13))),
        ],
        60,
    )
    .await;
    let resolver = Resolver::new(&DnsConfig {
        server: Some(dns.addr),
        transports: vec![Transport::Udp],
    })
    .expect("a resolver");

    let targets = resolver
        .resolve_uri(&uri("sip:1000@carrier.test"))
        .await
        .expect("resolves");
    let got: Vec<(String, Transport, String)> = targets
        .iter()
        .map(|t| (t.addr.to_string(), t.transport, t.label.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "127.0.0.11:5061".to_string(),
                Transport::Udp,
                "SRV 10 60 sip1.carrier.test:5061".to_string()
            ),
            (
                "127.0.0.12:5062".to_string(),
                Transport::Udp,
                "SRV 20 0 sip2.carrier.test:5062".to_string()
            ),
        ],
        "queries: {:?}",
        dns.queries.lock().expect("lock")
    );

    // Cached by TTL: the same resolution asks nothing again.
    let asked = dns.query_count();
    let again = resolver
        .resolve_uri(&uri("sip:1000@carrier.test"))
        .await
        .expect("resolves");
    assert_eq!(again, targets);
    assert_eq!(dns.query_count(), asked, "answered from the cache");

    // TCP as well: the TCP NAPTR comes after the UDP one.
    let both = Resolver::new(&DnsConfig {
        server: Some(dns.addr),
        transports: vec![Transport::Udp, Transport::Tcp],
    })
    .expect("a resolver");
    let targets = both
        .resolve_uri(&uri("sip:1000@carrier.test"))
        .await
        .expect("resolves");
    assert_eq!(targets.len(), 3, "{targets:?}");
    assert_eq!(targets[2].transport, Transport::Tcp);
    assert_eq!(targets[2].addr.to_string(), "127.0.0.11:5070");

    // No NAPTR, no SRV: the A record on 5060.
    let targets = resolver
        .resolve_uri(&uri("sip:1000@plain.test"))
        .await
        .expect("resolves");
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].addr.to_string(), "127.0.0.13:5060");
    assert_eq!(targets[0].label, "A plain.test:5060");

    // Nothing at all.
    let err = resolver
        .resolve_uri(&uri("sip:1000@nowhere.test"))
        .await
        .expect_err("no records");
    assert!(matches!(err, DnsError::NotFound { .. }), "{err}");

    // A host for a trunk.
    assert_eq!(
        resolver.resolve_host("sip2.carrier.test").await,
        Ok(vec!["127.0.0.12".parse().expect("ip")])
    );
}

#[tokio::test]
async fn an_unreachable_name_server_fails_within_the_bound() {
    // A bound socket that never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let resolver = Resolver::new(&DnsConfig {
        server: Some(silent.local_addr().expect("addr")),
        transports: vec![Transport::Udp],
    })
    .expect("a resolver");
    let started = std::time::Instant::now();
    let err = resolver
        .resolve_uri(&uri("sip:1000@carrier.test"))
        .await
        .expect_err("no answer");
    let took = started.elapsed();
    assert!(
        took <= callplane::net::dns::RESOLVE_BOUND + std::time::Duration::from_secs(1),
        "took {took:?}: {err}"
    );
}
