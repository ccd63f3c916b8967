//! The call script format: parsing with step-path errors, and the runner driven in virtual
//! time (no sleeps: `now` is a base instant plus offsets).

use std::time::{Duration, Instant};

use callplane::script::{
    Action, Outcome, RecordMode, Script, ScriptError, ScriptInput, ScriptRunner, parse, validate,
};

/// The survey example of docs/scripts.md (the first ```json block), so the docs stay true.
fn survey() -> Script {
    let docs = include_str!("../docs/scripts.md");
    let start = docs.find("```json\n").expect("docs have a json block") + "```json\n".len();
    let end = start + docs[start..].find("```").expect("json block ends");
    parse(&docs[start..end]).unwrap_or_else(|e| panic!("docs example: {e}"))
}

fn script(json: &str) -> Script {
    parse(json).unwrap_or_else(|e| panic!("{e}"))
}

fn error(json: &str) -> ScriptError {
    parse(json).expect_err("script must be rejected")
}

fn drain(r: &mut ScriptRunner) -> Vec<Action> {
    std::iter::from_fn(|| r.poll_action()).collect()
}

fn play(file: &str) -> Action {
    Action::Play {
        file: file.to_string(),
    }
}

fn hangup(reason: &str) -> Action {
    Action::Hangup {
        reason: reason.to_string(),
    }
}

/// Drains the actions, expecting `before` followed by `Finished`; returns the result.
fn finished(r: &mut ScriptRunner, before: &[Action]) -> callplane::script::ScriptResult {
    let mut actions = drain(r);
    let Some(Action::Finished { result }) = actions.pop() else {
        panic!("not finished: {actions:?}");
    };
    assert_eq!(actions, before);
    assert!(r.is_finished());
    assert_eq!(r.poll_timeout(), None);
    result
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn survey_press_1_stores_answer_and_takes_the_yes_branch() {
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&survey(), t0);
    assert_eq!(drain(&mut r), [Action::Answer]);
    assert_eq!(
        r.poll_timeout(),
        None,
        "waiting for the answer is not timed"
    );
    r.handle(t0 + ms(100), ScriptInput::Answered);
    assert_eq!(
        drain(&mut r),
        [
            Action::StartRecording {
                mode: RecordMode::Stereo
            },
            play("survey_question"),
        ]
    );
    r.handle(t0 + ms(150), ScriptInput::RecordingStarted);
    // No digit timer while the question plays.
    assert_eq!(r.poll_timeout(), None);
    r.handle(t0 + ms(2000), ScriptInput::Dtmf('1'));
    assert_eq!(drain(&mut r), [Action::StopPlayback, play("thanks_yes")]);
    r.handle(t0 + ms(4000), ScriptInput::PromptFinished);
    let result = finished(&mut r, &[Action::StopRecording, hangup("survey_done")]);
    assert_eq!(
        result.variables.get("answer").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        result.path,
        [
            "steps[0]",
            "steps[1]",
            "steps[2]",
            "steps[3].branch.cases[\"1\"]",
            "steps[3].branch.cases[\"1\"][0]",
            "steps[4]"
        ]
    );
    assert_eq!(
        result.outcome,
        Outcome::Hangup {
            reason: "survey_done".to_string()
        }
    );
    let json = serde_json::to_value(&result).unwrap();
    assert_eq!(json["variables"], serde_json::json!({"answer": "1"}));
    assert_eq!(json["outcome"]["kind"], "hangup");
}

#[test]
fn survey_unknown_key_takes_the_default_label() {
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&survey(), t0);
    assert_eq!(drain(&mut r), [Action::Answer]);
    r.handle(t0, ScriptInput::Answered);
    assert_eq!(drain(&mut r).len(), 2, "StartRecording, Play");
    r.handle(t0 + ms(500), ScriptInput::Dtmf('3'));
    assert_eq!(
        drain(&mut r),
        [Action::StopPlayback, play("invalid_choice")]
    );
    r.handle(t0 + ms(900), ScriptInput::PromptFinished);
    let result = finished(&mut r, &[Action::StopRecording, hangup("invalid_choice")]);
    assert_eq!(result.variables["answer"], "3");
    assert_eq!(
        result.path[3..],
        [
            "steps[3].branch.default",
            "steps[5]",
            "steps[6]",
            "steps[7]"
        ]
    );
}

