//! kamailio as a carrier (tests/fixtures/kamailio/carrier.cfg), with and without rtpengine in
//! the media path: first checked with sipp alone on both sides (so that a failure of the
//! callplane tests below points at callplane, not at the config), then with the real
//! `callplane serve` registering to it, calling through it and taking a call to its DID.
//!
//! kamailio, rtpengine and sipp missing: the tests skip with a notice, except under
//! `CI=true`, where they fail.

mod common;

use std::time::Duration;

use common::kamailio::{
    CarrierConfig, Kamailio, Rtpengine, kamailio_available, rtpengine_available,
};
use common::{
    fixture, free_udp_port, sipp_available, spawn_sipp, spawn_sipp_on_free_port, wait_child,
};

const USER: &str = "cpuser";
const PASSWORD: &str = "s3cret-Pw";
const DID: &str = "+14155550100";
/// A PSTN number: the carrier sends calls to `+1555...` to its sipp UAS.
const PSTN_NUMBER: &str = "+15550001234";

fn peers_available(rtpengine: bool) -> bool {
    // Every probe runs (each prints what is missing).
    let k = kamailio_available();
    let s = sipp_available();
    let r = !rtpengine || rtpengine_available();
    k && s && r
}

fn fixture_str(name: &str) -> String {
    fixture(name).to_str().expect("utf-8 path").to_owned()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// kamailio as the carrier of the account [`USER`], its PSTN at `pstn_port`, with rtpengine's
/// control socket when given.
async fn carrier(dir: &std::path::Path, pstn_port: u16, rtpengine: Option<String>) -> Kamailio {
    Kamailio::start(
        dir,
        CarrierConfig {
            user: USER.into(),
            password: PASSWORD.into(),
            did: DID.into(),
            pstn: format!("127.0.0.1:{pstn_port}"),
            rtpengine,
        },
    )
    .await
}

/// The "PSTN": a sipp UAS for one call (carrier_pstn_uas.xml) on a free port.
async fn start_pstn(dir: &std::path::Path) -> (tokio::process::Child, u16) {
    start_pstn_for(dir, 1).await
}

/// The "PSTN" for `calls` calls.
async fn start_pstn_for(dir: &std::path::Path, calls: u32) -> (tokio::process::Child, u16) {
    let scenario = fixture_str("carrier_pstn_uas.xml");
    let trace = dir.join("pstn_msg.log");
    let trace = trace.to_str().expect("utf-8 path").to_owned();
    let media = free_udp_port().to_string();
    spawn_sipp_on_free_port(dir, |port| {
        strings(&[
            "-sf",
            &scenario,
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-mp",
            &media,
            "-p",
            &port.to_string(),
            "-m",
            &calls.to_string(),
            "-timeout",
            "30s",
            "-nostdin",
            "-trace_msg",
            "-message_file",
            &trace,
        ])
    })
    .await
}

/// The `m=audio` ports of the SDP bodies in a sipp `-trace_msg` file.
fn sdp_audio_ports(trace: &str) -> Vec<u16> {
    trace
        .lines()
        .filter_map(|l| l.trim().strip_prefix("m=audio "))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect()
}

/// `callplane loadgen --trunk`: calls through the carrier as a trunk answer its 407 on every
/// INVITE with the trunk's credentials and reach the PSTN UAS; with a wrong password none does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_calls_through_the_carrier_as_a_trunk_answering_its_challenges() {
    if !peers_available(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (pstn, pstn_port) = start_pstn_for(dir.path(), 3).await;
    let kam = carrier(dir.path(), pstn_port, None).await;
    let run = |password: &str, calls: &str, name: &str| {
        let trunk = dir.path().join(format!("{name}.json"));
        let settings = serde_json::json!({
            "hosts": [kam.addr()], "username": USER, "password": password, "from_user": USER
        });
        std::fs::write(&trunk, settings.to_string()).expect("write the trunk");
        let report = dir.path().join(format!("{name}-report.json"));
        let args = strings(&[
            "loadgen",
            PSTN_NUMBER,
            "--trunk",
            trunk.to_str().expect("utf-8 path"),
            "--calls",
            calls,
            "--cps",
            "5",
            "--concurrency",
            "3",
            "--hold",
            "3s",
            "--max-lateness",
            "10s",
            "--progress",
            "never",
            "--json",
            report.to_str().expect("utf-8 path"),
        ]);
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_callplane"))
                .args(&args)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(Duration::from_secs(60), out)
                .await
                .expect("loadgen finished within 60 s")
                .expect("run loadgen");
            let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
                panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr))
            });
            let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            (out.status.code(), json)
        }
    };
    let (code, report) = run(PASSWORD, "3", "good").await;
    assert_eq!(code, Some(0), "{report}\n{}", kam.log());
    assert_eq!(report["calls"]["answered"], 3, "{report}");
    assert_eq!(report["status_mix"]["200"], 3, "{report}");
    assert!(
        report["settings"]["trunk"]
            .as_str()
            .is_some_and(|t| t.ends_with("good.json")),
        "{report}"
    );
    let (status, err) = wait_child(pstn, "PSTN UAS").await;
    assert!(status.success(), "the PSTN UAS took the three calls: {err}");
    let lines = kam.carrier_lines();
    let count = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(count("INVITE challenged (407)"), 3, "{lines:#?}");
    assert_eq!(count("outbound to"), 3, "{lines:#?}");
    // A wrong password: the carrier challenges the retry too, and nothing is answered.
    let (_, report) = run("wrong", "1", "bad").await;
    assert_eq!(report["calls"]["answered"], 0, "{report}");
    assert_eq!(report["status_mix"]["407"], 1, "{report}");
}

