//! Inbound protection: what keeps a flood of requests or garbage from disturbing live calls.
//!
//! Two layers, both counted in `callplane_sip_dropped_total{reason}`:
//! - the SIP driver's per-source rate limit, before parsing ([`crate::net::inbound`],
//!   reason `rate_limit`): settings in [`InboundProtection::sip`];
//! - here, a bound on *half-open* inbound INVITEs: calls we received and have not yet seen
//!   the ACK of our 2xx for (ringing, early media, waiting for a script to answer). Over
//!   [`InboundProtection::max_half_open`] in all, or [`InboundProtection::max_half_open_per_source`]
//!   from one source IP, a new INVITE is refused with a stateless 503 + Retry-After (reasons
//!   `half_open` and `half_open_per_source`): no transaction, no call, no RTP ports are
//!   spent on it, and the slots of `max_calls` stay free for answered and outbound calls.
//!
//! Who may call at all (trunks, allowed addresses) is the router's decision
//! ([`super::InboundRouter`]), taken before this bound is checked.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::net::inbound::InboundLimits;

/// The inbound protection settings of an engine (the default: the SIP driver's default
/// rate limit, half-open bounds derived from `max_calls`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboundProtection {
    /// The SIP driver's per-source rate limit.
    pub sip: InboundLimits,
    /// The most inbound INVITEs not yet answered and acknowledged, in all (`Some(0)`: no
    /// bound; `None`: half of the engine's `max_calls`, so that half of the slots always
    /// stay for answered and outbound calls).
    pub max_half_open: Option<usize>,
    /// The most of them from one source IP (`Some(0)`: no bound; `None`: a quarter of
    /// `max_calls`).
    pub max_half_open_per_source: Option<usize>,
}

impl InboundProtection {
    /// The bounds in force for an engine of `max_calls`: (in all, per source); 0 is none.
    pub fn half_open_bounds(&self, max_calls: usize) -> (usize, usize) {
        (
            self.max_half_open.unwrap_or((max_calls / 2).max(1)),
            self.max_half_open_per_source
                .unwrap_or((max_calls / 4).max(1)),
        )
    }
}

/// The half-open inbound calls, by SIP Call-ID, with their source.
#[derive(Debug, Default)]
pub(crate) struct HalfOpen {
    by_call: HashMap<String, IpAddr>,
    per_source: HashMap<IpAddr, usize>,
}

impl HalfOpen {
    /// `Err(reason)` when a new INVITE from `ip` would exceed a bound (`bounds`: in all, per
    /// source, as [`InboundProtection::half_open_bounds`] gives them; 0 is none).
    pub(crate) fn check(&self, bounds: (usize, usize), ip: IpAddr) -> Result<(), &'static str> {
        let (all, per_source) = bounds;
        if all > 0 && self.by_call.len() >= all {
            return Err("half_open");
        }
        if per_source > 0 && self.per_source.get(&ip).copied().unwrap_or(0) >= per_source {
            return Err("half_open_per_source");
        }
        Ok(())
    }

    /// A new inbound call from `ip`.
    pub(crate) fn insert(&mut self, call_id: String, ip: IpAddr) {
        if let Some(old) = self.by_call.insert(call_id, ip) {
            self.release(old);
        }
        *self.per_source.entry(ip).or_insert(0) += 1;
    }

    /// The call was acknowledged, or ended: no longer half-open.
    pub(crate) fn remove(&mut self, call_id: &str) {
        if let Some(ip) = self.by_call.remove(call_id) {
            self.release(ip);
        }
    }

    /// Forgets every call.
    pub(crate) fn clear(&mut self) {
        self.by_call.clear();
        self.per_source.clear();
    }

    /// How many calls are half-open now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_call.len()
    }

    fn release(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_source.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(all: usize, per_source: usize) -> (usize, usize) {
        InboundProtection {
            max_half_open: Some(all),
            max_half_open_per_source: Some(per_source),
            ..InboundProtection::default()
        }
        .half_open_bounds(100)
    }

    #[test]
    fn default_bounds_follow_max_calls() {
        let p = InboundProtection::default();
        assert_eq!(p.half_open_bounds(100), (50, 25));
        assert_eq!(p.half_open_bounds(1), (1, 1));
    }

    #[test]
    fn bounds_in_all_and_per_source_and_frees_on_remove() {
        let a = IpAddr::from([192, 0, 2, 1]);
        let b = IpAddr::from([192, 0, 2, 2]);
        let l = limits(3, 2);
        let mut h = HalfOpen::default();
        h.insert("1".into(), a);
        h.insert("2".into(), a);
        assert_eq!(h.check(l, a), Err("half_open_per_source"));
        assert_eq!(h.check(l, b), Ok(()));
        h.insert("3".into(), b);
        assert_eq!(h.check(l, b), Err("half_open"));
        h.remove("1");
        assert_eq!(h.check(l, a), Ok(()));
        h.remove("1");
        h.remove("unknown");
        assert_eq!(h.len(), 2);
        h.remove("2");
        h.remove("3");
        assert_eq!(h.len(), 0);
        assert!(h.per_source.is_empty());
    }

    #[test]
    fn zero_means_no_bound() {
        let a = IpAddr::from([192, 0, 2, 1]);
        let mut h = HalfOpen::default();
        for n in 0..1000 {
            h.insert(n.to_string(), a);
        }
        assert_eq!(h.check(limits(0, 0), a), Ok(()));
    }

    #[test]
    fn a_reused_call_id_counts_once() {
        let a = IpAddr::from([192, 0, 2, 1]);
        let b = IpAddr::from([192, 0, 2, 2]);
        let mut h = HalfOpen::default();
        h.insert("x".into(), a);
        h.insert("x".into(), b);
        assert_eq!(h.len(), 1);
        assert_eq!(h.per_source.get(&a), None);
        assert_eq!(h.per_source.get(&b), Some(&1));
        h.clear();
        assert_eq!(h.len(), 0);
    }
}
