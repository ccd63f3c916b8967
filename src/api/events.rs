//! `GET /v1/events`: the tenant's timeline events as Server-Sent Events.
//!
//! Each SSE event is `id: <event id>`, `event: <kind>`, `data: <the stored event as JSON>`.
//! Event ids are global and increasing, so the id a client saw last is a complete resume point:
//!
//! - With `Last-Event-ID` (what browsers send on reconnect) or `?after=<id>`, the stream first
//!   sends every stored event after that id (paged from the store), then live events.
//! - Without either, it sends live events only, from the moment of the connection.
//!
//! The order of operations is what makes the resume lossless: the handler subscribes to the bus
//! *before* it reads the store, so an event stored while the backlog is paged through is either
//! in a page or in the live queue (or both: live events with an id already sent are skipped).
//! A client so slow that the live queue overflows (`Lagged`) is switched back to paging from the
//! store after the last id it was sent. The bus stores and publishes events in id order, so
//! skipping ids at or below the last one sent never skips an event that was not sent.

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
    let feed = Feed {
        store: s.store.clone(),
        tenant: caller.tenant_id,
        filter: EventFilter {
            call_id: q.call_id,
            campaign_id: q.campaign_id,
            kinds,
        },
        rx,
        cursor: resume.unwrap_or(0),
        catching_up: resume.is_some(),
        buffer: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
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

/// One subscriber's position: the backlog from the store, then the live queue.
struct Feed {
    store: Arc<dyn Store>,
    tenant: String,
    filter: EventFilter,
    rx: broadcast::Receiver<StoredEvent>,
    /// The highest id sent or queued in `buffer`.
    cursor: i64,
    /// Reading pages from the store (at the start of a resume, and after `Lagged`).
    catching_up: bool,
    buffer: VecDeque<StoredEvent>,
}

impl Feed {
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
                        self.buffer.extend(page);
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "SSE: reading the backlog failed; closing the stream");
                        return None;
                    }
                }
            }
            match self.rx.recv().await {
                Ok(e) if e.id > self.cursor && self.wants(&e) => {
                    self.cursor = e.id;
                    return Some(e);
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "SSE subscriber lagged; re-reading from the store");
                    self.catching_up = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    fn wants(&self, e: &StoredEvent) -> bool {
        e.tenant_id == self.tenant
            && self.filter.call_id.as_ref().is_none_or(|c| *c == e.call_id)
            && self
                .filter
                .campaign_id
                .as_ref()
                .is_none_or(|c| e.campaign_id.as_ref() == Some(c))
            && webhook_wants(&self.filter.kinds, &e.kind)
    }
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
    use crate::store::{Created, Direction, NewCall, NewEvent, SqlStore};

    #[tokio::test]
    async fn a_lagging_subscriber_is_caught_up_from_the_store_without_a_gap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(
            SqlStore::open_sqlite(&dir.path().join("cp.db"))
                .await
                .expect("sqlite store"),
        );
        let tenant = store.create_tenant("t", 1).await.expect("tenant").id;
        let call = match store
            .create_call(&NewCall {
                tenant_id: tenant.clone(),
                direction: Direction::Outbound,
                to_uri: "sip:b@127.0.0.1".into(),
                from_uri: "sip:a@127.0.0.1".into(),
                trunk_id: None,
                script_id: None,
                script_version: None,
                campaign_id: None,
                idempotency_key: None,
                request: json!({}),
                created_at_us: 1,
                node_id: None,
            })
            .await
            .expect("call")
        {
            Created::New(c) | Created::Existing(c) => c,
        };
        // A live queue of 4: the 10 events below overflow it before the feed reads.
        let (live, rx) = broadcast::channel(4);
        let mut feed = Feed {
            store: store.clone(),
            tenant: tenant.clone(),
            filter: EventFilter::default(),
            rx,
            cursor: 0,
            catching_up: false,
            buffer: VecDeque::new(),
        };
        let mut ids = Vec::new();
        for i in 0..10 {
            let appended = store
                .append_event(&NewEvent {
                    call_id: call.id.clone(),
                    kind: "media.quality".into(),
                    at_unix_us: i,
                    offset_us: i,
                    details: json!({"i": i}),
                })
                .await
                .expect("append");
            ids.push(appended.event.id);
            let _ = live.send(appended.event);
        }
        let mut got = Vec::new();
        for _ in 0..10 {
            got.push(feed.next().await.expect("an event").id);
        }
        assert_eq!(got, ids, "every event once, in order, despite the lag");
        // The events still queued live (ids already sent) are skipped, new ones come through.
        let appended = store
            .append_event(&NewEvent {
                call_id: call.id.clone(),
                kind: "call.completed".into(),
                at_unix_us: 99,
                offset_us: 99,
                details: json!({}),
            })
            .await
            .expect("append");
        let _ = live.send(appended.event.clone());
        assert_eq!(feed.next().await.expect("live").id, appended.event.id);
    }
}
