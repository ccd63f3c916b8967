//! The migration runner: the schema files embedded in the binary, applied in order, each in
//! its own transaction, and recorded in `schema_migrations` with their SHA-256.
//!
//! The database and the build must agree on the schema, or the store refuses to start
//! ([`StoreError::Migration`]): a database that has a version this build does not know (a newer
//! callplane migrated it), or an applied file whose text changed since (an edited migration:
//! the database may not be what the file now says).

use sha2::{Digest, Sha256};
use sqlx::Row as _;

use super::{Backend, SqlStore, rows};
use crate::store::{Result, StoreError};

/// One schema file.
#[derive(Debug)]
pub(super) struct Migration {
    /// Increasing from 1, the file name's number.
    pub(super) version: i64,
    /// The file name without its extension.
    pub(super) name: &'static str,
    /// The SQL (several statements).
    pub(super) sql: &'static str,
}

/// The SQLite migrations, in order.
const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init",
        sql: include_str!("../../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_outbox",
        sql: include_str!("../../../migrations/sqlite/0002_outbox.sql"),
    },
    Migration {
        version: 3,
        name: "0003_campaigns",
        sql: include_str!("../../../migrations/sqlite/0003_campaigns.sql"),
    },
    Migration {
        version: 4,
        name: "0004_campaign_events",
        sql: include_str!("../../../migrations/sqlite/0004_campaign_events.sql"),
    },
    Migration {
        version: 5,
        name: "0005_trunks",
        sql: include_str!("../../../migrations/sqlite/0005_trunks.sql"),
    },
    Migration {
        version: 6,
        name: "0006_dashboard",
        sql: include_str!("../../../migrations/sqlite/0006_dashboard.sql"),
    },
];

/// The PostgreSQL migrations, in order (the same versions as [`SQLITE`]).
const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init",
        sql: include_str!("../../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_outbox",
        sql: include_str!("../../../migrations/postgres/0002_outbox.sql"),
    },
    Migration {
        version: 3,
        name: "0003_campaigns",
        sql: include_str!("../../../migrations/postgres/0003_campaigns.sql"),
    },
    Migration {
        version: 4,
        name: "0004_campaign_events",
        sql: include_str!("../../../migrations/postgres/0004_campaign_events.sql"),
    },
    Migration {
        version: 5,
        name: "0005_trunks",
        sql: include_str!("../../../migrations/postgres/0005_trunks.sql"),
    },
    Migration {
        version: 6,
        name: "0006_dashboard",
        sql: include_str!("../../../migrations/postgres/0006_dashboard.sql"),
    },
];

/// The migrations of a backend.
pub(super) fn migrations(backend: Backend) -> &'static [Migration] {
    match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    }
}

fn checksum(sql: &str) -> String {
    rows::hex(&Sha256::digest(sql.as_bytes()))
}

/// Brings the database to this build's schema (idempotent).
///
/// On SQLite, foreign keys are off while the migrations run: a table rebuild (the SQLite
/// documentation's procedure for a change ALTER TABLE cannot make, e.g. 0004) drops a table
/// that others reference. `PRAGMA foreign_keys` is a no-op inside a transaction and each
/// migration runs in one, so it is switched here, around all of them, on the pool's one
/// connection (see the `sql` module comment); `PRAGMA foreign_key_check` must then find
/// nothing, or the start fails.
pub(super) async fn run(store: &SqlStore) -> Result<()> {
    if store.backend != Backend::Sqlite {
        return apply_all(store).await;
    }
    set_sqlite_foreign_keys(store, false).await?;
    let applied = apply_all(store).await;
    let checked = match &applied {
        Ok(()) => foreign_key_check(store).await,
        Err(_) => Ok(()),
    };
    // On again on every path: the connection stays in the pool.
    let restored = set_sqlite_foreign_keys(store, true).await;
    applied?;
    checked?;
    restored
}

