//! The dial queue on SQL: claims with leases, attempts, their ends, lease renewal and expiry.
//!
//! Every limit a claim enforces is checked against the database inside the claim's own
//! transaction, so that any number of nodes claiming at once never exceed one:
//! - the claim locks the campaign row, then the tenant row (PostgreSQL `FOR NO KEY UPDATE`:
//!   it serialises claims of one tenant without blocking the foreign-key checks of inserts;
//!   SQLite has one writer, `BEGIN IMMEDIATE`). Claims of one tenant are therefore serial,
//!   which makes the tenant's live count and the per-number cap exact across nodes, not only
//!   the campaign's;
//! - live calls are the contacts in `dialing`, whatever their lease: an expired lease still
//!   counts until the worker settles it from its call's timeline (a call may still be up);
//! - calls/s is a GCRA per campaign (`campaign.cps_tat_us`) and per tenant
//!   (`tenant_limits.cps_tat_us`) with a burst of one: a contact may be claimed while the
//!   theoretical arrival time is not in the future, and each claimed contact moves it on by
//!   `1/cps`.

use std::collections::BTreeMap;

use super::rows::{int, opt_int, opt_text, text};
use super::{Arg, Backend, Row, SqlStore, bind_all};
use crate::campaign::model::ContactStatus;
use crate::store::campaign::{Attempt, AttemptEnd, Claim, ClaimRequest, Contact};
use crate::store::{Result, StoreError};

/// The contact columns every statement here reads, prefixed `c.`.
const CONTACT_COLS: &str = "c.id AS id, c.tenant_id AS tenant_id, c.campaign_id AS campaign_id, \
     c.phone AS phone, c.name AS name, c.timezone AS timezone, c.resolved_tz AS resolved_tz, \
     c.variables AS variables, c.priority AS priority, c.status AS status, \
     c.attempts AS attempts, c.next_attempt_at_us AS next_attempt_at_us, \
     c.last_outcome AS last_outcome, c.reason_code AS reason_code, c.reason AS reason, \
     c.trunk_index AS trunk_index, c.lease_owner AS lease_owner, \
     c.lease_expires_at_us AS lease_expires_at_us, c.line AS line, \
     c.created_at_us AS created_at_us, c.updated_at_us AS updated_at_us";

/// The attempt columns, prefixed `a.` and renamed `a_*` (they sit beside a contact's).
const ATTEMPT_COLS: &str = "a.contact_id AS a_contact_id, a.attempt AS a_attempt, \
     a.call_id AS a_call_id, a.trunk_id AS a_trunk_id, a.node_id AS a_node_id, \
     a.claimed_at_us AS a_claimed_at_us, a.ended_at_us AS a_ended_at_us, \
     a.outcome AS a_outcome, a.rule AS a_rule";

/// Ids per `IN (…)` list (both databases take far more; this keeps statements small).
const IN_CHUNK: usize = 200;

/// Most contacts one claim takes (a claim holds the tenant's lock: keep it short).
const CLAIM_MAX: u32 = 100;

fn small(row: &Row, col: &str) -> Result<u32> {
    let v = int(row, col)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} = {v}")))
}

fn contact(row: &Row) -> Result<Contact> {
    let status = text(row, "status")?;
    let variables = text(row, "variables")?;
    let variables: BTreeMap<String, String> = serde_json::from_str(&variables)
        .map_err(|e| StoreError::Corrupt(format!("contact variables: {e}")))?;
    Ok(Contact {
        id: text(row, "id")?,
        campaign_id: text(row, "campaign_id")?,
        tenant_id: text(row, "tenant_id")?,
        phone: text(row, "phone")?,
        name: opt_text(row, "name")?,
        timezone: opt_text(row, "timezone")?,
        resolved_tz: text(row, "resolved_tz")?,
        variables,
        priority: int(row, "priority")?,
        status: ContactStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("contact status {status:?}")))?,
        attempts: small(row, "attempts")?,
        next_attempt_at_us: int(row, "next_attempt_at_us")?,
        last_outcome: opt_text(row, "last_outcome")?,
        reason_code: opt_text(row, "reason_code")?,
        reason: opt_text(row, "reason")?,
        trunk_index: small(row, "trunk_index")?,
        lease_owner: opt_text(row, "lease_owner")?,
        lease_expires_at_us: opt_int(row, "lease_expires_at_us")?,
        line: opt_int(row, "line")?,
        created_at_us: int(row, "created_at_us")?,
        updated_at_us: int(row, "updated_at_us")?,
    })
}

fn attempt(row: &Row) -> Result<Attempt> {
    Ok(Attempt {
        contact_id: text(row, "a_contact_id")?,
        attempt: small(row, "a_attempt")?,
        call_id: opt_text(row, "a_call_id")?,
        trunk_id: opt_text(row, "a_trunk_id")?,
        node_id: text(row, "a_node_id")?,
        claimed_at_us: int(row, "a_claimed_at_us")?,
        ended_at_us: opt_int(row, "a_ended_at_us")?,
        outcome: opt_text(row, "a_outcome")?,
        rule: opt_text(row, "a_rule")?,
    })
}

