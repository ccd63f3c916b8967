//! Counters for `GET /metrics` (Prometheus text exposition format 0.0.4).
//!
//! [`Metrics`] holds what the process counts itself (stored events, calls by outcome, RTP
//! totals from final events, webhook deliveries, store append latency, pump errors) in atomics;
//! what other parts own (live calls, SIP counters, the outbox backlog) is read at scrape time
//! and passed to [`Metrics::render`] as a [`Gauges`].
//!
//! Cardinality is bounded on purpose: outcomes are a fixed list, SIP methods outside the
//! standard ones render as `other`, and at most [`MAX_KINDS`] event kinds get their own series
//! (later ones count under `other`), so a misbehaving peer cannot grow the scrape without end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::net::sip::SipStats;
use crate::store::{Appended, StoredEvent};

/// The call outcomes (the engine's `Outcome` names), then `other` for anything unknown.
const OUTCOMES: [&str; 9] = [
    "answered",
    "busy",
    "no_answer",
    "rejected",
    "invalid_number",
    "network_error",
    "cancelled",
    "failed",
    "other",
];

/// Upper bounds (seconds) of the store append latency histogram buckets (`+Inf` is implied).
const APPEND_BUCKETS: [f64; 11] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Upper bounds (events) of the pump's batch size histogram (`+Inf` is implied).
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How many distinct event kinds get their own `callplane_events_total` series.
pub const MAX_KINDS: usize = 64;

/// SIP methods with their own series; anything else is `other`.
const SIP_METHODS: [&str; 14] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
];

/// What happened to one webhook delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The receiver answered 2xx.
    Delivered,
    /// The attempt failed and the delivery will be retried.
    Failed,
    /// The attempt failed and it was the last: dead-lettered.
    Dead,
}

/// The process's counters.
#[derive(Debug)]
pub struct Metrics {
    calls_by_outcome: [AtomicU64; OUTCOMES.len()],
    events_by_kind: Mutex<BTreeMap<String, u64>>,
    rtp_packets_in: AtomicU64,
    rtp_packets_out: AtomicU64,
    rtp_lost_in: AtomicU64,
    deliveries_delivered: AtomicU64,
    deliveries_failed: AtomicU64,
    deliveries_dead: AtomicU64,
    /// The last backlog the dispatcher saw (-1: not measured yet).
    webhook_backlog: AtomicI64,
    append_buckets: [AtomicU64; APPEND_BUCKETS.len()],
    append_count: AtomicU64,
    append_sum_us: AtomicU64,
    append_errors: AtomicU64,
    pump_errors: AtomicU64,
    /// Group commits of the pump: latency (seconds) and size (events).
    commit_seconds: Histogram,
    batch_events: Histogram,
    pump_dropped: AtomicU64,
    /// The trunk tasks' counters (registrations and OPTIONS pings, by trunk).
    trunks: Arc<crate::trunk::TrunkCounters>,
}

/// A cumulative histogram over fixed bounds (the sum is kept in millionths of the unit).
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_millionths: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_millionths: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: f64) {
        for (bucket, bound) in self.buckets.iter().zip(self.bounds) {
            if value <= *bound {
                add(bucket, 1);
            }
        }
        add(&self.count, 1);
        add(&self.sum_millionths, (value * 1e6) as u64);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, "histogram", help);
        for (bound, c) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_millionths.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            calls_by_outcome: Default::default(),
            events_by_kind: Mutex::default(),
            rtp_packets_in: AtomicU64::new(0),
            rtp_packets_out: AtomicU64::new(0),
            rtp_lost_in: AtomicU64::new(0),
            deliveries_delivered: AtomicU64::new(0),
            deliveries_failed: AtomicU64::new(0),
            deliveries_dead: AtomicU64::new(0),
            webhook_backlog: AtomicI64::new(-1),
            append_buckets: Default::default(),
            append_count: AtomicU64::new(0),
            append_sum_us: AtomicU64::new(0),
            append_errors: AtomicU64::new(0),
            pump_errors: AtomicU64::new(0),
            commit_seconds: Histogram::new(&APPEND_BUCKETS),
            batch_events: Histogram::new(&BATCH_BUCKETS),
            pump_dropped: AtomicU64::new(0),
            trunks: Arc::default(),
        }
    }
}

