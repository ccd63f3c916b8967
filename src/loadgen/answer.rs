//! `callplane loadgen --answer`: the callee side, for testing a dialer end to end. Every
//! INVITE gets a behaviour, by the dialed number (`--route PATTERN=BEHAVIOUR`, the first that
//! matches) or else at random from a weighted mix (`--mix human=60,busy=10,...`, seeded):
//!
//! | behaviour | what the caller meets |
//! |---|---|
//! | `human` | 180, answer; 300 ms later a short "hello"; then the keys of `--human-digits` (RFC 4733 or in-band); then it waits for the caller's BYE |
//! | `voicemail` | 180, answer; a long greeting, then a 1 kHz beep; then it waits (records with `--recordings`) |
//! | `silence` | 180, answer; `--silence-ms` of nothing (carrier silence), then "hello"; then it waits |
//! | `sit` | 180, answer; the SIT tone (913.8, 1370.6, 1776.7 Hz), then BYE |
//! | `echo` | 180, answer; sends the caller's own audio back (one ptime after the jitter buffer) until the caller's BYE |
//! | `early_media` | 180, then 183 with SDP and "hello" played before the answer (a carrier's announcement); then answer; then it waits |
//! | `no_answer` | 180 and nothing more, until the caller cancels |
//! | `busy` | 486 Busy Here |
//! | `reject` | 603 Decline |
//! | `forbidden` | 403 Forbidden |
//! | `not_found` | 404 Not Found |
//!
//! The answering behaviours are call scripts (docs/scripts.md) run by the engine, as `serve`
//! runs them; the refusals are the engine's inbound route. The prompts are generated at the
//! start (a seeded multi-tone "voice", the beep, the SIT tone) unless `--prompts DIR` has
//! `hello.wav`, `greeting.wav`, `beep.wav`, `sit.wav`. The report counts each behaviour's
//! calls from its own timeline events.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sip::message::Request;
use sip::transaction::Transport;
use tokio::sync::Notify;

use crate::engine::{
    Committed, Engine, EngineConfig, EventQueue, EventSink, InboundConfig, InboundRoute,
    InboundRouter,
};

/// How long an answering behaviour waits for the caller's BYE (the longest `pause`).
const WAIT_MS: u64 = 600_000;

/// What a callee does with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    Human,
    Voicemail,
    Silence,
    Sit,
    Echo,
    EarlyMedia,
    NoAnswer,
    Busy,
    Reject,
    Forbidden,
    NotFound,
}

impl Behaviour {
    /// Every behaviour, in the order reports list them.
    pub const ALL: [Behaviour; 11] = [
        Behaviour::Human,
        Behaviour::Voicemail,
        Behaviour::Silence,
        Behaviour::Sit,
        Behaviour::Echo,
        Behaviour::EarlyMedia,
        Behaviour::NoAnswer,
        Behaviour::Busy,
        Behaviour::Reject,
        Behaviour::Forbidden,
        Behaviour::NotFound,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Human => "human",
            Behaviour::Voicemail => "voicemail",
            Behaviour::Silence => "silence",
            Behaviour::Sit => "sit",
            Behaviour::Echo => "echo",
            Behaviour::EarlyMedia => "early_media",
            Behaviour::NoAnswer => "no_answer",
            Behaviour::Busy => "busy",
            Behaviour::Reject => "reject",
            Behaviour::Forbidden => "forbidden",
            Behaviour::NotFound => "not_found",
        }
    }

    /// The behaviour named `s`.
    pub fn parse(s: &str) -> Result<Behaviour, String> {
        Behaviour::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Behaviour::ALL.iter().map(|b| b.name()).collect();
                format!("unknown behaviour {s:?} (expected {})", names.join(", "))
            })
    }

    /// The final status of a refusal.
    fn refusal(self) -> Option<u16> {
        match self {
            Behaviour::Busy => Some(486),
            Behaviour::Reject => Some(603),
            Behaviour::Forbidden => Some(403),
            Behaviour::NotFound => Some(404),
            _ => None,
        }
    }
}

