// `callplane demo` as a user runs it: the real binary, its own softswitch and answerer on
// loopback, a 50-contact survey campaign. The summary's numbers must add up, and they are
// checked against what the answerer (the peer) saw and against the files on disk.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;
use tokio::time::timeout;

/// The demo bounds itself at 180 s (`--timeout-s`); this is the test's outer bound.
const RUN_BOUND: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_a_50_contact_survey_to_the_end_and_its_summary_adds_up() {
    let dir = tempfile::Builder::new()
        .prefix("cp-demo-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir");
    let data_dir = dir.path().join("data");
    let child = Command::new(env!("CARGO_BIN_EXE_callplane"))
        .args(["demo", "--json", "--data-dir"])
        .arg(&data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("callplane demo starts");
    let out = timeout(RUN_BOUND, child.wait_with_output())
        .await
        .expect("the demo ended by itself in time")
        .expect("demo output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status.code()
    );
    let summary: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("a JSON summary line in:\n{stdout}"));
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let sum = |v: &Value| -> i64 {
        v.as_object()
            .map(|m| m.values().map(|x| x.as_i64().unwrap_or(0)).sum())
            .unwrap_or(0)
    };
    let ctx = format!("{summary:#}\n{stdout}");

    // 50 contacts, every one in a final state.
    assert_eq!(summary["ok"], true, "{ctx}");
    assert_eq!(summary["campaign_status"], "completed", "{ctx}");
    assert_eq!(n(&summary["contacts"]), 50, "{ctx}");
    let by_status = &summary["by_status"];
    assert_eq!(sum(by_status), 50, "{ctx}");
    assert_eq!(
        n(&by_status["queued"]) + n(&by_status["dialing"]),
        0,
        "{ctx}"
    );
    // The mix per ten callees: 8 answer (6 score, 1 opts out, 1 silent), 1 busy, 1 never
    // answers; busy and no answer are retried once, then exhausted.
    assert_eq!(n(&by_status["completed"]), 40, "{ctx}");
    assert_eq!(n(&by_status["exhausted"]), 10, "{ctx}");
    let outcomes = &summary["by_outcome"];
    assert_eq!(n(&outcomes["answered"]), 40, "{ctx}");
    assert_eq!(n(&outcomes["busy"]), 10, "{ctx}");
    assert_eq!(n(&outcomes["no_answer"]), 10, "{ctx}");
    // Every attempt reached the peer, and the peer never had more than max_concurrent (10).
    assert_eq!(
        summary["answerer_invites"].as_i64(),
        Some(sum(outcomes)),
        "{ctx}"
    );
    assert!(n(&summary["answerer_peak_calls"]) <= 10, "{ctx}");
    assert!(n(&summary["answerer_peak_calls"]) >= 1, "{ctx}");

    // The survey: every answered contact either gave a score, pressed 9 or said nothing.
    let answers = &summary["answers"];
    assert_eq!(
        sum(answers) + n(&summary["no_answer_given"]),
        n(&by_status["completed"]),
        "{ctx}"
    );
    for (digit, count) in [("5", 10), ("4", 10), ("3", 5), ("2", 5), ("9", 5)] {
        assert_eq!(n(&answers[digit]), count, "digit {digit}: {ctx}");
    }
    assert_eq!(n(&summary["no_answer_given"]), 5, "{ctx}");
    assert_eq!(n(&summary["opted_out"]), 5, "{ctx}");
    assert_eq!(n(&summary["suppressed_numbers"]), 5, "{ctx}");

    // One recording per answered call, and they are where the summary says.
    assert_eq!(n(&summary["recordings"]), 40, "{ctx}");
    let rec_dir = summary["recordings_dir"].as_str().expect("recordings_dir");
    assert!(
        rec_dir.starts_with(data_dir.to_str().expect("utf-8")),
        "{ctx}"
    );
    let wavs = std::fs::read_dir(rec_dir)
        .expect("recordings directory")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "wav"))
        .count();
    assert_eq!(wavs, 40, "{ctx}");

    // The human summary is printed too.
    for text in [
        "Summary: campaign completed",
        "Survey answers",
        "Recordings: 40 WAV files",
        "OK:",
    ] {
        assert!(stdout.contains(text), "{text:?} in:\n{stdout}");
    }
}
