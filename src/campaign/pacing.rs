//! Pacing: which campaign starts the next call, and when, so that no limit is ever exceeded.
//!
//! Pure: no I/O, no clock (time comes in as an [`Instant`]). The worker asks [`Pacer::next`]
//! whenever a slot may have freed (a call ended, a token refilled, a campaign became ready, a
//! reservation was started or released) and sleeps until the instant it is told otherwise.
//!
//! Limits, all enforced at once: the system's concurrency (a `serve` flag), each tenant's
//! concurrency and calls/s (`/v1/settings/limits`), each campaign's `max_concurrent` and
//! `max_cps`, each trunk's. Shares: deficit round-robin between tenants, then between a
//! tenant's campaigns weighted by their priority.
//!
//! Protocol: [`Pacer::next`] returning [`Next::Dial`] reserves one slot (system, tenant,
//! campaign, and one of the campaign's trunks with room) and the calls/s token of each limited
//! bucket it passes (campaign, tenant, trunk); the worker then either starts the call
//! ([`Pacer::started`], naming the trunk) or gives the slot back ([`Pacer::release`], e.g. no
//! contact was due). [`Pacer::ended`] frees a started call's slot.
//!
//! Calls/s is a GCRA per bucket with a burst of 1: starts of one bucket are at least
//! `1/max_cps` apart, so any 1 s window holds at most `ceil(max_cps)` starts (and a rate below
//! 1 works: 0.5 is one call per 2 s). The token is spent at the instant the call is
//! [`started`](Pacer::started), not when it is reserved; while a reservation is outstanding its
//! buckets are held (no second reservation passes them), so a slow claim between `next` and
//! `started` can never squeeze two starts closer than the limit. A reservation may start on
//! another trunk than the one it holds when [`Pacer::can_start`] says that trunk has room.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::time::{Duration, Instant};

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

/// The longest interval between two starts that a positive rate means; slower is "never".
const MAX_INTERVAL: Duration = Duration::from_secs(10 * 365 * 86_400);

/// How long a removed campaign's calls/s state is kept once its last call ended (so that a
/// campaign paused and resumed within this time keeps its spacing).
const TOMBSTONE: Duration = Duration::from_secs(3_600);

/// How often a bucket lets a call start.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rate {
    /// No calls/s limit.
    Unlimited,
    /// One start per interval (burst 1).
    Every(Duration),
    /// No start at all (a limit of 0, negative or NaN).
    Never,
}

impl Rate {
    fn of(cps: Option<f64>) -> Rate {
        let Some(cps) = cps else {
            return Rate::Unlimited;
        };
        if cps.is_nan() || cps <= 0.0 {
            return Rate::Never;
        }
        // Rounded up to the nanosecond, so that starts are never closer than 1/cps.
        let ns = (1e9 / cps).ceil();
        if ns < 1.0 {
            Rate::Unlimited
        } else if ns > MAX_INTERVAL.as_nanos() as f64 {
            Rate::Never
        } else {
            Rate::Every(Duration::from_nanos(ns as u64))
        }
    }
}

/// When a bucket (or a campaign as a whole) lets the next call start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    Now,
    At(Instant),
    Never,
}

impl Ready {
    /// Both must allow a start.
    fn and(self, other: Ready) -> Ready {
        match (self, other) {
            (Ready::Never, _) | (_, Ready::Never) => Ready::Never,
            (Ready::At(a), Ready::At(b)) => Ready::At(a.max(b)),
            (Ready::At(a), Ready::Now) | (Ready::Now, Ready::At(a)) => Ready::At(a),
            (Ready::Now, Ready::Now) => Ready::Now,
        }
    }
}

/// A calls/s limit: GCRA with a burst of 1, spent when a call starts, held while a reservation
/// that passed it is outstanding.
#[derive(Debug, Clone)]
struct Bucket {
    rate: Rate,
    /// The theoretical arrival time: no start before it.
    tat: Option<Instant>,
    /// The latest start.
    last: Option<Instant>,
    /// Outstanding reservations that passed this bucket.
    held: u32,
    /// The rate was lowered (or newly limited) since the last start: `tat` was pushed out so
    /// that the starts before it fall out of every window of the new rate.
    lowered: bool,
}

impl Bucket {
    fn new(rate: Rate) -> Bucket {
        Bucket {
            rate,
            tat: None,
            last: None,
            held: 0,
            lowered: false,
        }
    }

    fn ready(&self, now: Instant) -> Ready {
        match self.rate {
            Rate::Unlimited => Ready::Now,
            Rate::Never => Ready::Never,
            // The held reservation starts at `now` at the earliest: its token is spent then
            // and the next one refills an interval later.
            Rate::Every(t) if self.held > 0 => now.checked_add(t).map_or(Ready::Never, Ready::At),
            Rate::Every(_) => match self.tat {
                Some(tat) if tat > now => Ready::At(tat),
                _ => Ready::Now,
            },
        }
    }

    fn hold(&mut self) {
        self.held = self.held.saturating_add(1);
    }

    fn unhold(&mut self) {
        self.held = self.held.saturating_sub(1);
    }

    /// A call started at `at`.
    fn spend(&mut self, at: Instant) {
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
        self.lowered = false;
        if let Rate::Every(t) = self.rate {
            let base = self.tat.map_or(at, |tat| tat.max(at));
            match base.checked_add(t) {
                Some(tat) => self.tat = Some(tat),
                // Beyond what an Instant can say: no further start.
                None => self.rate = Rate::Never,
            }
        }
    }

    fn set_rate(&mut self, new: Rate) {
        let old = self.rate;
        if old == new {
            return;
        }
        self.rate = new;
        let Rate::Every(t) = new else {
            self.lowered = true;
            return;
        };
        let Some(last) = self.last else {
            return;
        };
        match old {
            // Raised: the starts so far are at least `o > t` apart, so `t` after the last one
            // keeps every window of the new rate within it.
            Rate::Every(o) if o > t && !self.lowered => self.tat = last.checked_add(t),
            // Lowered (or limited anew): wait until the last start is out of every window of
            // the new rate (a window is max(1 s, 1/rate) long).
            _ => {
                let pushed = last.checked_add(t.max(Duration::from_secs(1)));
                self.tat = match (self.tat, pushed) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (_, b) => b,
                };
                if pushed.is_none() {
                    self.rate = Rate::Never;
                }
                self.lowered = true;
            }
        }
    }

    /// Whether the bucket remembers nothing that matters at `now` any more.
    fn forgettable(&self, now: Instant) -> bool {
        self.held == 0
            && self
                .last
                .is_none_or(|l| l.checked_add(TOMBSTONE).is_some_and(|t| t <= now))
            && self.tat.is_none_or(|t| t <= now)
    }
}

/// A slot handed out by `next`, not yet started or released.
#[derive(Debug, Clone)]
struct Reservation {
    /// The tenant whose bucket it holds (the campaign's tenant when reserved).
    tenant: String,
    /// The trunk whose slot and bucket it holds.
    trunk: Option<String>,
}

#[derive(Debug)]
struct CampaignState {
    limits: CampaignLimits,
    /// Set (running) rather than removed.
    active: bool,
    ready: bool,
    /// Started calls not yet ended.
    started: u32,
    /// Oldest first.
    reservations: Vec<Reservation>,
    bucket: Bucket,
}

impl CampaignState {
    fn live(&self) -> u32 {
        self.started
            .saturating_add(u32::try_from(self.reservations.len()).unwrap_or(u32::MAX))
    }
}

#[derive(Debug)]
struct TenantState {
    limits: TenantLimits,
    /// Started and reserved calls.
    live: u32,
    bucket: Bucket,
    /// Deficit round-robin between this tenant's campaigns: the campaign served last ...
    cursor: Option<String>,
    /// ... and how many more starts its current turn allows.
    turn_left: u32,
}

impl TenantState {
    fn new(limits: TenantLimits) -> TenantState {
        TenantState {
            limits,
            live: 0,
            bucket: Bucket::new(Rate::of(limits.max_cps)),
            cursor: None,
            turn_left: 0,
        }
    }
}

