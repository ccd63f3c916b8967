//! `callplane demo`: a survey campaign end to end on loopback, with no set-up.
//!
//! What it starts, in this process:
//! - **the softswitch**, exactly as `serve` runs it ([`crate::app::serve_with`]): the store
//!   (SQLite in a fresh data directory), the engine, the event pump, the webhook outbox, the
//!   campaign worker and the REST API, on loopback ports the system picks;
//! - **an answerer**: a second [`Engine`] on another loopback port, the far end of the demo's
//!   trunk, that answers by the dialed number ([`InboundConfig::by_user`]): most callees answer
//!   and press a key during the question (RFC 4733 DTMF), one in ten presses 9 (opt out), one
//!   in ten answers and says nothing, one in ten is busy (486), one in ten never answers.
//!
//! Then it drives the API as any client would: a trunk to the answerer, a survey script (a
//! question with barge-in, one digit stored as `satisfaction`, opt-out on 9, a recording), a
//! campaign of [`DemoConfig::contacts`] contacts with a short ring timeout and retries after a
//! second, started; it shows the campaign's progress until every contact is in a final state,
//! then prints the outcomes, the survey answers and where the recordings are. Everything it
//! waits for is bounded by [`DemoConfig::deadline`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::app::{self, ServeConfig, ServeControl};
use crate::engine::{Engine, EngineConfig, InboundAnswer, InboundConfig};
use crate::events::outbox::OutboxConfig;
use crate::files::generated::{new_temp_dir, write_wav_mono};
use crate::net::api_client::{ApiClient, ApiReply};

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Contacts in the campaign (1 to 1000).
    pub contacts: usize,
    /// The campaign's live calls at most.
    pub max_concurrent: u32,
    /// The campaign's new calls per second at most.
    pub max_cps: f64,
    /// The whole run at most: past it the demo cancels the campaign, prints what happened and
    /// fails.
    pub deadline: Duration,
    /// The data directory (a new one under the system's temp directory when `None`); kept at
    /// the end, with the recordings and the database.
    pub data_dir: Option<PathBuf>,
    /// Redraw one progress line in place (a terminal); otherwise print a line per change.
    pub tty: bool,
}

impl Default for DemoConfig {
    fn default() -> DemoConfig {
        DemoConfig {
            contacts: 50,
            max_concurrent: 10,
            max_cps: 10.0,
            deadline: Duration::from_secs(180),
            data_dir: None,
            tty: false,
        }
    }
}

/// What one callee of the answerer does, by the contact's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Callee {
    /// Answers and presses this key during the question.
    Presses(char),
    /// Answers and presses 9: opts out.
    OptsOut,
    /// Answers and presses nothing.
    Silent,
    /// 486 Busy Here, every time.
    Busy,
    /// Rings until the ring timeout, every time.
    NoAnswer,
}

/// The mix: per ten contacts, 6 answer with a satisfaction score, 1 opts out, 1 stays silent,
/// 1 is busy, 1 never answers.
fn callee(index: usize) -> Callee {
    match index % 10 {
        0 => Callee::Presses('5'),
        1 => Callee::Presses('4'),
        2 => Callee::Presses('5'),
        3 => Callee::Presses('3'),
        4 => Callee::Presses('4'),
        5 => Callee::OptsOut,
        6 => Callee::Silent,
        7 => Callee::Busy,
        8 => Callee::NoAnswer,
        _ => Callee::Presses('2'),
    }
}

/// The demo's numbers: fictional NANP numbers (555-01XX is reserved for fiction), one per
/// contact, `+1 202 555 0100` onwards (then `+1 303 555 01XX`... past 100 contacts).
fn phone(index: usize) -> String {
    const AREAS: [&str; 10] = [
        "202", "303", "404", "505", "602", "702", "802", "907", "213", "312",
    ];
    format!(
        "+1{}5550{:03}",
        AREAS[(index / 100) % AREAS.len()],
        100 + index % 100
    )
}

