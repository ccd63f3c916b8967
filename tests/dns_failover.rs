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

/// The zone of `carrier.test`: NAPTR → `_sip._udp` SRV with sip1 (priority 10, port `first`)
/// and sip2 (priority 20, port `second`), both on 127.0.0.1. Priorities make the order certain.
fn carrier_zone(first: u16, second: u16) -> Vec<(&'static str, Rec)> {
    vec![
        (
            "carrier.test",
            Rec::Naptr(10, 10, "SIP+D2U", "_sip._udp.carrier.test."),
        ),
        (
            "_sip._udp.carrier.test",
            Rec::Srv(10, 60, first, "sip1.carrier.test."),
        ),
        (
            "_sip._udp.carrier.test",
            Rec::Srv(20, 0, second, "sip2.carrier.test."),
        ),
        ("sip1.carrier.test", Rec::A(Ipv4Addr::LOCALHOST)),
        ("sip2.carrier.test", Rec::A(Ipv4Addr::LOCALHOST)),
    ]
}

/// sipp's built-in UAS on a free port (answers, waits for our BYE).
async fn sipp_uas(dir: &std::path::Path, calls: u32) -> (tokio::process::Child, u16) {
    common::spawn_sipp_on_free_port(dir, |port| {
        [
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &calls.to_string(),
            "-timeout",
            "30s",
        ]
        .map(String::from)
        .to_vec()
    })
    .await
}

/// POST /v1/calls with a domain `to` and no trunk: `serve` resolves it through DNS
/// (`--dns-server`) and the INVITE reaches the first SRV target.
#[tokio::test]
async fn api_call_to_a_domain_goes_to_the_first_srv_target() {
    if !common::sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = sipp_uas(dir.path(), 1).await;
    // The second target is never tried: nothing listens there.
    let dns = DnsServer::start(carrier_zone(port, common::free_udp_port()), 60).await;
    let data = dir.path().join("data");
    let dns_arg = dns.addr.to_string();
    let (mut serve, mut rx) = common::spawn_callplane(
        dir.path(),
        &[
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--dns-server",
            &dns_arg,
        ],
    );
    let (api, key, seen) = common::serve_started(&mut rx).await;
    let client = common::ServeClient::new(api, key.unwrap_or_else(|| panic!("a key: {seen:?}")));
    let (status, call) = client
        .send(
            reqwest::Method::POST,
            "/v1/calls",
            Some(&serde_json::json!({
                "to": "sip:1000@carrier.test",
                "hangup_after_s": 1,
                "ring_timeout_s": 10,
            })),
        )
        .await;
    assert_eq!(status, 201, "{call}");
    let id = call["id"].as_str().expect("call id").to_owned();
    let done = client
        .poll(
            &format!("/v1/calls/{id}"),
            std::time::Duration::from_secs(20),
            |c| c["status"] == "completed" || c["status"] == "failed",
        )
        .await;
    assert_eq!(done["outcome"], "answered", "{done:#}");
    let (status, stderr) = common::wait_child(sipp, "sipp uas").await;
    assert!(status.success(), "sipp answered our one call: {stderr}");

    // A name that does not resolve is a 422 naming DNS, not a 500.
    let (status, body) = client
        .send(
            reqwest::Method::POST,
            "/v1/calls",
            Some(&serde_json::json!({"to": "sip:1000@nowhere.test"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("nowhere.test"), "{body}");
    common::send_sigterm(&serve);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), serve.wait()).await;
}

/// RFC 3263 §4.3 end to end: the first SRV target (priority 10) swallows the INVITE, the call
/// fails over to the second (priority 20, a sipp UAS playing audio) and is answered there
/// within Timer B of the first attempt; the timeline names both targets.
#[tokio::test]
async fn call_fails_over_to_the_second_srv_target_within_timer_b() {
    if !common::sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The first target: a bound socket that never answers.
    let black_hole = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hole_port = black_hole.local_addr().expect("addr").port();
    let scenario = common::fixture("pcap_uas.xml");
    let (sipp, port) = common::spawn_sipp_on_free_port(dir.path(), |port| {
        [
            "-sf",
            scenario.to_str().expect("utf-8 path"),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
            "-timeout",
            "30s",
        ]
        .map(String::from)
        .to_vec()
    })
    .await;
    let dns = DnsServer::start(carrier_zone(hole_port, port), 60).await;
    let dns_arg = dns.addr.to_string();
    let started = std::time::Instant::now();
    // No --hangup-after: sipp hangs up once its pcap has played.
    let (status, events, stderr) = common::run_call(
        dir.path(),
        &[
            "call",
            "sip:1000@carrier.test",
            "--dns-server",
            &dns_arg,
            "--bind",
            "127.0.0.1:0",
            "--ring-timeout",
            "30",
        ],
    )
    .await;
    let took = started.elapsed();
    assert!(
        status.success(),
        "call exit {status} after {took:?}: {stderr}\n{events:#?}"
    );
    let first_invite = events
        .iter()
        .find(|e| e["kind"] == "sip.invite_sent")
        .unwrap_or_else(|| panic!("no sip.invite_sent: {:?}", common::kinds(&events)));
    let answered = common::last_of(&events, "sip.answered");
    let setup_us = answered["offset_us"].as_u64().expect("offset_us")
        - first_invite["offset_us"].as_u64().expect("offset_us");
    eprintln!("answered on the second target {setup_us} µs after the first INVITE");
    assert!(
        setup_us < 32_000_000,
        "answered within Timer B: {setup_us} µs"
    );
    assert!(
        events.iter().any(|e| e["kind"] == "media.first_packet_in"),
        "audio from the second target: {:?}",
        common::kinds(&events)
    );
    let targets: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] == "call.target")
        .map(|e| e.to_string())
        .collect();
    let hole = format!("127.0.0.1:{hole_port}");
    assert!(
        targets.len() == 2
            && targets[0].contains(&hole)
            && targets[1].contains("SRV 20 0 sip2.carrier.test"),
        "the timeline names the first target ({hole}) and the SRV one that answered: {targets:#?}"
    );
    let failover = common::last_of(&events, "call.failover");
    assert!(
        failover.to_string().contains("sip2.carrier.test"),
        "{failover}"
    );
    drop(black_hole);
    let (status, stderr) = common::wait_child(sipp, "sipp uas").await;
    assert!(status.success(), "sipp answered one call: {stderr}");
}

