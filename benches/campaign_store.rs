//! Campaign store throughput (#10): how fast contacts are claimed (the lease transaction that
//! checks the campaign's limits and opens an attempt) and how fast outcomes are written
//! (`end_attempt`: the attempt closed, the contact moved on, its lease dropped), on SQLite and
//! on PostgreSQL, through the [`CampaignStore`] trait as the worker uses it.
//!
//! `cargo bench --bench campaign_store` (PostgreSQL too when `CALLPLANE_TEST_PG` names a
//! server: a fresh database is created and dropped). Prints rows per second and per-transaction
//! latency percentiles. A benchmark, not a test: nothing here asserts a time; it does check
//! that no contact was claimed twice by the concurrent claimers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callplane::campaign::model::{CampaignSettings, CampaignStatus, ContactStatus};
use callplane::store::campaign::{AttemptEnd, ClaimRequest, NewCampaign, NewContact};
use callplane::store::{SqlStore, Store};
use serde_json::json;

/// Contacts in the campaign.
const CONTACTS: usize = 10_000;
/// Contacts per insert transaction.
const INSERT_BATCH: usize = 1_000;
/// Claims of one contact each, by one claimer (what the worker does per freed slot; a claim
/// of more takes one anyway, as the calls/s GCRA has a burst of one).
const SINGLE_CLAIMS: usize = 2_000;
/// Concurrent claimers (nodes), each claiming one contact at a time.
const CLAIMERS: usize = 4;
/// Claims per concurrent claimer.
const CLAIMS_EACH: usize = 500;

fn now_us() -> i64 {
    callplane::clock::unix_us()
}

fn settings() -> CampaignSettings {
    // Limits far above what the bench claims: this measures the store, not the pacing.
    serde_json::from_value(json!({
        "name": "bench",
        "max_concurrent": 1_000_000,
        "max_cps": 1_000_000.0,
        "windows": {"mon": ["00:00-24:00"], "tue": ["00:00-24:00"], "wed": ["00:00-24:00"],
            "thu": ["00:00-24:00"], "fri": ["00:00-24:00"], "sat": ["00:00-24:00"],
            "sun": ["00:00-24:00"]},
    }))
    .expect("settings")
}

fn claim_request(campaign: &str, node: &str, max: u32) -> ClaimRequest {
    ClaimRequest {
        campaign_id: campaign.to_owned(),
        node_id: node.to_owned(),
        now_us: now_us(),
        lease_us: 600_000_000,
        max,
        tenant_max_concurrent: None,
        number_cap: 1_000,
        number_cap_window_us: 86_400_000_000,
    }
}

