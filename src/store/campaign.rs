//! The campaign half of the store: campaigns, their contacts (the dial queue with leases),
//! attempts, the suppression list and tenant limits. [`CampaignStore`] is a supertrait of
//! [`Store`](super::Store), so `Arc<dyn Store>` has these methods too.
//!
//! Crash safety rests on three rules:
//! - A contact is claimed in one transaction that checks the campaign's and the tenant's limits
//!   against the database (live = contacts `dialing`, all nodes, an expired lease included
//!   until the worker settles it: its call may still be up), takes
//!   the due contacts (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one writer), leases
//!   them to the node and opens attempt `n` (`attempts + 1`) for each.
//! - The attempt's call is created with the idempotency key [`attempt_key`], so a replay after a
//!   crash finds the same call and dials nobody twice.
//! - An attempt ends ([`CampaignStore::end_attempt`]) only if it is still the contact's current
//!   attempt: a late or repeated outcome changes nothing.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{Page, StoreFuture};
use crate::campaign::model::{CampaignSettings, CampaignStatus, ContactStatus};

/// The idempotency key of a contact's attempt `n`: `campaign:<contact id>:<n>`.
pub fn attempt_key(contact_id: &str, attempt: u32) -> String {
    format!("campaign:{contact_id}:{attempt}")
}

/// A campaign row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Campaign {
    /// `cmp_` + 24 hex digits.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Where it stands.
    pub status: CampaignStatus,
    /// What the client set.
    pub settings: CampaignSettings,
    /// The script version its calls run (pinned).
    pub script_version: Option<i64>,
    /// Created.
    pub created_at_us: i64,
    /// Last changed.
    pub updated_at_us: i64,
    /// First started.
    pub started_at_us: Option<i64>,
    /// Completed or cancelled.
    pub ended_at_us: Option<i64>,
}

/// A new campaign ([`CampaignStore::create_campaign`]).
#[derive(Debug, Clone)]
pub struct NewCampaign {
    /// Its tenant.
    pub tenant_id: String,
    /// Its settings (validated by the API).
    pub settings: CampaignSettings,
    /// The pinned script version.
    pub script_version: Option<i64>,
    /// Creation time.
    pub at_us: i64,
}

/// A contact to insert ([`CampaignStore::insert_contacts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewContact {
    /// E.164.
    pub phone: String,
    /// A name.
    pub name: Option<String>,
    /// The contact's own zone (as given; None: derived).
    pub timezone: Option<String>,
    /// The zone in force (given, derived from the number, or the campaign default).
    pub resolved_tz: String,
    /// Script variables.
    pub variables: BTreeMap<String, String>,
    /// Higher first. Default 0.
    pub priority: i64,
    /// The upload line it came from (CSV) or its index (JSON), for reports.
    pub line: Option<i64>,
    /// Initial status: `queued`, or `suppressed` when the number is on the do-not-call list.
    pub status: ContactStatus,
    /// Why it is in that status (`suppressed`: the list's reason).
    pub reason: Option<String>,
}

/// What [`CampaignStore::insert_contacts`] did with one row, in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Inserted with this id.
    New(String),
    /// The campaign already has this number (this id); nothing inserted.
    Duplicate(String),
}

/// A contact row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contact {
    /// `ct_` + 24 hex digits.
    pub id: String,
    /// Its campaign.
    pub campaign_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// E.164.
    pub phone: String,
    /// A name.
    pub name: Option<String>,
    /// Its own zone as given.
    pub timezone: Option<String>,
    /// The zone in force.
    pub resolved_tz: String,
    /// Script variables.
    pub variables: BTreeMap<String, String>,
    /// Higher first.
    pub priority: i64,
    /// Where it stands.
    pub status: ContactStatus,
    /// Attempts opened so far.
    pub attempts: u32,
    /// When it is due (queued).
    pub next_attempt_at_us: i64,
    /// The last attempt's outcome.
    pub last_outcome: Option<String>,
    /// A short code of why it is in its status: `due`, `window`, `retry`, `number_cap`,
    /// `suppressed`, `opt_out`, a rule name...
    pub reason_code: Option<String>,
    /// The sentence behind `reason_code` (e.g. `outside calling window until 2026-12-04T08:00
    /// America/Chicago`).
    pub reason: Option<String>,
    /// The index into the campaign's trunks for the next attempt.
    pub trunk_index: u32,
    /// The node holding its lease.
    pub lease_owner: Option<String>,
    /// When that lease expires (Unix µs).
    pub lease_expires_at_us: Option<i64>,
    /// The upload line.
    pub line: Option<i64>,
    /// Inserted.
    pub created_at_us: i64,
    /// Last changed.
    pub updated_at_us: i64,
}

