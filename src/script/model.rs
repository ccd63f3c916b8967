//! The typed script: what a validated JSON script deserializes into.
//!
//! The JSON shape is serde's externally tagged enum: every step is an object with exactly one
//! key, the step kind, whose value holds the step's fields (`{"play": {"file": "welcome"}}`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The only script format version this build reads.
pub const SCRIPT_VERSION: u32 = 1;

/// A call script: `{ "version": 1, "steps": [ ... ] }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// The format version; must be [`SCRIPT_VERSION`].
    pub version: u32,
    /// The steps, run in order.
    pub steps: Vec<Step>,
}

impl Script {
    /// Whether any step, nested ones included (branch cases, a gather's `on_failure`), is a
    /// `record` step: such a script decides when the call records.
    pub fn has_record_step(&self) -> bool {
        fn any(steps: &[Step]) -> bool {
            steps.iter().any(|step| match step {
                Step::Record(_) => true,
                Step::Gather(g) => g.on_failure.as_ref().is_some_and(target),
                Step::Branch(b) => {
                    b.cases.values().any(target) || b.default.as_ref().is_some_and(target)
                }
                _ => false,
            })
        }
        fn target(t: &Target) -> bool {
            match t {
                Target::Steps(steps) => any(steps),
                Target::Label(_) => false,
            }
        }
        any(&self.steps)
    }
}

/// One step of a script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Answer the call (a no-op when it is already answered, e.g. an outbound call).
    Answer(Answer),
    /// Play a prompt file.
    Play(Play),
    /// Collect DTMF digits into a variable.
    Gather(Gather),
    /// Start or stop the call recording.
    Record(Record),
    /// Wait.
    Pause(Pause),
    /// Hang up and end the script.
    Hangup(Hangup),
    /// Choose the next steps by a variable's value.
    Branch(Branch),
    /// A jump target; allowed only in the top-level `steps` list.
    Label(String),
    /// Continue at a label.
    Goto(String),
    /// Put the callee on the tenant's do-not-call list (`{"opt_out": {}}`, optionally with a
    /// `reason`); the script goes on with the next step.
    OptOut(OptOut),
    /// Send DTMF digits to the other party (given, or a variable's); the script goes on with
    /// the next step while they are sent.
    SendDtmf(SendDtmf),
    /// Wait for the other party's audio: a prompt to start, or to play and end.
    Listen(Listen),
    /// Send the other party's audio back to it for a while.
    Echo(Echo),
    /// Inbound, before `answer`: 183 Session Progress with our SDP, so that the caller hears
    /// the prompts that follow before the call is answered (`{"early_media": {}}`).
    EarlyMedia(Answer),
}

impl Step {
    /// The step kind as written in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Answer(_) => "answer",
            Step::Play(_) => "play",
            Step::Gather(_) => "gather",
            Step::Record(_) => "record",
            Step::Pause(_) => "pause",
            Step::Hangup(_) => "hangup",
            Step::Branch(_) => "branch",
            Step::Label(_) => "label",
            Step::Goto(_) => "goto",
            Step::OptOut(_) => "opt_out",
            Step::SendDtmf(_) => "send_dtmf",
            Step::Listen(_) => "listen",
            Step::Echo(_) => "echo",
            Step::EarlyMedia(_) => "early_media",
        }
    }
}

/// `answer`: no fields (`{"answer": {}}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {}

/// `play`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Play {
    /// A file path or a prompt name (resolved by the prompt cache, not here).
    pub file: String,
    /// A DTMF digit stops the prompt (and is kept for a following `gather`). Default true.
    #[serde(default = "yes")]
    pub barge_in: bool,
}

