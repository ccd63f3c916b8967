//! Calls, their timeline (with the outbox rows each event queues) and recordings.

use std::collections::HashMap;

use serde_json::Value;

use super::rows::{self, CALL_COLS, EVENT_COLS, RECORDING_COLS, WEBHOOK_COLS};
use super::{Arg, Backend, SqlStore, bind_all, clamp_limit};
use crate::store::{
    Appended, BatchItem, CallFilter, CallRecord, CallStatus, Created, EventFilter, NewCall,
    NewEvent, Page, RecordingRecord, Result, StoreError, StoredEvent, Webhook, derive, new_id,
};

/// Default and largest page of [`list_calls`].
const CALLS_PAGE: (u32, u32) = (50, 500);
/// Default and largest batch of [`events_after`].
const EVENTS_BATCH: (u32, u32) = (500, 5000);

pub(super) async fn create_call(s: &SqlStore, c: &NewCall) -> Result<Created> {
    let id = new_id("call");
    let mut tx = s.begin().await?;
    // ON CONFLICT on the (tenant_id, idempotency_key) constraint only: a repeated key inserts
    // nothing and returns no row; NULL keys never conflict. On PostgreSQL a concurrent insert of
    // the same key waits for the other transaction, then does nothing, and the SELECT below
    // (a fresh snapshot under READ COMMITTED) sees the winner's row.
    let inserted = sqlx::query(&format!(
        "INSERT INTO call (id, tenant_id, direction, to_uri, from_uri, trunk_id, script_id, \
         script_version, campaign_id, idempotency_key, request, created_at_us, status, node_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING {CALL_COLS}"
    ))
    .bind(id.as_str())
    .bind(c.tenant_id.as_str())
    .bind(c.direction.as_str())
    .bind(c.to_uri.as_str())
    .bind(c.from_uri.as_str())
    .bind(c.trunk_id.as_deref())
    .bind(c.script_id.as_deref())
    .bind(c.script_version)
    .bind(c.campaign_id.as_deref())
    .bind(c.idempotency_key.as_deref())
    .bind(rows::json_text(&c.request))
    .bind(c.created_at_us)
    .bind(CallStatus::Queued.as_str())
    .bind(c.node_id.as_deref())
    .fetch_optional(&mut *tx)
    .await?;
    let created = match inserted {
        Some(row) => Created::New(rows::call(&row)?),
        None => {
            let row = sqlx::query(&format!(
                "SELECT {CALL_COLS} FROM call WHERE tenant_id = $1 AND idempotency_key = $2"
            ))
            .bind(c.tenant_id.as_str())
            .bind(c.idempotency_key.as_deref())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| {
                StoreError::Database("an idempotency key conflicted with no row".into())
            })?;
            Created::Existing(rows::call(&row)?)
        }
    };
    tx.commit().await?;
    Ok(created)
}

