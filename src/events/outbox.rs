//! The webhook outbox dispatcher: signed deliveries with retries, backoff and dead letters.
//!
//! Deliveries are rows the store wrote in the transaction that stored their event
//! ([`crate::store::Store::append_event`]), so an event that is stored has its deliveries queued
//! and nothing else can lose them: the dispatcher only moves rows from `pending` to `delivered`
//! or `dead`. It claims due rows with a lease ([`crate::store::Store::claim_due_deliveries`]
//! moves their due time to the end of the lease), POSTs each one, and records the attempt. A
//! process killed mid-attempt leaves the row pending, due when its lease ends; a process killed
//! between attempts leaves it pending, due at its retry time. Either way the next process to
//! start sends it: delivery is at least once, and receivers dedupe by `Callplane-Event-Id`.
//!
//! The dispatcher wakes when the bus says new rows exist ([`crate::events::Bus::wake_outbox`]),
//! when a retry it scheduled falls due, when one of its deliveries ends (a slot is free: it
//! claims again at once, without waiting for the others of its batch), and at least every
//! [`POLL`] (rows left by a previous process or another node).
//!
//! Fairness: at most [`OutboxConfig::concurrency`] deliveries are in flight, and at most
//! [`OutboxConfig::per_webhook`] of one webhook ([`crate::store::PerWebhook`] in the claim),
//! so a receiver that accepts connections and never answers delays only its own deliveries
//! (each waits out `request_timeout`), not other webhooks'. The per-webhook bound is per
//! dispatcher: with several nodes sharing a database, one webhook may have that many in flight
//! on each node.
//!
//! Each request carries:
//! - `Content-Type: application/json`, the body fixed at enqueue time
//!   ([`crate::store::derive::webhook_body`]), the same bytes on every attempt;
//! - `Callplane-Event-Id` (the dedupe key), `Callplane-Delivery-Id`;
//! - `Callplane-Timestamp`: Unix seconds of this attempt;
//! - `Callplane-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` ([`sign`]).
//!
//! A 2xx answer is delivered; anything else (another status, a connect error, a timeout) is
//! retried after a random delay in `[0, min(retry_max, retry_base · 2^(n−1))]` after the n-th
//! failed attempt ("full jitter"), and dead-lettered when attempt `max_attempts` fails. A failed
//! attempt also rests its webhook: none of its deliveries is claimed for
//! `min(retry_max, retry_base · 2^(k−1))` after its k-th failure in a row (a success ends the
//! pause), so a receiver that is down gets one attempt per pause instead of its whole backlog,
//! and costs the database nothing meanwhile ([`crate::store::WebhookBackoff`]).
//!
//! `last_error` says what happened in a few words (`HTTP 500 Internal Server Error`,
//! `connect: Connection refused`, `refused: … loopback`), never what the receiver answered:
//! its body is neither read nor logged. Targets are checked against the
//! [`EgressPolicy`] at connect time, after DNS resolution ([`crate::net::egress`]). Routine
//! failures log at DEBUG; a dead letter at WARN.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::task::{JoinHandle, JoinSet};

use super::Bus;
use super::metrics::DeliveryResult;
use crate::clock;
use crate::net::egress::{self, EgressPolicy};
use crate::store::{AttemptResult, Delivery, PerWebhook, Webhook, WebhookBackoff};

/// The longest the dispatcher sleeps without looking for due rows.
pub const POLL: Duration = Duration::from_secs(1);

/// The longest `last_error`, in characters.
const ERROR_CHARS: usize = 200;

/// Settings of the dispatcher.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Attempts before a delivery is dead-lettered (at least 1).
    pub max_attempts: u32,
    /// The first retry delay ceiling; it doubles with each failed attempt.
    pub retry_base: Duration,
    /// The largest retry delay ceiling.
    pub retry_max: Duration,
    /// Limit for one POST, connect to end of the answer's headers.
    pub request_timeout: Duration,
    /// How long a claimed delivery is reserved for this dispatcher (a crashed attempt is
    /// retried after it).
    pub lease: Duration,
    /// Deliveries in flight at once (at least 1).
    pub concurrency: usize,
    /// Deliveries of one webhook in flight at once (at least 1): a receiver that accepts
    /// connections and never answers holds at most this many of the `concurrency` slots, so
    /// the other webhooks' deliveries go out beside it.
    pub per_webhook: usize,
    /// Where deliveries may connect (checked after DNS resolution).
    pub egress: Arc<EgressPolicy>,
}

