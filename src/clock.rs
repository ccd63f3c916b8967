//! The application's clock: the only place outside `net` that reads the system time.
//!
//! Protocol code takes time as an argument; the engine asks this module for it. Keeping every
//! read here makes the time sources easy to audit (and to replace in a test harness later).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The monotonic now, for protocol deadlines and offsets.
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock microseconds since the Unix epoch, for event timestamps. A clock set before 1970
/// reads as 0 rather than failing: a timestamp is informative, never load-bearing.
pub fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_us_is_after_2020() {
        // 2020-01-01T00:00:00Z in µs: a clock that reads less is broken or not in µs.
        assert!(unix_us() > 1_577_836_800_000_000);
    }
}
