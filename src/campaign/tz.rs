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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_zone_countries_by_country_code() {
        assert_eq!(zone_of_number("+33142685300"), Some("Europe/Paris"));
        assert_eq!(zone_of_number("+442070313000"), Some("Europe/London"));
        assert_eq!(zone_of_number("+447400123456"), Some("Europe/London"));
        assert_eq!(zone_of_number("+493012345678"), Some("Europe/Berlin"));
        assert_eq!(zone_of_number("+919876543210"), Some("Asia/Kolkata"));
        assert_eq!(zone_of_number("+8613800138000"), Some("Asia/Shanghai"));
        assert_eq!(zone_of_number("+81312345678"), Some("Asia/Tokyo"));
    }

    #[test]
    fn nanp_by_area_code() {
        assert_eq!(zone_of_number("+12125550147"), Some("America/New_York"));
        assert_eq!(zone_of_number("+13125550100"), Some("America/Chicago"));
        assert_eq!(zone_of_number("+13035550100"), Some("America/Denver"));
        assert_eq!(zone_of_number("+16025550100"), Some("America/Phoenix"));
        assert_eq!(zone_of_number("+14155550123"), Some("America/Los_Angeles"));
        // Alaska: the file lists Adak and Anchorage for 907 and Juneau (the same clock as
        // Anchorage) for its exchanges; the exchanges win.
        assert_eq!(zone_of_number("+19075550100"), Some("America/Juneau"));
        assert_eq!(zone_of_number("+18085550100"), Some("Pacific/Honolulu"));
        assert_eq!(zone_of_number("+14165550100"), Some("America/Toronto"));
        assert_eq!(zone_of_number("+16045550100"), Some("America/Vancouver"));
        assert_eq!(zone_of_number("+17875550100"), Some("America/Puerto_Rico"));
        // Idaho spans Mountain and Pacific time: most of its exchanges are Mountain.
        assert_eq!(zone_of_number("+12085550100"), Some("America/Denver"));
        // +1 alone, or an area code not in the file, says nothing.
        assert_eq!(zone_of_number("+1"), None);
        assert_eq!(zone_of_number("+15555550100"), None);
    }

    #[test]
    fn other_multi_zone_countries_by_prefix() {
        assert_eq!(zone_of_number("+74951234567"), Some("Europe/Moscow"));
        assert_eq!(zone_of_number("+73832123456"), Some("Asia/Novosibirsk"));
        assert_eq!(zone_of_number("+74232123456"), Some("Asia/Vladivostok"));
        assert_eq!(zone_of_number("+77272123456"), Some("Asia/Almaty"));
        assert_eq!(zone_of_number("+61293744000"), Some("Australia/Sydney"));
        // Australia's 08 area spans Adelaide and Perth in the source: ambiguous.
        assert_eq!(zone_of_number("+61891234567"), None);
        // The source puts Australian mobiles at Sydney.
        assert_eq!(zone_of_number("+61412345678"), Some("Australia/Sydney"));
        assert_eq!(zone_of_number("+551123958400"), Some("America/Sao_Paulo"));
        assert_eq!(zone_of_number("+559221234567"), Some("America/Manaus"));
        assert_eq!(zone_of_number("+525512345678"), Some("America/Mexico_City"));
        assert_eq!(zone_of_number("+526641234567"), Some("America/Tijuana"));
        assert_eq!(zone_of_number("+62215551234"), Some("Asia/Jakarta"));
        // The source puts Russian mobiles at Moscow; some Indonesian mobile ranges are
        // ambiguous.
        assert_eq!(zone_of_number("+79161234567"), Some("Europe/Moscow"));
        assert_eq!(zone_of_number("+628111234567"), None);
        assert_eq!(zone_of_number("+7"), None);
    }

    #[test]
    fn garbage_numbers_have_no_zone() {
        for n in [
            "",
            "+",
            "abc",
            "+33x",
            "+999123456",
            "+123456789012345678901",
        ] {
            assert_eq!(zone_of_number(n), None, "{n:?}");
        }
    }

    #[test]
    fn the_table_is_sorted_and_every_zone_exists() {
        assert!(PREFIX_ZONES.windows(2).all(|w| w[0].0 < w[1].0));
        for (prefix, zone) in PREFIX_ZONES {
            assert!(prefix.bytes().all(|b| b.is_ascii_digit()) && prefix.len() <= MAX_PREFIX_LEN);
            if let Some(z) = zone {
                assert!(valid_zone(z), "{prefix}: {z} unknown to jiff");
            }
        }
    }

    #[test]
    fn resolve_prefers_the_contact_then_the_number_then_the_default() {
        assert_eq!(
            resolve(Some("Asia/Tokyo"), "+12125550147", "UTC"),
            ("Asia/Tokyo".to_owned(), TzSource::Contact)
        );
        assert_eq!(
            resolve(Some("Mars/Olympus"), "+12125550147", "UTC"),
            ("America/New_York".to_owned(), TzSource::Number)
        );
        assert_eq!(
            resolve(None, "+12125550147", "UTC"),
            ("America/New_York".to_owned(), TzSource::Number)
        );
        assert_eq!(
            resolve(Some(""), "+61891234567", "Australia/Perth"),
            ("Australia/Perth".to_owned(), TzSource::Default)
        );
        assert_eq!(
            resolve(None, "not a number", "Europe/Paris"),
            ("Europe/Paris".to_owned(), TzSource::Default)
        );
    }

    #[test]
    fn zone_names() {
        assert!(valid_zone("Europe/Paris"));
        assert!(valid_zone("America/Argentina/Buenos_Aires"));
        assert!(valid_zone("UTC"));
        assert!(!valid_zone("Mars/Olympus"));
        assert!(!valid_zone(""));
        assert!(!valid_zone("../../etc/passwd"));
        assert!(!valid_zone("Europe/Paris\n"));
        assert!(!valid_zone(&"A".repeat(10_000)));
    }
}