/// A number pattern: `*` any run of characters, `?` any one, anything else itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// A pattern from its text.
    pub fn new(s: &str) -> Pattern {
        Pattern(s.to_owned())
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        fn go(p: &[char], t: &[char]) -> bool {
            match p.split_first() {
                None => t.is_empty(),
                Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
                Some(('?', rest)) => !t.is_empty() && go(rest, &t[1..]),
                Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
            }
        }
        let p: Vec<char> = self.0.chars().collect();
        let t: Vec<char> = text.chars().collect();
        // Bounded: numbers and patterns are short (a Request-URI user of 256 characters at
        // most is considered; longer never matches).
        t.len() <= 256 && p.len() <= 256 && go(&p, &t)
    }
}

/// The callee's settings.
#[derive(Debug, Clone)]
pub struct AnswerConfig {
    /// Where SIP listens (UDP; and TCP on the same address when `tcp`).
    pub listen: SocketAddr,
    /// Listen on TCP too.
    pub tcp: bool,
    /// Number patterns, tried in order.
    pub routes: Vec<(Pattern, Behaviour)>,
    /// Weights of the behaviours for numbers no route matches (empty: `human`).
    pub mix: Vec<(Behaviour, u32)>,
    /// The seed of the mix's draws.
    pub seed: u64,
    /// Keys a `human` presses after its hello.
    pub human_digits: String,
    /// The carrier silence of `silence` before its hello.
    pub silence: Duration,
    /// A directory with `hello.wav`, `greeting.wav`, `beep.wav`, `sit.wav` (`None`: generated).
    pub prompts: Option<PathBuf>,
    /// Record answered calls into this directory.
    pub recordings: Option<PathBuf>,
    /// End after this many calls ended (`None`: no count).
    pub calls: Option<u64>,
    /// End after this long (`None`: until Ctrl-C or `calls`).
    pub duration: Option<Duration>,
    /// The most calls at once.
    pub max_calls: usize,
    /// Media worker threads.
    pub media_workers: usize,
    /// The media workers' real-time priority (`None`: normal).
    pub media_priority: Option<u8>,
    /// RTP ports.
    pub rtp_ports: std::ops::RangeInclusive<u16>,
}

/// One behaviour's figures.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BehaviourFigures {
    /// INVITEs given this behaviour.
    pub calls: u64,
    /// Answered.
    pub answered: u64,
    /// Final events by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Answered time, summed, ms.
    pub talk_ms: u64,
    /// DTMF the callers sent, summed over the calls.
    pub dtmf_received: u64,
    /// The mean MOS of what the callee received (answered calls).
    pub mos_in: Option<f64>,
}

/// What the callee saw.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AnswerReport {
    /// Where it listened.
    pub sip: String,
    /// INVITEs routed in all.
    pub calls: u64,
    /// Calls whose final event came.
    pub ended: u64,
    /// Per behaviour.
    pub behaviours: BTreeMap<&'static str, BehaviourFigures>,
}

impl AnswerReport {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut m = String::new();
        let _ = writeln!(
            m,
            "# callplane loadgen --answer on {}\n\n{} calls, {} ended.\n",
            self.sip, self.calls, self.ended
        );
        let _ = writeln!(
            m,
            "| behaviour | calls | answered | outcomes | talk s | DTMF in | MOS in |\n|---|---|---|---|---|---|---|"
        );
        for (name, f) in &self.behaviours {
            let outcomes: Vec<String> =
                f.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(
                m,
                "| {name} | {} | {} | {} | {:.1} | {} | {} |",
                f.calls,
                f.answered,
                outcomes.join(", "),
                f.talk_ms as f64 / 1000.0,
                f.dtmf_received,
                f.mos_in
                    .map_or_else(|| "n/a".to_owned(), |m| format!("{m:.2}"))
            );
        }
        m
    }
}

/// Picks each call's behaviour and remembers it by Call-ID.
#[derive(Debug)]
struct Router {
    routes: Vec<(Pattern, Behaviour)>,
    mix: Vec<(Behaviour, u32)>,
    total: u64,
    state: Mutex<RouterState>,
    configs: HashMap<Behaviour, InboundConfig>,
}

#[derive(Debug)]
struct RouterState {
    rng: u64,
    /// Call-ID → behaviour, until the call's `call.created` claims it (bounded by the calls
    /// that can be up at once: refusals make no call and are counted here at once).
    chosen: HashMap<String, Behaviour>,
    /// Refused INVITEs by behaviour (they make no call events).
    refused: BTreeMap<Behaviour, u64>,
    routed: u64,
}

