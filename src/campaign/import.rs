//! The contact upload parser: a CSV body streamed chunk by chunk ([`CsvImport`]), or a JSON
//! array already parsed ([`json_rows`]), validated row by row into [`NewContact`]s with a
//! per-row report ([`Row`]).
//!
//! CSV: RFC 4180 (commas, `"` quoting with `""` inside, LF or CRLF line ends, quoted fields may
//! hold commas and line breaks), parsed by `csv-core` with bounded buffers: a record is at most
//! [`MAX_RECORD_BYTES`] and a field at most [`MAX_FIELD_BYTES`]; a longer record is rejected and
//! the parser skips to the next line break without keeping it. A UTF-8 byte order mark is
//! dropped. The first row names the columns (case-insensitive, trimmed): `phone` (also `number`,
//! `phone_number`; required), `name`, `timezone` (also `time_zone`, `tz`), `priority`; every other
//! column is a script variable named by its header (a letter or `_`, then letters, digits, `_`;
//! at most 64 characters). A bad header fails the whole upload ([`ImportError`]); a bad row is
//! rejected with its line number and a reason, and the rest goes on. Blank lines (and rows whose
//! fields are all blank) are skipped. A row that is not UTF-8 is rejected (`encoding`): this
//! parser does not guess Latin-1 or Windows-1252; the reason asks for "CSV UTF-8".
//!
//! Values are data: a name or variable starting with `=`, `+`, `-` or `@` is kept as written
//! (it is only dangerous when exported, and [`super::export`] neutralises it there); a phone
//! like `=cmd|' /C calc'!A0` is simply not a number.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::model::ContactStatus;
use super::{phone, tz};
use crate::store::campaign::NewContact;

/// Rows (contacts) per upload at most.
pub const MAX_ROWS: u64 = 1_000_000;
/// Columns at most.
pub const MAX_COLUMNS: usize = 64;
/// Bytes in one record (a CSV row, all fields unquoted) at most.
pub const MAX_RECORD_BYTES: usize = 8 * 1024;
/// Bytes in one field at most.
pub const MAX_FIELD_BYTES: usize = 1024;
/// Characters in a variable (column) name at most.
pub const MAX_VARIABLE_NAME: usize = 64;
/// Contact priorities are within ±this.
pub const MAX_PRIORITY: i64 = 1_000_000;

/// The template served at `GET /v1/campaigns/csv-template`.
pub const CSV_TEMPLATE: &str = "phone,name,timezone,priority,first_name,account_id\r\n\
+14155550123,Ada Lovelace,America/Los_Angeles,0,Ada,A-1001\r\n\
\"(212) 555-0147\",\"Turing, Alan\",,5,Alan,A-1002\r\n";

/// How rows are read.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The region numbers without `+` are read in (the campaign's `default_region`).
    pub default_region: String,
    /// The zone of a contact whose number names none (the campaign's `default_timezone`).
    pub default_timezone: String,
    /// Rows at most ([`MAX_ROWS`]).
    pub max_rows: u64,
}

impl ImportOptions {
    /// Options with the default caps.
    pub fn new(default_region: &str, default_timezone: &str) -> ImportOptions {
        ImportOptions {
            default_region: default_region.to_owned(),
            default_timezone: default_timezone.to_owned(),
            max_rows: MAX_ROWS,
        }
    }
}

/// Why a whole upload was refused (its header, its encoding, its size).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// No header row.
    #[error(
        "the upload is empty: the first row must name the columns (phone, name, timezone, priority, variables)"
    )]
    Empty,
    /// The header has no phone column.
    #[error("the header row has no phone column (name one phone, number or phone_number)")]
    NoPhoneColumn,
    /// Columns named twice (case-insensitive; `phone`, `number` and `phone_number` are one).
    #[error("duplicate column names in the header: {}", .0.join("; "))]
    DuplicateHeaders(Vec<String>),
    /// A column name that is not usable.
    #[error("bad column name {name:?} (column {column}): {why}")]
    BadHeader {
        /// 1-based.
        column: usize,
        /// As written.
        name: String,
        /// Why.
        why: String,
    },
    /// Too many columns.
    #[error("the header row has more than {max} columns")]
    TooManyColumns {
        /// The cap.
        max: usize,
    },
    /// The header row is too long.
    #[error("the header row is longer than {max} bytes")]
    HeaderTooLong {
        /// The cap.
        max: usize,
    },
    /// The file's encoding is not UTF-8.
    #[error("{0}")]
    Encoding(String),
    /// Too many rows.
    #[error("more than {max} rows in one upload; split the file")]
    TooManyRows {
        /// The cap.
        max: u64,
    },
}

impl ImportError {
    /// A stable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            ImportError::Empty => "empty_upload",
            ImportError::NoPhoneColumn => "no_phone_column",
            ImportError::DuplicateHeaders(_) => "duplicate_headers",
            ImportError::BadHeader { .. } => "bad_header",
            ImportError::TooManyColumns { .. } => "too_many_columns",
            ImportError::HeaderTooLong { .. } => "header_too_long",
            ImportError::Encoding(_) => "encoding",
            ImportError::TooManyRows { .. } => "too_many_rows",
        }
    }
}

/// Why a row was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// No phone value.
    MissingPhone,
    /// The phone is not a valid number.
    InvalidNumber,
    /// The timezone is not an IANA zone.
    InvalidTimezone,
    /// The priority is not an integer in range.
    InvalidPriority,
    /// A variable is not acceptable (JSON: its name or type).
    InvalidVariable,
    /// A JSON item that is not a contact object (not an object, unknown field, wrong type).
    InvalidRow,
    /// Not as many fields as the header has columns.
    ColumnCount,
    /// Not UTF-8.
    Encoding,
    /// Over [`MAX_RECORD_BYTES`] or [`MAX_FIELD_BYTES`].
    TooLong,
}

