//! One call of a load run, as its timeline events tell it: [`CallRow`] is built from the
//! engine's [`CallEvent`]s and nothing else, so every figure in a report comes from a SIP
//! message or an RTP packet the engine saw.

use serde::Serialize;
use serde_json::Value;

use crate::engine::CallEvent;

/// Below this much answered time a call is too short to judge its audio (the jitter buffer
/// has not started playing out yet).
const JUDGE_AUDIO_AFTER_MS: u64 = 1_000;

/// One call's row: the CSV line and the input of the aggregate.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CallRow {
    /// The call's number in the run (0, 1, 2 ... in the order they were started).
    pub index: u64,
    /// When it was started, ms from the run's start.
    pub started_ms: u64,
    /// The SIP Call-ID (what the peer's own records name the call by).
    pub sip_call_id: String,
    /// INVITE → first 100 Trying, ms.
    pub trying_ms: Option<f64>,
    /// INVITE → first 18x (ringing or early media), ms.
    pub ringing_ms: Option<f64>,
    /// INVITE → 200 OK, ms.
    pub answer_ms: Option<f64>,
    /// INVITE → the first RTP packet from the callee, ms: before `answer_ms` when it sent
    /// early media (a 183 with SDP, then audio), after it otherwise.
    pub first_audio_ms: Option<f64>,
    /// `call.completed` or `call.failed` (empty while the call is up).
    pub final_kind: String,
    /// The outcome (`answered`, `busy`, `no_answer` ...).
    pub outcome: String,
    /// The final SIP status of the INVITE (`None`: none came, e.g. a timeout).
    pub sip_status: Option<u16>,
    /// What ended it (`LocalBye`, `RemoteBye`, `rtp_timeout`, `max_duration` ...).
    pub end_reason: String,
    /// Answered time, ms.
    pub duration_ms: Option<u64>,
    /// When its final event came, ms from the run's start.
    pub ended_ms: Option<u64>,
    /// RTP packets received from the peer (valid, from the latched source).
    pub packets_in: u64,
    /// RTP packets sent.
    pub packets_out: u64,
    /// Packets the peer's sequence numbers say it sent (RFC 3550 expected).
    pub expected_in: u64,
    /// Packets lost on the way (network loss): never received, each counted once (from the
    /// call's `media.quality`; without one, RFC 3550's cumulative lost).
    pub lost_in: u64,
    /// Packets that arrived too late for playout.
    pub late_in: u64,
    /// Packets that arrived after a higher sequence number.
    pub reordered: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// The longest run of packets lost in a row.
    pub max_burst: u64,
    /// RFC 3550 interarrival jitter of the peer's stream (mean over the call), µs.
    pub jitter_us: Option<u64>,
    /// Round-trip time from RTCP (when the peer sends reports), µs.
    pub rtt_us: Option<u64>,
    /// E-model R of what we received.
    pub r_in: Option<f64>,
    /// MOS of what we received.
    pub mos_in: Option<f64>,
    /// Loss of what we sent, as the peer's RTCP receiver reports say, %.
    pub loss_out_percent: Option<f64>,
    /// Jitter of what we sent, as the peer reports it, µs.
    pub jitter_out_us: Option<u64>,
    /// MOS of what we sent, from the E-model on the peer's reported loss and jitter and the
    /// RTT (`None` when the peer sent no receiver report).
    pub mos_out: Option<f64>,
    /// Inbound audio played out, ms.
    pub played_ms: u64,
    /// Of that, voiced (above -45 dBFS), ms.
    pub voiced_ms: u64,
    /// Answered for a second or more and no RTP came from the peer.
    pub one_way: bool,
    /// Answered for a second or more, RTP came, and none of it was voiced.
    pub silent: bool,
    /// DTMF digits the far end sent us, in order (`dtmf.received`).
    pub dtmf_received: String,
    /// Prompt check: the normalised cross-correlation of what we heard with the reference.
    pub prompt_score: Option<f64>,
    /// Prompt check: where in what we heard the reference starts, ms.
    pub prompt_offset_ms: Option<f64>,
    /// Prompt check: whether it passed (`None`: no check).
    pub prompt_ok: Option<bool>,
    /// The recording of this call (kept for the prompt check), if any.
    #[serde(skip)]
    pub recording: Option<String>,
    /// Offsets of the SIP events the latencies come from, µs from the call's start.
    #[serde(skip)]
    invite_us: Option<u64>,
    /// Whether `expected_in`/`lost_in` came from the call's quality report.
    #[serde(skip)]
    loss_from_quality: bool,
}

