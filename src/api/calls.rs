//! `/v1/calls`: place calls, read them (status, outcome, real durations), their timelines,
//! hang them up, and the evidence manifest.
//!
//! A call's row is written before the engine is asked to dial, with the request as given;
//! everything after (`status`, `outcome`, times) is derived from the call's stored events only
//! (`store::derive`). Durations are differences of stored event times, never estimates.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sip::message::Uri;
use sip::transaction::Transport;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Permission};
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use super::{AppState, rfc3339};
use crate::engine::{EngineError, OriginateRequest, PromptScope};
use crate::store::{
    CallFilter, CallRecord, CallStatus, Created, Direction, EventFilter, NewCall, NewEvent,
    RecordingRecord, StoreError, StoredEvent,
};

/// Default ring timeout (seconds) when the request gives none.
const DEFAULT_RING_TIMEOUT_S: u32 = 30;
/// Longest ring timeout accepted.
const MAX_RING_TIMEOUT_S: u32 = 300;
/// Longest `hangup_after_s` accepted (a day).
const MAX_HANGUP_AFTER_S: u32 = 86_400;
/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Default and largest page of `GET /v1/calls`.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;
/// Default and largest page of `GET /v1/calls/{id}/events`.
const DEFAULT_EVENTS_LIMIT: u32 = 1000;
const MAX_EVENTS_LIMIT: u32 = 5000;

/// This area's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_call, list_calls))
        .routes(routes!(get_call))
        .routes(routes!(call_events))
        .routes(routes!(hangup_call))
        .routes(routes!(call_manifest))
}

/// What `POST /v1/calls` takes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCall {
    /// Without `trunk_id`: a `sip:` URI whose host is an IP address
    /// (`sip:alice@192.0.2.7:5060;transport=tcp`). With `trunk_id`: a number or user part,
    /// called as `sip:<to>@<trunk address>`.
    #[schema(example = "sip:1000@127.0.0.1:5070")]
    pub to: String,
    /// Our From URI (default: the trunk's `from_user`, else `sip:callplane@<our address>`).
    pub from: Option<String>,
    /// Call through this trunk.
    pub trunk_id: Option<String>,
    /// Run this stored script (its current version; the call records which).
    pub script_id: Option<String>,
    /// Or run this inline script (docs/scripts.md).
    #[schema(value_type = Option<Object>)]
    pub script: Option<Value>,
    /// Values kept with the call (shown in `request`).
    #[schema(value_type = Option<Object>)]
    pub variables: Option<serde_json::Map<String, Value>>,
    /// Record the call (stereo WAV; left: the callee).
    pub record: Option<bool>,
    /// CANCEL when unanswered after this many seconds (default 30, at most 300).
    pub ring_timeout_s: Option<u32>,
    /// Send BYE this many seconds after the answer (default: wait for the callee or the
    /// script).
    pub hangup_after_s: Option<u32>,
    /// End the call (BYE, `end_reason` `max_duration`) this many seconds after the answer,
    /// 1 to 86400 (default: the server's `--max-duration-s`, 4 hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_s: Option<u32>,
}

/// A link to a recording of a call.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordingLink {
    /// `rec_` + 24 hex digits.
    pub id: String,
    /// `/v1/recordings/{id}`.
    pub url: String,
    /// `/v1/recordings/{id}/audio` (audio/wav, Range supported).
    pub audio_url: String,
}

/// Durations from stored event times (milliseconds).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Durations {
    /// Started → answered, or started → ended for an unanswered call.
    pub ring_ms: Option<i64>,
    /// Answered → ended (from the final event's measured duration when present).
    pub talk_ms: Option<i64>,
    /// Started (or created, when the INVITE never left) → ended.
    pub total_ms: Option<i64>,
}

/// A call as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallView {
    /// `call_` + 24 hex digits.
    pub id: String,
    /// `outbound` or `inbound`.
    pub direction: String,
    /// `queued`, `dialing`, `ringing`, `answered`, `completed` or `failed`.
    pub status: String,
    /// How it ended: `answered`, `busy`, `no_answer`, `rejected`, `invalid_number`,
    /// `network_error`, `cancelled`, `failed`.
    pub outcome: Option<String>,
    /// Callee URI.
    pub to: String,
    /// Caller URI.
    pub from: String,
    /// The trunk it went through.
    pub trunk_id: Option<String>,
    /// The script it ran.
    pub script_id: Option<String>,
    /// The version of that script.
    pub script_version: Option<i64>,
    /// Its campaign.
    pub campaign_id: Option<String>,
    /// The final SIP status.
    pub sip_status: Option<i64>,
    /// Its reason phrase (or the engine's reason when no SIP response said).
    pub sip_reason: Option<String>,
    /// Q.850 cause from a Reason header.
    pub q850_cause: Option<i64>,
    /// The SIP Call-ID.
    pub sip_call_id: Option<String>,
    /// Why it ended (the engine's end reason).
    pub end_reason: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// µs since the epoch.
    pub created_at_us: i64,
    /// When the INVITE went out (`call.created`).
    pub started_at: Option<String>,
    /// µs.
    pub started_at_us: Option<i64>,
    /// First 180/183.
    pub ringing_at: Option<String>,
    /// µs.
    pub ringing_at_us: Option<i64>,
    /// The 200 OK.
    pub answered_at: Option<String>,
    /// µs.
    pub answered_at_us: Option<i64>,
    /// `call.completed` / `call.failed`.
    pub ended_at: Option<String>,
    /// µs.
    pub ended_at_us: Option<i64>,
    /// The end was not seen but estimated: the process running the call died, and the end is
    /// the last thing known of it (its last event, the node's last heartbeat or its recovered
    /// recording's last frame). `end_reason` is `process_restart` or `node_lost`.
    pub estimated_end: bool,
    /// Durations.
    pub durations: Durations,
    /// What the call collected (digits, script variables).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// What was asked: on `GET /v1/calls/{id}` (and the answers of `POST /v1/calls`) only;
    /// `GET /v1/calls` leaves it out.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
    /// Its recordings (on `GET /v1/calls/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recordings: Option<Vec<RecordingLink>>,
}

