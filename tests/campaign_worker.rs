//! The campaign worker end to end: the real `callplane serve` binary dials a campaign created
//! through the API against sipp answering (or refusing) on loopback through a trunk.
//!
//! - every contact ends in the state its outcome dictates, each dialed once per attempt;
//! - busy contacts are retried by the campaign's (shortened) policy, then exhausted;
//! - an `opt_out` step puts the number on the tenant's do-not-call list;
//! - the slot-to-INVITE latency: from a call's final event to the next `call.created`, with
//!   `max_concurrent` 1 so every start waits for an end (printed as p50/p99).
//!
//! The claim semantics (limits across concurrent claimers, GCRA, caps, leases) are unit
//! tests of `src/store/sql/dial.rs` on both databases.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::Child;

use common::{LOCALHOST, ServeClient, sipp_available, spawn_callplane, spawn_sipp_on_free_port};

/// A running `serve` with every stdout line it printed.
struct Node {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    api: ServeClient,
}

async fn start_serve(dir: &Path, extra: &[&str]) -> Node {
    let data = dir.join("data");
    let data = data.to_str().expect("utf-8 path");
    let mut args = vec![
        "serve",
        "--sip",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--data-dir",
        data,
    ];
    args.extend_from_slice(extra);
    let (child, mut rx) = spawn_callplane(dir, &args);
    let (api, key, _) = common::serve_started(&mut rx).await;
    let key = key.expect("a fresh database prints its owner key");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    // Drained all along: a full pipe would stall serve.
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                sink.lock().expect("lines").push(v);
            }
        }
    });
    Node {
        child,
        lines,
        api: ServeClient::new(api, key),
    }
}

async fn post(api: &ServeClient, path: &str, body: Value) -> Value {
    let (status, reply) = api.send(Method::POST, path, Some(&body)).await;
    assert!(
        (200..300).contains(&status),
        "POST {path} {body}: {status} {reply}"
    );
    reply
}

fn every_day() -> Value {
    let all = json!(["00:00-24:00"]);
    json!({"mon": all, "tue": all, "wed": all, "thu": all, "fri": all, "sat": all, "sun": all})
}

/// A trunk to sipp, a campaign with `extra` settings, `n` contacts; started. Returns the
/// campaign id and the numbers.
async fn campaign(
    api: &ServeClient,
    sipp_port: u16,
    n: usize,
    extra: Value,
) -> (String, Vec<String>) {
    let trunk = post(
        api,
        "/v1/trunks",
        json!({"name": format!("sipp{sipp_port}"), "address": format!("127.0.0.1:{sipp_port}"), "transport": "udp"}),
    )
    .await;
    let mut body = json!({
        "name": "worker test",
        "trunk_ids": [trunk["id"]],
        "max_concurrent": 1,
        "max_cps": 50,
        "ring_timeout_s": 5,
        "windows": every_day(),
    });
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    let created = post(api, "/v1/campaigns", body).await;
    let id = created["id"].as_str().expect("campaign id").to_owned();
    let phones: Vec<String> = (0..n).map(|i| format!("+1202555{:04}", 1000 + i)).collect();
    let contacts: Vec<Value> = phones
        .iter()
        .map(|p| json!({"phone": p, "variables": {"k": "v"}}))
        .collect();
    let report = post(
        api,
        &format!("/v1/campaigns/{id}/contacts"),
        json!(contacts),
    )
    .await;
    assert_eq!(report["accepted"], json!(n), "{report}");
    post(api, &format!("/v1/campaigns/{id}/start"), json!({})).await;
    (id, phones)
}

/// Waits until the campaign is completed (the worker completes it once no contact is queued
/// or dialing).
async fn wait_completed(api: &ServeClient, id: &str, limit: Duration) -> Value {
    api.poll(&format!("/v1/campaigns/{id}"), limit, |c| {
        c["status"] == "completed"
    })
    .await
}

