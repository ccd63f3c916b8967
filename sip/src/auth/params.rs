//! The shared grammar of digest header values: `Digest` followed by a comma-separated list of
//! `name=value` pairs whose values are tokens or quoted strings (RFC 3261 §25.1, RFC 7235 §2.1).
//!
//! The parser is lenient where real peers differ from the grammar (quoted values where a token is
//! due and the other way round, unquoted base64 nonces, empty list elements) and strict where
//! leniency would be unsafe (control characters, CR/LF outside line folding, duplicate names).

use std::fmt::{self, Write as _};

use super::ParseError;

/// One parsed `name=value` pair. The value is unescaped; `name` keeps its case.
#[derive(Debug)]
pub(crate) struct RawParam {
    pub(crate) name: String,
    pub(crate) value: String,
}

/// Splits `Digest a=b, c="d"` into its parameters, after checking the scheme.
pub(crate) fn parse_digest(input: &str) -> Result<Vec<RawParam>, ParseError> {
    let mut c = Cursor {
        s: input.as_bytes(),
        pos: 0,
    };
    c.skip_lws()?;
    let scheme = c.token();
    if scheme.is_empty() {
        return if c.at_end() {
            Err(ParseError::Empty)
        } else {
            Err(ParseError::Expected {
                expected: "authentication scheme",
                at: c.pos,
            })
        };
    }
    let scheme = std::str::from_utf8(scheme).expect("token bytes are ASCII");
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(ParseError::UnsupportedScheme(scheme.to_owned()));
    }
    let mut params: Vec<RawParam> = Vec::new();
    // RFC 3261: challenge = "Digest" LWS digest-cln *(COMMA digest-cln); the LWS is mandatory.
    let before = c.pos;
    c.skip_lws()?;
    if !c.at_end() && c.pos == before {
        return Err(ParseError::Expected {
            expected: "whitespace after scheme",
            at: c.pos,
        });
    }
    loop {
        c.skip_lws()?;
        if c.at_end() {
            break;
        }
        // RFC 7230 §7: a recipient MUST accept empty list elements (`a=1, , b=2`).
        if c.peek() == Some(b',') {
            c.pos += 1;
            continue;
        }
        let name_at = c.pos;
        let name = c.token();
        if name.is_empty() {
            return Err(ParseError::Expected {
                expected: "parameter name",
                at: name_at,
            });
        }
        let name = std::str::from_utf8(name)
            .expect("token bytes are ASCII")
            .to_owned();
        c.skip_lws()?;
        if c.peek() != Some(b'=') {
            return Err(ParseError::Expected {
                expected: "`=`",
                at: c.pos,
            });
        }
        c.pos += 1;
        c.skip_lws()?;
        let value = if c.peek() == Some(b'"') {
            c.quoted_string()?
        } else {
            let at = c.pos;
            let v = c.bare_value(input);
            if v.is_empty() {
                return Err(ParseError::Expected {
                    expected: "parameter value",
                    at,
                });
            }
            v.to_owned()
        };
        // RFC 7235 §2.1: "Each parameter name MUST only occur once per challenge."
        if params.iter().any(|p| p.name.eq_ignore_ascii_case(&name)) {
            return Err(ParseError::DuplicateParam(name));
        }
        params.push(RawParam { name, value });
        c.skip_lws()?;
        match c.peek() {
            None => break,
            Some(b',') => c.pos += 1,
            Some(_) => {
                return Err(ParseError::Expected {
                    expected: "`,`",
                    at: c.pos,
                });
            }
        }
    }
    Ok(params)
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// Skips linear white space: SP, HTAB, and line folding (CRLF followed by SP or HTAB).
    /// A CR or LF that is not folding cannot be part of a header value.
    fn skip_lws(&mut self) -> Result<(), ParseError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t') => self.pos += 1,
                Some(b'\r' | b'\n') => self.pos = self.folding(self.pos)?,
                _ => return Ok(()),
            }
        }
    }

    /// At a CR or LF: the end of a line fold (`CRLF 1*WSP`, or a bare LF from a lenient
    /// sender), or an error.
    fn folding(&self, at: usize) -> Result<usize, ParseError> {
        let mut p = at;
        if self.s.get(p) == Some(&b'\r') {
            p += 1;
        }
        if self.s.get(p) != Some(&b'\n') {
            return Err(ParseError::ControlCharacter { at });
        }
        p += 1;
        if !matches!(self.s.get(p), Some(b' ' | b'\t')) {
            return Err(ParseError::ControlCharacter { at });
        }
        Ok(p)
    }

    fn token(&mut self) -> &[u8] {
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// An unquoted value: lenient, anything visible up to a comma or white space, so that
    /// unquoted base64 nonces (`nonce=ab/c+d==`) parse.
    fn bare_value<'s>(&mut self, input: &'s str) -> &'s str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b == b','
                || b == b'"'
                || b == b'\\'
                || b.is_ascii_whitespace()
                || b.is_ascii_control()
            {
                break;
            }
            self.pos += 1;
        }
        // Stops only at ASCII bytes, so the slice is on character boundaries.
        &input[start..self.pos]
    }

    /// `quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE` (RFC 3261 §25.1), with the
    /// backslash escapes removed. Line folding inside becomes one SP (RFC 3261 §7.3.1 lets a
    /// recipient replace LWS with a single SP).
    fn quoted_string(&mut self) -> Result<String, ParseError> {
        let open = self.pos;
        self.pos += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(ParseError::UnterminatedQuote { at: open });
            };
            match b {
                b'"' => {
                    self.pos += 1;
                    break;
                }
                b'\\' => {
                    // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F): any ASCII but CR and LF.
                    match self.s.get(self.pos + 1) {
                        None => return Err(ParseError::UnterminatedQuote { at: open }),
                        Some(&e) if e == b'\r' || e == b'\n' || !e.is_ascii() => {
                            return Err(ParseError::ControlCharacter { at: self.pos + 1 });
                        }
                        Some(&e) => {
                            out.push(e);
                            self.pos += 2;
                        }
                    }
                }
                b'\r' | b'\n' => {
                    self.pos = self.folding(self.pos)?;
                    while matches!(self.peek(), Some(b' ' | b'\t')) {
                        self.pos += 1;
                    }
                    out.push(b' ');
                }
                b'\t' => {
                    out.push(b);
                    self.pos += 1;
                }
                _ if b.is_ascii_control() => {
                    return Err(ParseError::ControlCharacter { at: self.pos });
                }
                _ => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        // Only whole UTF-8 sequences from the &str input and ASCII escapes were copied.
        Ok(String::from_utf8(out).expect("copied from valid UTF-8"))
    }
}

