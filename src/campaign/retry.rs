//! Retries by outcome: pure. Given a campaign's [`RetryPolicy`], the outcome of the attempt
//! that just ended and the outcomes before it, [`decide`] says what happens to the contact, when
//! it is called again and on which trunk, and names the rule that fired (stored on the attempt).
//!
//! - `answered` completes the contact, whatever the policy says.
//! - An outcome without a rule fails the contact (`<outcome>: no rule, not retried`).
//! - A rule with `max_retries: 0` (and no `next_trunk`) fails it (`rejected: never retried`).
//! - Otherwise the k-th retry of one outcome (k counted from `history`) waits
//!   `after_s * backoff^(k-1)`, capped at `max_delay_s`, times a jitter factor in
//!   `[1 - jitter, 1 + jitter]` drawn from `random` (and never beyond `max_delay_s`), rounded
//!   to whole seconds; once `max_retries` retries were used the contact is exhausted.
//! - A rule with `next_trunk` (network errors) first tries the campaign's next trunk at once
//!   (`trunk_index + 1`, wrapping) while trunks of the current round remain untried; a round is
//!   a run of consecutive attempts ending in that outcome, one per trunk. When the whole round
//!   failed, the contact waits as above (that wait is one retry) and starts again on the first
//!   trunk.
//!
//! Bad policy numbers never panic: a NaN, infinite or negative `backoff` counts as 1.0, a NaN
//! or negative `jitter` as 0.0 (and above 1.0 as 1.0); every sum saturates.

use super::model::{ContactStatus, RetryPolicy, RetryRule};

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

/// The outcome that completes a contact.
pub const ANSWERED: &str = "answered";

/// Decides what follows `outcome` (the engine's outcome name).
///
/// `history` holds the outcomes of the contact's earlier attempts, oldest first (not this
/// one). `trunk_index` is the index the attempt used; `trunk_count` how many trunks the campaign
/// has (0 or 1: no failover). `random` spreads the jitter (any value; the same inputs give the
/// same decision).
pub fn decide(
    policy: &RetryPolicy,
    outcome: &str,
    history: &[&str],
    trunk_index: u32,
    trunk_count: u32,
    now_us: i64,
    random: u64,
) -> RetryDecision {
    let name = printable(outcome);
    let trunk_index = if trunk_count == 0 {
        trunk_index
    } else {
        trunk_index % trunk_count
    };
    let last = |status: ContactStatus, rule: String, reason: String| RetryDecision {
        status,
        next_attempt_at_us: None,
        trunk_index,
        rule,
        reason,
    };
    if outcome == ANSWERED {
        return last(
            ContactStatus::Completed,
            "answered: completed".to_owned(),
            "The call was answered.".to_owned(),
        );
    }
    let Some(rule) = policy.rules.get(outcome) else {
        return last(
            ContactStatus::Failed,
            format!("{name}: no rule, not retried"),
            format!(
                "The call ended with \"{name}\", which the retry policy has no rule for, so the contact is not called again."
            ),
        );
    };
    if rule.max_retries == 0 && !rule.next_trunk {
        return last(
            ContactStatus::Failed,
            format!("{name}: never retried"),
            format!("The call ended with \"{name}\", which is never retried."),
        );
    }
    let trunks = trunk_count.max(1);
    // Which retry this is (1-based), and for failover rules where the current round stands.
    let (retry, tried_in_round) = if rule.next_trunk {
        let (waits, tried) = replay_rounds(outcome, history, trunks);
        (waits.saturating_add(1), tried.saturating_add(1))
    } else {
        let earlier = history.iter().filter(|o| **o == outcome).count();
        (
            u32::try_from(earlier).unwrap_or(u32::MAX).saturating_add(1),
            0,
        )
    };
    if rule.next_trunk && tried_in_round < trunks {
        let next = (trunk_index.saturating_add(1)) % trunks;
        return RetryDecision {
            status: ContactStatus::Queued,
            next_attempt_at_us: Some(now_us),
            trunk_index: next,
            rule: format!(
                "{name}: next trunk ({} of {trunks}) at once",
                tried_in_round + 1
            ),
            reason: format!(
                "The call ended with \"{name}\" on trunk {} of {trunks}; trunk {} is tried at once.",
                trunk_index.saturating_add(1),
                next + 1
            ),
        };
    }
    if rule.max_retries == 0 {
        return last(
            ContactStatus::Failed,
            format!("{name}: never retried"),
            format!("The call ended with \"{name}\" on every trunk, and it is never retried."),
        );
    }
    if retry > rule.max_retries {
        let used = rule.max_retries;
        let plural = if used == 1 { "retry" } else { "retries" };
        return last(
            ContactStatus::Exhausted,
            format!("{name}: {used} {plural} used, exhausted"),
            format!(
                "The call ended with \"{name}\" again and its {used} {plural} are used up, so the contact is not called again."
            ),
        );
    }
    let secs = delay_s(policy, rule, retry, random);
    let next_at =
        now_us.saturating_add(i64::try_from(secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX));
    // A failover rule starts its next round on the first trunk; others keep the trunk.
    let next_trunk = if rule.next_trunk { 0 } else { trunk_index };
    RetryDecision {
        status: ContactStatus::Queued,
        next_attempt_at_us: Some(next_at),
        trunk_index: next_trunk,
        rule: format!(
            "{name}: retry {retry} of {} after {secs} s",
            rule.max_retries
        ),
        reason: format!(
            "The call ended with \"{name}\"; retry {retry} of {} is due {}.",
            rule.max_retries,
            human(secs)
        ),
    }
}

