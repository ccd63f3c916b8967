//! JSON text → checked [`Script`], with errors that name the failing step by path.
//!
//! Two passes. A shape pass walks the raw JSON and reports unknown step kinds, unknown fields,
//! missing fields and wrong types at the exact path (`steps[2].gather.foo: unknown field`),
//! which serde's own messages cannot do. serde (with `deny_unknown_fields`) then builds the typed
//! [`Script`], and [`validate`] checks what types cannot express (ranges, `min <= max`, labels).

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

use super::model::{Gather, SCRIPT_VERSION, Script, Step, Target};

/// A script error at a path such as `steps[2].gather.max_digits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    /// Where: `version`, `steps`, `steps[2].gather.max_digits`, `steps[3].branch.cases["1"]`…
    pub path: String,
    /// What is wrong, and where possible what is expected.
    pub message: String,
}

impl ScriptError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> ScriptError {
        ScriptError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ScriptError {}

/// Longest pause, and longest gather timeout: ten minutes.
pub const MAX_WAIT_MS: u64 = 600_000;
/// Most digits one gather may collect.
pub const MAX_DIGITS: u32 = 64;
/// Most retries one gather may make.
pub const MAX_RETRIES: u32 = 10;

/// Parses and validates a script from JSON text; the error is the first problem found, in
/// document order.
pub fn parse(json: &str) -> Result<Script, ScriptError> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| ScriptError::new("script", format!("invalid JSON: {e}")))?;
    parse_value(&value)
}

/// [`parse`] for an already decoded JSON value (e.g. a field of an API request body).
pub fn parse_value(value: &Value) -> Result<Script, ScriptError> {
    check_root(value)?;
    // The shape pass accepted everything serde needs, so this only fails if the two disagree;
    // the error is still reported rather than panicking.
    let script: Script = serde_json::from_value(value.clone())
        .map_err(|e| ScriptError::new("script", e.to_string()))?;
    match validate(&script).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(script),
    }
}

// ---------------------------------------------------------------------------------------------
// Shape pass over raw JSON.

const STEP_KINDS: &[&str] = &[
    "answer",
    "play",
    "gather",
    "record",
    "pause",
    "hangup",
    "branch",
    "label",
    "goto",
    "opt_out",
    "send_dtmf",
    "listen",
    "echo",
    "early_media",
];

/// Longest `opt_out.reason` (it is stored with the suppression).
const MAX_OPT_OUT_REASON: usize = 200;

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    U32,
    U64,
    /// One DTMF key as a one-character string, or `null`.
    KeyOrNull,
    OneOf(&'static [&'static str]),
    Target,
    Cases,
}

