//! Campaign end-to-end harness: the callee (one long-running sipp UAS whose behaviour depends
//! on the dialed number, `tests/fixtures/sipp/campaign_uas.xml`), what that callee saw (read
//! from sipp's own records: its message trace and its statistics file), `callplane serve`
//! processes that can be killed and restarted, and the campaign API calls the tests make.
//!
//! The peer's records are the reference: how many calls were live at once is read from sipp's
//! `CurrentCall` counter (sampled every 200 ms) and from the exact interval of every call in
//! its message trace; who was dialed how often, from the INVITEs it received.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::{ServeClient, fixture, serve_started, spawn_sipp_on_free_port};

/// What the callee does with a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Behaviour {
    /// 200 OK, then waits for our BYE.
    Answer,
    /// 486 Busy Here.
    Busy,
    /// 180 Ringing until our CANCEL (our ring timeout).
    NoAnswer,
}

impl Behaviour {
    /// The number prefix the callee scenario branches on (`campaign_uas.xml`): French mobile numbers
    /// `+33 6 4k 00 nn nn`, a single-zone country so every contact is in one known zone.
    fn prefix(self) -> &'static str {
        match self {
            Behaviour::Answer => "+3364000",
            Behaviour::Busy => "+3364100",
            Behaviour::NoAnswer => "+3364200",
        }
    }

    /// The behaviour the callee gives `number`.
    pub(crate) fn of(number: &str) -> Behaviour {
        [Behaviour::Busy, Behaviour::NoAnswer]
            .into_iter()
            .find(|b| number.starts_with(b.prefix()))
            .unwrap_or(Behaviour::Answer)
    }

    /// The `n`-th number (0..10000) of this behaviour, E.164.
    pub(crate) fn number(self, n: u32) -> String {
        assert!(n < 10_000, "4 digits of numbers per behaviour");
        format!("{}{n:04}", self.prefix())
    }
}

/// `counts` numbers of each behaviour, interleaved (so every kind runs from the start).
pub(crate) fn numbers(counts: &[(Behaviour, u32)]) -> Vec<String> {
    let mut out = Vec::new();
    let most = counts.iter().map(|(_, n)| *n).max().unwrap_or(0);
    for i in 0..most {
        for (b, n) in counts {
            if i < *n {
                out.push(b.number(i));
            }
        }
    }
    out
}

/// The callee: a sipp UAS running `campaign_uas.xml` until stopped, tracing every message
/// (`-trace_shortmsg`) and its counters (`-trace_stat -fd 200ms`).
#[derive(Debug)]
pub(crate) struct Callee {
    child: Child,
    /// Its UDP port on 127.0.0.1.
    pub(crate) port: u16,
    short_log: PathBuf,
    stat_csv: PathBuf,
}

impl Callee {
    /// Starts the callee with its logs in `dir`.
    pub(crate) async fn start(dir: &Path) -> Callee {
        Callee::start_with(dir, &[]).await
    }

    /// [`Callee::start`] with more sipp arguments (`-rtp_echo`...).
    pub(crate) async fn start_with(dir: &Path, extra: &[String]) -> Callee {
        let extra = extra.to_vec();
        let short_log = dir.join("callee_messages.csv");
        let stat_csv = dir.join("callee_stats.csv");
        let scenario = fixture("campaign_uas.xml");
        let (short, stat) = (short_log.clone(), stat_csv.clone());
        let (child, port) = spawn_sipp_on_free_port(dir, move |port| {
            [
                "-sf",
                scenario.to_str().expect("UTF-8 path"),
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                // Not more than the tests need, but never unbounded.
                "-timeout",
                "600s",
                "-trace_shortmsg",
                "-shortmessage_file",
                short.to_str().expect("UTF-8 path"),
                "-trace_stat",
                "-stf",
                stat.to_str().expect("UTF-8 path"),
                "-fd",
                "200ms",
                "-nostdin",
            ]
            .map(String::from)
            .into_iter()
            .chain(extra.iter().cloned())
            .collect()
        })
        .await;
        Callee {
            child,
            port,
            short_log,
            stat_csv,
        }
    }