/// The survey: record, ask (barge-in), one digit as `satisfaction`, 9 opts out.
pub fn survey_script() -> Value {
    json!({
        "version": 1,
        "steps": [
            {"record": {"action": "start"}},
            {"gather": {
                "prompt": "survey_question",
                "max_digits": 1,
                "first_digit_timeout_ms": 2500,
                "retries": 0,
                "store_as": "satisfaction",
                "on_failure": [
                    {"play": {"file": "goodbye"}},
                    {"hangup": {"reason": "no_input"}}
                ]
            }},
            {"branch": {
                "on": "satisfaction",
                "cases": {
                    "9": [
                        {"opt_out": {}},
                        {"play": {"file": "goodbye"}},
                        {"hangup": {"reason": "opted_out"}}
                    ]
                }
            }},
            {"play": {"file": "thank_you"}},
            {"hangup": {"reason": "survey_done"}}
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Synthetic audio (no recorded voice ships with callplane): chimes for prompts, a murmur for
// the callees, so that every recording has sound on both channels.

/// 8 kHz mono.
const RATE: u32 = 8000;

/// `(frequency Hz, ms)` notes, each with a short fade in and out, at a comfortable level.
fn notes(seq: &[(f64, u32)]) -> Vec<i16> {
    let mut out = Vec::new();
    for &(freq, ms) in seq {
        let n = (RATE * ms / 1000) as usize;
        let fade = (RATE as usize / 100).min(n / 2).max(1);
        for i in 0..n {
            let env = (i.min(n - 1 - i) as f64 / fade as f64).min(1.0);
            let v = if freq > 0.0 {
                (i as f64 / f64::from(RATE) * freq * std::f64::consts::TAU).sin() * 6000.0 * env
            } else {
                0.0
            };
            out.push(v as i16);
        }
    }
    out
}

/// A callee "speaking": a low voice-band tone whose pitch and loudness wander, 4 s.
fn murmur() -> Vec<i16> {
    let n = RATE as usize * 4;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let pitch = 180.0 + 60.0 * (t * 3.0).sin();
            let loud = 0.5 + 0.5 * (t * 5.0).sin().abs();
            ((t * pitch * std::f64::consts::TAU).sin() * 5000.0 * loud) as i16
        })
        .collect()
}

/// Writes the survey's prompts into `dir` and the callees' voice into `answerer_dir`.
fn write_prompts(dir: &Path, answerer_dir: &Path) -> anyhow::Result<()> {
    let question = notes(&[
        (523.0, 200),
        (659.0, 200),
        (784.0, 300),
        (0.0, 150),
        (440.0, 600),
        (0.0, 100),
        (494.0, 600),
    ]);
    let prompts = [
        ("survey_question", question),
        ("thank_you", notes(&[(784.0, 200), (988.0, 300)])),
        ("goodbye", notes(&[(659.0, 200), (523.0, 300)])),
    ];
    for (name, samples) in prompts {
        let path = dir.join(format!("{name}.wav"));
        write_wav_mono(&path, RATE, &samples)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let path = answerer_dir.join("callee_voice.wav");
    write_wav_mono(&path, RATE, &murmur()).with_context(|| format!("writing {}", path.display()))
}

/// The answerer's script: answer, "speak", then wait for the caller's BYE.
fn answerer_script() -> anyhow::Result<Arc<crate::script::Script>> {
    let script = crate::script::parse(
        &json!({"version": 1, "steps": [
            {"answer": {}},
            {"play": {"file": "callee_voice", "barge_in": false}},
            {"pause": {"ms": 60000}}
        ]})
        .to_string(),
    )
    .map_err(|e| anyhow::anyhow!("the answerer's script: {e}"))?;
    Ok(Arc::new(script))
}

/// The answerer's routes: each contact's number → what that callee does.
fn answerer_routes(contacts: usize) -> anyhow::Result<BTreeMap<String, InboundAnswer>> {
    let press = |c: char| -> anyhow::Result<InboundAnswer> {
        Ok(InboundAnswer::Answer {
            send_dtmf: vec![media::dtmf::Digit::from_char(c).map_err(|e| anyhow::anyhow!("{e}"))?],
            // During the question (about 2 s long): a barge-in.
            dtmf_after: Duration::from_millis(900),
        })
    };
    let mut routes = BTreeMap::new();
    for i in 0..contacts {
        let answer = match callee(i) {
            Callee::Presses(c) => press(c)?,
            Callee::OptsOut => press('9')?,
            Callee::Silent => InboundAnswer::Answer {
                send_dtmf: Vec::new(),
                dtmf_after: Duration::ZERO,
            },
            Callee::Busy => InboundAnswer::Reject(486),
            Callee::NoAnswer => InboundAnswer::Ring,
        };
        routes.insert(phone(i), answer);
    }
    Ok(routes)
}

// ---------------------------------------------------------------------------------------------
// The run.

/// What a run ended with (also printed as JSON with `--json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoSummary {
    /// Whether every contact reached a final state in time.
    pub ok: bool,
    /// The campaign's final status.
    pub campaign_status: String,
    /// Contacts uploaded.
    pub contacts: i64,
    /// Contacts by status at the end.
    pub by_status: BTreeMap<String, i64>,
    /// Ended attempts by outcome.
    pub by_outcome: BTreeMap<String, i64>,
    /// Answers by `satisfaction` digit (contacts).
    pub answers: BTreeMap<String, i64>,
    /// Contacts whose answer was 9.
    pub opted_out: i64,
    /// Answered contacts who pressed nothing.
    pub no_answer_given: i64,
    /// Numbers on the tenant's do-not-call list at the end (`GET /v1/suppressions`).
    pub suppressed_numbers: i64,
    /// Recordings made.
    pub recordings: i64,
    /// Where they are on disk.
    pub recordings_dir: String,
    /// The data directory (database, prompts, recordings), kept.
    pub data_dir: String,
    /// Seconds from start to the last contact's final state.
    pub elapsed_s: f64,
    /// INVITEs the answerer received (every attempt of every contact).
    pub answerer_invites: u64,
    /// Calls live at once at the answerer, at most (measured there, not by callplane).
    pub answerer_peak_calls: u64,
    /// What went wrong, when `ok` is false.
    pub error: Option<String>,
}

/// Runs the demo and prints its progress and summary on stdout; with `json` the summary is
/// also printed as one JSON line at the end. The summary says whether it succeeded.
pub async fn run(config: DemoConfig, json_summary: bool) -> anyhow::Result<DemoSummary> {
    if !(1..=1000).contains(&config.contacts) {
        bail!("--contacts must be 1 to 1000");
    }
    let started = crate::clock::now();
    let deadline = started + config.deadline;
    let data_dir = match &config.data_dir {
        Some(d) => {
            crate::files::ensure_dir(d)
                .with_context(|| format!("data directory {}", d.display()))?;
            std::path::absolute(d)?
        }
        None => new_temp_dir("callplane-demo").context("making a temporary data directory")?,
    };
    println!(
        "callplane demo: a {}-contact survey campaign on loopback",
        config.contacts
    );
    println!("  data directory {}", data_dir.display());

    // The tenant and its key, made before serve starts (serve then finds a tenant and prints
    // no bootstrap key).
    let (tenant_id, key) = {
        let store = app::open_store(&data_dir, None).await?;
        let (tenant, key) = app::create_tenant(store.as_ref(), "demo").await?;
        (tenant.id, key)
    };
    let prompts_dir = data_dir.join("prompts").join(&tenant_id);
    let answerer_dir = data_dir.join("answerer");
    write_prompts(&prompts_dir, &answerer_dir)?;

    // The answerer: the trunk's far end.
    let mut answerer_config = EngineConfig::new("127.0.0.1:0".parse()?);
    answerer_config.max_calls = 1000;
    answerer_config.inbound = InboundConfig {
        script: Some(answerer_script()?),
        prompts: Some(answerer_dir.clone()),
        by_user: Arc::new(answerer_routes(config.contacts)?),
        ..InboundConfig::default()
    };
    let answerer = Engine::start(answerer_config)
        .await
        .context("starting the answerer")?;
    let answerer_addr = answerer.handle.sip_local_addr();
    let peer = PeerCounter::spawn(answerer.handle.subscribe());

    // The softswitch, as `serve` runs it.
    let stop = Arc::new(tokio::sync::Notify::new());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let serve_config = ServeConfig {
        data_dir: data_dir.clone(),
        database_url: None,
        api: "127.0.0.1:0".parse()?,
        engine: EngineConfig::new("127.0.0.1:0".parse()?),
        outbox: OutboxConfig::default(),
        max_body_bytes: 1 << 20,
        dashboard_dir: None,
        rate_limit_per_s: 0,
        rate_limit_burst: 0,
        event_queue: 65_536,
        campaign_max_calls: 1000,
        campaign_lease: Duration::from_secs(30),
        dns_server: None,
        unknown_sources: Default::default(),
    };
    let control = ServeControl {
        stop: Some(stop.clone()),
        ready: Some(ready_tx),
        quiet: true,
    };
    let server = tokio::spawn(app::serve_with(
        serve_config,
        Duration::from_secs(2),
        control,
    ));
    let listening = match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
        Ok(Ok(l)) => l,
        _ => {
            let why = match tokio::time::timeout(Duration::from_secs(5), server).await {
                Ok(Ok(Err(e))) => format!("{e:#}"),
                _ => "it did not start listening within 30 s".to_owned(),
            };
            answerer.handle.shutdown().await.ok();
            bail!("serve did not start: {why}");
        }
    };
    println!(
        "  API http://{} (key {key}), SIP {}, answerer {answerer_addr}",
        listening.api, listening.sip
    );

    let client = ApiClient::new(listening.api, &key, Duration::from_secs(10))?;
    let result = drive(&client, &config, answerer_addr, deadline, started).await;

    // Stop everything, whatever happened.
    stop.notify_one();
    match tokio::time::timeout(Duration::from_secs(20), server).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "serve ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "serve panicked"),
        Err(_) => tracing::warn!("serve did not stop within 20 s"),
    }
    if let Err(e) = answerer.handle.shutdown().await {
        tracing::debug!(error = %e, "answerer shutdown");
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), answerer.join()).await;
    let (invites, peak) = peer.totals();

    let mut summary = match result {
        Ok(s) => s,
        Err(e) => DemoSummary {
            ok: false,
            campaign_status: "unknown".into(),
            contacts: config.contacts as i64,
            by_status: BTreeMap::new(),
            by_outcome: BTreeMap::new(),
            answers: BTreeMap::new(),
            opted_out: 0,
            no_answer_given: 0,
            suppressed_numbers: 0,
            recordings: 0,
            recordings_dir: String::new(),
            data_dir: String::new(),
            elapsed_s: crate::clock::now().duration_since(started).as_secs_f64(),
            answerer_invites: 0,
            answerer_peak_calls: 0,
            error: Some(format!("{e:#}")),
        },
    };
    summary.data_dir = data_dir.display().to_string();
    summary.recordings_dir = app::recordings_dir(&data_dir).display().to_string();
    summary.answerer_invites = invites;
    summary.answerer_peak_calls = peak;
    print_summary(&summary);
    if json_summary {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(summary)
}