/// A trunk host that is a name goes through the same resolver: SRV for the trunk's transport
/// (no port given), A/AAAA only with a port.
#[tokio::test]
async fn trunk_hosts_that_are_names_resolve_through_the_resolver() {
    use callplane::trunk::dial::{ResolvedHost, resolve_host};
    use callplane::trunk::settings::TrunkTransport;
    let dns = DnsServer::start(carrier_zone(5071, 5072), 60).await;
    let resolver = Resolver::new(&DnsConfig {
        server: Some(dns.addr),
        transports: vec![Transport::Udp, Transport::Tcp],
    })
    .expect("a resolver");
    let udp = |port: u16| ResolvedHost {
        addr: std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        transport: Transport::Udp,
    };
    assert_eq!(
        resolve_host(Some(&resolver), "carrier.test", None, TrunkTransport::Udp).await,
        Ok(vec![udp(5071), udp(5072)])
    );
    assert_eq!(
        resolve_host(
            Some(&resolver),
            "sip2.carrier.test",
            Some(5090),
            TrunkTransport::Udp
        )
        .await,
        Ok(vec![udp(5090)])
    );
    assert!(
        resolve_host(Some(&resolver), "nowhere.test", None, TrunkTransport::Udp)
            .await
            .is_err()
    );
    // Without a resolver a name is refused, an IP literal is not.
    assert!(
        resolve_host(None, "carrier.test", None, TrunkTransport::Udp)
            .await
            .is_err()
    );
    assert_eq!(
        resolve_host(None, "127.0.0.1", Some(5071), TrunkTransport::Udp).await,
        Ok(vec![udp(5071)])
    );
}

/// The campaign worker resolves trunk hosts that are names through the same resolver as the
/// API (`--dns-server`): a campaign on a trunk whose only host is `carrier.test` (SRV, no
/// port) reaches the sipp UAS behind its first SRV target, and the contact completes answered.
#[tokio::test]
async fn campaign_on_a_trunk_named_by_domain_reaches_the_srv_target() {
    use common::campaign::{campaign_action, campaign_settings, create, results, wait_completed};
    if !common::sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = sipp_uas(dir.path(), 1).await;
    let dns = DnsServer::start(carrier_zone(port, common::free_udp_port()), 60).await;
    let data = dir.path().join("data");
    let dns_arg = dns.addr.to_string();
    let (mut serve, mut rx) = common::spawn_callplane(
        dir.path(),
        &[
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--dns-server",
            &dns_arg,
        ],
    );
    let (api, key, seen) = common::serve_started(&mut rx).await;
    let client = common::ServeClient::new(api, key.unwrap_or_else(|| panic!("a key: {seen:?}")));
    let trunk = create(
        &client,
        "/v1/trunks",
        &serde_json::json!({"name": "carrier", "hosts": ["carrier.test"], "transport": "udp"}),
    )
    .await;
    let script = create(
        &client,
        "/v1/scripts",
        &serde_json::json!({"name": "bye", "body": {"version": 1, "steps": [
            {"pause": {"ms": 300}}, {"hangup": {"reason": "done"}}
        ]}}),
    )
    .await;
    let campaign = create(
        &client,
        "/v1/campaigns",
        &campaign_settings("dns", &trunk, &script, 1, 10, serde_json::json!({})),
    )
    .await;
    let (status, report) = client
        .send(
            reqwest::Method::POST,
            &format!("/v1/campaigns/{campaign}/contacts"),
            Some(&serde_json::json!([{"phone": "+33612345678"}])),
        )
        .await;
    assert!(
        status == 200 || status == 201,
        "contacts: {status} {report}"
    );
    campaign_action(&client, &campaign, "start").await;
    let done = wait_completed(&client, &campaign, std::time::Duration::from_secs(30)).await;
    let contacts = results(&client, &campaign).await;
    assert_eq!(contacts.len(), 1, "{done}");
    assert_eq!(
        contacts[0].status(),
        "completed",
        "{:?} {done}",
        contacts[0]
    );
    let (status, stderr) = common::wait_child(sipp, "sipp uas").await;
    assert!(
        status.success(),
        "sipp answered the campaign's call: {stderr}"
    );
    common::send_sigterm(&serve);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), serve.wait()).await;
}
