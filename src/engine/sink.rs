//! The engine → store event queue: bounded, lossless for calls already accepted, and the signal
//! that refuses new calls while the store is behind.
//!
//! [`EventSink::channel`] makes the two ends. Calls send [`SinkItem`]s (awaiting room when the
//! queue is full: backpressure, never a dropped event); the control plane's pump takes them
//! from the [`EventQueue`] in batches, commits each batch, then fires the items'
//! [`SinkItem::committed`] oneshots and calls [`EventQueue::committed`].
//!
//! Depth is counted from send to commit (what sits in the channel plus what the pump holds in
//! a batch it has not committed yet), so a store that is down shows as a full queue even though
//! the pump has taken the events out of the channel. At or over the high-water mark (half the
//! capacity) the engine refuses new calls: 503 with Retry-After to an INVITE and
//! [`crate::engine::EngineError::StoreBacklog`] to `originate`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::events::CallEvent;

/// The smallest queue [`EventSink::channel`] makes (its high-water mark is then 1).
pub const MIN_EVENT_QUEUE: usize = 2;

/// What the pump says about an event whose [`SinkItem::committed`] it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The event (and the call row it created, if any) is committed.
    Stored,
    /// The store refused it for good (logged and counted as dropped): it will never be stored.
    Dropped,
}

/// One event on its way to the store.
#[derive(Debug)]
pub struct SinkItem {
    /// The event.
    pub event: CallEvent,
    /// Fired by the pump after the transaction holding the event committed (or when it gave
    /// the event up). The engine attaches one to a call's final event (its slot is freed only
    /// then) and to an inbound call's `call.created` (the call is answered only then).
    pub committed: Option<oneshot::Sender<Committed>>,
}

#[derive(Debug)]
struct Shared {
    capacity: usize,
    high_water: usize,
    /// Sent and not yet committed (or dropped) by the pump.
    uncommitted: AtomicUsize,
    /// New calls refused for being over the high-water mark.
    refusals: AtomicU64,
}

/// The sending end, held by the engine (clone-able).
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::Sender<SinkItem>,
    gauge: SinkGauge,
}

/// The receiving end, read by the pump.
#[derive(Debug)]
pub struct EventQueue {
    rx: mpsc::Receiver<SinkItem>,
    shared: Arc<Shared>,
}

impl EventSink {
    /// A queue of `capacity` events (at least [`MIN_EVENT_QUEUE`]); new calls are refused at
    /// `capacity / 2` uncommitted events.
    pub fn channel(capacity: usize) -> (EventSink, EventQueue) {
        let capacity = capacity.max(MIN_EVENT_QUEUE);
        let (tx, rx) = mpsc::channel(capacity);
        let shared = Arc::new(Shared {
            capacity,
            high_water: capacity / 2,
            uncommitted: AtomicUsize::new(0),
            refusals: AtomicU64::new(0),
        });
        (
            EventSink {
                tx,
                gauge: SinkGauge {
                    shared: shared.clone(),
                },
            },
            EventQueue { rx, shared },
        )
    }

    /// Queues an item, waiting for room when the queue is full. `false` when the pump has
    /// stopped (shutdown): the item is dropped.
    pub async fn send(&self, item: SinkItem) -> bool {
        match self.tx.reserve().await {
            Ok(permit) => {
                self.gauge
                    .shared
                    .uncommitted
                    .fetch_add(1, Ordering::Relaxed);
                permit.send(item);
                true
            }
            Err(_) => false,
        }
    }

    /// Queues an item if there is room now; gives it back when the queue is full. A stopped
    /// pump (shutdown) takes it and drops it.
    pub fn try_send(&self, item: SinkItem) -> Result<(), SinkItem> {
        match self.tx.try_reserve() {
            Ok(permit) => {
                self.gauge
                    .shared
                    .uncommitted
                    .fetch_add(1, Ordering::Relaxed);
                permit.send(item);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(())) => Err(item),
            Err(mpsc::error::TrySendError::Closed(())) => Ok(()),
        }
    }

