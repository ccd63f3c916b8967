//! The campaign worker: the I/O half of campaigns (see the module docs of [`super`] and
//! docs/campaigns/worker.md).
//!
//! One task per node. It keeps a [`Pacer`] over the running campaigns and, whenever the pacer
//! says a call may start, claims one contact from the store (the claim re-checks every limit
//! against the database, so several nodes never exceed one), checks the callee's calling
//! window, writes the call row with the attempt's idempotency key, and originates it.
//!
//! Outcomes come from the call's own stored events ([`Bus::subscribe`]): a final event of a
//! campaign call ends its attempt ([`retry::decide`] names the rule), frees the pacer's slot,
//! and the next call is started at once, in the same turn of the loop (no polling interval on
//! that path). A `script.opt_out` event adds the callee to the tenant's do-not-call list.
//!
//! What the bus cannot tell (it lagged, the process restarted, another node died) the settle
//! pass reads from the store every few seconds: an expired lease whose call has ended is
//! settled from the call row; one whose call was never created is given back (the next claim
//! reuses the attempt number, and the idempotency key replays instead of dialing twice); a
//! call still live on a dead node is ended by the orphan logic (`app`), and then settled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::model::{CampaignStatus, ContactStatus};
use super::pacing::{self, CampaignLimits, Next, Pacer};
use super::retry;
use super::window::{self, WindowState};
use crate::clock;
use crate::engine::{EngineError, EngineHandle, OriginateRequest, PromptScope};
use crate::events::Bus;
use crate::script::Script;
use crate::store::campaign::{
    AttemptEnd, Campaign, ClaimRequest, Contact, TenantLimits, attempt_key,
};
use crate::store::{CallRecord, Created, Direction, NewCall, NewEvent, Store, StoredEvent, Trunk};

/// The worker's settings (`serve` flags).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This node (leases and call rows name it).
    pub node_id: String,
    /// Live campaign calls on this node at most (`--campaign-max-calls`).
    pub max_calls: u32,
    /// How long a claimed contact stays leased without renewal (`--campaign-lease-s`).
    pub lease: Duration,
    /// The data directory: recordings (`recordings/<call id>.wav`) and each tenant's prompts
    /// (`prompts/<tenant id>/`), as for API calls.
    pub data_dir: PathBuf,
    /// How often the running campaigns are re-read (their limits, status, windows).
    pub refresh: Duration,
    /// How often expired leases are settled from the store.
    pub settle: Duration,
    /// How long a contact whose call the engine refused (capacity, draining, store backlog)
    /// waits before it is due again.
    pub refused_retry: Duration,
    /// Every trunk's live state (#11): trunks marked down are skipped while another can take
    /// the call. `serve` passes the node's one instance.
    pub trunk_states: crate::trunk::TrunkStates,
    /// The resolver for trunk hosts that are names (RFC 3263, `--dns-server`); `None`: such
    /// trunks' calls fail with a clear reason (IP literals need none).
    pub dns: Option<crate::net::dns::Resolver>,
}

impl WorkerConfig {
    /// Defaults: 30 s leases, a refresh each second, a settle pass every 5 s.
    pub fn new(node_id: impl Into<String>, data_dir: PathBuf, max_calls: u32) -> WorkerConfig {
        WorkerConfig {
            node_id: node_id.into(),
            max_calls,
            lease: Duration::from_secs(30),
            data_dir,
            refresh: Duration::from_secs(1),
            settle: Duration::from_secs(5),
            refused_retry: Duration::from_secs(5),
            trunk_states: Default::default(),
            dns: None,
        }
    }
}

/// Starts the worker on the current runtime. `wake` is notified by the API when a campaign
/// starts, resumes or gets contacts (`AppState.campaign_wake`).
pub fn spawn_worker(
    config: WorkerConfig,
    store: Arc<dyn Store>,
    engine: EngineHandle,
    bus: Bus,
    wake: Arc<Notify>,
) -> JoinHandle<()> {
    // Subscribed before anything is dialed: no final event of ours can be missed.
    let events = bus.subscribe();
    tokio::spawn(async move {
        let now = clock::now();
        let mut worker = Worker {
            pacer: Pacer::new(config.max_calls),
            config,
            store,
            engine,
            bus,
            campaigns: HashMap::new(),
            live: HashMap::new(),
            caller_turn: 0,
            next_refresh: now,
            next_settle: now,
            next_renew: now,
            wait_until: None,
            pending: std::sync::Mutex::new(Vec::new()),
        };
        worker.run(events, wake).await;
    })
}

/// A running campaign as the worker needs it.
#[derive(Debug)]
struct Running {
    campaign: Campaign,
    script: Option<Arc<Script>>,
    /// Its trunks (in the campaign's order; a trunk that no longer exists is left out).
    trunks: Vec<Trunk>,
    tenant: TenantLimits,
    /// No contact was due at the last claim: skip it until the next refresh or a call of it
    /// ends.
    idle: bool,
    /// A claim found no calls/s token (another node took it): not ready until then.
    ready_at: Option<Instant>,
}

/// A call this node placed for a campaign, until its final event.
#[derive(Debug, Clone)]
struct LiveCall {
    campaign_id: String,
    /// The contact as claimed, and its attempt number.
    contact: Contact,
    attempt: u32,
    trunk_id: Option<String>,
}

struct Worker {
    config: WorkerConfig,
    store: Arc<dyn Store>,
    engine: EngineHandle,
    bus: Bus,
    pacer: Pacer,
    campaigns: HashMap<String, Running>,
    /// Store call id → its attempt, for this node's live campaign calls.
    live: HashMap<String, LiveCall>,
    caller_turn: usize,
    next_refresh: Instant,
    next_settle: Instant,
    next_renew: Instant,
    /// The pacer's or a claim's next calls/s token.
    wait_until: Option<Instant>,
    /// Campaign and contact events to store after this turn's calls started.
    pending: std::sync::Mutex<Vec<(String, String, String, Value)>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("node_id", &self.config.node_id)
            .field("campaigns", &self.campaigns.len())
            .field("live", &self.live.len())
            .finish()
    }
}

