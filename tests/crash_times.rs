//! `kill -9` of `callplane serve` during an answered call, some downtime, a restart on the same
//! data directory: the call is ended (`process_restart`), and its end is the last thing known of
//! it, not the restart. `ended_at` and `talk_ms` lie within the call's real span (answer → kill),
//! and the end is marked as estimated on the final event, the call read, the listing and the
//! manifest (docs/api.md "Estimated ends").
//!
//! Real processes on loopback: `serve` calls a sipp UAS (which answers and waits for a BYE that
//! never comes) through the API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::time::timeout;

mod common;
use common::*;

/// Upper bound for any one wait.
const WAIT: Duration = Duration::from_secs(30);
/// How long the call is up before the kill: its real span.
const TALK: Duration = Duration::from_millis(1500);
/// How long serve stays dead: what must not be billed.
const DOWNTIME: Duration = Duration::from_secs(4);

fn unix_us_now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_micros()).expect("fits")
}

#[tokio::test]
async fn after_kill_9_a_live_call_ends_at_the_last_thing_known_and_says_it_was_estimated() {
    if !sipp_available() {
        return;
    }
    // The embedded SQLite, then PostgreSQL (a fresh database) when one is available.
    kill_9_mid_call(None).await;
    if let Some(url) = common::db::pg_url_for_tests() {
        kill_9_mid_call(Some(&url)).await;
    }
}

async fn kill_9_mid_call(database_url: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("UTF-8 path").to_owned();
    let mut serve_args = vec!["serve", "--sip", "127.0.0.1:0", "--data-dir", &data];
    if let Some(url) = database_url {
        serve_args.extend(["--database-url", url]);
    }

    let (mut serve, mut lines) = spawn_callplane(dir.path(), &serve_args);
    let (base, key, seen) = serve_started(&mut lines).await;
    let key = key.unwrap_or_else(|| panic!("a bootstrap key on an empty database: {seen:?}"));
    let api = ServeClient::new(base, key.clone());

    // A UAS that answers and then waits (up to its own timeout) for a BYE.
    let (_uas, uas_port) = spawn_sipp_on_free_port(dir.path(), |port| {
        [
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
            "-timeout",
            "60s",
        ]
        .map(String::from)
        .to_vec()
    })
    .await;
    let (status, call) = api
        .send(
            reqwest::Method::POST,
            "/v1/calls",
            Some(&json!({"to": format!("sip:talk@127.0.0.1:{uas_port}"), "record": true})),
        )
        .await;
    assert_eq!(status, 201, "{call}");
    let id = call["id"].as_str().expect("call id").to_owned();
    let path = format!("/v1/calls/{id}");
    let answered = api.poll(&path, WAIT, |c| c["status"] == "answered").await;
    let answered_at = answered["answered_at_us"].as_i64().expect("answered_at_us");

    // The call is up for a while; this wait is the call's duration, not a synchronisation.
    tokio::time::sleep(TALK).await;
    let kill_us = unix_us_now();
    serve.start_kill().expect("kill -9 serve");
    timeout(WAIT, serve.wait())
        .await
        .expect("serve died in time")
        .expect("wait for serve");
    // The downtime that must not be billed.
    tokio::time::sleep(DOWNTIME).await;

    let restart_us = unix_us_now();
    let (mut serve2, mut lines2) = spawn_callplane(dir.path(), &serve_args);
    let (base2, _, _) = serve_started(&mut lines2).await;
    let api = ServeClient::new(base2, key);
    // close_orphans runs before serve listens: the call has ended by now.
    let ended = api.get(&path).await;
    assert_eq!(ended["status"], "failed", "{ended:#}");
    assert_eq!(ended["end_reason"], "process_restart", "{ended:#}");
    let ended_at = ended["ended_at_us"].as_i64().expect("ended_at_us");
    let talk_ms = ended["durations"]["talk_ms"].as_i64().expect("talk_ms");
    let real_ms = (kill_us - answered_at) / 1000;
    eprintln!(
        "{}: answered {answered_at}, killed {kill_us} (real talk {real_ms} ms), restarted {restart_us}, \
         ended_at {ended_at} (talk_ms {talk_ms})",
        if database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    );
    assert!(
        (answered_at..=kill_us).contains(&ended_at),
        "ended_at {ended_at} is outside the call's real span {answered_at}..={kill_us} \
         (restart at {restart_us}): {ended:#}"
    );
    assert!(
        (0..=real_ms).contains(&talk_ms),
        "talk_ms {talk_ms} bills more than the real {real_ms} ms: {ended:#}"
    );
    assert_eq!(ended["estimated_end"], true, "{ended:#}");

    // The final event says so and names the evidence.
    let events = api.get(&format!("{path}/events")).await;
    let items = events["items"].as_array().expect("items");
    let last: &Value = items.last().expect("events");
    assert_eq!(last["kind"], "call.failed", "{events:#}");
    assert_eq!(last["at_unix_us"].as_i64(), Some(ended_at), "{last:#}");
    assert_eq!(last["details"]["estimated_end"], true, "{last:#}");
    assert!(last["details"]["estimated_from"].is_string(), "{last:#}");
    assert!(
        last["details"]["closed_at_unix_us"].as_i64() >= Some(restart_us),
        "{last:#}"
    );
    // So do the listing and the sealed manifest.
    let list = api.get("/v1/calls?status=failed").await;
    let listed = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap_or_else(|| panic!("the call is listed: {list:#}"));
    assert_eq!(listed["estimated_end"], true, "{listed:#}");
    let manifest = api.get(&format!("{path}/manifest")).await;
    assert_eq!(manifest["final"], true, "{manifest:#}");
    assert_eq!(manifest["estimated_end"], true, "{manifest:#}");
    assert_eq!(
        manifest["ended_at_us"].as_i64(),
        Some(ended_at),
        "{manifest:#}"
    );

    serve2.start_kill().expect("stop the second serve");
    let _ = timeout(WAIT, serve2.wait()).await;
}