impl Router {
    fn draw(&self, state: &mut RouterState) -> Behaviour {
        if self.total == 0 {
            return Behaviour::Human;
        }
        // SplitMix64.
        state.rng = state.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let mut pick = (z ^ (z >> 31)) % self.total;
        for (b, w) in &self.mix {
            if pick < u64::from(*w) {
                return *b;
            }
            pick -= u64::from(*w);
        }
        Behaviour::Human
    }
}

impl InboundRouter for Router {
    fn route(&self, _: SocketAddr, _: Transport, request: &Request) -> InboundRoute {
        let user = request
            .uri
            .as_sip()
            .and_then(|u| u.user_unescaped())
            .unwrap_or_default();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let behaviour = self
            .routes
            .iter()
            .find(|(p, _)| p.matches(&user))
            .map(|(_, b)| *b)
            .unwrap_or_else(|| self.draw(&mut state));
        state.routed += 1;
        if let Some(status) = behaviour.refusal() {
            *state.refused.entry(behaviour).or_insert(0) += 1;
            return InboundRoute::Refuse(status);
        }
        if let Ok(call_id) = request.headers.call_id() {
            // Bounded: a Call-ID that never becomes a call (a retransmission, a call refused
            // later) is forgotten when too many wait.
            if state.chosen.len() >= 100_000 {
                state.chosen.clear();
            }
            state.chosen.insert(call_id.to_string(), behaviour);
        }
        match self.configs.get(&behaviour) {
            Some(config) => InboundRoute::Answer {
                config: config.clone(),
                trunk_id: None,
            },
            None => InboundRoute::Refuse(500),
        }
    }
}

/// The script of an answering behaviour.
fn script_for(b: Behaviour, cfg: &AnswerConfig, prompts: &Path) -> Option<serde_json::Value> {
    let file = |name: &str| prompts.join(format!("{name}.wav")).display().to_string();
    let record = cfg.recordings.is_some();
    let mut steps = match b {
        Behaviour::Human => {
            let mut s = vec![
                serde_json::json!({"answer": {}}),
                serde_json::json!({"pause": {"ms": 300}}),
                serde_json::json!({"play": {"file": file("hello"), "barge_in": false}}),
            ];
            if !cfg.human_digits.is_empty() {
                s.push(serde_json::json!({"send_dtmf": {"digits": cfg.human_digits}}));
            }
            s
        }
        Behaviour::Voicemail => vec![
            serde_json::json!({"answer": {}}),
            serde_json::json!({"play": {"file": file("greeting"), "barge_in": false}}),
            serde_json::json!({"play": {"file": file("beep"), "barge_in": false}}),
        ],
        Behaviour::Silence => vec![
            serde_json::json!({"answer": {}}),
            serde_json::json!({"pause": {"ms": cfg.silence.as_millis().clamp(1, 600_000) as u64}}),
            serde_json::json!({"play": {"file": file("hello"), "barge_in": false}}),
        ],
        Behaviour::EarlyMedia => vec![
            serde_json::json!({"early_media": {}}),
            serde_json::json!({"play": {"file": file("hello"), "barge_in": false}}),
            serde_json::json!({"answer": {}}),
        ],
        Behaviour::Echo => vec![
            serde_json::json!({"answer": {}}),
            serde_json::json!({"echo": {"ms": WAIT_MS}}),
        ],
        Behaviour::Sit => {
            return Some(serde_json::json!({"version": 1, "steps": [
                {"answer": {}},
                {"play": {"file": file("sit"), "barge_in": false}},
                {"hangup": {"reason": "sit"}}
            ]}));
        }
        // Rings: a script that never answers (the caller cancels).
        Behaviour::NoAnswer => {
            return Some(serde_json::json!({"version": 1, "steps": [{"pause": {"ms": WAIT_MS}}]}));
        }
        Behaviour::Busy | Behaviour::Reject | Behaviour::Forbidden | Behaviour::NotFound => {
            return None;
        }
    };
    if record {
        steps.insert(1, serde_json::json!({"record": {"action": "start"}}));
    }
    steps.push(serde_json::json!({"pause": {"ms": WAIT_MS}}));
    Some(serde_json::json!({"version": 1, "steps": steps}))
}

