//! The pump: engine events → the store in group commits ([`Bus::append_batch`]: the store,
//! the outbox, live subscribers).
//!
//! The engine's `event_sink` is a bounded queue ([`EventQueue`]); one task reads it. Each turn
//! it takes everything queued, up to [`BATCH_MAX`] events, and writes them in ONE transaction
//! (inbound call rows, events, call folds, recording and outbox rows), so the events of a call
//! are stored in the order the call emitted them and ids rise in commit order. After the commit
//! it publishes them (in id order), wakes the outbox, fires each item's
//! [`SinkItem::committed`] oneshot, and releases the batch from the queue's depth.
//!
//! Which store call an event belongs to:
//! - a tagged event ([`CallEvent::tag`]) carries the store call id the API created before it
//!   placed the call;
//! - an untagged event is an inbound call (or a call placed around the API): its `call.created`
//!   creates the call row in the inbound tenant (in the same batch; the pump picks the row id),
//!   and the pump remembers engine id → store id until the call's final event.
//!
//! A store error never drops an event silently: a database error (the store is down or busy)
//! is retried with backoff (50 ms doubling to 5 s) for as long as it lasts, since the engine
//! keeps queueing behind it (and refuses new calls once the queue is half full); a batch that
//! fails with an error that retrying cannot cure (a missing call row, a refused value) is
//! written again one event per transaction, so only the bad event is lost: it is retried a few
//! times, then logged at ERROR with its call and kind, dropped, and counted in
//! `callplane_pump_dropped_events_total`. Every failed attempt counts in
//! `callplane_pump_errors_total`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::Bus;
use crate::engine::{CallEvent, CallId, Committed, EventQueue, SinkItem};
use crate::store::{BatchItem, Direction, NewCall, NewEvent, StoreError, new_id};

/// The most events one transaction stores.
pub const BATCH_MAX: usize = 512;
/// First retry delay after a store error.
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// Largest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Attempts for errors that retrying is unlikely to cure (a missing call row, a corrupt row).
const PERMANENT_ATTEMPTS: u32 = 5;

/// Spawns the pump on the current runtime. It ends when every sender of `queue` is gone (the
/// engine has stopped) and the last batch is stored.
pub fn spawn_pump(
    bus: Bus,
    queue: EventQueue,
    inbound_tenant: String,
    node_id: String,
) -> JoinHandle<()> {
    spawn_pump_with(bus, queue, inbound_tenant, node_id, None)
}

/// The tenant of a trunk, for inbound calls that came through one (#11).
pub type TrunkTenants = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// [`spawn_pump`], with the tenant of a trunk: an inbound call whose `call.created` names a
/// `trunk_id` gets a row in that trunk's tenant, carrying the trunk (other inbound calls: the
/// inbound tenant).
pub fn spawn_pump_with(
    bus: Bus,
    mut queue: EventQueue,
    inbound_tenant: String,
    node_id: String,
    trunk_tenants: Option<TrunkTenants>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut pump = Pump {
            bus,
            inbound_tenant,
            node_id,
            untagged: HashMap::new(),
            trunk_tenants,
        };
        let mut batch = Vec::with_capacity(BATCH_MAX);
        while queue.recv_many(&mut batch, BATCH_MAX).await > 0 {
            let n = batch.len();
            let done = pump.handle_batch(std::mem::take(&mut batch)).await;
            // Out of the depth first: whoever a oneshot wakes sees the queue as it now is.
            queue.committed(n);
            for (tx, how) in done {
                // The engine may have stopped waiting: ignored.
                let _ = tx.send(how);
            }
        }
        tracing::debug!("event pump stopped: the engine's event sink closed");
    })
}

struct Pump {
    bus: Bus,
    inbound_tenant: String,
    /// This node: inbound calls' rows carry it.
    node_id: String,
    /// Engine id → store call id of the untagged (inbound) calls, until their final event.
    untagged: HashMap<CallId, String>,
    /// The tenant of a trunk.
    trunk_tenants: Option<TrunkTenants>,
}

/// One event ready for the store.
struct Prepared {
    item: BatchItem,
    /// The engine call whose row this item creates (an untagged `call.created`).
    creates_for: Option<CallId>,
    is_final: bool,
    committed: Option<oneshot::Sender<Committed>>,
}

/// The oneshots of a handled batch, to fire once it has left the queue's depth.
type Done = Vec<(oneshot::Sender<Committed>, Committed)>;

/// Notes an item's oneshot for firing.
fn fire(done: &mut Done, committed: Option<oneshot::Sender<Committed>>, how: Committed) {
    if let Some(tx) = committed {
        done.push((tx, how));
    }
}

