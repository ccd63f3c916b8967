//! API test state: a full [`AppState`] over a given store (a real engine on loopback, the
//! event pump, a temporary data directory), two tenants with one key per role, and helpers to
//! send requests to the real router with `tower::ServiceExt::oneshot`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use callplane::api::auth::generate_key;
use callplane::api::{ApiConfig, AppState, router};
use callplane::engine::{Engine, EngineConfig};
use callplane::events::{Bus, Metrics, pump::spawn_pump};
use callplane::store::{NewApiKey, Role, Store};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The egress policy of the tests: the default one plus loopback (127.0.0.0/8), where their
/// webhook receivers listen.
pub(crate) fn loopback_egress() -> Arc<callplane::net::egress::EgressPolicy> {
    Arc::new(callplane::net::egress::EgressPolicy::new(vec![
        "127.0.0.0/8".parse().expect("a CIDR"),
    ]))
}

/// One tenant's keys, one per role.
#[derive(Debug, Clone)]
pub(crate) struct TenantKeys {
    /// The tenant id.
    pub(crate) tenant_id: String,
    /// Role → secret.
    pub(crate) keys: HashMap<Role, String>,
}

impl TenantKeys {
    /// The secret of the key with `role`.
    pub(crate) fn key(&self, role: Role) -> &str {
        &self.keys[&role]
    }
}

/// A running API over one store.
#[derive(Debug)]
pub(crate) struct TestApi {
    /// The state (store, engine, bus...).
    pub(crate) state: AppState,
    /// The router under test.
    pub(crate) router: axum::Router,
    /// Tenant A.
    pub(crate) a: TenantKeys,
    /// Tenant B.
    pub(crate) b: TenantKeys,
    /// The data directory (recordings/, prompts/); removed on drop.
    pub(crate) data_dir: tempfile::TempDir,
    engine: Option<Engine>,
}

/// A response, its body read.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics with the body text when it is not).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `error.code` of an error body.
    pub(crate) fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", String::from_utf8_lossy(&self.body)))
            .to_owned()
    }

    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Makes a key of `role` in `tenant` through the store (as `callplane admin create-key` does).
pub(crate) async fn make_key(store: &Arc<dyn Store>, tenant: &str, role: Role) -> String {
    let g = generate_key().expect("entropy");
    store
        .create_api_key(
            &NewApiKey {
                tenant_id: tenant.to_owned(),
                role,
                name: format!("{role} key"),
                prefix: g.prefix.clone(),
                secret_sha256: g.secret_sha256.clone(),
            },
            callplane::clock::unix_us(),
        )
        .await
        .expect("create key");
    g.secret
}

async fn tenant(store: &Arc<dyn Store>, name: &str) -> TenantKeys {
    let t = store
        .create_tenant(name, callplane::clock::unix_us())
        .await
        .expect("create tenant");
    let mut keys = HashMap::new();
    for role in Role::ALL {
        keys.insert(role, make_key(store, &t.id, role).await);
    }
    TenantKeys {
        tenant_id: t.id,
        keys,
    }
}

impl TestApi {
    /// A full API over `store` with the default limits (rate limit off).
    pub(crate) async fn start(store: Arc<dyn Store>) -> TestApi {
        TestApi::start_with(store, |_| {}).await
    }

    /// A full API over `store`, `tune` adjusting the config first.
    pub(crate) async fn start_with(
        store: Arc<dyn Store>,
        tune: impl FnOnce(&mut ApiConfig),
    ) -> TestApi {
        TestApi::start_full(store, tune, |_| {}).await
    }

    /// A full API over `store`, `tune` adjusting the API config and `tune_engine` the
    /// engine's.
    pub(crate) async fn start_full(
        store: Arc<dyn Store>,
        tune: impl FnOnce(&mut ApiConfig),
        tune_engine: impl FnOnce(&mut EngineConfig),
    ) -> TestApi {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::default());
        let bus = Bus::new(store.clone(), metrics.clone());
        let a = tenant(&store, "tenant-a").await;
        let b = tenant(&store, "tenant-b").await;
        let (sink, events) = callplane::engine::EventSink::channel(65536);
        let mut engine_config = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
        engine_config.event_sink = Some(sink);
        tune_engine(&mut engine_config);
        let engine = Engine::start(engine_config).await.expect("engine starts");
        let mut config = ApiConfig::new(data_dir.path().to_path_buf());
        // Inbound calls (none in these tests) would land in tenant A.
        spawn_pump(
            bus.clone(),
            events,
            a.tenant_id.clone(),
            config.node_id.clone(),
        );
        config.rate_limit_per_s = 0;
        // The receivers of these tests listen on loopback, which webhooks may not reach
        // unless allowed (as `serve --webhook-allow-cidr 127.0.0.0/8` does).
        config.webhook_egress = loopback_egress();
        tune(&mut config);
        let state = AppState::new(store, engine.handle.clone(), bus, metrics, config);
        TestApi {
            router: router(state.clone()),
            state,
            a,
            b,
            data_dir,
            engine: Some(engine),
        }
    }

    /// Sends a request: `body` is sent as JSON when `Some`.
    pub(crate) async fn send(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        self.send_raw(
            method,
            uri,
            key,
            &[],
            body.map(|b| ("application/json", b.to_string().into_bytes())),
        )
        .await
    }

    /// Sends a request with extra headers and an optional raw body with its content type.
    pub(crate) async fn send_raw(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = match body {
            Some((content_type, bytes)) => req
                .header("content-type", content_type)
                .body(Body::from(bytes)),
            None => req.body(Body::empty()),
        }
        .expect("request");
        let response = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// GET with a key.
    pub(crate) async fn get(&self, uri: &str, key: &str) -> Reply {
        self.send(Method::GET, uri, Some(key), None).await
    }

    /// POST JSON with a key.
    pub(crate) async fn post(&self, uri: &str, key: &str, body: &Value) -> Reply {
        self.send(Method::POST, uri, Some(key), Some(body)).await
    }

    /// POSTs `body` to `uri`, expects 201 and returns the new resource's `id`.
    pub(crate) async fn create(&self, uri: &str, key: &str, body: &Value) -> String {
        let r = self.post(uri, key, body).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "POST {uri}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()["id"]
            .as_str()
            .unwrap_or_else(|| panic!("POST {uri} answered an id"))
            .to_owned()
    }

    /// Stops the engine.
    pub(crate) async fn stop(mut self) {
        if let Some(engine) = self.engine.take() {
            engine.handle.shutdown().await.expect("engine shutdown");
            engine.join().await;
        }
    }
}