/// Checks an API reply: 2xx, or an error naming the step.
fn ok(step: &str, reply: ApiReply) -> anyhow::Result<Value> {
    if reply.is_success() {
        Ok(reply.body)
    } else {
        bail!("{step}: HTTP {} {}", reply.status, reply.body)
    }
}

/// Creates the trunk, script, campaign and contacts, starts the campaign, shows its progress
/// until it is done (or the deadline), and reads the results.
async fn drive(
    client: &ApiClient,
    config: &DemoConfig,
    answerer: std::net::SocketAddr,
    deadline: std::time::Instant,
    started: std::time::Instant,
) -> anyhow::Result<DemoSummary> {
    let trunk = ok(
        "creating the trunk",
        client
            .post(
                "/v1/trunks",
                &json!({"name": "answerer", "address": answerer.to_string(), "transport": "udp"}),
            )
            .await?,
    )?;
    let script = ok(
        "creating the script",
        client
            .post(
                "/v1/scripts",
                &json!({"name": "satisfaction-survey", "body": survey_script()}),
            )
            .await?,
    )?;
    let all_day: BTreeMap<&str, Vec<&str>> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .into_iter()
        .map(|d| (d, vec!["00:00-24:00"]))
        .collect();
    let campaign = ok(
        "creating the campaign",
        client
            .post(
                "/v1/campaigns",
                &json!({
                    "name": "demo satisfaction survey",
                    "script_id": script["id"],
                    "trunk_ids": [trunk["id"]],
                    "max_concurrent": config.max_concurrent,
                    "max_cps": config.max_cps,
                    "ring_timeout_s": 3,
                    // Where the script's `record` step writes: one WAV per answered call.
                    "record": true,
                    // The demo runs whatever the hour where the callees are.
                    "windows": all_day,
                    "retry": {
                        "rules": {
                            "busy": {"max_retries": 1, "after_s": 1},
                            "no_answer": {"max_retries": 1, "after_s": 2},
                            "network_error": {"max_retries": 1, "after_s": 1, "next_trunk": true}
                        },
                        "backoff": 1.0,
                        "jitter": 0.0
                    }
                }),
            )
            .await?,
    )?;
    let id = campaign["id"]
        .as_str()
        .context("the campaign has no id")?
        .to_owned();
    let contacts: Vec<Value> = (0..config.contacts)
        .map(|i| json!({"phone": phone(i), "name": format!("Callee {:02}", i + 1)}))
        .collect();
    let report = ok(
        "uploading the contacts",
        client
            .post(
                &format!("/v1/campaigns/{id}/contacts"),
                &Value::Array(contacts),
            )
            .await?,
    )?;
    let accepted = report["accepted"].as_i64().unwrap_or(0);
    if accepted != config.contacts as i64 {
        bail!(
            "uploading the contacts: {accepted} of {} accepted: {report}",
            config.contacts
        );
    }
    ok(
        "starting the campaign",
        client
            .post(&format!("/v1/campaigns/{id}/start"), &json!({}))
            .await?,
    )?;
    println!("  campaign {id}: {accepted} contacts, started\n");

    // Progress until every contact is final.
    let mut progress = ProgressLine::new(config.tty);
    let (last, finished) = loop {
        let view = ok(
            "reading the campaign",
            client.get(&format!("/v1/campaigns/{id}")).await?,
        )?;
        let elapsed = crate::clock::now().duration_since(started);
        progress.show(&view, elapsed);
        let status = view["status"].as_str().unwrap_or_default();
        if status == "completed" || status == "cancelled" {
            break (view, true);
        }
        if crate::clock::now() >= deadline {
            break (view, false);
        }
        // A display refresh, not a wait for an event: the campaign's state is read again.
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    progress.finish();
    let elapsed_s = crate::clock::now().duration_since(started).as_secs_f64();
    if !finished {
        let _ = client
            .post(
                &format!("/v1/campaigns/{id}/cancel"),
                &json!({"hangup": true}),
            )
            .await;
    }

    // The results: one row per contact.
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(c) => format!("/v1/campaigns/{id}/results?limit=500&cursor={c}"),
            None => format!("/v1/campaigns/{id}/results?limit=500"),
        };
        let page = ok("reading the results", client.get(&path).await?)?;
        rows.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }

    let suppressions = ok(
        "reading the do-not-call list",
        client.get("/v1/suppressions?limit=1000").await?,
    )?;
    let suppressed_numbers = suppressions["items"].as_array().map_or(0, Vec::len) as i64;
    let progress = &last["progress"];
    let counts = |v: &Value| -> BTreeMap<String, i64> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_i64()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let by_status = counts(&progress["contacts"]);
    let mut answers: BTreeMap<String, i64> = BTreeMap::new();
    let mut recordings = 0;
    let mut no_answer_given = 0;
    for row in &rows {
        match row["answers"]["satisfaction"].as_str() {
            Some(a) if !a.is_empty() => *answers.entry(a.to_owned()).or_default() += 1,
            _ if row["outcome"] == "answered" => no_answer_given += 1,
            _ => {}
        }
        recordings += row["recording_ids"].as_array().map_or(0, Vec::len) as i64;
    }
    let final_contacts: i64 = by_status
        .iter()
        .filter(|(s, _)| s.as_str() != "queued" && s.as_str() != "dialing")
        .map(|(_, n)| n)
        .sum();
    let total = progress["total_contacts"].as_i64().unwrap_or(0);
    let all_final = finished && total == config.contacts as i64 && final_contacts == total;
    Ok(DemoSummary {
        ok: all_final,
        campaign_status: last["status"].as_str().unwrap_or("unknown").to_owned(),
        contacts: total,
        by_status,
        by_outcome: counts(&progress["outcomes"]),
        opted_out: answers.get("9").copied().unwrap_or(0),
        no_answer_given,
        suppressed_numbers,
        answers,
        recordings,
        recordings_dir: String::new(),
        data_dir: String::new(),
        elapsed_s,
        answerer_invites: 0,
        answerer_peak_calls: 0,
        error: (!all_final).then(|| {
            if finished {
                format!("{final_contacts} of {total} contacts in a final state")
            } else {
                format!("not done after {} s: cancelled", config.deadline.as_secs())
            }
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// The answerer's own count of what reached it.

/// Counts the INVITEs the answerer received and its calls live at once (the peer's view).
#[derive(Debug)]
struct PeerCounter {
    totals: Arc<std::sync::Mutex<(u64, u64)>>,
    task: tokio::task::JoinHandle<()>,
}

impl PeerCounter {
    fn spawn(
        mut events: tokio::sync::broadcast::Receiver<crate::engine::CallEvent>,
    ) -> PeerCounter {
        let totals: Arc<std::sync::Mutex<(u64, u64)>> = Arc::default();
        let shared = totals.clone();
        let task = tokio::spawn(async move {
            let mut live = std::collections::HashSet::new();
            loop {
                match events.recv().await {
                    Ok(ev) => {
                        if ev.kind == "call.created" {
                            live.insert(ev.call_id);
                        } else if ev.is_final() {
                            live.remove(&ev.call_id);
                        } else {
                            continue;
                        }
                        let mut t = shared
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if ev.kind == "call.created" {
                            t.0 += 1;
                        }
                        t.1 = t.1.max(live.len() as u64);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "the demo's answerer counter lagged");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        PeerCounter { totals, task }
    }

    /// (INVITEs received, peak live calls).
    fn totals(&self) -> (u64, u64) {
        self.task.abort();
        *self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

// ---------------------------------------------------------------------------------------------
// Printing.

/// The live progress: one line redrawn in place on a terminal, otherwise a line whenever the
/// count of finished contacts or live calls changes.
#[derive(Debug)]
struct ProgressLine {
    tty: bool,
    last: String,
    width: usize,
}

impl ProgressLine {
    fn new(tty: bool) -> ProgressLine {
        ProgressLine {
            tty,
            last: String::new(),
            width: 0,
        }
    }

    fn show(&mut self, view: &Value, elapsed: Duration) {
        let p = &view["progress"];
        let n = |v: &Value| v.as_i64().unwrap_or(0);
        let total = n(&p["total_contacts"]);
        let queued = n(&p["contacts"]["queued"]);
        let live = n(&p["live_calls"]);
        let done = total - queued - live;
        let mut outcomes = String::new();
        if let Some(map) = p["outcomes"].as_object() {
            for (k, v) in map {
                let _ = write!(outcomes, " {k} {}", v.as_i64().unwrap_or(0));
            }
        }
        let cps = p["calls_per_s"].as_f64().unwrap_or(0.0);
        let key = format!("{done}/{total}|{live}|{outcomes}");
        let line = format!(
            "{} {done:>3}/{total} done, {live:>2} live |{} | {cps:.1} calls/s | {:>3} s",
            bar(done, total, 24),
            if outcomes.is_empty() {
                " -".to_owned()
            } else {
                outcomes
            },
            elapsed.as_secs()
        );
        let mut out = std::io::stdout().lock();
        if self.tty {
            let pad = self.width.saturating_sub(line.chars().count());
            let _ = write!(out, "\r{line}{}", " ".repeat(pad));
            self.width = line.chars().count();
            let _ = out.flush();
        } else if key != self.last {
            let _ = writeln!(out, "{line}");
        }
        self.last = key;
    }

    fn finish(&mut self) {
        if self.tty {
            println!();
        }
    }
}

/// `[#####-----]` for `done` of `total`, `width` cells.
fn bar(done: i64, total: i64, width: usize) -> String {
    let filled = if total > 0 {
        ((done.max(0) as f64 / total as f64) * width as f64).round() as usize
    } else {
        0
    }
    .min(width);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

fn print_summary(s: &DemoSummary) {
    let mut text = String::new();
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "Summary: campaign {} in {:.1} s, {} contacts",
        s.campaign_status, s.elapsed_s, s.contacts
    );
    let list = |m: &BTreeMap<String, i64>| {
        m.iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(text, "  contacts by status:  {}", list(&s.by_status));
    let _ = writeln!(text, "  attempts by outcome: {}", list(&s.by_outcome));
    let _ = writeln!(
        text,
        "  the answerer received {} INVITEs, at most {} at once",
        s.answerer_invites, s.answerer_peak_calls
    );
    let answered: i64 = s
        .answers
        .iter()
        .filter(|(k, _)| k.as_str() != "9")
        .map(|(_, n)| n)
        .sum();
    let _ = writeln!(
        text,
        "Survey answers (satisfaction, 1-5): {answered} contacts"
    );
    for (digit, n) in s.answers.iter().filter(|(k, _)| k.as_str() != "9") {
        let _ = writeln!(text, "  {digit}: {:<3} {}", n, "*".repeat(*n as usize));
    }
    let _ = writeln!(text, "  answered, pressed nothing: {}", s.no_answer_given);
    let _ = writeln!(
        text,
        "  opted out (pressed 9): {}; the do-not-call list now has {} numbers",
        s.opted_out, s.suppressed_numbers
    );
    let _ = writeln!(
        text,
        "Recordings: {} WAV files in {}",
        s.recordings, s.recordings_dir
    );
    let _ = writeln!(
        text,
        "Everything (database, prompts, recordings) stays in {}",
        s.data_dir
    );
    match &s.error {
        None => {
            let _ = writeln!(text, "OK: every contact reached a final state.");
        }
        Some(e) => {
            let _ = writeln!(text, "FAILED: {e}");
        }
    }
    print!("{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_survey_parses_the_numbers_are_distinct_and_the_mix_has_every_callee() {
        // The script must be one the API accepts (opt_out included).
        crate::script::parse(&survey_script().to_string()).expect("the survey script is valid");
        let numbers: std::collections::BTreeSet<String> = (0..1000).map(phone).collect();
        assert_eq!(numbers.len(), 1000);
        assert!(numbers.iter().all(|n| n.len() == 12 && n.starts_with("+1")));
        let mix: Vec<Callee> = (0..10).map(callee).collect();
        for c in [
            Callee::OptsOut,
            Callee::Silent,
            Callee::Busy,
            Callee::NoAnswer,
        ] {
            assert!(mix.contains(&c), "{c:?}");
        }
        let routes = answerer_routes(50).expect("routes");
        assert_eq!(routes.len(), 50);
        assert_eq!(routes[&phone(7)], InboundAnswer::Reject(486));
        assert_eq!(routes[&phone(8)], InboundAnswer::Ring);
    }

    #[test]
    fn the_bar_fills_with_progress() {
        assert_eq!(bar(0, 50, 10), "[----------]");
        assert_eq!(bar(25, 50, 10), "[#####-----]");
        assert_eq!(bar(50, 50, 10), "[##########]");
        assert_eq!(bar(5, 0, 4), "[----]");
    }
}