/// Writes the generated prompts into `dir` (8 kHz mono): "hello" (1.2 s) and "greeting" (8 s)
/// as seeded multi-tone voices, a 1 kHz beep (0.5 s), the SIT tone (ITU-T Q.35 / Telcordia:
/// 913.8 Hz 274 ms, 1370.6 Hz 274 ms, 1776.7 Hz 380 ms).
pub fn write_prompts(dir: &Path) -> std::io::Result<()> {
    use crate::files::generated::write_wav_mono;
    write_wav_mono(&dir.join("hello.wav"), 8000, &voice(0x4e11_0001, 1200))?;
    write_wav_mono(&dir.join("greeting.wav"), 8000, &voice(0x4e11_0002, 8000))?;
    write_wav_mono(&dir.join("beep.wav"), 8000, &tone(&[(1000.0, 500)]))?;
    write_wav_mono(
        &dir.join("sit.wav"),
        8000,
        &tone(&[(913.8, 274), (1370.6, 274), (1776.7, 380)]),
    )
}

/// Tones in sequence: (Hz, ms), at -10 dBFS.
fn tone(parts: &[(f64, u32)]) -> Vec<i16> {
    let mut out = Vec::new();
    for &(f, ms) in parts {
        for i in 0..ms * 8 {
            let t = f64::from(i) / 8000.0;
            out.push(((std::f64::consts::TAU * f * t).sin() * 10_362.0) as i16);
        }
    }
    out
}

/// A voice-like signal: three tones whose frequencies (200–2000 Hz) change every 100 ms,
/// from a seed (two seeds correlate near 0).
pub fn voice(seed: u64, ms: u32) -> Vec<i16> {
    let mut s = seed.max(1);
    let mut freqs = [0f64; 3];
    (0..ms * 8)
        .map(|i| {
            if i % 800 == 0 {
                for f in &mut freqs {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    *f = 200.0 + (s % 1800) as f64;
                }
            }
            let t = f64::from(i) / 8000.0;
            let v: f64 = freqs
                .iter()
                .map(|f| (std::f64::consts::TAU * f * t).sin())
                .sum();
            (v * 5000.0) as i16
        })
        .collect()
}

/// One call's record on the callee.
#[derive(Debug, Default)]
struct CalleeCall {
    behaviour: Option<Behaviour>,
    dtmf: u64,
    mos: Option<f64>,
}

#[derive(Debug, Default)]
struct Seen {
    calls: HashMap<u64, CalleeCall>,
    figures: BTreeMap<Behaviour, BehaviourFigures>,
    mos: BTreeMap<Behaviour, (f64, u64)>,
    ended: u64,
}

