//! Inbound routing by trunk and DID through the real `callplane serve` binary (#11): a trunk
//! whose allowed source is 127.0.0.1 and a DID routed to a script; sipp calls the DID and the
//! script runs (the call row carries the trunk), while an INVITE from 127.0.0.2 (no trunk)
//! gets 403.

mod common;

use std::time::Duration;

use common::{ServeClient, sipp_available, spawn_callplane, spawn_sipp};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_did_routed_on_an_ip_auth_trunk_runs_its_script_and_strangers_get_403() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (serve, mut rx) = spawn_callplane(
        dir.path(),
        &[
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
    );
    let mut seen = Vec::new();
    let listening = common::wait_line(&mut rx, &mut seen, |v| v["kind"] == "serve.listening").await;
    let sip_addr = listening["sip"].as_str().expect("sip").to_owned();
    let key = seen
        .iter()
        .find(|v| v["kind"] == "serve.bootstrap")
        .and_then(|v| v["key"].as_str())
        .expect("bootstrap key")
        .to_owned();
    let api = ServeClient::new(
        format!("http://{}", listening["api"].as_str().expect("api")),
        key,
    );

    // The route's script answers, waits 200 ms and hangs up: we send the BYE. Without the
    // route the node's default would answer and wait for the caller's BYE (3 s later).
    let (s, script) = api
        .send(
            reqwest::Method::POST,
            "/v1/scripts",
            Some(&json!({"name": "did", "body": {"version": 1, "steps": [
                {"answer": {}}, {"pause": {"ms": 200}}, {"hangup": {}}
            ]}})),
        )
        .await;
    assert_eq!(s, 201, "{script}");
    let (s, trunk) = api
        .send(
            reqwest::Method::POST,
            "/v1/trunks",
            Some(&json!({"name": "pbx", "allowed_sources": ["127.0.0.1"]})),
        )
        .await;
    assert_eq!(s, 201, "{trunk}");
    let trunk_id = trunk["id"].as_str().expect("trunk id").to_owned();
    let (s, route) = api
        .send(
            reqwest::Method::POST,
            &format!("/v1/trunks/{trunk_id}/routes"),
            Some(&json!({"did": "15550100", "script_id": script["id"]})),
        )
        .await;
    assert_eq!(s, 201, "{route}");

    // The reload after the API change is asynchronous: a stranger's INVITE is the probe (403
    // only once the trunk, which turns `auto` into refuse, is in the router's snapshot).
    let stranger = UdpSocket::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let mut status = String::new();
    for attempt in 0..50 {
        status = invite_status(&stranger, &sip_addr, attempt).await;
        if status.starts_with("SIP/2.0 403") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        status.starts_with("SIP/2.0 403"),
        "an INVITE from 127.0.0.2 (no trunk) is refused: {status:?}"
    );

    let sipp = spawn_sipp(
        dir.path(),
        &[
            "-sn",
            "uac",
            &sip_addr,
            "-i",
            "127.0.0.1",
            "-s",
            "15550100",
            "-m",
            "1",
            "-d",
            "3000",
            "-timeout",
            "20s",
        ]
        .map(String::from),
    );
    // The call's row: inbound, through the trunk, ended by our BYE.
    let calls = api
        .poll("/v1/calls", Duration::from_secs(15), |v| {
            v["items"].as_array().is_some_and(|items| {
                items.iter().any(|c| {
                    c["trunk_id"] == trunk_id.as_str()
                        && c["status"].as_str().is_some_and(|s| {
                            s != "queued" && s != "dialing" && s != "ringing" && s != "answered"
                        })
                })
            })
        })
        .await;
    let call = calls["items"]
        .as_array()
        .and_then(|items| items.iter().find(|c| c["trunk_id"] == trunk_id.as_str()))
        .expect("the trunk's call")
        .clone();
    let id = call["id"].as_str().expect("call id");
    let events = api.get(&format!("/v1/calls/{id}/events")).await;
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        kinds.contains(&"sip.bye_sent") && !kinds.contains(&"sip.bye_received"),
        "the route's script hung up (we sent the BYE): {kinds:?}"
    );
    let created: &Value = events["items"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["kind"] == "call.created"))
        .expect("call.created");
    assert_eq!(
        created["details"]["trunk_id"],
        trunk_id.as_str(),
        "{created}"
    );
    drop(sipp);
    common::send_sigterm(&serve);
    let (st, err) = common::wait_child(serve, "callplane serve").await;
    assert!(st.success(), "serve exit {st}: {err}");
}

/// Sends an INVITE from `sock` to `to` and returns the first line of the first final response
/// (or what happened instead).
async fn invite_status(sock: &UdpSocket, to: &str, n: u32) -> String {
    let local = sock.local_addr().expect("local");
    let msg = format!(
        "INVITE sip:15550100@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-stranger-{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:stranger@{local}>;tag=s{n}\r\n\
         To: <sip:15550100@{to}>\r\n\
         Call-ID: stranger-{n}@127.0.0.2\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:stranger@{local}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), to).await.expect("send");
    let mut buf = vec![0u8; 4096];
    loop {
        match timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await {
            Ok(Ok((len, _))) => {
                let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                let first = text.lines().next().unwrap_or_default().to_owned();
                // Skip provisional responses.
                if first.starts_with("SIP/2.0 1") {
                    continue;
                }
                return first;
            }
            Ok(Err(e)) => return format!("recv error: {e}"),
            Err(_) => return "no response".to_owned(),
        }
    }
}
