//! Tenants, API keys, trunks, scripts, the suppression list and nodes.

use serde_json::Value;

use super::SqlStore;
use super::rows::{self, KEY_COLS, NODE_COLS, ROUTE_COLS, SCRIPT_COLS, TENANT_COLS, TRUNK_COLS};
use crate::store::{
    ApiKey, NewApiKey, Node, Result, ScriptRecord, StoreError, Tenant, Trunk, TrunkDirectory,
    TrunkInput, TrunkRoute, new_id,
};

pub(super) async fn create_tenant(s: &SqlStore, name: &str, at_us: i64) -> Result<Tenant> {
    let row = sqlx::query(&format!(
        "INSERT INTO tenant (id, name, created_at_us) VALUES ($1, $2, $3) RETURNING {TENANT_COLS}"
    ))
    .bind(new_id("ten"))
    .bind(name)
    .bind(at_us)
    .fetch_one(&s.pool)
    .await?;
    rows::tenant(&row)
}

pub(super) async fn get_tenant(s: &SqlStore, id: &str) -> Result<Tenant> {
    let row = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenant WHERE id = $1"))
        .bind(id)
        .fetch_optional(&s.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
    rows::tenant(&row)
}

pub(super) async fn list_tenants(s: &SqlStore) -> Result<Vec<Tenant>> {
    sqlx::query(&format!(
        "SELECT {TENANT_COLS} FROM tenant ORDER BY created_at_us, id"
    ))
    .fetch_all(&s.pool)
    .await?
    .iter()
    .map(rows::tenant)
    .collect()
}

pub(super) async fn create_api_key(s: &SqlStore, key: &NewApiKey, at_us: i64) -> Result<ApiKey> {
    let row = sqlx::query(&format!(
        "INSERT INTO api_key (id, tenant_id, role, name, prefix, secret_sha256, created_at_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {KEY_COLS}"
    ))
    .bind(new_id("key"))
    .bind(key.tenant_id.as_str())
    .bind(key.role.as_str())
    .bind(key.name.as_str())
    .bind(key.prefix.as_str())
    .bind(key.secret_sha256.as_str())
    .bind(at_us)
    .fetch_one(&s.pool)
    .await?;
    rows::api_key(&row)
}

pub(super) async fn find_api_key(s: &SqlStore, secret_sha256: &str) -> Result<ApiKey> {
    let row = sqlx::query(&format!(
        "SELECT {KEY_COLS} FROM api_key WHERE secret_sha256 = $1 AND revoked_at_us IS NULL"
    ))
    .bind(secret_sha256)
    .fetch_optional(&s.pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    rows::api_key(&row)
}

pub(super) async fn list_api_keys(s: &SqlStore, tenant: &str) -> Result<Vec<ApiKey>> {
    sqlx::query(&format!(
        "SELECT {KEY_COLS} FROM api_key WHERE tenant_id = $1 ORDER BY created_at_us, id"
    ))
    .bind(tenant)
    .fetch_all(&s.pool)
    .await?
    .iter()
    .map(rows::api_key)
    .collect()
}

pub(super) async fn revoke_api_key(s: &SqlStore, tenant: &str, id: &str, at_us: i64) -> Result<()> {
    // Revoking twice keeps the first time (and is not an error: the key is revoked).
    let done = sqlx::query(
        "UPDATE api_key SET revoked_at_us = COALESCE(revoked_at_us, $3) \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(id)
    .bind(at_us)
    .execute(&s.pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The column values of a trunk (each setting stored once: see migration 0005).
struct TrunkColumns {
    address: String,
    transport: String,
    username: Option<String>,
    password: Option<String>,
    from_user: Option<String>,
    settings: String,
}

impl TrunkColumns {
    fn of(input: &TrunkInput) -> Result<TrunkColumns> {
        let mut settings = input.settings.clone();
        let address = if input.address.is_empty() {
            settings.hosts.first().cloned().unwrap_or_default()
        } else {
            input.address.clone()
        };
        let transport = if input.transport.is_empty() {
            settings.transport.as_str().to_owned()
        } else {
            input.transport.clone()
        };
        let username = input.username.clone().or(settings.username.take());
        let password = input.password.clone().or(settings.password.take());
        let from_user = input.from_user.clone().or(settings.from_user.take());
        // Held by their columns: out of the JSON (the password is never serialised anyway).
        settings.username = None;
        settings.password = None;
        settings.from_user = None;
        settings.transport = Default::default();
        let settings = serde_json::to_string(&settings)
            .map_err(|e| StoreError::Corrupt(format!("trunk.settings: {e}")))?;
        Ok(TrunkColumns {
            address,
            transport,
            username,
            password,
            from_user,
            settings,
        })
    }
}

pub(super) async fn create_trunk(
    s: &SqlStore,
    tenant: &str,
    input: &TrunkInput,
    at_us: i64,
) -> Result<Trunk> {
    let c = TrunkColumns::of(input)?;
    let row = sqlx::query(&format!(
        "INSERT INTO trunk (id, tenant_id, name, address, transport, username, password, \
         from_user, max_concurrent, max_cps_milli, settings, created_at_us, updated_at_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING {TRUNK_COLS}"
    ))
    .bind(new_id("trk"))
    .bind(tenant)
    .bind(input.name.as_str())
    .bind(c.address.as_str())
    .bind(c.transport.as_str())
    .bind(c.username.as_deref())
    .bind(c.password.as_deref())
    .bind(c.from_user.as_deref())
    .bind(input.max_concurrent.map(i64::from))
    .bind(input.max_cps_milli.map(i64::from))
    .bind(c.settings.as_str())
    .bind(at_us)
    .fetch_one(&s.pool)
    .await?;
    rows::trunk(&row)
}

pub(super) async fn get_trunk(s: &SqlStore, tenant: &str, id: &str) -> Result<Trunk> {
    let row = sqlx::query(&format!(
        "SELECT {TRUNK_COLS} FROM trunk WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&s.pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    rows::trunk(&row)
}

pub(super) async fn list_trunks(s: &SqlStore, tenant: &str) -> Result<Vec<Trunk>> {
    sqlx::query(&format!(
        "SELECT {TRUNK_COLS} FROM trunk WHERE tenant_id = $1 ORDER BY name"
    ))
    .bind(tenant)
    .fetch_all(&s.pool)
    .await?
    .iter()
    .map(rows::trunk)
    .collect()
}

pub(super) async fn update_trunk(
    s: &SqlStore,
    tenant: &str,
    id: &str,
    input: &TrunkInput,
    at_us: i64,
) -> Result<Trunk> {
    let c = TrunkColumns::of(input)?;
    let row = sqlx::query(&format!(
        "UPDATE trunk SET name = $3, address = $4, transport = $5, username = $6, \
         password = COALESCE($7, password), from_user = $8, max_concurrent = $9, \
         max_cps_milli = $10, settings = $11, updated_at_us = $12 \
         WHERE tenant_id = $1 AND id = $2 RETURNING {TRUNK_COLS}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(input.name.as_str())
    .bind(c.address.as_str())
    .bind(c.transport.as_str())
    .bind(c.username.as_deref())
    .bind(c.password.as_deref())
    .bind(c.from_user.as_deref())
    .bind(input.max_concurrent.map(i64::from))
    .bind(input.max_cps_milli.map(i64::from))
    .bind(c.settings.as_str())
    .bind(at_us)
    .fetch_optional(&s.pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    rows::trunk(&row)
}

pub(super) async fn delete_trunk(s: &SqlStore, tenant: &str, id: &str) -> Result<()> {
    let mut tx = s.begin().await?;
    // Explicitly (not only ON DELETE CASCADE): the result does not depend on the foreign_keys
    // pragma of whoever opened the SQLite file.
    sqlx::query("DELETE FROM trunk_route WHERE tenant_id = $1 AND trunk_id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query("DELETE FROM trunk WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        tx.rollback().await?;
        return Err(StoreError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

/// `NotFound` unless `trunk_id` is one of the tenant's trunks.
async fn require_trunk(s: &SqlStore, tenant: &str, trunk_id: &str) -> Result<()> {
    sqlx::query("SELECT id FROM trunk WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(trunk_id)
        .fetch_optional(&s.pool)
        .await?
        .ok_or(StoreError::NotFound)
        .map(|_| ())
}

pub(super) async fn create_trunk_route(
    s: &SqlStore,
    tenant: &str,
    trunk_id: &str,
    did: &str,
    script_id: Option<&str>,
    at_us: i64,
) -> Result<TrunkRoute> {
    require_trunk(s, tenant, trunk_id).await?;
    let row = sqlx::query(&format!(
        "INSERT INTO trunk_route ({ROUTE_COLS}) VALUES ($1, $2, $3, $4, $5) RETURNING {ROUTE_COLS}"
    ))
    .bind(tenant)
    .bind(trunk_id)
    .bind(did)
    .bind(script_id)
    .bind(at_us)
    .fetch_one(&s.pool)
    .await?;
    rows::trunk_route(&row)
}

pub(super) async fn list_trunk_routes(
    s: &SqlStore,
    tenant: &str,
    trunk_id: &str,
) -> Result<Vec<TrunkRoute>> {
    require_trunk(s, tenant, trunk_id).await?;
    sqlx::query(&format!(
        "SELECT {ROUTE_COLS} FROM trunk_route WHERE tenant_id = $1 AND trunk_id = $2 ORDER BY did"
    ))
    .bind(tenant)
    .bind(trunk_id)
    .fetch_all(&s.pool)
    .await?
    .iter()
    .map(rows::trunk_route)
    .collect()
}

pub(super) async fn delete_trunk_route(
    s: &SqlStore,
    tenant: &str,
    trunk_id: &str,
    did: &str,
) -> Result<()> {
    let done =
        sqlx::query("DELETE FROM trunk_route WHERE tenant_id = $1 AND trunk_id = $2 AND did = $3")
            .bind(tenant)
            .bind(trunk_id)
            .bind(did)
            .execute(&s.pool)
            .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(super) async fn load_trunk_directory(s: &SqlStore) -> Result<TrunkDirectory> {
    let trunks = sqlx::query(&format!(
        "SELECT {TRUNK_COLS} FROM trunk ORDER BY tenant_id, name"
    ))
    .fetch_all(&s.pool)
    .await?
    .iter()
    .map(rows::trunk)
    .collect::<Result<Vec<_>>>()?;
    let routes = sqlx::query(&format!(
        "SELECT {ROUTE_COLS} FROM trunk_route ORDER BY tenant_id, did"
    ))
    .fetch_all(&s.pool)
    .await?
    .iter()
    .map(rows::trunk_route)
    .collect::<Result<Vec<_>>>()?;
    Ok(TrunkDirectory { trunks, routes })
}

pub(super) async fn create_script(
    s: &SqlStore,
    tenant: &str,
    name: &str,
    body: &Value,
    at_us: i64,
) -> Result<ScriptRecord> {
    let id = new_id("scr");
    let mut tx = s.begin().await?;
    sqlx::query(
        "INSERT INTO script (id, tenant_id, name, version, created_at_us, updated_at_us) \
         VALUES ($1, $2, $3, 1, $4, $4)",
    )
    .bind(id.as_str())
    .bind(tenant)
    .bind(name)
    .bind(at_us)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO script_version (script_id, version, name, body, created_at_us) \
         VALUES ($1, 1, $2, $3, $4)",
    )
    .bind(id.as_str())
    .bind(name)
    .bind(rows::json_text(body))
    .bind(at_us)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ScriptRecord {
        id,
        tenant_id: tenant.to_owned(),
        name: name.to_owned(),
        version: 1,
        body: body.clone(),
        created_at_us: at_us,
        updated_at_us: at_us,
    })
}

pub(super) async fn get_script(
    s: &SqlStore,
    tenant: &str,
    id: &str,
    version: Option<i64>,
) -> Result<ScriptRecord> {
    let row = match version {
        // The current version of a script that was not deleted.
        None => {
            sqlx::query(&format!(
                "SELECT {SCRIPT_COLS} FROM script s \
             JOIN script_version v ON v.script_id = s.id AND v.version = s.version \
             WHERE s.tenant_id = $1 AND s.id = $2 AND s.deleted_at_us IS NULL"
            ))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&s.pool)
            .await?
        }
        // Any version, deleted script or not: calls that ran it keep pointing at it.
        Some(version) => {
            sqlx::query(&format!(
                "SELECT {SCRIPT_COLS} FROM script s \
             JOIN script_version v ON v.script_id = s.id \
             WHERE s.tenant_id = $1 AND s.id = $2 AND v.version = $3"
            ))
            .bind(tenant)
            .bind(id)
            .bind(version)
            .fetch_optional(&s.pool)
            .await?
        }
    };
    rows::script(&row.ok_or(StoreError::NotFound)?)
}

pub(super) async fn list_scripts(s: &SqlStore, tenant: &str) -> Result<Vec<ScriptRecord>> {
    sqlx::query(&format!(
        "SELECT {SCRIPT_COLS} FROM script s \
         JOIN script_version v ON v.script_id = s.id AND v.version = s.version \
         WHERE s.tenant_id = $1 AND s.deleted_at_us IS NULL ORDER BY s.name, s.id"
    ))
    .bind(tenant)
    .fetch_all(&s.pool)
    .await?
    .iter()
    .map(rows::script)
    .collect()
}

pub(super) async fn update_script(
    s: &SqlStore,
    tenant: &str,
    id: &str,
    name: Option<&str>,
    body: &Value,
    at_us: i64,
) -> Result<ScriptRecord> {
    let mut tx = s.begin().await?;
    // Bumping the version in the UPDATE itself makes two concurrent updates take turns on the
    // row lock (PostgreSQL) instead of both writing version n+1.
    let row = sqlx::query(
        "UPDATE script SET version = version + 1, name = COALESCE($3, name), updated_at_us = $4 \
         WHERE tenant_id = $1 AND id = $2 AND deleted_at_us IS NULL \
         RETURNING version, name, created_at_us",
    )
    .bind(tenant)
    .bind(id)
    .bind(name)
    .bind(at_us)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    use sqlx::Row as _;
    let version: i64 = row.try_get("version")?;
    let name: String = row.try_get("name")?;
    let created_at_us: i64 = row.try_get("created_at_us")?;
    sqlx::query(
        "INSERT INTO script_version (script_id, version, name, body, created_at_us) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(version)
    .bind(name.as_str())
    .bind(rows::json_text(body))
    .bind(at_us)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ScriptRecord {
        id: id.to_owned(),
        tenant_id: tenant.to_owned(),
        name,
        version,
        body: body.clone(),
        created_at_us,
        updated_at_us: at_us,
    })
}

pub(super) async fn delete_script(s: &SqlStore, tenant: &str, id: &str) -> Result<()> {
    // A soft delete: the versions stay for the calls that ran them (get_script with a version).
    let done = sqlx::query(
        "UPDATE script SET deleted_at_us = $3 \
         WHERE tenant_id = $1 AND id = $2 AND deleted_at_us IS NULL",
    )
    .bind(tenant)
    .bind(id)
    .bind(crate::clock::unix_us())
    .execute(&s.pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(super) async fn add_suppression(
    s: &SqlStore,
    tenant: &str,
    number: &str,
    reason: Option<&str>,
    at_us: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO suppression (tenant_id, number, reason, created_at_us) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, number) DO NOTHING",
    )
    .bind(tenant)
    .bind(number)
    .bind(reason)
    .bind(at_us)
    .execute(&s.pool)
    .await?;
    Ok(())
}

pub(super) async fn is_suppressed(s: &SqlStore, tenant: &str, number: &str) -> Result<bool> {
    let row = sqlx::query("SELECT 1 AS one FROM suppression WHERE tenant_id = $1 AND number = $2")
        .bind(tenant)
        .bind(number)
        .fetch_optional(&s.pool)
        .await?;
    Ok(row.is_some())
}

pub(super) async fn heartbeat(s: &SqlStore, node: &Node) -> Result<()> {
    sqlx::query(
        "INSERT INTO node (id, name, capacity, started_at_us, heartbeat_at_us) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
         capacity = excluded.capacity, started_at_us = excluded.started_at_us, \
         heartbeat_at_us = excluded.heartbeat_at_us",
    )
    .bind(node.id.as_str())
    .bind(node.name.as_str())
    .bind(node.capacity)
    .bind(node.started_at_us)
    .bind(node.heartbeat_at_us)
    .execute(&s.pool)
    .await?;
    Ok(())
}

pub(super) async fn list_nodes(s: &SqlStore) -> Result<Vec<Node>> {
    sqlx::query(&format!("SELECT {NODE_COLS} FROM node ORDER BY id"))
        .fetch_all(&s.pool)
        .await?
        .iter()
        .map(rows::node)
        .collect()
}
