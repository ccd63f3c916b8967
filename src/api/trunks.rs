//! `/v1/trunks`: SIP trunks (where calls to numbers go). The password is write-only: responses
//! say only `has_password`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Permission};
use super::error::{ApiError, ApiJson, ApiResult, ErrorBody};
use super::{AppState, rfc3339};
use crate::store::{Trunk, TrunkInput};

/// This area's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_trunks, create_trunk))
        .routes(routes!(get_trunk, replace_trunk, delete_trunk))
}

/// A trunk as shown (no password).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrunkView {
    /// `trk_` + 24 hex digits.
    pub id: String,
    /// Unique per tenant.
    pub name: String,
    /// `ip:port` of the carrier's SIP server.
    pub address: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// Digest user name.
    pub username: Option<String>,
    /// Whether a digest password is stored (it is never shown).
    pub has_password: bool,
    /// The user part of our From on calls through this trunk.
    pub from_user: Option<String>,
    /// Live campaign calls through this trunk at most (null: unlimited).
    pub max_concurrent: Option<u32>,
    /// New campaign calls per second through this trunk at most (null: unlimited).
    pub max_cps: Option<f64>,
    /// RFC 3339.
    pub created_at: String,
    /// µs since the epoch.
    pub created_at_us: i64,
    /// RFC 3339.
    pub updated_at: String,
    /// µs since the epoch.
    pub updated_at_us: i64,
}

impl From<Trunk> for TrunkView {
    fn from(t: Trunk) -> TrunkView {
        TrunkView {
            id: t.id,
            name: t.name,
            address: t.address,
            transport: t.transport,
            username: t.username,
            has_password: t.password.is_some(),
            from_user: t.from_user,
            max_concurrent: t.max_concurrent,
            max_cps: t.max_cps_milli.map(|m| f64::from(m) / 1000.0),
            created_at: rfc3339(t.created_at_us),
            created_at_us: t.created_at_us,
            updated_at: rfc3339(t.updated_at_us),
            updated_at_us: t.updated_at_us,
        }
    }
}

/// `{"items": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrunkList {
    /// The tenant's trunks by name.
    pub items: Vec<TrunkView>,
}

/// What `POST /v1/trunks` and `PUT /v1/trunks/{id}` take.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrunkRequest {
    /// Unique per tenant.
    pub name: String,
    /// `ip:port` (an IP literal: this version does no DNS).
    #[schema(example = "192.0.2.10:5060")]
    pub address: String,
    /// `udp` (default) or `tcp`.
    pub transport: Option<String>,
    /// Digest user name.
    pub username: Option<String>,
    /// Digest password (write-only; on PUT, omit it to keep the stored one).
    pub password: Option<String>,
    /// The user part of our From.
    pub from_user: Option<String>,
    /// Live campaign calls through this trunk at most, 1 to 10000 (omit: unlimited).
    pub max_concurrent: Option<u32>,
    /// New campaign calls per second through this trunk at most, 0.001 to 1000 (omit:
    /// unlimited).
    pub max_cps: Option<f64>,
}

impl TrunkRequest {
    fn into_input(self) -> Result<TrunkInput, ApiError> {
        use super::fields::{self, MAX_CREDENTIAL_BYTES};
        // Every field is checked when stored (CR/LF and other controls would otherwise reach a
        // SIP header at call time): docs/api.md "Field limits".
        let name = fields::name("name", &self.name)?.to_owned();
        if self.address.len() > 64 || self.address.parse::<SocketAddr>().is_err() {
            return Err(ApiError::unprocessable(
                "invalid_field",
                "address: not ip:port (an IP literal; this version does no DNS)",
            ));
        }
        for (field, value) in [
            ("username", &self.username),
            ("password", &self.password),
            ("from_user", &self.from_user),
        ] {
            if let Some(v) = value {
                fields::text(field, v, MAX_CREDENTIAL_BYTES)?;
            }
        }
        if let Some(from) = &self.from_user {
            check_from_user(from)?;
        }
        let transport = self
            .transport
            .unwrap_or_else(|| "udp".to_owned())
            .to_ascii_lowercase();
        if transport != "udp" && transport != "tcp" {
            return Err(ApiError::unprocessable(
                "invalid_field",
                "transport: must be udp or tcp",
            ));
        }
        if self
            .max_concurrent
            .is_some_and(|m| !(1..=MAX_TRUNK_CONCURRENT).contains(&m))
        {
            return Err(ApiError::unprocessable(
                "invalid_field",
                format!("max_concurrent: must be 1 to {MAX_TRUNK_CONCURRENT}"),
            ));
        }
        let max_cps_milli = self.max_cps.map(cps_milli).transpose()?;
        Ok(TrunkInput {
            name,
            address: self.address,
            transport,
            username: self.username,
            password: self.password,
            from_user: self.from_user,
            max_concurrent: self.max_concurrent,
            max_cps_milli,
            settings: Default::default(),
        })
    }
}