fn diff_ms(from: Option<i64>, to: Option<i64>) -> Option<i64> {
    Some((to? - from?) / 1000)
}

impl CallView {
    fn new(c: CallRecord, recordings: Option<&[RecordingRecord]>) -> CallView {
        let ring_ms = if c.answered_at_us.is_some() {
            diff_ms(c.started_at_us, c.answered_at_us)
        } else {
            diff_ms(c.started_at_us, c.ended_at_us)
        };
        let talk_ms = c
            .talk_ms
            .or_else(|| diff_ms(c.answered_at_us, c.ended_at_us));
        let total_ms = diff_ms(c.started_at_us.or(Some(c.created_at_us)), c.ended_at_us);
        let estimated_end = crate::store::derive::end_is_estimated(c.end_reason.as_deref());
        CallView {
            direction: c.direction.as_str().to_owned(),
            status: c.status.as_str().to_owned(),
            outcome: c.outcome,
            to: c.to_uri,
            from: c.from_uri,
            trunk_id: c.trunk_id,
            script_id: c.script_id,
            script_version: c.script_version,
            campaign_id: c.campaign_id,
            sip_status: c.sip_status,
            sip_reason: c.sip_reason,
            q850_cause: c.q850_cause,
            sip_call_id: c.sip_call_id,
            end_reason: c.end_reason,
            created_at: rfc3339(c.created_at_us),
            created_at_us: c.created_at_us,
            started_at: c.started_at_us.map(rfc3339),
            started_at_us: c.started_at_us,
            ringing_at: c.ringing_at_us.map(rfc3339),
            ringing_at_us: c.ringing_at_us,
            answered_at: c.answered_at_us.map(rfc3339),
            answered_at_us: c.answered_at_us,
            ended_at: c.ended_at_us.map(rfc3339),
            ended_at_us: c.ended_at_us,
            estimated_end,
            durations: Durations {
                ring_ms,
                talk_ms,
                total_ms,
            },
            result: c.result,
            request: Some(c.request),
            recordings: recordings.map(|rs| {
                rs.iter()
                    .map(|r| RecordingLink {
                        id: r.id.clone(),
                        url: format!("/v1/recordings/{}", r.id),
                        audio_url: format!("/v1/recordings/{}/audio", r.id),
                    })
                    .collect()
            }),
            id: c.id,
        }
    }
}

/// `{"items": [...], "next_cursor": ...}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallList {
    /// Newest first.
    pub items: Vec<CallView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A timeline event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// Global, increasing (the SSE `Last-Event-ID`).
    pub id: i64,
    /// Its call; `null` for a campaign's own events (`campaign.*`, `contact.*`).
    pub call_id: Option<String>,
    /// Its call's campaign, or the campaign a campaign event is about.
    pub campaign_id: Option<String>,
    /// `call.created`, `sip.invite_sent`, ..., `call.completed`, `call.failed`.
    pub kind: String,
    /// RFC 3339.
    pub at: String,
    /// µs since the epoch.
    pub at_unix_us: i64,
    /// µs since the call was created (monotonic).
    pub offset_us: i64,
    /// Kind-specific details.
    #[schema(value_type = Object)]
    pub details: Value,
}

impl From<StoredEvent> for EventView {
    fn from(e: StoredEvent) -> EventView {
        EventView {
            id: e.id,
            call_id: e.call_id,
            campaign_id: e.campaign_id,
            kind: e.kind,
            at: rfc3339(e.at_unix_us),
            at_unix_us: e.at_unix_us,
            offset_us: e.offset_us,
            details: e.details,
        }
    }
}

/// `e` as tenants see it: [`crate::store::derive::public_details`] with the recording rows of
/// its call (`recordings`), so a recording is named by id and URL, never by server path.
pub fn public_event(mut e: StoredEvent, recordings: &[RecordingRecord]) -> StoredEvent {
    let id_of = |path: &str| {
        recordings
            .iter()
            .find(|r| r.path == path)
            .map(|r| r.id.clone())
    };
    e.details = crate::store::derive::public_details(&e.details, &id_of);
    e
}

