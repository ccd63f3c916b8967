//! Webhooks and the outbox (webhook_delivery): claim, lease, retry, dead-letter, redeliver.

use super::rows::{self, DELIVERY_COLS, WEBHOOK_COLS};
use super::{Arg, Backend, SqlStore, bind_all, clamp_limit};
use crate::store::{
    AttemptResult, Delivery, DeliveryStatus, PerWebhook, Result, StoreError, Webhook, WebhookInput,
    new_id,
};

/// Default and largest page of [`list_deliveries`].
const DELIVERIES_PAGE: (u32, u32) = (50, 500);
/// Largest claim batch.
const CLAIM_MAX: u32 = 500;

fn events_text(events: &[String]) -> String {
    serde_json::Value::from(events.to_vec()).to_string()
}

pub(super) async fn create_webhook(
    s: &SqlStore,
    tenant: &str,
    input: &WebhookInput,
    at_us: i64,
) -> Result<Webhook> {
    // The API refuses a webhook without a secret before it gets here (400); this is the
    // store's own guard, as a refusal of the write.
    let secret = input
        .secret
        .as_deref()
        .ok_or_else(|| StoreError::Conflict("a webhook needs a secret".into()))?;
    let row = sqlx::query(&format!(
        "INSERT INTO webhook (id, tenant_id, url, secret, events, active, description, \
         created_at_us, updated_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
         RETURNING {WEBHOOK_COLS}"
    ))
    .bind(new_id("whk"))
    .bind(tenant)
    .bind(input.url.as_str())
    .bind(secret)
    .bind(events_text(&input.events))
    .bind(i64::from(input.active))
    .bind(input.description.as_deref())
    .bind(at_us)
    .fetch_one(&s.pool)
    .await?;
    rows::webhook(&row)
}

