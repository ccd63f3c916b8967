//! kill -9 in the middle of a campaign (#10, "Crash safety"): `callplane serve` dials a
//! campaign to a sipp UAS, is killed with SIGKILL once the callee has received a good part of
//! the INVITEs, and is started again on the same data directory and database. The campaign
//! must then finish with
//! - 0 lost contacts: every contact in a final state (completed, failed, exhausted), and
//! - 0 duplicates, from the callee's side: no number received more INVITEs (distinct
//!   Call-IDs) than its contact has attempts, and every Call-ID the callee received is the
//!   call of one of that contact's attempts, so no attempt was dialed twice.
//!
//! On SQLite and on PostgreSQL (skipped without `CALLPLANE_TEST_PG`, except under CI).

use std::time::Duration;

use serde_json::json;

mod common;
use common::campaign::*;
use common::*;

const MAX_CONCURRENT: u32 = 10;
/// Contacts in the campaign.
const CONTACTS: u32 = 100;
/// Kill once the callee has received this many INVITEs.
const KILL_AFTER_INVITES: usize = 40;
/// Leases short enough that the restart finds the killed node's expired soon.
const LEASE_S: &str = "3";
const CAMPAIGN_WAIT: Duration = Duration::from_secs(150);

async fn kill_9_mid_campaign(database: &str, url: Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let callee = Callee::start(dir.path()).await;
    let flags = ["--campaign-lease-s", LEASE_S];
    let mut serve = Serve::start(
        dir.path(),
        &data,
        url.as_deref(),
        &flags,
        &dir.path().join("serve1.log"),
    )
    .await;
    let key = serve.bootstrap_key.clone().expect("a bootstrap key");
    let api = ServeClient::new(serve.base.clone(), key.clone());
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            "/v1/settings/limits",
            Some(&json!({"number_cap": 100, "number_cap_window_s": 86400})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let phones = numbers(&[
        (Behaviour::Answer, CONTACTS * 7 / 10),
        (Behaviour::Busy, CONTACTS * 2 / 10),
        (Behaviour::NoAnswer, CONTACTS / 10),
    ]);
    let campaign = setup_campaign(
        &api,
        &callee.address(),
        1000,
        |trunk, script| {
            campaign_settings("crash", trunk, script, MAX_CONCURRENT, 2, standard_retry())
        },
        &phones,
    )
    .await;
    campaign_action(&api, &campaign, "start").await;

    // Mid-campaign, by the callee's count (polled: sipp's trace is a file).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen = callee.record().calls.len();
        if seen >= KILL_AFTER_INVITES {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{database}: the callee got only {seen} INVITEs within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serve.kill9().await;
    let at_kill = callee.record();
    let open_at_kill = at_kill.calls.iter().filter(|c| !c.ended).count();
    eprintln!(
        "{database}: killed after {} INVITEs at the callee, {open_at_kill} calls open",
        at_kill.calls.len()
    );

    let serve2 = Serve::start(
        dir.path(),
        &data,
        url.as_deref(),
        &flags,
        &dir.path().join("serve2.log"),
    )
    .await;
    let api = ServeClient::new(serve2.base.clone(), key);
    let done = wait_completed(&api, &campaign, CAMPAIGN_WAIT).await;
    let contacts = results(&api, &campaign).await;
    let duplicates = duplicate_dials(&api, &callee.record(), &contacts).await;
    let peer = callee.stop().await;

    let lost: Vec<String> = contacts
        .iter()
        .filter(|c| !matches!(c.status(), "completed" | "failed" | "exhausted"))
        .map(|c| {
            format!(
                "{} {} ({} attempts)",
                c.phone(),
                c.status(),
                c.attempt_count()
            )
        })
        .collect();
    let listed: std::collections::BTreeSet<&str> =
        contacts.iter().map(ContactResult::phone).collect();
    let missing: Vec<&String> = phones
        .iter()
        .filter(|p| !listed.contains(p.as_str()))
        .collect();
    eprintln!(
        "{database}: {} INVITEs at the callee in all, {} contacts, counts {}",
        peer.calls.len(),
        contacts.len(),
        done["progress"]["contacts"]
    );
    assert!(missing.is_empty(), "{database}: contacts gone: {missing:?}");
    assert!(
        lost.is_empty(),
        "{database}: {} contacts not final: {lost:?}",
        lost.len()
    );
    assert!(
        duplicates.is_empty(),
        "{database}: dialed twice:\n{}",
        duplicates.join("\n")
    );
    // The kill happened mid-campaign: calls came after the restart too.
    assert!(
        peer.calls.len() > at_kill.calls.len(),
        "{database}: nothing was dialed after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_campaign_loses_and_duplicates_nobody_on_sqlite() {
    if !sipp_available() {
        return;
    }
    kill_9_mid_campaign("sqlite", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_campaign_loses_and_duplicates_nobody_on_postgres() {
    if !sipp_available() {
        return;
    }
    let Some(url) = db::pg_url_for_tests() else {
        return;
    };
    kill_9_mid_campaign("postgres", Some(url)).await;
}
