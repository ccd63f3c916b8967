//! The one error shape of the API: `{"error": {"code", "message", "id"}}`.
//!
//! `code` is stable (catalogued in docs/api.md) and is what clients branch on; `message` is for
//! people; `id` (`err_` + 16 hex digits) also appears in the log line of the same error, so an
//! operator can find what a client reports. Internal details (SQL text, paths) are logged, never
//! shown.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::StoreError;

/// An API error: a status, a stable code and a message.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code (docs/api.md "Error codes").
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after_s: Option<u64>,
    /// What the log line adds and the client never sees (a database message may quote SQL,
    /// constraint names or a connection string).
    pub detail: Option<String>,
    /// The call this error left behind (a 503 after the call's row was written).
    pub call_id: Option<String>,
}

/// The body of every error response (for OpenAPI).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The fields of an error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`not_found`, `forbidden`...).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// `err_` + 16 hex digits; the same id is in the server's log line.
    pub id: String,
    /// The call row the refused request created (`503 capacity_exceeded` / `draining` of
    /// `POST /v1/calls`): it is ended as `failed`, and its timeline says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
            detail: None,
            call_id: None,
        }
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 with a code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 422 with a code.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 500 `internal`: the message is logged, the client sees a generic one.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503 with a code.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// 503 `store_backlog` with `Retry-After`: the node's engine-to-store event queue is over
    /// its high-water mark (`--event-queue`), so it takes no new calls until the store catches
    /// up.
    pub fn store_backlog() -> ApiError {
        ApiError::unavailable(
            "store_backlog",
            "the store is behind on this node's call events; retry later",
        )
        .with_retry_after(5)
    }

    /// The same error with another stable code.
    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = code;
        self
    }

    /// Adds a detail for the log line only.
    pub fn with_detail(mut self, detail: impl Into<String>) -> ApiError {
        self.detail = Some(detail.into());
        self
    }

    /// Names the call row the refused request created (`error.call_id`).
    pub fn with_call_id(mut self, call_id: impl Into<String>) -> ApiError {
        self.call_id = Some(call_id.into());
        self
    }

    /// Adds a `Retry-After` header.
    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after_s = Some(seconds);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// `err_` + 16 lowercase hex digits.
fn error_id() -> String {
    let mut bytes = [0u8; 8];
    // getrandom fails only without an OS entropy source; an id of zeros still names the
    // error in the log (with its time), so the response is not lost over it.
    let _ = getrandom::fill(&mut bytes);
    format!("err_{}", hex::encode(bytes))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let id = error_id();
        // 5xx hide their detail from the client: it may hold SQL or paths.
        let shown = if self.status.is_server_error() && self.code == "internal" {
            "internal error; quote the error id to the operator".to_owned()
        } else {
            self.message.clone()
        };
        let detail = self.detail.as_deref().unwrap_or("");
        if self.status.is_server_error() {
            tracing::error!(error_id = %id, code = self.code, status = self.status.as_u16(), message = %self.message, detail, "API error");
        } else {
            tracing::warn!(error_id = %id, code = self.code, status = self.status.as_u16(), message = %self.message, detail, "API error");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: shown,
                id,
                call_id: self.call_id,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::not_found("no such resource"),
            StoreError::Conflict(m) => ApiError::conflict(
                "conflict",
                "conflicts with an existing resource (a unique name is taken)",
            )
            .with_detail(m),
            StoreError::Database(m) => {
                ApiError::unavailable("database_unavailable", "the database is unavailable")
                    .with_detail(m)
            }
            StoreError::Invalid(m) => ApiError::unprocessable(
                "invalid_field",
                "a value was refused by the database (a NUL character, or a number out of range)",
            )
            .with_detail(m),
            StoreError::Corrupt(m) | StoreError::Migration(m) => ApiError::internal(m),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        let text = rejection.body_text();
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON with `Content-Type: application/json`",
            ),
            JsonRejection::JsonSyntaxError(_) => ApiError::bad_request("invalid_json", text),
            // serde's message for `deny_unknown_fields` is "unknown field `x`, expected ...".
            JsonRejection::JsonDataError(_) if text.contains("unknown field") => {
                ApiError::bad_request("unknown_field", text)
            }
            JsonRejection::JsonDataError(_) => ApiError::bad_request("invalid_json", text),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => body_too_large(),
            other => ApiError::bad_request("invalid_json", other.body_text()),
        }
    }
}

/// 413 `body_too_large`.
pub fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "the request body is larger than the server accepts",
    )
}

/// `axum::Json` whose rejections are [`ApiError`]s (`invalid_json`, `unknown_field`,
/// `body_too_large`, `unsupported_media_type`). As a response it is plain JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(e.into()),
        }
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// `axum::extract::Query` whose rejection is 400 `invalid_query`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(ApiError::bad_request("invalid_query", e.body_text())),
        }
    }
}