/// Replays the earlier attempts of a failover rule's outcome: how many waits (retries) it
/// caused, and how many trunks of the current round (the trailing run of that outcome since
/// the last wait) were already tried.
fn replay_rounds(outcome: &str, history: &[&str], trunks: u32) -> (u32, u32) {
    let mut waits = 0u32;
    let mut tried = 0u32;
    for o in history {
        if *o == outcome {
            tried = tried.saturating_add(1);
            if tried >= trunks {
                waits = waits.saturating_add(1);
                tried = 0;
            }
        } else {
            // Another outcome interrupts the round: the next failure starts a new one.
            tried = 0;
        }
    }
    (waits, tried)
}

/// The wait before retry number `retry` (1-based), whole seconds.
fn delay_s(policy: &RetryPolicy, rule: &RetryRule, retry: u32, random: u64) -> u64 {
    let backoff = if policy.backoff.is_finite() && policy.backoff >= 0.0 {
        policy.backoff
    } else {
        1.0
    };
    let jitter = if policy.jitter.is_nan() || policy.jitter < 0.0 {
        0.0
    } else {
        policy.jitter.min(1.0)
    };
    let cap = policy.max_delay_s as f64;
    let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
    let mut d = rule.after_s as f64 * backoff.powi(exponent);
    if !d.is_finite() || d > cap {
        d = cap;
    }
    // A factor in [1 - jitter, 1 + jitter), the same for the same `random`.
    let unit = (splitmix64(random) >> 11) as f64 / (1u64 << 53) as f64;
    let d = (d * (1.0 + jitter * (2.0 * unit - 1.0))).min(cap).max(0.0);
    // `as` saturates (NaN → 0), so no overflow.
    d.round() as u64
}

