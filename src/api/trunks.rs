//! `/v1/trunks`: SIP trunks (where calls to numbers go, and where inbound calls come from),
//! and their inbound routes (`/v1/trunks/{id}/routes`: DID → script). Secrets are write-only:
//! responses say only `has_password`. Every change wakes the inbound router and the
//! registrar ([`AppState::trunks_changed`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Permission};
use super::error::{ApiError, ApiJson, ApiResult, ErrorBody};
use super::{AppState, rfc3339};
use crate::store::{StoreError, Trunk, TrunkInput, TrunkRoute};
use crate::trunk::TrunkSettings;

/// This area's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_trunks, create_trunk))
        .routes(routes!(get_trunk, replace_trunk, patch_trunk, delete_trunk))
        .routes(routes!(list_routes, create_route))
        .routes(routes!(delete_route))
}

/// A trunk as shown: every setting except the password, its limits and its live state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrunkView {
    /// `trk_` + 24 hex digits.
    pub id: String,
    /// Unique per tenant.
    pub name: String,
    /// The first of `hosts` (kept for clients written before `hosts`).
    pub address: String,
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    /// Whether a digest password is stored (it is never shown).
    pub has_password: bool,
    /// Live campaign calls through this trunk at most (null: unlimited).
    pub max_concurrent: Option<u32>,
    /// New campaign calls per second through this trunk at most (null: unlimited).
    pub max_cps: Option<f64>,
    /// Every other setting, as in [`TrunkRequest`] (`hosts`, `register`, `headers`...).
    #[schema(value_type = Object)]
    #[serde(flatten)]
    pub settings: Map<String, Value>,
    /// Registration and health on this node: `{"registration": {"state": "registered",
    /// "expires_at_us": ..., "granted_s": ...}, "health": "up", "health_since_us": ...}`.
    #[schema(value_type = Object)]
    pub state: Value,
    /// RFC 3339.
    pub created_at: String,
    /// µs since the epoch.
    pub created_at_us: i64,
    /// RFC 3339.
    pub updated_at: String,
    /// µs since the epoch.
    pub updated_at_us: i64,
}

