//! A call's status fields, derived from its events only (pure: no SQL, no clock).
//!
//! [`apply`] folds one timeline event into a [`CallRecord`]. The store calls it inside the
//! transaction that appends the event, so the row and the timeline never disagree, and a row
//! rebuilt by folding the stored timeline from scratch equals the stored row (a conformance
//! test checks exactly that).

use serde_json::{Value, json};

use super::{CallRecord, CallStatus, StoredEvent};

/// Folds one event into the call row. Events after the final one change nothing: the
/// evidence of an ended call is immutable.
pub fn apply(call: &mut CallRecord, kind: &str, at_unix_us: i64, details: &Value) {
    if call.status.is_final() {
        return;
    }
    let int = |key: &str| details.get(key).and_then(Value::as_i64);
    // Text copied into columns comes from peers (a reason phrase): NUL is dropped, since
    // PostgreSQL refuses it in TEXT and one refused event would stall the timeline behind it.
    let text = |key: &str| {
        details
            .get(key)
            .and_then(Value::as_str)
            .map(|s| s.replace('\0', ""))
    };
    match kind {
        "call.created" => {
            call.status = CallStatus::Dialing;
            call.started_at_us.get_or_insert(at_unix_us);
            if let Some(id) = text("sip_call_id") {
                call.sip_call_id = Some(id);
            }
        }
        "sip.invite_sent" | "sip.trying" if call.status == CallStatus::Queued => {
            call.status = CallStatus::Dialing;
        }
        "sip.ringing" | "sip.early_media" => {
            if matches!(call.status, CallStatus::Queued | CallStatus::Dialing) {
                call.status = CallStatus::Ringing;
            }
            call.ringing_at_us.get_or_insert(at_unix_us);
        }
        "sip.answered" => {
            call.status = CallStatus::Answered;
            call.answered_at_us.get_or_insert(at_unix_us);
            call.sip_status = int("sip_status").or(Some(200));
        }
        "call.completed" | "call.failed" => {
            call.status = if kind == "call.completed" {
                CallStatus::Completed
            } else {
                CallStatus::Failed
            };
            call.ended_at_us = Some(at_unix_us);
            call.outcome = text("outcome");
            if let Some(status) = int("sip_status") {
                call.sip_status = Some(status);
            }
            call.sip_reason = text("reason").or(call.sip_reason.take());
            call.q850_cause = int("q850_cause");
            call.talk_ms = int("duration_ms");
            call.end_reason = text("end_reason").or_else(|| text("hangup_reason"));
            let mut result = serde_json::Map::new();
            for key in ["digits", "script"] {
                if let Some(v) = details.get(key).filter(|v| !v.is_null()) {
                    result.insert(key.to_owned(), v.clone());
                }
            }
            if !result.is_empty() {
                call.result = Some(Value::Object(result));
            }
        }
        _ => {}
    }
}

/// Event details as a tenant sees them (API, SSE, manifests, webhooks): no filesystem path of
/// the server. A string `path` is removed from the details, from `details.recording` and from
/// each of `details.recordings` (recording and prompt events, the final event); where
/// `recording_id(path)` names the recording row, `recording_id`, `url` and `audio_url` take its
/// place. In `error` and `recording_error` texts, every word that starts with `/` becomes
/// `<path>`. The stored event keeps the path (the recording rows and the operator need it);
/// this is applied on the way out (docs/api.md "Recording paths").
pub fn public_details(details: &Value, recording_id: &dyn Fn(&str) -> Option<String>) -> Value {
    let mut out = details.clone();
    let Some(map) = out.as_object_mut() else {
        return out;
    };
    redact_path(map, recording_id);
    if let Some(Value::Object(rec)) = map.get_mut("recording") {
        redact_path(rec, recording_id);
    }
    if let Some(Value::Array(recs)) = map.get_mut("recordings") {
        for rec in recs.iter_mut().filter_map(Value::as_object_mut) {
            redact_path(rec, recording_id);
        }
    }
    for key in ["error", "recording_error"] {
        if let Some(Value::String(text)) = map.get_mut(key) {
            *text = hide_paths(text);
        }
    }
    out
}

fn redact_path(
    map: &mut serde_json::Map<String, Value>,
    recording_id: &dyn Fn(&str) -> Option<String>,
) {
    let Some(Value::String(path)) = map.get("path") else {
        return;
    };
    let id = recording_id(path);
    map.remove("path");
    if let Some(id) = id {
        map.insert("url".to_owned(), json!(format!("/v1/recordings/{id}")));
        map.insert(
            "audio_url".to_owned(),
            json!(format!("/v1/recordings/{id}/audio")),
        );
        map.insert("recording_id".to_owned(), json!(id));
    }
}

