//! Store and event-bus throughput: how fast call events are made durable (event row + call row
//! fold + one webhook outbox row), on SQLite and on PostgreSQL: one transaction per event
//! (`append_event`, what the pump did before group commit), then group commits
//! (`append_batch`, what the pump does now: everything queued, up to 512 events, per
//! transaction) at several batch sizes.
//!
//! `cargo bench --bench store` (PostgreSQL too when `CALLPLANE_TEST_PG` names a server: a fresh
//! database is created and dropped). Prints events per second and latency percentiles (per
//! append, or per batch commit). A benchmark, not a test: nothing here asserts a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callplane::store::{BatchItem, NewCall, NewEvent, SqlStore, Store, WebhookInput};
use serde_json::json;

/// Appends per run.
const EVENTS: usize = 4000;
/// Concurrent writers in the second run.
const WRITERS: usize = 8;
/// Batch sizes of the group-commit runs (512 is the pump's cap).
const BATCHES: [usize; 4] = [1, 16, 64, 512];
/// Events per group-commit run.
const BATCH_EVENTS: usize = 20_480;

async fn setup(store: &Arc<dyn Store>, calls: usize) -> Vec<String> {
    let tenant = store.create_tenant("bench", 1).await.expect("tenant");
    store
        .create_webhook(
            &tenant.id,
            &WebhookInput {
                url: "http://127.0.0.1:9/hook".into(),
                secret: Some("whsec_0123456789abcdef".into()),
                events: Vec::new(),
                active: true,
                description: None,
            },
            1,
        )
        .await
        .expect("webhook");
    let mut ids = Vec::new();
    for n in 0..calls {
        let call = store
            .create_call(&NewCall::outbound(
                tenant.id.clone(),
                format!("sip:{n}@127.0.0.1"),
                "sip:bench@127.0.0.1",
                1,
            ))
            .await
            .expect("call");
        ids.push(call.into_call().id);
    }
    ids
}

fn event(call: &str, n: usize) -> NewEvent {
    NewEvent {
        call_id: call.to_owned(),
        // A non-final kind, so every append folds into a live call row.
        kind: "media.quality".into(),
        at_unix_us: 1_000 + n as i64,
        offset_us: n as i64,
        details: json!({"loss_percent": 0.0, "jitter_us": 1200, "mos": 4.4}),
    }
}

fn report(label: &str, lat: Vec<Duration>, wall: Duration) {
    let n = lat.len();
    report_events(label, lat, n, wall);
}

/// `lat`: one latency per transaction; `events`: how many events they stored.
fn report_events(label: &str, mut lat: Vec<Duration>, events: usize, wall: Duration) {
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    println!(
        "{label:<34} {:>8.0} events/s   commit p50 {:>8.1} µs   p99 {:>9.1} µs   max {:>9.1} µs",
        events as f64 / wall.as_secs_f64(),
        p(0.50).as_secs_f64() * 1e6,
        p(0.99).as_secs_f64() * 1e6,
        lat[lat.len() - 1].as_secs_f64() * 1e6,
    );
}

async fn run(name: &str, store: Arc<dyn Store>) {
    let calls = setup(&store, WRITERS).await;
    let writers = calls.clone();
    // One writer.
    let mut lat = Vec::with_capacity(EVENTS);
    let t0 = Instant::now();
    for n in 0..EVENTS {
        let t = Instant::now();
        store
            .append_event(&event(&calls[0], n))
            .await
            .expect("append");
        lat.push(t.elapsed());
    }
    report(&format!("{name}: 1 writer"), lat, t0.elapsed());
    // Eight calls appending at once (the shape of eight live calls' timelines).
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for call in writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(EVENTS / WRITERS);
            for n in 0..EVENTS / WRITERS {
                let t = Instant::now();
                store.append_event(&event(&call, n)).await.expect("append");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("writer"));
    }
    report(&format!("{name}: {WRITERS} writers"), lat, t0.elapsed());
    println!(
        "{name}: outbox rows pending {}",
        store.pending_deliveries().await.expect("count")
    );
    // Group commits: the events of eight live calls, interleaved as the pump sees them.
    for size in BATCHES {
        let events = if size == 1 { EVENTS } else { BATCH_EVENTS };
        let items: Vec<BatchItem> = (0..events)
            .map(|n| BatchItem::event(event(&calls[n % calls.len()], n)))
            .collect();
        let mut lat = Vec::with_capacity(events / size + 1);
        let t0 = Instant::now();
        for chunk in items.chunks(size) {
            let t = Instant::now();
            store.append_batch(chunk).await.expect("append_batch");
            lat.push(t.elapsed());
        }
        report_events(
            &format!("{name}: batches of {size}"),
            lat,
            events,
            t0.elapsed(),
        );
    }
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
            let name = format!("cp_bench_{}", std::process::id());
            let admin = SqlStore::connect(&url).await.expect("postgres");
            drop(admin);
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
