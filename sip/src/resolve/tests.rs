use super::*;

const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];
const PLAIN: [Transport; 2] = [Transport::Udp, Transport::Tcp];

/// Supported transports, `sips:`, `transport=`, and the SRV names expected.
type SrvCase<'a> = (
    &'a [Transport],
    bool,
    Option<Transport>,
    Vec<(Transport, &'a str)>,
);

fn uri(s: &str) -> Uri {
    Uri::parse(s.as_bytes()).expect("a URI")
}

fn naptr(order: u16, preference: u16, services: &str, replacement: &str) -> Naptr {
    Naptr {
        order,
        preference,
        flags: "s".into(),
        services: services.into(),
        replacement: replacement.into(),
    }
}

fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
    Srv {
        priority,
        weight,
        port,
        target: target.into(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP")
}

/// Random numbers from a list, then 0.
fn randoms(values: &[u32]) -> impl FnMut() -> u32 + '_ {
    let mut it = values.iter().copied();
    move || it.next().unwrap_or(0)
}

#[test]
fn uri_target_table() {
    use Transport::*;
    let cases: &[(&str, &[Transport], Result<UriTarget, ResolveError>)] = &[
        (
            "sip:1000@192.0.2.1",
            &PLAIN,
            Ok(UriTarget::Ip(Target {
                addr: "192.0.2.1:5060".parse().expect("addr"),
                transport: Udp,
                label: "IP 192.0.2.1:5060".into(),
            })),
        ),
        (
            "sips:1000@192.0.2.1",
            &ALL,
            Ok(UriTarget::Ip(Target {
                addr: "192.0.2.1:5061".parse().expect("addr"),
                transport: Tls,
                label: "IP 192.0.2.1:5061".into(),
            })),
        ),
        (
            "sip:1000@[2001:db8::1]:5080;transport=tcp",
            &ALL,
            Ok(UriTarget::Ip(Target {
                addr: "[2001:db8::1]:5080".parse().expect("addr"),
                transport: Tcp,
                label: "IP [2001:db8::1]:5080".into(),
            })),
        ),
        // maddr wins over the host, and an IP maddr needs no lookup.
        (
            "sip:1000@example.test;maddr=192.0.2.9",
            &PLAIN,
            Ok(UriTarget::Ip(Target {
                addr: "192.0.2.9:5060".parse().expect("addr"),
                transport: Udp,
                label: "IP 192.0.2.9:5060".into(),
            })),
        ),
        // A port: no NAPTR/SRV, A/AAAA only (§4.2).
        (
            "sip:1000@Carrier.Test.:5070",
            &PLAIN,
            Ok(UriTarget::Host {
                name: "carrier.test".into(),
                port: 5070,
                transport: Udp,
            }),
        ),
        (
            "sips:1000@carrier.test:5071",
            &ALL,
            Ok(UriTarget::Host {
                name: "carrier.test".into(),
                port: 5071,
                transport: Tls,
            }),
        ),
        (
            "sip:1000@carrier.test",
            &PLAIN,
            Ok(UriTarget::Domain {
                name: "carrier.test".into(),
                transport: None,
                secure: false,
            }),
        ),
        (
            "sip:1000@carrier.test;transport=TCP",
            &PLAIN,
            Ok(UriTarget::Domain {
                name: "carrier.test".into(),
                transport: Some(Tcp),
                secure: false,
            }),
        ),
        // sips: with transport=tcp means TLS over TCP.
        (
            "sips:1000@carrier.test;transport=tcp",
            &ALL,
            Ok(UriTarget::Domain {
                name: "carrier.test".into(),
                transport: Some(Tls),
                secure: true,
            }),
        ),
        (
            "sips:1000@carrier.test;transport=udp",
            &ALL,
            Err(ResolveError::Transport("udp with sips:".into())),
        ),
        (
            "sip:1000@carrier.test;transport=sctp",
            &PLAIN,
            Err(ResolveError::Transport("SCTP".into())),
        ),
        (
            "sip:1000@carrier.test;transport=bogus",
            &PLAIN,
            Err(ResolveError::Transport("bogus".into())),
        ),
        (
            "sips:1000@carrier.test;transport=tcp",
            &PLAIN,
            Err(ResolveError::Transport("TLS".into())),
        ),
        (
            "tel:+15551234567",
            &PLAIN,
            Err(ResolveError::Scheme("tel".into())),
        ),
        (
            "sip:x@carrier.test;maddr=%%%",
            &PLAIN,
            Err(ResolveError::BadMaddr("%%%".into())),
        ),
    ];
    for (text, supported, want) in cases {
        assert_eq!(&uri_target(&uri(text), supported), want, "{text}");
    }
}

