//! Authentication (`Authorization: Bearer cp_…`) and the role × permission table.
//!
//! A key's secret is never stored: the store keeps its SHA-256 (hex) and the first characters
//! (`prefix`) so a person can recognise it in a list. [`Caller`] is the extractor every `/v1`
//! handler takes; it also charges the key's rate limit ([`super::limits`]).

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::store::{Role, StoreError};

/// Length of the stored prefix of a key (`cp_` + 7 hex digits).
pub const KEY_PREFIX_LEN: usize = 10;

/// Who is calling: the tenant, the key and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's tenant; every handler scopes its store calls to it.
    pub tenant_id: String,
    /// The key's id (the rate limit is per key).
    pub key_id: String,
    /// The key's role.
    pub role: Role,
}

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read calls.
    CallsRead,
    /// Place and hang up calls.
    CallsWrite,
    /// Read timelines (`/v1/calls/{id}/events`, SSE).
    EventsRead,
    /// Read recordings and their audio.
    RecordingsRead,
    /// Read trunks.
    TrunksRead,
    /// Create, replace and delete trunks.
    TrunksWrite,
    /// Read scripts.
    ScriptsRead,
    /// Create, replace and delete scripts.
    ScriptsWrite,
    /// Read webhooks and their deliveries.
    WebhooksRead,
    /// Create, replace and delete webhooks; redeliver.
    WebhooksWrite,
    /// List API keys.
    KeysRead,
    /// Create and revoke API keys.
    KeysWrite,
    /// Read campaigns.
    CampaignsRead,
    /// Run campaigns.
    CampaignsWrite,
    /// Read system state (nodes, ...).
    SystemRead,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 15] = [
        Permission::CallsRead,
        Permission::CallsWrite,
        Permission::EventsRead,
        Permission::RecordingsRead,
        Permission::TrunksRead,
        Permission::TrunksWrite,
        Permission::ScriptsRead,
        Permission::ScriptsWrite,
        Permission::WebhooksRead,
        Permission::WebhooksWrite,
        Permission::KeysRead,
        Permission::KeysWrite,
        Permission::CampaignsRead,
        Permission::CampaignsWrite,
        Permission::SystemRead,
    ];

    /// The name shown in 403 messages and docs/api.md (`calls:write`).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::CallsRead => "calls:read",
            Permission::CallsWrite => "calls:write",
            Permission::EventsRead => "events:read",
            Permission::RecordingsRead => "recordings:read",
            Permission::TrunksRead => "trunks:read",
            Permission::TrunksWrite => "trunks:write",
            Permission::ScriptsRead => "scripts:read",
            Permission::ScriptsWrite => "scripts:write",
            Permission::WebhooksRead => "webhooks:read",
            Permission::WebhooksWrite => "webhooks:write",
            Permission::KeysRead => "keys:read",
            Permission::KeysWrite => "keys:write",
            Permission::CampaignsRead => "campaigns:read",
            Permission::CampaignsWrite => "campaigns:write",
            Permission::SystemRead => "system:read",
        }
    }

    /// Whether this only reads.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Permission::CallsRead
                | Permission::EventsRead
                | Permission::RecordingsRead
                | Permission::TrunksRead
                | Permission::ScriptsRead
                | Permission::WebhooksRead
                | Permission::KeysRead
                | Permission::CampaignsRead
                | Permission::SystemRead
        )
    }
}

/// The permission table (docs/api.md "Roles"):
/// - owner: everything;
/// - admin: everything (but [`may_grant`] keeps owner keys to owners);
/// - operator: every read, places and hangs up calls, runs campaigns;
/// - analyst: every read;
/// - viewer: calls and their events, campaigns.
pub fn allows(role: Role, p: Permission) -> bool {
    match role {
        Role::Owner | Role::Admin => true,
        Role::Operator => {
            p.is_read() || matches!(p, Permission::CallsWrite | Permission::CampaignsWrite)
        }
        Role::Analyst => p.is_read(),
        Role::Viewer => matches!(
            p,
            Permission::CallsRead | Permission::EventsRead | Permission::CampaignsRead
        ),
    }
}

