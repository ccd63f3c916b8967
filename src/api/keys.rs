//! `/v1/keys`: list, create (the secret is shown once) and revoke API keys.
//!
//! A key may not create or revoke a key above its own role, and only an owner key creates or
//! revokes owner keys ([`auth::may_grant`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{self, Caller, Permission};
use super::error::{ApiError, ApiJson, ApiResult, ErrorBody};
use super::{AppState, rfc3339};
use crate::store::{ApiKey, NewApiKey, Role};

/// This area's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

/// A key as listed (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// `key_` + 24 hex digits.
    pub id: String,
    /// A label.
    pub name: String,
    /// `owner`, `admin`, `operator`, `analyst` or `viewer`.
    pub role: String,
    /// The first 10 characters of the secret.
    pub prefix: String,
    /// RFC 3339.
    pub created_at: String,
    /// µs since the epoch.
    pub created_at_us: i64,
    /// When it was revoked (RFC 3339), if it was.
    pub revoked_at: Option<String>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> KeyView {
        KeyView {
            id: k.id,
            name: k.name,
            role: k.role.as_str().to_owned(),
            prefix: k.prefix,
            created_at: rfc3339(k.created_at_us),
            created_at_us: k.created_at_us,
            revoked_at: k.revoked_at_us.map(rfc3339),
        }
    }
}

/// A new key: its fields and, this once, its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The key.
    #[serde(flatten)]
    pub key: KeyView,
    /// `cp_` + 40 hex digits: shown only in this response; store it now.
    pub secret: String,
}

/// `{"items": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    /// The tenant's keys, oldest first (revoked ones included).
    pub items: Vec<KeyView>,
}

/// What `POST /v1/keys` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label.
    pub name: String,
    /// `owner`, `admin`, `operator`, `analyst` or `viewer`; no higher than the caller's.
    #[schema(value_type = String, example = "operator")]
    pub role: Role,
}

/// Lists the tenant's keys.
#[utoipa::path(get, path = "/keys", tag = "keys",
    responses((status = 200, body = KeyList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_keys(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<KeyList>> {
    caller.require(Permission::KeysRead)?;
    let keys = s.store.list_api_keys(&caller.tenant_id).await?;
    Ok(Json(KeyList {
        items: keys.into_iter().map(KeyView::from).collect(),
    }))
}

/// Creates a key and returns its secret (once).
#[utoipa::path(post, path = "/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn create_key(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    caller.require(Permission::KeysWrite)?;
    if !auth::may_grant(caller.role, req.role) {
        return Err(ApiError::forbidden(format!(
            "a {} key may not create a {} key",
            caller.role, req.role
        )));
    }
    let name = super::fields::name("name", &req.name)?;
    let generated = auth::generate_key()
        .map_err(|e| ApiError::internal(format!("no entropy for a key: {e}")))?;
    let key = s
        .store
        .create_api_key(
            &NewApiKey {
                tenant_id: caller.tenant_id.clone(),
                role: req.role,
                name: name.to_owned(),
                prefix: generated.prefix,
                secret_sha256: generated.secret_sha256,
            },
            crate::clock::unix_us(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: key.into(),
            secret: generated.secret,
        }),
    ))
}

/// Revokes a key (it authenticates nothing from then on).
#[utoipa::path(delete, path = "/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "key id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_key(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Permission::KeysWrite)?;
    let keys = s.store.list_api_keys(&caller.tenant_id).await?;
    let target = keys
        .iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::not_found("no such key"))?;
    if !auth::may_grant(caller.role, target.role) {
        return Err(ApiError::forbidden(format!(
            "a {} key may not revoke a {} key",
            caller.role, target.role
        )));
    }
    s.store
        .revoke_api_key(&caller.tenant_id, &id, crate::clock::unix_us())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The key making the request: its tenant, id, role and what the role may do.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The key's tenant.
    pub tenant_id: String,
    /// The key's id.
    pub key_id: String,
    /// Its role.
    #[schema(value_type = String, example = "viewer")]
    pub role: Role,
    /// Every permission the role has (`calls:read`, ...), as docs/api.md "Roles" lists them.
    pub permissions: Vec<&'static str>,
}

/// Who the key is (any valid key): the dashboard disables what the role may not do.
#[utoipa::path(get, path = "/me", tag = "keys",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn whoami(caller: Caller) -> Json<Me> {
    Json(Me {
        permissions: Permission::ALL
            .iter()
            .filter(|p| auth::allows(caller.role, **p))
            .map(|p| p.as_str())
            .collect(),
        tenant_id: caller.tenant_id,
        key_id: caller.key_id,
        role: caller.role,
    })
}
