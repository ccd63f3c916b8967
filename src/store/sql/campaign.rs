//! Campaigns, contacts, results, the suppression list and tenant limits on SQL (the
//! [`CampaignStore`](crate::store::campaign::CampaignStore) methods other than the dial queue's).
//!
//! The row decoders and column lists of `campaign`, `contact` and `contact_attempt` live here
//! (`CAMPAIGN_COLS`, `CONTACT_COLS`, `ATTEMPT_COLS` and [`campaign`], [`contact`], [`attempt`]),
//! for `dial.rs` to use too.
//!
//! Cursors: campaigns page with [`rows::encode_cursor`] of `(created_at_us, id)` (newest first);
//! contacts and results with the contact's `seq` in decimal (insertion order); suppressions
//! with the number itself. A cursor that is not one of these is [`StoreError::Invalid`].

use std::collections::{BTreeMap, HashMap};

use super::rows;
use super::rows::{int, opt_int, opt_text, text};
use super::{Arg, Backend, Row, SqlStore, bind_all, clamp_limit};
use crate::campaign::model::{CampaignSettings, CampaignStatus, ContactStatus};
use crate::store::campaign::{
    ActivityBucket, Attempt, Campaign, CampaignCounts, Contact, Inserted, NewCampaign, NewContact,
    ResultAttempt, ResultRow, Suppression, TenantLimits,
};
use crate::store::{Page, Result, StoreError, new_id};

/// Default and largest page of campaigns, contacts, results and suppressions.
const PAGE: (u32, u32) = (50, 500);
/// Default and largest batch of [`due_contacts`].
const DUE_BATCH: (u32, u32) = (500, 5000);
/// Contacts per INSERT (one JSON parameter: [`insert_contacts_sql`]); bounds the statement's
/// size (~200 bytes a contact). `docs/campaigns/store.md` has the measurements.
const INSERT_CHUNK: usize = 5000;
/// Numbers per transaction of [`suppress`].
const SUPPRESS_CHUNK: usize = 1000;
/// How long the "last minute" of [`campaign_counts`] is (µs).
const MINUTE_US: i64 = 60_000_000;

// ---------------------------------------------------------------------------------------------
// Rows

/// The columns [`campaign`] decodes.
pub(super) const CAMPAIGN_COLS: &str = "id, tenant_id, status, settings, script_version, \
     created_at_us, updated_at_us, started_at_us, ended_at_us";
/// The columns [`contact`] decodes (and `seq`, the paging position).
pub(super) const CONTACT_COLS: &str = "id, campaign_id, tenant_id, seq, phone, name, timezone, \
     resolved_tz, variables, priority, status, attempts, next_attempt_at_us, last_outcome, \
     reason_code, reason, trunk_index, lease_owner, lease_expires_at_us, line, created_at_us, \
     updated_at_us";
/// The columns [`attempt`] decodes.
pub(super) const ATTEMPT_COLS: &str = "contact_id, attempt, call_id, trunk_id, node_id, \
     claimed_at_us, ended_at_us, outcome, rule";

fn uint(row: &Row, col: &str) -> Result<u32> {
    let v = int(row, col)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} {v} out of range")))
}

fn opt_uint(row: &Row, col: &str) -> Result<Option<u32>> {
    opt_int(row, col)?
        .map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} {v}"))))
        .transpose()
}

fn campaign_status(s: &str) -> Result<CampaignStatus> {
    CampaignStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("campaign status {s:?}")))
}

fn contact_status(s: &str) -> Result<ContactStatus> {
    ContactStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("contact status {s:?}")))
}

/// A campaign row ([`CAMPAIGN_COLS`]).
pub(super) fn campaign(row: &Row) -> Result<Campaign> {
    let settings = text(row, "settings")?;
    Ok(Campaign {
        id: text(row, "id")?,
        tenant_id: text(row, "tenant_id")?,
        status: campaign_status(&text(row, "status")?)?,
        settings: serde_json::from_str(&settings)
            .map_err(|e| StoreError::Corrupt(format!("campaign settings: {e}")))?,
        script_version: opt_int(row, "script_version")?,
        created_at_us: int(row, "created_at_us")?,
        updated_at_us: int(row, "updated_at_us")?,
        started_at_us: opt_int(row, "started_at_us")?,
        ended_at_us: opt_int(row, "ended_at_us")?,
    })
}

/// A contact row ([`CONTACT_COLS`]).
pub(super) fn contact(row: &Row) -> Result<Contact> {
    let variables = text(row, "variables")?;
    Ok(Contact {
        id: text(row, "id")?,
        campaign_id: text(row, "campaign_id")?,
        tenant_id: text(row, "tenant_id")?,
        phone: text(row, "phone")?,
        name: opt_text(row, "name")?,
        timezone: opt_text(row, "timezone")?,
        resolved_tz: text(row, "resolved_tz")?,
        variables: serde_json::from_str(&variables)
            .map_err(|e| StoreError::Corrupt(format!("contact variables: {e}")))?,
        priority: int(row, "priority")?,
        status: contact_status(&text(row, "status")?)?,
        attempts: uint(row, "attempts")?,
        next_attempt_at_us: int(row, "next_attempt_at_us")?,
        last_outcome: opt_text(row, "last_outcome")?,
        reason_code: opt_text(row, "reason_code")?,
        reason: opt_text(row, "reason")?,
        trunk_index: uint(row, "trunk_index")?,
        lease_owner: opt_text(row, "lease_owner")?,
        lease_expires_at_us: opt_int(row, "lease_expires_at_us")?,
        line: opt_int(row, "line")?,
        created_at_us: int(row, "created_at_us")?,
        updated_at_us: int(row, "updated_at_us")?,
    })
}