    /// Waits for room for one item; the permit sends it ([`SinkPermit::send`]). `None` when the
    /// pump has stopped.
    pub async fn reserve(&self) -> Option<SinkPermit<'_>> {
        let permit = self.tx.reserve().await.ok()?;
        Some(SinkPermit {
            permit,
            shared: &self.gauge.shared,
        })
    }

    /// The queue's counters: depth, capacity, backlog, refusals ([`SinkGauge`]; clone it for
    /// a holder that must not keep the queue open).
    pub fn gauge(&self) -> &SinkGauge {
        &self.gauge
    }
}

/// A view of the queue's counters that holds no sender, for the engine's handle: the API and
/// `/metrics` read the depth and refuse new calls on it, while only the engine (its dispatcher
/// and its calls) holds [`EventSink`]s, so the pump sees the queue close once the engine has
/// stopped, however long other holders of the handle live.
#[derive(Debug, Clone)]
pub struct SinkGauge {
    shared: Arc<Shared>,
}

impl SinkGauge {
    /// Events sent and not yet committed.
    pub fn depth(&self) -> usize {
        self.shared.uncommitted.load(Ordering::Relaxed)
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Whether the store is so far behind that new calls must be refused (at or over half the
    /// capacity uncommitted).
    pub fn is_backlogged(&self) -> bool {
        self.depth() >= self.shared.high_water
    }

    /// Counts a new call refused because of the backlog.
    pub fn on_refused(&self) {
        self.shared.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// New calls refused because of the backlog so far.
    pub fn refusals(&self) -> u64 {
        self.shared.refusals.load(Ordering::Relaxed)
    }
}

/// Room for one item in the queue ([`EventSink::reserve`]).
#[derive(Debug)]
pub struct SinkPermit<'a> {
    permit: mpsc::Permit<'a, SinkItem>,
    shared: &'a Shared,
}

impl SinkPermit<'_> {
    /// Sends the item into the reserved room.
    pub fn send(self, item: SinkItem) {
        self.shared.uncommitted.fetch_add(1, Ordering::Relaxed);
        self.permit.send(item);
    }
}

/// One call's end of the sink: keeps the call's events in order when the queue is full (they
/// wait in the call, which awaits room at its next turn: backpressure, never a drop) and
/// remembers what fires once the call's final event is committed. Clones share that state.
#[derive(Debug, Clone)]
pub(crate) struct CallSink {
    sink: EventSink,
    pending: Arc<std::sync::Mutex<PendingSink>>,
}

/// What a call still owes the sink.
#[derive(Debug, Default)]
struct PendingSink {
    /// Events the full queue had no room for, in order; later events queue behind them.
    backlog: std::collections::VecDeque<SinkItem>,
    /// Fires once the call's final event is committed.
    final_committed: Option<oneshot::Receiver<Committed>>,
}

impl CallSink {
    pub(crate) fn new(sink: EventSink) -> CallSink {
        CallSink {
            sink,
            pending: Arc::default(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, PendingSink> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues an event without waiting. A final event, or one with `want_commit`, carries a
    /// oneshot; `want_commit` returns its receiver (a final event's is kept for
    /// [`CallSink::settle`]).
    pub(crate) fn push(
        &self,
        event: CallEvent,
        want_commit: bool,
    ) -> Option<oneshot::Receiver<Committed>> {
        let is_final = event.is_final();
        let (committed, mut wait) = if want_commit || is_final {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let mut pending = self.pending();
        if is_final && !want_commit {
            pending.final_committed = wait.take();
        }
        let item = SinkItem { event, committed };
        if !pending.backlog.is_empty() {
            pending.backlog.push_back(item);
        } else if let Err(item) = self.sink.try_send(item) {
            // Full: the call awaits room at its next turn (flush), in order.
            pending.backlog.push_back(item);
        }
        wait
    }

    /// Sends what a full queue held back, waiting for room (cancel-safe: an item leaves the
    /// backlog only into reserved room).
    pub(crate) async fn flush(&self) {
        while !self.pending().backlog.is_empty() {
            let Some(permit) = self.sink.reserve().await else {
                // The pump has stopped (shutdown): nothing will store them.
                self.pending().backlog.clear();
                return;
            };
            let next = self.pending().backlog.pop_front();
            if let Some(item) = next {
                permit.send(item);
            }
        }
    }

    /// The end of a call: sends what the queue held back, then waits (unbounded: a store that
    /// is down keeps the call's slot, and the node refuses new calls, which is right) until the
    /// final event is committed. Only then may the engine free the call's slot.
    pub(crate) async fn settle(&self) {
        self.flush().await;
        let final_committed = self.pending().final_committed.take();
        if let Some(rx) = final_committed {
            // Err: the pump stopped without storing it (shutdown); nothing more to wait for.
            let _ = rx.await;
        }
    }
}

impl EventQueue {
    /// Waits for at least one item, then takes up to `limit` (appended to `buf`); 0 once every
    /// sender is gone and the queue is empty.
    pub async fn recv_many(&mut self, buf: &mut Vec<SinkItem>, limit: usize) -> usize {
        self.rx.recv_many(buf, limit).await
    }

    /// The pump is done with `n` items (committed or dropped): they leave the depth.
    pub fn committed(&self, n: usize) {
        // Saturating: a miscount must not wrap into "always backlogged".
        let _ = self
            .shared
            .uncommitted
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(n))
            });
    }

    /// Events sent and not yet committed.
    pub fn depth(&self) -> usize {
        self.shared.uncommitted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::CallId;

    fn item(n: u64) -> SinkItem {
        SinkItem {
            event: CallEvent {
                call_id: CallId(n),
                kind: "sip.trying",
                at_unix_us: 1,
                offset_us: 1,
                details: serde_json::Value::Null,
                tag: None,
            },
            committed: None,
        }
    }

    #[tokio::test]
    async fn depth_counts_until_committed_and_backlog_starts_at_half_the_capacity() {
        let (sink, mut queue) = EventSink::channel(4);
        assert!(!sink.gauge().is_backlogged());
        assert!(sink.try_send(item(1)).is_ok());
        assert!(!sink.gauge().is_backlogged());
        assert!(sink.send(item(2)).await);
        assert!(
            sink.gauge().is_backlogged(),
            "2 of 4 is the high-water mark"
        );
        let mut buf = Vec::new();
        assert_eq!(queue.recv_many(&mut buf, 512).await, 2);
        // Taken by the pump but not committed: still counted.
        assert_eq!(sink.gauge().depth(), 2);
        assert!(sink.gauge().is_backlogged());
        queue.committed(2);
        assert_eq!(sink.gauge().depth(), 0);
        assert!(!sink.gauge().is_backlogged());
    }

    #[tokio::test]
    async fn a_call_keeps_its_events_in_order_behind_a_full_queue_and_settles_after_commit() {
        let (sink, mut queue) = EventSink::channel(2);
        let call = CallSink::new(sink.clone());
        for n in 1..=3 {
            assert!(call.push(item(n).event, false).is_none());
        }
        let mut last = item(4).event;
        last.kind = "call.completed";
        assert!(
            call.push(last, false).is_none(),
            "a final event's wait is kept"
        );
        assert_eq!(sink.gauge().depth(), 2, "two fit; two wait in the call");
        let settle = tokio::spawn({
            let call = call.clone();
            async move { call.settle().await }
        });
        let mut got = Vec::new();
        let mut buf = Vec::new();
        while got.len() < 4 {
            buf.clear();
            queue.recv_many(&mut buf, 512).await;
            queue.committed(buf.len());
            for it in buf.drain(..) {
                got.push(it.event.call_id.0);
                assert!(!settle.is_finished(), "settled before the final commit");
                if let Some(tx) = it.committed {
                    let _ = tx.send(Committed::Stored);
                }
            }
        }
        assert_eq!(got, [1, 2, 3, 4]);
        tokio::time::timeout(std::time::Duration::from_secs(5), settle)
            .await
            .expect("settles once the final event is committed")
            .expect("task");
    }

    #[tokio::test]
    async fn a_full_queue_gives_the_item_back_and_a_closed_one_drops_it() {
        let (sink, queue) = EventSink::channel(2);
        assert!(sink.try_send(item(1)).is_ok());
        assert!(sink.try_send(item(2)).is_ok());
        let back = sink.try_send(item(3)).expect_err("full");
        assert_eq!(back.event.call_id, CallId(3));
        drop(queue);
        assert!(sink.try_send(item(4)).is_ok());
        assert!(!sink.send(item(5)).await);
    }
}
