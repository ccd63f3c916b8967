//! `/v1/webhooks`: subscriptions, their deliveries (the outbox) and redelivery.
//!
//! The signing secret is write-only: it is shown once, in the answer to the `POST` that created
//! the webhook (generated as `whsec_` + 32 hex digits when the request has none), and never
//! again. docs/api.md ("Webhooks") describes the payload, the headers and how to verify a signature.

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
use crate::net::egress::EgressPolicy;
use crate::store::{Delivery, DeliveryStatus, Webhook, WebhookInput};

/// Most event kinds one webhook may list.
const MAX_KINDS: usize = 50;

/// This area's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, replace_webhook, delete_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(list_call_deliveries))
        .routes(routes!(redeliver))
}

/// A webhook as shown (the secret only in the answer that created it).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    /// `whk_` + 24 hex digits.
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Event kinds it gets (empty: all; `call.*` matches a prefix).
    pub events: Vec<String>,
    /// Inactive webhooks get no new deliveries.
    pub active: bool,
    /// A label.
    pub description: Option<String>,
    /// The signing secret: present only in the answer to the creating `POST`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// µs since the epoch.
    pub created_at_us: i64,
    /// RFC 3339.
    pub updated_at: String,
    /// µs since the epoch.
    pub updated_at_us: i64,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> WebhookView {
        WebhookView {
            id: w.id,
            url: w.url,
            events: w.events,
            active: w.active,
            description: w.description,
            secret: None,
            created_at: rfc3339(w.created_at_us),
            created_at_us: w.created_at_us,
            updated_at: rfc3339(w.updated_at_us),
            updated_at_us: w.updated_at_us,
        }
    }
}

/// `{"items": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    /// The tenant's webhooks, oldest first.
    pub items: Vec<WebhookView>,
}

/// What `POST /v1/webhooks` and `PUT /v1/webhooks/{id}` take.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// An `http://` or `https://` URL.
    #[schema(example = "https://example.com/callplane")]
    pub url: String,
    /// The signing secret (16 to 256 printable characters). On `POST`, omit it to have one
    /// generated (returned once); on `PUT`, omit it to keep the stored one.
    pub secret: Option<String>,
    /// Event kinds (empty or absent: all; `call.*` matches a prefix).
    #[schema(example = json!(["call.*", "recording.ready"]))]
    pub events: Option<Vec<String>>,
    /// Default `true`.
    pub active: Option<bool>,
    /// A label.
    pub description: Option<String>,
}

impl WebhookRequest {
    fn into_input(self, egress: &EgressPolicy) -> Result<WebhookInput, ApiError> {
        let invalid = |m: String| ApiError::unprocessable("invalid_field", m);
        // Before parsing: the URL parser drops tabs and newlines silently.
        if let Some(bad) = self.url.chars().find(|c| unprintable(*c)) {
            return Err(invalid(format!(
                "url: contains the control character {bad:?}"
            )));
        }
        let url = self.url.trim().to_owned();
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| invalid(format!("url: {url:?} is not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(invalid(format!(
                "url: {url:?} must be an http:// or https:// URL with a host"
            )));
        }
        if url.len() > 2000 {
            return Err(invalid("url: at most 2000 characters".to_owned()));
        }
        egress
            .check_url(&parsed)
            .map_err(|why| invalid(format!("url: {why}")))?;
        if let Some(secret) = &self.secret {
            let printable = secret.chars().all(|c| c.is_ascii_graphic());
            if !(16..=256).contains(&secret.len()) || !printable {
                return Err(invalid(
                    "secret: must be 16 to 256 printable ASCII characters without spaces"
                        .to_owned(),
                ));
            }
        }
        let events = self.events.unwrap_or_default();
        if events.len() > MAX_KINDS {
            return Err(invalid(format!("events: at most {MAX_KINDS} kinds")));
        }
        for (i, k) in events.iter().enumerate() {
            let body = k.strip_suffix('*').unwrap_or(k);
            let valid = !k.is_empty()
                && k.len() <= 100
                && body
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_');
            if !valid {
                return Err(invalid(format!(
                    "events[{i}]: {k:?} is not an event kind (lowercase letters, digits, `.` and \
                     `_`, optionally ending in `*`)"
                )));
            }
        }
        if self.description.as_ref().is_some_and(|d| d.len() > 500) {
            return Err(invalid("description: at most 500 characters".to_owned()));
        }
        if let Some(bad) = self
            .description
            .as_deref()
            .and_then(|d| d.chars().find(|c| unprintable(*c)))
        {
            return Err(invalid(format!(
                "description: contains the control character {bad:?}"
            )));
        }
        Ok(WebhookInput {
            url,
            secret: self.secret,
            events,
            active: self.active.unwrap_or(true),
            description: self.description,
        })
    }
}