fn report(label: &str, mut lat: Vec<Duration>, rows: usize, wall: Duration) {
    if lat.is_empty() {
        println!("{label:<44} nothing measured");
        return;
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    println!(
        "{label:<44} {:>8.0} rows/s   txn p50 {:>8.1} µs   p99 {:>9.1} µs   max {:>9.1} µs",
        rows as f64 / wall.as_secs_f64(),
        p(0.50).as_secs_f64() * 1e6,
        p(0.99).as_secs_f64() * 1e6,
        lat[lat.len() - 1].as_secs_f64() * 1e6,
    );
}

fn end(contact_id: &str, attempt: u32) -> AttemptEnd {
    AttemptEnd {
        contact_id: contact_id.to_owned(),
        attempt,
        outcome: "answered".to_owned(),
        rule: "answered".to_owned(),
        status: ContactStatus::Completed,
        next_attempt_at_us: None,
        trunk_index: 0,
        reason_code: "answered".to_owned(),
        reason: "answered".to_owned(),
        at_us: now_us(),
    }
}

async fn run(name: &str, store: Arc<dyn Store>) {
    let tenant = store
        .create_tenant("bench", now_us())
        .await
        .expect("tenant");
    let campaign = store
        .create_campaign(&NewCampaign {
            tenant_id: tenant.id.clone(),
            settings: settings(),
            script_version: None,
            at_us: now_us(),
        })
        .await
        .expect("campaign");
    // Contacts, in batches (the JSON/CSV import path's store half).
    let mut lat = Vec::new();
    let t0 = Instant::now();
    for batch in 0..CONTACTS / INSERT_BATCH {
        let rows: Vec<NewContact> = (0..INSERT_BATCH)
            .map(|i| {
                let n = batch * INSERT_BATCH + i;
                NewContact {
                    phone: format!("+3364000{n:04}"),
                    name: None,
                    timezone: None,
                    resolved_tz: "Europe/Paris".to_owned(),
                    variables: BTreeMap::new(),
                    priority: 0,
                    line: Some(n as i64),
                    status: ContactStatus::Queued,
                    reason: None,
                }
            })
            .collect();
        let t = Instant::now();
        store
            .insert_contacts(&tenant.id, &campaign.id, &rows, now_us())
            .await
            .expect("insert contacts");
        lat.push(t.elapsed());
    }
    report(
        &format!("{name}: insert {INSERT_BATCH}/txn"),
        lat,
        CONTACTS,
        t0.elapsed(),
    );
    store
        .set_campaign_status(
            &tenant.id,
            &campaign.id,
            &[CampaignStatus::Draft],
            CampaignStatus::Running,
            now_us(),
        )
        .await
        .expect("start");

    let mut claimed: Vec<(String, u32)> = Vec::new();
    // One claimer, one contact per claim.
    let mut lat = Vec::with_capacity(SINGLE_CLAIMS);
    let t0 = Instant::now();
    for _ in 0..SINGLE_CLAIMS {
        let t = Instant::now();
        let c = store
            .claim_contacts(&claim_request(&campaign.id, "node-1", 1))
            .await
            .expect("claim");
        lat.push(t.elapsed());
        claimed.extend(c.claimed.into_iter().map(|(c, n)| (c.id, n)));
    }
    let n = claimed.len();
    report(
        &format!("{name}: claim 1/txn, 1 claimer"),
        lat,
        n,
        t0.elapsed(),
    );
    // Concurrent claimers (nodes), one contact per claim.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..CLAIMERS {
        let store = store.clone();
        let campaign = campaign.id.clone();
        tasks.push(tokio::spawn(async move {
            let node = format!("node-{}", k + 2);
            let mut lat = Vec::with_capacity(CLAIMS_EACH);
            let mut got = Vec::new();
            for _ in 0..CLAIMS_EACH {
                let t = Instant::now();
                let c = store
                    .claim_contacts(&claim_request(&campaign, &node, 1))
                    .await
                    .expect("claim");
                lat.push(t.elapsed());
                got.extend(c.claimed.into_iter().map(|(c, n)| (c.id, n)));
            }
            (lat, got)
        }));
    }
    let mut lat = Vec::new();
    let before = claimed.len();
    for t in tasks {
        let (l, got) = t.await.expect("claimer");
        lat.extend(l);
        claimed.extend(got);
    }
    report(
        &format!("{name}: claim 1/txn, {CLAIMERS} claimers"),
        lat,
        claimed.len() - before,
        t0.elapsed(),
    );
    let distinct: BTreeSet<&String> = claimed.iter().map(|(id, _)| id).collect();
    assert_eq!(
        distinct.len(),
        claimed.len(),
        "{name}: a contact was claimed twice"
    );

    // Outcomes: one writer, then concurrent writers (live calls ending on one node).
    let half = claimed.len() / 2;
    let (first, rest) = claimed.split_at(half);
    let mut lat = Vec::with_capacity(first.len());
    let t0 = Instant::now();
    for (id, attempt) in first {
        let t = Instant::now();
        let ended = store.end_attempt(&end(id, *attempt)).await.expect("end");
        lat.push(t.elapsed());
        assert!(ended, "{name}: the attempt was open");
    }
    report(
        &format!("{name}: end_attempt, 1 writer"),
        lat,
        first.len(),
        t0.elapsed(),
    );
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for chunk in rest.chunks(rest.len().div_ceil(CLAIMERS).max(1)) {
        let store = store.clone();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(chunk.len());
            for (id, attempt) in &chunk {
                let t = Instant::now();
                store.end_attempt(&end(id, *attempt)).await.expect("end");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("writer"));
    }
    report(
        &format!("{name}: end_attempt, {CLAIMERS} writers"),
        lat,
        rest.len(),
        t0.elapsed(),
    );
    let counts = store
        .campaign_counts(&campaign.id, now_us())
        .await
        .expect("counts");
    println!("{name}: contacts by status {:?}", counts.by_status);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = SqlStore::open_sqlite(&dir.path().join("bench.db"))
            .await
            .expect("sqlite");
        run("sqlite (WAL, file)", Arc::new(sqlite)).await;
        if let Ok(url) = std::env::var("CALLPLANE_TEST_PG") {
            let name = format!("cp_bench_campaign_{}", std::process::id());
            let create = std::process::Command::new("psql")
                .args([&url, "-q", "-c", &format!("CREATE DATABASE {name}")])
                .status()
                .expect("psql");
            assert!(create.success(), "CREATE DATABASE");
            let db_url = match url.rfind('/') {
                Some(i) => format!("{}/{name}", &url[..i]),
                None => panic!("a database URL"),
            };
            let pg = SqlStore::connect(&db_url).await.expect("postgres db");
            run("postgres (loopback)", Arc::new(pg)).await;
            let _ = std::process::Command::new("psql")
                .args([
                    &url,
                    "-q",
                    "-c",
                    &format!("DROP DATABASE {name} WITH (FORCE)"),
                ])
                .status();
        } else {
            println!("postgres: skipped (set CALLPLANE_TEST_PG)");
        }
    });
}