#[derive(Debug)]
struct TrunkState {
    limits: TrunkLimits,
    /// Started calls on it.
    live: u32,
    /// Reservations holding it.
    reserved: u32,
    bucket: Bucket,
}

impl TrunkState {
    fn new(limits: TrunkLimits) -> TrunkState {
        TrunkState {
            limits,
            live: 0,
            reserved: 0,
            bucket: Bucket::new(Rate::of(limits.max_cps)),
        }
    }

    fn has_room(&self) -> bool {
        self.limits
            .max_concurrent
            .is_none_or(|m| self.live.saturating_add(self.reserved) < m)
    }
}

/// The campaign `next` serves.
struct Pick {
    campaign: String,
    /// The trunk its reservation holds.
    trunk: Option<String>,
    /// It continues the turn of its tenant's round-robin cursor.
    mid_turn: bool,
}

/// What one campaign could do now.
enum Eval {
    Dial(Option<String>),
    At(Instant),
    Blocked,
}

/// The pacing state of one node.
#[derive(Debug)]
pub struct Pacer {
    system_max: u32,
    /// Started and reserved calls of every campaign (removed ones included).
    system_live: u32,
    tenants: BTreeMap<String, TenantState>,
    trunks: BTreeMap<String, TrunkState>,
    campaigns: BTreeMap<String, CampaignState>,
    /// The active (set, not removed) campaigns of each tenant that has one.
    active: BTreeMap<String, BTreeSet<String>>,
    /// Removed campaigns still kept (live calls, or calls/s spacing to remember).
    removed: BTreeSet<String>,
    /// Round-robin between tenants: the tenant served last.
    tenant_cursor: Option<String>,
}

/// Bounds of a range of names.
type Span<'a> = (Bound<&'a str>, Bound<&'a str>);

/// The bounds of a ring walk over sorted names: from `cursor` (included, or not) to the end,
/// then from the start up to it. No cursor: everything from the start.
fn ring_bounds(cursor: Option<&str>, include_cursor: bool) -> (Span<'_>, Span<'_>) {
    let c = cursor.unwrap_or("");
    if include_cursor || cursor.is_none() {
        ((Included(c), Unbounded), (Unbounded, Excluded(c)))
    } else {
        ((Excluded(c), Unbounded), (Unbounded, Included(c)))
    }
}

/// The entries of `map` in ring order after (or from) `cursor`.
fn ring<'a, V>(
    map: &'a BTreeMap<String, V>,
    cursor: Option<&str>,
    include_cursor: bool,
) -> impl Iterator<Item = (&'a String, &'a V)> {
    let (tail, head) = ring_bounds(cursor, include_cursor);
    map.range::<str, _>(tail).chain(map.range::<str, _>(head))
}

/// The names of `set` in ring order after (or from) `cursor`.
fn ring_set<'a>(
    set: &'a BTreeSet<String>,
    cursor: Option<&str>,
    include_cursor: bool,
) -> impl Iterator<Item = &'a String> {
    let (tail, head) = ring_bounds(cursor, include_cursor);
    set.range::<str, _>(tail).chain(set.range::<str, _>(head))
}

impl Pacer {
    /// A pacer allowing `system_max_concurrent` live campaign calls on this node.
    pub fn new(system_max_concurrent: u32) -> Pacer {
        Pacer {
            system_max: system_max_concurrent,
            system_live: 0,
            tenants: BTreeMap::new(),
            trunks: BTreeMap::new(),
            campaigns: BTreeMap::new(),
            active: BTreeMap::new(),
            removed: BTreeSet::new(),
            tenant_cursor: None,
        }
    }

    /// Sets (or changes) a tenant's limits.
    pub fn set_tenant(&mut self, tenant: &str, limits: TenantLimits) {
        let t = self.tenant_mut(tenant);
        t.limits = limits;
        t.bucket.set_rate(Rate::of(limits.max_cps));
    }

    /// Sets (or changes) a trunk's limits.
    pub fn set_trunk(&mut self, trunk: &str, limits: TrunkLimits) {
        let t = self.trunk_mut(trunk);
        t.limits = limits;
        t.bucket.set_rate(Rate::of(limits.max_cps));
    }

    /// Adds a running campaign or changes its limits.
    ///
    /// A new (or removed) campaign is ready (see [`Pacer::set_ready`]); a running one keeps its
    /// readiness. Either keeps its live calls and its calls/s spacing. Moving a campaign to another tenant moves its live
    /// calls' count with it.
    pub fn set_campaign(&mut self, campaign: &str, limits: CampaignLimits) {
        let rate = Rate::of(Some(limits.max_cps));
        let tenant = limits.tenant.clone();
        if let Some(c) = self.campaigns.get_mut(campaign) {
            let live = c.live();
            let old = std::mem::replace(&mut c.limits, limits);
            let was_active = c.active;
            if !was_active {
                c.active = true;
                c.ready = true;
            }
            c.bucket.set_rate(rate);
            if old.tenant != tenant && live > 0 {
                let t = self.tenant_mut(&old.tenant);
                t.live = t.live.saturating_sub(live);
                let t = self.tenant_mut(&tenant);
                t.live = t.live.saturating_add(live);
            }
            if was_active {
                self.unlist(&old.tenant, campaign);
            }
            self.removed.remove(campaign);
            self.tenant_mut(&tenant);
        } else {
            self.tenant_mut(&limits.tenant);
            self.campaigns.insert(
                campaign.to_owned(),
                CampaignState {
                    limits,
                    active: true,
                    ready: true,
                    started: 0,
                    reservations: Vec::new(),
                    bucket: Bucket::new(rate),
                },
            );
        }
        self.active
            .entry(tenant)
            .or_default()
            .insert(campaign.to_owned());
    }

    /// Takes `campaign` off `tenant`'s list of active campaigns.
    fn unlist(&mut self, tenant: &str, campaign: &str) {
        if let Some(set) = self.active.get_mut(tenant) {
            set.remove(campaign);
            if set.is_empty() {
                self.active.remove(tenant);
            }
        }
    }

    /// Removes a campaign (paused, cancelled, completed): no new calls; its live calls still
    /// count until they end.
    pub fn remove_campaign(&mut self, campaign: &str) {
        let Some(c) = self.campaigns.get_mut(campaign) else {
            return;
        };
        if !c.active {
            return;
        }
        c.active = false;
        let tenant = c.limits.tenant.clone();
        self.unlist(&tenant, campaign);
        self.removed.insert(campaign.to_owned());
    }

    /// Whether the campaign has contacts due now (false: `next` skips it until set again).
    /// A campaign the pacer does not know is not affected.
    pub fn set_ready(&mut self, campaign: &str, ready: bool) {
        if let Some(c) = self.campaigns.get_mut(campaign) {
            c.ready = ready;
        }
    }

    /// The next call to start, or how long to wait.
    ///
    /// [`Next::Dial`] reserves a slot; [`Next::Wait`] says when the earliest calls/s token that
    /// would let a call start refills (nothing but calls/s stops every eligible campaign);
    /// [`Next::Idle`]: concurrency (or readiness, or a rate of 0) stops them all.
    pub fn next(&mut self, now: Instant) -> Next {
        self.forget_removed(now);
        if self.system_live >= self.system_max {
            return Next::Idle;
        }
        let mut wait: Option<Instant> = None;
        let mut pick = None;
        for (tenant, campaigns) in ring(&self.active, self.tenant_cursor.as_deref(), false) {
            match self.pick_in(tenant, campaigns, now) {
                Ok(found) => {
                    pick = Some((tenant.clone(), found));
                    break;
                }
                Err(Some(at)) => wait = Some(wait.map_or(at, |w| w.min(at))),
                Err(None) => {}
            }
        }
        let Some((
            tenant,
            Pick {
                campaign,
                trunk,
                mid_turn,
            },
        )) = pick
        else {
            return wait.map_or(Next::Idle, Next::Wait);
        };
        self.reserve(&tenant, &campaign, trunk, mid_turn);
        Next::Dial { campaign }
    }