async fn contacts(api: &ServeClient, id: &str) -> Vec<Value> {
    let page = api
        .get(&format!("/v1/campaigns/{id}/contacts?limit=500"))
        .await;
    page["items"].as_array().expect("items").clone()
}

fn stop(mut node: Node) {
    let _ = node.child.start_kill();
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_contact_is_dialed_once_and_the_next_call_follows_the_end_at_once() {
    dial_every_contact_once("SQLite", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_contact_is_dialed_once_on_postgres_too() {
    let Some(url) = common::db::pg_url_for_tests() else {
        return;
    };
    dial_every_contact_once("PostgreSQL", Some(&url)).await;
}

async fn dial_every_contact_once(db: &str, database_url: Option<&str>) {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = spawn_sipp_on_free_port(dir.path(), |port| {
        [
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-timeout",
            "120s",
            "-nostdin",
            "-trace_stat",
            "-fd",
            "1",
        ]
        .map(str::to_owned)
        .to_vec()
    })
    .await;
    let mut extra = vec!["--campaign-max-calls", "5"];
    if let Some(url) = database_url {
        extra.extend(["--database-url", url]);
    }
    let node = start_serve(dir.path(), &extra).await;
    const N: usize = 30;
    let (id, phones) = campaign(&node.api, port, N, json!({})).await;
    let done = wait_completed(&node.api, &id, Duration::from_secs(90)).await;
    let all = contacts(&node.api, &id).await;
    assert_eq!(all.len(), N);
    for c in &all {
        assert_eq!(c["status"], "completed", "{c:#}");
        assert_eq!(c["attempts"], 1, "{c:#}");
        assert_eq!(c["last_outcome"], "answered", "{c:#}");
    }
    // Each number was called exactly once (the calls of the campaign, by their To user).
    let calls = node
        .api
        .get(&format!("/v1/calls?campaign_id={id}&limit=500"))
        .await;
    let calls = calls["items"].as_array().expect("items").clone();
    assert_eq!(calls.len(), N, "{done:#}");
    let mut called: Vec<String> = calls
        .iter()
        .map(|c| {
            let to = c["to"].as_str().expect("to");
            to["sip:".len()..to.find('@').expect("@")].to_owned()
        })
        .collect();
    called.sort();
    let mut want = phones.clone();
    want.sort();
    assert_eq!(called, want);

    // Slot-to-INVITE: max_concurrent 1, so each call.created after the first follows the
    // final event of the call before it.
    let lines = node.lines.lock().expect("lines").clone();
    let mut marks: Vec<(i64, bool)> = lines
        .iter()
        .filter(|e| e["tag"].is_string())
        .filter_map(|e| {
            let at = e["at_unix_us"].as_i64()?;
            match e["kind"].as_str()? {
                "call.created" => Some((at, false)),
                "call.completed" | "call.failed" => Some((at, true)),
                _ => None,
            }
        })
        .collect();
    marks.sort();
    let mut gaps = Vec::new();
    let mut last_end = None;
    for (at, is_end) in marks {
        if is_end {
            last_end = Some(at);
        } else if let Some(end) = last_end.take() {
            gaps.push(at - end);
        }
    }
    assert_eq!(gaps.len(), N - 1, "one gap per call after the first");
    gaps.sort_unstable();
    let (p50, p99) = (percentile(&gaps, 0.5), percentile(&gaps, 0.99));
    eprintln!(
        "slot-to-INVITE over {} gaps (final event -> next call.created, {db}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        gaps.len(),
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        *gaps.last().expect("gaps") as f64 / 1000.0
    );
    // Event driven: the next call waits for no tick. Starting calls from the 1 s refresh
    // would spread the gaps over 0..1 s (p50 near 500 ms). The bounds leave room for a loaded
    // machine (the target, 50 ms, is what the note reports, measured here).
    assert!(p50 < 200_000, "p50 {p50} µs: {gaps:?}");
    assert!(p99 < 900_000, "p99 {p99} µs: {gaps:?}");
    stop(node);
    drop(sipp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_contacts_follow_the_retry_policy_then_are_exhausted() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = common::fixture("busy_uas.xml");
    let scenario = scenario.to_str().expect("utf-8").to_owned();
    let (sipp, port) = spawn_sipp_on_free_port(dir.path(), move |port| {
        [
            "-sf",
            &scenario,
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-timeout",
            "120s",
            "-nostdin",
        ]
        .map(str::to_owned)
        .to_vec()
    })
    .await;
    let node = start_serve(dir.path(), &[]).await;
    let retry = json!({
        "rules": {"busy": {"max_retries": 2, "after_s": 1}},
        "backoff": 1.0,
        "jitter": 0.0,
    });
    let (id, _) = campaign(
        &node.api,
        port,
        3,
        json!({"max_concurrent": 3, "retry": retry}),
    )
    .await;
    wait_completed(&node.api, &id, Duration::from_secs(60)).await;
    for c in contacts(&node.api, &id).await {
        assert_eq!(c["status"], "exhausted", "{c:#}");
        assert_eq!(c["attempts"], 3, "{c:#}");
        let full = node
            .api
            .get(&format!(
                "/v1/campaigns/{id}/contacts/{}",
                c["id"].as_str().expect("id")
            ))
            .await;
        let attempts = full["attempt_history"]
            .as_array()
            .expect("attempts")
            .clone();
        assert_eq!(attempts.len(), 3, "{full:#}");
        let mut claimed = Vec::new();
        for a in &attempts {
            assert_eq!(a["outcome"], "busy", "{full:#}");
            assert!(a["call_id"].is_string(), "{full:#}");
            assert!(
                a["rule"].as_str().is_some_and(|r| r.starts_with("busy")),
                "{full:#}"
            );
            let at: jiff::Timestamp = a["claimed_at"]
                .as_str()
                .expect("claimed_at")
                .parse()
                .expect("RFC 3339");
            claimed.push(at);
        }
        for w in claimed.windows(2) {
            let gap = w[1].duration_since(w[0]);
            assert!(
                gap >= jiff::SignedDuration::from_millis(900),
                "retries wait after_s 1: {full:#}"
            );
        }
    }
    stop(node);
    drop(sipp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_step_puts_the_number_on_the_do_not_call_list() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = spawn_sipp_on_free_port(dir.path(), |port| {
        [
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-timeout",
            "120s",
            "-nostdin",
        ]
        .map(str::to_owned)
        .to_vec()
    })
    .await;
    let node = start_serve(dir.path(), &[]).await;
    let script = post(
        &node.api,
        "/v1/scripts",
        json!({"name": "stop", "body": {"version": 1, "steps": [
            {"opt_out": {"reason": "asked to stop"}},
            {"hangup": {"reason": "opted_out"}}
        ]}}),
    )
    .await;
    let (id, phones) = campaign(
        &node.api,
        port,
        2,
        json!({"script_id": script["id"], "max_concurrent": 2}),
    )
    .await;
    wait_completed(&node.api, &id, Duration::from_secs(60)).await;
    let list = node.api.get("/v1/suppressions?limit=100").await;
    let items = list["items"].as_array().expect("items").clone();
    for phone in &phones {
        let entry = items
            .iter()
            .find(|s| s["number"] == *phone)
            .unwrap_or_else(|| panic!("{phone} not suppressed: {list:#}"));
        assert_eq!(entry["source"], "opt_out", "{entry}");
        assert_eq!(entry["reason"], "asked to stop", "{entry}");
    }
    // Their calls' timelines carry the step.
    let lines = node.lines.lock().expect("lines").clone();
    let opt_outs = lines
        .iter()
        .filter(|e| e["kind"] == "script.opt_out")
        .count();
    assert_eq!(opt_outs, 2);
    let _ = LOCALHOST;
    stop(node);
    drop(sipp);
}
