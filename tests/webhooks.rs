mod common;

// The event plane end to end, on SQLite and PostgreSQL (`common::db::test_stores`): signed
// webhooks to a real local HTTP receiver (retries, dead letters, redelivery), the pump storing
// real engine calls in order, the SSE stream over a real TCP socket (backlog, live, resume),
// health and metrics, and the kill -9 test of the real binary with deliveries pending.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use callplane::engine::{Engine, EngineConfig, OriginateRequest};
use callplane::events::outbox::sign;
use callplane::events::{Bus, Metrics, OutboxConfig, spawn_dispatcher, spawn_pump};
use callplane::store::{
    CallRecord, Direction, EventFilter, NewCall, NewEvent, Role, Store, StoredEvent,
};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tower::ServiceExt;

/// Upper bound for any one thing a test waits for.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// A real HTTP receiver.

/// One request the receiver got.
#[derive(Debug, Clone)]
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

    fn event_id(&self) -> i64 {
        self.header("callplane-event-id")
            .parse()
            .expect("numeric event id")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

#[derive(Clone)]
struct ReceiverState {
    hits: mpsc::UnboundedSender<Hit>,
    /// Statuses to answer, in order; then `default`.
    script: Arc<Mutex<VecDeque<u16>>>,
    default: Arc<AtomicU16>,
}

/// An axum server on 127.0.0.1 that records every POST and answers as told.
struct Receiver {
    addr: SocketAddr,
    hits: mpsc::UnboundedReceiver<Hit>,
    default: Arc<AtomicU16>,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start(script: &[u16], default: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        Receiver::on(listener, script, default)
    }

    fn on(listener: tokio::net::TcpListener, script: &[u16], default: u16) -> Receiver {
        let addr = listener.local_addr().expect("addr");
        let (tx, hits) = mpsc::unbounded_channel();
        let state = ReceiverState {
            hits: tx,
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            default: Arc::new(AtomicU16::new(default)),
        };
        let default = state.default.clone();
        let app = Router::new()
            .route("/hook", axum::routing::post(record))
            .with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            hits,
            default,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    async fn next(&mut self) -> Hit {
        timeout(WAIT, self.hits.recv())
            .await
            .expect("a webhook request arrived in time")
            .expect("receiver running")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(s): State<ReceiverState>, headers: HeaderMap, body: String) -> StatusCode {
    let status = s
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or_else(|| s.default.load(Ordering::SeqCst));
    let _ = s.hits.send(Hit { headers, body });
    StatusCode::from_u16(status).expect("status")
}

/// Recomputes the signature with the HMAC primitive directly (not the code under test).
fn assert_signed(hit: &Hit, secret: &str) {
    assert_eq!(hit.header("content-type"), "application/json");
    let timestamp = hit.header("callplane-timestamp");
    let ts: i64 = timestamp.parse().expect("numeric timestamp");
    let now = callplane::clock::unix_us() / 1_000_000;
    assert!((now - ts).abs() <= 300, "timestamp {ts} is near now {now}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.{}", hit.body).as_bytes());
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        hit.header("callplane-signature"),
        expected,
        "signature verifies"
    );
    assert_eq!(hit.json()["id"], json!(hit.event_id()));
    assert!(hit.header("callplane-delivery-id").starts_with("dlv_"));
}

// ---------------------------------------------------------------------------------------------
// The application under test: store + bus + dispatcher + engine + router.

/// The application over one store, built by the API tests' harness (`common::api::TestApi`: a
/// real engine, the pump, the router, tenants A and B with a key per role), plus the webhook
/// dispatcher.
struct World {
    name: &'static str,
    api: common::api::TestApi,
    store: Arc<dyn Store>,
    bus: Bus,
    metrics: Arc<Metrics>,
    app: Router,
    /// Tenant A and its owner key.
    tenant: String,
    key: String,
    dispatcher: Option<JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(d) = self.dispatcher.take() {
            d.abort();
        }
    }
}

fn fast_outbox(max_attempts: u32) -> OutboxConfig {
    OutboxConfig {
        max_attempts,
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        request_timeout: Duration::from_secs(5),
        lease: Duration::from_secs(30),
        concurrency: 4,
        per_webhook: 2,
        egress: common::api::loopback_egress(),
    }
}

async fn world(name: &'static str, store: Arc<dyn Store>, outbox: Option<OutboxConfig>) -> World {
    let api = common::api::TestApi::start(store).await;
    let state = api.state.clone();
    let dispatcher = outbox.map(|c| spawn_dispatcher(state.bus.clone(), c));
    World {
        name,
        store: state.store.clone(),
        bus: state.bus.clone(),
        metrics: state.metrics.clone(),
        app: api.router.clone(),
        tenant: api.a.tenant_id.clone(),
        key: api.a.key(Role::Owner).to_owned(),
        api,
        dispatcher,
    }
}

impl World {
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        api_with(&self.app, &self.key, method, path, body).await
    }

    async fn call(&self, tenant: &str) -> CallRecord {
        let created = self
            .store
            .create_call(&NewCall::outbound(
                tenant.to_owned(),
                "sip:bob@127.0.0.1:9",
                "sip:callplane@127.0.0.1",
                callplane::clock::unix_us(),
            ))
            .await
            .expect("create call");
        created.into_call()
    }

    async fn append(&self, call: &str, kind: &str, details: Value) -> StoredEvent {
        self.bus
            .append(NewEvent {
                call_id: call.to_owned(),
                kind: kind.to_owned(),
                at_unix_us: callplane::clock::unix_us(),
                offset_us: 1000,
                details,
            })
            .await
            .unwrap_or_else(|e| panic!("[{}] append {kind}: {e}", self.name))
            .event
    }

    /// Creates a webhook through the API; its id and secret.
    async fn webhook(&self, url: &str, events: Value) -> (String, String) {
        let (status, body) = self
            .api(
                "POST",
                "/v1/webhooks",
                Some(json!({"url": url, "events": events})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "[{}] {body}", self.name);
        let secret = body["secret"]
            .as_str()
            .expect("secret shown once")
            .to_owned();
        (body["id"].as_str().expect("id").to_owned(), secret)
    }

    /// Waits until the webhook's deliveries with `status` number `n`.
    async fn deliveries(&self, webhook: &str, status: &str, n: usize) -> Vec<Value> {
        let path = format!("/v1/webhooks/{webhook}/deliveries?status={status}");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (code, body) = self.api("GET", &path, None).await;
            assert_eq!(code, StatusCode::OK, "{body}");
            let items = body["items"].as_array().expect("items").clone();
            if items.len() >= n {
                return items;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "[{}] {n} {status} deliveries in time; have {items:?}",
                self.name
            );
            // The attempt is recorded just after the receiver answered: wait for that write.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn api_with(
    app: &Router,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"));
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let resp = app
        .clone()
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("router answers");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, value)
}

