//! Test databases: a fresh SQLite file, and a fresh PostgreSQL database when one is reachable.
//!
//! PostgreSQL comes from `CALLPLANE_TEST_PG` (a URL to any database of a server where the user
//! may `CREATE DATABASE`, e.g. `postgres://postgres:postgres@127.0.0.1:5432/postgres`;
//! `scripts/test` starts one and exports it). Every call makes a new database
//! `cp_test_<unix seconds>_<hex>`, so tests never see each other's rows; databases of that
//! name older than an hour are dropped on the way (what earlier runs left). When the variable
//! is unset or the server unreachable, PostgreSQL is skipped with a `SKIPPED` line, except under
//! `CI=true`, where that is a failure: CI must prove both databases.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use callplane::store::{SqlStore, Store};
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

/// The variable naming the PostgreSQL server for tests.
pub(crate) const PG_ENV: &str = "CALLPLANE_TEST_PG";

/// One store per available database, each fresh and migrated: `("sqlite", …)` always, then
/// `("postgres", …)` when `CALLPLANE_TEST_PG` reaches a server.
pub(crate) async fn test_stores() -> Vec<(&'static str, Arc<dyn Store>)> {
    let mut stores: Vec<(&'static str, Arc<dyn Store>)> = vec![("sqlite", sqlite_store().await)];
    if let Some(url) = fresh_pg_database().await {
        let store = SqlStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connecting to the fresh test database: {e}"));
        stores.push(("postgres", Arc::new(store)));
    }
    stores
}

/// A fresh, migrated SQLite store in its own directory.
pub(crate) async fn sqlite_store() -> Arc<dyn Store> {
    let path = sqlite_path_for_tests();
    Arc::new(
        SqlStore::open_sqlite(&path)
            .await
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display())),
    )
}

/// The path of a SQLite file that does not exist yet, in a new directory under the target
/// directory's tmp (kept: the store may outlive any guard; `cargo clean` removes them).
pub(crate) fn sqlite_path_for_tests() -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("cp-store-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
        .keep();
    dir.join("callplane.db")
}

/// The URL of a fresh, empty PostgreSQL database (for `serve --database-url`), or `None` when
/// PostgreSQL is not available (never `None` under `CI=true`: that panics). Callable from sync
/// and async tests alike (it runs on its own thread).
pub(crate) fn pg_url_for_tests() -> Option<String> {
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fresh_pg_database())
    })
    .join()
    .expect("creating a PostgreSQL test database panicked")
}

/// Creates `cp_test_<secs>_<hex>` on the `CALLPLANE_TEST_PG` server and returns its URL.
async fn fresh_pg_database() -> Option<String> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let skip = |why: String| -> Option<String> {
        assert!(
            !in_ci,
            "PostgreSQL is required under CI=true ({why}); scripts/test starts it and sets {PG_ENV}"
        );
        eprintln!("SKIPPED: PostgreSQL store tests ({why})");
        None
    };
    let Some(admin_url) = std::env::var(PG_ENV).ok().filter(|u| !u.is_empty()) else {
        return skip(format!("{PG_ENV} is not set"));
    };
    let connect = PgConnection::connect(&admin_url);
    let mut admin = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return skip(format!("{PG_ENV} unreachable: {e}")),
        Err(_) => return skip(format!("{PG_ENV} did not answer within 5 s")),
    };
    let now_s = callplane::clock::unix_us() / 1_000_000;
    drop_stale_databases(&mut admin, now_s).await;
    let name = format!(
        "cp_test_{now_s}_{}",
        &callplane::store::new_id("x")["x_".len()..]
    );
    // A database name is an identifier, not a bindable value; it is ours (digits and hex).
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let _ = admin.close().await;
    Some(with_database(&admin_url, &name))
}

/// Drops the `cp_test_<secs>_…` databases more than an hour old (best effort: another run may
/// be dropping them too).
async fn drop_stale_databases(admin: &mut PgConnection, now_s: i64) {
    use sqlx::Row as _;
    let Ok(rows) =
        sqlx::query("SELECT datname FROM pg_database WHERE datname LIKE 'cp\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
    else {
        return;
    };
    for row in rows {
        let Ok(name) = row.try_get::<String, _>("datname") else {
            continue;
        };
        let created = name
            .strip_prefix("cp_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<i64>().ok());
        let stale = created.is_some_and(|c| now_s - c > 3600);
        if stale && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *admin)
                .await;
        }
    }
}

/// `url` with its database (the path) replaced by `name`, keeping user, host and parameters.
pub(crate) fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}