    /// `127.0.0.1:port`, the trunk's address.
    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the callee has recorded so far (sipp writes both files line by line).
    pub(crate) fn record(&self) -> PeerRecord {
        let messages = std::fs::read_to_string(&self.short_log).unwrap_or_default();
        let stats = std::fs::read_to_string(&self.stat_csv).unwrap_or_default();
        PeerRecord::parse(&messages, &stats)
    }

    /// Stops sipp and returns its final record.
    pub(crate) async fn stop(mut self) -> PeerRecord {
        let _ = self.child.start_kill();
        let _ = timeout(Duration::from_secs(10), self.child.wait()).await;
        self.record()
    }
}

/// One call as the callee saw it (one SIP Call-ID).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PeerCall {
    /// The SIP Call-ID (ours: we are the caller).
    pub(crate) sip_call_id: String,
    /// The Request-URI's user: the dialed number.
    pub(crate) number: String,
    /// When its first INVITE arrived (Unix seconds).
    pub(crate) invite_at: f64,
    /// How many INVITEs came with this Call-ID (retransmissions included).
    pub(crate) invites: usize,
    /// The callee's final response to the INVITE (200, 486, 487).
    pub(crate) final_status: Option<u16>,
    /// When the call's slot was given back by the callee's view: our BYE arrived (answered),
    /// or the callee sent its final non-2xx response.
    pub(crate) freed_at: Option<f64>,
    /// Whether the call reached its last message (200 to our BYE, or our ACK to a non-2xx).
    pub(crate) ended: bool,
    /// The time of its last message in the trace.
    pub(crate) last_at: f64,
}

/// What the callee recorded: every call, and its own `CurrentCall` samples.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerRecord {
    /// Calls by first INVITE.
    pub(crate) calls: Vec<PeerCall>,
    /// sipp's `CurrentCall` at each statistics row.
    pub(crate) current_call_samples: Vec<u32>,
}

impl PeerRecord {
    /// Parses sipp's `-trace_shortmsg` file (tab-separated: date, time, epoch, `R`/`S`,
    /// Call-ID, `CSeq:n METHOD`, first line) and its `-trace_stat` CSV (`;`-separated, with a
    /// header row naming `CurrentCall`).
    pub(crate) fn parse(messages: &str, stats: &str) -> PeerRecord {
        let mut by_id: BTreeMap<String, PeerCall> = BTreeMap::new();
        for line in messages.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 7 {
                continue;
            }
            let Ok(at) = f[2].trim().parse::<f64>() else {
                continue;
            };
            let (dir, call_id, cseq, first) = (f[3], f[4].trim(), f[5], f[6].trim());
            let cseq_method = cseq.rsplit(' ').next().unwrap_or("");
            if dir == "R" && first.starts_with("INVITE ") {
                let number = first
                    .strip_prefix("INVITE sip:")
                    .and_then(|rest| rest.split(['@', ';', ' ']).next())
                    .unwrap_or("")
                    .to_owned();
                let call = by_id.entry(call_id.to_owned()).or_insert_with(|| PeerCall {
                    sip_call_id: call_id.to_owned(),
                    number,
                    invite_at: at,
                    invites: 0,
                    final_status: None,
                    freed_at: None,
                    ended: false,
                    last_at: at,
                });
                call.invites += 1;
                call.last_at = call.last_at.max(at);
                continue;
            }
            let Some(call) = by_id.get_mut(call_id) else {
                continue;
            };
            call.last_at = call.last_at.max(at);
            if dir == "S" && cseq_method == "INVITE" {
                let status = first
                    .strip_prefix("SIP/2.0 ")
                    .and_then(|s| s.get(..3))
                    .and_then(|s| s.parse::<u16>().ok());
                if let Some(s) = status.filter(|s| *s >= 200)
                    && call.final_status.is_none()
                {
                    call.final_status = Some(s);
                    if s >= 300 {
                        call.freed_at = Some(at);
                    }
                }
            }
            if dir == "R" && first.starts_with("BYE ") && call.freed_at.is_none() {
                call.freed_at = Some(at);
            }
            let ends_answered =
                dir == "S" && cseq_method == "BYE" && first.starts_with("SIP/2.0 2");
            let ends_failed = dir == "R"
                && first.starts_with("ACK ")
                && call.final_status.is_some_and(|s| s >= 300);
            if ends_answered || ends_failed {
                call.ended = true;
            }
        }
        let mut calls: Vec<PeerCall> = by_id.into_values().collect();
        calls.sort_by(|a, b| a.invite_at.total_cmp(&b.invite_at));
        PeerRecord {
            calls,
            current_call_samples: current_call_samples(stats),
        }
    }

    /// The most calls the callee had open at once, from the exact intervals in its trace (a
    /// call is open from its first INVITE to its last message; one that never ended stays
    /// open to the end of the trace), and when.
    pub(crate) fn max_live(&self) -> (usize, f64) {
        let mut edges: Vec<(f64, i32)> = Vec::new();
        for c in &self.calls {
            edges.push((c.invite_at, 1));
            if c.ended {
                edges.push((c.last_at, -1));
            }
        }
        // At equal times an end counts before a start (a slot freed and reused in the same µs).
        edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let (mut live, mut most, mut at) = (0i32, 0i32, 0.0);
        for (t, d) in edges {
            live += d;
            if live > most {
                most = live;
                at = t;
            }
        }
        (most as usize, at)
    }

    /// The highest `CurrentCall` sipp itself reported.
    pub(crate) fn max_current_call(&self) -> u32 {
        self.current_call_samples.iter().copied().max().unwrap_or(0)
    }

    /// Calls by dialed number, in INVITE order.
    pub(crate) fn by_number(&self) -> BTreeMap<&str, Vec<&PeerCall>> {
        let mut out: BTreeMap<&str, Vec<&PeerCall>> = BTreeMap::new();
        for c in &self.calls {
            out.entry(c.number.as_str()).or_default().push(c);
        }
        out
    }

    /// Slot-to-INVITE latencies (seconds): each slot given back at the peer (our BYE
    /// arrives, or its final non-2xx goes out) is paired, first freed first, with the next
    /// INVITE that arrives after it. INVITEs while no slot is waiting (the ramp-up) are not
    /// samples, nor are the slots freed at the end. Meaningful for a campaign whose every
    /// freed slot is reused at once: all contacts due, answered, no retries.
    pub(crate) fn slot_latencies(&self) -> Vec<f64> {
        let mut edges: Vec<(f64, i32)> = Vec::new();
        for c in &self.calls {
            edges.push((c.invite_at, 1));
            if let Some(f) = c.freed_at {
                edges.push((f, -1));
            }
        }
        pair_freed_slots(edges)
    }
}