impl CallRow {
    /// A row for call `index`, started `started_ms` into the run.
    pub fn new(index: u64, started_ms: u64) -> CallRow {
        CallRow {
            index,
            started_ms,
            ..Default::default()
        }
    }

    /// Whether its final event came.
    pub fn is_final(&self) -> bool {
        !self.final_kind.is_empty()
    }

    /// Whether it was answered.
    pub fn answered(&self) -> bool {
        self.answer_ms.is_some()
    }

    /// Takes in one of the call's events.
    pub fn apply(&mut self, event: &CallEvent) {
        let d = &event.details;
        let since_invite =
            |invite: Option<u64>| invite.map(|i| event.offset_us.saturating_sub(i) as f64 / 1000.0);
        match event.kind {
            "call.created" => {
                if let Some(id) = d.get("sip_call_id").and_then(Value::as_str) {
                    self.sip_call_id = id.to_owned();
                }
            }
            "sip.invite_sent" if self.invite_us.is_none() => {
                self.invite_us = Some(event.offset_us);
            }
            "sip.trying" if self.trying_ms.is_none() => {
                self.trying_ms = since_invite(self.invite_us);
            }
            "sip.ringing" | "sip.early_media" if self.ringing_ms.is_none() => {
                self.ringing_ms = since_invite(self.invite_us);
            }
            "sip.answered" if self.answer_ms.is_none() => {
                self.answer_ms = since_invite(self.invite_us);
            }
            "media.first_packet_in" if self.first_audio_ms.is_none() => {
                self.first_audio_ms = since_invite(self.invite_us);
            }
            "dtmf.received" => {
                if let Some(digit) = d.get("digit").and_then(Value::as_str) {
                    self.dtmf_received.push_str(digit);
                }
            }
            "recording.ready" => {
                self.recording = d.get("path").and_then(Value::as_str).map(str::to_owned);
            }
            "media.quality" if d.get("scope").and_then(Value::as_str) == Some("call") => {
                self.apply_quality(d);
            }
            "call.completed" | "call.failed" => self.apply_final(event.kind, d),
            _ => {}
        }
    }

    fn apply_quality(&mut self, d: &Value) {
        let u = |k: &str| d.get(k).and_then(Value::as_u64);
        let f = |k: &str| d.get(k).and_then(Value::as_f64);
        // The quality report's loss counts each packet once (RFC 3550's cumulative lost in the
        // final event is lowered by duplicates): it is the loss reported.
        if let (Some(expected), Some(lost)) = (u("expected"), u("lost")) {
            self.expected_in = expected;
            self.lost_in = lost;
            self.loss_from_quality = true;
        }
        self.late_in = u("late").unwrap_or(0);
        self.max_burst = u("max_burst").unwrap_or(0);
        self.jitter_us = u("jitter_us");
        self.rtt_us = u("rtt_us");
        self.r_in = f("r");
        self.mos_in = f("mos");
        if let Some(remote) = d.get("remote").filter(|r| !r.is_null()) {
            let loss = remote.get("loss_percent").and_then(Value::as_f64);
            let jitter = remote.get("jitter_us").and_then(Value::as_u64);
            self.loss_out_percent = loss;
            self.jitter_out_us = jitter;
            let codec = d
                .get("codec")
                .and_then(Value::as_str)
                .and_then(|n| media::codec::Codec::from_rtpmap(n, 8000, None));
            if let (Some(loss), Some(codec)) = (loss, codec) {
                // The far end's playout is unknown: its one-way delay is taken as half the RTT
                // (0 without one) plus its jitter, as a buffer sized to the jitter would add;
                // its concealment too: none, as ours (so that the same impairment gives the
                // same MOS in both directions).
                let delay_ms =
                    self.rtt_us.unwrap_or(0) as f64 / 2000.0 + jitter.unwrap_or(0) as f64 / 1000.0;
                let model = media::quality::EModel::for_codec(codec, false)
                    .with_loss(loss, 1.0)
                    .with_one_way_delay(delay_ms);
                self.mos_out = Some((model.mos() * 100.0).round() / 100.0);
            }
        }
    }

