//! The Docker files are not built here (these machines have the Docker client but no engine),
//! so they are checked against the binary they run: every flag they pass to `callplane` must
//! exist, and the compose file must keep the pieces docs/operations.md describes.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `callplane <sub> --help`.
fn help(sub: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_callplane"))
        .args([sub, "--help"])
        .output()
        .expect("run callplane");
    assert!(out.status.success(), "callplane {sub} --help");
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// The `--flags` in `text`.
fn flags(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, '"' | ',' | '[' | ']'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split('=').next().unwrap_or(w).to_owned())
        .collect()
}

#[test]
fn every_flag_the_docker_files_pass_to_serve_exists() {
    let serve = help("serve");
    let dockerfile = read("docker/Dockerfile");
    let cmd = dockerfile
        .lines()
        .find(|l| l.starts_with("CMD "))
        .expect("the Dockerfile has a CMD");
    assert!(cmd.contains("\"serve\""), "{cmd}");
    let compose = read("docker/compose.yaml");
    let mut checked = 0;
    for flag in flags(cmd).into_iter().chain(flags(&compose)) {
        assert!(serve.contains(&flag), "`callplane serve` has no {flag}");
        checked += 1;
    }
    assert!(checked >= 6, "the files pass flags: {checked}");
}

#[test]
fn the_health_checks_use_a_command_the_image_has() {
    let dockerfile = read("docker/Dockerfile");
    let compose = read("docker/compose.yaml");
    assert!(dockerfile.contains("HEALTHCHECK"));
    assert!(dockerfile.contains("\"callplane\", \"probe\""));
    assert!(compose.contains("\"callplane\", \"probe\""));
    assert!(help("probe").contains("2xx"));
    // The probe really fails on a dead address (exit 1, not a panic).
    let status = Command::new(env!("CARGO_BIN_EXE_callplane"))
        .args(["probe", "http://127.0.0.1:9/readyz"])
        .status()
        .expect("run probe");
    assert_eq!(status.code(), Some(1));
}

#[test]
fn compose_runs_callplane_on_postgres_15_with_volumes_and_health_checks() {
    let compose = read("docker/compose.yaml");
    for needle in [
        "image: postgres:15",
        "pg_isready",
        "condition: service_healthy",
        "DATABASE_URL: postgres://",
        "pgdata:/var/lib/postgresql/data",
        "dockerfile: docker/Dockerfile",
    ] {
        assert!(compose.contains(needle), "compose.yaml lacks {needle:?}");
    }
    assert_eq!(compose.matches("healthcheck:").count(), 2);
    let dockerfile = read("docker/Dockerfile");
    assert_eq!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")),
        2,
        "two stages"
    );
    assert!(dockerfile.contains("--locked"));
}
