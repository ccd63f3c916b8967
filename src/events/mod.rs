//! The call timeline bus: engine events → the store (with the webhook outbox, in one
//! transaction) → live subscribers (SSE) and the outbox dispatcher.
//!
//! Nothing is published before it is stored: a subscriber that reconnects with
//! `Last-Event-ID` reads from the store what it missed, and sees nothing the store lacks.
//!
//! - [`pump`]: the task that reads the engine's lossless event sink and appends every event.
//! - [`outbox`]: the webhook dispatcher (signed POSTs, retries, dead letters).
//! - [`metrics`]: the counters behind `GET /metrics`.
//!
//! Appends are serialised by the bus: the store hands out event ids in commit order and the
//! live channel publishes them in that same order, so a subscriber that skips ids it already
//! sent (the SSE resume rule) can never skip one that commits later with a smaller id.
//!
//! The bus carries this process's events only. Nodes sharing one database see each other's
//! events through the store: the SSE stream reads it while live ([`crate::api`]'s events
//! module), and the outbox dispatcher claims every node's due deliveries.

pub mod metrics;
pub mod outbox;
pub mod pump;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Mutex as AsyncMutex;
use tokio::sync::{Notify, broadcast};

use crate::engine::CallId;
use crate::store::{Appended, BatchItem, NewCampaignEvent, NewEvent, Store, StoredEvent};

pub use metrics::{Gauges, Metrics};
pub use outbox::{OutboxConfig, spawn_dispatcher};
pub use pump::spawn_pump;

/// How many stored events a live subscriber may fall behind before it is told it lagged
/// (it then re-reads from the store).
const LIVE_QUEUE: usize = 4096;

/// How many ended calls the bus remembers, so that a registration arriving after the call's
/// final event (the API registers once `originate` returns; a call can fail before that) is
/// ignored instead of leaving a stale entry.
const ENDED_MEMORY: usize = 4096;

/// Store call id → engine call id of the calls live in this process.
#[derive(Debug, Default)]
struct LiveCalls {
    by_call: HashMap<String, CallId>,
    ended: HashSet<String>,
    ended_order: VecDeque<String>,
}

