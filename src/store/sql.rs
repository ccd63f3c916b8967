//! [`SqlStore`]: the [`Store`](super::Store) on SQLite or PostgreSQL through sqlx's `Any` driver.
//!
//! One body of SQL serves both databases. The rules that make that possible:
//! - numbered `$n` parameters: PostgreSQL's native form, and sqlx-sqlite binds `$n` to the
//!   n-th argument (a unit test below checks it);
//! - `BIGINT` for every integer column and `CAST(… AS BIGINT)` around aggregates: the `Any`
//!   driver decodes into `i64` only what the database reports as a 64-bit integer;
//! - JSON and enums as `TEXT`, flags as `BIGINT` 0/1 (no `BOOLEAN`, no `EXISTS` in a select list:
//!   PostgreSQL would answer a boolean);
//! - `RETURNING` and `INSERT … ON CONFLICT` (both databases have them).
//!
//! What still differs is branched on [`Backend`] with a comment saying why: how a write
//! transaction begins ([`SqlStore::begin`]), the lock that makes event ids follow commit order
//! on PostgreSQL (`append_event`), and `FOR UPDATE SKIP LOCKED` in the outbox claim.
//!
//! Concurrency on SQLite: the pool has ONE connection, so this process never races itself for
//! the write lock (a deferred transaction that reads and then writes can otherwise meet
//! another connection's upgrade and fail with `SQLITE_BUSY` at once, busy_timeout or not).
//! Every write transaction also begins with `BEGIN IMMEDIATE`, which takes the write lock up
//! front and waits for it (busy_timeout): that covers a second process on the same file
//! (`callplane admin …` while `serve` runs). WAL lets such a process read meanwhile. The cost,
//! reads queueing behind writes inside one process, is small: every statement here is short.
//! Rule that follows: never await another pool query while holding a connection or a
//! transaction (with one connection that is a deadlock): each function uses one transaction
//! (or one statement) from start to end.

mod calls;
mod campaign;
mod dial;
mod directory;
mod migrate;
mod outbox;
mod rows;

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::error::ErrorKind;
use sqlx::{Any, AnyPool, Transaction};

use super::{
    ApiKey, Appended, AttemptResult, BatchItem, CallFilter, CallRecord, CampaignAppended, Created,
    Delivery, DeliveryStatus, EventFilter, NewApiKey, NewCall, NewCampaignEvent, NewEvent,
    NewTrunkEvent, Node, Page, PerWebhook, RecordingRecord, Result, ScriptRecord, Store,
    StoreError, StoreFuture, StoredEvent, Tenant, Trunk, TrunkDirectory, TrunkInput, TrunkRoute,
    Webhook, WebhookInput,
};

