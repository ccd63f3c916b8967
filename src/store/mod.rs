//! The control plane's store: the only module that speaks SQL.
//!
//! [`Store`] is the contract the API, the event bus and the webhook outbox use. One
//! implementation, [`SqlStore`], serves both databases through sqlx's `Any` driver: the
//! embedded default is SQLite (a file in the data directory, WAL mode), PostgreSQL is chosen
//! with a `postgres://` URL. The SQL is one text for both dialects (numbered `$n` parameters,
//! `BIGINT` integers, `TEXT` JSON, no booleans); what differs lives in the per-dialect
//! migrations (`migrations/sqlite`, `migrations/postgres`), run at [`SqlStore::connect`], and in
//! [`Backend`]-specific branches that say why they differ. One conformance suite
//! (`tests/store_conformance.rs`) runs against both.
//!
//! Times are microseconds since the Unix epoch (`*_us`), as in [`crate::engine::CallEvent`].
//! JSON values are stored as text and carried here as [`serde_json::Value`].
//!
//! A call's status fields are derived from its events only: [`Store::append_event`] folds each
//! event into the call row with [`derive::apply`] in the transaction that stores the event and
//! queues its webhook deliveries (the outbox).

pub mod campaign;
pub mod derive;
mod sql;

use std::fmt;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use sql::{Backend, SqlStore, redact};

use crate::trunk::TrunkSettings;

/// A new row id: `<prefix>_` + 24 lowercase hex digits (96 random bits from the OS), e.g.
/// `new_id("call")` → `call_3f9a…`. 96 bits make a collision between two ids of one kind
/// negligible (birthday bound ~2^48 rows), so ids are generated here, not by the database, and
/// are the same on SQLite and PostgreSQL.
///
/// # Panics
/// Only when the operating system's random source fails (`getrandom`), which leaves no safe
/// way to make an unguessable id.
pub fn new_id(prefix: &str) -> String {
    use std::fmt::Write as _;
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    let mut id = String::with_capacity(prefix.len() + 1 + 24);
    id.push_str(prefix);
    id.push('_');
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// The result of a store operation.
pub type Result<T> = std::result::Result<T, StoreError>;

/// A boxed future returned by [`Store`] methods (the trait is object-safe: `Arc<dyn Store>`).
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such row (for this tenant).
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write (a duplicate name or key).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A row read back did not decode (a bad enum value or JSON text).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A migration failed or the database has migrations this build does not know.
    #[error("migration: {0}")]
    Migration(String),
    /// The database refused a value (PostgreSQL: SQLSTATE class 22, e.g. a NUL byte in text):
    /// retrying the same write cannot succeed.
    #[error("invalid value: {0}")]
    Invalid(String),
    /// The database refused or is unreachable.
    #[error("database: {0}")]
    Database(String),
}

/// The role an API key carries (docs/api.md has the permission table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, keys of every role included.
    Owner,
    /// Trunks, scripts, webhooks and keys below owner; everything an operator does.
    Admin,
    /// Places calls and runs campaigns; reads what an analyst reads.
    Operator,
    /// Reads everything (calls, events, recordings, trunks, scripts, webhooks).
    Analyst,
    /// Reads calls (and their events).
    Viewer,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 5] = [
        Role::Owner,
        Role::Admin,
        Role::Operator,
        Role::Analyst,
        Role::Viewer,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Analyst => "analyst",
            Role::Viewer => "viewer",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tenant: every other row belongs to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    /// `ten_` + 24 hex digits.
    pub id: String,
    /// A display name (unique).
    pub name: String,
    /// When it was created.
    pub created_at_us: i64,
}

/// An API key as stored: the secret itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// `key_` + 24 hex digits.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// What it may do.
    pub role: Role,
    /// A label.
    pub name: String,
    /// The first characters of the secret, to recognise it in a list.
    pub prefix: String,
    /// When it was created.
    pub created_at_us: i64,
    /// When it was revoked (it then authenticates nothing).
    pub revoked_at_us: Option<i64>,
}

/// A new API key (the caller generated the secret and hashed it).
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Its tenant.
    pub tenant_id: String,
    /// What it may do.
    pub role: Role,
    /// A label.
    pub name: String,
    /// The first characters of the secret.
    pub prefix: String,
    /// Lowercase hex SHA-256 of the whole secret (unique).
    pub secret_sha256: String,
}