    /// Drops the removed campaigns nothing is left to remember of.
    fn forget_removed(&mut self, now: Instant) {
        let done: Vec<String> = self
            .removed
            .iter()
            .filter(|name| {
                self.campaigns
                    .get(name.as_str())
                    .is_none_or(|c| c.live() == 0 && c.bucket.forgettable(now))
            })
            .cloned()
            .collect();
        for name in done {
            self.removed.remove(&name);
            self.campaigns.remove(&name);
        }
    }

    /// The campaign of `tenant` to serve (with its trunk and whether it continues the turn of
    /// the tenant's cursor), or the instant one could be served (None: not by waiting).
    fn pick_in(
        &self,
        tenant: &str,
        campaigns: &BTreeSet<String>,
        now: Instant,
    ) -> Result<Pick, Option<Instant>> {
        let (tenant_ready, cursor, turn_left) = match self.tenants.get(tenant) {
            Some(t) => {
                if t.limits.max_concurrent.is_some_and(|m| t.live >= m) {
                    return Err(None);
                }
                (t.bucket.ready(now), t.cursor.as_deref(), t.turn_left)
            }
            None => (Ready::Now, None, 0),
        };
        if tenant_ready == Ready::Never {
            return Err(None);
        }
        // Deficit round-robin: the cursor's campaign while its turn lasts, then the next one.
        let mid_turn = turn_left > 0 && cursor.is_some_and(|c| campaigns.contains(c));
        let mut wait: Option<Instant> = None;
        for (k, name) in ring_set(campaigns, cursor, mid_turn).enumerate() {
            match self.eval(name, tenant_ready, now) {
                Eval::Dial(trunk) => {
                    return Ok(Pick {
                        campaign: name.clone(),
                        trunk,
                        mid_turn: mid_turn && k == 0,
                    });
                }
                Eval::At(at) => wait = Some(wait.map_or(at, |w| w.min(at))),
                Eval::Blocked => {}
            }
        }
        Err(wait)
    }

    fn eval(&self, name: &str, tenant_ready: Ready, now: Instant) -> Eval {
        let Some(c) = self.campaigns.get(name) else {
            return Eval::Blocked;
        };
        if !c.active || !c.ready || c.live() >= c.limits.max_concurrent {
            return Eval::Blocked;
        }
        let mut ready = tenant_ready.and(c.bucket.ready(now));
        let mut trunk = None;
        if !c.limits.trunks.is_empty() {
            // The first trunk (in the campaign's order) with room and a token; else the one
            // whose token refills first.
            let mut best = Ready::Never;
            for t in &c.limits.trunks {
                let r = match self.trunks.get(t) {
                    Some(ts) if !ts.has_room() => continue,
                    Some(ts) => ts.bucket.ready(now),
                    None => Ready::Now,
                };
                match (r, best) {
                    (Ready::Now, _) => {
                        best = Ready::Now;
                        trunk = Some(t.clone());
                        break;
                    }
                    (Ready::At(a), Ready::At(b)) if a < b => best = r,
                    (Ready::At(_), Ready::Never) => best = r,
                    _ => {}
                }
            }
            ready = ready.and(best);
        }
        match ready {
            Ready::Now => Eval::Dial(trunk),
            // A token refill only helps if nothing else stops the campaign then; the
            // concurrency checks above already passed.
            Ready::At(at) => Eval::At(at),
            Ready::Never => Eval::Blocked,
        }
    }

    fn reserve(&mut self, tenant: &str, campaign: &str, trunk: Option<String>, mid_turn: bool) {
        self.tenant_cursor = Some(tenant.to_owned());
        self.system_live = self.system_live.saturating_add(1);
        let c = self
            .campaigns
            .get_mut(campaign)
            .expect("next picked a known campaign");
        c.bucket.hold();
        c.reservations.push(Reservation {
            tenant: tenant.to_owned(),
            trunk: trunk.clone(),
        });
        let priority = c.limits.priority.max(1);
        let t = self.tenant_mut(tenant);
        t.live = t.live.saturating_add(1);
        t.bucket.hold();
        t.turn_left = if mid_turn {
            t.turn_left.saturating_sub(1).min(priority - 1)
        } else {
            priority - 1
        };
        t.cursor = Some(campaign.to_owned());
        if let Some(trunk) = trunk {
            let ts = self.trunk_mut(&trunk);
            ts.reserved = ts.reserved.saturating_add(1);
            ts.bucket.hold();
        }
    }

    /// Whether `trunk` has room for one more call now (a free slot and a calls/s token, not
    /// held by a reservation).
    pub fn trunk_allows(&self, trunk: &str, now: Instant) -> bool {
        self.trunks
            .get(trunk)
            .is_none_or(|t| t.has_room() && t.bucket.ready(now) == Ready::Now)
    }

    /// Whether a reservation of `campaign` may start on `trunk` now: it holds that trunk, or
    /// the trunk has room ([`Pacer::trunk_allows`]). The worker asks this before starting on a
    /// trunk other than [`Pacer::reserved_trunk`] (e.g. the contact's failover trunk).
    pub fn can_start(&self, campaign: &str, trunk: &str, now: Instant) -> bool {
        let holds = self.campaigns.get(campaign).is_some_and(|c| {
            c.reservations
                .iter()
                .any(|r| r.trunk.as_deref() == Some(trunk))
        });
        holds || self.trunk_allows(trunk, now)
    }

    /// The trunk the oldest reservation of `campaign` holds (None: no reservation, or a
    /// campaign without trunks).
    pub fn reserved_trunk(&self, campaign: &str) -> Option<&str> {
        self.campaigns
            .get(campaign)?
            .reservations
            .first()?
            .trunk
            .as_deref()
    }

    /// Reservations of `campaign` not yet started or released.
    pub fn reserved(&self, campaign: &str) -> u32 {
        self.campaigns.get(campaign).map_or(0, |c| {
            u32::try_from(c.reservations.len()).unwrap_or(u32::MAX)
        })
    }

    /// The reserved call of `campaign` started on `trunk`.
    ///
    /// It uses the campaign's reservation holding `trunk`, else its oldest one (whose trunk is
    /// then freed). A start without a reservation is counted all the same.
    pub fn started(&mut self, campaign: &str, trunk: Option<&str>, now: Instant) {
        let Some(c) = self.campaigns.get_mut(campaign) else {
            return;
        };
        c.started = c.started.saturating_add(1);
        c.bucket.spend(now);
        let tenant = c.limits.tenant.clone();
        let index = c
            .reservations
            .iter()
            .position(|r| r.trunk.is_some() && r.trunk.as_deref() == trunk)
            .or((!c.reservations.is_empty()).then_some(0));
        let Some(index) = index else {
            // Not reserved: count it so that its end balances.
            self.system_live = self.system_live.saturating_add(1);
            let t = self.tenant_mut(&tenant);
            t.live = t.live.saturating_add(1);
            t.bucket.spend(now);
            if let Some(trunk) = trunk {
                let ts = self.trunk_mut(trunk);
                ts.live = ts.live.saturating_add(1);
                ts.bucket.spend(now);
            }
            return;
        };
        let r = c.reservations.remove(index);
        c.bucket.unhold();
        let t = self.tenant_mut(&r.tenant);
        t.bucket.unhold();
        t.bucket.spend(now);
        if let Some(held) = &r.trunk {
            let ts = self.trunk_mut(held);
            ts.reserved = ts.reserved.saturating_sub(1);
            ts.bucket.unhold();
        }
        if let Some(trunk) = trunk {
            let ts = self.trunk_mut(trunk);
            ts.live = ts.live.saturating_add(1);
            ts.bucket.spend(now);
        }
    }

    /// The reserved slot of `campaign` was not used (no contact due, a refusal). The most
    /// recent reservation is given back; its calls/s tokens are not spent.
    pub fn release(&mut self, campaign: &str) {
        let Some(c) = self.campaigns.get_mut(campaign) else {
            return;
        };
        let Some(r) = c.reservations.pop() else {
            return;
        };
        c.bucket.unhold();
        let tenant = c.limits.tenant.clone();
        self.system_live = self.system_live.saturating_sub(1);
        let t = self.tenant_mut(&tenant);
        t.live = t.live.saturating_sub(1);
        self.tenant_mut(&r.tenant).bucket.unhold();
        if let Some(held) = &r.trunk {
            let ts = self.trunk_mut(held);
            ts.reserved = ts.reserved.saturating_sub(1);
            ts.bucket.unhold();
        }
    }