/// One attempt of a contact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// Its contact.
    pub contact_id: String,
    /// 1, 2, ...
    pub attempt: u32,
    /// Its call (set once the call row exists).
    pub call_id: Option<String>,
    /// The trunk it used.
    pub trunk_id: Option<String>,
    /// The node that claimed it.
    pub node_id: String,
    /// Claimed.
    pub claimed_at_us: i64,
    /// Ended.
    pub ended_at_us: Option<i64>,
    /// The call's outcome.
    pub outcome: Option<String>,
    /// The rule that fired ([`crate::campaign::retry::RetryDecision::rule`]).
    pub rule: Option<String>,
}

/// A claim ([`CampaignStore::claim_contacts`]).
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// The campaign (must be `running`).
    pub campaign_id: String,
    /// The claiming node.
    pub node_id: String,
    /// Now (Unix µs).
    pub now_us: i64,
    /// Lease length (µs): `lease_expires_at_us = now_us + lease_us`.
    pub lease_us: i64,
    /// At most this many.
    pub max: u32,
    /// The tenant's concurrency limit across all its campaigns and nodes.
    pub tenant_max_concurrent: Option<u32>,
    /// Per-number cap across the tenant's campaigns: at most `number_cap` attempts per
    /// number within `number_cap_window_us` before now.
    pub number_cap: u32,
    /// The cap's window (µs).
    pub number_cap_window_us: i64,
}

/// What a claim did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claim {
    /// Leased contacts with their new attempt number, best first.
    pub claimed: Vec<(Contact, u32)>,
    /// Due contacts found on the suppression list: now `suppressed`.
    pub suppressed: Vec<Contact>,
    /// Due contacts over the per-number cap: deferred (queued, `reason_code` `number_cap`)
    /// until the oldest counted attempt leaves the window.
    pub capped: Vec<Contact>,
    /// Nothing was claimed because a calls/s limit (campaign or tenant, across nodes) has no
    /// token now: the earliest time one comes (Unix µs). None otherwise, or when a limit of 0
    /// calls/s means never.
    pub cps_next_at_us: Option<i64>,
}

/// How an attempt ended ([`CampaignStore::end_attempt`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptEnd {
    /// The contact.
    pub contact_id: String,
    /// Its attempt number.
    pub attempt: u32,
    /// The outcome (`answered`, `busy`...).
    pub outcome: String,
    /// The rule that fired.
    pub rule: String,
    /// The contact's next status.
    pub status: ContactStatus,
    /// When it is due again (queued).
    pub next_attempt_at_us: Option<i64>,
    /// Trunk index for the next attempt.
    pub trunk_index: u32,
    /// Reason code and sentence.
    pub reason_code: String,
    /// The sentence.
    pub reason: String,
    /// Now (Unix µs).
    pub at_us: i64,
}

/// Counts behind `GET /v1/campaigns/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CampaignCounts {
    /// Contacts by status name (every status present, 0 when none).
    pub by_status: BTreeMap<String, i64>,
    /// Ended attempts by outcome.
    pub by_outcome: BTreeMap<String, i64>,
    /// Queued contacts deferred for their calling window now (`reason_code` `window` and
    /// `next_attempt_at_us` in the future).
    pub outside_window: i64,
    /// The earliest of their `next_attempt_at_us`.
    pub next_window_opens_at_us: Option<i64>,
    /// Attempts answered.
    pub answered: i64,
    /// Sum of answered calls' talk time (ms).
    pub talk_ms_total: i64,
    /// Attempts claimed in the last 60 s (for calls/s).
    pub attempts_last_minute: i64,
}

/// One row of `GET /v1/campaigns/{id}/results`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRow {
    /// The contact.
    pub contact: Contact,
    /// Its attempts, oldest first, each with its call's result (`call.result`) and talk time.
    pub attempts: Vec<ResultAttempt>,
}