/// `{"items": [...], "next_cursor": ...}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventList {
    /// Oldest first.
    pub items: Vec<EventView>,
    /// Pass as `cursor` for the next page; `null` when this page was not full.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /v1/calls`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `queued`, `dialing`, `ringing`, `answered`, `completed` or `failed`.
    pub status: Option<String>,
    /// An outcome name.
    pub outcome: Option<String>,
    /// A campaign id.
    pub campaign_id: Option<String>,
    /// Created at or after (RFC 3339 or µs since the epoch).
    pub created_from: Option<String>,
    /// Created before (RFC 3339 or µs since the epoch).
    pub created_to: Option<String>,
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
}

/// Paging of `GET /v1/calls/{id}/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// From the previous page's `next_cursor` (an event id; events after it).
    pub cursor: Option<String>,
    /// Page size (default 1000, at most 5000).
    pub limit: Option<u32>,
}

/// The evidence manifest of a call.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Manifest {
    /// The call.
    pub call_id: String,
    /// The SIP Call-ID.
    pub sip_call_id: Option<String>,
    /// The script it ran.
    pub script_id: Option<String>,
    /// That script's version.
    pub script_version: Option<i64>,
    /// RFC 3339.
    pub created_at: String,
    /// µs.
    pub created_at_us: i64,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// µs.
    pub started_at_us: Option<i64>,
    /// RFC 3339.
    pub answered_at: Option<String>,
    /// µs.
    pub answered_at_us: Option<i64>,
    /// RFC 3339.
    pub ended_at: Option<String>,
    /// µs.
    pub ended_at_us: Option<i64>,
    /// The end was estimated, not seen (the final event says `"estimated_end": true`).
    pub estimated_end: bool,
    /// How it ended.
    pub outcome: Option<String>,
    /// The recordings announced in the timeline (up to the final event).
    pub recordings: Vec<ManifestRecording>,
    /// A digest of the timeline.
    pub timeline: TimelineDigest,
    /// Whether the call has ended: a final manifest never changes.
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// One recording in a manifest.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ManifestRecording {
    /// `rec_` + 24 hex digits.
    pub id: String,
    /// Lowercase hex SHA-256 of the WAV file.
    pub sha256: String,
    /// Size of the file.
    pub bytes: i64,
    /// Length.
    pub duration_ms: i64,
}

/// The digest of a call's timeline (docs/api.md "Evidence manifest").
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct TimelineDigest {
    /// How many events it covers.
    pub events: usize,
    /// The id of the last one covered.
    pub last_event_id: Option<i64>,
    /// Lowercase hex SHA-256 of the canonical serialisation of those events.
    pub sha256: String,
}

/// Where a tenant's prompts live: `<data-dir>/prompts/<tenant_id>/`. Tenant ids are generated
/// (`ten_` + hex), but the id becomes a path component, so anything but a plain name is refused
/// rather than trusted.
pub(crate) fn tenant_prompts_dir(
    data_dir: &std::path::Path,
    tenant_id: &str,
) -> Result<std::path::PathBuf, ApiError> {
    let plain = !tenant_id.is_empty()
        && tenant_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !plain {
        return Err(ApiError::internal(format!(
            "tenant id {tenant_id:?} cannot name a prompts directory"
        )));
    }
    Ok(data_dir.join("prompts").join(tenant_id))
}

fn bad_field(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_field", message)
}

/// A number or user part to put before `@` in a trunk call (RFC 3261 §25.1 `user`,
/// conservatively: no escapes, no `;`).
pub(crate) fn valid_user(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-_.!~*'()&=$,?/".contains(&b))
}

fn parse_uri(field: &str, text: &str) -> Result<Uri, ApiError> {
    Uri::parse(text.as_bytes()).map_err(|_| bad_field(format!("{field}: {text:?} is not a URI")))
}

/// Everything a call needs, resolved and checked before its row is written.
struct Plan {
    to: Uri,
    destination: SocketAddr,
    transport: Transport,
    from: Option<Uri>,
    from_uri: String,
    trunk_id: Option<String>,
    sip: crate::engine::SipOptions,
    alternates: Vec<crate::engine::CallRoute>,
    script: Option<Arc<crate::script::Script>>,
    script_id: Option<String>,
    script_version: Option<i64>,
    ring_timeout: Duration,
    hangup_after: Option<Duration>,
    variables: std::collections::BTreeMap<String, String>,
}

