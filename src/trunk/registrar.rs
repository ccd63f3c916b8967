//! The registration task of one trunk (`register: true`): drives [`sip::register::Registration`]
//! with real time and the engine's SIP transport ([`EngineHandle::request`]), publishes its
//! state to [`TrunkStates`], `trunk.registration` events and the counters, and removes the
//! binding when stopped.
//!
//! [`EngineHandle::request`]: crate::engine::EngineHandle::request

use std::time::{Duration, Instant};

use serde_json::json;
use sip::message::{Host, Uri};
use sip::register::{
    Backoff, Failure, Output, Registration, RegistrationConfig, RegistrationState,
};
use sip::transaction::Transport;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::tasks::{
    NextHop, TrunkContext, TrunkSpec, next_hop, random_u64, transport_of, via_transport,
};
use super::{RegState, TrunkStates};
use crate::engine::RequestError;

/// The default requested expiry (RFC 3261 §10.2.1.1 suggests an hour).
pub const DEFAULT_EXPIRES_S: u32 = 3600;

/// A running registration task.
#[derive(Debug)]
pub struct RegistrationTask {
    stop: Option<oneshot::Sender<Instant>>,
    join: JoinHandle<()>,
}

impl RegistrationTask {
    /// Unregisters (REGISTER with Expires: 0 when a binding may exist) and ends the task,
    /// waiting at most `within` (then the task is aborted).
    pub async fn stop(mut self, within: Duration) {
        let deadline = crate::clock::now() + within;
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(deadline);
        }
        if tokio::time::timeout(within, &mut self.join).await.is_err() {
            tracing::warn!("a trunk registration did not end within {within:?}: aborted");
            self.join.abort();
        }
    }
}

impl Drop for RegistrationTask {
    fn drop(&mut self) {
        // Dropped without stop(): end the task (no unregistration).
        if self.stop.is_some() {
            self.join.abort();
        }
    }
}

/// Starts the registration of `spec` (its `register` flag is the caller's business).
pub fn spawn(ctx: TrunkContext, spec: TrunkSpec) -> RegistrationTask {
    let (tx, rx) = oneshot::channel();
    let join = tokio::spawn(run(ctx, spec, rx));
    RegistrationTask {
        stop: Some(tx),
        join,
    }
}

/// What the registration is built from, or why it cannot be.
fn config(ctx: &TrunkContext, spec: &TrunkSpec) -> Result<(RegistrationConfig, NextHop), String> {
    let s = &spec.settings;
    let host = s
        .hosts
        .first()
        .ok_or_else(|| "the trunk has no host to register with".to_owned())?;
    let hop = next_hop(s, host)?;
    let transport = transport_of(s);
    let registrar = Uri::parse(format!("sip:{host}"))
        .map_err(|_| format!("host {host:?} does not make a SIP URI"))?;
    let user = s
        .username
        .clone()
        .ok_or_else(|| "registration needs a username".to_owned())?;
    let aor = Uri::parse(format!("sip:{user}@{host}"))
        .map_err(|_| format!("user {user:?} at {host:?} does not make a SIP URI"))?;
    let ip = ctx.advertise_ip(s);
    let port = ctx.local_port(transport);
    let contact_user = s.contact_user.clone().unwrap_or_else(|| user.clone());
    let ip_text = match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    let mut contact = format!("sip:{contact_user}@{ip_text}:{port}");
    if transport != Transport::Udp {
        contact.push_str(&format!(
            ";transport={}",
            via_transport(transport).to_ascii_lowercase()
        ));
    }
    let contact =
        Uri::parse(contact).map_err(|_| format!("contact user {contact_user:?} is not valid"))?;
    let credentials = s.password.clone().map(|p| {
        sip::auth::Credentials::new(s.auth_username.clone().unwrap_or_else(|| user.clone()), p)
    });
    let r = random_u64();
    Ok((
        RegistrationConfig {
            registrar,
            aor,
            contact,
            expires_s: s.register_expires_s.unwrap_or(DEFAULT_EXPIRES_S),
            call_id: format!("reg-{r:016x}@{ip_text}"),
            from_tag: format!("{:016x}", random_u64()),
            via_transport: via_transport(transport).to_owned(),
            via_host: Host::parse(ip_text.as_bytes())
                .map_err(|_| format!("advertised address {ip_text} is not a host"))?,
            via_port: Some(port),
            routes: hop.route.clone().into_iter().collect(),
            credentials,
            realm: s.realm.clone(),
            backoff: Backoff::default(),
        },
        hop,
    ))
}

/// `instant` as Unix µs (by its distance from now).
fn unix_us_at(instant: Instant) -> i64 {
    let now = crate::clock::now();
    let unix = crate::clock::unix_us();
    if instant >= now {
        unix.saturating_add(i64::try_from((instant - now).as_micros()).unwrap_or(i64::MAX))
    } else {
        unix.saturating_sub(i64::try_from((now - instant).as_micros()).unwrap_or(i64::MAX))
    }
}

