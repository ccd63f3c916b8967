//! The prompt-name rule for scripts that come from the API.
//!
//! A script submitted through the API runs on a shared server, so it must not be able to name
//! an arbitrary file (`/etc/passwd`, another tenant's `../../recordings/call_x.wav`). API
//! scripts may name prompts only by a plain name, which the engine looks up in the tenant's own
//! prompts directory. Scripts given to the CLI (`callplane call --script`, `serve --script`)
//! come from the local operator and are not held to this rule.

use super::model::{Script, Step, Target};
use super::validate::ScriptError;

/// Longest prompt name, without the optional `.wav` suffix.
pub const MAX_PROMPT_NAME: usize = 64;

/// Whether `file` is a plain prompt name: 1 to [`MAX_PROMPT_NAME`] characters from
/// `[A-Za-z0-9_-]`, optionally followed by `.wav`. Such a name has no `/`, no `\`, no `..` and
/// cannot be absolute, so joined to a directory it always names a file directly inside it.
pub fn is_prompt_name(file: &str) -> bool {
    let stem = file.strip_suffix(".wav").unwrap_or(file);
    (1..=MAX_PROMPT_NAME).contains(&stem.len())
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks every field of `script` that names a prompt file (`play.file`, `gather.prompt`,
/// `gather.reprompt`, in nested branch cases and `on_failure` steps too) against
/// [`is_prompt_name`]. The error is the first offending field in document order, with its path
/// in the validator's form (`steps[2].gather.prompt`).
pub fn check_prompt_names(script: &Script) -> Result<(), ScriptError> {
    check_steps("steps", &script.steps)
}

fn check_steps(path: &str, steps: &[Step]) -> Result<(), ScriptError> {
    for (i, step) in steps.iter().enumerate() {
        check_step(&format!("{path}[{i}]"), step)?;
    }
    Ok(())
}

fn check_step(path: &str, step: &Step) -> Result<(), ScriptError> {
    match step {
        Step::Play(play) => check_name(format!("{path}.play.file"), &play.file),
        Step::Gather(g) => {
            for (field, file) in [("prompt", &g.prompt), ("reprompt", &g.reprompt)] {
                if let Some(file) = file {
                    check_name(format!("{path}.gather.{field}"), file)?;
                }
            }
            match &g.on_failure {
                Some(target) => check_target(&format!("{path}.gather.on_failure"), target),
                None => Ok(()),
            }
        }
        Step::Branch(b) => {
            for (key, target) in &b.cases {
                let case = format!("{path}.branch.cases[{}]", super::validate::quoted(key));
                check_target(&case, target)?;
            }
            match &b.default {
                Some(target) => check_target(&format!("{path}.branch.default"), target),
                None => Ok(()),
            }
        }
        // No other step names a file: `record` writes where the server decides.
        Step::Answer(_)
        | Step::Record(_)
        | Step::Pause(_)
        | Step::Hangup(_)
        | Step::OptOut(_)
        | Step::SendDtmf(_)
        | Step::Listen(_)
        | Step::Echo(_)
        | Step::EarlyMedia(_)
        | Step::Label(_)
        | Step::Goto(_) => Ok(()),
    }
}

fn check_target(path: &str, target: &Target) -> Result<(), ScriptError> {
    match target {
        Target::Steps(steps) => check_steps(path, steps),
        Target::Label(_) => Ok(()),
    }
}

fn check_name(path: String, file: &str) -> Result<(), ScriptError> {
    if is_prompt_name(file) {
        return Ok(());
    }
    Err(ScriptError {
        path,
        message: format!(
            "{file:?} is not a prompt name: use 1 to {MAX_PROMPT_NAME} characters from \
             A-Z a-z 0-9 _ - with an optional .wav suffix (no paths)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::parse;

    #[test]
    fn plain_names_with_an_optional_wav_suffix_are_prompt_names() {
        for ok in ["hello", "hello.wav", "Welcome_2-fr", "a", &"x".repeat(64)] {
            assert!(is_prompt_name(ok), "{ok:?} should be accepted");
        }
        let long = "x".repeat(65);
        for bad in [
            "",
            ".wav",
            "/etc/passwd",
            "../x",
            "..",
            ".",
            "a/b",
            "a\\b",
            "..\\x",
            "hello.mp3",
            "hello.wav.wav",
            "he llo",
            "héllo",
            "hello.WAV",
            "C:x",
            long.as_str(),
        ] {
            assert!(!is_prompt_name(bad), "{bad:?} should be refused");
        }
    }

    fn first_error(json: &str) -> String {
        let script = parse(json).expect("valid script");
        check_prompt_names(&script)
            .expect_err("should be refused")
            .to_string()
    }

    #[test]
    fn every_prompt_field_is_checked_and_named_by_its_path() {
        let play = r#"{"version":1,"steps":[{"answer":{}},{"play":{"file":"/etc/passwd"}}]}"#;
        assert!(first_error(play).starts_with("steps[1].play.file: \"/etc/passwd\""));
        let prompt = r#"{"version":1,"steps":[{"pause":{"ms":1}},{"pause":{"ms":1}},
            {"gather":{"prompt":"../x"}}]}"#;
        assert!(first_error(prompt).starts_with("steps[2].gather.prompt: "));
        let reprompt = r#"{"version":1,"steps":[{"gather":{"prompt":"ok","reprompt":"a/b"}}]}"#;
        assert!(first_error(reprompt).starts_with("steps[0].gather.reprompt: "));
        let failure =
            r#"{"version":1,"steps":[{"gather":{"on_failure":[{"play":{"file":".."}}]}}]}"#;
        assert!(first_error(failure).starts_with("steps[0].gather.on_failure[0].play.file: "));
        let case = r#"{"version":1,"steps":[{"gather":{}},{"branch":{"on":"digits",
            "cases":{"1":[{"play":{"file":"ok"}},{"play":{"file":"/x.wav"}}]}}}]}"#;
        assert!(first_error(case).starts_with("steps[1].branch.cases[\"1\"][1].play.file: "));
        let default = r#"{"version":1,"steps":[{"gather":{}},{"branch":{"on":"digits",
            "cases":{"1":"end"},"default":[{"play":{"file":"a\\b"}}]}},{"label":"end"}]}"#;
        assert!(first_error(default).starts_with("steps[1].branch.default[0].play.file: "));
    }

    #[test]
    fn a_script_naming_only_plain_prompts_passes() {
        let script = parse(
            r#"{"version":1,"steps":[{"play":{"file":"welcome"}},
            {"gather":{"prompt":"menu.wav","reprompt":"menu-again","on_failure":"end"}},
            {"branch":{"on":"digits","cases":{"1":[{"play":{"file":"one"}}]},
              "default":[{"play":{"file":"other"}}]}},
            {"label":"end"},{"record":{"action":"start"}},{"hangup":{}}]}"#,
        )
        .expect("valid script");
        assert_eq!(check_prompt_names(&script), Ok(()));
    }
}