/// A control character (CR, LF, NUL, DEL, C1...) or a bidirectional override/isolate: nothing
/// a URL or a label needs, and what makes a stored value rewrite a log line or a header.
fn unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A new signing secret: `whsec_` + 32 hex digits from the OS's random source.
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(format!("whsec_{}", hex::encode(bytes)))
}

/// One delivery as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// `dlv_` + 24 hex digits.
    pub id: String,
    /// Its webhook.
    pub webhook_id: String,
    /// The event it carries (the `Callplane-Event-Id` header).
    pub event_id: i64,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (pending only), RFC 3339.
    pub next_attempt_at: Option<String>,
    /// HTTP status of the last attempt.
    pub last_status: Option<i64>,
    /// What went wrong in the last attempt.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// When the receiver accepted it, RFC 3339.
    pub delivered_at: Option<String>,
    /// The JSON body sent (the same bytes on every attempt).
    pub payload: Value,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> DeliveryView {
        DeliveryView {
            next_attempt_at: (d.status == DeliveryStatus::Pending)
                .then(|| rfc3339(d.next_attempt_at_us)),
            payload: serde_json::from_str(&d.body).unwrap_or(Value::String(d.body)),
            id: d.id,
            webhook_id: d.webhook_id,
            event_id: d.event_id,
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: rfc3339(d.created_at_us),
            delivered_at: d.delivered_at_us.map(rfc3339),
        }
    }
}

/// `{"items": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub items: Vec<DeliveryView>,
}

/// Filters of the delivery list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `dead`.
    pub status: Option<String>,
    /// At most this many (1 to 500, default 100).
    pub limit: Option<u32>,
}

