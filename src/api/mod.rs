//! The REST API (axum, JSON, under `/v1`): holds only the [`EngineHandle`] and the store.
//!
//! Each area is a module exporting `routes() -> OpenApiRouter<AppState>` whose handlers carry
//! `#[utoipa::path]` with paths relative to `/v1` (`/calls/{id}`); [`router`] nests them under
//! `/v1`, merges [`health`] at the root (`/healthz`, `/readyz`, `/metrics`), and serves the
//! OpenAPI document at `/openapi.json` and Swagger UI at `/docs`. Because the document is
//! built from the same routers that serve, it lists every route (tests/api.rs checks it).
//!
//! Errors are [`error::ApiError`] (one JSON shape, stable codes); callers are
//! [`auth::Caller`] (Bearer key, role, per-key rate limit).

pub mod auth;
pub mod calls;
pub mod campaigns;
pub mod cursor;
pub mod error;
pub mod events;
pub mod fields;
pub mod health;
pub mod keys;
pub mod limits;
pub mod openapi;
pub mod recordings;
pub mod scripts;
pub mod settings;
pub mod suppressions;
pub mod trunks;
pub mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::engine::EngineHandle;
use crate::events::{Bus, Metrics};
use crate::store::Store;

pub use auth::{Caller, Permission};
pub use error::{ApiError, ApiJson, ApiQuery};

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The data directory: recordings in `recordings/`, prompts in `prompts/`.
    pub data_dir: PathBuf,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Requests per second per API key (429 with Retry-After above); 0: unlimited.
    pub rate_limit_per_s: u32,
    /// Burst allowance of the rate limit.
    pub rate_limit_burst: u32,
    /// This node's id: the calls it places carry it (their row ends if the node stops).
    pub node_id: String,
    /// Where webhooks may point (checked when one is stored; the dispatcher checks again).
    pub webhook_egress: Arc<crate::net::egress::EgressPolicy>,
    /// Serve the dashboard's files from this directory instead of the embedded copies
    /// (`serve --dashboard-dir`, for working on the pages).
    pub dashboard_dir: Option<PathBuf>,
}

impl ApiConfig {
    /// Defaults for `data_dir`: 1 MiB bodies, 50 requests/s per key with a burst of 100.
    pub fn new(data_dir: PathBuf) -> ApiConfig {
        ApiConfig {
            data_dir,
            max_body_bytes: 1 << 20,
            rate_limit_per_s: 50,
            rate_limit_burst: 100,
            node_id: crate::store::new_id("node"),
            webhook_egress: Arc::default(),
            dashboard_dir: None,
        }
    }
}

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The engine (places and hangs up calls).
    pub engine: EngineHandle,
    /// The event bus (SSE subscribes here).
    pub bus: Bus,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub config: Arc<ApiConfig>,
    /// The per-key rate limit (built from `config` by [`AppState::new`]).
    pub limiter: Arc<limits::RateLimiter>,
    /// Failed authentications per source address ([`limits::AUTH_FAILURES_PER_MIN`]).
    pub auth_failures: Arc<limits::AuthFailures>,
    /// Wakes the campaign worker (a campaign started, resumed, got contacts or changed).
    pub campaign_wake: Arc<tokio::sync::Notify>,
    /// Resolves a call's domain `to` (RFC 3263); `None`: names are refused (422).
    pub dns: Option<crate::net::dns::Resolver>,
    /// Every trunk's live state (registration, health), shared with the registrar and the
    /// health checker; `GET /v1/trunks/{id}` shows it. [`crate::app::serve_with`] creates it.
    pub trunk_states: crate::trunk::TrunkStates,
    /// Bumped after every change to a trunk or a route through the API: the inbound router
    /// and the registrar `subscribe()` and reload (`crate::store::Store::load_trunk_directory`).
    pub trunk_changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl AppState {
    /// The state of one API server.
    pub fn new(
        store: Arc<dyn Store>,
        engine: EngineHandle,
        bus: Bus,
        metrics: Arc<Metrics>,
        config: ApiConfig,
    ) -> AppState {
        let limiter = Arc::new(limits::RateLimiter::new(
            config.rate_limit_per_s,
            config.rate_limit_burst,
        ));
        AppState {
            store,
            engine,
            bus,
            metrics,
            config: Arc::new(config),
            limiter,
            auth_failures: Arc::new(limits::AuthFailures::new(limits::AUTH_FAILURES_PER_MIN)),
            campaign_wake: Arc::default(),
            dns: None,
            trunk_states: crate::trunk::TrunkStates::default(),
            trunk_changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

impl AppState {
    /// Tells the watchers of [`AppState::trunk_changes`] that trunks or routes changed.
    pub fn trunks_changed(&self) {
        self.trunk_changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Every route with its OpenAPI description, unbound to a state.
fn api_router() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .merge(keys::routes())
        .merge(trunks::routes())
        .merge(scripts::routes())
        .merge(calls::routes())
        .merge(recordings::routes())
        .merge(events::routes())
        .merge(webhooks::routes())
        .merge(campaigns::routes())
        .merge(suppressions::routes())
        .merge(settings::routes());
    OpenApiRouter::with_openapi(openapi::base())
        .nest("/v1", v1)
        .merge(health::routes())
}

/// The OpenAPI document of every route [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}

/// The whole HTTP API: `/v1/...`, `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/docs`.
pub fn router(state: AppState) -> axum::Router {
    let max_body = state.config.max_body_bytes;
    let (routes, doc) = api_router().split_for_parts();
    routes
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .merge(crate::dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Unknown paths get the API's error shape too.
async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// A known path with a method it does not serve.
async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not serve that method",
    )
}

/// RFC 3339 (UTC, µs precision) of a time in µs since the Unix epoch.
pub(crate) fn rfc3339(us: i64) -> String {
    match jiff::Timestamp::from_microsecond(us) {
        Ok(t) => t.to_string(),
        // Outside years -9999..=9999: no store time is; print the raw number rather than fail.
        Err(_) => us.to_string(),
    }
}