/// Pairs each freed slot (-1) with the next start (+1) after it, first freed first: the
/// waits, in the edges' unit.
fn pair_freed_slots<T>(mut edges: Vec<(T, i32)>) -> Vec<T>
where
    T: Copy + PartialOrd + std::ops::Sub<Output = T>,
{
    // At equal times a slot is freed before it is reused.
    edges.sort_by(|a, b| {
        a.0.partial_cmp(&b.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
    });
    let mut freed: VecDeque<T> = VecDeque::new();
    let mut out = Vec::new();
    for (t, d) in edges {
        if d > 0 {
            if let Some(f) = freed.pop_front() {
                out.push(t - f);
            }
        } else {
            freed.push_back(t);
        }
    }
    out
}

/// The `CurrentCall` column of sipp's statistics CSV.
fn current_call_samples(stats: &str) -> Vec<u32> {
    let mut lines = stats.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let Some(col) = header.split(';').position(|h| h.trim() == "CurrentCall") else {
        return Vec::new();
    };
    lines
        .filter_map(|l| l.split(';').nth(col)?.trim().parse::<u32>().ok())
        .collect()
}

/// The `q`-quantile (0..=1) of `xs` (nearest rank; 0 when empty).
pub(crate) fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// A running `callplane serve` whose stdout is drained by a task: `serve.*` lines come on
/// `lines`, and every call's `call.created` and final event (with their times) are kept in
/// `calls` for the timeline's slot-to-call latency.
#[derive(Debug)]
pub(crate) struct Serve {
    /// The process (killed on drop).
    pub(crate) child: Child,
    /// The API's base URL.
    pub(crate) base: String,
    /// The bootstrap key, on an empty database.
    pub(crate) bootstrap_key: Option<String>,
    /// The SIP address it listens on.
    pub(crate) sip: String,
    /// Call lifecycle events seen on stdout.
    pub(crate) calls: Arc<Mutex<Vec<Value>>>,
}

impl Serve {
    /// Starts `callplane serve` on free ports with its data in `data_dir` (and the database at
    /// `database_url` when given), plus `extra` flags; stderr goes to `log`.
    pub(crate) async fn start(
        dir: &Path,
        data_dir: &Path,
        database_url: Option<&str>,
        extra: &[&str],
        log: &Path,
    ) -> Serve {
        let mut args: Vec<String> = [
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--rate-limit",
            "0",
            "--data-dir",
            data_dir.to_str().expect("UTF-8 path"),
        ]
        .map(String::from)
        .to_vec();
        if let Some(url) = database_url {
            args.extend(["--database-url".to_owned(), url.to_owned()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let log = std::fs::File::create(log).expect("serve log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_callplane"))
            .args(&args)
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, mut rx) = mpsc::channel(64);
        let calls = Arc::new(Mutex::new(Vec::new()));
        let kept = calls.clone();
        // Serve prints every call event: an unread pipe would block it, so this reads all.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("\"kind\":\"serve.") {
                    let _ = tx.try_send(line);
                } else if line.contains("\"kind\":\"call.") {
                    let Ok(v) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    let k = v["kind"].as_str().unwrap_or("");
                    if matches!(k, "call.created" | "call.completed" | "call.failed") {
                        kept.lock().expect("not poisoned").push(v);
                    }
                }
            }
        });
        let (base, bootstrap_key, seen) = timeout(Duration::from_secs(60), serve_started(&mut rx))
            .await
            .unwrap_or_else(|_| panic!("serve did not start within 60 s; see {args:?}"));
        let sip = seen
            .iter()
            .find(|v| v["kind"] == "serve.listening")
            .and_then(|v| v["sip"].as_str())
            .expect("serve.listening names the SIP address")
            .to_owned();
        Serve {
            child,
            base,
            bootstrap_key,
            sip,
            calls,
        }
    }

    /// kill -9.
    pub(crate) async fn kill9(&mut self) {
        self.child.start_kill().expect("kill -9 serve");
        timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("serve died within 30 s")
            .expect("wait for serve");
    }

    /// Timeline slot-to-call latencies (seconds): each final event frees a slot that the
    /// next `call.created` takes, first freed first (see [`PeerRecord::slot_latencies`]).
    pub(crate) fn slot_latencies(&self) -> Vec<f64> {
        let events = self.calls.lock().expect("not poisoned").clone();
        timeline_slot_latencies(&events)
    }
}