/// An attempt in a [`ResultRow`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultAttempt {
    /// The attempt.
    pub attempt: Attempt,
    /// Its call's talk time (ms).
    pub talk_ms: Option<i64>,
    /// Its call's result (variables the script collected).
    pub result: Option<Value>,
}

/// A suppressed number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suppression {
    /// E.164.
    pub number: String,
    /// Why.
    pub reason: Option<String>,
    /// `api`, `csv` or `opt_out`.
    pub source: String,
    /// Added.
    pub created_at_us: i64,
}

/// A tenant's campaign limits (`GET|PUT /v1/settings/limits`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct TenantLimits {
    /// Live campaign calls at most (None: only the system limit).
    pub max_concurrent: Option<u32>,
    /// New campaign calls per second at most (None: unlimited).
    pub max_cps: Option<f64>,
    /// Attempts per number per window across the tenant's campaigns. Default 3.
    pub number_cap: u32,
    /// That window, seconds. Default 86400.
    pub number_cap_window_s: u32,
}

impl Default for TenantLimits {
    fn default() -> TenantLimits {
        TenantLimits {
            max_concurrent: None,
            max_cps: None,
            number_cap: 3,
            number_cap_window_s: 86_400,
        }
    }
}

/// One bucket of [`CampaignStore::campaign_activity`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityBucket {
    /// Its start, µs since the epoch (a multiple of the bucket width).
    pub start_us: i64,
    /// Attempts started in it.
    pub started: i64,
    /// Attempts that ended in it, by outcome.
    pub ended: BTreeMap<String, i64>,
}

