//! Retries by outcome: pure. Given a campaign's [`RetryPolicy`], the outcome of the attempt
//! that just ended and the outcomes before it, [`decide`] says what happens to the contact, when
//! it is called again and on which trunk, and names the rule that fired (stored on the attempt).

use super::model::{ContactStatus, RetryPolicy};

/// What an ended attempt leads to.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryDecision {
    /// `Queued` (retry) or a final status.
    pub status: ContactStatus,
    /// When a retry is due (Unix µs); None for a final status.
    pub next_attempt_at_us: Option<i64>,
    /// The index into the campaign's trunks for the next attempt.
    pub trunk_index: u32,
    /// The rule that fired, e.g. `busy: retry 2 of 3 after 1200 s` or `rejected: never retried`.
    pub rule: String,
    /// A sentence for the contact's `reason`.
    pub reason: String,
}

/// Decides what follows `outcome` (the engine's outcome name).
///
/// `history` holds the outcomes of the contact's earlier attempts, oldest first (not this
/// one). `trunk_index` is the index the attempt used; `trunk_count` how many trunks the campaign
/// has (0 or 1: no failover). `random` spreads the jitter (any value; the same inputs give the
/// same decision).
pub fn decide(
    _policy: &RetryPolicy,
    _outcome: &str,
    _history: &[&str],
    _trunk_index: u32,
    _trunk_count: u32,
    _now_us: i64,
    _random: u64,
) -> RetryDecision {
    unimplemented!("skeleton: the pacing helper builds this")
}