/// The size limits of a call request (docs/api.md "Field limits"), before anything is parsed.
fn check_sizes(req: &CreateCall) -> Result<(), ApiError> {
    use super::fields::{self, MAX_URI_BYTES, MAX_VARIABLES, MAX_VARIABLES_BYTES};
    for (field, value) in [("to", Some(&req.to)), ("from", req.from.as_ref())] {
        if value.is_some_and(|v| v.len() > MAX_URI_BYTES) {
            return Err(bad_field(format!("{field}: at most {MAX_URI_BYTES} bytes")));
        }
    }
    if let Some(id) = &req.trunk_id {
        fields::id("trunk_id", id)?;
    }
    if let Some(id) = &req.script_id {
        fields::id("script_id", id)?;
    }
    if let Some(script) = &req.script {
        fields::script_body("script", script)?;
    }
    if let Some(vars) = &req.variables {
        if vars.len() > MAX_VARIABLES {
            return Err(bad_field(format!(
                "variables: at most {MAX_VARIABLES} entries"
            )));
        }
        let bytes = fields::json_len(&Value::Object(vars.clone()));
        if bytes > MAX_VARIABLES_BYTES {
            return Err(bad_field(format!(
                "variables: at most {MAX_VARIABLES_BYTES} bytes of JSON ({bytes} given)"
            )));
        }
    }
    Ok(())
}

/// A URI with a headers component or a routing parameter is refused (`?X-Injected=yes`,
/// `;maddr=`): 422 `invalid_destination` naming the field.
fn check_routing(field: &str, uri: &Uri) -> Result<(), ApiError> {
    crate::engine::target::check_routing(uri)
        .map_err(|e| ApiError::unprocessable("invalid_destination", format!("{field}: {e}")))
}

/// The targets of a `to` whose host is a name (RFC 3263 through the server's resolver): 422
/// `invalid_destination` when DNS is off or finds nothing.
async fn resolve_name(
    s: &AppState,
    to: &Uri,
) -> Result<crate::engine::target::DnsRoutes, ApiError> {
    check_routing("to", to)?;
    let Some(dns) = &s.dns else {
        return Err(ApiError::unprocessable(
            "invalid_destination",
            "to: the host is a name and DNS is not configured here (use an IP address or give trunk_id)",
        ));
    };
    let targets = dns.resolve_uri(to).await.map_err(|e| {
        ApiError::unprocessable("invalid_destination", format!("to: {e} (or give trunk_id)"))
    })?;
    let routes = crate::engine::target::routes(to, &targets, s.engine.advertise_ip().is_ipv4())
        .ok_or_else(|| ApiError::unprocessable("invalid_destination", "to: DNS found no target"))?;
    tracing::info!(
        first = %routes.label,
        alternates = routes.alternates.len(),
        "resolved the callee's domain (RFC 3263)"
    );
    Ok(routes)
}

