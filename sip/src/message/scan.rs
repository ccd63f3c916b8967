//! A small byte scanner for the header grammars of RFC 3261 §25.1.
//!
//! Header values reach the typed parsers already unfolded (folding became a single space), so
//! "LWS" here is just runs of SP and HT.

use super::method::is_token_char;

/// A cursor over a header value.
#[derive(Debug, Clone)]
pub(crate) struct Scanner<'a> {
    pub(crate) s: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(s: &'a [u8]) -> Scanner<'a> {
        Scanner { s, pos: 0 }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.s[self.pos.min(self.s.len())..]
    }

    /// Skip SP / HT.
    pub(crate) fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    /// Consume `b` (after optional whitespace on both sides) if it is next.
    pub(crate) fn eat_sep(&mut self, b: u8) -> bool {
        let save = self.pos;
        self.ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            self.ws();
            true
        } else {
            self.pos = save;
            false
        }
    }

    /// Consume `b` if it is the very next byte.
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A run of token characters (possibly empty).
    pub(crate) fn token(&mut self) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(is_token_char) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// Bytes up to (not including) the first byte for which `stop` is true.
    pub(crate) fn until(&mut self, stop: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(|b| !stop(b)) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// A quoted-string including its quotes, backslash escapes kept. `None` when the next byte
    /// is not `"` or the string is unterminated (RFC 4475 §3.1.2.6).
    pub(crate) fn quoted(&mut self) -> Option<&'a [u8]> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let start = self.pos;
        let mut i = self.pos + 1;
        while i < self.s.len() {
            match self.s[i] {
                b'\\' => i += 2,
                b'"' => {
                    self.pos = i + 1;
                    return Some(&self.s[start..self.pos]);
                }
                _ => i += 1,
            }
        }
        None
    }
}

/// Split a list header value at top-level commas: commas inside a quoted-string or inside
/// `<...>` do not separate values (RFC 3261 §7.3.1). Each piece is trimmed; empty pieces (from
/// `a,,b`) are skipped. No allocation: this runs for every Via and Contact lookup.
pub(crate) fn split_commas(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    CommaSplit { v, pos: 0 }.map(trim).filter(|p| !p.is_empty())
}

struct CommaSplit<'a> {
    v: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for CommaSplit<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let v = self.v;
        if self.pos > v.len() {
            return None;
        }
        let start = self.pos;
        let mut i = start;
        let mut in_angle = false;
        while i < v.len() {
            match v[i] {
                b'"' if !in_angle => {
                    i += 1;
                    while i < v.len() && v[i] != b'"' {
                        if v[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                b'<' => in_angle = true,
                b'>' => in_angle = false,
                b',' if !in_angle => {
                    self.pos = i + 1;
                    return Some(&v[start..i]);
                }
                _ => {}
            }
            i += 1;
        }
        self.pos = v.len() + 1;
        Some(&v[start.min(v.len())..])
    }
}

/// Trim SP/HT/CR/LF on both ends.
pub(crate) fn trim(v: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = v.iter().position(|b| !is_ws(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ws(b)).map_or(start, |e| e + 1);
    &v[start..end]
}