/// Whether a key of role `granter` may create (or revoke) a key of role `target`: never above
/// its own role, and owner keys only by an owner.
pub fn may_grant(granter: Role, target: Role) -> bool {
    // `Role` orders most powerful first (Owner < Admin < ...).
    allows(granter, Permission::KeysWrite)
        && granter <= target
        && (target != Role::Owner || granter == Role::Owner)
}

impl Caller {
    /// `Ok` when the caller's role has `p`; otherwise 403 `forbidden` naming `p`.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if allows(self.role, p) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "a {} key lacks the permission {}",
                self.role,
                p.as_str()
            )))
        }
    }
}

/// A new key's secret and what the store keeps of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    /// `cp_` + 40 hex digits: shown once.
    pub secret: String,
    /// Lowercase hex SHA-256 of `secret`.
    pub secret_sha256: String,
    /// The first [`KEY_PREFIX_LEN`] characters of `secret`.
    pub prefix: String,
}

/// Makes a key: `cp_` + 40 hex digits from the OS's random source.
pub fn generate_key() -> Result<GeneratedKey, getrandom::Error> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes)?;
    let secret = format!("cp_{}", hex::encode(bytes));
    Ok(GeneratedKey {
        secret_sha256: hash_key(&secret),
        prefix: secret[..KEY_PREFIX_LEN].to_owned(),
        secret,
    })
}

/// Lowercase hex SHA-256 of a key's secret (what the store looks keys up by).
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // The peer address (the API listener adds it; a router called without one, as in
        // tests, is not limited per address).
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = peer
            && let Err(retry_after_s) = state.auth_failures.check_at(ip, crate::clock::now())
        {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "auth_rate_limited",
                format!(
                    "too many failed authentications from this address; retry in {retry_after_s} s"
                ),
            )
            .with_retry_after(retry_after_s));
        }
        let result = authenticate(parts, state).await;
        if let (Some(ip), Err(e)) = (peer, &result)
            && e.status == axum::http::StatusCode::UNAUTHORIZED
        {
            state.auth_failures.fail_at(ip, crate::clock::now());
        }
        result
    }
}

/// The key of a request, checked against the store and its rate limit.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <key>`"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
    let secret = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization scheme must be Bearer"))?;
    let key = match state.store.find_api_key(&hash_key(secret)).await {
        Ok(key) => key,
        // Unknown and revoked keys look the same to the client.
        Err(StoreError::NotFound) => {
            return Err(ApiError::unauthorized("unknown or revoked API key"));
        }
        Err(e) => return Err(e.into()),
    };
    if let Err(retry_after_s) = state.limiter.check(&key.id) {
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests for this key; retry in {retry_after_s} s"),
        )
        .with_retry_after(retry_after_s));
    }
    Ok(Caller {
        tenant_id: key.tenant_id,
        key_id: key.id,
        role: key.role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let k = generate_key().expect("entropy");
        assert_eq!(k.secret.len(), 43);
        assert!(k.secret.starts_with("cp_"));
        assert!(k.secret[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(k.prefix, &k.secret[..10]);
        assert_eq!(k.secret_sha256, hash_key(&k.secret));
        assert_eq!(k.secret_sha256.len(), 64);
        assert_ne!(generate_key().expect("entropy").secret, k.secret);
    }

    #[test]
    fn only_owners_grant_owner_keys_and_nobody_grants_above_itself() {
        assert!(may_grant(Role::Owner, Role::Owner));
        assert!(!may_grant(Role::Admin, Role::Owner));
        assert!(may_grant(Role::Admin, Role::Admin));
        assert!(may_grant(Role::Admin, Role::Viewer));
        assert!(!may_grant(Role::Operator, Role::Viewer));
        assert!(!may_grant(Role::Viewer, Role::Viewer));
    }
}
