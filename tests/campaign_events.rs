mod common;

// Campaign events (issue #10, point 8): `campaign.*` and `contact.*` events belong to no call.
// On SQLite and PostgreSQL: they are stored in the one timeline (with `call_id` null), streamed
// on the SSE stream (the `campaign_id` filter included) over a real socket, delivered signed to
// a real local webhook receiver subscribed to `campaign.*`, and leave calls' timelines alone.
// And migration 0004 on a SQLite database made by 0001–0003 with data in it: the rebuilt
// call_event keeps its rows, their ids, the deliveries and recordings that reference them,
// and never reuses an id.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use callplane::events::{OutboxConfig, spawn_dispatcher};
use callplane::store::{EventFilter, NewCall, NewEvent, Role, SqlStore, Store, StoreError};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Connection as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Upper bound for any one thing a test waits for.
const WAIT: Duration = Duration::from_secs(30);

/// One request the webhook receiver got.
#[derive(Debug)]
struct Hit {
    headers: HeaderMap,
    body: String,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} in {:?}", self.headers))
            .to_str()
            .expect("text header")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

/// An HTTP receiver on 127.0.0.1 that answers 200 and forwards every POST.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Hit>, JoinHandle<()>) {
    async fn record(
        State(tx): State<mpsc::UnboundedSender<Hit>>,
        headers: HeaderMap,
        body: String,
    ) -> StatusCode {
        let _ = tx.send(Hit { headers, body });
        StatusCode::OK
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/hook", axum::routing::post(record))
        .with_state(tx);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), rx, task)
}

/// Checks the signature with the HMAC primitive directly (not the code under test).
fn assert_signed(hit: &Hit, secret: &str) {
    let timestamp = hit.header("callplane-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.{}", hit.body).as_bytes());
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(hit.header("callplane-signature"), expected, "signature");
    assert_eq!(
        hit.header("callplane-event-id"),
        hit.json()["id"].to_string()
    );
}

/// One parsed SSE event.
#[derive(Debug)]
struct Sse {
    id: i64,
    event: String,
    data: Value,
}

struct SseStream {
    resp: reqwest::Response,
    buf: String,
}

impl SseStream {
    async fn open(addr: SocketAddr, key: &str, query: &str) -> SseStream {
        let resp = timeout(
            WAIT,
            reqwest::Client::new()
                .get(format!("http://{addr}/v1/events{query}"))
                .bearer_auth(key)
                .send(),
        )
        .await
        .expect("SSE answered in time")
        .expect("SSE request");
        assert_eq!(resp.status(), 200);
        SseStream {
            resp,
            buf: String::new(),
        }
    }

    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse().expect("numeric id"));
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = Some(serde_json::from_str(v.trim()).expect("JSON data"));
                    }
                }
                if let (Some(id), Some(event), Some(data)) = (id, event, data) {
                    return Sse { id, event, data };
                }
                continue;
            }
            let chunk = timeout(WAIT, self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("an SSE event in time; have {:?}", self.buf))
                .expect("stream read")
                .expect("stream open");
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}