/// The clone-able bus.
#[derive(Debug, Clone)]
pub struct Bus {
    store: Arc<dyn Store>,
    live: broadcast::Sender<StoredEvent>,
    outbox: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// Store call id → engine call id, for the calls live in this process (hangup needs it).
    live_calls: Arc<Mutex<LiveCalls>>,
    /// Held across store append + publish: ids commit and publish in one order.
    append_lock: Arc<AsyncMutex<()>>,
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
            append_lock: Arc::default(),
        }
    }

    /// Remembers which engine call carries the store call `call_id` (until its final event;
    /// a call whose final event was already stored is not registered again).
    pub fn register_live(&self, call_id: &str, engine_id: CallId) {
        let mut live = self
            .live_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !live.ended.contains(call_id) {
            live.by_call.insert(call_id.to_owned(), engine_id);
        }
    }

    /// The engine call of a live store call.
    pub fn engine_id(&self, call_id: &str) -> Option<CallId> {
        self.live_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_call
            .get(call_id)
            .copied()
    }

    /// Forgets a call (its final event was stored).
    pub fn forget_live(&self, call_id: &str) {
        let mut live = self
            .live_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        live.by_call.remove(call_id);
        if live.ended.insert(call_id.to_owned()) {
            live.ended_order.push_back(call_id.to_owned());
            if live.ended_order.len() > ENDED_MEMORY
                && let Some(oldest) = live.ended_order.pop_front()
            {
                live.ended.remove(&oldest);
            }
        }
    }

    /// Stores an event (folding it into its call and queueing its webhook deliveries), then
    /// publishes it and wakes the outbox dispatcher.
    pub async fn append(&self, event: NewEvent) -> crate::store::Result<Appended> {
        let started = crate::clock::now();
        let mut appended = self.append_batch(&[BatchItem::event(event)]).await?;
        self.metrics
            .observe_append(crate::clock::now().saturating_duration_since(started));
        appended.pop().ok_or_else(|| {
            crate::store::StoreError::Database("a batch of one stored nothing".into())
        })
    }

    /// Stores a batch in one transaction ([`Store::append_batch`]: all or nothing), then
    /// publishes its events in id order and wakes the outbox dispatcher once.
    pub async fn append_batch(&self, batch: &[BatchItem]) -> crate::store::Result<Vec<Appended>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let _order = self.append_lock.lock().await;
        let started = crate::clock::now();
        let appended = match self.store.append_batch(batch).await {
            Ok(a) => a,
            Err(e) => {
                self.metrics.on_append_error();
                return Err(e);
            }
        };
        self.metrics.observe_commit(
            crate::clock::now().saturating_duration_since(started),
            appended.len(),
        );
        let mut wake = false;
        for a in &appended {
            self.metrics.on_event(a);
            // Err only means nobody listens live right now; the store has it.
            let _ = self.live.send(a.event.clone());
            wake |= !a.deliveries.is_empty();
        }
        if wake {
            self.outbox.notify_one();
        }
        Ok(appended)
    }

    /// Stores a campaign's own event (`campaign.started|paused|resumed|completed|cancelled`,
    /// `contact.deferred|suppressed|exhausted`…: `kind` must be `campaign.*` or `contact.*`)
    /// with its webhook deliveries in one transaction ([`Store::append_campaign_event`]), then
    /// publishes it to live subscribers (SSE; `call_id` is `None`, `campaign_id` is set) and
    /// wakes the outbox, in the same order as the calls' events. `details` carries what the
    /// caller wants subscribers to see, e.g. the campaign's progress counts. Stamped with the
    /// wall clock now.
    pub async fn append_campaign_event(
        &self,
        tenant_id: &str,
        campaign_id: &str,
        kind: &str,
        details: serde_json::Value,
    ) -> crate::store::Result<StoredEvent> {
        let event = NewCampaignEvent {
            tenant_id: tenant_id.to_owned(),
            campaign_id: campaign_id.to_owned(),
            kind: kind.to_owned(),
            at_unix_us: crate::clock::unix_us(),
            details,
        };
        let _order = self.append_lock.lock().await;
        let started = crate::clock::now();
        let appended = match self.store.append_campaign_event(&event).await {
            Ok(a) => a,
            Err(e) => {
                self.metrics.on_append_error();
                return Err(e);
            }
        };
        self.metrics
            .observe_commit(crate::clock::now().saturating_duration_since(started), 1);
        self.metrics.on_stored(&appended.event);
        // Err only means nobody listens live right now; the store has it.
        let _ = self.live.send(appended.event.clone());
        if !appended.deliveries.is_empty() {
            self.outbox.notify_one();
        }
        Ok(appended.event)
    }

    /// Stores a trunk's own event (`trunk.registration`, `trunk.health`): a timeline row
    /// without a call or a campaign, `trunk_id` put in its details; published live and to
    /// webhooks like any other.
    pub async fn append_trunk_event(
        &self,
        tenant_id: &str,
        trunk_id: &str,
        kind: &str,
        mut details: serde_json::Value,
    ) -> crate::store::Result<StoredEvent> {
        if let Some(map) = details.as_object_mut() {
            map.insert("trunk_id".to_owned(), serde_json::Value::from(trunk_id));
        } else {
            details = serde_json::json!({"trunk_id": trunk_id, "value": details});
        }
        let event = crate::store::NewTrunkEvent {
            tenant_id: tenant_id.to_owned(),
            kind: kind.to_owned(),
            at_unix_us: crate::clock::unix_us(),
            details,
        };
        let _order = self.append_lock.lock().await;
        let started = crate::clock::now();
        let appended = match self.store.append_trunk_event(&event).await {
            Ok(a) => a,
            Err(e) => {
                self.metrics.on_append_error();
                return Err(e);
            }
        };
        self.metrics
            .observe_commit(crate::clock::now().saturating_duration_since(started), 1);
        self.metrics.on_stored(&appended.event);
        let _ = self.live.send(appended.event.clone());
        if !appended.deliveries.is_empty() {
            self.outbox.notify_one();
        }
        Ok(appended.event)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqlStore;

    #[tokio::test]
    async fn a_registration_after_the_final_event_leaves_no_stale_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqlStore::open_sqlite(&dir.path().join("cp.db"))
            .await
            .expect("sqlite store");
        let bus = Bus::new(Arc::new(store), Arc::new(Metrics::default()));
        bus.register_live("call_a", CallId(1));
        assert_eq!(bus.engine_id("call_a"), Some(CallId(1)));
        bus.forget_live("call_a");
        assert_eq!(bus.engine_id("call_a"), None);
        // The API's registration can come after the pump stored a fast failure.
        bus.forget_live("call_b");
        bus.register_live("call_b", CallId(2));
        assert_eq!(bus.engine_id("call_b"), None);
        // The memory of ended calls is bounded.
        for i in 0..ENDED_MEMORY + 1 {
            bus.forget_live(&format!("x{i}"));
        }
        let live = bus.live_calls.lock().expect("lock");
        assert_eq!(live.ended.len(), ENDED_MEMORY);
        assert!(!live.ended.contains("call_a"));
    }
}
