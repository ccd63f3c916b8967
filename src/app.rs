//! `callplane serve` assembled: the store, the engine, the event bus, the webhook outbox and the
//! API, started in the order that loses nothing.
//!
//! Start-up order and why:
//! 1. Recordings a crash left as `.wav.part` are recovered before any call can write there.
//! 2. The store opens (migrations run). On an empty database a default tenant and its owner
//!    key are created; the key is shown once.
//! 3. Calls the store still shows as live were live in a process that died (kill -9, power
//!    loss): each gets a `call.failed` event saying so, so no call stays "answered" forever.
//!    Its end was not seen: the event is dated at the last thing known of the call (its last
//!    event, the node's last heartbeat, its recovered recording's last frame) and says
//!    `"estimated_end": true`, so the downtime is never billed.
//! 4. The engine starts with its lossless event sink, the pump stores every event, the outbox
//!    dispatcher starts (sending what a previous run left pending), then the API listens.
//!
//! Shutdown drains the engine (live calls get the grace period), lets the pump store the last
//! events, then stops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::api::{ApiConfig, AppState};
use crate::clock;
use crate::engine::{Engine, EngineConfig, EngineHandle, EventSink};
use crate::events::outbox::{OutboxConfig, spawn_dispatcher};
use crate::events::pump::spawn_pump_with;
use crate::events::{Bus, Metrics};
use crate::files::{FinishedRecording, recover_partials};
use crate::store::{NewApiKey, NewEvent, Node, Role, SqlStore, Store, Tenant};

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The data directory (SQLite file, recordings, prompts).
    pub data_dir: PathBuf,
    /// A database URL (`postgres://…`, `sqlite://…`); `None`: SQLite in the data directory.
    pub database_url: Option<String>,
    /// Where the API listens.
    pub api: SocketAddr,
    /// The engine's settings (its `event_sink` is set here).
    pub engine: EngineConfig,
    /// The webhook dispatcher's settings.
    pub outbox: OutboxConfig,
    /// The API's limits.
    pub max_body_bytes: usize,
    /// Serve the dashboard from this directory instead of the embedded files (`--dashboard-dir`).
    pub dashboard_dir: Option<PathBuf>,
    /// Requests per second per key (0: unlimited).
    pub rate_limit_per_s: u32,
    /// Burst of the rate limit.
    pub rate_limit_burst: u32,
    /// Capacity of the engine-to-store event queue (`--event-queue`; new calls are refused
    /// from half of it).
    pub event_queue: usize,
    /// Live campaign calls on this node at most (`--campaign-max-calls`).
    pub campaign_max_calls: u32,
    /// A contact lease (`--campaign-lease-s`).
    pub campaign_lease: Duration,
    /// The name server for RFC 3263 lookups (`--dns-server`); `None`: /etc/resolv.conf's.
    pub dns_server: Option<SocketAddr>,
    /// What happens to an INVITE from no trunk (`--unknown-sources`, #11).
    pub unknown_sources: crate::trunk::route::UnknownSources,
}

/// A line `serve` prints on stdout (JSON).
fn say(value: serde_json::Value) {
    println!("{value}");
}

/// The recordings directory of a data directory.
pub fn recordings_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("recordings")
}

/// Opens the store named by `database_url`, or SQLite in `data_dir`.
pub async fn open_store(
    data_dir: &Path,
    database_url: Option<&str>,
) -> anyhow::Result<Arc<dyn Store>> {
    let store = match database_url {
        Some(url) => SqlStore::connect(url)
            .await
            .with_context(|| format!("database {}", crate::store::redact(url)))?,
        None => {
            crate::files::ensure_dir(data_dir)
                .with_context(|| format!("data directory {}", data_dir.display()))?;
            let path = data_dir.join("callplane.db");
            SqlStore::open_sqlite(&path)
                .await
                .with_context(|| format!("database {}", path.display()))?
        }
    };
    Ok(Arc::new(store))
}

