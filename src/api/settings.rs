//! `/v1/settings/limits`: the tenant's campaign limits (admin and owner keys). The system-wide
//! limits are `serve` flags; the worker applies the lowest of every limit in force.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiResult, ErrorBody};
use super::fields::invalid;
use crate::store::Role;
use crate::store::campaign::TenantLimits;

/// Largest tenant `max_concurrent`.
pub const MAX_TENANT_CONCURRENT: u32 = 100_000;
/// Largest tenant `max_cps`.
pub const MAX_TENANT_CPS: f64 = 10_000.0;
/// Largest `number_cap`.
pub const MAX_NUMBER_CAP: u32 = 100;
/// `number_cap_window_s` bounds: a minute to 30 days.
pub const NUMBER_CAP_WINDOW_S: std::ops::RangeInclusive<u32> = 60..=30 * 86_400;

/// This area's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_limits, put_limits))
}

/// The tenant's campaign limits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsView {
    /// Live campaign calls at most, across the tenant's campaigns and nodes (1 to 100000;
    /// null: only the system limit).
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// New campaign calls per second at most (above 0, at most 10000; null: unlimited).
    #[serde(default)]
    pub max_cps: Option<f64>,
    /// Attempts per number within `number_cap_window_s`, across the tenant's campaigns (1 to
    /// 100). Default 3.
    #[serde(default = "default_cap")]
    pub number_cap: u32,
    /// That window (seconds, 60 to 2592000). Default 86400.
    #[serde(default = "default_window")]
    pub number_cap_window_s: u32,
}

fn default_cap() -> u32 {
    TenantLimits::default().number_cap
}
fn default_window() -> u32 {
    TenantLimits::default().number_cap_window_s
}

impl From<TenantLimits> for LimitsView {
    fn from(l: TenantLimits) -> LimitsView {
        LimitsView {
            max_concurrent: l.max_concurrent,
            max_cps: l.max_cps,
            number_cap: l.number_cap,
            number_cap_window_s: l.number_cap_window_s,
        }
    }
}

/// Admin and owner keys only: these limits bound every campaign of the tenant.
fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if matches!(caller.role, Role::Owner | Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "a {} key cannot read or change the tenant's limits (admin or owner only)",
            caller.role
        )))
    }
}

/// The tenant's campaign limits (defaults when never set).
#[utoipa::path(get, path = "/settings/limits", tag = "settings",
    responses((status = 200, body = LimitsView), (status = 403, body = ErrorBody)))]
async fn get_limits(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<LimitsView>> {
    require_admin(&caller)?;
    Ok(Json(s.store.tenant_limits(&caller.tenant_id).await?.into()))
}

/// Replaces the tenant's campaign limits.
#[utoipa::path(put, path = "/settings/limits", tag = "settings", request_body = LimitsView,
    responses((status = 200, body = LimitsView), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn put_limits(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<LimitsView>,
) -> ApiResult<Json<LimitsView>> {
    require_admin(&caller)?;
    if req
        .max_concurrent
        .is_some_and(|m| !(1..=MAX_TENANT_CONCURRENT).contains(&m))
    {
        return Err(invalid(format!(
            "max_concurrent: must be 1 to {MAX_TENANT_CONCURRENT}"
        )));
    }
    if req
        .max_cps
        .is_some_and(|c| !c.is_finite() || c <= 0.0 || c > MAX_TENANT_CPS)
    {
        return Err(invalid(format!(
            "max_cps: must be above 0 and at most {MAX_TENANT_CPS}"
        )));
    }
    if !(1..=MAX_NUMBER_CAP).contains(&req.number_cap) {
        return Err(invalid(format!(
            "number_cap: must be 1 to {MAX_NUMBER_CAP}"
        )));
    }
    if !NUMBER_CAP_WINDOW_S.contains(&req.number_cap_window_s) {
        return Err(invalid(format!(
            "number_cap_window_s: must be {} to {}",
            NUMBER_CAP_WINDOW_S.start(),
            NUMBER_CAP_WINDOW_S.end()
        )));
    }
    let limits = TenantLimits {
        max_concurrent: req.max_concurrent,
        max_cps: req.max_cps,
        number_cap: req.number_cap,
        number_cap_window_s: req.number_cap_window_s,
    };
    let stored = s
        .store
        .set_tenant_limits(&caller.tenant_id, &limits, crate::clock::unix_us())
        .await?;
    s.campaign_wake.notify_one();
    Ok(Json(stored.into()))
}
