//! End to end through the control plane: the real `callplane serve` binary, its REST API over
//! real TCP, a sipp UAS answering the call, and the timeline read back over the API and SSE.
//! Runs on the embedded SQLite and, where one is available, on PostgreSQL.

mod common;

use std::time::Duration;

use common::{LOCALHOST, sipp_available, spawn_callplane, spawn_sipp_on_free_port, wait_child};
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// A running `serve` and what it printed at start.
struct Serve {
    child: Child,
    _rx: mpsc::Receiver<String>,
    api: String,
    key: String,
}

/// Starts `serve` on loopback with a fresh data directory (and `database_url` when given).
async fn start_serve(dir: &std::path::Path, database_url: Option<&str>) -> Serve {
    let data = dir.join("data");
    let data = data.to_str().expect("utf-8 path").to_owned();
    let mut args = vec![
        "serve",
        "--sip",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--data-dir",
        &data,
    ];
    if let Some(url) = database_url {
        args.extend(["--database-url", url]);
    }
    let (child, mut rx) = spawn_callplane(dir, &args);
    let (api, key, seen) = common::serve_started(&mut rx).await;
    Serve {
        child,
        _rx: rx,
        api,
        key: key.unwrap_or_else(|| panic!("a bootstrap key on an empty database: {seen:?}")),
    }
}

/// The stores to run against: SQLite always, PostgreSQL when the environment has one.
fn databases() -> Vec<(&'static str, Option<String>)> {
    let mut out = vec![("sqlite", None)];
    if let Some(url) = common::db::pg_url_for_tests() {
        out.push(("postgres", Some(url)));
    }
    out
}

/// One parsed Server-Sent Event.
#[derive(Debug, Clone)]
struct Sse {
    id: i64,
    kind: String,
    data: Value,
}

