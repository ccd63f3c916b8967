//! The trunk registration client and OPTIONS health checks against a real sipp on loopback:
//! sipp plays the carrier's registrar (401 then a checked digest, `expires=4`, the refresh,
//! the unregistration at shutdown), a registrar that refuses (403), and an OPTIONS responder
//! that goes away and comes back. The engine runs in-process ([`Engine::start`]); every wait
//! is bounded and prints what it saw.
//!
//! Needs the Debian package `sip-tester` (binary `sipp`): skipped without it, except under
//! `CI=true`, where a missing sipp fails.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callplane::engine::{Engine, EngineConfig};
use callplane::trunk::{
    Health, RegState, TrunkContext, TrunkCounters, TrunkEvent, TrunkSettings, TrunkSpec,
    TrunkStates, TrunkTasks,
};
use tokio::sync::mpsc;

mod common;
use common::*;

struct Harness {
    engine: Engine,
    tasks: Option<TrunkTasks>,
    states: TrunkStates,
    counters: Arc<TrunkCounters>,
    events: mpsc::Receiver<TrunkEvent>,
    seen: Vec<TrunkEvent>,
}

impl Harness {
    async fn start() -> Harness {
        let engine = Engine::start(EngineConfig::new("127.0.0.1:0".parse().expect("addr")))
            .await
            .expect("engine starts");
        let (tx, events) = mpsc::channel(256);
        let states = TrunkStates::default();
        let counters = Arc::new(TrunkCounters::default());
        let ctx = TrunkContext {
            engine: engine.handle.clone(),
            states: states.clone(),
            events: tx,
            counters: counters.clone(),
        };
        Harness {
            engine,
            tasks: Some(TrunkTasks::new(ctx)),
            states,
            counters,
            events,
            seen: Vec::new(),
        }
    }

    async fn apply(&mut self, spec: TrunkSpec) {
        self.tasks
            .as_mut()
            .expect("running")
            .apply(vec![spec])
            .await;
    }

    /// The next event of `kind` whose `state` detail is `state`, within `within`.
    async fn wait_event(&mut self, kind: &str, state: &str, within: Duration) -> TrunkEvent {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    self.seen.push(e.clone());
                    if e.kind == kind && e.details["state"] == state {
                        return e;
                    }
                }
                Ok(None) => panic!("event channel closed; seen {:#?}", self.seen),
                Err(_) => panic!("no {kind} {state} within {within:?}; seen {:#?}", self.seen),
            }
        }
    }

    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        if let Some(t) = self.tasks.take() {
            t.shutdown(Duration::from_secs(2)).await;
        }
        let took = started.elapsed();
        let _ = self.engine.handle.clone().shutdown().await;
        took
    }
}

fn spec(port: u16, f: impl FnOnce(&mut TrunkSettings)) -> TrunkSpec {
    let mut settings = TrunkSettings {
        hosts: vec![format!("127.0.0.1:{port}")],
        username: Some("alice".into()),
        password: Some("secret".into()),
        ..TrunkSettings::default()
    };
    f(&mut settings);
    TrunkSpec {
        trunk_id: "trk_test".into(),
        tenant_id: "ten_test".into(),
        settings,
    }
}