/// Switches SQLite's foreign key enforcement and checks that it took (it would not inside a
/// transaction).
async fn set_sqlite_foreign_keys(store: &SqlStore, on: bool) -> Result<()> {
    let pragma = if on {
        "PRAGMA foreign_keys = ON"
    } else {
        "PRAGMA foreign_keys = OFF"
    };
    sqlx::Executor::execute(&store.pool, pragma)
        .await
        .map_err(|e| StoreError::Migration(format!("{pragma}: {e}")))?;
    let row = sqlx::query("PRAGMA foreign_keys")
        .fetch_one(&store.pool)
        .await
        .map_err(|e| StoreError::Migration(format!("reading PRAGMA foreign_keys: {e}")))?;
    let now: i64 = row.try_get(0)?;
    if (now != 0) != on {
        return Err(StoreError::Migration(format!(
            "{pragma} did not take (foreign_keys = {now})"
        )));
    }
    Ok(())
}

/// `PRAGMA foreign_key_check`: every reference the migrations left must resolve.
async fn foreign_key_check(store: &SqlStore) -> Result<()> {
    let rows = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&store.pool)
        .await
        .map_err(|e| StoreError::Migration(format!("PRAGMA foreign_key_check: {e}")))?;
    if let Some(first) = rows.first() {
        let table: String = first.try_get(0).unwrap_or_default();
        let parent: String = first.try_get(2).unwrap_or_default();
        return Err(StoreError::Migration(format!(
            "after the migrations, {} row(s) violate a foreign key (first: a row of {table} \
             whose {parent} is missing)",
            rows.len()
        )));
    }
    Ok(())
}

/// Applies what the database lacks, each migration in its own transaction.
async fn apply_all(store: &SqlStore) -> Result<()> {
    let known = migrations(store.backend);
    // The bookkeeping table itself is the one thing created outside a numbered file: the
    // runner needs it to know what to apply.
    sqlx::Executor::execute(
        &store.pool,
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version       BIGINT PRIMARY KEY,
            name          TEXT NOT NULL,
            sha256        TEXT NOT NULL,
            applied_at_us BIGINT NOT NULL
        )",
    )
    .await
    .map_err(|e| StoreError::Migration(format!("creating schema_migrations: {e}")))?;

    for m in known {
        let mut tx = store.begin().await?;
        if store.backend == Backend::Postgres {
            // PostgreSQL: two processes starting at once must not both apply a file; this lock
            // (held to commit) makes the second wait and then see the first one's row.
            // SQLite needs nothing: BEGIN IMMEDIATE already excludes other writers.
            sqlx::Executor::execute(&mut *tx, "LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
                .await?;
        }
        let applied = sqlx::query("SELECT version, name, sha256 FROM schema_migrations")
            .fetch_all(&mut *tx)
            .await?;
        for row in &applied {
            let version: i64 = row.try_get("version")?;
            let name: String = row.try_get("name")?;
            let sha: String = row.try_get("sha256")?;
            match known.iter().find(|k| k.version == version) {
                None => {
                    return Err(StoreError::Migration(format!(
                        "the database has migration {version} ({name}), which this build does \
                         not know: it was migrated by a newer callplane"
                    )));
                }
                Some(k) if checksum(k.sql) != sha => {
                    return Err(StoreError::Migration(format!(
                        "migration {version} ({name}) changed since it was applied \
                         (sha256 {sha} in the database, {} in this build)",
                        checksum(k.sql)
                    )));
                }
                Some(_) => {}
            }
        }
        if applied.iter().any(|row| {
            row.try_get::<i64, _>("version")
                .is_ok_and(|v| v == m.version)
        }) {
            tx.rollback().await?;
            continue;
        }
        sqlx::Executor::execute(&mut *tx, m.sql)
            .await
            .map_err(|e| StoreError::Migration(format!("applying {}: {e}", m.name)))?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, sha256, applied_at_us) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(checksum(m.sql))
        .bind(crate::clock::unix_us())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_have_the_same_migration_versions_in_order() {
        let v = |ms: &[Migration]| ms.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(v(SQLITE), v(POSTGRES));
        for (i, m) in SQLITE.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
        }
    }
}
