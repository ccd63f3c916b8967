//! What the per-trunk tasks ([`super::registrar`], [`super::health`]) share: the trunk they
//! run for, where its requests go, their events and counters, and [`TrunkTasks`], which starts
//! them, restarts them when a trunk changes and stops them (unregistering) at shutdown.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sip::message::{NameAddr, Uri};
use sip::transaction::Transport;
use tokio::sync::mpsc;

use super::health::{self, HealthTask};
use super::registrar::{self, RegistrationTask};
use super::{TrunkSettings, TrunkStates, TrunkTransport};
use crate::engine::EngineHandle;

/// One trunk as its tasks see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrunkSpec {
    /// The trunk's id (`trk_…`).
    pub trunk_id: String,
    /// Its tenant (events are stored under it).
    pub tenant_id: String,
    /// Its settings.
    pub settings: TrunkSettings,
}

/// An event about a trunk (`trunk.registration`, `trunk.health`), for the control plane to
/// store ([`crate::events::Bus::append_trunk_event`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TrunkEvent {
    /// The trunk's tenant.
    pub tenant_id: String,
    /// The trunk.
    pub trunk_id: String,
    /// `trunk.registration` or `trunk.health`.
    pub kind: &'static str,
    /// The details (`trunk_id` included).
    pub details: Value,
}

/// Counters of the trunk tasks, by trunk id (for `/metrics`).
#[derive(Debug, Default)]
pub struct TrunkCounters {
    inner: Mutex<BTreeMap<String, TrunkCounts>>,
}

/// One trunk's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrunkCounts {
    /// REGISTER requests sent (retries with credentials and unregistrations included).
    pub registrations_sent: u64,
    /// Registration attempts that failed (each `failed` state).
    pub registrations_failed: u64,
    /// OPTIONS pings sent.
    pub options_sent: u64,
    /// OPTIONS pings that failed (no answer, transport error, 503, 408).
    pub options_failed: u64,
}

impl TrunkCounters {
    /// Changes `trunk_id`'s counters.
    pub fn update(&self, trunk_id: &str, f: impl FnOnce(&mut TrunkCounts)) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(trunk_id.to_owned()).or_default());
    }

    /// Every trunk's counters, by id.
    pub fn snapshot(&self) -> Vec<(String, TrunkCounts)> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// What every trunk task needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct TrunkContext {
    /// Sends the requests (through the engine's SIP transport).
    pub engine: EngineHandle,
    /// Where the live state goes.
    pub states: TrunkStates,
    /// Where events go (bounded: when full an event is dropped and logged; the state in
    /// `states` is always current).
    pub events: mpsc::Sender<TrunkEvent>,
    /// Counters for `/metrics`.
    pub counters: Arc<TrunkCounters>,
}

impl TrunkContext {
    /// Queues an event without waiting.
    pub(crate) fn emit(&self, spec: &TrunkSpec, kind: &'static str, details: Value) {
        let event = TrunkEvent {
            tenant_id: spec.tenant_id.clone(),
            trunk_id: spec.trunk_id.clone(),
            kind,
            details,
        };
        if self.events.try_send(event).is_err() {
            tracing::warn!(trunk = %spec.trunk_id, kind, "trunk event queue full or closed: event dropped");
        }
    }

    /// The IP we advertise for this trunk (its `advertise` override, else the engine's).
    pub(crate) fn advertise_ip(&self, settings: &TrunkSettings) -> IpAddr {
        settings
            .advertise
            .as_deref()
            .and_then(|a| {
                a.parse::<IpAddr>()
                    .ok()
                    .or_else(|| a.parse::<SocketAddr>().ok().map(|s| s.ip()))
            })
            .unwrap_or_else(|| self.engine.advertise_ip())
    }

    /// Our SIP port for `transport` (UDP's when the transport has no listener of its own).
    pub(crate) fn local_port(&self, transport: Transport) -> u16 {
        match transport {
            Transport::Tcp | Transport::Tls => self
                .engine
                .sip_local_tcp_addr()
                .unwrap_or_else(|| self.engine.sip_local_addr())
                .port(),
            _ => self.engine.sip_local_addr().port(),
        }
    }
}

/// A trunk's transport in the transaction layer's terms.
pub fn transport_of(settings: &TrunkSettings) -> Transport {
    match settings.transport {
        TrunkTransport::Udp => Transport::Udp,
        TrunkTransport::Tcp => Transport::Tcp,
        TrunkTransport::Tls => Transport::Tls,
    }
}

