//! `/v1/campaigns`: dial lists worked through by the campaign worker (docs/campaigns.md).
//!
//! A campaign is created in `draft` with validated settings (its script's version pinned),
//! gets contacts (a JSON array or a streamed CSV body, each row normalised to E.164 and
//! reported on), and is moved through its states by `start`, `pause`, `resume` and `cancel`.
//! The worker (`campaign::worker`) does the dialing; this module only writes the rows it reads
//! and wakes it (`AppState::campaign_wake`). Reads: the campaign with its progress, its
//! contacts with every attempt, a dry-run preview of the next hours, and the results (JSON, or
//! a CSV safe to open in a spreadsheet).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Permission};
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use super::fields::{self, invalid};
use super::{AppState, rfc3339};
use crate::campaign::model::{
    CampaignSettings, CampaignStatus, ContactStatus, RetryPolicy, Windows,
};
use crate::campaign::{export, import, phone, tz, window};
use crate::store::campaign::{
    Campaign, CampaignCounts, Contact, Inserted, NewCampaign, NewContact, ResultRow,
};
use crate::store::{CallFilter, StoreError};

/// Largest contacts upload (bytes): far above the API's global body limit (1 MiB), because a
/// dial list of 100,000 rows is several megabytes. A CSV body is read as a stream and never
/// held whole; a JSON array is (it must be parsed as one value), so it has its own, smaller
/// limit.
pub const MAX_UPLOAD_BYTES: usize = 64 << 20;
/// Largest JSON contacts upload (bytes).
pub const MAX_JSON_UPLOAD_BYTES: usize = 16 << 20;
/// Most rows of one upload.
pub const MAX_UPLOAD_ROWS: usize = 1_000_000;
/// Body bytes handed to the CSV parser at a time (on the blocking pool).
const PARSE_SLICE: usize = 256 * 1024;
/// Rows written to the store per transaction.
const INSERT_CHUNK: usize = 10_000;
/// Per-row entries listed in an upload report (counts are always complete).
pub const MAX_REPORT_ENTRIES: usize = 1_000;
/// Longest excerpt of a refused input value quoted in a report entry (characters).
const MAX_QUOTED: usize = 64;

/// Longest campaign `name` (characters): [`fields::MAX_NAME_CHARS`].
/// Most trunks of a campaign.
pub const MAX_TRUNKS: usize = 16;
/// Most caller ids of a campaign.
pub const MAX_CALLER_IDS: usize = 100;
/// Most holidays of a campaign.
pub const MAX_HOLIDAYS: usize = 400;
/// Most retries one outcome may cause.
pub const MAX_RETRIES: u32 = 20;
/// Longest retry wait (seconds): 30 days.
pub const MAX_RETRY_DELAY_S: u64 = 30 * 86_400;
/// Longest zone or region name (bytes).
const MAX_ZONE_BYTES: usize = 64;
/// Outcome names a retry rule may name (the engine's).
pub const OUTCOMES: [&str; 7] = [
    "busy",
    "no_answer",
    "rejected",
    "invalid_number",
    "network_error",
    "cancelled",
    "failed",
];

/// Default and largest page of the listings.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;
/// Default and longest preview span (seconds).
const DEFAULT_PREVIEW_SPAN_S: u32 = 86_400;
const MAX_PREVIEW_SPAN_S: u32 = 7 * 86_400;
/// Most contacts a preview examines.
pub const MAX_PREVIEW_CONTACTS: usize = 50_000;
/// Contacts read per store call of the preview and the results export.
const PAGE: u32 = 500;
/// Most live calls `cancel` with `hangup` ends in one request.
const MAX_HANGUPS: usize = 10_000;
/// Most gather-variable columns of a results CSV.
const MAX_RESULT_COLUMNS: usize = 64;

/// This area's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_campaigns, create_campaign))
        .routes(routes!(csv_template))
        .routes(routes!(get_campaign, patch_campaign, delete_campaign))
        .routes(routes!(upload_contacts, list_contacts))
        .routes(routes!(get_contact))
        .routes(routes!(start_campaign))
        .routes(routes!(pause_campaign))
        .routes(routes!(resume_campaign))
        .routes(routes!(cancel_campaign))
        .routes(routes!(preview_campaign))
        .routes(routes!(campaign_results))
        .routes(routes!(campaign_activity))
}

// ---------------------------------------------------------------------------------------------
// Settings: the request shape and its validation.

/// What `POST /v1/campaigns` takes (and `PATCH` merges into): `CampaignSettings` with times as
/// RFC 3339. Every field but `name` has a default (docs/api.md "Campaigns").
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    /// A label, 1 to 128 characters.
    pub name: String,
    /// The script each call runs (its current version is pinned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_id: Option<String>,
    /// Trunks in order (at most 16); a network error moves a contact to the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk_ids: Option<Vec<String>>,
    /// Caller ids (From user parts), used in turn (at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_ids: Option<Vec<String>>,
    /// Live calls at most, 1 to 10000. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// New calls per second at most, above 0 and at most 1000. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cps: Option<f64>,
    /// Seconds a call may ring, 1 to 300. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_timeout_s: Option<u32>,
    /// Calling windows in the callee's local time: `{"mon": ["08:00-12:00", "13:00-20:00"],
    /// ...}`; a day left out has none. Default 08:00-21:00 Monday to Saturday.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub windows: Option<Value>,
    /// Days without calls (`YYYY-MM-DD`, the callee's local date), at most 400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub holidays: Option<Value>,
    /// The zone of a contact whose number names none (IANA). Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_timezone: Option<String>,
    /// The region numbers without `+` are read in (ISO 3166 alpha-2). Default `US`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_region: Option<String>,
    /// Retries by outcome: `{"rules": {"busy": {"max_retries": 3, "after_s": 600}}, "backoff":
    /// 2, "jitter": 0.2, "max_delay_s": 86400}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub retry: Option<Value>,
    /// Weight among the tenant's running campaigns, 1 to 1000. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// No call before (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// No call after; the campaign completes then (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<String>,
    /// Record each call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
    /// Longest call, 1 to 86400 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_s: Option<u32>,
}

impl CampaignRequest {
    /// The request that gives `settings` back (what a campaign shows as its `settings`).
    fn from_settings(s: &CampaignSettings) -> CampaignRequest {
        CampaignRequest {
            name: s.name.clone(),
            script_id: s.script_id.clone(),
            trunk_ids: Some(s.trunk_ids.clone()),
            caller_ids: Some(s.caller_ids.clone()),
            max_concurrent: Some(s.max_concurrent),
            max_cps: Some(s.max_cps),
            ring_timeout_s: Some(s.ring_timeout_s),
            windows: s
                .windows
                .as_ref()
                .map(|w| serde_json::to_value(w).unwrap_or(Value::Null)),
            holidays: Some(json!(
                s.holidays
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            )),
            default_timezone: Some(s.default_timezone.clone()),
            default_region: Some(s.default_region.clone()),
            retry: serde_json::to_value(&s.retry).ok(),
            priority: Some(s.priority),
            start_at: s.start_at_us.map(rfc3339),
            end_at: s.end_at_us.map(rfc3339),
            record: Some(s.record),
            max_duration_s: s.max_duration_s,
        }
    }
}

fn parse_rfc3339(field: &str, text: &str) -> Result<i64, ApiError> {
    if text.len() > 64 {
        return Err(invalid(format!("{field}: at most 64 bytes")));
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_microsecond())
        .map_err(|_| {
            invalid(format!(
                "{field}: not an RFC 3339 time (e.g. 2026-12-04T08:00:00Z)"
            ))
        })
}