// ---------------------------------------------------------------------------------------------
// Webhooks.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_arrive_signed_and_only_for_the_kinds_asked() {
    for (name, store) in common::db::test_stores().await {
        let w = world(name, store, Some(fast_outbox(5))).await;
        let mut rx = Receiver::start(&[], 200).await;
        let (hook, secret) = w.webhook(&rx.url(), json!(["call.*"])).await;
        assert!(secret.starts_with("whsec_") && secret.len() == 38);
        // The secret is write-only: never shown again.
        let (_, shown) = w.api("GET", &format!("/v1/webhooks/{hook}"), None).await;
        assert!(shown.get("secret").is_none(), "[{name}] {shown}");
        assert!(!shown.to_string().contains(&secret));

        let call = w.call(&w.tenant).await;
        let created = w
            .append(&call.id, "call.created", json!({"sip_call_id": "a@b"}))
            .await;
        w.append(&call.id, "sip.invite_sent", json!({})).await;
        let failed = w
            .append(
                &call.id,
                "call.failed",
                json!({"outcome": "busy", "sip_status": 486}),
            )
            .await;

        let mut hits = [rx.next().await, rx.next().await];
        hits.sort_by_key(Hit::event_id);
        for (hit, event) in hits.iter().zip([&created, &failed]) {
            assert_signed(hit, &secret);
            assert_eq!(hit.event_id(), event.id, "[{name}]");
            assert_eq!(hit.body, callplane::store::derive::webhook_body(event));
            assert_eq!(hit.json()["type"], event.kind.as_str());
            assert_eq!(hit.json()["call_id"], call.id.as_str());
        }
        assert_ne!(
            hits[0].header("callplane-delivery-id"),
            hits[1].header("callplane-delivery-id")
        );
        let delivered = w.deliveries(&hook, "delivered", 2).await;
        assert_eq!(
            delivered.len(),
            2,
            "[{name}] sip.invite_sent is not a call.* kind"
        );
        assert!(
            delivered
                .iter()
                .all(|d| d["attempts"] == 1 && d["last_status"] == 200)
        );
        assert!(
            rx.hits.try_recv().is_err(),
            "[{name}] nothing else was sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_delay_another_tenants_webhooks() {
    // Tenant B's receiver accepts TCP connections and never answers; B has 48 deliveries
    // pending. Every attempt to B holds a slot for the whole request timeout (2 s here).
    //
    // Before the fix the claim was global oldest-first with 8 slots: A's delivery, queued
    // after B's 48, got a slot only once all 48 first attempts to B had started, each holding
    // its slot 2 s: 48 / 8 = 6 rounds, so A went out after about 6 x 2 s = 12 s (> 10 s; B's
    // retries are due after A, so they do not add to that). With at most 2 deliveries of one
    // webhook in flight, B holds 2 of the 8 slots and A's is claimed at once.
    const B_PENDING: usize = 48;
    const TIMEOUT: Duration = Duration::from_secs(2);
    for (name, store) in common::db::test_stores().await {
        let hang = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let hang_url = format!("http://{}/hook", hang.local_addr().expect("addr"));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let holder = tokio::spawn(async move {
            // Keep every connection open, read nothing, answer nothing.
            let mut held = Vec::new();
            while let Ok((socket, _)) = hang.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        let w = world(name, store, None).await;
        let b_key = w.api.b.key(Role::Owner).to_owned();
        let (code, body) = api_with(
            &w.app,
            &b_key,
            "POST",
            "/v1/webhooks",
            Some(json!({"url": hang_url, "events": []})),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "[{name}] {body}");
        let b_call = w.call(&w.api.b.tenant_id).await;
        for i in 0..B_PENDING {
            w.append(&b_call.id, "media.quality", json!({"i": i})).await;
        }
        let mut rx = Receiver::start(&[], 200).await;
        let (a_hook, _) = w.webhook(&rx.url(), json!([])).await;
        let a_call = w.call(&w.tenant).await;
        let dispatcher = spawn_dispatcher(
            w.bus.clone(),
            OutboxConfig {
                request_timeout: TIMEOUT,
                // Longer than the timeout: a hanging attempt is not sent twice at once.
                lease: Duration::from_secs(30),
                egress: common::api::loopback_egress(),
                ..OutboxConfig::default()
            },
        );
        let config = OutboxConfig::default();
        assert_eq!((config.concurrency, config.per_webhook), (8, 2));
        // B's attempts are under way before A's event exists.
        while accepted.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        let started = tokio::time::Instant::now();
        let event = w.append(&a_call.id, "call.created", json!({})).await;
        let hit = timeout(Duration::from_secs(5), rx.next())
            .await
            .unwrap_or_else(|_| panic!("[{name}] A's webhook delayed by B's hanging receiver"));
        let took = started.elapsed();
        assert_eq!(hit.event_id(), event.id);
        assert!(took < Duration::from_secs(5), "[{name}] took {took:?}");
        assert!(
            accepted.load(Ordering::SeqCst) <= 2,
            "[{name}] at most 2 attempts to B at once"
        );
        w.deliveries(&a_hook, "delivered", 1).await;
        dispatcher.abort();
        holder.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_same_event_again_until_it_accepts() {
    for (name, store) in common::db::test_stores().await {
        let w = world(name, store, Some(fast_outbox(5))).await;
        let mut rx = Receiver::start(&[500, 503], 200).await;
        let (hook, secret) = w.webhook(&rx.url(), json!([])).await;
        let call = w.call(&w.tenant).await;
        let event = w.append(&call.id, "call.created", json!({})).await;

        let attempts = [rx.next().await, rx.next().await, rx.next().await];
        for hit in &attempts {
            assert_signed(hit, &secret);
            assert_eq!(
                hit.event_id(),
                event.id,
                "[{name}] same event id on every attempt"
            );
            assert_eq!(hit.body, attempts[0].body, "same bytes on every attempt");
            assert_eq!(
                hit.header("callplane-delivery-id"),
                attempts[0].header("callplane-delivery-id")
            );
        }
        let delivered = w.deliveries(&hook, "delivered", 1).await;
        assert_eq!(delivered[0]["attempts"], 3, "[{name}] {delivered:?}");
        assert_eq!(delivered[0]["event_id"], event.id);
        let (delivered_n, failed_n, dead_n) = w.metrics.deliveries();
        assert_eq!((delivered_n, failed_n, dead_n), (1, 2, 0), "[{name}]");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_dead_lettered_after_max_attempts_and_redelivered_on_request() {
    for (name, store) in common::db::test_stores().await {
        let w = world(name, store, Some(fast_outbox(3))).await;
        let mut rx = Receiver::start(&[], 500).await;
        let (hook, secret) = w.webhook(&rx.url(), json!([])).await;
        let call = w.call(&w.tenant).await;
        let event = w.append(&call.id, "call.created", json!({})).await;
        for _ in 0..3 {
            assert_eq!(rx.next().await.event_id(), event.id);
        }
        let dead = w.deliveries(&hook, "dead", 1).await;
        assert_eq!(dead.len(), 1, "[{name}]");
        assert_eq!(dead[0]["attempts"], 3);
        assert_eq!(dead[0]["last_status"], 500);
        assert!(
            dead[0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("500"))
        );
        assert_eq!(dead[0]["payload"]["id"], event.id);
        assert!(
            rx.hits.try_recv().is_err(),
            "[{name}] no attempt after the dead letter"
        );
        let (_, pending) = w
            .api(
                "GET",
                &format!("/v1/webhooks/{hook}/deliveries?status=pending"),
                None,
            )
            .await;
        assert_eq!(pending["items"], json!([]));

        // The receiver is fixed; the operator asks for the dead letter again.
        rx.default.store(200, Ordering::SeqCst);
        let dlv = dead[0]["id"].as_str().expect("id");
        let (code, body) = w
            .api(
                "POST",
                &format!("/v1/webhooks/{hook}/deliveries/{dlv}/redeliver"),
                None,
            )
            .await;
        assert_eq!(code, StatusCode::ACCEPTED, "[{name}] {body}");
        assert_eq!(body["status"], "pending");
        let again = rx.next().await;
        assert_signed(&again, &secret);
        assert_eq!(again.event_id(), event.id, "[{name}] the same event id");
        assert_eq!(again.header("callplane-delivery-id"), dlv);
        let delivered = w.deliveries(&hook, "delivered", 1).await;
        assert_eq!(delivered[0]["id"], dlv);

        // Another tenant cannot see or redeliver it.
        let other_key = w.api.b.key(Role::Owner).to_owned();
        let (code, _) = api_with(
            &w.app,
            &other_key,
            "GET",
            &format!("/v1/webhooks/{hook}/deliveries"),
            None,
        )
        .await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        let (code, _) = api_with(
            &w.app,
            &other_key,
            "POST",
            &format!("/v1/webhooks/{hook}/deliveries/{dlv}/redeliver"),
            None,
        )
        .await;
        assert_eq!(code, StatusCode::NOT_FOUND);

        let (_, text) = w.api("GET", "/metrics", None).await;
        let text = text.as_str().expect("text").to_owned();
        for series in [
            "callplane_webhook_deliveries_total{result=\"dead\"} 1",
            "callplane_webhook_deliveries_total{result=\"failed\"} 2",
            "callplane_webhook_deliveries_total{result=\"delivered\"} 1",
        ] {
            assert!(text.contains(series), "[{name}] {series} in\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_deliveries_are_those_of_its_own_events_in_event_order() {
    for (name, store) in common::db::test_stores().await {
        // No dispatcher: the deliveries stay pending, as queued with each event.
        let w = world(name, store, None).await;
        let (first, _) = w.webhook("http://127.0.0.1:9/a", json!([])).await;
        let (second, _) = w
            .webhook("http://127.0.0.1:9/b", json!(["call.completed"]))
            .await;
        let call = w.call(&w.tenant).await;
        let other = w.call(&w.tenant).await;
        let created = w.append(&call.id, "call.created", json!({})).await;
        w.append(&other.id, "call.created", json!({})).await;
        let ringing = w.append(&call.id, "sip.ringing", json!({})).await;
        let completed = w.append(&call.id, "call.completed", json!({})).await;

        let (code, body) = w
            .api("GET", &format!("/v1/calls/{}/deliveries", call.id), None)
            .await;
        assert_eq!(code, StatusCode::OK, "[{name}] {body}");
        let seen: Vec<(i64, String)> = body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|d| {
                (
                    d["event_id"].as_i64().expect("event id"),
                    d["webhook_id"].as_str().expect("webhook").to_owned(),
                )
            })
            .collect();
        // Every event to the catch-all webhook; only call.completed to the filtered one; none
        // of the other call's.
        let mut want = vec![
            (created.id, first.clone()),
            (ringing.id, first.clone()),
            (completed.id, first.clone()),
            (completed.id, second.clone()),
        ];
        want.sort_by_key(|(id, hook)| (*id, hook == &second));
        let mut got = seen.clone();
        got.sort_by_key(|(id, hook)| (*id, hook == &second));
        assert_eq!(got, want, "[{name}]");
        let ids: Vec<i64> = seen.iter().map(|(id, _)| *id).collect();
        assert!(ids.is_sorted(), "[{name}] in event order: {ids:?}");
        assert!(
            body["items"]
                .as_array()
                .expect("items")
                .iter()
                .all(|d| d["status"] == "pending" && d["payload"]["call_id"] == call.id.as_str()),
            "[{name}] {body}"
        );

        // Another tenant's key: 404, as for a call that does not exist; a viewer: 403.
        let path = format!("/v1/calls/{}/deliveries", call.id);
        let (code, _) = api_with(&w.app, w.api.b.key(Role::Owner), "GET", &path, None).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "[{name}]");
        let (code, _) = api_with(&w.app, w.api.a.key(Role::Viewer), "GET", &path, None).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "[{name}]");
        let (code, _) = w.api("GET", "/v1/calls/call_nope/deliveries", None).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "[{name}]");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_crud_validates_and_enforces_roles() {
    for (name, store) in common::db::test_stores().await {
        let w = world(name, store, None).await;
        let (code, body) = w
            .api("POST", "/v1/webhooks", Some(json!({"url": "ftp://x/"})))
            .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "[{name}] {body}");
        assert_eq!(body["error"]["code"], "invalid_field");
        let (code, body) = w
            .api(
                "POST",
                "/v1/webhooks",
                Some(json!({"url": "http://127.0.0.1:9/h", "colour": "red"})),
            )
            .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "[{name}] {body}");
        assert_eq!(body["error"]["code"], "unknown_field");

        let given = "my-own-secret-0123456789";
        let (code, created) = w
            .api(
                "POST",
                "/v1/webhooks",
                Some(json!({"url": "http://127.0.0.1:9/h", "secret": given, "description": "d"})),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "[{name}] {created}");
        assert_eq!(created["secret"], given);
        assert_eq!(created["active"], true);
        let id = created["id"].as_str().expect("id").to_owned();

        let (code, replaced) = w
            .api(
                "PUT",
                &format!("/v1/webhooks/{id}"),
                Some(json!({"url": "https://example.com/x", "events": ["sip.*"], "active": false})),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "[{name}] {replaced}");
        assert_eq!(replaced["url"], "https://example.com/x");
        assert_eq!(replaced["events"], json!(["sip.*"]));
        assert_eq!(replaced["active"], false);
        assert!(replaced.get("secret").is_none());

        let (_, list) = w.api("GET", "/v1/webhooks", None).await;
        assert_eq!(list["items"].as_array().map(Vec::len), Some(1));

        // An analyst reads webhooks but may not change them; a viewer may not even read them.
        let analyst = w.api.a.key(Role::Analyst).to_owned();
        let viewer = w.api.a.key(Role::Viewer).to_owned();
        let (code, _) = api_with(&w.app, &analyst, "GET", "/v1/webhooks", None).await;
        assert_eq!(code, StatusCode::OK);
        let (code, body) = api_with(
            &w.app,
            &analyst,
            "DELETE",
            &format!("/v1/webhooks/{id}"),
            None,
        )
        .await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("webhooks:write"))
        );
        let (code, _) = api_with(&w.app, &viewer, "GET", "/v1/webhooks", None).await;
        assert_eq!(code, StatusCode::FORBIDDEN);

        let (code, _) = w.api("DELETE", &format!("/v1/webhooks/{id}"), None).await;
        assert_eq!(code, StatusCode::NO_CONTENT);
        let (code, body) = w.api("GET", &format!("/v1/webhooks/{id}"), None).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_found");
    }
}

// ---------------------------------------------------------------------------------------------
// The documented signature sample.

/// The sample of docs/api.md, signed by the dispatcher's own code.
const SAMPLE_SECRET: &str = "whsec_5f1e0c9a2b7d4e8f9a0b1c2d3e4f5a6b";
const SAMPLE_TIMESTAMP: i64 = 1_767_225_606;
const SAMPLE_SIGNATURE: &str =
    "v1=5208f02bf8a5d77122f929c0c46261e7f00067271eb4f0d22db1f36de630b584";

fn sample_body() -> String {
    callplane::store::derive::webhook_body(&StoredEvent {
        id: 42,
        tenant_id: "ten_8f14e45fceea167a5a36dedd".into(),
        call_id: Some("call_3c59dc048e8850243be8079a".into()),
        campaign_id: None,
        kind: "call.completed".into(),
        at_unix_us: 1_767_225_605_250_000,
        offset_us: 5_250_000,
        details: json!({"outcome": "answered", "sip_status": 200, "duration_ms": 4980}),
    })
}

fn docs() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md"))
        .expect("docs/api.md")
}

/// The fenced code block of `lang` in the docs that mentions `marker`.
fn code_block(lang: &str, marker: &str) -> String {
    let docs = docs();
    let fence = format!("```{lang}\n");
    let mut rest = docs.as_str();
    while let Some(i) = rest.find(&fence) {
        let body = &rest[i + fence.len()..];
        let len = body.find("```").expect("closed block");
        if body[..len].contains(marker) {
            return body[..len].to_owned();
        }
        rest = &body[len..];
    }
    panic!("no {lang} block with {marker:?} in docs/api.md")
}

/// Whether `tool` runs here; missing is a skip outside CI and a failure under `CI=true`.
fn have(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is required under CI=true"
        );
        eprintln!("SKIPPED: {tool} is not installed");
    }
    found
}

#[test]
fn the_documented_sample_is_what_the_dispatcher_signs() {
    let body = sample_body();
    assert_eq!(
        sign(SAMPLE_SECRET, SAMPLE_TIMESTAMP, &body),
        SAMPLE_SIGNATURE
    );
    let docs = docs();
    assert!(docs.contains(&body), "docs/api.md shows the exact body");
    assert!(docs.contains(&format!("body ({} bytes)", body.len())));
    assert!(docs.contains(SAMPLE_SIGNATURE));
    assert!(docs.contains(SAMPLE_SECRET));
}

#[test]
fn the_documented_python_snippet_verifies_the_sample() {
    if !have("python3") {
        return;
    }
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(code_block("python", "def verify"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("signature ok"),
        "python snippet: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_documented_openssl_snippet_verifies_the_sample() {
    if !have("openssl") {
        return;
    }
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(code_block("sh", "openssl dgst"))
        .output()
        .expect("sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("signature ok"),
        "sh snippet: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The pump: real engine calls → the store, in order.

/// Collects one engine's events until `calls` calls have ended.
async fn engine_events(
    rx: &mut tokio::sync::broadcast::Receiver<callplane::engine::CallEvent>,
    calls: usize,
) -> Vec<callplane::engine::CallEvent> {
    let mut out = Vec::new();
    let mut ended = 0;
    while ended < calls {
        let ev = timeout(WAIT, rx.recv())
            .await
            .expect("engine events in time")
            .expect("engine running");
        if ev.is_final() {
            ended += 1;
        }
        out.push(ev);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pump_stores_every_engine_event_of_outbound_and_inbound_calls_in_order() {
    for (name, store) in common::db::test_stores().await {
        let w = world(name, store, None).await;
        // Two real engines on loopback: A calls B; B answers (no script: at once) and waits for
        // A's BYE. Both feed the pump, as `serve` wires its one engine.
        let (sink, sink_rx) = callplane::engine::EventSink::channel(65536);
        let pump = spawn_pump(
            w.bus.clone(),
            sink_rx,
            w.tenant.clone(),
            "node_test".to_owned(),
        );
        let mut config_b = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
        config_b.event_sink = Some(sink.clone());
        let b = Engine::start(config_b).await.expect("engine B");
        let mut config_a = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
        config_a.event_sink = Some(sink);
        let a = Engine::start(config_a).await.expect("engine A");
        let mut a_events = a.handle.subscribe();
        let mut b_events = b.handle.subscribe();
        let mut stored = w.bus.subscribe();

        let call = w.call(&w.tenant).await;
        let dest = b.handle.sip_local_addr();
        let engine_id = a
            .handle
            .originate(OriginateRequest {
                sip: Default::default(),
                alternates: Vec::new(),
                to: sip::message::Uri::parse(format!("sip:bob@{dest}").as_bytes()).expect("uri"),
                destination: dest,
                from: None,
                play: None,
                gather_digits: 0,
                record: None,
                ring_timeout: Duration::from_secs(10),
                transport: sip::transaction::Transport::Udp,
                send_dtmf: Vec::new(),
                dtmf_after: Duration::ZERO,
                hangup_after: Some(Duration::from_millis(300)),
                script: None,
                prompts: None,
                prompt_scope: callplane::engine::PromptScope::Local,
                tag: Some(call.id.as_str().into()),
                variables: Default::default(),
                max_duration: None,
            })
            .await
            .expect("originate");
        let a_seen = engine_events(&mut a_events, 1).await;
        let b_seen = engine_events(&mut b_events, 1).await;
        // Wait until both final events are stored (the pump runs behind the engines).
        let mut finals = 0;
        while finals < 2 {
            let e = timeout(WAIT, stored.recv())
                .await
                .unwrap_or_else(|_| panic!("[{name}] the final events were stored in time"))
                .expect("bus");
            if e.kind == "call.completed" || e.kind == "call.failed" {
                finals += 1;
            }
        }

        let timeline = |call_id: String| {
            let store = w.store.clone();
            let tenant = w.tenant.clone();
            async move {
                let filter = EventFilter {
                    call_id: Some(call_id),
                    ..EventFilter::default()
                };
                store
                    .events_after(&tenant, 0, &filter, 500)
                    .await
                    .expect("events")
            }
        };
        // The outbound call: every engine event, in the engine's order, under the API's call id.
        let out_events = timeline(call.id.clone()).await;
        let kinds = |evs: &[StoredEvent]| evs.iter().map(|e| e.kind.clone()).collect::<Vec<_>>();
        let engine_kinds = |evs: &[callplane::engine::CallEvent]| {
            evs.iter().map(|e| e.kind.to_owned()).collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(&out_events),
            engine_kinds(&a_seen),
            "[{name}] outbound timeline"
        );
        assert!(out_events.windows(2).all(|p| p[0].id < p[1].id));
        for (s, e) in out_events.iter().zip(&a_seen) {
            assert_eq!(s.details, e.details, "[{name}] {} details", e.kind);
            assert_eq!(s.at_unix_us, e.at_unix_us);
            assert_eq!(s.offset_us, e.offset_us as i64);
        }
        let row = w.store.get_call(&w.tenant, &call.id).await.expect("row");
        assert_eq!(
            row.status,
            callplane::store::CallStatus::Completed,
            "[{name}] {row:?}"
        );
        assert_eq!(row.outcome.as_deref(), Some("answered"));
        assert!(row.sip_call_id.is_some() && row.answered_at_us.is_some());
        assert_eq!(
            w.bus.engine_id(&call.id),
            None,
            "forgotten after its final event"
        );
        let _ = engine_id;

        // The inbound call: its row was created from its `call.created`.
        let page = w
            .store
            .list_calls(
                &w.tenant,
                &callplane::store::CallFilter {
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .expect("calls");
        let inbound: Vec<_> = page
            .items
            .iter()
            .filter(|c| c.direction == Direction::Inbound)
            .collect();
        assert_eq!(inbound.len(), 1, "[{name}] one inbound row: {page:?}");
        let inbound = inbound[0];
        assert!(inbound.to_uri.contains("bob@"), "{inbound:?}");
        assert!(inbound.from_uri.starts_with("sip:"), "{inbound:?}");
        assert_eq!(
            inbound.sip_call_id, row.sip_call_id,
            "the same SIP call, seen from both ends"
        );
        let in_events = timeline(inbound.id.clone()).await;
        assert_eq!(
            kinds(&in_events),
            engine_kinds(&b_seen),
            "[{name}] inbound timeline"
        );
        assert_eq!(inbound.status, callplane::store::CallStatus::Completed);
        assert_eq!(w.metrics.pump_errors(), 0);

        for e in [a, b] {
            e.handle.shutdown().await.expect("shutdown");
            e.join().await;
        }
        // The engines are gone, and with them the sink's senders: the pump ends by itself.
        timeout(WAIT, pump)
            .await
            .expect("pump ended")
            .expect("pump ok");
    }
}

// ---------------------------------------------------------------------------------------------
// SSE over a real socket.

/// One parsed SSE event.
#[derive(Debug, Clone, PartialEq)]
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
    async fn open(addr: SocketAddr, key: &str, query: &str, last: Option<i64>) -> SseStream {
        let mut req = reqwest::Client::new()
            .get(format!("http://{addr}/v1/events{query}"))
            .bearer_auth(key);
        if let Some(id) = last {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = timeout(WAIT, req.send())
            .await
            .expect("SSE answered in time")
            .expect("SSE request");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().expect("text"),
            "text/event-stream"
        );
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
                // A block without data is a keep-alive comment.
                if let (Some(id), Some(event), Some(data)) = (id, event, data) {
                    return Sse { id, event, data };
                }
                continue;
            }
            let chunk = timeout(WAIT, self.resp.chunk())
                .await
                .expect("an SSE event in time")
                .expect("stream read")
                .expect("stream open");
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}

/// Serves the router on 127.0.0.1:0.
async fn serve(app: Router) -> (SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind api");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_sends_the_backlog_then_live_events_and_a_resume_misses_nothing() {
    for (name, store) in common::db::test_stores().await {
        let w = world(name, store, None).await;
        let (addr, server) = serve(w.app.clone()).await;
        let other_tenant = w.api.b.tenant_id.clone();
        let other_key = w.api.b.key(Role::Owner).to_owned();
        let call = w.call(&w.tenant).await;
        let foreign = w.call(&other_tenant).await;

        let mut mine = Vec::new();
        for kind in ["call.created", "sip.invite_sent", "sip.ringing"] {
            mine.push(w.append(&call.id, kind, json!({"n": mine.len()})).await);
        }
        w.append(&foreign.id, "call.created", json!({})).await;

        // The backlog, from the start.
        let mut sse = SseStream::open(addr, &w.key, "?after=0", None).await;
        for want in &mine {
            let got = sse.next().await;
            assert_eq!(
                (got.id, got.event.as_str()),
                (want.id, want.kind.as_str()),
                "[{name}]"
            );
            assert_eq!(got.data, serde_json::to_value(want).expect("json"));
        }
        // Then live: another tenant's event is not shown, the next own one is.
        w.append(&foreign.id, "sip.invite_sent", json!({})).await;
        mine.push(
            w.append(&call.id, "sip.answered", json!({"sip_status": 200}))
                .await,
        );
        mine.push(w.append(&call.id, "media.first_packet_in", json!({})).await);
        let mut last = 0;
        for want in &mine[3..] {
            let got = sse.next().await;
            assert_eq!(got.id, want.id, "[{name}] live, in order, own tenant only");
            assert_eq!(got.data["tenant_id"], w.tenant.as_str());
            last = got.id;
        }
        drop(sse);

        // Disconnected: two more events happen. A reconnect with Last-Event-ID gets exactly them.
        mine.push(w.append(&call.id, "sip.bye_sent", json!({})).await);
        mine.push(
            w.append(&call.id, "call.completed", json!({"outcome": "answered"}))
                .await,
        );
        let mut sse = SseStream::open(addr, &w.key, "", Some(last)).await;
        for want in &mine[5..] {
            let got = sse.next().await;
            assert_eq!(got.id, want.id, "[{name}] resumed after {last}");
        }
        // And it stays live after the backlog.
        let next_call = w.call(&w.tenant).await;
        let live = w.append(&next_call.id, "call.created", json!({})).await;
        assert_eq!(sse.next().await.id, live.id);
        drop(sse);

        // Filters: one call, kinds by prefix, resumed from the start.
        let mut sse = SseStream::open(
            addr,
            &w.key,
            &format!("?after=0&call_id={}&kind=call.*,sip.answered", call.id),
            None,
        )
        .await;
        let want: Vec<i64> = mine
            .iter()
            .filter(|e| e.kind.starts_with("call.") || e.kind == "sip.answered")
            .map(|e| e.id)
            .collect();
        for id in want {
            assert_eq!(sse.next().await.id, id, "[{name}] filtered");
        }
        drop(sse);

        // The other tenant's stream has only its own events; this tenant's call is 404 to it.
        let mut sse = SseStream::open(addr, &other_key, "?after=0", None).await;
        let got = sse.next().await;
        assert_eq!(got.data["call_id"], foreign.id.as_str());
        drop(sse);
        let resp = reqwest::Client::new()
            .get(format!("http://{addr}/v1/events?call_id={}", call.id))
            .bearer_auth(&other_key)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 404);
        let resp = reqwest::Client::new()
            .get(format!("http://{addr}/v1/events"))
            .header("Last-Event-ID", "yesterday")
            .bearer_auth(&w.key)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 400);
        server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_pages_through_a_backlog_longer_than_one_page() {
    let store = common::db::sqlite_store().await;
    let w = world("sqlite", store, None).await;
    let (addr, server) = serve(w.app.clone()).await;
    let call = w.call(&w.tenant).await;
    let mut ids = Vec::new();
    for i in 0..1203 {
        ids.push(
            w.append(&call.id, "media.quality", json!({"i": i}))
                .await
                .id,
        );
    }
    let mut sse = SseStream::open(addr, &w.key, "?after=0", None).await;
    for id in &ids {
        assert_eq!(sse.next().await.id, *id);
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_on_one_node_streams_live_events_another_node_stores_in_the_shared_database() {
    // Two nodes: each its own pool, bus and API, on ONE fresh PostgreSQL database (what
    // several `serve` processes with the same --database-url are).
    let Some(url) = common::db::pg_url_for_tests() else {
        eprintln!(
            "SKIPPED: SSE across nodes needs PostgreSQL ({})",
            common::db::PG_ENV
        );
        return;
    };
    let pool = |url: String| async move {
        let s: Arc<dyn Store> = Arc::new(
            callplane::store::SqlStore::connect(&url)
                .await
                .expect("connect"),
        );
        s
    };
    let node_c = world("postgres", pool(url.clone()).await, None).await;
    // Node D: its own pool, bus and API over the same database (the engine handle is only
    // there to satisfy the API state: D places no calls here).
    let store_d = pool(url).await;
    let metrics_d = Arc::new(Metrics::default());
    let bus_d = Bus::new(store_d.clone(), metrics_d.clone());
    let mut config_d = callplane::api::ApiConfig::new(node_c.api.data_dir.path().to_path_buf());
    config_d.rate_limit_per_s = 0;
    let state_d = callplane::api::AppState::new(
        store_d,
        node_c.api.state.engine.clone(),
        bus_d.clone(),
        metrics_d,
        config_d,
    );
    let (addr_d, server) = serve(callplane::api::router(state_d)).await;
    // Tenant A of node C (the key works on every node: keys live in the database).
    let call = node_c.call(&node_c.tenant).await;
    node_c.append(&call.id, "call.created", json!({})).await;

    // A live-only stream on node D: nothing from before the connection.
    let mut sse = SseStream::open(addr_d, &node_c.key, "", None).await;
    // An event of a call running on node C: only C's bus publishes it. D's stream must still
    // deliver it live (its quiet-time read of the store runs every second): well within 5 s.
    let on_c = node_c.append(&call.id, "sip.invite_sent", json!({})).await;
    let got = timeout(Duration::from_secs(5), sse.next())
        .await
        .expect("node C's event reached node D's stream within 5 s");
    assert_eq!((got.id, got.event.as_str()), (on_c.id, "sip.invite_sent"));
    // C, then D's own bus, then C again: each once, in id order.
    let mut want = vec![node_c.append(&call.id, "sip.ringing", json!({})).await.id];
    want.push(
        bus_d
            .append(NewEvent {
                call_id: call.id.clone(),
                kind: "sip.answered".into(),
                at_unix_us: callplane::clock::unix_us(),
                offset_us: 1000,
                details: json!({}),
            })
            .await
            .expect("append on D")
            .event
            .id,
    );
    want.push(
        node_c
            .append(&call.id, "call.completed", json!({}))
            .await
            .id,
    );
    let mut got = Vec::new();
    for _ in 0..want.len() {
        let e = timeout(Duration::from_secs(5), sse.next())
            .await
            .expect("the next event within 5 s");
        got.push(e.id);
    }
    assert_eq!(
        got, want,
        "every event once, in id order, whichever node stored it"
    );
    server.abort();
}

// ---------------------------------------------------------------------------------------------
// Health and metrics.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_report_the_real_state() {
    for (name, store) in common::db::test_stores().await {
        let w = world(name, store, None).await;
        let (code, body) = api_with(&w.app, "", "GET", "/healthz", None).await;
        assert_eq!((code, body), (StatusCode::OK, json!({"status": "live"})));

        let (code, body) = api_with(&w.app, "", "GET", "/readyz", None).await;
        assert_eq!(code, StatusCode::OK, "[{name}] {body}");
        let c = &body["components"];
        assert_eq!(c["database"]["status"], "healthy", "[{name}] {body}");
        assert!(c["database"]["latency_ms"].as_f64().is_some());
        assert_eq!(c["sip"]["listening"], true);
        assert_eq!(
            c["sip"]["udp"],
            w.api.state.engine.sip_local_addr().to_string()
        );
        assert!(c["disk"]["free_bytes"].as_u64().is_some_and(|b| b > 0));
        assert_eq!(c["webhooks"]["backlog"], 0);
        assert!(["healthy", "degraded"].contains(&body["status"].as_str().expect("status")));

        // A finished call shows up in the counters.
        let call = w.call(&w.tenant).await;
        w.append(&call.id, "call.created", json!({})).await;
        w.append(
            &call.id,
            "call.completed",
            json!({"outcome": "answered", "rtp": {"packets_in": 50, "packets_out": 49, "expected_in": 52, "lost_in": 2}}),
        )
        .await;
        let resp = w
            .app
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).expect("req"))
            .await
            .expect("answer");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .expect("text")
                .starts_with("text/plain; version=0.0.4")
        );
        let text = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
                .to_vec(),
        )
        .expect("UTF-8");
        for series in [
            "callplane_active_calls 0",
            "callplane_calls_total{outcome=\"answered\"} 1",
            "callplane_events_total{kind=\"call.completed\"} 1",
            "callplane_rtp_packets_total{direction=\"in\"} 50",
            "callplane_rtp_packets_total{direction=\"out\"} 49",
            "callplane_rtp_lost_packets_total 2",
            "callplane_webhook_backlog 0",
            "callplane_store_append_seconds_count 2",
            "callplane_pump_errors_total 0",
            "# TYPE callplane_sip_requests_total counter",
        ] {
            assert!(text.contains(series), "[{name}] {series} in\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_critical_with_503_when_the_database_is_down() {
    let path = common::db::sqlite_path_for_tests();
    let store = Arc::new(
        callplane::store::SqlStore::open_sqlite(&path)
            .await
            .expect("store"),
    );
    let w = world("sqlite", store.clone(), None).await;
    store.close().await;
    let (code, body) = api_with(&w.app, "", "GET", "/readyz", None).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "critical");
    assert_eq!(body["components"]["database"]["status"], "critical");
    assert!(body["components"]["database"]["error"].is_string());
}

// ---------------------------------------------------------------------------------------------
// kill -9 with deliveries pending, then a restart: nothing lost.

/// A small HTTP client for a running `callplane serve`.
struct Remote {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Remote {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = timeout(WAIT, req.send())
            .await
            .expect("serve answered in time")
            .expect("request to serve");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The call's stored timeline: (event id, kind), oldest first.
    async fn timeline(&self, call: &str) -> Vec<(i64, String)> {
        let (status, body) = self
            .send(
                reqwest::Method::GET,
                &format!("/v1/calls/{call}/events"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| {
                (
                    e["id"].as_i64().expect("id"),
                    e["kind"].as_str().expect("kind").to_owned(),
                )
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_kill_9_and_all_arrive_after_the_restart() {
    // The embedded SQLite default, then PostgreSQL by URL when one is available.
    kill_9_and_restart(None).await;
    if let Some(url) = common::db::pg_url_for_tests() {
        kill_9_and_restart(Some(&url)).await;
    }
}

async fn kill_9_and_restart(database_url: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("UTF-8 path");
    // The receiver's port, held (bound, so nobody else can take it) but not listening until
    // after the kill: connections to it are refused.
    let hook_socket = tokio::net::TcpSocket::new_v4().expect("socket");
    hook_socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let hook_port = hook_socket.local_addr().expect("addr").port();
    // A UDP port nobody answers: the call stays in Timer B, its first events stored.
    // Held for the whole test (bound, never read), so nothing else can take it and answer.
    let silent_socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent = silent_socket.local_addr().expect("addr").port();
    let mut args = vec![
        "serve",
        "--sip",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--webhook-retry-base-ms",
        "100",
        "--webhook-max-attempts",
        "50",
        // A delivery in flight at the kill is sent again when its lease ends: keep it short.
        "--webhook-timeout-s",
        "2",
        "--webhook-lease-s",
        "3",
        // The receiver listens on loopback, which webhooks may not reach unless allowed.
        "--webhook-allow-cidr",
        "127.0.0.0/8",
    ];
    if let Some(url) = database_url {
        args.extend(["--database-url", url]);
    }
    let (mut child, mut lines) = common::spawn_callplane(dir.path(), &args);
    let (base, key, seen) = common::serve_started(&mut lines).await;
    let key = key.unwrap_or_else(|| panic!("a bootstrap key on an empty database: {seen:?}"));
    let remote = Remote {
        base,
        key: key.clone(),
        http: reqwest::Client::new(),
    };
    let (status, hook) = remote
        .send(
            reqwest::Method::POST,
            "/v1/webhooks",
            Some(json!({"url": format!("http://127.0.0.1:{hook_port}/hook")})),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    let hook_id = hook["id"].as_str().expect("id").to_owned();
    let secret = hook["secret"].as_str().expect("secret").to_owned();
    let (status, call) = remote
        .send(
            reqwest::Method::POST,
            "/v1/calls",
            Some(json!({"to": format!("sip:nobody@127.0.0.1:{silent}")})),
        )
        .await;
    assert_eq!(status, 201, "{call}");
    let call_id = call["id"].as_str().expect("call id").to_owned();

    // Events stored, their deliveries failing against the down receiver: pending, retried.
    let deadline = tokio::time::Instant::now() + WAIT;
    let before = loop {
        let timeline = remote.timeline(&call_id).await;
        let (_, pending) = remote
            .send(
                reqwest::Method::GET,
                &format!("/v1/webhooks/{hook_id}/deliveries?status=pending"),
                None,
            )
            .await;
        let pending = pending["items"].as_array().cloned().unwrap_or_default();
        let tried = pending
            .iter()
            .filter(|d| d["attempts"].as_i64() >= Some(1))
            .count();
        if timeline.len() >= 2 && pending.len() >= timeline.len() && tried >= 1 {
            break timeline;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events stored and deliveries pending in time: {timeline:?} {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(before[0].1, "call.created", "{before:?}");

    // kill -9: no drain, no goodbye.
    child.start_kill().expect("SIGKILL");
    timeout(WAIT, child.wait())
        .await
        .expect("killed in time")
        .expect("wait");

    // The receiver comes up; the server restarts on the same data directory.
    let listener = hook_socket
        .listen(64)
        .expect("listen on the receiver's port");
    let mut rx = Receiver::on(listener, &[], 200);
    let (mut child, mut lines) = common::spawn_callplane(dir.path(), &args);
    let (base, key_again, seen) = common::serve_started(&mut lines).await;
    assert!(
        key_again.is_none(),
        "no second bootstrap on a used database: {seen:?}"
    );
    let remote = Remote {
        base,
        key,
        http: reqwest::Client::new(),
    };

    // Every event of the call arrives (at least once), with the ids it had before the kill.
    let mut received: std::collections::BTreeMap<i64, Hit> = std::collections::BTreeMap::new();
    // A delivery in flight at the kill waits for its lease (3 s here) to end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let hit = timeout(
            deadline.saturating_duration_since(tokio::time::Instant::now()),
            rx.hits.recv(),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "every event arrived in time; got {:?}, stored before the kill {before:?}",
                received.keys().collect::<Vec<_>>()
            )
        })
        .expect("receiver");
        assert_signed(&hit, &secret);
        received.insert(hit.event_id(), hit);
        let timeline = remote.timeline(&call_id).await;
        if timeline.iter().all(|(id, _)| received.contains_key(id)) {
            break timeline;
        }
    };
    eprintln!(
        "[{}] stored before the kill: {before:?}; after the restart: {after:?}",
        database_url.map_or("sqlite", |_| "postgres")
    );
    // Nothing stored before the kill was lost or renumbered.
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "the timeline survived the kill as it was"
    );
    for (id, kind) in &after {
        let hit = &received[id];
        assert_eq!(hit.json()["type"], kind.as_str(), "event {id}");
        assert_eq!(hit.json()["call_id"], call_id.as_str());
    }
    child.start_kill().expect("stop serve");
    let _ = timeout(WAIT, child.wait()).await;
}

// ---------------------------------------------------------------------------------------------
// The outbox under a large backlog (issue #9): the claim is O(batch), one tenant's failing
// receiver delays only its own deliveries.

/// A store plus a raw connection pool to the same database, for bulk rows.
struct Backlog {
    name: &'static str,
    store: Arc<dyn Store>,
    raw: sqlx::AnyPool,
    tenant_a: String,
    tenant_b: String,
    hook_a: callplane::store::Webhook,
    hook_b: callplane::store::Webhook,
    /// An event of tenant A that the bulk rows carry.
    event_a: i64,
    bulk: usize,
}

fn hook_input(url: &str) -> callplane::store::WebhookInput {
    callplane::store::WebhookInput {
        url: url.into(),
        secret: Some("whsec_0123456789abcdef".into()),
        events: Vec::new(),
        active: true,
        description: None,
    }
}

/// SQLite and (when available) PostgreSQL stores with tenants A and B, a webhook each (A's at
/// `url_a`, B's at `url_b`) and one event of A queued.
async fn backlog_stores(url_a: &str, url_b: &str) -> Vec<Backlog> {
    let mut urls = vec![(
        "sqlite",
        format!("sqlite:{}", common::db::sqlite_path_for_tests().display()),
    )];
    if let Some(pg) = common::db::pg_url_for_tests() {
        urls.push(("postgres", pg));
    }
    let mut out = Vec::new();
    for (name, url) in urls {
        let store: Arc<dyn Store> = Arc::new(
            callplane::store::SqlStore::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("[{name}] open {url}: {e}")),
        );
        let raw = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("[{name}] raw connection: {e}"));
        let now = callplane::clock::unix_us();
        let tenant_a = store.create_tenant("a", now).await.expect("tenant").id;
        let tenant_b = store.create_tenant("b", now).await.expect("tenant").id;
        let hook_a = store
            .create_webhook(&tenant_a, &hook_input(url_a), now)
            .await
            .expect("hook a");
        let hook_b = store
            .create_webhook(&tenant_b, &hook_input(url_b), now)
            .await
            .expect("hook b");
        let call = store
            .create_call(&NewCall::outbound(
                tenant_a.clone(),
                "sip:bob@127.0.0.1:9",
                "sip:callplane@127.0.0.1",
                now,
            ))
            .await
            .expect("call")
            .into_call();
        let event_a = store
            .append_event(&NewEvent {
                call_id: call.id,
                kind: "media.quality".into(),
                at_unix_us: now - 60_000_000,
                offset_us: 0,
                details: json!({}),
            })
            .await
            .expect("append")
            .event
            .id;
        out.push(Backlog {
            name,
            store,
            raw,
            tenant_a,
            tenant_b,
            hook_a,
            hook_b,
            event_a,
            bulk: 0,
        });
    }
    out
}

impl Backlog {
    /// Queues `n` more pending deliveries of A's webhook, all due (a minute ago and later),
    /// through the same INSERT path as the event append (so the outbox's trigger sees them).
    async fn grow_a(&mut self, n: usize) {
        let first = self.bulk + 1;
        let last = self.bulk + n;
        let due = callplane::clock::unix_us() - 60_000_000;
        sqlx::query(&format!(
            "WITH RECURSIVE seq(n) AS (SELECT {first} UNION ALL SELECT n + 1 FROM seq \
             WHERE n < {last}) \
             INSERT INTO webhook_delivery (id, webhook_id, tenant_id, event_id, body, status, \
             attempts, next_attempt_at_us, created_at_us) \
             SELECT 'dlv_bulk_' || n, '{}', '{}', {}, '{{}}', 'pending', 0, {due} + n, {due} + n \
             FROM seq",
            self.hook_a.id, self.tenant_a, self.event_a
        ))
        .execute(&self.raw)
        .await
        .unwrap_or_else(|e| panic!("[{}] bulk insert: {e}", self.name));
        self.bulk = last;
    }

    /// Queues one delivery of B's webhook (a real event append).
    async fn event_b(&self) -> i64 {
        let now = callplane::clock::unix_us();
        let call = self
            .store
            .create_call(&NewCall::outbound(
                self.tenant_b.clone(),
                "sip:bob@127.0.0.1:9",
                "sip:callplane@127.0.0.1",
                now,
            ))
            .await
            .expect("call")
            .into_call();
        self.store
            .append_event(&NewEvent {
                call_id: call.id,
                kind: "call.created".into(),
                at_unix_us: now,
                offset_us: 0,
                details: json!({}),
            })
            .await
            .expect("append")
            .event
            .id
    }

    /// The median time of `rounds` claims that each find B's one due delivery while A's
    /// webhook has both its slots in flight (its backlog is due but may not be taken). Each
    /// claim leases B's row until "now", so it is due again for the next round.
    async fn claim_b_median(&self, rounds: usize) -> Duration {
        let per = callplane::store::PerWebhook {
            max: 2,
            in_flight: vec![(self.hook_a.id.clone(), 2)],
        };
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let now = callplane::clock::unix_us();
            let started = std::time::Instant::now();
            let got = self
                .store
                .claim_due_deliveries(now, now, 8, &per)
                .await
                .expect("claim");
            times.push(started.elapsed());
            assert_eq!(
                got.iter().map(|(_, h)| h.id.as_str()).collect::<Vec<_>>(),
                [self.hook_b.id.as_str()],
                "[{}] only B's delivery is claimed",
                self.name
            );
        }
        times.sort();
        times[rounds / 2]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_10000_does_not_slow_another_tenants_claims() {
    // Before the fix every claim ranked every due row of every webhook (a window function in
    // a write transaction): its time grew with A's backlog, and on SQLite it held the one
    // writer meanwhile. Now it walks an index to the webhooks with something due and takes
    // a few rows of each: flat in the backlog.
    for mut b in backlog_stores("http://127.0.0.1:9/a", "http://127.0.0.1:9/b").await {
        b.event_b().await;
        // Warm up (connections, statement caches), then the baseline: A has 1 row.
        b.claim_b_median(5).await;
        let small = b.claim_b_median(21).await;
        b.grow_a(10_000).await;
        let large = b.claim_b_median(21).await;
        eprintln!(
            "[{}] claim with A's backlog 1: {small:?}; 10001: {large:?}",
            b.name
        );
        // Before the fix: 18 ms and 660 ms here (SQLite, debug build).
        assert!(
            large < small * 5 + Duration::from_millis(20),
            "[{}] a claim with 10001 rows of A due took {large:?}, with 1 {small:?}",
            b.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test --test webhooks claim_time_by_backlog -- --ignored --nocapture"]
async fn claim_time_by_backlog() {
    for mut b in backlog_stores("http://127.0.0.1:9/a", "http://127.0.0.1:9/b").await {
        b.event_b().await;
        b.claim_b_median(5).await;
        for target in [0, 1_000, 10_000, 50_000] {
            if target > b.bulk {
                b.grow_a(target - b.bulk).await;
            }
            let t = b.claim_b_median(31).await;
            eprintln!(
                "MEASURE [{}] backlog {:>6}: median claim {:>8.3} ms",
                b.name,
                b.bulk + 1,
                t.as_secs_f64() * 1000.0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_rests_and_another_tenants_events_arrive_at_once() {
    // A's receiver answers 500 to everything and A has 10,000 deliveries due; B's receiver
    // is fine. Before the fix the dispatcher sent A's backlog as fast as the receiver failed
    // (each failure freed a slot and started a claim that ranked the whole backlog, holding
    // SQLite's writer meanwhile). Now a failure rests A's webhook (1 s, then 2 s, 4 s...): A
    // gets a handful of attempts, and B's events go out as they come.
    let mut rx_a = Receiver::start(&[], 500).await;
    let mut rx_b = Receiver::start(&[], 200).await;
    {
        for mut b in backlog_stores(&rx_a.url(), &rx_b.url()).await {
            let name = b.name;
            b.grow_a(10_000).await;
            let metrics = Arc::new(Metrics::default());
            let bus = Bus::new(b.store.clone(), metrics);
            let dispatcher = spawn_dispatcher(
                bus.clone(),
                OutboxConfig {
                    egress: common::api::loopback_egress(),
                    ..OutboxConfig::default()
                },
            );
            // A's first attempts fail before B's first event exists.
            rx_a.next().await;
            let started = tokio::time::Instant::now();
            // For 3 s, one event of B every 100 ms (at most), each awaited at B's receiver.
            let mut pace = tokio::time::interval(Duration::from_millis(100));
            let mut slowest = Duration::ZERO;
            let mut sent_b = 0;
            while started.elapsed() < Duration::from_secs(3) {
                pace.tick().await;
                let call = b
                    .store
                    .create_call(&NewCall::outbound(
                        b.tenant_b.clone(),
                        "sip:bob@127.0.0.1:9",
                        "sip:callplane@127.0.0.1",
                        callplane::clock::unix_us(),
                    ))
                    .await
                    .expect("call")
                    .into_call();
                let sent = tokio::time::Instant::now();
                let event = bus
                    .append(NewEvent {
                        call_id: call.id,
                        kind: "call.created".into(),
                        at_unix_us: callplane::clock::unix_us(),
                        offset_us: 0,
                        details: json!({"i": sent_b}),
                    })
                    .await
                    .expect("append")
                    .event;
                let hit = timeout(Duration::from_secs(2), rx_b.next())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "[{name}] B's event {sent_b} waited more than 2 s behind A's backlog"
                        )
                    });
                assert_eq!(hit.event_id(), event.id, "[{name}]");
                slowest = slowest.max(sent.elapsed());
                sent_b += 1;
            }
            let elapsed = started.elapsed();
            let mut a_hits = 1;
            while rx_a.hits.try_recv().is_ok() {
                a_hits += 1;
            }
            eprintln!(
                "[{name}] in {elapsed:?}: {sent_b} events of B, the slowest delivered after \
                 {slowest:?}; A's failing receiver got {a_hits} attempts"
            );
            // Two in flight at once, then a pause of 2 s (1 s and 2 s after its first two
            // failures), then two more and a pause of 8 s: 4 attempts in these 3 s. Before the
            // fix A was sent its backlog as fast as the claims went (16 attempts on SQLite,
            // 30 on PostgreSQL in this time).
            assert!(
                a_hits <= 8,
                "[{name}] A's failing receiver got {a_hits} attempts in {elapsed:?}"
            );
            dispatcher.abort();
            // The next database starts with a quiet receiver.
            while rx_a.hits.try_recv().is_ok() {}
        }
    }
}

/// A TestApi over `store` whose webhooks may not reach loopback (the default policy).
async fn strict_api(store: Arc<dyn Store>) -> common::api::TestApi {
    common::api::TestApi::start_with(store, |c| c.webhook_egress = Arc::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_targets_inside_the_network_are_refused_in_every_spelling() {
    const INTERNAL: &[&str] = &[
        "http://127.0.0.1:9/h",
        "http://127.1/h",
        "http://2130706433/h",
        "http://0x7f.1/h",
        "http://0x7f000001/h",
        "http://017700000001/h",
        "http://0177.0.0.1/h",
        "http://[::ffff:127.0.0.1]/h",
        "http://[::ffff:7f00:1]/h",
        "http://[::1]/h",
        "http://localhost:8080/h",
        "http://0.0.0.0/h",
        "http://0/h",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://10.0.0.1/h",
        "http://172.16.0.1/h",
        "http://192.168.1.1/h",
        "http://100.64.0.1/h",
        "http://[fc00::1]/h",
        "http://[fd00::1]/h",
        "http://[fe80::1]/h",
        "http://224.0.0.1/h",
        "http://[ff02::1]/h",
        "http://255.255.255.255/h",
    ];
    for (name, store) in common::db::test_stores().await {
        let api = strict_api(store).await;
        let key = api.a.key(Role::Owner).to_owned();
        for url in INTERNAL {
            let (code, body) = api_with(
                &api.router,
                &key,
                "POST",
                "/v1/webhooks",
                Some(json!({ "url": url })),
            )
            .await;
            assert_eq!(
                code,
                StatusCode::UNPROCESSABLE_ENTITY,
                "[{name}] {url}: {body}"
            );
            assert_eq!(body["error"]["code"], "invalid_field", "[{name}] {url}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.starts_with("url: ")
                    && message.contains("internal networks")
                    && message.contains("--webhook-allow-cidr"),
                "[{name}] {url}: {message}"
            );
        }
        // A public target is fine; changing it to an internal one is refused the same way.
        let (code, created) = api_with(
            &api.router,
            &key,
            "POST",
            "/v1/webhooks",
            Some(json!({"url": "https://example.com/hook"})),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "[{name}] {created}");
        let id = created["id"].as_str().expect("id");
        for url in ["http://2130706433/h", "http://[::ffff:127.0.0.1]/h"] {
            let (code, body) = api_with(
                &api.router,
                &key,
                "PUT",
                &format!("/v1/webhooks/{id}"),
                Some(json!({ "url": url })),
            )
            .await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "[{name}] {body}");
        }
        let (_, list) = api_with(&api.router, &key, "GET", "/v1/webhooks", None).await;
        assert_eq!(
            list["items"]
                .as_array()
                .map(|l| l.iter().map(|w| w["url"].clone()).collect::<Vec<_>>()),
            Some(vec![json!("https://example.com/hook")]),
            "[{name}] nothing internal was stored"
        );

        // The operator's allowance (here 127.0.0.0/8, as the tests' default) admits exactly
        // that range.
        let allowed = common::api::TestApi::start(common::db::sqlite_store().await).await;
        let key = allowed.a.key(Role::Owner).to_owned();
        for (url, want) in [
            ("http://127.0.0.1:9/h", StatusCode::CREATED),
            ("http://2130706433:9/h", StatusCode::CREATED),
            ("http://10.0.0.1/h", StatusCode::UNPROCESSABLE_ENTITY),
            ("http://169.254.169.254/", StatusCode::UNPROCESSABLE_ENTITY),
        ] {
            let (code, body) = api_with(
                &allowed.router,
                &key,
                "POST",
                "/v1/webhooks",
                Some(json!({ "url": url })),
            )
            .await;
            assert_eq!(code, want, "[{name}] allowed 127.0.0.0/8: {url}: {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_fields_with_control_characters_are_refused_when_stored() {
    for (name, store) in common::db::test_stores().await {
        let w = world(name, store, None).await;
        let (hook, _) = w.webhook("https://example.com/hook", json!([])).await;
        let cases = [
            json!({"url": "https://example.com/a\r\nX-Injected: yes"}),
            json!({"url": "https://exa\nmple.com/"}),
            json!({"url": "https://example.com/\t"}),
            json!({"url": "https://example.com/", "description": "ok\r\nX-Injected: yes"}),
            json!({"url": "https://example.com/", "description": "bell\u{7}"}),
            json!({"url": "https://example.com/", "description": "nul\u{0}"}),
            json!({"url": "https://example.com/", "description": "rtl\u{202e}cod.exe"}),
            json!({"url": "https://example.com/", "events": ["call.*\r\n"]}),
        ];
        for body in &cases {
            for (method, path) in [
                ("POST", "/v1/webhooks".to_owned()),
                ("PUT", format!("/v1/webhooks/{hook}")),
            ] {
                let (code, answer) = w.api(method, &path, Some(body.clone())).await;
                assert_eq!(
                    code,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "[{name}] {method} {body}: {answer}"
                );
                assert_eq!(answer["error"]["code"], "invalid_field");
            }
        }
        let (_, stored) = w.api("GET", &format!("/v1/webhooks/{hook}"), None).await;
        assert_eq!(
            stored["url"], "https://example.com/hook",
            "[{name}] unchanged"
        );
        let (_, list) = w.api("GET", "/v1/webhooks", None).await;
        assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "[{name}]");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_internal_at_connect_time_is_never_reached() {
    // Webhooks stored before the check, or whose name resolves to an internal address by the
    // time it is used (DNS rebinding): the dispatcher checks the resolved addresses (and IP
    // literals) itself and fails the attempt with a reason, without connecting.
    for (name, store) in common::db::test_stores().await {
        let w = world(
            name,
            store,
            Some(OutboxConfig {
                egress: Arc::default(),
                ..fast_outbox(1)
            }),
        )
        .await;
        let mut rx = Receiver::start(&[], 200).await;
        let port = rx.addr.port();
        let mut hooks = Vec::new();
        for url in [
            format!("http://localhost:{port}/hook"),
            format!("http://2130706433:{port}/hook"),
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        ] {
            let hook = w
                .store
                .create_webhook(&w.tenant, &hook_input(&url), callplane::clock::unix_us())
                .await
                .expect("stored without the API's check");
            hooks.push((url, hook.id));
        }
        let call = w.call(&w.tenant).await;
        w.append(&call.id, "call.created", json!({})).await;
        for (url, hook) in &hooks {
            let dead = w.deliveries(hook, "dead", 1).await;
            let error = dead[0]["last_error"].as_str().unwrap_or_default();
            assert!(
                error.starts_with("refused: ") && error.contains("loopback"),
                "[{name}] {url}: {error}"
            );
            assert_eq!(dead[0]["last_status"], Value::Null, "[{name}] {url}");
        }
        assert!(
            rx.hits.try_recv().is_err(),
            "[{name}] the local receiver was never reached"
        );

        // The same name works once the operator allows loopback: the refusal was the policy.
        if let Some(d) = w.dispatcher.as_ref() {
            d.abort();
        }
        let allowing = spawn_dispatcher(w.bus.clone(), fast_outbox(1));
        let (url, hook) = &hooks[0];
        let dead = w.deliveries(hook, "dead", 1).await;
        let dlv = dead[0]["id"].as_str().expect("id");
        let (code, body) = w
            .api(
                "POST",
                &format!("/v1/webhooks/{hook}/deliveries/{dlv}/redeliver"),
                None,
            )
            .await;
        assert_eq!(code, StatusCode::ACCEPTED, "[{name}] {body}");
        let hit = rx.next().await;
        assert_eq!(hit.header("callplane-delivery-id"), dlv, "[{name}] {url}");
        allowing.abort();
    }
}

/// A receiver that answers every POST with `status` and `body`.
async fn answering(status: StatusCode, body: &'static str) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let app = Router::new().route(
        "/hook",
        axum::routing::post(move || async move { (status, body) }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// What a receiver's error page could carry: not one of its characters may appear in
/// `last_error` (which is `HTTP <code> <reason>`: letters, digits and spaces).
const ERROR_PAGE: &str = "~^`|{}<>[]#@$%&*;=?!_~^`|{}<>[]#@$%&*;=?!_~^`|{}<>[]#@$%&*;=?!_";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_error_carries_the_status_and_never_the_receivers_body() {
    for (name, store) in common::db::test_stores().await {
        let w = world(name, store, Some(fast_outbox(1))).await;
        let (url, task) = answering(StatusCode::INTERNAL_SERVER_ERROR, ERROR_PAGE).await;
        let (hook, _) = w.webhook(&url, json!([])).await;
        let call = w.call(&w.tenant).await;
        w.append(&call.id, "call.created", json!({})).await;
        let dead = w.deliveries(&hook, "dead", 1).await;
        assert_eq!(dead[0]["last_status"], 500, "[{name}]");
        let error = dead[0]["last_error"].as_str().unwrap_or_default();
        assert_eq!(error, "HTTP 500 Internal Server Error", "[{name}]");
        assert!(
            !error.chars().any(|c| ERROR_PAGE.contains(c)),
            "[{name}] {error}"
        );
        task.abort();
    }
}

/// A writer into a shared buffer (the log lines a test reads).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

#[tokio::test]
async fn routine_webhook_failures_log_at_debug_and_dead_letters_at_warn() {
    // One thread: the subscriber set here sees every task of this runtime.
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let w = world(
        "sqlite",
        common::db::sqlite_store().await,
        Some(fast_outbox(2)),
    )
    .await;
    let (failing, task) = answering(StatusCode::SERVICE_UNAVAILABLE, ERROR_PAGE).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/hook", l.local_addr().expect("addr"))
    };
    let (hook_503, _) = w.webhook(&failing, json!([])).await;
    let (hook_refused, _) = w.webhook(&closed, json!([])).await;
    let call = w.call(&w.tenant).await;
    w.append(&call.id, "call.created", json!({})).await;
    let dead_503 = w.deliveries(&hook_503, "dead", 1).await;
    let dead_refused = w.deliveries(&hook_refused, "dead", 1).await;
    assert_eq!(dead_503[0]["attempts"], 2);
    assert_eq!(dead_refused[0]["attempts"], 2);
    assert!(
        dead_refused[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("connect")),
        "{dead_refused:?}"
    );
    task.abort();
    let text = logs.text();
    assert!(
        !text.contains("webhook attempt failed"),
        "a routine failure is not logged at INFO or above:\n{text}"
    );
    assert_eq!(
        text.matches("webhook delivery dead-lettered").count(),
        2,
        "dead letters stay at WARN:\n{text}"
    );
    assert!(
        !text.contains("~^`|"),
        "the receiver's body is not logged:\n{text}"
    );
}

#[tokio::test]
async fn the_claims_queries_use_the_outbox_indexes_on_sqlite() {
    // The query shapes of the claim (src/store/sql/outbox.rs), planned by SQLite over a
    // backlog: each walks an index in order and sorts nothing.
    let path = common::db::sqlite_path_for_tests();
    let _store = callplane::store::SqlStore::open_sqlite(&path)
        .await
        .expect("open");
    let raw = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite:{}", path.display()))
        .await
        .expect("raw");
    for (query, index) in [
        (
            "SELECT id FROM webhook WHERE claimable_at_us <= 5 AND id NOT IN ('a', 'b') \
             ORDER BY claimable_at_us LIMIT 8",
            "webhook_claimable",
        ),
        (
            "SELECT id FROM webhook_delivery WHERE webhook_id = 'w' AND status = 'pending' \
             AND next_attempt_at_us <= 5 ORDER BY next_attempt_at_us LIMIT 2",
            "webhook_delivery_pending",
        ),
        (
            "UPDATE webhook SET claimable_at_us = (SELECT d.next_attempt_at_us \
             FROM webhook_delivery d WHERE d.webhook_id = webhook.id AND d.status = 'pending' \
             ORDER BY d.next_attempt_at_us LIMIT 1) WHERE id IN ('a')",
            "webhook_delivery_pending",
        ),
    ] {
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {query}"))
            .fetch_all(&raw)
            .await
            .expect("plan")
            .iter()
            .map(|r| sqlx::Row::try_get::<String, _>(r, "detail").expect("detail"))
            .collect();
        eprintln!("{query}\n  -> {plan:?}");
        assert!(
            plan.iter().any(|d| d.contains(index)),
            "{query} uses {index}: {plan:?}"
        );
        assert!(
            !plan
                .iter()
                .any(|d| d.contains("TEMP B-TREE") || d.starts_with("SCAN d")),
            "{query} sorts or scans nothing: {plan:?}"
        );
    }
}