impl RejectCode {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::MissingPhone => "missing_phone",
            RejectCode::InvalidNumber => "invalid_number",
            RejectCode::InvalidTimezone => "invalid_timezone",
            RejectCode::InvalidPriority => "invalid_priority",
            RejectCode::InvalidVariable => "invalid_variable",
            RejectCode::InvalidRow => "invalid_row",
            RejectCode::ColumnCount => "column_count",
            RejectCode::Encoding => "encoding",
            RejectCode::TooLong => "too_long",
        }
    }
}

/// What became of one row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutcome {
    /// Valid (status `queued`; the caller checks the suppression list and the campaign's
    /// existing contacts).
    Accepted(NewContact),
    /// Refused.
    Rejected {
        /// Why, as a code.
        code: RejectCode,
        /// Why, as a sentence.
        reason: String,
    },
    /// The same E.164 number as an earlier row of this upload.
    Duplicate {
        /// That row's line (CSV) or index (JSON).
        of_line: u64,
    },
}

/// One row's report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// CSV: the 1-based line the row starts on (a quoted field may span lines). JSON: the
    /// 0-based index in the array.
    pub line: u64,
    /// What became of it.
    pub outcome: RowOutcome,
}

impl Row {
    /// The sentence for a report (None when accepted).
    pub fn reason(&self) -> Option<String> {
        match &self.outcome {
            RowOutcome::Accepted(_) => None,
            RowOutcome::Rejected { reason, .. } => Some(reason.clone()),
            RowOutcome::Duplicate { of_line } => Some(format!("duplicate of line {of_line}")),
        }
    }
}

/// Checks rows and remembers the numbers seen (duplicates within one upload).
#[derive(Debug)]
struct Validator {
    opts: ImportOptions,
    seen: HashMap<String, u64>,
    zones: HashMap<String, bool>,
}

/// A row's values before validation.
#[derive(Debug, Default)]
struct RawRow<'a> {
    phone: Option<&'a str>,
    name: Option<&'a str>,
    timezone: Option<&'a str>,
    priority: Option<&'a str>,
    variables: BTreeMap<String, String>,
}

fn rejected(code: RejectCode, reason: impl Into<String>) -> RowOutcome {
    RowOutcome::Rejected {
        code,
        reason: reason.into(),
    }
}

impl Validator {
    fn new(opts: ImportOptions) -> Validator {
        Validator {
            opts,
            seen: HashMap::new(),
            zones: HashMap::new(),
        }
    }

    fn zone_ok(&mut self, name: &str) -> bool {
        if let Some(ok) = self.zones.get(name) {
            return *ok;
        }
        let ok = tz::valid_zone(name);
        if self.zones.len() < 1024 {
            self.zones.insert(name.to_owned(), ok);
        }
        ok
    }

    fn check(&mut self, line: u64, raw: RawRow<'_>) -> RowOutcome {
        let phone_in = raw.phone.map(str::trim).unwrap_or("");
        if phone_in.is_empty() {
            return rejected(RejectCode::MissingPhone, "no phone number");
        }
        let e164 = match phone::normalize(phone_in, &self.opts.default_region) {
            Ok(n) => n,
            Err(e) => return rejected(RejectCode::InvalidNumber, format!("phone: {e}")),
        };
        let timezone = match raw.timezone.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(t) if self.zone_ok(t) => Some(t.to_owned()),
            Some(t) => {
                return rejected(
                    RejectCode::InvalidTimezone,
                    format!(
                        "timezone: {:?} is not an IANA time zone (e.g. Europe/Paris)",
                        clip(t)
                    ),
                );
            }
        };
        let priority = match raw.priority.map(str::trim).filter(|p| !p.is_empty()) {
            None => 0,
            Some(p) => match p.parse::<i64>() {
                Ok(v) if (-MAX_PRIORITY..=MAX_PRIORITY).contains(&v) => v,
                _ => {
                    return rejected(
                        RejectCode::InvalidPriority,
                        format!(
                            "priority: {:?} is not an integer from -{MAX_PRIORITY} to {MAX_PRIORITY}",
                            clip(p)
                        ),
                    );
                }
            },
        };
        if let Some(first) = self.seen.get(&e164) {
            return RowOutcome::Duplicate { of_line: *first };
        }
        let (resolved_tz, _) = tz::resolve(timezone.as_deref(), &e164, &self.opts.default_timezone);
        self.seen.insert(e164.clone(), line);
        RowOutcome::Accepted(NewContact {
            phone: e164,
            name: raw
                .name
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
            timezone,
            resolved_tz,
            variables: raw.variables,
            priority,
            line: Some(line as i64),
            status: ContactStatus::Queued,
            reason: None,
        })
    }
}

/// At most 40 characters of a value, for a reason.
fn clip(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(40).collect();
        c.push('…');
        c
    }
}

/// Whether `name` may name a script variable.
pub fn valid_variable_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    match bytes.next() {
        None => return Err("empty name".to_owned()),
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        Some(_) => {
            return Err(
                "a column name starts with a letter or _ (is the first row a header?)".to_owned(),
            );
        }
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err("a column name has only letters, digits and _".to_owned());
    }
    if name.len() > MAX_VARIABLE_NAME {
        return Err(format!("longer than {MAX_VARIABLE_NAME} characters"));
    }
    Ok(())
}

/// The role of a column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Column {
    Phone,
    Name,
    Timezone,
    Priority,
    Variable(String),
}

impl Column {
    fn of(header: &str) -> Result<Column, String> {
        let lower = header.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "phone" | "number" | "phone_number" => Column::Phone,
            "name" => Column::Name,
            "timezone" | "time_zone" | "tz" => Column::Timezone,
            "priority" => Column::Priority,
            _ => {
                valid_variable_name(header)?;
                Column::Variable(header.to_owned())
            }
        })
    }

    /// The key two columns clash on.
    fn key(&self) -> String {
        match self {
            Column::Phone => "phone".to_owned(),
            Column::Name => "name".to_owned(),
            Column::Timezone => "timezone".to_owned(),
            Column::Priority => "priority".to_owned(),
            Column::Variable(v) => v.to_ascii_lowercase(),
        }
    }
}