/// A new API key: the secret (shown once) and what the store keeps.
pub fn new_key(tenant_id: &str, role: Role, name: &str) -> anyhow::Result<(String, NewApiKey)> {
    let generated = crate::api::auth::generate_key()
        .map_err(|e| anyhow::anyhow!("no OS randomness for a key: {e}"))?;
    let key = NewApiKey {
        tenant_id: tenant_id.to_owned(),
        role,
        name: name.to_owned(),
        prefix: generated.prefix,
        secret_sha256: generated.secret_sha256,
    };
    Ok((generated.secret, key))
}

/// Creates a tenant and its owner key; returns the tenant and the key's secret.
pub async fn create_tenant(store: &dyn Store, name: &str) -> anyhow::Result<(Tenant, String)> {
    let name = crate::api::fields::check_name("tenant name", name).map_err(anyhow::Error::msg)?;
    let now = clock::unix_us();
    let tenant = store.create_tenant(name, now).await?;
    let (secret, key) = new_key(&tenant.id, Role::Owner, "owner")?;
    store.create_api_key(&key, now).await?;
    Ok((tenant, secret))
}

/// The tenant inbound calls belong to (the oldest), creating the default tenant and printing
/// its owner key once when the database is empty.
async fn bootstrap(store: &dyn Store) -> anyhow::Result<Tenant> {
    if let Some(first) = store.list_tenants().await?.into_iter().next() {
        return Ok(first);
    }
    let (tenant, secret) = match create_tenant(store, "default").await {
        Ok(created) => created,
        // Another node sharing the database bootstrapped it a moment ago: use its tenant.
        Err(e)
            if matches!(
                e.downcast_ref::<crate::store::StoreError>(),
                Some(crate::store::StoreError::Conflict(_))
            ) =>
        {
            if let Some(first) = store.list_tenants().await?.into_iter().next() {
                return Ok(first);
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    say(json!({
        "kind": "serve.bootstrap",
        "tenant_id": tenant.id,
        "key": secret,
        "note": "the owner key of the default tenant; it is shown only this once",
    }));
    Ok(tenant)
}

/// A node whose heartbeat is older than this is taken for dead: its live calls are ended.
const NODE_DEAD_AFTER: Duration = Duration::from_secs(60);

/// Ends the calls whose node is gone: this node's own from before a restart (it died with
/// them), and those of a node sharing the database that stopped heartbeating. A recording such
/// a call left (repaired at start, `recovered`) is attached to it first.
async fn close_orphans(
    bus: &Bus,
    node_id: &str,
    recovered: &[FinishedRecording],
) -> anyhow::Result<()> {
    let stale_before = clock::unix_us() - NODE_DEAD_AFTER.as_micros() as i64;
    let orphans = bus.store().orphaned_calls(node_id, stale_before).await?;
    if orphans.is_empty() {
        return Ok(());
    }
    let nodes = bus.store().list_nodes().await?;
    for call in orphans {
        let own = call.node_id.as_deref() == Some(node_id);
        tracing::warn!(call = %call.id, node = ?call.node_id, "ending a call its stopped node left live");
        let offset = |at: i64| {
            at.saturating_sub(call.started_at_us.unwrap_or(call.created_at_us))
                .max(0)
        };
        // The process died with the call: its end was not seen. It is bounded by the last
        // thing known of it, never the restart (that would bill the downtime).
        let (mut known, recs) = last_known(bus, &call, recovered).await?;
        known.heartbeat_us = call
            .node_id
            .as_deref()
            .and_then(|n| nodes.iter().find(|node| node.id == n))
            .map(|node| node.heartbeat_at_us);
        let now = clock::unix_us();
        let (end, estimated_from) = crate::store::derive::estimated_end(&call, &known, now);
        for rec in recs {
            bus.append(NewEvent {
                call_id: call.id.clone(),
                kind: "recording.ready".to_owned(),
                at_unix_us: end,
                offset_us: offset(end),
                details: json!({
                    "path": rec.path.display().to_string(),
                    "duration_ms": rec.duration.as_millis() as u64,
                    "channels": rec.channels,
                    "sha256": rec.sha256,
                    "bytes": rec.bytes,
                    "recovered": true,
                    "recovered_at_unix_us": now,
                }),
            })
            .await?;
        }
        let mut details = json!({
            "outcome": "failed",
            "reason": if own {
                "the callplane process stopped during the call"
            } else {
                "the node running the call stopped heartbeating"
            },
            "end_reason": if own { "process_restart" } else { "node_lost" },
            "estimated_end": true,
            "estimated_from": estimated_from,
            "closed_at_unix_us": now,
        });
        if let Some(answered) = call.answered_at_us {
            details["duration_ms"] = json!(end.saturating_sub(answered).max(0) / 1000);
        }
        bus.append(NewEvent {
            call_id: call.id.clone(),
            kind: "call.failed".to_owned(),
            at_unix_us: end,
            offset_us: offset(end),
            details,
        })
        .await?;
    }
    Ok(())
}

/// Pages of a dead call's timeline read to find what it did last (bounded: a call has far
/// fewer events than this allows).
const LAST_KNOWN_PAGES: usize = 20;

/// The last stored event of a call a dead process left live, its recordings among those
/// recovered at start (`<call id>.wav`, `<call id>-2.wav`... for API calls; any file its
/// timeline's `recording.started` names, as inbound recordings are named by the engine), and the
/// end of their last frame (each recording's start is its `recording.started` event, or the
/// answer when that event was not stored: the recording cannot have started before it).
async fn last_known<'r>(
    bus: &Bus,
    call: &crate::store::CallRecord,
    recovered: &'r [FinishedRecording],
) -> anyhow::Result<(crate::store::derive::LastKnown, Vec<&'r FinishedRecording>)> {
    let filter = crate::store::EventFilter {
        call_id: Some(call.id.clone()),
        ..Default::default()
    };
    let mut known = crate::store::derive::LastKnown::default();
    let mut started: Vec<(String, i64)> = Vec::new();
    let mut after = 0;
    for _ in 0..LAST_KNOWN_PAGES {
        let page = bus
            .store()
            .events_after(&call.tenant_id, after, &filter, 5000)
            .await?;
        for e in &page {
            after = e.id;
            known.last_event_us = known.last_event_us.max(Some(e.at_unix_us));
            if e.kind == "recording.started"
                && let Some(name) = e
                    .details
                    .get("path")
                    .and_then(|p| p.as_str())
                    .and_then(|p| Path::new(p).file_name())
                    .and_then(|n| n.to_str())
            {
                started.push((name.to_owned(), e.at_unix_us));
            }
        }
        if page.len() < 5000 {
            break;
        }
    }
    let recs: Vec<&FinishedRecording> = recovered
        .iter()
        .filter(|r| {
            let name = r.path.file_name().and_then(|n| n.to_str());
            let named_after_call = r
                .path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|stem| stem == call.id || stem.starts_with(&format!("{}-", call.id)));
            named_after_call || started.iter().any(|(n, _)| Some(n.as_str()) == name)
        })
        .collect();
    let fallback = call
        .answered_at_us
        .or(call.started_at_us)
        .unwrap_or(call.created_at_us);
    for rec in &recs {
        let name = rec.path.file_name().and_then(|n| n.to_str());
        let start = started
            .iter()
            .rev()
            .find(|(n, _)| Some(n.as_str()) == name)
            .map_or(fallback, |(_, at)| *at);
        let end = start.saturating_add(rec.duration.as_micros() as i64);
        known.recording_end_us = known.recording_end_us.max(Some(end));
    }
    Ok((known, recs))
}

#[cfg(test)]
mod orphan_tests;

/// How a caller other than the command line drives [`serve_with`] (`callplane demo`).
#[derive(Debug, Default)]
pub struct ServeControl {
    /// Stop (drain, then return) when notified, as SIGINT/SIGTERM do (they still do).
    pub stop: Option<Arc<tokio::sync::Notify>>,
    /// Told where SIP and the API listen, once they do.
    pub ready: Option<tokio::sync::oneshot::Sender<Listening>>,
    /// Print nothing on stdout (no `serve.*` lines, no call events).
    pub quiet: bool,
}

/// Where a running `serve` listens ([`ServeControl::ready`]).
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// SIP over UDP.
    pub sip: SocketAddr,
    /// The REST API.
    pub api: SocketAddr,
}