/// The campaign methods of the store (implemented for both databases by `SqlStore`).
pub trait CampaignStore: Send + Sync {
    /// Creates a campaign in `draft`.
    fn create_campaign<'a>(&'a self, c: &'a NewCampaign) -> StoreFuture<'a, Campaign>;
    /// One campaign of a tenant.
    fn get_campaign<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, Campaign>;
    /// A campaign by id whatever its tenant (the worker).
    fn get_campaign_any_tenant<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Campaign>;
    /// A tenant's campaigns, newest first, `limit` at a time after `cursor`.
    fn list_campaigns<'a>(
        &'a self,
        tenant: &'a str,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Page<Campaign>>;
    /// Campaigns in these statuses, all tenants (the worker: running, scheduled).
    fn campaigns_in<'a>(&'a self, statuses: &'a [CampaignStatus])
    -> StoreFuture<'a, Vec<Campaign>>;
    /// Replaces the settings (and the pinned script version) unless the campaign is running:
    /// `Conflict` then.
    fn update_campaign<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        settings: &'a CampaignSettings,
        script_version: Option<i64>,
        at_us: i64,
    ) -> StoreFuture<'a, Campaign>;
    /// Deletes a campaign and its contacts and attempts unless it is running (`Conflict`).
    fn delete_campaign<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, ()>;
    /// Moves a campaign to `to` if its status is one of `from` (else `Conflict` naming the
    /// current status); sets `started_at_us`/`ended_at_us` on the way.
    fn set_campaign_status<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        from: &'a [CampaignStatus],
        to: CampaignStatus,
        at_us: i64,
    ) -> StoreFuture<'a, Campaign>;

    /// Inserts contacts in one transaction; a number the campaign has is a duplicate.
    fn insert_contacts<'a>(
        &'a self,
        tenant: &'a str,
        campaign_id: &'a str,
        contacts: &'a [NewContact],
        at_us: i64,
    ) -> StoreFuture<'a, Vec<Inserted>>;
    /// A campaign's contacts (optionally of one status) in insertion order after `cursor`.
    fn list_contacts<'a>(
        &'a self,
        campaign_id: &'a str,
        status: Option<ContactStatus>,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Page<Contact>>;
    /// One contact with its attempts (oldest first).
    fn get_contact<'a>(
        &'a self,
        campaign_id: &'a str,
        id: &'a str,
    ) -> StoreFuture<'a, (Contact, Vec<Attempt>)>;
    /// Queued contacts due before `until_us` (for the window sweep and the preview), by
    /// priority then due time, `limit` at most after contact id `after`.
    fn due_contacts<'a>(
        &'a self,
        campaign_id: &'a str,
        until_us: i64,
        after: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<Contact>>;
    /// Defers queued contacts (not leased): `next_attempt_at_us`, `reason_code`, `reason`.
    fn defer_contacts<'a>(
        &'a self,
        deferrals: &'a [(String, i64, String, String)],
        at_us: i64,
    ) -> StoreFuture<'a, ()>;
    /// Claims due contacts (see the module docs).
    fn claim_contacts<'a>(&'a self, req: &'a ClaimRequest) -> StoreFuture<'a, Claim>;
    /// Gives a claimed attempt back without a call (its window closed, a refusal before the
    /// call row existed): the attempt is deleted, `attempts` restored, the lease dropped, the
    /// contact queued until `next_attempt_at_us` with the reason.
    fn abandon_attempt<'a>(
        &'a self,
        contact_id: &'a str,
        attempt: u32,
        next_attempt_at_us: i64,
        reason_code: &'a str,
        reason: &'a str,
        at_us: i64,
    ) -> StoreFuture<'a, ()>;
    /// Records the attempt's call and trunk.
    fn set_attempt_call<'a>(
        &'a self,
        contact_id: &'a str,
        attempt: u32,
        call_id: &'a str,
        trunk_id: Option<&'a str>,
    ) -> StoreFuture<'a, ()>;
    /// Ends an attempt and moves its contact on (drops the lease). Returns false, changing
    /// nothing, when it is not the contact's open attempt (already ended, or a stale node).
    fn end_attempt<'a>(&'a self, end: &'a AttemptEnd) -> StoreFuture<'a, bool>;
    /// Extends the leases `node` holds on these contacts to `until_us`.
    fn renew_leases<'a>(
        &'a self,
        node: &'a str,
        contact_ids: &'a [String],
        until_us: i64,
    ) -> StoreFuture<'a, ()>;
    /// Contacts `dialing` whose lease expired before `now_us` (any node), with their open
    /// attempt: for the worker to settle from their call's timeline.
    fn expired_leases<'a>(
        &'a self,
        now_us: i64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<(Contact, Attempt)>>;
    /// The open attempt whose call is `call_id`, with its contact.
    fn attempt_by_call<'a>(
        &'a self,
        call_id: &'a str,
    ) -> StoreFuture<'a, Option<(Contact, Attempt)>>;
    /// Counts for the campaign's progress at `now_us`.
    fn campaign_counts<'a>(
        &'a self,
        campaign_id: &'a str,
        now_us: i64,
    ) -> StoreFuture<'a, CampaignCounts>;
    /// Attempts of a campaign per time bucket in `[from_us, to_us)`: how many started
    /// (claimed) in each and how many ended, by outcome. Only buckets with something in them,
    /// oldest first; a bucket is `bucket_us` wide, aligned to multiples of it since the epoch.
    fn campaign_activity<'a>(
        &'a self,
        campaign_id: &'a str,
        bucket_us: i64,
        from_us: i64,
        to_us: i64,
    ) -> StoreFuture<'a, Vec<ActivityBucket>>;
    /// Results, one row per contact in insertion order after `cursor`.
    fn campaign_results<'a>(
        &'a self,
        campaign_id: &'a str,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Page<ResultRow>>;

    /// The tenant's do-not-call list, by number after `cursor`.
    fn list_suppressions<'a>(
        &'a self,
        tenant: &'a str,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Page<Suppression>>;
    /// Adds numbers (idempotent: an existing entry keeps its reason and source), and moves
    /// the tenant's queued contacts with these numbers to `suppressed`. Returns how many
    /// contacts moved.
    fn suppress<'a>(
        &'a self,
        tenant: &'a str,
        entries: &'a [(String, Option<String>)],
        source: &'a str,
        at_us: i64,
    ) -> StoreFuture<'a, i64>;
    /// Removes a number (NotFound when absent).
    fn delete_suppression<'a>(&'a self, tenant: &'a str, number: &'a str) -> StoreFuture<'a, ()>;
    /// Which of `numbers` are suppressed.
    fn suppressed_among<'a>(
        &'a self,
        tenant: &'a str,
        numbers: &'a [String],
    ) -> StoreFuture<'a, Vec<String>>;

    /// The tenant's limits (defaults when never set).
    fn tenant_limits<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, TenantLimits>;
    /// Sets them.
    fn set_tenant_limits<'a>(
        &'a self,
        tenant: &'a str,
        limits: &'a TenantLimits,
        at_us: i64,
    ) -> StoreFuture<'a, TenantLimits>;
}