#[test]
fn gather_terminator_ends_input_and_is_not_stored() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"gather": {"max_digits": 10, "store_as": "pin"}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    assert_eq!(drain(&mut r), []);
    assert_eq!(r.poll_timeout(), Some(t0 + ms(5000)), "first-digit timer");
    for (i, key) in "1234".chars().enumerate() {
        let now = t0 + ms(1000 * (i as u64 + 1));
        r.handle(now, ScriptInput::Dtmf(key));
        assert_eq!(r.poll_timeout(), Some(now + ms(3000)), "inter-digit timer");
    }
    r.handle(t0 + ms(4500), ScriptInput::Dtmf('#'));
    let result = finished(&mut r, &[hangup("normal")]);
    assert_eq!(result.variables["pin"], "1234");
    assert_eq!(result.outcome, Outcome::Completed);
}

#[test]
fn max_digits_ends_gather_without_terminator() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"gather": {"min_digits": 3, "max_digits": 3, "terminator": null}},
            {"pause": {"ms": 1000}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    r.handle(t0 + ms(100), ScriptInput::Dtmf('4'));
    r.handle(t0 + ms(200), ScriptInput::Dtmf('#'));
    assert_eq!(r.variables().get("digits"), None, "# is a digit here");
    r.handle(t0 + ms(300), ScriptInput::Dtmf('2'));
    // Three digits: the gather is over at once, without waiting for a timeout; the pause runs.
    assert_eq!(r.variables()["digits"], "4#2");
    assert_eq!(r.poll_timeout(), Some(t0 + ms(300) + ms(1000)));
    assert_eq!(r.path(), ["steps[0]", "steps[1]"]);
}

#[test]
fn inter_digit_timeout_with_enough_digits_succeeds() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"gather": {"min_digits": 2, "max_digits": 6, "inter_digit_timeout_ms": 2000}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    r.handle(t0 + ms(100), ScriptInput::Dtmf('5'));
    r.handle(t0 + ms(200), ScriptInput::Dtmf('6'));
    // An early timeout (before the deadline) changes nothing.
    r.handle(t0 + ms(1000), ScriptInput::Timeout);
    assert_eq!(r.poll_timeout(), Some(t0 + ms(2200)));
    r.handle(t0 + ms(2200), ScriptInput::Timeout);
    let result = finished(&mut r, &[hangup("normal")]);
    assert_eq!(result.variables["digits"], "56");
}

#[test]
fn first_digit_timeout_reprompts_and_the_retry_succeeds() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"gather": {"prompt": "menu", "reprompt": "sorry", "first_digit_timeout_ms": 4000,
                        "retries": 1, "store_as": "choice"}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    assert_eq!(drain(&mut r), [play("menu")]);
    r.handle(t0 + ms(3000), ScriptInput::PromptFinished);
    // The first-digit timer starts when the prompt has finished, not when it started.
    assert_eq!(r.poll_timeout(), Some(t0 + ms(7000)));
    r.handle(t0 + ms(7000), ScriptInput::Timeout);
    assert_eq!(drain(&mut r), [play("sorry")]);
    assert_eq!(r.poll_timeout(), None);
    r.handle(t0 + ms(8000), ScriptInput::PromptFinished);
    assert_eq!(r.poll_timeout(), Some(t0 + ms(12000)));
    r.handle(t0 + ms(9000), ScriptInput::Dtmf('2'));
    let result = finished(&mut r, &[hangup("normal")]);
    assert_eq!(result.variables["choice"], "2");
    assert_eq!(result.path, ["steps[0]"], "a retry is not a new step");
}

#[test]
fn too_few_digits_before_the_terminator_is_a_failed_attempt() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"gather": {"prompt": "pin", "min_digits": 4, "max_digits": 4, "retries": 1}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    r.handle(t0 + ms(1000), ScriptInput::PromptFinished);
    r.handle(t0 + ms(1500), ScriptInput::Dtmf('1'));
    r.handle(t0 + ms(1600), ScriptInput::Dtmf('#'));
    // No reprompt configured: the prompt is played again.
    assert_eq!(drain(&mut r), [play("pin"), play("pin")]);
    assert_eq!(r.variables().get("digits"), None);
}

