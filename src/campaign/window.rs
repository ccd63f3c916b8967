//! Calling windows in the callee's local time: whether a call may start now, and if not, when
//! it may. DST-correct (jiff with the bundled tz database): a window is local wall-clock time,
//! so a day that is 23 or 25 hours long still opens at 08:00 local.
//!
//! The rules:
//! - A span belongs to the weekday it starts on; one whose end is before its start
//!   (`22:00-02:00`) runs into the next day; `24:00` is the next day's midnight.
//! - Holidays are the callee's local dates: no span *starts* on a holiday. A span that started
//!   the day before and runs past midnight into a holiday still runs to its end (it belongs to
//!   the day before).
//! - A window opening (or closing) at a local time that does not exist (the spring-forward gap)
//!   opens (or closes) at the first instant after the gap, i.e. at the transition; one at a local
//!   time that happens twice (fall-back) uses the first occurrence.
//! - Spans that touch or overlap (`Mon 00:00-24:00` and `Tue 00:00-24:00`) are one window: it
//!   closes at the end of the run.
//! - The next opening is looked for within [`HORIZON_DAYS`] days.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

use super::model::{Day, Span, Windows};

/// How far ahead the next opening is looked for (days).
pub const HORIZON_DAYS: i64 = 366;
/// Spans per day at most ([`validate`]).
pub const MAX_SPANS_PER_DAY: usize = 8;

const DAY_US: i64 = 86_400_000_000;

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
        /// Why and until when in the callee's local time, e.g. `outside calling hours until
        /// 2026-12-04T08:00 America/Chicago`, `outside calling hours (Sunday) until …`,
        /// `outside calling hours (holiday 2026-12-25) until …`.
        why: String,
    },
}

/// The instant local `minute` (0..=1440) of `date` is in `tz`: the transition for a time in a
/// spring-forward gap, the first occurrence for a time that happens twice.
fn local_us(tz: &TimeZone, date: Date, minute: u16) -> Option<i64> {
    let dt: DateTime = if minute >= 1440 {
        date.tomorrow().ok()?.to_datetime(Time::midnight())
    } else {
        let (h, m) = (minute / 60, minute % 60);
        date.to_datetime(Time::new(h as i8, m as i8, 0, 0).ok()?)
    };
    let ts = match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok()?,
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the later offset, the time lands before the gap; the first
            // transition after that is the gap's start: its first valid instant.
            let probe = after.to_timestamp(dt).ok()?;
            tz.following(probe).next()?.timestamp()
        }
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok()?,
    };
    Some(ts.as_microsecond())
}

/// The spans that start on `date` as `(open, close)` instants, sorted by opening.
fn day_intervals(
    windows: &Windows,
    holidays: &[Date],
    tz: &TimeZone,
    date: Date,
    out: &mut Vec<(i64, i64)>,
) {
    out.clear();
    if holidays.contains(&date) {
        return;
    }
    let Some(spans) = windows.0.get(&Day::from_jiff(date.weekday())) else {
        return;
    };
    for s in spans {
        if s.start_min >= 1440 {
            continue;
        }
        let Some(open) = local_us(tz, date, s.start_min) else {
            continue;
        };
        let close = if s.end_min <= s.start_min {
            date.tomorrow()
                .ok()
                .and_then(|next| local_us(tz, next, s.end_min))
        } else {
            local_us(tz, date, s.end_min)
        };
        if let Some(close) = close
            && close > open
        {
            out.push((open, close));
        }
    }
    out.sort_unstable();
}

/// The window state at `now_us` for a callee in `tz`.
pub fn state(windows: &Windows, holidays: &[Date], tz: &TimeZone, now_us: i64) -> WindowState {
    let Ok(now) = Timestamp::from_microsecond(now_us) else {
        return WindowState::Closed {
            opens_at_us: None,
            why: format!("time {now_us} µs is out of range"),
        };
    };
    let today = now.to_zoned(tz.clone()).date();
    let horizon = now_us.saturating_add(HORIZON_DAYS * DAY_US);
    let mut iv = Vec::with_capacity(MAX_SPANS_PER_DAY);
    // The merged run of windows that holds `now`, once found.
    let mut run_end: Option<i64> = None;
    for k in -1..=HORIZON_DAYS + 1 {
        let Ok(date) = today.checked_add(k.days()) else {
            break;
        };
        if let Some(end) = run_end
            && local_us(tz, date, 0).is_none_or(|start| start > end)
        {
            return WindowState::Open { closes_at_us: end };
        }
        day_intervals(windows, holidays, tz, date, &mut iv);
        for &(open, close) in &iv {
            match run_end.as_mut() {
                Some(end) if open <= *end => *end = (*end).max(close),
                Some(end) => return WindowState::Open { closes_at_us: *end },
                None if open <= now_us && now_us < close => run_end = Some(close),
                None if open > now_us => {
                    let opens_at_us = (open <= horizon).then_some(open);
                    return WindowState::Closed {
                        opens_at_us,
                        why: why_closed(windows, holidays, tz, today, opens_at_us),
                    };
                }
                None => {}
            }
        }
    }
    match run_end {
        Some(end) => WindowState::Open { closes_at_us: end },
        None => WindowState::Closed {
            opens_at_us: None,
            why: why_closed(windows, holidays, tz, today, None),
        },
    }
}

