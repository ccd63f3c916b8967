//! `GET /healthz`, `GET /readyz`, `GET /metrics`: probes and Prometheus, at the root (not under
//! `/v1`) and without authentication, as orchestrators and scrapers expect them.
//!
//! `/readyz` checks each component with a time limit and reports the worst state:
//! - database: a round trip; down or slower than [`CHECK_TIMEOUT`] → critical (503);
//! - sip: the SIP transport answers → ok, else critical (no calls can be made or taken);
//! - disk: free space where recordings go; under 1 GiB degraded, under 100 MiB critical;
//! - webhooks: the outbox backlog; over 1000 pending deliveries → degraded;
//! - engine: draining (after SIGTERM: new calls are refused) → critical, so that a load
//!   balancer stops sending calls to a node that is going away.
//!
//! Degraded answers 200 (keep routing traffic, alert someone); critical answers 503.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Json, response::Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::events::Gauges;

/// How long one readiness check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Below this much free disk the node is degraded.
pub const DISK_DEGRADED_BYTES: u64 = 1 << 30;
/// Below this much free disk the node is critical (recordings would fail).
pub const DISK_CRITICAL_BYTES: u64 = 100 << 20;
/// Above this many pending webhook deliveries the node is degraded.
pub const BACKLOG_DEGRADED: i64 = 1000;

/// The Prometheus text exposition content type.
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// This area's routes (mounted at the root).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// `{"status": "live"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Live {
    /// Always `live`.
    pub status: &'static str,
}

/// The state of a component or of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Working.
    Healthy,
    /// Working, but someone should look (low disk, webhook backlog).
    Degraded,
    /// Not working (database down, SIP not listening, disk almost full).
    Critical,
}

/// The database check.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DatabaseCheck {
    /// Its state.
    pub status: Level,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Round-trip time of a trivial query (absent when it failed).
    pub latency_ms: Option<f64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The SIP listener check.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SipCheck {
    /// Its state.
    pub status: Level,
    /// Whether the SIP transport answers.
    pub listening: bool,
    /// The UDP address.
    pub udp: String,
    /// The TCP address, when SIP listens on TCP.
    pub tcp: Option<String>,
}

/// The free disk check.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DiskCheck {
    /// Its state.
    pub status: Level,
    /// Bytes free for recordings (absent when unknown).
    pub free_bytes: Option<u64>,
    /// The data directory measured.
    pub path: String,
    /// Why it could not be measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The webhook outbox check.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhooksCheck {
    /// Its state.
    pub status: Level,
    /// Pending deliveries (absent when the database did not answer).
    pub backlog: Option<i64>,
}

/// The call engine check.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EngineCheck {
    /// Its state: critical while draining.
    pub status: Level,
    /// Whether the node drains (refuses new calls before it stops).
    pub draining: bool,
    /// Calls live now.
    pub active_calls: usize,
}

/// Each component.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Components {
    /// The store.
    pub database: DatabaseCheck,
    /// The SIP transport.
    pub sip: SipCheck,
    /// Free disk in the data directory.
    pub disk: DiskCheck,
    /// The webhook outbox.
    pub webhooks: WebhooksCheck,
    /// The call engine.
    pub engine: EngineCheck,
}

/// The readiness report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// The worst component state.
    pub status: Level,
    /// Each component.
    pub components: Components,
}

/// The disk level for `free` bytes.
pub fn disk_level(free: u64) -> Level {
    if free < DISK_CRITICAL_BYTES {
        Level::Critical
    } else if free < DISK_DEGRADED_BYTES {
        Level::Degraded
    } else {
        Level::Healthy
    }
}

/// The webhook level for a backlog.
pub fn backlog_level(backlog: i64) -> Level {
    if backlog > BACKLOG_DEGRADED {
        Level::Degraded
    } else {
        Level::Healthy
    }
}

/// Liveness: the process answers HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, body = Live)))]
async fn healthz() -> Json<Live> {
    Json(Live { status: "live" })
}

/// Readiness: database, SIP listener, free disk, webhook backlog and whether the node drains.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, description = "healthy or degraded", body = Readiness),
        (status = 503, description = "critical", body = Readiness)))]