/// Which database a [`SqlStore`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a file, WAL mode.
    Sqlite,
    /// PostgreSQL by URL.
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres` (as `serve.listening` prints it).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// How long a SQLite statement waits for another process's write lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// PostgreSQL connections per store: enough for the API, the bus and the outbox at once on a
/// small machine, few enough that many test stores fit in one server.
const PG_MAX_CONNECTIONS: u32 = 5;

/// The SQL store: SQLite or PostgreSQL behind one pool of sqlx's `Any` driver.
#[derive(Debug, Clone)]
pub struct SqlStore {
    backend: Backend,
    pool: AnyPool,
}

impl SqlStore {
    /// Connects to a database URL and runs the migrations.
    ///
    /// `postgres://…` (or `postgresql://…`) is PostgreSQL; `sqlite://path`, `sqlite:path` or
    /// `sqlite::memory:` is SQLite ([`SqlStore::open_sqlite`]: the file is created when
    /// missing). Anything else is [`StoreError::Database`].
    pub async fn connect(url: &str) -> Result<SqlStore> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            // Query parameters (`?mode=…`) are ours to choose: WAL, create when missing.
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(StoreError::Database(format!(
                    "no file name in the SQLite URL {url:?}"
                )));
            }
            return SqlStore::open_sqlite(Path::new(path)).await;
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            install_drivers();
            let pool = AnyPoolOptions::new()
                .max_connections(PG_MAX_CONNECTIONS)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|e| StoreError::Database(format!("connecting to PostgreSQL: {e}")))?;
            return SqlStore::ready(Backend::Postgres, pool).await;
        }
        Err(StoreError::Database(format!(
            "unsupported database URL (want sqlite:PATH or postgres://…): {}",
            redact(url)
        )))
    }

    /// Opens (creating it when missing) the SQLite file at `path` in WAL mode with foreign
    /// keys on and a busy timeout, and runs the migrations. `:memory:` is a private in-memory
    /// database (tests).
    pub async fn open_sqlite(path: &Path) -> Result<SqlStore> {
        install_drivers();
        // A new database file is the server's alone (0600; SQLite gives its -wal and -shm
        // files the same mode). Tests' `:memory:` is not a file.
        if path != Path::new(":memory:") {
            crate::files::create_private_file(path).map_err(|e| {
                StoreError::Database(format!("creating the SQLite file {}: {e}", path.display()))
            })?;
        }
        let path = path.to_str().ok_or_else(|| {
            StoreError::Database(format!("the SQLite path {path:?} is not UTF-8"))
        })?;
        // sqlx-sqlite percent-decodes the file name: encode what would end it or be decoded.
        let mut encoded = String::with_capacity(path.len());
        for c in path.chars() {
            match c {
                '%' | '?' | '#' | ' ' => encoded.push_str(&format!("%{:02X}", c as u32)),
                c => encoded.push(c),
            }
        }
        let url = format!("sqlite:{encoded}?mode=rwc");
        let pool = AnyPoolOptions::new()
            // One connection: see the module comment (no self-inflicted SQLITE_BUSY).
            .max_connections(1)
            // Keep it open: an idle close would drop a `:memory:` database, and reopening
            // costs the pragmas again.
            .idle_timeout(None)
            .max_lifetime(None)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL: readers in other processes do not block the writer nor it them,
                    // and a commit is one append to the log. journal_mode is persistent in
                    // the file; foreign_keys and busy_timeout are per connection.
                    let pragmas = format!(
                        "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; \
                         PRAGMA busy_timeout = {};",
                        SQLITE_BUSY_TIMEOUT.as_millis()
                    );
                    sqlx::Executor::execute(&mut *conn, pragmas.as_str()).await?;
                    Ok(())
                })
            })
            // Requests queue for the one connection; every statement is short, so a wait this
            // long means the database is stuck (→ StoreError::Database, 503 in the API).
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .map_err(|e| StoreError::Database(format!("opening SQLite {path}: {e}")))?;
        SqlStore::ready(Backend::Sqlite, pool).await
    }

    async fn ready(backend: Backend, pool: AnyPool) -> Result<SqlStore> {
        let store = SqlStore { backend, pool };
        migrate::run(&store).await?;
        Ok(store)
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool (waits for connections in use to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether `cursor` is one [`Store::list_calls`] could have returned (the API answers 400
    /// for one that is not; the store itself answers [`StoreError::NotFound`]).
    pub fn is_valid_cursor(cursor: &str) -> bool {
        rows::decode_cursor(cursor).is_some()
    }

    /// A write transaction.
    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        let tx = match self.backend {
            // SQLite: take the write lock now, waiting for it (busy_timeout), instead of at
            // the first write, where a lock upgrade can fail at once (module comment).
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            // PostgreSQL: row locks and MVCC; READ COMMITTED is what each function expects.
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }
}

/// Registers sqlx's SQLite and PostgreSQL drivers with `Any` (once per process).
fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

/// A database URL without its credentials, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://…@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) => match db.kind() {
                ErrorKind::UniqueViolation => StoreError::Conflict(db.message().to_owned()),
                // A row that names a missing parent (a tenant that does not exist).
                ErrorKind::ForeignKeyViolation => StoreError::NotFound,
                // SQLSTATE class 22, "data exception" (a NUL byte in text, a bad encoding, a
                // number out of range): the same value fails again, so it is not retried.
                _ if db.code().is_some_and(|c| c.starts_with("22")) => {
                    StoreError::Invalid(db.message().to_owned())
                }
                _ => StoreError::Database(e.to_string()),
            },
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// A query argument of a statement built at run time (filters, `IN` lists).
#[derive(Debug, Clone)]
enum Arg {
    Int(i64),
    Text(String),
}

/// Binds `args` in order (`$1`, `$2`, …).
fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    args: &'q [Arg],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Int(v) => q.bind(*v),
            Arg::Text(v) => q.bind(v.as_str()),
        };
    }
    q
}

