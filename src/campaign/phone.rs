//! Dial-list numbers to E.164 (`+14155550100`) with libphonenumber's metadata (the
//! `phonenumber` crate): numbers without `+` are read in the campaign's default region.

/// Why a number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PhoneError(pub String);

/// `input` as E.164, read in `default_region` (ISO 3166 alpha-2) when it has no `+`.
pub fn normalize(_input: &str, _default_region: &str) -> Result<String, PhoneError> {
    unimplemented!("skeleton: the time helper builds this")
}

/// Whether `code` is a region libphonenumber knows (`US`, `FR`...).
pub fn valid_region(_code: &str) -> bool {
    unimplemented!("skeleton")
}