/// Checks a request and makes the settings it stands for; reads the store for the script
/// (pinning its version unless `keep_version` names the same script), the trunks and nothing
/// else.
async fn settings_from_request(
    s: &AppState,
    caller: &Caller,
    req: CampaignRequest,
    keep_version: Option<(&str, Option<i64>)>,
) -> Result<(CampaignSettings, Option<i64>), ApiError> {
    let name = fields::name("name", &req.name)?.to_owned();
    let mut settings = CampaignSettings {
        name,
        ..serde_json::from_value(json!({"name": ""}))
            .map_err(|e| ApiError::internal(format!("default settings: {e}")))?
    };
    // The script: it must exist; its current version is pinned (kept on PATCH when the id
    // does not change, so an edit of the script does not change a campaign under way).
    let mut script_version = None;
    if let Some(id) = &req.script_id {
        fields::id("script_id", id)?;
        match keep_version {
            Some((kept_id, version)) if kept_id == id => script_version = version,
            _ => {
                let record = match s.store.get_script(&caller.tenant_id, id, None).await {
                    Ok(r) => r,
                    Err(StoreError::NotFound) => {
                        return Err(invalid(format!("script_id: no script {id:?}")));
                    }
                    Err(e) => return Err(e.into()),
                };
                script_version = Some(record.version);
            }
        }
        settings.script_id = Some(id.clone());
    }
    if let Some(trunks) = req.trunk_ids {
        if trunks.len() > MAX_TRUNKS {
            return Err(invalid(format!("trunk_ids: at most {MAX_TRUNKS}")));
        }
        let mut seen = HashSet::new();
        for id in &trunks {
            fields::id("trunk_ids", id)?;
            if !seen.insert(id.as_str()) {
                return Err(invalid(format!("trunk_ids: {id:?} is listed twice")));
            }
            match s.store.get_trunk(&caller.tenant_id, id).await {
                Ok(_) => {}
                Err(StoreError::NotFound) => {
                    return Err(invalid(format!("trunk_ids: no trunk {id:?}")));
                }
                Err(e) => return Err(e.into()),
            }
        }
        settings.trunk_ids = trunks;
    }
    if let Some(ids) = req.caller_ids {
        if ids.len() > MAX_CALLER_IDS {
            return Err(invalid(format!("caller_ids: at most {MAX_CALLER_IDS}")));
        }
        for id in &ids {
            if !super::calls::valid_user(id) || id.contains('?') {
                return Err(invalid(
                    "caller_ids: each a user part of at most 128 letters, digits and + - _ . \
                     (e.g. +14155550100)",
                ));
            }
        }
        settings.caller_ids = ids;
    }
    if let Some(m) = req.max_concurrent {
        if !(1..=10_000).contains(&m) {
            return Err(invalid("max_concurrent: must be 1 to 10000"));
        }
        settings.max_concurrent = m;
    }
    if let Some(cps) = req.max_cps {
        if !cps.is_finite() || cps <= 0.0 || cps > 1000.0 {
            return Err(invalid("max_cps: must be above 0 and at most 1000"));
        }
        settings.max_cps = cps;
    }
    if let Some(r) = req.ring_timeout_s {
        if !(1..=300).contains(&r) {
            return Err(invalid("ring_timeout_s: must be 1 to 300"));
        }
        settings.ring_timeout_s = r;
    }
    if let Some(p) = req.priority {
        if !(1..=1000).contains(&p) {
            return Err(invalid("priority: must be 1 to 1000"));
        }
        settings.priority = p;
    }
    if let Some(w) = req.windows.filter(|w| !w.is_null()) {
        let windows: Windows = serde_json::from_value(w).map_err(|e| {
            invalid(format!(
                "windows: {e} (an object of days \"mon\"..\"sun\", each a list of \"HH:MM-HH:MM\")"
            ))
        })?;
        window::validate(&windows).map_err(|e| invalid(format!("windows: {e}")))?;
        settings.windows = Some(windows);
    }
    if let Some(h) = req.holidays.filter(|h| !h.is_null()) {
        let list = h
            .as_array()
            .ok_or_else(|| invalid("holidays: a list of dates YYYY-MM-DD"))?;
        if list.len() > MAX_HOLIDAYS {
            return Err(invalid(format!("holidays: at most {MAX_HOLIDAYS}")));
        }
        let mut days = BTreeSet::new();
        for d in list {
            let date = d
                .as_str()
                .filter(|t| t.len() == 10)
                .and_then(|t| t.parse::<jiff::civil::Date>().ok())
                .ok_or_else(|| invalid("holidays: each a date YYYY-MM-DD"))?;
            days.insert(date);
        }
        settings.holidays = days.into_iter().collect();
    }
    if let Some(zone) = req.default_timezone {
        if zone.len() > MAX_ZONE_BYTES || !tz::valid_zone(&zone) {
            return Err(invalid(
                "default_timezone: not an IANA time zone (e.g. America/Chicago)",
            ));
        }
        settings.default_timezone = zone;
    }
    if let Some(region) = req.default_region {
        let region = region.to_ascii_uppercase();
        if region.len() != 2 || !phone::valid_region(&region) {
            return Err(invalid(
                "default_region: not a region code (ISO 3166 alpha-2, e.g. US, FR)",
            ));
        }
        settings.default_region = region;
    }
    if let Some(r) = req.retry.filter(|r| !r.is_null()) {
        let policy: RetryPolicy = serde_json::from_value(r).map_err(|e| {
            invalid(format!(
                "retry: {e} (rules by outcome {{max_retries, after_s, next_trunk}}, backoff, \
                 jitter, max_delay_s)"
            ))
        })?;
        check_retry(&policy)?;
        settings.retry = policy;
    }
    if let Some(t) = &req.start_at {
        settings.start_at_us = Some(parse_rfc3339("start_at", t)?);
    }
    if let Some(t) = &req.end_at {
        settings.end_at_us = Some(parse_rfc3339("end_at", t)?);
    }
    if let (Some(a), Some(b)) = (settings.start_at_us, settings.end_at_us)
        && b <= a
    {
        return Err(invalid("end_at: must be after start_at"));
    }
    if let Some(r) = req.record {
        settings.record = r;
    }
    if let Some(m) = req.max_duration_s {
        if !(1..=86_400).contains(&m) {
            return Err(invalid("max_duration_s: must be 1 to 86400"));
        }
        settings.max_duration_s = Some(m);
    }
    Ok((settings, script_version))
}

fn check_retry(p: &RetryPolicy) -> Result<(), ApiError> {
    for (outcome, rule) in &p.rules {
        if !OUTCOMES.contains(&outcome.as_str()) {
            return Err(invalid(format!(
                "retry.rules: unknown outcome {:?} (one of {})",
                outcome.chars().take(MAX_QUOTED).collect::<String>(),
                OUTCOMES.join(", ")
            )));
        }
        if rule.max_retries > MAX_RETRIES {
            return Err(invalid(format!(
                "retry.rules.{outcome}.max_retries: at most {MAX_RETRIES}"
            )));
        }
        if rule.after_s > MAX_RETRY_DELAY_S {
            return Err(invalid(format!(
                "retry.rules.{outcome}.after_s: at most {MAX_RETRY_DELAY_S}"
            )));
        }
    }
    if !p.backoff.is_finite() || !(1.0..=10.0).contains(&p.backoff) {
        return Err(invalid("retry.backoff: must be 1 to 10"));
    }
    if !p.jitter.is_finite() || !(0.0..=1.0).contains(&p.jitter) {
        return Err(invalid("retry.jitter: must be 0 to 1"));
    }
    if !(1..=MAX_RETRY_DELAY_S).contains(&p.max_delay_s) {
        return Err(invalid(format!(
            "retry.max_delay_s: must be 1 to {MAX_RETRY_DELAY_S}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Views.

/// A campaign as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CampaignView {
    /// `cmp_` + 24 hex digits.
    pub id: String,
    /// `draft`, `scheduled`, `running`, `paused`, `completed` or `cancelled`.
    pub status: String,
    /// The settings, in the shape `POST` takes (times as RFC 3339).
    pub settings: CampaignRequest,
    /// The script version its calls run (pinned).
    pub script_version: Option<i64>,
    /// RFC 3339.
    pub created_at: String,
    /// µs since the epoch.
    pub created_at_us: i64,
    /// RFC 3339.
    pub updated_at: String,
    /// µs.
    pub updated_at_us: i64,
    /// First started (RFC 3339).
    pub started_at: Option<String>,
    /// µs.
    pub started_at_us: Option<i64>,
    /// Completed or cancelled (RFC 3339).
    pub ended_at: Option<String>,
    /// µs.
    pub ended_at_us: Option<i64>,
    /// Progress (on `GET /v1/campaigns/{id}` and the status changes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

impl CampaignView {
    fn new(c: Campaign, progress: Option<Progress>) -> CampaignView {
        CampaignView {
            id: c.id,
            status: c.status.as_str().to_owned(),
            settings: CampaignRequest::from_settings(&c.settings),
            script_version: c.script_version,
            created_at: rfc3339(c.created_at_us),
            created_at_us: c.created_at_us,
            updated_at: rfc3339(c.updated_at_us),
            updated_at_us: c.updated_at_us,
            started_at: c.started_at_us.map(rfc3339),
            started_at_us: c.started_at_us,
            ended_at: c.ended_at_us.map(rfc3339),
            ended_at_us: c.ended_at_us,
            progress,
        }
    }
}

/// A campaign's progress.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Progress {
    /// Contacts by status (every status, 0 when none).
    pub contacts: BTreeMap<String, i64>,
    /// All contacts.
    pub total_contacts: i64,
    /// Ended attempts by outcome.
    pub outcomes: BTreeMap<String, i64>,
    /// Queued contacts outside their calling window now.
    pub outside_window: i64,
    /// When the first of their windows opens (RFC 3339).
    pub next_window_opens_at: Option<String>,
    /// µs.
    pub next_window_opens_at_us: Option<i64>,
    /// Answered attempts / ended attempts (null before any ended).
    pub answer_rate: Option<f64>,
    /// Mean talk time of answered attempts (ms).
    pub average_talk_ms: Option<i64>,
    /// Contacts being dialed or on a call now.
    pub live_calls: i64,
    /// Attempts started per second over the last minute.
    pub calls_per_s: f64,
    /// Seconds until the queued contacts are all tried at the last minute's rate (null when
    /// nothing was dialed in the last minute, or nothing is left).
    pub eta_s: Option<i64>,
}

impl Progress {
    fn from_counts(c: &CampaignCounts) -> Progress {
        let mut contacts: BTreeMap<String, i64> = ContactStatus::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), 0))
            .collect();
        for (k, v) in &c.by_status {
            contacts.insert(k.clone(), *v);
        }
        let ended: i64 = c.by_outcome.values().sum();
        let queued = contacts.get("queued").copied().unwrap_or(0);
        let calls_per_s = c.attempts_last_minute as f64 / 60.0;
        Progress {
            total_contacts: contacts.values().sum(),
            live_calls: contacts.get("dialing").copied().unwrap_or(0),
            contacts,
            outcomes: c.by_outcome.clone(),
            outside_window: c.outside_window,
            next_window_opens_at: c.next_window_opens_at_us.map(rfc3339),
            next_window_opens_at_us: c.next_window_opens_at_us,
            answer_rate: (ended > 0).then(|| c.answered as f64 / ended as f64),
            average_talk_ms: (c.answered > 0).then(|| c.talk_ms_total / c.answered),
            calls_per_s,
            eta_s: (queued > 0 && calls_per_s > 0.0)
                .then(|| (queued as f64 / calls_per_s).ceil() as i64),
        }
    }
}

/// `{"items": [...], "next_cursor": ...}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CampaignList {
    /// Newest first.
    pub items: Vec<CampaignView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
}

fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit: must be 1 to {MAX_LIMIT}"),
        ));
    }
    Ok(limit)
}

/// Opens a listing's cursor (400 `invalid_cursor` for anything but one this listing gave).
fn open_cursor(
    listing: &str,
    scope: &str,
    cursor: Option<&str>,
) -> Result<Option<String>, ApiError> {
    cursor
        .map(|c| {
            if c.len() > 1024 {
                return Err(ApiError::bad_request(
                    "invalid_cursor",
                    "cursor: not a cursor of this listing",
                ));
            }
            super::cursor::open(listing, scope, c)
        })
        .transpose()
}

/// A store error of a listing that was given a cursor: one it cannot read is 400.
fn listing_error(e: StoreError, had_cursor: bool) -> ApiError {
    match e {
        StoreError::NotFound | StoreError::Corrupt(_) if had_cursor => {
            ApiError::bad_request("invalid_cursor", "cursor: not a cursor of this listing")
        }
        e => e.into(),
    }
}

/// The tenant's campaign, or 404 (ids that cannot be ids are 404 too, never echoed).
async fn campaign_of(s: &AppState, caller: &Caller, id: &str) -> Result<Campaign, ApiError> {
    if fields::id("id", id).is_err() {
        return Err(ApiError::not_found("no such campaign"));
    }
    match s.store.get_campaign(&caller.tenant_id, id).await {
        Ok(c) => Ok(c),
        Err(StoreError::NotFound) => Err(ApiError::not_found("no such campaign")),
        Err(e) => Err(e.into()),
    }
}

fn running_conflict(c: &Campaign) -> ApiError {
    ApiError::conflict(
        "campaign_running",
        format!("campaign {} is running: pause or cancel it first", c.id),
    )
}

// ---------------------------------------------------------------------------------------------
// CRUD.

/// Creates a campaign (`draft`).
#[utoipa::path(post, path = "/campaigns", tag = "campaigns", request_body = CampaignRequest,
    responses((status = 201, body = CampaignView), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "invalid_field")))]
async fn create_campaign(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CampaignRequest>,
) -> ApiResult<(StatusCode, Json<CampaignView>)> {
    caller.require(Permission::CampaignsWrite)?;
    let (settings, script_version) = settings_from_request(&s, &caller, req, None).await?;
    let campaign = s
        .store
        .create_campaign(&NewCampaign {
            tenant_id: caller.tenant_id.clone(),
            settings,
            script_version,
            at_us: crate::clock::unix_us(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(CampaignView::new(campaign, None))))
}

/// Lists the tenant's campaigns, newest first.
#[utoipa::path(get, path = "/campaigns", tag = "campaigns", params(PageQuery),
    responses((status = 200, body = CampaignList), (status = 400, body = ErrorBody)))]
async fn list_campaigns(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<CampaignList>> {
    caller.require(Permission::CampaignsRead)?;
    let limit = page_limit(q.limit)?;
    let scope = json!([caller.tenant_id]).to_string();
    let position = open_cursor("campaigns", &scope, q.cursor.as_deref())?;
    let page = s
        .store
        .list_campaigns(&caller.tenant_id, position.as_deref(), limit)
        .await
        .map_err(|e| listing_error(e, position.is_some()))?;
    Ok(Json(CampaignList {
        items: page
            .items
            .into_iter()
            .map(|c| CampaignView::new(c, None))
            .collect(),
        next_cursor: page
            .next_cursor
            .map(|c| super::cursor::seal("campaigns", &scope, &c)),
    }))
}

/// A campaign with its progress.
#[utoipa::path(get, path = "/campaigns/{id}", tag = "campaigns",
    params(("id" = String, Path, description = "campaign id")),
    responses((status = 200, body = CampaignView), (status = 404, body = ErrorBody)))]
async fn get_campaign(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<CampaignView>> {
    caller.require(Permission::CampaignsRead)?;
    let campaign = campaign_of(&s, &caller, &id).await?;
    let counts = s
        .store
        .campaign_counts(&campaign.id, crate::clock::unix_us())
        .await?;
    Ok(Json(CampaignView::new(
        campaign,
        Some(Progress::from_counts(&counts)),
    )))
}

/// Changes settings: the fields given replace the stored ones (`null` resets one to its
/// default). Refused (409 `campaign_running`) while the campaign runs.
#[utoipa::path(patch, path = "/campaigns/{id}", tag = "campaigns", request_body = Object,
    params(("id" = String, Path, description = "campaign id")),
    responses((status = 200, body = CampaignView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "campaign_running, campaign_ended"),
        (status = 422, body = ErrorBody)))]
async fn patch_campaign(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<Map<String, Value>>,
) -> ApiResult<Json<CampaignView>> {
    caller.require(Permission::CampaignsWrite)?;
    let campaign = campaign_of(&s, &caller, &id).await?;
    if campaign.status == CampaignStatus::Running {
        return Err(running_conflict(&campaign));
    }
    if campaign.status.is_final() {
        return Err(ended_conflict(&campaign));
    }
    let mut merged = match serde_json::to_value(CampaignRequest::from_settings(&campaign.settings))
    {
        Ok(Value::Object(m)) => m,
        _ => return Err(ApiError::internal("settings not serialisable")),
    };
    for (k, v) in patch {
        if v.is_null() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    let req: CampaignRequest = serde_json::from_value(Value::Object(merged)).map_err(|e| {
        let text = e.to_string();
        if text.contains("unknown field") {
            ApiError::bad_request("unknown_field", text)
        } else if text.contains("missing field `name`") {
            invalid("name: required")
        } else {
            ApiError::bad_request("invalid_json", text)
        }
    })?;
    let keep = campaign
        .settings
        .script_id
        .as_deref()
        .map(|sid| (sid, campaign.script_version));
    let (settings, script_version) = settings_from_request(&s, &caller, req, keep).await?;
    let updated = match s
        .store
        .update_campaign(
            &caller.tenant_id,
            &campaign.id,
            &settings,
            script_version,
            crate::clock::unix_us(),
        )
        .await
    {
        Ok(c) => c,
        // It started between the read and the write.
        Err(StoreError::Conflict(_)) => return Err(running_conflict(&campaign)),
        Err(e) => return Err(e.into()),
    };
    s.campaign_wake.notify_one();
    Ok(Json(CampaignView::new(updated, None)))
}

/// Deletes a campaign with its contacts and attempts (its calls stay). Refused while it runs.
#[utoipa::path(delete, path = "/campaigns/{id}", tag = "campaigns",
    params(("id" = String, Path, description = "campaign id")),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "campaign_running")))]
async fn delete_campaign(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Permission::CampaignsWrite)?;
    let campaign = campaign_of(&s, &caller, &id).await?;
    if campaign.status == CampaignStatus::Running {
        return Err(running_conflict(&campaign));
    }
    match s
        .store
        .delete_campaign(&caller.tenant_id, &campaign.id)
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::Conflict(_)) => Err(running_conflict(&campaign)),
        Err(e) => Err(e.into()),
    }
}

fn ended_conflict(c: &Campaign) -> ApiError {
    ApiError::conflict(
        "campaign_ended",
        format!("campaign {} is {}: it changes no more", c.id, c.status),
    )
}

// ---------------------------------------------------------------------------------------------
// Status changes.

/// The body of `cancel` (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Also end the campaign's live calls (those this node runs).
    #[serde(default)]
    pub hangup: bool,
}

/// What a status change answers: the campaign with its progress, and for `cancel` with
/// `hangup`, what happened to its live calls.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusChange {
    /// The campaign after the change.
    pub campaign: CampaignView,
    /// Live calls hung up (cancel with `hangup`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hung_up: Option<usize>,
    /// Live calls that run on other nodes (not hung up here; cancel with `hangup`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_other_nodes: Option<usize>,
}