/// Whether retrying can cure a store error (the database is down or locked), as opposed to a
/// bad row (a missing call, a refused value).
fn curable(error: &StoreError) -> bool {
    matches!(error, StoreError::Database(_) | StoreError::Migration(_))
}

impl Pump {
    #[cfg(test)]
    async fn handle(&mut self, event: CallEvent) {
        let _ = self
            .handle_batch(vec![SinkItem {
                event,
                committed: None,
            }])
            .await;
    }

    /// Stores one batch: one transaction, or one per event when it holds a bad row. Returns
    /// the items' oneshots with what to tell them (stored or dropped).
    async fn handle_batch(&mut self, items: Vec<SinkItem>) -> Done {
        let mut done = Done::new();
        let mut batch = Vec::with_capacity(items.len());
        for SinkItem { event, committed } in items {
            let engine_id = event.call_id;
            match self.prepare(event) {
                Some((item, is_final)) => batch.push(Prepared {
                    creates_for: item.new_call.as_ref().map(|_| engine_id),
                    item,
                    is_final,
                    committed,
                }),
                None => fire(&mut done, committed, Committed::Dropped),
            }
        }
        if batch.is_empty() {
            return done;
        }
        if batch.len() > 1 {
            let items: Vec<BatchItem> = batch.iter().map(|p| p.item.clone()).collect();
            let mut delay = RETRY_FIRST;
            let mut attempt: u32 = 0;
            loop {
                let error = match self.bus.append_batch(&items).await {
                    Ok(_) => {
                        if attempt > 0 {
                            tracing::info!(
                                attempts = attempt + 1,
                                events = items.len(),
                                "batch stored after retrying"
                            );
                        }
                        for p in batch {
                            self.after_commit(&p);
                            fire(&mut done, p.committed, Committed::Stored);
                        }
                        return done;
                    }
                    Err(e) => e,
                };
                attempt += 1;
                self.bus.metrics().on_pump_error();
                if !curable(&error) {
                    // A bad row: find it by storing the events one by one.
                    tracing::warn!(%error, events = items.len(), "a batch was refused; storing its events one by one");
                    break;
                }
                if attempt <= 3 || attempt.is_multiple_of(10) {
                    tracing::warn!(%error, attempt, events = items.len(), retry_in_ms = delay.as_millis() as u64, "store error, retrying the batch");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
        // One by one (a batch of one, or a batch that held a bad row).
        let mut not_created: HashSet<String> = HashSet::new();
        for p in batch {
            let call_id = p.item.event.call_id.clone();
            let what = format!("store {} of call {call_id}", p.item.event.kind);
            let stored = if p.item.new_call.is_none() && not_created.contains(&call_id) {
                tracing::error!(call = %call_id, kind = p.item.event.kind, "{what}: its call row was not created; event dropped");
                None
            } else {
                let bus = self.bus.clone();
                let item = p.item.clone();
                retry(&self.bus, &what, || {
                    let bus = bus.clone();
                    let item = item.clone();
                    async move { bus.append_batch(std::slice::from_ref(&item)).await }
                })
                .await
            };
            if stored.is_some() {
                self.after_commit(&p);
                fire(&mut done, p.committed, Committed::Stored);
            } else {
                self.bus.metrics().on_pump_drop();
                if let Some(engine_id) = p.creates_for {
                    // Later events of this call have no row to attach to (logged as such).
                    self.untagged.remove(&engine_id);
                    not_created.insert(call_id);
                }
                if p.is_final {
                    self.bus.forget_live(&p.item.event.call_id);
                }
                fire(&mut done, p.committed, Committed::Dropped);
            }
        }
        done
    }

    /// After a final event is stored the call is no longer live.
    fn after_commit(&self, p: &Prepared) {
        if p.is_final {
            self.bus.forget_live(&p.item.event.call_id);
        }
    }

    /// Maps an engine event to its store call (creating the row of an untagged call from its
    /// `call.created`); `None` when it belongs to no row (logged and counted).
    fn prepare(&mut self, event: CallEvent) -> Option<(BatchItem, bool)> {
        let mut new_call = None;
        let call_id = match &event.tag {
            Some(tag) => tag.to_string(),
            None => match self.untagged.get(&event.call_id) {
                Some(id) => id.clone(),
                None if event.kind == "call.created" => {
                    let id = new_id("call");
                    new_call = Some(self.inbound_row(&event));
                    self.untagged.insert(event.call_id, id.clone());
                    id
                }
                None => {
                    // Its `call.created` was not stored (logged there): nothing to attach to.
                    self.bus.metrics().on_pump_error();
                    self.bus.metrics().on_pump_drop();
                    tracing::error!(
                        engine_call = %event.call_id,
                        kind = event.kind,
                        "dropping an event of an untagged call that has no call row"
                    );
                    return None;
                }
            },
        };
        if event.kind == "call.created" {
            // Hangup by store id works from the first event on (the API registers its calls
            // too, after `originate` returns; registering twice is harmless).
            self.bus.register_live(&call_id, event.call_id);
        }
        let is_final = event.is_final();
        if is_final && event.tag.is_none() {
            // Later events of this engine call (a stray one) attach to nothing.
            self.untagged.remove(&event.call_id);
        }
        let item = BatchItem {
            new_call,
            event: NewEvent {
                call_id,
                kind: event.kind.to_owned(),
                at_unix_us: event.at_unix_us,
                offset_us: i64::try_from(event.offset_us).unwrap_or(i64::MAX),
                details: event.details,
            },
        };
        Some((item, is_final))
    }

    /// The row of an untagged call, from its `call.created`.
    fn inbound_row(&self, event: &CallEvent) -> NewCall {
        let text = |key: &str| {
            event
                .details
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let direction = match event.details.get("direction").and_then(Value::as_str) {
            Some("outbound") => Direction::Outbound,
            _ => Direction::Inbound,
        };
        let mut request = json!({});
        for key in ["source", "transport"] {
            if let Some(v) = event.details.get(key) {
                request[key] = v.clone();
            }
        }
        let trunk_id = event
            .details
            .get("trunk_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let tenant_id = trunk_id
            .as_deref()
            .and_then(|t| self.trunk_tenants.as_ref().and_then(|f| f(t)))
            .unwrap_or_else(|| self.inbound_tenant.clone());
        NewCall {
            tenant_id,
            direction,
            to_uri: text("to"),
            from_uri: text("from"),
            trunk_id,
            script_id: None,
            script_version: None,
            campaign_id: None,
            idempotency_key: None,
            request,
            created_at_us: event.at_unix_us,
            node_id: Some(self.node_id.clone()),
        }
    }
}

/// Runs `op` until it succeeds, with backoff; `None` when it failed for good (logged).
async fn retry<T, F, Fut>(bus: &Bus, what: &str, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = RETRY_FIRST;
    let mut attempt: u32 = 0;
    loop {
        let error = match op().await {
            Ok(v) => {
                if attempt > 0 {
                    tracing::info!(attempts = attempt + 1, "{what}: succeeded after retrying");
                }
                return Some(v);
            }
            Err(e) => e,
        };
        attempt += 1;
        bus.metrics().on_pump_error();
        // A database that is down or locked comes back; a missing or corrupt row does not.
        if !curable(&error) && attempt >= PERMANENT_ATTEMPTS {
            tracing::error!(%error, attempts = attempt, "{what}: failed for good; event dropped");
            return None;
        }
        // Log the first failures, then every tenth: a long outage should not flood the log.
        if attempt <= 3 || attempt.is_multiple_of(10) {
            tracing::warn!(%error, attempt, retry_in_ms = delay.as_millis() as u64, "{what}: store error, retrying");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::engine::EventSink;
    use crate::events::Metrics;
    use crate::store::{CallFilter, EventFilter, SqlStore, Store};

    fn event(id: u64, kind: &'static str, tag: Option<&str>, details: Value) -> CallEvent {
        CallEvent {
            call_id: CallId(id),
            kind,
            at_unix_us: 1_700_000_000_000_000 + id as i64,
            offset_us: 10,
            details,
            tag: tag.map(Arc::from),
        }
    }

    async fn bus() -> (Bus, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(
            SqlStore::open_sqlite(&dir.path().join("cp.db"))
                .await
                .expect("sqlite store"),
        );
        let tenant = store.create_tenant("t", 1).await.expect("tenant").id;
        (Bus::new(store, Arc::new(Metrics::default())), tenant, dir)
    }

    #[tokio::test]
    async fn an_untagged_call_gets_an_inbound_row_and_its_events_in_order() {
        let (bus, tenant, _dir) = bus().await;
        let (tx, rx) = EventSink::channel(64);
        let pump = spawn_pump(bus.clone(), rx, tenant.clone(), "node_test".to_owned());
        let created = json!({"direction": "inbound", "from": "sip:alice@192.0.2.1",
            "to": "sip:100@127.0.0.1", "sip_call_id": "x@y", "source": "192.0.2.1:5060"});
        for ev in [
            event(7, "call.created", None, created),
            event(7, "sip.answered", None, json!({"sip_status": 200})),
            event(7, "call.completed", None, json!({"outcome": "answered"})),
            // After its final event the engine id is forgotten: a stray event is not stored.
            event(7, "sip.bye_received", None, json!({})),
        ] {
            assert!(
                tx.send(SinkItem {
                    event: ev,
                    committed: None
                })
                .await
            );
        }
        drop(tx);
        pump.await.expect("pump ends when the sink closes");

        let store = bus.store();
        let calls = store
            .list_calls(
                &tenant,
                &CallFilter {
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .expect("calls");
        assert_eq!(calls.items.len(), 1);
        let call = &calls.items[0];
        assert_eq!(call.direction, Direction::Inbound);
        assert_eq!(call.from_uri, "sip:alice@192.0.2.1");
        assert_eq!(call.to_uri, "sip:100@127.0.0.1");
        assert_eq!(call.request["source"], "192.0.2.1:5060");
        assert_eq!(call.outcome.as_deref(), Some("answered"));
        let filter = EventFilter {
            call_id: Some(call.id.clone()),
            ..Default::default()
        };
        let kinds: Vec<String> = store
            .events_after(&tenant, 0, &filter, 100)
            .await
            .expect("events")
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["call.created", "sip.answered", "call.completed"]);
        assert_eq!(bus.engine_id(&call.id), None);
        assert_eq!(
            bus.metrics().pump_errors(),
            1,
            "the stray event was counted"
        );
    }

    #[tokio::test]
    async fn tagged_events_go_to_their_call_and_register_it_live_until_the_end() {
        let (bus, tenant, _dir) = bus().await;
        let row = bus
            .store()
            .create_call(&NewCall::outbound(
                tenant.clone(),
                "sip:b@127.0.0.1",
                "sip:a@127.0.0.1",
                1,
            ))
            .await
            .expect("call")
            .into_call();
        let mut pump = Pump {
            bus: bus.clone(),
            inbound_tenant: tenant.clone(),
            node_id: "node_test".to_owned(),
            untagged: HashMap::new(),
            trunk_tenants: None,
        };
        pump.handle(event(3, "call.created", Some(&row.id), json!({})))
            .await;
        assert_eq!(bus.engine_id(&row.id), Some(CallId(3)));
        pump.handle(event(
            3,
            "call.failed",
            Some(&row.id),
            json!({"outcome": "busy"}),
        ))
        .await;
        assert_eq!(bus.engine_id(&row.id), None);
        let stored = bus.store().get_call(&tenant, &row.id).await.expect("row");
        assert_eq!(stored.outcome.as_deref(), Some("busy"));
        assert_eq!(bus.metrics().pump_errors(), 0);
    }

    #[tokio::test]
    async fn an_event_for_a_missing_call_row_is_retried_then_dropped_and_counted() {
        let (bus, tenant, _dir) = bus().await;
        let mut pump = Pump {
            bus: bus.clone(),
            inbound_tenant: tenant,
            node_id: "node_test".to_owned(),
            untagged: HashMap::new(),
            trunk_tenants: None,
        };
        pump.handle(event(
            1,
            "sip.trying",
            Some("call_000000000000000000000000"),
            json!({}),
        ))
        .await;
        assert_eq!(bus.metrics().pump_errors(), u64::from(PERMANENT_ATTEMPTS));
    }

    #[tokio::test]
    async fn a_burst_of_thousands_of_events_is_stored_in_order_in_a_few_commits() {
        const CALLS: usize = 100;
        const PER_CALL: usize = 30;
        let (bus, tenant, _dir) = bus().await;
        let mut rows = Vec::new();
        for n in 0..CALLS {
            let row = bus
                .store()
                .create_call(&NewCall::outbound(
                    tenant.clone(),
                    format!("sip:{n}@127.0.0.1"),
                    "sip:a@127.0.0.1",
                    1,
                ))
                .await
                .expect("call")
                .into_call();
            rows.push(row.id);
        }
        // Interleaved as live calls emit: every call's i-th event, then the (i+1)-th.
        let (tx, rx) = EventSink::channel(CALLS * PER_CALL);
        let mut sent = Vec::new();
        let mut last = None;
        for i in 0..PER_CALL {
            for (n, row) in rows.iter().enumerate() {
                let mut ev = event(n as u64, "media.quality", Some(row), json!({"i": i}));
                ev.at_unix_us = (i * CALLS + n) as i64;
                sent.push((row.clone(), ev.at_unix_us));
                let (done, wait) = oneshot::channel();
                last = Some(wait);
                let it = SinkItem {
                    event: ev,
                    committed: Some(done),
                };
                assert!(tx.try_send(it).is_ok(), "room for the whole burst");
            }
        }
        assert_eq!(tx.gauge().depth(), CALLS * PER_CALL);
        let pump = spawn_pump(bus.clone(), rx, tenant.clone(), "node_test".to_owned());
        let last = tokio::time::timeout(Duration::from_secs(60), last.expect("sent"))
            .await
            .expect("the pump stores 3000 events within 60 s");
        assert_eq!(last, Ok(Committed::Stored));
        assert_eq!(tx.gauge().depth(), 0, "every event left the queue's depth");
        drop(tx);
        pump.await.expect("pump task");

        let mut stored = Vec::new();
        let mut after = 0;
        loop {
            let page = bus
                .store()
                .events_after(&tenant, after, &EventFilter::default(), 5000)
                .await
                .expect("events");
            let Some(last) = page.last() else { break };
            after = last.id;
            stored.extend(
                page.into_iter()
                    .map(|e| (e.call_id.expect("a call's event"), e.at_unix_us)),
            );
        }
        assert_eq!(stored.len(), sent.len(), "every event stored");
        assert_eq!(stored, sent, "stored in the order they were queued");
        let commits = bus.metrics().store_commits();
        assert!(
            commits <= (CALLS * PER_CALL).div_ceil(BATCH_MAX) as u64 + 1,
            "{commits} transactions for {} events",
            CALLS * PER_CALL
        );
        assert_eq!(bus.metrics().pump_errors(), 0);
    }

    #[tokio::test]
    async fn a_bad_event_in_a_batch_drops_only_itself_and_commits_fire_after_storing() {
        let (bus, tenant, _dir) = bus().await;
        let row = bus
            .store()
            .create_call(&NewCall::outbound(
                tenant.clone(),
                "sip:b@127.0.0.1",
                "sip:a@127.0.0.1",
                1,
            ))
            .await
            .expect("call")
            .into_call();
        let (tx, rx) = EventSink::channel(64);
        let mut waits = Vec::new();
        let created = json!({"direction": "inbound", "from": "sip:alice@192.0.2.1",
            "to": "sip:100@127.0.0.1"});
        for ev in [
            event(7, "call.created", None, created),
            event(3, "sip.ringing", Some(&row.id), json!({})),
            // No such row: a permanent error for the whole batch.
            event(
                4,
                "sip.trying",
                Some("call_000000000000000000000000"),
                json!({}),
            ),
            event(7, "sip.answered", None, json!({"sip_status": 200})),
            event(3, "call.failed", Some(&row.id), json!({"outcome": "busy"})),
        ] {
            let (done, wait) = oneshot::channel();
            waits.push((ev.kind, wait));
            assert!(
                tx.try_send(SinkItem {
                    event: ev,
                    committed: Some(done)
                })
                .is_ok()
            );
        }
        let pump = spawn_pump(bus.clone(), rx, tenant.clone(), "node_test".to_owned());
        let mut results = Vec::new();
        for (kind, wait) in waits {
            let r = tokio::time::timeout(Duration::from_secs(30), wait)
                .await
                .expect("every item's commit fires")
                .expect("fired, not dropped");
            if r == Committed::Stored {
                // Fired after the commit: already readable.
                let all = bus
                    .store()
                    .events_after(&tenant, 0, &EventFilter::default(), 0)
                    .await
                    .expect("events");
                assert!(
                    all.iter().any(|e| e.kind == kind),
                    "{kind} stored before it fired"
                );
            }
            results.push(r);
        }
        assert_eq!(
            results,
            [
                Committed::Stored,
                Committed::Stored,
                Committed::Dropped,
                Committed::Stored,
                Committed::Stored
            ]
        );
        drop(tx);
        pump.await.expect("pump");
        assert_eq!(
            bus.metrics().pump_dropped(),
            1,
            "only the bad event was dropped"
        );
        let stored = bus.store().get_call(&tenant, &row.id).await.expect("row");
        assert_eq!(stored.outcome.as_deref(), Some("busy"));
        let calls = bus
            .store()
            .list_calls(&tenant, &CallFilter::default())
            .await
            .expect("calls");
        let inbound = calls
            .items
            .iter()
            .find(|c| c.direction == Direction::Inbound)
            .expect("the inbound row was created");
        assert_eq!(inbound.status, crate::store::CallStatus::Answered);
    }
}