/// The Via/URI transport token of `transport`.
pub(crate) fn via_transport(transport: Transport) -> &'static str {
    match transport {
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
        Transport::Sctp => "SCTP",
        _ => "UDP",
    }
}

/// The address of `host` (`192.0.2.1`, `192.0.2.1:5070`, `[2001:db8::1]:5060`, `2001:db8::1`).
///
/// The one place trunk tasks turn a host into an address: a DNS name (RFC 3263) is an error
/// here until the resolver lands, which replaces this function.
pub fn resolve_host(host: &str, transport: Transport) -> Result<SocketAddr, String> {
    let default_port = if transport == Transport::Tls {
        5061
    } else {
        5060
    };
    // A trunk's host may carry its weight (`127.0.0.1:5060;weight=2`, settings::HostSpec):
    // the address is what precedes it.
    let host = host.split(';').next().unwrap_or_default().trim();
    if let Ok(addr) = host.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!(
        "{host:?} is not an IP address (DNS names are not resolved yet)"
    ))
}

/// Where a trunk's out-of-dialog requests go: the outbound proxy when it has one (sent a
/// preloaded loose Route, RFC 3261 §8.1.2), else its first host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// The address the request is sent to.
    pub destination: SocketAddr,
    /// The Route value (the outbound proxy, with `lr`); `None` without a proxy.
    pub route: Option<NameAddr>,
}

/// The next hop of requests for `host` on this trunk.
pub fn next_hop(settings: &TrunkSettings, host: &str) -> Result<NextHop, String> {
    let transport = transport_of(settings);
    match settings.outbound_proxy.as_deref() {
        Some(proxy) => {
            let uri = Uri::parse(proxy.trim())
                .map_err(|_| format!("outbound_proxy {proxy:?} is not a SIP URI"))?;
            let sip = uri
                .as_sip()
                .ok_or_else(|| format!("outbound_proxy {proxy:?} is not a sip: URI"))?;
            let hostport = match sip.port {
                Some(p) => format!("{}:{p}", sip.host),
                None => sip.host.to_string(),
            };
            let destination = resolve_host(&hostport, transport)?;
            let mut sip = sip.clone();
            if !sip.lr() {
                sip.params.push("lr", None::<&str>);
            }
            Ok(NextHop {
                destination,
                route: Some(NameAddr::new(Uri::Sip(sip))),
            })
        }
        None => Ok(NextHop {
            destination: resolve_host(host, transport)?,
            route: None,
        }),
    }
}

/// A random value for the sans-IO machines (refresh fraction, jitter, cnonce, tags).
pub(crate) fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        // No OS randomness: fall back on the clock's low bits (jitter only needs spread).
        crate::clock::unix_us().unsigned_abs()
    })
}

/// The running tasks of every trunk on this node.
#[derive(Debug)]
pub struct TrunkTasks {
    ctx: TrunkContext,
    running: HashMap<String, Running>,
}

#[derive(Debug)]
struct Running {
    spec: TrunkSpec,
    registration: Option<RegistrationTask>,
    health: Option<HealthTask>,
}

/// The bound on unregistering every binding at shutdown (all trunks together).
pub const UNREGISTER_WITHIN: Duration = Duration::from_secs(2);

impl TrunkTasks {
    /// No tasks yet ([`TrunkTasks::apply`] starts them).
    pub fn new(ctx: TrunkContext) -> TrunkTasks {
        TrunkTasks {
            ctx,
            running: HashMap::new(),
        }
    }

    /// The context the tasks share.
    pub fn context(&self) -> &TrunkContext {
        &self.ctx
    }

    /// Makes the running tasks match `specs`: starts those of new trunks, restarts those of
    /// changed ones (the old registration is removed first), stops those of deleted ones.
    pub async fn apply(&mut self, specs: Vec<TrunkSpec>) {
        let wanted: HashMap<String, TrunkSpec> =
            specs.into_iter().map(|s| (s.trunk_id.clone(), s)).collect();
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(id, r)| wanted.get(*id) != Some(&r.spec))
            .map(|(id, _)| id.clone())
            .collect();
        let mut stopping = Vec::new();
        for id in stale {
            if let Some(r) = self.running.remove(&id) {
                if !wanted.contains_key(&id) {
                    self.ctx.states.remove(&id);
                }
                stopping.push(r);
            }
        }
        stop_all(stopping, UNREGISTER_WITHIN).await;
        for (id, spec) in wanted {
            if self.running.contains_key(&id) {
                continue;
            }
            let registration = spec
                .settings
                .register
                .then(|| registrar::spawn(self.ctx.clone(), spec.clone()));
            let health = spec
                .settings
                .options_interval_s
                .is_some_and(|s| s > 0)
                .then(|| health::spawn(self.ctx.clone(), spec.clone()));
            self.running.insert(
                id,
                Running {
                    spec,
                    registration,
                    health,
                },
            );
        }
    }

    /// Stops every task; registrations are removed (REGISTER with Expires: 0) within `within`
    /// in all.
    pub async fn shutdown(mut self, within: Duration) {
        let all: Vec<Running> = self.running.drain().map(|(_, r)| r).collect();
        stop_all(all, within).await;
    }
}