/// The row lock a claim takes on PostgreSQL (none on SQLite: the transaction holds the one
/// write lock already). `NO KEY UPDATE` serialises claimers without blocking the `KEY SHARE`
/// locks that foreign-key checks of inserts take.
fn row_lock(s: &SqlStore) -> &'static str {
    match s.backend {
        Backend::Postgres => " FOR NO KEY UPDATE",
        Backend::Sqlite => "",
    }
}

/// µs between two calls at `cps_milli` thousandths of a call per second (`None`: a rate of
/// 0, no calls at all).
fn interval_us(cps_milli: i64) -> Option<i64> {
    (cps_milli > 0).then(|| (1_000_000_000 / cps_milli).max(1))
}

/// GCRA with a burst of one: how many calls may start at `now` (at most `want`), and the
/// theoretical arrival time after them. `tat` not in the future: one call may go, and each
/// call moves it on by `interval`.
fn gcra(tat: i64, now: i64, interval: Option<i64>, want: i64) -> (i64, i64) {
    let Some(interval) = interval else {
        return (0, tat);
    };
    let mut tat = tat;
    let mut n = 0;
    while n < want && tat <= now {
        tat = tat.max(now).saturating_add(interval);
        n += 1;
    }
    (n, tat)
}

/// A Unix µs time as RFC 3339 (for reasons people read).
fn format_us(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{us} µs"))
}

