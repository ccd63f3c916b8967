//! Inbound protection of the SIP port: a per-source rate limit applied before a message is
//! parsed, so that a flood of requests or garbage costs a hash lookup per datagram and never
//! reaches the endpoint, the engine or a call.
//!
//! # What is limited
//! Every UDP datagram and every TCP frame counts against a token bucket of its source IP
//! address ([`InboundLimits::per_source_rate`] per second, bursts up to
//! [`InboundLimits::per_source_burst`]). Over the limit a message is dropped silently (an
//! answer would make us an amplifier) and counted as `rate_limit` in
//! [`super::sip::SipStats::dropped`].
//!
//! # What is never limited
//! The peers of live calls: a source we sent a request to (a trunk we register with or
//! call through, the other end of an outbound call) or a 2xx to an INVITE (the caller of an
//! answered inbound call) is *trusted* for [`InboundLimits::trust_for`] after the last such
//! message, and its messages skip the buckets. Nobody becomes trusted by sending: only what
//! we send makes a peer trusted, so a flooder cannot buy itself out of the limit. In-dialog
//! traffic of live calls (re-INVITEs, BYEs, session refreshes) therefore always gets through.
//!
//! # Bounds
//! At most [`InboundLimits::max_sources`] buckets and as many trusted peers are kept. Sources
//! beyond that share one overflow bucket (a flood from many spoofed addresses then throttles
//! new sources, never trusted ones). Full buckets and expired trust are swept once a second.
//!
//! Sans-IO: the caller passes `now` (the driver reads the clock).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Settings of the per-source rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundLimits {
    /// Messages per second a source IP may send (sustained); 0 turns the limit off.
    pub per_source_rate: u32,
    /// How many messages a source may send at once before the rate applies (at least 1).
    pub per_source_burst: u32,
    /// The most sources tracked (buckets, and trusted peers); beyond it new sources share one
    /// bucket.
    pub max_sources: usize,
    /// How long a peer stays trusted after the last request or INVITE 2xx we sent it.
    pub trust_for: Duration,
}

/// Default [`InboundLimits::per_source_rate`]: far above what one phone or one carrier
/// sends before we have answered it, far below a flood.
pub const DEFAULT_PER_SOURCE_RATE: u32 = 200;
/// Default [`InboundLimits::max_sources`].
pub const DEFAULT_MAX_SOURCES: usize = 10_000;
/// Default [`InboundLimits::trust_for`]: longer than a session-timer interval.
pub const DEFAULT_TRUST_FOR: Duration = Duration::from_secs(3600);

impl Default for InboundLimits {
    fn default() -> InboundLimits {
        InboundLimits {
            per_source_rate: DEFAULT_PER_SOURCE_RATE,
            per_source_burst: DEFAULT_PER_SOURCE_RATE * 2,
            max_sources: DEFAULT_MAX_SOURCES,
            trust_for: DEFAULT_TRUST_FOR,
        }
    }
}

/// How often full buckets and expired trust are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    /// Refills for the time since the last message, then takes one token if there is one.
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, now: Instant, rate: f64, burst: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * rate >= burst
    }
}

/// The per-source limiter. See the [module documentation](self).
#[derive(Debug)]
pub struct SourceLimiter {
    limits: InboundLimits,
    buckets: HashMap<IpAddr, Bucket>,
    /// Shared by the sources that found the table full.
    overflow: Option<Bucket>,
    /// Trusted peers and until when.
    trusted: HashMap<IpAddr, Instant>,
    next_sweep: Option<Instant>,
}

impl SourceLimiter {
    /// A limiter with nothing tracked.
    pub fn new(mut limits: InboundLimits) -> SourceLimiter {
        limits.per_source_burst = limits.per_source_burst.max(1);
        SourceLimiter {
            limits,
            buckets: HashMap::new(),
            overflow: None,
            trusted: HashMap::new(),
            next_sweep: None,
        }
    }

    /// Whether a message from `ip` arriving `now` may be processed.
    pub fn admit(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.limits.per_source_rate == 0 {
            return true;
        }
        self.sweep(now);
        if self.trusted.get(&ip).is_some_and(|until| *until > now) {
            return true;
        }
        let rate = f64::from(self.limits.per_source_rate);
        let burst = f64::from(self.limits.per_source_burst);
        if let Some(bucket) = self.buckets.get_mut(&ip) {
            return bucket.take(now, rate, burst);
        }
        if self.buckets.len() < self.limits.max_sources {
            let mut bucket = Bucket::full(burst, now);
            let ok = bucket.take(now, rate, burst);
            self.buckets.insert(ip, bucket);
            return ok;
        }
        self.overflow
            .get_or_insert_with(|| Bucket::full(burst, now))
            .take(now, rate, burst)
    }

    /// Trusts `ip` until `trust_for` after `now` (we sent it a request or an INVITE 2xx).
    pub fn trust(&mut self, now: Instant, ip: IpAddr) {
        if self.limits.per_source_rate == 0 {
            return;
        }
        let until = now + self.limits.trust_for;
        if let Some(t) = self.trusted.get_mut(&ip) {
            *t = until;
        } else if self.trusted.len() < self.limits.max_sources {
            self.trusted.insert(ip, until);
            // Its old bucket no longer matters.
            self.buckets.remove(&ip);
        }
    }