#[test]
fn naptr_selection_table() {
    use Transport::*;
    let records = vec![
        naptr(20, 10, "SIP+D2U", "_sip._udp.carrier.test."),
        naptr(10, 50, "SIP+D2T", "_sip._tcp.carrier.test."),
        naptr(10, 10, "SIPS+D2T", "_sips._tcp.carrier.test."),
        naptr(5, 10, "SIP+D2S", "_sip._sctp.carrier.test."),
        naptr(1, 1, "E2U+sip", "ignored.carrier.test."),
        Naptr {
            flags: "a".into(),
            ..naptr(1, 1, "SIP+D2U", "a-flag.carrier.test.")
        },
    ];
    let cases: &[SrvCase] = &[
        (
            &ALL,
            false,
            None,
            vec![
                (Tls, "_sips._tcp.carrier.test"),
                (Tcp, "_sip._tcp.carrier.test"),
                (Udp, "_sip._udp.carrier.test"),
            ],
        ),
        // Unsupported services are skipped.
        (
            &PLAIN,
            false,
            None,
            vec![
                (Tcp, "_sip._tcp.carrier.test"),
                (Udp, "_sip._udp.carrier.test"),
            ],
        ),
        (&[Udp], false, None, vec![(Udp, "_sip._udp.carrier.test")]),
        // sips: only SIPS+D2T.
        (&ALL, true, None, vec![(Tls, "_sips._tcp.carrier.test")]),
        (&PLAIN, true, None, vec![]),
        // A transport given: only its records.
        (
            &ALL,
            false,
            Some(Tcp),
            vec![(Tcp, "_sip._tcp.carrier.test")],
        ),
    ];
    for (supported, secure, transport, want) in cases {
        let got = select_naptr(&records, supported, *secure, *transport);
        let want: Vec<(Transport, String)> =
            want.iter().map(|(t, n)| (*t, n.to_string())).collect();
        assert_eq!(got, want, "{supported:?} secure={secure} {transport:?}");
    }
}

#[test]
fn naptr_preference_breaks_order_ties_and_duplicates_collapse() {
    let records = vec![
        naptr(10, 20, "SIP+D2T", "_sip._tcp.b.test"),
        naptr(10, 10, "SIP+D2U", "_sip._udp.a.test"),
        naptr(10, 10, "SIP+D2U", "_SIP._UDP.A.TEST."),
    ];
    assert_eq!(
        select_naptr(&records, &ALL, false, None),
        vec![
            (Transport::Udp, "_sip._udp.a.test".to_string()),
            (Transport::Tcp, "_sip._tcp.b.test".to_string())
        ]
    );
}

#[test]
fn fallback_srv_table() {
    use Transport::*;
    let cases: &[SrvCase] = &[
        (
            &ALL,
            false,
            None,
            vec![
                (Udp, "_sip._udp.carrier.test"),
                (Tcp, "_sip._tcp.carrier.test"),
                (Tls, "_sips._tcp.carrier.test"),
            ],
        ),
        (
            &PLAIN,
            false,
            None,
            vec![
                (Udp, "_sip._udp.carrier.test"),
                (Tcp, "_sip._tcp.carrier.test"),
            ],
        ),
        (&ALL, true, None, vec![(Tls, "_sips._tcp.carrier.test")]),
        (
            &ALL,
            false,
            Some(Tcp),
            vec![(Tcp, "_sip._tcp.carrier.test")],
        ),
    ];
    for (supported, secure, transport, want) in cases {
        let want: Vec<(Transport, String)> =
            want.iter().map(|(t, n)| (*t, n.to_string())).collect();
        assert_eq!(
            fallback_srv("Carrier.test.", supported, *secure, *transport),
            want
        );
    }
}

