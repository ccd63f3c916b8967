//! The call script language, pure and synchronous (no async, no I/O, no clock).
//!
//! - [`model`]: the JSON format as Rust types (`{"version": 1, "steps": [...]}`).
//! - [`validate`](mod@validate): [`parse`] turns JSON text into a checked [`Script`]; every error names the
//!   failing step by path (`steps[2].gather.max_digits: must be >= min_digits`).
//! - [`prompts`]: [`check_prompt_names`], the plain-name rule for prompts in API scripts.
//! - [`runner`]: [`ScriptRunner`], the state machine a call actor drives in the run-loop shape
//!   (`handle(now, input)`, `poll_action()`, `poll_timeout()`).
//!
//! The format and the runner's behaviour are described in `docs/scripts.md`.

pub mod model;
pub mod prompts;
pub mod runner;
pub mod validate;

pub use model::{
    Answer, Branch, Echo, Gather, Hangup, Listen, ListenUntil, OptOut, Pause, Play, Record,
    RecordAction, RecordMode, SCRIPT_VERSION, Script, Step, Target,
};
pub use prompts::{check_prompt_names, is_prompt_name};
pub use runner::{Action, Outcome, ScriptInput, ScriptResult, ScriptRunner};
pub use validate::{ScriptError, parse, parse_value, validate};