/// Most calls started in one turn of the loop before events are looked at again.
const DIALS_PER_TURN: usize = 32;
/// Expired leases settled per pass.
const SETTLE_BATCH: u32 = 200;
/// Queued contacts looked at per campaign by the window sweep each refresh.
const SWEEP_BATCH: u32 = 200;

impl Worker {
    async fn run(
        &mut self,
        mut events: tokio::sync::broadcast::Receiver<StoredEvent>,
        wake: Arc<Notify>,
    ) {
        loop {
            let now = clock::now();
            if now >= self.next_refresh {
                self.refresh().await;
                self.next_refresh = clock::now() + self.config.refresh;
            }
            if now >= self.next_settle {
                self.settle_expired().await;
                self.next_settle = clock::now() + self.config.settle;
            }
            if now >= self.next_renew {
                self.renew().await;
                self.next_renew = clock::now() + self.config.lease / 3;
            }
            self.dispatch().await;
            self.flush_events().await;
            let mut deadline = self.next_refresh.min(self.next_settle).min(self.next_renew);
            if let Some(w) = self.wait_until {
                deadline = deadline.min(w);
            }
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(ev) => {
                        self.handle_event(ev).await;
                        // Whatever else is already there, before dialing again.
                        while let Ok(ev) = events.try_recv() {
                            self.handle_event(ev).await;
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        // Missed outcomes are in the store: settle from it now.
                        tracing::warn!(missed = n, "campaign worker lagged behind the bus; settling from the store");
                        self.next_settle = clock::now();
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = wake.notified() => {
                    self.next_refresh = clock::now();
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// Starts calls while the pacer allows.
    async fn dispatch(&mut self) {
        self.wait_until = None;
        if self.engine.is_draining() {
            return;
        }
        let now = clock::now();
        let mut next_ready: Option<Instant> = None;
        for (id, r) in &mut self.campaigns {
            match r.ready_at {
                Some(at) if at <= now => {
                    r.ready_at = None;
                    self.pacer.set_ready(id, true);
                }
                Some(at) => next_ready = Some(next_ready.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        self.dispatch_ready().await;
        if let Some(at) = next_ready {
            self.wait_until = Some(self.wait_until.map_or(at, |w| w.min(at)));
        }
    }

    async fn dispatch_ready(&mut self) {
        for _ in 0..DIALS_PER_TURN {
            let now = clock::now();
            match self.pacer.next(now) {
                Next::Dial { campaign } => {
                    if !self.dial_one(&campaign).await {
                        // Nothing started: the pacer's reservation was released; look at
                        // the other campaigns.
                        continue;
                    }
                }
                Next::Wait(at) => {
                    self.wait_until = Some(at);
                    return;
                }
                Next::Idle => return,
            }
        }
        // More may be allowed: come back after a look at the events.
        self.wait_until = Some(clock::now());
    }

    fn set_idle(&mut self, campaign: &str) {
        if let Some(r) = self.campaigns.get_mut(campaign) {
            r.idle = true;
        }
        self.pacer.set_ready(campaign, false);
    }

    /// Claims one contact of `campaign` and starts its call. False when no call started (the
    /// pacer's slot was released).
    async fn dial_one(&mut self, campaign_id: &str) -> bool {
        let Some(running) = self.campaigns.get(campaign_id) else {
            self.pacer.release(campaign_id);
            return false;
        };
        if self.engine.refuse_for_store_backlog() {
            self.pacer.release(campaign_id);
            self.set_idle(campaign_id);
            return false;
        }
        let now_us = clock::unix_us();
        let req = ClaimRequest {
            campaign_id: campaign_id.to_owned(),
            node_id: self.config.node_id.clone(),
            now_us,
            lease_us: self.config.lease.as_micros() as i64,
            max: 1,
            tenant_max_concurrent: running.tenant.max_concurrent,
            number_cap: running.tenant.number_cap,
            number_cap_window_us: i64::from(running.tenant.number_cap_window_s) * 1_000_000,
        };
        let claim = match self.store.claim_contacts(&req).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(campaign = campaign_id, error = %e, "claim failed");
                self.pacer.release(campaign_id);
                self.set_idle(campaign_id);
                return false;
            }
        };
        for c in &claim.suppressed {
            self.contact_event("contact.suppressed", c, json!({"reason": c.reason}))
                .await;
        }
        for c in &claim.capped {
            self.contact_event(
                "contact.deferred",
                c,
                json!({"reason_code": "number_cap", "reason": c.reason, "until_us": c.next_attempt_at_us}),
            )
            .await;
        }
        let Some((contact, n)) = claim.claimed.into_iter().next() else {
            self.pacer.release(campaign_id);
            if let Some(at) = claim.cps_next_at_us {
                // Another node took the token: this campaign waits for the next one.
                let wait = Duration::from_micros(at.saturating_sub(now_us).max(0) as u64);
                let at = clock::now() + wait;
                self.pacer.set_ready(campaign_id, false);
                if let Some(r) = self.campaigns.get_mut(campaign_id) {
                    r.ready_at = Some(at);
                }
            } else if claim.suppressed.is_empty() && claim.capped.is_empty() {
                self.set_idle(campaign_id);
            }
            return false;
        };
        self.start_call(campaign_id, contact, n).await
    }

    /// The claimed attempt `n` of `contact`: its window, its call row, the INVITE.
    async fn start_call(&mut self, campaign_id: &str, contact: Contact, n: u32) -> bool {
        let Some(running) = self.campaigns.get(campaign_id) else {
            self.pacer.release(campaign_id);
            return false;
        };
        let settings = &running.campaign.settings;
        let now_us = clock::unix_us();
        // The callee's own time (the claim's last check: the refresh sweep defers most).
        let tz = jiff::tz::TimeZone::get(&contact.resolved_tz).unwrap_or(jiff::tz::TimeZone::UTC);
        if let WindowState::Closed { opens_at_us, why } = window::state(
            &settings.effective_windows(),
            &settings.holidays,
            &tz,
            now_us,
        ) {
            let until = opens_at_us.unwrap_or(now_us + 86_400_000_000);
            let reason = deferral_sentence(&why, &tz, opens_at_us);
            if let Err(e) = self
                .store
                .abandon_attempt(&contact.id, n, until, "window", &reason, now_us)
                .await
            {
                tracing::warn!(contact = %contact.id, error = %e, "deferral not stored");
            }
            self.pacer.release(campaign_id);
            self.contact_event(
                "contact.deferred",
                &contact,
                json!({"reason_code": "window", "reason": reason, "until_us": until}),
            )
            .await;
            return false;
        }
        // The trunk: the contact's index, or the next one with room.
        let count = running.trunks.len();
        if count == 0 {
            self.pacer.release(campaign_id);
            let end = AttemptEnd {
                contact_id: contact.id.clone(),
                attempt: n,
                outcome: "failed".to_owned(),
                rule: "no trunk: the campaign has no usable trunk".to_owned(),
                status: ContactStatus::Failed,
                next_attempt_at_us: None,
                trunk_index: contact.trunk_index,
                reason_code: "no_trunk".to_owned(),
                reason: "the campaign has no usable trunk".to_owned(),
                at_us: now_us,
            };
            let _ = self.store.end_attempt(&end).await;
            return false;
        }
        let now = clock::now();
        let first = contact.trunk_index as usize % count;
        // Trunks marked down by their health check are skipped while another can start.
        let states = &self.config.trunk_states;
        let pick = (0..count)
            .map(|k| (first + k) % count)
            .filter(|&i| !states.is_down(&running.trunks[i].id))
            .chain((0..count).map(|k| (first + k) % count))
            .find(|&i| {
                self.pacer
                    .can_start(campaign_id, &running.trunks[i].id, now)
            });
        let Some(index) = pick else {
            // Every trunk is full: give the attempt back, due at once.
            let _ = self
                .store
                .abandon_attempt(
                    &contact.id,
                    n,
                    now_us,
                    "trunk_full",
                    "every trunk of the campaign is at its limit",
                    now_us,
                )
                .await;
            self.pacer.release(campaign_id);
            self.set_idle(campaign_id);
            return false;
        };
        let trunk = running.trunks[index].clone();
        let script = running.script.clone();
        let campaign = running.campaign.clone();
        // Per callee: the campaign's caller ids (same area code first, then round robin), else
        // the trunk's pool (the same rule), else its from_user.
        self.caller_turn = self.caller_turn.wrapping_add(1);
        let caller_id = crate::trunk::dial::pick_caller_id(
            &campaign.settings.caller_ids,
            &contact.phone,
            self.caller_turn,
        )
        .map(str::to_owned);
        let target = match plan_target(
            self.config.dns.as_ref(),
            &trunk,
            &contact.phone,
            caller_id.as_deref(),
            self.caller_turn,
        )
        .await
        {
            Ok(t) => t,
            Err(why) => {
                self.pacer.release(campaign_id);
                let end = AttemptEnd {
                    contact_id: contact.id.clone(),
                    attempt: n,
                    outcome: "invalid_number".to_owned(),
                    rule: format!("not dialable: {why}"),
                    status: ContactStatus::Failed,
                    next_attempt_at_us: None,
                    trunk_index: contact.trunk_index,
                    reason_code: "not_dialable".to_owned(),
                    reason: why,
                    at_us: now_us,
                };
                let _ = self.store.end_attempt(&end).await;
                return false;
            }
        };
        let from_uri = match &target.from {
            Some(f) => f.to_string(),
            None => match self.engine.advertise_ip() {
                IpAddr::V4(ip) => format!("sip:callplane@{ip}"),
                IpAddr::V6(ip) => format!("sip:callplane@[{ip}]"),
            },
        };
        let mut variables = contact.variables.clone();
        variables.insert("phone".to_owned(), contact.phone.clone());
        if let Some(name) = &contact.name {
            variables.insert("name".to_owned(), name.clone());
        }
        variables.insert("contact_id".to_owned(), contact.id.clone());
        variables.insert("campaign_id".to_owned(), campaign.id.clone());
        variables.insert("attempt".to_owned(), n.to_string());
        let request = json!({
            "campaign_id": campaign.id,
            "contact_id": contact.id,
            "attempt": n,
            "to": contact.phone,
            "trunk_id": trunk.id,
            "script_id": campaign.settings.script_id,
            "variables": variables,
            "record": campaign.settings.record,
            "ring_timeout_s": campaign.settings.ring_timeout_s,
            "max_duration_s": campaign.settings.max_duration_s,
        });
        let created = self
            .store
            .create_call(&NewCall {
                tenant_id: campaign.tenant_id.clone(),
                direction: Direction::Outbound,
                to_uri: target.to.to_string(),
                from_uri,
                trunk_id: Some(trunk.id.clone()),
                script_id: campaign.settings.script_id.clone(),
                script_version: campaign.script_version,
                campaign_id: Some(campaign.id.clone()),
                idempotency_key: Some(attempt_key(&contact.id, n)),
                request,
                created_at_us: now_us,
                node_id: Some(self.config.node_id.clone()),
            })
            .await;
        let call = match created {
            Ok(Created::New(call)) => call,
            Ok(Created::Existing(call)) => {
                // A replay of this attempt (a node died between writing the row and linking
                // it): never dial twice. Link it and let its own end settle it.
                self.pacer.release(campaign_id);
                let _ = self
                    .store
                    .set_attempt_call(&contact.id, n, &call.id, call.trunk_id.as_deref())
                    .await;
                if call.status.is_final() {
                    self.settle_attempt(&call.id, outcome_of_record(&call), now_us)
                        .await;
                }
                return false;
            }
            Err(e) => {
                tracing::warn!(contact = %contact.id, error = %e, "campaign call row not written");
                self.pacer.release(campaign_id);
                let _ = self
                    .store
                    .abandon_attempt(
                        &contact.id,
                        n,
                        now_us + self.config.refused_retry.as_micros() as i64,
                        "store_error",
                        "the call could not be recorded; retried shortly",
                        now_us,
                    )
                    .await;
                self.set_idle(campaign_id);
                return false;
            }
        };
        let record = campaign.settings.record.then(|| {
            self.config
                .data_dir
                .join("recordings")
                .join(format!("{}.wav", call.id))
        });
        let script = script.or_else(|| Some(hangup_script()));
        let prompts = prompts_dir(&self.config.data_dir, &campaign.tenant_id);
        let originate = OriginateRequest {
            sip: target.sip,
            alternates: target.alternates,
            to: target.to,
            destination: target.destination,
            from: target.from,
            play: None,
            gather_digits: 0,
            record,
            ring_timeout: Duration::from_secs(u64::from(campaign.settings.ring_timeout_s.max(1))),
            transport: target.transport,
            hangup_after: None,
            send_dtmf: Vec::new(),
            dtmf_after: Duration::ZERO,
            script,
            prompts,
            prompt_scope: PromptScope::Confined,
            tag: Some(Arc::from(call.id.as_str())),
            variables,
            max_duration: campaign
                .settings
                .max_duration_s
                .map(|s| Duration::from_secs(u64::from(s))),
        };
        // Tracked before the INVITE: its final event may come before `originate` returns.
        self.live.insert(
            call.id.clone(),
            LiveCall {
                campaign_id: campaign.id.clone(),
                contact: contact.clone(),
                attempt: n,
                trunk_id: Some(trunk.id.clone()),
            },
        );
        self.pacer
            .started(campaign_id, Some(&trunk.id), clock::now());
        let originated = self.engine.originate(originate).await;
        // Linked after the INVITE is out, off the slot-to-INVITE path: this node settles its
        // own calls from `live`, and a crash before this line leaves an attempt without a
        // call, which the settle pass gives back and the next claim replays by its key.
        if let Err(e) = self
            .store
            .set_attempt_call(&contact.id, n, &call.id, Some(&trunk.id))
            .await
        {
            tracing::warn!(contact = %contact.id, call = %call.id, error = %e, "attempt not linked to its call");
        }
        match originated {
            Ok(engine_id) => {
                self.bus.register_live(&call.id, engine_id);
                true
            }
            Err(e) => {
                let reason = match &e {
                    EngineError::AtCapacity(_) => "capacity_exceeded",
                    EngineError::StoreBacklog => "store_backlog",
                    EngineError::Draining => "draining",
                    _ => "engine_unavailable",
                };
                tracing::warn!(call = %call.id, error = %e, "campaign call refused by the engine");
                self.live.remove(&call.id);
                self.pacer.ended(campaign_id, Some(&trunk.id));
                // The row exists: end its timeline, as the API does.
                let now_us = clock::unix_us();
                if let Err(e) = self
                    .bus
                    .append(NewEvent {
                        call_id: call.id.clone(),
                        kind: "call.failed".to_owned(),
                        at_unix_us: now_us,
                        offset_us: (now_us - call.created_at_us).max(0),
                        details: json!({"outcome": "failed", "reason": reason, "end_reason": reason}),
                    })
                    .await
                {
                    tracing::error!(call = %call.id, error = %e, "could not store call.failed");
                }
                // Nobody was dialed: the attempt ends without a retry rule and the contact is
                // due again shortly (docs/campaigns/worker.md "Refusals").
                let retry_s = self.config.refused_retry.as_secs();
                let end = AttemptEnd {
                    contact_id: contact.id.clone(),
                    attempt: n,
                    outcome: "refused".to_owned(),
                    rule: format!("refused: {reason} (nothing sent); requeued in {retry_s} s"),
                    status: ContactStatus::Queued,
                    next_attempt_at_us: Some(now_us + self.config.refused_retry.as_micros() as i64),
                    trunk_index: contact.trunk_index,
                    reason_code: "refused".to_owned(),
                    reason: format!(
                        "this node refused the call ({reason}); due again in {retry_s} s"
                    ),
                    at_us: now_us,
                };
                let _ = self.store.end_attempt(&end).await;
                self.set_idle(campaign_id);
                false
            }
        }
    }

    /// One stored event from the bus.
    async fn handle_event(&mut self, ev: StoredEvent) {
        // Campaign events have no call.
        let Some(call_id) = ev.call_id.clone() else {
            return;
        };
        if ev.kind == "script.opt_out" {
            self.opt_out(&call_id, &ev).await;
            return;
        }
        if ev.kind != "call.completed" && ev.kind != "call.failed" {
            return;
        }
        if ev.campaign_id.is_none() && !self.live.contains_key(&call_id) {
            return;
        }
        let outcome = ev
            .details
            .get("outcome")
            .and_then(Value::as_str)
            .unwrap_or(if ev.kind == "call.completed" {
                "answered"
            } else {
                "failed"
            })
            .to_owned();
        let interrupted = ev
            .details
            .get("estimated_end")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let answered = ev.details.get("duration_ms").is_some() || outcome == "answered";
        let outcome = if interrupted && !answered {
            "interrupted".to_owned()
        } else if interrupted {
            "answered".to_owned()
        } else {
            outcome
        };
        self.settle_attempt(&call_id, outcome, ev.at_unix_us).await;
    }

    /// Ends the open attempt of call `call_id` with `outcome` and frees its slot. The loop
    /// dispatches right after handling events: the next call starts at once, not at a tick.
    async fn settle_attempt(&mut self, call_id: &str, outcome: String, at_us: i64) {
        let local = self.live.remove(call_id).map(|live| {
            self.pacer
                .ended(&live.campaign_id, live.trunk_id.as_deref());
            if let Some(r) = self.campaigns.get_mut(&live.campaign_id) {
                r.idle = false;
                self.pacer.set_ready(&live.campaign_id, true);
            }
            (live.contact, live.attempt, live.trunk_id)
        });
        // A call of this node: its attempt is known (no read on the way to the next call);
        // end_attempt still changes nothing unless it is the contact's open attempt.
        let (contact, attempt, used_trunk) = match local {
            Some(found) => found,
            None => match self.store.attempt_by_call(call_id).await {
                Ok(Some((contact, attempt))) => (contact, attempt.attempt, attempt.trunk_id),
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(call = call_id, error = %e, "attempt of an ended call not read; the settle pass retries");
                    return;
                }
            },
        };
        let campaign = match self.campaigns.get(&contact.campaign_id) {
            Some(r) => r.campaign.clone(),
            None => match self
                .store
                .get_campaign_any_tenant(&contact.campaign_id)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(campaign = %contact.campaign_id, error = %e, "campaign not read");
                    return;
                }
            },
        };
        let history: Vec<String> = if outcome == "answered" || outcome == "interrupted" {
            // Neither needs the earlier outcomes.
            Vec::new()
        } else {
            match self
                .store
                .get_contact(&contact.campaign_id, &contact.id)
                .await
            {
                Ok((_, attempts)) => attempts
                    .into_iter()
                    .filter(|a| a.attempt < attempt)
                    .filter_map(|a| a.outcome)
                    .collect(),
                Err(_) => Vec::new(),
            }
        };
        let history: Vec<&str> = history.iter().map(String::as_str).collect();
        let trunk_count = u32::try_from(campaign.settings.trunk_ids.len()).unwrap_or(u32::MAX);
        let end = if outcome == "interrupted" {
            // The node running it stopped before an answer: due again at once.
            AttemptEnd {
                contact_id: contact.id.clone(),
                attempt,
                outcome: outcome.clone(),
                rule: "interrupted: the node placing the call stopped before an answer; requeued at once".to_owned(),
                status: ContactStatus::Queued,
                next_attempt_at_us: Some(at_us),
                trunk_index: contact.trunk_index,
                reason_code: "interrupted".to_owned(),
                reason: "the call was interrupted by a node stopping; due again now".to_owned(),
                at_us,
            }
        } else {
            // Failover moves on from the trunk the attempt really used (the contact's own
            // may have been full, and the call went out on the next one with room).
            let used_index = used_trunk
                .as_deref()
                .and_then(|t| campaign.settings.trunk_ids.iter().position(|x| x == t))
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or(contact.trunk_index);
            let d = retry::decide(
                &campaign.settings.retry,
                &outcome,
                &history,
                used_index,
                trunk_count,
                at_us,
                random_u64(),
            );
            let mut end = AttemptEnd {
                contact_id: contact.id.clone(),
                attempt,
                outcome: outcome.clone(),
                reason_code: reason_code_of(d.status, &outcome),
                rule: d.rule,
                status: d.status,
                next_attempt_at_us: d.next_attempt_at_us,
                trunk_index: d.trunk_index,
                reason: d.reason,
                at_us,
            };
            if end.status == ContactStatus::Queued
                && let Ok(listed) = self
                    .store
                    .suppressed_among(&contact.tenant_id, std::slice::from_ref(&contact.phone))
                    .await
                && !listed.is_empty()
            {
                // The callee opted out (or was listed) during the call: no retry.
                end.status = ContactStatus::Suppressed;
                end.next_attempt_at_us = None;
                end.reason_code = "suppressed".to_owned();
                end.reason = "on the do-not-call list".to_owned();
            }
            end
        };
        match self.store.end_attempt(&end).await {
            Ok(true) => {
                let kind = match end.status {
                    ContactStatus::Exhausted => Some("contact.exhausted"),
                    ContactStatus::Suppressed => Some("contact.suppressed"),
                    _ => None,
                };
                if let Some(kind) = kind {
                    let mut c = contact.clone();
                    c.status = end.status;
                    self.contact_event(
                        kind,
                        &c,
                        json!({"outcome": end.outcome, "rule": end.rule, "reason": end.reason}),
                    )
                    .await;
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(contact = %contact.id, error = %e, "attempt end not stored; the settle pass retries")
            }
        }
    }

    /// `script.opt_out`: the callee goes on the tenant's do-not-call list at once.
    async fn opt_out(&mut self, call_id: &str, ev: &StoredEvent) {
        let local = self.live.get(call_id).map(|l| l.contact.phone.clone());
        let phone = match local {
            Some(phone) => Some(phone),
            None => match self.store.attempt_by_call(call_id).await {
                Ok(Some((contact, _))) => Some(contact.phone),
                _ => match self.store.get_call_any_tenant(call_id).await {
                    // A call outside campaigns: its number is the To user when it is E.164.
                    Ok(call) => user_of(&call.to_uri).filter(|u| u.starts_with('+')),
                    Err(_) => None,
                },
            },
        };
        let Some(phone) = phone else {
            tracing::warn!(call = %call_id, "opt-out of a call whose number is unknown");
            return;
        };
        let reason = ev
            .details
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| Some(format!("opted out on call {}", call_id)));
        if let Err(e) = self
            .store
            .suppress(
                &ev.tenant_id,
                &[(phone, reason)],
                "opt_out",
                clock::unix_us(),
            )
            .await
        {
            tracing::error!(call = %call_id, error = %e, "opt-out not stored");
        }
    }

    /// Re-reads the running and scheduled campaigns, starts scheduled ones that are due,
    /// completes those past `end_at` or with nothing left, and sweeps closed windows.
    async fn refresh(&mut self) {
        let list = match self
            .store
            .campaigns_in(&[CampaignStatus::Running, CampaignStatus::Scheduled])
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "campaigns not read");
                return;
            }
        };
        let now_us = clock::unix_us();
        let mut seen = HashSet::new();
        let mut tenants: HashMap<String, TenantLimits> = HashMap::new();
        for mut campaign in list {
            if campaign.status == CampaignStatus::Scheduled {
                if campaign.settings.start_at_us.is_some_and(|at| at > now_us) {
                    continue;
                }
                match self
                    .store
                    .set_campaign_status(
                        &campaign.tenant_id,
                        &campaign.id,
                        &[CampaignStatus::Scheduled],
                        CampaignStatus::Running,
                        now_us,
                    )
                    .await
                {
                    Ok(c) => {
                        campaign = c;
                        self.campaign_event("campaign.started", &campaign).await;
                    }
                    Err(_) => continue, // another node started it, or it changed: next time
                }
            }
            if campaign.settings.end_at_us.is_some_and(|at| at <= now_us) {
                self.complete(&campaign, "its end_at passed").await;
                continue;
            }
            let idle = self.campaigns.get(&campaign.id).is_some_and(|r| r.idle);
            if idle && self.nothing_left(&campaign, now_us).await {
                self.complete(&campaign, "every contact reached a final state")
                    .await;
                continue;
            }
            self.sweep_windows(&campaign, now_us).await;
            let tenant = match tenants.get(&campaign.tenant_id) {
                Some(t) => t.clone(),
                None => {
                    let t = self
                        .store
                        .tenant_limits(&campaign.tenant_id)
                        .await
                        .unwrap_or_default();
                    tenants.insert(campaign.tenant_id.clone(), t.clone());
                    t
                }
            };
            let script = match self.load_script(&campaign).await {
                Ok(s) => s,
                Err(why) => {
                    tracing::warn!(campaign = %campaign.id, "{why}: not dialing it");
                    continue;
                }
            };
            let mut trunks = Vec::new();
            for id in &campaign.settings.trunk_ids {
                if let Ok(t) = self.store.get_trunk(&campaign.tenant_id, id).await {
                    trunks.push(t);
                }
            }
            for t in &trunks {
                self.pacer.set_trunk(
                    &t.id,
                    pacing::TrunkLimits {
                        max_concurrent: t.max_concurrent,
                        max_cps: t.max_cps_milli.map(|m| f64::from(m) / 1000.0),
                    },
                );
            }
            self.pacer.set_tenant(
                &campaign.tenant_id,
                pacing::TenantLimits {
                    max_concurrent: tenant.max_concurrent,
                    max_cps: tenant.max_cps,
                },
            );
            self.pacer.set_campaign(
                &campaign.id,
                CampaignLimits {
                    tenant: campaign.tenant_id.clone(),
                    priority: campaign.settings.priority.max(1),
                    max_concurrent: campaign.settings.max_concurrent,
                    max_cps: campaign.settings.max_cps,
                    trunks: trunks.iter().map(|t| t.id.clone()).collect(),
                },
            );
            self.pacer.set_ready(&campaign.id, true);
            seen.insert(campaign.id.clone());
            self.campaigns.insert(
                campaign.id.clone(),
                Running {
                    campaign,
                    script,
                    trunks,
                    tenant,
                    idle: false,
                    ready_at: None,
                },
            );
        }
        let gone: Vec<String> = self
            .campaigns
            .keys()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            // Paused, cancelled or completed: no new calls; live ones end normally.
            self.pacer.remove_campaign(&id);
            self.campaigns.remove(&id);
        }
    }

    async fn load_script(&self, campaign: &Campaign) -> Result<Option<Arc<Script>>, String> {
        let Some(id) = &campaign.settings.script_id else {
            return Ok(None);
        };
        if let Some(r) = self.campaigns.get(&campaign.id)
            && r.campaign.script_version == campaign.script_version
            && r.campaign.settings.script_id == campaign.settings.script_id
        {
            return Ok(r.script.clone());
        }
        let record = self
            .store
            .get_script(&campaign.tenant_id, id, campaign.script_version)
            .await
            .map_err(|e| format!("script {id} not read: {e}"))?;
        let script = crate::script::parse_value(&record.body)
            .map_err(|e| format!("script {id} is not valid: {e}"))?;
        crate::script::check_prompt_names(&script)
            .map_err(|e| format!("script {id} names a prompt by path: {e}"))?;
        Ok(Some(Arc::new(script)))
    }

    /// Whether the campaign has no queued or dialing contact left.
    async fn nothing_left(&self, campaign: &Campaign, now_us: i64) -> bool {
        match self.store.campaign_counts(&campaign.id, now_us).await {
            Ok(counts) => {
                let n = |s: &str| counts.by_status.get(s).copied().unwrap_or(0);
                n("queued") == 0 && n("dialing") == 0
            }
            Err(_) => false,
        }
    }

    async fn complete(&mut self, campaign: &Campaign, why: &str) {
        match self
            .store
            .set_campaign_status(
                &campaign.tenant_id,
                &campaign.id,
                &[CampaignStatus::Running],
                CampaignStatus::Completed,
                clock::unix_us(),
            )
            .await
        {
            Ok(c) => {
                tracing::info!(campaign = %c.id, "campaign completed: {why}");
                self.campaign_event("campaign.completed", &c).await;
            }
            Err(e) => tracing::debug!(campaign = %campaign.id, error = %e, "not completed"),
        }
        self.pacer.remove_campaign(&campaign.id);
        self.campaigns.remove(&campaign.id);
    }

    /// Defers the due contacts whose calling window is closed, so that claims (and their
    /// calls/s tokens) go to callees who may be called now.
    async fn sweep_windows(&self, campaign: &Campaign, now_us: i64) {
        let Ok(due) = self
            .store
            .due_contacts(&campaign.id, now_us, None, SWEEP_BATCH)
            .await
        else {
            return;
        };
        let windows = campaign.settings.effective_windows();
        let mut zones: BTreeMap<String, (jiff::tz::TimeZone, WindowState)> = BTreeMap::new();
        let mut deferrals = Vec::new();
        let mut deferred = Vec::new();
        for c in due {
            let (tz, state) = zones.entry(c.resolved_tz.clone()).or_insert_with(|| {
                let tz = jiff::tz::TimeZone::get(&c.resolved_tz).unwrap_or(jiff::tz::TimeZone::UTC);
                let st = window::state(&windows, &campaign.settings.holidays, &tz, now_us);
                (tz, st)
            });
            if let WindowState::Closed { opens_at_us, why } = state {
                let until = opens_at_us.unwrap_or(now_us + 86_400_000_000);
                let reason = deferral_sentence(why, tz, *opens_at_us);
                deferrals.push((c.id.clone(), until, "window".to_owned(), reason.clone()));
                deferred.push((c, until, reason));
            }
        }
        if deferrals.is_empty() {
            return;
        }
        if let Err(e) = self.store.defer_contacts(&deferrals, now_us).await {
            tracing::warn!(campaign = %campaign.id, error = %e, "window deferrals not stored");
            return;
        }
        for (c, until, reason) in deferred {
            self.contact_event(
                "contact.deferred",
                &c,
                json!({"reason_code": "window", "reason": reason, "until_us": until}),
            )
            .await;
        }
    }

    /// Settles expired leases from the store (see the module docs).
    async fn settle_expired(&mut self) {
        let now_us = clock::unix_us();
        let expired = match self.store.expired_leases(now_us, SETTLE_BATCH).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "expired leases not read");
                return;
            }
        };
        for (contact, attempt) in expired {
            match &attempt.call_id {
                None => {
                    // Never linked to a call: the attempt is given back. Were a call row
                    // written, the next claim of attempt n finds it by its key.
                    let _ = self
                        .store
                        .abandon_attempt(
                            &contact.id,
                            attempt.attempt,
                            now_us,
                            "interrupted",
                            "the node dialing it stopped before the call was placed",
                            now_us,
                        )
                        .await;
                }
                Some(call_id) => {
                    if self.live.contains_key(call_id) {
                        // Ours and live: the lease only lapsed (a slow store). Keep it.
                        let _ = self
                            .store
                            .renew_leases(
                                &self.config.node_id,
                                std::slice::from_ref(&contact.id),
                                now_us + self.config.lease.as_micros() as i64,
                            )
                            .await;
                        continue;
                    }
                    let call = match self.store.get_call_any_tenant(call_id).await {
                        Ok(c) => c,
                        Err(_) => continue,
                    };
                    if call.status.is_final() {
                        let outcome = outcome_of_record(&call);
                        let at = call.ended_at_us.unwrap_or(now_us);
                        self.settle_attempt(call_id, outcome, at).await;
                    }
                    // Still live on another node: that node renews it, or, when it died, the
                    // orphan logic ends the call and the next pass settles it.
                }
            }
        }
    }

    /// Extends the leases of this node's live calls.
    async fn renew(&self) {
        if self.live.is_empty() {
            return;
        }
        let ids: Vec<String> = self.live.values().map(|l| l.contact.id.clone()).collect();
        let until = clock::unix_us() + self.config.lease.as_micros() as i64;
        if let Err(e) = self
            .store
            .renew_leases(&self.config.node_id, &ids, until)
            .await
        {
            tracing::warn!(error = %e, "leases not renewed");
        }
    }

    /// Queues a `contact.*` event; [`Worker::flush_events`] stores it (after the calls this
    /// turn starts: events never delay an INVITE).
    async fn contact_event(&self, kind: &str, contact: &Contact, mut details: Value) {
        details["contact_id"] = json!(contact.id);
        details["phone"] = json!(contact.phone);
        details["status"] = json!(contact.status.as_str());
        details["attempts"] = json!(contact.attempts);
        self.queue_event(&contact.tenant_id, &contact.campaign_id, kind, details);
    }

    /// Queues a `campaign.*` event (see [`Worker::contact_event`]).
    async fn campaign_event(&self, kind: &str, campaign: &Campaign) {
        self.queue_event(
            &campaign.tenant_id,
            &campaign.id,
            kind,
            json!({"status": campaign.status.as_str()}),
        );
    }

    fn queue_event(&self, tenant: &str, campaign: &str, kind: &str, details: Value) {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pending.len() >= MAX_PENDING_EVENTS {
            tracing::warn!(kind, campaign, "campaign event dropped: too many queued");
            return;
        }
        pending.push((
            tenant.to_owned(),
            campaign.to_owned(),
            kind.to_owned(),
            details,
        ));
    }

    /// Stores the queued campaign and contact events through the bus (SSE and webhooks), each
    /// with its campaign's progress counts (read once per campaign per flush).
    async fn flush_events(&self) {
        let events = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if events.is_empty() {
            return;
        }
        let now_us = clock::unix_us();
        let mut progress: HashMap<String, Value> = HashMap::new();
        for (tenant, campaign, kind, mut details) in events {
            if !progress.contains_key(&campaign) {
                let counts = match self.store.campaign_counts(&campaign, now_us).await {
                    Ok(c) => json!(c.by_status),
                    Err(_) => Value::Null,
                };
                progress.insert(campaign.clone(), counts);
            }
            details["progress"] = progress.get(&campaign).cloned().unwrap_or(Value::Null);
            if let Err(e) = self
                .bus
                .append_campaign_event(&tenant, &campaign, &kind, details)
                .await
            {
                tracing::warn!(kind, campaign, error = %e, "campaign event not stored");
            }
        }
    }
}