/// The config alone: a sipp client registers with digest, a PSTN caller reaches it through
/// its DID, it unregisters; a caller with digest reaches the PSTN UAS through the 407.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_carrier_config_challenges_registers_and_routes_with_sipp_alone() {
    if !peers_available(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (pstn, pstn_port) = start_pstn(dir.path()).await;
    let kam = carrier(dir.path(), pstn_port, None).await;
    assert_eq!(kam.registered_contacts().await, 0);

    // Outbound: 407, then through to the PSTN UAS, which must see the call end.
    let caller = spawn_sipp(
        dir.path(),
        &strings(&[
            "-sf",
            &fixture_str("carrier_uac_auth.xml"),
            "-s",
            PSTN_NUMBER,
            "-au",
            USER,
            "-ap",
            PASSWORD,
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-mp",
            &free_udp_port().to_string(),
            "-m",
            "1",
            "-timeout",
            "15s",
            "-nostdin",
            &kam.addr(),
        ]),
    );
    let (status, err) = wait_child(caller, "sipp caller with digest").await;
    assert!(
        status.success(),
        "caller through the 407: {status} {err}\n{}",
        kam.log()
    );
    let (status, err) = wait_child(pstn, "PSTN UAS").await;
    assert!(status.success(), "PSTN UAS: {status} {err}");
    let lines = kam.carrier_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("INVITE challenged (407)")),
        "{lines:#?}"
    );

    // Inbound: register (401), the DID call reaches the registered client, unregister.
    let registrar = fixture_str("carrier_register_uas.xml");
    let answer = fixture_str("carrier_ooc_answer.xml");
    let client = spawn_sipp(
        dir.path(),
        &strings(&[
            "-sf",
            &registrar,
            "-oocsf",
            &answer,
            "-s",
            USER,
            "-au",
            USER,
            "-ap",
            PASSWORD,
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-mp",
            &free_udp_port().to_string(),
            "-m",
            "1",
            "-timeout",
            "20s",
            "-nostdin",
            &kam.addr(),
        ]),
    );
    kam.wait_registered_contacts(1, Duration::from_secs(5))
        .await;
    let did_caller = spawn_sipp(
        dir.path(),
        &strings(&[
            "-sf",
            &fixture_str("carrier_did_uac.xml"),
            // Our 180 and 200 leave back to back and kamailio relays them from two
            // processes: the 180 may come after the 200, which a UAC ignores (RFC 3261
            // §13.2.2.4 reordering); sipp would abort the call on it.
            "-default_behaviors",
            "all,-abortunexp",
            "-s",
            DID,
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-mp",
            &free_udp_port().to_string(),
            "-m",
            "1",
            "-timeout",
            "15s",
            "-nostdin",
            &kam.addr(),
        ]),
    );
    let (status, err) = wait_child(did_caller, "DID caller").await;
    assert!(
        status.success(),
        "DID caller: {status} {err}\n{}",
        kam.log()
    );
    let (status, err) = wait_child(client, "registering client").await;
    assert!(status.success(), "registering client: {status} {err}");
    assert_eq!(kam.registered_contacts().await, 0, "unregistered");
    let lines = kam.carrier_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("REGISTER challenged (401)")),
        "{lines:#?}"
    );
}

