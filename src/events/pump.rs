//! The pump: every engine event → [`Bus::append`] (the store, the outbox, live subscribers).
//!
//! The engine's `event_sink` is a lossless unbounded channel; one task reads it and appends the
//! events one at a time, so the events of a call are stored in the order the call emitted them.
//!
//! Which store call an event belongs to:
//! - a tagged event ([`CallEvent::tag`]) carries the store call id the API created before it
//!   placed the call;
//! - an untagged event is an inbound call (or a call placed around the API): its `call.created`
//!   creates the call row in the inbound tenant, and the pump remembers engine id → store id
//!   until the call's final event.
//!
//! A store error never drops an event silently: a database error (the store is down or busy)
//! is retried with backoff (50 ms doubling to 5 s) for as long as it lasts, since the engine
//! keeps queueing behind it losslessly; an error that retrying cannot cure (the call row does not
//! exist, a corrupt row) is retried a few times, then the event is logged at ERROR with its call
//! and kind and dropped. Every failed attempt counts in `callplane_pump_errors_total`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Bus;
use crate::engine::{CallEvent, CallId};
use crate::store::{Created, Direction, NewCall, NewEvent, StoreError};

/// First retry delay after a store error.
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// Largest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Attempts for errors that retrying is unlikely to cure (a missing call row, a corrupt row).
const PERMANENT_ATTEMPTS: u32 = 5;

/// Spawns the pump on the current runtime. It ends when every sender of `rx` is gone (the
/// engine has stopped).
pub fn spawn_pump(
    bus: Bus,
    mut rx: mpsc::UnboundedReceiver<CallEvent>,
    inbound_tenant: String,
    node_id: String,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut pump = Pump {
            bus,
            inbound_tenant,
            node_id,
            untagged: HashMap::new(),
        };
        while let Some(event) = rx.recv().await {
            pump.handle(event).await;
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
}

impl Pump {
    async fn handle(&mut self, event: CallEvent) {
        let call_id = match &event.tag {
            Some(tag) => tag.to_string(),
            None => match self.untagged.get(&event.call_id) {
                Some(id) => id.clone(),
                None if event.kind == "call.created" => {
                    let Some(id) = self.create_untagged(&event).await else {
                        return;
                    };
                    self.untagged.insert(event.call_id, id.clone());
                    id
                }
                None => {
                    // Its `call.created` was not stored (logged there): nothing to attach to.
                    self.bus.metrics().on_pump_error();
                    tracing::error!(
                        engine_call = %event.call_id,
                        kind = event.kind,
                        "dropping an event of an untagged call that has no call row"
                    );
                    return;
                }
            },
        };
        if event.kind == "call.created" {
            // Hangup by store id works from the first event on (the API registers its calls
            // too, after `originate` returns; registering twice is harmless).
            self.bus.register_live(&call_id, event.call_id);
        }
        let is_final = event.is_final();
        let new = NewEvent {
            call_id: call_id.clone(),
            kind: event.kind.to_owned(),
            at_unix_us: event.at_unix_us,
            offset_us: i64::try_from(event.offset_us).unwrap_or(i64::MAX),
            details: event.details,
        };
        let what = format!("store {} of call {call_id}", new.kind);
        let bus = self.bus.clone();
        let _ = retry(&self.bus, &what, || bus.append(new.clone())).await;
        if is_final {
            self.bus.forget_live(&call_id);
            if event.tag.is_none() {
                self.untagged.remove(&event.call_id);
            }
        }
    }

    /// Creates the row of an untagged call from its `call.created`; `None` when the store
    /// refused for good (logged).
    async fn create_untagged(&self, event: &CallEvent) -> Option<String> {
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
        let call = NewCall {
            tenant_id: self.inbound_tenant.clone(),
            direction,
            to_uri: text("to"),
            from_uri: text("from"),
            trunk_id: None,
            script_id: None,
            script_version: None,
            campaign_id: None,
            idempotency_key: None,
            request,
            created_at_us: event.at_unix_us,
            node_id: Some(self.node_id.clone()),
        };
        let store = self.bus.store().clone();
        let what = format!("create the row of inbound call {}", event.call_id);
        match retry(&self.bus, &what, || {
            let store = store.clone();
            let call = call.clone();
            async move { store.create_call(&call).await }
        })
        .await?
        {
            Created::New(row) | Created::Existing(row) => Some(row.id),
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
        let curable = matches!(error, StoreError::Database(_) | StoreError::Migration(_));
        if !curable && attempt >= PERMANENT_ATTEMPTS {
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
        let (tx, rx) = mpsc::unbounded_channel();
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
            tx.send(ev).expect("pump running");
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
}
