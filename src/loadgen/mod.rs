//! `callplane loadgen <sip-uri>`: a load generator that places calls through the engine and
//! reports what every call's SIP messages and RTP packets said (#13).
//!
//! The calls are the engine's own: the same SIP user agent and the same media workers as
//! `serve` (each worker runs all of its calls' RTP in one loop with one shared tick; a call's
//! signalling is a small task that sleeps between SIP messages). One engine runs per local
//! address given (`--local`), so one generator can spread its calls over several SIP sockets
//! and RTP port ranges.
//!
//! - **Schedule.** Call `k` starts at the instant the ramp says (the rate grows linearly from 0
//!   to `--cps` over `--ramp`, then stays), and not before a slot is free under
//!   `--concurrency`. Starting stops at `--calls` or `--duration`, whichever comes first.
//! - **What is measured** comes from each call's timeline events ([`record::CallRow`]), taken
//!   from the engine's lossless event queue (never the broadcast, which drops for a slow
//!   reader): setup latency from the first `sip.invite_sent` to `sip.trying`, the first 18x and
//!   `sip.answered`; the final status and outcome; RFC 3550 loss, jitter, reordering, duplicates,
//!   burst loss, and the E-model R and MOS of the call's `media.quality`; the peer's RTCP
//!   receiver reports for the other direction; voiced audio for silent calls.
//! - **The generator's own schedule**: the media workers' lateness histogram over the run.
//!   A run whose p99 passes `--max-lateness` (2 ms) is marked invalid: its figures say more
//!   about the generator than about the peer.
//! - **Output** ([`report`]): JSON, Markdown, a CSV row per call, a per-second time series,
//!   thresholds that set the exit status.

pub mod answer;
pub mod prompt;
pub mod record;
pub mod report;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sip::message::{Request, Uri};
use sip::transaction::Transport;
use tokio::sync::Notify;

use crate::engine::{
    Committed, Engine, EngineConfig, EngineHandle, EventQueue, EventSink, InboundRoute,
    InboundRouter, OriginateRequest, PromptScope,
};
use crate::files::generated::ScratchDir;
use crate::script::Script;
use record::CallRow;
use report::{Report, RunFacts, RunSettings, Thresholds};

/// Events the generator's queue holds before the engine refuses calls (its pump only counts).
const EVENT_QUEUE: usize = 1 << 16;
/// The most `--local` addresses (engines).
const MAX_LOCAL: usize = 64;
/// The `final_kind` and `outcome` of a call the engine did not start (its `end_reason` says
/// why).
pub const NOT_STARTED: &str = "not_started";
/// How long after the last call started the run waits for the calls still up, beyond their
/// hold time and ring timeout.
const END_GRACE: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The Request-URI and To of every call.
    pub target: Uri,
    /// Where the INVITEs go.
    pub destination: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
    /// Local SIP addresses: one engine each (port 0: any).
    pub local: Vec<SocketAddr>,
    /// Our From (`None`: `sip:callplane@<local ip>`).
    pub from: Option<Uri>,
    /// Stop starting calls after this many (`None`: no count limit).
    pub calls: Option<u64>,
    /// Stop starting calls after this long (`None`: no time limit).
    pub duration: Option<Duration>,
    /// Calls up at once, at most.
    pub concurrency: usize,
    /// Calls started per second once the ramp is over.
    pub cps: f64,
    /// The rate grows linearly from 0 to `cps` over this long.
    pub ramp: Duration,
    /// BYE this long after the answer.
    pub hold: Duration,
    /// CANCEL when no final response came within this.
    pub ring_timeout: Duration,
    /// A WAV played to the callee once answered (`None`: silence is sent).
    pub play: Option<PathBuf>,
    /// A script run on every answered call (its step list), and the file it came from.
    pub script: Option<(Arc<Script>, PathBuf)>,
    /// Where the script's prompt names and relative paths resolve.
    pub prompts: Option<PathBuf>,
    /// Digits sent once answered, after `dtmf_after`.
    pub send_dtmf: Vec<media::dtmf::Digit>,
    pub dtmf_after: Duration,
    /// Digits every answered call must receive back from the far end (the DTMF round trip).
    pub expect_dtmf: Option<String>,
    /// The prompt every answered call must hear (the prompt check; calls are recorded for it).
    pub expect_prompt: Option<PathBuf>,
    /// The least NCC score that passes the prompt check.
    pub prompt_min_score: f64,
    /// Record every call into this directory and keep the files (`None`: calls are recorded
    /// only for the prompt check, into a temporary directory removed at the end).
    pub recordings: Option<PathBuf>,
    /// Media worker threads in all.
    pub media_workers: usize,
    /// Their real-time priority (`None`: normal; [`EngineConfig::media_priority`]).
    pub media_priority: Option<u8>,
    /// RTP ports the generator's calls take (split between the engines).
    pub rtp_ports: RangeInclusive<u16>,
    /// The lateness p99 a valid run stays within.
    pub max_lateness: Duration,
    /// Pass/fail limits.
    pub thresholds: Thresholds,
    /// Call through this trunk instead of `target`/`destination` (each call dialed as
    /// `serve`'s calls through a trunk are).
    pub trunk: Option<TrunkTarget>,
    /// Print a progress line every second (to stderr).
    pub progress: bool,
}