async fn plan(s: &AppState, caller: &Caller, req: &CreateCall) -> Result<Plan, ApiError> {
    check_sizes(req)?;
    if let Some(f) = &req.from {
        check_routing("from", &parse_uri("from", f)?)?;
    }
    let (to, destination, transport, from, sip, alternates, trunk_ring) = match &req.trunk_id {
        Some(trunk_id) => {
            let trunk = match s.store.get_trunk(&caller.tenant_id, trunk_id).await {
                Ok(t) => t,
                Err(StoreError::NotFound) => {
                    return Err(bad_field(format!("trunk_id: no trunk {trunk_id:?}")));
                }
                Err(e) => return Err(e.into()),
            };
            if !valid_user(&req.to) {
                return Err(ApiError::unprocessable(
                    "invalid_destination",
                    "to: with trunk_id, `to` is a number or user part (letters, digits, + - _ . and the like)",
                ));
            }
            // One trunk per call; failover runs across its hosts (`alternates`).
            let dialed = crate::trunk::dial::dial(&crate::trunk::dial::DialRequest {
                trunk_id: &trunk.id,
                settings: &trunk.settings,
                number: &req.to,
                caller_id: req.from.as_deref(),
                random: crate::trunk::dial::random_u64(),
                turn: 0,
                dns: s.dns.as_ref(),
            })
            .await
            .map_err(|e| {
                ApiError::unprocessable("invalid_destination", format!("trunk {}: {e}", trunk.id))
            })?;
            check_routing("to", &dialed.to)?;
            (
                dialed.to,
                dialed.destination,
                dialed.transport,
                dialed.from,
                dialed.sip,
                dialed.alternates,
                dialed.ring_timeout,
            )
        }
        None => {
            let to = parse_uri("to", &req.to)?;
            let (destination, transport, alternates) = match crate::engine::target::resolve(&to) {
                Err(crate::engine::target::TargetError::NeedsDns(_)) => {
                    let routes = resolve_name(s, &to).await?;
                    (routes.destination, routes.transport, routes.alternates)
                }
                other => {
                    let (destination, transport) = other.map_err(|e| {
                        ApiError::unprocessable(
                            "invalid_destination",
                            format!("to: {e} (or give trunk_id)"),
                        )
                    })?;
                    (destination, transport, Vec::new())
                }
            };
            let from = req
                .from
                .as_deref()
                .map(|f| parse_uri("from", f))
                .transpose()?;
            (
                to,
                destination,
                transport,
                from,
                Default::default(),
                alternates,
                None,
            )
        }
    };
    let from_uri = match &from {
        Some(f) => f.to_string(),
        // The engine's default From (`sip:callplane@<advertise ip>`).
        None => match s.engine.advertise_ip() {
            IpAddr::V4(ip) => format!("sip:callplane@{ip}"),
            IpAddr::V6(ip) => format!("sip:callplane@[{ip}]"),
        },
    };
    let (script, script_id, script_version) = match (&req.script_id, &req.script) {
        (Some(_), Some(_)) => {
            return Err(bad_field("give script_id or script, not both"));
        }
        (Some(id), None) => {
            let record = match s.store.get_script(&caller.tenant_id, id, None).await {
                Ok(r) => r,
                Err(StoreError::NotFound) => {
                    return Err(bad_field(format!("script_id: no script {id:?}")));
                }
                Err(e) => return Err(e.into()),
            };
            let script = super::scripts::check_script(&record.body)?;
            (
                Some(Arc::new(script)),
                Some(record.id),
                Some(record.version),
            )
        }
        (None, Some(body)) => {
            let script = super::scripts::check_script(body)?;
            (Some(Arc::new(script)), None, None)
        }
        (None, None) => (None, None, None),
    };
    // The request's own, else the trunk's, else the default.
    let ring_s = req.ring_timeout_s.unwrap_or_else(|| {
        trunk_ring.map_or(DEFAULT_RING_TIMEOUT_S, |r| {
            u32::try_from(r.as_secs()).unwrap_or(MAX_RING_TIMEOUT_S)
        })
    });
    if !(1..=MAX_RING_TIMEOUT_S).contains(&ring_s) {
        return Err(bad_field(format!(
            "ring_timeout_s: must be 1 to {MAX_RING_TIMEOUT_S}"
        )));
    }
    if let Some(h) = req.hangup_after_s
        && !(1..=MAX_HANGUP_AFTER_S).contains(&h)
    {
        return Err(bad_field(format!(
            "hangup_after_s: must be 1 to {MAX_HANGUP_AFTER_S}"
        )));
    }
    let mut variables = std::collections::BTreeMap::new();
    for (name, value) in req.variables.iter().flatten() {
        let valid_name = name.len() <= super::fields::MAX_VARIABLE_NAME
            && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(bad_field(format!(
                "variables: {name:?} is not a variable name (a letter or _, then letters, digits, _)"
            )));
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(bad_field(format!(
                    "variables.{name}: a string, number or boolean"
                )));
            }
        };
        variables.insert(name.clone(), text);
    }
    Ok(Plan {
        variables,
        to,
        destination,
        transport,
        from,
        from_uri,
        trunk_id: req.trunk_id.clone(),
        sip,
        alternates,
        script,
        script_id,
        script_version,
        ring_timeout: Duration::from_secs(u64::from(ring_s)),
        hangup_after: req
            .hangup_after_s
            .map(|h| Duration::from_secs(u64::from(h))),
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_header",
                format!("Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// Places a call: 201 with the call at once (status `queued`/`dialing`); its progress is in
/// its timeline. The same `Idempotency-Key` with the same body returns the same call (200,
/// `Idempotent-Replayed: true`) and dials nothing.
#[utoipa::path(post, path = "/calls", tag = "calls", request_body = CreateCall,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key returns the same call")),
    responses(
        (status = 201, body = CallView, description = "placed"),
        (status = 200, body = CallView, description = "an idempotent replay (header `Idempotent-Replayed: true`)"),
        (status = 422, body = ErrorBody, description = "invalid_field, invalid_destination, invalid_script, idempotency_key_reused"),
        (status = 503, body = ErrorBody, description = "capacity_exceeded, draining or store_backlog")))]
async fn create_call(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateCall>,
) -> ApiResult<Response> {
    caller.require(Permission::CallsWrite)?;
    let key = idempotency_key(&headers)?;
    // Before anything is written: while the store is behind, a new call would only add to
    // what it owes (and the engine would refuse it anyway).
    if s.engine.refuse_for_store_backlog() {
        return Err(ApiError::store_backlog());
    }
    let plan = plan(&s, &caller, &req).await?;
    if req
        .max_duration_s
        .is_some_and(|m| !(1..=86_400).contains(&m))
    {
        return Err(bad_field("max_duration_s: must be 1 to 86400"));
    }
    // Before the call row exists, so that a refusal leaves nothing behind.
    let prompts = tenant_prompts_dir(&s.config.data_dir, &caller.tenant_id)?;
    // The request as given (normalised by serde), to compare idempotent replays with.
    let request = serde_json::to_value(&req)
        .map_err(|e| ApiError::internal(format!("request not serialisable: {e}")))?;
    let created = s
        .store
        .create_call(&NewCall {
            tenant_id: caller.tenant_id.clone(),
            direction: Direction::Outbound,
            to_uri: plan.to.to_string(),
            from_uri: plan.from_uri.clone(),
            trunk_id: plan.trunk_id.clone(),
            script_id: plan.script_id.clone(),
            script_version: plan.script_version,
            campaign_id: None,
            idempotency_key: key,
            request: request.clone(),
            created_at_us: crate::clock::unix_us(),
            node_id: Some(s.config.node_id.clone()),
        })
        .await?;
    let call = match created {
        Created::Existing(existing) => {
            if existing.request != request {
                return Err(ApiError::unprocessable(
                    "idempotency_key_reused",
                    format!(
                        "this Idempotency-Key was used for call {} with a different request",
                        existing.id
                    ),
                ));
            }
            let mut response = Json(CallView::new(existing, None)).into_response();
            response.headers_mut().insert(
                HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            );
            return Ok(response);
        }
        Created::New(call) => call,
    };
    let data_dir = &s.config.data_dir;
    let record = if req.record == Some(true) {
        let dir = data_dir.join("recordings");
        let ensure = dir.clone();
        tokio::task::spawn_blocking(move || crate::files::ensure_dir(&ensure))
            .await
            .map_err(|e| ApiError::internal(format!("recordings dir task: {e}")))?
            .map_err(|e| ApiError::internal(format!("recordings dir {}: {e}", dir.display())))?;
        Some(dir.join(format!("{}.wav", call.id)))
    } else {
        None
    };
    let originate = OriginateRequest {
        sip: plan.sip,
        alternates: plan.alternates,
        to: plan.to,
        destination: plan.destination,
        from: plan.from,
        play: None,
        gather_digits: 0,
        record,
        ring_timeout: plan.ring_timeout,
        transport: plan.transport,
        hangup_after: plan.hangup_after,
        send_dtmf: Vec::new(),
        dtmf_after: Duration::ZERO,
        script: plan.script,
        // Each tenant's prompts live in their own directory, and the engine refuses any name
        // that resolves outside it (the script's names were checked to be plain names above).
        prompts: Some(prompts),
        prompt_scope: PromptScope::Confined,
        tag: Some(Arc::from(call.id.as_str())),
        variables: plan.variables,
        max_duration: req
            .max_duration_s
            .map(|m| Duration::from_secs(u64::from(m))),
    };
    match s.engine.originate(originate).await {
        Ok(engine_id) => s.bus.register_live(&call.id, engine_id),
        Err(e) => {
            let (error, reason) = match &e {
                EngineError::AtCapacity(n) => (
                    ApiError::unavailable(
                        "capacity_exceeded",
                        format!("this node is at capacity ({n} calls); retry later"),
                    )
                    .with_retry_after(5),
                    "capacity_exceeded",
                ),
                EngineError::StoreBacklog => (ApiError::store_backlog(), "store_backlog"),
                EngineError::Draining => (
                    ApiError::unavailable("draining", "this node is draining; retry elsewhere")
                        .with_retry_after(5),
                    "draining",
                ),
                other => (
                    ApiError::unavailable("engine_unavailable", other.to_string()),
                    "engine_unavailable",
                ),
            };
            // The row exists: end its timeline so it does not stay `queued` forever.
            let now = crate::clock::unix_us();
            if let Err(store_error) = s
                .bus
                .append(NewEvent {
                    call_id: call.id.clone(),
                    kind: "call.failed".to_owned(),
                    at_unix_us: now,
                    offset_us: (now - call.created_at_us).max(0),
                    details: json!({"outcome": "failed", "reason": reason, "end_reason": reason}),
                })
                .await
            {
                tracing::error!(call_id = %call.id, error = %store_error, "could not store call.failed");
            }
            // The row exists and holds the Idempotency-Key: name it, so a client can read it.
            let message = format!("{}; call {} was recorded as failed", error.message, call.id);
            return Err(ApiError {
                message,
                ..error.with_call_id(call.id.clone())
            });
        }
    }
    // Re-read: the engine may already have reported `call.created`.
    let call = match s.store.get_call(&caller.tenant_id, &call.id).await {
        Ok(fresh) => fresh,
        Err(_) => call,
    };
    Ok((StatusCode::CREATED, Json(CallView::new(call, None))).into_response())
}

pub(crate) fn parse_time(field: &str, text: &str) -> Result<i64, ApiError> {
    if let Ok(us) = text.parse::<i64>() {
        return Ok(us);
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_microsecond())
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("{field}: {text:?} is neither RFC 3339 nor µs since the epoch"),
            )
        })
}