fn parse_header(fields: &[&str]) -> Result<Vec<Column>, ImportError> {
    if fields.len() > MAX_COLUMNS {
        return Err(ImportError::TooManyColumns { max: MAX_COLUMNS });
    }
    let mut columns = Vec::with_capacity(fields.len());
    for (i, f) in fields.iter().enumerate() {
        let name = f.trim();
        let col = Column::of(name).map_err(|why| ImportError::BadHeader {
            column: i + 1,
            name: clip(name),
            why,
        })?;
        columns.push(col);
    }
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, c) in columns.iter().enumerate() {
        by_key.entry(c.key()).or_default().push(i);
    }
    let mut dups: Vec<(usize, String)> = by_key
        .into_values()
        .filter(|v| v.len() > 1)
        .map(|v| {
            let names: Vec<String> = v
                .iter()
                .map(|i| format!("{:?} (column {})", fields[*i].trim(), i + 1))
                .collect();
            (v[0], names.join(" and "))
        })
        .collect();
    if !dups.is_empty() {
        dups.sort();
        return Err(ImportError::DuplicateHeaders(
            dups.into_iter().map(|(_, s)| s).collect(),
        ));
    }
    if !columns.contains(&Column::Phone) {
        return Err(ImportError::NoPhoneColumn);
    }
    Ok(columns)
}

/// Where the CSV parser is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The first bytes (a byte order mark?) are being collected.
    Head,
    /// Between records: blank lines are skipped here.
    StartRecord,
    /// Inside a record.
    InRecord,
    /// After a record that was too long: dropping bytes up to the next line break.
    Skipping,
    /// `finish` ran.
    Done,
}

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// A streaming CSV contact parser: [`CsvImport::push`] each chunk of the body as it arrives,
/// then [`CsvImport::finish`]; rows come out in order as soon as they are complete. Memory is
/// bounded by [`MAX_RECORD_BYTES`] plus the set of numbers seen (for duplicates). Chunk
/// boundaries may fall anywhere (inside a field, a UTF-8 character, a CRLF, the BOM): the rows
/// are the same.
#[derive(Debug)]
pub struct CsvImport {
    rdr: csv_core::Reader,
    buf: Vec<u8>,
    nbuf: usize,
    ends: Vec<usize>,
    nends: usize,
    mode: Mode,
    head: Vec<u8>,
    /// The line of the next input byte (1-based).
    line: u64,
    /// The line the record in progress starts on.
    record_line: u64,
    columns: Option<Vec<Column>>,
    validator: Validator,
    rows: u64,
    failed: Option<ImportError>,
}

impl CsvImport {
    /// A parser for one upload.
    pub fn new(opts: ImportOptions) -> CsvImport {
        CsvImport {
            rdr: csv_core::Reader::new(),
            buf: vec![0; MAX_RECORD_BYTES],
            nbuf: 0,
            ends: vec![0; MAX_COLUMNS + 2],
            nends: 0,
            mode: Mode::Head,
            head: Vec::with_capacity(3),
            line: 1,
            record_line: 1,
            columns: None,
            validator: Validator::new(opts),
            rows: 0,
            failed: None,
        }
    }

    /// Rows reported so far (accepted, rejected and duplicates; not the header or blank lines).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The header's column names once read: the phone column as `phone`, the others as
    /// written (trimmed).
    pub fn columns(&self) -> Option<Vec<String>> {
        self.columns.as_ref().map(|c| {
            c.iter()
                .map(|c| match c {
                    Column::Variable(v) => v.clone(),
                    other => other.key(),
                })
                .collect()
        })
    }