/// Campaign events waiting for [`Worker::flush_events`] at most (a sweep of a large list
/// defers many contacts at once; more are logged and dropped, their state is in the store).
const MAX_PENDING_EVENTS: usize = 10_000;

/// Where a contact's call goes: `crate::trunk::dial` on the trunk's settings, the contact's
/// number and the caller id (the campaign's, else one from the trunk's pool, same area first;
/// else the trunk's `from_user`).
async fn plan_target(
    dns: Option<&crate::net::dns::Resolver>,
    trunk: &Trunk,
    phone: &str,
    caller_id: Option<&str>,
    turn: usize,
) -> Result<crate::trunk::dial::Dialed, String> {
    let dialed = crate::trunk::dial::dial(&crate::trunk::dial::DialRequest {
        trunk_id: &trunk.id,
        settings: &trunk.settings,
        number: phone,
        caller_id,
        random: crate::trunk::dial::random_u64(),
        turn,
        dns,
    })
    .await
    .map_err(|e| e.to_string())?;
    crate::engine::target::check_routing(&dialed.to).map_err(|e| e.to_string())?;
    if let Some(f) = &dialed.from {
        crate::engine::target::check_routing(f).map_err(|e| e.to_string())?;
    }
    Ok(dialed)
}

/// A campaign without a script: the call is answered and hung up at once.
fn hangup_script() -> Arc<Script> {
    Arc::new(Script {
        version: crate::script::SCRIPT_VERSION,
        steps: vec![crate::script::Step::Hangup(crate::script::Hangup {
            reason: "normal".to_owned(),
        })],
    })
}

