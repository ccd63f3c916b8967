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

/// `$first, $first+1, …` for `n` arguments (an `IN` list).
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) async fn claim_due_deliveries(
    s: &SqlStore,
    now_us: i64,
    lease_until_us: i64,
    limit: u32,
    per_webhook: &PerWebhook,
) -> Result<Vec<(Delivery, Webhook)>> {
    let limit = clamp_limit(limit, CLAIM_MAX, CLAIM_MAX);
    // PostgreSQL: several dispatchers (nodes) may claim at once; FOR UPDATE SKIP LOCKED makes
    // each take rows the others are not taking, instead of queueing on their locks and then
    // claiming the same rows. SQLite: BEGIN IMMEDIATE made this transaction the only writer,
    // so a plain SELECT is already exclusive (and SQLite has no FOR UPDATE). This is the one
    // dialect difference of the claim.
    let lock = match s.backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    // Fairness: each webhook's due rows are ranked oldest first (ROW_NUMBER, a window function:
    // SQLite >= 3.25 and PostgreSQL), and only the first `max - in flight` of each are
    // eligible, so one receiver that hangs holds at most `max` of the dispatcher's slots and
    // the other webhooks' rows are claimed beside it instead of queueing behind its backlog.
    // The window sits in a sub-select: PostgreSQL refuses FOR UPDATE in a query level that has
    // window functions, not in one whose WHERE uses such a sub-select. The outer WHERE repeats
    // the due condition so that a row another node leased meanwhile (PostgreSQL re-checks a
    // row's WHERE when it locks it) is not taken.
    let mut args = vec![
        Arg::Int(now_us),
        Arg::Int(limit),
        Arg::Int(i64::from(per_webhook.max)),
    ];
    let mut budget = "$3".to_owned();
    let busy: Vec<&(String, u32)> = per_webhook
        .in_flight
        .iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    if !busy.is_empty() {
        budget.push_str(" - CASE webhook_id");
        for (hook, n) in busy {
            args.push(Arg::Text(hook.clone()));
            args.push(Arg::Int(i64::from(*n)));
            budget.push_str(&format!(" WHEN ${} THEN ${}", args.len() - 1, args.len()));
        }
        budget.push_str(" ELSE 0 END");
    }
    let sql = format!(
        "SELECT {DELIVERY_COLS} FROM webhook_delivery \
         WHERE status = 'pending' AND next_attempt_at_us <= $1 AND id IN ( \
           SELECT id FROM ( \
             SELECT id, webhook_id, ROW_NUMBER() OVER ( \
               PARTITION BY webhook_id ORDER BY next_attempt_at_us, created_at_us, id) AS rn \
             FROM webhook_delivery WHERE status = 'pending' AND next_attempt_at_us <= $1 \
           ) ranked WHERE rn <= {budget}) \
         ORDER BY next_attempt_at_us, created_at_us, id LIMIT $2{lock}"
    );
    let mut tx = s.begin().await?;
    let rows_due = bind_all(sqlx::query(&sql), &args)
        .fetch_all(&mut *tx)
        .await?;
    if rows_due.is_empty() {
        tx.rollback().await?;
        return Ok(Vec::new());
    }
    let mut due = rows_due
        .iter()
        .map(rows::delivery)
        .collect::<Result<Vec<_>>>()?;
    let ids: Vec<Arg> = due.iter().map(|d| Arg::Text(d.id.clone())).collect();
    // The lease: not due again until lease_until_us, so a dispatcher that dies mid-send has its
    // rows picked up again after the lease (at least once), and no one else sends them before.
    let mut args = vec![Arg::Int(lease_until_us)];
    args.extend(ids.iter().cloned());
    bind_all(
        sqlx::query(&format!(
            "UPDATE webhook_delivery SET next_attempt_at_us = $1 WHERE id IN ({})",
            placeholders(2, ids.len())
        )),
        &args,
    )
    .execute(&mut *tx)
    .await?;
    let mut hook_ids: Vec<Arg> = Vec::new();
    for d in &due {
        if !hook_ids
            .iter()
            .any(|h| matches!(h, Arg::Text(id) if *id == d.webhook_id))
        {
            hook_ids.push(Arg::Text(d.webhook_id.clone()));
        }
    }
    let hooks = bind_all(
        sqlx::query(&format!(
            "SELECT {WEBHOOK_COLS} FROM webhook WHERE id IN ({})",
            placeholders(1, hook_ids.len())
        )),
        &hook_ids,
    )
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(rows::webhook)
    .collect::<Result<Vec<_>>>()?;
    tx.commit().await?;
    let mut out = Vec::with_capacity(due.len());
    for mut d in due.drain(..) {
        d.next_attempt_at_us = lease_until_us;
        // Deleting a webhook deletes its deliveries in the same transaction, so every claimed
        // row has its webhook; a row without one would be skipped rather than sent anywhere.
        if let Some(h) = hooks.iter().find(|h| h.id == d.webhook_id) {
            out.push((d, h.clone()));
        }
    }
    Ok(out)
}

pub(super) async fn finish_attempt(s: &SqlStore, id: &str, result: &AttemptResult) -> Result<()> {
    let q = match result {
        AttemptResult::Delivered { status, at_us } => sqlx::query(
            "UPDATE webhook_delivery SET status = 'delivered', attempts = attempts + 1, \
             last_status = $2, last_error = NULL, delivered_at_us = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(*status)
        .bind(*at_us),
        AttemptResult::Failed {
            status,
            error,
            next_attempt_at_us: Some(next),
        } => sqlx::query(
            "UPDATE webhook_delivery SET status = 'pending', attempts = attempts + 1, \
             last_status = $2, last_error = $3, next_attempt_at_us = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(*status)
        .bind(error.as_str())
        .bind(*next),
        AttemptResult::Failed {
            status,
            error,
            next_attempt_at_us: None,
        } => sqlx::query(
            "UPDATE webhook_delivery SET status = 'dead', attempts = attempts + 1, \
             last_status = $2, last_error = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(*status)
        .bind(error.as_str()),
    };
    if q.execute(&s.pool).await?.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(super) async fn redeliver(
    s: &SqlStore,
    tenant: &str,
    delivery_id: &str,
    now_us: i64,
) -> Result<Delivery> {
    let row = sqlx::query(&format!(
        "UPDATE webhook_delivery SET status = 'pending', attempts = 0, next_attempt_at_us = $3, \
         delivered_at_us = NULL WHERE tenant_id = $1 AND id = $2 RETURNING {DELIVERY_COLS}"
    ))
    .bind(tenant)
    .bind(delivery_id)
    .bind(now_us)
    .fetch_optional(&s.pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    rows::delivery(&row)
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
