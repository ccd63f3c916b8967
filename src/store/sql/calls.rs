//! Calls, their timeline (with the outbox rows each event queues) and recordings.

use std::collections::HashMap;

use serde_json::Value;

use sqlx::{Any, Transaction};

use super::rows::{self, CALL_COLS, EVENT_COLS, RECORDING_COLS, WEBHOOK_COLS};
use super::{Arg, Backend, SqlStore, bind_all, clamp_limit};
use crate::store::{
    Appended, BatchItem, CallFilter, CallRecord, CallStatus, CampaignAppended, Created,
    EventFilter, NewCall, NewCampaignEvent, NewEvent, NewTrunkEvent, Page, RecordingRecord, Result,
    StoreError, StoredEvent, Webhook, derive, is_campaign_event_kind, is_trunk_event_kind, new_id,
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
    let sql = insert_call_sql("ON CONFLICT (tenant_id, idempotency_key) DO NOTHING");
    let inserted = bind_new_call(sqlx::query(&sql), &id, c)
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
    let mut sql = if f.without_request {
        let cols = CALL_COLS.replacen("request,", "'{}' AS request,", 1);
        format!("SELECT {cols} FROM call WHERE tenant_id = $1")
    } else {
        format!("SELECT {CALL_COLS} FROM call WHERE tenant_id = $1")
    };
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

/// The write transaction of an append: event ids are drawn in commit order.
async fn begin_append(s: &SqlStore) -> Result<Transaction<'static, Any>> {
    let mut tx = s.begin().await?;
    if s.backend == Backend::Postgres {
        // PostgreSQL: identity values are handed out at INSERT, commits happen later and in
        // any order, so without this lock a reader could see event 8 before 7 commits and
        // resume past 7 for ever (SSE Last-Event-ID). SHARE ROW EXCLUSIVE conflicts with itself
        // (and with plain INSERTs) but not with readers: appends take turns, each one's ids are
        // drawn after the previous append committed, so ids increase in commit order.
        // SQLite: BEGIN IMMEDIATE already made this the only writer.
        sqlx::Executor::execute(
            &mut *tx,
            "LOCK TABLE call_event IN SHARE ROW EXCLUSIVE MODE",
        )
        .await?;
    }
    Ok(tx)
}

/// A tenant's active webhooks, oldest first (whose filters an appended event is matched
/// against).
async fn active_webhooks(tx: &mut Transaction<'static, Any>, tenant: &str) -> Result<Vec<Webhook>> {
    sqlx::query(&format!(
        "SELECT {WEBHOOK_COLS} FROM webhook WHERE tenant_id = $1 AND active = 1 \
         ORDER BY created_at_us, id"
    ))
    .bind(tenant)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(rows::webhook)
    .collect()
}

/// The outbox rows of `event` for those of `hooks` that want its kind (pushed to `out`);
/// returns their ids. Matching is done here (webhook_wants) rather than in SQL so the
/// `call.*` prefix rule lives in one place.
fn deliveries_for(
    event: &StoredEvent,
    hooks: &[Webhook],
    out: &mut Vec<NewDelivery>,
) -> Vec<String> {
    let wanted: Vec<&Webhook> = hooks
        .iter()
        .filter(|h| derive::webhook_wants(&h.events, &event.kind))
        .collect();
    let mut ids = Vec::with_capacity(wanted.len());
    if wanted.is_empty() {
        return ids;
    }
    let body = derive::webhook_body(event);
    for hook in wanted {
        let id = new_id("dlv");
        out.push(NewDelivery {
            id: id.clone(),
            webhook_id: hook.id.clone(),
            tenant_id: event.tenant_id.clone(),
            event_id: event.id,
            body: body.clone(),
            at_us: event.at_unix_us,
        });
        ids.push(id);
    }
    ids
}