#[test]
fn retries_exhausted_takes_the_on_failure_hangup_path() {
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&survey(), t0);
    assert_eq!(drain(&mut r), [Action::Answer]);
    r.handle(t0, ScriptInput::Answered);
    assert_eq!(drain(&mut r)[1], play("survey_question"));
    let mut now = t0 + ms(3000);
    r.handle(now, ScriptInput::PromptFinished);
    // retries: 2 → three attempts, each ending in a first-digit timeout.
    for attempt in 0..3 {
        now += ms(5000);
        assert_eq!(r.poll_timeout(), Some(now), "attempt {attempt}");
        r.handle(now, ScriptInput::Timeout);
        if attempt < 2 {
            assert_eq!(drain(&mut r), [play("survey_sorry")]);
            now += ms(2000);
            r.handle(now, ScriptInput::PromptFinished);
        }
    }
    assert_eq!(drain(&mut r), [play("goodbye")]);
    r.handle(now + ms(1000), ScriptInput::PromptFinished);
    let result = finished(&mut r, &[Action::StopRecording, hangup("no_input")]);
    assert_eq!(
        result.variables["answer"], "",
        "a failed gather stores an empty value"
    );
    assert_eq!(
        result.path,
        [
            "steps[0]",
            "steps[1]",
            "steps[2]",
            "steps[2].gather.on_failure",
            "steps[2].gather.on_failure[0]",
            "steps[2].gather.on_failure[1]"
        ]
    );
}

#[test]
fn retries_exhausted_without_on_failure_hangs_up_no_input() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"gather": {"retries": 0}},
            {"play": {"file": "never"}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    r.handle(t0 + ms(5000), ScriptInput::Timeout);
    let result = finished(&mut r, &[hangup("no_input")]);
    assert_eq!(
        result.outcome,
        Outcome::Hangup {
            reason: "no_input".to_string()
        }
    );
}

#[test]
fn barge_in_stops_the_gather_prompt_and_counts_the_key() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"gather": {"prompt": "long_menu", "max_digits": 2}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    assert_eq!(drain(&mut r), [play("long_menu")]);
    r.handle(t0 + ms(800), ScriptInput::Dtmf('7'));
    assert_eq!(drain(&mut r), [Action::StopPlayback]);
    assert_eq!(
        r.poll_timeout(),
        Some(t0 + ms(800) + ms(3000)),
        "inter-digit"
    );
    // The stopped prompt's late end report is ignored.
    r.handle(t0 + ms(850), ScriptInput::PromptFinished);
    assert_eq!(drain(&mut r), []);
    r.handle(t0 + ms(900), ScriptInput::Dtmf('8'));
    let result = finished(&mut r, &[hangup("normal")]);
    assert_eq!(result.variables["digits"], "78");
}

#[test]
fn without_barge_in_keys_during_the_prompt_are_dropped() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"play": {"file": "legal", "barge_in": false}},
            {"gather": {"prompt": "menu", "barge_in": false}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    r.handle(t0 + ms(100), ScriptInput::Dtmf('1'));
    assert_eq!(drain(&mut r), [play("legal")]);
    r.handle(t0 + ms(1000), ScriptInput::PromptFinished);
    assert_eq!(drain(&mut r), [play("menu")]);
    r.handle(t0 + ms(1100), ScriptInput::Dtmf('2'));
    assert_eq!(drain(&mut r), [], "no StopPlayback");
    r.handle(t0 + ms(2000), ScriptInput::PromptFinished);
    r.handle(t0 + ms(2500), ScriptInput::Dtmf('3'));
    let result = finished(&mut r, &[hangup("normal")]);
    assert_eq!(result.variables["digits"], "3");
}

