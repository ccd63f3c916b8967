//! Decoding rows into the model types, and the list cursor.
//!
//! Every SELECT names its columns through the `*_COLS` lists here, so a decoder and the
//! statements that feed it cannot drift apart.

use serde_json::Value;
use sqlx::Row as _;

use super::Row;
use crate::store::{
    ApiKey, CallRecord, CallStatus, Delivery, DeliveryStatus, Direction, Node, RecordingRecord,
    Result, Role, ScriptRecord, StoreError, StoredEvent, Tenant, Trunk, TrunkRoute, Webhook,
};
use crate::trunk::{TrunkSettings, TrunkTransport};

pub(super) const TENANT_COLS: &str = "id, name, created_at_us";
pub(super) const KEY_COLS: &str = "id, tenant_id, role, name, prefix, created_at_us, revoked_at_us";
pub(super) const TRUNK_COLS: &str = "id, tenant_id, name, address, transport, username, \
     password, from_user, max_concurrent, max_cps_milli, settings, created_at_us, updated_at_us";
/// A trunk_route row.
pub(super) const ROUTE_COLS: &str = "tenant_id, trunk_id, did, script_id, created_at_us";
/// A script joined with one of its versions: `s` is `script`, `v` is `script_version`.
pub(super) const SCRIPT_COLS: &str = "s.id AS id, s.tenant_id AS tenant_id, v.name AS name, \
     v.version AS version, v.body AS body, s.created_at_us AS created_at_us, \
     v.created_at_us AS updated_at_us";
pub(super) const CALL_COLS: &str = "id, tenant_id, direction, to_uri, from_uri, trunk_id, \
     script_id, script_version, campaign_id, idempotency_key, request, created_at_us, status, \
     outcome, sip_status, sip_reason, q850_cause, sip_call_id, started_at_us, ringing_at_us, \
     answered_at_us, ended_at_us, talk_ms, result, end_reason, node_id";
pub(super) const EVENT_COLS: &str =
    "id, tenant_id, call_id, campaign_id, kind, at_unix_us, offset_us, details";
pub(super) const RECORDING_COLS: &str = "id, tenant_id, call_id, path, format, channels, \
     duration_ms, bytes, sha256, created_at_us";
pub(super) const WEBHOOK_COLS: &str = "id, tenant_id, url, secret, events, active, description, \
     created_at_us, updated_at_us";
pub(super) const DELIVERY_COLS: &str = "id, webhook_id, tenant_id, event_id, body, status, \
     attempts, next_attempt_at_us, last_status, last_error, created_at_us, delivered_at_us";
pub(super) const NODE_COLS: &str = "id, name, capacity, started_at_us, heartbeat_at_us";

pub(super) fn text(row: &Row, col: &str) -> Result<String> {
    Ok(row.try_get::<String, _>(col)?)
}

pub(super) fn opt_text(row: &Row, col: &str) -> Result<Option<String>> {
    Ok(row.try_get::<Option<String>, _>(col)?)
}

pub(super) fn int(row: &Row, col: &str) -> Result<i64> {
    Ok(row.try_get::<i64, _>(col)?)
}

pub(super) fn opt_int(row: &Row, col: &str) -> Result<Option<i64>> {
    Ok(row.try_get::<Option<i64>, _>(col)?)
}

fn json(row: &Row, col: &str) -> Result<Value> {
    let t = text(row, col)?;
    serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

fn opt_json(row: &Row, col: &str) -> Result<Option<Value>> {
    opt_text(row, col)?
        .map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("{col}: {e}"))))
        .transpose()
}

/// JSON as stored (compact text).
pub(super) fn json_text(v: &Value) -> String {
    v.to_string()
}

pub(super) fn tenant(row: &Row) -> Result<Tenant> {
    Ok(Tenant {
        id: text(row, "id")?,
        name: text(row, "name")?,
        created_at_us: int(row, "created_at_us")?,
    })
}

pub(super) fn api_key(row: &Row) -> Result<ApiKey> {
    let role = text(row, "role")?;
    Ok(ApiKey {
        id: text(row, "id")?,
        tenant_id: text(row, "tenant_id")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
        name: text(row, "name")?,
        prefix: text(row, "prefix")?,
        created_at_us: int(row, "created_at_us")?,
        revoked_at_us: opt_int(row, "revoked_at_us")?,
    })
}

