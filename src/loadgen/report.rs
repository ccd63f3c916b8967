//! The aggregate of a load run, its pass/fail thresholds, and its output formats (JSON,
//! Markdown, CSV of per-call rows, a per-second time series). Pure: it reads [`CallRow`]s and
//! the generator's own lateness, and writes text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::record::CallRow;
use crate::net::media_workers::LatenessHistogram;

/// Percentiles of one figure over the calls that have it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Spread {
    /// How many calls had it.
    pub n: usize,
    /// Nearest-rank percentiles and the extremes.
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    /// The mean.
    pub mean: f64,
}

impl Spread {
    /// The spread of `values` (`None` when empty).
    pub fn of(mut values: Vec<f64>) -> Option<Spread> {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[i - 1]
        };
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        Some(Spread {
            n: values.len(),
            min: round(values[0]),
            p50: round(rank(0.50)),
            p95: round(rank(0.95)),
            p99: round(rank(0.99)),
            max: round(values[values.len() - 1]),
            mean: round(values.iter().sum::<f64>() / values.len() as f64),
        })
    }
}

/// Call counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counts {
    /// INVITEs started.
    pub attempted: u64,
    /// Answered (a 200 OK to the INVITE).
    pub answered: u64,
    /// Ended without an answer.
    pub unanswered: u64,
    /// With no final event when the run ended (they were still up at the end's bound).
    pub unfinished: u64,
    /// Not started: the engine refused them (no RTP port free, its event queue backlogged);
    /// counted in `attempted`, not in the status mix.
    pub not_started: u64,
    /// Answered calls that ended otherwise than by a BYE of ours or the peer's (RTP timeout,
    /// the longest call, a transport error): the peer or the network cut them.
    pub dropped: u64,
}

/// Setup latencies, ms from the first INVITE sent.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Setup {
    /// To the first 100 Trying.
    pub trying_ms: Option<Spread>,
    /// To the first 18x.
    pub ringing_ms: Option<Spread>,
    /// To the 200 OK.
    pub answer_ms: Option<Spread>,
    /// To the callee's first RTP packet (before the 200 OK with early media).
    pub first_audio_ms: Option<Spread>,
    /// Calls whose audio came before their answer (early media).
    pub early_media_calls: u64,
}

/// Media figures over the answered calls.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MediaFigures {
    /// RTP packets received and sent.
    pub packets_in: u64,
    pub packets_out: u64,
    /// RFC 3550 expected and lost, summed over the calls.
    pub expected_in: u64,
    pub lost_in: u64,
    /// `lost_in / expected_in`, %.
    pub loss_percent: f64,
    /// Arrived too late for playout.
    pub late_in: u64,
    /// `late_in / expected_in`, %.
    pub late_percent: f64,
    /// Reordered and duplicated packets.
    pub reordered: u64,
    pub duplicates: u64,
    /// The longest loss burst of any call.
    pub max_burst: u64,
    /// Interarrival jitter per call, µs.
    pub jitter_us: Option<Spread>,
    /// Round-trip time per call (calls whose peer sends RTCP), µs.
    pub rtt_us: Option<Spread>,
    /// MOS of what we received, per call.
    pub mos_in: Option<Spread>,
    /// MOS of what we sent, per call (from the peer's receiver reports; calls whose peer sent
    /// none have none).
    pub mos_out: Option<Spread>,
    /// Loss of what we sent as the peers reported it, per call, %.
    pub loss_out_percent: Option<Spread>,
    /// Answered calls with no RTP from the peer.
    pub one_way: u64,
    /// Answered calls whose RTP carried no voiced audio.
    pub silent: u64,
}

/// The prompt check's totals.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PromptFigures {
    /// Calls checked (answered, with a recording).
    pub checked: u64,
    /// Matched the reference.
    pub passed: u64,
    /// Did not.
    pub failed: u64,
    /// The scores of the checked calls.
    pub score: Option<Spread>,
}

/// The DTMF round trip's totals.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DtmfFigures {
    /// The digits sent on every answered call.
    pub sent: String,
    /// The digits expected back (`--expect-dtmf`).
    pub expected: String,
    /// Answered calls that reported back exactly the expected digits.
    pub matched: u64,
    /// Answered calls that did not.
    pub mismatched: u64,
}