async fn sipp_scenario(
    dir: &Path,
    scenario: &str,
    max_calls: Option<u32>,
) -> (tokio::process::Child, u16) {
    let sf = fixture(scenario);
    spawn_sipp_on_free_port(dir, |port| {
        let mut a = vec![
            "-sf".to_string(),
            sf.display().to_string(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-timeout".into(),
            "30s".into(),
            "-trace_err".into(),
            "-trace_msg".into(),
        ];
        if let Some(m) = max_calls {
            a.push("-m".into());
            a.push(m.to_string());
        }
        a
    })
    .await
}

#[tokio::test]
async fn registers_through_digest_refreshes_and_unregisters_at_shutdown() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = sipp_scenario(dir.path(), "registrar_uas.xml", Some(1)).await;
    let mut h = Harness::start().await;
    h.apply(spec(port, |s| {
        s.register = true;
        s.register_expires_s = Some(60);
    }))
    .await;
    let first = h
        .wait_event("trunk.registration", "registered", Duration::from_secs(10))
        .await;
    let first_at = Instant::now();
    assert_eq!(first.details["status"], 200);
    assert_eq!(first.details["expires"], 4, "{first:?}");
    assert_eq!(first.details["trunk_id"], "trk_test");
    match h.states.get("trk_test").registration {
        RegState::Registered { granted_s, .. } => assert_eq!(granted_s, 4),
        other => panic!("state {other:?}"),
    }
    // The refresh comes at 50-90 % of the 4 s granted: 2-3.6 s (plus a round trip).
    h.wait_event("trunk.registration", "registered", Duration::from_secs(6))
        .await;
    let gap = first_at.elapsed();
    assert!(
        gap >= Duration::from_millis(1900) && gap <= Duration::from_millis(4000),
        "refresh {gap:?} after the first registration"
    );
    let counts = h.counters.snapshot();
    assert_eq!(
        counts[0].1.registrations_sent, 3,
        "REGISTER, with credentials, refresh: {counts:?}"
    );
    let states = h.states.clone();
    let took = h.stop().await;
    assert!(
        took < Duration::from_millis(2500),
        "unregistration took {took:?}"
    );
    assert_eq!(states.get("trk_test").registration, RegState::Unregistered);
    let (status, err) = wait_child(sipp, "sipp registrar").await;
    let trace = std::fs::read_dir(dir.path())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_errors.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(
        status.success(),
        "sipp registrar failed ({status}): {err}\n{trace}"
    );
}

#[tokio::test]
async fn forbidden_registration_is_failed_with_status_and_next_try() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = sipp_scenario(dir.path(), "registrar_403_uas.xml", Some(1)).await;
    let mut h = Harness::start().await;
    h.apply(spec(port, |s| s.register = true)).await;
    let failed = h
        .wait_event("trunk.registration", "failed", Duration::from_secs(10))
        .await;
    assert_eq!(failed.details["status"], 403, "{failed:?}");
    let next = failed.details["next_try_at"].as_i64().expect("next_try_at");
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    // The first backoff is 5 s minus up to 20 % jitter.
    assert!(
        next > now_us + 3_000_000 && next <= now_us + 5_100_000,
        "next try {} µs from now",
        next - now_us
    );
    match h.states.get("trk_test").registration {
        RegState::Failed {
            last_status,
            next_try_at_us,
            ..
        } => {
            assert_eq!(last_status, 403);
            assert_eq!(next_try_at_us, next);
        }
        other => panic!("state {other:?}"),
    }
    let (status, err) = wait_child(sipp, "sipp").await;
    assert!(status.success(), "sipp failed ({status}): {err}");
    h.stop().await;
}

#[tokio::test]
async fn options_health_goes_down_when_the_peer_stops_and_up_when_it_returns() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sipp, port) = sipp_scenario(dir.path(), "options_uas_loop.xml", None).await;
    let mut h = Harness::start().await;
    h.apply(spec(port, |s| s.options_interval_s = Some(1)))
        .await;
    h.wait_event("trunk.health", "up", Duration::from_secs(5))
        .await;
    assert_eq!(h.states.get("trk_test").health, Health::Up);
    let up_since = h.states.get("trk_test").health_since_us;
    assert!(up_since > 0);
    // The peer goes away: down after two unanswered pings (1 s apart, 1 s each).
    drop(sipp);
    let down = h
        .wait_event("trunk.health", "down", Duration::from_secs(8))
        .await;
    assert!(h.states.is_down("trk_test"), "{down:?}");
    // A new one on the same port: up on its first answer.
    let sf = fixture("options_uas_loop.xml");
    let _sipp2 = spawn_sipp(
        dir.path(),
        &[
            "-sf",
            &sf.display().to_string(),
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-timeout",
            "30s",
        ]
        .map(String::from),
    );
    h.wait_event("trunk.health", "up", Duration::from_secs(6))
        .await;
    assert_eq!(h.states.get("trk_test").health, Health::Up);
    let kinds: Vec<_> = h
        .seen
        .iter()
        .filter(|e| e.kind == "trunk.health")
        .map(|e| e.details["state"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(kinds, ["up", "down", "up"], "events on changes only");
    let c = h.counters.snapshot();
    assert!(c[0].1.options_failed >= 2, "{c:?}");
    h.stop().await;
}