fn fast_outbox() -> OutboxConfig {
    OutboxConfig {
        max_attempts: 3,
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        request_timeout: Duration::from_secs(5),
        lease: Duration::from_secs(30),
        concurrency: 4,
        per_webhook: 2,
        egress: common::api::loopback_egress(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_events_are_stored_streamed_and_delivered_and_leave_call_timelines_alone() {
    for (name, store) in common::db::test_stores().await {
        let api = common::api::TestApi::start(store.clone()).await;
        let bus = api.state.bus.clone();
        let tenant = api.a.tenant_id.clone();
        let key = api.a.key(Role::Owner).to_owned();
        let dispatcher = spawn_dispatcher(bus.clone(), fast_outbox());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind api");
        let addr = listener.local_addr().expect("addr");
        let app = api.router.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        // Two webhooks: one for campaign.*, one for call.*.
        let (url, mut hits, receiver_task) = receiver().await;
        let mut secrets = Vec::new();
        for events in [json!(["campaign.*"]), json!(["call.*"])] {
            let reply = api
                .send(
                    Method::POST,
                    "/v1/webhooks",
                    Some(&key),
                    Some(&json!({"url": url, "events": events})),
                )
                .await;
            assert_eq!(reply.status, StatusCode::CREATED, "[{name}]");
            let body = reply.json();
            secrets.push((
                body["id"].as_str().expect("id").to_owned(),
                body["secret"].as_str().expect("secret").to_owned(),
            ));
        }
        let (campaign_hook, campaign_secret) = secrets[0].clone();

        // The stream of campaign cmp_a only, from the start.
        let mut sse = SseStream::open(addr, &key, "?after=0&campaign_id=cmp_a").await;

        // A call of campaign cmp_a with its first event.
        let mut new_call = NewCall::outbound(
            tenant.clone(),
            "sip:+15550100@127.0.0.1:9",
            "sip:callplane@127.0.0.1",
            callplane::clock::unix_us(),
        );
        new_call.campaign_id = Some("cmp_a".into());
        let call = store
            .create_call(&new_call)
            .await
            .expect("create call")
            .into_call();
        let created = bus
            .append(NewEvent {
                call_id: call.id.clone(),
                kind: "call.created".into(),
                at_unix_us: callplane::clock::unix_us(),
                offset_us: 10,
                details: json!({"sip_call_id": "x@y"}),
            })
            .await
            .expect("append call.created")
            .event;

        let progress = json!({"total": 50, "done": 0, "queued": 50});
        let started = bus
            .append_campaign_event(&tenant, "cmp_a", "campaign.started", progress.clone())
            .await
            .unwrap_or_else(|e| panic!("[{name}] campaign.started: {e}"));
        let other = bus
            .append_campaign_event(&tenant, "cmp_b", "campaign.started", json!({"total": 1}))
            .await
            .expect("campaign.started of cmp_b");
        let deferred = bus
            .append_campaign_event(
                &tenant,
                "cmp_a",
                "contact.deferred",
                json!({"contact_id": "cnt_1", "until_unix_us": 1, "total": 50}),
            )
            .await
            .expect("contact.deferred");
        assert!(
            created.id < started.id && started.id < other.id && other.id < deferred.id,
            "[{name}] ids in append order"
        );
        assert_eq!(started.call_id, None);
        assert_eq!(started.campaign_id.as_deref(), Some("cmp_a"));
        assert_eq!(started.details, progress);

        // A kind that is not a campaign's is refused and stores nothing.
        let refused = bus
            .append_campaign_event(&tenant, "cmp_a", "call.completed", json!({}))
            .await;
        assert!(
            matches!(refused, Err(StoreError::Invalid(_))),
            "[{name}] {refused:?}"
        );

        // SSE: cmp_a's events in id order, cmp_b's not, `call_id` null on the campaign's own.
        for want in [&created, &started, &deferred] {
            let got = sse.next().await;
            assert_eq!(
                (got.id, got.event.as_str()),
                (want.id, want.kind.as_str()),
                "[{name}] {:?}",
                got.data
            );
            assert_eq!(got.data["campaign_id"], "cmp_a");
        }
        // (Checked on the stored copies: the first is the call's, the others the campaign's.)
        let stored = store
            .events_after(
                &tenant,
                0,
                &EventFilter {
                    campaign_id: Some("cmp_a".into()),
                    ..EventFilter::default()
                },
                0,
            )
            .await
            .expect("events");
        assert_eq!(
            stored.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![created.id, started.id, deferred.id],
            "[{name}]"
        );
        drop(sse);
        // Live, and filtered by kind: a new campaign event reaches a `campaign.*` stream.
        let mut sse = SseStream::open(addr, &key, "?kind=campaign.*").await;
        let paused = bus
            .append_campaign_event(&tenant, "cmp_a", "campaign.paused", json!({"done": 3}))
            .await
            .expect("campaign.paused");
        let got = sse.next().await;
        assert_eq!((got.id, got.event.as_str()), (paused.id, "campaign.paused"));
        assert_eq!(got.data["call_id"], Value::Null, "[{name}] {:?}", got.data);
        assert_eq!(got.data["details"]["done"], 3);
        drop(sse);

        // Webhooks: the campaign.* one gets the three campaign.* events, signed; the call.* one
        // gets call.created only. Receivers see deliveries in any order.
        let mut got = Vec::new();
        for _ in 0..4 {
            let hit = timeout(WAIT, hits.recv())
                .await
                .unwrap_or_else(|_| panic!("[{name}] 4 deliveries in time; have {got:?}"))
                .expect("receiver running");
            got.push(hit);
        }
        let mut campaign_hits: Vec<&Hit> = got
            .iter()
            .filter(|h| {
                h.json()["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("campaign."))
            })
            .collect();
        campaign_hits.sort_by_key(|h| h.json()["id"].as_i64());
        assert_eq!(
            campaign_hits
                .iter()
                .map(|h| h.json()["id"].as_i64().expect("id"))
                .collect::<Vec<_>>(),
            vec![started.id, other.id, paused.id],
            "[{name}] {got:?}"
        );
        for (hit, event) in campaign_hits.iter().zip([&started, &other, &paused]) {
            assert_signed(hit, &campaign_secret);
            assert_eq!(hit.body, callplane::store::derive::webhook_body(event));
            assert_eq!(hit.json()["call_id"], Value::Null);
            assert_eq!(
                hit.json()["campaign_id"].as_str(),
                event.campaign_id.as_deref()
            );
        }
        let call_hits: Vec<&Hit> = got
            .iter()
            .filter(|h| h.json()["type"] == "call.created")
            .collect();
        assert_eq!(call_hits.len(), 1, "[{name}] {got:?}");
        assert_signed(call_hits[0], &secrets[1].1);
        // contact.deferred matches neither webhook: nothing more arrives.
        assert!(
            timeout(Duration::from_millis(300), hits.recv())
                .await
                .is_err(),
            "[{name}] nothing else was sent"
        );
        let reply = api
            .send(
                Method::GET,
                &format!("/v1/webhooks/{campaign_hook}/deliveries"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(
            reply.json()["items"].as_array().map(Vec::len),
            Some(3),
            "[{name}]"
        );

        // The call's timeline and row know nothing of the campaign's events.
        let reply = api
            .send(
                Method::GET,
                &format!("/v1/calls/{}/events", call.id),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        let items = reply.json()["items"].as_array().expect("items").clone();
        assert_eq!(items.len(), 1, "[{name}] {items:?}");
        assert_eq!(items[0]["id"], created.id);
        assert_eq!(items[0]["call_id"], call.id.as_str());
        let row = store.get_call(&tenant, &call.id).await.expect("call row");
        assert_eq!(row.status.as_str(), "dialing", "[{name}]");
        // Another tenant sees none of it.
        let b = api.b.tenant_id.clone();
        let theirs = store
            .events_after(&b, 0, &EventFilter::default(), 0)
            .await
            .expect("events of B");
        assert!(theirs.is_empty(), "[{name}] {theirs:?}");

        dispatcher.abort();
        server.abort();
        receiver_task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Migration 0004 on SQLite: the rebuild of call_event on a database with data.

/// The migrations before 0004, as the binary applied them (text and checksum).
const BEFORE_0004: [(i64, &str, &str); 3] = [
    (
        1,
        "0001_init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "0002_outbox",
        include_str!("../migrations/sqlite/0002_outbox.sql"),
    ),
    (
        3,
        "0003_campaigns",
        include_str!("../migrations/sqlite/0003_campaigns.sql"),
    ),
];

async fn sqlite_conn(path: &Path) -> sqlx::SqliteConnection {
    let url = format!("sqlite:{}?mode=rwc", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open SQLite");
    sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&mut conn)
        .await
        .expect("pragma");
    conn
}

#[tokio::test]
async fn migration_0004_keeps_sqlite_events_their_ids_and_their_references() {
    let path = common::db::sqlite_path_for_tests();
    {
        // A database as callplane left it at migration 0003 (what the runner records).
        let mut conn = sqlite_conn(&path).await;
        sqlx::raw_sql(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
             sha256 TEXT NOT NULL, applied_at_us BIGINT NOT NULL)",
        )
        .execute(&mut conn)
        .await
        .expect("schema_migrations");
        for (version, name, sql) in BEFORE_0004 {
            sqlx::raw_sql(sql)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            sqlx::query("INSERT INTO schema_migrations VALUES ($1, $2, $3, 1)")
                .bind(version)
                .bind(name)
                .bind(hex::encode(Sha256::digest(sql.as_bytes())))
                .execute(&mut conn)
                .await
                .expect("record migration");
        }
        // Data: a tenant, a call, 5 events (ids 1–5), a webhook with deliveries of events 2
        // and 4, a recording of event 3; then event 5 is deleted, so the sequence (5) is above
        // the largest id left (4).
        sqlx::raw_sql(
            "INSERT INTO tenant VALUES ('ten_1', 'one', 1);
             INSERT INTO call (id, tenant_id, direction, to_uri, from_uri, request, \
                 created_at_us, status) \
                 VALUES ('call_1', 'ten_1', 'outbound', 'sip:a@b', 'sip:c@d', '{}', 1, 'dialing');
             INSERT INTO call_event (tenant_id, call_id, campaign_id, kind, at_unix_us, \
                 offset_us, details) VALUES
                 ('ten_1', 'call_1', NULL, 'call.created', 10, 0, '{}'),
                 ('ten_1', 'call_1', NULL, 'sip.invite_sent', 20, 1, '{}'),
                 ('ten_1', 'call_1', NULL, 'recording.ready', 30, 2, '{\"path\":\"/r.wav\"}'),
                 ('ten_1', 'call_1', 'cmp_x', 'sip.ringing', 40, 3, '{\"n\":4}'),
                 ('ten_1', 'call_1', NULL, 'sip.trying', 50, 4, '{}');
             INSERT INTO webhook (id, tenant_id, url, secret, events, active, created_at_us, \
                 updated_at_us) VALUES ('whk_1', 'ten_1', 'http://127.0.0.1:9/h', 's', '[]', 1, 1, 1);
             INSERT INTO webhook_delivery (id, webhook_id, tenant_id, event_id, body, status, \
                 attempts, next_attempt_at_us, created_at_us) VALUES
                 ('dlv_2', 'whk_1', 'ten_1', 2, '{\"id\":2}', 'delivered', 1, 0, 20),
                 ('dlv_4', 'whk_1', 'ten_1', 4, '{\"id\":4}', 'pending', 0, 40, 40);
             INSERT INTO recording VALUES ('rec_3', 'ten_1', 'call_1', 3, '/r.wav', 'wav', 2, \
                 1000, 100, 'ab', 30);
             DELETE FROM call_event WHERE id = 5;",
        )
        .execute(&mut conn)
        .await
        .expect("data at 0003");
        let seq: i64 =
            sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'call_event'")
                .fetch_one(&mut conn)
                .await
                .expect("sequence");
        assert_eq!(seq, 5);
        conn.close().await.expect("close");
    }

    // The store opens it: migration 0004 runs.
    let store = SqlStore::open_sqlite(&path).await.expect("migrate to 0004");
    let events = store
        .events_after("ten_1", 0, &EventFilter::default(), 0)
        .await
        .expect("events");
    assert_eq!(
        events
            .iter()
            .map(|e| (
                e.id,
                e.kind.as_str(),
                e.call_id.as_deref(),
                e.campaign_id.as_deref()
            ))
            .collect::<Vec<_>>(),
        vec![
            (1, "call.created", Some("call_1"), None),
            (2, "sip.invite_sent", Some("call_1"), None),
            (3, "recording.ready", Some("call_1"), None),
            (4, "sip.ringing", Some("call_1"), Some("cmp_x")),
        ],
        "every row kept with its id"
    );
    assert_eq!(events[3].details, json!({"n": 4}));
    let recordings = store
        .list_recordings("ten_1", "call_1")
        .await
        .expect("recordings");
    assert_eq!(recordings.len(), 1);
    let deliveries = store
        .list_deliveries("ten_1", "whk_1", None, 0)
        .await
        .expect("deliveries");
    let mut event_ids: Vec<i64> = deliveries.iter().map(|d| d.event_id).collect();
    event_ids.sort_unstable();
    assert_eq!(event_ids, vec![2, 4], "deliveries kept");

    // New ids continue after the old sequence (5 was used, then deleted): never reused.
    let next = store
        .append_event(&NewEvent {
            call_id: "call_1".into(),
            kind: "sip.answered".into(),
            at_unix_us: 60,
            offset_us: 5,
            details: json!({}),
        })
        .await
        .expect("append after the migration");
    assert_eq!(next.event.id, 6, "the sequence survived the rebuild");
    let campaign = store
        .append_campaign_event(&callplane::store::NewCampaignEvent {
            tenant_id: "ten_1".into(),
            campaign_id: "cmp_x".into(),
            kind: "campaign.started".into(),
            at_unix_us: 70,
            details: json!({"total": 1}),
        })
        .await
        .expect("a campaign event: call_id may be NULL now");
    assert_eq!(campaign.event.id, 7);
    assert_eq!(campaign.event.call_id, None);
    // The webhook (all kinds) got a delivery of each.
    assert_eq!(next.deliveries.len(), 1);
    assert_eq!(campaign.deliveries.len(), 1);
    store.close().await;

    // Foreign keys hold and are enforced again; the indexes are back; reopening applies
    // nothing more.
    let mut conn = sqlite_conn(&path).await;
    let violations: Vec<(String,)> = sqlx::query_as("PRAGMA foreign_key_check")
        .fetch_all(&mut conn)
        .await
        .expect("foreign_key_check");
    assert!(violations.is_empty(), "{violations:?}");
    let mut indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'call_event' \
         AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .expect("indexes");
    indexes.sort();
    assert_eq!(
        indexes,
        vec![
            "call_event_by_call",
            "call_event_by_campaign",
            "call_event_by_tenant"
        ]
    );
    let dangling = sqlx::query(
        "INSERT INTO webhook_delivery (id, webhook_id, tenant_id, event_id, body, status, \
         attempts, next_attempt_at_us, created_at_us) \
         VALUES ('dlv_x', 'whk_1', 'ten_1', 999, '{}', 'pending', 0, 0, 0)",
    )
    .execute(&mut conn)
    .await;
    assert!(
        dangling.is_err(),
        "webhook_delivery.event_id still references call_event"
    );
    let orphan = sqlx::query(
        "INSERT INTO call_event (tenant_id, call_id, campaign_id, kind, at_unix_us, offset_us, \
         details) VALUES ('ten_1', NULL, NULL, 'x', 0, 0, '{}')",
    )
    .execute(&mut conn)
    .await;
    assert!(orphan.is_err(), "an event belongs to a call or a campaign");
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_sequence ORDER BY name")
        .fetch_all(&mut conn)
        .await
        .expect("sqlite_sequence");
    assert_eq!(names, vec!["call_event"], "no stale sequence row");
    conn.close().await.expect("close");
    let again = SqlStore::open_sqlite(&path).await.expect("reopen");
    again.close().await;
}
