//! `GET /v1/events`: the tenant's timeline events as Server-Sent Events.
//!
//! Each SSE event is `id: <event id>`, `event: <kind>`, `data: <the stored event as JSON>`.
//! Event ids are global and increase in commit order (on both databases; see
//! [`crate::store::Store::events_after`]), so the id a client saw last is a complete resume
//! point:
//!
//! - With `Last-Event-ID` (what browsers send on reconnect) or `?after=<id>`, the stream first
//!   sends every stored event after that id (paged from the store), then live events.
//! - Without either, it sends live events only: its cursor starts at the tenant's newest stored
//!   event ([`crate::store::Store::last_event_id`]), so nothing older is ever sent, not even
//!   when the stream lags and catches up from the store before it has sent anything.
//!
//! The order of operations is what makes the resume lossless: the handler subscribes to the bus
//! *before* it reads the store, so an event stored while the backlog is paged through is either
//! in a page or in the live queue (or both: live events with an id already sent are skipped).
//! A client so slow that the live queue overflows (`Lagged`) is switched back to paging from the
//! store after the last id it was sent.
//!
//! Several nodes may share one database, and the bus only carries this process's events. While
//! live, the stream therefore also reads the store: at least every [`POLL`] when the bus is
//! quiet, and whenever the bus shows a gap in the ids (an id that is not the one after the last
//! id it accounted for: another node committed the ids in between, or an append rolled back).
//! Because ids follow commit order, a committed event proves every smaller id is committed (or
//! will never be), so one store read after the cursor fetches all of them and the bus event
//! itself, in id order; bus events at or below what a read covered are skipped. A bus event
//! that follows the last accounted-for id directly is sent at once (the single-node case costs
//! no store reads but the quiet-time poll). No id is sent twice or out of order.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{Caller, Permission};
use super::error::{ApiError, ApiQuery, ErrorBody};
use crate::store::derive::webhook_wants;
use crate::store::{EventFilter, Store, StoredEvent};

/// Events read from the store per page while catching up.
const PAGE: u32 = 500;
/// How often an idle stream sends a comment (keeps proxies from closing it).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a live stream goes without reading the store (events committed by other nodes
/// sharing the database reach its clients within about this long).
pub const POLL: Duration = Duration::from_secs(1);

/// This area's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream_events))
}

/// Filters and the resume point of `GET /v1/events`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this call's events.
    pub call_id: Option<String>,
    /// Only this campaign's events.
    pub campaign_id: Option<String>,
    /// Only these kinds: a comma-separated list; `call.*` matches a prefix.
    #[param(example = "call.*,sip.answered")]
    pub kind: Option<String>,
    /// Resume after this event id (the `Last-Event-ID` header wins when both are given);
    /// `0` sends every stored event first.
    pub after: Option<i64>,
}

/// Parses `kind=a,b.*` into the store's kind list.
fn parse_kinds(raw: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let mut kinds = Vec::new();
    for k in raw.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        let body = k.strip_suffix('*').unwrap_or(k);
        let valid = k.len() <= 100
            && body
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_');
        if !valid {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "kind: {k:?} is not an event kind (lowercase letters, digits, `.` and `_`, \
                     optionally ending in `*`)"
                ),
            ));
        }
        kinds.push(k.to_owned());
    }
    if kinds.len() > 50 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "kind: at most 50 kinds",
        ));
    }
    Ok(kinds)
}

/// The resume point: `Last-Event-ID`, else `?after=`.
fn resume_point(headers: &HeaderMap, after: Option<i64>) -> Result<Option<i64>, ApiError> {
    let bad = |what: &str| {
        ApiError::bad_request(
            "invalid_last_event_id",
            format!("{what} must be an event id (a non-negative integer)"),
        )
    };
    if let Some(v) = headers.get("last-event-id") {
        let id = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|id| *id >= 0)
            .ok_or_else(|| bad("Last-Event-ID"))?;
        return Ok(Some(id));
    }
    match after {
        Some(id) if id < 0 => Err(bad("after")),
        other => Ok(other),
    }
}

