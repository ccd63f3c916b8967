//! The call timeline bus: engine events → the store (with the webhook outbox, in one
//! transaction) → live subscribers (SSE) and the outbox dispatcher.
//!
//! Nothing is published before it is stored: a subscriber that reconnects with
//! `Last-Event-ID` reads from the store what it missed, and sees nothing the store lacks.

pub mod metrics;
pub mod outbox;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, broadcast};

use crate::engine::CallId;
use crate::store::{Appended, NewEvent, Store, StoredEvent};

pub use metrics::Metrics;

/// How many stored events a live subscriber may fall behind before it is told it lagged
/// (it then re-reads from the store).
const LIVE_QUEUE: usize = 4096;

/// The clone-able bus.
#[derive(Debug, Clone)]
pub struct Bus {
    store: Arc<dyn Store>,
    live: broadcast::Sender<StoredEvent>,
    outbox: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// Store call id → engine call id, for the calls live in this process (hangup needs it).
    live_calls: Arc<Mutex<HashMap<String, CallId>>>,
}

impl Bus {
    /// A bus over `store`.
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Bus {
        let (live, _) = broadcast::channel(LIVE_QUEUE);
        Bus {
            store,
            live,
            outbox: Arc::new(Notify::new()),
            metrics,
            live_calls: Arc::default(),
        }
    }

    /// Remembers which engine call carries the store call `call_id` (until its final event).
    pub fn register_live(&self, call_id: &str, engine_id: CallId) {
        self.live_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(call_id.to_owned(), engine_id);
    }

    /// The engine call of a live store call.
    pub fn engine_id(&self, call_id: &str) -> Option<CallId> {
        self.live_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(call_id)
            .copied()
    }

    /// Forgets a call (its final event was stored).
    pub fn forget_live(&self, call_id: &str) {
        self.live_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(call_id);
    }

    /// Stores an event (folding it into its call and queueing its webhook deliveries), then
    /// publishes it and wakes the outbox dispatcher.
    pub async fn append(&self, event: NewEvent) -> crate::store::Result<Appended> {
        let appended = self.store.append_event(&event).await?;
        self.metrics.on_event(&appended);
        // Err only means nobody listens live right now; the store has it.
        let _ = self.live.send(appended.event.clone());
        if !appended.deliveries.is_empty() {
            self.outbox.notify_one();
        }
        Ok(appended)
    }

    /// Stored events from now on (subscribe before reading the backlog from the store).
    pub fn subscribe(&self) -> broadcast::Receiver<StoredEvent> {
        self.live.subscribe()
    }

    /// Wakes the outbox dispatcher (new or redelivered deliveries).
    pub fn wake_outbox(&self) {
        self.outbox.notify_one();
    }

    /// The notifier the outbox dispatcher waits on.
    pub fn outbox_notify(&self) -> Arc<Notify> {
        self.outbox.clone()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