/// Runs the callee until `calls` calls ended, `duration` passed or Ctrl-C; its report.
/// `on_listening` is told where SIP listens once it does.
pub async fn run_answer(
    config: AnswerConfig,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<AnswerReport> {
    let scratch;
    let prompts = match &config.prompts {
        Some(dir) => dir.clone(),
        None => {
            scratch = crate::files::generated::ScratchDir::new("callplane-callee")?;
            write_prompts(scratch.path())?;
            scratch.path().to_path_buf()
        }
    };
    let mut configs = HashMap::new();
    for b in Behaviour::ALL {
        if let Some(json) = script_for(b, &config, &prompts) {
            let script = crate::script::parse(&json.to_string())
                .map_err(|e| anyhow::anyhow!("the {} script: {e}", b.name()))?;
            configs.insert(
                b,
                InboundConfig {
                    script: Some(Arc::new(script)),
                    prompts: Some(prompts.clone()),
                    recordings: config.recordings.clone(),
                    ..InboundConfig::default()
                },
            );
        }
    }
    let mix: Vec<(Behaviour, u32)> = config.mix.iter().filter(|(_, w)| *w > 0).copied().collect();
    let router = Arc::new(Router {
        routes: config.routes.clone(),
        total: mix.iter().map(|(_, w)| u64::from(*w)).sum(),
        mix,
        state: Mutex::new(RouterState {
            rng: config.seed,
            chosen: HashMap::new(),
            refused: BTreeMap::new(),
            routed: 0,
        }),
        configs,
    });
    let (sink, queue) = EventSink::channel(super::EVENT_QUEUE);
    let mut ec = EngineConfig::new(config.listen);
    ec.router = Some(router.clone());
    ec.event_sink = Some(sink);
    ec.max_calls = config.max_calls;
    ec.media_workers = config.media_workers.max(1);
    ec.media_priority = config.media_priority;
    ec.rtp_ports = config.rtp_ports.clone();
    if config.tcp {
        ec.sip_tcp = Some(config.listen);
    }
    // A load generator's callee takes everything its caller sends: no per-source SIP limit
    // and no bound on INVITEs not yet answered (a no_answer mix keeps many ringing).
    ec.protection.sip.per_source_rate = 0;
    ec.protection.max_half_open = Some(0);
    ec.protection.max_half_open_per_source = Some(0);
    let engine = Engine::start(ec).await?;
    let handle = engine.handle.clone();
    let sip = handle.sip_local_addr();
    on_listening(sip);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let progress = Arc::new(Notify::new());
    let pump = tokio::spawn(callee_pump(
        queue,
        Arc::clone(&seen),
        Arc::clone(&router),
        Arc::clone(&progress),
    ));
    let start = crate::clock::now();
    loop {
        let notified = progress.notified();
        let ended = {
            let s = seen.lock().unwrap_or_else(|e| e.into_inner());
            let refused: u64 = router
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .refused
                .values()
                .sum();
            s.ended + refused
        };
        if config.calls.is_some_and(|c| ended >= c) {
            break;
        }
        let left = config
            .duration
            .map(|d| d.saturating_sub(start.elapsed()))
            .unwrap_or(Duration::from_secs(3600));
        if left.is_zero() {
            break;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(left.min(Duration::from_secs(1))) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = handle.drain(Duration::from_secs(1)).await;
    let _ = handle.shutdown().await;
    drop(handle);
    engine.join().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), pump).await;
    let s = seen.lock().unwrap_or_else(|e| e.into_inner());
    let state = router.state.lock().unwrap_or_else(|e| e.into_inner());
    let mut behaviours: BTreeMap<&'static str, BehaviourFigures> = BTreeMap::new();
    for b in Behaviour::ALL {
        let mut f = s.figures.get(&b).cloned().unwrap_or_default();
        if let Some(n) = state.refused.get(&b) {
            f.calls += n;
            let code = b.refusal().unwrap_or(0);
            *f.outcomes.entry(format!("refused_{code}")).or_insert(0) += n;
        }
        if let Some((sum, n)) = s.mos.get(&b)
            && *n > 0
        {
            f.mos_in = Some((sum / *n as f64 * 100.0).round() / 100.0);
        }
        if f.calls > 0 {
            behaviours.insert(b.name(), f);
        }
    }
    Ok(AnswerReport {
        sip: sip.to_string(),
        calls: state.routed,
        ended: s.ended + state.refused.values().sum::<u64>(),
        behaviours,
    })
}

/// Folds the callee's events into its figures.
async fn callee_pump(
    mut queue: EventQueue,
    seen: Arc<Mutex<Seen>>,
    router: Arc<Router>,
    progress: Arc<Notify>,
) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        if queue.recv_many(&mut buf, 1024).await == 0 {
            return;
        }
        let n = buf.len();
        let mut ended = false;
        {
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            for item in buf.drain(..) {
                let e = item.event;
                let d = &e.details;
                let call = s.calls.entry(e.call_id.0).or_default();
                match e.kind {
                    "call.created" => {
                        let id = d.get("sip_call_id").and_then(|v| v.as_str());
                        let mut state = router.state.lock().unwrap_or_else(|e| e.into_inner());
                        call.behaviour = id.and_then(|id| state.chosen.remove(id));
                    }
                    "dtmf.received" => call.dtmf += 1,
                    "media.quality" if d.get("scope").and_then(|v| v.as_str()) == Some("call") => {
                        call.mos = d.get("mos").and_then(|v| v.as_f64());
                    }
                    "call.completed" | "call.failed" => {
                        let call = s.calls.remove(&e.call_id.0).unwrap_or_default();
                        let outcome = d
                            .get("outcome")
                            .and_then(|v| v.as_str())
                            .unwrap_or("")
                            .to_owned();
                        let talk = d.get("duration_ms").and_then(|v| v.as_u64());
                        if let Some(b) = call.behaviour {
                            let f = s.figures.entry(b).or_default();
                            f.calls += 1;
                            // An inbound call's final event has a duration once answered.
                            if talk.is_some() {
                                f.answered += 1;
                            }
                            *f.outcomes.entry(outcome).or_insert(0) += 1;
                            f.talk_ms += talk.unwrap_or(0);
                            f.dtmf_received += call.dtmf;
                            if let Some(m) = call.mos {
                                let e = s.mos.entry(b).or_insert((0.0, 0));
                                e.0 += m;
                                e.1 += 1;
                            }
                        }
                        s.ended += 1;
                        ended = true;
                    }
                    _ => {}
                }
                if let Some(tx) = item.committed {
                    let _ = tx.send(Committed::Stored);
                }
            }
        }
        queue.committed(n);
        if ended {
            progress.notify_waiters();
        }
    }
}

