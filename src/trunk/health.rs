//! OPTIONS health checks of one trunk (`options_interval_s` > 0): every interval an OPTIONS to
//! each host (or to the outbound proxy, the only hop we talk to when there is one). A host is
//! down after [`DOWN_AFTER`] consecutive failed pings and up again on its first answer; the
//! trunk is up while any of its hosts is, and `trunk.health` events are emitted on changes only.
//!
//! What counts as an answer (RFC 3261 §11): a UA answers OPTIONS with the status an INVITE
//! would get ("the response code chosen MUST be the same that would have been chosen had the
//! request been an INVITE"), so 200, but also 404, 405, 401/407 or 486, prove that the host's
//! SIP stack receives and processes requests: the host is alive. A failure is no final
//! response (timeout), a transport error, a 503 Service Unavailable (§21.5.4: "temporarily
//! unable to process the request due to a temporary overloading or maintenance", which is
//! what a carrier node out of rotation says) and a 408 Request Timeout (the host could not
//! reach what stands behind it). Those are the statuses on which a call fails over too.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use sip::message::{HeaderName, Headers, Host, Method, NameAddr, Params, Request, Uri, Via};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::Health;
use super::tasks::{TrunkContext, TrunkSpec, next_hop, random_u64, transport_of, via_transport};
use crate::engine::RequestError;

/// Consecutive failed pings after which a host is down.
pub const DOWN_AFTER: u32 = 2;
/// The longest wait for one ping's answer (shorter when the interval is: a ping never
/// overlaps the next).
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// A running health-check task.
#[derive(Debug)]
pub struct HealthTask {
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<()>,
}

impl HealthTask {
    /// Ends the task at once (a ping in flight is abandoned).
    pub fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.join.abort();
    }
}

impl Drop for HealthTask {
    fn drop(&mut self) {
        self.join.abort();
    }
}

/// Starts the health checks of `spec` (its interval is the caller's business; 0 is 1 s).
pub fn spawn(ctx: TrunkContext, spec: TrunkSpec) -> HealthTask {
    let (tx, rx) = oneshot::channel();
    let join = tokio::spawn(run(ctx, spec, rx));
    HealthTask {
        stop: Some(tx),
        join,
    }
}

/// Whether a final status proves the host alive (see the module docs).
pub fn status_is_up(status: u16) -> bool {
    !matches!(status, 408 | 503)
}

#[derive(Debug, Default)]
struct HostHealth {
    failures: u32,
    up: Option<bool>,
    last: String,
}

async fn run(ctx: TrunkContext, spec: TrunkSpec, mut stop: oneshot::Receiver<()>) {
    let interval = Duration::from_secs(u64::from(
        spec.settings.options_interval_s.unwrap_or(0).max(1),
    ));
    let ping_timeout = PING_TIMEOUT.min(interval);
    // With an outbound proxy the proxy is the one hop we reach: ping it (once).
    let targets: Vec<String> = if spec.settings.outbound_proxy.is_some() {
        spec.settings.hosts.iter().take(1).cloned().collect()
    } else {
        spec.settings.hosts.clone()
    };
    let mut hosts: BTreeMap<String, HostHealth> = targets
        .iter()
        .map(|h| (h.clone(), HostHealth::default()))
        .collect();
    let mut trunk = Health::Unknown;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut stop => return,
        }
        let pings = targets.iter().map(|host| {
            let ctx = ctx.clone();
            let spec = &spec;
            async move { (host.clone(), ping(&ctx, spec, host, ping_timeout).await) }
        });
        let results = futures_util::future::join_all(pings).await;
        for (host, result) in results {
            let Some(h) = hosts.get_mut(&host) else {
                continue;
            };
            ctx.counters.update(&spec.trunk_id, |c| c.options_sent += 1);
            match result {
                Ok(status) => {
                    h.failures = 0;
                    h.up = Some(true);
                    h.last = status.to_string();
                }
                Err(why) => {
                    ctx.counters
                        .update(&spec.trunk_id, |c| c.options_failed += 1);
                    h.failures = h.failures.saturating_add(1);
                    h.last = why;
                    if h.failures >= DOWN_AFTER {
                        h.up = Some(false);
                    }
                }
            }
        }
        let now = if hosts.values().any(|h| h.up == Some(true)) {
            Health::Up
        } else if !hosts.is_empty() && hosts.values().all(|h| h.up == Some(false)) {
            Health::Down
        } else {
            trunk
        };
        if now != trunk {
            let since = crate::clock::unix_us();
            trunk = now;
            ctx.states.update(&spec.trunk_id, |t| {
                t.health = now;
                t.health_since_us = since;
            });
            let detail: BTreeMap<&str, serde_json::Value> = hosts
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str(),
                        json!({"up": v.up, "failures": v.failures, "last": v.last}),
                    )
                })
                .collect();
            let state = match now {
                Health::Up => "up",
                Health::Down => "down",
                Health::Unknown => "unknown",
            };
            if now == Health::Down {
                tracing::warn!(trunk = %spec.trunk_id, "trunk down: OPTIONS unanswered");
            } else {
                tracing::info!(trunk = %spec.trunk_id, state, "trunk health");
            }
            ctx.emit(
                &spec,
                "trunk.health",
                json!({"trunk_id": spec.trunk_id, "state": state, "since": since, "hosts": detail}),
            );
        }
    }
}