/// How well the generator kept its own schedule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GeneratorFigures {
    /// Media worker threads.
    pub media_workers: usize,
    /// Of them, running at real-time priority (`--media-priority`; 0 when refused or off).
    pub realtime_workers: usize,
    /// Deadlines served (packet slots, RTCP, playout ticks).
    pub deadlines: u64,
    /// How late they were served: p50, p99 and the worst bucket's bound, µs.
    pub lateness_p50_us: Option<u64>,
    pub lateness_p99_us: Option<u64>,
    pub lateness_max_us: Option<u64>,
    /// Datagrams the generator failed to send.
    pub send_failed: u64,
    /// The lateness p99 a valid run stays within, µs.
    pub limit_p99_us: u64,
    /// Whether the run is valid: the generator kept its schedule (and sent what it meant to).
    pub valid: bool,
    /// Why not, when it is not.
    pub invalid_reason: Option<String>,
}

/// One threshold and how the run stood against it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ThresholdResult {
    /// Its flag (`max-loss`, `min-mos`, `max-setup-p99`, `min-answer-rate`; `expect-prompt`
    /// and `expect-dtmf`: the % of answered calls that passed the check, which must be 100).
    pub name: &'static str,
    /// The limit given.
    pub limit: f64,
    /// The run's figure (`None`: the run has none, which fails the threshold).
    pub value: Option<f64>,
    /// Whether it held.
    pub passed: bool,
}

/// Limits a run must hold (each optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thresholds {
    /// Most inbound loss, % (network loss over all answered calls).
    pub max_loss_percent: Option<f64>,
    /// Least mean MOS (inbound; and outbound where peers report it).
    pub min_mos: Option<f64>,
    /// Most INVITE → 200 OK p99, ms.
    pub max_setup_p99_ms: Option<f64>,
    /// Least answered / attempted, %.
    pub min_answer_rate: Option<f64>,
}

/// What was asked of the run (echoed in the report).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RunSettings {
    pub target: String,
    pub transport: String,
    pub local: Vec<String>,
    pub concurrency: usize,
    pub cps: f64,
    pub ramp_s: f64,
    pub calls: Option<u64>,
    pub duration_s: Option<f64>,
    pub hold_s: f64,
    pub play: Option<String>,
    /// The script every answered call ran (its file).
    pub script: Option<String>,
    /// The trunk the calls went through (its file; `target` is then the first call's
    /// Request-URI).
    pub trunk: Option<String>,
    pub send_dtmf: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// What was asked.
    pub settings: RunSettings,
    /// Wall time from the first call started to the last call ended, s.
    pub elapsed_s: f64,
    /// Calls started per second over the starting phase (first to last start).
    pub cps_achieved: f64,
    /// The most calls up at once (started, no final event yet).
    pub peak_concurrency: u64,
    pub calls: Counts,
    /// Answered / attempted, %.
    pub answer_rate_percent: f64,
    /// Final SIP status of the INVITE → calls (`none`: no final response).
    pub status_mix: BTreeMap<String, u64>,
    /// Outcome → calls.
    pub outcomes: BTreeMap<String, u64>,
    pub setup: Setup,
    pub media: MediaFigures,
    pub prompt: Option<PromptFigures>,
    pub dtmf: Option<DtmfFigures>,
    pub generator: GeneratorFigures,
    pub thresholds: Vec<ThresholdResult>,
    /// Every threshold held and the run is valid.
    pub passed: bool,
}

/// What the aggregate needs besides the rows.
#[derive(Debug, Clone)]
pub struct RunFacts {
    pub settings: RunSettings,
    pub elapsed_s: f64,
    pub lateness: LatenessHistogram,
    pub lateness_limit_us: u64,
    pub media_workers: usize,
    /// Of them, running at real-time priority.
    pub realtime_workers: usize,
    pub send_failed: u64,
    pub thresholds: Thresholds,
    /// Digits expected back on every answered call (`None`: no DTMF check).
    pub expect_dtmf: Option<String>,
    /// Whether calls had a prompt check.
    pub prompt_check: bool,
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 100.0 / whole as f64 * 10_000.0).round() / 10_000.0
    }
}