/// Characters of a parameter name: the SIP `token` (RFC 3261 §25.1) plus the extra ones of the
/// HTTP `tchar` (RFC 7230 §3.2.6), since digest comes from HTTP.
fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~#$&^|".contains(&b)
}

/// Whether `s` may be printed as a bare SIP `token` (RFC 3261 §25.1).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// Whether `s` may be printed as a parameter name.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_name_char)
}

/// Writes `s` as a quoted string. `"` and `\` and control characters are escaped; CR and LF,
/// which no escape can carry (RFC 3261 quoted-pair excludes them), are written as SP so that a
/// value can never end the header line. Parsed values never contain CR or LF.
pub(crate) fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for ch in s.chars() {
        match ch {
            '\r' | '\n' => f.write_char(' ')?,
            '"' | '\\' => {
                f.write_char('\\')?;
                f.write_char(ch)?;
            }
            c if c != '\t' && c.is_ascii_control() => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Writes `s` bare when it is a token, quoted otherwise (for values the grammar wants as a token
/// but that arrived quoted with other characters).
pub(crate) fn write_token_or_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if is_token(s) {
        f.write_str(s)
    } else {
        write_quoted(f, s)
    }
}

/// Whether a caller-given value can be sent in a header at all.
pub(crate) fn is_header_safe(s: &str) -> bool {
    !s.bytes().any(|b| b.is_ascii_control() && b != b'\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_values(s: &str) -> Vec<(String, String)> {
        parse_digest(s)
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.value))
            .collect()
    }

    #[test]
    fn quoted_strings_keep_commas_and_lose_escapes() {
        let v = names_values(r#"Digest realm="a, \"b\" \\c", nonce=xyz"#);
        assert_eq!(v[0], ("realm".into(), r#"a, "b" \c"#.into()));
        assert_eq!(v[1], ("nonce".into(), "xyz".into()));
    }

    #[test]
    fn folding_is_whitespace_and_bare_newline_is_an_error() {
        let v = names_values("Digest realm=\"a\",\r\n  nonce=\"b\r\n\tc\"");
        assert_eq!(v[1].1, "b c");
        assert!(matches!(
            parse_digest("Digest realm=\"a\"\r\nVia: x"),
            Err(ParseError::ControlCharacter { .. })
        ));
    }

    #[test]
    fn empty_elements_are_skipped_and_duplicates_rejected() {
        assert_eq!(names_values("Digest , realm=a,, nonce=b ,").len(), 2);
        assert_eq!(
            parse_digest("Digest realm=a, REALM=b").unwrap_err(),
            ParseError::DuplicateParam("REALM".into())
        );
    }

    #[test]
    fn scheme_must_be_digest() {
        assert_eq!(parse_digest("   ").unwrap_err(), ParseError::Empty);
        assert_eq!(
            parse_digest("Basic realm=\"x\"").unwrap_err(),
            ParseError::UnsupportedScheme("Basic".into())
        );
        assert!(parse_digest("digest realm=x").is_ok());
        assert!(parse_digest("Digestrealm=x").is_err());
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert_eq!(
            parse_digest("Digest realm=\"abc").unwrap_err(),
            ParseError::UnterminatedQuote { at: 13 }
        );
        assert!(parse_digest("Digest realm=\"abc\\").is_err());
    }
}