/// Moves a campaign `from` → `to`; 409 `invalid_transition` naming its status otherwise.
async fn transition(
    s: &AppState,
    caller: &Caller,
    id: &str,
    action: &str,
    from: &[CampaignStatus],
    to: CampaignStatus,
) -> Result<Campaign, ApiError> {
    let campaign = campaign_of(s, caller, id).await?;
    let refuse = |status: CampaignStatus| {
        let allowed: Vec<&str> = from.iter().map(|f| f.as_str()).collect();
        ApiError::conflict(
            "invalid_transition",
            format!(
                "campaign {} is {status}: {action} needs it {}",
                campaign.id,
                allowed.join(" or ")
            ),
        )
    };
    if !from.contains(&campaign.status) {
        return Err(refuse(campaign.status));
    }
    match s
        .store
        .set_campaign_status(
            &caller.tenant_id,
            &campaign.id,
            from,
            to,
            crate::clock::unix_us(),
        )
        .await
    {
        Ok(c) => Ok(c),
        // Another request moved it meanwhile: say where it is now.
        Err(StoreError::Conflict(_)) => {
            let now = campaign_of(s, caller, id).await?;
            Err(refuse(now.status))
        }
        Err(e) => Err(e.into()),
    }
}

/// The campaign with its progress, after a change: publishes `campaign.<kind>` with the
/// progress counts and wakes the worker.
async fn changed(s: &AppState, campaign: Campaign, kind: &str) -> Result<CampaignView, ApiError> {
    let counts = s
        .store
        .campaign_counts(&campaign.id, crate::clock::unix_us())
        .await?;
    let progress = Progress::from_counts(&counts);
    emit_campaign_event(s, &campaign, kind, &progress).await;
    s.campaign_wake.notify_one();
    Ok(CampaignView::new(campaign, Some(progress)))
}

/// Stores and publishes `campaign.<kind>` (`started`, `scheduled`, `paused`, `resumed`,
/// `cancelled`) with the campaign's status and progress counts: on the SSE stream and to
/// webhooks. The status change is already stored; an event that cannot be stored is logged,
/// and the request still succeeds.
async fn emit_campaign_event(s: &AppState, campaign: &Campaign, kind: &str, progress: &Progress) {
    let details = json!({
        "status": campaign.status.as_str(),
        "name": campaign.settings.name,
        "progress": progress,
    });
    let kind = format!("campaign.{kind}");
    if let Err(e) = s
        .bus
        .append_campaign_event(&campaign.tenant_id, &campaign.id, &kind, details)
        .await
    {
        tracing::error!(campaign_id = %campaign.id, event = %kind, error = %e, "could not store a campaign event");
    }
}

/// Starts a draft campaign: `running`, or `scheduled` when its `start_at` is in the future.
#[utoipa::path(post, path = "/campaigns/{id}/start", tag = "campaigns",
    params(("id" = String, Path, description = "campaign id")),
    responses((status = 200, body = StatusChange), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "invalid_transition"),
        (status = 422, body = ErrorBody, description = "campaign_without_trunk")))]
async fn start_campaign(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<StatusChange>> {
    caller.require(Permission::CampaignsWrite)?;
    let current = campaign_of(&s, &caller, &id).await?;
    if current.status == CampaignStatus::Draft && current.settings.trunk_ids.is_empty() {
        return Err(ApiError::unprocessable(
            "campaign_without_trunk",
            "the campaign has no trunk_ids: numbers are called through a trunk",
        ));
    }
    let later = current
        .settings
        .start_at_us
        .is_some_and(|t| t > crate::clock::unix_us());
    let to = if later {
        CampaignStatus::Scheduled
    } else {
        CampaignStatus::Running
    };
    let campaign = transition(&s, &caller, &id, "start", &[CampaignStatus::Draft], to).await?;
    let kind = if later { "scheduled" } else { "started" };
    Ok(Json(StatusChange {
        campaign: changed(&s, campaign, kind).await?,
        hung_up: None,
        on_other_nodes: None,
    }))
}

/// Pauses a running or scheduled campaign: no new calls; live calls go on.
#[utoipa::path(post, path = "/campaigns/{id}/pause", tag = "campaigns",
    params(("id" = String, Path, description = "campaign id")),
    responses((status = 200, body = StatusChange), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "invalid_transition")))]
async fn pause_campaign(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<StatusChange>> {
    caller.require(Permission::CampaignsWrite)?;
    let campaign = transition(
        &s,
        &caller,
        &id,
        "pause",
        &[CampaignStatus::Running, CampaignStatus::Scheduled],
        CampaignStatus::Paused,
    )
    .await?;
    Ok(Json(StatusChange {
        campaign: changed(&s, campaign, "paused").await?,
        hung_up: None,
        on_other_nodes: None,
    }))
}

/// Resumes a paused campaign.
#[utoipa::path(post, path = "/campaigns/{id}/resume", tag = "campaigns",
    params(("id" = String, Path, description = "campaign id")),
    responses((status = 200, body = StatusChange), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "invalid_transition")))]
async fn resume_campaign(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<StatusChange>> {
    caller.require(Permission::CampaignsWrite)?;
    let campaign = transition(
        &s,
        &caller,
        &id,
        "resume",
        &[CampaignStatus::Paused],
        CampaignStatus::Running,
    )
    .await?;
    Ok(Json(StatusChange {
        campaign: changed(&s, campaign, "resumed").await?,
        hung_up: None,
        on_other_nodes: None,
    }))
}

/// Cancels a campaign (any status but completed and cancelled); `{"hangup": true}` also ends
/// the live calls this node runs.
#[utoipa::path(post, path = "/campaigns/{id}/cancel", tag = "campaigns",
    request_body(content = Option<CancelRequest>),
    params(("id" = String, Path, description = "campaign id")),
    responses((status = 200, body = StatusChange), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "invalid_transition")))]
async fn cancel_campaign(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<StatusChange>> {
    caller.require(Permission::CampaignsWrite)?;
    // The body is optional: none, or `{"hangup": bool}` as JSON.
    let req: CancelRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CancelRequest::default()
    } else {
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim_start().starts_with("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON with `Content-Type: application/json`",
            ));
        }
        serde_json::from_slice(&body).map_err(|e| {
            let text = e.to_string();
            if text.contains("unknown field") {
                ApiError::bad_request("unknown_field", text)
            } else {
                ApiError::bad_request("invalid_json", text)
            }
        })?
    };
    let campaign = transition(
        &s,
        &caller,
        &id,
        "cancel",
        &[
            CampaignStatus::Draft,
            CampaignStatus::Scheduled,
            CampaignStatus::Running,
            CampaignStatus::Paused,
        ],
        CampaignStatus::Cancelled,
    )
    .await?;
    let (hung_up, elsewhere) = if req.hangup {
        let (a, b) = hang_up_live_calls(&s, &caller, &campaign.id).await?;
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    Ok(Json(StatusChange {
        campaign: changed(&s, campaign, "cancelled").await?,
        hung_up,
        on_other_nodes: elsewhere,
    }))
}

/// Hangs up the campaign's calls that have not ended and run on this node; returns how many
/// were hung up and how many run elsewhere.
async fn hang_up_live_calls(
    s: &AppState,
    caller: &Caller,
    campaign_id: &str,
) -> Result<(usize, usize), ApiError> {
    use crate::store::CallStatus;
    let (mut hung_up, mut elsewhere, mut seen) = (0, 0, 0);
    // The calls not ended, status by status (a listing of all would read every ended call).
    for status in [
        CallStatus::Queued,
        CallStatus::Dialing,
        CallStatus::Ringing,
        CallStatus::Answered,
    ] {
        let mut filter = CallFilter {
            status: Some(status),
            campaign_id: Some(campaign_id.to_owned()),
            limit: MAX_LIMIT,
            without_request: true,
            ..CallFilter::default()
        };
        loop {
            let page = s.store.list_calls(&caller.tenant_id, &filter).await?;
            for call in &page.items {
                seen += 1;
                match s.bus.engine_id(&call.id) {
                    Some(engine_id) => match s.engine.hangup(engine_id).await {
                        Ok(()) => hung_up += 1,
                        // The call ended meanwhile, or the engine is stopping.
                        Err(e) => {
                            tracing::debug!(call_id = %call.id, error = %e, "campaign cancel: hangup")
                        }
                    },
                    None if call
                        .node_id
                        .as_deref()
                        .is_some_and(|n| n != s.config.node_id) =>
                    {
                        elsewhere += 1
                    }
                    None => {}
                }
            }
            match page.next_cursor {
                Some(c) if seen < MAX_HANGUPS => filter.cursor = Some(c),
                _ => break,
            }
        }
    }
    Ok((hung_up, elsewhere))
}

// ---------------------------------------------------------------------------------------------
// Contacts upload.

/// What happened to one row that was not plainly accepted.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReportEntry {
    /// CSV: the line the row starts on (the header is line 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<i64>,
    /// JSON: the index in the array (from 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<i64>,
    /// `rejected`, `duplicate` (of an earlier row of this upload), `existing` (the campaign
    /// already has the number) or `suppressed` (on the do-not-call list: kept as `suppressed`,
    /// never dialed).
    pub result: String,
    /// `rejected`: a stable code (`missing_phone`, `invalid_number`, `invalid_timezone`,
    /// `invalid_priority`, `invalid_variable`, `invalid_row`, `column_count`, `encoding`,
    /// `too_long`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why, for people.
    pub reason: String,
    /// The number in E.164 (not for `rejected`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// `existing` and `suppressed`: the contact's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    /// `duplicate`: the line (or index) of the row it repeats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<i64>,
}