/// See [`Serve::slot_latencies`]; `events` may come from several processes.
pub(crate) fn timeline_slot_latencies(events: &[Value]) -> Vec<f64> {
    let edges: Vec<(i64, i32)> = events
        .iter()
        .filter_map(|e| {
            let at = e["at_unix_us"].as_i64()?;
            match e["kind"].as_str()? {
                "call.created" => Some((at, 1)),
                "call.completed" | "call.failed" => Some((at, -1)),
                _ => None,
            }
        })
        .collect();
    pair_freed_slots(edges)
        .into_iter()
        .map(|us| us as f64 / 1e6)
        .collect()
}

/// The settings of a test campaign: calling windows open all week (the test must not depend
/// on the hour it runs), fixed retry delays (no backoff, no jitter) as `retry` says.
pub(crate) fn campaign_settings(
    name: &str,
    trunk_id: &str,
    script_id: &str,
    max_concurrent: u32,
    ring_timeout_s: u32,
    retry: Value,
) -> Value {
    let all_day = json!(["00:00-24:00"]);
    json!({
        "name": name,
        "trunk_ids": [trunk_id],
        "script_id": script_id,
        "max_concurrent": max_concurrent,
        "max_cps": 100.0,
        "ring_timeout_s": ring_timeout_s,
        "windows": {
            "mon": all_day, "tue": all_day, "wed": all_day, "thu": all_day,
            "fri": all_day, "sat": all_day, "sun": all_day
        },
        "default_timezone": "Europe/Paris",
        "retry": {"rules": retry, "backoff": 1.0, "jitter": 0.0},
    })
}

/// POSTs `body` to `path` (201 expected) and returns the new resource's id.
pub(crate) async fn create(api: &ServeClient, path: &str, body: &Value) -> String {
    let (status, reply) = api.send(reqwest::Method::POST, path, Some(body)).await;
    assert_eq!(status, 201, "POST {path}: {reply}");
    reply["id"]
        .as_str()
        .unwrap_or_else(|| panic!("POST {path} answered an id: {reply}"))
        .to_owned()
}