/// One OPTIONS to `host`: `Ok(status)` when it proves the host alive, else why not.
async fn ping(
    ctx: &TrunkContext,
    spec: &TrunkSpec,
    host: &str,
    limit: Duration,
) -> Result<u16, String> {
    let s = &spec.settings;
    let hop = next_hop(s, host)?;
    let transport = transport_of(s);
    let ip = ctx.advertise_ip(s);
    let port = ctx.local_port(transport);
    let ip_text = match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    let target = Uri::parse(format!("sip:{host}"))
        .map_err(|_| format!("host {host:?} does not make a SIP URI"))?;
    let local = Uri::parse(format!("sip:callplane@{ip_text}:{port}"))
        .map_err(|_| "bad advertised address".to_owned())?;
    let via_host = Host::parse(ip_text.as_bytes()).map_err(|_| "bad advertised address")?;
    let r = random_u64();
    let mut params = Params::new();
    params.push("rport", None::<&str>);
    let via = Via {
        transport: via_transport(transport).to_owned(),
        host: via_host,
        port: Some(port),
        params,
    };
    let mut headers = Headers::with_capacity(10);
    headers.push(HeaderName::Via, via.to_bytes());
    if let Some(route) = &hop.route {
        headers.push(HeaderName::Route, route.to_bytes());
    }
    headers.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
    let mut from = NameAddr::new(local.clone());
    from.params.push("tag", Some(format!("{:08x}", r as u32)));
    headers.push(HeaderName::From, from.to_bytes());
    headers.push(HeaderName::To, NameAddr::new(target.clone()).to_bytes());
    headers.push(HeaderName::CallId, format!("opt-{r:016x}@{ip_text}"));
    headers.push(HeaderName::CSeq, Bytes::from_static(b"1 OPTIONS"));
    headers.push(HeaderName::Contact, NameAddr::new(local).to_bytes());
    headers.push(HeaderName::Accept, Bytes::from_static(b"application/sdp"));
    headers.push(HeaderName::ContentLength, Bytes::from_static(b"0"));
    let request = Request {
        method: Method::Options,
        uri: target,
        headers,
        body: Bytes::new(),
    };
    // The engine waits up to Timer F (32 s); a ping waits less (the waiter it leaves behind is
    // dropped by the transaction's own timeout, and each ping has a fresh Call-ID).
    match tokio::time::timeout(
        limit,
        ctx.engine.request(request, hop.destination, transport),
    )
    .await
    {
        Err(_) | Ok(Err(RequestError::Timeout)) => Err("no answer".to_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(resp)) => {
            let status = resp.status.as_u16();
            if status_is_up(status) {
                Ok(status)
            } else {
                Err(format!("answered {status}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_final_answer_but_503_and_408_means_up() {
        for s in [200, 401, 403, 404, 405, 407, 480, 486, 500, 501, 600, 603] {
            assert!(status_is_up(s), "{s}");
        }
        for s in [408, 503] {
            assert!(!status_is_up(s), "{s}");
        }
    }
}
