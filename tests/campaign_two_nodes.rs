//! Two `callplane serve` processes on one PostgreSQL database share one campaign (#10,
//! "scale-out"): each has its own data directory (so its own node id) and its own SIP port, and
//! both dial the same campaign to one sipp UAS. From the callee's side:
//! - at most `max_concurrent` calls live at once across both nodes (sipp's `CurrentCall` and
//!   the exact intervals of its message trace);
//! - 0 duplicates (no number got more INVITEs than its contact has attempts; every Call-ID is
//!   one attempt's call);
//! - every contact ends as its outcome dictates, and both nodes dialed.
//!
//! Each node may hold [`NODE_MAX`] campaign calls (`--campaign-max-calls`), together more than the
//! campaign's limit: the limit across nodes is the database's claim alone, and neither node can
//! take every slot. (Nodes are not balanced otherwise: a node whose call ends claims the freed
//! slot at once, so without a node limit one node may place nearly every call; docs/campaigns.md.)
//!
//! PostgreSQL only (skipped without `CALLPLANE_TEST_PG`, except under CI).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

mod common;
use common::campaign::*;
use common::*;

const MAX_CONCURRENT: u32 = 10;
/// Each node's own limit: more than half the campaign's, less than all of it.
const NODE_MAX: &str = "6";
const CAMPAIGN_WAIT: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_share_a_campaign_within_its_limit_without_duplicates() {
    if !sipp_available() {
        return;
    }
    let Some(url) = db::pg_url_for_tests() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let callee = Callee::start(dir.path()).await;
    let a = Serve::start(
        dir.path(),
        &dir.path().join("data-a"),
        Some(&url),
        &["--campaign-max-calls", NODE_MAX],
        &dir.path().join("serve-a.log"),
    )
    .await;
    let key = a.bootstrap_key.clone().expect("a bootstrap key");
    let b = Serve::start(
        dir.path(),
        &dir.path().join("data-b"),
        Some(&url),
        &["--campaign-max-calls", NODE_MAX],
        &dir.path().join("serve-b.log"),
    )
    .await;
    let api = ServeClient::new(a.base.clone(), key.clone());
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            "/v1/settings/limits",
            Some(&json!({"number_cap": 100, "number_cap_window_s": 86400})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let phones = numbers(&[(Behaviour::Answer, 120), (Behaviour::Busy, 30)]);
    let campaign = setup_campaign(
        &api,
        &callee.address(),
        1000,
        |trunk, script| {
            campaign_settings("two", trunk, script, MAX_CONCURRENT, 2, standard_retry())
        },
        &phones,
    )
    .await;
    // Started through node B: the campaign is the database's, not a node's.
    let api_b = ServeClient::new(b.base.clone(), key);
    campaign_action(&api_b, &campaign, "start").await;
    let done = wait_completed(&api, &campaign, CAMPAIGN_WAIT).await;
    let contacts = results(&api, &campaign).await;
    let duplicates = duplicate_dials(&api, &callee.record(), &contacts).await;
    let peer = callee.stop().await;

    let (most, at) = peer.max_live();
    let nodes: BTreeSet<&str> = contacts
        .iter()
        .flat_map(|c| c.attempts.iter())
        .filter_map(|x| x["node_id"].as_str())
        .collect();
    let created = |s: &Serve| {
        s.calls
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|e| e["kind"] == "call.created")
            .count()
    };
    eprintln!(
        "{} calls at the callee, at most {most} open at once (at {at:.3}), sipp's CurrentCall at \
         most {}; node A placed {}, node B {}; nodes in the attempts: {nodes:?}; counts {}",
        peer.calls.len(),
        peer.max_current_call(),
        created(&a),
        created(&b),
        done["progress"]["contacts"]
    );
    assert!(
        duplicates.is_empty(),
        "dialed twice:\n{}",
        duplicates.join("\n")
    );
    assert!(
        peer.max_current_call() <= MAX_CONCURRENT,
        "sipp counted {} calls at once across both nodes (limit {MAX_CONCURRENT}): {:?}",
        peer.max_current_call(),
        peer.current_call_samples
    );
    assert!(
        most <= MAX_CONCURRENT as usize,
        "{most} calls open at the callee at once at {at:.3} across both nodes (limit \
         {MAX_CONCURRENT})"
    );
    assert!(
        created(&a) > 0 && created(&b) > 0,
        "both nodes dialed: A {}, B {}",
        created(&a),
        created(&b)
    );
    assert_eq!(nodes.len(), 2, "attempts name both nodes: {nodes:?}");
    let mut wrong = Vec::new();
    for c in &contacts {
        let (status, attempts, outcome) = expected_end(Behaviour::of(c.phone()));
        if c.status() != status
            || c.attempt_count() != attempts
            || c.contact["last_outcome"] != outcome
        {
            wrong.push(format!(
                "{}: {} after {} attempts, last {}",
                c.phone(),
                c.status(),
                c.attempt_count(),
                c.contact["last_outcome"]
            ));
        }
    }
    assert_eq!(contacts.len(), phones.len());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
