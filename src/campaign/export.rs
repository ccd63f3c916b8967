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
}

impl CsvWriter {
    /// An empty writer.
    pub fn new() -> CsvWriter {
        CsvWriter::default()
    }

    /// Appends one text cell to the current row (neutralised and quoted as needed).
    pub fn text(&mut self, cell: &str) -> &mut CsvWriter {
        self.sep();
        let neutralise = needs_neutralising(cell);
        let quote = neutralise && cell.starts_with('\r')
            || cell
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

    /// Ends the current row (CRLF).
    pub fn end_row(&mut self) -> &mut CsvWriter {
        self.out.push_str("\r\n");
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
        }
        self.row_started = true;
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
