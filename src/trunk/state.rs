//! The live state of every trunk on this node: registration and health. Written by the
//! registrar and the health checker, read by the API, `/metrics`, call failover and the
//! inbound router. Pure data behind a std mutex (locked briefly, never across an await).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// A trunk's registration state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RegState {
    /// Not registering (registration off, or unregistered at shutdown).
    #[default]
    Unregistered,
    /// A REGISTER is on its way.
    Registering,
    /// Registered until `expires_at_us` (Unix µs); refreshed before.
    Registered {
        /// When the binding expires.
        expires_at_us: i64,
        /// The expiry the registrar granted, seconds.
        granted_s: u32,
    },
    /// The last attempt failed.
    Failed {
        /// Its final status (0: no response).
        last_status: u16,
        /// Why, in words.
        reason: String,
        /// When the next attempt goes (Unix µs).
        next_try_at_us: i64,
    },
}

/// Whether a trunk answers its OPTIONS pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not pinged (no interval configured) or no answer yet.
    #[default]
    Unknown,
    /// Answered the last ping.
    Up,
    /// Stopped answering: skipped by calls until it answers again.
    Down,
}

/// One trunk's live state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct TrunkRuntime {
    /// Registration.
    pub registration: RegState,
    /// Health.
    pub health: Health,
    /// When `health` last changed (Unix µs; 0: never).
    pub health_since_us: i64,
}

/// Every trunk's live state, by trunk id; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct TrunkStates {
    inner: Arc<Mutex<HashMap<String, TrunkRuntime>>>,
}

impl TrunkStates {
    /// The state of `trunk_id` (default when unknown).
    pub fn get(&self, trunk_id: &str) -> TrunkRuntime {
        self.lock().get(trunk_id).cloned().unwrap_or_default()
    }

    /// Changes the state of `trunk_id` and returns the new value.
    pub fn update(&self, trunk_id: &str, f: impl FnOnce(&mut TrunkRuntime)) -> TrunkRuntime {
        let mut map = self.lock();
        let entry = map.entry(trunk_id.to_owned()).or_default();
        f(entry);
        entry.clone()
    }

    /// Forgets a deleted trunk.
    pub fn remove(&self, trunk_id: &str) {
        self.lock().remove(trunk_id);
    }

    /// Every trunk's state (for `/metrics`).
    pub fn snapshot(&self) -> Vec<(String, TrunkRuntime)> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Whether calls should skip `trunk_id` (its health is `Down`).
    pub fn is_down(&self, trunk_id: &str) -> bool {
        self.lock().get(trunk_id).map(|t| t.health) == Some(Health::Down)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TrunkRuntime>> {
        // A panic while holding this lock leaves plain data behind: keep going with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