/// (field, kind, required)
type Field = (&'static str, Kind, bool);

const ANSWER: &[Field] = &[];
const PLAY: &[Field] = &[("file", Kind::Str, true), ("barge_in", Kind::Bool, false)];
const GATHER: &[Field] = &[
    ("min_digits", Kind::U32, false),
    ("max_digits", Kind::U32, false),
    ("first_digit_timeout_ms", Kind::U64, false),
    ("inter_digit_timeout_ms", Kind::U64, false),
    ("terminator", Kind::KeyOrNull, false),
    ("retries", Kind::U32, false),
    ("prompt", Kind::Str, false),
    ("reprompt", Kind::Str, false),
    ("barge_in", Kind::Bool, false),
    ("store_as", Kind::Str, false),
    ("on_failure", Kind::Target, false),
];
const RECORD: &[Field] = &[
    ("action", Kind::OneOf(&["start", "stop"]), true),
    (
        "mode",
        Kind::OneOf(&["stereo", "inbound", "outbound"]),
        false,
    ),
];
const PAUSE: &[Field] = &[("ms", Kind::U64, true)];
const HANGUP: &[Field] = &[("reason", Kind::Str, false)];
const OPT_OUT: &[Field] = &[("reason", Kind::Str, false)];
const SEND_DTMF: &[Field] = &[("digits", Kind::Str, false), ("from", Kind::Str, false)];
const LISTEN: &[Field] = &[
    ("until", Kind::OneOf(&["speech", "silence"]), false),
    ("silence_ms", Kind::U64, false),
    ("timeout_ms", Kind::U64, false),
    ("store_as", Kind::Str, false),
];
/// The shortest `listen.silence_ms`: the media judges audio ended after this much quiet
/// ([`media::session::VOICE_HANGOVER_MS`]).
const MIN_SILENCE_MS: u64 = media::session::VOICE_HANGOVER_MS;
/// The longest `listen.silence_ms`.
const MAX_SILENCE_MS: u64 = 60_000;
const BRANCH: &[Field] = &[
    ("on", Kind::Str, true),
    ("cases", Kind::Cases, true),
    ("default", Kind::Target, false),
];

fn check_root(value: &Value) -> Result<(), ScriptError> {
    let Value::Object(root) = value else {
        return Err(ScriptError::new(
            "script",
            "must be an object {\"version\": 1, \"steps\": [...]}",
        ));
    };
    for key in root.keys() {
        if key != "version" && key != "steps" {
            return Err(ScriptError::new(
                key.as_str(),
                "unknown field (expected version, steps)",
            ));
        }
    }
    match root.get("version") {
        None => return Err(ScriptError::new("version", "missing (required)")),
        Some(v) => check_kind("version", v, Kind::U32)?,
    }
    match root.get("steps") {
        None => Err(ScriptError::new("steps", "missing (required)")),
        Some(Value::Array(steps)) => check_steps("steps", steps),
        Some(_) => Err(ScriptError::new("steps", "must be an array of steps")),
    }
}

fn check_steps(path: &str, steps: &[Value]) -> Result<(), ScriptError> {
    for (i, step) in steps.iter().enumerate() {
        check_step(&format!("{path}[{i}]"), step)?;
    }
    Ok(())
}

fn check_step(path: &str, step: &Value) -> Result<(), ScriptError> {
    let one_key = || {
        ScriptError::new(
            path,
            "a step is an object with exactly one key, the step kind (e.g. {\"play\": {\"file\": \"welcome\"}})",
        )
    };
    let Value::Object(map) = step else {
        return Err(one_key());
    };
    let mut entries = map.iter();
    let (Some((kind, body)), None) = (entries.next(), entries.next()) else {
        return Err(one_key());
    };
    let body_path = format!("{path}.{kind}");
    let fields = match kind.as_str() {
        "label" | "goto" => {
            return if body.is_string() {
                Ok(())
            } else {
                Err(ScriptError::new(
                    body_path,
                    "must be a string (a label name)",
                ))
            };
        }
        "answer" => ANSWER,
        "play" => PLAY,
        "gather" => GATHER,
        "record" => RECORD,
        "pause" => PAUSE,
        "hangup" => HANGUP,
        "branch" => BRANCH,
        "opt_out" => OPT_OUT,
        "send_dtmf" => SEND_DTMF,
        "listen" => LISTEN,
        "echo" => PAUSE,
        "early_media" => ANSWER,
        other => {
            return Err(ScriptError::new(
                path,
                format!(
                    "unknown step kind {other:?} (expected one of {})",
                    STEP_KINDS.join(", ")
                ),
            ));
        }
    };
    let Value::Object(body) = body else {
        return Err(ScriptError::new(body_path, "must be an object"));
    };
    check_fields(&body_path, body, fields)
}

fn check_fields(
    path: &str,
    body: &Map<String, Value>,
    fields: &[Field],
) -> Result<(), ScriptError> {
    for (key, value) in body {
        let Some((_, kind, _)) = fields.iter().find(|(name, _, _)| name == key) else {
            let expected: Vec<&str> = fields.iter().map(|(n, _, _)| *n).collect();
            let hint = if expected.is_empty() {
                "this step has no fields".to_string()
            } else {
                format!("expected one of {}", expected.join(", "))
            };
            return Err(ScriptError::new(
                format!("{path}.{key}"),
                format!("unknown field ({hint})"),
            ));
        };
        check_kind(&format!("{path}.{key}"), value, *kind)?;
    }
    for (name, _, required) in fields {
        if *required && !body.contains_key(*name) {
            return Err(ScriptError::new(
                format!("{path}.{name}"),
                "missing (required)",
            ));
        }
    }
    Ok(())
}

fn check_kind(path: &str, value: &Value, kind: Kind) -> Result<(), ScriptError> {
    let ok = match kind {
        Kind::Str => value.is_string(),
        Kind::Bool => value.is_boolean(),
        Kind::U32 => value.as_u64().is_some_and(|n| u32::try_from(n).is_ok()),
        Kind::U64 => value.as_u64().is_some(),
        Kind::KeyOrNull => {
            value.is_null() || value.as_str().is_some_and(|s| s.chars().count() == 1)
        }
        Kind::OneOf(options) => value.as_str().is_some_and(|s| options.contains(&s)),
        Kind::Target => return check_target(path, value),
        Kind::Cases => {
            let Value::Object(cases) = value else {
                return Err(ScriptError::new(
                    path,
                    "must be an object mapping values to steps or a label",
                ));
            };
            for (key, target) in cases {
                check_target(&format!("{path}[{}]", quoted(key)), target)?;
            }
            return Ok(());
        }
    };
    if ok {
        return Ok(());
    }
    let expected = match kind {
        Kind::Str => "must be a string".to_string(),
        Kind::Bool => "must be true or false".to_string(),
        Kind::U32 => format!("must be a whole number from 0 to {}", u32::MAX),
        Kind::U64 => "must be a whole number of milliseconds".to_string(),
        Kind::KeyOrNull => "must be one key such as \"#\", or null".to_string(),
        Kind::OneOf(options) => format!("must be one of {}", options.join(", ")),
        Kind::Target | Kind::Cases => String::new(),
    };
    Err(ScriptError::new(path, expected))
}

fn check_target(path: &str, value: &Value) -> Result<(), ScriptError> {
    match value {
        Value::String(_) => Ok(()),
        Value::Array(steps) => check_steps(path, steps),
        _ => Err(ScriptError::new(
            path,
            "must be a list of steps or a label name",
        )),
    }
}

/// A case key as written in a path: `cases["1"]`.
pub(crate) fn quoted(key: &str) -> String {
    serde_json::to_string(key).unwrap_or_else(|_| format!("{key:?}"))
}

// ---------------------------------------------------------------------------------------------
// Semantic pass over the typed script.

/// Every problem of a typed script that its types cannot rule out, in document order (empty:
/// the script is valid). Use it to show all errors at once, e.g. in an API's 422 response.
pub fn validate(script: &Script) -> Vec<ScriptError> {
    let mut errors = Vec::new();
    if script.version != SCRIPT_VERSION {
        errors.push(ScriptError::new(
            "version",
            format!(
                "unsupported version {} (this build reads version {SCRIPT_VERSION})",
                script.version
            ),
        ));
    }
    // Labels live only in the top-level list, so a jump never lands inside a nested list whose
    // end would have nowhere defined to continue.
    let mut labels: HashMap<&str, usize> = HashMap::new();
    for (i, step) in script.steps.iter().enumerate() {
        if let Step::Label(name) = step {
            let path = format!("steps[{i}].label");
            if name.is_empty() {
                errors.push(ScriptError::new(path, "must not be empty"));
            } else if let Some(first) = labels.get(name.as_str()) {
                errors.push(ScriptError::new(
                    path,
                    format!("duplicate label {name:?} (first at steps[{first}])"),
                ));
            } else {
                labels.insert(name, i);
            }
        }
    }
    let mut v = Validator {
        labels,
        errors: &mut errors,
    };
    v.steps("steps", &script.steps, true);
    errors
}

struct Validator<'a> {
    labels: HashMap<&'a str, usize>,
    errors: &'a mut Vec<ScriptError>,
}