fn targets_of(records: &[Srv], random: &[u32]) -> Vec<String> {
    order_srv(records, &mut randoms(random))
        .into_iter()
        .map(|r| r.target)
        .collect()
}

#[test]
fn srv_order_table() {
    let cases: &[(&[Srv], &[u32], &[&str])] = &[
        // Priority first, whatever the weights.
        (
            &[srv(20, 100, 5060, "b"), srv(10, 0, 5060, "a")],
            &[],
            &["a", "b"],
        ),
        // Equal priority, weights 0 and 100: the zero-weight one only when the random number
        // is 0 (running sums 0, 100; pick = r % 101).
        (
            &[srv(10, 100, 5060, "heavy"), srv(10, 0, 5060, "zero")],
            &[1],
            &["heavy", "zero"],
        ),
        (
            &[srv(10, 100, 5060, "heavy"), srv(10, 0, 5060, "zero")],
            &[0],
            &["zero", "heavy"],
        ),
        (
            &[srv(10, 100, 5060, "heavy"), srv(10, 0, 5060, "zero")],
            &[101],
            &["zero", "heavy"],
        ),
        // Weights 60/40 (sum 100, pick = r % 101): 0..=60 → first, 61..=100 → second.
        (
            &[srv(10, 60, 5060, "sixty"), srv(10, 40, 5060, "forty")],
            &[60],
            &["sixty", "forty"],
        ),
        (
            &[srv(10, 60, 5060, "sixty"), srv(10, 40, 5060, "forty")],
            &[61],
            &["forty", "sixty"],
        ),
        // All weights 0: in the order sent.
        (
            &[srv(10, 0, 5060, "x"), srv(10, 0, 5060, "y")],
            &[7, 7],
            &["x", "y"],
        ),
        // "." means not offered.
        (&[srv(10, 0, 5060, "."), srv(20, 0, 5060, "z")], &[], &["z"]),
        // Three priorities, each group ordered on its own.
        (
            &[
                srv(30, 1, 5060, "p30"),
                srv(10, 50, 5060, "p10a"),
                srv(10, 50, 5060, "p10b"),
                srv(20, 5, 5060, "p20"),
            ],
            &[51, 0, 0, 0],
            &["p10b", "p10a", "p20", "p30"],
        ),
    ];
    for (records, random, want) in cases {
        assert_eq!(targets_of(records, random), *want, "{records:?} {random:?}");
    }
}

#[test]
fn srv_weights_share_choices_in_proportion() {
    let records = [srv(10, 75, 5060, "a"), srv(10, 25, 5060, "b")];
    let mut seed = 12345u32;
    let mut random = move || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        seed >> 8
    };
    let firsts = (0..4000)
        .filter(|_| order_srv(&records, &mut random)[0].target == "a")
        .count();
    assert!((2800..=3200).contains(&firsts), "a first {firsts} of 4000");
}

#[test]
fn srv_order_handles_max_weights_without_overflow() {
    let records: Vec<Srv> = (0..MAX_RECORDS + 5)
        .map(|i| srv(0, u16::MAX, 5060, &format!("h{i}")))
        .collect();
    let out = order_srv(&records, &mut || u32::MAX);
    assert_eq!(out.len(), MAX_RECORDS);
}

/// Runs a resolution against a fixed zone; returns the queries made and the targets.
fn run(
    uri_text: &str,
    supported: &[Transport],
    zone: &[(Query, Answer)],
) -> (Vec<Query>, Vec<Target>) {
    let mut r = Resolution::new(&uri(uri_text), supported).expect("resolvable");
    let mut asked = Vec::new();
    let mut random = randoms(&[]);
    for _ in 0..64 {
        let Some(q) = r.poll_query().cloned() else {
            break;
        };
        let answer = zone
            .iter()
            .find(|(zq, _)| *zq == q)
            .map(|(_, a)| a.clone())
            .unwrap_or(match &q {
                Query::Naptr(_) => Answer::Naptr(vec![]),
                Query::Srv(_) => Answer::Srv(vec![]),
                Query::Addresses(_) => Answer::Addresses(vec![]),
            });
        asked.push(q);
        r.handle_answer(answer, &mut random);
    }
    assert!(r.is_done());
    (asked, r.into_targets())
}