/// Lists the tenant's webhooks.
#[utoipa::path(get, path = "/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList), (status = 403, body = ErrorBody)))]
async fn list_webhooks(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<WebhookList>> {
    caller.require(Permission::WebhooksRead)?;
    let items = s.store.list_webhooks(&caller.tenant_id).await?;
    Ok(Json(WebhookList {
        items: items.into_iter().map(WebhookView::from).collect(),
    }))
}

/// Creates a webhook; the answer carries its secret, the only time it is shown.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = WebhookRequest,
    responses((status = 201, body = WebhookView), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn create_webhook(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<WebhookRequest>,
) -> ApiResult<(StatusCode, Json<WebhookView>)> {
    caller.require(Permission::WebhooksWrite)?;
    let mut input = req.into_input(&s.config.webhook_egress)?;
    let secret = match input.secret.take() {
        Some(secret) => secret,
        None => generate_secret()
            .map_err(|e| ApiError::internal(format!("no randomness for a secret: {e}")))?,
    };
    input.secret = Some(secret.clone());
    let webhook = s
        .store
        .create_webhook(&caller.tenant_id, &input, crate::clock::unix_us())
        .await?;
    let mut view = WebhookView::from(webhook);
    view.secret = Some(secret);
    Ok((StatusCode::CREATED, Json(view)))
}

/// A webhook (without its secret).
#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "webhook id")),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)))]
async fn get_webhook(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookView>> {
    caller.require(Permission::WebhooksRead)?;
    Ok(Json(
        s.store.get_webhook(&caller.tenant_id, &id).await?.into(),
    ))
}

/// Replaces a webhook's fields (omit `secret` to keep the stored one).
#[utoipa::path(put, path = "/webhooks/{id}", tag = "webhooks", request_body = WebhookRequest,
    params(("id" = String, Path, description = "webhook id")),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn replace_webhook(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<WebhookRequest>,
) -> ApiResult<Json<WebhookView>> {
    caller.require(Permission::WebhooksWrite)?;
    let input = req.into_input(&s.config.webhook_egress)?;
    let webhook = s
        .store
        .update_webhook(&caller.tenant_id, &id, &input, crate::clock::unix_us())
        .await?;
    Ok(Json(webhook.into()))
}

/// Deletes a webhook and its deliveries.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "webhook id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_webhook(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Permission::WebhooksWrite)?;
    s.store.delete_webhook(&caller.tenant_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook's deliveries, newest first (`?status=dead` lists the dead letters).
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "webhook id"), DeliveryQuery),
    responses((status = 200, body = DeliveryList), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn list_deliveries(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> ApiResult<Json<DeliveryList>> {
    caller.require(Permission::WebhooksRead)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("status: {s:?} is not pending, delivered or dead"),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit: must be 1 to 500",
        ));
    }
    // 404 for an unknown webhook (or another tenant's), not an empty list.
    s.store.get_webhook(&caller.tenant_id, &id).await?;
    let items = s
        .store
        .list_deliveries(&caller.tenant_id, &id, status, limit)
        .await?;
    Ok(Json(DeliveryList {
        items: items.into_iter().map(DeliveryView::from).collect(),
    }))
}

/// The webhook deliveries of one call's events (to any of the tenant's webhooks), in event
/// order: the call page shows each event's deliveries beside it.
#[utoipa::path(get, path = "/calls/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "call id")),
    responses((status = 200, body = DeliveryList), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn list_call_deliveries(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryList>> {
    caller.require(Permission::WebhooksRead)?;
    // 404 for an unknown call (or another tenant's), not an empty list.
    s.store.get_call(&caller.tenant_id, &id).await?;
    let items = s
        .store
        .list_call_deliveries(&caller.tenant_id, &id, 1000)
        .await?;
    Ok(Json(DeliveryList {
        items: items.into_iter().map(DeliveryView::from).collect(),
    }))
}

/// Sends a delivery again (a dead letter, or a delivered one the receiver lost): it becomes
/// pending, due now, with its attempts reset; the body and event id are unchanged.
#[utoipa::path(post, path = "/webhooks/{id}/deliveries/{delivery_id}/redeliver", tag = "webhooks",
    params(("id" = String, Path, description = "webhook id"),
        ("delivery_id" = String, Path, description = "delivery id")),
    responses((status = 202, body = DeliveryView), (status = 404, body = ErrorBody)))]
async fn redeliver(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    caller.require(Permission::WebhooksWrite)?;
    s.store.get_webhook(&caller.tenant_id, &id).await?;
    let delivery = s
        .store
        .redeliver(&caller.tenant_id, &delivery_id, crate::clock::unix_us())
        .await?;
    if delivery.webhook_id != id {
        // The store has no "get delivery" to check first; ids are random, so this is a caller
        // mixing up ids of its own webhooks. The delivery is requeued all the same.
        return Err(ApiError::not_found(format!(
            "delivery {delivery_id} belongs to webhook {}, not {id}",
            delivery.webhook_id
        )));
    }
    s.bus.wake_outbox();
    Ok((StatusCode::ACCEPTED, Json(delivery.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> EgressPolicy {
        EgressPolicy::new(vec!["127.0.0.0/8".parse().expect("cidr")])
    }

    fn req(url: &str) -> WebhookRequest {
        WebhookRequest {
            url: url.to_owned(),
            secret: None,
            events: None,
            active: None,
            description: None,
        }
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_accepted() {
        assert!(
            req("http://127.0.0.1:9/hook")
                .into_input(&loopback())
                .is_ok()
        );
        assert!(req("https://example.com/x").into_input(&loopback()).is_ok());
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "example.com",
            "http://",
            "http://exa\r\nmple.com/",
            "http://example.com/\n",
            "http://example.com/\t",
        ] {
            let e = req(bad).into_input(&loopback()).expect_err(bad);
            assert_eq!(e.code, "invalid_field", "{bad}");
        }
    }

    #[test]
    fn event_kinds_and_secrets_are_validated() {
        let mut r = req("http://127.0.0.1/h");
        r.events = Some(vec!["call.*".into(), "sip.answered".into()]);
        let input = r.into_input(&loopback()).expect("valid");
        assert_eq!(input.events, ["call.*", "sip.answered"]);
        assert!(input.active);
        let mut r = req("http://127.0.0.1/h");
        r.events = Some(vec!["Call.*x".into()]);
        assert!(r.into_input(&loopback()).is_err());
        let mut r = req("http://127.0.0.1/h");
        r.secret = Some("short".into());
        assert!(r.into_input(&loopback()).is_err());
    }

    #[test]
    fn generated_secrets_are_whsec_and_32_hex_digits() {
        let s = generate_secret().expect("entropy");
        assert_eq!(s.len(), 6 + 32);
        assert!(s.starts_with("whsec_"));
        assert!(s[6..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(s, generate_secret().expect("entropy"));
    }
}