/// The report of `POST /v1/campaigns/{id}/contacts`: counts over every row, and one entry per
/// row that was not plainly accepted (the first 1000).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct UploadReport {
    /// Rows read (the CSV header and blank lines not counted).
    pub rows: i64,
    /// Inserted as `queued`.
    pub accepted: i64,
    /// Refused (see `entries`).
    pub rejected: i64,
    /// Repeats of an earlier row of the same upload (not inserted).
    pub duplicates: i64,
    /// Numbers the campaign already had (not inserted).
    pub existing: i64,
    /// On the do-not-call list: inserted as `suppressed`, never dialed.
    pub suppressed: i64,
    /// Per-row entries of rows not plainly accepted, in row order.
    pub entries: Vec<ReportEntry>,
    /// Whether there were more entries than listed.
    pub entries_truncated: bool,
}

/// A quoted excerpt of a value a client sent (never megabytes of it).
fn quote(text: &str) -> String {
    text.chars().take(MAX_QUOTED).collect()
}

/// Batches the parser's rows and writes them to the store [`INSERT_CHUNK`] at a time,
/// counting every row.
struct Uploader<'a> {
    s: &'a AppState,
    tenant: &'a str,
    campaign: &'a Campaign,
    /// Rows are numbered by line (CSV) or index (JSON).
    csv: bool,
    batch: Vec<NewContact>,
    report: UploadReport,
    at_us: i64,
}

impl<'a> Uploader<'a> {
    fn new(s: &'a AppState, tenant: &'a str, campaign: &'a Campaign, csv: bool) -> Uploader<'a> {
        Uploader {
            s,
            tenant,
            campaign,
            csv,
            batch: Vec::with_capacity(INSERT_CHUNK),
            report: UploadReport::default(),
            at_us: crate::clock::unix_us(),
        }
    }

    /// Lists an entry (the first [`MAX_REPORT_ENTRIES`]; past them, only says more were).
    fn entry(&mut self, line: i64, result: &str, reason: String, e: ReportEntry) {
        if self.report.entries.len() >= MAX_REPORT_ENTRIES {
            self.report.entries_truncated = true;
            return;
        }
        let (line, index) = if self.csv {
            (Some(line), None)
        } else {
            (None, Some(line))
        };
        self.report.entries.push(ReportEntry {
            line,
            index,
            result: result.to_owned(),
            reason,
            ..e
        });
    }

    /// Takes one row of the parser: counted, reported, or batched (written at the next flush).
    async fn row(&mut self, row: import::Row) -> Result<(), ApiError> {
        let line = i64::try_from(row.line).unwrap_or(i64::MAX);
        self.report.rows += 1;
        let blank = ReportEntry {
            line: None,
            index: None,
            result: String::new(),
            code: None,
            reason: String::new(),
            phone: None,
            contact_id: None,
            duplicate_of: None,
        };
        match row.outcome {
            import::RowOutcome::Accepted(contact) => {
                self.batch.push(contact);
                if self.batch.len() >= INSERT_CHUNK {
                    self.flush().await?;
                }
            }
            import::RowOutcome::Rejected { code, reason } => {
                self.report.rejected += 1;
                let e = ReportEntry {
                    code: Some(code.as_str().to_owned()),
                    ..blank
                };
                self.entry(line, "rejected", reason, e);
            }
            import::RowOutcome::Duplicate { of_line } => {
                self.report.duplicates += 1;
                let of = i64::try_from(of_line).unwrap_or(i64::MAX);
                let what = if self.csv { "line" } else { "index" };
                let e = ReportEntry {
                    duplicate_of: Some(of),
                    ..blank
                };
                self.entry(
                    line,
                    "duplicate",
                    format!("the same number as {what} {of}"),
                    e,
                );
            }
        }
        Ok(())
    }

    /// Writes the batch: numbers on the do-not-call list go in as `suppressed`, numbers the
    /// campaign has are reported as `existing`.
    async fn flush(&mut self) -> Result<(), ApiError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.batch);
        let numbers: Vec<String> = batch.iter().map(|c| c.phone.clone()).collect();
        let suppressed: HashSet<String> = self
            .s
            .store
            .suppressed_among(self.tenant, &numbers)
            .await?
            .into_iter()
            .collect();
        drop(numbers);
        if !suppressed.is_empty() {
            for c in &mut batch {
                if suppressed.contains(&c.phone) {
                    c.status = ContactStatus::Suppressed;
                    c.reason = Some("on the tenant's do-not-call list".to_owned());
                }
            }
        }
        let results = self
            .s
            .store
            .insert_contacts(self.tenant, &self.campaign.id, &batch, self.at_us)
            .await?;
        if results.len() != batch.len() {
            return Err(ApiError::internal(format!(
                "insert_contacts answered {} results for {} contacts",
                results.len(),
                batch.len()
            )));
        }
        for (c, result) in batch.into_iter().zip(results) {
            let line = c.line.unwrap_or(0);
            let entry = |id: String| ReportEntry {
                line: None,
                index: None,
                result: String::new(),
                code: None,
                reason: String::new(),
                phone: Some(c.phone.clone()),
                contact_id: Some(id),
                duplicate_of: None,
            };
            match result {
                Inserted::New(id) if c.status == ContactStatus::Suppressed => {
                    self.report.suppressed += 1;
                    self.entry(
                        line,
                        "suppressed",
                        "on the tenant's do-not-call list: kept as suppressed, never dialed"
                            .to_owned(),
                        entry(id),
                    );
                }
                Inserted::New(_) => self.report.accepted += 1,
                Inserted::Duplicate(id) => {
                    self.report.existing += 1;
                    self.entry(
                        line,
                        "existing",
                        "the campaign already has this number".to_owned(),
                        entry(id),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Whether the request's `Content-Type` is one of `essences` (parameters such as `charset`
/// aside).
fn content_type_is(headers: &HeaderMap, essences: &[&str]) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| essences.contains(&t.as_str()))
}

fn upload_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!(
            "an upload is at most {} MiB; split the list (rows read before the limit were \
             kept: upload the rest, repeats are reported as `existing`)",
            limit >> 20
        ),
    )
}

fn body_error(e: axum::Error) -> ApiError {
    ApiError::bad_request("body_read_error", "the request body could not be read")
        .with_detail(e.to_string())
}

/// An upload refused as a whole (its header, encoding or size): 422 with the parser's code,
/// 413 `too_many_rows`.
fn import_error(e: import::ImportError) -> ApiError {
    let status = match e {
        import::ImportError::TooManyRows { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, e.code(), e.to_string())
}

/// Adds contacts: a JSON array of `{"phone", "name", "timezone", "priority", "variables"}`, or
/// a CSV body (`Content-Type: text/csv`, UTF-8, a header row naming the columns: `phone`,
/// `name`, `timezone`, `priority`, and one column per script variable), read as a stream.
/// Numbers are normalised to E.164 (read in the campaign's `default_region` when they have no
/// `+`). The report counts every row and lists each row not plainly accepted with its line.
#[utoipa::path(post, path = "/campaigns/{id}/contacts", tag = "campaigns",
    request_body(content = Object, description = "a JSON array of contacts, or text/csv",
        content_type = "application/json"),
    params(("id" = String, Path, description = "campaign id")),
    responses((status = 200, body = UploadReport), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "campaign_ended"),
        (status = 413, body = ErrorBody, description = "body_too_large, too_many_rows"),
        (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "empty_upload, no_phone_column, duplicate_headers, bad_header, too_many_columns, header_too_long, encoding")))]