pub(super) fn trunk(row: &Row) -> Result<Trunk> {
    let address = text(row, "address")?;
    let transport = text(row, "transport")?;
    let username = opt_text(row, "username")?;
    let password = opt_text(row, "password")?;
    let from_user = opt_text(row, "from_user")?;
    let raw = text(row, "settings")?;
    let mut settings: TrunkSettings = serde_json::from_str(&raw)
        .map_err(|e| StoreError::Corrupt(format!("trunk.settings: {e}")))?;
    // The columns hold these values (each stored once); the settings read complete.
    if settings.hosts.is_empty() && !address.is_empty() {
        settings.hosts.push(address.clone());
    }
    if let Some(t) = TrunkTransport::parse(&transport) {
        settings.transport = t;
    }
    settings.username.clone_from(&username);
    settings.password.clone_from(&password);
    settings.from_user.clone_from(&from_user);
    Ok(Trunk {
        id: text(row, "id")?,
        tenant_id: text(row, "tenant_id")?,
        name: text(row, "name")?,
        address,
        transport,
        username,
        password,
        from_user,
        max_concurrent: opt_u32(row, "max_concurrent")?,
        max_cps_milli: opt_u32(row, "max_cps_milli")?,
        settings,
        created_at_us: int(row, "created_at_us")?,
        updated_at_us: int(row, "updated_at_us")?,
    })
}

pub(super) fn trunk_route(row: &Row) -> Result<TrunkRoute> {
    Ok(TrunkRoute {
        tenant_id: text(row, "tenant_id")?,
        trunk_id: text(row, "trunk_id")?,
        did: text(row, "did")?,
        script_id: opt_text(row, "script_id")?,
        created_at_us: int(row, "created_at_us")?,
    })
}

/// A nullable BIGINT that must fit a `u32` (limits).
fn opt_u32(row: &Row, col: &str) -> Result<Option<u32>> {
    opt_int(row, col)?
        .map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col}: {v}"))))
        .transpose()
}

pub(super) fn script(row: &Row) -> Result<ScriptRecord> {
    Ok(ScriptRecord {
        id: text(row, "id")?,
        tenant_id: text(row, "tenant_id")?,
        name: text(row, "name")?,
        version: int(row, "version")?,
        body: json(row, "body")?,
        created_at_us: int(row, "created_at_us")?,
        updated_at_us: int(row, "updated_at_us")?,
    })
}

pub(super) fn direction_parse(s: &str) -> Option<Direction> {
    [Direction::Outbound, Direction::Inbound]
        .into_iter()
        .find(|d| d.as_str() == s)
}

pub(super) fn call(row: &Row) -> Result<CallRecord> {
    let direction = text(row, "direction")?;
    let status = text(row, "status")?;
    Ok(CallRecord {
        id: text(row, "id")?,
        tenant_id: text(row, "tenant_id")?,
        direction: direction_parse(&direction)
            .ok_or_else(|| StoreError::Corrupt(format!("direction {direction:?}")))?,
        to_uri: text(row, "to_uri")?,
        from_uri: text(row, "from_uri")?,
        trunk_id: opt_text(row, "trunk_id")?,
        script_id: opt_text(row, "script_id")?,
        script_version: opt_int(row, "script_version")?,
        campaign_id: opt_text(row, "campaign_id")?,
        idempotency_key: opt_text(row, "idempotency_key")?,
        request: json(row, "request")?,
        created_at_us: int(row, "created_at_us")?,
        status: CallStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("call status {status:?}")))?,
        outcome: opt_text(row, "outcome")?,
        sip_status: opt_int(row, "sip_status")?,
        sip_reason: opt_text(row, "sip_reason")?,
        q850_cause: opt_int(row, "q850_cause")?,
        sip_call_id: opt_text(row, "sip_call_id")?,
        started_at_us: opt_int(row, "started_at_us")?,
        ringing_at_us: opt_int(row, "ringing_at_us")?,
        answered_at_us: opt_int(row, "answered_at_us")?,
        ended_at_us: opt_int(row, "ended_at_us")?,
        talk_ms: opt_int(row, "talk_ms")?,
        result: opt_json(row, "result")?,
        end_reason: opt_text(row, "end_reason")?,
        node_id: opt_text(row, "node_id")?,
    })
}