    /// Whether `ip` is trusted at `now`.
    pub fn is_trusted(&self, now: Instant, ip: IpAddr) -> bool {
        self.trusted.get(&ip).is_some_and(|until| *until > now)
    }

    /// Sources tracked now: (buckets, trusted peers).
    pub fn tracked(&self) -> (usize, usize) {
        (self.buckets.len(), self.trusted.len())
    }

    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        self.next_sweep = Some(now + SWEEP_EVERY);
        let rate = f64::from(self.limits.per_source_rate);
        let burst = f64::from(self.limits.per_source_burst);
        self.buckets.retain(|_, b| !b.is_full(now, rate, burst));
        if self.overflow.is_some_and(|b| b.is_full(now, rate, burst)) {
            self.overflow = None;
        }
        self.trusted.retain(|_, until| *until > now);
    }
}

/// Whether the bytes we are about to send make their destination a trusted peer: a request,
/// or a 2xx response to an INVITE (its CSeq line names INVITE). Provisional and error
/// responses, and 2xx to anything else (an OPTIONS anybody may send), do not.
pub fn trusts_destination(bytes: &[u8]) -> bool {
    if !bytes.starts_with(b"SIP/2.0 ") {
        // A request (or keep-alive CRLFs, which are sent only to peers we talk to).
        return true;
    }
    if bytes.get(8) != Some(&b'2') {
        return false;
    }
    // The CSeq line of the head (CSeq has no compact form).
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(bytes.len());
    bytes[..head_end]
        .split(|b| *b == b'\n')
        .find(|line| line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"cseq:"))
        .is_some_and(|line| {
            line.split(|b| b.is_ascii_whitespace())
                .any(|w| w.eq_ignore_ascii_case(b"INVITE"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn limits(rate: u32, burst: u32, max_sources: usize) -> InboundLimits {
        InboundLimits {
            per_source_rate: rate,
            per_source_burst: burst,
            max_sources,
            trust_for: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(limits(10, 5, 100));
        let admitted = (0..20).filter(|_| l.admit(t0, ip(1))).count();
        assert_eq!(admitted, 5, "the burst");
        // One second later: 10 more tokens (capped by the burst of 5).
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..20).filter(|_| l.admit(t1, ip(1))).count(), 5);
        // 100 ms later: one token.
        let t2 = t1 + Duration::from_millis(100);
        assert_eq!((0..20).filter(|_| l.admit(t2, ip(1))).count(), 1);
        // Another source is not affected.
        assert!(l.admit(t2, ip(2)));
    }

    #[test]
    fn sustained_flood_is_held_to_the_rate() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(limits(100, 200, 100));
        // 10,000 messages over 10 s, evenly.
        let mut admitted = 0;
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i * 1000);
            if l.admit(now, ip(9)) {
                admitted += 1;
            }
        }
        // 200 (burst) + 100/s * 10 s, give or take one.
        assert!((1190..=1201).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn trusted_peers_are_never_limited_until_trust_expires() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(limits(1, 1, 100));
        l.trust(t0, ip(3));
        assert!((0..1000).all(|_| l.admit(t0, ip(3))));
        let later = t0 + Duration::from_secs(11);
        assert!(!l.is_trusted(later, ip(3)));
        assert!(l.admit(later, ip(3)));
        assert!(!l.admit(later, ip(3)), "limited again once trust expired");
    }

    #[test]
    fn sources_beyond_the_table_share_one_bucket_and_the_table_is_swept() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(limits(1, 2, 3));
        for n in 0..3 {
            assert!(l.admit(t0, ip(n)));
        }
        // The table is full: the next sources share one bucket of 2.
        assert!(l.admit(t0, ip(10)));
        assert!(l.admit(t0, ip(11)));
        assert!(!l.admit(t0, ip(12)));
        assert_eq!(l.tracked().0, 3);
        // Once their buckets are full again, sources are forgotten.
        let later = t0 + Duration::from_secs(5);
        assert!(l.admit(later, ip(20)));
        assert_eq!(l.tracked().0, 1);
    }

    #[test]
    fn zero_rate_turns_the_limit_off() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(limits(0, 0, 1));
        assert!((0..10_000).all(|n| l.admit(t0, ip((n % 250) as u8))));
        assert_eq!(l.tracked(), (0, 0));
    }

    #[test]
    fn only_requests_and_invite_2xx_trust_their_destination() {
        assert!(trusts_destination(
            b"INVITE sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n"
        ));
        assert!(trusts_destination(
            b"SIP/2.0 200 OK\r\nVia: x\r\nCSeq: 7 INVITE\r\n\r\nv=0"
        ));
        assert!(trusts_destination(
            b"SIP/2.0 200 OK\r\ncseq:  7   invite\r\n\r\n"
        ));
        assert!(!trusts_destination(
            b"SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\n\r\n"
        ));
        assert!(!trusts_destination(
            b"SIP/2.0 180 Ringing\r\nCSeq: 1 INVITE\r\n\r\n"
        ));
        assert!(!trusts_destination(
            b"SIP/2.0 503 Service Unavailable\r\nCSeq: 1 INVITE\r\n\r\n"
        ));
        // A body that mentions INVITE does not count.
        assert!(!trusts_destination(
            b"SIP/2.0 200 OK\r\nCSeq: 1 MESSAGE\r\n\r\nCSeq: 1 INVITE"
        ));
    }
}