async fn stop_all(tasks: Vec<Running>, within: Duration) {
    let stops = tasks.into_iter().map(|r| async move {
        if let Some(h) = r.health {
            h.stop();
        }
        if let Some(reg) = r.registration {
            reg.stop(within).await;
        }
    });
    futures_util::future::join_all(stops).await;
}

/// The running trunk tasks of `serve` ([`spawn_supervisor`]).
#[derive(Debug)]
pub struct TrunkSupervisor {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<()>,
    pump: tokio::task::JoinHandle<()>,
}

impl TrunkSupervisor {
    /// Stops every trunk task, unregistering every binding within [`UNREGISTER_WITHIN`]
    /// (plus a little for the last events to be stored).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let bound = UNREGISTER_WITHIN + Duration::from_millis(500);
        if tokio::time::timeout(bound, &mut self.join).await.is_err() {
            tracing::warn!("trunk tasks did not stop within {bound:?}");
            self.join.abort();
        }
        // Every sender is gone with the tasks: the pump ends after storing what is queued.
        if tokio::time::timeout(Duration::from_secs(2), &mut self.pump)
            .await
            .is_err()
        {
            self.pump.abort();
        }
    }
}

/// How many trunk events may wait to be stored.
const EVENT_QUEUE: usize = 1024;

/// Runs the registrations and health checks of every trunk in the store, reloading them
/// whenever `changes` moves (the API bumps it after every trunk change), and stores their
/// events through `bus`.
pub fn spawn_supervisor(
    engine: EngineHandle,
    states: TrunkStates,
    counters: Arc<TrunkCounters>,
    store: Arc<dyn crate::store::Store>,
    bus: crate::events::Bus,
    mut changes: tokio::sync::watch::Receiver<u64>,
) -> TrunkSupervisor {
    let (tx, mut rx) = mpsc::channel::<TrunkEvent>(EVENT_QUEUE);
    let pump = tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if let Err(err) = bus
                .append_trunk_event(&e.tenant_id, &e.trunk_id, e.kind, e.details)
                .await
            {
                tracing::warn!(trunk = %e.trunk_id, kind = e.kind, error = %err, "trunk event not stored");
            }
        }
    });
    let ctx = TrunkContext {
        engine,
        states,
        events: tx,
        counters,
    };
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
    let join = tokio::spawn(async move {
        let mut tasks = TrunkTasks::new(ctx);
        loop {
            match store.load_trunk_directory().await {
                Ok(dir) => {
                    let specs = dir
                        .trunks
                        .into_iter()
                        .map(|t| TrunkSpec {
                            trunk_id: t.id,
                            tenant_id: t.tenant_id,
                            settings: t.settings,
                        })
                        .collect();
                    tasks.apply(specs).await;
                }
                Err(e) => tracing::warn!(error = %e, "trunks not loaded; kept as they were"),
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() {
                    // The API is gone: keep what runs until stopped.
                    let _ = (&mut stop_rx).await;
                    break;
                },
                _ = &mut stop_rx => break,
            }
        }
        tasks.shutdown(UNREGISTER_WITHIN).await;
    });
    TrunkSupervisor {
        stop: Some(stop_tx),
        join,
        pump,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_weight_is_not_part_of_its_address() {
        let want: SocketAddr = "127.0.0.1:19".parse().expect("address");
        assert_eq!(
            resolve_host("127.0.0.1:19;weight=2", Transport::Udp),
            Ok(want)
        );
        assert_eq!(resolve_host(" 127.0.0.1:19 ", Transport::Udp), Ok(want));
        assert_eq!(
            resolve_host("[::1];weight=3", Transport::Tls),
            Ok("[::1]:5061".parse().expect("address"))
        );
        assert!(resolve_host("carrier.example;weight=2", Transport::Udp).is_err());
    }
}