/// `gather`: collect DTMF digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gather {
    /// Fewest digits that make a valid answer. Default 1.
    #[serde(default = "one")]
    pub min_digits: u32,
    /// Most digits: the gather ends as soon as this many are in. Default: `max(min_digits, 1)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_digits: Option<u32>,
    /// How long to wait for the first digit after the prompt ends. Default 5000.
    #[serde(default = "first_digit_default")]
    pub first_digit_timeout_ms: u64,
    /// How long to wait for each further digit. Default 3000.
    #[serde(default = "inter_digit_default")]
    pub inter_digit_timeout_ms: u64,
    /// The key that ends input (not stored). Default `"#"`; `null` for none.
    #[serde(default = "terminator_default")]
    pub terminator: Option<char>,
    /// Further attempts after a failed one (timeout or too few digits). Default 2.
    #[serde(default = "two")]
    pub retries: u32,
    /// Played before collecting (first attempt, and retries without a reprompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Played instead of the prompt before each retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprompt: Option<String>,
    /// A digit stops the prompt/reprompt and counts as input. Default true.
    #[serde(default = "yes")]
    pub barge_in: bool,
    /// The variable the digits are stored in. Default `"digits"`.
    #[serde(default = "store_as_default")]
    pub store_as: String,
    /// Where to go when every attempt failed (steps or a label). Default: hang up with reason
    /// `no_input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Target>,
}

impl Gather {
    /// The effective maximum digit count (see [`Gather::max_digits`]).
    pub fn max_digits(&self) -> u32 {
        self.max_digits.unwrap_or(self.min_digits.max(1))
    }
}

/// `record`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Start or stop.
    pub action: RecordAction,
    /// What to record (only with `start`). Default stereo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RecordMode>,
}

/// `record.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordAction {
    /// Start recording.
    Start,
    /// Stop recording.
    Stop,
}

/// `record.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    /// Both directions, one channel each (left: caller, right: us).
    #[default]
    Stereo,
    /// What the peer sends us.
    Inbound,
    /// What we send the peer.
    Outbound,
}

/// `pause`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    /// Milliseconds to wait (1..=600000).
    pub ms: u64,
}

/// `hangup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hangup {
    /// Why (recorded in the result and the call's timeline). Default `"normal"`.
    #[serde(default = "normal")]
    pub reason: String,
}

/// `opt_out`: the call emits `script.opt_out` and the control plane adds the callee's number to
/// the tenant's do-not-call list at once (source `opt_out`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptOut {
    /// Why, kept with the suppression (default: `opted out on call <call id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `send_dtmf`: exactly one of `digits` and `from`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendDtmf {
    /// The keys to send (`0-9 * # A-D`, 1–64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digits: Option<String>,
    /// A variable whose value is sent (e.g. a gather's `store_as`: say back what was keyed);
    /// unset or empty, nothing is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// `listen`: wait for the other party's audio (above -45 dBFS: speech or tones, not silence
/// or comfort noise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// What ends the wait. Default `silence`.
    #[serde(default)]
    pub until: ListenUntil,
    /// With `until: silence`, how long the audio must stay quiet after it played, ms
    /// (300–60000). Default 1000.
    #[serde(default = "silence_default")]
    pub silence_ms: u64,
    /// The longest wait, ms (1–600000). Default 15000.
    #[serde(default = "listen_timeout_default")]
    pub timeout_ms: u64,
    /// The variable that says how it ended: `speech` (the audio started), `silence` (it played
    /// and then stayed quiet) or `timeout`. Default `"heard"`.
    #[serde(default = "heard_default")]
    pub store_as: String,
}

/// `echo`: send the other party's audio back to it for `ms`, then go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Echo {
    /// Milliseconds (1..=600000).
    pub ms: u64,
}

/// `listen.until`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenUntil {
    /// The other party's audio starts.
    Speech,
    /// Their audio started, then stayed quiet for `silence_ms` (a prompt played to its end).
    #[default]
    Silence,
}

/// `branch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    /// The variable to look at (e.g. a gather's `store_as`).
    pub on: String,
    /// Value → where to go. The value must match exactly.
    pub cases: BTreeMap<String, Target>,
    /// Where to go when no case matches (or the variable is unset); without it the script
    /// continues after the branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Target>,
}

/// Where a branch case (or a gather's `on_failure`) goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Target {
    /// Nested steps; afterwards the script continues after the branch (or gather).
    Steps(Vec<Step>),
    /// Continue at a top-level label.
    Label(String),
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn first_digit_default() -> u64 {
    5000
}
fn inter_digit_default() -> u64 {
    3000
}
fn terminator_default() -> Option<char> {
    Some('#')
}
fn store_as_default() -> String {
    "digits".to_string()
}
fn silence_default() -> u64 {
    1000
}
fn listen_timeout_default() -> u64 {
    15_000
}
fn heard_default() -> String {
    "heard".to_string()
}
fn normal() -> String {
    "normal".to_string()
}