    /// A started call of `campaign` on `trunk` ended.
    pub fn ended(&mut self, campaign: &str, trunk: Option<&str>) {
        let Some(c) = self.campaigns.get_mut(campaign) else {
            return;
        };
        if c.started == 0 {
            return;
        }
        c.started -= 1;
        let tenant = c.limits.tenant.clone();
        self.system_live = self.system_live.saturating_sub(1);
        let t = self.tenant_mut(&tenant);
        t.live = t.live.saturating_sub(1);
        if let Some(trunk) = trunk
            && let Some(ts) = self.trunks.get_mut(trunk)
        {
            ts.live = ts.live.saturating_sub(1);
        }
    }

    /// Live (started or reserved) calls of `campaign`.
    pub fn live(&self, campaign: &str) -> u32 {
        self.campaigns.get(campaign).map_or(0, CampaignState::live)
    }

    /// Live (started or reserved) calls of every campaign on this node.
    pub fn system_live(&self) -> u32 {
        self.system_live
    }

    /// Live (started or reserved) calls of `tenant`'s campaigns.
    pub fn tenant_live(&self, tenant: &str) -> u32 {
        self.tenants.get(tenant).map_or(0, |t| t.live)
    }

    /// Live calls on `trunk`: started on it, or reserved holding it.
    pub fn trunk_live(&self, trunk: &str) -> u32 {
        self.trunks
            .get(trunk)
            .map_or(0, |t| t.live.saturating_add(t.reserved))
    }

    fn tenant_mut(&mut self, tenant: &str) -> &mut TenantState {
        if !self.tenants.contains_key(tenant) {
            self.tenants
                .insert(tenant.to_owned(), TenantState::new(TenantLimits::default()));
        }
        self.tenants.get_mut(tenant).expect("inserted above")
    }

