//! Pacing: which campaign starts the next call, and when, so that no limit is ever exceeded.
//!
//! Pure: no I/O, no clock (time comes in as an [`Instant`]). The worker asks [`Pacer::next`]
//! whenever a slot may have freed (a call ended, a token refilled, a campaign became ready) and
//! sleeps until the instant it is told otherwise.
//!
//! Limits, all enforced at once: the system's concurrency (a `serve` flag), each tenant's
//! concurrency and calls/s (`/v1/settings/limits`), each campaign's `max_concurrent` and
//! `max_cps`, each trunk's. Shares: deficit round-robin between tenants, then between a
//! tenant's campaigns weighted by their priority.
//!
//! Protocol: [`Pacer::next`] returning [`Next::Dial`] reserves one slot (system, tenant,
//! campaign) and spends one calls/s token; the worker then either starts the call
//! ([`Pacer::started`], naming the trunk) or gives the slot back ([`Pacer::release`], e.g. no
//! contact was due). [`Pacer::ended`] frees a started call's slot.

use std::time::Instant;

/// A tenant's limits (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TenantLimits {
    /// Live calls at most.
    pub max_concurrent: Option<u32>,
    /// New calls per second at most.
    pub max_cps: Option<f64>,
}

/// A trunk's limits (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TrunkLimits {
    /// Live calls at most.
    pub max_concurrent: Option<u32>,
    /// New calls per second at most.
    pub max_cps: Option<f64>,
}

/// One running campaign as the pacer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignLimits {
    /// Its tenant.
    pub tenant: String,
    /// Its weight among the tenant's campaigns (≥ 1).
    pub priority: u32,
    /// Live calls at most.
    pub max_concurrent: u32,
    /// New calls per second at most.
    pub max_cps: f64,
    /// Its trunks in order (a call needs one with room; empty: no trunk limit applies).
    pub trunks: Vec<String>,
}

/// What the worker should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Start a call of this campaign (a slot is reserved: `started` or `release` it).
    Dial {
        /// The campaign.
        campaign: String,
    },
    /// Nothing may start before this instant (a calls/s token refills then).
    Wait(Instant),
    /// Nothing may start until a call ends or a campaign changes.
    Idle,
}

/// The pacing state of one node.
#[derive(Debug)]
pub struct Pacer {
    _private: (),
}

impl Pacer {
    /// A pacer allowing `system_max_concurrent` live campaign calls on this node.
    pub fn new(_system_max_concurrent: u32) -> Pacer {
        unimplemented!("skeleton: the pacing helper builds this")
    }

    /// Sets (or changes) a tenant's limits.
    pub fn set_tenant(&mut self, _tenant: &str, _limits: TenantLimits) {
        unimplemented!("skeleton")
    }

    /// Sets (or changes) a trunk's limits.
    pub fn set_trunk(&mut self, _trunk: &str, _limits: TrunkLimits) {
        unimplemented!("skeleton")
    }

    /// Adds a running campaign or changes its limits.
    pub fn set_campaign(&mut self, _campaign: &str, _limits: CampaignLimits) {
        unimplemented!("skeleton")
    }

    /// Removes a campaign (paused, cancelled, completed): no new calls; its live calls still
    /// count until they end.
    pub fn remove_campaign(&mut self, _campaign: &str) {
        unimplemented!("skeleton")
    }

    /// Whether the campaign has contacts due now (false: `next` skips it until set again).
    pub fn set_ready(&mut self, _campaign: &str, _ready: bool) {
        unimplemented!("skeleton")
    }

    /// The next call to start, or how long to wait.
    pub fn next(&mut self, _now: Instant) -> Next {
        unimplemented!("skeleton")
    }

    /// Whether `trunk` has room for one more call now.
    pub fn trunk_allows(&self, _trunk: &str, _now: Instant) -> bool {
        unimplemented!("skeleton")
    }

    /// The reserved call of `campaign` started on `trunk`.
    pub fn started(&mut self, _campaign: &str, _trunk: Option<&str>, _now: Instant) {
        unimplemented!("skeleton")
    }

    /// The reserved slot of `campaign` was not used (no contact due, a refusal).
    pub fn release(&mut self, _campaign: &str) {
        unimplemented!("skeleton")
    }

    /// A started call of `campaign` on `trunk` ended.
    pub fn ended(&mut self, _campaign: &str, _trunk: Option<&str>) {
        unimplemented!("skeleton")
    }

    /// Live (started or reserved) calls of `campaign`.
    pub fn live(&self, _campaign: &str) -> u32 {
        unimplemented!("skeleton")
    }
}
