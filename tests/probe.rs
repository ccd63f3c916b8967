//! `callplane probe <sip-uri>` against sipp trunks on loopback UDP (#11): a conformant one
//! (tests/fixtures/sipp/probe_uas.xml) passes with the expected rows, one that answers every
//! INVITE 486 (probe_busy_uas.xml) fails the invite step and exits 1.
//!
//! Needs sipp (Debian `sip-tester`); skipped without it unless `CI=true`.

use std::process::Stdio;

use serde_json::Value;
use tokio::process::Command;
use tokio::time::timeout;

mod common;
use common::*;

/// Starts sipp with `scenario` on a free port; it runs until the test drops it (killed).
async fn trunk(dir: &std::path::Path, scenario: &str) -> (tokio::process::Child, u16) {
    let scenario = fixture(scenario).display().to_string();
    spawn_sipp_on_free_port(dir, |port| {
        [
            "-sf",
            &scenario,
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-timeout",
            "60s",
            "-trace_err",
        ]
        .map(String::from)
        .to_vec()
    })
    .await
}

/// Runs `callplane probe` with `args`; exit code, stdout, stderr.
async fn probe(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_callplane"))
        .arg("probe")
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start callplane probe");
    let out = timeout(RUN_WAIT, child.wait_with_output())
        .await
        .expect("probe finished within its time limit")
        .expect("wait for probe");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {report:#}"))
}

/// The ladder of a step as `direction message cseq` strings.
fn ladder(step: &Value) -> Vec<String> {
    step["ladder"]
        .as_array()
        .expect("ladder")
        .iter()
        .map(|l| {
            format!(
                "{} {} {}",
                l["direction"].as_str().unwrap_or("?"),
                l["message"].as_str().unwrap_or("?"),
                l["cseq"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[tokio::test]
async fn probe_passes_against_a_conformant_sipp_trunk_with_every_step_in_the_json() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_sipp, port) = trunk(dir.path(), "probe_uas.xml").await;
    let target = format!("sip:127.0.0.1:{port}");
    let (code, stdout, stderr) = probe(
        dir.path(),
        &[
            &target,
            "--number",
            "15550100",
            "--codec",
            "PCMU",
            "--codec",
            "PCMA",
            "--require",
            "session-timer",
            "--require",
            "hold",
            "--require",
            "unhold",
            "--require",
            "dtmf-rfc4733",
            "--require",
            "dtmf-info",
            "--require",
            "dtmf-inband",
            "--require",
            "100rel-off",
            "--json",
        ],
    )
    .await;
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("--json output does not parse ({e}): {stdout}\n{stderr}"));
    assert_eq!(
        code,
        Some(0),
        "exit code; report {report:#}\nstderr {stderr}"
    );
    assert_eq!(report["passed"], true);
    let names: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "options",
            "register",
            "invite",
            "session-timer",
            "hold",
            "unhold",
            "100rel-required",
            "100rel-off",
            "dtmf-rfc4733",
            "dtmf-info",
            "dtmf-inband",
            "codec-pcmu",
            "codec-pcma",
            "srtp"
        ]
    );
    // (step, status, required)
    for (name, status, required) in [
        ("options", "pass", true),
        ("register", "skip", false),
        ("invite", "pass", true),
        ("session-timer", "pass", true),
        ("hold", "pass", true),
        ("unhold", "pass", true),
        ("100rel-off", "pass", true),
        ("dtmf-rfc4733", "pass", true),
        ("dtmf-info", "pass", true),
        ("dtmf-inband", "pass", true),
        ("codec-pcmu", "pass", true),
        ("codec-pcma", "pass", true),
        ("srtp", "skip", false),
    ] {
        let s = step(&report, name);
        assert_eq!(s["status"], status, "{name}: {s:#}");
        assert_eq!(s["required"], required, "{name}: {s:#}");
    }
    // The sipp scenario answers Require: 100rel with an unreliable 180: the probe says so,
    // and the step is not required, so the run still passes.
    let rel = step(&report, "100rel-required");
    assert_eq!(rel["status"], "fail", "{rel:#}");
    assert_eq!(rel["required"], false);

    let options = ladder(step(&report, "options"));
    assert_eq!(options, ["out OPTIONS 1 OPTIONS", "in 200 OK 1 OPTIONS"]);
    let invite = ladder(step(&report, "invite"));
    for want in [
        "out INVITE 1 INVITE",
        "in 180 Ringing 1 INVITE",
        "in 200 OK 1 INVITE",
    ] {
        assert!(invite.contains(&want.to_owned()), "{want} in {invite:?}");
    }
    // The ACK goes right after the 200: in the invite step's ladder, or in the next step's
    // when the step ended first (the probe does not order the two).
    let next = ladder(step(&report, "session-timer"));
    assert!(
        invite.iter().chain(&next).any(|l| l == "out ACK 1 ACK"),
        "the ACK in {invite:?} or {next:?}"
    );
    // The refresh is an UPDATE (the trunk allows it), hold and unhold are re-INVITEs with the
    // next CSeq numbers of the same dialog, and the BYE closes the unhold step.
    let refresh = ladder(step(&report, "session-timer"));
    assert!(
        refresh.contains(&"out UPDATE 2 UPDATE".to_owned()),
        "{refresh:?}"
    );
    assert!(
        refresh.contains(&"in 200 OK 2 UPDATE".to_owned()),
        "{refresh:?}"
    );
    let hold = ladder(step(&report, "hold"));
    assert!(hold.contains(&"out INVITE 3 INVITE".to_owned()), "{hold:?}");
    assert!(hold.contains(&"in 200 OK 3 INVITE".to_owned()), "{hold:?}");
    let unhold = ladder(step(&report, "unhold"));
    assert!(
        unhold.contains(&"out INVITE 4 INVITE".to_owned()),
        "{unhold:?}"
    );
    assert!(unhold.contains(&"out BYE 5 BYE".to_owned()), "{unhold:?}");
    let info = ladder(step(&report, "dtmf-info"));
    let infos = info.iter().filter(|l| l.starts_with("out INFO")).count();
    assert_eq!(
        infos, 2,
        "one INFO per digit of the default \"1#\": {info:?}"
    );
    // Each line carries a time from the step's start, in order.
    let times: Vec<f64> = step(&report, "invite")["ladder"]
        .as_array()
        .expect("ladder")
        .iter()
        .filter_map(|l| l["t_ms"].as_f64())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

#[tokio::test]
async fn probe_fails_the_invite_step_and_exits_1_when_the_trunk_answers_486() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_sipp, port) = trunk(dir.path(), "probe_busy_uas.xml").await;
    let target = format!("sip:127.0.0.1:{port}");
    let (code, stdout, stderr) = probe(dir.path(), &[&target, "--number", "15550100"]).await;
    assert_eq!(code, Some(1), "exit code; stdout {stdout}\nstderr {stderr}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("invite "))
        .unwrap_or_else(|| panic!("no invite row in the table: {stdout}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..3], ["invite", "FAIL", "yes"], "{row}");
    assert!(row.contains("486"), "{row}");
    let options = stdout
        .lines()
        .find(|l| l.starts_with("options "))
        .expect("options row");
    assert!(options.contains("PASS"), "{options}");
    // The ladder of the failed INVITE: sent, 486 received, ACKed.
    assert!(stdout.contains("<-- 486 Busy Here"), "{stdout}");
    assert!(stdout.contains("--> ACK"), "{stdout}");
    assert!(stdout.contains("result: FAIL"), "{stdout}");
}
