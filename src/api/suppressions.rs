//! `/v1/suppressions`: the tenant's do-not-call list. Numbers are kept in E.164; no campaign of
//! the tenant dials a number on it (the worker checks at each claim; adding a number also
//! moves the tenant's queued contacts with it to `suppressed`). Entries come from the API
//! (`source` `api`), CSV uploads and the calls' own `opt_out` steps (`opt_out`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Permission};
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use super::fields::{self, invalid};
use super::{AppState, rfc3339};
use crate::campaign::phone;
use crate::store::StoreError;
use crate::store::campaign::Suppression;

/// Most numbers of one `POST /v1/suppressions`.
pub const MAX_NUMBERS: usize = 10_000;
/// Longest `reason` (characters).
pub const MAX_REASON_CHARS: usize = 256;
/// Default and largest page.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// This area's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_suppressions, add_suppressions))
        .routes(routes!(delete_suppression))
}

/// A suppressed number as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuppressionView {
    /// E.164.
    pub number: String,
    /// Why.
    pub reason: Option<String>,
    /// `api`, `csv` or `opt_out`.
    pub source: String,
    /// RFC 3339.
    pub created_at: String,
    /// µs.
    pub created_at_us: i64,
}

impl From<Suppression> for SuppressionView {
    fn from(s: Suppression) -> SuppressionView {
        SuppressionView {
            number: s.number,
            reason: s.reason,
            source: s.source,
            created_at: rfc3339(s.created_at_us),
            created_at_us: s.created_at_us,
        }
    }
}

/// `{"items": [...], "next_cursor": ...}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuppressionList {
    /// By number.
    pub items: Vec<SuppressionView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// What `POST /v1/suppressions` takes: `{"number": "...", "reason": "..."}` or
/// `{"numbers": ["...", ...], "reason": "..."}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuppressRequest {
    /// One number.
    pub number: Option<String>,
    /// Or up to 10000 numbers.
    pub numbers: Option<Vec<String>>,
    /// Why (at most 256 characters).
    pub reason: Option<String>,
    /// The region numbers without `+` are read in (ISO 3166 alpha-2). Default `US`.
    pub region: Option<String>,
}

/// A number that was not added.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RefusedNumber {
    /// Its index in `numbers` (0 for `number`).
    pub index: usize,
    /// The first 64 characters given.
    pub number: String,
    /// Why.
    pub reason: String,
}

/// What `POST /v1/suppressions` did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuppressReport {
    /// The numbers as stored (E.164), in request order.
    pub added: Vec<String>,
    /// Numbers that could not be read.
    pub rejected: Vec<RefusedNumber>,
    /// Queued contacts of the tenant's campaigns now `suppressed`.
    pub contacts_suppressed: i64,
}

/// Query of `DELETE /v1/suppressions/{number}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RegionQuery {
    /// The region a number without `+` is read in. Default `US`.
    pub region: Option<String>,
}

fn region(given: Option<&str>) -> Result<String, ApiError> {
    let r = given.unwrap_or("US").to_ascii_uppercase();
    if r.len() != 2 || !phone::valid_region(&r) {
        return Err(invalid(
            "region: not a region code (ISO 3166 alpha-2, e.g. US, FR)",
        ));
    }
    Ok(r)
}

/// The tenant's do-not-call list, by number.
#[utoipa::path(get, path = "/suppressions", tag = "suppressions", params(ListQuery),
    responses((status = 200, body = SuppressionList), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn list_suppressions(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<SuppressionList>> {
    caller.require(Permission::CampaignsRead)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit: must be 1 to {MAX_LIMIT}"),
        ));
    }
    let scope = json!([caller.tenant_id]).to_string();
    let position = match q.cursor.as_deref() {
        Some(c) if c.len() <= 1024 => Some(super::cursor::open("suppressions", &scope, c)?),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "cursor: not a cursor of this listing",
            ));
        }
        None => None,
    };
    let page = match s
        .store
        .list_suppressions(&caller.tenant_id, position.as_deref(), limit)
        .await
    {
        Ok(p) => p,
        Err(StoreError::NotFound | StoreError::Corrupt(_)) if position.is_some() => {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "cursor: not a cursor of this listing",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Json(SuppressionList {
        items: page.items.into_iter().map(SuppressionView::from).collect(),
        next_cursor: page
            .next_cursor
            .map(|c| super::cursor::seal("suppressions", &scope, &c)),
    }))
}

