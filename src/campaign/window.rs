//! Calling windows in the callee's local time: whether a call may start now, and if not, when
//! it may. DST-correct (jiff with the bundled tz database): a window is local wall-clock time,
//! so a day that is 23 or 25 hours long still opens at 08:00 local.

use super::model::Windows;

/// Whether a callee may be called now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState {
    /// Yes, until `closes_at_us` (Unix µs).
    Open {
        /// When the current window closes.
        closes_at_us: i64,
    },
    /// No.
    Closed {
        /// When the next window opens (Unix µs); None: none in the next 366 days.
        opens_at_us: Option<i64>,
        /// Why, e.g. `outside calling hours (Sunday)` or `holiday 2026-12-25`.
        why: String,
    },
}

/// The window state at `now_us` for a callee in `tz`.
pub fn state(
    _windows: &Windows,
    _holidays: &[jiff::civil::Date],
    _tz: &jiff::tz::TimeZone,
    _now_us: i64,
) -> WindowState {
    unimplemented!("skeleton: the time helper builds this")
}

/// Checks a client's windows (at most 8 spans a day, no overlaps).
pub fn validate(_windows: &Windows) -> Result<(), String> {
    unimplemented!("skeleton")
}
