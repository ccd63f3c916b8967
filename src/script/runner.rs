//! [`ScriptRunner`]: runs a [`Script`] as a pure state machine in the run-loop shape.
//!
//! ```text
//! let mut runner = ScriptRunner::new(&script, now);
//! loop {
//!     while let Some(action) = runner.poll_action() { perform(action) }   // Play, Hangup, …
//!     // wait for a call event or runner.poll_timeout(), then:
//!     runner.handle(now, ScriptInput::Dtmf('1'));                         // or Timeout, …
//! }
//! ```
//!
//! The runner never reads the clock: every input carries `now`, and a deadline is reported by
//! [`ScriptRunner::poll_timeout`] for the driver to turn into [`ScriptInput::Timeout`]. The
//! script is compiled into a flat list of operations (nested branch lists become jumps), so the
//! position in the script is a single index.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::model::{
    Gather, Listen, ListenUntil, Play, RecordAction, RecordMode, Script, Step, Target,
};
use super::validate::{is_dtmf, quoted};

/// Steps the runner executes in one go without waiting for an input before it gives up: a
/// `goto` loop with nothing that waits would otherwise spin forever.
pub const MAX_STEPS_WITHOUT_WAIT: usize = 1000;

/// What happened on the call, fed to [`ScriptRunner::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptInput {
    /// The call is answered (inbound: our 200 OK was acknowledged; outbound: the callee answered).
    Answered,
    /// The prompt of the last [`Action::Play`] played to its end. Not sent for a prompt stopped
    /// by [`Action::StopPlayback`] (one that arrives anyway is ignored).
    PromptFinished,
    /// The caller pressed a key (RFC 4733 or in-band).
    Dtmf(char),
    /// The recording is running.
    RecordingStarted,
    /// The recording stopped (asked for, or failed).
    RecordingStopped,
    /// The deadline from [`ScriptRunner::poll_timeout`] has passed (an early one is ignored).
    Timeout,
    /// The peer hung up: the script ends.
    HangupByPeer,
    /// The other party's audio started (true) or ended (false), while [`Action::DetectVoice`]
    /// is on.
    Voice(bool),
}

/// What the driver must do next, from [`ScriptRunner::poll_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer the call, then report [`ScriptInput::Answered`].
    Answer,
    /// Play a prompt (file path or prompt name), then report [`ScriptInput::PromptFinished`].
    Play {
        /// The `file` of the step.
        file: String,
    },
    /// Stop the prompt now playing (barge-in).
    StopPlayback,
    /// Start recording the call.
    StartRecording {
        /// What to record.
        mode: RecordMode,
    },
    /// Stop recording.
    StopRecording,
    /// Hang up the call.
    Hangup {
        /// The script's reason (`normal`, `no_input`, or a `hangup` step's own).
        reason: String,
    },
    /// Put the callee on the do-not-call list (the call reports `script.opt_out`); nothing
    /// to report back.
    OptOut {
        /// The step's reason, if it gave one.
        reason: Option<String>,
    },
    /// Send these DTMF keys (valid keys, upper case); nothing to report back.
    SendDtmf {
        /// The keys.
        digits: String,
    },
    /// Report when the other party's audio starts and ends ([`ScriptInput::Voice`]), or stop
    /// reporting it.
    DetectVoice(bool),
    /// Send the other party's audio back to it, or stop.
    Echo(bool),
    /// Before the answer: start the media with a 183 Session Progress; nothing to report
    /// back (the script goes on at once).
    EarlyMedia,
    /// The script has ended; nothing follows.
    Finished {
        /// Variables, the path taken and how it ended.
        result: ScriptResult,
    },
}

/// What a finished script leaves behind; serializes to JSON for the call record and webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptResult {
    /// The variables the script set, e.g. `{"answer": "1"}`.
    pub variables: BTreeMap<String, String>,
    /// The steps executed, in order, by path (`steps[0]`, `steps[2].branch.cases["1"]`, …).
    pub path: Vec<String>,
    /// How the script ended.
    pub outcome: Outcome,
}