/// `--mix human=60,busy=10,...`.
pub fn parse_mix(s: &str) -> Result<Vec<(Behaviour, u32)>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|part| {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected behaviour=weight"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|e| format!("{part:?}: {e}"))?;
            Ok((Behaviour::parse(name.trim())?, weight))
        })
        .collect()
}

/// `--route PATTERN=BEHAVIOUR`.
pub fn parse_route(s: &str) -> Result<(Pattern, Behaviour), String> {
    let (pattern, name) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?}: expected PATTERN=BEHAVIOUR"))?;
    Ok((Pattern::new(pattern), Behaviour::parse(name.trim())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_numbers() {
        assert!(Pattern::new("1555*").matches("15550100"));
        assert!(Pattern::new("*00").matches("15550100"));
        assert!(!Pattern::new("*01").matches("15550100"));
        assert!(Pattern::new("1?55*").matches("12550"));
        assert!(Pattern::new("*").matches(""));
        assert!(!Pattern::new("busy").matches("busy1"));
        // A long adversarial pattern stays bounded (rejected above 256 characters).
        let long = "*a".repeat(200);
        assert!(!Pattern::new(&long).matches(&"a".repeat(300)));
    }

    #[test]
    fn the_mix_draws_in_proportion_and_is_seeded() {
        let mix = parse_mix("human=60,busy=30,no_answer=10").expect("a mix");
        let router = Router {
            routes: vec![],
            total: 100,
            mix,
            state: Mutex::new(RouterState {
                rng: 7,
                chosen: HashMap::new(),
                refused: BTreeMap::new(),
                routed: 0,
            }),
            configs: HashMap::new(),
        };
        let mut counts: BTreeMap<Behaviour, u32> = BTreeMap::new();
        let mut state = router.state.lock().expect("lock");
        for _ in 0..10_000 {
            *counts.entry(router.draw(&mut state)).or_insert(0) += 1;
        }
        let human = counts[&Behaviour::Human];
        assert!((5_700..6_300).contains(&human), "{counts:?}");
        assert!(
            (2_700..3_300).contains(&counts[&Behaviour::Busy]),
            "{counts:?}"
        );
        assert!(parse_mix("human=x").is_err() && parse_mix("martian=1").is_err());
        assert_eq!(
            parse_route("1555*=busy"),
            Ok((Pattern::new("1555*"), Behaviour::Busy))
        );
    }

    #[test]
    fn every_answering_behaviour_has_a_valid_script() {
        let cfg = AnswerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            tcp: false,
            routes: vec![],
            mix: vec![],
            seed: 1,
            human_digits: "1".into(),
            silence: Duration::from_secs(2),
            prompts: None,
            recordings: Some(PathBuf::from("/tmp")),
            calls: None,
            duration: None,
            max_calls: 10,
            media_workers: 1,
            media_priority: None,
            rtp_ports: 40000..=40099,
        };
        for b in Behaviour::ALL {
            match script_for(b, &cfg, Path::new("/p")) {
                Some(json) => {
                    crate::script::parse(&json.to_string())
                        .unwrap_or_else(|e| panic!("{}: {e}", b.name()));
                }
                None => assert!(b.refusal().is_some(), "{}", b.name()),
            }
        }
    }
}