/// A tenant's prompts directory (`<data dir>/prompts/<tenant id>`), as for API calls; None
/// for a tenant id that cannot name a directory.
fn prompts_dir(data_dir: &std::path::Path, tenant_id: &str) -> Option<PathBuf> {
    let plain = !tenant_id.is_empty()
        && tenant_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    plain.then(|| data_dir.join("prompts").join(tenant_id))
}

/// The outcome of an ended call row (an estimated end without an answer: `interrupted`).
fn outcome_of_record(call: &CallRecord) -> String {
    let estimated = crate::store::derive::end_is_estimated(call.end_reason.as_deref());
    if estimated {
        return if call.answered_at_us.is_some() {
            "answered".to_owned()
        } else {
            "interrupted".to_owned()
        };
    }
    call.outcome.clone().unwrap_or_else(|| {
        if call.status == crate::store::CallStatus::Completed {
            "answered".to_owned()
        } else {
            "failed".to_owned()
        }
    })
}

/// The contact's `reason_code` after an attempt.
fn reason_code_of(status: ContactStatus, outcome: &str) -> String {
    match status {
        ContactStatus::Queued => "retry".to_owned(),
        ContactStatus::Completed => "answered".to_owned(),
        ContactStatus::Exhausted => "exhausted".to_owned(),
        ContactStatus::Suppressed => "suppressed".to_owned(),
        _ => outcome.to_owned(),
    }
}