/// A contact row with its `seq` (the paging position).
fn contact_seq(row: &Row) -> Result<(i64, Contact)> {
    Ok((int(row, "seq")?, contact(row)?))
}

/// An attempt row ([`ATTEMPT_COLS`]).
pub(super) fn attempt(row: &Row) -> Result<Attempt> {
    Ok(Attempt {
        contact_id: text(row, "contact_id")?,
        attempt: uint(row, "attempt")?,
        call_id: opt_text(row, "call_id")?,
        trunk_id: opt_text(row, "trunk_id")?,
        node_id: text(row, "node_id")?,
        claimed_at_us: int(row, "claimed_at_us")?,
        ended_at_us: opt_int(row, "ended_at_us")?,
        outcome: opt_text(row, "outcome")?,
        rule: opt_text(row, "rule")?,
    })
}

fn suppression(row: &Row) -> Result<Suppression> {
    Ok(Suppression {
        number: text(row, "number")?,
        reason: opt_text(row, "reason")?,
        source: text(row, "source")?,
        created_at_us: int(row, "created_at_us")?,
    })
}

/// `$from, $from+1, …` (`n` placeholders).
fn placeholders(from: usize, n: usize) -> String {
    let mut s = String::with_capacity(n * 6);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('$');
        s.push_str(&(from + i).to_string());
    }
    s
}

/// A subquery yielding the strings of the JSON array in parameter `$n`: a long `IN` list in
/// one parameter (SQLite searches numbered parameters linearly, so thousands of `$n` cost
/// quadratic time there; see [`insert_contacts_sql`]).
fn json_texts(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => format!("SELECT value FROM json_each(${n})"),
        Backend::Postgres => format!("SELECT jsonb_array_elements_text(CAST(${n} AS JSONB))"),
    }
}

/// A JSON array of strings (for [`json_texts`]).
fn json_array(items: &[&str]) -> Result<String> {
    serde_json::to_string(items).map_err(|e| StoreError::Invalid(format!("a list: {e}")))
}

/// A rate in calls/s as stored: milli-calls per second, rounded (NaN → 0, saturating).
fn cps_milli(cps: f64) -> i64 {
    (cps * 1000.0).round() as i64
}