/// Values read from their owners at scrape time (`None`: not available, the series is left out).
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// [`crate::engine::EngineHandle::active_calls`].
    pub active_calls: Option<usize>,
    /// [`crate::engine::EngineHandle::sip_stats`].
    pub sip: Option<SipStats>,
    /// Pending deliveries ([`crate::store::Store::pending_deliveries`]); falls back to the
    /// dispatcher's last count.
    pub webhook_backlog: Option<i64>,
    /// The engine → store queue: events accepted and not yet committed, and the queue's
    /// capacity ([`crate::engine::EventSink`]).
    pub event_queue: Option<(usize, usize)>,
    /// New calls refused because the queue was over its high-water mark.
    pub store_backlog_refusals: Option<u64>,
    /// Every trunk's live state ([`crate::trunk::TrunkStates::snapshot`]).
    pub trunks: Vec<(String, crate::trunk::TrunkRuntime)>,
    /// The recording writer threads ([`crate::engine::EngineHandle::recording_stats`]).
    pub recording: Option<crate::files::RecorderStats>,
    /// The media workers ([`crate::engine::EngineHandle::media_worker_stats`]).
    pub media_workers: Option<crate::net::media_workers::MediaWorkerStats>,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Counts a stored event (calls by outcome, RTP packets and loss from final events).
    pub fn on_event(&self, appended: &Appended) {
        self.on_stored(&appended.event);
    }

    /// Counts a stored event, a call's or a campaign's (by kind; calls by outcome, RTP
    /// packets and loss from final events).
    pub fn on_stored(&self, event: &StoredEvent) {
        {
            let mut kinds = self
                .events_by_kind
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let key = if kinds.contains_key(&event.kind) || kinds.len() < MAX_KINDS {
                event.kind.clone()
            } else {
                "other".to_owned()
            };
            *kinds.entry(key).or_insert(0) += 1;
        }
        if event.kind != "call.completed" && event.kind != "call.failed" {
            return;
        }
        let outcome = event
            .details
            .get("outcome")
            .and_then(Value::as_str)
            .unwrap_or("other");
        let index = OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(OUTCOMES.len() - 1);
        add(&self.calls_by_outcome[index], 1);
        if let Some(rtp) = event.details.get("rtp") {
            let n = |key: &str| rtp.get(key).and_then(Value::as_u64).unwrap_or(0);
            add(&self.rtp_packets_in, n("packets_in"));
            add(&self.rtp_packets_out, n("packets_out"));
            add(&self.rtp_lost_in, n("lost_in"));
        }
    }

    /// Records how long one successful [`crate::events::Bus::append`] took.
    pub fn observe_append(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bucket, bound) in self.append_buckets.iter().zip(APPEND_BUCKETS) {
            if secs <= bound {
                add(bucket, 1);
            }
        }
        add(&self.append_count, 1);
        add(
            &self.append_sum_us,
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        );
    }

    /// Counts a failed store append.
    pub fn on_append_error(&self) {
        add(&self.append_errors, 1);
    }

    /// Records one group commit of the pump: how long the transaction took and how many
    /// events it stored.
    pub fn observe_commit(&self, took: Duration, events: usize) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.batch_events.observe(events as f64);
    }

    /// Group commits so far (`callplane_store_commits_total`).
    pub fn store_commits(&self) -> u64 {
        self.commit_seconds.count.load(Ordering::Relaxed)
    }

    /// Counts an engine event the pump gave up on (logged at ERROR where it happened).
    pub fn on_pump_drop(&self) {
        add(&self.pump_dropped, 1);
    }

    /// Engine events the pump gave up on.
    pub fn pump_dropped(&self) -> u64 {
        self.pump_dropped.load(Ordering::Relaxed)
    }

    /// Counts an engine event the pump could not store at the first try (or at all).
    pub fn on_pump_error(&self) {
        add(&self.pump_errors, 1);
    }

    /// Counts a webhook delivery attempt.
    pub fn on_delivery(&self, result: DeliveryResult) {
        add(
            match result {
                DeliveryResult::Delivered => &self.deliveries_delivered,
                DeliveryResult::Failed => &self.deliveries_failed,
                DeliveryResult::Dead => &self.deliveries_dead,
            },
            1,
        );
    }

    /// Sets the outbox backlog the dispatcher last counted.
    pub fn set_webhook_backlog(&self, pending: i64) {
        self.webhook_backlog.store(pending, Ordering::Relaxed);
    }

    /// The outbox backlog the dispatcher last counted (`None` before it first did).
    pub fn webhook_backlog(&self) -> Option<i64> {
        Some(self.webhook_backlog.load(Ordering::Relaxed)).filter(|n| *n >= 0)
    }

    /// Engine events the pump failed to store at the first try.
    pub fn pump_errors(&self) -> u64 {
        self.pump_errors.load(Ordering::Relaxed)
    }

    /// Delivery attempts so far: (delivered, failed and retried, dead-lettered).
    pub fn deliveries(&self) -> (u64, u64, u64) {
        (
            self.deliveries_delivered.load(Ordering::Relaxed),
            self.deliveries_failed.load(Ordering::Relaxed),
            self.deliveries_dead.load(Ordering::Relaxed),
        )
    }

    /// The Prometheus text exposition (content type `text/plain; version=0.0.4`).
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);

        if let Some(n) = gauges.active_calls {
            header(
                &mut out,
                "callplane_active_calls",
                "gauge",
                "Calls live now.",
            );
            let _ = writeln!(out, "callplane_active_calls {n}");
        }

        header(
            &mut out,
            "callplane_calls_total",
            "counter",
            "Ended calls stored by this process, by outcome.",
        );
        for (outcome, c) in OUTCOMES.iter().zip(&self.calls_by_outcome) {
            let _ = writeln!(
                out,
                "callplane_calls_total{{outcome=\"{outcome}\"}} {}",
                load(c)
            );
        }

        header(
            &mut out,
            "callplane_events_total",
            "counter",
            "Timeline events stored by this process, by kind.",
        );
        {
            let kinds = self
                .events_by_kind
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (kind, n) in kinds.iter() {
                let _ = writeln!(
                    out,
                    "callplane_events_total{{kind=\"{}\"}} {n}",
                    escape(kind)
                );
            }
        }

        if let Some(sip) = &gauges.sip {
            header(
                &mut out,
                "callplane_sip_requests_total",
                "counter",
                "SIP requests by method and direction.",
            );
            for (direction, map) in [("in", &sip.requests_in), ("out", &sip.requests_out)] {
                let mut by_method: BTreeMap<&str, u64> = BTreeMap::new();
                for (method, n) in map {
                    let m = SIP_METHODS
                        .iter()
                        .find(|k| **k == method.as_str())
                        .copied()
                        .unwrap_or("other");
                    *by_method.entry(m).or_insert(0) += n;
                }
                for (method, n) in by_method {
                    let _ = writeln!(
                        out,
                        "callplane_sip_requests_total{{method=\"{method}\",direction=\"{direction}\"}} {n}"
                    );
                }
            }
            header(
                &mut out,
                "callplane_sip_responses_total",
                "counter",
                "SIP responses by status code and direction.",
            );
            // The endpoint's own stateless answers (400 to a malformed request, 481...) are
            // responses we sent too.
            let mut out_statuses = sip.responses_out.clone();
            for (status, n) in &sip.endpoint.stateless_replies {
                *out_statuses.entry(*status).or_insert(0) += n;
            }
            for (direction, map) in [("in", &sip.responses_in), ("out", &out_statuses)] {
                for (status, n) in map {
                    let _ = writeln!(
                        out,
                        "callplane_sip_responses_total{{status=\"{status}\",direction=\"{direction}\"}} {n}"
                    );
                }
            }
            header(
                &mut out,
                "callplane_sip_malformed_total",
                "counter",
                "SIP messages that did not parse.",
            );
            let _ = writeln!(
                out,
                "callplane_sip_malformed_total {}",
                sip.endpoint.malformed
            );
            header(
                &mut out,
                "callplane_sip_dropped_total",
                "counter",
                "Inbound SIP messages dropped or refused by the inbound protection, by reason \
                 (rate_limit: over the per-source rate; half_open, half_open_per_source: an \
                 INVITE over the bound on unanswered inbound calls, refused with 503).",
            );
            for reason in ["rate_limit", "half_open", "half_open_per_source"] {
                let n = sip.dropped.get(reason).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "callplane_sip_dropped_total{{reason=\"{reason}\"}} {n}"
                );
            }
            for (reason, n) in &sip.dropped {
                if !["rate_limit", "half_open", "half_open_per_source"].contains(&reason.as_str())
                    && reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                {
                    let _ = writeln!(
                        out,
                        "callplane_sip_dropped_total{{reason=\"{reason}\"}} {n}"
                    );
                }
            }
        }

        header(
            &mut out,
            "callplane_rtp_packets_total",
            "counter",
            "RTP packets of ended calls, by direction.",
        );
        let _ = writeln!(
            out,
            "callplane_rtp_packets_total{{direction=\"in\"}} {}",
            load(&self.rtp_packets_in)
        );
        let _ = writeln!(
            out,
            "callplane_rtp_packets_total{{direction=\"out\"}} {}",
            load(&self.rtp_packets_out)
        );
        header(
            &mut out,
            "callplane_rtp_lost_packets_total",
            "counter",
            "RTP packets expected but not received on ended calls.",
        );
        let _ = writeln!(
            out,
            "callplane_rtp_lost_packets_total {}",
            load(&self.rtp_lost_in)
        );

        if let Some(n) = gauges.webhook_backlog.or_else(|| self.webhook_backlog()) {
            header(
                &mut out,
                "callplane_webhook_backlog",
                "gauge",
                "Webhook deliveries waiting to be sent.",
            );
            let _ = writeln!(out, "callplane_webhook_backlog {n}");
        }
        header(
            &mut out,
            "callplane_webhook_deliveries_total",
            "counter",
            "Webhook delivery attempts by result (failed: will be retried; dead: given up).",
        );
        for (result, c) in [
            ("delivered", &self.deliveries_delivered),
            ("failed", &self.deliveries_failed),
            ("dead", &self.deliveries_dead),
        ] {
            let _ = writeln!(
                out,
                "callplane_webhook_deliveries_total{{result=\"{result}\"}} {}",
                load(c)
            );
        }

        header(
            &mut out,
            "callplane_store_append_seconds",
            "histogram",
            "Time to store one timeline event (with its outbox rows).",
        );
        for (bound, c) in APPEND_BUCKETS.iter().zip(&self.append_buckets) {
            let _ = writeln!(
                out,
                "callplane_store_append_seconds_bucket{{le=\"{bound}\"}} {}",
                load(c)
            );
        }
        let count = load(&self.append_count);
        let _ = writeln!(
            out,
            "callplane_store_append_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "callplane_store_append_seconds_sum {}",
            load(&self.append_sum_us) as f64 / 1e6
        );
        let _ = writeln!(out, "callplane_store_append_seconds_count {count}");
        header(
            &mut out,
            "callplane_store_append_errors_total",
            "counter",
            "Timeline appends the store refused.",
        );
        let _ = writeln!(
            out,
            "callplane_store_append_errors_total {}",
            load(&self.append_errors)
        );

        header(
            &mut out,
            "callplane_pump_errors_total",
            "counter",
            "Engine events whose storing failed at an attempt (retried, or dropped and logged).",
        );
        let _ = writeln!(
            out,
            "callplane_pump_errors_total {}",
            load(&self.pump_errors)
        );
        header(
            &mut out,
            "callplane_pump_dropped_events_total",
            "counter",
            "Engine events the pump gave up on (a bad row; logged at ERROR).",
        );
        let _ = writeln!(
            out,
            "callplane_pump_dropped_events_total {}",
            load(&self.pump_dropped)
        );
        header(
            &mut out,
            "callplane_store_commits_total",
            "counter",
            "Group commits of the event pump (one transaction each).",
        );
        let _ = writeln!(
            out,
            "callplane_store_commits_total {}",
            self.store_commits()
        );
        self.commit_seconds.render(
            &mut out,
            "callplane_store_commit_seconds",
            "Time to commit one batch of timeline events (rows, folds, outbox) in one transaction.",
        );
        self.batch_events.render(
            &mut out,
            "callplane_pump_batch_events",
            "Timeline events per group commit.",
        );
        if let Some((depth, capacity)) = gauges.event_queue {
            header(
                &mut out,
                "callplane_event_queue_depth",
                "gauge",
                "Engine events accepted and not yet committed to the store.",
            );
            let _ = writeln!(out, "callplane_event_queue_depth {depth}");
            header(
                &mut out,
                "callplane_event_queue_capacity",
                "gauge",
                "Capacity of the engine-to-store event queue (--event-queue).",
            );
            let _ = writeln!(out, "callplane_event_queue_capacity {capacity}");
        }
        if let Some(n) = gauges.store_backlog_refusals {
            header(
                &mut out,
                "callplane_store_backlog_refusals_total",
                "counter",
                "New calls refused (503) because the event queue was over its high-water mark.",
            );
            let _ = writeln!(out, "callplane_store_backlog_refusals_total {n}");
        }
        if let Some(r) = &gauges.recording {
            render_recorder(&mut out, r);
        }
        if let Some(w) = &gauges.media_workers {
            render_media_workers(&mut out, w);
        }
        self.render_trunks(&mut out, gauges);
        out
    }

    /// The trunk tasks' counters, shared with them ([`crate::trunk::TrunkContext::counters`]).
    pub fn trunk_counters(&self) -> Arc<crate::trunk::TrunkCounters> {
        self.trunks.clone()
    }

    fn render_trunks(&self, out: &mut String, gauges: &Gauges) {
        use crate::trunk::{Health, RegState};
        if !gauges.trunks.is_empty() {
            header(
                out,
                "callplane_trunk_registered",
                "gauge",
                "1 while the trunk's registration is current, else 0.",
            );
            for (id, t) in &gauges.trunks {
                let v = u8::from(matches!(t.registration, RegState::Registered { .. }));
                let _ = writeln!(
                    out,
                    "callplane_trunk_registered{{trunk=\"{}\"}} {v}",
                    escape(id)
                );
            }
            header(
                out,
                "callplane_trunk_up",
                "gauge",
                "1 while the trunk answers its OPTIONS pings, 0 once it stopped (trunks without pings are left out).",
            );
            for (id, t) in &gauges.trunks {
                let v = match t.health {
                    Health::Up => 1,
                    Health::Down => 0,
                    Health::Unknown => continue,
                };
                let _ = writeln!(out, "callplane_trunk_up{{trunk=\"{}\"}} {v}", escape(id));
            }
        }
        let counts = self.trunks.snapshot();
        if counts.is_empty() {
            return;
        }
        type Pick = fn(&crate::trunk::tasks::TrunkCounts) -> u64;
        let series: [(&str, &str, Pick); 4] = [
            (
                "callplane_trunk_registrations_sent_total",
                "REGISTER requests sent (credentials retries, refreshes and unregistrations included).",
                |c| c.registrations_sent,
            ),
            (
                "callplane_trunk_registrations_failed_total",
                "Registration attempts that failed.",
                |c| c.registrations_failed,
            ),
            (
                "callplane_trunk_options_sent_total",
                "OPTIONS pings sent.",
                |c| c.options_sent,
            ),
            (
                "callplane_trunk_options_failed_total",
                "OPTIONS pings unanswered, failed to send, or answered 503/408.",
                |c| c.options_failed,
            ),
        ];
        for (name, help, pick) in series {
            header(out, name, "counter", help);
            for (id, c) in &counts {
                let _ = writeln!(out, "{name}{{trunk=\"{}\"}} {}", escape(id), pick(c));
            }
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (the exposition format escapes `\`, `"` and newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Series without labels: (name, type, help, value) each.
fn plain_series(out: &mut String, series: &[(&str, &str, &str, String)]) {
    for (name, kind, help, value) in series {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// The recording writer threads' series (docs/media/recording.md).
fn render_recorder(out: &mut String, r: &crate::files::RecorderStats) {
    plain_series(
        out,
        &[
            (
                "callplane_recording_queue_depth",
                "gauge",
                "Recording jobs (frames, opens, closes) queued for the writer threads.",
                r.queue_depth.to_string(),
            ),
            (
                "callplane_recording_queue_capacity",
                "gauge",
                "What the recording writer queues hold at most, over all writer threads.",
                r.queue_capacity.to_string(),
            ),
            (
                "callplane_recording_lag_seconds",
                "gauge",
                "Age of the oldest recording job a writer thread has not finished (0 when idle).",
                r.lag.as_secs_f64().to_string(),
            ),
            (
                "callplane_recordings_open",
                "gauge",
                "Recordings being written now.",
                r.open.to_string(),
            ),
            (
                "callplane_recording_frames_written_total",
                "counter",
                "Frames written to recordings.",
                r.frames_written.to_string(),
            ),
            (
                "callplane_recording_frames_dropped_total",
                "counter",
                "Frames dropped (written as silence) because a recording writer queue was full.",
                r.frames_dropped.to_string(),
            ),
            (
                "callplane_recording_lagging_total",
                "counter",
                "Times a recording fell behind its writer (recording.lagging events).",
                r.lagging_episodes.to_string(),
            ),
            (
                "callplane_recording_failures_total",
                "counter",
                "Recordings that failed (open, write or finalize error, writer panic).",
                r.failures.to_string(),
            ),
            (
                "callplane_recording_fs_syncs_total",
                "counter",
                "Filesystem syncs (syncfs) the recording writer threads made for their flushes.",
                r.fs_syncs.to_string(),
            ),
        ],
    );
}

/// The media workers' series (docs/media/workers.md).
fn render_media_workers(out: &mut String, w: &crate::net::media_workers::MediaWorkerStats) {
    let seconds = |us: u64| (us as f64 / 1e6).to_string();
    plain_series(
        out,
        &[
            (
                "callplane_media_workers",
                "gauge",
                "Media worker threads (--media-workers).",
                w.workers.to_string(),
            ),
            (
                "callplane_media_workers_realtime",
                "gauge",
                "Media worker threads running at real-time priority (--media-priority).",
                w.realtime_threads.to_string(),
            ),
            (
                "callplane_media_worker_sessions",
                "gauge",
                "Calls' media sessions the workers run now.",
                w.sessions.to_string(),
            ),
            (
                "callplane_media_worker_datagrams_received_total",
                "counter",
                "RTP/RTCP datagrams the media workers read.",
                w.received.to_string(),
            ),
            (
                "callplane_media_worker_datagrams_sent_total",
                "counter",
                "RTP/RTCP datagrams the media workers sent.",
                w.sent.to_string(),
            ),
            (
                "callplane_media_worker_send_failures_total",
                "counter",
                "RTP/RTCP datagrams the media workers could not send.",
                w.send_failed.to_string(),
            ),
            (
                "callplane_media_worker_ticks_total",
                "counter",
                "Session deadlines (sends, RTCP, reports, timeouts) the media workers served.",
                w.ticks.to_string(),
            ),
            (
                "callplane_media_worker_lateness_seconds_total",
                "counter",
                "How late the media workers served those deadlines, summed.",
                seconds(w.late_us_sum),
            ),
            (
                "callplane_media_worker_lateness_max_seconds",
                "gauge",
                "The latest a media worker served a session deadline since the start.",
                seconds(w.late_us_max),
            ),
            (
                "callplane_media_worker_record_frames_dropped_total",
                "counter",
                "Recorded frames dropped because a call took in its media events too slowly.",
                w.record_frames_dropped.to_string(),
            ),
            (
                "callplane_media_worker_commands_refused_total",
                "counter",
                "Commands to a media worker refused because its queue was full.",
                w.commands_refused.to_string(),
            ),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CallRecord, CallStatus, NewCall, StoredEvent};
    use serde_json::json;

    fn appended(kind: &str, details: Value) -> Appended {
        let event = StoredEvent {
            id: 1,
            tenant_id: "ten_1".into(),
            call_id: Some("call_1".into()),
            campaign_id: None,
            kind: kind.into(),
            at_unix_us: 1,
            offset_us: 0,
            details,
        };
        let mut call = CallRecord::queued(
            "call_1",
            NewCall::outbound("ten_1", String::new(), String::new(), 1),
        );
        call.status = CallStatus::Completed;
        Appended {
            event,
            call,
            deliveries: vec![],
        }
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
            .parse()
            .expect("a number")
    }

    #[test]
    fn trunk_gauges_and_counters_are_rendered_per_trunk() {
        use crate::trunk::{Health, RegState, TrunkRuntime};
        let m = Metrics::default();
        m.trunk_counters().update("trk_a", |c| {
            c.registrations_sent = 3;
            c.registrations_failed = 1;
            c.options_sent = 5;
            c.options_failed = 2;
        });
        let registered = TrunkRuntime {
            registration: RegState::Registered {
                expires_at_us: 1,
                granted_s: 60,
            },
            health: Health::Down,
            health_since_us: 1,
        };
        let text = m.render(&Gauges {
            trunks: vec![
                ("trk_a".into(), registered),
                ("trk_b".into(), TrunkRuntime::default()),
            ],
            ..Gauges::default()
        });
        assert_eq!(
            value(&text, "callplane_trunk_registered{trunk=\"trk_a\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "callplane_trunk_registered{trunk=\"trk_b\"}"),
            0.0
        );
        assert_eq!(value(&text, "callplane_trunk_up{trunk=\"trk_a\"}"), 0.0);
        assert!(
            !text.contains("callplane_trunk_up{trunk=\"trk_b\"}"),
            "unknown health is left out"
        );
        assert_eq!(
            value(
                &text,
                "callplane_trunk_registrations_sent_total{trunk=\"trk_a\"}"
            ),
            3.0
        );
        assert_eq!(
            value(
                &text,
                "callplane_trunk_registrations_failed_total{trunk=\"trk_a\"}"
            ),
            1.0
        );
        assert_eq!(
            value(&text, "callplane_trunk_options_sent_total{trunk=\"trk_a\"}"),
            5.0
        );
        assert_eq!(
            value(
                &text,
                "callplane_trunk_options_failed_total{trunk=\"trk_a\"}"
            ),
            2.0
        );
    }

    #[test]
    fn final_events_count_calls_by_outcome_and_their_rtp_totals() {
        let m = Metrics::default();
        m.on_event(&appended("call.created", json!({})));
        m.on_event(&appended(
            "call.completed",
            json!({"outcome": "answered", "rtp": {"packets_in": 100, "packets_out": 98, "lost_in": 2}}),
        ));
        m.on_event(&appended(
            "call.failed",
            json!({"outcome": "busy", "rtp": null}),
        ));
        m.on_event(&appended("call.failed", json!({"outcome": "weird"})));
        let text = m.render(&Gauges {
            active_calls: Some(3),
            ..Gauges::default()
        });
        assert_eq!(value(&text, "callplane_active_calls"), 3.0);
        assert_eq!(
            value(&text, "callplane_calls_total{outcome=\"answered\"}"),
            1.0
        );
        assert_eq!(value(&text, "callplane_calls_total{outcome=\"busy\"}"), 1.0);
        assert_eq!(
            value(&text, "callplane_calls_total{outcome=\"other\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "callplane_events_total{kind=\"call.failed\"}"),
            2.0
        );
        assert_eq!(
            value(&text, "callplane_rtp_packets_total{direction=\"in\"}"),
            100.0
        );
        assert_eq!(
            value(&text, "callplane_rtp_packets_total{direction=\"out\"}"),
            98.0
        );
        assert_eq!(value(&text, "callplane_rtp_lost_packets_total"), 2.0);
    }

    #[test]
    fn event_kinds_beyond_the_cap_count_as_other() {
        let m = Metrics::default();
        for i in 0..MAX_KINDS + 10 {
            m.on_event(&appended(&format!("x.kind{i}"), json!({})));
        }
        let text = m.render(&Gauges::default());
        let series = text
            .lines()
            .filter(|l| l.starts_with("callplane_events_total{"))
            .count();
        assert_eq!(series, MAX_KINDS + 1);
        assert_eq!(value(&text, "callplane_events_total{kind=\"other\"}"), 10.0);
    }

    #[test]
    fn append_latency_is_a_cumulative_histogram() {
        let m = Metrics::default();
        m.observe_append(Duration::from_micros(800));
        m.observe_append(Duration::from_millis(30));
        let text = m.render(&Gauges::default());
        assert_eq!(
            value(
                &text,
                "callplane_store_append_seconds_bucket{le=\"0.0005\"}"
            ),
            0.0
        );
        assert_eq!(
            value(&text, "callplane_store_append_seconds_bucket{le=\"0.001\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "callplane_store_append_seconds_bucket{le=\"0.05\"}"),
            2.0
        );
        assert_eq!(
            value(&text, "callplane_store_append_seconds_bucket{le=\"+Inf\"}"),
            2.0
        );
        assert_eq!(value(&text, "callplane_store_append_seconds_count"), 2.0);
        assert!((value(&text, "callplane_store_append_seconds_sum") - 0.0308).abs() < 1e-9);
    }

    #[test]
    fn group_commits_render_their_count_latency_batch_size_and_the_queue() {
        let m = Metrics::default();
        m.observe_commit(Duration::from_millis(3), 1);
        m.observe_commit(Duration::from_millis(20), 300);
        m.on_pump_drop();
        let text = m.render(&Gauges {
            event_queue: Some((7, 64)),
            store_backlog_refusals: Some(2),
            ..Gauges::default()
        });
        assert_eq!(m.store_commits(), 2);
        assert_eq!(value(&text, "callplane_store_commits_total"), 2.0);
        assert_eq!(value(&text, "callplane_store_commit_seconds_count"), 2.0);
        assert_eq!(
            value(&text, "callplane_store_commit_seconds_bucket{le=\"0.005\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "callplane_pump_batch_events_bucket{le=\"1\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "callplane_pump_batch_events_bucket{le=\"256\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "callplane_pump_batch_events_bucket{le=\"512\"}"),
            2.0
        );
        assert_eq!(value(&text, "callplane_pump_batch_events_sum"), 301.0);
        assert_eq!(value(&text, "callplane_pump_dropped_events_total"), 1.0);
        assert_eq!(value(&text, "callplane_event_queue_depth"), 7.0);
        assert_eq!(value(&text, "callplane_event_queue_capacity"), 64.0);
        assert_eq!(value(&text, "callplane_store_backlog_refusals_total"), 2.0);
    }

    #[test]
    fn recording_writer_series_render_only_when_given() {
        let m = Metrics::default();
        assert!(
            !m.render(&Gauges::default())
                .contains("callplane_recording_")
        );
        let text = m.render(&Gauges {
            recording: Some(crate::files::RecorderStats {
                threads: 4,
                queue_depth: 12,
                queue_capacity: 32_768,
                lag: Duration::from_millis(1_500),
                open: 3,
                frames_written: 900,
                frames_dropped: 7,
                lagging_episodes: 2,
                failures: 1,
                fs_syncs: 5,
            }),
            ..Gauges::default()
        });
        assert_eq!(value(&text, "callplane_recording_queue_depth"), 12.0);
        assert_eq!(value(&text, "callplane_recording_queue_capacity"), 32_768.0);
        assert_eq!(value(&text, "callplane_recording_lag_seconds"), 1.5);
        assert_eq!(value(&text, "callplane_recordings_open"), 3.0);
        assert_eq!(
            value(&text, "callplane_recording_frames_written_total"),
            900.0
        );
        assert_eq!(
            value(&text, "callplane_recording_frames_dropped_total"),
            7.0
        );
        assert_eq!(value(&text, "callplane_recording_lagging_total"), 2.0);
        assert_eq!(value(&text, "callplane_recording_failures_total"), 1.0);
        assert_eq!(value(&text, "callplane_recording_fs_syncs_total"), 5.0);
    }

    #[test]
    fn media_worker_series_render_only_when_given() {
        let m = Metrics::default();
        assert!(
            !m.render(&Gauges::default())
                .contains("callplane_media_worker")
        );
        let text = m.render(&Gauges {
            media_workers: Some(crate::net::media_workers::MediaWorkerStats {
                workers: 2,
                sessions: 300,
                received: 10,
                sent: 20,
                send_failed: 1,
                ticks: 40,
                late_us_sum: 2_500_000,
                late_us_max: 1_500,
                record_frames_dropped: 3,
                commands_refused: 4,
                realtime_threads: 1,
            }),
            ..Gauges::default()
        });
        for (series, want) in [
            ("callplane_media_workers", 2.0),
            ("callplane_media_workers_realtime", 1.0),
            ("callplane_media_worker_sessions", 300.0),
            ("callplane_media_worker_datagrams_received_total", 10.0),
            ("callplane_media_worker_datagrams_sent_total", 20.0),
            ("callplane_media_worker_send_failures_total", 1.0),
            ("callplane_media_worker_ticks_total", 40.0),
            ("callplane_media_worker_lateness_seconds_total", 2.5),
            ("callplane_media_worker_lateness_max_seconds", 0.0015),
            ("callplane_media_worker_record_frames_dropped_total", 3.0),
            ("callplane_media_worker_commands_refused_total", 4.0),
        ] {
            assert_eq!(value(&text, series), want, "{series}");
        }
        assert!(text.contains("# TYPE callplane_media_worker_sessions gauge"));
        assert!(text.contains("# TYPE callplane_media_worker_ticks_total counter"));
    }

    #[test]
    fn sip_counters_render_by_method_and_status_with_unknown_methods_folded() {
        let m = Metrics::default();
        let mut sip = SipStats::default();
        sip.requests_in.insert("INVITE".into(), 4);
        sip.requests_in.insert("FOO".into(), 1);
        sip.requests_in.insert("BAR".into(), 2);
        sip.requests_out.insert("BYE".into(), 3);
        sip.responses_in.insert(486, 1);
        sip.responses_out.insert(200, 5);
        let text = m.render(&Gauges {
            sip: Some(sip),
            webhook_backlog: Some(7),
            ..Gauges::default()
        });
        for (series, n) in [
            (
                "callplane_sip_requests_total{method=\"INVITE\",direction=\"in\"}",
                4.0,
            ),
            (
                "callplane_sip_requests_total{method=\"other\",direction=\"in\"}",
                3.0,
            ),
            (
                "callplane_sip_requests_total{method=\"BYE\",direction=\"out\"}",
                3.0,
            ),
            (
                "callplane_sip_responses_total{status=\"486\",direction=\"in\"}",
                1.0,
            ),
            (
                "callplane_sip_responses_total{status=\"200\",direction=\"out\"}",
                5.0,
            ),
            ("callplane_webhook_backlog", 7.0),
        ] {
            assert_eq!(value(&text, series), n, "{series}");
        }
    }

    #[test]
    fn inbound_protection_drops_render_by_reason_known_ones_always() {
        let m = Metrics::default();
        let mut sip = SipStats::default();
        sip.dropped.insert("rate_limit".into(), 9000);
        sip.dropped.insert("not_allowed".into(), 3);
        sip.dropped.insert("Bad \"label\"".into(), 1);
        let text = m.render(&Gauges {
            sip: Some(sip),
            ..Gauges::default()
        });
        for (series, n) in [
            ("callplane_sip_dropped_total{reason=\"rate_limit\"}", 9000.0),
            ("callplane_sip_dropped_total{reason=\"half_open\"}", 0.0),
            (
                "callplane_sip_dropped_total{reason=\"half_open_per_source\"}",
                0.0,
            ),
            ("callplane_sip_dropped_total{reason=\"not_allowed\"}", 3.0),
        ] {
            assert_eq!(value(&text, series), n, "{series}");
        }
        assert!(!text.contains("Bad"), "{text}");
    }

    #[test]
    fn delivery_results_and_pump_errors_are_counted() {
        let m = Metrics::default();
        m.on_delivery(DeliveryResult::Failed);
        m.on_delivery(DeliveryResult::Failed);
        m.on_delivery(DeliveryResult::Delivered);
        m.on_delivery(DeliveryResult::Dead);
        m.on_pump_error();
        m.set_webhook_backlog(4);
        let text = m.render(&Gauges::default());
        assert_eq!(
            value(
                &text,
                "callplane_webhook_deliveries_total{result=\"failed\"}"
            ),
            2.0
        );
        assert_eq!(
            value(&text, "callplane_webhook_deliveries_total{result=\"dead\"}"),
            1.0
        );
        assert_eq!(value(&text, "callplane_pump_errors_total"), 1.0);
        // Without a fresh count the dispatcher's last one is shown.
        assert_eq!(value(&text, "callplane_webhook_backlog"), 4.0);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