/// A trunk to the callee, a script that holds an answered call `hold_ms` then hangs up, and
/// a campaign over `phones` (created and filled, not started): the campaign id.
pub(crate) async fn setup_campaign(
    api: &ServeClient,
    callee: &str,
    hold_ms: u32,
    settings: impl FnOnce(&str, &str) -> Value,
    phones: &[String],
) -> String {
    let trunk = create(
        api,
        "/v1/trunks",
        &json!({"name": "callee", "address": callee}),
    )
    .await;
    let script = create(
        api,
        "/v1/scripts",
        &json!({"name": "hold", "body": {"version": 1, "steps": [
            {"pause": {"ms": hold_ms}}, {"hangup": {"reason": "done"}}
        ]}}),
    )
    .await;
    let campaign = create(api, "/v1/campaigns", &settings(&trunk, &script)).await;
    let contacts: Vec<Value> = phones.iter().map(|p| json!({"phone": p})).collect();
    let (status, report) = api
        .send(
            reqwest::Method::POST,
            &format!("/v1/campaigns/{campaign}/contacts"),
            Some(&Value::Array(contacts)),
        )
        .await;
    assert!(
        status == 200 || status == 201,
        "POST contacts: {status} {report}"
    );
    let accepted = report["accepted"]
        .as_u64()
        .or_else(|| report["counts"]["accepted"].as_u64());
    if let Some(n) = accepted {
        assert_eq!(n as usize, phones.len(), "every contact accepted: {report}");
    }
    campaign
}

/// POST `/v1/campaigns/{id}/{action}`, expecting 200.
pub(crate) async fn campaign_action(api: &ServeClient, campaign: &str, action: &str) -> Value {
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            &format!("/v1/campaigns/{campaign}/{action}"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 200, "POST {action}: {body}");
    body
}

/// Polls the campaign until it is `completed` (bounded by `limit`).
pub(crate) async fn wait_completed(api: &ServeClient, campaign: &str, limit: Duration) -> Value {
    api.poll(&format!("/v1/campaigns/{campaign}"), limit, |c| {
        c["status"] == "completed"
    })
    .await
}

/// One contact as the results report it: the contact and its attempts.
#[derive(Debug, Clone)]
pub(crate) struct ContactResult {
    /// The contact row.
    pub(crate) contact: Value,
    /// Its attempts, oldest first.
    pub(crate) attempts: Vec<Value>,
}

impl ContactResult {
    /// Its phone.
    pub(crate) fn phone(&self) -> &str {
        self.contact["phone"].as_str().unwrap_or("")
    }

    /// Its status.
    pub(crate) fn status(&self) -> &str {
        self.contact["status"].as_str().unwrap_or("")
    }

    /// Its attempt count.
    pub(crate) fn attempt_count(&self) -> u64 {
        self.contact["attempts"].as_u64().unwrap_or(0)
    }
}

/// Every contact of the campaign with its attempts: `GET /v1/campaigns/{id}/contacts` (all
/// pages, at most 100), then `GET /v1/campaigns/{id}/contacts/{contact_id}` for each (its
/// `attempt_history`).
pub(crate) async fn results(api: &ServeClient, campaign: &str) -> Vec<ContactResult> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for page_no in 0.. {
        assert!(page_no < 100, "more than 100 pages of contacts");
        let path = match &cursor {
            Some(c) => format!("/v1/campaigns/{campaign}/contacts?limit=500&cursor={c}"),
            None => format!("/v1/campaigns/{campaign}/contacts?limit=500"),
        };
        let page = api.get(&path).await;
        let items = page["items"]
            .as_array()
            .unwrap_or_else(|| panic!("contacts have items: {page}"));
        ids.extend(
            items
                .iter()
                .filter_map(|c| c["id"].as_str().map(str::to_owned)),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let contact = api
            .get(&format!("/v1/campaigns/{campaign}/contacts/{id}"))
            .await;
        let attempts = contact["attempt_history"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        out.push(ContactResult { contact, attempts });
    }
    out
}

/// The SIP Call-ID of each of our call ids (`GET /v1/calls/{id}`).
pub(crate) async fn sip_call_ids(
    api: &ServeClient,
    call_ids: impl IntoIterator<Item = String>,
) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    for id in call_ids {
        let call = api.get(&format!("/v1/calls/{id}")).await;
        out.insert(id, call["sip_call_id"].as_str().map(str::to_owned));
    }
    out
}