    fn trunk_mut(&mut self, trunk: &str) -> &mut TrunkState {
        if !self.trunks.contains_key(trunk) {
            self.trunks
                .insert(trunk.to_owned(), TrunkState::new(TrunkLimits::default()));
        }
        self.trunks.get_mut(trunk).expect("inserted above")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn campaign(tenant: &str, priority: u32, max_concurrent: u32, max_cps: f64) -> CampaignLimits {
        CampaignLimits {
            tenant: tenant.to_owned(),
            priority,
            max_concurrent,
            max_cps,
            trunks: Vec::new(),
        }
    }

    fn dial(next: Next) -> String {
        match next {
            Next::Dial { campaign } => campaign,
            other => panic!("expected a Dial, got {other:?}"),
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn seeds_scenario_system_limit_three_splits_two_and_one_and_the_freed_slot_goes_to_b() {
        let t0 = Instant::now();
        let mut p = Pacer::new(3);
        for tenant in ["A", "B"] {
            p.set_tenant(
                tenant,
                TenantLimits {
                    max_concurrent: Some(2),
                    max_cps: None,
                },
            );
        }
        p.set_campaign("a", campaign("A", 1, 10, f64::INFINITY));
        p.set_campaign("b", campaign("B", 1, 10, f64::INFINITY));
        let mut remaining = BTreeMap::from([("a".to_owned(), 5), ("b".to_owned(), 5)]);
        let mut start = |p: &mut Pacer| {
            let c = dial(p.next(t0));
            *remaining.get_mut(&c).expect("a or b") -= 1;
            p.started(&c, None, t0);
            c
        };
        let first: Vec<String> = (0..3).map(|_| start(&mut p)).collect();
        assert_eq!(p.next(t0), Next::Idle, "the system limit of 3 is reached");
        assert_eq!(p.tenant_live("A"), 2, "A gets 2 slots: {first:?}");
        assert_eq!(p.tenant_live("B"), 1, "B gets 1 slot: {first:?}");
        assert_eq!(p.system_live(), 3);

        p.ended("a", None);
        assert_eq!(start(&mut p), "b", "the slot A freed goes to B");
        assert_eq!((p.tenant_live("A"), p.tenant_live("B")), (1, 2));
        assert_eq!(p.next(t0), Next::Idle);
        // And back: B is at its own limit, so A's next free slot is A's.
        p.ended("b", None);
        assert_eq!(start(&mut p), "a");
    }

    /// Simulates a worker: calls last `hold` decisions, contacts run out.
    fn simulate(
        p: &mut Pacer,
        contacts: &mut BTreeMap<String, u32>,
        decisions: usize,
        hold: usize,
    ) -> Vec<String> {
        let t0 = Instant::now();
        let mut live: Vec<(usize, String)> = Vec::new();
        let mut starts = Vec::new();
        for step in 0..decisions {
            let now = t0 + Duration::from_millis(step as u64 * 10);
            live.retain(|(at, c)| {
                let done = step >= at + hold;
                if done {
                    p.ended(c, None);
                }
                !done
            });
            if let Next::Dial { campaign } = p.next(now) {
                let left = contacts.get_mut(&campaign).expect("known campaign");
                if *left == 0 {
                    p.release(&campaign);
                    p.set_ready(&campaign, false);
                } else {
                    *left -= 1;
                    p.started(&campaign, None, now);
                    live.push((step, campaign.clone()));
                    starts.push(campaign);
                }
            }
        }
        starts
    }

    #[test]
    fn a_tenant_with_10_contacts_is_not_starved_by_one_with_10000() {
        let mut p = Pacer::new(4);
        p.set_campaign("big", campaign("large", 1, 100, f64::INFINITY));
        p.set_campaign("small", campaign("little", 1, 100, f64::INFINITY));
        let mut contacts = BTreeMap::from([("big".to_owned(), 10_000), ("small".to_owned(), 10)]);
        let starts = simulate(&mut p, &mut contacts, 200, 3);
        let first_20: Vec<&str> = starts.iter().take(20).map(String::as_str).collect();
        assert_eq!(
            first_20.iter().filter(|c| **c == "small").count(),
            10,
            "the small tenant's 10 contacts all start among the first 20 starts: {first_20:?}"
        );
        assert!(first_20.contains(&"big"), "{first_20:?}");
        assert_eq!(contacts["small"], 0);
        // Once the small tenant is done, the big one gets every slot.
        assert!(starts[20..].iter().all(|c| c == "big"));
        assert!(contacts["big"] < 10_000 - 20);
    }

    #[test]
    fn priority_three_gets_three_times_the_starts_of_priority_one() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000);
        p.set_campaign("hi", campaign("T", 3, 1_000, f64::INFINITY));
        p.set_campaign("lo", campaign("T", 1, 1_000, f64::INFINITY));
        let mut counts = BTreeMap::<String, u32>::new();
        let mut order = String::new();
        for _ in 0..400 {
            let c = dial(p.next(t0));
            p.started(&c, None, t0);
            p.ended(&c, None);
            order.push(if c == "hi" { 'H' } else { 'l' });
            *counts.entry(c).or_default() += 1;
        }
        assert_eq!(counts["hi"], 300, "{counts:?}");
        assert_eq!(counts["lo"], 100, "{counts:?}");
        assert!(order.starts_with("HHHlHHHl"), "{order}");
    }

    #[test]
    fn tenants_share_equally_whatever_their_campaigns_priorities() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000);
        p.set_campaign("a1", campaign("A", 5, 1_000, f64::INFINITY));
        p.set_campaign("a2", campaign("A", 5, 1_000, f64::INFINITY));
        p.set_campaign("b1", campaign("B", 1, 1_000, f64::INFINITY));
        let mut by_tenant = BTreeMap::<&str, u32>::new();
        for _ in 0..100 {
            let c = dial(p.next(t0));
            p.started(&c, None, t0);
            p.ended(&c, None);
            *by_tenant
                .entry(if c == "b1" { "B" } else { "A" })
                .or_default() += 1;
        }
        assert_eq!(by_tenant["A"], 50);
        assert_eq!(by_tenant["B"], 50);
    }

    #[test]
    fn a_campaign_not_ready_is_skipped_until_ready_again() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10);
        p.set_campaign("a", campaign("T", 1, 10, f64::INFINITY));
        p.set_campaign("b", campaign("T", 1, 10, f64::INFINITY));
        p.set_ready("a", false);
        for _ in 0..3 {
            let c = dial(p.next(t0));
            assert_eq!(c, "b");
            p.release(&c);
        }
        p.set_ready("b", false);
        assert_eq!(p.next(t0), Next::Idle);
        p.set_ready("a", true);
        assert_eq!(dial(p.next(t0)), "a");
    }

    #[test]
    fn trunk_limits_hold_and_a_campaign_needs_a_trunk_with_room() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100);
        for t in ["k1", "k2"] {
            p.set_trunk(
                t,
                TrunkLimits {
                    max_concurrent: Some(1),
                    max_cps: None,
                },
            );
        }
        let mut c = campaign("T", 1, 10, f64::INFINITY);
        c.trunks = vec!["k1".to_owned(), "k2".to_owned()];
        p.set_campaign("a", c);
        assert_eq!(dial(p.next(t0)), "a");
        assert_eq!(
            p.reserved_trunk("a"),
            Some("k1"),
            "the first trunk in order"
        );
        assert!(!p.trunk_allows("k1", t0), "the reservation holds k1");
        assert!(p.can_start("a", "k1", t0), "a holds k1 itself");
        p.started("a", Some("k1"), t0);
        assert_eq!(dial(p.next(t0)), "a");
        assert_eq!(p.reserved_trunk("a"), Some("k2"));
        p.started("a", Some("k2"), t0);
        assert_eq!(
            p.next(t0),
            Next::Idle,
            "both trunks are full though the campaign allows 10"
        );
        // A campaign without trunks is not held back by them.
        p.set_campaign("free", campaign("T", 1, 10, f64::INFINITY));
        assert_eq!(dial(p.next(t0)), "free");
        p.release("free");
        p.remove_campaign("free");
        p.ended("a", Some("k2"));
        assert_eq!(p.trunk_live("k2"), 0);
        assert_eq!(dial(p.next(t0)), "a");
        assert_eq!(p.reserved_trunk("a"), Some("k2"));
        assert_eq!(p.trunk_live("k2"), 1, "a reservation counts on its trunk");
        assert_eq!(p.next(t0), Next::Idle);
    }

    #[test]
    fn a_reservation_moves_to_another_trunk_only_when_that_trunk_has_room() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100);
        for t in ["k1", "k2"] {
            p.set_trunk(
                t,
                TrunkLimits {
                    max_concurrent: Some(1),
                    max_cps: None,
                },
            );
        }
        let mut c = campaign("T", 1, 10, f64::INFINITY);
        c.trunks = vec!["k1".to_owned(), "k2".to_owned()];
        p.set_campaign("a", c);
        assert_eq!(dial(p.next(t0)), "a"); // holds k1
        assert!(p.can_start("a", "k2", t0), "k2 is free");
        p.started("a", Some("k2"), t0); // the contact's failover trunk
        assert_eq!((p.trunk_live("k1"), p.trunk_live("k2")), (0, 1));
        assert_eq!(dial(p.next(t0)), "a");
        assert_eq!(p.reserved_trunk("a"), Some("k1"));
        assert!(!p.can_start("a", "k2", t0), "k2 is full");
    }

    #[test]
    fn trunk_calls_per_second_are_enforced_across_campaigns() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100);
        p.set_trunk(
            "k",
            TrunkLimits {
                max_concurrent: None,
                max_cps: Some(1.0),
            },
        );
        for name in ["a", "b"] {
            let mut c = campaign(name, 1, 10, f64::INFINITY);
            c.trunks = vec!["k".to_owned()];
            p.set_campaign(name, c);
        }
        let c = dial(p.next(t0));
        assert_eq!(
            p.next(t0),
            Next::Wait(t0 + secs(1.0)),
            "the reservation holds the trunk's token"
        );
        p.started(&c, Some("k"), t0);
        assert_eq!(p.next(t0 + secs(0.5)), Next::Wait(t0 + secs(1.0)));
        let d = dial(p.next(t0 + secs(1.0)));
        assert_ne!(c, d, "the other tenant's turn");
    }

    #[test]
    fn a_rate_below_one_call_per_second_spaces_starts() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10);
        p.set_campaign("slow", campaign("T", 1, 10, 0.5));
        assert_eq!(dial(p.next(t0)), "slow");
        p.started("slow", None, t0);
        assert_eq!(p.next(t0), Next::Wait(t0 + secs(2.0)));
        assert_eq!(p.next(t0 + secs(1.999)), Next::Wait(t0 + secs(2.0)));
        assert_eq!(dial(p.next(t0 + secs(2.0))), "slow");
        // Started late: the next token is 2 s after the actual start.
        p.started("slow", None, t0 + secs(2.5));
        assert_eq!(p.next(t0 + secs(2.5)), Next::Wait(t0 + secs(4.5)));
        // A tenant's rate below 1 too.
        p.set_campaign("fast", campaign("U", 1, 10, f64::INFINITY));
        p.set_tenant(
            "U",
            TenantLimits {
                max_concurrent: None,
                max_cps: Some(0.25),
            },
        );
        assert_eq!(dial(p.next(t0 + secs(3.0))), "fast");
        p.started("fast", None, t0 + secs(3.0));
        assert_eq!(p.next(t0 + secs(3.0)), Next::Wait(t0 + secs(4.5)));
        assert_eq!(dial(p.next(t0 + secs(4.5))), "slow");
        p.release("slow");
        p.set_ready("slow", false);
        assert_eq!(p.next(t0 + secs(4.5)), Next::Wait(t0 + secs(7.0)));
    }

    #[test]
    fn a_released_reservation_spends_no_token() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10);
        p.set_campaign("a", campaign("T", 1, 10, 1.0));
        assert_eq!(dial(p.next(t0)), "a");
        assert_eq!(p.next(t0), Next::Wait(t0 + secs(1.0)), "held");
        p.release("a");
        assert_eq!(p.live("a"), 0);
        assert_eq!(dial(p.next(t0)), "a", "the token was not spent");
    }

    #[test]
    fn concurrency_blocks_with_idle_and_calls_per_second_with_wait() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10);
        p.set_campaign("a", campaign("T", 1, 1, 1.0));
        assert_eq!(dial(p.next(t0)), "a");
        p.started("a", None, t0);
        assert_eq!(p.next(t0), Next::Idle, "full and out of tokens: Idle");
        p.ended("a", None);
        assert_eq!(p.next(t0), Next::Wait(t0 + secs(1.0)));
        // A second campaign blocked only by concurrency does not hide the first's refill.
        p.set_campaign("b", campaign("T", 1, 0, 100.0));
        assert_eq!(p.next(t0), Next::Wait(t0 + secs(1.0)));
        // A rate of 0 (or NaN, or negative) never starts: Idle, not a Wait.
        for bad in [0.0, -1.0, f64::NAN] {
            p.set_campaign("a", campaign("T", 1, 1, bad));
            assert_eq!(p.next(t0 + secs(5.0)), Next::Idle, "rate {bad}");
        }
        let mut p = Pacer::new(0);
        p.set_campaign("a", campaign("T", 1, 1, 1.0));
        assert_eq!(p.next(t0), Next::Idle, "a system limit of 0");
    }

    #[test]
    fn lowering_limits_below_live_calls_stops_starts_until_below() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100);
        p.set_campaign("a", campaign("T", 1, 5, f64::INFINITY));
        for _ in 0..5 {
            assert_eq!(dial(p.next(t0)), "a");
            p.started("a", None, t0);
        }
        p.set_campaign("a", campaign("T", 1, 2, f64::INFINITY));
        for _ in 0..3 {
            assert_eq!(p.next(t0), Next::Idle);
            p.ended("a", None);
        }
        assert_eq!(p.live("a"), 2);
        assert_eq!(p.next(t0), Next::Idle, "2 live, limit 2");
        p.ended("a", None);
        assert_eq!(dial(p.next(t0)), "a");
        p.started("a", None, t0);
        // The tenant's limit likewise.
        p.set_campaign("a", campaign("T", 1, 100, f64::INFINITY));
        p.set_tenant(
            "T",
            TenantLimits {
                max_concurrent: Some(1),
                max_cps: None,
            },
        );
        assert_eq!(p.next(t0), Next::Idle, "2 live, tenant limit 1");
        p.ended("a", None);
        assert_eq!(p.next(t0), Next::Idle, "1 live, tenant limit 1");
        p.ended("a", None);
        assert_eq!(dial(p.next(t0)), "a");
    }

    #[test]
    fn lowering_a_rate_pushes_the_next_start_out_of_every_window() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100);
        p.set_campaign("a", campaign("T", 1, 100, 10.0));
        for i in 0..5 {
            let now = t0 + secs(0.1 * f64::from(i));
            assert_eq!(dial(p.next(now)), "a");
            p.started("a", None, now);
        }
        // Last start at 0.4 s; at 2 calls/s a start at 0.9 s would make 6 in one second.
        p.set_campaign("a", campaign("T", 1, 100, 2.0));
        assert_eq!(p.next(t0 + secs(0.5)), Next::Wait(t0 + secs(1.4)));
        // Raising it again right away keeps the push (the lowered window still holds).
        p.set_campaign("a", campaign("T", 1, 100, 5.0));
        assert_eq!(p.next(t0 + secs(0.5)), Next::Wait(t0 + secs(1.4)));
        p.started("a", None, t0 + secs(1.4));
        // After a start under the new rate, raising it shortens the spacing at once.
        p.set_campaign("a", campaign("T", 1, 100, 20.0));
        assert_eq!(p.next(t0 + secs(1.4)), Next::Wait(t0 + secs(1.45)));
    }

    #[test]
    fn a_removed_campaigns_live_calls_count_until_they_end() {
        let t0 = Instant::now();
        let mut p = Pacer::new(2);
        p.set_campaign("a", campaign("T", 1, 10, f64::INFINITY));
        p.set_campaign("b", campaign("T", 1, 10, f64::INFINITY));
        let x = dial(p.next(t0));
        p.started(&x, None, t0);
        let y = dial(p.next(t0));
        assert_ne!(x, y);
        p.remove_campaign("a");
        p.remove_campaign("b");
        p.set_campaign("c", campaign("T", 1, 10, f64::INFINITY));
        assert_eq!(
            p.next(t0),
            Next::Idle,
            "a started and a reserved call still count"
        );
        p.started(&y, None, t0); // a reservation of a removed campaign may still start
        p.ended("a", None);
        assert_eq!(dial(p.next(t0)), "c");
        assert_eq!(p.next(t0), Next::Idle);
        p.ended("b", None);
        assert_eq!(dial(p.next(t0)), "c");
        assert_eq!(p.live("a"), 0);
    }

    #[test]
    fn a_campaign_paused_and_resumed_keeps_its_spacing() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10);
        p.set_campaign("a", campaign("T", 1, 10, 1.0));
        assert_eq!(dial(p.next(t0)), "a");
        p.started("a", None, t0);
        p.ended("a", None);
        p.remove_campaign("a");
        assert_eq!(p.next(t0 + secs(0.1)), Next::Idle);
        p.set_campaign("a", campaign("T", 1, 10, 1.0));
        assert_eq!(p.next(t0 + secs(0.2)), Next::Wait(t0 + secs(1.0)));
    }

    #[test]
    fn a_campaign_moved_to_another_tenant_takes_its_live_calls_along() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10);
        let one = TenantLimits {
            max_concurrent: Some(1),
            max_cps: None,
        };
        p.set_tenant("A", one);
        p.set_tenant("B", one);
        p.set_campaign("a", campaign("A", 1, 10, f64::INFINITY));
        assert_eq!(dial(p.next(t0)), "a");
        p.started("a", None, t0);
        p.set_campaign("a", campaign("B", 1, 10, f64::INFINITY));
        assert_eq!((p.tenant_live("A"), p.tenant_live("B")), (0, 1));
        assert_eq!(p.next(t0), Next::Idle, "B is at its limit now");
        p.set_campaign("other", campaign("A", 1, 10, f64::INFINITY));
        assert_eq!(dial(p.next(t0)), "other", "A has room again");
        p.ended("a", None);
        assert_eq!((p.tenant_live("A"), p.tenant_live("B")), (1, 0));
    }

    #[test]
    fn misuse_never_panics_and_counts_stay_balanced() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1);
        p.release("nobody");
        p.ended("nobody", Some("k"));
        p.started("nobody", None, t0);
        p.set_ready("nobody", true);
        p.remove_campaign("nobody");
        p.set_campaign("a", campaign("T", 0, 1, f64::INFINITY));
        p.ended("a", None); // nothing started
        p.release("a"); // nothing reserved
        assert_eq!(p.system_live(), 0);
        p.started("a", Some("k"), t0); // without a reservation: counted all the same
        assert_eq!((p.system_live(), p.live("a"), p.trunk_live("k")), (1, 1, 1));
        assert_eq!(p.next(t0), Next::Idle);
        p.ended("a", Some("k"));
        assert_eq!((p.system_live(), p.live("a"), p.trunk_live("k")), (0, 0, 0));
        assert_eq!(dial(p.next(t0)), "a", "priority 0 counts as 1");
    }

    /// A measurement, not a check: `cargo test --lib campaign::pacing::tests::measure -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement"]
    fn measure_decisions_per_second() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100_000);
        for t in 0..50 {
            for c in 0..20 {
                let mut l = campaign(&format!("t{t}"), 1 + c % 3, 100, f64::INFINITY);
                l.trunks = vec![format!("k{}", c % 4)];
                p.set_campaign(&format!("t{t}c{c}"), l);
            }
        }
        let n = 100_000;
        let mut live = std::collections::VecDeque::new();
        let start = Instant::now();
        for i in 0..n {
            let now = t0 + Duration::from_micros(i);
            let c = dial(p.next(now));
            let k = p.reserved_trunk(&c).map(str::to_owned);
            p.started(&c, k.as_deref(), now);
            live.push_back((c, k));
            if live.len() > 500
                && let Some((c, k)) = live.pop_front()
            {
                p.ended(&c, k.as_deref());
            }
        }
        let took = start.elapsed();
        println!(
            "1000 campaigns of 50 tenants, 500 live: {n} next+started+ended in {took:?} ({:.0}/s, {:.1} µs each)",
            n as f64 / took.as_secs_f64(),
            took.as_secs_f64() * 1e6 / n as f64
        );
    }

    // ---- Property tests: a model worker drives the pacer through random operations and
    // counts, itself, every live call and every start against every limit.

    use proptest::prelude::*;

    const TENANTS: [&str; 3] = ["T0", "T1", "T2"];
    const TRUNKS: [&str; 3] = ["K0", "K1", "K2"];
    const CAMPAIGNS: [&str; 5] = ["C0", "C1", "C2", "C3", "C4"];
    const RATES: [f64; 9] = [0.0, 0.3, 0.5, 1.0, 2.0, 3.0, 3.5, 10.0, f64::INFINITY];

    #[derive(Debug, Clone)]
    enum Op {
        Next,
        Start {
            pick: usize,
            trunk: usize,
        },
        Release {
            pick: usize,
        },
        End {
            pick: usize,
        },
        Advance {
            ms: u64,
        },
        /// To the instant the last `Wait` named (starts land exactly on token refills).
        AdvanceToWait,
        Tenant {
            t: usize,
            conc: Option<u32>,
            cps: Option<usize>,
        },
        Trunk {
            k: usize,
            conc: Option<u32>,
            cps: Option<usize>,
        },
        Campaign {
            c: usize,
            conc: u32,
            cps: usize,
            priority: u32,
        },
        Remove {
            c: usize,
        },
        /// The campaign moves to another tenant.
        Move {
            c: usize,
            t: usize,
        },
        /// The campaign's trunks change.
        Trunks {
            c: usize,
            trunks: Vec<usize>,
        },
        Ready {
            c: usize,
            ready: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => Just(Op::Next),
            5 => (any::<usize>(), any::<usize>()).prop_map(|(pick, trunk)| Op::Start { pick, trunk }),
            1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
            4 => any::<usize>().prop_map(|pick| Op::End { pick }),
            3 => (0u64..1_500).prop_map(|ms| Op::Advance { ms }),
            3 => Just(Op::AdvanceToWait),
            1 => (0..3usize, proptest::option::of(0u32..4), proptest::option::of(0..RATES.len()))
                .prop_map(|(t, conc, cps)| Op::Tenant { t, conc, cps }),
            1 => (0..3usize, proptest::option::of(0u32..4), proptest::option::of(0..RATES.len()))
                .prop_map(|(k, conc, cps)| Op::Trunk { k, conc, cps }),
            1 => (0..5usize, 0u32..5, 0..RATES.len(), 0u32..4)
                .prop_map(|(c, conc, cps, priority)| Op::Campaign { c, conc, cps, priority }),
            1 => (0..5usize).prop_map(|c| Op::Remove { c }),
            1 => (0..5usize, 0..3usize).prop_map(|(c, t)| Op::Move { c, t }),
            1 => (0..5usize, proptest::collection::vec(0..3usize, 0..3))
                .prop_map(|(c, trunks)| Op::Trunks { c, trunks }),
            1 => (0..5usize, any::<bool>()).prop_map(|(c, ready)| Op::Ready { c, ready }),
        ]
    }

    #[derive(Debug, Clone)]
    struct Setup {
        system: u32,
        tenant_of: [usize; 5],
        trunks_of: [Vec<usize>; 5],
    }

    fn setup() -> impl Strategy<Value = Setup> {
        let trunks = || proptest::collection::vec(0..3usize, 0..3);
        (
            1u32..7,
            [0..3usize, 0..3usize, 0..3usize, 0..3usize, 0..3usize],
            [trunks(), trunks(), trunks(), trunks(), trunks()],
        )
            .prop_map(|(system, tenant_of, trunks_of)| Setup {
                system,
                tenant_of,
                trunks_of,
            })
    }

    /// The model's view: limits in force, live calls, starts.
    #[derive(Debug, Default)]
    struct Model {
        tenant_conc: BTreeMap<String, u32>,
        tenant_cps: BTreeMap<String, f64>,
        trunk_conc: BTreeMap<String, u32>,
        trunk_cps: BTreeMap<String, f64>,
        campaign: BTreeMap<String, CampaignLimits>,
        active: BTreeMap<String, bool>,
        ready: BTreeMap<String, bool>,
        /// Outstanding reservations: (campaign, the trunk it holds), oldest first.
        reserved: Vec<(String, Option<String>)>,
        /// Started calls.
        started: Vec<(String, Option<String>)>,
        /// Starts per bucket ("c:", "t:", "k:" + name).
        starts: BTreeMap<String, Vec<Instant>>,
    }

    impl Model {
        fn calls(&self) -> impl Iterator<Item = &(String, Option<String>)> {
            self.reserved.iter().chain(&self.started)
        }
        fn system_live(&self) -> u32 {
            self.calls().count() as u32
        }
        fn campaign_live(&self, c: &str) -> u32 {
            self.calls().filter(|(x, _)| x == c).count() as u32
        }
        fn tenant_live(&self, t: &str) -> u32 {
            self.calls()
                .filter(|(x, _)| self.campaign[x].tenant == t)
                .count() as u32
        }
        fn trunk_live(&self, k: &str) -> u32 {
            self.calls()
                .filter(|(_, x)| x.as_deref() == Some(k))
                .count() as u32
        }
        fn trunk_room(&self, k: &str) -> bool {
            self.trunk_conc
                .get(k)
                .is_none_or(|m| self.trunk_live(k) < *m)
        }
        /// Whether nothing but waiting for a token stands between `c` and a start.
        /// With `now`: whether `c` could start now whatever the buckets' state, because every
        /// calls/s limit on its way is unlimited.
        fn could_start(&self, c: &str, system: u32, now: bool) -> bool {
            let l = &self.campaign[c];
            let never = |r: Option<&f64>| {
                r.is_some_and(|r| r.is_nan() || *r <= 0.0 || (now && r.is_finite()))
            };
            self.active[c]
                && self.ready[c]
                && self.system_live() < system
                && self.campaign_live(c) < l.max_concurrent
                && self
                    .tenant_conc
                    .get(&l.tenant)
                    .is_none_or(|m| self.tenant_live(&l.tenant) < *m)
                && !never(Some(&l.max_cps))
                && !never(self.tenant_cps.get(&l.tenant))
                && (l.trunks.is_empty()
                    || l.trunks
                        .iter()
                        .any(|k| self.trunk_room(k) && !never(self.trunk_cps.get(k))))
        }
        /// Checks every window ending at the latest start of `bucket` against `rate`.
        fn check_rate(&self, bucket: &str, rate: Option<f64>) -> Result<(), TestCaseError> {
            let Some(rate) = rate else { return Ok(()) };
            if rate.is_infinite() {
                return Ok(());
            }
            let starts = &self.starts[bucket];
            let s = *starts.last().expect("a start was recorded");
            prop_assert!(rate > 0.0, "{bucket} started at a rate of {rate}");
            let window =
                Duration::from_secs(1).max(Duration::from_nanos((1e9 / rate).ceil() as u64));
            let allowed = if rate >= 1.0 { rate.ceil() as usize } else { 1 };
            let n = starts.iter().filter(|x| **x + window > s).count();
            prop_assert!(
                n <= allowed,
                "{bucket}: {n} starts within {window:?} at {rate}/s (allowed {allowed}): {starts:?}"
            );
            Ok(())
        }
    }

    fn run(setup: &Setup, ops: &[Op]) -> Result<Vec<Next>, TestCaseError> {
        let t0 = Instant::now();
        let mut now = t0;
        let mut p = Pacer::new(setup.system);
        let mut m = Model::default();
        let mut decisions = Vec::new();
        let mut last_wait = None;
        for (i, c) in CAMPAIGNS.iter().enumerate() {
            let limits = CampaignLimits {
                tenant: TENANTS[setup.tenant_of[i]].to_owned(),
                priority: 1,
                max_concurrent: 2,
                max_cps: 2.0,
                trunks: setup.trunks_of[i]
                    .iter()
                    .map(|k| TRUNKS[*k].to_owned())
                    .collect(),
            };
            p.set_campaign(c, limits.clone());
            m.campaign.insert(c.to_string(), limits);
            m.active.insert(c.to_string(), true);
            m.ready.insert(c.to_string(), true);
        }
        for op in ops {
            // Rates only change while no reservation is outstanding (a reservation granted
            // under one rate may start under it; see the module docs).
            let rates_may_change = m.reserved.is_empty();
            match op.clone() {
                Op::Next => {
                    let before: Vec<u32> = TRUNKS.iter().map(|k| p.trunk_live(k)).collect();
                    let next = p.next(now);
                    decisions.push(next.clone());
                    match next {
                        Next::Dial { campaign } => {
                            let held: Vec<&str> = TRUNKS
                                .iter()
                                .zip(&before)
                                .filter(|(k, b)| p.trunk_live(k) == **b + 1)
                                .map(|(k, _)| *k)
                                .collect();
                            prop_assert!(held.len() <= 1, "{held:?}");
                            let trunk = held.first().map(|k| k.to_string());
                            let l = m.campaign[&campaign].clone();
                            prop_assert!(m.active[&campaign] && m.ready[&campaign], "{campaign}");
                            prop_assert_eq!(trunk.is_none(), l.trunks.is_empty());
                            if let Some(k) = &trunk {
                                prop_assert!(l.trunks.contains(k));
                            }
                            m.reserved.push((campaign.clone(), trunk.clone()));
                            prop_assert!(m.system_live() <= setup.system);
                            prop_assert!(m.campaign_live(&campaign) <= l.max_concurrent);
                            if let Some(max) = m.tenant_conc.get(&l.tenant) {
                                prop_assert!(m.tenant_live(&l.tenant) <= *max);
                            }
                            if let Some(k) = &trunk
                                && let Some(max) = m.trunk_conc.get(k)
                            {
                                prop_assert!(m.trunk_live(k) <= *max);
                            }
                        }
                        Next::Wait(at) => {
                            prop_assert!(at > now);
                            last_wait = Some(at);
                            for c in CAMPAIGNS {
                                prop_assert!(
                                    !m.could_start(c, setup.system, true),
                                    "Wait though {c} could start now: {m:?}"
                                );
                            }
                        }
                        Next::Idle => {
                            for c in CAMPAIGNS {
                                prop_assert!(
                                    !m.could_start(c, setup.system, false),
                                    "Idle though {c} could start once a token refills: {m:?}"
                                );
                            }
                        }
                    }
                }
                Op::Start { pick, trunk } => {
                    if m.reserved.is_empty() {
                        continue;
                    }
                    let (c, _) = m.reserved[pick % m.reserved.len()].clone();
                    let trunks = m.campaign[&c].trunks.clone();
                    let on = if trunks.is_empty() {
                        None
                    } else {
                        let wanted = trunks[trunk % trunks.len()].clone();
                        if p.can_start(&c, &wanted, now) {
                            Some(wanted)
                        } else if let Some(held) = p.reserved_trunk(&c).map(str::to_owned) {
                            prop_assert!(p.can_start(&c, &held, now), "{c} holds {held}");
                            Some(held)
                        } else {
                            // Reserved before the campaign had trunks, and the wanted one is
                            // full: the worker gives the slot back.
                            let newest = m.reserved.iter().rposition(|(x, _)| *x == c);
                            m.reserved.remove(newest.expect("c has a reservation"));
                            p.release(&c);
                            continue;
                        }
                    };
                    // The pacer uses the reservation holding `on`, else the oldest.
                    let index = m
                        .reserved
                        .iter()
                        .position(|(x, k)| *x == c && k.is_some() && *k == on)
                        .or_else(|| m.reserved.iter().position(|(x, _)| *x == c))
                        .expect("c has a reservation");
                    let (_, held) = m.reserved.remove(index);
                    m.started.push((c.clone(), on.clone()));
                    p.started(&c, on.as_deref(), now);
                    if let Some(k) = &on
                        && held != on
                        && let Some(max) = m.trunk_conc.get(k)
                    {
                        prop_assert!(m.trunk_live(k) <= *max, "moved onto a full trunk {k}");
                    }
                    let tenant = m.campaign[&c].tenant.clone();
                    let mut buckets = vec![
                        (format!("c:{c}"), Some(m.campaign[&c].max_cps)),
                        (format!("t:{tenant}"), m.tenant_cps.get(&tenant).copied()),
                    ];
                    if let Some(k) = &on {
                        buckets.push((format!("k:{k}"), m.trunk_cps.get(k).copied()));
                    }
                    for (b, rate) in buckets {
                        m.starts.entry(b.clone()).or_default().push(now);
                        m.check_rate(&b, rate)?;
                    }
                }
                Op::Release { pick } => {
                    if m.reserved.is_empty() {
                        continue;
                    }
                    let (c, _) = m.reserved[pick % m.reserved.len()].clone();
                    let newest = m
                        .reserved
                        .iter()
                        .rposition(|(x, _)| *x == c)
                        .expect("found");
                    m.reserved.remove(newest);
                    p.release(&c);
                }
                Op::End { pick } => {
                    if m.started.is_empty() {
                        continue;
                    }
                    let (c, k) = m.started.remove(pick % m.started.len());
                    p.ended(&c, k.as_deref());
                }
                Op::Advance { ms } => now += Duration::from_millis(ms),
                Op::AdvanceToWait => {
                    if let Some(at) = last_wait.take() {
                        now = now.max(at);
                    }
                }
                Op::Tenant { t, conc, cps } => {
                    let name = TENANTS[t];
                    let mut cps = cps.map(|i| RATES[i]);
                    if !rates_may_change {
                        cps = m.tenant_cps.get(name).copied();
                    }
                    p.set_tenant(
                        name,
                        TenantLimits {
                            max_concurrent: conc,
                            max_cps: cps,
                        },
                    );
                    set(&mut m.tenant_conc, name, conc);
                    set(&mut m.tenant_cps, name, cps);
                }
                Op::Trunk { k, conc, cps } => {
                    let name = TRUNKS[k];
                    let mut cps = cps.map(|i| RATES[i]);
                    if !rates_may_change {
                        cps = m.trunk_cps.get(name).copied();
                    }
                    p.set_trunk(
                        name,
                        TrunkLimits {
                            max_concurrent: conc,
                            max_cps: cps,
                        },
                    );
                    set(&mut m.trunk_conc, name, conc);
                    set(&mut m.trunk_cps, name, cps);
                }
                Op::Campaign {
                    c,
                    conc,
                    cps,
                    priority,
                } => {
                    let name = CAMPAIGNS[c];
                    let mut l = m.campaign[name].clone();
                    l.max_concurrent = conc;
                    if rates_may_change {
                        l.max_cps = RATES[cps];
                    }
                    l.priority = priority;
                    p.set_campaign(name, l.clone());
                    m.campaign.insert(name.to_owned(), l);
                    if !m.active[name] {
                        m.ready.insert(name.to_owned(), true);
                    }
                    m.active.insert(name.to_owned(), true);
                }
                Op::Move { c, t } => {
                    // Only between reservations (a reservation holds its tenant's bucket).
                    if !rates_may_change {
                        continue;
                    }
                    let name = CAMPAIGNS[c];
                    let mut l = m.campaign[name].clone();
                    l.tenant = TENANTS[t].to_owned();
                    p.set_campaign(name, l.clone());
                    m.campaign.insert(name.to_owned(), l);
                    if !m.active[name] {
                        m.ready.insert(name.to_owned(), true);
                    }
                    m.active.insert(name.to_owned(), true);
                }
                Op::Trunks { c, trunks } => {
                    let name = CAMPAIGNS[c];
                    let mut l = m.campaign[name].clone();
                    l.trunks = trunks.iter().map(|k| TRUNKS[*k].to_owned()).collect();
                    p.set_campaign(name, l.clone());
                    m.campaign.insert(name.to_owned(), l);
                    if !m.active[name] {
                        m.ready.insert(name.to_owned(), true);
                    }
                    m.active.insert(name.to_owned(), true);
                }
                Op::Remove { c } => {
                    p.remove_campaign(CAMPAIGNS[c]);
                    m.active.insert(CAMPAIGNS[c].to_owned(), false);
                }
                Op::Ready { c, ready } => {
                    p.set_ready(CAMPAIGNS[c], ready);
                    m.ready.insert(CAMPAIGNS[c].to_owned(), ready);
                }
            }
            // The pacer's own counts agree with the model's after every operation.
            prop_assert_eq!(p.system_live(), m.system_live());
            for c in CAMPAIGNS {
                prop_assert_eq!(p.live(c), m.campaign_live(c), "campaign {}", c);
            }
            for t in TENANTS {
                prop_assert_eq!(p.tenant_live(t), m.tenant_live(t), "tenant {}", t);
            }
            for k in TRUNKS {
                prop_assert_eq!(p.trunk_live(k), m.trunk_live(k), "trunk {}", k);
            }
        }
        Ok(decisions)
    }

    fn set<V>(map: &mut BTreeMap<String, V>, key: &str, value: Option<V>) {
        match value {
            Some(v) => map.insert(key.to_owned(), v),
            None => map.remove(key),
        };
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn no_limit_is_ever_exceeded_whatever_the_order_of_events(
            setup in setup(),
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            run(&setup, &ops)?;
        }

        #[test]
        fn the_same_inputs_give_the_same_decisions(
            setup in setup(),
            ops in proptest::collection::vec(op(), 1..100),
        ) {
            // Instants differ between runs; compare what was decided, with waits as offsets.
            let shape = |d: Vec<Next>| -> Vec<String> {
                d.into_iter()
                    .map(|n| match n {
                        Next::Dial { campaign } => campaign,
                        Next::Wait(_) => "wait".to_owned(),
                        Next::Idle => "idle".to_owned(),
                    })
                    .collect()
            };
            let a = shape(run(&setup, &ops)?);
            let b = shape(run(&setup, &ops)?);
            prop_assert_eq!(a, b);
        }
    }
}