impl TrunkView {
    fn new(t: Trunk, s: &AppState) -> TrunkView {
        let state = serde_json::to_value(s.trunk_states.get(&t.id)).unwrap_or(Value::Null);
        let mut settings = match serde_json::to_value(&t.settings) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        // Shown once, by the fields above.
        settings.remove("transport");
        TrunkView {
            has_password: t.password.is_some(),
            id: t.id,
            name: t.name,
            address: t.address,
            transport: t.transport,
            max_concurrent: t.max_concurrent,
            max_cps: t.max_cps_milli.map(|m| f64::from(m) / 1000.0),
            settings,
            state,
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

/// What `POST /v1/trunks`, `PUT /v1/trunks/{id}` and `PATCH /v1/trunks/{id}` take (PATCH:
/// any subset, merged into the stored trunk; `null` resets a field). Unknown fields: 400
/// `unknown_field`, as everywhere in the API.
/// docs/trunks.md explains each field and shows three carrier shapes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // The schema of the body; the handler reads it as JSON (see `parse_request`).
pub struct TrunkRequest {
    /// Unique per tenant.
    name: String,
    /// Where calls go, in order: `host`, `host:port`, `[v6]:port`, optionally `;weight=N`.
    /// An IP literal today; a domain name once DNS resolution lands.
    #[schema(example = json!(["192.0.2.10:5060"]))]
    hosts: Option<Vec<String>>,
    /// One host (clients written before `hosts`): the same as `hosts: [address]`.
    address: Option<String>,
    /// Try `hosts` in a weighted random order (`;weight=N`) instead of in order.
    weighted: Option<bool>,
    /// `udp` (default), `tcp` or `tls`.
    transport: Option<String>,
    /// `sip:proxy.example.net;lr`: every request goes there first.
    outbound_proxy: Option<String>,
    /// Digest user name (and the default registered user).
    username: Option<String>,
    /// Digest password (write-only; omit on PUT/PATCH to keep the stored one).
    password: Option<String>,
    /// The realm the credentials are for (omit: any).
    realm: Option<String>,
    /// The digest user name when it differs from `username`.
    auth_username: Option<String>,
    /// Register with the trunk.
    register: Option<bool>,
    /// Requested registration expiry, 60 to 86400 s (default 3600).
    register_expires_s: Option<u32>,
    /// The user part of the registered Contact (default: `username`).
    contact_user: Option<String>,
    /// IP authentication: inbound calls accepted from these addresses or CIDRs.
    allowed_sources: Option<Vec<String>>,
    /// Codecs in order (`PCMU`, `PCMA`).
    codecs: Option<Vec<String>>,
    /// Our From user (or a whole `sip:` URI).
    from_user: Option<String>,
    /// `from` (default), `pai` (P-Asserted-Identity too) or `pai_private` (PAI, `Privacy: id`,
    /// anonymous From).
    caller_id_mode: Option<String>,
    /// Caller ids picked per callee (same area code first, then the same country, then any,
    /// round robin), E.164.
    caller_id_pool: Option<Vec<String>>,
    /// A Diversion header value (RFC 5806).
    diversion: Option<String>,
    /// Ring timeout of calls through the trunk, 1 to 300 s.
    ring_timeout_s: Option<u32>,
    /// Custom header fields, `[["X-Account", "42"]]`, at most 16.
    #[schema(value_type = Option<Vec<Vec<String>>>)]
    headers: Option<Vec<(String, String)>>,
    /// `sip` (default), `sip_user_phone` or `tel`.
    uri_style: Option<String>,
    /// `off` (default), `offer` or `require`.
    srtp: Option<String>,
    /// The address in Via, Contact and SDP of this trunk's calls.
    advertise: Option<String>,
    /// OPTIONS ping interval: 0 (none) or 5 to 3600 s.
    options_interval_s: Option<u32>,
    /// PEM file of the CAs of the trunk's TLS certificate.
    tls_ca_file: Option<String>,
    /// The TLS server name (SNI) when it differs from the host.
    tls_server_name: Option<String>,
    /// Live campaign calls through this trunk at most, 1 to 10000 (omit: unlimited).
    max_concurrent: Option<u32>,
    /// New campaign calls per second through this trunk at most, 0.001 to 1000 (omit:
    /// unlimited).
    max_cps: Option<f64>,
}

/// The fields of a trunk request that are not [`TrunkSettings`].
const OWN_FIELDS: [&str; 4] = ["name", "address", "max_concurrent", "max_cps"];

/// A trunk request body (an object, as [`TrunkRequest`] describes) made into a store input,
/// every field checked.
fn parse_request(mut body: Map<String, Value>) -> Result<TrunkInput, ApiError> {
    use super::fields;
    let mut own = Map::new();
    for f in OWN_FIELDS {
        if let Some(v) = body.remove(f) {
            own.insert(f.to_owned(), v);
        }
    }
    let settings: TrunkSettings = match serde_json::from_value(Value::Object(body.clone())) {
        Ok(s) => s,
        Err(e) => {
            let text = e.to_string();
            if text.starts_with("unknown field") {
                // As every other body of the API (docs/api.md "Errors").
                return Err(ApiError::bad_request("unknown_field", text));
            }
            // serde names the value, not the field: find the field that fails on its own.
            let field = body
                .iter()
                .find(|(k, v)| {
                    let one = Map::from_iter([((*k).clone(), (*v).clone())]);
                    serde_json::from_value::<TrunkSettings>(Value::Object(one)).is_err()
                })
                .map_or_else(String::new, |(k, _)| format!("{k}: "));
            return Err(ApiError::unprocessable(
                "invalid_field",
                format!("{field}{text}"),
            ));
        }
    };
    let name = match own.get("name") {
        Some(Value::String(n)) => fields::name("name", n)?.to_owned(),
        _ => {
            return Err(ApiError::unprocessable(
                "invalid_field",
                "name: required, a string",
            ));
        }
    };
    let mut settings = settings;
    match own.get("address") {
        None | Some(Value::Null) => {}
        Some(Value::String(a)) => {
            if settings.hosts.is_empty() {
                settings.hosts.push(a.clone());
            } else if settings.hosts.first() != Some(a) {
                return Err(ApiError::unprocessable(
                    "invalid_field",
                    "address: give hosts or address (the first host), not two different ones",
                ));
            }
        }
        Some(_) => {
            return Err(ApiError::unprocessable(
                "invalid_field",
                "address: a string",
            ));
        }
    }
    // Text fields that reach SIP headers or digests: no control or bidi characters, 128
    // bytes (docs/api.md "Field limits"); then every field's own rule.
    for (field, value) in [
        ("username", &settings.username),
        ("password", &settings.password),
        ("from_user", &settings.from_user),
        ("auth_username", &settings.auth_username),
        ("realm", &settings.realm),
        ("contact_user", &settings.contact_user),
    ] {
        if let Some(v) = value {
            fields::text(field, v, fields::MAX_CREDENTIAL_BYTES)?;
        }
    }
    settings
        .check()
        .map_err(|e| ApiError::unprocessable("invalid_field", e.to_string()))?;
    let max_concurrent = match own.get("max_concurrent") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| (1..=MAX_TRUNK_CONCURRENT).contains(m))
                .ok_or_else(|| {
                    ApiError::unprocessable(
                        "invalid_field",
                        format!("max_concurrent: must be 1 to {MAX_TRUNK_CONCURRENT}"),
                    )
                })?,
        ),
    };
    let max_cps_milli = match own.get("max_cps") {
        None | Some(Value::Null) => None,
        Some(v) => Some(cps_milli(v.as_f64().unwrap_or(f64::NAN))?),
    };
    Ok(TrunkInput {
        name,
        address: settings.hosts.first().cloned().unwrap_or_default(),
        transport: settings.transport.as_str().to_owned(),
        username: settings.username.clone(),
        password: settings.password.clone(),
        from_user: settings.from_user.clone(),
        max_concurrent,
        max_cps_milli,
        settings,
    })
}