/// Lists the tenant's calls, newest first.
#[utoipa::path(get, path = "/calls", tag = "calls", params(ListQuery),
    responses((status = 200, body = CallList), (status = 400, body = ErrorBody)))]
async fn list_calls(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<CallList>> {
    caller.require(Permission::CallsRead)?;
    let status = q
        .status
        .as_deref()
        .map(|st| {
            CallStatus::parse(st).ok_or_else(|| {
                ApiError::bad_request("invalid_query", format!("status: unknown status {st:?}"))
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit: must be 1 to {MAX_LIMIT}"),
        ));
    }
    let mut filter = CallFilter {
        status,
        outcome: q.outcome,
        campaign_id: q.campaign_id,
        created_from_us: q
            .created_from
            .as_deref()
            .map(|t| parse_time("created_from", t))
            .transpose()?,
        created_to_us: q
            .created_to
            .as_deref()
            .map(|t| parse_time("created_to", t))
            .transpose()?,
        cursor: None,
        limit,
        // The listing does not show it (docs/api.md "Listing calls").
        without_request: true,
    };
    // A cursor is good for this tenant and these filters only (`api::cursor`).
    let scope = json!([
        caller.tenant_id,
        filter.status.map(CallStatus::as_str),
        filter.outcome,
        filter.campaign_id,
        filter.created_from_us,
        filter.created_to_us
    ])
    .to_string();
    filter.cursor = q
        .cursor
        .as_deref()
        .map(|c| super::cursor::open("calls", &scope, c))
        .transpose()?;
    let page = match s.store.list_calls(&caller.tenant_id, &filter).await {
        Ok(p) => p,
        // The store answers a cursor it cannot read with NotFound or Corrupt.
        Err(StoreError::NotFound | StoreError::Corrupt(_)) if filter.cursor.is_some() => {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "cursor: not a cursor of this listing",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Json(CallList {
        items: page
            .items
            .into_iter()
            .map(|c| CallView {
                // A listing never embeds request blobs (docs/api.md "Field limits").
                request: None,
                ..CallView::new(c, None)
            })
            .collect(),
        next_cursor: page
            .next_cursor
            .map(|c| super::cursor::seal("calls", &scope, &c)),
    }))
}

/// A call: status, outcome, SIP status and reason, times, real durations, result, recordings.
#[utoipa::path(get, path = "/calls/{id}", tag = "calls",
    params(("id" = String, Path, description = "call id")),
    responses((status = 200, body = CallView), (status = 404, body = ErrorBody)))]
async fn get_call(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<CallView>> {
    caller.require(Permission::CallsRead)?;
    let call = s.store.get_call(&caller.tenant_id, &id).await?;
    let recordings = s.store.list_recordings(&caller.tenant_id, &id).await?;
    Ok(Json(CallView::new(call, Some(&recordings))))
}

/// A call's timeline, oldest first.
#[utoipa::path(get, path = "/calls/{id}/events", tag = "calls",
    params(("id" = String, Path, description = "call id"), EventsQuery),
    responses((status = 200, body = EventList), (status = 404, body = ErrorBody)))]