/// The resolver for calls to a domain: the transports the engine listens on, the name server
/// of `--dns-server` or of /etc/resolv.conf. `None` (with a warning) when it cannot be built:
/// calls to IP addresses and trunks still work.
fn dns_resolver(config: &ServeConfig) -> Option<crate::net::dns::Resolver> {
    let mut transports = vec![sip::transaction::Transport::Udp];
    if config.engine.sip_tcp.is_some() {
        transports.push(sip::transaction::Transport::Tcp);
    }
    let dns = crate::net::dns::DnsConfig {
        server: config.dns_server,
        transports,
    };
    match crate::net::dns::Resolver::new(&dns) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS: calls to a domain will be refused");
            None
        }
    }
}

/// Reloads the inbound router after every trunk or route change (it ends with the sender).
fn spawn_router_reload(
    router: Arc<crate::trunk::route::TrunkRouter>,
    store: Arc<dyn Store>,
    mut changes: tokio::sync::watch::Receiver<u64>,
) {
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            if let Err(e) = router.reload(store.as_ref()).await {
                // The previous snapshot stays; the next change retries.
                tracing::warn!(error = %e, "inbound routes not reloaded");
            }
        }
    });
}

/// Runs `serve` until SIGINT/SIGTERM, then drains for `drain`.
pub async fn serve(config: ServeConfig, drain: Duration) -> anyhow::Result<u8> {
    serve_with(config, drain, ServeControl::default()).await
}