/// Streams the tenant's events (SSE): a backlog after `Last-Event-ID` / `after`, then live.
#[utoipa::path(get, path = "/events", tag = "events", params(EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event id")),
    responses(
        (status = 200, content_type = "text/event-stream",
            description = "`id: <event id>`, `event: <kind>`, `data: <event JSON>` per event; \
                           `:` comments keep the connection alive", body = String),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "no such call for this tenant", body = ErrorBody)))]
async fn stream_events(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Permission::EventsRead)?;
    let kinds = parse_kinds(q.kind.as_deref())?;
    let resume = resume_point(&headers, q.after)?;
    if let Some(call) = &q.call_id {
        // Another tenant's call is "not found", like every other tenant-scoped read.
        s.store.get_call(&caller.tenant_id, call).await?;
    }
    // Subscribe first, then read the store: nothing stored in between can be missed.
    let rx = s.bus.subscribe();
    let filter = EventFilter {
        call_id: q.call_id,
        campaign_id: q.campaign_id,
        kinds,
    };
    let feed = Feed::start(s.store.clone(), caller.tenant_id, filter, rx, resume).await?;
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        let event = feed.public(event).await;
        Some((Ok(sse_event(&event)), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

fn sse_event(e: &StoredEvent) -> Event {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".to_owned());
    Event::default()
        .id(e.id.to_string())
        .event(e.kind.clone())
        .data(data)
}

/// One subscriber's position: the backlog from the store, then the live queue merged with
/// reads of the store (other nodes' events).
struct Feed {
    store: Arc<dyn Store>,
    tenant: String,
    filter: EventFilter,
    rx: broadcast::Receiver<StoredEvent>,
    /// The highest id sent or queued in `buffer`.
    cursor: i64,
    /// Every event with an id up to this one (of any tenant) is accounted for: sent, queued,
    /// or not wanted. A bus event with the id right after it can be sent without a store read.
    seen: i64,
    /// Reading pages from the store (at the start of a resume, after `Lagged`, after a gap in
    /// the bus's ids, and when the bus was quiet for [`POLL`]).
    catching_up: bool,
    buffer: VecDeque<StoredEvent>,
    /// When the live phase reads the store next if the bus stays quiet.
    next_poll: tokio::time::Instant,
    /// [`POLL`] (shorter in tests).
    poll: Duration,
}

impl Feed {
    /// A feed after `resume` (send the stored backlog first), or live only: from the tenant's
    /// newest stored event on.
    async fn start(
        store: Arc<dyn Store>,
        tenant: String,
        filter: EventFilter,
        rx: broadcast::Receiver<StoredEvent>,
        resume: Option<i64>,
    ) -> Result<Feed, ApiError> {
        let cursor = match resume {
            Some(after) => after,
            // Not 0: a live-only stream that lags before sending anything catches up from
            // here, not from the start of the tenant's history (docs/api.md).
            None => store.last_event_id(&tenant).await?,
        };
        Ok(Feed {
            store,
            tenant,
            filter,
            rx,
            cursor,
            // The tenant's events up to the cursor are the client's (or older than the stream);
            // other tenants' events are never wanted.
            seen: cursor,
            catching_up: resume.is_some(),
            buffer: VecDeque::new(),
            next_poll: poll_deadline(POLL),
            poll: POLL,
        })
    }

    /// The next event to send; `None` ends the stream (the client reconnects and resumes).
    async fn next(&mut self) -> Option<StoredEvent> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Some(e);
            }
            if self.catching_up {
                match self
                    .store
                    .events_after(&self.tenant, self.cursor, &self.filter, PAGE)
                    .await
                {
                    Ok(page) => {
                        if page.len() < PAGE as usize {
                            self.catching_up = false;
                        }
                        if let Some(last) = page.last() {
                            self.cursor = last.id;
                        }
                        // Ids follow commit order: every id below the newest one read was
                        // committed before it and so was visible to this read.
                        self.seen = self.seen.max(self.cursor);
                        self.next_poll = poll_deadline(self.poll);
                        self.buffer.extend(page);
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "SSE: reading the store failed; closing the stream");
                        return None;
                    }
                }
            }
            let received = tokio::select! {
                r = self.rx.recv() => r,
                () = tokio::time::sleep_until(self.next_poll) => {
                    // The bus was quiet: another node sharing the database may not have been.
                    self.catching_up = true;
                    continue;
                }
            };
            match received {
                Ok(e) if e.id <= self.seen => {}
                Ok(e) if e.id == self.seen + 1 => {
                    self.seen = e.id;
                    if e.id > self.cursor && self.wants(&e) {
                        self.cursor = e.id;
                        return Some(e);
                    }
                }
                Ok(e) => {
                    // A gap: ids between `seen` and this one were committed by another node
                    // (or rolled back). This one is committed, so they are all settled: one
                    // read after the cursor returns the wanted ones and this one, in order.
                    self.seen = e.id;
                    self.catching_up = true;
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "SSE subscriber lagged; re-reading from the store");
                    self.catching_up = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// The event as tenants see it (no server paths): the recording rows of its call are read
    /// only for the events that name a file.
    async fn public(&self, e: StoredEvent) -> StoredEvent {
        let names_a_file = e.details.get("path").is_some()
            || e.details.get("recording").is_some_and(|r| !r.is_null())
            || e.details.get("recordings").is_some();
        let recordings = if names_a_file && let Some(call_id) = &e.call_id {
            // A failed read only costs the recording id: the path is removed regardless.
            self.store
                .list_recordings(&self.tenant, call_id)
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        super::calls::public_event(e, &recordings)
    }

    fn wants(&self, e: &StoredEvent) -> bool {
        e.tenant_id == self.tenant
            && self
                .filter
                .call_id
                .as_ref()
                .is_none_or(|c| e.call_id.as_ref() == Some(c))
            && self
                .filter
                .campaign_id
                .as_ref()
                .is_none_or(|c| e.campaign_id.as_ref() == Some(c))
            && webhook_wants(&self.filter.kinds, &e.kind)
    }
}

/// `poll` from now, on tokio's clock (read through [`crate::clock`]).
fn poll_deadline(poll: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(crate::clock::now() + poll)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn kind_lists_accept_exact_kinds_and_prefixes_only() {
        assert_eq!(
            parse_kinds(Some("call.*, sip.answered,,")).expect("valid"),
            ["call.*", "sip.answered"]
        );
        assert!(parse_kinds(None).expect("valid").is_empty());
        assert!(parse_kinds(Some("call.*x")).is_err());
        assert!(parse_kinds(Some("Call.created")).is_err());
        assert!(parse_kinds(Some("a'; drop")).is_err());
    }

    #[test]
    fn last_event_id_wins_over_after_and_must_be_a_non_negative_integer() {
        let mut h = HeaderMap::new();
        assert_eq!(resume_point(&h, None).expect("ok"), None);
        assert_eq!(resume_point(&h, Some(7)).expect("ok"), Some(7));
        assert!(resume_point(&h, Some(-1)).is_err());
        h.insert("last-event-id", HeaderValue::from_static("42"));
        assert_eq!(resume_point(&h, Some(7)).expect("ok"), Some(42));
        h.insert("last-event-id", HeaderValue::from_static("x"));
        assert!(resume_point(&h, None).is_err());
    }
}

#[cfg(test)]
mod feed_tests {
    use serde_json::json;

    use super::*;
    use crate::store::{NewCall, NewEvent, SqlStore};

    /// A SQLite store with a tenant and one of its calls.
    async fn setup() -> (tempfile::TempDir, Arc<dyn Store>, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(
            SqlStore::open_sqlite(&dir.path().join("cp.db"))
                .await
                .expect("sqlite store"),
        );
        let tenant = store.create_tenant("t", 1).await.expect("tenant").id;
        let call = store
            .create_call(&NewCall::outbound(
                tenant.clone(),
                "sip:b@127.0.0.1",
                "sip:a@127.0.0.1",
                1,
            ))
            .await
            .expect("call")
            .into_call();
        (dir, store, tenant, call.id)
    }

    /// Stores an event without publishing it (what another node's append looks like here).
    async fn store_event(store: &Arc<dyn Store>, call: &str, i: i64) -> StoredEvent {
        store
            .append_event(&NewEvent {
                call_id: call.to_owned(),
                kind: "media.quality".into(),
                at_unix_us: i,
                offset_us: i,
                details: json!({"i": i}),
            })
            .await
            .expect("append")
            .event
    }

    /// The id of the feed's next event (a panic when none comes within 10 s).
    async fn next_id(feed: &mut Feed) -> i64 {
        tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .expect("an event in time")
            .expect("an event")
            .id
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_caught_up_from_the_store_without_a_gap() {
        let (_dir, store, tenant, call) = setup().await;
        // A live queue of 4: the 10 events below overflow it before the feed reads.
        let (live, rx) = broadcast::channel(4);
        let mut feed = Feed::start(store.clone(), tenant, EventFilter::default(), rx, None)
            .await
            .expect("feed");
        let mut ids = Vec::new();
        for i in 0..10 {
            let e = store_event(&store, &call, i).await;
            ids.push(e.id);
            let _ = live.send(e);
        }
        let mut got = Vec::new();
        for _ in 0..10 {
            got.push(next_id(&mut feed).await);
        }
        assert_eq!(got, ids, "every event once, in order, despite the lag");
        // The events still queued live (ids already sent) are skipped, new ones come through.
        let e = store_event(&store, &call, 99).await;
        let _ = live.send(e.clone());
        assert_eq!(next_id(&mut feed).await, e.id);
    }

    #[tokio::test]
    async fn a_live_only_stream_that_lags_before_sending_anything_does_not_replay_history() {
        let (_dir, store, tenant, call) = setup().await;
        for i in 0..3 {
            store_event(&store, &call, i).await;
        }
        let (live, rx) = broadcast::channel(4);
        // No Last-Event-ID, no `after`: live only.
        let mut feed = Feed::start(store.clone(), tenant, EventFilter::default(), rx, None)
            .await
            .expect("feed");
        let mut ids = Vec::new();
        for i in 10..20 {
            let e = store_event(&store, &call, i).await;
            ids.push(e.id);
            let _ = live.send(e);
        }
        // The queue of 4 overflowed before the first read: the feed catches up from the store,
        // from the tenant's newest event at the connection, not from the start (the 3 above).
        let mut got = Vec::new();
        for _ in 0..10 {
            got.push(next_id(&mut feed).await);
        }
        assert_eq!(got, ids, "only events stored after the connection");
    }

    #[tokio::test]
    async fn events_of_other_nodes_merge_with_the_bus_by_id_once_and_in_order() {
        let (_dir, store, tenant, call) = setup().await;
        let (live, rx) = broadcast::channel(64);
        let mut feed = Feed::start(store.clone(), tenant, EventFilter::default(), rx, None)
            .await
            .expect("feed");
        // No quiet-time poll for now: the gap in the bus's ids alone must bring F1 in.
        feed.poll = Duration::from_secs(3600);
        feed.next_poll = poll_deadline(feed.poll);
        let f1 = store_event(&store, &call, 1).await; // another node's: never on this bus
        let l2 = store_event(&store, &call, 2).await;
        let _ = live.send(l2.clone());
        assert_eq!(
            next_id(&mut feed).await,
            f1.id,
            "the gap before L2 is read first"
        );
        assert_eq!(next_id(&mut feed).await, l2.id);
        // The next local id follows directly: sent from the bus.
        let l3 = store_event(&store, &call, 3).await;
        let _ = live.send(l3.clone());
        assert_eq!(next_id(&mut feed).await, l3.id);
        // Another node's event while this bus is quiet: the poll brings it.
        let f4 = store_event(&store, &call, 4).await;
        feed.poll = Duration::from_millis(50);
        feed.next_poll = poll_deadline(feed.poll);
        assert_eq!(
            next_id(&mut feed).await,
            f4.id,
            "read on the quiet-time poll"
        );
        // Ids already sent are never sent again; the next one is.
        let l5 = store_event(&store, &call, 5).await;
        for e in [&l2, &l3, &l5] {
            let _ = live.send(e.clone());
        }
        assert_eq!(next_id(&mut feed).await, l5.id);
        let f6 = store_event(&store, &call, 6).await;
        assert_eq!(next_id(&mut feed).await, f6.id);
    }
}