/// The config with rtpengine: the SDP each side gets points at rtpengine, and rtpengine
/// counts the PSTN side's audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_with_rtpengine_relays_the_media_between_sipp_peers() {
    if !peers_available(true) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rtpe = Rtpengine::start(dir.path()).await;
    let (pstn, pstn_port) = start_pstn(dir.path()).await;
    let kam = carrier(dir.path(), pstn_port, Some(rtpe.ng.clone())).await;
    let caller_trace = dir.path().join("caller_msg.log");
    let caller = spawn_sipp(
        dir.path(),
        &strings(&[
            "-sf",
            &fixture_str("carrier_uac_auth.xml"),
            "-s",
            PSTN_NUMBER,
            "-au",
            USER,
            "-ap",
            PASSWORD,
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-mp",
            &free_udp_port().to_string(),
            "-m",
            "1",
            "-timeout",
            "15s",
            "-nostdin",
            "-trace_msg",
            "-message_file",
            caller_trace.to_str().expect("utf-8 path"),
            &kam.addr(),
        ]),
    );
    let (status, err) = wait_child(caller, "sipp caller").await;
    assert!(status.success(), "caller: {status} {err}\n{}", kam.log());
    let (status, err) = wait_child(pstn, "PSTN UAS").await;
    assert!(status.success(), "PSTN UAS: {status} {err}");

    // The caller's last SDP (the 200's answer) and the PSTN's first (the offer it got) name
    // rtpengine's ports.
    let caller_ports = sdp_audio_ports(&std::fs::read_to_string(&caller_trace).expect("trace"));
    let answer_port = *caller_ports.last().expect("an SDP answer");
    assert!(
        rtpe.owns_port(answer_port),
        "answer names {answer_port}: {caller_ports:?}"
    );
    let pstn_trace = std::fs::read_to_string(dir.path().join("pstn_msg.log")).expect("PSTN trace");
    let pstn_ports = sdp_audio_ports(&pstn_trace);
    let offer_port = *pstn_ports.first().expect("an SDP offer");
    assert!(
        rtpe.owns_port(offer_port),
        "offer names {offer_port}: {pstn_ports:?}"
    );

    // The PSTN UAS played its pcap at the port the offer named: rtpengine counted it there.
    let counts = rtpe.final_packet_counts(2, Duration::from_secs(5)).await;
    let from_pstn = counts
        .iter()
        .filter(|(p, _)| *p == offer_port)
        .map(|(_, n)| *n)
        .sum::<u64>();
    assert!(
        from_pstn > 10,
        "rtpengine's counts {counts:?}, offer port {offer_port}"
    );
}

// ---------------------------------------------------------------------------------------------
// callplane against the kamailio carrier. The engine and the trunk tasks run in-process (what
// `serve` runs once trunks are wired into it): the registration client registers through the
// 401, refreshes and unregisters at shutdown; a call through the trunk's credentials reaches
// the PSTN UAS through the 407 with audio both ways; a PSTN call to the DID reaches us through
// kamailio's location lookup, and the node's trunk router (loaded from a real store, as `serve`
// loads it) runs the script routed to that DID.