fn target(addr: &str, transport: Transport, label: &str) -> Target {
    Target {
        addr: addr.parse().expect("addr"),
        transport,
        label: label.into(),
    }
}

#[test]
fn naptr_then_srv_then_addresses_in_priority_order() {
    let zone = [
        (
            Query::Naptr("carrier.test".into()),
            Answer::Naptr(vec![naptr(10, 10, "SIP+D2U", "_sip._udp.carrier.test.")]),
        ),
        (
            Query::Srv("_sip._udp.carrier.test".into()),
            Answer::Srv(vec![
                srv(20, 0, 5062, "sip2.carrier.test."),
                srv(10, 60, 5060, "sip1.carrier.test."),
            ]),
        ),
        (
            Query::Addresses("sip1.carrier.test".into()),
            Answer::Addresses(vec![ip("127.0.0.1")]),
        ),
        (
            Query::Addresses("sip2.carrier.test".into()),
            Answer::Addresses(vec![ip("127.0.0.2"), ip("::1")]),
        ),
    ];
    let (asked, targets) = run("sip:1000@carrier.test", &PLAIN, &zone);
    assert_eq!(
        asked,
        vec![
            Query::Naptr("carrier.test".into()),
            Query::Srv("_sip._udp.carrier.test".into()),
            Query::Addresses("sip1.carrier.test".into()),
            Query::Addresses("sip2.carrier.test".into()),
        ]
    );
    assert_eq!(
        targets,
        vec![
            target(
                "127.0.0.1:5060",
                Transport::Udp,
                "SRV 10 60 sip1.carrier.test:5060"
            ),
            target(
                "127.0.0.2:5062",
                Transport::Udp,
                "SRV 20 0 sip2.carrier.test:5062"
            ),
            target(
                "[::1]:5062",
                Transport::Udp,
                "SRV 20 0 sip2.carrier.test:5062"
            ),
        ]
    );
}

#[test]
fn no_naptr_falls_back_to_srv_per_transport_then_a() {
    // No NAPTR, only a TCP SRV record.
    let zone = [
        (
            Query::Srv("_sip._tcp.carrier.test".into()),
            Answer::Srv(vec![srv(0, 0, 5080, "edge.carrier.test")]),
        ),
        (
            Query::Addresses("edge.carrier.test".into()),
            Answer::Addresses(vec![ip("192.0.2.5")]),
        ),
    ];
    let (asked, targets) = run("sip:1000@carrier.test", &PLAIN, &zone);
    assert_eq!(
        asked,
        vec![
            Query::Naptr("carrier.test".into()),
            Query::Srv("_sip._udp.carrier.test".into()),
            Query::Srv("_sip._tcp.carrier.test".into()),
            Query::Addresses("edge.carrier.test".into()),
        ]
    );
    assert_eq!(
        targets,
        vec![target(
            "192.0.2.5:5080",
            Transport::Tcp,
            "SRV 0 0 edge.carrier.test:5080"
        )]
    );

    // Neither NAPTR nor SRV: the name's A records on 5060 (UDP), 5061 for sips: (TLS).
    let zone = [(
        Query::Addresses("carrier.test".into()),
        Answer::Addresses(vec![ip("192.0.2.7")]),
    )];
    let (_, targets) = run("sip:1000@carrier.test", &PLAIN, &zone);
    assert_eq!(
        targets,
        vec![target(
            "192.0.2.7:5060",
            Transport::Udp,
            "A carrier.test:5060"
        )]
    );
    let (asked, targets) = run("sips:1000@carrier.test", &ALL, &zone);
    assert_eq!(
        asked,
        vec![
            Query::Naptr("carrier.test".into()),
            Query::Srv("_sips._tcp.carrier.test".into()),
            Query::Addresses("carrier.test".into()),
        ]
    );
    assert_eq!(
        targets,
        vec![target(
            "192.0.2.7:5061",
            Transport::Tls,
            "A carrier.test:5061"
        )]
    );
    // transport=tcp without SRV: A on 5060 over TCP, and no NAPTR query.
    let (asked, targets) = run("sip:1000@carrier.test;transport=tcp", &PLAIN, &zone);
    assert_eq!(asked[0], Query::Srv("_sip._tcp.carrier.test".into()));
    assert_eq!(
        targets,
        vec![target(
            "192.0.2.7:5060",
            Transport::Tcp,
            "A carrier.test:5060"
        )]
    );
}

