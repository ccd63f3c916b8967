//! A small JSON client of callplane's own REST API, over loopback or a network: `callplane
//! demo` drives the server it started with it, as any client would.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP client could not be built (no TLS roots, no resolver...).
    #[error("building the HTTP client: {0}")]
    Build(String),
    /// Connecting, sending or reading failed, or the request timed out.
    #[error("{method} {path}: {error}")]
    Transport {
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// What went wrong.
        error: String,
    },
}

/// An answer: the status and the body as JSON (`null` when empty; a JSON string holding the
/// text when it is not JSON, e.g. CSV).
#[derive(Debug, Clone)]
pub struct ApiReply {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl ApiReply {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A client of one server, with one key.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `addr` (plain HTTP) with the Bearer `key`; each request may take
    /// `timeout` at most.
    pub fn new(addr: SocketAddr, key: &str, timeout: Duration) -> Result<ApiClient, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(ApiClient {
            base: format!("http://{addr}"),
            key: key.to_owned(),
            http,
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<ApiReply, ClientError> {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<ApiReply, ClientError> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// Sends a request (`path` from `/`, e.g. `/v1/trunks`), the body as JSON when given.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ApiReply, ClientError> {
        let failed = |e: reqwest::Error| ClientError::Transport {
            method: method.to_string(),
            path: path.to_owned(),
            error: e.to_string(),
        };
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.map_err(failed)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(failed)?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(ApiReply { status, body })
    }
}