pub(super) async fn claim_contacts(s: &SqlStore, req: &ClaimRequest) -> Result<Claim> {
    let lock = row_lock(s);
    let now = req.now_us;
    let mut tx = s.begin().await?;
    // Campaign, then tenant: every claimer locks in this order (no deadlock). The tenant's
    // lock serialises the claims of all its campaigns (its live count, calls/s and the
    // per-number cap hold across nodes).
    let Some(campaign) = sqlx::query(&format!(
        "SELECT tenant_id, status, max_concurrent, max_cps_milli, cps_tat_us FROM campaign \
         WHERE id = $1{lock}"
    ))
    .bind(&req.campaign_id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Err(StoreError::NotFound);
    };
    let tenant_id = text(&campaign, "tenant_id")?;
    if text(&campaign, "status")? != "running" {
        return Ok(Claim::default());
    }
    let campaign_max = int(&campaign, "max_concurrent")?;
    let campaign_interval = interval_us(int(&campaign, "max_cps_milli")?);
    let campaign_tat = int(&campaign, "cps_tat_us")?;
    let tenant_lock = match s.backend {
        Backend::Postgres => " FOR NO KEY UPDATE OF t",
        Backend::Sqlite => "",
    };
    let tenant = sqlx::query(&format!(
        "SELECT t.id AS id, l.tenant_id AS limits, l.max_concurrent AS max_concurrent, \
         l.max_cps_milli AS max_cps_milli, l.cps_tat_us AS cps_tat_us \
         FROM tenant t LEFT JOIN tenant_limits l ON l.tenant_id = t.id \
         WHERE t.id = $1{tenant_lock}"
    ))
    .bind(&tenant_id)
    .fetch_one(&mut *tx)
    .await?;
    let limits = opt_text(&tenant, "limits")?.map(|_| tenant);
    let (tenant_interval, tenant_tat) = match &limits {
        Some(row) => match opt_int(row, "max_cps_milli")? {
            Some(milli) => (Some(interval_us(milli)), int(row, "cps_tat_us")?),
            None => (None, 0),
        },
        None => (None, 0),
    };
    let tenant_max = match (
        req.tenant_max_concurrent.map(i64::from),
        limits
            .as_ref()
            .map(|r| opt_int(r, "max_concurrent"))
            .transpose()?
            .flatten(),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };

    let live = int(
        &sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM contact \
             WHERE campaign_id = $1 AND status = 'dialing'",
        )
        .bind(&req.campaign_id)
        .fetch_one(&mut *tx)
        .await?,
        "n",
    )?;
    let mut allowed = i64::from(req.max.min(CLAIM_MAX)).min(campaign_max - live);
    if let Some(tenant_max) = tenant_max {
        let tenant_live = int(
            &sqlx::query(
                "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM contact \
                 WHERE tenant_id = $1 AND status = 'dialing'",
            )
            .bind(&tenant_id)
            .fetch_one(&mut *tx)
            .await?,
            "n",
        )?;
        allowed = allowed.min(tenant_max - tenant_live);
    }
    let mut claim = Claim::default();
    if allowed <= 0 {
        return Ok(claim);
    }
    // Calls/s: how many tokens both buckets have now (nothing is spent yet).
    let (by_campaign, _) = gcra(campaign_tat, now, campaign_interval, allowed);
    allowed = allowed.min(by_campaign);
    if let Some(interval) = tenant_interval {
        let (by_tenant, _) = gcra(tenant_tat, now, interval, allowed);
        allowed = allowed.min(by_tenant);
    }
    if allowed <= 0 {
        // Limited by calls/s: when a token comes (None: a limit of 0 calls/s, never).
        let mut next = campaign_interval.map(|_| campaign_tat);
        if let Some(interval) = tenant_interval {
            next = match (next, interval) {
                (Some(a), Some(_)) => Some(a.max(tenant_tat)),
                _ => None,
            };
        }
        claim.cps_next_at_us = next;
        return Ok(claim);
    }

    let skip_locked = match s.backend {
        // Rows another transaction holds (a suppression, a deferral) are skipped, not waited
        // for: the claim stays short, and they come round again.
        Backend::Postgres => " FOR UPDATE OF c SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let due = sqlx::query(&format!(
        "SELECT {CONTACT_COLS} FROM contact c \
         WHERE c.campaign_id = $1 AND c.status = 'queued' AND c.next_attempt_at_us <= $2 \
         ORDER BY c.priority DESC, c.next_attempt_at_us, c.seq LIMIT $3{skip_locked}"
    ))
    .bind(&req.campaign_id)
    .bind(now)
    .bind(allowed)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(contact)
    .collect::<Result<Vec<Contact>>>()?;
    if due.is_empty() {
        return Ok(claim);
    }

    // The do-not-call list.
    let mut suppressed: BTreeMap<String, Option<String>> = BTreeMap::new();
    {
        let mut args = vec![Arg::Text(tenant_id.clone())];
        let mut marks = Vec::new();
        for c in &due {
            args.push(Arg::Text(c.phone.clone()));
            marks.push(format!("${}", args.len()));
        }
        let sql = format!(
            "SELECT number, reason FROM suppression WHERE tenant_id = $1 AND number IN ({})",
            marks.join(", ")
        );
        for row in bind_all(sqlx::query(&sql), &args)
            .fetch_all(&mut *tx)
            .await?
        {
            suppressed.insert(text(&row, "number")?, opt_text(&row, "reason")?);
        }
    }

    let cap = i64::from(req.number_cap);
    let window = req.number_cap_window_us.max(0);
    let mut claimed = 0i64;
    for mut c in due {
        if let Some(reason) = suppressed.get(&c.phone) {
            let reason = reason
                .clone()
                .unwrap_or_else(|| "on the do-not-call list".to_owned());
            sqlx::query(
                "UPDATE contact SET status = 'suppressed', reason_code = 'suppressed', \
                 reason = $2, updated_at_us = $3 WHERE id = $1",
            )
            .bind(&c.id)
            .bind(&reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            c.status = ContactStatus::Suppressed;
            c.reason_code = Some("suppressed".to_owned());
            c.reason = Some(reason);
            c.updated_at_us = now;
            claim.suppressed.push(c);
            continue;
        }
        if cap > 0 {
            // Attempts of this number (any campaign of the tenant) within the window: with
            // `cap` or more, the contact waits until enough of them leave it.
            let since = now.saturating_sub(window);
            let times: Vec<i64> = sqlx::query(
                "SELECT claimed_at_us FROM contact_attempt \
                 WHERE tenant_id = $1 AND phone = $2 AND claimed_at_us > $3 \
                 ORDER BY claimed_at_us",
            )
            .bind(&tenant_id)
            .bind(&c.phone)
            .bind(since)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| int(r, "claimed_at_us"))
            .collect::<Result<_>>()?;
            let n = i64::try_from(times.len()).unwrap_or(i64::MAX);
            if n >= cap {
                // The (n - cap + 1)-th oldest leaving the window brings the count below cap.
                let idx = usize::try_from(n - cap).unwrap_or(0);
                let until = times
                    .get(idx)
                    .copied()
                    .unwrap_or(now)
                    .saturating_add(window)
                    .max(now + 1);
                let reason = format!(
                    "per-number cap: {n} attempts to this number in the last {} s across the \
                     tenant's campaigns (at most {cap}); next attempt at {}",
                    window / 1_000_000,
                    format_us(until)
                );
                sqlx::query(
                    "UPDATE contact SET next_attempt_at_us = $2, reason_code = 'number_cap', \
                     reason = $3, updated_at_us = $4 WHERE id = $1",
                )
                .bind(&c.id)
                .bind(until)
                .bind(&reason)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                c.next_attempt_at_us = until;
                c.reason_code = Some("number_cap".to_owned());
                c.reason = Some(reason);
                c.updated_at_us = now;
                claim.capped.push(c);
                continue;
            }
        }
        let n = c.attempts + 1;
        let lease_until = now.saturating_add(req.lease_us);
        sqlx::query(
            "UPDATE contact SET status = 'dialing', attempts = $2, lease_owner = $3, \
             lease_expires_at_us = $4, reason_code = 'dialing', reason = $5, \
             updated_at_us = $6 WHERE id = $1",
        )
        .bind(&c.id)
        .bind(i64::from(n))
        .bind(&req.node_id)
        .bind(lease_until)
        .bind(format!("attempt {n} being dialed"))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO contact_attempt (contact_id, attempt, tenant_id, campaign_id, phone, \
             node_id, claimed_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&c.id)
        .bind(i64::from(n))
        .bind(&tenant_id)
        .bind(&req.campaign_id)
        .bind(&c.phone)
        .bind(&req.node_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        c.status = ContactStatus::Dialing;
        c.attempts = n;
        c.lease_owner = Some(req.node_id.clone());
        c.lease_expires_at_us = Some(lease_until);
        c.reason_code = Some("dialing".to_owned());
        c.reason = Some(format!("attempt {n} being dialed"));
        c.updated_at_us = now;
        claim.claimed.push((c, n));
        claimed += 1;
    }
    if claimed > 0 {
        let (_, tat) = gcra(campaign_tat, now, campaign_interval, claimed);
        sqlx::query("UPDATE campaign SET cps_tat_us = $2 WHERE id = $1")
            .bind(&req.campaign_id)
            .bind(tat)
            .execute(&mut *tx)
            .await?;
        if let Some(interval) = tenant_interval {
            let (_, tat) = gcra(tenant_tat, now, interval, claimed);
            sqlx::query("UPDATE tenant_limits SET cps_tat_us = $2 WHERE tenant_id = $1")
                .bind(&tenant_id)
                .bind(tat)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(claim)
}

pub(super) async fn abandon_attempt(
    s: &SqlStore,
    contact_id: &str,
    attempt: u32,
    next_attempt_at_us: i64,
    reason_code: &str,
    reason: &str,
    at_us: i64,
) -> Result<()> {
    let mut tx = s.begin().await?;
    // Only the contact's own open attempt, still without an end: a late or repeated abandon
    // changes nothing.
    let moved = sqlx::query(
        "UPDATE contact SET status = 'queued', attempts = attempts - 1, lease_owner = NULL, \
         lease_expires_at_us = NULL, next_attempt_at_us = $3, reason_code = $4, reason = $5, \
         updated_at_us = $6 \
         WHERE id = $1 AND status = 'dialing' AND attempts = $2",
    )
    .bind(contact_id)
    .bind(i64::from(attempt))
    .bind(next_attempt_at_us)
    .bind(reason_code)
    .bind(reason)
    .bind(at_us)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved == 1 {
        sqlx::query(
            "DELETE FROM contact_attempt WHERE contact_id = $1 AND attempt = $2 \
             AND ended_at_us IS NULL",
        )
        .bind(contact_id)
        .bind(i64::from(attempt))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn set_attempt_call(
    s: &SqlStore,
    contact_id: &str,
    attempt: u32,
    call_id: &str,
    trunk_id: Option<&str>,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE contact_attempt SET call_id = $3, trunk_id = $4 \
         WHERE contact_id = $1 AND attempt = $2",
    )
    .bind(contact_id)
    .bind(i64::from(attempt))
    .bind(call_id)
    .bind(trunk_id)
    .execute(&s.pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(super) async fn end_attempt(s: &SqlStore, end: &AttemptEnd) -> Result<bool> {
    let mut tx = s.begin().await?;
    let ended = sqlx::query(
        "UPDATE contact_attempt SET ended_at_us = $3, outcome = $4, rule = $5 \
         WHERE contact_id = $1 AND attempt = $2 AND ended_at_us IS NULL \
         AND EXISTS (SELECT 1 FROM contact c WHERE c.id = $1 AND c.attempts = $2 \
                     AND c.status = 'dialing')",
    )
    .bind(&end.contact_id)
    .bind(i64::from(end.attempt))
    .bind(end.at_us)
    .bind(&end.outcome)
    .bind(&end.rule)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if ended == 0 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE contact SET status = $3, next_attempt_at_us = COALESCE($4, next_attempt_at_us), \
         trunk_index = $5, last_outcome = $6, reason_code = $7, reason = $8, \
         lease_owner = NULL, lease_expires_at_us = NULL, updated_at_us = $9 \
         WHERE id = $1 AND attempts = $2 AND status = 'dialing'",
    )
    .bind(&end.contact_id)
    .bind(i64::from(end.attempt))
    .bind(end.status.as_str())
    .bind(end.next_attempt_at_us)
    .bind(i64::from(end.trunk_index))
    .bind(&end.outcome)
    .bind(&end.reason_code)
    .bind(&end.reason)
    .bind(end.at_us)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn renew_leases(
    s: &SqlStore,
    node: &str,
    contact_ids: &[String],
    until_us: i64,
) -> Result<()> {
    for chunk in contact_ids.chunks(IN_CHUNK) {
        let mut args = vec![Arg::Text(node.to_owned()), Arg::Int(until_us)];
        let mut marks = Vec::with_capacity(chunk.len());
        for id in chunk {
            args.push(Arg::Text(id.clone()));
            marks.push(format!("${}", args.len()));
        }
        let sql = format!(
            "UPDATE contact SET lease_expires_at_us = $2 \
             WHERE lease_owner = $1 AND status = 'dialing' AND id IN ({})",
            marks.join(", ")
        );
        bind_all(sqlx::query(&sql), &args).execute(&s.pool).await?;
    }
    Ok(())
}

pub(super) async fn expired_leases(
    s: &SqlStore,
    now_us: i64,
    limit: u32,
) -> Result<Vec<(Contact, Attempt)>> {
    let rows = sqlx::query(&format!(
        "SELECT {CONTACT_COLS}, {ATTEMPT_COLS} FROM contact c \
         JOIN contact_attempt a ON a.contact_id = c.id AND a.attempt = c.attempts \
         WHERE c.status = 'dialing' AND c.lease_expires_at_us < $1 \
         ORDER BY c.lease_expires_at_us, c.id LIMIT $2"
    ))
    .bind(now_us)
    .bind(i64::from(limit.clamp(1, 1000)))
    .fetch_all(&s.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((contact(r)?, attempt(r)?)))
        .collect()
}

pub(super) async fn attempt_by_call(
    s: &SqlStore,
    call_id: &str,
) -> Result<Option<(Contact, Attempt)>> {
    let row = sqlx::query(&format!(
        "SELECT {CONTACT_COLS}, {ATTEMPT_COLS} FROM contact_attempt a \
         JOIN contact c ON c.id = a.contact_id \
         WHERE a.call_id = $1 AND a.ended_at_us IS NULL"
    ))
    .bind(call_id)
    .fetch_optional(&s.pool)
    .await?;
    row.map(|r| Ok((contact(&r)?, attempt(&r)?))).transpose()
}

#[cfg(test)]
mod tests {
    //! Claim semantics on both databases, seeded with plain SQL (the campaign store's own
    //! inserts are tested with it). PostgreSQL runs when `CALLPLANE_TEST_PG` names a server
    //! (a fresh database each), and is required under `CI=true`.
    use std::sync::Arc;

    use sqlx::Row as _;

    use super::*;
    use crate::campaign::model::CampaignStatus;
    use crate::store::campaign::CampaignStore;

    const T0: i64 = 1_800_000_000_000_000;
    const DAY_US: i64 = 86_400_000_000;

    async fn sqlite() -> SqlStore {
        SqlStore::open_sqlite(std::path::Path::new(":memory:"))
            .await
            .expect("sqlite")
    }

    /// A fresh PostgreSQL database (None: not configured; a failure under CI).
    async fn postgres() -> Option<String> {
        use sqlx::Connection as _;
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let Some(url) = std::env::var("CALLPLANE_TEST_PG")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            assert!(!in_ci, "CALLPLANE_TEST_PG is required under CI=true");
            eprintln!("SKIPPED: PostgreSQL dial tests (CALLPLANE_TEST_PG is not set)");
            return None;
        };
        let mut admin = sqlx::postgres::PgConnection::connect(&url)
            .await
            .expect("PostgreSQL reachable");
        let name = format!(
            "cp_test_{}_{}",
            crate::clock::unix_us() / 1_000_000,
            &crate::store::new_id("x")[2..]
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
        Some(format!("{base}/{name}"))
    }

    async fn stores() -> Vec<(&'static str, SqlStore)> {
        let mut v = vec![("sqlite", sqlite().await)];
        if let Some(url) = postgres().await {
            v.push(("postgres", SqlStore::connect(&url).await.expect("pg store")));
        }
        v
    }

    struct Seed {
        tenant: String,
        campaign: String,
        contacts: Vec<String>,
    }

    /// A tenant with a running campaign and `phones` queued, due at T0, in order.
    async fn seed(s: &SqlStore, phones: &[&str], max_concurrent: i64, cps_milli: i64) -> Seed {
        let tenant = crate::store::new_id("ten");
        sqlx::query("INSERT INTO tenant (id, name, created_at_us) VALUES ($1, $2, $3)")
            .bind(&tenant)
            .bind(&tenant)
            .bind(T0)
            .execute(&s.pool)
            .await
            .expect("tenant");
        let campaign = add_campaign(s, &tenant, max_concurrent, cps_milli).await;
        let contacts = add_contacts(s, &tenant, &campaign, phones).await;
        Seed {
            tenant,
            campaign,
            contacts,
        }
    }

    async fn add_campaign(s: &SqlStore, tenant: &str, max_concurrent: i64, cps: i64) -> String {
        let id = crate::store::new_id("cmp");
        sqlx::query(
            "INSERT INTO campaign (id, tenant_id, name, status, settings, priority, \
             max_concurrent, max_cps_milli, created_at_us, updated_at_us) \
             VALUES ($1, $2, 'c', 'running', '{}', 1, $3, $4, $5, $5)",
        )
        .bind(&id)
        .bind(tenant)
        .bind(max_concurrent)
        .bind(cps)
        .bind(T0)
        .execute(&s.pool)
        .await
        .expect("campaign");
        id
    }

    async fn add_contacts(
        s: &SqlStore,
        tenant: &str,
        campaign: &str,
        phones: &[&str],
    ) -> Vec<String> {
        let mut ids = Vec::new();
        let base: i64 = sqlx::query(
            "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) AS n FROM contact WHERE campaign_id = $1",
        )
        .bind(campaign)
        .fetch_one(&s.pool)
        .await
        .expect("seq")
        .get("n");
        for (i, phone) in phones.iter().enumerate() {
            let id = crate::store::new_id("ct");
            sqlx::query(
                "INSERT INTO contact (id, tenant_id, campaign_id, seq, phone, resolved_tz, \
                 variables, status, next_attempt_at_us, created_at_us, updated_at_us) \
                 VALUES ($1, $2, $3, $4, $5, 'UTC', '{\"k\":\"v\"}', 'queued', $6, $6, $6)",
            )
            .bind(&id)
            .bind(tenant)
            .bind(campaign)
            .bind(base + i as i64 + 1)
            .bind(*phone)
            .bind(T0)
            .execute(&s.pool)
            .await
            .expect("contact");
            ids.push(id);
        }
        ids
    }

    fn req(campaign: &str, node: &str, now: i64, max: u32) -> ClaimRequest {
        ClaimRequest {
            campaign_id: campaign.to_owned(),
            node_id: node.to_owned(),
            now_us: now,
            lease_us: 30_000_000,
            max,
            tenant_max_concurrent: None,
            number_cap: 3,
            number_cap_window_us: DAY_US,
        }
    }

    /// `rounds` claims 1 µs apart (a claim takes one contact per calls/s token, burst 1),
    /// merged.
    async fn claim_rounds(s: &SqlStore, r: &ClaimRequest, rounds: i64) -> Claim {
        let mut all = Claim::default();
        for k in 0..rounds {
            let mut r = r.clone();
            r.now_us += k;
            let c = s.claim_contacts(&r).await.expect("claim");
            all.claimed.extend(c.claimed);
            all.suppressed.extend(c.suppressed);
            all.capped.extend(c.capped);
        }
        all
    }

    async fn dialing(s: &SqlStore, campaign: &str) -> i64 {
        sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM contact \
             WHERE campaign_id = $1 AND status = 'dialing'",
        )
        .bind(campaign)
        .fetch_one(&s.pool)
        .await
        .expect("count")
        .get::<i64, _>("n")
    }

    fn phones(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("+1202555{i:04}")).collect()
    }

    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[tokio::test]
    async fn a_claim_leases_due_contacts_in_order_up_to_max_concurrent() {
        for (db, s) in stores().await {
            let p = phones(5);
            let seed = seed(&s, &refs(&p), 3, 1_000_000_000).await;
            let claim = claim_rounds(&s, &req(&seed.campaign, "node_a", T0, 10), 10).await;
            assert_eq!(claim.claimed.len(), 3, "{db}: max_concurrent 3");
            let ids: Vec<&str> = claim.claimed.iter().map(|(c, _)| c.id.as_str()).collect();
            assert_eq!(ids, refs(&seed.contacts[..3]), "{db}: by seq");
            for (c, n) in &claim.claimed {
                assert_eq!(*n, 1);
                assert_eq!(c.status, ContactStatus::Dialing);
                assert_eq!(c.lease_owner.as_deref(), Some("node_a"));
                assert_eq!(c.lease_expires_at_us, Some(c.updated_at_us + 30_000_000));
                assert_eq!(c.variables.get("k").map(String::as_str), Some("v"));
            }
            // Full: nothing more, whichever node asks.
            let again = s
                .claim_contacts(&req(&seed.campaign, "node_b", T0 + 100, 10))
                .await
                .expect("claim");
            assert!(again.claimed.is_empty(), "{db}");
            assert_eq!(dialing(&s, &seed.campaign).await, 3, "{db}");
            // A campaign that is not running gives nothing.
            sqlx::query("UPDATE campaign SET status = 'paused' WHERE id = $1")
                .bind(&seed.campaign)
                .execute(&s.pool)
                .await
                .expect("pause");
            let (c, n) = &claim.claimed[0];
            assert!(
                s.end_attempt(&end(c, *n, ContactStatus::Completed, T0 + 2))
                    .await
                    .expect("end")
            );
            let paused = s
                .claim_contacts(&req(&seed.campaign, "node_a", T0 + 3, 10))
                .await
                .expect("claim");
            assert_eq!(paused, Claim::default(), "{db}: paused");
            let _ = CampaignStatus::Paused;
        }
    }

    fn end(c: &Contact, n: u32, status: ContactStatus, at: i64) -> AttemptEnd {
        AttemptEnd {
            contact_id: c.id.clone(),
            attempt: n,
            outcome: "answered".to_owned(),
            rule: "answered: completed".to_owned(),
            status,
            next_attempt_at_us: None,
            trunk_index: 0,
            reason_code: "answered".to_owned(),
            reason: "answered".to_owned(),
            at_us: at,
        }
    }

    #[tokio::test]
    async fn the_tenant_limit_holds_across_its_campaigns() {
        for (db, s) in stores().await {
            let p = phones(6);
            let seed = seed(&s, &refs(&p[..3]), 10, 1_000_000_000).await;
            let other = add_campaign(&s, &seed.tenant, 10, 1_000_000_000).await;
            add_contacts(&s, &seed.tenant, &other, &refs(&p[3..])).await;
            let mut r = req(&seed.campaign, "n", T0, 10);
            r.tenant_max_concurrent = Some(4);
            let a = claim_rounds(&s, &r, 5).await;
            assert_eq!(a.claimed.len(), 3, "{db}");
            r.campaign_id = other.clone();
            r.now_us += 10;
            let b = claim_rounds(&s, &r, 5).await;
            assert_eq!(b.claimed.len(), 1, "{db}: 4 - 3 live");
        }
    }

    #[tokio::test]
    async fn calls_per_second_is_a_gcra_shared_by_every_claimer() {
        for (db, s) in stores().await {
            let p = phones(5);
            // 2 calls/s: one every 500 ms, burst 1.
            let seed = seed(&s, &refs(&p), 10, 2000).await;
            let first = s
                .claim_contacts(&req(&seed.campaign, "a", T0, 5))
                .await
                .expect("claim");
            assert_eq!(first.claimed.len(), 1, "{db}: burst 1");
            let early = s
                .claim_contacts(&req(&seed.campaign, "b", T0 + 499_999, 5))
                .await
                .expect("claim");
            assert!(early.claimed.is_empty(), "{db}");
            assert_eq!(early.cps_next_at_us, Some(T0 + 500_000), "{db}");
            let on_time = s
                .claim_contacts(&req(&seed.campaign, "b", T0 + 500_000, 5))
                .await
                .expect("claim");
            assert_eq!(on_time.claimed.len(), 1, "{db}");
            // Over 10 s of claims every 100 ms, 2/s: 20 (+1 for the first instant) at most.
            let mut total = 2;
            let mut t = T0 + 600_000;
            let more = phones(40)
                .into_iter()
                .map(|x| x.replace("+1202", "+1303"))
                .collect::<Vec<_>>();
            add_contacts(&s, &seed.tenant, &seed.campaign, &refs(&more)).await;
            sqlx::query("UPDATE campaign SET max_concurrent = 1000 WHERE id = $1")
                .bind(&seed.campaign)
                .execute(&s.pool)
                .await
                .expect("raise");
            while t <= T0 + 10_000_000 {
                total += s
                    .claim_contacts(&req(&seed.campaign, "c", t, 5))
                    .await
                    .expect("claim")
                    .claimed
                    .len();
                t += 100_000;
            }
            assert_eq!(total, 21, "{db}: 2/s over 10 s");
        }
    }

    #[tokio::test]
    async fn suppressed_numbers_are_never_leased_and_the_number_cap_defers() {
        for (db, s) in stores().await {
            let seed = seed(&s, &["+12025550001", "+12025550002"], 10, 1_000_000_000).await;
            sqlx::query(
                "INSERT INTO suppression (tenant_id, number, reason, created_at_us) \
                 VALUES ($1, '+12025550001', 'asked', $2)",
            )
            .bind(&seed.tenant)
            .bind(T0)
            .execute(&s.pool)
            .await
            .expect("suppress");
            // The number was called 3 times in the last day by another campaign.
            let other = add_campaign(&s, &seed.tenant, 10, 1_000_000_000).await;
            let dup = add_contacts(&s, &seed.tenant, &other, &["+12025550002"]).await;
            for (n, at) in [
                (1, T0 - 3_000_000),
                (2, T0 - 2_000_000),
                (3, T0 - 1_000_000),
            ] {
                sqlx::query(
                    "INSERT INTO contact_attempt (contact_id, attempt, tenant_id, campaign_id, \
                     phone, node_id, claimed_at_us, ended_at_us) \
                     VALUES ($1, $2, $3, $4, '+12025550002', 'x', $5, $5)",
                )
                .bind(&dup[0])
                .bind(n)
                .bind(&seed.tenant)
                .bind(&other)
                .bind(at)
                .execute(&s.pool)
                .await
                .expect("attempt");
            }
            let claim = claim_rounds(&s, &req(&seed.campaign, "n", T0, 10), 3).await;
            assert!(claim.claimed.is_empty(), "{db}: {claim:?}");
            assert_eq!(claim.suppressed.len(), 1, "{db}");
            assert_eq!(claim.suppressed[0].reason.as_deref(), Some("asked"));
            assert_eq!(claim.capped.len(), 1, "{db}");
            let capped = &claim.capped[0];
            assert_eq!(capped.status, ContactStatus::Queued);
            assert_eq!(capped.reason_code.as_deref(), Some("number_cap"));
            assert_eq!(capped.next_attempt_at_us, T0 - 3_000_000 + DAY_US, "{db}");
            // Once the oldest attempt left the window, it is dialed.
            let later = s
                .claim_contacts(&req(&seed.campaign, "n", T0 - 3_000_000 + DAY_US, 10))
                .await
                .expect("claim");
            assert_eq!(later.claimed.len(), 1, "{db}");
            let status: String = sqlx::query("SELECT status FROM contact WHERE id = $1")
                .bind(&seed.contacts[0])
                .fetch_one(&s.pool)
                .await
                .expect("row")
                .get("status");
            assert_eq!(status, "suppressed");
        }
    }

    #[tokio::test]
    async fn an_attempt_ends_once_and_only_as_the_open_attempt() {
        for (db, s) in stores().await {
            let seed = seed(&s, &["+12025550001"], 10, 1_000_000_000).await;
            let claim = s
                .claim_contacts(&req(&seed.campaign, "n", T0, 1))
                .await
                .expect("claim");
            let (c, n) = claim.claimed[0].clone();
            s.set_attempt_call(&c.id, n, "call_1", Some("trk_1"))
                .await
                .expect("set call");
            let (bc, ba) = s
                .attempt_by_call("call_1")
                .await
                .expect("by call")
                .expect("open");
            assert_eq!((bc.id.as_str(), ba.attempt), (c.id.as_str(), 1));
            assert_eq!(ba.trunk_id.as_deref(), Some("trk_1"));
            let mut retry = end(&c, n, ContactStatus::Queued, T0 + 5);
            retry.outcome = "busy".to_owned();
            retry.next_attempt_at_us = Some(T0 + 1_000_000);
            retry.trunk_index = 1;
            assert!(s.end_attempt(&retry).await.expect("end"), "{db}");
            // Twice, or a stale attempt number: nothing changes.
            assert!(!s.end_attempt(&retry).await.expect("again"), "{db}");
            let mut stale = end(&c, 7, ContactStatus::Failed, T0 + 6);
            stale.outcome = "rejected".to_owned();
            assert!(!s.end_attempt(&stale).await.expect("stale"), "{db}");
            assert!(s.attempt_by_call("call_1").await.expect("q").is_none());
            // Not due before its retry time, then attempt 2 on trunk 1.
            let early = s
                .claim_contacts(&req(&seed.campaign, "n", T0 + 999_999, 1))
                .await
                .expect("claim");
            assert!(early.claimed.is_empty(), "{db}");
            let next = s
                .claim_contacts(&req(&seed.campaign, "n", T0 + 1_000_000, 1))
                .await
                .expect("claim");
            let (c2, n2) = &next.claimed[0];
            assert_eq!((*n2, c2.trunk_index), (2, 1), "{db}");
            assert_eq!(c2.last_outcome.as_deref(), Some("busy"));
            // Abandoned (window closed): attempt 2 is given back, not counted.
            s.abandon_attempt(
                &c2.id,
                2,
                T0 + 9_000_000,
                "window",
                "closed",
                T0 + 1_000_001,
            )
            .await
            .expect("abandon");
            let row = sqlx::query(
                "SELECT status, attempts, next_attempt_at_us, reason_code, lease_owner \
                 FROM contact WHERE id = $1",
            )
            .bind(&c.id)
            .fetch_one(&s.pool)
            .await
            .expect("row");
            assert_eq!(row.get::<String, _>("status"), "queued", "{db}");
            assert_eq!(row.get::<i64, _>("attempts"), 1, "{db}");
            assert_eq!(row.get::<i64, _>("next_attempt_at_us"), T0 + 9_000_000);
            assert_eq!(row.get::<String, _>("reason_code"), "window");
            assert_eq!(row.get::<Option<String>, _>("lease_owner"), None);
            let kept: i64 = sqlx::query(
                "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM contact_attempt WHERE contact_id = $1",
            )
            .bind(&c.id)
            .fetch_one(&s.pool)
            .await
            .expect("count")
            .get("n");
            assert_eq!(kept, 1, "{db}: only the ended attempt 1 remains");
            // Ending an abandoned attempt changes nothing.
            assert!(
                !s.end_attempt(&end(c2, 2, ContactStatus::Completed, T0 + 2_000_000))
                    .await
                    .expect("end")
            );
        }
    }

    #[tokio::test]
    async fn expired_leases_are_listed_with_their_attempt_until_renewed() {
        for (db, s) in stores().await {
            let seed = seed(&s, &["+12025550001", "+12025550002"], 10, 1_000_000_000).await;
            let claim = claim_rounds(&s, &req(&seed.campaign, "node_a", T0, 2), 2).await;
            assert_eq!(claim.claimed.len(), 2);
            let lease_end = T0 + 30_000_000;
            assert!(
                s.expired_leases(lease_end, 10).await.expect("q").is_empty(),
                "{db}"
            );
            s.renew_leases("node_a", &[seed.contacts[0].clone()], T0 + 60_000_000)
                .await
                .expect("renew");
            // Another node cannot renew what it does not hold.
            s.renew_leases("node_b", &[seed.contacts[1].clone()], T0 + 60_000_000)
                .await
                .expect("renew");
            let expired = s.expired_leases(lease_end + 2, 10).await.expect("q");
            assert_eq!(expired.len(), 1, "{db}");
            let (c, a) = &expired[0];
            assert_eq!(c.id, seed.contacts[1]);
            assert_eq!((a.attempt, a.node_id.as_str()), (1, "node_a"));
            assert_eq!(a.claimed_at_us, T0 + 1);
            // Expired leases still count as live until settled.
            sqlx::query("UPDATE campaign SET max_concurrent = 2 WHERE id = $1")
                .bind(&seed.campaign)
                .execute(&s.pool)
                .await
                .expect("limit");
            add_contacts(&s, &seed.tenant, &seed.campaign, &["+12025550003"]).await;
            let full = s
                .claim_contacts(&req(&seed.campaign, "node_b", lease_end + 3, 2))
                .await
                .expect("claim");
            assert!(full.claimed.is_empty(), "{db}");
        }
    }

    /// Several nodes (stores with their own pools) claiming one PostgreSQL campaign at once
    /// never lease more than its max_concurrent, and never one contact twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claimers_on_postgres_never_exceed_max_concurrent() {
        let Some(url) = postgres().await else {
            return;
        };
        let first = SqlStore::connect(&url).await.expect("store");
        let p = phones(200);
        let seed = seed(&first, &refs(&p), 7, 1_000_000_000).await;
        let mut nodes = vec![Arc::new(first)];
        for _ in 0..2 {
            nodes.push(Arc::new(SqlStore::connect(&url).await.expect("store")));
        }
        let mut tasks = Vec::new();
        for i in 0..9 {
            let s = nodes[i % nodes.len()].clone();
            let campaign = seed.campaign.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for k in 0..20 {
                    let now = T0 + k;
                    let claim = s
                        .claim_contacts(&req(&campaign, &format!("node{i}"), now, 3))
                        .await
                        .expect("claim");
                    mine.extend(claim.claimed.into_iter().map(|(c, _)| c.id));
                }
                mine
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        assert_eq!(all.len(), 7, "exactly max_concurrent leased: {all:?}");
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 7, "no contact leased twice");
        assert_eq!(dialing(&nodes[0], &seed.campaign).await, 7);
    }
}