impl Default for OutboxConfig {
    fn default() -> OutboxConfig {
        OutboxConfig {
            max_attempts: 10,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            request_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(60),
            concurrency: 8,
            per_webhook: 2,
            egress: Arc::new(EgressPolicy::default()),
        }
    }
}

impl OutboxConfig {
    /// The ceiling of the delay after failed attempt number `attempt` (1-based):
    /// `retry_base · 2^(attempt−1)`, at most `retry_max`.
    pub fn retry_ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        self.retry_base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.retry_max)
            .min(self.retry_max)
    }
}

/// The `Callplane-Signature` value: `v1=` + lowercase hex HMAC-SHA256 keyed with `secret`
/// over `"<timestamp>.<body>"`.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length (RFC 2104 §3), so `new_from_slice` cannot fail.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A uniformly random duration in `[0, ceiling]` (full jitter spreads the retries of many
/// deliveries that failed together, so a receiver coming back is not hit all at once).
fn jitter(ceiling: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: the ceiling is still a correct (if unspread) delay.
        return ceiling;
    }
    let fraction = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    ceiling.mul_f64(fraction)
}

/// Spawns the dispatcher on the current runtime; it runs until the runtime stops (or the task
/// is aborted).
pub fn spawn_dispatcher(bus: Bus, config: OutboxConfig) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = match egress::webhook_client(
            config.request_timeout,
            config.egress.clone(),
            concat!("callplane-webhooks/", env!("CARGO_PKG_VERSION")),
        ) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, "webhook dispatcher: no HTTP client; webhooks stay queued");
                return;
            }
        };
        let dispatcher = Dispatcher {
            bus,
            client,
            config: Arc::new(OutboxConfig {
                max_attempts: config.max_attempts.max(1),
                concurrency: config.concurrency.max(1),
                per_webhook: config.per_webhook.max(1),
                ..config
            }),
        };
        dispatcher.run().await;
    })
}

struct Dispatcher {
    bus: Bus,
    client: reqwest::Client,
    config: Arc<OutboxConfig>,
}

impl Dispatcher {
    async fn run(self) {
        let notify = self.bus.outbox_notify();
        let lease_us = i64::try_from(self.config.lease.as_micros()).unwrap_or(i64::MAX);
        let per_webhook_max = u32::try_from(self.config.per_webhook).unwrap_or(u32::MAX);
        let mut inflight: JoinSet<Option<i64>> = JoinSet::new();
        // Each task's webhook, and how many deliveries each webhook has in flight here.
        let mut task_hooks: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut per_hook: HashMap<String, u32> = HashMap::new();
        // The earliest retry this dispatcher scheduled (rows it knows will fall due).
        let mut next_due: Option<i64> = None;
        let mut last_backlog = None;
        let mut claim_errors: u64 = 0;
        loop {
            let now = clock::unix_us();
            if next_due.is_some_and(|t| t <= now) {
                next_due = None;
            }
            let free = self.config.concurrency.saturating_sub(inflight.len());
            let mut more = false;
            if free > 0 {
                let limit = u32::try_from(free).unwrap_or(u32::MAX);
                let per_webhook = PerWebhook {
                    max: per_webhook_max,
                    in_flight: per_hook.iter().map(|(h, n)| (h.clone(), *n)).collect(),
                };
                match self
                    .bus
                    .store()
                    .claim_due_deliveries(now, now.saturating_add(lease_us), limit, &per_webhook)
                    .await
                {
                    Ok(batch) => {
                        claim_errors = 0;
                        more = batch.len() == free;
                        for (delivery, webhook) in batch {
                            *per_hook.entry(webhook.id.clone()).or_default() += 1;
                            let hook_id = webhook.id.clone();
                            let task = inflight.spawn(attempt(
                                self.client.clone(),
                                self.bus.clone(),
                                self.config.clone(),
                                delivery,
                                webhook,
                            ));
                            task_hooks.insert(task.id(), hook_id);
                        }
                    }
                    Err(error) => {
                        claim_errors += 1;
                        if claim_errors <= 3 || claim_errors.is_multiple_of(60) {
                            tracing::warn!(%error, "webhook dispatcher: claiming due deliveries failed");
                        }
                    }
                }
            }
            // The backlog gauge, at most once per poll period.
            let mono = clock::now();
            if last_backlog.is_none_or(|t| mono.saturating_duration_since(t) >= POLL) {
                last_backlog = Some(mono);
                if let Ok(n) = self.bus.store().pending_deliveries().await {
                    self.bus.metrics().set_webhook_backlog(n);
                }
            }
            let wait = if more {
                // A full batch: there may be more due rows; look again at once.
                Duration::ZERO
            } else {
                let until_due = next_due.map_or(POLL, |t| {
                    Duration::from_micros(u64::try_from(t.saturating_sub(now)).unwrap_or(0))
                });
                until_due.min(POLL)
            };
            tokio::select! {
                () = notify.notified() => {}
                () = tokio::time::sleep(wait) => {}
                // One delivery ended: its slot (and its webhook's) is free, claim again now.
                Some(done) = inflight.join_next_with_id(), if !inflight.is_empty() => {
                    let task = match &done {
                        Ok((id, _)) => *id,
                        Err(error) => error.id(),
                    };
                    if let Some(hook) = task_hooks.remove(&task)
                        && let Some(n) = per_hook.get_mut(&hook)
                    {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            per_hook.remove(&hook);
                        }
                    }
                    match done {
                        Ok((_, Some(t))) => next_due = Some(next_due.map_or(t, |n| n.min(t))),
                        Ok((_, None)) => {}
                        Err(error) => tracing::error!(%error, "webhook delivery task failed"),
                    }
                }
            }
        }
    }
}