/// The earliest instant at or after `now_us` when a call may start: `now_us` itself when a
/// window is open, else the next opening (None: none within [`HORIZON_DAYS`]).
pub fn next_open_after(
    windows: &Windows,
    holidays: &[Date],
    tz: &TimeZone,
    now_us: i64,
) -> Option<i64> {
    match state(windows, holidays, tz, now_us) {
        WindowState::Open { .. } => Some(now_us),
        WindowState::Closed { opens_at_us, .. } => opens_at_us,
    }
}

/// `2026-12-04T08:00 America/Chicago` (the zone's name, or its offset when it has none).
pub fn local_label(tz: &TimeZone, at_us: i64) -> String {
    let Ok(ts) = Timestamp::from_microsecond(at_us) else {
        return format!("{at_us} µs");
    };
    let z = ts.to_zoned(tz.clone());
    let name = tz
        .iana_name()
        .map(str::to_owned)
        .unwrap_or_else(|| z.offset().to_string());
    let secs = if z.second() != 0 {
        format!(":{:02}", z.second())
    } else {
        String::new()
    };
    format!(
        "{}T{:02}:{:02}{secs} {name}",
        z.date(),
        z.hour(),
        z.minute()
    )
}

fn why_closed(
    windows: &Windows,
    holidays: &[Date],
    tz: &TimeZone,
    today: Date,
    opens_at_us: Option<i64>,
) -> String {
    let has_spans = windows
        .0
        .get(&Day::from_jiff(today.weekday()))
        .is_some_and(|s| !s.is_empty());
    let detail = if has_spans && holidays.contains(&today) {
        format!(" (holiday {today})")
    } else if !has_spans {
        format!(" ({:?})", today.weekday())
    } else {
        String::new()
    };
    match opens_at_us {
        Some(at) => format!(
            "outside calling hours{detail} until {}",
            local_label(tz, at)
        ),
        None => format!(
            "outside calling hours{detail}: no calling window in the next {HORIZON_DAYS} days"
        ),
    }
}

/// Checks a client's windows: at least one span in the week, at most
/// [`MAX_SPANS_PER_DAY`] a day, each well formed, none overlapping another (across midnight
/// and from Sunday into Monday included). Touching spans are fine.
pub fn validate(windows: &Windows) -> Result<(), String> {
    const WEEK: u32 = 7 * 1440;
    let mut pieces: Vec<(u32, u32, Day, Span)> = Vec::new();
    for (day, spans) in &windows.0 {
        if spans.len() > MAX_SPANS_PER_DAY {
            return Err(format!(
                "{}: {} spans, at most {MAX_SPANS_PER_DAY} a day",
                day_name(*day),
                spans.len()
            ));
        }
        let base = Day::ALL.iter().position(|d| d == day).unwrap_or(0) as u32 * 1440;
        for s in spans {
            if s.start_min >= 1440 || s.end_min > 1440 || s.start_min == s.end_min {
                return Err(format!("{}: {s} is not a valid span", day_name(*day)));
            }
            let a = base + u32::from(s.start_min);
            let b = if s.end_min <= s.start_min {
                base + 1440 + u32::from(s.end_min)
            } else {
                base + u32::from(s.end_min)
            };
            if b > WEEK {
                pieces.push((a, WEEK, *day, *s));
                pieces.push((0, b - WEEK, *day, *s));
            } else {
                pieces.push((a, b, *day, *s));
            }
        }
    }
    if pieces.is_empty() {
        return Err("no calling window on any day: give at least one span".to_owned());
    }
    pieces.sort_by_key(|p| (p.0, p.1));
    for pair in pieces.windows(2) {
        let (x, y) = (&pair[0], &pair[1]);
        if y.0 < x.1 {
            return Err(format!(
                "{} {} overlaps {} {}",
                day_name(x.2),
                x.3,
                day_name(y.2),
                y.3
            ));
        }
    }
    Ok(())
}

fn day_name(d: Day) -> &'static str {
    match d {
        Day::Mon => "mon",
        Day::Tue => "tue",
        Day::Wed => "wed",
        Day::Thu => "thu",
        Day::Fri => "fri",
        Day::Sat => "sat",
        Day::Sun => "sun",
    }
}