/// `text` with every space-separated word that starts with `/` (after an opening quote or
/// bracket) replaced by `<path>`.
fn hide_paths(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            // A path may be quoted (`"/srv/x.wav"`, a Debug-printed path) or parenthesised.
            if word
                .trim_start_matches(['"', '\'', '(', '<', '['])
                .starts_with('/')
            {
                // Keep the punctuation an error message puts after a path (`/x.wav:`).
                match word.strip_suffix(':') {
                    Some(_) => "<path>:",
                    None => "<path>",
                }
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `end_reason`s of calls a stopped process left live, ended at the next start (or by
/// another node): their end time was not observed but estimated ([`estimated_end`]).
pub const ESTIMATED_END_REASONS: [&str; 2] = ["process_restart", "node_lost"];

/// Whether a call's end time is an estimate (it was ended for a process that died).
pub fn end_is_estimated(end_reason: Option<&str>) -> bool {
    end_reason.is_some_and(|r| ESTIMATED_END_REASONS.contains(&r))
}

/// What is known of a call whose process died during it: each a time it was still live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastKnown {
    /// Its last stored event.
    pub last_event_us: Option<i64>,
    /// The last heartbeat of the node that ran it.
    pub heartbeat_us: Option<i64>,
    /// The last frame of its recovered recording(s): start + duration.
    pub recording_end_us: Option<i64>,
}

/// The end of a call whose process died: the latest thing known about it (never the time of
/// the restart, which would bill the downtime), at least its start and at most `now_us`; and
/// which evidence gave it (`last_event`, `heartbeat`, `recording`, else `answered`, `started`
/// or `created`).
pub fn estimated_end(call: &CallRecord, known: &LastKnown, now_us: i64) -> (i64, &'static str) {
    let mut best = match (call.answered_at_us, call.started_at_us) {
        (Some(at), _) => (at, "answered"),
        (None, Some(at)) => (at, "started"),
        (None, None) => (call.created_at_us, "created"),
    };
    for (at, source) in [
        (known.last_event_us, "last_event"),
        (known.heartbeat_us, "heartbeat"),
        (known.recording_end_us, "recording"),
    ] {
        if let Some(at) = at
            && at > best.0
        {
            best = (at, source);
        }
    }
    (best.0.min(now_us), best.1)
}

/// The JSON body of a webhook delivery for a stored event (fixed at enqueue time); its `data`
/// is [`public_details`] (no server paths; a webhook names no recording id yet).
pub fn webhook_body(event: &StoredEvent) -> String {
    json!({
        "id": event.id,
        "type": event.kind,
        "call_id": event.call_id,
        "campaign_id": event.campaign_id,
        "tenant_id": event.tenant_id,
        "at_unix_us": event.at_unix_us,
        "offset_us": event.offset_us,
        "data": public_details(&event.details, &|_| None),
    })
    .to_string()
}

/// Whether a webhook subscribed to `kinds` (empty: all; `call.*` matches a prefix) wants `kind`.
pub fn webhook_wants(kinds: &[String], kind: &str) -> bool {
    kinds.is_empty()
        || kinds.iter().any(|k| match k.strip_suffix('*') {
            Some(prefix) => kind.starts_with(prefix),
            None => k == kind,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_details_carry_no_server_paths() {
        let details = json!({
            "path": "/srv/cp/recordings/call_1.wav", "sha256": "ab",
            "recording": {"path": "/srv/cp/recordings/call_1.wav", "bytes": 44},
            "recordings": [{"path": "/srv/cp/recordings/call_1.wav"}, {"path": "/elsewhere.wav"}],
            "error": "prompt /srv/cp/prompts/ten_1/x.wav: file not found",
            "script": {"path": ["steps[0]"]},
        });
        let known = |p: &str| (p == "/srv/cp/recordings/call_1.wav").then(|| "rec_1".to_owned());
        let shown = public_details(&details, &known);
        assert!(!shown.to_string().contains("/srv"), "{shown}");
        assert_eq!(shown["recording_id"], "rec_1");
        assert_eq!(shown["url"], "/v1/recordings/rec_1");
        assert_eq!(
            shown["recording"]["audio_url"],
            "/v1/recordings/rec_1/audio"
        );
        assert_eq!(shown["recordings"][1], json!({}));
        assert_eq!(shown["error"], "prompt <path>: file not found");
        let quoted = public_details(
            &json!({"error": "cannot open \"/srv/a b.wav\": gone"}),
            &known,
        );
        assert!(!quoted.to_string().contains("/srv"), "{quoted}");
        // A script's step path is not a file path.
        assert_eq!(shown["script"], details["script"]);
        assert_eq!(shown["sha256"], "ab");
    }
    use crate::store::NewCall;

    fn call() -> CallRecord {
        CallRecord::queued(
            "call_1",
            NewCall::outbound("ten_1", "sip:1@127.0.0.1", "sip:cp@127.0.0.1", 1),
        )
    }

    #[test]
    fn an_answered_call_takes_its_times_and_outcome_from_its_events() {
        let mut c = call();
        apply(&mut c, "call.created", 10, &json!({"sip_call_id": "abc"}));
        apply(&mut c, "sip.ringing", 20, &json!({"sip_status": 180}));
        assert_eq!(c.status, CallStatus::Ringing);
        apply(&mut c, "sip.answered", 30, &json!({"sip_status": 200}));
        assert_eq!(c.status, CallStatus::Answered);
        apply(
            &mut c,
            "call.completed",
            5030,
            &json!({"outcome": "answered", "duration_ms": 5, "digits": "12", "end_reason": "RemoteBye"}),
        );
        assert_eq!(c.status, CallStatus::Completed);
        assert_eq!(c.sip_call_id.as_deref(), Some("abc"));
        assert_eq!(
            (
                c.started_at_us,
                c.ringing_at_us,
                c.answered_at_us,
                c.ended_at_us
            ),
            (Some(10), Some(20), Some(30), Some(5030))
        );
        assert_eq!(c.outcome.as_deref(), Some("answered"));
        assert_eq!(c.sip_status, Some(200));
        assert_eq!(c.talk_ms, Some(5));
        assert_eq!(c.result, Some(json!({"digits": "12"})));
    }

    #[test]
    fn a_busy_call_keeps_the_status_and_cause_of_its_final_response() {
        let mut c = call();
        apply(&mut c, "call.created", 10, &json!({}));
        apply(
            &mut c,
            "call.failed",
            20,
            &json!({"outcome": "busy", "sip_status": 486, "reason": "Busy Here", "q850_cause": 17}),
        );
        assert_eq!(c.status, CallStatus::Failed);
        assert_eq!(c.sip_status, Some(486));
        assert_eq!(c.sip_reason.as_deref(), Some("Busy Here"));
        assert_eq!(c.q850_cause, Some(17));
        assert_eq!(c.answered_at_us, None);
    }

    #[test]
    fn nul_characters_from_a_peer_do_not_reach_the_call_row() {
        let mut c = call();
        apply(
            &mut c,
            "call.failed",
            20,
            &json!({"outcome": "busy", "sip_status": 486, "reason": "Bu\u{0}sy"}),
        );
        assert_eq!(c.sip_reason.as_deref(), Some("Busy"));
    }

    #[test]
    fn nothing_changes_an_ended_call() {
        let mut c = call();
        apply(&mut c, "call.failed", 20, &json!({"outcome": "busy"}));
        let before = c.clone();
        apply(&mut c, "sip.answered", 30, &json!({}));
        apply(
            &mut c,
            "call.completed",
            40,
            &json!({"outcome": "answered"}),
        );
        assert_eq!(c, before);
    }

    #[test]
    fn a_crashed_call_ends_at_the_latest_thing_known_never_at_the_restart() {
        let mut c = call();
        apply(&mut c, "call.created", 1_000_000, &json!({}));
        apply(&mut c, "sip.answered", 2_000_000, &json!({}));
        let known = LastKnown {
            last_event_us: Some(2_100_000),
            heartbeat_us: Some(5_000_000),
            recording_end_us: Some(7_700_000),
        };
        assert_eq!(
            estimated_end(&c, &known, 20_000_000),
            (7_700_000, "recording")
        );
        let known = LastKnown {
            recording_end_us: None,
            ..known
        };
        assert_eq!(
            estimated_end(&c, &known, 20_000_000),
            (5_000_000, "heartbeat")
        );
        // A heartbeat from before the answer says nothing: the answer is the floor.
        let known = LastKnown {
            last_event_us: None,
            heartbeat_us: Some(500_000),
            recording_end_us: None,
        };
        assert_eq!(
            estimated_end(&c, &known, 20_000_000),
            (2_000_000, "answered")
        );
        // Nothing later than now, whatever a skewed clock wrote.
        let known = LastKnown {
            heartbeat_us: Some(99_000_000),
            ..LastKnown::default()
        };
        assert_eq!(
            estimated_end(&c, &known, 20_000_000),
            (20_000_000, "heartbeat")
        );
        assert!(end_is_estimated(Some("process_restart")));
        assert!(end_is_estimated(Some("node_lost")));
        assert!(!end_is_estimated(Some("RemoteBye")));
        assert!(!end_is_estimated(None));
    }

    #[test]
    fn webhook_filters_match_exact_kinds_and_prefixes() {
        assert!(webhook_wants(&[], "sip.answered"));
        assert!(webhook_wants(&["call.*".into()], "call.completed"));
        assert!(!webhook_wants(&["call.*".into()], "sip.answered"));
        assert!(webhook_wants(&["sip.answered".into()], "sip.answered"));
        assert!(!webhook_wants(&["sip.answered".into()], "sip.answering"));
    }
}