#[test]
fn barge_in_on_a_play_step_feeds_the_next_gather_and_skips_prompts() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"play": {"file": "welcome"}},
            {"play": {"file": "menu"}},
            {"gather": {"prompt": "choose", "store_as": "choice"}},
            {"gather": {"prompt": "confirm", "store_as": "confirm"}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    assert_eq!(drain(&mut r), [play("welcome")]);
    r.handle(t0 + ms(500), ScriptInput::Dtmf('4'));
    // The key stops `welcome`; `menu` and `choose` are skipped; the gather takes the key.
    // The next gather plays its prompt as usual.
    assert_eq!(drain(&mut r), [Action::StopPlayback, play("confirm")]);
    assert_eq!(r.variables()["choice"], "4");
    assert_eq!(r.path(), ["steps[0]", "steps[1]", "steps[2]", "steps[3]"]);
}

#[test]
fn pause_waits_for_its_deadline() {
    let s = script(r#"{"version": 1, "steps": [{"pause": {"ms": 1500}}, {"hangup": {}}]}"#);
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    assert_eq!(r.poll_timeout(), Some(t0 + ms(1500)));
    r.handle(t0 + ms(1499), ScriptInput::Timeout);
    assert_eq!(drain(&mut r), []);
    r.handle(t0 + ms(1500), ScriptInput::Timeout);
    assert_eq!(
        finished(&mut r, &[hangup("normal")]).outcome,
        Outcome::Hangup {
            reason: "normal".to_string()
        }
    );
}

#[test]
fn peer_hangup_stops_the_recording_and_finishes() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"record": {"action": "start", "mode": "inbound"}},
            {"play": {"file": "message"}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    assert_eq!(
        drain(&mut r),
        [
            Action::StartRecording {
                mode: RecordMode::Inbound
            },
            play("message")
        ]
    );
    r.handle(t0 + ms(10), ScriptInput::HangupByPeer);
    let result = finished(&mut r, &[Action::StopRecording]);
    assert_eq!(result.outcome, Outcome::PeerHangup);
    // Inputs after the end are ignored.
    r.handle(t0 + ms(20), ScriptInput::PromptFinished);
    assert_eq!(drain(&mut r), []);
}

#[test]
fn a_recording_that_stopped_by_itself_is_not_stopped_again() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"record": {"action": "start"}},
            {"pause": {"ms": 100}},
            {"record": {"action": "stop"}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    drain(&mut r);
    r.handle(t0 + ms(50), ScriptInput::RecordingStopped);
    r.handle(t0 + ms(100), ScriptInput::Timeout);
    finished(&mut r, &[hangup("normal")]);
}