/// The duplicate check from the callee's side: for every number, the INVITEs (distinct
/// Call-IDs) the callee received, against the attempts the API reports for that contact. A
/// number dialed more often than it has attempts was dialed twice for one attempt; a Call-ID
/// the callee saw that belongs to no attempt of that contact was a dial nobody recorded.
/// Returns the problems found (empty: none).
pub(crate) async fn duplicate_dials(
    api: &ServeClient,
    peer: &PeerRecord,
    contacts: &[ContactResult],
) -> Vec<String> {
    let mut problems = Vec::new();
    let by_number = peer.by_number();
    let call_ids: Vec<String> = contacts
        .iter()
        .flat_map(|c| c.attempts.iter())
        .filter_map(|a| a["call_id"].as_str().map(str::to_owned))
        .collect();
    let sip_ids = sip_call_ids(api, call_ids).await;
    let phones: BTreeSet<&str> = contacts.iter().map(ContactResult::phone).collect();
    for number in by_number.keys() {
        if !phones.contains(number) {
            problems.push(format!(
                "the callee was dialed at {number}, no contact has it"
            ));
        }
    }
    for c in contacts {
        let dialed = by_number.get(c.phone()).cloned().unwrap_or_default();
        let attempts = c.attempt_count() as usize;
        if dialed.len() > attempts {
            problems.push(format!(
                "{} ({}): {} INVITEs at the callee for {} attempts: {:?}",
                c.phone(),
                c.contact["id"],
                dialed.len(),
                attempts,
                dialed.iter().map(|d| &d.sip_call_id).collect::<Vec<_>>()
            ));
        }
        // Each attempt accounts for at most one INVITE: by its call's SIP Call-ID where the
        // timeline has it (a kill can cut the timeline short after the INVITE went out).
        let mut ours: BTreeSet<&str> = BTreeSet::new();
        let mut unknown = 0usize;
        for a in &c.attempts {
            match a["call_id"]
                .as_str()
                .and_then(|id| sip_ids.get(id)?.as_deref())
            {
                Some(sip) => {
                    ours.insert(sip);
                }
                None => unknown += 1,
            }
        }
        let strangers: Vec<&str> = dialed
            .iter()
            .map(|d| d.sip_call_id.as_str())
            .filter(|id| !ours.contains(id))
            .collect();
        if strangers.len() > unknown {
            problems.push(format!(
                "{}: the callee got Call-IDs {strangers:?}, more than the {unknown} attempts of \
                 this contact whose call has no known Call-ID",
                c.phone()
            ));
        }
    }
    problems
}

/// What a contact must end as, given what the callee does with its number and the retry
/// rules of [`standard_retry`]: (status, attempts, last outcome).
pub(crate) fn expected_end(b: Behaviour) -> (&'static str, u64, &'static str) {
    match b {
        Behaviour::Answer => ("completed", 1, "answered"),
        Behaviour::Busy => ("exhausted", 1 + BUSY_RETRIES as u64, "busy"),
        Behaviour::NoAnswer => ("exhausted", 1 + NO_ANSWER_RETRIES as u64, "no_answer"),
    }
}

/// Retries of a busy number in the tests.
pub(crate) const BUSY_RETRIES: u32 = 2;
/// Retries of an unanswered number in the tests.
pub(crate) const NO_ANSWER_RETRIES: u32 = 1;
/// The (shortened) retry delay of the tests, seconds.
pub(crate) const RETRY_AFTER_S: u64 = 1;

/// The tests' retry rules: the default policy's shape with short delays.
pub(crate) fn standard_retry() -> Value {
    json!({
        "busy": {"max_retries": BUSY_RETRIES, "after_s": RETRY_AFTER_S},
        "no_answer": {"max_retries": NO_ANSWER_RETRIES, "after_s": RETRY_AFTER_S},
        "rejected": {"max_retries": 0},
        "invalid_number": {"max_retries": 0},
        "network_error": {"max_retries": 3, "after_s": RETRY_AFTER_S, "next_trunk": true},
    })
}
