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
