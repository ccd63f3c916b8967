//! Campaigns end to end (#10): `callplane serve` dials a campaign through a trunk to a sipp UAS
//! (`tests/fixtures/sipp/campaign_uas.xml`) that answers, answers 486, or rings without
//! answering, depending on the number. The peer's own records are the reference:
//! - at most `max_concurrent` calls were ever live at the callee: sipp's `CurrentCall` counter
//!   (sampled every 200 ms) and the exact interval of every call in its message trace;
//! - every contact ends in the state its outcome dictates (answered → completed; busy and no
//!   answer → exhausted after their retries), with as many INVITEs at the callee as attempts;
//! - retries wait as the campaign's rules say (shortened to 1 s);
//! - the slot-to-INVITE latency while the campaign is saturated, at the peer and on our own
//!   timeline (printed: the figures of docs/campaigns/e2e.md).
//!
//! Real processes on loopback: serve (SQLite; the latency test on PostgreSQL too), sipp.

use std::time::Duration;

use serde_json::json;

mod common;
use common::campaign::*;
use common::*;

/// The campaign's concurrency limit.
const MAX_CONCURRENT: u32 = 10;
/// How long an answered call lasts (our script's pause before its hangup), ms.
const HOLD_MS: u32 = 1000;
/// Our ring timeout for the numbers that never answer, s.
const RING_TIMEOUT_S: u32 = 2;
/// Contacts of the latency campaign.
const LATENCY_CONTACTS: u32 = 80;
/// The median slot-to-call latency above which the test fails, ms.
const SLOT_MEDIAN_LIMIT_MS: f64 = 400.0;
/// Upper bound for one campaign to complete.
const CAMPAIGN_WAIT: Duration = Duration::from_secs(150);