/// The contacts cursor: a `seq` in decimal.
fn decode_seq_cursor(cursor: Option<&str>) -> Result<i64> {
    match cursor {
        None => Ok(0),
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 0 && c.len() <= 19)
            .ok_or_else(|| StoreError::Invalid(format!("{c:?} is not a cursor of this listing"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Campaigns

pub(super) async fn create_campaign(s: &SqlStore, c: &NewCampaign) -> Result<Campaign> {
    let settings = serde_json::to_string(&c.settings)
        .map_err(|e| StoreError::Invalid(format!("campaign settings: {e}")))?;
    let row = sqlx::query(&format!(
        "INSERT INTO campaign (id, tenant_id, name, status, settings, script_id, script_version, \
         priority, max_concurrent, max_cps_milli, start_at_us, end_at_us, created_at_us, \
         updated_at_us) VALUES ($1, $2, $3, 'draft', $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
         RETURNING {CAMPAIGN_COLS}"
    ))
    .bind(new_id("cmp"))
    .bind(c.tenant_id.as_str())
    .bind(c.settings.name.as_str())
    .bind(settings)
    .bind(c.settings.script_id.as_deref())
    .bind(c.script_version)
    .bind(i64::from(c.settings.priority))
    .bind(i64::from(c.settings.max_concurrent))
    .bind(cps_milli(c.settings.max_cps))
    .bind(c.settings.start_at_us)
    .bind(c.settings.end_at_us)
    .bind(c.at_us)
    .fetch_one(&s.pool)
    .await?;
    campaign(&row)
}

pub(super) async fn get_campaign(s: &SqlStore, tenant: &str, id: &str) -> Result<Campaign> {
    let row = sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLS} FROM campaign WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&s.pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    campaign(&row)
}

pub(super) async fn get_campaign_any_tenant(s: &SqlStore, id: &str) -> Result<Campaign> {
    let row = sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLS} FROM campaign WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&s.pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    campaign(&row)
}

pub(super) async fn list_campaigns(
    s: &SqlStore,
    tenant: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<Campaign>> {
    let limit = clamp_limit(limit, PAGE.0, PAGE.1);
    let mut args = vec![Arg::Text(tenant.to_owned())];
    let mut sql = format!("SELECT {CAMPAIGN_COLS} FROM campaign WHERE tenant_id = $1");
    if let Some(cursor) = cursor {
        let (created, id) = rows::decode_cursor(cursor).ok_or_else(|| {
            StoreError::Invalid(format!("{cursor:?} is not a cursor of this listing"))
        })?;
        args.push(Arg::Int(created));
        args.push(Arg::Text(id));
        sql.push_str(" AND (created_at_us < $2 OR (created_at_us = $2 AND id < $3))");
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
        .map(campaign)
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

pub(super) async fn campaigns_in(
    s: &SqlStore,
    statuses: &[CampaignStatus],
) -> Result<Vec<Campaign>> {
    if statuses.is_empty() {
        return Ok(Vec::new());
    }
    let args: Vec<Arg> = statuses
        .iter()
        .map(|st| Arg::Text(st.as_str().to_owned()))
        .collect();
    let sql = format!(
        "SELECT {CAMPAIGN_COLS} FROM campaign WHERE status IN ({}) ORDER BY created_at_us, id",
        placeholders(1, args.len())
    );
    bind_all(sqlx::query(&sql), &args)
        .fetch_all(&s.pool)
        .await?
        .iter()
        .map(campaign)
        .collect()
}

/// The status of a campaign the caller could not change: `Conflict` naming it, or `NotFound`.
async fn refuse(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: &str,
    id: &str,
    what: &str,
) -> StoreError {
    let row = sqlx::query("SELECT status FROM campaign WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await;
    match row {
        Ok(Some(row)) => match text(&row, "status") {
            Ok(status) => StoreError::Conflict(format!("the campaign is {status}: {what}")),
            Err(e) => e,
        },
        Ok(None) => StoreError::NotFound,
        Err(e) => e.into(),
    }
}

pub(super) async fn update_campaign(
    s: &SqlStore,
    tenant: &str,
    id: &str,
    settings: &CampaignSettings,
    script_version: Option<i64>,
    at_us: i64,
) -> Result<Campaign> {
    let json = serde_json::to_string(settings)
        .map_err(|e| StoreError::Invalid(format!("campaign settings: {e}")))?;
    let mut tx = s.begin().await?;
    let row = sqlx::query(&format!(
        "UPDATE campaign SET name = $3, settings = $4, script_id = $5, script_version = $6, \
         priority = $7, max_concurrent = $8, max_cps_milli = $9, start_at_us = $10, \
         end_at_us = $11, updated_at_us = $12 \
         WHERE tenant_id = $1 AND id = $2 AND status <> 'running' RETURNING {CAMPAIGN_COLS}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(settings.name.as_str())
    .bind(json)
    .bind(settings.script_id.as_deref())
    .bind(script_version)
    .bind(i64::from(settings.priority))
    .bind(i64::from(settings.max_concurrent))
    .bind(cps_milli(settings.max_cps))
    .bind(settings.start_at_us)
    .bind(settings.end_at_us)
    .bind(at_us)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        let e = refuse(&mut tx, tenant, id, "pause it before changing it").await;
        tx.rollback().await?;
        return Err(e);
    };
    let updated = campaign(&row)?;
    tx.commit().await?;
    Ok(updated)
}

pub(super) async fn delete_campaign(s: &SqlStore, tenant: &str, id: &str) -> Result<()> {
    let mut tx = s.begin().await?;
    // Refuse a running campaign; on PostgreSQL this also locks the row, so the campaign
    // cannot start while its contacts are being deleted.
    let found = sqlx::query(
        "UPDATE campaign SET updated_at_us = updated_at_us \
         WHERE tenant_id = $1 AND id = $2 AND status <> 'running' RETURNING id",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if found.is_none() {
        let e = refuse(&mut tx, tenant, id, "pause or cancel it before deleting it").await;
        tx.rollback().await?;
        return Err(e);
    }
    // Children first (foreign keys).
    for sql in [
        "DELETE FROM contact_attempt WHERE campaign_id = $1",
        "DELETE FROM contact WHERE campaign_id = $1",
        "DELETE FROM campaign WHERE id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn set_campaign_status(
    s: &SqlStore,
    tenant: &str,
    id: &str,
    from: &[CampaignStatus],
    to: CampaignStatus,
    at_us: i64,
) -> Result<Campaign> {
    let mut tx = s.begin().await?;
    let moved = if from.is_empty() {
        None
    } else {
        // started_at_us: the first move to running; ended_at_us: the move to a final status.
        let started = (to == CampaignStatus::Running).then_some(at_us);
        let ended = to.is_final().then_some(at_us);
        let sql = format!(
            "UPDATE campaign SET status = $3, updated_at_us = $4, \
             started_at_us = COALESCE(started_at_us, $5), ended_at_us = COALESCE($6, ended_at_us) \
             WHERE tenant_id = $1 AND id = $2 AND status IN ({}) RETURNING {CAMPAIGN_COLS}",
            placeholders(7, from.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(tenant)
            .bind(id)
            .bind(to.as_str())
            .bind(at_us)
            .bind(started)
            .bind(ended);
        for f in from {
            q = q.bind(f.as_str());
        }
        q.fetch_optional(&mut *tx).await?
    };
    let Some(row) = moved else {
        let e = refuse(&mut tx, tenant, id, &format!("cannot move to {to}")).await;
        tx.rollback().await?;
        return Err(e);
    };
    let c = campaign(&row)?;
    tx.commit().await?;
    Ok(c)
}

// ---------------------------------------------------------------------------------------------
// Contacts

/// The INSERT of a chunk of contacts: `$1` is the chunk as one JSON array of rows (each an
/// array: id, seq, phone, name, timezone, resolved_tz, variables, priority, status,
/// reason_code, reason, line), `$2` the tenant, `$3` the campaign, `$4` the time. Only inserted
/// rows come back (`seq`).
///
/// One parameter per chunk instead of one per value: binding 17 values per contact through
/// sqlx costs more than the insert itself, and SQLite searches its list of numbered
/// parameters linearly (when it parses the statement, and when sqlx binds each argument),
/// which made a 17,000-parameter VALUES list quadratic (1,000 contacts/s in a debug build).
/// The JSON is unpacked by the database: `json_each` on SQLite, `jsonb_array_elements` on
/// PostgreSQL (the only difference; both name the element `t.value`). SQLite needs the
/// `WHERE true` so that `ON CONFLICT` is not read as a join constraint.
fn insert_contacts_sql(backend: Backend) -> String {
    let source = match backend {
        Backend::Sqlite => "json_each($1) AS t",
        Backend::Postgres => "jsonb_array_elements(CAST($1 AS JSONB)) AS t(value)",
    };
    format!(
        "INSERT INTO contact (id, tenant_id, campaign_id, seq, phone, name, timezone, \
         resolved_tz, variables, priority, status, next_attempt_at_us, reason_code, reason, \
         line, created_at_us, updated_at_us) \
         SELECT t.value ->> 0, $2, $3, CAST(t.value ->> 1 AS BIGINT), t.value ->> 2, \
         t.value ->> 3, t.value ->> 4, t.value ->> 5, t.value ->> 6, \
         CAST(t.value ->> 7 AS BIGINT), t.value ->> 8, $4, t.value ->> 9, t.value ->> 10, \
         CAST(t.value ->> 11 AS BIGINT), $4, $4 \
         FROM {source} WHERE true \
         ON CONFLICT (campaign_id, phone) DO NOTHING RETURNING seq"
    )
}

pub(super) async fn insert_contacts(
    s: &SqlStore,
    tenant: &str,
    campaign_id: &str,
    contacts: &[NewContact],
    at_us: i64,
) -> Result<Vec<Inserted>> {
    // Within the input, a number's later rows are duplicates of its first.
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(contacts.len());
    let mut dup_of: Vec<Option<usize>> = Vec::with_capacity(contacts.len());
    let mut fresh: Vec<usize> = Vec::with_capacity(contacts.len());
    for (i, c) in contacts.iter().enumerate() {
        match first.get(c.phone.as_str()) {
            Some(&j) => dup_of.push(Some(j)),
            None => {
                first.insert(c.phone.as_str(), i);
                dup_of.push(None);
                fresh.push(i);
            }
        }
    }
    let ids: Vec<String> = contacts.iter().map(|_| new_id("ct")).collect();
    let mut tx = s.begin().await?;
    // Reserve seq numbers for every fresh row (a duplicate of an existing contact leaves a gap).
    // On PostgreSQL the row lock also serialises uploads to one campaign.
    let n = i64::try_from(fresh.len()).map_err(|_| StoreError::Invalid("too many".into()))?;
    let row = sqlx::query(
        "UPDATE campaign SET next_seq = next_seq + $3, updated_at_us = $4 \
         WHERE tenant_id = $1 AND id = $2 RETURNING next_seq",
    )
    .bind(tenant)
    .bind(campaign_id)
    .bind(n)
    .bind(at_us)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    let base = int(&row, "next_seq")? - n;

    // Position in `fresh` → inserted?
    let mut inserted = vec![false; fresh.len()];
    let sql = insert_contacts_sql(s.backend);
    for (chunk_no, chunk) in fresh.chunks(INSERT_CHUNK).enumerate() {
        let mut rows = Vec::with_capacity(chunk.len());
        for (k, &i) in chunk.iter().enumerate() {
            let c = &contacts[i];
            let seq = base + (chunk_no * INSERT_CHUNK + k) as i64;
            let reason_code = (c.status == ContactStatus::Suppressed).then_some("suppressed");
            let variables = serde_json::to_string(&c.variables)
                .map_err(|e| StoreError::Invalid(format!("contact variables: {e}")))?;
            rows.push((
                ids[i].as_str(),
                seq,
                c.phone.as_str(),
                c.name.as_deref(),
                c.timezone.as_deref(),
                c.resolved_tz.as_str(),
                variables,
                c.priority,
                c.status.as_str(),
                reason_code,
                c.reason.as_deref(),
                c.line,
            ));
        }
        let json = serde_json::to_string(&rows)
            .map_err(|e| StoreError::Invalid(format!("contacts: {e}")))?;
        let q = sqlx::query(&sql)
            .bind(json)
            .bind(tenant)
            .bind(campaign_id)
            .bind(at_us);
        for row in q.fetch_all(&mut *tx).await? {
            let pos = int(&row, "seq")? - base;
            let slot = usize::try_from(pos)
                .ok()
                .and_then(|p| inserted.get_mut(p))
                .ok_or_else(|| StoreError::Database(format!("an insert returned seq {pos}")))?;
            *slot = true;
        }
    }

    // The numbers that conflicted: find the contacts that have them.
    let conflicted: Vec<usize> = fresh
        .iter()
        .zip(&inserted)
        .filter(|(_, ins)| !**ins)
        .map(|(&i, _)| i)
        .collect();
    let mut existing: HashMap<String, String> = HashMap::with_capacity(conflicted.len());
    let lookup = format!(
        "SELECT id, phone FROM contact WHERE campaign_id = $1 AND phone IN ({})",
        json_texts(s.backend, 2)
    );
    for chunk in conflicted.chunks(INSERT_CHUNK) {
        let phones: Vec<&str> = chunk.iter().map(|&i| contacts[i].phone.as_str()).collect();
        let rows = sqlx::query(&lookup)
            .bind(campaign_id)
            .bind(json_array(&phones)?)
            .fetch_all(&mut *tx)
            .await?;
        for row in rows {
            existing.insert(text(&row, "phone")?, text(&row, "id")?);
        }
    }
    tx.commit().await?;

    let mut out: Vec<Inserted> = Vec::with_capacity(contacts.len());
    let mut fresh_pos = inserted.iter();
    for (i, c) in contacts.iter().enumerate() {
        let result = match dup_of[i] {
            Some(j) => Inserted::Duplicate(match &out[j] {
                Inserted::New(id) | Inserted::Duplicate(id) => id.clone(),
            }),
            None => {
                if fresh_pos.next().copied().unwrap_or(false) {
                    Inserted::New(ids[i].clone())
                } else {
                    let id = existing.get(&c.phone).ok_or_else(|| {
                        StoreError::Database("a contact insert conflicted with no row".into())
                    })?;
                    Inserted::Duplicate(id.clone())
                }
            }
        };
        out.push(result);
    }
    Ok(out)
}

pub(super) async fn list_contacts(
    s: &SqlStore,
    campaign_id: &str,
    status: Option<ContactStatus>,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<Contact>> {
    let limit = clamp_limit(limit, PAGE.0, PAGE.1);
    let after = decode_seq_cursor(cursor)?;
    let mut args = vec![Arg::Text(campaign_id.to_owned()), Arg::Int(after)];
    let mut sql = format!("SELECT {CONTACT_COLS} FROM contact WHERE campaign_id = $1 AND seq > $2");
    if let Some(status) = status {
        args.push(Arg::Text(status.as_str().to_owned()));
        sql.push_str(" AND status = $3");
    }
    args.push(Arg::Int(limit + 1));
    sql.push_str(&format!(" ORDER BY seq LIMIT ${}", args.len()));
    let rows = bind_all(sqlx::query(&sql), &args)
        .fetch_all(&s.pool)
        .await?
        .iter()
        .map(contact_seq)
        .collect::<Result<Vec<_>>>()?;
    let (items, next_cursor) = page_by_seq(rows, limit);
    Ok(Page { items, next_cursor })
}

/// Cuts `limit + 1` rows to a page and its cursor (the last row's `seq`).
fn page_by_seq<T>(mut rows: Vec<(i64, T)>, limit: i64) -> (Vec<T>, Option<String>) {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = match rows.last() {
        Some((seq, _)) if more => Some(seq.to_string()),
        _ => None,
    };
    (rows.into_iter().map(|(_, c)| c).collect(), next)
}

pub(super) async fn get_contact(
    s: &SqlStore,
    campaign_id: &str,
    id: &str,
) -> Result<(Contact, Vec<Attempt>)> {
    let row = sqlx::query(&format!(
        "SELECT {CONTACT_COLS} FROM contact WHERE campaign_id = $1 AND id = $2"
    ))
    .bind(campaign_id)
    .bind(id)
    .fetch_optional(&s.pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    let c = contact(&row)?;
    let attempts = sqlx::query(&format!(
        "SELECT {ATTEMPT_COLS} FROM contact_attempt WHERE contact_id = $1 ORDER BY attempt"
    ))
    .bind(id)
    .fetch_all(&s.pool)
    .await?
    .iter()
    .map(attempt)
    .collect::<Result<Vec<_>>>()?;
    Ok((c, attempts))
}

pub(super) async fn due_contacts(
    s: &SqlStore,
    campaign_id: &str,
    until_us: i64,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Contact>> {
    let limit = clamp_limit(limit, DUE_BATCH.0, DUE_BATCH.1);
    let mut args = vec![Arg::Text(campaign_id.to_owned()), Arg::Int(until_us)];
    let mut sql = format!(
        "SELECT {CONTACT_COLS} FROM contact \
         WHERE campaign_id = $1 AND status = 'queued' AND next_attempt_at_us <= $2"
    );
    if let Some(after) = after {
        // Resume after that contact's place in the order (priority desc, due time, seq).
        let row = sqlx::query(
            "SELECT priority, next_attempt_at_us, seq FROM contact \
             WHERE campaign_id = $1 AND id = $2",
        )
        .bind(campaign_id)
        .bind(after)
        .fetch_optional(&s.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        args.push(Arg::Int(int(&row, "priority")?));
        args.push(Arg::Int(int(&row, "next_attempt_at_us")?));
        args.push(Arg::Int(int(&row, "seq")?));
        sql.push_str(
            " AND (priority < $3 OR (priority = $3 AND (next_attempt_at_us > $4 \
             OR (next_attempt_at_us = $4 AND seq > $5))))",
        );
    }
    args.push(Arg::Int(limit));
    sql.push_str(&format!(
        " ORDER BY priority DESC, next_attempt_at_us, seq LIMIT ${}",
        args.len()
    ));
    bind_all(sqlx::query(&sql), &args)
        .fetch_all(&s.pool)
        .await?
        .iter()
        .map(contact)
        .collect()
}

pub(super) async fn defer_contacts(
    s: &SqlStore,
    deferrals: &[(String, i64, String, String)],
    at_us: i64,
) -> Result<()> {
    if deferrals.is_empty() {
        return Ok(());
    }
    let mut tx = s.begin().await?;
    for (id, next_us, code, reason) in deferrals {
        // Only a contact still queued: one claimed meanwhile is the worker's now.
        sqlx::query(
            "UPDATE contact SET next_attempt_at_us = $2, reason_code = $3, reason = $4, \
             updated_at_us = $5 WHERE id = $1 AND status = 'queued'",
        )
        .bind(id.as_str())
        .bind(*next_us)
        .bind(code.as_str())
        .bind(reason.as_str())
        .bind(at_us)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn campaign_activity(
    s: &SqlStore,
    campaign_id: &str,
    bucket_us: i64,
    from_us: i64,
    to_us: i64,
) -> Result<Vec<ActivityBucket>> {
    if bucket_us <= 0 {
        return Err(StoreError::Invalid("bucket width must be positive".into()));
    }
    let mut buckets: BTreeMap<i64, ActivityBucket> = BTreeMap::new();
    let started = sqlx::query(
        "SELECT CAST(claimed_at_us / $2 AS BIGINT) AS b, CAST(COUNT(*) AS BIGINT) AS n \
         FROM contact_attempt WHERE campaign_id = $1 AND claimed_at_us >= $3 \
         AND claimed_at_us < $4 GROUP BY b",
    )
    .bind(campaign_id)
    .bind(bucket_us)
    .bind(from_us)
    .bind(to_us)
    .fetch_all(&s.pool)
    .await?;
    for row in &started {
        let b = int(row, "b")?;
        let entry = buckets.entry(b).or_default();
        entry.start_us = b.saturating_mul(bucket_us);
        entry.started = int(row, "n")?;
    }
    let ended = sqlx::query(
        "SELECT CAST(ended_at_us / $2 AS BIGINT) AS b, outcome, CAST(COUNT(*) AS BIGINT) AS n \
         FROM contact_attempt WHERE campaign_id = $1 AND ended_at_us >= $3 \
         AND ended_at_us < $4 AND outcome IS NOT NULL GROUP BY b, outcome",
    )
    .bind(campaign_id)
    .bind(bucket_us)
    .bind(from_us)
    .bind(to_us)
    .fetch_all(&s.pool)
    .await?;
    for row in &ended {
        let b = int(row, "b")?;
        let entry = buckets.entry(b).or_default();
        entry.start_us = b.saturating_mul(bucket_us);
        entry.ended.insert(text(row, "outcome")?, int(row, "n")?);
    }
    Ok(buckets.into_values().collect())
}

pub(super) async fn campaign_counts(
    s: &SqlStore,
    campaign_id: &str,
    now_us: i64,
) -> Result<CampaignCounts> {
    let mut counts = CampaignCounts {
        by_status: ContactStatus::ALL
            .iter()
            .map(|st| (st.as_str().to_owned(), 0))
            .collect(),
        ..CampaignCounts::default()
    };
    let by_status = sqlx::query(
        "SELECT status, CAST(COUNT(*) AS BIGINT) AS n FROM contact \
         WHERE campaign_id = $1 GROUP BY status",
    )
    .bind(campaign_id)
    .fetch_all(&s.pool)
    .await?;
    for row in &by_status {
        let status = contact_status(&text(row, "status")?)?;
        counts
            .by_status
            .insert(status.as_str().to_owned(), int(row, "n")?);
    }
    let by_outcome = sqlx::query(
        "SELECT outcome, CAST(COUNT(*) AS BIGINT) AS n FROM contact_attempt \
         WHERE campaign_id = $1 AND ended_at_us IS NOT NULL AND outcome IS NOT NULL \
         GROUP BY outcome",
    )
    .bind(campaign_id)
    .fetch_all(&s.pool)
    .await?;
    let mut by_outcome_map = BTreeMap::new();
    for row in &by_outcome {
        by_outcome_map.insert(text(row, "outcome")?, int(row, "n")?);
    }
    counts.answered = by_outcome_map.get("answered").copied().unwrap_or(0);
    counts.by_outcome = by_outcome_map;
    let row = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(MIN(next_attempt_at_us) AS BIGINT) AS first \
         FROM contact WHERE campaign_id = $1 AND status = 'queued' AND reason_code = 'window' \
         AND next_attempt_at_us > $2",
    )
    .bind(campaign_id)
    .bind(now_us)
    .fetch_one(&s.pool)
    .await?;
    counts.outside_window = int(&row, "n")?;
    counts.next_window_opens_at_us = opt_int(&row, "first")?;
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(c.talk_ms), 0) AS BIGINT) AS talk FROM contact_attempt a \
         JOIN call c ON c.id = a.call_id \
         WHERE a.campaign_id = $1 AND a.outcome = 'answered' AND c.talk_ms IS NOT NULL",
    )
    .bind(campaign_id)
    .fetch_one(&s.pool)
    .await?;
    counts.talk_ms_total = int(&row, "talk")?;
    let row = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM contact_attempt \
         WHERE campaign_id = $1 AND claimed_at_us > $2 AND claimed_at_us <= $3",
    )
    .bind(campaign_id)
    .bind(now_us.saturating_sub(MINUTE_US))
    .bind(now_us)
    .fetch_one(&s.pool)
    .await?;
    counts.attempts_last_minute = int(&row, "n")?;
    Ok(counts)
}

pub(super) async fn campaign_results(
    s: &SqlStore,
    campaign_id: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<ResultRow>> {
    let limit = clamp_limit(limit, PAGE.0, PAGE.1);
    let after = decode_seq_cursor(cursor)?;
    let rows = sqlx::query(&format!(
        "SELECT {CONTACT_COLS} FROM contact WHERE campaign_id = $1 AND seq > $2 \
         ORDER BY seq LIMIT $3"
    ))
    .bind(campaign_id)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(&s.pool)
    .await?
    .iter()
    .map(contact_seq)
    .collect::<Result<Vec<_>>>()?;
    let (contacts, next_cursor) = page_by_seq(rows, limit);
    let mut attempts: HashMap<String, Vec<ResultAttempt>> = HashMap::new();
    if !contacts.is_empty() {
        // The page's attempts with their calls, in one query (at most PAGE.1 ids).
        let sql = format!(
            "SELECT a.contact_id AS contact_id, a.attempt AS attempt, a.call_id AS call_id, \
             a.trunk_id AS trunk_id, a.node_id AS node_id, a.claimed_at_us AS claimed_at_us, \
             a.ended_at_us AS ended_at_us, a.outcome AS outcome, a.rule AS rule, \
             c.talk_ms AS talk_ms, c.result AS call_result \
             FROM contact_attempt a LEFT JOIN call c ON c.id = a.call_id \
             WHERE a.contact_id IN ({}) ORDER BY a.contact_id, a.attempt",
            placeholders(1, contacts.len())
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for c in &contacts {
            q = q.bind(c.id.as_str());
        }
        for row in q.fetch_all(&s.pool).await? {
            let result = opt_text(&row, "call_result")?
                .map(|t| {
                    serde_json::from_str(&t)
                        .map_err(|e| StoreError::Corrupt(format!("call result: {e}")))
                })
                .transpose()?;
            let a = ResultAttempt {
                attempt: attempt(&row)?,
                talk_ms: opt_int(&row, "talk_ms")?,
                result,
            };
            attempts
                .entry(a.attempt.contact_id.clone())
                .or_default()
                .push(a);
        }
    }
    let items = contacts
        .into_iter()
        .map(|contact| ResultRow {
            attempts: attempts.remove(&contact.id).unwrap_or_default(),
            contact,
        })
        .collect();
    Ok(Page { items, next_cursor })
}

// ---------------------------------------------------------------------------------------------
// The suppression list

pub(super) async fn list_suppressions(
    s: &SqlStore,
    tenant: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<Suppression>> {
    let limit = clamp_limit(limit, PAGE.0, PAGE.1);
    let rows = sqlx::query(
        "SELECT number, reason, source, created_at_us FROM suppression \
         WHERE tenant_id = $1 AND number > $2 ORDER BY number LIMIT $3",
    )
    .bind(tenant)
    // Every number sorts after the empty string.
    .bind(cursor.unwrap_or(""))
    .bind(limit + 1)
    .fetch_all(&s.pool)
    .await?;
    let mut items = rows.iter().map(suppression).collect::<Result<Vec<_>>>()?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = match items.last() {
        Some(last) if more => Some(last.number.clone()),
        _ => None,
    };
    Ok(Page { items, next_cursor })
}

pub(super) async fn suppress(
    s: &SqlStore,
    tenant: &str,
    entries: &[(String, Option<String>)],
    source: &str,
    at_us: i64,
) -> Result<i64> {
    // Each number once (the first entry's reason).
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    let entries: Vec<&(String, Option<String>)> = entries
        .iter()
        .filter(|(n, _)| seen.insert(n.as_str()))
        .collect();
    let reason = format!("on the do-not-call list ({source})");
    // The entries arrive as one JSON array of [number, reason] pairs (see insert_contacts_sql).
    let pairs = match s.backend {
        Backend::Sqlite => "json_each($4) AS t",
        Backend::Postgres => "jsonb_array_elements(CAST($4 AS JSONB)) AS t(value)",
    };
    let insert = format!(
        "INSERT INTO suppression (tenant_id, number, reason, source, created_at_us) \
         SELECT $1, t.value ->> 0, t.value ->> 1, $2, $3 FROM {pairs} WHERE true \
         ON CONFLICT (tenant_id, number) DO NOTHING"
    );
    let update = format!(
        "UPDATE contact SET status = 'suppressed', reason_code = 'suppressed', reason = $2, \
         updated_at_us = $3 WHERE tenant_id = $1 AND status = 'queued' AND phone IN ({})",
        json_texts(s.backend, 4)
    );
    let mut moved = 0;
    // One transaction per chunk: a long list does not hold the write lock for long.
    for chunk in entries.chunks(SUPPRESS_CHUNK) {
        let json = serde_json::to_string(chunk)
            .map_err(|e| StoreError::Invalid(format!("suppressions: {e}")))?;
        let numbers: Vec<&str> = chunk.iter().map(|(n, _)| n.as_str()).collect();
        let mut tx = s.begin().await?;
        sqlx::query(&insert)
            .bind(tenant)
            .bind(source)
            .bind(at_us)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(&update)
            .bind(tenant)
            .bind(reason.as_str())
            .bind(at_us)
            .bind(json_array(&numbers)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        moved += i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
    }
    Ok(moved)
}

pub(super) async fn delete_suppression(s: &SqlStore, tenant: &str, number: &str) -> Result<()> {
    let done = sqlx::query("DELETE FROM suppression WHERE tenant_id = $1 AND number = $2")
        .bind(tenant)
        .bind(number)
        .execute(&s.pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(super) async fn suppressed_among(
    s: &SqlStore,
    tenant: &str,
    numbers: &[String],
) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT number FROM suppression WHERE tenant_id = $1 AND number IN ({})",
        json_texts(s.backend, 2)
    );
    let mut out = Vec::new();
    for chunk in numbers.chunks(INSERT_CHUNK) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(json_array(&chunk)?)
            .fetch_all(&s.pool)
            .await?;
        for row in rows {
            out.push(text(&row, "number")?);
        }
    }
    // Sorted, and a number listed in two chunks is reported once.
    out.sort();
    out.dedup();
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Tenant limits

fn limits(row: &Row) -> Result<TenantLimits> {
    Ok(TenantLimits {
        max_concurrent: opt_uint(row, "max_concurrent")?,
        max_cps: opt_int(row, "max_cps_milli")?.map(|m| m as f64 / 1000.0),
        number_cap: uint(row, "number_cap")?,
        number_cap_window_s: uint(row, "number_cap_window_s")?,
    })
}

pub(super) async fn tenant_limits(s: &SqlStore, tenant: &str) -> Result<TenantLimits> {
    let row = sqlx::query(
        "SELECT max_concurrent, max_cps_milli, number_cap, number_cap_window_s \
         FROM tenant_limits WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(&s.pool)
    .await?;
    match row {
        Some(row) => limits(&row),
        None => Ok(TenantLimits::default()),
    }
}

pub(super) async fn set_tenant_limits(
    s: &SqlStore,
    tenant: &str,
    l: &TenantLimits,
    at_us: i64,
) -> Result<TenantLimits> {
    let row = sqlx::query(
        "INSERT INTO tenant_limits (tenant_id, max_concurrent, max_cps_milli, number_cap, \
         number_cap_window_s, updated_at_us) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id) DO UPDATE SET max_concurrent = excluded.max_concurrent, \
         max_cps_milli = excluded.max_cps_milli, number_cap = excluded.number_cap, \
         number_cap_window_s = excluded.number_cap_window_s, \
         updated_at_us = excluded.updated_at_us \
         RETURNING max_concurrent, max_cps_milli, number_cap, number_cap_window_s",
    )
    .bind(tenant)
    .bind(l.max_concurrent.map(i64::from))
    .bind(l.max_cps.map(cps_milli))
    .bind(i64::from(l.number_cap))
    .bind(i64::from(l.number_cap_window_s))
    .bind(at_us)
    .fetch_one(&s.pool)
    .await?;
    limits(&row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_from_the_given_parameter() {
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
        assert_eq!(placeholders(1, 0), "");
    }

    #[test]
    fn rates_are_stored_in_milli_calls_per_second() {
        assert_eq!(cps_milli(1.0), 1000);
        assert_eq!(cps_milli(0.0015), 2);
        assert_eq!(cps_milli(f64::NAN), 0);
    }

    #[test]
    fn a_seq_cursor_is_a_decimal_and_nothing_else() {
        assert_eq!(decode_seq_cursor(None).ok(), Some(0));
        assert_eq!(decode_seq_cursor(Some("42")).ok(), Some(42));
        for bad in ["", "-1", "x", "1e3", "99999999999999999999"] {
            assert!(
                matches!(decode_seq_cursor(Some(bad)), Err(StoreError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
