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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).expect("zone")
    }

    /// Unix µs of an RFC 3339 instant.
    fn utc(s: &str) -> i64 {
        s.parse::<Timestamp>().expect("instant").as_microsecond()
    }

    fn date(s: &str) -> Date {
        s.parse().expect("date")
    }

    fn windows(days: &[(Day, &str)]) -> Windows {
        let mut map: BTreeMap<Day, Vec<Span>> = BTreeMap::new();
        for (d, s) in days {
            map.entry(*d)
                .or_default()
                .push(Span::parse(s).expect("span"));
        }
        Windows(map)
    }

    fn open_until(st: WindowState) -> i64 {
        match st {
            WindowState::Open { closes_at_us } => closes_at_us,
            other => panic!("expected open, got {other:?}"),
        }
    }

    fn closed(st: WindowState) -> (Option<i64>, String) {
        match st {
            WindowState::Closed { opens_at_us, why } => (opens_at_us, why),
            other => panic!("expected closed, got {other:?}"),
        }
    }

    #[test]
    fn default_windows_open_0800_to_2100_callee_time() {
        let w = Windows::default();
        let chi = tz("America/Chicago");
        // Friday 2026-12-04, CST (UTC-6).
        assert_eq!(
            open_until(state(&w, &[], &chi, utc("2026-12-04T14:00:00Z"))),
            utc("2026-12-05T03:00:00Z")
        );
        let (at, why) = closed(state(&w, &[], &chi, utc("2026-12-04T13:00:00Z")));
        assert_eq!(at, Some(utc("2026-12-04T14:00:00Z")));
        assert_eq!(
            why,
            "outside calling hours until 2026-12-04T08:00 America/Chicago"
        );
    }

    #[test]
    fn edges_to_the_microsecond() {
        let w = Windows::default();
        let chi = tz("America/Chicago");
        let opens = utc("2026-12-04T14:00:00Z");
        let closes = utc("2026-12-05T03:00:00Z");
        assert_eq!(closed(state(&w, &[], &chi, opens - 1)).0, Some(opens));
        assert_eq!(open_until(state(&w, &[], &chi, opens)), closes);
        assert_eq!(open_until(state(&w, &[], &chi, closes - 1)), closes);
        // The end is exclusive: at 21:00 the next opening is Saturday 08:00.
        assert_eq!(
            closed(state(&w, &[], &chi, closes)).0,
            Some(utc("2026-12-05T14:00:00Z"))
        );
        assert_eq!(next_open_after(&w, &[], &chi, opens - 1), Some(opens));
        assert_eq!(next_open_after(&w, &[], &chi, opens + 5), Some(opens + 5));
    }

    #[test]
    fn sunday_is_closed_by_default() {
        let w = Windows::default();
        let chi = tz("America/Chicago");
        let (at, why) = closed(state(&w, &[], &chi, utc("2026-12-06T18:00:00Z")));
        assert_eq!(at, Some(utc("2026-12-07T14:00:00Z")));
        assert_eq!(
            why,
            "outside calling hours (Sunday) until 2026-12-07T08:00 America/Chicago"
        );
    }

    #[test]
    fn new_york_spring_forward() {
        let ny = tz("America/New_York");
        // Sunday 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00Z).
        let w = windows(&[(Day::Sun, "08:00-21:00"), (Day::Sat, "08:00-21:00")]);
        // Saturday 08:00 EST is 13:00Z, Sunday 08:00 EDT is 12:00Z: wall clock, not offset.
        assert_eq!(
            closed(state(&w, &[], &ny, utc("2026-03-07T12:00:00Z"))).0,
            Some(utc("2026-03-07T13:00:00Z"))
        );
        assert_eq!(
            closed(state(&w, &[], &ny, utc("2026-03-08T02:00:00Z"))).0,
            Some(utc("2026-03-08T12:00:00Z"))
        );
        assert_eq!(
            open_until(state(&w, &[], &ny, utc("2026-03-08T12:00:00Z"))),
            utc("2026-03-09T01:00:00Z")
        );
        // A window opening in the gap (02:30 does not exist) opens at the transition.
        let gap = windows(&[(Day::Sun, "02:30-09:00")]);
        let (at, why) = closed(state(&gap, &[], &ny, utc("2026-03-08T06:59:59.999999Z")));
        assert_eq!(at, Some(utc("2026-03-08T07:00:00Z")));
        assert_eq!(
            why,
            "outside calling hours until 2026-03-08T03:00 America/New_York"
        );
        assert_eq!(
            open_until(state(&gap, &[], &ny, utc("2026-03-08T07:00:00Z"))),
            utc("2026-03-08T13:00:00Z")
        );
        // A window closing in the gap closes at the transition.
        let ends_in_gap = windows(&[(Day::Sun, "01:00-02:30")]);
        assert_eq!(
            open_until(state(&ends_in_gap, &[], &ny, utc("2026-03-08T06:30:00Z"))),
            utc("2026-03-08T07:00:00Z")
        );
    }

    #[test]
    fn new_york_fall_back() {
        let ny = tz("America/New_York");
        // Sunday 2026-11-01: 02:00 EDT falls back to 01:00 EST (06:00Z); 01:30 happens twice.
        let w = windows(&[(Day::Sun, "01:30-08:00")]);
        // Opens at the first 01:30 (EDT, 05:30Z), closes at 08:00 EST (13:00Z).
        assert_eq!(
            closed(state(&w, &[], &ny, utc("2026-11-01T05:29:00Z"))).0,
            Some(utc("2026-11-01T05:30:00Z"))
        );
        assert_eq!(
            open_until(state(&w, &[], &ny, utc("2026-11-01T05:30:00Z"))),
            utc("2026-11-01T13:00:00Z")
        );
        // The second 01:30 (EST, 06:30Z) is inside the same window.
        assert_eq!(
            open_until(state(&w, &[], &ny, utc("2026-11-01T06:30:00Z"))),
            utc("2026-11-01T13:00:00Z")
        );
        // A window closing at 01:30 closes at its first occurrence.
        let closes_in_fold = windows(&[(Day::Sat, "22:00-01:30")]);
        assert_eq!(
            open_until(state(
                &closes_in_fold,
                &[],
                &ny,
                utc("2026-11-01T05:00:00Z")
            )),
            utc("2026-11-01T05:30:00Z")
        );
        assert!(matches!(
            state(&closes_in_fold, &[], &ny, utc("2026-11-01T06:15:00Z")),
            WindowState::Closed { .. }
        ));
        // The day is 25 hours long: 08:00 EST is 13:00Z (12:00Z the day before).
        let day = windows(&[(Day::Sun, "08:00-21:00")]);
        assert_eq!(
            closed(state(&day, &[], &ny, utc("2026-11-01T07:00:00Z"))).0,
            Some(utc("2026-11-01T13:00:00Z"))
        );
    }

    #[test]
    fn berlin_both_changes() {
        let ber = tz("Europe/Berlin");
        // Sunday 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00Z).
        let gap = windows(&[(Day::Sun, "02:00-04:00")]);
        assert_eq!(
            closed(state(&gap, &[], &ber, utc("2026-03-29T00:59:00Z"))).0,
            Some(utc("2026-03-29T01:00:00Z"))
        );
        assert_eq!(
            open_until(state(&gap, &[], &ber, utc("2026-03-29T01:00:00Z"))),
            utc("2026-03-29T02:00:00Z")
        );
        let day = windows(&[(Day::Sun, "08:00-21:00")]);
        assert_eq!(
            closed(state(&day, &[], &ber, utc("2026-03-28T23:30:00Z"))).0,
            Some(utc("2026-03-29T06:00:00Z"))
        );
        // Sunday 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00Z); 02:30 happens twice.
        let fold = windows(&[(Day::Sun, "02:30-10:00")]);
        let (at, why) = closed(state(&fold, &[], &ber, utc("2026-10-25T00:00:00Z")));
        assert_eq!(at, Some(utc("2026-10-25T00:30:00Z")));
        assert_eq!(
            why,
            "outside calling hours until 2026-10-25T02:30 Europe/Berlin"
        );
        assert_eq!(
            open_until(state(&fold, &[], &ber, utc("2026-10-25T00:30:00Z"))),
            utc("2026-10-25T09:00:00Z")
        );
        assert_eq!(
            closed(state(&day, &[], &ber, utc("2026-10-25T05:00:00Z"))).0,
            Some(utc("2026-10-25T07:00:00Z"))
        );
    }

    #[test]
    fn spans_across_midnight_belong_to_their_start_day() {
        let u = tz("UTC");
        // Friday 2026-12-04 22:00 to Saturday 02:00.
        let w = windows(&[(Day::Fri, "22:00-02:00")]);
        assert_eq!(
            open_until(state(&w, &[], &u, utc("2026-12-04T23:00:00Z"))),
            utc("2026-12-05T02:00:00Z")
        );
        assert_eq!(
            open_until(state(&w, &[], &u, utc("2026-12-05T01:59:00Z"))),
            utc("2026-12-05T02:00:00Z")
        );
        assert_eq!(
            closed(state(&w, &[], &u, utc("2026-12-05T02:00:00Z"))).0,
            Some(utc("2026-12-11T22:00:00Z"))
        );
        // A holiday on Saturday does not cut Friday's span short...
        let sat = [date("2026-12-05")];
        assert_eq!(
            open_until(state(&w, &sat, &u, utc("2026-12-05T01:00:00Z"))),
            utc("2026-12-05T02:00:00Z")
        );
        // ...a holiday on Friday cancels it, after midnight too.
        let fri = [date("2026-12-04")];
        assert_eq!(
            closed(state(&w, &fri, &u, utc("2026-12-05T01:00:00Z"))).0,
            Some(utc("2026-12-11T22:00:00Z"))
        );
    }

    #[test]
    fn touching_spans_are_one_window() {
        let u = tz("UTC");
        let w = windows(&[
            (Day::Mon, "00:00-24:00"),
            (Day::Tue, "00:00-12:00"),
            (Day::Tue, "12:00-18:00"),
        ]);
        // Monday 2026-12-07 noon: open until Tuesday 18:00.
        assert_eq!(
            open_until(state(&w, &[], &u, utc("2026-12-07T12:00:00Z"))),
            utc("2026-12-08T18:00:00Z")
        );
        // Always open: the run is cut at the horizon, not looped forever.
        let all = windows(&Day::ALL.map(|d| (d, "00:00-24:00")));
        let now = utc("2026-12-07T12:00:00Z");
        let until = open_until(state(&all, &[], &u, now));
        assert!(until > now + (HORIZON_DAYS - 1) * DAY_US, "{until}");
    }

    #[test]
    fn holidays_close_their_day_saturday_then_sunday_opens_monday() {
        let w = Windows::default();
        let chi = tz("America/Chicago");
        let hol = [date("2026-12-05")];
        // Friday 21:30 local: Saturday is a holiday, Sunday has no window: Monday 08:00.
        let (at, why) = closed(state(&w, &hol, &chi, utc("2026-12-05T03:30:00Z")));
        assert_eq!(at, Some(utc("2026-12-07T14:00:00Z")));
        assert_eq!(
            why,
            "outside calling hours until 2026-12-07T08:00 America/Chicago"
        );
        // Saturday noon local.
        let (at, why) = closed(state(&w, &hol, &chi, utc("2026-12-05T18:00:00Z")));
        assert_eq!(at, Some(utc("2026-12-07T14:00:00Z")));
        assert_eq!(
            why,
            "outside calling hours (holiday 2026-12-05) until 2026-12-07T08:00 America/Chicago"
        );
        // The holiday is the callee's date: Saturday in Tokyo while still Friday in Chicago.
        let tokyo = tz("Asia/Tokyo");
        assert!(matches!(
            state(&w, &hol, &tokyo, utc("2026-12-05T01:00:00Z")),
            WindowState::Closed { .. }
        ));
        assert!(matches!(
            state(&w, &hol, &chi, utc("2026-12-04T20:00:00Z")),
            WindowState::Open { .. }
        ));
    }

    #[test]
    fn no_open_day_at_all() {
        let u = tz("UTC");
        let (at, why) = closed(state(
            &Windows(BTreeMap::new()),
            &[],
            &u,
            utc("2026-12-07T12:00:00Z"),
        ));
        assert_eq!(at, None);
        assert!(
            why.contains("no calling window in the next 366 days"),
            "{why}"
        );
        // Only Mondays, and every Monday of the next year a holiday.
        let w = windows(&[(Day::Mon, "08:00-21:00")]);
        let mondays: Vec<Date> = (0..60)
            .map(|k| {
                date("2026-12-07")
                    .checked_add((7 * k).days())
                    .expect("date")
            })
            .collect();
        assert_eq!(
            next_open_after(&w, &mondays, &u, utc("2026-12-07T12:00:00Z")),
            None
        );
        // An instant jiff cannot represent is refused, not a panic.
        assert!(matches!(
            state(&w, &[], &u, i64::MAX),
            WindowState::Closed {
                opens_at_us: None,
                ..
            }
        ));
    }

    #[test]
    fn labels_use_the_zone_name_or_offset() {
        let fixed = TimeZone::fixed(jiff::tz::offset(5));
        let w = Windows::default();
        let (_, why) = closed(state(&w, &[], &fixed, utc("2026-12-06T12:00:00Z")));
        assert_eq!(
            why,
            "outside calling hours (Sunday) until 2026-12-07T08:00 +05"
        );
    }

    #[test]
    fn validate_windows() {
        assert_eq!(validate(&Windows::default()), Ok(()));
        assert_eq!(
            validate(&windows(&[
                (Day::Mon, "08:00-12:00"),
                (Day::Mon, "12:00-21:00")
            ])),
            Ok(())
        );
        let e = validate(&windows(&[
            (Day::Mon, "08:00-12:00"),
            (Day::Mon, "11:00-13:00"),
        ]));
        assert_eq!(
            e,
            Err("mon 08:00-12:00 overlaps mon 11:00-13:00".to_owned())
        );
        let e = validate(&windows(&[
            (Day::Mon, "22:00-03:00"),
            (Day::Tue, "02:00-05:00"),
        ]));
        assert!(e.is_err(), "{e:?}");
        let e = validate(&windows(&[
            (Day::Sun, "23:00-01:00"),
            (Day::Mon, "00:30-05:00"),
        ]));
        assert!(e.is_err(), "{e:?}");
        assert_eq!(
            validate(&windows(&[
                (Day::Sun, "23:00-01:00"),
                (Day::Mon, "01:00-05:00")
            ])),
            Ok(())
        );
        let nine: Vec<(Day, &str)> = [
            "00:00-01:00",
            "01:00-02:00",
            "02:00-03:00",
            "03:00-04:00",
            "04:00-05:00",
            "05:00-06:00",
            "06:00-07:00",
            "07:00-08:00",
            "08:00-09:00",
        ]
        .into_iter()
        .map(|s| (Day::Wed, s))
        .collect();
        assert!(validate(&windows(&nine)).is_err());
        assert!(validate(&Windows(BTreeMap::new())).is_err());
        let broken = Windows(BTreeMap::from([(
            Day::Mon,
            vec![Span {
                start_min: 600,
                end_min: 600,
            }],
        )]));
        assert!(validate(&broken).is_err());
    }
}