pub(super) fn event(row: &Row) -> Result<StoredEvent> {
    Ok(StoredEvent {
        id: int(row, "id")?,
        tenant_id: text(row, "tenant_id")?,
        call_id: opt_text(row, "call_id")?,
        campaign_id: opt_text(row, "campaign_id")?,
        kind: text(row, "kind")?,
        at_unix_us: int(row, "at_unix_us")?,
        offset_us: int(row, "offset_us")?,
        details: json(row, "details")?,
    })
}

pub(super) fn recording(row: &Row) -> Result<RecordingRecord> {
    Ok(RecordingRecord {
        id: text(row, "id")?,
        tenant_id: text(row, "tenant_id")?,
        call_id: text(row, "call_id")?,
        path: text(row, "path")?,
        format: text(row, "format")?,
        channels: int(row, "channels")?,
        duration_ms: int(row, "duration_ms")?,
        bytes: int(row, "bytes")?,
        sha256: text(row, "sha256")?,
        created_at_us: int(row, "created_at_us")?,
    })
}

pub(super) fn webhook(row: &Row) -> Result<Webhook> {
    let events = text(row, "events")?;
    Ok(Webhook {
        id: text(row, "id")?,
        tenant_id: text(row, "tenant_id")?,
        url: text(row, "url")?,
        secret: text(row, "secret")?,
        events: serde_json::from_str(&events)
            .map_err(|e| StoreError::Corrupt(format!("webhook events: {e}")))?,
        active: int(row, "active")? != 0,
        description: opt_text(row, "description")?,
        created_at_us: int(row, "created_at_us")?,
        updated_at_us: int(row, "updated_at_us")?,
    })
}

pub(super) fn delivery(row: &Row) -> Result<Delivery> {
    let status = text(row, "status")?;
    Ok(Delivery {
        id: text(row, "id")?,
        webhook_id: text(row, "webhook_id")?,
        tenant_id: text(row, "tenant_id")?,
        event_id: int(row, "event_id")?,
        body: text(row, "body")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery status {status:?}")))?,
        attempts: int(row, "attempts")?,
        next_attempt_at_us: int(row, "next_attempt_at_us")?,
        last_status: opt_int(row, "last_status")?,
        last_error: opt_text(row, "last_error")?,
        created_at_us: int(row, "created_at_us")?,
        delivered_at_us: opt_int(row, "delivered_at_us")?,
    })
}

pub(super) fn node(row: &Row) -> Result<Node> {
    Ok(Node {
        id: text(row, "id")?,
        name: text(row, "name")?,
        capacity: int(row, "capacity")?,
        started_at_us: int(row, "started_at_us")?,
        heartbeat_at_us: int(row, "heartbeat_at_us")?,
    })
}

/// The list cursor: the (created_at_us, id) of the last row of a page, as lowercase hex of
/// `"<created_at_us>:<id>"`. Opaque to clients: they pass it back unchanged.
pub(super) fn encode_cursor(created_at_us: i64, id: &str) -> String {
    hex(format!("{created_at_us}:{id}").as_bytes())
}

/// The (created_at_us, id) of a cursor; `None` when it is not one [`encode_cursor`] made.
pub(super) fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    if !cursor.len().is_multiple_of(2) || cursor.len() > 512 {
        return None;
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let (created, id) = text.split_once(':')?;
    let created = created.parse().ok()?;
    if id.is_empty() {
        return None;
    }
    Some((created, id.to_owned()))
}

/// Lowercase hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_not_a_cursor() {
        let c = encode_cursor(1_700_000_000_000_000, "call_0123456789abcdef01234567");
        assert_eq!(
            decode_cursor(&c),
            Some((
                1_700_000_000_000_000,
                "call_0123456789abcdef01234567".to_owned()
            ))
        );
        for bad in [
            "",
            "zz",
            "abc",
            &hex(b"nocolon"),
            &hex(b"x:call_1"),
            &hex(b"5:"),
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