/// A list limit: 0 → `default`, capped at `max`.
fn clamp_limit(limit: u32, default: u32, max: u32) -> i64 {
    i64::from(if limit == 0 { default } else { limit.min(max) })
}

type Row = AnyRow;

impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }

    fn create_tenant<'a>(&'a self, name: &'a str, at_us: i64) -> StoreFuture<'a, Tenant> {
        Box::pin(directory::create_tenant(self, name, at_us))
    }

    fn get_tenant<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Tenant> {
        Box::pin(directory::get_tenant(self, id))
    }

    fn list_tenants(&self) -> StoreFuture<'_, Vec<Tenant>> {
        Box::pin(directory::list_tenants(self))
    }

    fn create_api_key<'a>(&'a self, key: &'a NewApiKey, at_us: i64) -> StoreFuture<'a, ApiKey> {
        Box::pin(directory::create_api_key(self, key, at_us))
    }

    fn find_api_key<'a>(&'a self, secret_sha256: &'a str) -> StoreFuture<'a, ApiKey> {
        Box::pin(directory::find_api_key(self, secret_sha256))
    }

    fn list_api_keys<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, Vec<ApiKey>> {
        Box::pin(directory::list_api_keys(self, tenant))
    }

    fn revoke_api_key<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        at_us: i64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(directory::revoke_api_key(self, tenant, id, at_us))
    }

    fn create_trunk<'a>(
        &'a self,
        tenant: &'a str,
        input: &'a TrunkInput,
        at_us: i64,
    ) -> StoreFuture<'a, Trunk> {
        Box::pin(directory::create_trunk(self, tenant, input, at_us))
    }

    fn get_trunk<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, Trunk> {
        Box::pin(directory::get_trunk(self, tenant, id))
    }

    fn list_trunks<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, Vec<Trunk>> {
        Box::pin(directory::list_trunks(self, tenant))
    }

    fn update_trunk<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        input: &'a TrunkInput,
        at_us: i64,
    ) -> StoreFuture<'a, Trunk> {
        Box::pin(directory::update_trunk(self, tenant, id, input, at_us))
    }

    fn delete_trunk<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(directory::delete_trunk(self, tenant, id))
    }

    fn create_trunk_route<'a>(
        &'a self,
        tenant: &'a str,
        trunk_id: &'a str,
        did: &'a str,
        script_id: Option<&'a str>,
        at_us: i64,
    ) -> StoreFuture<'a, TrunkRoute> {
        Box::pin(directory::create_trunk_route(
            self, tenant, trunk_id, did, script_id, at_us,
        ))
    }

    fn list_trunk_routes<'a>(
        &'a self,
        tenant: &'a str,
        trunk_id: &'a str,
    ) -> StoreFuture<'a, Vec<TrunkRoute>> {
        Box::pin(directory::list_trunk_routes(self, tenant, trunk_id))
    }

    fn delete_trunk_route<'a>(
        &'a self,
        tenant: &'a str,
        trunk_id: &'a str,
        did: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(directory::delete_trunk_route(self, tenant, trunk_id, did))
    }

    fn load_trunk_directory(&self) -> StoreFuture<'_, TrunkDirectory> {
        Box::pin(directory::load_trunk_directory(self))
    }

    fn create_script<'a>(
        &'a self,
        tenant: &'a str,
        name: &'a str,
        body: &'a serde_json::Value,
        at_us: i64,
    ) -> StoreFuture<'a, ScriptRecord> {
        Box::pin(directory::create_script(self, tenant, name, body, at_us))
    }

    fn get_script<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        version: Option<i64>,
    ) -> StoreFuture<'a, ScriptRecord> {
        Box::pin(directory::get_script(self, tenant, id, version))
    }

    fn list_scripts<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, Vec<ScriptRecord>> {
        Box::pin(directory::list_scripts(self, tenant))
    }

    fn update_script<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        name: Option<&'a str>,
        body: &'a serde_json::Value,
        at_us: i64,
    ) -> StoreFuture<'a, ScriptRecord> {
        Box::pin(directory::update_script(
            self, tenant, id, name, body, at_us,
        ))
    }

    fn delete_script<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(directory::delete_script(self, tenant, id))
    }

    fn create_call<'a>(&'a self, call: &'a NewCall) -> StoreFuture<'a, Created> {
        Box::pin(calls::create_call(self, call))
    }

    fn get_call<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, CallRecord> {
        Box::pin(calls::get_call(self, Some(tenant), id))
    }

    fn get_call_any_tenant<'a>(&'a self, id: &'a str) -> StoreFuture<'a, CallRecord> {
        Box::pin(calls::get_call(self, None, id))
    }

    fn list_calls<'a>(
        &'a self,
        tenant: &'a str,
        filter: &'a CallFilter,
    ) -> StoreFuture<'a, Page<CallRecord>> {
        Box::pin(calls::list_calls(self, tenant, filter))
    }

    fn append_event<'a>(&'a self, event: &'a NewEvent) -> StoreFuture<'a, Appended> {
        Box::pin(calls::append_event(self, event))
    }

    fn append_batch<'a>(&'a self, batch: &'a [BatchItem]) -> StoreFuture<'a, Vec<Appended>> {
        Box::pin(calls::append_batch(self, batch))
    }

    fn append_campaign_event<'a>(
        &'a self,
        event: &'a NewCampaignEvent,
    ) -> StoreFuture<'a, CampaignAppended> {
        Box::pin(calls::append_campaign_event(self, event))
    }

    fn append_trunk_event<'a>(
        &'a self,
        event: &'a NewTrunkEvent,
    ) -> StoreFuture<'a, CampaignAppended> {
        Box::pin(calls::append_trunk_event(self, event))
    }

    fn events_after<'a>(
        &'a self,
        tenant: &'a str,
        after: i64,
        filter: &'a EventFilter,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredEvent>> {
        Box::pin(calls::events_after(self, tenant, after, filter, limit))
    }

    fn last_event_id<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, i64> {
        Box::pin(calls::last_event_id(self, tenant))
    }

    fn orphaned_calls<'a>(
        &'a self,
        node_id: &'a str,
        stale_before_us: i64,
    ) -> StoreFuture<'a, Vec<CallRecord>> {
        Box::pin(calls::orphaned_calls(self, node_id, stale_before_us))
    }

    fn list_recordings<'a>(
        &'a self,
        tenant: &'a str,
        call_id: &'a str,
    ) -> StoreFuture<'a, Vec<RecordingRecord>> {
        Box::pin(calls::list_recordings(self, tenant, call_id))
    }

    fn get_recording<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
    ) -> StoreFuture<'a, RecordingRecord> {
        Box::pin(calls::get_recording(self, tenant, id))
    }

    fn create_webhook<'a>(
        &'a self,
        tenant: &'a str,
        input: &'a WebhookInput,
        at_us: i64,
    ) -> StoreFuture<'a, Webhook> {
        Box::pin(outbox::create_webhook(self, tenant, input, at_us))
    }

    fn get_webhook<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, Webhook> {
        Box::pin(outbox::get_webhook(self, tenant, id))
    }

    fn list_webhooks<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, Vec<Webhook>> {
        Box::pin(outbox::list_webhooks(self, tenant))
    }

    fn update_webhook<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        input: &'a WebhookInput,
        at_us: i64,
    ) -> StoreFuture<'a, Webhook> {
        Box::pin(outbox::update_webhook(self, tenant, id, input, at_us))
    }

    fn delete_webhook<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(outbox::delete_webhook(self, tenant, id))
    }

    fn list_deliveries<'a>(
        &'a self,
        tenant: &'a str,
        webhook_id: &'a str,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<Delivery>> {
        Box::pin(outbox::list_deliveries(
            self, tenant, webhook_id, status, limit,
        ))
    }

    fn list_call_deliveries<'a>(
        &'a self,
        tenant: &'a str,
        call_id: &'a str,
        limit: u32,
    ) -> StoreFuture<'a, Vec<Delivery>> {
        Box::pin(outbox::list_call_deliveries(self, tenant, call_id, limit))
    }

    fn claim_due_deliveries<'a>(
        &'a self,
        now_us: i64,
        lease_until_us: i64,
        limit: u32,
        per_webhook: &'a PerWebhook,
    ) -> StoreFuture<'a, Vec<(Delivery, Webhook)>> {
        Box::pin(outbox::claim_due_deliveries(
            self,
            now_us,
            lease_until_us,
            limit,
            per_webhook,
        ))
    }

    fn finish_attempt<'a>(&'a self, id: &'a str, result: &'a AttemptResult) -> StoreFuture<'a, ()> {
        Box::pin(outbox::finish_attempt(self, id, result))
    }

    fn redeliver<'a>(
        &'a self,
        tenant: &'a str,
        delivery_id: &'a str,
        now_us: i64,
    ) -> StoreFuture<'a, Delivery> {
        Box::pin(outbox::redeliver(self, tenant, delivery_id, now_us))
    }

    fn pending_deliveries(&self) -> StoreFuture<'_, i64> {
        Box::pin(outbox::pending_deliveries(self))
    }

    fn add_suppression<'a>(
        &'a self,
        tenant: &'a str,
        number: &'a str,
        reason: Option<&'a str>,
        at_us: i64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(directory::add_suppression(
            self, tenant, number, reason, at_us,
        ))
    }

    fn is_suppressed<'a>(&'a self, tenant: &'a str, number: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(directory::is_suppressed(self, tenant, number))
    }

    fn heartbeat<'a>(&'a self, node: &'a Node) -> StoreFuture<'a, ()> {
        Box::pin(directory::heartbeat(self, node))
    }

    fn list_nodes(&self) -> StoreFuture<'_, Vec<Node>> {
        Box::pin(directory::list_nodes(self))
    }
}