pub(super) async fn get_webhook(s: &SqlStore, tenant: &str, id: &str) -> Result<Webhook> {
    let row = sqlx::query(&format!(
        "SELECT {WEBHOOK_COLS} FROM webhook WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&s.pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    rows::webhook(&row)
}

pub(super) async fn list_webhooks(s: &SqlStore, tenant: &str) -> Result<Vec<Webhook>> {
    sqlx::query(&format!(
        "SELECT {WEBHOOK_COLS} FROM webhook WHERE tenant_id = $1 ORDER BY created_at_us, id"
    ))
    .bind(tenant)
    .fetch_all(&s.pool)
    .await?
    .iter()
    .map(rows::webhook)
    .collect()
}

pub(super) async fn update_webhook(
    s: &SqlStore,
    tenant: &str,
    id: &str,
    input: &WebhookInput,
    at_us: i64,
) -> Result<Webhook> {
    let row = sqlx::query(&format!(
        "UPDATE webhook SET url = $3, secret = COALESCE($4, secret), events = $5, active = $6, \
         description = $7, updated_at_us = $8 WHERE tenant_id = $1 AND id = $2 \
         RETURNING {WEBHOOK_COLS}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(input.url.as_str())
    .bind(input.secret.as_deref())
    .bind(events_text(&input.events))
    .bind(i64::from(input.active))
    .bind(input.description.as_deref())
    .bind(at_us)
    .fetch_optional(&s.pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    rows::webhook(&row)
}

pub(super) async fn delete_webhook(s: &SqlStore, tenant: &str, id: &str) -> Result<()> {
    let mut tx = s.begin().await?;
    // Explicitly (not only ON DELETE CASCADE): the result does not depend on the foreign_keys
    // pragma of whoever opened the SQLite file.
    sqlx::query("DELETE FROM webhook_delivery WHERE tenant_id = $1 AND webhook_id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query("DELETE FROM webhook WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        tx.rollback().await?;
        return Err(StoreError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list_deliveries(
    s: &SqlStore,
    tenant: &str,
    webhook_id: &str,
    status: Option<DeliveryStatus>,
    limit: u32,
) -> Result<Vec<Delivery>> {
    let limit = clamp_limit(limit, DELIVERIES_PAGE.0, DELIVERIES_PAGE.1);
    let mut args = vec![
        Arg::Text(tenant.to_owned()),
        Arg::Text(webhook_id.to_owned()),
    ];
    let mut sql = format!(
        "SELECT {DELIVERY_COLS} FROM webhook_delivery WHERE tenant_id = $1 AND webhook_id = $2"
    );
    if let Some(status) = status {
        args.push(Arg::Text(status.as_str().to_owned()));
        sql.push_str(&format!(" AND status = ${}", args.len()));
    }
    args.push(Arg::Int(limit));
    sql.push_str(&format!(
        " ORDER BY created_at_us DESC, event_id DESC, id DESC LIMIT ${}",
        args.len()
    ));
    let deliveries = bind_all(sqlx::query(&sql), &args)
        .fetch_all(&s.pool)
        .await?
        .iter()
        .map(rows::delivery)
        .collect::<Result<Vec<_>>>()?;
    if deliveries.is_empty() {
        // No deliveries, or no such webhook for this tenant: tell them apart.
        get_webhook(s, tenant, webhook_id).await?;
    }
    Ok(deliveries)
}

pub(super) async fn list_call_deliveries(
    s: &SqlStore,
    tenant: &str,
    call_id: &str,
    limit: u32,
) -> Result<Vec<Delivery>> {
    let limit = clamp_limit(limit, 100, 1000);
    let sql = format!(
        "SELECT {DELIVERY_COLS} FROM webhook_delivery WHERE tenant_id = $1 AND event_id IN \
         (SELECT id FROM call_event WHERE call_id = $2 AND tenant_id = $1) \
         ORDER BY event_id, created_at_us, id LIMIT $3"
    );
    sqlx::query(&sql)
        .bind(tenant)
        .bind(call_id)
        .bind(limit)
        .fetch_all(&s.pool)
        .await?
        .iter()
        .map(rows::delivery)
        .collect()
}

/// `$first, $first+1, …` for `n` arguments (an `IN` list).
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `CASE WHEN a > b THEN a ELSE b END`: the larger of two non-NULL SQL expressions (SQLite's
/// `max(a, b)` is PostgreSQL's `GREATEST(a, b)`; a CASE is the same text on both).
fn greater(a: &str, b: &str) -> String {
    format!("CASE WHEN {a} > {b} THEN {a} ELSE {b} END")
}

/// Rounds of webhook probes in one claim: a webhook whose bound was stale (nothing due after
/// all) gives no row, so a claim that came up short looks at the next few before it returns.
const CLAIM_ROUNDS: usize = 3;

pub(super) async fn claim_due_deliveries(
    s: &SqlStore,
    now_us: i64,
    lease_until_us: i64,
    limit: u32,
    per_webhook: &PerWebhook,
) -> Result<Vec<(Delivery, Webhook)>> {
    let limit = clamp_limit(limit, CLAIM_MAX, CLAIM_MAX);
    // The claim costs O(batch), whatever the backlog: it walks `webhook_claimable` to the few
    // webhooks that have something due (a webhook that is resting after a failure is not
    // among them), then `webhook_delivery_pending` to the oldest due rows of each, at most its
    // per-webhook budget (`max` minus what this dispatcher has in flight), so one receiver's
    // backlog neither slows the claim nor takes the slots of another tenant's webhooks.
    let budget = |hook: &str| -> i64 {
        let busy = per_webhook
            .in_flight
            .iter()
            .filter(|(h, _)| h == hook)
            .map(|(_, n)| *n)
            .sum::<u32>();
        i64::from(per_webhook.max.saturating_sub(busy))
    };
    let saturated: Vec<Arg> = per_webhook
        .in_flight
        .iter()
        .filter(|(h, _)| budget(h) == 0)
        .map(|(h, _)| Arg::Text(h.clone()))
        .collect();
    // PostgreSQL: several dispatchers (nodes) may claim at once; FOR UPDATE SKIP LOCKED makes
    // each take webhooks (and rows) the others are not taking, instead of queueing on their
    // locks. The webhook lock also excludes the event append's queuing of a delivery of that
    // webhook (migrations/postgres/0002_outbox.sql). SQLite: BEGIN IMMEDIATE made this
    // transaction the only writer, so plain SELECTs are already exclusive.
    let lock = match s.backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let hooks_sql = |skip: usize, lock: &str| {
        let mut sql = format!("SELECT {WEBHOOK_COLS} FROM webhook WHERE claimable_at_us <= $1");
        if skip > 0 {
            sql.push_str(&format!(" AND id NOT IN ({})", placeholders(3, skip)));
        }
        sql.push_str(&format!(" ORDER BY claimable_at_us LIMIT $2{lock}"));
        sql
    };
    let hooks_args = |skip: &[Arg], n: i64| {
        let mut args = vec![Arg::Int(now_us), Arg::Int(n)];
        args.extend(skip.iter().cloned());
        args
    };
    // Nothing claimable (the common case when idle or when every receiver with a backlog is
    // resting): one indexed read, and the writer is not taken at all.
    let any = bind_all(
        sqlx::query(&hooks_sql(saturated.len(), "")),
        &hooks_args(&saturated, 1),
    )
    .fetch_optional(&s.pool)
    .await?;
    if any.is_none() {
        return Ok(Vec::new());
    }

    let mut tx = s.begin().await?;
    let mut skip = saturated;
    let mut probed: Vec<Arg> = Vec::new();
    let mut hooks: Vec<Webhook> = Vec::new();
    let mut due: Vec<Delivery> = Vec::new();
    for _ in 0..CLAIM_ROUNDS {
        let room = limit - due.len() as i64;
        if room <= 0 {
            break;
        }
        let found = bind_all(
            sqlx::query(&hooks_sql(skip.len(), lock)),
            &hooks_args(&skip, room),
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(rows::webhook)
        .collect::<Result<Vec<_>>>()?;
        let short = (found.len() as i64) < room;
        for hook in found {
            skip.push(Arg::Text(hook.id.clone()));
            probed.push(Arg::Text(hook.id.clone()));
            let take = budget(&hook.id).min(limit - due.len() as i64);
            if take > 0 {
                // Ordered by the indexed column alone: a tie-breaker would sort every due row
                // of this webhook (its whole backlog) to return `take` of them.
                let rows_due = sqlx::query(&format!(
                    "SELECT {DELIVERY_COLS} FROM webhook_delivery \
                     WHERE webhook_id = $1 AND status = 'pending' AND next_attempt_at_us <= $2 \
                     ORDER BY next_attempt_at_us LIMIT $3{lock}"
                ))
                .bind(hook.id.as_str())
                .bind(now_us)
                .bind(take)
                .fetch_all(&mut *tx)
                .await?;
                for row in &rows_due {
                    due.push(rows::delivery(row)?);
                }
            }
            hooks.push(hook);
        }
        if short {
            break;
        }
    }
    if !due.is_empty() {
        // The lease: not due again until lease_until_us, so a dispatcher that dies mid-send
        // has its rows picked up again after the lease (at least once), and no one else sends
        // them before.
        let mut args = vec![Arg::Int(lease_until_us)];
        args.extend(due.iter().map(|d| Arg::Text(d.id.clone())));
        bind_all(
            sqlx::query(&format!(
                "UPDATE webhook_delivery SET next_attempt_at_us = $1 WHERE id IN ({})",
                placeholders(2, due.len())
            )),
            &args,
        )
        .execute(&mut *tx)
        .await?;
    }
    if !probed.is_empty() {
        // The exact bound of every webhook looked at: its earliest pending row (leased ones
        // included: they are due again when their lease ends), or the end of its pause, or
        // NULL when nothing is pending. One indexed lookup each.
        let earliest = "(SELECT d.next_attempt_at_us FROM webhook_delivery d \
                        WHERE d.webhook_id = webhook.id AND d.status = 'pending' \
                        ORDER BY d.next_attempt_at_us LIMIT 1)";
        bind_all(
            sqlx::query(&format!(
                "UPDATE webhook SET claimable_at_us = {} WHERE id IN ({})",
                greater("webhook.paused_until_us", earliest),
                placeholders(1, probed.len())
            )),
            &probed,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    // Oldest due first across webhooks (the order the rows were due in).
    due.sort_by(|a, b| {
        (a.next_attempt_at_us, a.created_at_us, &a.id).cmp(&(
            b.next_attempt_at_us,
            b.created_at_us,
            &b.id,
        ))
    });
    let mut out = Vec::with_capacity(due.len());
    for mut d in due {
        d.next_attempt_at_us = lease_until_us;
        if let Some(h) = hooks.iter().find(|h| h.id == d.webhook_id) {
            out.push((d, h.clone()));
        }
    }
    Ok(out)
}

pub(super) async fn finish_attempt(s: &SqlStore, id: &str, result: &AttemptResult) -> Result<()> {
    use sqlx::Row as _;
    let mut tx = s.begin().await?;
    let q = match result {
        AttemptResult::Delivered { status, at_us } => sqlx::query(
            "UPDATE webhook_delivery SET status = 'delivered', attempts = attempts + 1, \
             last_status = $2, last_error = NULL, delivered_at_us = $3 WHERE id = $1 \
             RETURNING webhook_id",
        )
        .bind(id)
        .bind(*status)
        .bind(*at_us),
        AttemptResult::Failed {
            status,
            error,
            next_attempt_at_us: Some(next),
            ..
        } => sqlx::query(
            "UPDATE webhook_delivery SET status = 'pending', attempts = attempts + 1, \
             last_status = $2, last_error = $3, next_attempt_at_us = $4 WHERE id = $1 \
             RETURNING webhook_id",
        )
        .bind(id)
        .bind(*status)
        .bind(error.as_str())
        .bind(*next),
        AttemptResult::Failed {
            status,
            error,
            next_attempt_at_us: None,
            ..
        } => sqlx::query(
            "UPDATE webhook_delivery SET status = 'dead', attempts = attempts + 1, \
             last_status = $2, last_error = $3 WHERE id = $1 RETURNING webhook_id",
        )
        .bind(id)
        .bind(*status)
        .bind(error.as_str()),
    };
    let Some(row) = q.fetch_optional(&mut *tx).await? else {
        tx.rollback().await?;
        return Err(StoreError::NotFound);
    };
    let hook: String = row.try_get("webhook_id")?;
    match result {
        AttemptResult::Delivered { at_us, .. } => {
            // A success ends the webhook's pause and its run of failures; its bound may now
            // be as early as now (a bound too early costs one probe).
            sqlx::query(
                "UPDATE webhook SET failures = 0, paused_until_us = 0, claimable_at_us = \
                 CASE WHEN claimable_at_us > $2 THEN $2 ELSE claimable_at_us END \
                 WHERE id = $1 AND (failures <> 0 OR paused_until_us <> 0)",
            )
            .bind(hook.as_str())
            .bind(*at_us)
            .execute(&mut *tx)
            .await?;
        }
        AttemptResult::Failed {
            next_attempt_at_us,
            webhook_backoff,
            ..
        } => {
            // Counts the failure (when it rests the webhook) and row-locks the webhook
            // (PostgreSQL) for the rest of this transaction.
            let Some(w) = sqlx::query(
                "UPDATE webhook SET failures = failures + $2 WHERE id = $1 \
                 RETURNING failures, paused_until_us",
            )
            .bind(hook.as_str())
            .bind(i64::from(webhook_backoff.is_some()))
            .fetch_optional(&mut *tx)
            .await?
            else {
                tx.rollback().await?;
                return Err(StoreError::NotFound);
            };
            let failures: i64 = w.try_get("failures")?;
            let paused: i64 = w.try_get("paused_until_us")?;
            let pause = webhook_backoff.map_or(paused, |b| b.pause_until(failures).max(paused));
            // The bound only goes down to what this row now needs (its retry, not before the
            // pause) and up to the pause: the webhook cannot be claimed before either.
            let q = match next_attempt_at_us {
                Some(next) => sqlx::query(
                    "UPDATE webhook SET paused_until_us = $2, claimable_at_us = CASE \
                     WHEN claimable_at_us IS NULL OR claimable_at_us >= $3 THEN $4 \
                     WHEN claimable_at_us > $2 THEN claimable_at_us ELSE $2 END WHERE id = $1",
                )
                .bind(hook.as_str())
                .bind(pause)
                .bind(*next)
                .bind((*next).max(pause)),
                None => sqlx::query(
                    "UPDATE webhook SET paused_until_us = $2, claimable_at_us = CASE \
                     WHEN claimable_at_us IS NULL THEN NULL \
                     WHEN claimable_at_us > $2 THEN claimable_at_us ELSE $2 END WHERE id = $1",
                )
                .bind(hook.as_str())
                .bind(pause),
            };
            q.execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn redeliver(
    s: &SqlStore,
    tenant: &str,
    delivery_id: &str,
    now_us: i64,
) -> Result<Delivery> {
    let mut tx = s.begin().await?;
    let Some(row) = sqlx::query(&format!(
        "UPDATE webhook_delivery SET status = 'pending', attempts = 0, next_attempt_at_us = $3, \
         delivered_at_us = NULL WHERE tenant_id = $1 AND id = $2 RETURNING {DELIVERY_COLS}"
    ))
    .bind(tenant)
    .bind(delivery_id)
    .bind(now_us)
    .fetch_optional(&mut *tx)
    .await?
    else {
        tx.rollback().await?;
        return Err(StoreError::NotFound);
    };
    let delivery = rows::delivery(&row)?;
    // Due now (or when the webhook's pause ends): lower the webhook's bound to that.
    let due = greater("paused_until_us", "$2");
    sqlx::query(&format!(
        "UPDATE webhook SET claimable_at_us = CASE WHEN claimable_at_us IS NULL \
         OR claimable_at_us > {due} THEN {due} ELSE claimable_at_us END WHERE id = $1"
    ))
    .bind(delivery.webhook_id.as_str())
    .bind(now_us)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(delivery)
}

pub(super) async fn pending_deliveries(s: &SqlStore) -> Result<i64> {
    use sqlx::Row as _;
    let row = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM webhook_delivery WHERE status = 'pending'",
    )
    .fetch_one(&s.pool)
    .await?;
    Ok(row.try_get::<i64, _>("n")?)
}