async fn call_events(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Json<EventList>> {
    caller.require(Permission::EventsRead)?;
    // 404 for another tenant's call (rather than an empty list).
    s.store.get_call(&caller.tenant_id, &id).await?;
    // A cursor of this call's timeline only (`api::cursor`).
    let scope = json!([caller.tenant_id, id]).to_string();
    let after = match q.cursor.as_deref() {
        None => 0,
        Some(c) => super::cursor::open("call_events", &scope, c)?
            .parse::<i64>()
            .map_err(|_| {
                ApiError::bad_request("invalid_cursor", "cursor: not a cursor of this listing")
            })?,
    };
    let limit = q.limit.unwrap_or(DEFAULT_EVENTS_LIMIT);
    if !(1..=MAX_EVENTS_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit: must be 1 to {MAX_EVENTS_LIMIT}"),
        ));
    }
    let id_for_recordings = id.clone();
    let filter = EventFilter {
        call_id: Some(id),
        ..EventFilter::default()
    };
    let events = s
        .store
        .events_after(&caller.tenant_id, after, &filter, limit)
        .await?;
    let next_cursor = if events.len() == limit as usize {
        events
            .last()
            .map(|e| super::cursor::seal("call_events", &scope, &e.id.to_string()))
    } else {
        None
    };
    let recordings = s
        .store
        .list_recordings(&caller.tenant_id, &id_for_recordings)
        .await?;
    Ok(Json(EventList {
        items: events
            .into_iter()
            .map(|e| EventView::from(public_event(e, &recordings)))
            .collect(),
        next_cursor,
    }))
}