async fn readyz(State(s): State<AppState>) -> Response {
    let backend = match s.store.backend() {
        crate::store::Backend::Sqlite => "sqlite",
        crate::store::Backend::Postgres => "postgres",
    };
    let database = async {
        let started = crate::clock::now();
        let result = tokio::time::timeout(CHECK_TIMEOUT, s.store.ping()).await;
        let took = crate::clock::now().saturating_duration_since(started);
        match result {
            Ok(Ok(())) => DatabaseCheck {
                status: Level::Healthy,
                backend,
                latency_ms: Some(took.as_secs_f64() * 1000.0),
                error: None,
            },
            Ok(Err(e)) => DatabaseCheck {
                status: Level::Critical,
                backend,
                latency_ms: None,
                error: Some(e.to_string()),
            },
            Err(_) => DatabaseCheck {
                status: Level::Critical,
                backend,
                latency_ms: None,
                error: Some(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
            },
        }
    };
    let sip = async {
        let listening = matches!(
            tokio::time::timeout(CHECK_TIMEOUT, s.engine.sip_stats()).await,
            Ok(Ok(_))
        );
        SipCheck {
            status: if listening {
                Level::Healthy
            } else {
                Level::Critical
            },
            listening,
            udp: s.engine.sip_local_addr().to_string(),
            tcp: s.engine.sip_local_tcp_addr().map(|a| a.to_string()),
        }
    };
    let webhooks = async {
        match tokio::time::timeout(CHECK_TIMEOUT, s.store.pending_deliveries()).await {
            Ok(Ok(n)) => WebhooksCheck {
                status: backlog_level(n),
                backlog: Some(n),
            },
            // The database check reports the outage; the backlog is just unknown.
            _ => WebhooksCheck {
                status: Level::Healthy,
                backlog: None,
            },
        }
    };
    let (database, sip, webhooks) = tokio::join!(database, sip, webhooks);
    let dir = s.config.data_dir.clone();
    let measured = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || crate::files::disk::free_bytes(&dir)
    })
    .await;
    let disk = match measured {
        Ok(Ok(free)) => DiskCheck {
            status: disk_level(free),
            free_bytes: Some(free),
            path: dir.display().to_string(),
            error: None,
        },
        Ok(Err(e)) => DiskCheck {
            status: Level::Degraded,
            free_bytes: None,
            path: dir.display().to_string(),
            error: Some(e.to_string()),
        },
        Err(e) => DiskCheck {
            status: Level::Degraded,
            free_bytes: None,
            path: dir.display().to_string(),
            error: Some(e.to_string()),
        },
    };
    let draining = s.engine.is_draining();
    let engine = EngineCheck {
        status: if draining {
            Level::Critical
        } else {
            Level::Healthy
        },
        draining,
        active_calls: s.engine.active_calls(),
    };
    let status = [
        database.status,
        sip.status,
        disk.status,
        webhooks.status,
        engine.status,
    ]
    .into_iter()
    .max()
    .unwrap_or(Level::Healthy);
    let code = if status == Level::Critical {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = Readiness {
        status,
        components: Components {
            database,
            sip,
            disk,
            webhooks,
            engine,
        },
    };
    (code, Json(body)).into_response()
}

/// Prometheus metrics (text exposition format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "health", security(()),
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String)))]
async fn metrics(State(s): State<AppState>) -> Response {
    let (sip, backlog) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, s.engine.sip_stats()),
        tokio::time::timeout(CHECK_TIMEOUT, s.store.pending_deliveries()),
    );
    let gauges = Gauges {
        active_calls: Some(s.engine.active_calls()),
        sip: sip.ok().and_then(Result::ok),
        webhook_backlog: backlog.ok().and_then(Result::ok),
        event_queue: s.engine.event_queue(),
        store_backlog_refusals: s.engine.store_backlog_refusals(),
        trunks: s.trunk_states.snapshot(),
        recording: Some(s.engine.recording_stats()),
        media_workers: Some(s.engine.media_worker_stats()),
    };
    (
        [(header::CONTENT_TYPE, PROMETHEUS)],
        s.metrics.render(&gauges),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_levels_follow_the_documented_thresholds() {
        assert_eq!(disk_level(10 << 30), Level::Healthy);
        assert_eq!(disk_level(DISK_DEGRADED_BYTES), Level::Healthy);
        assert_eq!(disk_level(DISK_DEGRADED_BYTES - 1), Level::Degraded);
        assert_eq!(disk_level(DISK_CRITICAL_BYTES), Level::Degraded);
        assert_eq!(disk_level(DISK_CRITICAL_BYTES - 1), Level::Critical);
    }

    #[test]
    fn a_backlog_over_a_thousand_is_degraded() {
        assert_eq!(backlog_level(1000), Level::Healthy);
        assert_eq!(backlog_level(1001), Level::Degraded);
    }

    #[test]
    fn the_worst_level_wins() {
        assert!(Level::Critical > Level::Degraded && Level::Degraded > Level::Healthy);
        assert_eq!(
            serde_json::to_value(Level::Degraded).expect("serializes"),
            "degraded"
        );
    }
}