/// Publishes a state: [`TrunkStates`], the event, the counters, the log.
fn publish(ctx: &TrunkContext, spec: &TrunkSpec, state: &RegistrationState, last_status: u16) {
    let id = &spec.trunk_id;
    let (reg, name, status, expires, next_try_at) = match state {
        RegistrationState::Unregistered => (
            Some(RegState::Unregistered),
            "unregistered",
            last_status,
            None,
            None,
        ),
        RegistrationState::Registering => {
            (Some(RegState::Registering), "registering", 0, None, None)
        }
        RegistrationState::Unregistering => (None, "unregistering", 0, None, None),
        RegistrationState::Registered {
            granted_s,
            expires_at,
            ..
        } => (
            Some(RegState::Registered {
                expires_at_us: unix_us_at(*expires_at),
                granted_s: *granted_s,
            }),
            "registered",
            last_status,
            Some(*granted_s),
            None,
        ),
        RegistrationState::Failed {
            status,
            reason,
            next_try,
        } => {
            let at = unix_us_at(*next_try);
            ctx.counters.update(id, |c| c.registrations_failed += 1);
            (
                Some(RegState::Failed {
                    last_status: *status,
                    reason: reason.clone(),
                    next_try_at_us: at,
                }),
                "failed",
                *status,
                None,
                Some(at),
            )
        }
    };
    match state {
        RegistrationState::Failed { reason, .. } => {
            tracing::warn!(trunk = %id, status, %reason, "trunk registration failed")
        }
        _ => tracing::info!(trunk = %id, state = name, status, ?expires, "trunk registration"),
    }
    if let Some(reg) = reg {
        set_state(&ctx.states, id, reg);
    }
    let reason = match state {
        RegistrationState::Failed { reason, .. } => Some(reason.clone()),
        _ => None,
    };
    ctx.emit(
        spec,
        "trunk.registration",
        json!({
            "trunk_id": id,
            "state": name,
            "status": status,
            "expires": expires,
            "next_try_at": next_try_at,
            "reason": reason,
        }),
    );
}

fn set_state(states: &TrunkStates, id: &str, reg: RegState) {
    states.update(id, |t| t.registration = reg);
}

async fn run(ctx: TrunkContext, spec: TrunkSpec, mut stop: oneshot::Receiver<Instant>) {
    let (cfg, hop) = match config(&ctx, &spec) {
        Ok(c) => c,
        Err(reason) => {
            // A configuration the API should have refused: shown as failed, never retried
            // (a change of the trunk restarts this task).
            tracing::warn!(trunk = %spec.trunk_id, %reason, "trunk registration not started");
            set_state(
                &ctx.states,
                &spec.trunk_id,
                RegState::Failed {
                    last_status: 0,
                    reason: reason.clone(),
                    next_try_at_us: 0,
                },
            );
            ctx.emit(
                &spec,
                "trunk.registration",
                json!({"trunk_id": spec.trunk_id, "state": "failed", "status": 0,
                       "expires": null, "next_try_at": null, "reason": reason}),
            );
            let _ = stop.await;
            return;
        }
    };
    let transport = transport_of(&spec.settings);
    let mut reg = Registration::new(cfg);
    reg.start(crate::clock::now(), random_u64());
    let mut last_status = 0u16;
    // Set once stop() was called: the deadline of the unregistration.
    let mut stopping: Option<Instant> = None;
    loop {
        let mut to_send = None;
        while let Some(out) = reg.poll_output() {
            match out {
                Output::Send(req) => to_send = Some(*req),
                Output::State(state) => publish(&ctx, &spec, &state, last_status),
            }
        }
        if let Some(request) = to_send {
            ctx.counters
                .update(&spec.trunk_id, |c| c.registrations_sent += 1);
            let send = ctx.engine.request(request, hop.destination, transport);
            tokio::pin!(send);
            let result = loop {
                let limit = stopping.map(tokio::time::Instant::from_std);
                tokio::select! {
                    r = &mut send => break Some(r),
                    at = &mut stop, if stopping.is_none() => {
                        // Let the request in flight finish (its Call-ID is busy until then),
                        // within the unregistration's deadline.
                        stopping = Some(at.unwrap_or_else(|_| crate::clock::now()));
                    }
                    () = sleep_until_opt(limit) => break None,
                }
            };
            let now = crate::clock::now();
            match result {
                Some(Ok(response)) => {
                    last_status = response.status.as_u16();
                    reg.handle_response(now, &response, random_u64());
                }
                Some(Err(RequestError::Timeout)) => {
                    last_status = 0;
                    reg.handle_failure(now, Failure::Timeout, random_u64());
                }
                Some(Err(RequestError::Closed)) => return,
                Some(Err(e)) => {
                    tracing::debug!(trunk = %spec.trunk_id, error = %e, "REGISTER not sent");
                    last_status = 0;
                    reg.handle_failure(now, Failure::Transport, random_u64());
                }
                None => {
                    // The deadline passed with the request in flight: give up.
                    finish(&ctx, &spec);
                    return;
                }
            }
            if let Some(deadline) = stopping
                && !matches!(reg.state(), RegistrationState::Unregistering)
            {
                if now >= deadline {
                    finish(&ctx, &spec);
                    return;
                }
                reg.unregister(now, random_u64());
            }
            if stopping.is_some() && reg.state() == &RegistrationState::Unregistered {
                // Drain the final state change, then end.
                while let Some(out) = reg.poll_output() {
                    if let Output::State(state) = out {
                        publish(&ctx, &spec, &state, last_status);
                    }
                }
                return;
            }
            continue;
        }
        if stopping.is_some() {
            // Nothing in flight and nothing to send after unregister(): done.
            finish(&ctx, &spec);
            return;
        }
        let next = reg.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            () = sleep_until_opt(next) => reg.handle_timeout(crate::clock::now(), random_u64()),
            at = &mut stop => {
                stopping = Some(at.unwrap_or_else(|_| crate::clock::now()));
                reg.unregister(crate::clock::now(), random_u64());
            }
        }
    }
}

/// The task ends: whatever the registrar still holds, we show `unregistered`.
fn finish(ctx: &TrunkContext, spec: &TrunkSpec) {
    if ctx.states.get(&spec.trunk_id).registration != RegState::Unregistered {
        publish(ctx, spec, &RegistrationState::Unregistered, 0);
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
