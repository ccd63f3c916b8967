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
    // `00` (most of the world) and the region's own international prefix (`011` in the
    // NANP) are read as `+` first, then the digits as the region reads them (a Brazilian
    // `00 15 …` carrier prefix). The crate's own IDD handling is not used: it strips the
    // default region's national prefix from the foreign number.
    let meta = phonenumber::metadata::DATABASE.by_id(region.as_ref());
    let idd = meta
        .and_then(|m| {
            m.preferred_international_prefix()
                .or_else(|| m.international_prefix().map(|r| r.as_str()))
        })
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let rest = digits
        .strip_prefix("00")
        .or_else(|| idd.and_then(|p| digits.strip_prefix(p)));
    let number = match rest {
        Some(rest) => parse_valid(region, &format!("+{rest}"))
            .or_else(|first| parse_valid(region, &digits).map_err(|_| first))?,
        None => parse_valid(region, &digits)?,
    };
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

fn parse_valid(region: Id, digits: &str) -> Result<phonenumber::PhoneNumber, PhoneError> {
    // With a `+`, the default region must not take part: the crate would strip the default
    // region's national prefix from the international number (`+33 1 42…` read in `US` loses
    // its `1`).
    let region = (!digits.starts_with('+')).then_some(region);
    let number = phonenumber::parse(region, digits).map_err(|e| {
        use phonenumber::ParseError as P;
        err(match e {
            P::NoNumber | P::MalformedInteger(_) => "not a phone number",
            P::InvalidCountryCode if region.is_some() => "not a valid phone number",
            P::InvalidCountryCode => "unknown country code",
            P::TooShortAfterIdd | P::TooShortNsn => "too short to be a phone number",
            P::TooLong => "too long to be a phone number",
        })
    })?;
    if !number.is_valid() {
        let code = number.code().value();
        let regions = phonenumber::metadata::DATABASE
            .region(&code)
            .unwrap_or_default();
        return Err(err(match regions.as_slice() {
            [] => format!("unknown country code +{code}"),
            [one] => format!("not a valid {one} number (+{code}): wrong length or unused prefix"),
            _ => format!("not a valid +{code} number: wrong length or unused prefix"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str, region: &str) -> String {
        normalize(input, region).unwrap_or_else(|e| panic!("{input:?} in {region}: {e}"))
    }

    fn refused(input: &str, region: &str) -> String {
        match normalize(input, region) {
            Ok(n) => panic!("{input:?} in {region} accepted as {n}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn national_numbers_of_the_default_region() {
        assert_eq!(ok("(650) 253-0000", "US"), "+16502530000");
        assert_eq!(ok("650.253.0000", "US"), "+16502530000");
        assert_eq!(ok("1 650 253 0000", "US"), "+16502530000");
        assert_eq!(ok("020 7031 3000", "GB"), "+442070313000");
        assert_eq!(ok("07400 123456", "GB"), "+447400123456");
        assert_eq!(ok("01 42 68 53 00", "FR"), "+33142685300");
        assert_eq!(ok("06.12.34.56.78", "FR"), "+33612345678");
        assert_eq!(ok("030 12345678", "DE"), "+493012345678");
        assert_eq!(ok("0151/12345678", "DE"), "+4915112345678");
        assert_eq!(ok("98765 43210", "IN"), "+919876543210");
        assert_eq!(ok("022 2778 2000", "IN"), "+912227782000");
        assert_eq!(ok("(11) 2395-8400", "BR"), "+551123958400");
        assert_eq!(ok("(11) 98765-4321", "BR"), "+5511987654321");
        assert_eq!(ok("02 9374 4000", "AU"), "+61293744000");
        assert_eq!(ok("0412 345 678", "AU"), "+61412345678");
    }

    #[test]
    fn international_forms_whatever_the_default_region() {
        assert_eq!(ok("+1 650 253 0000", "FR"), "+16502530000");
        assert_eq!(ok("001 650 253 0000", "FR"), "+16502530000");
        assert_eq!(ok("0033 1 42 68 53 00", "US"), "+33142685300");
        assert_eq!(ok("011 33 1 42 68 53 00", "US"), "+33142685300");
        // A `+` number keeps its leading national digit even when it equals the default
        // region's trunk prefix (the crate alone strips it).
        assert_eq!(ok("+33 1 42 68 53 00", "US"), "+33142685300");
        assert_eq!(ok("+55 11 98765 4321", "US"), "+5511987654321");
        assert_eq!(ok("+44 20 7031 3000", "DE"), "+442070313000");
        assert_eq!(ok("+49 30 12345678", "GB"), "+493012345678");
        assert_eq!(ok("+91 98765 43210", "AU"), "+919876543210");
        assert_eq!(ok("+61 412 345 678", "IN"), "+61412345678");
        assert_eq!(ok("  +16502530000  ", "us"), "+16502530000");
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        assert!(refused("", "US").contains("no number"));
        assert!(refused("+", "US").contains("no digits"));
        assert!(refused("123", "US").contains("too short"));
        assert!(refused("12345678901234567890123", "US").contains("too long"));
        assert!(refused("555-0123", "US").contains("not a valid +1 number"));
        assert!(refused("01 42 68 53", "FR").contains("FR"));
        assert!(refused("+999 123 456", "US").contains("country code"));
        assert!(refused("=cmd|' /C calc'!A0", "US").contains("unexpected character '='"));
        assert!(refused("555-CALL-NOW", "US").contains("unexpected character"));
        assert!(refused("+1 650 253 0000", "XX").contains("unknown region"));
        assert!(refused("+1 650 253 0000", "").contains("unknown region"));
        assert!(refused("1+650", "US").contains("unexpected character '+'"));
        let long = "1".repeat(MAX_INPUT_LEN + 1);
        assert!(refused(&long, "US").contains("longer than 64"));
        let huge = "9".repeat(1 << 20);
        assert!(refused(&huge, "US").contains("longer than 64"));
        assert!(refused("\u{0}\u{1}", "US").contains("unexpected character"));
    }

    #[test]
    fn regions() {
        assert!(valid_region("US"));
        assert!(valid_region("fr"));
        assert!(valid_region("GB"));
        assert!(!valid_region("XX"));
        assert!(!valid_region("USA"));
        assert!(!valid_region(""));
        assert!(!valid_region("u"));
    }
}
