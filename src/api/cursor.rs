//! Opaque, self-checking pagination cursors.
//!
//! A cursor is `c1.<position as hex>.<tag>`: the position is what the store resumes from (its
//! own cursor of `GET /v1/calls`, an event id of `GET /v1/calls/{id}/events`), and the tag is
//! the first 8 bytes (hex) of SHA-256 over a domain string, the listing's name, its scope (the
//! tenant, the call, the filters) and the position. A cursor is accepted only by the listing,
//! scope and filters that gave it out: garbage, an edited cursor, or one from another listing,
//! call, tenant or filter set is 400 `invalid_cursor` before the store sees it.
//!
//! The tag is a checksum, not a secret MAC: cursors must work on every node sharing the
//! database and across restarts, and nodes share no key. It stops mistakes and casual edits;
//! it does not need to stop forgery, because what a cursor selects is still scoped by the
//! query (a forged cursor can only name a position in the caller's own listing).

use sha2::{Digest, Sha256};

use super::error::ApiError;

/// Longest position a cursor may carry (bytes, before hex).
const MAX_POSITION: usize = 256;
const PREFIX: &str = "c1.";

fn tag(listing: &str, scope: &str, position: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [
        b"callplane cursor v1".as_slice(),
        listing.as_bytes(),
        scope.as_bytes(),
        position,
    ] {
        // Length-prefixed: no two different (listing, scope, position) hash the same bytes.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(&h.finalize()[..8])
}

/// The cursor of `position` in `listing` (`"calls"`, `"call_events"`) for `scope`.
pub fn seal(listing: &str, scope: &str, position: &str) -> String {
    format!(
        "{PREFIX}{}.{}",
        hex::encode(position),
        tag(listing, scope, position.as_bytes())
    )
}

/// The position of a cursor [`seal`] made for the same `listing` and `scope`; 400
/// `invalid_cursor` for anything else.
pub fn open(listing: &str, scope: &str, cursor: &str) -> Result<String, ApiError> {
    let invalid =
        || ApiError::bad_request("invalid_cursor", "cursor: not a cursor of this listing");
    let rest = cursor.strip_prefix(PREFIX).ok_or_else(invalid)?;
    let (body, given) = rest.split_once('.').ok_or_else(invalid)?;
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if body.is_empty() || body.len() > 2 * MAX_POSITION || !lower_hex(body) || !lower_hex(given) {
        return Err(invalid());
    }
    let position = hex::decode(body).map_err(|_| invalid())?;
    if given != tag(listing, scope, &position) {
        return Err(invalid());
    }
    String::from_utf8(position).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_opens_only_in_its_own_listing_and_scope() {
        let c = seal("calls", "ten_a|status=", "abc123");
        assert_eq!(open("calls", "ten_a|status=", &c).expect("own"), "abc123");
        assert!(open("call_events", "ten_a|status=", &c).is_err());
        assert!(open("calls", "ten_b|status=", &c).is_err());
        assert!(open("calls", "ten_a|status=failed", &c).is_err());
        // One changed digit of the position, of the tag, or a truncation.
        let edited = c.replacen("616263", "616264", 1);
        assert_ne!(edited, c);
        assert!(open("calls", "ten_a|status=", &edited).is_err());
        for bad in [
            "",
            "zz",
            "42",
            "c1.",
            "c1..",
            "c1.616263",
            &c[..c.len() - 1],
            &c.to_uppercase(),
        ] {
            assert!(open("calls", "ten_a|status=", bad).is_err(), "{bad:?}");
        }
    }
}