/// A well-mixed 64-bit value of `x` (SplitMix64's finaliser), so that near seeds spread.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An outcome name fit for a rule text: at most 64 characters, controls replaced.
fn printable(outcome: &str) -> String {
    outcome
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// When a wait of `secs` ends, for a sentence ("now", "in 45 s", "in 10 min", "in 1 h 5 min").
fn human(secs: u64) -> String {
    match secs {
        0 => "now".to_owned(),
        s if s < 60 => format!("in {s} s"),
        s if s < 3_600 && s % 60 == 0 => format!("in {} min", s / 60),
        s if s < 3_600 => format!("in {} min {} s", s / 60, s % 60),
        s => format!("in {} h {} min", s / 3_600, (s % 3_600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const NOW: i64 = 1_700_000_000_000_000;
    const S: i64 = 1_000_000;

    /// The default policy without jitter, so delays are exact.
    fn exact() -> RetryPolicy {
        RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        }
    }

    fn at(d: &RetryDecision) -> i64 {
        d.next_attempt_at_us.expect("a retry")
    }

    #[test]
    fn busy_retries_after_10_minutes_doubling_at_most_3_times() {
        let p = exact();
        let d = decide(&p, "busy", &[], 0, 1, NOW, 7);
        assert_eq!(d.status, ContactStatus::Queued);
        assert_eq!(at(&d), NOW + 600 * S);
        assert_eq!(d.rule, "busy: retry 1 of 3 after 600 s");
        assert_eq!(
            d.reason,
            "The call ended with \"busy\"; retry 1 of 3 is due in 10 min."
        );
        let d = decide(&p, "busy", &["busy"], 0, 1, NOW, 7);
        assert_eq!(
            (at(&d), d.rule.as_str()),
            (NOW + 1_200 * S, "busy: retry 2 of 3 after 1200 s")
        );
        // Other outcomes in between do not count toward busy's retries.
        let d = decide(&p, "busy", &["busy", "no_answer", "busy"], 0, 1, NOW, 7);
        assert_eq!(
            (at(&d), d.rule.as_str()),
            (NOW + 2_400 * S, "busy: retry 3 of 3 after 2400 s")
        );
        let d = decide(&p, "busy", &["busy", "busy", "busy"], 0, 1, NOW, 7);
        assert_eq!(d.status, ContactStatus::Exhausted);
        assert_eq!(d.next_attempt_at_us, None);
        assert_eq!(d.rule, "busy: 3 retries used, exhausted");
    }

    #[test]
    fn no_answer_retries_after_30_minutes_at_most_3_times() {
        let p = exact();
        let d = decide(&p, "no_answer", &["busy"], 0, 1, NOW, 1);
        assert_eq!(
            (at(&d), d.rule.as_str()),
            (NOW + 1_800 * S, "no_answer: retry 1 of 3 after 1800 s")
        );
        let d = decide(&p, "no_answer", &["no_answer", "no_answer"], 0, 1, NOW, 1);
        assert_eq!(at(&d), NOW + 7_200 * S);
        let d = decide(&p, "no_answer", &["no_answer"; 3], 0, 1, NOW, 1);
        assert_eq!(d.status, ContactStatus::Exhausted);
        assert_eq!(d.rule, "no_answer: 3 retries used, exhausted");
    }

    #[test]
    fn rejected_and_invalid_numbers_are_never_retried() {
        for outcome in ["rejected", "invalid_number"] {
            let d = decide(&RetryPolicy::default(), outcome, &[], 0, 2, NOW, 1);
            assert_eq!(d.status, ContactStatus::Failed);
            assert_eq!(d.next_attempt_at_us, None);
            assert_eq!(d.rule, format!("{outcome}: never retried"));
        }
    }

    #[test]
    fn answered_completes_whatever_the_policy() {
        let mut p = RetryPolicy::default();
        p.rules.insert(
            "answered".to_owned(),
            RetryRule {
                max_retries: 3,
                after_s: 1,
                next_trunk: false,
            },
        );
        let d = decide(&p, "answered", &["busy", "network_error"], 1, 2, NOW, 1);
        assert_eq!(d.status, ContactStatus::Completed);
        assert_eq!(d.next_attempt_at_us, None);
        assert_eq!(d.rule, "answered: completed");
        assert_eq!(d.trunk_index, 1);
    }

    #[test]
    fn an_outcome_without_a_rule_fails_and_says_so() {
        for outcome in ["cancelled", "failed", "martian"] {
            let d = decide(&RetryPolicy::default(), outcome, &[], 0, 1, NOW, 1);
            assert_eq!(d.status, ContactStatus::Failed);
            assert_eq!(d.rule, format!("{outcome}: no rule, not retried"));
            assert!(d.reason.contains("no rule"), "{}", d.reason);
        }
        let long = "x\n".repeat(500);
        let d = decide(&RetryPolicy::default(), &long, &[], 0, 1, NOW, 1);
        assert!(d.rule.len() < 100 && !d.rule.contains('\n'), "{}", d.rule);
    }

    #[test]
    fn network_error_on_one_trunk_waits_5_minutes() {
        let p = exact();
        for trunks in [0, 1] {
            let d = decide(&p, "network_error", &[], 0, trunks, NOW, 1);
            assert_eq!(d.rule, "network_error: retry 1 of 3 after 300 s");
            assert_eq!((at(&d), d.trunk_index), (NOW + 300 * S, 0));
        }
        let d = decide(&p, "network_error", &["network_error"], 0, 1, NOW, 1);
        assert_eq!(d.rule, "network_error: retry 2 of 3 after 600 s");
        let d = decide(&p, "network_error", &["network_error"; 3], 0, 1, NOW, 1);
        assert_eq!(d.status, ContactStatus::Exhausted);
        assert_eq!(d.rule, "network_error: 3 retries used, exhausted");
    }

    #[test]
    fn network_error_fails_over_across_two_trunks_then_waits_from_the_first() {
        let p = exact();
        let d = decide(&p, "network_error", &[], 0, 2, NOW, 1);
        assert_eq!(d.status, ContactStatus::Queued);
        assert_eq!((at(&d), d.trunk_index), (NOW, 1));
        assert_eq!(d.rule, "network_error: next trunk (2 of 2) at once");
        let ne = "network_error";
        let d = decide(&p, ne, &[ne], 1, 2, NOW, 1);
        assert_eq!((at(&d), d.trunk_index), (NOW + 300 * S, 0));
        assert_eq!(d.rule, "network_error: retry 1 of 3 after 300 s");
        // Round 2 starts on trunk 0 again, fails over, then waits twice as long.
        let d = decide(&p, ne, &[ne, ne], 0, 2, NOW, 1);
        assert_eq!(
            (at(&d), d.trunk_index, d.rule.as_str()),
            (NOW, 1, "network_error: next trunk (2 of 2) at once")
        );
        let d = decide(&p, ne, &[ne; 3], 1, 2, NOW, 1);
        assert_eq!((at(&d), d.trunk_index), (NOW + 600 * S, 0));
        let d = decide(&p, ne, &[ne; 7], 1, 2, NOW, 1);
        assert_eq!(d.status, ContactStatus::Exhausted, "{}", d.rule);
    }

    #[test]
    fn network_error_fails_over_across_three_trunks() {
        let p = exact();
        let ne = "network_error";
        let d = decide(&p, ne, &[], 0, 3, NOW, 1);
        assert_eq!(
            (d.trunk_index, d.rule.as_str()),
            (1, "network_error: next trunk (2 of 3) at once")
        );
        let d = decide(&p, ne, &[ne], 1, 3, NOW, 1);
        assert_eq!(
            (d.trunk_index, d.rule.as_str()),
            (2, "network_error: next trunk (3 of 3) at once")
        );
        assert_eq!(at(&d), NOW);
        let d = decide(&p, ne, &[ne, ne], 2, 3, NOW, 1);
        assert_eq!((d.trunk_index, at(&d)), (0, NOW + 300 * S));
        // A busy in between ends the round: the next network error starts a new one on
        // whichever trunk it happened, and wraps around.
        let d = decide(&p, ne, &[ne, "busy"], 1, 3, NOW, 1);
        assert_eq!(
            (d.trunk_index, d.rule.as_str()),
            (2, "network_error: next trunk (2 of 3) at once")
        );
        let d = decide(&p, ne, &[ne, "busy", ne], 2, 3, NOW, 1);
        assert_eq!(
            (d.trunk_index, d.rule.as_str()),
            (0, "network_error: next trunk (3 of 3) at once")
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            rules: BTreeMap::from([(
                "busy".to_owned(),
                RetryRule {
                    max_retries: 10,
                    after_s: 100,
                    next_trunk: false,
                },
            )]),
            backoff: 3.0,
            jitter: 0.0,
            max_delay_s: 5_000,
        };
        let delays: Vec<i64> = (0..6)
            .map(|k| (at(&decide(&p, "busy", &vec!["busy"; k], 0, 1, NOW, 1)) - NOW) / S)
            .collect();
        assert_eq!(delays, [100, 300, 900, 2_700, 5_000, 5_000]);
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_spreads() {
        let p = RetryPolicy::default(); // ±20 %
        let mut seen = std::collections::BTreeSet::new();
        for random in 0..2_000u64 {
            let d = decide(&p, "busy", &["busy"], 0, 1, NOW, random);
            let secs = (at(&d) - NOW) / S;
            assert!((960..=1_440).contains(&secs), "{secs} s from {random}");
            assert_eq!(
                d,
                decide(&p, "busy", &["busy"], 0, 1, NOW, random),
                "deterministic"
            );
            seen.insert(secs);
        }
        assert!(
            seen.len() > 300,
            "the jitter spreads: {} distinct delays",
            seen.len()
        );
        assert!(
            seen.first() < Some(&980) && seen.last() > Some(&1_420),
            "{seen:?}"
        );
        // At the cap, jitter only shortens.
        let capped = RetryPolicy {
            max_delay_s: 700,
            ..RetryPolicy::default()
        };
        for random in 0..200u64 {
            let secs = (at(&decide(&capped, "busy", &["busy"], 0, 1, NOW, random)) - NOW) / S;
            assert!((560..=700).contains(&secs), "{secs}");
        }
    }

    #[test]
    fn bad_policy_numbers_fall_back_and_never_overflow() {
        for (backoff, jitter) in [
            (f64::NAN, f64::NAN),
            (-2.0, -1.0),
            (f64::INFINITY, f64::INFINITY),
        ] {
            let p = RetryPolicy {
                backoff,
                jitter,
                ..RetryPolicy::default()
            };
            let d = decide(&p, "busy", &["busy"], 0, 1, NOW, 3);
            let secs = (at(&d) - NOW) / S;
            if jitter.is_infinite() {
                assert!(secs <= 1_200, "{secs}"); // jitter capped at 100 %
            } else {
                assert_eq!(
                    secs, 600,
                    "backoff {backoff} counts as 1, jitter {jitter} as 0"
                );
            }
        }
        let huge = RetryPolicy {
            rules: BTreeMap::from([(
                "busy".to_owned(),
                RetryRule {
                    max_retries: u32::MAX,
                    after_s: u64::MAX,
                    next_trunk: false,
                },
            )]),
            backoff: 1e300,
            jitter: 0.5,
            max_delay_s: u64::MAX,
        };
        let d = decide(
            &huge,
            "busy",
            &["busy"; 40],
            u32::MAX,
            u32::MAX,
            i64::MAX - 5,
            u64::MAX,
        );
        assert_eq!(d.next_attempt_at_us, Some(i64::MAX));
        assert_eq!(d.trunk_index, 0, "u32::MAX % u32::MAX");
    }

    #[test]
    fn a_failover_rule_without_retries_tries_every_trunk_once() {
        let mut p = exact();
        p.rules
            .get_mut("network_error")
            .expect("default")
            .max_retries = 0;
        let ne = "network_error";
        assert_eq!(decide(&p, ne, &[], 0, 2, NOW, 1).trunk_index, 1);
        let d = decide(&p, ne, &[ne], 1, 2, NOW, 1);
        assert_eq!(
            (d.status, d.rule.as_str()),
            (ContactStatus::Failed, "network_error: never retried")
        );
    }

    #[test]
    fn an_overridden_policy_parses_from_the_campaign_json() {
        let p: RetryPolicy = serde_json::from_str(
            r#"{"rules": {"busy": {"max_retries": 1, "after_s": 60}}, "jitter": 0}"#,
        )
        .expect("valid");
        let d = decide(&p, "busy", &[], 0, 1, NOW, 1);
        assert_eq!(d.rule, "busy: retry 1 of 1 after 60 s");
        assert_eq!(
            decide(&p, "busy", &["busy"], 0, 1, NOW, 1).status,
            ContactStatus::Exhausted
        );
        // Naming rules replaces the whole table: no_answer has none now.
        assert_eq!(
            decide(&p, "no_answer", &[], 0, 1, NOW, 1).rule,
            "no_answer: no rule, not retried"
        );
    }

    fn policy() -> impl Strategy<Value = RetryPolicy> {
        let float = prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-1.0),
            0.0..4.0f64
        ];
        let rule = (any::<u32>(), any::<u64>(), any::<bool>()).prop_map(
            |(max_retries, after_s, next_trunk)| RetryRule {
                max_retries,
                after_s,
                next_trunk,
            },
        );
        (
            proptest::collection::btree_map("[a-z_]{1,12}|busy|network_error", rule, 0..5),
            float.clone(),
            float,
            any::<u64>(),
        )
            .prop_map(|(rules, backoff, jitter, max_delay_s)| RetryPolicy {
                rules,
                backoff,
                jitter,
                max_delay_s,
            })
    }

    proptest! {
        #[test]
        fn decide_never_panics_and_never_schedules_the_past(
            policy in prop_oneof![Just(RetryPolicy::default()), policy()],
            outcome in "busy|no_answer|network_error|rejected|answered|[a-z_]{0,10}|\\PC{0,80}",
            history in proptest::collection::vec("busy|no_answer|network_error|rejected|[a-z]{0,4}", 0..30),
            trunk_index in any::<u32>(),
            trunk_count in prop_oneof![0u32..4, any::<u32>()],
            now_us in any::<i64>(),
            random in any::<u64>(),
        ) {
            let history: Vec<&str> = history.iter().map(String::as_str).collect();
            let d = decide(&policy, &outcome, &history, trunk_index, trunk_count, now_us, random);
            if let Some(next) = d.next_attempt_at_us {
                prop_assert!(next >= now_us);
                prop_assert_eq!(d.status, ContactStatus::Queued);
            } else {
                prop_assert!(d.status.is_final());
            }
            if trunk_count > 0 {
                prop_assert!(d.trunk_index < trunk_count);
            }
            prop_assert!(!d.rule.is_empty() && !d.reason.is_empty());
        }
    }
}