/// A SIP trunk: where calls to numbers go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trunk {
    /// `trk_` + 24 hex digits.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Unique per tenant.
    pub name: String,
    /// `host:port` of the carrier's SIP server (an IP literal until DNS lands).
    pub address: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// Digest user name, when the carrier authenticates.
    pub username: Option<String>,
    /// Digest password: write-only in the API (never serialised), kept for the dialer.
    #[serde(skip)]
    pub password: Option<String>,
    /// The user part (or whole URI) of our From on calls through this trunk.
    pub from_user: Option<String>,
    /// Live campaign calls through this trunk at most (None: unlimited).
    pub max_concurrent: Option<u32>,
    /// New campaign calls per second through this trunk at most, in thousandths (None:
    /// unlimited).
    pub max_cps_milli: Option<u32>,
    /// Everything configured (#11), complete: the columns above are copied into it on read
    /// (`hosts` from `address` when empty, `transport`, `username`, `password`, `from_user`), so
    /// readers need only this. Its `password` is never serialised.
    pub settings: TrunkSettings,
    /// When it was created.
    pub created_at_us: i64,
    /// When it last changed.
    pub updated_at_us: i64,
}

/// What a trunk is created or replaced with.
#[derive(Debug, Clone, Default)]
pub struct TrunkInput {
    /// Unique per tenant.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// Digest user name.
    pub username: Option<String>,
    /// Digest password; on update `None` keeps the stored one.
    pub password: Option<String>,
    /// From user.
    pub from_user: Option<String>,
    /// Live campaign calls at most (None: unlimited).
    pub max_concurrent: Option<u32>,
    /// New campaign calls per second at most, in thousandths (None: unlimited).
    pub max_cps_milli: Option<u32>,
    /// Everything else configured (#11). Each value is stored once: `username`, `password`,
    /// `from_user` and `transport` go to their columns (a flat field above wins when both are
    /// set), the first of `hosts` to `address` when `address` is empty, and the rest to the
    /// `settings` JSON column without them.
    pub settings: TrunkSettings,
}

/// An inbound route: calls to `did` arriving through `trunk_id` run `script_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrunkRoute {
    /// Its tenant.
    pub tenant_id: String,
    /// The trunk the calls arrive through.
    pub trunk_id: String,
    /// The dialed number: E.164 (`+442071234567`) or a Request-URI user part; unique per tenant.
    pub did: String,
    /// The script to run (None: the node's default inbound).
    pub script_id: Option<String>,
    /// When it was created.
    pub created_at_us: i64,
}

/// Every trunk and route of every tenant: what the inbound router and the registrar load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrunkDirectory {
    /// Every trunk, by tenant then name.
    pub trunks: Vec<Trunk>,
    /// Every route, by tenant then DID.
    pub routes: Vec<TrunkRoute>,
}

/// A call script: its current version (older versions stay readable by number).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptRecord {
    /// `scr_` + 24 hex digits.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Unique per tenant.
    pub name: String,
    /// 1 at creation, +1 at each update.
    pub version: i64,
    /// The script JSON (docs/scripts.md), already validated by the caller.
    pub body: Value,
    /// When it was created.
    pub created_at_us: i64,
    /// When this version was written.
    pub updated_at_us: i64,
}

/// Which way a call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// We placed it.
    Outbound,
    /// A peer called us.
    Inbound,
}