/// Hangs a live call up (BYE once answered, CANCEL while ringing). 409 `call_ended` when it
/// has ended or is not live on this node.
#[utoipa::path(post, path = "/calls/{id}/hangup", tag = "calls",
    params(("id" = String, Path, description = "call id")),
    responses((status = 202, body = CallView, description = "hangup requested; the timeline shows the end"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn hangup_call(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<CallView>)> {
    caller.require(Permission::CallsWrite)?;
    let call = s.store.get_call(&caller.tenant_id, &id).await?;
    if call.status.is_final() {
        return Err(ApiError::conflict(
            "call_ended",
            "the call has already ended",
        ));
    }
    let Some(engine_id) = s.bus.engine_id(&id) else {
        // Several nodes may share the database: a call another node runs is hung up there.
        if let Some(node) = call.node_id.as_deref().filter(|n| *n != s.config.node_id) {
            return Err(ApiError::conflict(
                "call_on_another_node",
                format!("the call runs on node {node}: send the hangup to that node's API"),
            ));
        }
        return Err(ApiError::conflict(
            "call_ended",
            "the call is not live on this node",
        ));
    };
    s.engine
        .hangup(engine_id)
        .await
        .map_err(|e| ApiError::unavailable("engine_unavailable", e.to_string()))?;
    Ok((StatusCode::ACCEPTED, Json(CallView::new(call, None))))
}

/// Appends the canonical JSON of `v` to `out`: object keys in byte order, no whitespace,
/// strings and numbers as serde_json prints them.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The canonical serialisation of one timeline event (docs/api.md "Evidence manifest"): the
/// canonical JSON of `{id, call_id, kind, at_unix_us, offset_us, details}` and a `\n`.
pub fn canonical_event(e: &StoredEvent) -> String {
    let mut out = String::new();
    canonical_json(
        &json!({
            "id": e.id,
            "call_id": e.call_id,
            "kind": e.kind,
            "at_unix_us": e.at_unix_us,
            "offset_us": e.offset_us,
            "details": e.details,
        }),
        &mut out,
    );
    out.push('\n');
    out
}

/// A call's events up to and including its first final event (all of them while it is live).
async fn bounded_timeline(
    s: &AppState,
    tenant: &str,
    call_id: &str,
) -> Result<(Vec<StoredEvent>, bool), ApiError> {
    let filter = EventFilter {
        call_id: Some(call_id.to_owned()),
        ..EventFilter::default()
    };
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = s
            .store
            .events_after(tenant, after, &filter, MAX_EVENTS_LIMIT)
            .await?;
        let full = page.len() == MAX_EVENTS_LIMIT as usize;
        for e in page {
            after = e.id;
            let is_final = e.kind == "call.completed" || e.kind == "call.failed";
            events.push(e);
            // Nothing after the final event is evidence: the manifest stops here, so a late
            // append cannot change it.
            if is_final {
                return Ok((events, true));
            }
        }
        if !full {
            return Ok((events, false));
        }
    }
}

/// The evidence manifest: recording digests, a digest of the timeline, script id and version,
/// the SIP Call-ID and timestamps. Once the call has ended (`final: true`) it never changes.
#[utoipa::path(get, path = "/calls/{id}/manifest", tag = "calls",
    params(("id" = String, Path, description = "call id")),
    responses((status = 200, body = Manifest), (status = 404, body = ErrorBody)))]
async fn call_manifest(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Manifest>> {
    caller.require(Permission::CallsRead)?;
    let call = s.store.get_call(&caller.tenant_id, &id).await?;
    let (events, ended) = bounded_timeline(&s, &caller.tenant_id, &id).await?;
    let stored_recordings = s.store.list_recordings(&caller.tenant_id, &id).await?;
    // The digest covers the events as `GET /v1/calls/{id}/events` shows them (no server
    // paths), so a client can recompute it.
    let mut hasher = Sha256::new();
    for e in &events {
        let shown = public_event(e.clone(), &stored_recordings);
        hasher.update(canonical_event(&shown).as_bytes());
    }
    // Only recordings the bounded timeline announced belong to the evidence.
    let announced: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.kind == "recording.ready")
        .filter_map(|e| e.details.get("path").and_then(Value::as_str))
        .collect();
    let recordings = stored_recordings
        .into_iter()
        .filter(|r| announced.contains(r.path.as_str()))
        .map(|r| ManifestRecording {
            id: r.id,
            sha256: r.sha256,
            bytes: r.bytes,
            duration_ms: r.duration_ms,
        })
        .collect();
    Ok(Json(Manifest {
        call_id: call.id,
        sip_call_id: call.sip_call_id,
        script_id: call.script_id,
        script_version: call.script_version,
        created_at: rfc3339(call.created_at_us),
        created_at_us: call.created_at_us,
        started_at: call.started_at_us.map(rfc3339),
        started_at_us: call.started_at_us,
        answered_at: call.answered_at_us.map(rfc3339),
        answered_at_us: call.answered_at_us,
        ended_at: call.ended_at_us.map(rfc3339),
        ended_at_us: call.ended_at_us,
        estimated_end: ended
            && events.last().is_some_and(|e| {
                e.details.get("estimated_end").and_then(Value::as_bool) == Some(true)
            }),
        outcome: call.outcome,
        recordings,
        timeline: TimelineDigest {
            events: events.len(),
            last_event_id: events.last().map(|e| e.id),
            sha256: hex::encode(hasher.finalize()),
        },
        is_final: ended && call.status.is_final(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_has_no_whitespace() {
        let mut out = String::new();
        canonical_json(
            &json!({"b": 1, "a": {"z": [1, {"y": "x", "c": null}], "é": "\"q\""}}),
            &mut out,
        );
        assert_eq!(
            out,
            r#"{"a":{"z":[1,{"c":null,"y":"x"}],"é":"\"q\""},"b":1}"#
        );
    }

    #[test]
    fn each_tenant_has_its_own_prompts_directory_and_odd_ids_are_refused() {
        let data = std::path::Path::new("/srv/cp");
        assert_eq!(
            tenant_prompts_dir(data, "ten_0123abcd").expect("plain id"),
            std::path::PathBuf::from("/srv/cp/prompts/ten_0123abcd")
        );
        for bad in ["", "..", "../x", "a/b", "/abs"] {
            assert!(tenant_prompts_dir(data, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trunk_users_refuse_uri_metacharacters() {
        assert!(valid_user("+15551234567"));
        assert!(valid_user("alice.smith"));
        assert!(!valid_user(""));
        assert!(!valid_user("a@b"));
        assert!(!valid_user("a;transport=tcp"));
        assert!(!valid_user("a b"));
    }
}