    /// Parses the next chunk, appending each row it completes to `out`. An error is about
    /// the whole upload (rows already appended stay valid reports) and every later call
    /// returns it again.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Row>) -> Result<(), ImportError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.push_inner(chunk, out);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// Ends the input: completes the last row (one without a final line break) and checks
    /// that there was a header.
    pub fn finish(&mut self, out: &mut Vec<Row>) -> Result<(), ImportError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.finish_inner(out);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn push_inner(&mut self, mut chunk: &[u8], out: &mut Vec<Row>) -> Result<(), ImportError> {
        if self.mode == Mode::Done {
            return Ok(());
        }
        if self.mode == Mode::Head {
            let take = (3 - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if !self.settle_head(false, out)? {
                return Ok(());
            }
        }
        self.feed(chunk, out)
    }

    fn finish_inner(&mut self, out: &mut Vec<Row>) -> Result<(), ImportError> {
        if self.mode == Mode::Done {
            return Ok(());
        }
        if self.mode == Mode::Head {
            self.settle_head(true, out)?;
        }
        if self.mode == Mode::InRecord {
            let (res, _, _, nend) = self.rdr.read_record(
                &[],
                &mut self.buf[self.nbuf..],
                &mut self.ends[self.nends..],
            );
            self.nends += nend;
            match res {
                csv_core::ReadRecordResult::Record => self.record(out)?,
                csv_core::ReadRecordResult::OutputEndsFull => self.overflow(out)?,
                _ => {}
            }
        }
        self.mode = Mode::Done;
        if self.columns.is_none() {
            return Err(ImportError::Empty);
        }
        Ok(())
    }

    /// Decides what the first bytes are: true when parsing may go on.
    fn settle_head(&mut self, at_end: bool, out: &mut Vec<Row>) -> Result<bool, ImportError> {
        let head = std::mem::take(&mut self.head);
        if head.starts_with(b"\xff\xfe") || head.starts_with(b"\xfe\xff") {
            return Err(ImportError::Encoding(
                "the file is UTF-16 text; save it as \"CSV UTF-8\"".to_owned(),
            ));
        }
        if head.len() < 3 && !at_end && UTF8_BOM.starts_with(&head)
            || head.len() < 2 && !at_end && head.as_slice() == b"\xff"
            || head.len() < 2 && !at_end && head.as_slice() == b"\xfe"
        {
            self.head = head;
            return Ok(false);
        }
        self.mode = Mode::StartRecord;
        let rest: &[u8] = head.strip_prefix(UTF8_BOM).unwrap_or(&head);
        self.feed(rest, out)?;
        Ok(true)
    }

    fn feed(&mut self, mut input: &[u8], out: &mut Vec<Row>) -> Result<(), ImportError> {
        while !input.is_empty() {
            match self.mode {
                Mode::Head | Mode::Done => return Ok(()),
                Mode::Skipping => match input.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        input = &input[i + 1..];
                        self.line += 1;
                        self.rdr.reset();
                        self.mode = Mode::StartRecord;
                    }
                    None => return Ok(()),
                },
                Mode::StartRecord => {
                    let blank = input
                        .iter()
                        .position(|&b| b != b'\n' && b != b'\r')
                        .unwrap_or(input.len());
                    self.line += count_lf(&input[..blank]);
                    input = &input[blank..];
                    if !input.is_empty() {
                        self.record_line = self.line;
                        self.nbuf = 0;
                        self.nends = 0;
                        self.mode = Mode::InRecord;
                    }
                }
                Mode::InRecord => {
                    let (res, nin, nout, nend) = self.rdr.read_record(
                        input,
                        &mut self.buf[self.nbuf..],
                        &mut self.ends[self.nends..],
                    );
                    self.line += count_lf(&input[..nin]);
                    input = &input[nin..];
                    self.nbuf += nout;
                    self.nends += nend;
                    match res {
                        csv_core::ReadRecordResult::Record => {
                            self.mode = Mode::StartRecord;
                            self.record(out)?;
                        }
                        csv_core::ReadRecordResult::OutputFull
                        | csv_core::ReadRecordResult::OutputEndsFull => self.overflow(out)?,
                        csv_core::ReadRecordResult::InputEmpty
                        | csv_core::ReadRecordResult::End => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// The record in progress does not fit: report it and skip to the next line break.
    fn overflow(&mut self, out: &mut Vec<Row>) -> Result<(), ImportError> {
        let too_many_fields = self.nends >= self.ends.len();
        if self.columns.is_none() {
            return Err(if too_many_fields {
                ImportError::TooManyColumns { max: MAX_COLUMNS }
            } else {
                ImportError::HeaderTooLong {
                    max: MAX_RECORD_BYTES,
                }
            });
        }
        self.mode = Mode::Skipping;
        let reason = if too_many_fields {
            format!("more than {MAX_COLUMNS} fields; skipped to the next line")
        } else {
            format!(
                "row longer than {MAX_RECORD_BYTES} bytes (or a quote never closed); skipped to the next line"
            )
        };
        let code = if too_many_fields {
            RejectCode::ColumnCount
        } else {
            RejectCode::TooLong
        };
        self.emit(out, rejected(code, reason))
    }

    fn emit(&mut self, out: &mut Vec<Row>, outcome: RowOutcome) -> Result<(), ImportError> {
        self.rows += 1;
        if self.rows > self.validator.opts.max_rows {
            return Err(ImportError::TooManyRows {
                max: self.validator.opts.max_rows,
            });
        }
        out.push(Row {
            line: self.record_line,
            outcome,
        });
        Ok(())
    }

    /// A complete record is in `buf`/`ends`.
    fn record(&mut self, out: &mut Vec<Row>) -> Result<(), ImportError> {
        let data = &self.buf[..self.nbuf];
        let ends = &self.ends[..self.nends];
        let blank = ends
            .iter()
            .scan(0, |start, &end| {
                let f = &data[*start..end];
                *start = end;
                Some(f)
            })
            .all(|f| f.iter().all(|b| b.is_ascii_whitespace()));
        if blank {
            return Ok(());
        }
        let text = match std::str::from_utf8(data) {
            Ok(t) => t,
            Err(e) => {
                let at = e.valid_up_to();
                let col = ends.iter().position(|&end| at < end).unwrap_or(0) + 1;
                let msg = format!(
                    "not UTF-8 text (byte 0x{:02X} in field {col}); save the file as \"CSV UTF-8\"",
                    data.get(at).copied().unwrap_or(0)
                );
                if self.columns.is_none() {
                    return Err(ImportError::Encoding(format!("the header row is {msg}")));
                }
                return self.emit(out, rejected(RejectCode::Encoding, msg));
            }
        };
        let mut fields: Vec<&str> = Vec::with_capacity(ends.len());
        let mut start = 0;
        for &end in ends {
            // Field ends fall on the delimiters, which are ASCII: char boundaries.
            fields.push(text.get(start..end).unwrap_or(""));
            start = end;
        }
        let Some(columns) = &self.columns else {
            self.columns = Some(parse_header(&fields)?);
            return Ok(());
        };
        if fields.len() != columns.len() {
            let msg = format!(
                "{} fields, the header has {} columns",
                fields.len(),
                columns.len()
            );
            return self.emit(out, rejected(RejectCode::ColumnCount, msg));
        }
        if let Some(i) = fields.iter().position(|f| f.len() > MAX_FIELD_BYTES) {
            let msg = format!(
                "field {} ({}) is longer than {MAX_FIELD_BYTES} bytes",
                i + 1,
                columns[i].key()
            );
            return self.emit(out, rejected(RejectCode::TooLong, msg));
        }
        let mut raw = RawRow::default();
        for (col, value) in columns.iter().zip(&fields) {
            match col {
                Column::Phone => raw.phone = Some(value),
                Column::Name => raw.name = Some(value),
                Column::Timezone => raw.timezone = Some(value),
                Column::Priority => raw.priority = Some(value),
                Column::Variable(v) => {
                    raw.variables.insert(v.clone(), (*value).to_owned());
                }
            }
        }
        let outcome = self.validator.check(self.record_line, raw);
        self.emit(out, outcome)
    }
}

fn count_lf(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Validates a JSON upload: each item an object `{"phone", "name"?, "timezone"?, "priority"?,
/// "variables"?}` (`variables` an object of strings, numbers or booleans). Rows are numbered by
/// their 0-based index. Fails only when there are more than `opts.max_rows` items.
pub fn json_rows(items: &[Value], opts: &ImportOptions) -> Result<Vec<Row>, ImportError> {
    if items.len() as u64 > opts.max_rows {
        return Err(ImportError::TooManyRows { max: opts.max_rows });
    }
    let mut v = Validator::new(opts.clone());
    Ok(items
        .iter()
        .enumerate()
        .map(|(i, item)| Row {
            line: i as u64,
            outcome: json_row(&mut v, i as u64, item),
        })
        .collect())
}

fn json_scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn json_row(v: &mut Validator, index: u64, item: &Value) -> RowOutcome {
    let Value::Object(map) = item else {
        return rejected(RejectCode::InvalidRow, "not a JSON object");
    };
    let mut phone = None;
    let mut name = None;
    let mut timezone = None;
    let mut priority = None;
    let mut variables = BTreeMap::new();
    for (key, value) in map {
        let text = match (key.as_str(), value) {
            (_, Value::Null) => continue,
            ("variables", Value::Object(vars)) => {
                if vars.len() > MAX_COLUMNS {
                    return rejected(
                        RejectCode::InvalidVariable,
                        format!("more than {MAX_COLUMNS} variables"),
                    );
                }
                for (k, val) in vars {
                    if let Err(why) = valid_variable_name(k) {
                        return rejected(
                            RejectCode::InvalidVariable,
                            format!("variable {:?}: {why}", clip(k)),
                        );
                    }
                    let Some(s) = json_scalar(val) else {
                        return rejected(
                            RejectCode::InvalidVariable,
                            format!("variable {k}: not a string, number or boolean"),
                        );
                    };
                    if s.len() > MAX_FIELD_BYTES {
                        return rejected(
                            RejectCode::TooLong,
                            format!("variable {k} is longer than {MAX_FIELD_BYTES} bytes"),
                        );
                    }
                    variables.insert(k.clone(), s);
                }
                continue;
            }
            ("variables", _) => {
                return rejected(RejectCode::InvalidRow, "variables: not an object");
            }
            ("phone" | "name" | "timezone" | "priority", val) => match json_scalar(val) {
                Some(s) if s.len() <= MAX_FIELD_BYTES => s,
                Some(_) => {
                    return rejected(
                        RejectCode::TooLong,
                        format!("{key} is longer than {MAX_FIELD_BYTES} bytes"),
                    );
                }
                None => {
                    return rejected(
                        RejectCode::InvalidRow,
                        format!("{key}: not a string or number"),
                    );
                }
            },
            (other, _) => {
                return rejected(
                    RejectCode::InvalidRow,
                    format!(
                        "unknown field {:?} (expected phone, name, timezone, priority, variables)",
                        clip(other)
                    ),
                );
            }
        };
        match key.as_str() {
            "phone" => phone = Some(text),
            "name" => name = Some(text),
            "timezone" => timezone = Some(text),
            _ => priority = Some(text),
        }
    }
    v.check(
        index,
        RawRow {
            phone: phone.as_deref(),
            name: name.as_deref(),
            timezone: timezone.as_deref(),
            priority: priority.as_deref(),
            variables,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ImportOptions {
        ImportOptions::new("US", "America/New_York")
    }

    /// Parses `data` in chunks of the given sizes (cycled), returning the rows and the
    /// upload's error.
    fn parse_chunked(data: &[u8], sizes: &[usize]) -> (Vec<Row>, Option<ImportError>) {
        let mut imp = CsvImport::new(opts());
        let mut rows = Vec::new();
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].clamp(1, rest.len());
            i += 1;
            if let Err(e) = imp.push(&rest[..n], &mut rows) {
                return (rows, Some(e));
            }
            rest = &rest[n..];
        }
        let err = imp.finish(&mut rows).err();
        assert_eq!(
            imp.buf.len(),
            MAX_RECORD_BYTES,
            "the record buffer never grows"
        );
        (rows, err)
    }

    fn parse(data: &[u8]) -> Vec<Row> {
        let (rows, err) = parse_chunked(data, &[usize::MAX]);
        assert_eq!(err, None);
        rows
    }

    fn parse_err(data: &[u8]) -> ImportError {
        parse_chunked(data, &[usize::MAX])
            .1
            .expect("an upload error")
    }

    fn accepted(row: &Row) -> &NewContact {
        match &row.outcome {
            RowOutcome::Accepted(c) => c,
            other => panic!("line {}: {other:?}", row.line),
        }
    }

    fn rejected_code(row: &Row) -> RejectCode {
        match &row.outcome {
            RowOutcome::Rejected { code, .. } => *code,
            other => panic!("line {}: {other:?}", row.line),
        }
    }

    /// (line, outcome kind or code) for compact assertions.
    fn summary(rows: &[Row]) -> Vec<(u64, String)> {
        rows.iter()
            .map(|r| {
                let what = match &r.outcome {
                    RowOutcome::Accepted(c) => format!("ok {}", c.phone),
                    RowOutcome::Rejected { code, .. } => code.as_str().to_owned(),
                    RowOutcome::Duplicate { of_line } => format!("dup {of_line}"),
                };
                (r.line, what)
            })
            .collect()
    }

    #[test]
    fn the_template_parses() {
        let rows = parse(CSV_TEMPLATE.as_bytes());
        assert_eq!(rows.len(), 2);
        let a = accepted(&rows[0]);
        assert_eq!(rows[0].line, 2);
        assert_eq!(a.phone, "+14155550123");
        assert_eq!(a.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(a.timezone.as_deref(), Some("America/Los_Angeles"));
        assert_eq!(a.resolved_tz, "America/Los_Angeles");
        assert_eq!(a.variables["first_name"], "Ada");
        assert_eq!(a.variables["account_id"], "A-1001");
        assert_eq!(a.line, Some(2));
        assert_eq!(a.status, ContactStatus::Queued);
        let b = accepted(&rows[1]);
        assert_eq!(b.phone, "+12125550147");
        assert_eq!(b.name.as_deref(), Some("Turing, Alan"));
        assert_eq!(b.timezone, None);
        assert_eq!(b.resolved_tz, "America/New_York");
        assert_eq!(b.priority, 5);
    }

    #[test]
    fn headers_map_by_name_case_insensitive_and_trimmed() {
        let rows = parse(b" City ,TZ, PHONE_NUMBER ,Priority,NAME\nParis,Europe/Paris,+33 1 42 68 53 00,-3,Marie\n");
        let c = accepted(&rows[0]);
        assert_eq!(c.phone, "+33142685300");
        assert_eq!(c.timezone.as_deref(), Some("Europe/Paris"));
        assert_eq!(c.priority, -3);
        assert_eq!(c.name.as_deref(), Some("Marie"));
        assert_eq!(
            c.variables,
            BTreeMap::from([("City".to_owned(), "Paris".to_owned())])
        );
        // The zone comes from the number when the row has none, else the default.
        let rows = parse(b"number\n+442070313000\n+61891234567\n");
        assert_eq!(accepted(&rows[0]).resolved_tz, "Europe/London");
        assert_eq!(accepted(&rows[1]).resolved_tz, "America/New_York");
    }

    #[test]
    fn bad_headers_fail_the_whole_upload() {
        assert_eq!(
            parse_err(b"phone,name,Phone\n+14155550123,a,b\n"),
            ImportError::DuplicateHeaders(vec![
                "\"phone\" (column 1) and \"Phone\" (column 3)".to_owned()
            ])
        );
        let e = parse_err(b"number,city,phone_number,City\n");
        assert_eq!(e.code(), "duplicate_headers");
        assert_eq!(
            e.to_string(),
            "duplicate column names in the header: \"number\" (column 1) and \"phone_number\" (column 3); \"city\" (column 2) and \"City\" (column 4)"
        );
        assert!(matches!(
            parse_err(b"phone,first name\n"),
            ImportError::BadHeader { column: 2, .. }
        ));
        assert!(matches!(
            parse_err(b"phone,=cmd|' /C calc'!A0\n"),
            ImportError::BadHeader { column: 2, .. }
        ));
        assert!(matches!(
            parse_err(b"phone,,x\n"),
            ImportError::BadHeader { column: 2, .. }
        ));
        let long = format!("phone,{}\n", "v".repeat(65));
        assert!(matches!(
            parse_err(long.as_bytes()),
            ImportError::BadHeader { column: 2, .. }
        ));
        // A file without a header: its first row is not a header.
        let e = parse_err(b"+14155550123,Ada\n");
        assert!(e.to_string().contains("is the first row a header?"), "{e}");
        assert_eq!(
            parse_err(b"name,city\nAda,Paris\n"),
            ImportError::NoPhoneColumn
        );
        assert_eq!(parse_err(b""), ImportError::Empty);
        assert_eq!(parse_err(b"\r\n\n\n"), ImportError::Empty);
        let wide: Vec<String> = (0..65).map(|i| format!("v{i}")).collect();
        let wide = format!("phone,{}\n", wide.join(","));
        assert_eq!(
            parse_err(wide.as_bytes()),
            ImportError::TooManyColumns { max: MAX_COLUMNS }
        );
        let huge = format!("phone,\"{}\"\n", "x".repeat(MAX_RECORD_BYTES));
        assert_eq!(
            parse_err(huge.as_bytes()),
            ImportError::HeaderTooLong {
                max: MAX_RECORD_BYTES
            }
        );
        assert_eq!(parse_err(b"phone,n\xe9m\n").code(), "encoding");
    }

    #[test]
    fn broken_rows_are_reported_by_line_and_the_rest_goes_on() {
        let data = b"phone,name,timezone,priority\n\
            +14155550123,Ada,,\n\
            ,No phone,,\n\
            555-0123,Short,,\n\
            +14155550124,Bad zone,Mars/Olympus,\n\
            +14155550125,Bad priority,,high\n\
            +14155550126,Too big,,99999999999\n\
            +14155550127,Too few\n\
            +14155550128,Too,many,1,fields\n\
            (415) 555-0123,Again,,\n\
            \n\
            ,,,\n\
            4155550129,Last,,7";
        let rows = parse(data);
        assert_eq!(
            summary(&rows),
            vec![
                (2, "ok +14155550123".to_owned()),
                (3, "missing_phone".to_owned()),
                (4, "invalid_number".to_owned()),
                (5, "invalid_timezone".to_owned()),
                (6, "invalid_priority".to_owned()),
                (7, "invalid_priority".to_owned()),
                (8, "column_count".to_owned()),
                (9, "column_count".to_owned()),
                (10, "dup 2".to_owned()),
                (13, "ok +14155550129".to_owned()),
            ]
        );
        assert_eq!(rows[8].reason().as_deref(), Some("duplicate of line 2"));
        assert_eq!(
            rows[6].reason().as_deref(),
            Some("2 fields, the header has 4 columns")
        );
        assert!(
            rows[3]
                .reason()
                .unwrap_or_default()
                .contains("Mars/Olympus")
        );
    }

    #[test]
    fn formulas_are_data_but_never_numbers() {
        let data = "phone,name,note\n\
            \"=cmd|' /C calc'!A0\",x,y\n\
            +14155550123,=HYPERLINK(\"http://evil\"),@SUM(A1:A9)\n\
            +14155550124,-2+3,\"\tlead\"\n";
        let rows = parse(data.as_bytes());
        assert_eq!(rejected_code(&rows[0]), RejectCode::InvalidNumber);
        let c = accepted(&rows[1]);
        assert_eq!(c.name.as_deref(), Some("=HYPERLINK(\"http://evil\")"));
        assert_eq!(c.variables["note"], "@SUM(A1:A9)");
        let c = accepted(&rows[2]);
        assert_eq!(c.name.as_deref(), Some("-2+3"));
        assert_eq!(c.variables["note"], "\tlead");
    }

    #[test]
    fn encodings() {
        // A UTF-8 BOM is dropped, whole or split across chunks.
        let data = b"\xef\xbb\xbfphone,name\n+14155550123,Zo\xc3\xab\n";
        for sizes in [&[usize::MAX][..], &[1], &[2, 5]] {
            let (rows, err) = parse_chunked(data, sizes);
            assert_eq!(err, None);
            assert_eq!(accepted(&rows[0]).name.as_deref(), Some("Zoë"));
        }
        // A Latin-1 row is rejected naming its line; the others are fine.
        let rows = parse(b"phone,name\n+14155550123,Zo\xeb\n+14155550124,Zo\xc3\xab\n");
        assert_eq!(rejected_code(&rows[0]), RejectCode::Encoding);
        assert_eq!(rows[0].line, 2);
        assert!(rows[0].reason().unwrap_or_default().contains("CSV UTF-8"));
        accepted(&rows[1]);
        // UTF-16 (Excel's "Unicode text") is refused as a whole.
        let utf16: Vec<u8> = "\u{feff}phone\n+14155550123\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(parse_err(&utf16).code(), "encoding");
        // A lone 0xEF that is not a BOM is just a bad header.
        assert_eq!(parse_err(b"\xef").code(), "encoding");
    }

    #[test]
    fn a_one_megabyte_line_is_rejected_without_buffering_it() {
        let mut data = b"phone,name\n+14155550123,Ada\n+14155550124,".to_vec();
        data.extend(std::iter::repeat_n(b'x', 1 << 20));
        data.extend_from_slice(b"\n+14155550125,Bob\n");
        // One unquoted field of 1 MB, then one quoted field of 1 MB.
        data.extend_from_slice(b"+14155550126,\"");
        data.extend(std::iter::repeat_n(b'y', 1 << 20));
        data.extend_from_slice(b"\"\n+14155550127,Cy\n");
        for sizes in [&[usize::MAX][..], &[4096], &[1000, 7, 65_536]] {
            let (rows, err) = parse_chunked(&data, sizes);
            assert_eq!(err, None);
            assert_eq!(
                summary(&rows),
                vec![
                    (2, "ok +14155550123".to_owned()),
                    (3, "too_long".to_owned()),
                    (4, "ok +14155550125".to_owned()),
                    (5, "too_long".to_owned()),
                    (6, "ok +14155550127".to_owned()),
                ]
            );
        }
        // A field over 1 KiB in a record under 8 KiB.
        let data = format!(
            "phone,name\n+14155550123,{}\n",
            "z".repeat(MAX_FIELD_BYTES + 1)
        );
        let rows = parse(data.as_bytes());
        assert_eq!(rejected_code(&rows[0]), RejectCode::TooLong);
        assert!(rows[0].reason().unwrap_or_default().contains("name"));
        // More fields than the parser keeps.
        let data = format!(
            "phone,name\n+14155550123{}\n+14155550124,Ok\n",
            ",a".repeat(200)
        );
        assert_eq!(
            summary(&parse(data.as_bytes())),
            vec![
                (2, "column_count".to_owned()),
                (3, "ok +14155550124".to_owned())
            ]
        );
    }

    #[test]
    fn quoted_fields_and_line_ends() {
        let lf = "phone,name,note\n\
            \"+1 (415) 555-0123\",\"Smith, \"\"Bob\"\"\nJr\",\"a,b\"\n\
            +14155550124,\"multi\n\nline\",x\n\
            +14155550125,plain,\"\"\n";
        let rows = parse(lf.as_bytes());
        assert_eq!(
            summary(&rows),
            vec![
                (2, "ok +14155550123".to_owned()),
                (4, "ok +14155550124".to_owned()),
                (7, "ok +14155550125".to_owned()),
            ]
        );
        assert_eq!(
            accepted(&rows[0]).name.as_deref(),
            Some("Smith, \"Bob\"\nJr")
        );
        assert_eq!(accepted(&rows[0]).variables["note"], "a,b");
        assert_eq!(accepted(&rows[1]).name.as_deref(), Some("multi\n\nline"));
        assert_eq!(accepted(&rows[2]).variables["note"], "");
        // CRLF line ends: the same rows (quoted line breaks keep their CRLF).
        let crlf = lf.replace('\n', "\r\n");
        let rows2 = parse(crlf.as_bytes());
        assert_eq!(summary(&rows2), summary(&rows));
        assert_eq!(
            accepted(&rows2[0]).name.as_deref(),
            Some("Smith, \"Bob\"\r\nJr")
        );
    }

    /// A file with a bit of everything, for the chunking tests.
    fn mixed_file(long: bool) -> Vec<u8> {
        let mut d = b"\xef\xbb\xbfphone,name,timezone,priority,city\r\n".to_vec();
        d.extend_from_slice(b"+14155550123,Ada,,1,SF\r\n");
        d.extend_from_slice(b"\"(212) 555-0147\",\"Turing,\r\n Alan\",America/Chicago,,NY\r\n");
        d.extend_from_slice(b"\r\n\n");
        d.extend_from_slice(b"+33142685300,Zo\xc3\xab,,,Paris\n");
        d.extend_from_slice(b"+33142685301,Zo\xeb,,,Paris\n");
        d.extend_from_slice(b"=cmd|' /C calc'!A0,x,,,y\n");
        d.extend_from_slice(b"+14155550124,bad,,x,y\n");
        d.extend_from_slice(b"+14155550125,few\n");
        if long {
            d.extend_from_slice(b"+14155550126,");
            d.extend(std::iter::repeat_n(b'L', 20_000));
            d.extend_from_slice(b",,,\n");
        }
        d.extend_from_slice(b"212 555 0147,again,,,NY\r\n");
        d.extend_from_slice(b"+442070313000,\"q\"\"uote\",,-5,\"London\"");
        d
    }

    #[test]
    fn chunk_boundaries_never_change_the_rows() {
        let data = mixed_file(false);
        let whole = parse(&data);
        assert_eq!(
            summary(&whole),
            vec![
                (2, "ok +14155550123".to_owned()),
                (3, "ok +12125550147".to_owned()),
                (7, "ok +33142685300".to_owned()),
                (8, "encoding".to_owned()),
                (9, "invalid_number".to_owned()),
                (10, "invalid_priority".to_owned()),
                (11, "column_count".to_owned()),
                (12, "dup 3".to_owned()),
                (13, "ok +442070313000".to_owned()),
            ]
        );
        assert_eq!(parse_chunked(&data, &[1]), (whole.clone(), None));
        for split in 0..=data.len() {
            let mut imp = CsvImport::new(opts());
            let mut rows = Vec::new();
            imp.push(&data[..split], &mut rows).expect("first half");
            imp.push(&data[split..], &mut rows).expect("second half");
            imp.finish(&mut rows).expect("finish");
            assert_eq!(rows, whole, "split at {split}");
        }
    }

    #[test]
    fn random_chunk_sizes_never_change_the_rows() {
        let data = mixed_file(true);
        let whole = parse(&data);
        assert_eq!(whole.len(), 10);
        assert_eq!(rejected_code(&whole[7]), RejectCode::TooLong);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..40 {
            let sizes: Vec<usize> = (0..16)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    1 + (seed >> 33) as usize % 3000
                })
                .collect();
            assert_eq!(
                parse_chunked(&data, &sizes),
                (whole.clone(), None),
                "{sizes:?}"
            );
        }
    }

    #[test]
    fn the_row_cap_fails_the_upload_and_stays_failed() {
        let mut o = opts();
        o.max_rows = 2;
        let mut imp = CsvImport::new(o.clone());
        let mut rows = Vec::new();
        let e = imp
            .push(b"phone\n+14155550123\nbad\n+14155550124\n", &mut rows)
            .expect_err("over the cap");
        assert_eq!(e, ImportError::TooManyRows { max: 2 });
        assert_eq!(rows.len(), 2);
        assert_eq!(imp.push(b"+14155550125\n", &mut rows), Err(e.clone()));
        assert_eq!(imp.finish(&mut rows), Err(e));
        let items = vec![serde_json::json!({"phone": "+14155550123"}); 3];
        assert_eq!(
            json_rows(&items, &o),
            Err(ImportError::TooManyRows { max: 2 })
        );
    }

    #[test]
    fn json_rows_validate_like_csv() {
        let items = serde_json::json!([
            {"phone": "+1 415 555 0123", "name": "Ada", "timezone": "Europe/Paris", "priority": 3,
             "variables": {"city": "SF", "n": 2, "vip": true}},
            {"phone": "(415) 555-0123"},
            "not an object",
            {"phone": "+14155550124", "extra": 1},
            {"phone": "+14155550125", "variables": {"bad name": "x"}},
            {"phone": "+14155550126", "variables": {"nested": {"a": 1}}},
            {"phone": "+14155550127", "variables": []},
            {"name": "nobody"},
            {"phone": 4155550128u64, "timezone": null},
            {"phone": "+14155550129", "priority": "x"},
            {"phone": "=cmd|' /C calc'!A0"},
            {"phone": "+14155550130", "name": "x".repeat(2000)}
        ]);
        let items = items.as_array().expect("array");
        let rows = json_rows(items, &opts()).expect("rows");
        assert_eq!(
            summary(&rows),
            vec![
                (0, "ok +14155550123".to_owned()),
                (1, "dup 0".to_owned()),
                (2, "invalid_row".to_owned()),
                (3, "invalid_row".to_owned()),
                (4, "invalid_variable".to_owned()),
                (5, "invalid_variable".to_owned()),
                (6, "invalid_row".to_owned()),
                (7, "missing_phone".to_owned()),
                (8, "ok +14155550128".to_owned()),
                (9, "invalid_priority".to_owned()),
                (10, "invalid_number".to_owned()),
                (11, "too_long".to_owned()),
            ]
        );
        let c = accepted(&rows[0]);
        assert_eq!(c.priority, 3);
        assert_eq!(c.resolved_tz, "Europe/Paris");
        assert_eq!(c.line, Some(0));
        assert_eq!(c.variables["n"], "2");
        assert_eq!(c.variables["vip"], "true");
        assert_eq!(rows[1].reason().as_deref(), Some("duplicate of line 0"));
    }

    #[test]
    fn variable_names() {
        for ok in ["a", "_x", "City", "first_name2", &"v".repeat(64)] {
            assert_eq!(valid_variable_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1a", "first name", "é", "a-b", "=x", &"v".repeat(65)] {
            assert!(valid_variable_name(bad).is_err(), "{bad}");
        }
    }

    /// `cargo test --release --lib campaign::import -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; run in release"]
    fn hundred_thousand_rows_timing() {
        let mut data = String::from("phone,name,timezone,priority,city\n");
        for i in 0..100_000u32 {
            let area = [212, 312, 415, 646, 713][i as usize % 5];
            data.push_str(&format!(
                "({area}) 55{:01}-{:04},Contact {i},,{},City{}\n",
                2 + i % 7,
                i % 10_000,
                i % 3,
                i % 50
            ));
        }
        let start = std::time::Instant::now();
        let mut imp = CsvImport::new(opts());
        let mut rows = Vec::with_capacity(100_000);
        for chunk in data.as_bytes().chunks(64 * 1024) {
            imp.push(chunk, &mut rows).expect("push");
        }
        imp.finish(&mut rows).expect("finish");
        let took = start.elapsed();
        let ok = rows
            .iter()
            .filter(|r| matches!(r.outcome, RowOutcome::Accepted(_)))
            .count();
        eprintln!(
            "100000 rows ({} bytes): {ok} accepted in {took:?}",
            data.len()
        );
        assert_eq!(rows.len(), 100_000);
        assert!(ok > 90_000, "{ok}");
    }
}