    fn apply_final(&mut self, kind: &str, d: &Value) {
        self.final_kind = kind.to_owned();
        let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        self.outcome = s("outcome");
        self.end_reason = s("end_reason");
        self.sip_status = d
            .get("sip_status")
            .and_then(Value::as_u64)
            .and_then(|v| u16::try_from(v).ok());
        self.duration_ms = d.get("duration_ms").and_then(Value::as_u64);
        if let Some(rtp) = d.get("rtp") {
            let u = |k: &str| rtp.get(k).and_then(Value::as_u64).unwrap_or(0);
            self.packets_in = u("packets_in");
            self.packets_out = u("packets_out");
            if !self.loss_from_quality {
                self.expected_in = u("expected_in");
                self.lost_in = u("lost_in");
            }
            self.reordered = u("reordered");
            self.duplicates = u("duplicates");
            self.played_ms = u("played_ms");
            self.voiced_ms = u("voiced_ms");
        }
        let judged = self.duration_ms.unwrap_or(0) >= JUDGE_AUDIO_AFTER_MS;
        self.one_way = judged && self.packets_in == 0;
        self.silent = judged && self.packets_in > 0 && self.voiced_ms == 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::CallId;
    use serde_json::json;

    fn event(kind: &'static str, offset_ms: u64, details: Value) -> CallEvent {
        CallEvent {
            call_id: CallId(1),
            kind,
            at_unix_us: 0,
            offset_us: offset_ms * 1000,
            details,
            tag: None,
        }
    }

    #[test]
    fn latencies_count_from_the_first_invite_and_take_the_first_of_each() {
        let mut row = CallRow::new(0, 0);
        for e in [
            event("sip.invite_sent", 5, json!({})),
            event("sip.trying", 7, json!({})),
            event("sip.invite_sent", 9, json!({})),
            event("sip.early_media", 25, json!({})),
            event("sip.ringing", 30, json!({})),
            event("sip.answered", 105, json!({})),
        ] {
            row.apply(&e);
        }
        assert_eq!(row.trying_ms, Some(2.0));
        assert_eq!(row.ringing_ms, Some(20.0));
        assert_eq!(row.answer_ms, Some(100.0));
    }

    #[test]
    fn the_final_event_decides_one_way_and_silent_calls() {
        let final_with = |packets_in: u64, voiced: u64, duration: u64| {
            let mut row = CallRow::new(0, 0);
            row.apply(&event(
                "call.completed",
                0,
                json!({"outcome": "answered", "sip_status": 200, "duration_ms": duration,
                       "end_reason": "LocalBye",
                       "rtp": {"packets_in": packets_in, "packets_out": 50, "expected_in": packets_in,
                               "lost_in": 0, "voiced_ms": voiced, "played_ms": packets_in * 20}}),
            ));
            (row.one_way, row.silent)
        };
        assert_eq!(final_with(0, 0, 2000), (true, false));
        assert_eq!(final_with(100, 0, 2000), (false, true));
        assert_eq!(final_with(100, 1500, 2000), (false, false));
        // Too short to judge.
        assert_eq!(final_with(0, 0, 500), (false, false));
    }

    #[test]
    fn the_outbound_mos_comes_from_the_peers_report() {
        let mut row = CallRow::new(0, 0);
        let quality = |loss: f64| {
            json!({"scope": "call", "codec": "PCMU", "mos": 4.4, "r": 93.2, "jitter_us": 100,
                   "rtt_us": 2000, "late": 0, "max_burst": 0,
                   "remote": {"loss_percent": loss, "jitter_us": 500, "cumulative_lost": 0}})
        };
        row.apply(&event("media.quality", 0, quality(0.0)));
        let clean = row.mos_out.expect("a MOS from the report");
        row.apply(&event("media.quality", 0, quality(5.0)));
        let lossy = row.mos_out.expect("a MOS from the report");
        assert!(clean > 4.0 && lossy < clean - 0.5, "{clean} {lossy}");
        // An interval report is not the call's.
        let mut other = CallRow::new(0, 0);
        let mut q = quality(0.0);
        q["scope"] = json!("interval");
        other.apply(&event("media.quality", 0, q));
        assert_eq!(other.mos_in, None);
    }
}