#[test]
fn answer_is_skipped_when_already_answered() {
    let s = script(r#"{"version": 1, "steps": [{"answer": {}}, {"play": {"file": "hi"}}]}"#);
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    assert_eq!(drain(&mut r), [Action::Answer]);
    r.handle(t0, ScriptInput::Answered);
    assert_eq!(drain(&mut r), [play("hi")]);
    // An outbound call starts answered: no Answer action at all.
    let mut r = ScriptRunner::new_answered(&s, t0);
    assert_eq!(drain(&mut r), [play("hi")]);
}

#[test]
fn goto_loops_and_a_loop_that_never_waits_is_stopped() {
    // A menu loop: the caller presses 9 to hear it again.
    let s = script(
        r#"{"version": 1, "steps": [
            {"label": "menu"},
            {"gather": {"prompt": "menu", "store_as": "k"}},
            {"branch": {"on": "k", "cases": {"9": "menu"}}},
            {"hangup": {"reason": "chosen"}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    r.handle(t0, ScriptInput::Dtmf('9'));
    assert_eq!(
        drain(&mut r),
        [play("menu"), Action::StopPlayback, play("menu")]
    );
    r.handle(t0, ScriptInput::Dtmf('1'));
    assert_eq!(
        finished(&mut r, &[Action::StopPlayback, hangup("chosen")]).path,
        [
            "steps[0]",
            "steps[1]",
            "steps[2].branch.cases[\"9\"]",
            "steps[0]",
            "steps[1]",
            "steps[2]",
            "steps[3]"
        ]
    );

    let s = script(r#"{"version": 1, "steps": [{"label": "a"}, {"goto": "a"}]}"#);
    let mut r = ScriptRunner::new(&s, t0);
    let result = finished(&mut r, &[hangup("script_error")]);
    let Outcome::Error { message } = result.outcome else {
        panic!("{:?}", result.outcome);
    };
    assert!(message.contains("without waiting"), "{message}");
}

#[test]
fn serialized_script_parses_back_to_itself() {
    let s = survey();
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(parse(&json).unwrap(), s);
    // Plain serde with deny_unknown_fields accepts the same document.
    assert_eq!(serde_json::from_str::<Script>(&json).unwrap(), s);
}

#[test]
fn validation_names_the_step_of_an_unknown_field() {
    let e =
        error(r#"{"version": 1, "steps": [{"answer": {}}, {"play": {"file": "x", "volume": 3}}]}"#);
    assert_eq!(e.path, "steps[1].play.volume");
    assert!(e.message.starts_with("unknown field"), "{e}");
    assert!(e.message.contains("file, barge_in"), "{e}");
    let e = error(r#"{"version": 1, "steps": [{"hangup": {}}], "name": "x"}"#);
    assert_eq!(e.path, "name");
    // Plain serde rejects unknown fields too.
    assert!(
        serde_json::from_str::<Script>(r#"{"version":1,"steps":[{"pause":{"ms":1,"x":2}}]}"#)
            .is_err()
    );
}

#[test]
fn validation_names_the_step_of_an_unknown_kind() {
    let e = error(r#"{"version": 1, "steps": [{"answer": {}}, {"plya": {"file": "x"}}]}"#);
    assert_eq!(e.to_string().split(':').next(), Some("steps[1]"));
    assert!(e.message.contains("unknown step kind \"plya\""), "{e}");
    let e = error(r#"{"version": 1, "steps": [{"answer": {}, "play": {"file": "x"}}]}"#);
    assert_eq!(e.path, "steps[0]");
    assert!(e.message.contains("exactly one key"), "{e}");
}

#[test]
fn validation_rejects_min_digits_above_max_digits() {
    let e = error(
        r#"{"version": 1, "steps": [{"answer": {}}, {"play": {"file": "x"}},
            {"gather": {"min_digits": 4, "max_digits": 2}}]}"#,
    );
    assert_eq!(
        e.to_string(),
        "steps[2].gather.max_digits: must be >= min_digits (4)"
    );
}

#[test]
fn validation_rejects_a_branch_to_an_unknown_label() {
    let e = error(
        r#"{"version": 1, "steps": [{"gather": {}},
            {"branch": {"on": "digits", "cases": {"1": "yes", "2": [{"hangup": {}}]}}},
            {"label": "no"}]}"#,
    );
    assert_eq!(e.path, "steps[1].branch.cases[\"1\"]");
    assert_eq!(e.message, "unknown label \"yes\"");
    let e = error(r#"{"version": 1, "steps": [{"goto": "nowhere"}]}"#);
    assert_eq!(e.to_string(), "steps[0].goto: unknown label \"nowhere\"");
}

#[test]
fn validation_rejects_empty_steps() {
    assert_eq!(
        error(r#"{"version": 1, "steps": []}"#).to_string(),
        "steps: must not be empty"
    );
    let e = error(
        r#"{"version": 1, "steps": [{"gather": {}},
            {"branch": {"on": "digits", "cases": {"1": []}}}]}"#,
    );
    assert_eq!(
        e.to_string(),
        "steps[1].branch.cases[\"1\"]: must not be empty"
    );
}

#[test]
fn validation_paths_reach_into_nested_steps_and_types() {
    let e = error(
        r#"{"version": 1, "steps": [{"gather": {}},
            {"branch": {"on": "digits", "cases": {"1": [{"play": {}}]}}}]}"#,
    );
    assert_eq!(
        e.to_string(),
        "steps[1].branch.cases[\"1\"][0].play.file: missing (required)"
    );
    let e = error(r#"{"version": 1, "steps": [{"gather": {"max_digits": "4"}}]}"#);
    assert_eq!(e.path, "steps[0].gather.max_digits");
    let e = error(r###"{"version": 1, "steps": [{"gather": {"terminator": "##"}}]}"###);
    assert_eq!(e.path, "steps[0].gather.terminator");
    let e = error(r#"{"version": 1, "steps": [{"gather": {"terminator": "x"}}]}"#);
    assert_eq!(e.path, "steps[0].gather.terminator");
    let e = error(r#"{"version": 1, "steps": [{"record": {"action": "stop", "mode": "stereo"}}]}"#);
    assert_eq!(e.path, "steps[0].record.mode");
    let e = error(r#"{"version": 2, "steps": [{"hangup": {}}]}"#);
    assert_eq!(e.path, "version");
    let e = error(
        r#"{"version": 1, "steps": [{"gather": {"store_as": "1x",
            "on_failure": [{"label": "inner"}]}}]}"#,
    );
    assert_eq!(e.path, "steps[0].gather.store_as");
    let s: Script = serde_json::from_str(
        r#"{"version": 1, "steps": [{"gather": {"on_failure": [{"label": "inner"}]}}]}"#,
    )
    .unwrap();
    assert_eq!(
        validate(&s)[0].to_string(),
        "steps[0].gather.on_failure[0].label: labels are allowed only in the top-level steps list"
    );
    assert_eq!(error("[1").path, "script");
}

#[test]
fn preset_variables_steer_a_branch_from_the_first_step() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"branch": {"on": "lang", "cases": {"fr": [{"hangup": {"reason": "bonjour"}}]},
                        "default": [{"hangup": {"reason": "hello"}}]}}]}"#,
    );
    let t0 = Instant::now();
    let vars = [("lang".to_owned(), "fr".to_owned())].into_iter().collect();
    let mut r = ScriptRunner::new_answered_with(&s, t0, vars);
    let result = finished(&mut r, &[hangup("bonjour")]);
    assert_eq!(result.variables.get("lang").map(String::as_str), Some("fr"));
    // Without the variable the same script takes the default.
    let mut r = ScriptRunner::new_answered(&s, t0);
    finished(&mut r, &[hangup("hello")]);
}