/// The rows of the run and what the pump learns live.
#[derive(Debug, Default)]
struct Shared {
    rows: Vec<CallRow>,
    /// Calls started and not yet final.
    up: usize,
    answered: u64,
    failed: u64,
    mos_sum: f64,
    mos_n: u64,
}

/// Refuses every inbound INVITE: a generator calls out.
#[derive(Debug)]
struct RefuseInbound;

impl InboundRouter for RefuseInbound {
    fn route(&self, _: SocketAddr, _: Transport, _: &Request) -> InboundRoute {
        InboundRoute::Refuse(403)
    }
}

/// When call `k` (0-based) is due: the rate ramps linearly from 0 to `cps` over `ramp`, so
/// the calls started by time `t < ramp` are `cps·t²/(2·ramp)`.
pub fn due(k: u64, cps: f64, ramp: Duration) -> Duration {
    let k = k as f64;
    let ramp_s = ramp.as_secs_f64();
    let in_ramp = cps * ramp_s / 2.0;
    let t = if ramp_s > 0.0 && k <= in_ramp {
        (2.0 * k * ramp_s / cps).sqrt()
    } else {
        ramp_s + (k - in_ramp.min(k)) / cps
    };
    // Beyond what a Duration holds (a rate near 0): never.
    Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::MAX)
}

/// Splits `range` into `n` consecutive parts of even size (each starting on an even port).
fn split_ports(range: &RangeInclusive<u16>, n: usize) -> Vec<RangeInclusive<u16>> {
    let (lo, hi) = (u32::from(*range.start()), u32::from(*range.end()));
    let span = ((hi + 1).saturating_sub(lo) / n as u32) & !1;
    (0..n as u32)
        .map(|i| {
            let a = lo + i * span;
            let b = if i + 1 == n as u32 { hi } else { a + span - 1 };
            a as u16..=b as u16
        })
        .collect()
}

/// A trunk as the generator's target: every call is planned by [`crate::trunk::dial`] (its
/// hosts in order or weighted, their addresses, failover, credentials, outbound proxy, caller
/// id and headers), as `serve` places a call through a trunk.
#[derive(Debug, Clone)]
pub struct TrunkTarget {
    /// How timeline events name it (the file's stem).
    pub id: String,
    /// Its settings (a trunk's `settings` as the API takes them, password included), checked.
    pub settings: crate::trunk::TrunkSettings,
    /// The number every call dials.
    pub number: String,
    /// Our caller id (`--from`), else the trunk's pool or `from_user`.
    pub caller_id: Option<String>,
    /// Resolves hosts that are names.
    pub dns: Option<crate::net::dns::Resolver>,
    /// The file it came from (the report's settings).
    pub file: PathBuf,
}

