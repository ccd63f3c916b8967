//! The dashboard: a single-page app of plain HTML, CSS and JavaScript modules, embedded in the
//! binary and served at `/` by the API listener (docs/dashboard.md).
//!
//! No build step and no third-party code: the files under `src/dashboard/assets/` are what the
//! browser runs. Every answer carries a strict Content-Security-Policy: scripts and styles
//! only from this origin (no inline script, no `eval`), connections only to this origin,
//! audio from `blob:` (the recording player), no frames, no forms posting elsewhere. The
//! pages render every value from the API as text (`dom.js`).
//!
//! `serve --dashboard-dir DIR` reads the same file names from `DIR` on each request instead of
//! the embedded copies: for working on the pages without rebuilding. Only the names in
//! [`ASSETS`] are served either way, so no request names a path.

use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::api::AppState;

/// The policy every dashboard answer carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; media-src 'self' blob:; connect-src 'self'; font-src 'self'; \
    manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its name under `/ui/` (`index.html` is also `/`).
    pub name: &'static str,
    /// Its media type.
    pub content_type: &'static str,
    /// Its bytes, as compiled in.
    pub body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $ct:literal) => {
        Asset {
            name: $name,
            content_type: $ct,
            body: include_bytes!(concat!("assets/", $name)),
        }
    };
}

/// Every file the dashboard serves.
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("campaigns.css", "text/css; charset=utf-8"),
    asset!("calls.css", "text/css; charset=utf-8"),
    asset!("ops.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
    asset!("charts.js", "text/javascript; charset=utf-8"),
    asset!("campaigns.js", "text/javascript; charset=utf-8"),
    asset!("campaign_new.js", "text/javascript; charset=utf-8"),
    asset!("calls.js", "text/javascript; charset=utf-8"),
    asset!("call.js", "text/javascript; charset=utf-8"),
    asset!("wave.js", "text/javascript; charset=utf-8"),
    asset!("ops.js", "text/javascript; charset=utf-8"),
];

/// The asset of a name, if the dashboard has one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// `GET /` and `GET /ui/{file}` (outside `/v1`, no key: the pages hold no data; the API calls
/// they make carry the key).
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/", get(index))
        .route("/ui/{file}", get(file))
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    serve_asset(&state, "index.html", &headers).await
}

async fn file(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve_asset(&state, &name, &headers).await
}

/// The entity tag of a body: the first 16 bytes of its SHA-256, quoted.
fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// The entity tags of the embedded files, computed once.
fn embedded_etag(index: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    &TAGS.get_or_init(|| ASSETS.iter().map(|a| etag_of(a.body)).collect())[index]
}

async fn serve_asset(state: &AppState, name: &str, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return crate::api::ApiError::not_found("no such dashboard file").into_response();
    };
    let asset = &ASSETS[index];
    let (body, etag) = match &state.config.dashboard_dir {
        None => (
            Bytes::from_static(asset.body),
            embedded_etag(index).to_owned(),
        ),
        Some(dir) => match crate::files::read_dev_asset(dir, asset.name).await {
            Ok(b) => {
                let tag = etag_of(&b);
                (Bytes::from(b), tag)
            }
            Err(e) => {
                tracing::warn!(file = asset.name, dir = %dir.display(), error = %e, "dashboard file unreadable");
                return crate::api::ApiError::not_found("dashboard file unreadable")
                    .into_response();
            }
        },
    };
    // Revalidation: the browser asks with the tag it has; the same file answers 304, empty.
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, body).into_response()
    };
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Revalidate on every load (a new binary's pages are seen at once); an unchanged file
    // costs a 304.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_an_asset_imports_is_an_asset() {
        for a in ASSETS
            .iter()
            .filter(|a| a.name.ends_with(".js") || a.name.ends_with(".html"))
        {
            let text = std::str::from_utf8(a.body).expect("utf-8");
            for (i, _) in text.match_indices("from './") {
                let rest = &text[i + 8..];
                let end = rest.find('\'').expect("closing quote");
                let name = &rest[..end];
                assert!(
                    asset(name).is_some(),
                    "{} imports {name}, which is not served",
                    a.name
                );
            }
            for (i, _) in text.match_indices("/ui/") {
                let rest = &text[i + 4..];
                let end = rest.find('"').expect("closing quote");
                let name = &rest[..end];
                assert!(
                    asset(name).is_some(),
                    "{} links {name}, which is not served",
                    a.name
                );
            }
        }
    }

    #[test]
    fn no_asset_writes_html_from_strings() {
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).expect("utf-8");
            for bad in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "setAttribute('style'",
                "cssText",
                "javascript:",
                "setInterval(",
            ] {
                assert!(!text.contains(bad), "{} uses {bad}", a.name);
            }
            if a.name.ends_with(".html") {
                assert!(
                    !text.contains("<script>") && !text.contains(" style=\""),
                    "{} has inline script or style",
                    a.name
                );
            }
        }
    }
}
