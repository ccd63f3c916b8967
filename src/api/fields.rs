//! The size and character limits of API fields (docs/api.md "Field limits", one table).
//!
//! Every string a client sends is bounded here or next to its parser, so no request can make
//! the server store, list or echo megabytes it did not mean to keep. A value over a limit is
//! 422 (`invalid_field` unless the area has a more precise code) and the message names the
//! field and the limit, never the value itself (it may be a megabyte long).

use serde_json::Value;

use super::error::ApiError;

/// Longest `to` and `from` of `POST /v1/calls` (bytes).
pub const MAX_URI_BYTES: usize = 256;
/// Most entries of `variables`.
pub const MAX_VARIABLES: usize = 64;
/// Longest variable name (characters; names are ASCII).
pub const MAX_VARIABLE_NAME: usize = 64;
/// Largest `variables` object, serialised as JSON (bytes).
pub const MAX_VARIABLES_BYTES: usize = 16 * 1024;
/// Largest script body (stored or inline), serialised as JSON (bytes).
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024;
/// Longest name (tenant, key, trunk, script), in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest id a request may name (`trunk_id`, `script_id`): ids are `xxx_` + 24 hex digits.
pub const MAX_ID_BYTES: usize = 64;
/// Longest trunk `username`, `password` and `from_user` (bytes).
pub const MAX_CREDENTIAL_BYTES: usize = 128;

/// 422 `invalid_field`.
pub fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_field", message)
}

/// Whether `c` is a bidirectional-text control that can make a name read differently from
/// what it is (U+200E/F, U+061C, U+202A..U+202E, U+2066..U+2069).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether `s` holds a control character (C0, DEL, C1: CR and LF included) or a bidi control.
pub fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control() || is_bidi_control(c))
}

/// A name (tenant, key, trunk, script): trimmed, 1 to [`MAX_NAME_CHARS`] characters, no
/// control or bidi characters. `field` names it in the error.
pub fn check_name<'a>(field: &str, name: &'a str) -> Result<&'a str, String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("{field}: must be 1 to {MAX_NAME_CHARS} characters"));
    }
    if has_control(name) {
        return Err(format!(
            "{field}: must not contain control characters (CR, LF, tab...) or bidirectional-text \
             controls (U+200E/F, U+202A..U+202E, U+2066..U+2069)"
        ));
    }
    Ok(name)
}

/// [`check_name`] as a 422 `invalid_field`.
pub fn name<'a>(field: &str, name: &'a str) -> Result<&'a str, ApiError> {
    check_name(field, name).map_err(invalid)
}

/// A free-text value stored for later use on the wire or in logs (trunk `username`,
/// `password`): at most `max` bytes, no control or bidi characters.
pub fn text<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str, ApiError> {
    if value.len() > max {
        return Err(invalid(format!("{field}: at most {max} bytes")));
    }
    if has_control(value) {
        return Err(invalid(format!(
            "{field}: must not contain control characters (CR, LF, tab...) or bidirectional-text \
             controls"
        )));
    }
    Ok(value)
}

/// An id a request names: at most [`MAX_ID_BYTES`], letters, digits and `_` (ids are
/// generated, so anything else names no row; refusing it keeps megabytes out of messages).
pub fn id<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    let plain = !value.is_empty()
        && value.len() <= MAX_ID_BYTES
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        Ok(value)
    } else {
        Err(invalid(format!(
            "{field}: not an id (at most {MAX_ID_BYTES} letters, digits and _)"
        )))
    }
}

/// The size of `v` serialised as compact JSON (what the store keeps).
pub fn json_len(v: &Value) -> usize {
    // Serialising a Value cannot fail (no non-string map keys).
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// A script body (stored or inline) of at most [`MAX_SCRIPT_BYTES`]; 422 `invalid_script`.
pub fn script_body(field: &str, body: &Value) -> Result<(), ApiError> {
    if json_len(body) > MAX_SCRIPT_BYTES {
        return Err(ApiError::unprocessable(
            "invalid_script",
            format!("{field}: at most {MAX_SCRIPT_BYTES} bytes of JSON"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_control_and_bidi_characters_and_long_values() {
        assert_eq!(check_name("name", "  carrier one "), Ok("carrier one"));
        assert_eq!(check_name("name", &"é".repeat(128)).map(str::len), Ok(256));
        assert!(check_name("name", &"a".repeat(129)).is_err());
        assert!(check_name("name", "").is_err());
        for bad in [
            "a\r\nb",
            "a\tb",
            "a\u{7f}",
            "a\u{85}b",
            "evil\u{202E}gpj.exe",
            "a\u{2066}b",
            "a\u{200F}",
        ] {
            assert!(check_name("name", bad).is_err(), "{bad:?}");
        }
        let e = check_name("trunk name", "x\u{202E}y").expect_err("bidi");
        assert!(e.starts_with("trunk name:"), "{e}");
    }

    #[test]
    fn ids_are_short_plain_words() {
        assert!(id("trunk_id", "trk_0123456789abcdef01234567").is_ok());
        for bad in ["", "a b", "a/b", &"a".repeat(65)] {
            assert!(id("trunk_id", bad).is_err(), "{bad:?}");
        }
    }
}