impl Report {
    /// The report of `rows`.
    pub fn build(rows: &[CallRow], facts: RunFacts) -> Report {
        let answered: Vec<&CallRow> = rows.iter().filter(|r| r.answered()).collect();
        let mut calls = Counts {
            attempted: rows.len() as u64,
            answered: answered.len() as u64,
            ..Counts::default()
        };
        let mut status_mix = BTreeMap::new();
        let mut outcomes = BTreeMap::new();
        for r in rows {
            if !r.is_final() {
                calls.unfinished += 1;
                continue;
            }
            if r.final_kind == super::NOT_STARTED {
                calls.not_started += 1;
                continue;
            }
            if !r.answered() {
                calls.unanswered += 1;
            } else if !matches!(r.end_reason.as_str(), "LocalBye" | "RemoteBye") {
                calls.dropped += 1;
            }
            let status = r
                .sip_status
                .map_or_else(|| "none".to_owned(), |s| s.to_string());
            *status_mix.entry(status).or_insert(0) += 1;
            *outcomes.entry(r.outcome.clone()).or_insert(0) += 1;
        }
        let spread =
            |f: &dyn Fn(&CallRow) -> Option<f64>| Spread::of(rows.iter().filter_map(f).collect());
        let answered_spread = |f: &dyn Fn(&CallRow) -> Option<f64>| {
            Spread::of(answered.iter().copied().filter_map(f).collect())
        };
        let sum = |f: &dyn Fn(&CallRow) -> u64| answered.iter().map(|r| f(r)).sum::<u64>();
        let expected_in = sum(&|r| r.expected_in);
        let lost_in = sum(&|r| r.lost_in);
        let late_in = sum(&|r| r.late_in);
        let media = MediaFigures {
            packets_in: sum(&|r| r.packets_in),
            packets_out: sum(&|r| r.packets_out),
            expected_in,
            lost_in,
            loss_percent: percent(lost_in, expected_in),
            late_in,
            late_percent: percent(late_in, expected_in),
            reordered: sum(&|r| r.reordered),
            duplicates: sum(&|r| r.duplicates),
            max_burst: answered.iter().map(|r| r.max_burst).max().unwrap_or(0),
            jitter_us: answered_spread(&|r| r.jitter_us.map(|v| v as f64)),
            rtt_us: answered_spread(&|r| r.rtt_us.map(|v| v as f64)),
            mos_in: answered_spread(&|r| r.mos_in),
            mos_out: answered_spread(&|r| r.mos_out),
            loss_out_percent: answered_spread(&|r| r.loss_out_percent),
            one_way: answered.iter().filter(|r| r.one_way).count() as u64,
            silent: answered.iter().filter(|r| r.silent).count() as u64,
        };
        let prompt = facts.prompt_check.then(|| {
            let checked: Vec<&CallRow> = answered
                .iter()
                .copied()
                .filter(|r| r.prompt_ok.is_some())
                .collect();
            PromptFigures {
                checked: checked.len() as u64,
                passed: checked.iter().filter(|r| r.prompt_ok == Some(true)).count() as u64,
                failed: checked
                    .iter()
                    .filter(|r| r.prompt_ok == Some(false))
                    .count() as u64,
                score: Spread::of(checked.iter().filter_map(|r| r.prompt_score).collect()),
            }
        });
        let dtmf = facts.expect_dtmf.as_ref().map(|expected| {
            let matched = answered
                .iter()
                .filter(|r| &r.dtmf_received == expected)
                .count() as u64;
            DtmfFigures {
                sent: facts.settings.send_dtmf.clone(),
                expected: expected.clone(),
                matched,
                mismatched: answered.len() as u64 - matched,
            }
        });
        let p99 = facts.lateness.quantile_us(0.99);
        let invalid_reason = match p99 {
            Some(p) if p > facts.lateness_limit_us => Some(format!(
                "the generator fell behind its own schedule: lateness p99 {} µs > {} µs; \
                 its figures measure the generator, not the peer",
                p, facts.lateness_limit_us
            )),
            _ if facts.send_failed > 0 => Some(format!(
                "the generator failed to send {} datagrams",
                facts.send_failed
            )),
            _ => None,
        };
        let generator = GeneratorFigures {
            media_workers: facts.media_workers,
            realtime_workers: facts.realtime_workers,
            deadlines: facts.lateness.count(),
            lateness_p50_us: facts.lateness.quantile_us(0.50),
            lateness_p99_us: p99,
            lateness_max_us: facts.lateness.quantile_us(1.0),
            send_failed: facts.send_failed,
            limit_p99_us: facts.lateness_limit_us,
            valid: invalid_reason.is_none(),
            invalid_reason,
        };
        let starts: Vec<u64> = rows.iter().map(|r| r.started_ms).collect();
        let cps_achieved = match (starts.iter().min(), starts.iter().max()) {
            (Some(&a), Some(&b)) if b > a => {
                ((rows.len() as f64 - 1.0) * 1000.0 / (b - a) as f64 * 100.0).round() / 100.0
            }
            _ => 0.0,
        };
        let setup = Setup {
            trying_ms: spread(&|r| r.trying_ms),
            ringing_ms: spread(&|r| r.ringing_ms),
            answer_ms: spread(&|r| r.answer_ms),
            first_audio_ms: spread(&|r| r.first_audio_ms),
            early_media_calls: rows
                .iter()
                .filter(|r| matches!((r.first_audio_ms, r.answer_ms), (Some(a), Some(b)) if a < b))
                .count() as u64,
        };
        let answer_rate_percent = percent(calls.answered, calls.attempted);
        let mut thresholds = Vec::new();
        let t = &facts.thresholds;
        let mut check = |name, limit: Option<f64>, value: Option<f64>, max: bool| {
            if let Some(limit) = limit {
                let passed = value.is_some_and(|v| if max { v <= limit } else { v >= limit });
                thresholds.push(ThresholdResult {
                    name,
                    limit,
                    value,
                    passed,
                });
            }
        };
        let answered_any = calls.answered > 0;
        check(
            "max-loss",
            t.max_loss_percent,
            answered_any.then_some(media.loss_percent),
            true,
        );
        let worst_mos = match (media.mos_in, media.mos_out) {
            (Some(i), Some(o)) => Some(i.mean.min(o.mean)),
            (Some(i), None) => Some(i.mean),
            (None, o) => o.map(|o| o.mean),
        };
        check("min-mos", t.min_mos, worst_mos, false);
        check(
            "max-setup-p99",
            t.max_setup_p99_ms,
            setup.answer_ms.map(|s| s.p99),
            true,
        );
        check(
            "min-answer-rate",
            t.min_answer_rate,
            Some(answer_rate_percent),
            false,
        );
        // The prompt and DTMF checks hold for every answered call, or the run fails.
        if let Some(p) = &prompt {
            let value = percent(p.passed, calls.answered);
            thresholds.push(ThresholdResult {
                name: "expect-prompt",
                limit: 100.0,
                value: Some(value),
                passed: calls.answered > 0 && p.passed == calls.answered,
            });
        }
        if let Some(d) = &dtmf {
            thresholds.push(ThresholdResult {
                name: "expect-dtmf",
                limit: 100.0,
                value: Some(percent(d.matched, calls.answered)),
                passed: calls.answered > 0 && d.mismatched == 0,
            });
        }
        let passed = generator.valid && thresholds.iter().all(|t| t.passed);
        let peak_concurrency = peak(rows);
        Report {
            settings: facts.settings,
            elapsed_s: (facts.elapsed_s * 1000.0).round() / 1000.0,
            cps_achieved,
            peak_concurrency,
            calls,
            answer_rate_percent,
            status_mix,
            outcomes,
            setup,
            media,
            prompt,
            dtmf,
            generator,
            thresholds,
            passed,
        }
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let s = &self.settings;
        let _ = writeln!(m, "# callplane loadgen: {}\n", s.target);
        let _ = writeln!(
            m,
            "{} calls over {} from {}; concurrency {}, {} calls/s (ramp {} s), hold {} s.\n",
            self.calls.attempted,
            s.transport,
            s.local.join(", "),
            s.concurrency,
            s.cps,
            s.ramp_s,
            s.hold_s
        );
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let _ = writeln!(m, "**{verdict}**");
        if let Some(why) = &self.generator.invalid_reason {
            let _ = writeln!(m, "\n**INVALID RUN**: {why}.");
        }
        let _ = writeln!(m, "\n## Calls\n\n| figure | value |\n|---|---|");
        let c = &self.calls;
        for (k, v) in [
            ("attempted", c.attempted.to_string()),
            ("answered", c.answered.to_string()),
            ("answer rate", format!("{:.2} %", self.answer_rate_percent)),
            ("unanswered", c.unanswered.to_string()),
            ("dropped after answer", c.dropped.to_string()),
            ("unfinished", c.unfinished.to_string()),
            ("not started (generator)", c.not_started.to_string()),
            ("calls/s achieved", format!("{:.2}", self.cps_achieved)),
            ("peak concurrency", self.peak_concurrency.to_string()),
            ("elapsed", format!("{:.1} s", self.elapsed_s)),
        ] {
            let _ = writeln!(m, "| {k} | {v} |");
        }
        let _ = writeln!(m, "\n## SIP status mix\n\n| status | calls |\n|---|---|");
        for (k, v) in &self.status_mix {
            let _ = writeln!(m, "| {k} | {v} |");
        }
        let _ = writeln!(
            m,
            "\n## Setup latency (ms from the INVITE)\n\n| to | n | p50 | p95 | p99 | max |\n|---|---|---|---|---|---|"
        );
        for (k, v) in [
            ("100 Trying", &self.setup.trying_ms),
            ("18x", &self.setup.ringing_ms),
            ("200 OK", &self.setup.answer_ms),
            ("first audio", &self.setup.first_audio_ms),
        ] {
            match v {
                Some(s) => {
                    let _ = writeln!(
                        m,
                        "| {k} | {} | {} | {} | {} | {} |",
                        s.n, s.p50, s.p95, s.p99, s.max
                    );
                }
                None => {
                    let _ = writeln!(m, "| {k} | 0 | | | | |");
                }
            }
        }
        if self.setup.early_media_calls > 0 {
            let _ = writeln!(
                m,
                "\nEarly media (audio before the answer): {} calls.",
                self.setup.early_media_calls
            );
        }
        let md = &self.media;
        let _ = writeln!(
            m,
            "\n## Media (answered calls)\n\n| figure | value |\n|---|---|"
        );
        let opt = |s: &Option<Spread>, f: &dyn Fn(&Spread) -> String| {
            s.as_ref().map_or_else(|| "n/a".to_owned(), f)
        };
        for (k, v) in [
            (
                "packets in / out",
                format!("{} / {}", md.packets_in, md.packets_out),
            ),
            (
                "loss in (network)",
                format!(
                    "{} of {} ({:.4} %)",
                    md.lost_in, md.expected_in, md.loss_percent
                ),
            ),
            (
                "late in",
                format!("{} ({:.4} %)", md.late_in, md.late_percent),
            ),
            (
                "reordered / duplicates",
                format!("{} / {}", md.reordered, md.duplicates),
            ),
            ("max burst loss", md.max_burst.to_string()),
            (
                "jitter µs (mean, p99)",
                opt(&md.jitter_us, &|s| format!("{}, {}", s.mean, s.p99)),
            ),
            ("RTT µs (p50)", opt(&md.rtt_us, &|s| s.p50.to_string())),
            (
                "MOS in (mean, min)",
                opt(&md.mos_in, &|s| format!("{}, {}", s.mean, s.min)),
            ),
            (
                "MOS out (mean, min)",
                opt(&md.mos_out, &|s| format!("{}, {}", s.mean, s.min)),
            ),
            ("one-way audio calls", md.one_way.to_string()),
            ("silent calls", md.silent.to_string()),
        ] {
            let _ = writeln!(m, "| {k} | {v} |");
        }
        if let Some(p) = &self.prompt {
            let _ = writeln!(
                m,
                "\n## Prompt check\n\n{} checked, {} passed, {} failed{}.",
                p.checked,
                p.passed,
                p.failed,
                opt(&p.score, &|s| format!(
                    " (score min {}, p50 {})",
                    s.min, s.p50
                ))
            );
        }
        if let Some(d) = &self.dtmf {
            let _ = writeln!(
                m,
                "\n## DTMF round trip\n\nSent `{}`, expected back `{}`: {} matched, {} did not.",
                d.sent, d.expected, d.matched, d.mismatched
            );
        }
        let g = &self.generator;
        let us = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
        let _ = writeln!(
            m,
            "\n## The generator\n\nMedia workers: {} ({} at real-time priority); {} deadlines served, lateness p50 ≤ {} µs, p99 ≤ {} µs (limit {} µs), worst ≤ {} µs; {} datagrams not sent. {}",
            g.media_workers,
            g.realtime_workers,
            g.deadlines,
            us(g.lateness_p50_us),
            us(g.lateness_p99_us),
            g.limit_p99_us,
            us(g.lateness_max_us),
            g.send_failed,
            if g.valid {
                "Valid run."
            } else {
                "**Invalid run.**"
            }
        );
        if !self.thresholds.is_empty() {
            let _ = writeln!(
                m,
                "\n## Thresholds\n\n| threshold | limit | value | result |\n|---|---|---|---|"
            );
            for t in &self.thresholds {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} |",
                    t.name,
                    t.limit,
                    t.value.map_or_else(|| "n/a".to_owned(), |v| v.to_string()),
                    if t.passed { "pass" } else { "FAIL" }
                );
            }
        }
        m
    }
}