fn object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::unprocessable(
            "invalid_json",
            "the body must be a JSON object",
        )),
    }
}

/// A stored trunk as a request body (no password): what PATCH merges into.
fn as_request(t: &Trunk) -> Map<String, Value> {
    let mut m = match serde_json::to_value(&t.settings) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    m.insert("name".into(), Value::String(t.name.clone()));
    if let Some(c) = t.max_concurrent {
        m.insert("max_concurrent".into(), c.into());
    }
    if let Some(c) = t.max_cps_milli {
        m.insert("max_cps".into(), (f64::from(c) / 1000.0).into());
    }
    m
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

/// Lists the tenant's trunks.
#[utoipa::path(get, path = "/trunks", tag = "trunks",
    responses((status = 200, body = TrunkList), (status = 403, body = ErrorBody)))]
async fn list_trunks(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<TrunkList>> {
    caller.require(Permission::TrunksRead)?;
    let items = s.store.list_trunks(&caller.tenant_id).await?;
    Ok(Json(TrunkList {
        items: items.into_iter().map(|t| TrunkView::new(t, &s)).collect(),
    }))
}

/// Creates a trunk.
#[utoipa::path(post, path = "/trunks", tag = "trunks", request_body = TrunkRequest,
    responses((status = 201, body = TrunkView), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn create_trunk(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<TrunkView>)> {
    caller.require(Permission::TrunksWrite)?;
    let input = parse_request(object(body)?)?;
    let trunk = s
        .store
        .create_trunk(&caller.tenant_id, &input, crate::clock::unix_us())
        .await?;
    s.trunks_changed();
    Ok((StatusCode::CREATED, Json(TrunkView::new(trunk, &s))))
}

/// A trunk, with its live `state`.
#[utoipa::path(get, path = "/trunks/{id}", tag = "trunks",
    params(("id" = String, Path, description = "trunk id")),
    responses((status = 200, body = TrunkView), (status = 404, body = ErrorBody)))]