/// Reads SSE events from `resp` until `done` holds for one (bounded by `limit`).
async fn read_sse(
    resp: &mut reqwest::Response,
    limit: Duration,
    done: impl Fn(&Sse) -> bool,
) -> Vec<Sse> {
    let deadline = Instant::now() + limit;
    let mut buf = String::new();
    let mut out = Vec::new();
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (None, None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<i64>().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            // Keep-alive comments have no id.
            if let (Some(id), Some(kind)) = (id, kind) {
                let ev = Sse {
                    id,
                    kind,
                    data: serde_json::from_str(&data).expect("SSE data is JSON"),
                };
                let stop = done(&ev);
                out.push(ev);
                if stop {
                    return out;
                }
            }
        }
        let chunk = timeout(
            deadline.saturating_duration_since(Instant::now()),
            resp.chunk(),
        )
        .await
        .unwrap_or_else(|_| panic!("SSE: no final event in time; got {out:#?}"))
        .expect("SSE stream")
        .unwrap_or_else(|| panic!("SSE stream ended; got {out:#?}"));
        buf.push_str(std::str::from_utf8(&chunk).expect("SSE is UTF-8"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_call_to_a_sipp_uas_is_answered_with_real_durations_and_streams_its_timeline() {
    if !sipp_available() {
        return;
    }
    for (db, url) in databases() {
        eprintln!("database: {db}");
        api_call_round_trip(url.as_deref()).await;
    }
}

async fn api_call_round_trip(database_url: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = spawn_sipp_on_free_port(dir.path(), |port| {
        [
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "2",
            "-timeout",
            "30s",
        ]
        .map(String::from)
        .to_vec()
    })
    .await;
    let serve = start_serve(dir.path(), database_url).await;
    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", serve.key);

    // Listen first, so that the stream must carry the whole timeline live.
    let mut stream = http
        .get(format!("{}/v1/events", serve.api))
        .header("Authorization", &auth)
        .send()
        .await
        .expect("GET /v1/events");
    assert_eq!(stream.status(), 200);

    let first = json!({
        "to": format!("sip:service@{LOCALHOST}:{port}"),
        "hangup_after_s": 1,
        "ring_timeout_s": 10,
        "record": true,
    });
    let resp = http
        .post(format!("{}/v1/calls", serve.api))
        .header("Authorization", &auth)
        .header("Idempotency-Key", "e2e-1")
        .json(&first)
        .send()
        .await
        .expect("POST /v1/calls");
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    let call: Value = resp.json().await.expect("call JSON");
    let id = call["id"].as_str().expect("call id").to_owned();

    let live = read_sse(&mut stream, Duration::from_secs(30), |e| {
        e.data["call_id"] == id.as_str() && e.kind == "call.completed"
    })
    .await;
    let live: Vec<Sse> = live
        .into_iter()
        .filter(|e| e.data["call_id"] == id.as_str())
        .collect();

    // The stored timeline is what SSE delivered: same ids, same kinds, same order.
    let timeline: Value = http
        .get(format!("{}/v1/calls/{id}/events", serve.api))
        .header("Authorization", &auth)
        .send()
        .await
        .expect("GET events")
        .json()
        .await
        .expect("events JSON");
    let stored = timeline["items"]
        .as_array()
        .or_else(|| timeline.as_array())
        .expect("a list of events")
        .clone();
    let stored_ids: Vec<i64> = stored
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    let live_ids: Vec<i64> = live.iter().map(|e| e.id).collect();
    assert_eq!(
        live_ids, stored_ids,
        "SSE delivered every stored event, in order"
    );
    assert!(live_ids.windows(2).all(|w| w[0] < w[1]), "{live_ids:?}");
    let kinds: Vec<&str> = live.iter().map(|e| e.kind.as_str()).collect();
    for k in [
        "call.created",
        "sip.invite_sent",
        "sip.answered",
        "sip.bye_sent",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    assert_eq!(kinds.last(), Some(&"call.completed"));

    // The call row: outcome and durations from the real messages.
    let got: Value = http
        .get(format!("{}/v1/calls/{id}", serve.api))
        .header("Authorization", &auth)
        .send()
        .await
        .expect("GET call")
        .json()
        .await
        .expect("call JSON");
    assert_eq!(got["status"], "completed", "{got:#}");
    assert_eq!(got["outcome"], "answered", "{got:#}");
    assert_eq!(got["sip_status"], 200, "{got:#}");
    let talk = got["durations"]["talk_ms"].as_i64().expect("talk_ms");
    assert!(
        (900..5000).contains(&talk),
        "talk {talk} ms for hangup_after 1 s"
    );
    let answered = got["answered_at_us"].as_i64().expect("answered_at_us");
    let ended = got["ended_at_us"].as_i64().expect("ended_at_us");
    let answered_event = live
        .iter()
        .find(|e| e.kind == "sip.answered")
        .expect("sip.answered");
    assert_eq!(
        answered,
        answered_event.data["at_unix_us"].as_i64().expect("at")
    );
    assert!(ended > answered);

    // A reconnect with Last-Event-ID gets exactly what came after it.
    let resume_after = live_ids[2];
    let mut resumed = http
        .get(format!("{}/v1/events?call_id={id}", serve.api))
        .header("Authorization", &auth)
        .header("Last-Event-ID", resume_after.to_string())
        .send()
        .await
        .expect("GET /v1/events again");
    let rest = read_sse(&mut resumed, Duration::from_secs(10), |e| {
        e.kind == "call.completed"
    })
    .await;
    let rest_ids: Vec<i64> = rest.iter().map(|e| e.id).collect();
    assert_eq!(rest_ids, live_ids[3..].to_vec());

    // The same idempotency key returns the same call and dials nobody again.
    let again = http
        .post(format!("{}/v1/calls", serve.api))
        .header("Authorization", &auth)
        .header("Idempotency-Key", "e2e-1")
        .json(&first)
        .send()
        .await
        .expect("POST again");
    assert!(again.status().is_success());
    let again: Value = again.json().await.expect("JSON");
    assert_eq!(again["id"], id.as_str());

    // An inline script steered by the call's variables; its result lands on the call row.
    let resp = http
        .post(format!("{}/v1/calls", serve.api))
        .header("Authorization", &auth)
        .json(&json!({
            "to": format!("sip:service@{LOCALHOST}:{port}"),
            "variables": {"lang": "fr"},
            "script": {"version": 1, "steps": [
                {"pause": {"ms": 300}},
                {"branch": {"on": "lang",
                            "cases": {"fr": [{"hangup": {"reason": "bonjour"}}]},
                            "default": [{"hangup": {"reason": "hello"}}]}}]},
        }))
        .send()
        .await
        .expect("POST a scripted call");
    assert_eq!(resp.status(), 201);
    let scripted: Value = resp.json().await.expect("JSON");
    let scripted_id = scripted["id"].as_str().expect("id").to_owned();
    let mut done = Value::Null;
    for _ in 0..100 {
        done = http
            .get(format!("{}/v1/calls/{scripted_id}", serve.api))
            .header("Authorization", &auth)
            .send()
            .await
            .expect("GET call")
            .json()
            .await
            .expect("JSON");
        if done["status"] == "completed" || done["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done["outcome"], "answered", "{done:#}");
    assert_eq!(
        done["result"]["script"]["outcome"]["reason"], "bonjour",
        "{done:#}"
    );
    assert_eq!(
        done["result"]["script"]["variables"]["lang"], "fr",
        "{done:#}"
    );

    let (status, err) = wait_child(sipp, "sipp").await;
    assert!(status.success(), "sipp UAS saw two complete calls: {err}");
    let mut child = serve.child;
    let _ = child.start_kill();
    let _ = child.wait().await;
}
