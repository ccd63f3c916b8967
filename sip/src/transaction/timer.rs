//! RFC 3261 timers as data: one table of deadlines per transaction, indexed by [`Timer`].
//!
//! Every timer of RFC 3261 Appendix A (Table 4) that a transaction uses is here, with the two
//! that RFC 6026 adds (L and M). A transaction arms a timer by writing its deadline into the
//! table; the driver asks for the earliest deadline with `poll_timeout()` and calls
//! `handle_timeout(now)` when it is reached. Nothing here reads the clock.

use std::time::{Duration, Instant};

use super::Transport;

/// The transaction timers of RFC 3261 §17 (Appendix A, Table 4) and RFC 6026.
///
/// Timer C (the proxy INVITE timer of §16.6) belongs to a proxy core, not to a transaction, and
/// is not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// INVITE request retransmit interval, unreliable transports only; initially T1, doubling.
    A,
    /// INVITE client transaction timeout: 64*T1.
    B,
    /// Wait time for response retransmissions in the INVITE client's Completed state:
    /// at least 32 s on unreliable transports, 0 on reliable ones.
    D,
    /// Non-INVITE request retransmit interval, unreliable only; T1 doubling up to T2.
    E,
    /// Non-INVITE client transaction timeout: 64*T1.
    F,
    /// INVITE final response retransmit interval, unreliable only; T1 doubling up to T2.
    G,
    /// Wait time for ACK receipt in the INVITE server's Completed state: 64*T1.
    H,
    /// Wait time for ACK retransmissions in the Confirmed state: T4 (unreliable), 0 (reliable).
    I,
    /// Wait time for non-INVITE request retransmissions: 64*T1 (unreliable), 0 (reliable).
    J,
    /// Wait time for non-INVITE response retransmissions: T4 (unreliable), 0 (reliable).
    K,
    /// RFC 6026: wait time for accepted INVITE request retransmissions (server): 64*T1.
    L,
    /// RFC 6026: wait time for retransmissions of 2xx responses (client): 64*T1.
    M,
}

impl Timer {
    /// Every timer, in table order.
    pub const ALL: [Timer; 12] = [
        Timer::A,
        Timer::B,
        Timer::D,
        Timer::E,
        Timer::F,
        Timer::G,
        Timer::H,
        Timer::I,
        Timer::J,
        Timer::K,
        Timer::L,
        Timer::M,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// The base timer values of RFC 3261 §17.1.1.1 and §17.1.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate; default 500 ms.
    pub t1: Duration,
    /// The maximum retransmit interval for non-INVITE requests and INVITE responses; default 4 s.
    pub t2: Duration,
    /// Maximum duration a message will remain in the network; default 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64*T1: Timers B, F, H, L and M (and J on unreliable transports).
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }

    /// The first retransmit interval (Timers A, E, G), or `None` on a reliable transport, where
    /// the request or response is never retransmitted by the transaction.
    pub fn retransmit(&self, transport: Transport) -> Option<Duration> {
        (!transport.is_reliable()).then_some(self.t1)
    }

    /// Timer D: "at least 32 seconds for unreliable transports" and "zero seconds for reliable
    /// transports" (RFC 3261 §17.1.1.2). With a larger T1 it grows to 64*T1 so that it still
    /// outlives the server's Timer H.
    pub fn timer_d(&self, transport: Transport) -> Duration {
        if transport.is_reliable() {
            Duration::ZERO
        } else {
            Duration::from_secs(32).max(self.t1x64())
        }
    }

    /// Timer I: T4 on unreliable transports, 0 on reliable ones (§17.2.1).
    pub fn timer_i(&self, transport: Transport) -> Duration {
        if transport.is_reliable() {
            Duration::ZERO
        } else {
            self.t4
        }
    }

    /// Timer J: 64*T1 on unreliable transports, 0 on reliable ones (§17.2.2).
    pub fn timer_j(&self, transport: Transport) -> Duration {
        if transport.is_reliable() {
            Duration::ZERO
        } else {
            self.t1x64()
        }
    }

    /// Timer K: T4 on unreliable transports, 0 on reliable ones (§17.1.2.2).
    pub fn timer_k(&self, transport: Transport) -> Duration {
        if transport.is_reliable() {
            Duration::ZERO
        } else {
            self.t4
        }
    }
}

/// A table of deadlines, one slot per [`Timer`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    at: [Option<Instant>; 12],
}

impl TimerTable {
    /// Arm `timer` to fire `after` from `now` (a zero duration fires on the next check).
    pub(crate) fn arm(&mut self, timer: Timer, now: Instant, after: Duration) {
        self.at[timer.index()] = Some(now + after);
    }

    /// Disarm `timer`.
    pub(crate) fn cancel(&mut self, timer: Timer) {
        self.at[timer.index()] = None;
    }

    /// Disarm every timer.
    pub(crate) fn cancel_all(&mut self) {
        self.at = [None; 12];
    }

    /// The deadline of `timer`, if armed.
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer.index()]
    }

    /// The earliest armed deadline.
    pub(crate) fn earliest(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Take the timer that is due at `now` with the earliest deadline (ties in table order),
    /// disarming it.
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<Timer> {
        let mut best: Option<(Instant, Timer)> = None;
        for timer in Timer::ALL {
            if let Some(at) = self.at[timer.index()]
                && at <= now
                && best.is_none_or(|(b, _)| at < b)
            {
                best = Some((at, timer));
            }
        }
        let (_, timer) = best?;
        self.cancel(timer);
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reliable_transport_zeroes_d_i_j_k_and_disables_retransmits() {
        let c = TimerConfig::default();
        assert_eq!(c.retransmit(Transport::Tcp), None);
        assert_eq!(c.timer_d(Transport::Tcp), Duration::ZERO);
        assert_eq!(c.timer_i(Transport::Tls), Duration::ZERO);
        assert_eq!(c.timer_j(Transport::Tcp), Duration::ZERO);
        assert_eq!(c.timer_k(Transport::Tcp), Duration::ZERO);
        assert_eq!(
            c.retransmit(Transport::Udp),
            Some(Duration::from_millis(500))
        );
        assert_eq!(c.timer_d(Transport::Udp), Duration::from_secs(32));
        assert_eq!(c.timer_i(Transport::Udp), Duration::from_secs(5));
        assert_eq!(c.timer_j(Transport::Udp), Duration::from_secs(32));
        assert_eq!(c.timer_k(Transport::Udp), Duration::from_secs(5));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // any base instant will do; the table never reads the clock
    fn take_due_returns_earliest_first_and_disarms() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        table.arm(Timer::B, t0, Duration::from_secs(32));
        table.arm(Timer::A, t0, Duration::from_millis(500));
        assert_eq!(table.earliest(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(table.take_due(t0), None);
        let late = t0 + Duration::from_secs(40);
        assert_eq!(table.take_due(late), Some(Timer::A));
        assert_eq!(table.take_due(late), Some(Timer::B));
        assert_eq!(table.take_due(late), None);
        assert_eq!(table.earliest(), None);
    }
}
