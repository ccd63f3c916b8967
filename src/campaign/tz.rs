//! The callee's time zone: the contact's own field first; else derived from the number (its
//! country code; for the NANP, its area code; a small table for the other countries spanning
//! several zones); else the campaign's default.

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

/// The IANA zone a number (E.164) is in, when its prefix says so unambiguously.
pub fn zone_of_number(_e164: &str) -> Option<&'static str> {
    unimplemented!("skeleton: the time helper builds this")
}

/// The zone to use for a contact, and where it came from.
pub fn resolve(_contact_tz: Option<&str>, _e164: &str, _default: &str) -> (String, TzSource) {
    unimplemented!("skeleton")
}

/// Whether `name` is an IANA zone this build knows.
pub fn valid_zone(_name: &str) -> bool {
    unimplemented!("skeleton")
}