async fn upload_contacts(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<UploadReport>> {
    caller.require(Permission::CampaignsWrite)?;
    let csv = content_type_is(&headers, &["text/csv", "application/csv"]);
    if !csv && !content_type_is(&headers, &["application/json"]) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "contacts are `Content-Type: application/json` (an array) or `text/csv`",
        ));
    }
    let limit = if csv {
        MAX_UPLOAD_BYTES
    } else {
        MAX_JSON_UPLOAD_BYTES
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(upload_too_large(limit));
    }
    let campaign = campaign_of(&s, &caller, &id).await?;
    if campaign.status.is_final() {
        return Err(ended_conflict(&campaign));
    }
    let mut opts = import::ImportOptions::new(
        &campaign.settings.default_region,
        &campaign.settings.default_timezone,
    );
    opts.max_rows = MAX_UPLOAD_ROWS as u64;
    let mut up = Uploader::new(&s, &caller.tenant_id, &campaign, csv);
    let mut stream = body.into_data_stream();
    if csv {
        // Parsing and normalising is CPU work (libphonenumber per row): it runs on the blocking
        // pool, a slice of the body at a time, so an upload never holds a runtime thread.
        let mut parser = Some(import::CsvImport::new(opts));
        let mut pending: Vec<u8> = Vec::with_capacity(PARSE_SLICE);
        let mut read = 0usize;
        loop {
            let chunk = stream.next().await.transpose().map_err(body_error)?;
            let last = chunk.is_none();
            if let Some(bytes) = &chunk {
                read += bytes.len();
                if read > limit {
                    up.flush().await?;
                    return Err(upload_too_large(limit));
                }
                pending.extend_from_slice(bytes);
                if pending.len() < PARSE_SLICE {
                    continue;
                }
            }
            let input = std::mem::replace(&mut pending, Vec::with_capacity(PARSE_SLICE));
            let Some(mut p) = parser.take() else {
                return Err(ApiError::internal("the import parser was lost"));
            };
            let (p, rows, parsed) = tokio::task::spawn_blocking(move || {
                let mut rows = Vec::new();
                let mut parsed = p.push(&input, &mut rows);
                if parsed.is_ok() && last {
                    parsed = p.finish(&mut rows);
                }
                (p, rows, parsed)
            })
            .await
            .map_err(|e| ApiError::internal(format!("the import task failed: {e}")))?;
            parser = Some(p);
            // Rows completed before an error are still written.
            for row in rows {
                up.row(row).await?;
            }
            if let Err(e) = parsed {
                up.flush().await?;
                return Err(import_error(e));
            }
            if last {
                break;
            }
        }
    } else {
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await.transpose().map_err(body_error)? {
            if buf.len() + chunk.len() > limit {
                return Err(upload_too_large(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        let rows = tokio::task::spawn_blocking(move || {
            let items: Vec<Value> = serde_json::from_slice(&buf).map_err(|e| {
                ApiError::bad_request(
                    "invalid_json",
                    format!("the body must be a JSON array of contacts: {e}"),
                )
            })?;
            drop(buf);
            import::json_rows(&items, &opts).map_err(import_error)
        })
        .await
        .map_err(|e| ApiError::internal(format!("the import task failed: {e}")))??;
        for row in rows {
            up.row(row).await?;
        }
    }
    up.flush().await?;
    let report = up.report;
    if report.accepted > 0 {
        s.campaign_wake.notify_one();
    }
    Ok(Json(report))
}

/// The CSV template of a dial list (`text/csv`).
#[utoipa::path(get, path = "/campaigns/csv-template", tag = "campaigns",
    responses((status = 200, content_type = "text/csv", body = String)))]
async fn csv_template(caller: Caller) -> ApiResult<Response> {
    caller.require(Permission::CampaignsRead)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"contacts.csv\"",
            ),
        ],
        import::CSV_TEMPLATE,
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// Contacts.