async fn get_trunk(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TrunkView>> {
    caller.require(Permission::TrunksRead)?;
    let t = s.store.get_trunk(&caller.tenant_id, &id).await?;
    Ok(Json(TrunkView::new(t, &s)))
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
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<TrunkView>> {
    caller.require(Permission::TrunksWrite)?;
    let input = parse_request(object(body)?)?;
    let trunk = s
        .store
        .update_trunk(&caller.tenant_id, &id, &input, crate::clock::unix_us())
        .await?;
    s.trunks_changed();
    Ok(Json(TrunkView::new(trunk, &s)))
}

/// Changes some of a trunk's fields: the body (any subset of a trunk request) is merged into
/// the stored trunk (RFC 7396: `null` resets a field to its default); omit `password` to keep
/// it.
#[utoipa::path(patch, path = "/trunks/{id}", tag = "trunks", request_body = TrunkRequest,
    params(("id" = String, Path, description = "trunk id")),
    responses((status = 200, body = TrunkView), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn patch_trunk(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<TrunkView>> {
    caller.require(Permission::TrunksWrite)?;
    let patch = object(body)?;
    let current = s.store.get_trunk(&caller.tenant_id, &id).await?;
    let mut merged = as_request(&current);
    // `hosts` and `address` say the same thing: a patch of either replaces both.
    if patch.contains_key("address") || patch.contains_key("hosts") {
        merged.remove("hosts");
    }
    for (k, v) in patch {
        if v.is_null() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    let input = parse_request(merged)?;
    let trunk = s
        .store
        .update_trunk(&caller.tenant_id, &id, &input, crate::clock::unix_us())
        .await?;
    s.trunks_changed();
    Ok(Json(TrunkView::new(trunk, &s)))
}

/// Deletes a trunk and its routes.
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
    s.trunk_states.remove(&id);
    s.trunks_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// An inbound route: calls to `did` arriving through the trunk run `script_id`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteView {
    /// The trunk.
    pub trunk_id: String,
    /// The dialed number (Request-URI user part), E.164 or as the carrier sends it.
    pub did: String,
    /// The script (null: the node's default inbound handling).
    pub script_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// µs since the epoch.
    pub created_at_us: i64,
}

impl From<TrunkRoute> for RouteView {
    fn from(r: TrunkRoute) -> RouteView {
        RouteView {
            trunk_id: r.trunk_id,
            did: r.did,
            script_id: r.script_id,
            created_at: rfc3339(r.created_at_us),
            created_at_us: r.created_at_us,
        }
    }
}

/// `{"items": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteList {
    /// The trunk's routes by DID.
    pub items: Vec<RouteView>,
}

/// What `POST /v1/trunks/{id}/routes` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    /// The dialed number as it arrives in the Request-URI's user part (`+442071234567`,
    /// `2071234567`); unique per tenant.
    #[schema(example = "+442071234567")]
    pub did: String,
    /// The script to run (omit: the node's default inbound handling).
    pub script_id: Option<String>,
}

/// The longest DID.
const MAX_DID: usize = 64;

/// Routes calls to a DID arriving through this trunk to a script.
#[utoipa::path(post, path = "/trunks/{id}/routes", tag = "trunks", request_body = RouteRequest,
    params(("id" = String, Path, description = "trunk id")),
    responses((status = 201, body = RouteView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the DID is already routed"),
        (status = 422, body = ErrorBody)))]
async fn create_route(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RouteRequest>,
) -> ApiResult<(StatusCode, Json<RouteView>)> {
    caller.require(Permission::TrunksWrite)?;
    if req.did.len() > MAX_DID || !crate::trunk::settings::valid_user(&req.did) {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!(
                "did: 1 to {MAX_DID} characters of a SIP user part (+, digits, letters, - _ .)"
            ),
        ));
    }
    if let Some(script) = &req.script_id {
        super::fields::id("script_id", script)?;
        match s.store.get_script(&caller.tenant_id, script, None).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => {
                return Err(ApiError::unprocessable(
                    "invalid_field",
                    format!("script_id: no script {script:?}"),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let route = s
        .store
        .create_trunk_route(
            &caller.tenant_id,
            &id,
            &req.did,
            req.script_id.as_deref(),
            crate::clock::unix_us(),
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::conflict(
                "did_taken",
                format!(
                    "did {:?} is already routed (delete its route first)",
                    req.did
                ),
            ),
            e => e.into(),
        })?;
    s.trunks_changed();
    Ok((StatusCode::CREATED, Json(route.into())))
}

/// The trunk's inbound routes.
#[utoipa::path(get, path = "/trunks/{id}/routes", tag = "trunks",
    params(("id" = String, Path, description = "trunk id")),
    responses((status = 200, body = RouteList), (status = 404, body = ErrorBody)))]
async fn list_routes(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RouteList>> {
    caller.require(Permission::TrunksRead)?;
    let items = s.store.list_trunk_routes(&caller.tenant_id, &id).await?;
    Ok(Json(RouteList {
        items: items.into_iter().map(RouteView::from).collect(),
    }))
}

/// Removes a route.
#[utoipa::path(delete, path = "/trunks/{id}/routes/{did}", tag = "trunks",
    params(("id" = String, Path, description = "trunk id"),
        ("did" = String, Path, description = "the DID (`+` may be written %2B)")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_route(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, did)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(Permission::TrunksWrite)?;
    s.store
        .delete_trunk_route(&caller.tenant_id, &id, &did)
        .await?;
    s.trunks_changed();
    Ok(StatusCode::NO_CONTENT)
}