/// How a script ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// It ran past its last step and hung up with reason `normal`.
    Completed,
    /// A `hangup` step, or a gather without `on_failure` that ran out of retries (`no_input`).
    Hangup {
        /// The reason sent with [`Action::Hangup`].
        reason: String,
    },
    /// The peer hung up first.
    PeerHangup,
    /// The script could not go on (a jump to an unknown label, a loop that never waits); the
    /// runner hung up with reason `script_error`.
    Error {
        /// What went wrong, with the step path.
        message: String,
    },
}

/// A jump destination: resolved at compile time for nested lists, at run time for labels.
#[derive(Debug, Clone)]
enum Dest {
    Pc(usize),
    Label(String),
}

#[derive(Debug, Clone)]
enum Instr {
    Answer,
    Play(Play),
    Gather {
        spec: Gather,
        /// Where to go when every attempt failed (`None`: hang up with `no_input`).
        on_failure: Option<(Dest, String)>,
        /// After a successful gather (past any inlined `on_failure` steps).
        next: usize,
    },
    Record {
        action: RecordAction,
        mode: RecordMode,
    },
    Pause(u64),
    Hangup(String),
    Branch {
        on: String,
        /// (value, destination, path to record).
        cases: Vec<(String, Dest, String)>,
        default: Option<(Dest, String)>,
        /// Where to continue when nothing matched and there is no default.
        next: usize,
    },
    Label,
    Goto(String),
    OptOut(Option<String>),
    /// The digits, or the variable to take them from.
    SendDtmf {
        digits: Option<String>,
        from: Option<String>,
    },
    Listen(Listen),
    Echo(u64),
    EarlyMedia,
    /// Internal: the end of an inlined nested list. Not recorded in the path.
    Jump(usize),
}