#[test]
fn explicit_port_or_ip_skips_naptr_and_srv() {
    let zone = [(
        Query::Addresses("carrier.test".into()),
        Answer::Addresses(vec![ip("192.0.2.7")]),
    )];
    let (asked, targets) = run("sip:1000@carrier.test:5070", &PLAIN, &zone);
    assert_eq!(asked, vec![Query::Addresses("carrier.test".into())]);
    assert_eq!(
        targets,
        vec![target(
            "192.0.2.7:5070",
            Transport::Udp,
            "A carrier.test:5070"
        )]
    );
    let (asked, targets) = run("sip:1000@192.0.2.8", &PLAIN, &zone);
    assert!(asked.is_empty());
    assert_eq!(
        targets,
        vec![target(
            "192.0.2.8:5060",
            Transport::Udp,
            "IP 192.0.2.8:5060"
        )]
    );
}

#[test]
fn nothing_found_gives_no_targets_and_wrong_answer_kinds_count_as_empty() {
    let (_, targets) = run("sip:1000@nowhere.test", &PLAIN, &[]);
    assert!(targets.is_empty());
    let mut r = Resolution::new(&uri("sip:1000@carrier.test"), &PLAIN).expect("resolvable");
    r.handle_answer(Answer::Addresses(vec![ip("192.0.2.1")]), &mut || 0);
    assert_eq!(
        r.poll_query(),
        Some(&Query::Srv("_sip._udp.carrier.test".into()))
    );
}

#[test]
fn targets_are_bounded_and_deduplicated() {
    let srvs: Vec<Srv> = (0..20)
        .map(|i| srv(10, 0, 5060, &format!("h{i}.carrier.test")))
        .collect();
    let mut zone = vec![(
        Query::Srv("_sip._udp.carrier.test".into()),
        Answer::Srv(srvs),
    )];
    for i in 0..20 {
        zone.push((
            Query::Addresses(format!("h{i}.carrier.test")),
            Answer::Addresses(vec![ip("192.0.2.1"), ip(&format!("192.0.2.{}", i + 2))]),
        ));
    }
    let (_, targets) = run("sip:1000@carrier.test;transport=udp", &PLAIN, &zone);
    assert_eq!(targets.len(), MAX_TARGETS);
    let mut addrs: Vec<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), MAX_TARGETS);
}

#[test]
fn cache_keeps_answers_for_their_ttl() {
    let t0 = super::any_instant();
    let mut cache: DnsCache<Vec<u8>> = DnsCache::new(2);
    cache.insert(
        t0,
        "Carrier.Test.",
        RecordKind::Srv,
        vec![1],
        Duration::from_secs(30),
    );
    assert_eq!(
        cache.get(t0, "carrier.test", RecordKind::Srv),
        Some(vec![1])
    );
    assert_eq!(cache.get(t0, "carrier.test", RecordKind::Naptr), None);
    assert_eq!(
        cache.get(
            t0 + Duration::from_secs(29),
            "carrier.test",
            RecordKind::Srv
        ),
        Some(vec![1])
    );
    assert_eq!(
        cache.get(
            t0 + Duration::from_secs(30),
            "carrier.test",
            RecordKind::Srv
        ),
        None
    );
    cache.insert(t0, "zero.test", RecordKind::A, vec![2], Duration::ZERO);
    assert_eq!(cache.get(t0, "zero.test", RecordKind::A), None);
    // Bounded: the third entry pushes out the one closest to expiry.
    cache.insert(
        t0,
        "b.test",
        RecordKind::A,
        vec![3],
        Duration::from_secs(10),
    );
    cache.insert(
        t0,
        "c.test",
        RecordKind::A,
        vec![4],
        Duration::from_secs(60),
    );
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.get(t0, "b.test", RecordKind::A), None);
    assert_eq!(cache.get(t0, "c.test", RecordKind::A), Some(vec![4]));
    assert_eq!(
        cache.get(t0, "carrier.test", RecordKind::Srv),
        Some(vec![1])
    );
}