/// One attempt; returns the time of the retry it scheduled, if any.
async fn attempt(
    client: reqwest::Client,
    bus: Bus,
    config: Arc<OutboxConfig>,
    delivery: Delivery,
    webhook: Webhook,
) -> Option<i64> {
    let answer = match post(&client, &config.egress, &delivery, &webhook).await {
        // Only the status is kept: the receiver's body is not read (it could echo what an
        // internal service said, and it is the receiver's to log, not ours).
        Ok(status) if status.is_success() => Ok(i64::from(status.as_u16())),
        Ok(status) => Err((Some(i64::from(status.as_u16())), format!("HTTP {status}"))),
        Err(error) => Err((None, error)),
    };
    let attempt_no = u32::try_from(delivery.attempts.saturating_add(1)).unwrap_or(u32::MAX);
    let (result, outcome, retry_at) = match answer {
        Ok(status) => (
            AttemptResult::Delivered {
                status,
                at_us: clock::unix_us(),
            },
            DeliveryResult::Delivered,
            None,
        ),
        Err((status, error)) if attempt_no >= config.max_attempts => (
            AttemptResult::Failed {
                status,
                error,
                next_attempt_at_us: None,
                webhook_backoff: Some(backoff(&config)),
            },
            DeliveryResult::Dead,
            None,
        ),
        Err((status, error)) => {
            let delay = jitter(config.retry_ceiling(attempt_no));
            let at = clock::unix_us()
                .saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX));
            (
                AttemptResult::Failed {
                    status,
                    error,
                    next_attempt_at_us: Some(at),
                    webhook_backoff: Some(backoff(&config)),
                },
                DeliveryResult::Failed,
                Some(at),
            )
        }
    };
    match &result {
        AttemptResult::Delivered { .. } => tracing::debug!(
            delivery = %delivery.id, event = delivery.event_id, webhook = %webhook.id,
            "webhook delivered"
        ),
        AttemptResult::Failed {
            error,
            next_attempt_at_us: Some(_),
            ..
        } => tracing::debug!(
            delivery = %delivery.id, event = delivery.event_id, webhook = %webhook.id,
            attempt = attempt_no, %error, "webhook attempt failed; will retry"
        ),
        AttemptResult::Failed { error, .. } => tracing::warn!(
            delivery = %delivery.id, event = delivery.event_id, webhook = %webhook.id,
            attempts = attempt_no, %error, "webhook delivery dead-lettered"
        ),
    }
    bus.metrics().on_delivery(outcome);
    // If recording fails the row stays claimed: it is retried when its lease ends, which keeps
    // delivery at least once (the receiver may see this one again).
    let mut pause = Duration::from_millis(100);
    for tries in 1..=3 {
        match bus.store().finish_attempt(&delivery.id, &result).await {
            Ok(()) => return retry_at,
            // The webhook (and with it the delivery) was deleted meanwhile: nothing to record.
            Err(crate::store::StoreError::NotFound) => return None,
            Err(error) if tries == 3 => {
                tracing::warn!(%error, delivery = %delivery.id, "recording a webhook attempt failed; retried after the lease");
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    None
}

/// The pause of a webhook after a failed attempt: the retry ceilings of one delivery.
fn backoff(config: &OutboxConfig) -> WebhookBackoff {
    let us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    WebhookBackoff {
        now_us: clock::unix_us(),
        base_us: us(config.retry_base),
        max_us: us(config.retry_max),
    }
}

/// One signed POST; the answer's status, or a short reason it got none.
async fn post(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    delivery: &Delivery,
    webhook: &Webhook,
) -> Result<reqwest::StatusCode, String> {
    let url = reqwest::Url::parse(&webhook.url).map_err(|e| format!("url: {e}"))?;
    // An IP-literal URL never reaches the client's resolver: check it here. A name is checked
    // by the resolver, after resolution, on every connection.
    egress
        .check_target(&url)
        .map_err(|why| format!("refused: {why}, not a webhook target"))?;
    let timestamp = clock::unix_us() / 1_000_000;
    let signature = sign(&webhook.secret, timestamp, &delivery.body);
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Callplane-Event-Id", delivery.event_id.to_string())
        .header("Callplane-Delivery-Id", &delivery.id)
        .header("Callplane-Timestamp", timestamp.to_string())
        .header("Callplane-Signature", signature)
        .body(delivery.body.clone())
        .send()
        .await
        .map_err(|e| describe(&e))?;
    // Dropping the response unread closes the connection: nothing of the body is kept.
    Ok(response.status())
}

/// A short description of a transport failure: its kind and its root cause (`connect:
/// Connection refused (os error 111)`, `timeout: …`, or the egress guard's refusal), without
/// the URL or anything the receiver sent.
fn describe(error: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = error;
    while let Some(next) = root.source() {
        if let Some(refused) = next.downcast_ref::<egress::Refused>() {
            return refused.to_string().chars().take(ERROR_CHARS).collect();
        }
        root = next;
    }
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_redirect() {
        "redirect"
    } else {
        "request"
    };
    let text = if std::ptr::addr_eq(root, error as &dyn std::error::Error) {
        kind.to_owned()
    } else {
        format!("{kind}: {root}")
    };
    text.chars().take(ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 checks the primitive: key "Jefe", data
        // "what do ya want for nothing?" → 5bdcc146...; here the data is "<ts>.<body>".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").expect("any key length");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let sig = sign("Jefe", 1_700_000_000, "{\"a\":1}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").expect("any key length");
        mac.update(b"1700000000.{\"a\":1}");
        assert_eq!(
            sig,
            format!("v1={}", hex::encode(mac.finalize().into_bytes()))
        );
        // Any change of timestamp or body changes the signature.
        assert_ne!(sig, sign("Jefe", 1_700_000_001, "{\"a\":1}"));
        assert_ne!(sig, sign("Jefe", 1_700_000_000, "{\"a\":2}"));
    }

    #[test]
    fn retry_ceilings_double_from_the_base_up_to_the_max() {
        let config = OutboxConfig::default();
        let secs: Vec<u64> = (1..=12)
            .map(|n| config.retry_ceiling(n).as_secs())
            .collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        // Huge attempt numbers saturate instead of overflowing.
        assert_eq!(config.retry_ceiling(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling_and_spreads() {
        let ceiling = Duration::from_millis(1000);
        let samples: Vec<Duration> = (0..200).map(|_| jitter(ceiling)).collect();
        assert!(samples.iter().all(|d| *d <= ceiling));
        assert!(samples.iter().any(|d| *d < ceiling / 2));
        assert!(samples.iter().any(|d| *d > ceiling / 2));
    }
}
