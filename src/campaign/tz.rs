//! The callee's time zone: the contact's own field first; else derived from the number (its
//! country code; for the NANP, its area code; a small table for the other countries spanning
//! several zones); else the campaign's default.
//!
//! The number → zone facts are libphonenumber's (`resources/timezones/map_data.txt`), compiled
//! into `src/campaign/tz_table.rs` (its header names the commit and the rules used where a
//! prefix lists several zones): a longest-prefix match over the E.164 digits. A prefix that
//! spans zones with different clocks (Russia's `+7` as a whole, Australian mobiles, Indonesian
//! mobiles) gives None, so the campaign default applies.

#[path = "tz_table.rs"]
mod tz_table;

use tz_table::{MAX_PREFIX_LEN, PREFIX_ZONES};

/// Where a contact's zone came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TzSource {
    /// The contact's `timezone` field.
    Contact,
    /// Its number.
    Number,
    /// The campaign's `default_timezone`.
    Default,
}

/// The IANA zone a number (E.164, `+` optional) is in, when its prefix says so unambiguously.
pub fn zone_of_number(e164: &str) -> Option<&'static str> {
    let digits = e164.strip_prefix('+').unwrap_or(e164);
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    for len in (1..=digits.len().min(MAX_PREFIX_LEN)).rev() {
        let prefix = &digits[..len];
        if let Ok(i) = PREFIX_ZONES.binary_search_by(|(p, _)| (*p).cmp(prefix)) {
            return PREFIX_ZONES[i].1;
        }
    }
    None
}

/// The zone to use for a contact, and where it came from: `contact_tz` when it is a zone this
/// build knows, else the number's zone, else `default` (returned as given: the API validated
/// it when the campaign was written).
pub fn resolve(contact_tz: Option<&str>, e164: &str, default: &str) -> (String, TzSource) {
    if let Some(tz) = contact_tz.map(str::trim).filter(|t| valid_zone(t)) {
        return (tz.to_owned(), TzSource::Contact);
    }
    if let Some(zone) = zone_of_number(e164) {
        return (zone.to_owned(), TzSource::Number);
    }
    (default.to_owned(), TzSource::Default)
}

/// Whether `name` is an IANA zone this build knows (case-sensitive lookups are jiff's:
/// `europe/paris` is found too; `UTC` is a zone).
pub fn valid_zone(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'))
        && jiff::tz::TimeZone::get(name).is_ok()
}
