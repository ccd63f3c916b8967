//! Recordings: metadata, and the WAV itself with single-range `Range` support (RFC 9110 §14).
//!
//! The file is read through `files::range` in blocking tasks, one 64 KiB chunk at a time, so a
//! long recording streams instead of sitting in memory.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Permission};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::{AppState, rfc3339};
use crate::files::range::{RangeReader, file_len};
use crate::store::RecordingRecord;

/// This area's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(call_recordings))
        .routes(routes!(get_recording))
        .routes(routes!(recording_audio))
}

/// A recording's metadata (the server path is not shown).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordingView {
    /// `rec_` + 24 hex digits.
    pub id: String,
    /// Its call.
    pub call_id: String,
    /// `wav`.
    pub format: String,
    /// 1 or 2 (stereo: left is the remote party).
    pub channels: i64,
    /// Length.
    pub duration_ms: i64,
    /// Size of the file.
    pub bytes: i64,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// RFC 3339.
    pub created_at: String,
    /// µs since the epoch.
    pub created_at_us: i64,
    /// `/v1/recordings/{id}/audio`.
    pub audio_url: String,
}

impl From<RecordingRecord> for RecordingView {
    fn from(r: RecordingRecord) -> RecordingView {
        RecordingView {
            audio_url: format!("/v1/recordings/{}/audio", r.id),
            id: r.id,
            call_id: r.call_id,
            format: r.format,
            channels: r.channels,
            duration_ms: r.duration_ms,
            bytes: r.bytes,
            sha256: r.sha256,
            created_at: rfc3339(r.created_at_us),
            created_at_us: r.created_at_us,
        }
    }
}

/// `{"items": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordingList {
    /// Oldest first.
    pub items: Vec<RecordingView>,
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No (usable) range: the whole file, 200.
    Full,
    /// Bytes `start..=end`, 206.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Interprets a `Range` header (RFC 9110 §14.1.2): `bytes=a-b`, `bytes=a-`, `bytes=-n`.
/// A header this server does not understand, and a multi-range request, get the whole file
/// (RFC 9110 §14.2: a server MAY ignore the Range header field).
pub fn answer_range(header: Option<&str>, len: u64) -> RangeAnswer {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.is_empty(), last.is_empty()) {
        // `-n`: the last n bytes. "If the selected representation is shorter than the
        // specified suffix-length, the entire representation is used." A zero suffix, or any
        // suffix of an empty file, selects nothing: unsatisfiable.
        (true, false) => match parse(last) {
            Some(n) if n > 0 && len > 0 => RangeAnswer::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            Some(_) => RangeAnswer::Unsatisfiable,
            None => RangeAnswer::Full,
        },
        (false, _) => {
            let Some(start) = parse(first) else {
                return RangeAnswer::Full;
            };
            let end = if last.is_empty() {
                None
            } else {
                match parse(last) {
                    Some(e) => Some(e),
                    None => return RangeAnswer::Full,
                }
            };
            // "A client MUST NOT generate a range with last-pos < first-pos"; an invalid
            // range-spec is ignored (RFC 9110 §14.1.1).
            if end.is_some_and(|e| e < start) {
                return RangeAnswer::Full;
            }
            // "first-pos ... greater than or equal to the current length": unsatisfiable.
            if start >= len {
                return RangeAnswer::Unsatisfiable;
            }
            RangeAnswer::Partial {
                start,
                end: end.map_or(len - 1, |e| e.min(len - 1)),
            }
        }
        (true, true) => RangeAnswer::Full,
    }
}

/// A call's recordings.
#[utoipa::path(get, path = "/calls/{id}/recordings", tag = "recordings",
    params(("id" = String, Path, description = "call id")),
    responses((status = 200, body = RecordingList), (status = 404, body = ErrorBody)))]