/// Largest `max_concurrent` of a trunk.
const MAX_TRUNK_CONCURRENT: u32 = 10_000;
/// Largest `max_cps` of a trunk.
const MAX_TRUNK_CPS: f64 = 1000.0;

/// A calls/s limit (0.001 to [`MAX_TRUNK_CPS`]) in thousandths, as the store keeps it.
fn cps_milli(cps: f64) -> Result<u32, ApiError> {
    if !cps.is_finite() || !(0.001..=MAX_TRUNK_CPS).contains(&cps) {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("max_cps: must be 0.001 to {MAX_TRUNK_CPS}"),
        ));
    }
    // In range, so the product fits a u32.
    Ok((cps * 1000.0).round() as u32)
}

/// `from_user` is a user part (`4420`) or a whole `sip:` URI; either must make a From URI
/// without headers or routing parameters.
fn check_from_user(from: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| ApiError::unprocessable("invalid_field", format!("from_user: {why}"));
    if from.contains(':') {
        let uri = sip::message::Uri::parse(from.as_bytes()).map_err(|_| invalid("not a URI"))?;
        crate::engine::target::check_routing(&uri).map_err(|e| invalid(&e.to_string()))
    } else if super::calls::valid_user(from) && !from.contains('?') {
        Ok(())
    } else {
        Err(invalid(
            "a user part (letters, digits, + - _ . and the like) or a sip: URI",
        ))
    }
}

/// Lists the tenant's trunks.
#[utoipa::path(get, path = "/trunks", tag = "trunks",
    responses((status = 200, body = TrunkList), (status = 403, body = ErrorBody)))]
async fn list_trunks(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<TrunkList>> {
    caller.require(Permission::TrunksRead)?;
    let items = s.store.list_trunks(&caller.tenant_id).await?;
    Ok(Json(TrunkList {
        items: items.into_iter().map(TrunkView::from).collect(),
    }))
}

/// Creates a trunk.
#[utoipa::path(post, path = "/trunks", tag = "trunks", request_body = TrunkRequest,
    responses((status = 201, body = TrunkView), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn create_trunk(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<TrunkRequest>,
) -> ApiResult<(StatusCode, Json<TrunkView>)> {
    caller.require(Permission::TrunksWrite)?;
    let input = req.into_input()?;
    let trunk = s
        .store
        .create_trunk(&caller.tenant_id, &input, crate::clock::unix_us())
        .await?;
    Ok((StatusCode::CREATED, Json(trunk.into())))
}

/// A trunk.
#[utoipa::path(get, path = "/trunks/{id}", tag = "trunks",
    params(("id" = String, Path, description = "trunk id")),
    responses((status = 200, body = TrunkView), (status = 404, body = ErrorBody)))]
async fn get_trunk(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TrunkView>> {
    caller.require(Permission::TrunksRead)?;
    Ok(Json(
        s.store.get_trunk(&caller.tenant_id, &id).await?.into(),
    ))
}

/// Replaces a trunk's fields (omit `password` to keep the stored one).
#[utoipa::path(put, path = "/trunks/{id}", tag = "trunks", request_body = TrunkRequest,
    params(("id" = String, Path, description = "trunk id")),
    responses((status = 200, body = TrunkView), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn replace_trunk(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<TrunkRequest>,
) -> ApiResult<Json<TrunkView>> {
    caller.require(Permission::TrunksWrite)?;
    let input = req.into_input()?;
    let trunk = s
        .store
        .update_trunk(&caller.tenant_id, &id, &input, crate::clock::unix_us())
        .await?;
    Ok(Json(trunk.into()))
}

/// Deletes a trunk.
#[utoipa::path(delete, path = "/trunks/{id}", tag = "trunks",
    params(("id" = String, Path, description = "trunk id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_trunk(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Permission::TrunksWrite)?;
    s.store.delete_trunk(&caller.tenant_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