#[derive(Debug, Clone)]
struct Op {
    instr: Instr,
    path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Running,
    WaitAnswer,
    Playing { barge_in: bool },
    Gathering(GatherState),
    Pausing,
    Echoing,
    Listening(ListenState),
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ListenState {
    until: ListenUntil,
    silence: Duration,
    store_as: String,
    /// When the wait times out.
    give_up: Instant,
    /// The audio has played (with `until: silence`).
    heard: bool,
    /// It has been quiet since the audio played: done at this instant.
    quiet_until: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GatherState {
    /// 0 for the first attempt.
    attempt: u32,
    digits: String,
    /// The prompt (or reprompt) is still playing: the digit timer has not started.
    prompting: bool,
}

/// Runs one script for one call. See the module documentation for the driving loop and
/// `docs/scripts.md` for the behaviour of each step.
#[derive(Debug, Clone)]
pub struct ScriptRunner {
    ops: Vec<Op>,
    labels: HashMap<String, usize>,
    pc: usize,
    state: State,
    deadline: Option<Instant>,
    actions: VecDeque<Action>,
    variables: BTreeMap<String, String>,
    /// Stores by the steps not yet taken ([`ScriptRunner::take_stored`]).
    stored: Vec<(String, String)>,
    path: Vec<String>,
    answered: bool,
    recording: bool,
    /// Digits that barged in on a `play`, kept for the next `gather`.
    typeahead: String,
}

impl ScriptRunner {
    /// Starts `script` at `now`: the first actions are ready in [`ScriptRunner::poll_action`].
    /// The script should come from [`super::parse`]; an unvalidated one that jumps to an
    /// unknown label ends with [`Outcome::Error`] when it gets there.
    pub fn new(script: &Script, now: Instant) -> ScriptRunner {
        ScriptRunner::start(script, now, false)
    }

    /// [`ScriptRunner::new`] for a call that is already answered (an outbound call once the
    /// callee picked up): an `answer` step then emits nothing.
    pub fn new_answered(script: &Script, now: Instant) -> ScriptRunner {
        ScriptRunner::start(script, now, true)
    }

    /// [`ScriptRunner::new_answered`] with variables set before the first step runs (the
    /// `variables` of an API call: a `branch` can go on them; a `gather` overwrites its own).
    pub fn new_answered_with(
        script: &Script,
        now: Instant,
        variables: BTreeMap<String, String>,
    ) -> ScriptRunner {
        ScriptRunner::start_with(script, now, true, variables)
    }

    fn start(script: &Script, now: Instant, answered: bool) -> ScriptRunner {
        ScriptRunner::start_with(script, now, answered, BTreeMap::new())
    }

    fn start_with(
        script: &Script,
        now: Instant,
        answered: bool,
        variables: BTreeMap<String, String>,
    ) -> ScriptRunner {
        let mut ops = Vec::new();
        let mut labels = HashMap::new();
        compile(&script.steps, "steps", &mut ops, &mut labels);
        let mut runner = ScriptRunner {
            ops,
            labels,
            pc: 0,
            state: State::Running,
            deadline: None,
            actions: VecDeque::new(),
            variables,
            stored: Vec::new(),
            path: Vec::new(),
            answered,
            recording: false,
            typeahead: String::new(),
        };
        runner.run(now);
        runner
    }

    /// Feeds one input; the resulting actions are ready in [`ScriptRunner::poll_action`].
    /// Inputs after the script has finished are ignored.
    pub fn handle(&mut self, now: Instant, input: ScriptInput) {
        if self.state == State::Done {
            return;
        }
        match input {
            ScriptInput::Answered => {
                self.answered = true;
                if self.state == State::WaitAnswer {
                    self.next(now);
                }
            }
            ScriptInput::PromptFinished => match &mut self.state {
                State::Playing { .. } => self.next(now),
                State::Gathering(g) if g.prompting => {
                    g.prompting = false;
                    let timeout = self.gather_spec().map_or(0, |s| s.first_digit_timeout_ms);
                    self.deadline = Some(now + Duration::from_millis(timeout));
                }
                // A prompt stopped by barge-in may still report its end: nothing to do.
                _ => {}
            },
            ScriptInput::Dtmf(key) => {
                let key = key.to_ascii_uppercase();
                if !is_dtmf(key) {
                    return;
                }
                match self.state {
                    State::Playing { barge_in: true } => {
                        self.actions.push_back(Action::StopPlayback);
                        self.typeahead.push(key);
                        self.next(now);
                    }
                    State::Gathering(_) => {
                        self.gather_digit(now, key);
                        self.run(now);
                    }
                    // Not listening (or a prompt without barge-in): the key is dropped.
                    _ => {}
                }
            }
            ScriptInput::Voice(active) => {
                let State::Listening(l) = &mut self.state else {
                    return;
                };
                match (l.until, active) {
                    (ListenUntil::Speech, true) => self.end_listen(now, "speech"),
                    (ListenUntil::Silence, true) => {
                        l.heard = true;
                        l.quiet_until = None;
                        self.deadline = Some(l.give_up);
                    }
                    (ListenUntil::Silence, false) if l.heard => {
                        // The media said so after VOICE_HANGOVER_MS of quiet already.
                        let hangover = Duration::from_millis(media::session::VOICE_HANGOVER_MS);
                        let at = now + l.silence.saturating_sub(hangover);
                        l.quiet_until = Some(at);
                        self.deadline = Some(at.min(l.give_up));
                    }
                    _ => {}
                }
            }
            ScriptInput::RecordingStarted => self.recording = true,
            ScriptInput::RecordingStopped => self.recording = false,
            ScriptInput::Timeout => {
                if self.deadline.is_none_or(|d| d > now) {
                    return;
                }
                self.deadline = None;
                match &self.state {
                    State::Pausing => self.next(now),
                    State::Echoing => {
                        self.actions.push_back(Action::Echo(false));
                        self.next(now);
                    }
                    State::Gathering(_) => {
                        self.gather_timeout(now);
                        self.run(now);
                    }
                    State::Listening(l) => {
                        if l.quiet_until.is_some_and(|q| q <= now) {
                            self.end_listen(now, "silence");
                        } else if l.give_up <= now {
                            self.end_listen(now, "timeout");
                        } else {
                            self.deadline =
                                Some(l.quiet_until.map_or(l.give_up, |q| q.min(l.give_up)));
                        }
                    }
                    _ => {}
                }
            }
            ScriptInput::HangupByPeer => {
                self.stop_recording();
                self.finish(Outcome::PeerHangup);
            }
        }
    }

    /// The next thing to do, in order; `None` when the runner waits for an input.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to feed [`ScriptInput::Timeout`] (a pause or a digit timer), if anything is timed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the script has ended ([`Action::Finished`] was queued).
    pub fn is_finished(&self) -> bool {
        self.state == State::Done
    }

    /// The variables set so far.
    pub fn variables(&self) -> &BTreeMap<String, String> {
        &self.variables
    }

    /// What the script's steps stored since the last call (a `gather`'s digits, or empty when
    /// every attempt failed; a `listen`'s ending), in order: each store once, even when it
    /// wrote the value the variable already had (a preset, or an earlier answer).
    pub fn take_stored(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.stored)
    }

    fn store(&mut self, name: String, value: String) {
        self.stored.push((name.clone(), value.clone()));
        self.variables.insert(name, value);
    }

    /// The steps executed so far, by path.
    pub fn path(&self) -> &[String] {
        &self.path
    }

    fn gather_spec(&self) -> Option<&Gather> {
        match &self.ops.get(self.pc)?.instr {
            Instr::Gather { spec, .. } => Some(spec),
            _ => None,
        }
    }

    /// The current step is done: continue with the following one.
    fn next(&mut self, now: Instant) {
        self.pc += 1;
        self.state = State::Running;
        self.deadline = None;
        self.run(now);
    }

    fn jump(&mut self, dest: &Dest) -> Result<(), String> {
        match dest {
            Dest::Pc(pc) => self.pc = *pc,
            Dest::Label(label) => match self.labels.get(label) {
                Some(pc) => self.pc = *pc,
                None => return Err(format!("unknown label {label:?}")),
            },
        }
        Ok(())
    }

    /// Executes steps until one waits for an input or the script ends.
    fn run(&mut self, now: Instant) {
        let mut executed = 0;
        while self.state == State::Running {
            executed += 1;
            if executed > MAX_STEPS_WITHOUT_WAIT {
                let at = self.ops.get(self.pc).map_or("steps", |op| op.path.as_str());
                let message = format!(
                    "{at}: more than {MAX_STEPS_WITHOUT_WAIT} steps without waiting for the call (a goto loop?)"
                );
                self.fail(message);
                return;
            }
            let Some(op) = self.ops.get(self.pc).cloned() else {
                self.stop_recording();
                self.actions.push_back(Action::Hangup {
                    reason: "normal".to_string(),
                });
                self.finish(Outcome::Completed);
                return;
            };
            if !matches!(op.instr, Instr::Jump(_)) {
                self.path.push(op.path.clone());
            }
            match op.instr {
                Instr::Answer => {
                    self.typeahead.clear();
                    if self.answered {
                        self.pc += 1;
                    } else {
                        self.actions.push_back(Action::Answer);
                        self.state = State::WaitAnswer;
                    }
                }
                Instr::Play(play) => {
                    if play.barge_in && !self.typeahead.is_empty() {
                        // The caller has already pressed a key: a barge-in prompt is skipped.
                        self.pc += 1;
                    } else {
                        self.actions.push_back(Action::Play { file: play.file });
                        self.state = State::Playing {
                            barge_in: play.barge_in,
                        };
                    }
                }
                Instr::Gather { .. } => self.begin_attempt(now, 0),
                Instr::Record { action, mode } => {
                    match action {
                        RecordAction::Start if !self.recording => {
                            self.actions.push_back(Action::StartRecording { mode });
                            self.recording = true;
                        }
                        // Already recording: a second start changes nothing.
                        RecordAction::Start => {}
                        RecordAction::Stop => self.stop_recording(),
                    }
                    self.pc += 1;
                }
                Instr::Pause(ms) => {
                    self.typeahead.clear();
                    self.deadline = Some(now + Duration::from_millis(ms));
                    self.state = State::Pausing;
                }
                Instr::Hangup(reason) => {
                    self.stop_recording();
                    self.actions.push_back(Action::Hangup {
                        reason: reason.clone(),
                    });
                    self.finish(Outcome::Hangup { reason });
                }
                Instr::Branch {
                    on,
                    cases,
                    default,
                    next,
                } => {
                    let value = self.variables.get(&on);
                    let chosen = cases
                        .iter()
                        .find(|(v, _, _)| Some(v) == value)
                        .map(|(_, dest, trace)| (dest, trace))
                        .or(default.as_ref().map(|(dest, trace)| (dest, trace)));
                    match chosen {
                        Some((dest, trace)) => {
                            // The branch's entry names the case taken rather than the step.
                            if let Some(last) = self.path.last_mut() {
                                last.clone_from(trace);
                            }
                            if let Err(e) = self.jump(dest) {
                                self.fail(format!("{trace}: {e}"));
                            }
                        }
                        None => self.pc = next,
                    }
                }
                Instr::Label => self.pc += 1,
                Instr::OptOut(reason) => {
                    self.actions.push_back(Action::OptOut { reason });
                    self.pc += 1;
                }
                Instr::SendDtmf { digits, from } => {
                    let value = match (digits, from) {
                        (Some(d), _) => d,
                        (None, Some(var)) => self.variables.get(&var).cloned().unwrap_or_default(),
                        (None, None) => String::new(),
                    };
                    // A variable holds what a gather stored (DTMF keys only), but one set by
                    // the API could hold anything: only keys are sent.
                    let digits: String = value
                        .chars()
                        .map(|c| c.to_ascii_uppercase())
                        .filter(|&c| is_dtmf(c))
                        .take(super::validate::MAX_DIGITS as usize)
                        .collect();
                    if !digits.is_empty() {
                        self.actions.push_back(Action::SendDtmf { digits });
                    }
                    self.pc += 1;
                }
                Instr::EarlyMedia => {
                    if !self.answered {
                        self.actions.push_back(Action::EarlyMedia);
                    }
                    self.pc += 1;
                }
                Instr::Echo(ms) => {
                    self.typeahead.clear();
                    self.actions.push_back(Action::Echo(true));
                    self.deadline = Some(now + Duration::from_millis(ms));
                    self.state = State::Echoing;
                }
                Instr::Listen(listen) => {
                    self.typeahead.clear();
                    let give_up = now + Duration::from_millis(listen.timeout_ms);
                    self.actions.push_back(Action::DetectVoice(true));
                    self.deadline = Some(give_up);
                    self.state = State::Listening(ListenState {
                        until: listen.until,
                        silence: Duration::from_millis(listen.silence_ms),
                        store_as: listen.store_as,
                        give_up,
                        heard: false,
                        quiet_until: None,
                    });
                }
                Instr::Goto(label) => {
                    if let Err(e) = self.jump(&Dest::Label(label)) {
                        self.fail(format!("{}: {e}", op.path));
                    }
                }
                Instr::Jump(pc) => self.pc = pc,
            }
        }
    }

    /// The `listen` step ended (`speech`, `silence` or `timeout`): the detector goes off, the
    /// variable says how, and the script goes on.
    fn end_listen(&mut self, now: Instant, how: &str) {
        if let State::Listening(l) = &self.state {
            let store_as = l.store_as.clone();
            self.store(store_as, how.to_string());
            self.actions.push_back(Action::DetectVoice(false));
            self.next(now);
        }
    }

    /// Starts attempt `attempt` (0-based) of the gather at `self.pc`.
    fn begin_attempt(&mut self, now: Instant, attempt: u32) {
        let Some(spec) = self.gather_spec().cloned() else {
            return;
        };
        self.deadline = None;
        self.state = State::Gathering(GatherState {
            attempt,
            digits: String::new(),
            prompting: false,
        });
        if attempt == 0 && !self.typeahead.is_empty() {
            // Keys pressed during an earlier barge-in prompt count as input, and the prompt
            // is not played: the caller has answered it already.
            let keys = std::mem::take(&mut self.typeahead);
            let mut keys = keys.chars();
            for key in keys.by_ref() {
                self.gather_digit(now, key);
                if !matches!(&self.state, State::Gathering(g) if g.attempt == 0) {
                    break;
                }
            }
            // Keys beyond what this gather took stay for the next one.
            self.typeahead = keys.collect();
            return;
        }
        let file = if attempt == 0 {
            spec.prompt
        } else {
            spec.reprompt.or(spec.prompt)
        };
        match file {
            Some(file) => {
                self.actions.push_back(Action::Play { file });
                if let State::Gathering(g) = &mut self.state {
                    g.prompting = true;
                }
            }
            None => {
                self.deadline = Some(now + Duration::from_millis(spec.first_digit_timeout_ms));
            }
        }
    }

    fn gather_digit(&mut self, now: Instant, key: char) {
        let Some(spec) = self.gather_spec().cloned() else {
            return;
        };
        let State::Gathering(g) = &mut self.state else {
            return;
        };
        if g.prompting {
            if !spec.barge_in {
                // Without barge-in the caller must hear the prompt out; keys are dropped.
                return;
            }
            g.prompting = false;
            self.actions.push_back(Action::StopPlayback);
        }
        if spec.terminator == Some(key) {
            if g.digits.len() >= spec.min_digits as usize {
                self.gather_succeeded();
            } else {
                self.gather_failed(now);
            }
            return;
        }
        g.digits.push(key);
        if g.digits.len() >= spec.max_digits() as usize {
            self.gather_succeeded();
        } else {
            self.deadline = Some(now + Duration::from_millis(spec.inter_digit_timeout_ms));
        }
    }

    fn gather_timeout(&mut self, now: Instant) {
        let Some(spec) = self.gather_spec() else {
            return;
        };
        let min = spec.min_digits as usize;
        match &self.state {
            // An inter-digit timeout with enough digits ends the input like the terminator.
            State::Gathering(g) if !g.prompting && g.digits.len() >= min => {
                self.gather_succeeded();
            }
            State::Gathering(g) if !g.prompting => self.gather_failed(now),
            _ => {}
        }
    }

    fn gather_succeeded(&mut self) {
        let (Some(Instr::Gather { spec, next, .. }), State::Gathering(g)) =
            (self.ops.get(self.pc).map(|op| &op.instr), &self.state)
        else {
            return;
        };
        let (name, value) = (spec.store_as.clone(), g.digits.clone());
        self.pc = *next;
        self.store(name, value);
        self.deadline = None;
        self.state = State::Running;
    }

    fn gather_failed(&mut self, now: Instant) {
        let (
            Some(Instr::Gather {
                spec, on_failure, ..
            }),
            State::Gathering(g),
        ) = (
            self.ops.get(self.pc).map(|op| op.instr.clone()),
            &self.state,
        )
        else {
            return;
        };
        self.deadline = None;
        if g.attempt < spec.retries {
            let attempt = g.attempt + 1;
            self.begin_attempt(now, attempt);
            return;
        }
        // Every attempt failed: the variable is set (empty) so that a branch can test it.
        self.store(spec.store_as.clone(), String::new());
        self.state = State::Running;
        match on_failure {
            Some((dest, trace)) => {
                self.path.push(trace.clone());
                if let Err(e) = self.jump(&dest) {
                    self.fail(format!("{trace}: {e}"));
                }
            }
            None => {
                self.stop_recording();
                let reason = "no_input".to_string();
                self.actions.push_back(Action::Hangup {
                    reason: reason.clone(),
                });
                self.finish(Outcome::Hangup { reason });
            }
        }
    }

    fn stop_recording(&mut self) {
        if self.recording {
            self.recording = false;
            self.actions.push_back(Action::StopRecording);
        }
    }

    fn fail(&mut self, message: String) {
        self.stop_recording();
        self.actions.push_back(Action::Hangup {
            reason: "script_error".to_string(),
        });
        self.finish(Outcome::Error { message });
    }

    fn finish(&mut self, outcome: Outcome) {
        self.state = State::Done;
        self.deadline = None;
        self.actions.push_back(Action::Finished {
            result: ScriptResult {
                variables: self.variables.clone(),
                path: self.path.clone(),
                outcome,
            },
        });
    }
}

/// Appends `steps` (at `path`) to `ops`; nested lists are inlined after the step that owns them
/// and end with a jump back to the step after it.
fn compile(steps: &[Step], path: &str, ops: &mut Vec<Op>, labels: &mut HashMap<String, usize>) {
    for (i, step) in steps.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let at = ops.len();
        let instr = match step {
            Step::Answer(_) => Instr::Answer,
            Step::Play(play) => Instr::Play(play.clone()),
            Step::Record(r) => Instr::Record {
                action: r.action,
                mode: r.mode.unwrap_or_default(),
            },
            Step::Pause(p) => Instr::Pause(p.ms),
            Step::Hangup(h) => Instr::Hangup(h.reason.clone()),
            Step::Label(name) => {
                // The first definition wins, as validation reports later ones as duplicates.
                labels.entry(name.clone()).or_insert(at);
                Instr::Label
            }
            Step::Goto(label) => Instr::Goto(label.clone()),
            Step::OptOut(o) => Instr::OptOut(o.reason.clone()),
            Step::SendDtmf(d) => Instr::SendDtmf {
                digits: d.digits.clone(),
                from: d.from.clone(),
            },
            Step::Listen(l) => Instr::Listen(l.clone()),
            Step::Echo(e) => Instr::Echo(e.ms),
            Step::EarlyMedia(_) => Instr::EarlyMedia,
            Step::Gather(g) => {
                ops.push(Op {
                    instr: Instr::Jump(0),
                    path: path.clone(),
                });
                let trace = format!("{path}.gather.on_failure");
                let mut jumps = Vec::new();
                let on_failure = g
                    .on_failure
                    .as_ref()
                    .map(|t| (inline(t, &trace, ops, labels, &mut jumps), trace));
                let next = ops.len();
                patch(ops, &jumps, next);
                ops[at].instr = Instr::Gather {
                    spec: g.clone(),
                    on_failure,
                    next,
                };
                continue;
            }
            Step::Branch(b) => {
                ops.push(Op {
                    instr: Instr::Jump(0),
                    path: path.clone(),
                });
                let mut jumps = Vec::new();
                let mut cases = Vec::new();
                for (value, target) in &b.cases {
                    let trace = format!("{path}.branch.cases[{}]", quoted(value));
                    let dest = inline(target, &trace, ops, labels, &mut jumps);
                    cases.push((value.clone(), dest, trace));
                }
                let default = b.default.as_ref().map(|t| {
                    let trace = format!("{path}.branch.default");
                    (inline(t, &trace, ops, labels, &mut jumps), trace)
                });
                let next = ops.len();
                patch(ops, &jumps, next);
                ops[at].instr = Instr::Branch {
                    on: b.on.clone(),
                    cases,
                    default,
                    next,
                };
                continue;
            }
        };
        ops.push(Op { instr, path });
    }
}

/// Compiles a target's nested steps in place (recording the closing jump to patch) or returns
/// its label.
fn inline(
    target: &Target,
    path: &str,
    ops: &mut Vec<Op>,
    labels: &mut HashMap<String, usize>,
    jumps: &mut Vec<usize>,
) -> Dest {
    match target {
        Target::Label(label) => Dest::Label(label.clone()),
        Target::Steps(steps) => {
            let start = ops.len();
            compile(steps, path, ops, labels);
            jumps.push(ops.len());
            ops.push(Op {
                instr: Instr::Jump(0),
                path: path.to_string(),
            });
            Dest::Pc(start)
        }
    }
}

fn patch(ops: &mut [Op], jumps: &[usize], to: usize) {
    for &j in jumps {
        ops[j].instr = Instr::Jump(to);
    }
}
