//! close_orphans dates the end of a call its dead node left live at the last thing known of it.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::store::{EventFilter, NewCall, Store};

async fn bus() -> (Bus, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::open_sqlite(&dir.path().join("cp.db"))
            .await
            .expect("sqlite store"),
    );
    let tenant = store.create_tenant("t", 1).await.expect("tenant").id;
    (Bus::new(store, Arc::new(Metrics::default())), tenant, dir)
}

/// An answered call of `node`, its last event at `last_event_us`; returns its id.
async fn answered_call(bus: &Bus, tenant: &str, node: &str, t0: i64, last_event_us: i64) -> String {
    let mut new = NewCall::outbound(tenant, "sip:1@127.0.0.1", "sip:cp@127.0.0.1", t0);
    new.node_id = Some(node.to_owned());
    let id = bus
        .store()
        .create_call(&new)
        .await
        .expect("call")
        .into_call()
        .id;
    for (kind, at) in [
        ("call.created", t0),
        ("sip.answered", t0 + 1_000_000),
        ("media.first_packet_in", last_event_us),
    ] {
        bus.append(NewEvent {
            call_id: id.clone(),
            kind: kind.to_owned(),
            at_unix_us: at,
            offset_us: at - t0,
            details: json!({}),
        })
        .await
        .expect("append");
    }
    id
}

async fn heartbeat(bus: &Bus, node: &str, at: i64) {
    bus.store()
        .heartbeat(&Node {
            id: node.to_owned(),
            name: node.to_owned(),
            capacity: 10,
            started_at_us: at - 60_000_000,
            heartbeat_at_us: at,
        })
        .await
        .expect("heartbeat");
}

async fn final_event(bus: &Bus, tenant: &str, call: &str) -> crate::store::StoredEvent {
    let filter = EventFilter {
        call_id: Some(call.to_owned()),
        ..Default::default()
    };
    let events = bus
        .store()
        .events_after(tenant, 0, &filter, 100)
        .await
        .expect("events");
    events.last().expect("events").clone()
}

#[tokio::test]
async fn a_lost_nodes_call_ends_at_its_last_heartbeat_or_last_event_not_when_it_is_noticed() {
    let (bus, tenant, _dir) = bus().await;
    let now = clock::unix_us();
    // The node died 5 minutes ago; its last heartbeat came 10 s after its call's last event.
    let t0 = now - 400_000_000;
    let died = now - 300_000_000;
    heartbeat(&bus, "node_dead", died).await;
    let by_heartbeat = answered_call(&bus, &tenant, "node_dead", t0, died - 10_000_000).await;
    // A call whose last event is later than the heartbeat (it came after the last beat).
    let by_event = answered_call(&bus, &tenant, "node_dead", t0, died + 4_000_000).await;

    close_orphans(&bus, "node_live", &[]).await.expect("closed");

    for (call, end, from) in [
        (&by_heartbeat, died, "heartbeat"),
        (&by_event, died + 4_000_000, "last_event"),
    ] {
        let row = bus.store().get_call(&tenant, call).await.expect("row");
        assert_eq!(row.end_reason.as_deref(), Some("node_lost"), "{row:?}");
        assert_eq!(row.ended_at_us, Some(end), "{from}: {row:?}");
        assert_eq!(
            row.talk_ms,
            Some((end - (t0 + 1_000_000)) / 1000),
            "{from}: {row:?}"
        );
        let last = final_event(&bus, &tenant, call).await;
        assert_eq!(last.kind, "call.failed");
        assert_eq!(last.details["estimated_end"], true, "{last:?}");
        assert_eq!(last.details["estimated_from"], from, "{last:?}");
    }
}

#[tokio::test]
async fn a_recovered_recording_bounds_the_end_from_its_recording_started_event() {
    let (bus, tenant, dir) = bus().await;
    let now = clock::unix_us();
    let t0 = now - 100_000_000;
    heartbeat(&bus, "node_me", t0 - 5_000_000).await;
    let call = answered_call(&bus, &tenant, "node_me", t0, t0 + 1_500_000).await;
    // The engine names inbound recordings itself: the timeline's recording.started says which.
    let path = dir.path().join("call-7-123.wav");
    bus.append(NewEvent {
        call_id: call.clone(),
        kind: "recording.started".to_owned(),
        at_unix_us: t0 + 1_200_000,
        offset_us: 1_200_000,
        details: json!({"path": path.display().to_string(), "rate": 8000, "channels": 2}),
    })
    .await
    .expect("append");
    let recovered = FinishedRecording {
        path: path.clone(),
        rate: 8000,
        channels: 2,
        frames: 8000 * 7,
        duration: Duration::from_secs(7),
        bytes: 44 + 8000 * 7 * 4,
        sha256: "00".repeat(32),
    };

    close_orphans(&bus, "node_me", &[recovered])
        .await
        .expect("closed");

    let row = bus.store().get_call(&tenant, &call).await.expect("row");
    let end = t0 + 1_200_000 + 7_000_000;
    assert_eq!(row.end_reason.as_deref(), Some("process_restart"));
    assert_eq!(row.ended_at_us, Some(end), "{row:?}");
    let recordings = bus
        .store()
        .list_recordings(&tenant, &call)
        .await
        .expect("recordings");
    assert_eq!(recordings.len(), 1, "the recovered recording is attached");
    let last = final_event(&bus, &tenant, &call).await;
    assert_eq!(last.details["estimated_from"], "recording", "{last:?}");
}