impl TrunkTarget {
    /// Plans call `k` (its caller id's turn in the trunk's pool) and resolves its hosts.
    pub async fn dial(
        &self,
        k: u64,
    ) -> Result<crate::trunk::dial::Dialed, crate::trunk::dial::DialError> {
        crate::trunk::dial::dial(&crate::trunk::dial::DialRequest {
            trunk_id: &self.id,
            settings: &self.settings,
            number: &self.number,
            caller_id: self.caller_id.as_deref(),
            random: crate::trunk::dial::random_u64(),
            turn: k as usize,
            dns: self.dns.as_ref(),
        })
        .await
    }
}

/// Plans call `k` through `trunk` into `request`.
async fn dial_trunk(
    trunk: &TrunkTarget,
    k: u64,
    request: &mut OriginateRequest,
) -> Result<(), crate::trunk::dial::DialError> {
    let dialed = trunk.dial(k).await?;
    // The trunk's From (the caller id above): not the generator's default.
    request.from = None;
    dialed.apply(request);
    Ok(())
}

/// Runs the load and returns its report and per-call rows.
pub async fn run(config: LoadConfig) -> anyhow::Result<(Report, Vec<CallRow>)> {
    anyhow::ensure!(!config.local.is_empty(), "no local address");
    anyhow::ensure!(config.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(
        (0.001..=100_000.0).contains(&config.cps),
        "--cps must be between 0.001 and 100000"
    );
    anyhow::ensure!(
        config.ramp <= Duration::from_secs(86_400),
        "--ramp must be at most a day"
    );
    anyhow::ensure!(
        config.local.len() <= MAX_LOCAL,
        "at most {MAX_LOCAL} --local addresses"
    );
    let ports = u32::from(*config.rtp_ports.end()) + 1 - u32::from(*config.rtp_ports.start());
    anyhow::ensure!(
        ports / config.local.len() as u32 >= 4,
        "--rtp-ports {}-{} is too small for {} local addresses (4 ports each at least)",
        config.rtp_ports.start(),
        config.rtp_ports.end(),
        config.local.len()
    );
    anyhow::ensure!(
        config.calls.is_some() || config.duration.is_some(),
        "give --calls or --duration (a run must end)"
    );
    let reference = config
        .expect_prompt
        .as_ref()
        .map(|p| crate::files::load_prompt(p, 8000).map(|_| p.clone()))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--expect-prompt: {e}"))?;
    // Where calls are recorded: kept where asked, else a temporary directory for the prompt
    // check (removed when the run ends, with what is in it).
    let scratch = match (&config.recordings, &reference) {
        (Some(dir), _) => {
            crate::files::ensure_dir(dir)
                .map_err(|e| anyhow::anyhow!("--recordings {}: {e}", dir.display()))?;
            None
        }
        (None, Some(_)) => Some(ScratchDir::new("callplane-loadgen")?),
        (None, None) => None,
    };
    let record_dir: Option<PathBuf> = config
        .recordings
        .clone()
        .or_else(|| scratch.as_ref().map(|d| d.path().to_path_buf()));
    let (sink, queue) = EventSink::channel(EVENT_QUEUE);
    let n = config.local.len();
    let ports = split_ports(&config.rtp_ports, n);
    let mut engines = Vec::with_capacity(n);
    for (bind, ports) in config.local.iter().zip(ports) {
        let mut ec = EngineConfig::new(*bind);
        ec.rtp_ports = ports;
        // The generator's own gate holds the concurrency. An engine frees a call's slot a moment
        // after its final event (once the pump confirmed it), so its limit has room to spare.
        ec.max_calls = config.concurrency.saturating_mul(2).saturating_add(64);
        ec.event_sink = Some(sink.clone());
        ec.router = Some(Arc::new(RefuseInbound));
        ec.media_workers = config.media_workers.div_ceil(n).max(1);
        ec.media_priority = config.media_priority;
        if config.transport == Transport::Tcp {
            ec.sip_tcp = Some(*bind);
        }
        // The generator is the peer's load, not its own: its calls are not limited by the
        // per-source protection meant for strangers.
        engines.push(Engine::start(ec).await?);
    }
    drop(sink);
    let handles: Vec<EngineHandle> = engines.iter().map(|e| e.handle.clone()).collect();
    let lateness_before: Vec<_> = handles.iter().map(|h| h.media_worker_lateness()).collect();
    let failed_before: u64 = handles
        .iter()
        .map(|h| h.media_worker_stats().send_failed)
        .sum();

    let shared = Arc::new(Mutex::new(Shared::default()));
    let freed = Arc::new(Notify::new());
    let start = crate::clock::now();
    let start_unix_us = crate::clock::unix_us();
    let pump = tokio::spawn(pump(
        queue,
        Arc::clone(&shared),
        Arc::clone(&freed),
        start_unix_us,
    ));
    let progress = config.progress.then(|| {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let line = progress_line(&shared, start.elapsed());
                eprint!("\r{line}   ");
            }
        })
    });

    // Start the calls.
    let mut k = 0u64;
    loop {
        if config.calls.is_some_and(|c| k >= c) {
            break;
        }
        let at = due(k, config.cps, config.ramp);
        if config.duration.is_some_and(|d| at >= d) {
            break;
        }
        let Some(when) = start.checked_add(at) else {
            break;
        };
        tokio::time::sleep_until(when.into()).await;
        // A free slot under the concurrency (the pump notifies each call's end).
        loop {
            let notified = freed.notified();
            if lock(&shared).up < config.concurrency {
                break;
            }
            notified.await;
        }
        let started_ms = start.elapsed().as_millis() as u64;
        {
            let mut s = lock(&shared);
            s.rows.push(CallRow::new(k, started_ms));
            s.up += 1;
        }
        let record = record_dir.as_ref().map(|d| d.join(format!("call-{k}.wav")));
        let mut request = request_for(&config, k, record);
        let engine = &handles[(k % n as u64) as usize];
        let started = match &config.trunk {
            Some(trunk) => dial_trunk(trunk, k, &mut request)
                .await
                .map_err(|e| format!("trunk {}: {e}", trunk.id)),
            None => Ok(()),
        };
        let started = match started {
            Ok(()) => engine.originate(request).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            // Not started (a full port range, the engine at its limit): the row says why,
            // unless the call's own final event already did.
            let mut s = lock(&shared);
            if !s.rows[k as usize].is_final() {
                s.up = s.up.saturating_sub(1);
                s.failed += 1;
                let row = &mut s.rows[k as usize];
                row.final_kind = NOT_STARTED.to_owned();
                row.outcome = NOT_STARTED.to_owned();
                row.end_reason = e;
                row.ended_ms = Some(started_ms);
            }
        }
        k += 1;
    }
    let last_start = start.elapsed();

    // Wait for the calls still up.
    let bound = last_start + config.hold + config.ring_timeout + config.dtmf_after + END_GRACE;
    loop {
        let notified = freed.notified();
        if lock(&shared).up == 0 || start.elapsed() >= bound {
            break;
        }
        let left = bound.saturating_sub(start.elapsed());
        let _ = tokio::time::timeout(left, notified).await;
    }
    let lateness = handles
        .iter()
        .zip(&lateness_before)
        .map(|(h, before)| h.media_worker_lateness().since(before))
        .reduce(|mut a, b| {
            for (x, y) in a.buckets.iter_mut().zip(b.buckets.iter()) {
                *x += y;
            }
            a
        })
        .unwrap_or_else(|| handles[0].media_worker_lateness());
    let send_failed = handles
        .iter()
        .map(|h| h.media_worker_stats().send_failed)
        .sum::<u64>()
        .saturating_sub(failed_before);
    let media_workers = handles.iter().map(|h| h.media_worker_stats().workers).sum();
    let realtime_workers = handles
        .iter()
        .map(|h| h.media_worker_stats().realtime_threads)
        .sum();
    if let Some(p) = progress {
        p.abort();
        eprintln!("\r{}   ", progress_line(&shared, start.elapsed()));
    }
    for h in &handles {
        let _ = h.drain(Duration::from_secs(1)).await;
        let _ = h.shutdown().await;
    }
    drop(handles);
    for e in engines {
        e.join().await;
    }
    // Every engine is gone: the queue's senders are dropped and the pump ends.
    let _ = tokio::time::timeout(Duration::from_secs(5), pump).await;
    let mut rows = std::mem::take(&mut lock(&shared).rows);
    if let Some(reference) = reference {
        let min = config.prompt_min_score;
        rows = tokio::task::spawn_blocking(move || check_prompts(rows, &reference, min)).await?;
    }
    drop(scratch);
    let first = rows.iter().map(|r| r.started_ms).min().unwrap_or(0);
    let last = rows
        .iter()
        .filter_map(|r| r.ended_ms)
        .max()
        .unwrap_or(first);
    let facts = RunFacts {
        settings: settings(&config),
        elapsed_s: last.saturating_sub(first) as f64 / 1000.0,
        lateness,
        lateness_limit_us: config.max_lateness.as_micros() as u64,
        media_workers,
        realtime_workers,
        send_failed,
        thresholds: config.thresholds.clone(),
        expect_dtmf: config.expect_dtmf.clone(),
        prompt_check: config.expect_prompt.is_some(),
    };
    Ok((Report::build(&rows, facts), rows))
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn progress_line(shared: &Mutex<Shared>, elapsed: Duration) -> String {
    let s = lock(shared);
    let t = elapsed.as_secs_f64();
    let started = s.rows.len();
    let mos = if s.mos_n > 0 {
        format!("{:.2}", s.mos_sum / s.mos_n as f64)
    } else {
        "-".to_owned()
    };
    format!(
        "{t:6.1} s  up {:5}  started {:7}  cps {:7.1}  answered {:7}  failed {:6}  MOS {mos}",
        s.up,
        started,
        if t > 0.0 { started as f64 / t } else { 0.0 },
        s.answered,
        s.failed,
    )
}