/// The tenant's per-number cap raised well above the tests' attempts (the default, 3 per
/// 24 h, would defer a number the test dials more often by a day).
async fn raise_number_cap(api: &ServeClient) {
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            "/v1/settings/limits",
            Some(&json!({"number_cap": 100, "number_cap_window_s": 86400})),
        )
        .await;
    assert_eq!(status, 200, "PUT /v1/settings/limits: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_of_200_holds_max_concurrent_at_the_peer_and_ends_every_contact_by_its_outcome() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let callee = Callee::start(dir.path()).await;
    let serve = Serve::start(
        dir.path(),
        &dir.path().join("data"),
        None,
        &[],
        &dir.path().join("serve.log"),
    )
    .await;
    let key = serve.bootstrap_key.clone().expect("a bootstrap key");
    let api = ServeClient::new(serve.base.clone(), key);
    raise_number_cap(&api).await;

    let phones = numbers(&[
        (Behaviour::Answer, 150),
        (Behaviour::Busy, 30),
        (Behaviour::NoAnswer, 20),
    ]);
    assert_eq!(phones.len(), 200);
    let campaign = setup_campaign(
        &api,
        &callee.address(),
        HOLD_MS,
        |trunk, script| {
            campaign_settings(
                "e2e",
                trunk,
                script,
                MAX_CONCURRENT,
                RING_TIMEOUT_S,
                standard_retry(),
            )
        },
        &phones,
    )
    .await;
    let started = std::time::Instant::now();
    campaign_action(&api, &campaign, "start").await;
    let done = wait_completed(&api, &campaign, CAMPAIGN_WAIT).await;
    let took = started.elapsed();
    let contacts = results(&api, &campaign).await;
    let duplicates = duplicate_dials(&api, &callee.record(), &contacts).await;
    let peer = callee.stop().await;

    // The limit, at the peer.
    let (most, at) = peer.max_live();
    eprintln!(
        "{} calls at the callee in {took:?}; at most {most} open at once (at {at:.3}); sipp's \
         CurrentCall at most {} over {} samples",
        peer.calls.len(),
        peer.max_current_call(),
        peer.current_call_samples.len()
    );
    assert!(
        peer.current_call_samples.len() >= 10,
        "sipp wrote its statistics every 200 ms: {} rows",
        peer.current_call_samples.len()
    );
    assert!(
        peer.max_current_call() as usize <= MAX_CONCURRENT as usize,
        "sipp counted {} calls at once (limit {MAX_CONCURRENT}): {:?}",
        peer.max_current_call(),
        peer.current_call_samples
    );
    assert!(
        most <= MAX_CONCURRENT as usize,
        "{most} calls were open at the callee at once at {at:.3} (limit {MAX_CONCURRENT})"
    );
    // And the limit was reached: a campaign that never fills its slots proves nothing.
    assert_eq!(
        most, MAX_CONCURRENT as usize,
        "the campaign never ran {MAX_CONCURRENT} calls at once"
    );
    let unended: Vec<&str> = peer
        .calls
        .iter()
        .filter(|c| !c.ended)
        .map(|c| c.sip_call_id.as_str())
        .collect();
    assert!(
        unended.is_empty(),
        "calls left open at the callee: {unended:?}"
    );

    // Every contact in the state its outcome dictates, each attempt with its rule.
    assert_eq!(contacts.len(), phones.len(), "every contact in the results");
    let by_number = peer.by_number();
    let mut wrong = Vec::new();
    for c in &contacts {
        let behaviour = Behaviour::of(c.phone());
        let (status, attempts, outcome) = expected_end(behaviour);
        let dialed = by_number.get(c.phone()).map_or(0, Vec::len);
        if c.status() != status
            || c.attempt_count() != attempts
            || c.contact["last_outcome"] != outcome
            || c.attempts.len() as u64 != attempts
            || dialed as u64 != attempts
        {
            wrong.push(format!(
                "{} ({behaviour:?}): {} after {} attempts ({} listed, {dialed} INVITEs at the \
                 callee), last outcome {}; expected {status} after {attempts}, {outcome}",
                c.phone(),
                c.status(),
                c.attempt_count(),
                c.attempts.len(),
                c.contact["last_outcome"]
            ));
        }
        for a in &c.attempts {
            if a["outcome"].is_null() || a["rule"].is_null() {
                wrong.push(format!(
                    "{}: an attempt without outcome or rule: {a}",
                    c.phone()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} contacts ended wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(duplicates.is_empty(), "{}", duplicates.join("\n"));
    let by_status = &done["progress"]["contacts"];
    assert_eq!(by_status["completed"], 150, "counts: {done}");
    assert_eq!(by_status["exhausted"], 50, "counts: {done}");

    // Retries waited their delay (the callee's final answer → the next INVITE of the number).
    let mut early = Vec::new();
    let mut gaps = Vec::new();
    for (number, calls) in &by_number {
        for pair in calls.windows(2) {
            let freed = pair[0]
                .freed_at
                .expect("a retried call has its final answer");
            let gap = pair[1].invite_at - freed;
            gaps.push(gap);
            if gap < RETRY_AFTER_S as f64 - 0.05 {
                early.push(format!(
                    "{number}: retried {gap:.3} s after its last answer"
                ));
            }
        }
    }
    eprintln!(
        "{} retries, gap after the last answer p50 {:.3} s, max {:.3} s",
        gaps.len(),
        quantile(&gaps, 0.5),
        quantile(&gaps, 1.0)
    );
    assert_eq!(
        gaps.len(),
        30 * BUSY_RETRIES as usize + 20 * NO_ANSWER_RETRIES as usize
    );
    assert!(early.is_empty(), "retries before their delay: {early:?}");
}

/// Slot-to-INVITE latency while a campaign of answered calls is saturated, at the peer (our
/// BYE arrives → the next INVITE arrives) and on our timeline (a call's final event → the next
/// `call.created`), on each database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_to_invite_latency_at_saturation() {
    if !sipp_available() {
        return;
    }
    let mut databases: Vec<(&str, Option<String>)> = vec![("sqlite", None)];
    if let Some(url) = db::pg_url_for_tests() {
        databases.push(("postgres", Some(url)));
    }
    let mut failures = Vec::new();
    for (name, url) in databases {
        let dir = tempfile::tempdir().expect("tempdir");
        let callee = Callee::start(dir.path()).await;
        let serve = Serve::start(
            dir.path(),
            &dir.path().join("data"),
            url.as_deref(),
            &[],
            &dir.path().join("serve.log"),
        )
        .await;
        let api = ServeClient::new(
            serve.base.clone(),
            serve.bootstrap_key.clone().expect("key"),
        );
        raise_number_cap(&api).await;
        // Calls long enough (2 s) that the worker keeps all slots busy even on a loaded
        // machine: only slots freed while all are busy are samples.
        let phones = numbers(&[(Behaviour::Answer, LATENCY_CONTACTS)]);
        let campaign = setup_campaign(
            &api,
            &callee.address(),
            2000,
            |trunk, script| {
                campaign_settings(
                    "latency",
                    trunk,
                    script,
                    MAX_CONCURRENT,
                    RING_TIMEOUT_S,
                    standard_retry(),
                )
            },
            &phones,
        )
        .await;
        campaign_action(&api, &campaign, "start").await;
        wait_completed(&api, &campaign, CAMPAIGN_WAIT).await;
        let peer = callee.stop().await;
        let at_peer = peer.slot_latencies();
        let ours = serve.slot_latencies();
        let ms = |xs: &[f64], q| quantile(xs, q) * 1000.0;
        eprintln!(
            "{name}: slot-to-INVITE at the peer: {} samples, p50 {:.1} ms, p99 {:.1} ms, max \
             {:.1} ms; final event to call.created on our timeline: {} samples, p50 {:.1} ms, \
             p99 {:.1} ms, max {:.1} ms",
            at_peer.len(),
            ms(&at_peer, 0.5),
            ms(&at_peer, 0.99),
            ms(&at_peer, 1.0),
            ours.len(),
            ms(&ours, 0.5),
            ms(&ours, 0.99),
            ms(&ours, 1.0),
        );
        // Every contact but the first MAX_CONCURRENT reuses a freed slot.
        let expected = (LATENCY_CONTACTS - MAX_CONCURRENT) as usize;
        if at_peer.len() != expected || ours.len() != expected {
            failures.push(format!(
                "{name}: {expected} reused slots expected, peer saw {}, our timeline {}",
                at_peer.len(),
                ours.len()
            ));
        }
        // The next call starts when a slot frees (the call's end event), not on the worker's
        // 1 s refresh, which would make the median about 500 ms. (The 50 ms target is for an
        // idle machine; the figures above are what this run measured.)
        if ms(&ours, 0.5) > SLOT_MEDIAN_LIMIT_MS {
            failures.push(format!(
                "{name}: median slot-to-call {:.1} ms on our timeline (> {SLOT_MEDIAN_LIMIT_MS} \
                 ms: is the next call waiting for a polling interval?)",
                ms(&ours, 0.5)
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn peer_record_reads_sipp_traces() {
    let msgs = "\
d\tt\t10.0\tR\tA\tCSeq:1 INVITE\tINVITE sip:+33640000001@127.0.0.1:5 SIP/2.0
d\tt\t10.1\tS\tA\tCSeq:1 INVITE\tSIP/2.0 200 OK
d\tt\t10.2\tR\tA\tCSeq:1 ACK\tACK sip:x SIP/2.0
d\tt\t10.5\tR\tB\tCSeq:1 INVITE\tINVITE sip:+33641000001@127.0.0.1:5 SIP/2.0
d\tt\t10.6\tS\tB\tCSeq:1 INVITE\tSIP/2.0 486 Busy Here
d\tt\t10.7\tR\tB\tCSeq:1 ACK\tACK sip:x SIP/2.0
d\tt\t11.0\tR\tA\tCSeq:2 BYE\tBYE sip:x SIP/2.0
d\tt\t11.0\tS\tA\tCSeq:2 BYE\tSIP/2.0 200 OK
d\tt\t11.1\tR\tC\tCSeq:1 INVITE\tINVITE sip:+33640000002@127.0.0.1:5 SIP/2.0
";
    let stats = "a;CurrentCall;b\nx;1;y\nx;2;y\n";
    let r = PeerRecord::parse(msgs, stats);
    assert_eq!(r.calls.len(), 3);
    assert_eq!(r.calls[0].number, "+33640000001");
    assert!(r.calls[0].ended && r.calls[1].ended && !r.calls[2].ended);
    assert_eq!(r.calls[1].final_status, Some(486));
    assert_eq!(r.max_live(), (2, 10.5));
    assert_eq!(r.max_current_call(), 2);
    // The first slot freed (the 486 at 10.6) is reused by the next INVITE (11.1); the
    // second (the BYE at 11.0) by none; the INVITEs before any freed slot are the ramp-up.
    let lat = r.slot_latencies();
    assert_eq!(lat.len(), 1);
    assert!((lat[0] - 0.5).abs() < 1e-9, "{lat:?}");
    let timeline = [
        json!({"kind": "call.created", "at_unix_us": 0}),
        json!({"kind": "call.created", "at_unix_us": 10}),
        json!({"kind": "call.failed", "at_unix_us": 100}),
        json!({"kind": "call.completed", "at_unix_us": 110}),
        json!({"kind": "call.created", "at_unix_us": 130}),
        json!({"kind": "call.created", "at_unix_us": 150}),
    ];
    let lat = timeline_slot_latencies(&timeline);
    assert_eq!(lat.len(), 2);
    assert!(
        (lat[0] - 30e-6).abs() < 1e-12 && (lat[1] - 40e-6).abs() < 1e-12,
        "{lat:?}"
    );
    assert_eq!(Behaviour::of("+33641000001"), Behaviour::Busy);
    assert_eq!(Behaviour::NoAnswer.number(7), "+33642000007");
    assert_eq!(
        numbers(&[(Behaviour::Answer, 2), (Behaviour::Busy, 1)]),
        ["+33640000000", "+33641000000", "+33640000001"]
    );
}