// The campaign methods: sql/campaign.rs and sql/dial.rs.
use crate::campaign::model::{CampaignSettings, CampaignStatus, ContactStatus};
use crate::store::campaign::{
    ActivityBucket, Attempt, AttemptEnd, Campaign, CampaignCounts, CampaignStore, Claim,
    ClaimRequest, Contact, Inserted, NewCampaign, NewContact, ResultRow, Suppression, TenantLimits,
};

impl CampaignStore for SqlStore {
    fn create_campaign<'a>(&'a self, c: &'a NewCampaign) -> StoreFuture<'a, Campaign> {
        Box::pin(campaign::create_campaign(self, c))
    }

    fn get_campaign<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, Campaign> {
        Box::pin(campaign::get_campaign(self, tenant, id))
    }

    fn get_campaign_any_tenant<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Campaign> {
        Box::pin(campaign::get_campaign_any_tenant(self, id))
    }

    fn list_campaigns<'a>(
        &'a self,
        tenant: &'a str,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Page<Campaign>> {
        Box::pin(campaign::list_campaigns(self, tenant, cursor, limit))
    }

    fn campaigns_in<'a>(
        &'a self,
        statuses: &'a [CampaignStatus],
    ) -> StoreFuture<'a, Vec<Campaign>> {
        Box::pin(campaign::campaigns_in(self, statuses))
    }

    fn update_campaign<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        settings: &'a CampaignSettings,
        script_version: Option<i64>,
        at_us: i64,
    ) -> StoreFuture<'a, Campaign> {
        Box::pin(campaign::update_campaign(
            self,
            tenant,
            id,
            settings,
            script_version,
            at_us,
        ))
    }

    fn delete_campaign<'a>(&'a self, tenant: &'a str, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(campaign::delete_campaign(self, tenant, id))
    }

    fn set_campaign_status<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        from: &'a [CampaignStatus],
        to: CampaignStatus,
        at_us: i64,
    ) -> StoreFuture<'a, Campaign> {
        Box::pin(campaign::set_campaign_status(
            self, tenant, id, from, to, at_us,
        ))
    }

    fn insert_contacts<'a>(
        &'a self,
        tenant: &'a str,
        campaign_id: &'a str,
        contacts: &'a [NewContact],
        at_us: i64,
    ) -> StoreFuture<'a, Vec<Inserted>> {
        Box::pin(campaign::insert_contacts(
            self,
            tenant,
            campaign_id,
            contacts,
            at_us,
        ))
    }

    fn list_contacts<'a>(
        &'a self,
        campaign_id: &'a str,
        status: Option<ContactStatus>,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Page<Contact>> {
        Box::pin(campaign::list_contacts(
            self,
            campaign_id,
            status,
            cursor,
            limit,
        ))
    }

    fn get_contact<'a>(
        &'a self,
        campaign_id: &'a str,
        id: &'a str,
    ) -> StoreFuture<'a, (Contact, Vec<Attempt>)> {
        Box::pin(campaign::get_contact(self, campaign_id, id))
    }

    fn due_contacts<'a>(
        &'a self,
        campaign_id: &'a str,
        until_us: i64,
        after: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<Contact>> {
        Box::pin(campaign::due_contacts(
            self,
            campaign_id,
            until_us,
            after,
            limit,
        ))
    }

    fn claim_contacts<'a>(&'a self, req: &'a ClaimRequest) -> StoreFuture<'a, Claim> {
        Box::pin(dial::claim_contacts(self, req))
    }

    fn abandon_attempt<'a>(
        &'a self,
        contact_id: &'a str,
        attempt: u32,
        next_attempt_at_us: i64,
        reason_code: &'a str,
        reason: &'a str,
        at_us: i64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(dial::abandon_attempt(
            self,
            contact_id,
            attempt,
            next_attempt_at_us,
            reason_code,
            reason,
            at_us,
        ))
    }

    fn set_attempt_call<'a>(
        &'a self,
        contact_id: &'a str,
        attempt: u32,
        call_id: &'a str,
        trunk_id: Option<&'a str>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(dial::set_attempt_call(
            self, contact_id, attempt, call_id, trunk_id,
        ))
    }

    fn end_attempt<'a>(&'a self, end: &'a AttemptEnd) -> StoreFuture<'a, bool> {
        Box::pin(dial::end_attempt(self, end))
    }

    fn renew_leases<'a>(
        &'a self,
        node: &'a str,
        contact_ids: &'a [String],
        until_us: i64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(dial::renew_leases(self, node, contact_ids, until_us))
    }

    fn expired_leases<'a>(
        &'a self,
        now_us: i64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<(Contact, Attempt)>> {
        Box::pin(dial::expired_leases(self, now_us, limit))
    }

    fn attempt_by_call<'a>(
        &'a self,
        call_id: &'a str,
    ) -> StoreFuture<'a, Option<(Contact, Attempt)>> {
        Box::pin(dial::attempt_by_call(self, call_id))
    }

    fn campaign_counts<'a>(
        &'a self,
        campaign_id: &'a str,
        now_us: i64,
    ) -> StoreFuture<'a, CampaignCounts> {
        Box::pin(campaign::campaign_counts(self, campaign_id, now_us))
    }

    fn campaign_activity<'a>(
        &'a self,
        campaign_id: &'a str,
        bucket_us: i64,
        from_us: i64,
        to_us: i64,
    ) -> StoreFuture<'a, Vec<ActivityBucket>> {
        Box::pin(campaign::campaign_activity(
            self,
            campaign_id,
            bucket_us,
            from_us,
            to_us,
        ))
    }

    fn campaign_results<'a>(
        &'a self,
        campaign_id: &'a str,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Page<ResultRow>> {
        Box::pin(campaign::campaign_results(self, campaign_id, cursor, limit))
    }

    fn list_suppressions<'a>(
        &'a self,
        tenant: &'a str,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Page<Suppression>> {
        Box::pin(campaign::list_suppressions(self, tenant, cursor, limit))
    }

    fn delete_suppression<'a>(&'a self, tenant: &'a str, number: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(campaign::delete_suppression(self, tenant, number))
    }

    fn suppressed_among<'a>(
        &'a self,
        tenant: &'a str,
        numbers: &'a [String],
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(campaign::suppressed_among(self, tenant, numbers))
    }

    fn tenant_limits<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, TenantLimits> {
        Box::pin(campaign::tenant_limits(self, tenant))
    }

    fn set_tenant_limits<'a>(
        &'a self,
        tenant: &'a str,
        limits: &'a TenantLimits,
        at_us: i64,
    ) -> StoreFuture<'a, TenantLimits> {
        Box::pin(campaign::set_tenant_limits(self, tenant, limits, at_us))
    }
    fn defer_contacts<'a>(
        &'a self,
        deferrals: &'a [(String, i64, String, String)],
        at_us: i64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(campaign::defer_contacts(self, deferrals, at_us))
    }

    fn suppress<'a>(
        &'a self,
        tenant: &'a str,
        entries: &'a [(String, Option<String>)],
        source: &'a str,
        at_us: i64,
    ) -> StoreFuture<'a, i64> {
        Box::pin(campaign::suppress(self, tenant, entries, source, at_us))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn redact_drops_the_credentials_of_a_url() {
        assert_eq!(
            redact("postgres://cp:TopSecret@db:5432/callplane"),
            "postgres://…@db:5432/callplane"
        );
        assert_eq!(
            redact("sqlite:data/callplane.db"),
            "sqlite:data/callplane.db"
        );
    }

    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn new_id_is_the_prefix_and_24_lowercase_hex_digits_and_differs_each_time() {
        let a = crate::store::new_id("call");
        let b = crate::store::new_id("call");
        assert_eq!(a.len(), "call_".len() + 24);
        assert!(a.starts_with("call_"));
        assert!(
            a["call_".len()..]
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        assert_ne!(a, b);
    }

    #[test]
    fn sqlite_binds_numbered_parameters_by_number_not_by_position() {
        // The whole store relies on `$n` meaning the n-th argument on SQLite too, including a
        // parameter used twice and parameters that appear out of order.
        rt().block_on(async {
            let store = SqlStore::open_sqlite(Path::new(":memory:"))
                .await
                .expect("open");
            let row = sqlx::query("SELECT $2 AS b, $1 AS a, $2 || $1 AS ba")
                .bind("one")
                .bind("two")
                .fetch_one(&store.pool)
                .await
                .expect("query");
            use sqlx::Row as _;
            assert_eq!(row.get::<String, _>("b"), "two");
            assert_eq!(row.get::<String, _>("a"), "one");
            assert_eq!(row.get::<String, _>("ba"), "twoone");
        });
    }

    #[test]
    fn an_in_memory_sqlite_store_migrates_and_answers_a_ping() {
        rt().block_on(async {
            let store = SqlStore::connect("sqlite::memory:").await.expect("open");
            assert_eq!(store.backend(), Backend::Sqlite);
            Store::ping(&store).await.expect("ping");
        });
    }

    #[test]
    fn a_url_of_another_database_is_refused_without_echoing_its_password() {
        let err = rt()
            .block_on(SqlStore::connect("mysql://u:secret@host/db"))
            .expect_err("mysql is not supported");
        let text = err.to_string();
        assert!(text.contains("unsupported"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn limits_default_when_zero_and_are_capped() {
        assert_eq!(clamp_limit(0, 50, 500), 50);
        assert_eq!(clamp_limit(7, 50, 500), 7);
        assert_eq!(clamp_limit(100_000, 50, 500), 500);
    }
}
