//! CSV for the results export, safe to open in a spreadsheet.
//!
//! Quoting follows RFC 4180: a cell with a comma, a double quote, CR or LF is quoted and its
//! quotes doubled; rows end with CRLF. Formula injection (OWASP "CSV Injection") is neutralised:
//! a text cell that starts with `=`, `+`, `-`, `@`, TAB or CR is prefixed with a single quote
//! `'`, which spreadsheets show as text and never evaluate. That covers E.164 numbers too
//! (`+14155550100` is written `'+14155550100`): a spreadsheet would otherwise read it as a
//! formula or a number and drop the `+`. Cells written with [`CsvWriter::number`] (talk time,
//! attempts) are written as they are when they really are numbers.

/// Whether a cell must be prefixed with `'` (it starts with `=`, `+`, `-`, `@`, TAB or CR).
pub fn needs_neutralising(cell: &str) -> bool {
    matches!(
        cell.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

/// Writes CSV rows into a `String`.
#[derive(Debug, Default, Clone)]
pub struct CsvWriter {
    out: String,
    row_started: bool,
    /// Cells in the current row.
    row_cells: u32,
    /// Whether every cell of the current row so far is empty.
    row_empty: bool,
}

impl CsvWriter {
    /// An empty writer.
    pub fn new() -> CsvWriter {
        CsvWriter::default()
    }

    /// Appends one text cell to the current row (neutralised and quoted as needed).
    pub fn text(&mut self, cell: &str) -> &mut CsvWriter {
        self.sep();
        self.row_empty &= cell.is_empty();
        let neutralise = needs_neutralising(cell);
        let quote = cell
            .bytes()
            .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
        if quote {
            self.out.push('"');
        }
        if neutralise {
            self.out.push('\'');
        }
        if quote {
            for c in cell.chars() {
                if c == '"' {
                    self.out.push('"');
                }
                self.out.push(c);
            }
            self.out.push('"');
        } else {
            self.out.push_str(cell);
        }
        self
    }

    /// Appends a cell that is a number when it parses as one (a finite decimal like `12`,
    /// `-3`, `4.25`): written as is, so spreadsheets sum it. Anything else is written as
    /// [`CsvWriter::text`].
    pub fn number(&mut self, cell: &str) -> &mut CsvWriter {
        if is_plain_number(cell) {
            self.sep();
            self.row_empty = false;
            self.out.push_str(cell);
            self
        } else {
            self.text(cell)
        }
    }

    /// Appends an empty cell.
    pub fn empty(&mut self) -> &mut CsvWriter {
        self.sep();
        self
    }

    /// Ends the current row (CRLF). A row of one empty cell is written `""`, so that it is
    /// not read back as a blank line.
    pub fn end_row(&mut self) -> &mut CsvWriter {
        if self.row_cells == 1 && self.row_empty {
            self.out.push_str("\"\"");
        }
        self.out.push_str("\r\n");
        self.row_cells = 0;
        self.row_started = false;
        self
    }

    /// Appends a whole row of text cells and ends it.
    pub fn row(&mut self, cells: &[&str]) -> &mut CsvWriter {
        for c in cells {
            self.text(c);
        }
        self.end_row()
    }

    /// What was written so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Takes what was written so far (for streaming a response chunk by chunk); a row in
    /// progress continues in the next chunk.
    pub fn take(&mut self) -> String {
        std::mem::take(&mut self.out)
    }

    /// The whole text.
    pub fn into_string(self) -> String {
        self.out
    }

    fn sep(&mut self) {
        if self.row_started {
            self.out.push(',');
        } else {
            self.row_empty = true;
        }
        self.row_started = true;
        self.row_cells = self.row_cells.saturating_add(1);
    }
}

/// `-?digits(.digits)?` with at most 18 digits before the point: a number a spreadsheet reads
/// back exactly. A leading `-` makes it a number here, not a formula.
fn is_plain_number(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    !int.is_empty()
        && int.len() <= 18
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac
            .is_none_or(|f| !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4180_quoting() {
        let mut w = CsvWriter::new();
        w.row(&["a", "b,c", "d\"e", "f\ng", "h\r\ni", ""]);
        w.row(&["x"]);
        assert_eq!(
            w.as_str(),
            "a,\"b,c\",\"d\"\"e\",\"f\ng\",\"h\r\ni\",\r\nx\r\n"
        );
    }

    #[test]
    fn formulas_are_neutralised() {
        let cases = [
            ("=1+1", "'=1+1"),
            ("+14155550123", "'+14155550123"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
            ("\tlead", "'\tlead"),
            ("\rlead", "\"'\rlead\""),
            ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
            (
                "=HYPERLINK(\"http://evil\",\"x\")",
                "\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\"",
            ),
            ("a=1", "a=1"),
            (" =1", " =1"),
            ("Zoë", "Zoë"),
        ];
        for (cell, want) in cases {
            let mut w = CsvWriter::new();
            w.text(cell);
            assert_eq!(w.as_str(), want, "{cell:?}");
        }
    }

    #[test]
    fn numbers_stay_numbers() {
        let mut w = CsvWriter::new();
        w.number("12")
            .number("-3")
            .number("4.25")
            .number("0")
            .number("1e5")
            .number("=1")
            .number("-")
            .number("1.")
            .number("")
            .empty()
            .end_row();
        assert_eq!(w.as_str(), "12,-3,4.25,0,1e5,'=1,'-,1.,,\r\n");
    }

    #[test]
    fn take_streams_rows_in_pieces() {
        let mut w = CsvWriter::new();
        w.text("a");
        let first = w.take();
        w.text("b").end_row();
        assert_eq!(first + &w.take(), "a,b\r\n");
        assert!(w.is_empty());
        // One empty cell is `""`, not a blank line; an empty row after a taken cell is not.
        w.text("").end_row().text("x");
        let _ = w.take();
        w.end_row().empty().empty().end_row();
        assert_eq!(w.as_str(), "\r\n,\r\n");
        w.take();
        w.row(&[""]);
        assert_eq!(w.as_str(), "\"\"\r\n");
    }

    /// What a spreadsheet (RFC 4180 reader) reads back: every cell as written, a neutralised
    /// one with its `'` in front, and never a cell that starts with a formula character.
    #[test]
    fn random_cells_read_back_exactly() {
        let alphabet: Vec<char> = "ab1,\"\r\n=+-@\t ' é".chars().collect();
        let mut seed: u64 = 42;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..500 {
            let cells: Vec<String> = (0..1 + next() % 5)
                .map(|_| {
                    (0..next() % 8)
                        .map(|_| alphabet[next() % alphabet.len()])
                        .collect()
                })
                .collect();
            let refs: Vec<&str> = cells.iter().map(String::as_str).collect();
            let mut w = CsvWriter::new();
            w.row(&refs);
            let text = w.into_string();
            let mut rdr = csv_core::Reader::new();
            let mut out = vec![0u8; 4096];
            let mut ends = vec![0usize; 16];
            let (res, nin, _, nend) = rdr.read_record(text.as_bytes(), &mut out, &mut ends);
            assert_eq!(res, csv_core::ReadRecordResult::Record, "{text:?}");
            assert_eq!(nin, text.len() - 1, "{text:?}"); // the LF after the CR is left
            let mut start = 0;
            let got: Vec<String> = ends[..nend]
                .iter()
                .map(|&e| {
                    let f = String::from_utf8(out[start..e].to_vec()).expect("utf-8");
                    start = e;
                    f
                })
                .collect();
            let want: Vec<String> = cells
                .iter()
                .map(|c| {
                    if needs_neutralising(c) {
                        format!("'{c}")
                    } else {
                        c.clone()
                    }
                })
                .collect();
            assert_eq!(got, want, "{text:?}");
            assert!(got.iter().all(|c| !needs_neutralising(c)));
        }
    }
}
