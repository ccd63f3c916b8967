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

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::AppState;

/// The policy every dashboard answer carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; font-src 'self'; \
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

async fn index(State(state): State<AppState>) -> Response {
    serve_asset(&state, "index.html").await
}

async fn file(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    serve_asset(&state, &name).await
}

async fn serve_asset(state: &AppState, name: &str) -> Response {
    let Some(asset) = asset(name) else {
        return crate::api::ApiError::not_found("no such dashboard file").into_response();
    };
    let body = match &state.config.dashboard_dir {
        None => asset.body.to_vec(),
        Some(dir) => match crate::files::read_dev_asset(dir, asset.name).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = asset.name, dir = %dir.display(), error = %e, "dashboard file unreadable");
                return crate::api::ApiError::not_found("dashboard file unreadable")
                    .into_response();
            }
        },
    };
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
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
    // Revalidate on every load: a new binary's pages are seen at once (they are small).
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
