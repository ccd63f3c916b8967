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

/// The "PSTN": a sipp UAS for one call (carrier_pstn_uas.xml) on a free port.
async fn start_pstn(dir: &std::path::Path) -> (tokio::process::Child, u16) {
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
            "1",
            "-timeout",
            "20s",
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

/// The config alone: a sipp client registers with digest, a PSTN caller reaches it through
/// its DID, it unregisters; a caller with digest reaches the PSTN UAS through the 407.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_carrier_config_challenges_registers_and_routes_with_sipp_alone() {
    if !peers_available(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (pstn, pstn_port) = start_pstn(dir.path()).await;
    let kam = Kamailio::start(
        dir.path(),
        CarrierConfig {
            user: USER.into(),
            password: PASSWORD.into(),
            did: DID.into(),
            pstn: format!("127.0.0.1:{pstn_port}"),
            rtpengine: None,
        },
    )
    .await;
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
    let kam = Kamailio::start(
        dir.path(),
        CarrierConfig {
            user: USER.into(),
            password: PASSWORD.into(),
            did: DID.into(),
            pstn: format!("127.0.0.1:{pstn_port}"),
            rtpengine: Some(rtpe.ng.clone()),
        },
    )
    .await;
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