/// The most calls up at once, from the rows' start and end instants.
fn peak(rows: &[CallRow]) -> u64 {
    let mut edges: Vec<(u64, i64)> = Vec::with_capacity(rows.len() * 2);
    for r in rows {
        edges.push((r.started_ms, 1));
        edges.push((r.ended_ms.unwrap_or(u64::MAX), -1));
    }
    // Ends before starts at the same ms.
    edges.sort();
    let (mut up, mut most) = (0i64, 0i64);
    for (_, d) in edges {
        up += d;
        most = most.max(up);
    }
    most as u64
}

/// The per-call rows as CSV (a header, then one line per call in start order).
pub fn csv(rows: &[CallRow]) -> String {
    let mut out = String::new();
    let mut header = true;
    for r in rows {
        let Ok(serde_json::Value::Object(map)) = serde_json::to_value(r) else {
            continue;
        };
        if header {
            let names: Vec<&str> = map.keys().map(String::as_str).collect();
            out.push_str(&names.join(","));
            out.push('\n');
            header = false;
        }
        let cells: Vec<String> = map
            .values()
            .map(|v| match v {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => csv_cell(s),
                other => other.to_string(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// A CSV cell: quoted when it holds a comma, a quote or a line break; a leading `=`, `+`, `-`
/// or `@` is prefixed with `'` so a spreadsheet does not run it as a formula.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Second {
    /// Seconds from the run's start.
    pub t: u64,
    /// Calls started, answered and ended (answered or not) in it.
    pub started: u64,
    pub answered: u64,
    pub ended: u64,
    /// Of those ended, unanswered.
    pub failed: u64,
    /// Calls up at its end.
    pub active: u64,
}

/// The run second by second (from the rows' instants).
pub fn time_series(rows: &[CallRow]) -> Vec<Second> {
    let last = rows
        .iter()
        .filter_map(|r| r.ended_ms.or(Some(r.started_ms)))
        .max()
        .unwrap_or(0);
    let mut seconds: Vec<Second> = (0..=last / 1000)
        .map(|t| Second {
            t,
            ..Second::default()
        })
        .collect();
    for r in rows {
        let at = |ms: u64| (ms / 1000) as usize;
        seconds[at(r.started_ms)].started += 1;
        if let Some(a) = r.answer_ms {
            let i = at(r.started_ms + a as u64).min(seconds.len() - 1);
            seconds[i].answered += 1;
        }
        if let Some(e) = r.ended_ms {
            seconds[at(e)].ended += 1;
            if !r.answered() {
                seconds[at(e)].failed += 1;
            }
        }
        let end = r.ended_ms.map_or(seconds.len(), at);
        for s in seconds.iter_mut().take(end).skip(at(r.started_ms)) {
            s.active += 1;
        }
    }
    seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(index: u64, started: u64, ended: u64, status: u16, answer: Option<f64>) -> CallRow {
        let mut r = CallRow::new(index, started);
        r.ended_ms = Some(ended);
        r.final_kind = if answer.is_some() {
            "call.completed"
        } else {
            "call.failed"
        }
        .to_owned();
        r.sip_status = Some(status);
        r.answer_ms = answer;
        r.outcome = if answer.is_some() { "answered" } else { "busy" }.to_owned();
        r.end_reason = "LocalBye".to_owned();
        r
    }

    fn facts(thresholds: Thresholds, p99_bucket: usize) -> RunFacts {
        let mut lateness = LatenessHistogram {
            buckets: [0; crate::net::media_workers::LATE_BUCKETS],
        };
        lateness.buckets[p99_bucket] = 100;
        RunFacts {
            settings: RunSettings::default(),
            elapsed_s: 3.0,
            lateness,
            lateness_limit_us: 2_000,
            media_workers: 1,
            realtime_workers: 0,
            send_failed: 0,
            thresholds,
            expect_dtmf: None,
            prompt_check: false,
        }
    }

    #[test]
    fn spread_is_nearest_rank() {
        let s = Spread::of((1..=100).map(f64::from).collect()).expect("values");
        assert_eq!(
            (s.p50, s.p95, s.p99, s.max, s.min),
            (50.0, 95.0, 99.0, 100.0, 1.0)
        );
        assert_eq!(s.mean, 50.5);
        assert_eq!(Spread::of(vec![]), None);
    }

    #[test]
    fn counts_status_mix_peak_and_thresholds() {
        let mut rows = vec![
            row(0, 0, 2000, 200, Some(10.0)),
            row(1, 500, 2500, 200, Some(30.0)),
            row(2, 1000, 1010, 486, None),
            row(3, 1500, 3500, 200, Some(20.0)),
        ];
        rows[0].expected_in = 100;
        rows[0].lost_in = 2;
        rows[1].expected_in = 100;
        let report = Report::build(
            &rows,
            facts(
                Thresholds {
                    max_loss_percent: Some(0.5),
                    max_setup_p99_ms: Some(50.0),
                    min_answer_rate: Some(70.0),
                    ..Thresholds::default()
                },
                0,
            ),
        );
        assert_eq!(report.calls.attempted, 4);
        assert_eq!(report.calls.answered, 3);
        assert_eq!(report.calls.unanswered, 1);
        assert_eq!(report.status_mix.get("200"), Some(&3));
        assert_eq!(report.status_mix.get("486"), Some(&1));
        assert_eq!(report.media.loss_percent, 1.0);
        assert_eq!(report.peak_concurrency, 3);
        assert_eq!(report.cps_achieved, 2.0);
        assert_eq!(report.answer_rate_percent, 75.0);
        let results: Vec<(&str, bool)> = report
            .thresholds
            .iter()
            .map(|t| (t.name, t.passed))
            .collect();
        assert_eq!(
            results,
            vec![
                ("max-loss", false),
                ("max-setup-p99", true),
                ("min-answer-rate", true)
            ]
        );
        assert!(report.generator.valid);
        assert!(!report.passed);
        let series = time_series(&rows);
        assert_eq!(series.len(), 4);
        assert_eq!(series.iter().map(|s| s.started).sum::<u64>(), 4);
        assert_eq!(series[1].active, 3);
        assert_eq!(series[1].failed, 1);
        let csv = csv(&rows);
        assert_eq!(csv.lines().count(), 5);
        assert!(csv.lines().next().is_some_and(|h| h.contains("sip_status")));
    }

    #[test]
    fn a_generator_behind_its_schedule_makes_the_run_invalid() {
        let rows = vec![row(0, 0, 2000, 200, Some(10.0))];
        // All deadlines 5.0-5.1 ms late.
        let report = Report::build(&rows, facts(Thresholds::default(), 50));
        assert!(!report.generator.valid);
        assert!(!report.passed);
        assert!(report.markdown().contains("INVALID RUN"));
        let ok = Report::build(&rows, facts(Thresholds::default(), 5));
        assert!(ok.generator.valid && ok.passed);
    }

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("=1+1"), "'=1+1");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