/// Inserts outbox rows, many per INSERT.
async fn insert_deliveries(
    tx: &mut Transaction<'static, Any>,
    new_deliveries: &[NewDelivery],
) -> Result<()> {
    for chunk in new_deliveries.chunks(INSERT_CHUNK) {
        let mut values = String::new();
        for r in 0..chunk.len() {
            if r > 0 {
                values.push_str(", ");
            }
            let p = r * 6;
            values.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, 'pending', 0, ${}, ${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 6
            ));
        }
        let sql = format!(
            "INSERT INTO webhook_delivery (id, webhook_id, tenant_id, event_id, body, status, \
             attempts, next_attempt_at_us, created_at_us) VALUES {values}"
        );
        let mut q = sqlx::query(&sql);
        for d in chunk {
            q = q
                .bind(d.id.as_str())
                .bind(d.webhook_id.as_str())
                .bind(d.tenant_id.as_str())
                .bind(d.event_id)
                .bind(d.body.as_str())
                .bind(d.at_us);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// [`crate::store::Store::append_campaign_event`]: the event (no call) and its outbox rows in
/// one transaction, its id drawn in commit order like a call's events.
pub(super) async fn append_campaign_event(
    s: &SqlStore,
    e: &NewCampaignEvent,
) -> Result<CampaignAppended> {
    if !is_campaign_event_kind(&e.kind) {
        return Err(StoreError::Invalid(format!(
            "{:?} is not a campaign event kind (campaign.* or contact.*)",
            e.kind
        )));
    }
    let mut tx = begin_append(s).await?;
    let row = sqlx::query(&format!(
        "INSERT INTO call_event (tenant_id, call_id, campaign_id, kind, at_unix_us, offset_us, \
         details) VALUES ($1, NULL, $2, $3, $4, 0, $5) RETURNING {EVENT_COLS}"
    ))
    .bind(e.tenant_id.as_str())
    .bind(e.campaign_id.as_str())
    .bind(e.kind.as_str())
    .bind(e.at_unix_us)
    .bind(rows::json_text(&e.details))
    .fetch_one(&mut *tx)
    .await?;
    let event = rows::event(&row)?;
    let hooks = active_webhooks(&mut tx, &event.tenant_id).await?;
    let mut new_deliveries = Vec::new();
    let deliveries = deliveries_for(&event, &hooks, &mut new_deliveries);
    insert_deliveries(&mut tx, &new_deliveries).await?;
    tx.commit().await?;
    Ok(CampaignAppended { event, deliveries })
}

/// [`crate::store::Store::append_trunk_event`]: like a campaign's event, without a campaign.
pub(super) async fn append_trunk_event(
    s: &SqlStore,
    e: &NewTrunkEvent,
) -> Result<CampaignAppended> {
    if !is_trunk_event_kind(&e.kind) {
        return Err(StoreError::Invalid(format!(
            "{:?} is not a trunk event kind (trunk.*)",
            e.kind
        )));
    }
    let Some(trunk_id) = e.details.get("trunk_id").and_then(Value::as_str) else {
        return Err(StoreError::Invalid(
            "a trunk event needs details.trunk_id".to_owned(),
        ));
    };
    let mut tx = begin_append(s).await?;
    // The call_event_owner CHECK (migration 0004) wants a call or a campaign: the trunk's id
    // stands in the campaign_id column as the row's owner (ids are prefixed, `trk_` never
    // names a campaign) and reads back as no campaign (rows::event).
    let row = sqlx::query(&format!(
        "INSERT INTO call_event (tenant_id, call_id, campaign_id, kind, at_unix_us, offset_us, \
         details) VALUES ($1, NULL, $2, $3, $4, 0, $5) RETURNING {EVENT_COLS}"
    ))
    .bind(e.tenant_id.as_str())
    .bind(trunk_id)
    .bind(e.kind.as_str())
    .bind(e.at_unix_us)
    .bind(rows::json_text(&e.details))
    .fetch_one(&mut *tx)
    .await?;
    let event = rows::event(&row)?;
    let hooks = active_webhooks(&mut tx, &event.tenant_id).await?;
    let mut new_deliveries = Vec::new();
    let deliveries = deliveries_for(&event, &hooks, &mut new_deliveries);
    insert_deliveries(&mut tx, &new_deliveries).await?;
    tx.commit().await?;
    Ok(CampaignAppended { event, deliveries })
}

pub(super) async fn append_event(s: &SqlStore, e: &NewEvent) -> Result<Appended> {
    let item = BatchItem::event(e.clone());
    append_batch(s, std::slice::from_ref(&item))
        .await?
        .pop()
        .ok_or_else(|| StoreError::Database("a batch of one appended nothing".into()))
}

/// Events (and outbox rows) per multi-row INSERT: 7 parameters each, far below both
/// databases' limits (SQLite 32766, PostgreSQL 65535).
const INSERT_CHUNK: usize = 128;

/// `($1, $2, …), ($8, …)`: `rows` groups of `width` numbered parameters.
fn values_list(rows: usize, width: usize) -> String {
    let mut sql = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * width + c + 1));
        }
        sql.push(')');
    }
    sql
}

/// One outbox row to insert.
struct NewDelivery {
    id: String,
    webhook_id: String,
    tenant_id: String,
    event_id: i64,
    body: String,
    at_us: i64,
}