impl Validator<'_> {
    fn err(&mut self, path: String, message: impl Into<String>) {
        self.errors.push(ScriptError::new(path, message));
    }

    fn steps(&mut self, path: &str, steps: &[Step], top_level: bool) {
        if steps.is_empty() {
            self.err(path.to_string(), "must not be empty");
        }
        for (i, step) in steps.iter().enumerate() {
            self.step(&format!("{path}[{i}]"), step, top_level);
        }
    }

    fn step(&mut self, path: &str, step: &Step, top_level: bool) {
        let p = |field: &str| format!("{path}.{}.{field}", step.kind());
        match step {
            Step::Answer(_) | Step::EarlyMedia(_) => {}
            Step::Play(play) => {
                if play.file.is_empty() {
                    self.err(p("file"), "must not be empty");
                }
            }
            Step::Gather(g) => self.gather(path, g),
            Step::Record(r) => {
                if r.mode.is_some() && r.action == super::model::RecordAction::Stop {
                    self.err(p("mode"), "only allowed with action \"start\"");
                }
            }
            Step::Pause(pause) => {
                if !(1..=MAX_WAIT_MS).contains(&pause.ms) {
                    self.err(p("ms"), format!("must be between 1 and {MAX_WAIT_MS}"));
                }
            }
            Step::Echo(e) => {
                if !(1..=MAX_WAIT_MS).contains(&e.ms) {
                    self.err(p("ms"), format!("must be between 1 and {MAX_WAIT_MS}"));
                }
            }
            Step::Listen(l) => {
                if !(MIN_SILENCE_MS..=MAX_SILENCE_MS).contains(&l.silence_ms) {
                    self.err(
                        p("silence_ms"),
                        format!("must be between {MIN_SILENCE_MS} and {MAX_SILENCE_MS}"),
                    );
                }
                if !(1..=MAX_WAIT_MS).contains(&l.timeout_ms) {
                    self.err(
                        p("timeout_ms"),
                        format!("must be between 1 and {MAX_WAIT_MS}"),
                    );
                }
                self.variable(p("store_as"), &l.store_as);
            }
            Step::Hangup(h) => {
                if h.reason.is_empty() {
                    self.err(p("reason"), "must not be empty");
                }
            }
            Step::Branch(b) => {
                self.variable(p("on"), &b.on);
                if b.cases.is_empty() {
                    self.err(p("cases"), "must not be empty");
                }
                for (key, target) in &b.cases {
                    self.target(&format!("{}[{}]", p("cases"), quoted(key)), target);
                }
                if let Some(target) = &b.default {
                    self.target(&p("default"), target);
                }
            }
            Step::Label(_) => {
                if !top_level {
                    self.err(
                        format!("{path}.label"),
                        "labels are allowed only in the top-level steps list",
                    );
                }
            }
            Step::Goto(label) => self.label_exists(format!("{path}.goto"), label),
            Step::SendDtmf(d) => match (&d.digits, &d.from) {
                (Some(digits), None) => {
                    if digits.is_empty()
                        || digits.chars().count() > MAX_DIGITS as usize
                        || !digits.chars().all(|c| is_dtmf(c.to_ascii_uppercase()))
                    {
                        self.err(
                            format!("{path}.send_dtmf.digits"),
                            format!("must be 1 to {MAX_DIGITS} DTMF keys (0-9 * # A-D)"),
                        );
                    }
                }
                (None, Some(from)) => self.variable(format!("{path}.send_dtmf.from"), from),
                _ => self.err(
                    format!("{path}.send_dtmf"),
                    "needs exactly one of digits and from",
                ),
            },
            Step::OptOut(o) => {
                if let Some(reason) = &o.reason
                    && (reason.is_empty() || reason.len() > MAX_OPT_OUT_REASON)
                {
                    self.err(
                        p("reason"),
                        format!("must be 1 to {MAX_OPT_OUT_REASON} bytes"),
                    );
                }
            }
        }
    }

    fn gather(&mut self, path: &str, g: &Gather) {
        let p = |field: &str| format!("{path}.gather.{field}");
        if g.min_digits > MAX_DIGITS {
            self.err(p("min_digits"), format!("must be at most {MAX_DIGITS}"));
        }
        let max = g.max_digits();
        if !(1..=MAX_DIGITS).contains(&max) {
            self.err(
                p("max_digits"),
                format!("must be between 1 and {MAX_DIGITS}"),
            );
        } else if max < g.min_digits {
            self.err(
                p("max_digits"),
                format!("must be >= min_digits ({})", g.min_digits),
            );
        }
        for (field, ms) in [
            ("first_digit_timeout_ms", g.first_digit_timeout_ms),
            ("inter_digit_timeout_ms", g.inter_digit_timeout_ms),
        ] {
            if !(1..=MAX_WAIT_MS).contains(&ms) {
                self.err(p(field), format!("must be between 1 and {MAX_WAIT_MS}"));
            }
        }
        if let Some(t) = g.terminator
            && !is_dtmf(t)
        {
            self.err(
                p("terminator"),
                "must be a DTMF key: 0-9, *, #, A-D (or null for none)",
            );
        }
        if g.retries > MAX_RETRIES {
            self.err(p("retries"), format!("must be at most {MAX_RETRIES}"));
        }
        for (field, file) in [("prompt", &g.prompt), ("reprompt", &g.reprompt)] {
            if file.as_ref().is_some_and(String::is_empty) {
                self.err(p(field), "must not be empty");
            }
        }
        self.variable(p("store_as"), &g.store_as);
        if let Some(target) = &g.on_failure {
            self.target(&p("on_failure"), target);
        }
    }

    fn target(&mut self, path: &str, target: &Target) {
        match target {
            Target::Steps(steps) => self.steps(path, steps, false),
            Target::Label(label) => self.label_exists(path.to_string(), label),
        }
    }

    fn label_exists(&mut self, path: String, label: &str) {
        if !self.labels.contains_key(label) {
            self.err(path, format!("unknown label {label:?}"));
        }
    }

    fn variable(&mut self, path: String, name: &str) {
        let mut chars = name.chars();
        let ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name.len() <= 64;
        if !ok {
            self.err(
                path,
                "must be a variable name: a letter or _, then letters, digits or _ (at most 64)",
            );
        }
    }
}

/// A key a caller can press: `0-9`, `*`, `#`, `A-D`.
pub(crate) fn is_dtmf(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}