#[test]
fn opt_out_asks_for_the_do_not_call_list_and_goes_on() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"gather": {"max_digits": 1}},
            {"branch": {"on": "digits", "cases": {"9": [
                {"opt_out": {"reason": "pressed 9"}},
                {"hangup": {"reason": "opted_out"}}
            ]}}},
            {"opt_out": {}},
            {"hangup": {}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    assert_eq!(drain(&mut r), []);
    r.handle(t0 + ms(100), ScriptInput::Dtmf('9'));
    let result = finished(
        &mut r,
        &[
            Action::OptOut {
                reason: Some("pressed 9".to_string()),
            },
            hangup("opted_out"),
        ],
    );
    assert_eq!(
        result.outcome,
        Outcome::Hangup {
            reason: "opted_out".to_string()
        }
    );
    // Without a reason, and the script continues after it.
    let mut r = ScriptRunner::new(&s, t0);
    r.handle(t0 + ms(100), ScriptInput::Dtmf('1'));
    finished(&mut r, &[Action::OptOut { reason: None }, hangup("normal")]);
}

#[test]
fn opt_out_takes_only_a_reason() {
    let e = error(r#"{"version": 1, "steps": [{"opt_out": {"number": "+1"}}]}"#);
    assert!(e.to_string().contains("steps[0].opt_out.number"), "{e}");
    let e = error(r#"{"version": 1, "steps": [{"opt_out": {"reason": ""}}]}"#);
    assert!(e.to_string().contains("steps[0].opt_out.reason"), "{e}");
    script(r#"{"version": 1, "steps": [{"opt_out": {}}]}"#);
}

#[test]
fn send_dtmf_says_back_a_gathered_variable_or_fixed_keys_and_goes_on() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"gather": {"max_digits": 10, "store_as": "pin"}},
            {"send_dtmf": {"from": "pin"}},
            {"send_dtmf": {"digits": "*9a"}},
            {"send_dtmf": {"from": "unset"}},
            {"pause": {"ms": 2000}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    for key in "4711#".chars() {
        r.handle(t0 + ms(100), ScriptInput::Dtmf(key));
    }
    // Both sends at once (no wait), an unset variable sends nothing, then the pause.
    assert_eq!(
        drain(&mut r),
        [
            Action::SendDtmf {
                digits: "4711".into()
            },
            Action::SendDtmf {
                digits: "*9A".into()
            }
        ]
    );
    assert_eq!(r.poll_timeout(), Some(t0 + ms(2100)));
}

#[test]
fn send_dtmf_needs_keys_or_a_variable_name() {
    for (json, path) in [
        (r#"{"send_dtmf": {}}"#, "steps[0].send_dtmf"),
        (
            r#"{"send_dtmf": {"digits": "12", "from": "x"}}"#,
            "steps[0].send_dtmf",
        ),
        (
            r#"{"send_dtmf": {"digits": ""}}"#,
            "steps[0].send_dtmf.digits",
        ),
        (
            r#"{"send_dtmf": {"digits": "12x"}}"#,
            "steps[0].send_dtmf.digits",
        ),
        (
            r#"{"send_dtmf": {"from": "9x"}}"#,
            "steps[0].send_dtmf.from",
        ),
        (r#"{"send_dtmf": {"keys": "1"}}"#, "steps[0].send_dtmf.keys"),
    ] {
        let e = error(&format!(r#"{{"version": 1, "steps": [{json}]}}"#));
        assert_eq!(e.path, path, "{json}: {e}");
    }
}

/// A `listen` then a `send_dtmf` of the outcome's first key, so the test sees where it went.
fn listen_script(fields: &str) -> Script {
    script(&format!(
        r#"{{"version": 1, "steps": [
            {{"listen": {{{fields}}}}},
            {{"branch": {{"on": "heard", "cases": {{
                "speech": [{{"send_dtmf": {{"digits": "1"}}}}],
                "silence": [{{"send_dtmf": {{"digits": "2"}}}}],
                "timeout": [{{"send_dtmf": {{"digits": "3"}}}}]}}}}}},
            {{"pause": {{"ms": 60000}}}}
        ]}}"#
    ))
}

fn keys(digits: &str) -> Action {
    Action::SendDtmf {
        digits: digits.to_string(),
    }
}

#[test]
fn listen_until_silence_waits_for_the_prompt_to_play_and_then_stay_quiet() {
    let t0 = Instant::now();
    let mut r = ScriptRunner::new_answered(&listen_script(r#""silence_ms": 1000"#), t0);
    assert_eq!(drain(&mut r), [Action::DetectVoice(true)]);
    // Nothing heard yet: only the 15 s default timeout is pending; quiet alone is not enough.
    assert_eq!(r.poll_timeout(), Some(t0 + ms(15_000)));
    // The prompt starts, pauses (the media says it ended after 300 ms of quiet), resumes.
    r.handle(t0 + ms(500), ScriptInput::Voice(true));
    r.handle(t0 + ms(2000), ScriptInput::Voice(false));
    // Quiet for 1000 ms in all: 700 ms more after the media's 300 ms.
    assert_eq!(r.poll_timeout(), Some(t0 + ms(2700)));
    r.handle(t0 + ms(2500), ScriptInput::Voice(true));
    assert_eq!(
        r.poll_timeout(),
        Some(t0 + ms(15_000)),
        "the pause was not the end"
    );
    r.handle(t0 + ms(2700), ScriptInput::Timeout);
    assert!(drain(&mut r).is_empty(), "still listening");
    r.handle(t0 + ms(4000), ScriptInput::Voice(false));
    r.handle(t0 + ms(4700), ScriptInput::Timeout);
    assert_eq!(drain(&mut r), [Action::DetectVoice(false), keys("2")]);
    assert_eq!(r.variables()["heard"], "silence");
}

#[test]
fn listen_until_speech_ends_at_the_first_audio_and_a_silent_peer_times_out() {
    let t0 = Instant::now();
    let mut r = ScriptRunner::new_answered(&listen_script(r#""until": "speech""#), t0);
    assert_eq!(drain(&mut r), [Action::DetectVoice(true)]);
    r.handle(t0 + ms(800), ScriptInput::Voice(true));
    assert_eq!(drain(&mut r), [Action::DetectVoice(false), keys("1")]);

    // Nobody speaks: the timeout, stored as such. Voice after it is ignored.
    let mut r = ScriptRunner::new_answered(&listen_script(r#""timeout_ms": 3000"#), t0);
    assert_eq!(drain(&mut r), [Action::DetectVoice(true)]);
    r.handle(t0 + ms(2999), ScriptInput::Timeout);
    assert!(drain(&mut r).is_empty(), "an early timeout is ignored");
    r.handle(t0 + ms(3000), ScriptInput::Timeout);
    assert_eq!(drain(&mut r), [Action::DetectVoice(false), keys("3")]);
    r.handle(t0 + ms(3100), ScriptInput::Voice(true));
    assert!(drain(&mut r).is_empty());
    // A prompt that plays but never stops: the timeout too.
    let mut r = ScriptRunner::new_answered(&listen_script(r#""timeout_ms": 3000"#), t0);
    drain(&mut r);
    r.handle(t0 + ms(100), ScriptInput::Voice(true));
    r.handle(t0 + ms(3000), ScriptInput::Timeout);
    assert_eq!(drain(&mut r), [Action::DetectVoice(false), keys("3")]);
}

#[test]
fn listen_fields_are_checked() {
    for (json, path) in [
        (
            r#"{"listen": {"silence_ms": 100}}"#,
            "steps[0].listen.silence_ms",
        ),
        (
            r#"{"listen": {"timeout_ms": 0}}"#,
            "steps[0].listen.timeout_ms",
        ),
        (r#"{"listen": {"until": "music"}}"#, "steps[0].listen.until"),
        (
            r#"{"listen": {"store_as": "9x"}}"#,
            "steps[0].listen.store_as",
        ),
        (r#"{"listen": {"for": "speech"}}"#, "steps[0].listen.for"),
    ] {
        let e = error(&format!(r#"{{"version": 1, "steps": [{json}]}}"#));
        assert_eq!(e.path, path, "{json}: {e}");
    }
    // The defaults.
    let s = script(r#"{"version": 1, "steps": [{"listen": {}}]}"#);
    let callplane::script::Step::Listen(l) = &s.steps[0] else {
        panic!("{s:?}")
    };
    assert_eq!(
        (l.silence_ms, l.timeout_ms, l.store_as.as_str()),
        (1000, 15_000, "heard")
    );
}

#[test]
fn echo_sends_the_audio_back_for_its_time_then_goes_on() {
    let s = script(
        r#"{"version": 1, "steps": [{"echo": {"ms": 4000}}, {"hangup": {"reason": "done"}}]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new_answered(&s, t0);
    assert_eq!(drain(&mut r), [Action::Echo(true)]);
    assert_eq!(r.poll_timeout(), Some(t0 + ms(4000)));
    r.handle(t0 + ms(1000), ScriptInput::Dtmf('5'));
    r.handle(t0 + ms(3999), ScriptInput::Timeout);
    assert!(
        drain(&mut r).is_empty(),
        "keys and early timeouts change nothing"
    );
    r.handle(t0 + ms(4000), ScriptInput::Timeout);
    let result = finished(&mut r, &[Action::Echo(false), hangup("done")]);
    assert_eq!(result.path, ["steps[0]", "steps[1]"]);
    for bad in [
        r#"{"echo": {"ms": 0}}"#,
        r#"{"echo": {}}"#,
        r#"{"echo": {"ms": 700000}}"#,
    ] {
        let e = error(&format!(r#"{{"version": 1, "steps": [{bad}]}}"#));
        assert!(e.path.starts_with("steps[0].echo"), "{bad}: {e}");
    }
}

#[test]
fn early_media_goes_before_the_answer_at_once_and_is_a_no_op_once_answered() {
    let s = script(
        r#"{"version": 1, "steps": [
            {"early_media": {}},
            {"play": {"file": "ringback", "barge_in": false}},
            {"answer": {}},
            {"hangup": {}}
        ]}"#,
    );
    let t0 = Instant::now();
    let mut r = ScriptRunner::new(&s, t0);
    assert_eq!(drain(&mut r), [Action::EarlyMedia, play("ringback")]);
    r.handle(t0 + ms(3000), ScriptInput::PromptFinished);
    assert_eq!(drain(&mut r), [Action::Answer]);
    // An outbound call is answered already: nothing to do.
    let mut r = ScriptRunner::new_answered(&s, t0);
    assert_eq!(drain(&mut r), [play("ringback")]);
    let e = error(r#"{"version": 1, "steps": [{"early_media": {"ms": 1}}]}"#);
    assert_eq!(e.path, "steps[0].early_media.ms", "{e}");
}