pub(super) async fn get_call(s: &SqlStore, tenant: Option<&str>, id: &str) -> Result<CallRecord> {
    let row = match tenant {
        Some(tenant) => {
            sqlx::query(&format!(
                "SELECT {CALL_COLS} FROM call WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&s.pool)
            .await?
        }
        None => {
            sqlx::query(&format!("SELECT {CALL_COLS} FROM call WHERE id = $1"))
                .bind(id)
                .fetch_optional(&s.pool)
                .await?
        }
    };
    rows::call(&row.ok_or(StoreError::NotFound)?)
}

pub(super) async fn list_calls(
    s: &SqlStore,
    tenant: &str,
    f: &CallFilter,
) -> Result<Page<CallRecord>> {
    let limit = clamp_limit(f.limit, CALLS_PAGE.0, CALLS_PAGE.1);
    let mut args = vec![Arg::Text(tenant.to_owned())];
    let mut sql = format!("SELECT {CALL_COLS} FROM call WHERE tenant_id = $1");
    let mut push = |cond: &str, arg: Arg, sql: &mut String| {
        args.push(arg);
        // `$?` in `cond` is this argument's number.
        sql.push_str(" AND ");
        sql.push_str(&cond.replace("$?", &format!("${}", args.len())));
    };
    if let Some(status) = f.status {
        push("status = $?", Arg::Text(status.as_str().into()), &mut sql);
    }
    if let Some(outcome) = &f.outcome {
        push("outcome = $?", Arg::Text(outcome.clone()), &mut sql);
    }
    if let Some(campaign) = &f.campaign_id {
        push("campaign_id = $?", Arg::Text(campaign.clone()), &mut sql);
    }
    if let Some(from) = f.created_from_us {
        push("created_at_us >= $?", Arg::Int(from), &mut sql);
    }
    if let Some(to) = f.created_to_us {
        push("created_at_us < $?", Arg::Int(to), &mut sql);
    }
    if let Some(cursor) = &f.cursor {
        // A cursor that is not ours names no page.
        let (created, id) = rows::decode_cursor(cursor).ok_or(StoreError::NotFound)?;
        push("(created_at_us < $?", Arg::Int(created), &mut sql);
        let n = args.len();
        args.push(Arg::Text(id));
        sql.push_str(&format!(
            " OR (created_at_us = ${n} AND id < ${}))",
            args.len()
        ));
    }
    args.push(Arg::Int(limit + 1));
    sql.push_str(&format!(
        " ORDER BY created_at_us DESC, id DESC LIMIT ${}",
        args.len()
    ));
    let mut items = bind_all(sqlx::query(&sql), &args)
        .fetch_all(&s.pool)
        .await?
        .iter()
        .map(rows::call)
        .collect::<Result<Vec<_>>>()?;
    // One row more than the page says whether there is a next page.
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = match items.last() {
        Some(last) if more => Some(rows::encode_cursor(last.created_at_us, &last.id)),
        _ => None,
    };
    Ok(Page { items, next_cursor })
}

/// The recording a `recording.ready` event describes (`path` is required; a malformed event is
/// still stored, only without a recording row).
fn recording_of(details: &Value) -> Option<(String, i64, i64, String, i64)> {
    let int = |k: &str| details.get(k).and_then(Value::as_i64).unwrap_or(0);
    let path = details.get("path")?.as_str()?.to_owned();
    let sha = details
        .get("sha256")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Some((path, int("duration_ms"), int("channels"), sha, int("bytes")))
}

pub(super) async fn append_event(s: &SqlStore, e: &NewEvent) -> Result<Appended> {
    let item = BatchItem::event(e.clone());
    append_batch(s, std::slice::from_ref(&item))
        .await?
        .pop()
        .ok_or_else(|| StoreError::Database("a batch of one appended nothing".into()))
}

/// Group commit ([`crate::store::Store::append_batch`]): every item's call row (when it
/// creates one), event, call fold, recording row and outbox rows in one transaction. A call's
/// row is read once per batch and written once at the end (the fold of all its events in the
/// batch); each tenant's webhooks are read once per batch.
pub(super) async fn append_batch(s: &SqlStore, batch: &[BatchItem]) -> Result<Vec<Appended>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = s.begin().await?;
    if s.backend == Backend::Postgres {
        // PostgreSQL: identity values are handed out at INSERT, commits happen later and in
        // any order, so without this lock a reader could see event 8 before 7 commits and
        // resume past 7 for ever (SSE Last-Event-ID). SHARE ROW EXCLUSIVE conflicts with itself
        // (and with plain INSERTs) but not with readers: appends take turns, each one's ids are
        // drawn after the previous append committed, so ids increase in commit order (and,
        // inside a batch, in item order: one transaction inserts them one after another).
        // SQLite: BEGIN IMMEDIATE already made this the only writer.
        sqlx::Executor::execute(
            &mut *tx,
            "LOCK TABLE call_event IN SHARE ROW EXCLUSIVE MODE",
        )
        .await?;
    }
    // The batch's call rows as folded so far, and the order they were first touched in (the
    // order of the final UPDATEs).
    let mut calls: HashMap<String, CallRecord> = HashMap::new();
    let mut touched: Vec<String> = Vec::new();
    // Each tenant's active webhooks, read once per batch.
    let mut hooks_of: HashMap<String, Vec<Webhook>> = HashMap::new();
    let mut out = Vec::with_capacity(batch.len());
    for item in batch {
        let e = &item.event;
        if let Some(c) = &item.new_call {
            let row = sqlx::query(&format!(
                "INSERT INTO call (id, tenant_id, direction, to_uri, from_uri, trunk_id, \
                 script_id, script_version, campaign_id, idempotency_key, request, \
                 created_at_us, status, node_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 RETURNING {CALL_COLS}"
            ))
            .bind(e.call_id.as_str())
            .bind(c.tenant_id.as_str())
            .bind(c.direction.as_str())
            .bind(c.to_uri.as_str())
            .bind(c.from_uri.as_str())
            .bind(c.trunk_id.as_deref())
            .bind(c.script_id.as_deref())
            .bind(c.script_version)
            .bind(c.campaign_id.as_deref())
            .bind(c.idempotency_key.as_deref())
            .bind(rows::json_text(&c.request))
            .bind(c.created_at_us)
            .bind(CallStatus::Queued.as_str())
            .bind(c.node_id.as_deref())
            .fetch_one(&mut *tx)
            .await?;
            if calls.insert(e.call_id.clone(), rows::call(&row)?).is_none() {
                touched.push(e.call_id.clone());
            }
        }
        if !calls.contains_key(&e.call_id) {
            let row = sqlx::query(&format!("SELECT {CALL_COLS} FROM call WHERE id = $1"))
                .bind(e.call_id.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
            calls.insert(e.call_id.clone(), rows::call(&row)?);
            touched.push(e.call_id.clone());
        }
        let call = calls
            .get_mut(&e.call_id)
            .expect("the call row was inserted or read just above");

        let row = sqlx::query(&format!(
            "INSERT INTO call_event (tenant_id, call_id, campaign_id, kind, at_unix_us, \
             offset_us, details) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {EVENT_COLS}"
        ))
        .bind(call.tenant_id.as_str())
        .bind(call.id.as_str())
        .bind(call.campaign_id.as_deref())
        .bind(e.kind.as_str())
        .bind(e.at_unix_us)
        .bind(e.offset_us)
        .bind(rows::json_text(&e.details))
        .fetch_one(&mut *tx)
        .await?;
        let event = rows::event(&row)?;
        derive::apply(call, &event.kind, event.at_unix_us, &event.details);

        if event.kind == "recording.ready"
            && let Some((path, duration_ms, channels, sha256, bytes)) = recording_of(&event.details)
        {
            sqlx::query(
                "INSERT INTO recording (id, tenant_id, call_id, event_id, path, format, \
                 channels, duration_ms, bytes, sha256, created_at_us) \
                 VALUES ($1, $2, $3, $4, $5, 'wav', $6, $7, $8, $9, $10)",
            )
            .bind(new_id("rec"))
            .bind(call.tenant_id.as_str())
            .bind(call.id.as_str())
            .bind(event.id)
            .bind(path)
            .bind(channels)
            .bind(duration_ms)
            .bind(bytes)
            .bind(sha256)
            .bind(event.at_unix_us)
            .execute(&mut *tx)
            .await?;
        }

        // The outbox, in this same transaction: the event is stored if and only if its
        // deliveries are queued. Matching is done here (webhook_wants) rather than in SQL so
        // the `call.*` prefix rule lives in one place.
        if !hooks_of.contains_key(&call.tenant_id) {
            let hooks = sqlx::query(&format!(
                "SELECT {WEBHOOK_COLS} FROM webhook WHERE tenant_id = $1 AND active = 1 \
                 ORDER BY created_at_us, id"
            ))
            .bind(call.tenant_id.as_str())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(rows::webhook)
            .collect::<Result<Vec<_>>>()?;
            hooks_of.insert(call.tenant_id.clone(), hooks);
        }
        let hooks = &hooks_of[&call.tenant_id];
        let mut deliveries = Vec::new();
        if hooks
            .iter()
            .any(|h| derive::webhook_wants(&h.events, &event.kind))
        {
            let body = derive::webhook_body(&event);
            for hook in hooks {
                if !derive::webhook_wants(&hook.events, &event.kind) {
                    continue;
                }
                let id = new_id("dlv");
                sqlx::query(
                    "INSERT INTO webhook_delivery (id, webhook_id, tenant_id, event_id, body, \
                     status, attempts, next_attempt_at_us, created_at_us) \
                     VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)",
                )
                .bind(id.as_str())
                .bind(hook.id.as_str())
                .bind(call.tenant_id.as_str())
                .bind(event.id)
                .bind(body.as_str())
                .bind(event.at_unix_us)
                .execute(&mut *tx)
                .await?;
                deliveries.push(id);
            }
        }
        out.push(Appended {
            event,
            call: call.clone(),
            deliveries,
        });
    }
    for id in &touched {
        let call = &calls[id];
        sqlx::query(
            "UPDATE call SET status = $2, outcome = $3, sip_status = $4, sip_reason = $5, \
             q850_cause = $6, sip_call_id = $7, started_at_us = $8, ringing_at_us = $9, \
             answered_at_us = $10, ended_at_us = $11, talk_ms = $12, result = $13, \
             end_reason = $14 WHERE id = $1",
        )
        .bind(call.id.as_str())
        .bind(call.status.as_str())
        .bind(call.outcome.as_deref())
        .bind(call.sip_status)
        .bind(call.sip_reason.as_deref())
        .bind(call.q850_cause)
        .bind(call.sip_call_id.as_deref())
        .bind(call.started_at_us)
        .bind(call.ringing_at_us)
        .bind(call.answered_at_us)
        .bind(call.ended_at_us)
        .bind(call.talk_ms)
        .bind(call.result.as_ref().map(rows::json_text))
        .bind(call.end_reason.as_deref())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(out)
}

/// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
fn like_prefix(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

pub(super) async fn events_after(
    s: &SqlStore,
    tenant: &str,
    after: i64,
    f: &EventFilter,
    limit: u32,
) -> Result<Vec<StoredEvent>> {
    let limit = clamp_limit(limit, EVENTS_BATCH.0, EVENTS_BATCH.1);
    let mut args = vec![Arg::Text(tenant.to_owned()), Arg::Int(after)];
    let mut sql = format!("SELECT {EVENT_COLS} FROM call_event WHERE tenant_id = $1 AND id > $2");
    if let Some(call) = &f.call_id {
        args.push(Arg::Text(call.clone()));
        sql.push_str(&format!(" AND call_id = ${}", args.len()));
    }
    if let Some(campaign) = &f.campaign_id {
        args.push(Arg::Text(campaign.clone()));
        sql.push_str(&format!(" AND campaign_id = ${}", args.len()));
    }
    if !f.kinds.is_empty() {
        // The same rule as webhook filters: an exact kind, or `call.*` for a prefix.
        let mut alternatives = Vec::new();
        for k in &f.kinds {
            match k.strip_suffix('*') {
                Some(prefix) => {
                    args.push(Arg::Text(like_prefix(prefix)));
                    alternatives.push(format!("kind LIKE ${} ESCAPE '\\'", args.len()));
                }
                None => {
                    args.push(Arg::Text(k.clone()));
                    alternatives.push(format!("kind = ${}", args.len()));
                }
            }
        }
        sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
    }
    args.push(Arg::Int(limit));
    sql.push_str(&format!(" ORDER BY id LIMIT ${}", args.len()));
    bind_all(sqlx::query(&sql), &args)
        .fetch_all(&s.pool)
        .await?
        .iter()
        .map(rows::event)
        .collect()
}

pub(super) async fn last_event_id(s: &SqlStore, tenant: &str) -> Result<i64> {
    use sqlx::Row as _;
    // One text for both databases: MAX over the (tenant_id, id) index is one index probe;
    // COALESCE gives 0 for a tenant without events, the CAST one integer type on both.
    let row = sqlx::query(
        "SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) AS n FROM call_event WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(&s.pool)
    .await?;
    Ok(row.try_get::<i64, _>("n")?)
}

pub(super) async fn orphaned_calls(
    s: &SqlStore,
    node_id: &str,
    stale_before_us: i64,
) -> Result<Vec<CallRecord>> {
    sqlx::query(&format!(
        "SELECT {CALL_COLS} FROM call WHERE status NOT IN ('completed', 'failed') \
         AND (node_id = $1 OR node_id IN \
              (SELECT id FROM node WHERE id <> $1 AND heartbeat_at_us < $2)) \
         ORDER BY created_at_us, id"
    ))
    .bind(node_id)
    .bind(stale_before_us)
    .fetch_all(&s.pool)
    .await?
    .iter()
    .map(rows::call)
    .collect()
}

pub(super) async fn list_recordings(
    s: &SqlStore,
    tenant: &str,
    call_id: &str,
) -> Result<Vec<RecordingRecord>> {
    let recordings = sqlx::query(&format!(
        "SELECT {RECORDING_COLS} FROM recording WHERE tenant_id = $1 AND call_id = $2 \
         ORDER BY created_at_us, event_id"
    ))
    .bind(tenant)
    .bind(call_id)
    .fetch_all(&s.pool)
    .await?
    .iter()
    .map(rows::recording)
    .collect::<Result<Vec<_>>>()?;
    if recordings.is_empty() {
        // No recordings of a call, or no such call for this tenant: tell them apart.
        get_call(s, Some(tenant), call_id).await?;
    }
    Ok(recordings)
}

pub(super) async fn get_recording(s: &SqlStore, tenant: &str, id: &str) -> Result<RecordingRecord> {
    let row = sqlx::query(&format!(
        "SELECT {RECORDING_COLS} FROM recording WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&s.pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    rows::recording(&row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_prefixes_escape_wildcards() {
        assert_eq!(like_prefix("sip."), "sip.%");
        assert_eq!(like_prefix("a_b%c\\"), "a\\_b\\%c\\\\%");
    }
}
