//! The per-key rate limit: a token bucket per API key id, in memory (per process).
//!
//! Each key holds up to `burst` tokens and earns `rate_per_s` per second; a request spends
//! one. An empty bucket answers 429 `rate_limited` with `Retry-After` = the whole seconds until
//! the next token. Buckets live in one mutex-guarded map: the critical section is a few
//! arithmetic operations with no await inside.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Buckets idle this long are dropped (they are full again by then anyway).
const IDLE: Duration = Duration::from_secs(600);
/// Prune idle buckets when the map grows past this.
const PRUNE_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by API key id.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_s: u32,
    burst: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `rate_per_s` tokens a second, up to `burst` (at least 1); `rate_per_s == 0` disables it.
    pub fn new(rate_per_s: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate_per_s,
            burst: burst.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Spends a token of `key` now: `Err(seconds)` to wait when there is none.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, crate::clock::now())
    }

    /// [`RateLimiter::check`] at a given time.
    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.rate_per_s == 0 {
            return Ok(());
        }
        let rate = f64::from(self.rate_per_s);
        let burst = f64::from(self.burst);
        // A poisoned map still holds valid buckets (no invariant spans two entries).
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > PRUNE_AT {
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < IDLE);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let earned = now.saturating_duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + earned).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate;
            // Retry-After is whole seconds (RFC 9110 §10.2.3); round up so a client that
            // obeys it finds a token.
            Err((wait.ceil() as u64).max(1))
        }
    }
}

/// Failed authentications an address may make per minute (and in a burst) before its
/// requests are refused with 429 `auth_rate_limited`.
pub const AUTH_FAILURES_PER_MIN: u32 = 20;

/// Failed authentications per source address: a token bucket of [`AUTH_FAILURES_PER_MIN`]
/// tokens that refills at that rate per minute; each 401 spends one. While the bucket of an
/// address is empty, every request from it that needs a key is refused *before* the key is
/// looked up (429 with `Retry-After`), a valid key included: otherwise a client guessing keys
/// would still learn which guess is right. IPv6 addresses count per /64 (one host usually
/// holds a whole /64).
#[derive(Debug)]
pub struct AuthFailures {
    per_min: u32,
    buckets: Mutex<HashMap<std::net::IpAddr, Bucket>>,
}

impl AuthFailures {
    /// `per_min` failures a minute per address; 0 disables the limit.
    pub fn new(per_min: u32) -> AuthFailures {
        AuthFailures {
            per_min,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn key(ip: std::net::IpAddr) -> std::net::IpAddr {
        match ip {
            std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                std::net::IpAddr::from(octets)
            }
            std::net::IpAddr::V6(v6) => std::net::IpAddr::V4(v6.to_ipv4_mapped().expect("mapped")),
            v4 => v4,
        }
    }

    /// `Err(seconds)` while `ip` has no failure left at `now`.
    pub fn check_at(&self, ip: std::net::IpAddr, now: Instant) -> Result<(), u64> {
        self.update(ip, now, false)
    }

    /// Counts a failed authentication of `ip` at `now`.
    pub fn fail_at(&self, ip: std::net::IpAddr, now: Instant) {
        let _ = self.update(ip, now, true);
    }

    fn update(&self, ip: std::net::IpAddr, now: Instant, spend: bool) -> Result<(), u64> {
        if self.per_min == 0 {
            return Ok(());
        }
        let rate = f64::from(self.per_min) / 60.0;
        let burst = f64::from(self.per_min);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let key = AuthFailures::key(ip);
        if !spend && !buckets.contains_key(&key) {
            return Ok(());
        }
        if buckets.len() > PRUNE_AT {
            // A bucket that has refilled is the same as none: the map holds only addresses
            // that failed within about the last minute.
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let earned = now.saturating_duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + earned).min(burst);
        bucket.at = now;
        if spend {
            bucket.tokens = (bucket.tokens - 1.0).max(0.0);
            return Ok(());
        }
        if bucket.tokens >= 1.0 {
            Ok(())
        } else {
            Err((((1.0 - bucket.tokens) / rate).ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_and_forgiven_with_time() {
        let l = AuthFailures::new(20);
        let t0 = Instant::now();
        let ip: std::net::IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..20 {
            assert_eq!(l.check_at(ip, t0), Ok(()));
            l.fail_at(ip, t0);
        }
        assert_eq!(l.check_at(ip, t0), Err(3));
        // Another address is not affected; the same /64 is.
        assert_eq!(l.check_at("192.0.2.2".parse().expect("ip"), t0), Ok(()));
        let v6 = AuthFailures::new(1);
        v6.fail_at("2001:db8::1".parse().expect("ip"), t0);
        assert!(v6.check_at("2001:db8::2".parse().expect("ip"), t0).is_err());
        assert!(
            v6.check_at("2001:db8:0:1::2".parse().expect("ip"), t0)
                .is_ok()
        );
        // 3 s at 20/min earn one failure back.
        assert_eq!(l.check_at(ip, t0 + Duration::from_secs(3)), Ok(()));
    }

    #[test]
    fn addresses_whose_failures_are_forgiven_are_forgotten() {
        let l = AuthFailures::new(20);
        let t0 = Instant::now();
        for i in 0..=PRUNE_AT as u32 {
            l.fail_at(std::net::IpAddr::from((0x0a00_0000 + i).to_be_bytes()), t0);
        }
        l.fail_at(
            "192.0.2.1".parse().expect("ip"),
            t0 + Duration::from_secs(61),
        );
        let left = l.buckets.lock().expect("lock").len();
        assert_eq!(left, 1);
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_until_refilled() {
        let l = RateLimiter::new(2, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check_at("k", t0), Ok(()));
        }
        assert_eq!(l.check_at("k", t0), Err(1));
        // Another key has its own bucket.
        assert_eq!(l.check_at("other", t0), Ok(()));
        // Half a second at 2/s earns one token.
        assert_eq!(l.check_at("k", t0 + Duration::from_millis(500)), Ok(()));
        assert!(l.check_at("k", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn a_zero_rate_disables_the_limit() {
        let l = RateLimiter::new(0, 0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.check_at("k", t0), Ok(()));
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let l = RateLimiter::new(1, 1);
        let t0 = Instant::now();
        assert_eq!(l.check_at("k", t0), Ok(()));
        assert_eq!(l.check_at("k", t0 + Duration::from_millis(100)), Err(1));
        let slow = RateLimiter::new(1, 1);
        assert_eq!(slow.check_at("k", t0), Ok(()));
        assert_eq!(slow.check_at("k", t0), Err(1));
    }
}