/// Runs the prompt check on every answered call's recording (a call answered without one
/// fails it).
fn check_prompts(mut rows: Vec<CallRow>, reference: &std::path::Path, min: f64) -> Vec<CallRow> {
    let mut by_rate: std::collections::HashMap<u32, crate::files::Prompt> = Default::default();
    for row in rows.iter_mut().filter(|r| r.answered()) {
        let heard = row
            .recording
            .as_deref()
            .ok_or_else(|| "no recording".to_owned())
            .and_then(|p| prompt::heard_channel(std::path::Path::new(p)));
        let found = heard.and_then(|(samples, rate)| {
            let prompt = match by_rate.entry(rate) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(crate::files::load_prompt(reference, rate).map_err(|e| e.to_string())?)
                }
            };
            Ok(prompt::best_match(&prompt.samples, &samples, rate))
        });
        match found {
            Ok(Some(m)) => {
                row.prompt_score = Some(m.score);
                row.prompt_offset_ms = Some(m.offset_ms);
                row.prompt_ok = Some(m.score >= min);
            }
            Ok(None) | Err(_) => row.prompt_ok = Some(false),
        }
    }
    rows
}

/// The INVITE of call `k`.
fn request_for(config: &LoadConfig, k: u64, record: Option<PathBuf>) -> OriginateRequest {
    OriginateRequest {
        to: config.target.clone(),
        destination: config.destination,
        from: config.from.clone(),
        play: config.play.clone(),
        gather_digits: 0,
        record,
        ring_timeout: config.ring_timeout,
        transport: config.transport,
        hangup_after: Some(config.hold),
        send_dtmf: config.send_dtmf.clone(),
        dtmf_after: config.dtmf_after,
        script: config.script.as_ref().map(|(s, _)| Arc::clone(s)),
        prompts: config.prompts.clone(),
        prompt_scope: PromptScope::Local,
        tag: Some(Arc::from(k.to_string())),
        variables: Default::default(),
        // Held past the hold by a peer that does not answer the BYE: the engine's own bound.
        max_duration: None,
        sip: Default::default(),
        alternates: Vec::new(),
    }
}