/// Group commit ([`crate::store::Store::append_batch`]): every item's call row (when it
/// creates one), event, call fold, recording row and outbox rows in one transaction. A call's
/// row is read once per batch and written once at the end (the fold of all its events in the
/// batch); each tenant's webhooks are read once per batch; events and outbox rows go in
/// multi-row INSERTs.
pub(super) async fn append_batch(s: &SqlStore, batch: &[BatchItem]) -> Result<Vec<Appended>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = begin_append(s).await?;
    // 1. The batch's call rows: created (inbound calls) or read, in item order, so an event
    //    of a call created later in the batch is refused as it would be alone.
    let mut calls: HashMap<String, CallRecord> = HashMap::new();
    let mut touched: Vec<String> = Vec::new();
    for item in batch {
        let id = &item.event.call_id;
        if let Some(c) = &item.new_call {
            let sql = insert_call_sql("");
            let row = bind_new_call(sqlx::query(&sql), id, c)
                .fetch_one(&mut *tx)
                .await?;
            if calls.insert(id.clone(), rows::call(&row)?).is_none() {
                touched.push(id.clone());
            }
        } else if !calls.contains_key(id) {
            let row = sqlx::query(&format!("SELECT {CALL_COLS} FROM call WHERE id = $1"))
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
            calls.insert(id.clone(), rows::call(&row)?);
            touched.push(id.clone());
        }
    }

    // 2. The events, many rows per INSERT. Under this transaction's write lock nobody else
    //    inserts events, and both databases number the rows of one INSERT in VALUES order;
    //    each returned row is checked against its item anyway, and a mismatch fails the batch
    //    (the caller then stores it one event at a time).
    let mut events = Vec::with_capacity(batch.len());
    for chunk in batch.chunks(INSERT_CHUNK) {
        let sql = format!(
            "INSERT INTO call_event (tenant_id, call_id, campaign_id, kind, at_unix_us, \
             offset_us, details) VALUES {} RETURNING {EVENT_COLS}",
            values_list(chunk.len(), 7)
        );
        let mut q = sqlx::query(&sql);
        for item in chunk {
            let e = &item.event;
            let call = &calls[&e.call_id];
            q = q
                .bind(call.tenant_id.as_str())
                .bind(call.id.as_str())
                .bind(call.campaign_id.as_deref())
                .bind(e.kind.as_str())
                .bind(e.at_unix_us)
                .bind(e.offset_us)
                .bind(rows::json_text(&e.details));
        }
        let mut stored = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(rows::event)
            .collect::<Result<Vec<_>>>()?;
        stored.sort_by_key(|e| e.id);
        if stored.len() != chunk.len()
            || stored.iter().zip(chunk).any(|(row, item)| {
                row.call_id.as_deref() != Some(item.event.call_id.as_str())
                    || row.kind != item.event.kind
                    || row.at_unix_us != item.event.at_unix_us
                    || row.offset_us != item.event.offset_us
            })
        {
            return Err(StoreError::Corrupt(
                "a multi-row event insert did not number its rows in order".into(),
            ));
        }
        events.extend(stored);
    }

    // 3. Folds, recordings and the outbox rows, event by event in id order.
    let mut hooks_of: HashMap<String, Vec<Webhook>> = HashMap::new();
    let mut new_deliveries: Vec<NewDelivery> = Vec::new();
    let mut out = Vec::with_capacity(batch.len());
    for event in events {
        let call = event
            .call_id
            .as_deref()
            .and_then(|id| calls.get_mut(id))
            .expect("every event's call row was created or read in step 1");
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
        // deliveries are queued.
        if !hooks_of.contains_key(&call.tenant_id) {
            let hooks = active_webhooks(&mut tx, &call.tenant_id).await?;
            hooks_of.insert(call.tenant_id.clone(), hooks);
        }
        let deliveries = deliveries_for(&event, &hooks_of[&call.tenant_id], &mut new_deliveries);
        out.push(Appended {
            event,
            call: call.clone(),
            deliveries,
        });
    }
    insert_deliveries(&mut tx, &new_deliveries).await?;

    // 4. Each call row once, as folded by all its events in the batch.
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

/// The INSERT of a new call row (`queued`), with `conflict` (an `ON CONFLICT` clause or
/// nothing) before its `RETURNING`; [`bind_new_call`] binds its parameters.
fn insert_call_sql(conflict: &str) -> String {
    format!(
        "INSERT INTO call (id, tenant_id, direction, to_uri, from_uri, trunk_id, script_id, \
         script_version, campaign_id, idempotency_key, request, created_at_us, status, node_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         {conflict} RETURNING {CALL_COLS}"
    )
}

fn bind_new_call<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    id: &'q str,
    c: &'q NewCall,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(id)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_lists_number_their_parameters_row_by_row() {
        assert_eq!(values_list(1, 2), "($1, $2)");
        assert_eq!(values_list(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }

    #[test]
    fn like_prefixes_escape_wildcards() {
        assert_eq!(like_prefix("sip."), "sip.%");
        assert_eq!(like_prefix("a_b%c\\"), "a\\_b\\%c\\\\%");
    }
}
