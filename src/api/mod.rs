//! The REST API (axum, JSON, under `/v1`): holds only the [`EngineHandle`] and the store.

pub mod events;
pub mod health;
pub mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::EngineHandle;
use crate::events::{Bus, Metrics};
use crate::store::Store;

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
}