/// Adds numbers to the do-not-call list (idempotent: a number already on it keeps its entry).
/// One `number` that cannot be read is 422 `invalid_number`; in `numbers`, such entries are
/// reported in `rejected` and the others added.
#[utoipa::path(post, path = "/suppressions", tag = "suppressions", request_body = SuppressRequest,
    responses((status = 200, body = SuppressReport), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "invalid_field, invalid_number")))]
async fn add_suppressions(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<SuppressRequest>,
) -> ApiResult<Json<SuppressReport>> {
    caller.require(Permission::CampaignsWrite)?;
    let region = region(req.region.as_deref())?;
    let reason = match req
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => {
            return Err(invalid(format!(
                "reason: at most {MAX_REASON_CHARS} characters"
            )));
        }
        Some(r) => Some(fields::text("reason", r, 4 * MAX_REASON_CHARS)?.to_owned()),
        None => None,
    };
    let (numbers, single) = match (req.number, req.numbers) {
        (Some(n), None) => (vec![n], true),
        (None, Some(ns)) if !ns.is_empty() => (ns, false),
        (None, Some(_)) => return Err(invalid("numbers: at least one")),
        _ => return Err(invalid("give `number` or `numbers` (one of them)")),
    };
    if numbers.len() > MAX_NUMBERS {
        return Err(invalid(format!("numbers: at most {MAX_NUMBERS}")));
    }
    let mut added = Vec::with_capacity(numbers.len());
    let mut rejected = Vec::new();
    for (index, raw) in numbers.iter().enumerate() {
        let normalized = if raw.len() > 64 {
            Err("not a phone number (longer than 64 bytes)".to_owned())
        } else {
            phone::normalize(raw.trim(), &region).map_err(|e| e.to_string())
        };
        match normalized {
            Ok(e164) => added.push(e164),
            Err(why) => rejected.push(RefusedNumber {
                index,
                number: raw.chars().take(64).collect(),
                reason: why,
            }),
        }
    }
    if single && let Some(r) = rejected.first() {
        return Err(ApiError::unprocessable(
            "invalid_number",
            format!("number: {}", r.reason),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    added.retain(|n| seen.insert(n.clone()));
    let entries: Vec<(String, Option<String>)> =
        added.iter().map(|n| (n.clone(), reason.clone())).collect();
    let contacts_suppressed = if entries.is_empty() {
        0
    } else {
        s.store
            .suppress(&caller.tenant_id, &entries, "api", crate::clock::unix_us())
            .await?
    };
    Ok(Json(SuppressReport {
        added,
        rejected,
        contacts_suppressed,
    }))
}

/// Removes a number from the do-not-call list (contacts it suppressed stay `suppressed`).
#[utoipa::path(delete, path = "/suppressions/{number}", tag = "suppressions",
    params(("number" = String, Path, description = "the number (E.164; `+` written %2B)"), RegionQuery),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "invalid_number")))]
async fn delete_suppression(
    State(s): State<AppState>,
    caller: Caller,
    Path(number): Path<String>,
    ApiQuery(q): ApiQuery<RegionQuery>,
) -> ApiResult<StatusCode> {
    caller.require(Permission::CampaignsWrite)?;
    let region = region(q.region.as_deref())?;
    if number.len() > 64 {
        return Err(ApiError::unprocessable(
            "invalid_number",
            "number: not a phone number (longer than 64 bytes)",
        ));
    }
    let e164 = phone::normalize(number.trim(), &region)
        .map_err(|e| ApiError::unprocessable("invalid_number", format!("number: {e}")))?;
    match s.store.delete_suppression(&caller.tenant_id, &e164).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(ApiError::not_found("the number is not on the list")),
        Err(e) => Err(e.into()),
    }
}