fn settings(config: &LoadConfig) -> RunSettings {
    RunSettings {
        target: config.target.to_string(),
        transport: format!("{:?}", config.transport).to_ascii_lowercase(),
        local: config.local.iter().map(ToString::to_string).collect(),
        concurrency: config.concurrency,
        cps: config.cps,
        ramp_s: config.ramp.as_secs_f64(),
        calls: config.calls,
        duration_s: config.duration.map(|d| d.as_secs_f64()),
        hold_s: config.hold.as_secs_f64(),
        play: config.play.as_ref().map(|p| p.display().to_string()),
        script: config.script.as_ref().map(|(_, p)| p.display().to_string()),
        trunk: config.trunk.as_ref().map(|t| t.file.display().to_string()),
        send_dtmf: config.send_dtmf.iter().map(|d| d.as_char()).collect(),
    }
}

/// Takes every event off the engines' queue into the rows, and confirms it at once (nothing
/// is stored: the rows are the store).
async fn pump(
    mut queue: EventQueue,
    shared: Arc<Mutex<Shared>>,
    freed: Arc<Notify>,
    start_us: i64,
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
            let mut s = lock(&shared);
            for item in buf.drain(..) {
                let event = item.event;
                let index = event
                    .tag
                    .as_deref()
                    .and_then(|t| t.parse::<usize>().ok())
                    .filter(|&i| i < s.rows.len());
                if let Some(i) = index {
                    let row = &mut s.rows[i];
                    let was_final = row.is_final();
                    row.apply(&event);
                    if !was_final && row.is_final() {
                        row.ended_ms =
                            Some((event.at_unix_us.saturating_sub(start_us).max(0) / 1000) as u64);
                        let (answered, mos) = (row.answered(), row.mos_in);
                        s.up = s.up.saturating_sub(1);
                        if answered {
                            s.answered += 1;
                        } else {
                            s.failed += 1;
                        }
                        if let Some(m) = mos {
                            s.mos_sum += m;
                            s.mos_n += 1;
                        }
                        ended = true;
                    }
                }
                if let Some(tx) = item.committed {
                    let _ = tx.send(Committed::Stored);
                }
            }
        }
        queue.committed(n);
        if ended {
            freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_starts_calls_at_the_rate_it_reaches() {
        let ramp = Duration::from_secs(10);
        // 100 cps after a 10 s ramp: 500 calls in the ramp, then 100 per second.
        assert_eq!(due(0, 100.0, ramp), Duration::ZERO);
        let at = |k| due(k, 100.0, ramp).as_secs_f64();
        assert!((at(500) - 10.0).abs() < 1e-9);
        assert!((at(600) - 11.0).abs() < 1e-9);
        // Half way through the ramp (5 s) the rate is 50/s and 125 calls have started.
        assert!((at(125) - 5.0).abs() < 1e-9);
        // No ramp: evenly spaced.
        assert!((due(7, 4.0, Duration::ZERO).as_secs_f64() - 1.75).abs() < 1e-9);
    }

    #[test]
    fn port_ranges_split_evenly_and_cover_the_range() {
        let parts = split_ports(&(20000..=29999), 3);
        assert_eq!(parts, vec![20000..=23331, 23332..=26663, 26664..=29999]);
        assert_eq!(split_ports(&(20000..=20099), 1), vec![20000..=20099]);
    }
}
