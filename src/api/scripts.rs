//! `/v1/scripts`: versioned call scripts (docs/scripts.md). Every write is validated with the
//! crate's script validator; a failure is 422 `invalid_script` whose message starts with the
//! failing step's path (`steps[2].gather.max_digits: ...`). Prompts are plain names looked up
//! in the tenant's prompts directory (`steps[0].play.file: "/etc/passwd" is not a prompt name`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Permission};
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use super::{AppState, rfc3339};
use crate::store::ScriptRecord;

/// This area's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_scripts, create_script))
        .routes(routes!(get_script, replace_script, delete_script))
}

/// A script at one version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScriptView {
    /// `scr_` + 24 hex digits.
    pub id: String,
    /// Unique per tenant.
    pub name: String,
    /// 1 at creation, +1 at each PUT.
    pub version: i64,
    /// The script (docs/scripts.md).
    #[schema(value_type = Object)]
    pub body: Value,
    /// RFC 3339.
    pub created_at: String,
    /// µs since the epoch.
    pub created_at_us: i64,
    /// When this version was written (RFC 3339).
    pub updated_at: String,
    /// µs since the epoch.
    pub updated_at_us: i64,
}

impl From<ScriptRecord> for ScriptView {
    fn from(s: ScriptRecord) -> ScriptView {
        ScriptView {
            id: s.id,
            name: s.name,
            version: s.version,
            body: s.body,
            created_at: rfc3339(s.created_at_us),
            created_at_us: s.created_at_us,
            updated_at: rfc3339(s.updated_at_us),
            updated_at_us: s.updated_at_us,
        }
    }
}

/// `{"items": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScriptList {
    /// Current versions, by name.
    pub items: Vec<ScriptView>,
}

/// What `POST /v1/scripts` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScript {
    /// Unique per tenant.
    pub name: String,
    /// The script: `{"version": 1, "steps": [...]}`.
    #[schema(value_type = Object)]
    pub body: Value,
}

/// What `PUT /v1/scripts/{id}` takes (writes a new version).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceScript {
    /// A new name (omit to keep it).
    pub name: Option<String>,
    /// The new script.
    #[schema(value_type = Object)]
    pub body: Value,
}

/// `?version=N`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    /// A past version (default: the current one).
    pub version: Option<i64>,
}

/// 422 `invalid_script` naming the failing step, or `Ok`. Besides the validator's checks, an
/// API script may name prompts only by a plain name (`check_prompt_names`): the server is
/// shared, and a path would let a tenant play (or probe for) any file on it, including other
/// tenants' recordings. Used for stored scripts at write time and again at call time (rows
/// written before the rule existed are not trusted), and for inline scripts.
pub(crate) fn check_script(body: &Value) -> Result<crate::script::Script, ApiError> {
    let invalid =
        |e: crate::script::ScriptError| ApiError::unprocessable("invalid_script", e.to_string());
    // What bounds a script: this size (the body limit is far larger), then the validator.
    super::fields::script_body("body", body)?;
    let script = crate::script::parse_value(body).map_err(invalid)?;
    crate::script::check_prompt_names(&script).map_err(invalid)?;
    Ok(script)
}

fn check_name(name: &str) -> Result<&str, ApiError> {
    super::fields::name("name", name)
}

/// Lists the tenant's scripts (current versions).
#[utoipa::path(get, path = "/scripts", tag = "scripts",
    responses((status = 200, body = ScriptList), (status = 403, body = ErrorBody)))]
async fn list_scripts(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<ScriptList>> {
    caller.require(Permission::ScriptsRead)?;
    let items = s.store.list_scripts(&caller.tenant_id).await?;
    Ok(Json(ScriptList {
        items: items.into_iter().map(ScriptView::from).collect(),
    }))
}

/// Creates a script at version 1.
#[utoipa::path(post, path = "/scripts", tag = "scripts", request_body = CreateScript,
    responses((status = 201, body = ScriptView), (status = 409, body = ErrorBody),
        (status = 422, description = "invalid_script: the message names the failing step", body = ErrorBody)))]
async fn create_script(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateScript>,
) -> ApiResult<(StatusCode, Json<ScriptView>)> {
    caller.require(Permission::ScriptsWrite)?;
    let name = check_name(&req.name)?;
    check_script(&req.body)?;
    let script = s
        .store
        .create_script(&caller.tenant_id, name, &req.body, crate::clock::unix_us())
        .await?;
    Ok((StatusCode::CREATED, Json(script.into())))
}

/// A script, at its current version or at `?version=N`.
#[utoipa::path(get, path = "/scripts/{id}", tag = "scripts",
    params(("id" = String, Path, description = "script id"), VersionQuery),
    responses((status = 200, body = ScriptView), (status = 404, body = ErrorBody)))]
async fn get_script(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> ApiResult<Json<ScriptView>> {
    caller.require(Permission::ScriptsRead)?;
    let script = s
        .store
        .get_script(&caller.tenant_id, &id, q.version)
        .await?;
    Ok(Json(script.into()))
}

/// Writes a new version of a script.
#[utoipa::path(put, path = "/scripts/{id}", tag = "scripts", request_body = ReplaceScript,
    params(("id" = String, Path, description = "script id")),
    responses((status = 200, body = ScriptView), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn replace_script(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReplaceScript>,
) -> ApiResult<Json<ScriptView>> {
    caller.require(Permission::ScriptsWrite)?;
    let name = req.name.as_deref().map(check_name).transpose()?;
    check_script(&req.body)?;
    let script = s
        .store
        .update_script(
            &caller.tenant_id,
            &id,
            name,
            &req.body,
            crate::clock::unix_us(),
        )
        .await?;
    Ok(Json(script.into()))
}

/// Deletes a script (its versions stay readable for the calls that ran them).
#[utoipa::path(delete, path = "/scripts/{id}", tag = "scripts",
    params(("id" = String, Path, description = "script id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_script(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Permission::ScriptsWrite)?;
    s.store.delete_script(&caller.tenant_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
