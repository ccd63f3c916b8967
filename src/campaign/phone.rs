//! Dial-list numbers to E.164 (`+14155550100`) with libphonenumber's metadata (the
//! `phonenumber` crate): numbers without `+` are read in the campaign's default region.
//!
//! What is accepted: spaces, dashes, dots, slashes and parentheses anywhere (`(415) 555-0100`,
//! `06.12.34.56.78`); a leading `+`; the `00` international prefix (`0033 1 …`) and the
//! default region's own international prefix (`011 33 …` read in `US`); national numbers of the
//! default region with or without their trunk prefix (`0` in France, `0` in Germany). What is
//! refused, with the reason in [`PhoneError`]: more than [`MAX_INPUT_LEN`] characters (before
//! any parsing), letters and other symbols, too few or too many digits, a number that is not
//! valid in its region (libphonenumber's `is_valid`: the right length and a prefix in use), an
//! unknown default region.

use phonenumber::country::Id;

/// The longest input looked at (characters); longer is refused before parsing.
pub const MAX_INPUT_LEN: usize = 64;

/// Why a number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PhoneError(pub String);

fn err(msg: impl Into<String>) -> PhoneError {
    PhoneError(msg.into())
}

/// `input` as E.164, read in `default_region` (ISO 3166 alpha-2) when it has no `+`.
pub fn normalize(input: &str, default_region: &str) -> Result<String, PhoneError> {
    if input.chars().count() > MAX_INPUT_LEN {
        return Err(err(format!(
            "not a phone number: longer than {MAX_INPUT_LEN} characters"
        )));
    }
    let region = parse_region(default_region)?;
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(err("no number"));
    }
    // Keep digits and one leading `+`; drop the usual separators; refuse anything else so
    // that `=cmd|' /C calc'!A0` or `555-CALL-NOW` is not read as a number.
    let mut digits = String::with_capacity(trimmed.len() + 1);
    for (i, c) in trimmed.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => digits.push('+'),
            ' ' | '\t' | '-' | '.' | '/' | '(' | ')' | '\u{a0}' => {}
            _ => {
                return Err(err(format!(
                    "not a phone number: unexpected character {c:?}"
                )));
            }
        }
    }
    let national_digits = digits.trim_start_matches('+').len();
    if national_digits == 0 {
        return Err(err("no number: no digits"));
    }
    if digits.trim_start_matches('+').len() < 4 {
        return Err(err("too short to be a phone number"));
    }
    if digits.len() > 20 {
        return Err(err("too long to be a phone number"));
    }
    // `00` is the international prefix of most of the world; libphonenumber knows only the
    // default region's own (`011` for the NANP), so `00…` is first read as `+…`, then as
    // the region reads it (a Brazilian `00 15 …` carrier prefix).
    let number = match digits.strip_prefix("00") {
        Some(rest) => parse_valid(region, &format!("+{rest}"))
            .or_else(|first| parse_valid(region, &digits).map_err(|_| first))?,
        None => parse_valid(region, &digits)?,
    };
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

fn parse_valid(region: Id, digits: &str) -> Result<phonenumber::PhoneNumber, PhoneError> {
    let number = phonenumber::parse(Some(region), digits).map_err(|e| {
        use phonenumber::ParseError as P;
        err(match e {
            P::NoNumber | P::MalformedInteger(_) => "not a phone number",
            P::InvalidCountryCode => "unknown country code",
            P::TooShortAfterIdd | P::TooShortNsn => "too short to be a phone number",
            P::TooLong => "too long to be a phone number",
        })
    })?;
    if !number.is_valid() {
        let code = number.code().value();
        let regions = phonenumber::metadata::DATABASE
            .region(&code)
            .map(|r| r.join("/"))
            .unwrap_or_default();
        return Err(err(if regions.is_empty() {
            format!("unknown country code +{code}")
        } else {
            format!("not a valid number for {regions} (+{code}): wrong length or unused prefix")
        }));
    }
    Ok(number)
}

fn parse_region(code: &str) -> Result<Id, PhoneError> {
    let upper = code.trim().to_ascii_uppercase();
    let id: Id = upper.parse().map_err(|_| {
        err(format!(
            "unknown region {code:?} (ISO 3166 alpha-2, e.g. US)"
        ))
    })?;
    if phonenumber::metadata::DATABASE.by_id(id.as_ref()).is_none() {
        return Err(err(format!(
            "unknown region {code:?} (ISO 3166 alpha-2, e.g. US)"
        )));
    }
    Ok(id)
}

/// Whether `code` is a region libphonenumber knows (`US`, `FR`...). Case-insensitive.
pub fn valid_region(code: &str) -> bool {
    code.len() == 2 && parse_region(code).is_ok()
}