async fn call_recordings(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RecordingList>> {
    caller.require(Permission::RecordingsRead)?;
    // 404 for another tenant's call rather than an empty list.
    s.store.get_call(&caller.tenant_id, &id).await?;
    let items = s.store.list_recordings(&caller.tenant_id, &id).await?;
    Ok(Json(RecordingList {
        items: items.into_iter().map(RecordingView::from).collect(),
    }))
}

/// A recording's metadata.
#[utoipa::path(get, path = "/recordings/{id}", tag = "recordings",
    params(("id" = String, Path, description = "recording id")),
    responses((status = 200, body = RecordingView), (status = 404, body = ErrorBody)))]
async fn get_recording(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RecordingView>> {
    caller.require(Permission::RecordingsRead)?;
    Ok(Json(
        s.store.get_recording(&caller.tenant_id, &id).await?.into(),
    ))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// The WAV (`audio/wav`). `Range: bytes=a-b | a- | -n` answers 206 with `Content-Range`; an
/// unsatisfiable range answers 416 with `Content-Range: bytes */<length>`.
#[utoipa::path(get, path = "/recordings/{id}/audio", tag = "recordings",
    params(("id" = String, Path, description = "recording id"),
        ("Range" = Option<String>, Header, description = "bytes=a-b, bytes=a- or bytes=-n")),
    responses(
        (status = 200, content_type = "audio/wav", body = Vec<u8>, description = "the whole file"),
        (status = 206, content_type = "audio/wav", body = Vec<u8>, description = "the requested range"),
        (status = 404, body = ErrorBody), (status = 416, description = "range not satisfiable")))]
async fn recording_audio(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require(Permission::RecordingsRead)?;
    let rec = s.store.get_recording(&caller.tenant_id, &id).await?;
    let path = std::path::PathBuf::from(&rec.path);
    let missing = |e: std::io::Error| {
        tracing::warn!(recording_id = %rec.id, path = %rec.path, error = %e, "recording file unreadable");
        ApiError::not_found("the recording's file is not available on this node")
            .with_code("recording_unavailable")
    };
    let len = {
        let path = path.clone();
        blocking(move || file_len(&path)).await.map_err(missing)?
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match answer_range(range, len) {
        RangeAnswer::Full => (StatusCode::OK, 0, len.checked_sub(1)),
        RangeAnswer::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, Some(end)),
        RangeAnswer::Unsatisfiable => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .header(header::ACCEPT_RANGES, "bytes")
                .body(Body::empty())
                .map_err(|e| ApiError::internal(e.to_string()));
        }
    };
    let count = end.map_or(0, |e| e - start + 1);
    let reader = {
        let path = path.clone();
        blocking(move || RangeReader::open(&path, start, count))
            .await
            .map_err(missing)?
    };
    // Each chunk is read in a blocking task; an error mid-stream aborts the response (the
    // client sees a short body against Content-Length, never wrong bytes).
    let stream = futures_util::stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        match blocking(move || reader.next_chunk().map(|c| (c, reader))).await {
            Ok((Some(chunk), reader)) => Some((Ok(Bytes::from(chunk)), Some(reader))),
            Ok((None, _)) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "audio/wav")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, count);
    if status == StatusCode::PARTIAL_CONTENT
        && let Some(end) = end
    {
        builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
    }
    let mut response = builder
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeAnswer::*;
        assert_eq!(answer_range(None, 100), Full);
        assert_eq!(
            answer_range(Some("bytes=0-9"), 100),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            answer_range(Some("bytes=90-"), 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            answer_range(Some("bytes=90-500"), 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            answer_range(Some("bytes=-10"), 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            answer_range(Some("bytes=-500"), 100),
            Partial { start: 0, end: 99 }
        );
        assert_eq!(answer_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(answer_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(answer_range(Some("bytes=0-"), 0), Unsatisfiable);
        // Ignored: multi-range, other units, garbage, last < first.
        assert_eq!(answer_range(Some("bytes=0-1,5-6"), 100), Full);
        assert_eq!(answer_range(Some("items=0-1"), 100), Full);
        assert_eq!(answer_range(Some("bytes=x-1"), 100), Full);
        assert_eq!(answer_range(Some("bytes=9-1"), 100), Full);
    }
}