/// A contact as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContactView {
    /// `ct_` + 24 hex digits.
    pub id: String,
    /// Its campaign.
    pub campaign_id: String,
    /// E.164.
    pub phone: String,
    /// A name.
    pub name: Option<String>,
    /// Its own zone as given.
    pub timezone: Option<String>,
    /// The zone its calling windows are read in (its own, the number's, or the campaign's
    /// default).
    pub resolved_tz: String,
    /// Script variables.
    pub variables: BTreeMap<String, String>,
    /// Higher first.
    pub priority: i64,
    /// `queued`, `dialing`, `completed`, `failed`, `suppressed` or `exhausted`.
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When it is due (queued; RFC 3339).
    pub next_attempt_at: Option<String>,
    /// µs.
    pub next_attempt_at_us: Option<i64>,
    /// The last attempt's outcome.
    pub last_outcome: Option<String>,
    /// A short code of why it is in its status (`window`, `retry`, `number_cap`,
    /// `suppressed`...).
    pub reason_code: Option<String>,
    /// The sentence behind it (e.g. until when it is outside its window).
    pub reason: Option<String>,
    /// The upload line (CSV) or index (JSON) it came from.
    pub line: Option<i64>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Its attempts, oldest first (on `GET /v1/campaigns/{id}/contacts/{contact_id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_history: Option<Vec<AttemptView>>,
}

impl ContactView {
    fn new(c: Contact, attempts: Option<Vec<AttemptView>>) -> ContactView {
        let queued = c.status == ContactStatus::Queued;
        ContactView {
            id: c.id,
            campaign_id: c.campaign_id,
            phone: c.phone,
            name: c.name,
            timezone: c.timezone,
            resolved_tz: c.resolved_tz,
            variables: c.variables,
            priority: c.priority,
            status: c.status.as_str().to_owned(),
            attempts: c.attempts,
            next_attempt_at: queued.then(|| rfc3339(c.next_attempt_at_us)),
            next_attempt_at_us: queued.then_some(c.next_attempt_at_us),
            last_outcome: c.last_outcome,
            reason_code: c.reason_code,
            reason: c.reason,
            line: c.line,
            created_at: rfc3339(c.created_at_us),
            updated_at: rfc3339(c.updated_at_us),
            attempt_history: attempts,
        }
    }
}

/// One attempt of a contact.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// 1, 2, ...
    pub attempt: u32,
    /// Its call (`/v1/calls/{id}`).
    pub call_id: Option<String>,
    /// The trunk it used.
    pub trunk_id: Option<String>,
    /// The node that dialed it.
    pub node_id: String,
    /// Claimed (RFC 3339).
    pub claimed_at: String,
    /// Ended (RFC 3339).
    pub ended_at: Option<String>,
    /// The call's outcome.
    pub outcome: Option<String>,
    /// The retry rule that fired, e.g. `busy: retry 2 of 3 after 1200 s`.
    pub rule: Option<String>,
}

impl From<crate::store::campaign::Attempt> for AttemptView {
    fn from(a: crate::store::campaign::Attempt) -> AttemptView {
        AttemptView {
            attempt: a.attempt,
            call_id: a.call_id,
            trunk_id: a.trunk_id,
            node_id: a.node_id,
            claimed_at: rfc3339(a.claimed_at_us),
            ended_at: a.ended_at_us.map(rfc3339),
            outcome: a.outcome,
            rule: a.rule,
        }
    }
}

/// `{"items": [...], "next_cursor": ...}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContactList {
    /// In upload order.
    pub items: Vec<ContactView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /v1/campaigns/{id}/contacts`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ContactQuery {
    /// Only this status.
    pub status: Option<String>,
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
}

/// A campaign's contacts in upload order (optionally of one status).
#[utoipa::path(get, path = "/campaigns/{id}/contacts", tag = "campaigns",
    params(("id" = String, Path, description = "campaign id"), ContactQuery),
    responses((status = 200, body = ContactList), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn list_contacts(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ContactQuery>,
) -> ApiResult<Json<ContactList>> {
    caller.require(Permission::CampaignsRead)?;
    let status = q
        .status
        .as_deref()
        .map(|st| {
            ContactStatus::parse(st).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("status: unknown status {:?}", quote(st)),
                )
            })
        })
        .transpose()?;
    let limit = page_limit(q.limit)?;
    let campaign = campaign_of(&s, &caller, &id).await?;
    let scope = json!([
        caller.tenant_id,
        campaign.id,
        status.map(ContactStatus::as_str)
    ])
    .to_string();
    let position = open_cursor("contacts", &scope, q.cursor.as_deref())?;
    let page = s
        .store
        .list_contacts(&campaign.id, status, position.as_deref(), limit)
        .await
        .map_err(|e| listing_error(e, position.is_some()))?;
    Ok(Json(ContactList {
        items: page
            .items
            .into_iter()
            .map(|c| ContactView::new(c, None))
            .collect(),
        next_cursor: page
            .next_cursor
            .map(|c| super::cursor::seal("contacts", &scope, &c)),
    }))
}

/// A contact with every attempt (call id, outcome, the rule that fired).
#[utoipa::path(get, path = "/campaigns/{id}/contacts/{contact_id}", tag = "campaigns",
    params(("id" = String, Path, description = "campaign id"),
        ("contact_id" = String, Path, description = "contact id")),
    responses((status = 200, body = ContactView), (status = 404, body = ErrorBody)))]
async fn get_contact(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, contact_id)): Path<(String, String)>,
) -> ApiResult<Json<ContactView>> {
    caller.require(Permission::CampaignsRead)?;
    let campaign = campaign_of(&s, &caller, &id).await?;
    if fields::id("contact_id", &contact_id).is_err() {
        return Err(ApiError::not_found("no such contact"));
    }
    let (contact, attempts) = match s.store.get_contact(&campaign.id, &contact_id).await {
        Ok(found) => found,
        Err(StoreError::NotFound) => return Err(ApiError::not_found("no such contact")),
        Err(e) => return Err(e.into()),
    };
    Ok(Json(ContactView::new(
        contact,
        Some(attempts.into_iter().map(AttemptView::from).collect()),
    )))
}

// ---------------------------------------------------------------------------------------------
// Preview.

/// What `POST /v1/campaigns/{id}/preview` takes.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// How far ahead to look (seconds, default 86400, at most 604800).
    pub span_s: Option<u32>,
}

/// Deferred contacts of one zone.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeferredZone {
    /// The IANA zone.
    pub timezone: String,
    /// How many.
    pub contacts: i64,
    /// When the first window in this zone opens after the span (RFC 3339; null: none in a
    /// year).
    pub next_opening: Option<String>,
    /// Why (e.g. `holiday 2026-12-25`, `outside calling hours`).
    pub why: String,
}

/// A dry run of the next `span_s` seconds: nothing is changed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// The campaign's status (a draft or paused campaign dials nobody until started).
    pub campaign_status: String,
    /// From (RFC 3339).
    pub from: String,
    /// Until (RFC 3339).
    pub until: String,
    /// Queued contacts due within the span that were examined.
    pub examined: i64,
    /// Whether more were due than examined (at most 50,000 are).
    pub truncated: bool,
    /// Due contacts whose calling window is open at some time in the span: they would be
    /// dialed, as fast as the limits allow.
    pub would_dial: i64,
    /// Of those, how many are in their window right now.
    pub open_now: i64,
    /// Due contacts whose window does not open within the span: deferred.
    pub deferred: i64,
    /// Deferred contacts by zone, with when their window opens.
    pub deferred_by_timezone: Vec<DeferredZone>,
    /// Due contacts whose number is on the do-not-call list: never dialed.
    pub suppressed: i64,
    /// Contacts not due within the span (retries later, or waiting), and those being dialed.
    pub not_due: i64,
    /// The last minute's dialing rate, or the campaign's `max_cps`: a bound on how many of
    /// `would_dial` the span can take.
    pub max_calls_in_span: i64,
}

/// A dry run: for the next 24 h (or `span_s`), how many queued contacts would be dialed,
/// deferred (until when, by zone) or suppressed, and why. Changes nothing.
#[utoipa::path(post, path = "/campaigns/{id}/preview", tag = "campaigns",
    request_body(content = Option<PreviewRequest>),
    params(("id" = String, Path, description = "campaign id")),
    responses((status = 200, body = Preview), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn preview_campaign(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<Preview>> {
    caller.require(Permission::CampaignsRead)?;
    let req: PreviewRequest = optional_json(&headers, &body)?;
    let span_s = req.span_s.unwrap_or(DEFAULT_PREVIEW_SPAN_S);
    if !(1..=MAX_PREVIEW_SPAN_S).contains(&span_s) {
        return Err(invalid(format!(
            "span_s: must be 1 to {MAX_PREVIEW_SPAN_S}"
        )));
    }
    let campaign = campaign_of(&s, &caller, &id).await?;
    let now = crate::clock::unix_us();
    let until = now + i64::from(span_s) * 1_000_000;
    let windows = campaign.settings.effective_windows();
    let holidays = &campaign.settings.holidays;
    let mut zones: BTreeMap<String, Option<jiff::tz::TimeZone>> = BTreeMap::new();
    let mut deferred: BTreeMap<String, (i64, Option<i64>, String)> = BTreeMap::new();
    let (mut examined, mut would_dial, mut open_now, mut suppressed) = (0i64, 0, 0, 0);
    let mut truncated = false;
    let mut after: Option<String> = None;
    loop {
        let page = s
            .store
            .due_contacts(&campaign.id, until, after.as_deref(), PAGE)
            .await?;
        let full = page.len() == PAGE as usize;
        after = page.last().map(|c| c.id.clone());
        let numbers: Vec<String> = page.iter().map(|c| c.phone.clone()).collect();
        let on_list: HashSet<String> = s
            .store
            .suppressed_among(&caller.tenant_id, &numbers)
            .await?
            .into_iter()
            .collect();
        for c in &page {
            if examined as usize >= MAX_PREVIEW_CONTACTS {
                truncated = true;
                break;
            }
            examined += 1;
            if on_list.contains(&c.phone) {
                suppressed += 1;
                continue;
            }
            let zone = zones
                .entry(c.resolved_tz.clone())
                .or_insert_with(|| jiff::tz::TimeZone::get(&c.resolved_tz).ok());
            let Some(zone) = zone.as_ref() else {
                // A zone this build does not know: the worker uses the campaign default.
                deferred
                    .entry(c.resolved_tz.clone())
                    .or_insert((0, None, "unknown time zone".to_owned()))
                    .0 += 1;
                continue;
            };
            let due = c.next_attempt_at_us.max(now);
            match window::state(&windows, holidays, zone, due) {
                window::WindowState::Open { .. } => {
                    would_dial += 1;
                    if due == now {
                        open_now += 1;
                    }
                }
                window::WindowState::Closed {
                    opens_at_us: Some(t),
                    ..
                } if t < until => would_dial += 1,
                window::WindowState::Closed { opens_at_us, why } => {
                    let e = deferred
                        .entry(c.resolved_tz.clone())
                        .or_insert((0, opens_at_us, why));
                    e.0 += 1;
                    e.1 = match (e.1, opens_at_us) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
        if truncated || !full {
            break;
        }
    }
    let counts = s.store.campaign_counts(&campaign.id, now).await?;
    let queued = counts.by_status.get("queued").copied().unwrap_or(0);
    let dialing = counts.by_status.get("dialing").copied().unwrap_or(0);
    let rate = if counts.attempts_last_minute > 0 {
        counts.attempts_last_minute as f64 / 60.0
    } else {
        campaign.settings.max_cps
    };
    let deferred_count = deferred.values().map(|d| d.0).sum();
    Ok(Json(Preview {
        campaign_status: campaign.status.as_str().to_owned(),
        from: rfc3339(now),
        until: rfc3339(until),
        examined,
        truncated,
        would_dial,
        open_now,
        deferred: deferred_count,
        deferred_by_timezone: deferred
            .into_iter()
            .map(|(timezone, (contacts, next, why))| DeferredZone {
                timezone,
                contacts,
                next_opening: next.map(rfc3339),
                why,
            })
            .collect(),
        suppressed,
        not_due: if truncated {
            dialing
        } else {
            (queued - examined).max(0) + dialing
        },
        max_calls_in_span: (rate * f64::from(span_s)).floor() as i64,
    }))
}

/// An optional JSON body: empty is the default; otherwise it must be JSON.
fn optional_json<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if !content_type_is(headers, &["application/json"]) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON with `Content-Type: application/json`",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        if text.contains("unknown field") {
            ApiError::bad_request("unknown_field", text)
        } else {
            ApiError::bad_request("invalid_json", text)
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Results.

/// One contact's result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultView {
    /// The contact.
    pub contact_id: String,
    /// E.164.
    pub phone: String,
    /// A name.
    pub name: Option<String>,
    /// The contact's status.
    pub status: String,
    /// The last attempt's outcome (its final outcome once the status is final).
    pub outcome: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Talk time over all attempts (ms).
    pub talk_ms: i64,
    /// What the script's `gather` steps collected, keyed by their `store_as` name (the last
    /// answered attempt's values win).
    pub answers: BTreeMap<String, String>,
    /// Digits the call collected outside a script.
    pub digits: Option<String>,
    /// The calls of its attempts, oldest first.
    pub call_ids: Vec<String>,
    /// Recordings of those calls (`/v1/recordings/{id}`).
    pub recording_ids: Vec<String>,
    /// Why it is in its status.
    pub reason: Option<String>,
}

/// `{"items": [...], "next_cursor": ...}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultList {
    /// One per contact, in upload order.
    pub items: Vec<ResultView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The variables a call's script collected (`result.script.variables`), less those the contact
/// gave it (its own variables, passed in unchanged).
fn collected(row: &ResultRow) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for a in &row.attempts {
        let vars = a
            .result
            .as_ref()
            .and_then(|r| r.get("script"))
            .and_then(|s| s.get("variables"))
            .and_then(Value::as_object);
        for (k, v) in vars.into_iter().flatten() {
            let Some(v) = v.as_str() else { continue };
            if row.contact.variables.get(k).is_some_and(|given| given == v) {
                continue;
            }
            // What the campaign worker gives every call (campaign::worker) is the contact's
            // own columns, not an answer: the export has them once, as columns.
            let given_by_worker = match k.as_str() {
                "phone" => Some(row.contact.phone.clone()),
                "name" => row.contact.name.clone(),
                "contact_id" => Some(row.contact.id.clone()),
                "campaign_id" => Some(row.contact.campaign_id.clone()),
                "attempt" => Some(a.attempt.attempt.to_string()),
                _ => None,
            };
            if given_by_worker.as_deref() == Some(v) {
                continue;
            }
            out.insert(k.clone(), v.to_owned());
        }
    }
    out
}

async fn result_view(s: &AppState, tenant: &str, row: ResultRow) -> Result<ResultView, ApiError> {
    let answers = collected(&row);
    let digits = row
        .attempts
        .iter()
        .rev()
        .filter_map(|a| a.result.as_ref()?.get("digits")?.as_str())
        .find(|d| !d.is_empty())
        .map(str::to_owned);
    let call_ids: Vec<String> = row
        .attempts
        .iter()
        .filter_map(|a| a.attempt.call_id.clone())
        .collect();
    let mut recording_ids = Vec::new();
    for call in &call_ids {
        match s.store.list_recordings(tenant, call).await {
            Ok(recs) => recording_ids.extend(recs.into_iter().map(|r| r.id)),
            // A call row that is gone (or not yet written) has no recordings.
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let c = row.contact;
    Ok(ResultView {
        talk_ms: row.attempts.iter().filter_map(|a| a.talk_ms).sum(),
        contact_id: c.id,
        phone: c.phone,
        name: c.name,
        status: c.status.as_str().to_owned(),
        outcome: c.last_outcome,
        attempts: c.attempts,
        answers,
        digits,
        call_ids,
        recording_ids,
        reason: c.reason,
    })
}

/// Results, one row per contact: JSON pages, or with `Accept: text/csv` the whole campaign as
/// one CSV (streamed; no cell is a spreadsheet formula).
#[utoipa::path(get, path = "/campaigns/{id}/results", tag = "campaigns",
    params(("id" = String, Path, description = "campaign id"), PageQuery),
    responses((status = 200, body = ResultList,
        description = "JSON; with `Accept: text/csv`, a CSV of every contact"),
        (status = 404, body = ErrorBody)))]
async fn campaign_results(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    caller.require(Permission::CampaignsRead)?;
    let campaign = campaign_of(&s, &caller, &id).await?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.to_ascii_lowercase().contains("text/csv"));
    if wants_csv {
        return results_csv(s, caller, campaign).await;
    }
    let limit = page_limit(q.limit)?;
    let scope = json!([caller.tenant_id, campaign.id]).to_string();
    let position = open_cursor("results", &scope, q.cursor.as_deref())?;
    let page = s
        .store
        .campaign_results(&campaign.id, position.as_deref(), limit)
        .await
        .map_err(|e| listing_error(e, position.is_some()))?;
    let mut items = Vec::with_capacity(page.items.len());
    for row in page.items {
        items.push(result_view(&s, &caller.tenant_id, row).await?);
    }
    Ok(Json(ResultList {
        items,
        next_cursor: page
            .next_cursor
            .map(|c| super::cursor::seal("results", &scope, &c)),
    })
    .into_response())
}

/// The fixed columns of the results CSV (then one per collected variable, then
/// `recording_ids`).
const RESULT_COLUMNS: [&str; 10] = [
    "contact_id",
    "phone",
    "name",
    "status",
    "outcome",
    "attempts",
    "talk_ms",
    "reason",
    "digits",
    "call_ids",
];

/// The results CSV: a first pass over the results finds the variable columns (before anything
/// is sent, so an error is still a clean error response), a second streams the rows.
async fn results_csv(s: AppState, caller: Caller, campaign: Campaign) -> ApiResult<Response> {
    let mut names = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = s
            .store
            .campaign_results(&campaign.id, cursor.as_deref(), PAGE)
            .await?;
        for row in &page.items {
            for k in collected(row).into_keys() {
                if names.len() < MAX_RESULT_COLUMNS || names.contains(&k) {
                    names.insert(k);
                }
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let variables: Vec<String> = names.into_iter().collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let campaign_id = campaign.id.clone();
    tokio::spawn(async move {
        // Every cell goes through `export`, which neutralises what a spreadsheet would read as
        // a formula (a name `=cmd|...`, a gathered answer `+1`...).
        let mut out = export::CsvWriter::new();
        let mut header: Vec<&str> = RESULT_COLUMNS.to_vec();
        header.extend(variables.iter().map(String::as_str));
        header.push("recording_ids");
        out.row(&header);
        let mut cursor: Option<String> = None;
        loop {
            let page = match s
                .store
                .campaign_results(&campaign_id, cursor.as_deref(), PAGE)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(campaign_id = %campaign_id, error = %e, "results CSV: the store failed mid-way");
                    let _ = tx.send(Err(std::io::Error::other("store error"))).await;
                    return;
                }
            };
            for row in page.items {
                let v = match result_view(&s, &caller.tenant_id, row).await {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::error!(campaign_id = %campaign_id, error = %e, "results CSV: a row failed");
                        let _ = tx.send(Err(std::io::Error::other("store error"))).await;
                        return;
                    }
                };
                let attempts = v.attempts.to_string();
                let talk = v.talk_ms.to_string();
                let calls = v.call_ids.join(" ");
                let recordings = v.recording_ids.join(" ");
                out.text(&v.contact_id)
                    .text(&v.phone)
                    .text(v.name.as_deref().unwrap_or(""))
                    .text(&v.status)
                    .text(v.outcome.as_deref().unwrap_or(""))
                    .number(&attempts)
                    .number(&talk)
                    .text(v.reason.as_deref().unwrap_or(""))
                    .text(v.digits.as_deref().unwrap_or(""))
                    .text(&calls);
                for name in &variables {
                    out.text(v.answers.get(name).map(String::as_str).unwrap_or(""));
                }
                out.text(&recordings).end_row();
                if out.len() >= 60 * 1024 {
                    let chunk = out.take().into_bytes();
                    if tx.send(Ok(chunk)).await.is_err() {
                        return; // The client went away.
                    }
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        if !out.is_empty() {
            let _ = tx.send(Ok(out.into_string().into_bytes())).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let disposition = format!("attachment; filename=\"{}-results.csv\"", campaign.id);
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// Activity over time (the dashboard's charts).

/// Most buckets one activity answer holds.
const MAX_ACTIVITY_BUCKETS: i64 = 2000;

/// The span and width of `GET /v1/campaigns/{id}/activity`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    /// Bucket width in seconds (10 to 86400). Default: the smallest whole minute that keeps
    /// the span within 120 buckets.
    pub bucket_s: Option<u32>,
    /// Start (RFC 3339 or µs since the epoch). Default: when the campaign started (or was
    /// created), rounded down to a bucket.
    pub from: Option<String>,
    /// End, exclusive. Default: now (or when the campaign ended).
    pub to: Option<String>,
}

/// One bucket of the activity.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActivityBucketView {
    /// Start of the bucket, RFC 3339.
    pub start: String,
    /// The same, µs since the epoch.
    pub start_us: i64,
    /// Attempts started (calls placed) in the bucket.
    pub started: i64,
    /// Attempts that ended in the bucket, by outcome (`answered`, `busy`, ...).
    pub ended: BTreeMap<String, i64>,
}

/// Calls placed and outcomes over time.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActivityView {
    /// Bucket width in seconds.
    pub bucket_s: i64,
    /// Start of the first bucket, RFC 3339.
    pub from: String,
    /// End of the span (exclusive), RFC 3339.
    pub to: String,
    /// Every bucket of the span, oldest first, empty ones included.
    pub buckets: Vec<ActivityBucketView>,
}

/// The campaign's calls placed and ended (by outcome) per time bucket: its calls per minute
/// and outcomes over time.
#[utoipa::path(get, path = "/campaigns/{id}/activity", tag = "campaigns",
    params(("id" = String, Path, description = "campaign id"), ActivityQuery),
    responses((status = 200, body = ActivityView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn campaign_activity(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ActivityQuery>,
) -> ApiResult<Json<ActivityView>> {
    caller.require(Permission::CampaignsRead)?;
    let campaign = campaign_of(&s, &caller, &id).await?;
    let now = crate::clock::unix_us();
    let to_us = match &q.to {
        Some(t) => super::calls::parse_time("to", t)?,
        None => campaign
            .ended_at_us
            .unwrap_or(now)
            .min(now)
            .saturating_add(1),
    };
    let given_from = q
        .from
        .as_deref()
        .map(|t| super::calls::parse_time("from", t))
        .transpose()?;
    let from_guess = given_from.unwrap_or(campaign.started_at_us.unwrap_or(campaign.created_at_us));
    if to_us <= from_guess {
        return Err(ApiError::bad_request(
            "invalid_query",
            "to: must be after from",
        ));
    }
    let bucket_s = match q.bucket_s {
        Some(b) if (10..=86_400).contains(&b) => i64::from(b),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "bucket_s: must be 10 to 86400",
            ));
        }
        // Whole minutes, at most 120 buckets (at most a day each: longer spans are refused).
        None => ((to_us.saturating_sub(from_guess) / 1_000_000 / 120 / 60).saturating_add(1) * 60)
            .min(86_400),
    };
    let bucket_us = bucket_s * 1_000_000;
    let from_us = from_guess.div_euclid(bucket_us).saturating_mul(bucket_us);
    let n = to_us.saturating_sub(from_us).saturating_add(bucket_us - 1) / bucket_us;
    if n > MAX_ACTIVITY_BUCKETS {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("the span holds {n} buckets of {bucket_s} s; at most {MAX_ACTIVITY_BUCKETS}"),
        ));
    }
    let found = s
        .store
        .campaign_activity(&campaign.id, bucket_us, from_us, to_us)
        .await?;
    let mut found = found.into_iter().peekable();
    let mut buckets = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for i in 0..n {
        let start_us = from_us + i * bucket_us;
        let mut b = ActivityBucketView {
            start: rfc3339(start_us),
            start_us,
            started: 0,
            ended: BTreeMap::new(),
        };
        while let Some(f) = found.next_if(|f| f.start_us <= start_us) {
            if f.start_us == start_us {
                b.started = f.started;
                b.ended = f.ended;
            }
        }
        buckets.push(b);
    }
    Ok(Json(ActivityView {
        bucket_s,
        from: rfc3339(from_us),
        to: rfc3339(to_us),
        buckets,
    }))
}