impl Direction {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Where a call stands; derived from its events by [`derive::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Accepted by the API; nothing sent yet.
    Queued,
    /// `call.created` / `sip.invite_sent`: the INVITE is out (or an inbound INVITE is in).
    Dialing,
    /// `sip.ringing` / `sip.early_media`.
    Ringing,
    /// `sip.answered`: in conversation.
    Answered,
    /// `call.completed`.
    Completed,
    /// `call.failed`.
    Failed,
}

impl CallStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Dialing => "dialing",
            CallStatus::Ringing => "ringing",
            CallStatus::Answered => "answered",
            CallStatus::Completed => "completed",
            CallStatus::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<CallStatus> {
        [
            CallStatus::Queued,
            CallStatus::Dialing,
            CallStatus::Ringing,
            CallStatus::Answered,
            CallStatus::Completed,
            CallStatus::Failed,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    /// Whether the call has ended.
    pub fn is_final(self) -> bool {
        matches!(self, CallStatus::Completed | CallStatus::Failed)
    }
}

/// One call attempt. The fields after `request` are derived from the call's events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    /// `call_` + 24 hex digits.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Which way.
    pub direction: Direction,
    /// Callee URI (outbound) or our URI that was called (inbound).
    pub to_uri: String,
    /// Caller URI.
    pub from_uri: String,
    /// The trunk it went through.
    pub trunk_id: Option<String>,
    /// The script it ran.
    pub script_id: Option<String>,
    /// The version of that script it ran.
    pub script_version: Option<i64>,
    /// Its campaign (the campaigns issue fills this).
    pub campaign_id: Option<String>,
    /// The `Idempotency-Key` it was created with (unique per tenant).
    pub idempotency_key: Option<String>,
    /// What was asked (variables, record flag, ring timeout, inline script...), as given.
    pub request: Value,
    /// When the row was created (the API accepted the call or the INVITE arrived).
    pub created_at_us: i64,
    /// Derived: where it stands.
    pub status: CallStatus,
    /// Derived: how it ended (`answered`, `busy`... the engine's `Outcome` names).
    pub outcome: Option<String>,
    /// Derived: the final SIP status.
    pub sip_status: Option<i64>,
    /// Derived: its reason phrase.
    pub sip_reason: Option<String>,
    /// Derived: the Q.850 cause from a Reason header.
    pub q850_cause: Option<i64>,
    /// Derived: the SIP Call-ID.
    pub sip_call_id: Option<String>,
    /// Derived: when the INVITE went out or came in (`call.created`).
    pub started_at_us: Option<i64>,
    /// Derived: first 180/183.
    pub ringing_at_us: Option<i64>,
    /// Derived: the 200 OK (`sip.answered`).
    pub answered_at_us: Option<i64>,
    /// Derived: `call.completed` / `call.failed`.
    pub ended_at_us: Option<i64>,
    /// Derived: answered → BYE, from the final event's `duration_ms`.
    pub talk_ms: Option<i64>,
    /// Derived: what the call collected (digits, script variables), from the final event.
    pub result: Option<Value>,
    /// Derived: the engine's end reason and other final details.
    pub end_reason: Option<String>,
    /// The node that runs (or ran) the call: when that node stops, its live calls are ended.
    pub node_id: Option<String>,
}

/// A new call row ([`Store::create_call`]).
#[derive(Debug, Clone)]
pub struct NewCall {
    /// Its tenant.
    pub tenant_id: String,
    /// Which way.
    pub direction: Direction,
    /// Callee URI.
    pub to_uri: String,
    /// Caller URI.
    pub from_uri: String,
    /// Trunk.
    pub trunk_id: Option<String>,
    /// Script.
    pub script_id: Option<String>,
    /// Script version.
    pub script_version: Option<i64>,
    /// Campaign.
    pub campaign_id: Option<String>,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// What was asked.
    pub request: Value,
    /// Creation time.
    pub created_at_us: i64,
    /// The node that runs the call.
    pub node_id: Option<String>,
}

impl NewCall {
    /// An outbound call of `tenant_id` from `from_uri` to `to_uri`, with no trunk, script,
    /// campaign, idempotency key or node, and an empty request.
    pub fn outbound(
        tenant_id: impl Into<String>,
        to_uri: impl Into<String>,
        from_uri: impl Into<String>,
        created_at_us: i64,
    ) -> NewCall {
        NewCall {
            tenant_id: tenant_id.into(),
            direction: Direction::Outbound,
            to_uri: to_uri.into(),
            from_uri: from_uri.into(),
            trunk_id: None,
            script_id: None,
            script_version: None,
            campaign_id: None,
            idempotency_key: None,
            request: Value::Object(serde_json::Map::new()),
            created_at_us,
            node_id: None,
        }
    }
}

impl CallRecord {
    /// The row of a call just created with id `id`: queued, nothing derived yet.
    pub fn queued(id: impl Into<String>, call: NewCall) -> CallRecord {
        CallRecord {
            id: id.into(),
            tenant_id: call.tenant_id,
            direction: call.direction,
            to_uri: call.to_uri,
            from_uri: call.from_uri,
            trunk_id: call.trunk_id,
            script_id: call.script_id,
            script_version: call.script_version,
            campaign_id: call.campaign_id,
            idempotency_key: call.idempotency_key,
            request: call.request,
            created_at_us: call.created_at_us,
            status: CallStatus::Queued,
            outcome: None,
            sip_status: None,
            sip_reason: None,
            q850_cause: None,
            sip_call_id: None,
            started_at_us: None,
            ringing_at_us: None,
            answered_at_us: None,
            ended_at_us: None,
            talk_ms: None,
            result: None,
            end_reason: None,
            node_id: call.node_id,
        }
    }
}

/// Whether [`Store::create_call`] made a row or found the one with the same idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new row.
    New(CallRecord),
    /// The row created earlier with this idempotency key.
    Existing(CallRecord),
}

impl Created {
    /// The row, new or existing.
    pub fn into_call(self) -> CallRecord {
        match self {
            Created::New(c) | Created::Existing(c) => c,
        }
    }
}

/// Filters of [`Store::list_calls`].
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    /// Only this status.
    pub status: Option<CallStatus>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// Only this campaign.
    pub campaign_id: Option<String>,
    /// Created at or after.
    pub created_from_us: Option<i64>,
    /// Created before.
    pub created_to_us: Option<i64>,
    /// Resume after this cursor (from [`Page::next_cursor`]).
    pub cursor: Option<String>,
    /// At most this many (the store caps it at 500).
    pub limit: u32,
    /// Do not read the `request` column (the items' `request` is `{}`): a listing that does
    /// not show it should not load up to a page × 80 KiB of it from the database.
    pub without_request: bool,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A timeline event as stored: `id` is global and increasing (the SSE `Last-Event-ID`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    /// Global sequence number.
    pub id: i64,
    /// Its tenant.
    pub tenant_id: String,
    /// Its call; `None` for a campaign's own events (`campaign.*`, `contact.*`), which
    /// belong to no call.
    pub call_id: Option<String>,
    /// Its call's campaign, or the campaign a campaign event is about.
    pub campaign_id: Option<String>,
    /// The kind (`sip.answered`...).
    pub kind: String,
    /// Wall clock, µs since the epoch.
    pub at_unix_us: i64,
    /// µs since the call was created (monotonic).
    pub offset_us: i64,
    /// Kind-specific details.
    pub details: Value,
}

/// An event to append ([`Store::append_event`]).
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The call (must exist).
    pub call_id: String,
    /// The kind.
    pub kind: String,
    /// Wall clock.
    pub at_unix_us: i64,
    /// Monotonic offset.
    pub offset_us: i64,
    /// Details.
    pub details: Value,
}

/// One item of [`Store::append_batch`]: an event, and the row of its call when the event
/// creates it (an inbound call's untagged `call.created`).
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// Insert this call row first, with id `event.call_id` (no idempotency key). `None`: the
    /// row must already exist (or be created by an earlier item of the same batch).
    pub new_call: Option<NewCall>,
    /// The event.
    pub event: NewEvent,
}

impl BatchItem {
    /// An event of an existing call.
    pub fn event(event: NewEvent) -> BatchItem {
        BatchItem {
            new_call: None,
            event,
        }
    }
}

/// What [`Store::append_event`] wrote in its one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The stored event.
    pub event: StoredEvent,
    /// The call row after the event was folded in.
    pub call: CallRecord,
    /// The outbox rows queued for it (one per matching active webhook).
    pub deliveries: Vec<String>,
}

/// A campaign's own event ([`Store::append_campaign_event`]): `campaign.started`,
/// `contact.deferred`… It belongs to no call (`call_id` is `None` when stored).
#[derive(Debug, Clone)]
pub struct NewCampaignEvent {
    /// The campaign's tenant.
    pub tenant_id: String,
    /// The campaign.
    pub campaign_id: String,
    /// The kind: `campaign.*` or `contact.*` ([`is_campaign_event_kind`]).
    pub kind: String,
    /// Wall clock, µs since the epoch.
    pub at_unix_us: i64,
    /// Details (the progress counts the caller passes, the contact it is about…).
    pub details: Value,
}

/// What [`Store::append_campaign_event`] wrote in its one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignAppended {
    /// The stored event (`call_id` `None`, `offset_us` 0).
    pub event: StoredEvent,
    /// The outbox rows queued for it (one per matching active webhook).
    pub deliveries: Vec<String>,
}

/// A trunk's own event ([`Store::append_trunk_event`]): `trunk.registration`, `trunk.health`.
/// It belongs to no call and no campaign; the trunk's id is in `details.trunk_id`.
#[derive(Debug, Clone)]
pub struct NewTrunkEvent {
    /// The trunk's tenant.
    pub tenant_id: String,
    /// The kind: `trunk.*` ([`is_trunk_event_kind`]).
    pub kind: String,
    /// Wall clock, µs since the epoch.
    pub at_unix_us: i64,
    /// Details (`trunk_id`, `state`, ...).
    pub details: Value,
}

/// Whether `kind` names a trunk's own event (`trunk.` and a lowercase name).
pub fn is_trunk_event_kind(kind: &str) -> bool {
    kind.strip_prefix("trunk.").is_some_and(|n| {
        !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// Whether `kind` names a campaign's own event (`campaign.*` or `contact.*`), the only kinds
/// [`Store::append_campaign_event`] takes: an event without a call must not look like one of
/// a call's.
pub fn is_campaign_event_kind(kind: &str) -> bool {
    let name = kind
        .strip_prefix("campaign.")
        .or_else(|| kind.strip_prefix("contact."));
    name.is_some_and(|n| {
        !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// Filters of [`Store::events_after`] (the SSE resume and `GET /v1/calls/{id}/events`).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this call.
    pub call_id: Option<String>,
    /// Only this campaign.
    pub campaign_id: Option<String>,
    /// Only these kinds (empty: all).
    pub kinds: Vec<String>,
}

/// A finished recording of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingRecord {
    /// `rec_` + 24 hex digits.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Its call.
    pub call_id: String,
    /// Absolute path of the WAV.
    pub path: String,
    /// `wav`.
    pub format: String,
    /// 1 or 2.
    pub channels: i64,
    /// Length.
    pub duration_ms: i64,
    /// Size of the file.
    pub bytes: i64,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// When `recording.ready` said so.
    pub created_at_us: i64,
}

/// A webhook subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    /// `whk_` + 24 hex digits.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// HMAC-SHA256 key: write-only in the API, kept for signing.
    #[serde(skip)]
    pub secret: String,
    /// Event kinds it wants (empty: all).
    pub events: Vec<String>,
    /// Inactive webhooks get no new deliveries.
    pub active: bool,
    /// A label.
    pub description: Option<String>,
    /// When it was created.
    pub created_at_us: i64,
    /// When it last changed.
    pub updated_at_us: i64,
}

/// What a webhook is created or updated with.
#[derive(Debug, Clone, Default)]
pub struct WebhookInput {
    /// URL.
    pub url: String,
    /// Secret; on update `None` keeps the stored one.
    pub secret: Option<String>,
    /// Kinds (empty: all).
    pub events: Vec<String>,
    /// Active.
    pub active: bool,
    /// Label.
    pub description: Option<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed: dead-lettered.
    Dead,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Dead,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// One outbox row: one event for one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// `dlv_` + 24 hex digits.
    pub id: String,
    /// Its webhook.
    pub webhook_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// The event it carries (its id is the receiver's dedupe key).
    pub event_id: i64,
    /// The JSON body, fixed when the row is written so that every attempt sends the same bytes.
    pub body: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (pending only).
    pub next_attempt_at_us: i64,
    /// HTTP status of the last attempt.
    pub last_status: Option<i64>,
    /// Error of the last attempt (connect failure, timeout, non-2xx).
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at_us: i64,
    /// When the receiver accepted it.
    pub delivered_at_us: Option<i64>,
}

/// The per-webhook bound of a claim ([`Store::claim_due_deliveries`]): one receiver that is
/// slow or hangs must not take every delivery slot and delay every other tenant's webhooks.
#[derive(Debug, Clone, Default)]
pub struct PerWebhook {
    /// Deliveries of one webhook in flight at most, counting `in_flight`.
    pub max: u32,
    /// The claiming dispatcher's deliveries in flight, by webhook id.
    pub in_flight: Vec<(String, u32)>,
}

impl PerWebhook {
    /// No per-webhook bound.
    pub fn unbounded() -> PerWebhook {
        PerWebhook {
            max: u32::MAX,
            in_flight: Vec::new(),
        }
    }
}

/// The result of one delivery attempt ([`Store::finish_attempt`]).
#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// 2xx.
    Delivered {
        /// HTTP status.
        status: i64,
        /// When.
        at_us: i64,
    },
    /// Failed; retry at `next_attempt_at_us`, or dead-letter when `None`.
    Failed {
        /// HTTP status, when there was a response.
        status: Option<i64>,
        /// What went wrong.
        error: String,
        /// The next attempt, or `None` to dead-letter.
        next_attempt_at_us: Option<i64>,
        /// How long the webhook rests: none of its deliveries is claimed before the end of
        /// the pause (a receiver that is down is not sent its backlog meanwhile). `None`
        /// leaves the webhook as it is.
        webhook_backoff: Option<WebhookBackoff>,
    },
}

/// The pause of a webhook after a failed attempt: `base_us · 2^(n−1)` from `now_us` after its
/// n-th failure in a row, at most `max_us`; a delivered attempt ends the pause and the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookBackoff {
    /// When the attempt failed.
    pub now_us: i64,
    /// The pause after the first failure.
    pub base_us: i64,
    /// The longest pause.
    pub max_us: i64,
}

impl WebhookBackoff {
    /// The end of the pause after the `failures`-th failure in a row (1-based).
    pub fn pause_until(&self, failures: i64) -> i64 {
        let exp = u32::try_from(failures.saturating_sub(1).clamp(0, 40)).unwrap_or(40);
        let pause = self
            .base_us
            .max(0)
            .checked_mul(1i64 << exp)
            .unwrap_or(i64::MAX)
            .min(self.max_us.max(0));
        self.now_us.saturating_add(pause)
    }
}

/// A callplane node sharing this database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Chosen by the node at start.
    pub id: String,
    /// Host name or label.
    pub name: String,
    /// Max concurrent calls.
    pub capacity: i64,
    /// When it started.
    pub started_at_us: i64,
    /// Its last heartbeat.
    pub heartbeat_at_us: i64,
}

/// The store contract (object-safe: the app holds an `Arc<dyn Store>`).
///
/// Every tenant-scoped read takes the tenant and answers [`StoreError::NotFound`] for another
/// tenant's row: isolation is enforced here, not only in the API.
pub trait Store: campaign::CampaignStore + Send + Sync + fmt::Debug {
    /// Which database this is.
    fn backend(&self) -> Backend;
    /// A trivial round trip (readiness).
    fn ping(&self) -> StoreFuture<'_, ()>;

    // Tenants and keys.
    /// Creates a tenant (name unique → [`StoreError::Conflict`]).
    fn create_tenant<'a>(&'a self, name: &'a str, at_us: i64) -> StoreFuture<'a, Tenant>;
    /// A tenant by id.
    fn get_tenant<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Tenant>;
    /// All tenants, oldest first.
    fn list_tenants(&self) -> StoreFuture<'_, Vec<Tenant>>;
    /// Stores a key (its hash).
    fn create_api_key<'a>(&'a self, key: &'a NewApiKey, at_us: i64) -> StoreFuture<'a, ApiKey>;
    /// The unrevoked key with this secret hash.
    fn find_api_key<'a>(&'a self, secret_sha256: &'a str) -> StoreFuture<'a, ApiKey>;
    /// A tenant's keys (revoked included), oldest first.
    fn list_api_keys<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, Vec<ApiKey>>;
    /// Revokes a key.
    fn revoke_api_key<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        at_us: i64,
    ) -> StoreFuture<'a, ()>;

    // Trunks.
    /// Creates a trunk.
    fn create_trunk<'a>(
        &'a self,
        tenant: &'a str,
        input: &'a TrunkInput,
        at_us: i64,
    ) -> StoreFuture<'a, Trunk>;
    /// A trunk.
    fn get_trunk<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, Trunk>;
    /// A tenant's trunks by name.
    fn list_trunks<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, Vec<Trunk>>;
    /// Replaces a trunk's fields (a `None` password keeps the stored one).
    fn update_trunk<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        input: &'a TrunkInput,
        at_us: i64,
    ) -> StoreFuture<'a, Trunk>;
    /// Deletes a trunk (and its routes).
    fn delete_trunk<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, ()>;
    /// Routes calls to `did` through trunk `trunk_id` to `script_id`. `NotFound` when the
    /// trunk is not the tenant's, `Conflict` when the DID is already routed in the tenant.
    fn create_trunk_route<'a>(
        &'a self,
        tenant: &'a str,
        trunk_id: &'a str,
        did: &'a str,
        script_id: Option<&'a str>,
        at_us: i64,
    ) -> StoreFuture<'a, TrunkRoute>;
    /// A trunk's routes by DID (`NotFound` when the trunk is not the tenant's).
    fn list_trunk_routes<'a>(
        &'a self,
        tenant: &'a str,
        trunk_id: &'a str,
    ) -> StoreFuture<'a, Vec<TrunkRoute>>;
    /// Removes a route.
    fn delete_trunk_route<'a>(
        &'a self,
        tenant: &'a str,
        trunk_id: &'a str,
        did: &'a str,
    ) -> StoreFuture<'a, ()>;
    /// Every trunk and route of every tenant (the inbound router's and registrar's snapshot).
    fn load_trunk_directory(&self) -> StoreFuture<'_, TrunkDirectory>;

    // Scripts.
    /// Creates a script at version 1.
    fn create_script<'a>(
        &'a self,
        tenant: &'a str,
        name: &'a str,
        body: &'a Value,
        at_us: i64,
    ) -> StoreFuture<'a, ScriptRecord>;
    /// A script at its current version (not after it was deleted), or at `version` (also
    /// after it was deleted: calls keep pointing at the version they ran).
    fn get_script<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        version: Option<i64>,
    ) -> StoreFuture<'a, ScriptRecord>;
    /// A tenant's scripts (current versions) by name.
    fn list_scripts<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, Vec<ScriptRecord>>;
    /// Writes a new version (and a new name when given).
    fn update_script<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        name: Option<&'a str>,
        body: &'a Value,
        at_us: i64,
    ) -> StoreFuture<'a, ScriptRecord>;
    /// Deletes a script from listings; its versions stay readable for the calls that ran them.
    fn delete_script<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, ()>;

    // Calls and their timeline.
    /// Creates a call, or returns the existing one with the same tenant + idempotency key.
    fn create_call<'a>(&'a self, call: &'a NewCall) -> StoreFuture<'a, Created>;
    /// A call.
    fn get_call<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, CallRecord>;
    /// A call by id whatever its tenant (the event bus routing engine events).
    fn get_call_any_tenant<'a>(&'a self, id: &'a str) -> StoreFuture<'a, CallRecord>;
    /// A tenant's calls, newest first (ties by id), `limit` 0 → 50, at most 500. A cursor this
    /// store did not make answers [`StoreError::NotFound`] (check one first with
    /// [`SqlStore::is_valid_cursor`] to answer 400).
    fn list_calls<'a>(
        &'a self,
        tenant: &'a str,
        filter: &'a CallFilter,
    ) -> StoreFuture<'a, Page<CallRecord>>;
    /// In one transaction: stores the event, folds it into the call row ([`derive::apply`]),
    /// stores the recording row of a `recording.ready`, and queues one delivery per active
    /// webhook of the tenant whose `events` match (the body is
    /// [`derive::webhook_body`] of the stored event).
    fn append_event<'a>(&'a self, event: &'a NewEvent) -> StoreFuture<'a, Appended>;
    /// Group commit: what [`Store::append_event`] does for each item, in ONE transaction for
    /// the whole batch, in order (an item's `new_call` row is inserted before its event). Event
    /// ids increase in item order and in commit order, as single appends' do. Atomic: any
    /// error (a missing call row, a refused value, the database) rolls the whole batch back and
    /// stores nothing; the caller can then retry the items one by one to find the bad one.
    /// `Ok` holds one [`Appended`] per item, in order (its `call` is the row right after that
    /// event). An empty batch writes nothing.
    fn append_batch<'a>(&'a self, batch: &'a [BatchItem]) -> StoreFuture<'a, Vec<Appended>>;
    /// In one transaction: stores a campaign's own event (no call: `call_id` NULL,
    /// `offset_us` 0, `campaign_id` set) and queues one delivery per active webhook of the
    /// tenant whose `events` match, as [`Store::append_event`] does. Its id is drawn in commit
    /// order with the calls' events (the same lock on PostgreSQL). A kind that is not
    /// [`is_campaign_event_kind`] is [`StoreError::Invalid`]. The campaign is not looked up:
    /// the caller (the campaign worker, the API) names one of the tenant's.
    fn append_campaign_event<'a>(
        &'a self,
        event: &'a NewCampaignEvent,
    ) -> StoreFuture<'a, CampaignAppended>;
    /// Appends a trunk's own event (no call, no campaign) and queues its webhook deliveries,
    /// in one transaction. Errors with `Invalid` for a kind that is not `trunk.*`.
    fn append_trunk_event<'a>(
        &'a self,
        event: &'a NewTrunkEvent,
    ) -> StoreFuture<'a, CampaignAppended>;
    /// A tenant's events with `id > after`, oldest first, at most `limit` (0 → 500, at most
    /// 5000). `kinds` match exactly, or by prefix when they end in `*` (`call.*`), as webhook
    /// filters do. Ids increase in commit order on both databases, so `after` = the last id seen
    /// resumes without a gap.
    fn events_after<'a>(
        &'a self,
        tenant: &'a str,
        after: i64,
        filter: &'a EventFilter,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredEvent>>;
    /// The id of the tenant's newest stored event (0 when it has none): where a live-only
    /// event stream starts, so that catching up after a lag never replays older history.
    fn last_event_id<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, i64>;
    /// The calls not ended whose node is gone: run by `node_id` (this node, in a previous
    /// process: it is starting again), or by a node whose last heartbeat is older than
    /// `stale_before_us`. Calls of live nodes sharing the database are not listed.
    fn orphaned_calls<'a>(
        &'a self,
        node_id: &'a str,
        stale_before_us: i64,
    ) -> StoreFuture<'a, Vec<CallRecord>>;

    // Recordings.
    /// A call's recordings, oldest first ([`StoreError::NotFound`] for another tenant's call).
    fn list_recordings<'a>(
        &'a self,
        tenant: &'a str,
        call_id: &'a str,
    ) -> StoreFuture<'a, Vec<RecordingRecord>>;
    /// A recording.
    fn get_recording<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
    ) -> StoreFuture<'a, RecordingRecord>;

    // Webhooks and the outbox.
    /// Creates a webhook (the secret is required: `None` → [`StoreError::Conflict`]).
    fn create_webhook<'a>(
        &'a self,
        tenant: &'a str,
        input: &'a WebhookInput,
        at_us: i64,
    ) -> StoreFuture<'a, Webhook>;
    /// A webhook.
    fn get_webhook<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, Webhook>;
    /// A tenant's webhooks, oldest first.
    fn list_webhooks<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, Vec<Webhook>>;
    /// Replaces a webhook's fields (a `None` secret keeps the stored one).
    fn update_webhook<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        input: &'a WebhookInput,
        at_us: i64,
    ) -> StoreFuture<'a, Webhook>;
    /// Deletes a webhook and its deliveries.
    fn delete_webhook<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, ()>;
    /// A webhook's deliveries, newest first, optionally only one status; `limit` 0 → 50, at
    /// most 500 ([`StoreError::NotFound`] for another tenant's webhook).
    fn list_deliveries<'a>(
        &'a self,
        tenant: &'a str,
        webhook_id: &'a str,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<Delivery>>;
    /// The deliveries of one call's events to any of the tenant's webhooks, in event order
    /// (then oldest first), at most `limit` (0 → 100, at most 1000). A call of another tenant has
    /// none (the caller checks the call first to answer 404).
    fn list_call_deliveries<'a>(
        &'a self,
        tenant: &'a str,
        call_id: &'a str,
        limit: u32,
    ) -> StoreFuture<'a, Vec<Delivery>>;
    /// Pending deliveries due at `now_us`, oldest due first, with their webhook's url and
    /// secret; each claimed one gets `next_attempt_at_us = lease_until_us` so that a second
    /// dispatcher (or node) does not send it at the same time. At most `limit` rows, and per
    /// webhook at most `per_webhook.max` minus what `per_webhook.in_flight` lists for it (the
    /// oldest due of each webhook first).
    fn claim_due_deliveries<'a>(
        &'a self,
        now_us: i64,
        lease_until_us: i64,
        limit: u32,
        per_webhook: &'a PerWebhook,
    ) -> StoreFuture<'a, Vec<(Delivery, Webhook)>>;
    /// Records an attempt: increments `attempts`, then delivered, rescheduled or dead.
    fn finish_attempt<'a>(&'a self, id: &'a str, result: &'a AttemptResult) -> StoreFuture<'a, ()>;
    /// Puts a delivery (delivered or dead) back to pending, due at `now_us`, attempts reset.
    fn redeliver<'a>(
        &'a self,
        tenant: &'a str,
        delivery_id: &'a str,
        now_us: i64,
    ) -> StoreFuture<'a, Delivery>;
    /// How many deliveries are pending (all tenants).
    fn pending_deliveries(&self) -> StoreFuture<'_, i64>;

    // Suppression (the do-not-call list; the campaigns issue consults it).
    /// Adds a number (idempotent).
    fn add_suppression<'a>(
        &'a self,
        tenant: &'a str,
        number: &'a str,
        reason: Option<&'a str>,
        at_us: i64,
    ) -> StoreFuture<'a, ()>;
    /// Whether a number is suppressed.
    fn is_suppressed<'a>(&'a self, tenant: &'a str, number: &'a str) -> StoreFuture<'a, bool>;

    // Nodes.
    /// Inserts or refreshes this node's row.
    fn heartbeat<'a>(&'a self, node: &'a Node) -> StoreFuture<'a, ()>;
    /// All nodes.
    fn list_nodes(&self) -> StoreFuture<'_, Vec<Node>>;
}