/// "outside calling hours (Sunday); next window 2026-12-07T08:00 America/Chicago".
fn deferral_sentence(why: &str, tz: &jiff::tz::TimeZone, opens_at_us: Option<i64>) -> String {
    match opens_at_us {
        Some(at) => format!("{why}; until {}", window::local_label(tz, at)),
        None => format!("{why}; no calling window in the next year"),
    }
}

/// The user part of a SIP URI text.
fn user_of(uri: &str) -> Option<String> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let (user, _) = rest.split_once('@')?;
    Some(user.to_owned())
}

/// Jitter for retries.
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => clock::unix_us() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip::transaction::Transport;

    fn trunk(address: &str, transport: &str, from_user: Option<&str>) -> Trunk {
        Trunk {
            id: "trk_1".to_owned(),
            tenant_id: "ten_1".to_owned(),
            name: "t".to_owned(),
            address: address.to_owned(),
            transport: transport.to_owned(),
            username: None,
            password: None,
            from_user: from_user.map(str::to_owned),
            max_concurrent: None,
            max_cps_milli: None,
            // As the store reads a row: the columns copied into the settings.
            settings: crate::trunk::TrunkSettings {
                hosts: vec![address.to_owned()],
                transport: crate::trunk::TrunkTransport::parse(transport).expect("transport"),
                from_user: from_user.map(str::to_owned),
                ..Default::default()
            },
            created_at_us: 0,
            updated_at_us: 0,
        }
    }

    #[tokio::test]
    async fn a_contact_is_called_as_its_number_at_the_trunk_from_the_caller_id() {
        let t = plan_target(
            None,
            &trunk("127.0.0.1:5080", "udp", Some("100")),
            "+12025550123",
            Some("+18005550000"),
            0,
        )
        .await
        .expect("plan");
        assert_eq!(t.to.to_string(), "sip:+12025550123@127.0.0.1:5080");
        assert_eq!(
            t.from.expect("from").to_string(),
            "sip:+18005550000@127.0.0.1"
        );
        let t = plan_target(
            None,
            &trunk("127.0.0.1:5080", "tcp", Some("100")),
            "+1202",
            None,
            0,
        )
        .await
        .expect("plan");
        assert_eq!(t.transport, Transport::Tcp);
        assert_eq!(t.from.expect("from").to_string(), "sip:100@127.0.0.1");
    }

    #[tokio::test]
    async fn a_number_or_caller_id_that_would_change_the_uri_is_refused() {
        let tr = trunk("127.0.0.1:5080", "udp", None);
        assert!(
            plan_target(None, &tr, "+1202;maddr=10.0.0.1", None, 0)
                .await
                .is_err()
        );
        assert!(plan_target(None, &tr, "+1202@evil", None, 0).await.is_err());
        assert!(
            plan_target(None, &tr, "+1202", Some("x y"), 0)
                .await
                .is_err()
        );
        assert!(
            plan_target(
                None,
                &trunk("example.com:5060", "udp", None),
                "+1202",
                None,
                0
            )
            .await
            .is_err()
        );
    }

    #[test]
    fn an_estimated_end_without_an_answer_is_an_interruption() {
        let mut call = CallRecord::queued(
            "call_1",
            NewCall::outbound("ten_1", "sip:a@127.0.0.1", "sip:b@127.0.0.1", 0),
        );
        call.status = crate::store::CallStatus::Failed;
        call.outcome = Some("failed".to_owned());
        call.end_reason = Some("process_restart".to_owned());
        assert_eq!(outcome_of_record(&call), "interrupted");
        call.answered_at_us = Some(5);
        assert_eq!(outcome_of_record(&call), "answered");
        call.end_reason = Some("busy".to_owned());
        call.outcome = Some("busy".to_owned());
        assert_eq!(outcome_of_record(&call), "busy");
    }

    #[test]
    fn the_user_of_a_uri_is_its_number() {
        assert_eq!(
            user_of("sip:+12025550123@127.0.0.1:5080").as_deref(),
            Some("+12025550123")
        );
        assert_eq!(user_of("tel:+1"), None);
    }
}