/// [`serve`], also stopped by `control.stop`, telling `control.ready` where it listens, and
/// silent on stdout with `control.quiet`.
pub async fn serve_with(
    mut config: ServeConfig,
    drain: Duration,
    mut control: ServeControl,
) -> anyhow::Result<u8> {
    use tokio::signal::unix::{SignalKind, signal};
    let quiet = control.quiet;
    let say = |value: serde_json::Value| {
        if !quiet {
            say(value);
        }
    };

    // API calls record into the data directory (when asked to); inbound calls only with
    // --recordings. Both directories are repaired before anything can write into them.
    // Recording rows keep absolute paths: a later start from another directory still finds them.
    config.data_dir = std::path::absolute(&config.data_dir)
        .with_context(|| format!("data directory {}", config.data_dir.display()))?;
    let mut dirs = vec![recordings_dir(&config.data_dir)];
    if let Some(inbound) = &config.engine.inbound.recordings
        && *inbound != dirs[0]
    {
        dirs.push(inbound.clone());
    }
    let mut recovered = Vec::new();
    for dir in dirs {
        crate::files::ensure_dir(&dir)
            .with_context(|| format!("recordings directory {}", dir.display()))?;
        for r in tokio::task::spawn_blocking(move || recover_partials(dir)).await? {
            match r {
                Ok(done) => {
                    say(json!({
                        "kind": "recording.recovered",
                        "path": done.path.display().to_string(),
                        "duration_ms": done.duration.as_millis() as u64,
                        "sha256": done.sha256,
                    }));
                    recovered.push(done);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recording not recovered");
                    say(json!({"kind": "recording.recovery_failed", "error": e.to_string()}));
                }
            }
        }
    }

    // This node's id, stable across restarts of the same data directory: after a crash the
    // next start knows which live calls were its own.
    let node_path = config.data_dir.join("node-id");
    let node_id = crate::files::read_or_create(&node_path, || crate::store::new_id("node"))
        .with_context(|| format!("node id file {}", node_path.display()))?;

    let store = open_store(&config.data_dir, config.database_url.as_deref()).await?;
    let inbound_tenant = bootstrap(store.as_ref()).await?;
    let metrics = Arc::new(Metrics::default());
    let bus = Bus::new(store.clone(), metrics.clone());
    close_orphans(&bus, &node_id, &recovered).await?;
    let heartbeat = spawn_heartbeat(bus.clone(), node_id.clone(), config.engine.max_calls);

    // Trunks (#11): their live state and the signal that they changed, shared by the API, the
    // inbound router, the registrar and the health checker.
    let trunk_states = crate::trunk::TrunkStates::default();
    let trunk_changes = Arc::new(tokio::sync::watch::Sender::new(0u64));

    let (sink, sink_rx) = EventSink::channel(config.event_queue);
    let mut running = {
        // The engine owns the only sender: once it stops, the pump sees the channel close
        // after the last event and ends.
        let mut engine_config = config.engine.clone();
        engine_config.event_sink = Some(sink);
        // Inbound routing by trunk and DID (#11), from a snapshot of the store, reloaded after
        // every change through the API.
        let router = Arc::new(crate::trunk::route::TrunkRouter::new(
            config.unknown_sources,
            config.engine.inbound.clone(),
            config.data_dir.join("prompts"),
        ));
        router
            .reload(store.as_ref())
            .await
            .context("loading trunks and routes")?;
        if engine_config.router.is_none() {
            engine_config.router = Some(router.clone());
        }
        spawn_router_reload(router.clone(), store.clone(), trunk_changes.subscribe());
        let engine = Engine::start(engine_config).await?;
        let events = engine.handle.subscribe();
        let tenants = router.clone();
        let pump = spawn_pump_with(
            bus.clone(),
            sink_rx,
            inbound_tenant.id.clone(),
            node_id.clone(),
            Some(Arc::new(move |trunk: &str| tenants.tenant_of(trunk))),
        );
        let outbox = spawn_dispatcher(bus.clone(), config.outbox.clone());
        let trunks = crate::trunk::tasks::spawn_supervisor(
            engine.handle.clone(),
            trunk_states.clone(),
            metrics.trunk_counters(),
            store.clone(),
            bus.clone(),
            trunk_changes.subscribe(),
        );
        let mut state = AppState::new(
            store.clone(),
            engine.handle.clone(),
            bus.clone(),
            metrics,
            ApiConfig {
                data_dir: config.data_dir.clone(),
                max_body_bytes: config.max_body_bytes,
                rate_limit_per_s: config.rate_limit_per_s,
                rate_limit_burst: config.rate_limit_burst,
                node_id: node_id.clone(),
                webhook_egress: config.outbox.egress.clone(),
                dashboard_dir: config.dashboard_dir.clone(),
            },
        );
        // One resolver (and its cache) for the API's calls and the campaign worker's.
        let dns = dns_resolver(&config);
        state.dns = dns.clone();
        // One instance for the API, the registrar and the health checker (#11).
        state.trunk_states = trunk_states.clone();
        state.trunk_changes = trunk_changes.clone();
        let campaign_wake = state.campaign_wake.clone();
        let (api_addr, api_task) =
            crate::net::http::serve(config.api, crate::api::router(state)).await?;
        // After the API listens (and after the orphans above were closed, so that their
        // attempts settle from their final rows).
        let mut worker_config = crate::campaign::worker::WorkerConfig::new(
            node_id.clone(),
            config.data_dir.clone(),
            config.campaign_max_calls,
        );
        worker_config.lease = config.campaign_lease;
        worker_config.trunk_states = trunk_states.clone();
        worker_config.dns = dns;
        worker_config.settle = worker_config.settle.min(config.campaign_lease);
        let worker = crate::campaign::worker::spawn_worker(
            worker_config,
            store.clone(),
            engine.handle.clone(),
            bus.clone(),
            campaign_wake,
        );
        let handle = engine.handle.clone();
        say(json!({
            "kind": "serve.listening",
            "sip": handle.sip_local_addr().to_string(),
            "sip_tcp": handle.sip_local_tcp_addr().map(|a| a.to_string()),
            "sip_tls": handle.sip_local_tls_addr().map(|a| a.to_string()),
            "api": api_addr.to_string(),
            "database": match store.backend() {
                crate::store::Backend::Sqlite => "sqlite",
                crate::store::Backend::Postgres => "postgres",
            },
            "data_dir": config.data_dir.display().to_string(),
        }));
        tracing::info!(sip = %handle.sip_local_addr(), api = %api_addr, "serving");
        if let Some(ready) = control.ready.take() {
            let _ = ready.send(Listening {
                sip: handle.sip_local_addr(),
                api: api_addr,
            });
        }
        Running {
            engine,
            pump,
            outbox,
            api_task,
            events,
            worker,
            trunks,
        }
    };

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let stop = control.stop.clone().unwrap_or_default();
    loop {
        tokio::select! {
            ev = running.events.recv() => if !print_received(ev, quiet) { return Ok(1) },
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = stop.notified() => break,
        }
    }
    tracing::info!(grace = ?drain, "draining");
    say(json!({"kind": "serve.draining"}));
    let handle: EngineHandle = running.engine.handle.clone();
    let drained = handle.drain(drain);
    tokio::pin!(drained);
    loop {
        tokio::select! {
            ev = running.events.recv() => if !print_received(ev, quiet) { break },
            r = &mut drained => { r?; break; }
        }
    }
    while let Ok(ev) = running.events.try_recv() {
        if !quiet {
            print_event(&ev);
        }
    }
    // The worker started no call while draining (the engine refuses them) and settled those
    // that ended; what it did not settle, the next start's (or another node's) settle pass
    // reads from the calls' rows.
    running.worker.abort();
    // Unregister every trunk binding while the engine can still send (bounded: ~2 s).
    let Running {
        engine,
        pump,
        outbox,
        api_task,
        trunks,
        ..
    } = running;
    trunks.stop().await;
    handle.shutdown().await?;
    engine.join().await;
    // The engine (and with it every sender of the sink) is gone: the pump ends once it has
    // stored the last events.
    if tokio::time::timeout(Duration::from_secs(10), pump)
        .await
        .is_err()
    {
        tracing::warn!("the event pump did not finish storing within 10 s");
    }
    outbox.abort();
    api_task.abort();
    heartbeat.abort();
    tracing::info!("stopped");
    Ok(0)
}