mod engine_level {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use callplane::engine::{
        CallEvent, CallId, Engine, EngineConfig, InboundConfig, OriginateRequest, PromptScope,
        SipOptions,
    };
    use callplane::store::TrunkInput;
    use callplane::trunk::route::{TrunkRouter, UnknownSources};
    use callplane::trunk::{
        RegState, TrunkContext, TrunkCounters, TrunkEvent, TrunkSettings, TrunkSpec, TrunkStates,
        TrunkTasks,
    };
    use serde_json::{Value, json};
    use sip::auth::Credentials;
    use sip::message::Uri;
    use sip::transaction::Transport;
    use tokio::sync::{broadcast, mpsc};
    use tokio::time::{Instant, timeout};

    use super::common::kamailio::{Kamailio, Rtpengine};
    use super::common::{free_udp_port, spawn_sipp, wait_child};
    use super::{
        DID, PASSWORD, PSTN_NUMBER, USER, carrier, fixture_str, peers_available, start_pstn,
        strings,
    };

    const TRUNK: &str = "trk_kamailio";

    /// Every event of `call` up to its final one (bounded).
    async fn until_final(
        rx: &mut broadcast::Receiver<CallEvent>,
        call: Option<CallId>,
        limit: Duration,
    ) -> Vec<CallEvent> {
        let deadline = Instant::now() + limit;
        let mut seen: Vec<CallEvent> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, rx.recv()).await {
                Ok(Ok(ev)) if call.is_none_or(|c| ev.call_id == c) => {
                    let done = ev.is_final();
                    seen.push(ev);
                    if done {
                        return seen;
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("event stream: {e}"),
                Err(_) => panic!(
                    "no final event within {limit:?}; saw {:#?}",
                    seen.iter()
                        .map(|e| (e.kind, &e.details))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    fn of_kind<'a>(events: &'a [CallEvent], kind: &str) -> Vec<&'a Value> {
        events
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| &e.details)
            .collect()
    }

    /// The next trunk event of `kind` with `state`, bounded.
    async fn trunk_event(
        rx: &mut mpsc::Receiver<TrunkEvent>,
        seen: &mut Vec<TrunkEvent>,
        state: &str,
        limit: Duration,
    ) -> TrunkEvent {
        let deadline = Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => {
                    seen.push(e.clone());
                    if e.kind == "trunk.registration" && e.details["state"] == state {
                        return e;
                    }
                }
                Ok(None) => panic!("trunk events closed; saw {seen:#?}"),
                Err(_) => panic!("no registration {state} within {limit:?}; saw {seen:#?}"),
            }
        }
    }

    fn outbound(kam: &Kamailio) -> OriginateRequest {
        let addr: SocketAddr = kam.addr().parse().expect("addr");
        OriginateRequest {
            sip: SipOptions {
                trunk_id: Some(TRUNK.into()),
                credentials: Some(Credentials::new(USER, PASSWORD)),
                ..SipOptions::default()
            },
            alternates: Vec::new(),
            to: Uri::parse(format!("sip:{PSTN_NUMBER}@{addr}").as_bytes()).expect("uri"),
            destination: addr,
            from: None,
            play: None,
            gather_digits: 0,
            record: None,
            ring_timeout: Duration::from_secs(10),
            transport: Transport::Udp,
            send_dtmf: Vec::new(),
            dtmf_after: Duration::ZERO,
            hangup_after: Some(Duration::from_secs(2)),
            script: None,
            prompts: None,
            prompt_scope: PromptScope::Local,
            tag: None,
            variables: Default::default(),
            max_duration: None,
        }
    }

    /// The first RTP packet of the call came from one of rtpengine's ports.
    fn assert_from_relay(rtpe: &Rtpengine, events: &[CallEvent]) {
        let first = of_kind(events, "media.first_packet_in");
        let source: SocketAddr = first
            .first()
            .and_then(|d| d["source"].as_str())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("media.first_packet_in with a source: {first:?}"));
        assert!(
            rtpe.owns_port(source.port()),
            "audio from {source}, not from rtpengine's ports {:?}",
            rtpe.ports
        );
    }

    /// The RTP counters of a final event.
    fn rtp(ev: &CallEvent) -> (u64, u64) {
        let r = &ev.details["rtp"];
        (
            r["packets_in"].as_u64().unwrap_or(0),
            r["packets_out"].as_u64().unwrap_or(0),
        )
    }

    async fn scenario(with_rtpengine: bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rtpe = if with_rtpengine {
            Some(Rtpengine::start(dir.path()).await)
        } else {
            None
        };
        let (pstn, pstn_port) = start_pstn(dir.path()).await;
        let kam = carrier(dir.path(), pstn_port, rtpe.as_ref().map(|r| r.ng.clone())).await;
        // The node's inbound router, loaded from a store as `serve` loads it: the trunk's host
        // (kamailio) is a known source, and its DID runs a script (answer, then wait for the
        // caller's BYE). Unknown sources are refused.
        let data = dir.path().join("data");
        let store = callplane::app::open_store(&data, None)
            .await
            .expect("store");
        let (tenant, _) = callplane::app::create_tenant(store.as_ref(), "carrier")
            .await
            .expect("tenant");
        let now = callplane::clock::unix_us();
        let body = json!({"version": 1, "steps": [{"answer": {}}, {"pause": {"ms": 10000}}]});
        let script = store
            .create_script(&tenant.id, "did", &body, now)
            .await
            .expect("script");
        let trunk = store
            .create_trunk(
                &tenant.id,
                &TrunkInput {
                    name: "kamailio".into(),
                    address: kam.addr(),
                    transport: "udp".into(),
                    username: Some(USER.into()),
                    password: Some(PASSWORD.into()),
                    from_user: None,
                    max_concurrent: None,
                    max_cps_milli: None,
                    settings: TrunkSettings {
                        hosts: vec![kam.addr()],
                        register: true,
                        ..TrunkSettings::default()
                    },
                },
                now,
            )
            .await
            .expect("trunk");
        store
            .create_trunk_route(&tenant.id, &trunk.id, DID, Some(&script.id), now)
            .await
            .expect("route");
        let router = Arc::new(TrunkRouter::new(
            UnknownSources::Refuse,
            InboundConfig::default(),
            data.join("prompts"),
        ));
        router.reload(store.as_ref()).await.expect("router loads");
        let mut config = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
        config.router = Some(router);
        let engine = Engine::start(config).await.expect("engine starts");
        let mut calls = engine.handle.subscribe();
        let (tx, mut trunk_events) = mpsc::channel(256);
        let states = TrunkStates::default();
        let mut tasks = TrunkTasks::new(TrunkContext {
            engine: engine.handle.clone(),
            states: states.clone(),
            events: tx,
            counters: Arc::new(TrunkCounters::default()),
        });
        tasks
            .apply(vec![TrunkSpec {
                trunk_id: TRUNK.into(),
                tenant_id: "ten_test".into(),
                settings: TrunkSettings {
                    hosts: vec![kam.addr()],
                    username: Some(USER.into()),
                    password: Some(PASSWORD.into()),
                    register: true,
                    // kamailio grants what we ask (min_expires 2): a refresh within seconds.
                    register_expires_s: Some(4),
                    ..TrunkSettings::default()
                },
            }])
            .await;

        // Registered through the 401, then refreshed.
        let mut seen = Vec::new();
        let first = trunk_event(
            &mut trunk_events,
            &mut seen,
            "registered",
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(first.details["status"], 200, "{first:?}");
        assert_eq!(kam.registered_contacts().await, 1);
        trunk_event(
            &mut trunk_events,
            &mut seen,
            "registered",
            Duration::from_secs(6),
        )
        .await;
        let oks = |lines: &[String]| {
            lines
                .iter()
                .filter(|l| l.starts_with("REGISTER ok user=cpuser"))
                .count()
        };
        let lines = kam
            .carrier_lines_when(|l| oks(l) >= 2, Duration::from_secs(2))
            .await;
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("REGISTER challenged (401)")),
            "{lines:#?}"
        );
        assert!(
            oks(&lines) >= 2,
            "a registration and its refresh: {lines:#?}"
        );

        // Outbound through the 407 to the PSTN UAS, audio both ways.
        let call = engine
            .handle
            .originate(outbound(&kam))
            .await
            .expect("originate");
        let events = until_final(&mut calls, Some(call), Duration::from_secs(15)).await;
        let last = events.last().expect("final");
        assert_eq!(last.kind, "call.completed", "{:#?}", last.details);
        assert_eq!(last.details["sip_status"], 200, "{}", last.details);
        let challenges = of_kind(&events, "sip.auth_challenge");
        assert!(
            challenges.iter().any(|c| c["status"] == 407),
            "{challenges:?}"
        );
        let (packets_in, packets_out) = rtp(last);
        assert!(
            packets_in > 20 && packets_out > 20,
            "audio both ways: in {packets_in}, out {packets_out}: {}",
            last.details
        );
        let (status, err) = wait_child(pstn, "PSTN UAS").await;
        assert!(status.success(), "PSTN UAS: {status} {err}");
        if let Some(rtpe) = &rtpe {
            // The relay counted both legs' packets.
            let counts = rtpe.final_packet_counts(2, Duration::from_secs(5)).await;
            let moving = counts.iter().filter(|(_, n)| *n > 20).count();
            assert!(moving >= 2, "rtpengine's per-port counts: {counts:?}");
            // The SDP answer we got named rtpengine, not the sipp UAS: our audio came from it.
            assert_from_relay(rtpe, &events);
        }

        // Inbound: the PSTN calls the DID; kamailio finds our contact.
        let caller = spawn_sipp(
            dir.path(),
            &strings(&[
                "-sf",
                &fixture_str("carrier_did_uac.xml"),
                // Our 180 and 200 leave back to back and kamailio relays them from two
                // processes: the 180 may come after the 200, which a UAC ignores (RFC 3261
                // §13.2.2.4 reordering); sipp would abort the call on it.
                "-default_behaviors",
                "all,-abortunexp",
                "-s",
                DID,
                "-i",
                "127.0.0.1",
                "-mi",
                "127.0.0.1",
                "-mp",
                &free_udp_port().to_string(),
                "-m",
                "1",
                "-timeout",
                "15s",
                "-nostdin",
                &kam.addr(),
            ]),
        );
        let inbound = until_final(&mut calls, None, Duration::from_secs(15)).await;
        let (status, err) = wait_child(caller, "DID caller").await;
        assert!(
            status.success(),
            "DID caller: {status} {err}\nour side of it: {:#?}\n{}",
            inbound
                .iter()
                .map(|e| format!("{} {}", e.kind, e.details))
                .collect::<Vec<_>>(),
            kam.log()
        );
        let last = inbound.last().expect("final");
        assert_eq!(last.kind, "call.completed", "{:#?}", last.details);
        let (packets_in, _) = rtp(last);
        assert!(packets_in > 20, "the caller's audio: {}", last.details);
        // The router took it as the trunk's call and ran the DID's script (its result is in
        // the final event; the default inbound handling has none).
        let created = of_kind(&inbound, "call.created");
        assert_eq!(
            created.first().map(|c| &c["trunk_id"]),
            Some(&Value::from(trunk.id.clone())),
            "{created:?}"
        );
        assert!(
            last.details.get("script").is_some_and(|s| !s.is_null()),
            "the DID's script ran: {}",
            last.details
        );
        if let Some(rtpe) = &rtpe {
            assert_from_relay(rtpe, &inbound);
        }
        assert!(
            kam.carrier_lines()
                .iter()
                .any(|l| l.starts_with("inbound DID to ")),
            "{:#?}",
            kam.carrier_lines()
        );

        // Shutdown unregisters: kamailio's location table is empty.
        tasks.shutdown(Duration::from_secs(3)).await;
        assert_eq!(states.get(TRUNK).registration, RegState::Unregistered);
        assert_eq!(kam.registered_contacts().await, 0, "{}", kam.log());
        let _ = engine.handle.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callplane_registers_refreshes_calls_out_takes_the_did_and_unregisters_via_kamailio() {
        if !peers_available(false) {
            return;
        }
        scenario(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callplane_through_kamailio_with_rtpengine_has_audio_both_ways_through_the_relay() {
        if !peers_available(true) {
            return;
        }
        scenario(true).await;
    }
}