/// How often a node refreshes its row in `node`.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Writes this node's row now and every [`HEARTBEAT`] (several nodes may share PostgreSQL),
/// and ends the live calls of nodes that stopped heartbeating.
fn spawn_heartbeat(bus: Bus, node_id: String, capacity: usize) -> tokio::task::JoinHandle<()> {
    let mut node = Node {
        id: node_id,
        name: std::env::var("HOSTNAME").unwrap_or_else(|_| "callplane".to_owned()),
        capacity: i64::try_from(capacity).unwrap_or(i64::MAX),
        started_at_us: clock::unix_us(),
        heartbeat_at_us: clock::unix_us(),
    };
    tokio::spawn(async move {
        loop {
            node.heartbeat_at_us = clock::unix_us();
            if let Err(e) = bus.store().heartbeat(&node).await {
                tracing::warn!(error = %e, "node heartbeat not written");
            }
            // Only other nodes' calls can be orphans now: this node's are live, and its
            // heartbeat was just written, so it is not stale ("" names no node of its own).
            if let Err(e) = close_orphans(&bus, "", &[]).await {
                tracing::warn!(error = %e, "calls of stopped nodes not ended");
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    })
}

/// What runs while serving.
struct Running {
    engine: Engine,
    pump: tokio::task::JoinHandle<()>,
    outbox: tokio::task::JoinHandle<()>,
    api_task: tokio::task::JoinHandle<()>,
    events: tokio::sync::broadcast::Receiver<crate::engine::CallEvent>,
    worker: tokio::task::JoinHandle<()>,
    /// Trunk registrations and health checks (#11).
    trunks: crate::trunk::tasks::TrunkSupervisor,
}

/// Prints one received event (unless `quiet`); `false` when the engine is gone.
fn print_received(
    ev: Result<crate::engine::CallEvent, tokio::sync::broadcast::error::RecvError>,
    quiet: bool,
) -> bool {
    use tokio::sync::broadcast::error::RecvError;
    match ev {
        Ok(ev) if quiet => drop(ev),
        Ok(ev) => print_event(&ev),
        // Printing is a convenience; the store has every event (the sink is lossless).
        Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "events not printed"),
        Err(RecvError::Closed) => return false,
    }
    true
}

/// Prints a call event as a JSON line.
pub fn print_event(ev: &crate::engine::CallEvent) {
    match serde_json::to_string(ev) {
        Ok(line) => println!("{line}"),
        Err(e) => tracing::error!(error = %e, "event not printable"),
    }
}

/// `callplane probe`: 0 when `url` answers 2xx within 3 s, 1 otherwise (reason on stderr).
pub async fn probe(url: &str) -> u8 {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("probe: {e}");
            return 1;
        }
    };
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => 0,
        Ok(r) => {
            eprintln!("probe: {url} answered {}", r.status());
            1
        }
        Err(e) => {
            eprintln!("probe: {url}: {e}");
            1
        }
    }
}
