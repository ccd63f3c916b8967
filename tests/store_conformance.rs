//! The store conformance suite: the same checks against every database (`common::db::
//! test_stores`: SQLite always, PostgreSQL when `CALLPLANE_TEST_PG` reaches one; under
//! `CI=true` PostgreSQL is required). Each check is a plain async fn over `Arc<dyn Store>`, so
//! both backends run exactly the same code.

mod common;

use std::path::Path;
use std::sync::Arc;

use callplane::store::{
    AttemptResult, BatchItem, CallFilter, CallRecord, CallStatus, Created, DeliveryStatus,
    EventFilter, NewApiKey, NewCall, NewEvent, Node, PerWebhook, Role, SqlStore, Store, StoreError,
    TrunkInput, WebhookBackoff, WebhookInput, derive,
};
use callplane::trunk::{TrunkSettings, TrunkTransport};
use common::db::{pg_url_for_tests, sqlite_path_for_tests, test_stores, with_database};
use serde_json::{Value, json};

/// Runs `check` against every test store, naming the backend in a failure.
macro_rules! for_each_store {
    ($check:ident) => {{
        let stores = test_stores().await;
        let names: Vec<&str> = stores.iter().map(|(n, _)| *n).collect();
        for (name, store) in stores {
            assert_eq!(store.backend().as_str(), name);
            $check(store).await;
        }
        // One line per test proving which databases ran (visible with --nocapture).
        eprintln!("{}: ran on {}", stringify!($check), names.join(" + "));
    }};
}

fn new_call(tenant: &str, key: Option<&str>, created: i64) -> NewCall {
    NewCall {
        idempotency_key: key.map(str::to_owned),
        request: json!({"record": true, "variables": {"a": 1}}),
        node_id: Some("node_a".into()),
        ..NewCall::outbound(
            tenant,
            "sip:100@127.0.0.1:5070",
            "sip:cp@127.0.0.1",
            created,
        )
    }
}

fn created(c: Created) -> CallRecord {
    match c {
        Created::New(c) => c,
        Created::Existing(c) => panic!("expected a new call, got existing {}", c.id),
    }
}

fn event(call: &str, kind: &str, at: i64, details: Value) -> NewEvent {
    NewEvent {
        call_id: call.into(),
        kind: kind.into(),
        at_unix_us: at,
        offset_us: at - 1_000,
        details,
    }
}

fn is_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::NotFound))
}

fn hook(url: &str, events: &[&str], active: bool) -> WebhookInput {
    WebhookInput {
        url: url.into(),
        secret: Some("s3cret".into()),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        active,
        description: Some("test".into()),
    }
}

// ---------------------------------------------------------------------------------------------

async fn tenants_and_keys(s: Arc<dyn Store>) {
    s.ping().await.expect("ping");
    let a = s.create_tenant("acme", 10).await.expect("tenant");
    assert!(a.id.starts_with("ten_") && a.id.len() == 28, "{}", a.id);
    let b = s.create_tenant("globex", 20).await.expect("tenant");
    assert!(matches!(
        s.create_tenant("acme", 30).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.get_tenant(&a.id).await.expect("get"), a);
    assert!(is_not_found(s.get_tenant("ten_nope").await));
    assert_eq!(
        s.list_tenants().await.expect("list"),
        vec![a.clone(), b.clone()]
    );

    let new = |tenant: &str, hash: &str, role| NewApiKey {
        tenant_id: tenant.into(),
        role,
        name: "ci".into(),
        prefix: "cp_0123456".into(),
        secret_sha256: hash.into(),
    };
    let k1 = s
        .create_api_key(&new(&a.id, "h1", Role::Owner), 40)
        .await
        .expect("key");
    let k2 = s
        .create_api_key(&new(&a.id, "h2", Role::Viewer), 50)
        .await
        .expect("key");
    assert_eq!((k1.role, k1.revoked_at_us), (Role::Owner, None));
    assert!(matches!(
        s.create_api_key(&new(&b.id, "h1", Role::Admin), 60).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        is_not_found(
            s.create_api_key(&new("ten_missing", "h9", Role::Admin), 60)
                .await
        ),
        "a key of a tenant that does not exist"
    );
    assert_eq!(s.find_api_key("h2").await.expect("find"), k2);
    assert!(is_not_found(s.find_api_key("nope").await));
    assert!(
        is_not_found(s.revoke_api_key(&b.id, &k2.id, 70).await),
        "another tenant's key"
    );
    s.revoke_api_key(&a.id, &k2.id, 70).await.expect("revoke");
    assert!(
        is_not_found(s.find_api_key("h2").await),
        "a revoked key authenticates nothing"
    );
    let keys = s.list_api_keys(&a.id).await.expect("list");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1].revoked_at_us, Some(70));
    assert!(s.list_api_keys(&b.id).await.expect("list").is_empty());
}

async fn trunks(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let b = s.create_tenant("b", 1).await.expect("tenant").id;
    let input = TrunkInput {
        name: "carrier".into(),
        address: "192.0.2.1:5060".into(),
        transport: "udp".into(),
        username: Some("u".into()),
        password: Some("pw".into()),
        from_user: None,
        max_concurrent: None,
        max_cps_milli: None,
        settings: Default::default(),
    };
    let t = s.create_trunk(&a, &input, 5).await.expect("trunk");
    assert_eq!(t.password.as_deref(), Some("pw"));
    assert!(matches!(
        s.create_trunk(&a, &input, 6).await,
        Err(StoreError::Conflict(_))
    ));
    s.create_trunk(&b, &input, 6)
        .await
        .expect("the same name in another tenant");
    let second = TrunkInput {
        name: "alpha".into(),
        ..input.clone()
    };
    s.create_trunk(&a, &second, 7).await.expect("trunk");
    assert_eq!(s.get_trunk(&a, &t.id).await.expect("get"), t);
    assert!(is_not_found(s.get_trunk(&b, &t.id).await));
    let names: Vec<String> = s
        .list_trunks(&a)
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["alpha", "carrier"]);

    let change = TrunkInput {
        address: "192.0.2.2:5060".into(),
        password: None,
        from_user: Some("cp".into()),
        ..input.clone()
    };
    let u = s.update_trunk(&a, &t.id, &change, 9).await.expect("update");
    assert_eq!(u.address, "192.0.2.2:5060");
    assert_eq!(
        u.password.as_deref(),
        Some("pw"),
        "a None password keeps the stored one"
    );
    assert_eq!((u.created_at_us, u.updated_at_us), (5, 9));
    assert!(is_not_found(s.update_trunk(&b, &t.id, &change, 9).await));
    assert!(matches!(
        s.update_trunk(&a, &t.id, &second, 9).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(is_not_found(s.delete_trunk(&b, &t.id).await));
    s.delete_trunk(&a, &t.id).await.expect("delete");
    assert!(is_not_found(s.get_trunk(&a, &t.id).await));
    assert!(is_not_found(s.delete_trunk(&a, &t.id).await));
}

async fn trunk_settings_and_routes(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let b = s.create_tenant("b", 1).await.expect("tenant").id;
    let settings = TrunkSettings {
        hosts: vec!["192.0.2.1:5060".into(), "192.0.2.2".into()],
        weighted: true,
        transport: TrunkTransport::Tcp,
        outbound_proxy: Some("sip:192.0.2.9;lr".into()),
        username: Some("u".into()),
        password: Some("pw".into()),
        realm: Some("carrier.example".into()),
        auth_username: Some("au".into()),
        register: true,
        register_expires_s: Some(600),
        allowed_sources: vec!["198.51.100.0/24".into()],
        caller_id_pool: vec!["+442071234567".into()],
        headers: vec![("X-Account".into(), "42".into())],
        from_user: Some("cp".into()),
        ..Default::default()
    };
    // Only settings given: the columns are filled from them.
    let input = TrunkInput {
        name: "carrier".into(),
        settings: settings.clone(),
        ..Default::default()
    };
    let t = s.create_trunk(&a, &input, 5).await.expect("trunk");
    assert_eq!(t.settings, settings, "the settings read back complete");
    assert_eq!(t.address, "192.0.2.1:5060", "address is the first host");
    assert_eq!(t.transport, "tcp");
    assert_eq!(t.username.as_deref(), Some("u"));
    assert_eq!(t.password.as_deref(), Some("pw"));
    assert_eq!(t.from_user.as_deref(), Some("cp"));
    assert_eq!(s.get_trunk(&a, &t.id).await.expect("get"), t);
    let shown = serde_json::to_string(&t).expect("json");
    assert!(
        !shown.contains("pw"),
        "the password is never serialised: {shown}"
    );

    // An update without a password keeps it, in the column and the settings.
    let mut changed = settings.clone();
    changed.password = None;
    changed.hosts = vec!["192.0.2.3:5070".into()];
    let u = s
        .update_trunk(
            &a,
            &t.id,
            &TrunkInput {
                name: "carrier".into(),
                settings: changed,
                ..Default::default()
            },
            9,
        )
        .await
        .expect("update");
    assert_eq!(u.settings.password.as_deref(), Some("pw"));
    assert_eq!(u.address, "192.0.2.3:5070");
    assert_eq!(u.settings.hosts, ["192.0.2.3:5070"]);

    // A row as written before 0005 (columns only) reads as a trunk with one host.
    let legacy = s
        .create_trunk(
            &a,
            &TrunkInput {
                name: "old".into(),
                address: "192.0.2.7:5060".into(),
                transport: "udp".into(),
                ..Default::default()
            },
            6,
        )
        .await
        .expect("legacy");
    assert_eq!(legacy.settings.hosts, ["192.0.2.7:5060"]);
    assert_eq!(legacy.settings.transport, TrunkTransport::Udp);

    // Routes: per tenant unique DIDs, only on the tenant's trunks.
    let r = s
        .create_trunk_route(&a, &t.id, "+442071230000", Some("scr_1"), 10)
        .await
        .expect("route");
    assert_eq!(
        (r.trunk_id.as_str(), r.did.as_str(), r.script_id.as_deref()),
        (t.id.as_str(), "+442071230000", Some("scr_1"))
    );
    s.create_trunk_route(&a, &t.id, "100", None, 11)
        .await
        .expect("a user-part DID, no script");
    assert!(
        matches!(
            s.create_trunk_route(&a, &legacy.id, "100", None, 12).await,
            Err(StoreError::Conflict(_))
        ),
        "a DID belongs to one trunk of its tenant"
    );
    assert!(
        is_not_found(s.create_trunk_route(&b, &t.id, "200", None, 12).await),
        "another tenant's trunk"
    );
    let bt = s.create_trunk(&b, &input, 5).await.expect("trunk b");
    s.create_trunk_route(&b, &bt.id, "100", None, 13)
        .await
        .expect("the same DID in another tenant");
    let dids: Vec<String> = s
        .list_trunk_routes(&a, &t.id)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.did)
        .collect();
    assert_eq!(dids, ["+442071230000", "100"]);
    assert!(is_not_found(s.list_trunk_routes(&b, &t.id).await));
    assert!(is_not_found(s.delete_trunk_route(&b, &t.id, "100").await));
    s.delete_trunk_route(&a, &t.id, "100")
        .await
        .expect("delete");
    assert!(is_not_found(s.delete_trunk_route(&a, &t.id, "100").await));

    let dir = s.load_trunk_directory().await.expect("directory");
    assert_eq!(dir.trunks.len(), 3, "every tenant's trunks");
    assert_eq!(dir.routes.len(), 2, "every tenant's routes");
    assert!(dir.trunks.iter().any(|x| x == &t || x.id == t.id));

    // Deleting a trunk deletes its routes.
    s.delete_trunk(&a, &t.id).await.expect("delete trunk");
    let dir = s.load_trunk_directory().await.expect("directory");
    assert_eq!(
        dir.routes
            .iter()
            .map(|r| r.did.as_str())
            .collect::<Vec<_>>(),
        ["100"],
        "only tenant b's route is left"
    );
    s.create_trunk_route(&a, &legacy.id, "+442071230000", None, 20)
        .await
        .expect("the DID is free again");
}

async fn scripts(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let b = s.create_tenant("b", 1).await.expect("tenant").id;
    let v1 = json!({"steps": [{"say": "one"}]});
    let v2 = json!({"steps": [{"say": "two"}]});
    let sc = s.create_script(&a, "greet", &v1, 10).await.expect("create");
    assert_eq!(
        (sc.version, sc.created_at_us, sc.updated_at_us),
        (1, 10, 10)
    );
    assert!(matches!(
        s.create_script(&a, "greet", &v1, 11).await,
        Err(StoreError::Conflict(_))
    ));
    let up = s
        .update_script(&a, &sc.id, None, &v2, 20)
        .await
        .expect("update");
    assert_eq!(
        (
            up.version,
            up.name.as_str(),
            up.created_at_us,
            up.updated_at_us
        ),
        (2, "greet", 10, 20)
    );
    let cur = s.get_script(&a, &sc.id, None).await.expect("get");
    assert_eq!(cur, up);
    let old = s.get_script(&a, &sc.id, Some(1)).await.expect("get v1");
    assert_eq!((old.version, &old.body, old.updated_at_us), (1, &v1, 10));
    assert!(is_not_found(s.get_script(&a, &sc.id, Some(3)).await));
    assert!(is_not_found(s.get_script(&b, &sc.id, None).await));
    assert!(is_not_found(s.get_script(&b, &sc.id, Some(1)).await));
    assert!(is_not_found(
        s.update_script(&b, &sc.id, None, &v2, 21).await
    ));
    let renamed = s
        .update_script(&a, &sc.id, Some("hello"), &v2, 30)
        .await
        .expect("rename");
    assert_eq!((renamed.version, renamed.name.as_str()), (3, "hello"));
    assert_eq!(
        s.list_scripts(&a).await.expect("list"),
        vec![renamed.clone()]
    );
    assert!(s.list_scripts(&b).await.expect("list").is_empty());

    assert!(is_not_found(s.delete_script(&b, &sc.id).await));
    s.delete_script(&a, &sc.id).await.expect("delete");
    assert!(
        s.list_scripts(&a).await.expect("list").is_empty(),
        "a deleted script is not listed"
    );
    assert!(is_not_found(s.get_script(&a, &sc.id, None).await));
    assert_eq!(
        s.get_script(&a, &sc.id, Some(2))
            .await
            .expect("a version of a deleted script")
            .body,
        v2,
        "calls that ran a deleted script can still read the version they ran"
    );
    s.create_script(&a, "hello", &v1, 40)
        .await
        .expect("a deleted script's name is free again");
}

async fn calls_are_idempotent_and_tenant_scoped(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let b = s.create_tenant("b", 1).await.expect("tenant").id;
    let first = created(
        s.create_call(&new_call(&a, Some("k1"), 100))
            .await
            .expect("create"),
    );
    assert!(first.id.starts_with("call_"));
    assert_eq!(first.status, CallStatus::Queued);
    assert_eq!(
        first.request,
        json!({"record": true, "variables": {"a": 1}})
    );
    match s
        .create_call(&new_call(&a, Some("k1"), 200))
        .await
        .expect("again")
    {
        Created::Existing(c) => assert_eq!(c, first),
        Created::New(c) => panic!("the same key made a second call {}", c.id),
    }
    let other = created(
        s.create_call(&new_call(&b, Some("k1"), 300))
            .await
            .expect("other tenant"),
    );
    assert_ne!(other.id, first.id);
    let x = created(
        s.create_call(&new_call(&a, None, 400))
            .await
            .expect("no key"),
    );
    let y = created(
        s.create_call(&new_call(&a, None, 400))
            .await
            .expect("no key"),
    );
    assert_ne!(x.id, y.id, "calls without a key are never deduplicated");

    assert_eq!(s.get_call(&a, &first.id).await.expect("get"), first);
    assert!(
        is_not_found(s.get_call(&b, &first.id).await),
        "tenant B gets 404 for A's call"
    );
    assert!(is_not_found(s.get_call(&a, "call_nope").await));
    assert_eq!(
        s.get_call_any_tenant(&first.id).await.expect("any tenant"),
        first
    );
    assert!(is_not_found(s.list_recordings(&b, &first.id).await));
    assert!(
        s.list_recordings(&a, &first.id)
            .await
            .expect("none yet")
            .is_empty()
    );
}

async fn list_calls_pages_newest_first_and_filters(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let b = s.create_tenant("b", 1).await.expect("tenant").id;
    s.create_call(&new_call(&b, None, 1_000))
        .await
        .expect("b's call");
    let mut ids = Vec::new();
    // Equal timestamps on purpose: the cursor must break ties by id, not skip or repeat rows.
    for (i, t) in [100, 200, 200, 200, 300, 400, 500].into_iter().enumerate() {
        let mut c = new_call(&a, None, t);
        c.campaign_id = (i % 2 == 0).then(|| "cmp_1".to_owned());
        ids.push((t, created(s.create_call(&c).await.expect("call")).id));
    }
    ids.sort_by(|x, y| y.cmp(x)); // newest first, then id descending
    let want: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();

    let mut got = Vec::new();
    let mut filter = CallFilter {
        limit: 3,
        ..CallFilter::default()
    };
    let mut pages = 0;
    loop {
        let page = s.list_calls(&a, &filter).await.expect("page");
        pages += 1;
        assert!(page.items.len() <= 3);
        got.extend(page.items.into_iter().map(|c| c.id));
        match page.next_cursor {
            Some(c) => {
                assert!(SqlStore::is_valid_cursor(&c));
                filter.cursor = Some(c);
            }
            None => break,
        }
    }
    assert_eq!(got, want, "every call once, newest first");
    assert_eq!(pages, 3);

    let all = s
        .list_calls(&a, &CallFilter::default())
        .await
        .expect("limit 0 = default");
    assert_eq!(all.items.len(), 7);
    assert_eq!(all.next_cursor, None);
    let camp = CallFilter {
        campaign_id: Some("cmp_1".into()),
        ..CallFilter::default()
    };
    assert_eq!(
        s.list_calls(&a, &camp).await.expect("campaign").items.len(),
        4
    );
    let window = CallFilter {
        created_from_us: Some(200),
        created_to_us: Some(400),
        ..CallFilter::default()
    };
    assert_eq!(
        s.list_calls(&a, &window).await.expect("window").items.len(),
        4
    );
    let answered = CallFilter {
        status: Some(CallStatus::Answered),
        ..CallFilter::default()
    };
    assert!(
        s.list_calls(&a, &answered)
            .await
            .expect("status")
            .items
            .is_empty()
    );
    let busy = CallFilter {
        outcome: Some("busy".into()),
        ..CallFilter::default()
    };
    assert!(
        s.list_calls(&a, &busy)
            .await
            .expect("outcome")
            .items
            .is_empty()
    );
    let bad = CallFilter {
        cursor: Some("not-a-cursor".into()),
        ..CallFilter::default()
    };
    assert!(!SqlStore::is_valid_cursor("not-a-cursor"));
    assert!(is_not_found(s.list_calls(&a, &bad).await));
}

async fn append_event_derives_the_call_from_its_timeline(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let b = s.create_tenant("b", 1).await.expect("tenant").id;
    let initial = created(
        s.create_call(&new_call(&a, None, 1_000))
            .await
            .expect("call"),
    );
    let open = created(
        s.create_call(&new_call(&a, None, 1_001))
            .await
            .expect("call"),
    );
    let id = initial.id.clone();
    let recording = json!({"path": "/data/rec/x.wav", "duration_ms": 4000, "channels": 2,
        "sha256": "ab".repeat(32), "bytes": 128_044});
    let timeline = [
        event(&id, "call.created", 2_000, json!({"sip_call_id": "abc@h"})),
        event(&id, "sip.ringing", 3_000, json!({"sip_status": 180})),
        event(&id, "sip.answered", 4_000, json!({"sip_status": 200})),
        event(&id, "recording.ready", 9_000, recording.clone()),
        event(
            &id,
            "call.completed",
            9_500,
            json!({"outcome": "answered", "sip_status": 200,
            "duration_ms": 5000, "end_reason": "RemoteBye", "digits": "42", "recording": recording}),
        ),
    ];
    let mut last = None;
    let mut prev_id = 0;
    for e in &timeline {
        let ap = s.append_event(e).await.expect("append");
        assert!(ap.event.id > prev_id, "event ids increase");
        prev_id = ap.event.id;
        assert_eq!(
            (ap.event.tenant_id.as_str(), ap.event.kind.as_str()),
            (a.as_str(), e.kind.as_str())
        );
        assert_eq!(ap.event.details, e.details);
        last = Some(ap.call);
    }
    let row = s.get_call(&a, &id).await.expect("get");
    assert_eq!(
        Some(&row),
        last.as_ref(),
        "append_event returns the stored row"
    );
    assert_eq!(row.status, CallStatus::Completed);
    assert_eq!(row.outcome.as_deref(), Some("answered"));
    assert_eq!(row.sip_call_id.as_deref(), Some("abc@h"));
    assert_eq!(
        (
            row.started_at_us,
            row.ringing_at_us,
            row.answered_at_us,
            row.ended_at_us
        ),
        (Some(2_000), Some(3_000), Some(4_000), Some(9_500))
    );
    assert_eq!((row.sip_status, row.talk_ms), (Some(200), Some(5000)));
    assert_eq!(row.result, Some(json!({"digits": "42"})));
    assert_eq!(row.end_reason.as_deref(), Some("RemoteBye"));

    // The row equals a fresh fold of the stored timeline.
    let only = EventFilter {
        call_id: Some(id.clone()),
        ..EventFilter::default()
    };
    let stored = s.events_after(&a, 0, &only, 0).await.expect("timeline");
    assert_eq!(stored.len(), timeline.len());
    let mut folded = initial.clone();
    for e in &stored {
        derive::apply(&mut folded, &e.kind, e.at_unix_us, &e.details);
    }
    assert_eq!(folded, row);

    // An event after the end changes nothing.
    s.append_event(&event(&id, "sip.answered", 10_000, json!({})))
        .await
        .expect("append");
    assert_eq!(s.get_call(&a, &id).await.expect("get"), row);

    let recs = s.list_recordings(&a, &id).await.expect("recordings");
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert!(r.id.starts_with("rec_"));
    assert_eq!(
        (
            r.path.as_str(),
            r.format.as_str(),
            r.channels,
            r.duration_ms,
            r.bytes,
            r.created_at_us
        ),
        ("/data/rec/x.wav", "wav", 2, 4000, 128_044, 9_000)
    );
    assert_eq!(r.sha256, "ab".repeat(32));
    assert_eq!(&s.get_recording(&a, &r.id).await.expect("get"), r);
    assert!(
        is_not_found(s.get_recording(&b, &r.id).await),
        "tenant B gets 404 for A's recording"
    );

    let orphans = |node: &'static str, stale_before: i64| {
        let s = s.clone();
        async move {
            s.orphaned_calls(node, stale_before)
                .await
                .expect("orphans")
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<String>>()
        }
    };
    // node_a restarting: its call without a final event is an orphan, its ended ones are not.
    assert_eq!(
        orphans("node_a", 0).await,
        vec![open.id.clone()],
        "only the call without a final event is open"
    );
    // Another node sees node_a's live call as an orphan only once node_a's heartbeat is stale.
    let node_a = |beat: i64| Node {
        id: "node_a".into(),
        name: "a".into(),
        capacity: 10,
        started_at_us: 1,
        heartbeat_at_us: beat,
    };
    s.heartbeat(&node_a(50_000)).await.expect("heartbeat");
    assert!(
        orphans("node_b", 40_000).await.is_empty(),
        "node_a is alive"
    );
    assert_eq!(orphans("node_b", 60_000).await, vec![open.id.clone()]);
    assert!(is_not_found(
        s.append_event(&event("call_nope", "sip.ringing", 1, json!({})))
            .await
    ));
}

async fn events_after_filters_and_orders(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let b = s.create_tenant("b", 1).await.expect("tenant").id;
    let plain = created(s.create_call(&new_call(&a, None, 1)).await.expect("call")).id;
    let mut c = new_call(&a, None, 2);
    c.campaign_id = Some("cmp_7".into());
    let camp = created(s.create_call(&c).await.expect("call")).id;
    let other = created(s.create_call(&new_call(&b, None, 3)).await.expect("call")).id;
    let kinds = [
        "call.created",
        "sip.invite_sent",
        "sip.ringing",
        "call.failed",
    ];
    let mut ids = Vec::new();
    let mut last_b = 0;
    assert_eq!(
        s.last_event_id(&a).await.expect("last id"),
        0,
        "no events yet"
    );
    for (i, k) in kinds.iter().enumerate() {
        for call in [&plain, &camp, &other] {
            let ap = s
                .append_event(&event(call, k, 10 + i as i64, json!({"i": i})))
                .await
                .expect("append");
            if call != &other {
                ids.push(ap.event.id);
            } else {
                last_b = ap.event.id;
            }
        }
    }
    // The newest id is per tenant: B's later events do not move A's.
    assert_eq!(
        s.last_event_id(&a).await.expect("last id"),
        ids[ids.len() - 1]
    );
    assert_eq!(s.last_event_id(&b).await.expect("last id"), last_b);
    assert!(last_b > ids[ids.len() - 1]);
    assert_eq!(s.last_event_id("ten_nope").await.expect("last id"), 0);
    let all = s
        .events_after(&a, 0, &EventFilter::default(), 0)
        .await
        .expect("all");
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids,
        "A's events only, by id"
    );
    assert!(all.iter().all(|e| e.tenant_id == a));
    let tail = s
        .events_after(&a, ids[3], &EventFilter::default(), 2)
        .await
        .expect("tail");
    assert_eq!(
        tail.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[4..6].to_vec(),
        "after + limit"
    );

    let by_call = EventFilter {
        call_id: Some(plain.clone()),
        ..EventFilter::default()
    };
    let got = s.events_after(&a, 0, &by_call, 0).await.expect("by call");
    assert_eq!(
        got.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        kinds
    );
    let by_campaign = EventFilter {
        campaign_id: Some("cmp_7".into()),
        ..EventFilter::default()
    };
    let got = s
        .events_after(&a, 0, &by_campaign, 0)
        .await
        .expect("by campaign");
    assert_eq!(got.len(), 4);
    assert!(
        got.iter()
            .all(|e| e.call_id.as_deref() == Some(camp.as_str())
                && e.campaign_id.as_deref() == Some("cmp_7"))
    );
    let by_kind = EventFilter {
        kinds: vec!["call.*".into(), "sip.ringing".into()],
        ..EventFilter::default()
    };
    let got = s.events_after(&a, 0, &by_kind, 0).await.expect("by kind");
    let mut seen: Vec<&str> = got.iter().map(|e| e.kind.as_str()).collect();
    seen.dedup();
    assert_eq!(seen, ["call.created", "sip.ringing", "call.failed"]);
    assert_eq!(got.len(), 6);
    let underscore = EventFilter {
        kinds: vec!["sip.invite_*".into()],
        ..EventFilter::default()
    };
    assert_eq!(
        s.events_after(&a, 0, &underscore, 0)
            .await
            .expect("prefix")
            .len(),
        2
    );
    let wild = EventFilter {
        kinds: vec!["sip.invite%".into()],
        ..EventFilter::default()
    };
    assert!(
        s.events_after(&a, 0, &wild, 0)
            .await
            .expect("literal")
            .is_empty(),
        "% is no wildcard"
    );
    let cross = EventFilter {
        call_id: Some(other.clone()),
        ..EventFilter::default()
    };
    assert!(
        s.events_after(&a, 0, &cross, 0)
            .await
            .expect("cross")
            .is_empty(),
        "tenant isolation"
    );
}

async fn concurrent_appends_get_distinct_increasing_ids(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let call = created(s.create_call(&new_call(&a, None, t)).await.expect("call")).id;
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..10 {
                let ap = s
                    .append_event(&event(&call, "sip.trying", i, json!({})))
                    .await
                    .expect("append");
                ids.push(ap.event.id);
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let ids = t.await.expect("task");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "one writer's ids increase"
        );
        all.extend(ids);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 40);
    let stored = s
        .events_after(&a, 0, &EventFilter::default(), 0)
        .await
        .expect("all");
    assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), all);
}

async fn outbox_rows_follow_active_matching_webhooks(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let b = s.create_tenant("b", 1).await.expect("tenant").id;
    let every = s
        .create_webhook(&a, &hook("http://127.0.0.1:9/all", &[], true), 5)
        .await
        .expect("hook");
    let calls_only = s
        .create_webhook(&a, &hook("http://127.0.0.1:9/c", &["call.*"], true), 6)
        .await
        .expect("hook");
    let off = s
        .create_webhook(&a, &hook("http://127.0.0.1:9/off", &[], false), 7)
        .await
        .expect("hook");
    let foreign = s
        .create_webhook(&b, &hook("http://127.0.0.1:9/b", &[], true), 8)
        .await
        .expect("hook");
    let call = created(s.create_call(&new_call(&a, None, 1)).await.expect("call")).id;

    let ring = s
        .append_event(&event(&call, "sip.ringing", 100, json!({})))
        .await
        .expect("append");
    assert_eq!(
        ring.deliveries.len(),
        1,
        "only the all-kinds active webhook wants sip.ringing"
    );
    let done = s
        .append_event(&event(
            &call,
            "call.failed",
            200,
            json!({"outcome": "busy"}),
        ))
        .await
        .expect("append");
    assert_eq!(done.deliveries.len(), 2);
    assert_eq!(s.pending_deliveries().await.expect("count"), 3);

    let listed = s
        .list_deliveries(&a, &every.id, None, 0)
        .await
        .expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].event_id, done.event.id, "newest first");
    assert_eq!(listed[0].body, derive::webhook_body(&done.event));
    assert_eq!(
        (
            listed[0].status,
            listed[0].attempts,
            listed[0].next_attempt_at_us,
            listed[0].created_at_us
        ),
        (DeliveryStatus::Pending, 0, 200, 200)
    );
    let c = s
        .list_deliveries(&a, &calls_only.id, None, 0)
        .await
        .expect("list");
    assert_eq!(c.len(), 1);
    assert!(done.deliveries.contains(&c[0].id));
    assert!(
        s.list_deliveries(&a, &off.id, None, 0)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        s.list_deliveries(&b, &foreign.id, None, 0)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        is_not_found(s.list_deliveries(&b, &every.id, None, 0).await),
        "another tenant's webhook"
    );

    // An append that fails stores neither the event nor a delivery.
    let before = s
        .events_after(&a, 0, &EventFilter::default(), 0)
        .await
        .expect("events")
        .len();
    assert!(is_not_found(
        s.append_event(&event("call_nope", "call.failed", 300, json!({})))
            .await
    ));
    assert_eq!(
        s.events_after(&a, 0, &EventFilter::default(), 0)
            .await
            .expect("events")
            .len(),
        before
    );
    assert_eq!(s.pending_deliveries().await.expect("count"), 3);
}

async fn batch_appends_store_rows_events_folds_and_outbox_in_order(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let all = s
        .create_webhook(&a, &hook("http://127.0.0.1:9/all", &[], true), 5)
        .await
        .expect("hook");
    let finals = s
        .create_webhook(&a, &hook("http://127.0.0.1:9/c", &["call.*"], true), 6)
        .await
        .expect("hook");
    // An event before the batch: the batch's ids come after it.
    let before_call = created(s.create_call(&new_call(&a, None, 1)).await.expect("call")).id;
    let before = s
        .append_event(&event(&before_call, "sip.trying", 50, json!({})))
        .await
        .expect("append")
        .event
        .id;
    let outbound = created(s.create_call(&new_call(&a, None, 2)).await.expect("call")).id;
    // An inbound call whose row the batch itself creates (the pump picks its id).
    let inbound = callplane::store::new_id("call");
    let inbound_row = NewCall {
        direction: callplane::store::Direction::Inbound,
        request: json!({"source": "192.0.2.1:5060"}),
        ..NewCall::outbound(&a, "sip:100@127.0.0.1", "sip:alice@192.0.2.1", 100)
    };
    let batch = vec![
        BatchItem {
            new_call: Some(inbound_row),
            event: event(&inbound, "call.created", 100, json!({"sip_call_id": "x@y"})),
        },
        BatchItem::event(event(&outbound, "sip.ringing", 110, json!({}))),
        BatchItem::event(event(
            &inbound,
            "sip.answered",
            120,
            json!({"sip_status": 200}),
        )),
        BatchItem::event(event(&outbound, "sip.answered", 130, json!({}))),
        BatchItem::event(event(
            &inbound,
            "call.completed",
            900,
            json!({"outcome": "answered", "duration_ms": 780}),
        )),
    ];
    let appended = s.append_batch(&batch).await.expect("batch");
    assert_eq!(appended.len(), batch.len());
    let ids: Vec<i64> = appended.iter().map(|a| a.event.id).collect();
    assert!(ids[0] > before, "{ids:?} after {before}");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids rise in item order: {ids:?}"
    );
    // Each Appended carries the row right after its event.
    assert_eq!(appended[0].call.status, CallStatus::Dialing);
    assert_eq!(appended[2].call.status, CallStatus::Answered);
    assert_eq!(appended[4].call.status, CallStatus::Completed);
    assert_eq!(appended[1].call.status, CallStatus::Ringing);
    // Outbox: the all-kinds hook wants every event, the call.* one only the completion.
    assert_eq!(
        appended
            .iter()
            .map(|a| a.deliveries.len())
            .collect::<Vec<_>>(),
        [2, 1, 1, 1, 2]
    );
    assert_eq!(
        s.list_deliveries(&a, &all.id, None, 0)
            .await
            .expect("list")
            .len(),
        6
    );
    let f = s
        .list_deliveries(&a, &finals.id, None, 0)
        .await
        .expect("list");
    assert_eq!(f.len(), 2);
    assert!(f.iter().any(|d| d.event_id == ids[4]));

    // The stored rows are the folds of their events.
    let row = s.get_call(&a, &inbound).await.expect("inbound row");
    assert_eq!(row.direction, callplane::store::Direction::Inbound);
    assert_eq!(row.from_uri, "sip:alice@192.0.2.1");
    assert_eq!(row.request["source"], "192.0.2.1:5060");
    assert_eq!(row.status, CallStatus::Completed);
    assert_eq!(row.sip_call_id.as_deref(), Some("x@y"));
    assert_eq!(
        (row.answered_at_us, row.ended_at_us, row.talk_ms),
        (Some(120), Some(900), Some(780))
    );
    assert_eq!(row, appended[4].call);
    let out = s.get_call(&a, &outbound).await.expect("outbound row");
    assert_eq!(out.status, CallStatus::Answered);
    assert_eq!(
        (out.ringing_at_us, out.answered_at_us),
        (Some(110), Some(130))
    );
    // And the timeline reads back in batch order.
    let stored = s
        .events_after(&a, before, &EventFilter::default(), 0)
        .await
        .expect("events");
    assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(
        stored.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        [
            "call.created",
            "sip.ringing",
            "sip.answered",
            "sip.answered",
            "call.completed"
        ]
    );
    // An empty batch writes nothing.
    assert!(s.append_batch(&[]).await.expect("empty").is_empty());
}

async fn a_batch_with_a_bad_row_stores_nothing(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    s.create_webhook(&a, &hook("http://127.0.0.1:9/all", &[], true), 5)
        .await
        .expect("hook");
    let call = created(s.create_call(&new_call(&a, None, 1)).await.expect("call")).id;
    let inbound = callplane::store::new_id("call");
    let batch = vec![
        BatchItem {
            new_call: Some(NewCall::outbound(
                &a,
                "sip:1@127.0.0.1",
                "sip:2@127.0.0.1",
                5,
            )),
            event: event(&inbound, "call.created", 100, json!({})),
        },
        BatchItem::event(event(&call, "sip.answered", 110, json!({}))),
        // A bad row: its call does not exist.
        BatchItem::event(event(
            "call_000000000000000000000000",
            "sip.trying",
            120,
            json!({}),
        )),
        BatchItem::event(event(
            &call,
            "call.completed",
            130,
            json!({"outcome": "answered"}),
        )),
    ];
    assert!(
        is_not_found(s.append_batch(&batch).await),
        "a missing call row is a permanent error"
    );
    // All or nothing: no event, no fold, no created row, no delivery.
    assert!(
        s.events_after(&a, 0, &EventFilter::default(), 0)
            .await
            .expect("events")
            .is_empty()
    );
    assert_eq!(
        s.get_call(&a, &call).await.expect("row").status,
        CallStatus::Queued
    );
    assert!(is_not_found(s.get_call(&a, &inbound).await));
    assert_eq!(s.pending_deliveries().await.expect("count"), 0);
    // The good items alone go through (what the pump's one-by-one fallback does).
    for (i, item) in batch.iter().enumerate().filter(|(i, _)| *i != 2) {
        s.append_batch(std::slice::from_ref(item))
            .await
            .unwrap_or_else(|e| panic!("item {i}: {e}"));
    }
    assert_eq!(
        s.get_call(&a, &call).await.expect("row").status,
        CallStatus::Completed
    );
    assert_eq!(
        s.get_call(&a, &inbound).await.expect("row").status,
        CallStatus::Dialing
    );
    assert_eq!(s.pending_deliveries().await.expect("count"), 3);
}

async fn concurrent_batches_get_ids_in_commit_order(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let call = created(s.create_call(&new_call(&a, None, t)).await.expect("call")).id;
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut batches = Vec::new();
            for b in 0..5 {
                // More than one multi-row INSERT's worth (128) per batch.
                let items: Vec<BatchItem> = (0..150)
                    .map(|i| BatchItem::event(event(&call, "sip.trying", b * 1000 + i, json!({}))))
                    .collect();
                let appended = s.append_batch(&items).await.expect("batch");
                // Each Appended is its own item's event.
                assert_eq!(
                    appended
                        .iter()
                        .map(|a| a.event.at_unix_us)
                        .collect::<Vec<_>>(),
                    items.iter().map(|i| i.event.at_unix_us).collect::<Vec<_>>()
                );
                batches.push(appended.iter().map(|a| a.event.id).collect::<Vec<i64>>());
            }
            batches
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        for ids in t.await.expect("task") {
            // One transaction's ids are contiguous: no other batch interleaves (commit order).
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
            all.push(ids);
        }
    }
    all.sort();
    let flat: Vec<i64> = all.concat();
    assert_eq!(flat.len(), 4 * 5 * 150);
    for pair in all.windows(2) {
        assert!(
            pair[0].last() < pair[1].first(),
            "two batches interleaved: {pair:?}"
        );
    }
    let stored = s
        .events_after(&a, 0, &EventFilter::default(), 5000)
        .await
        .expect("all");
    assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), flat);
}

async fn webhooks_crud(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let b = s.create_tenant("b", 1).await.expect("tenant").id;
    let no_secret = WebhookInput {
        secret: None,
        ..hook("http://x", &[], true)
    };
    assert!(
        s.create_webhook(&a, &no_secret, 1).await.is_err(),
        "the secret is required"
    );
    let w = s
        .create_webhook(&a, &hook("http://127.0.0.1:9/h", &["call.*"], true), 2)
        .await
        .expect("create");
    assert!(w.id.starts_with("whk_"));
    assert_eq!(
        (w.secret.as_str(), w.events.clone(), w.active),
        ("s3cret", vec!["call.*".to_owned()], true)
    );
    assert_eq!(s.get_webhook(&a, &w.id).await.expect("get"), w);
    assert!(is_not_found(s.get_webhook(&b, &w.id).await));
    assert_eq!(s.list_webhooks(&a).await.expect("list"), vec![w.clone()]);
    assert!(s.list_webhooks(&b).await.expect("list").is_empty());
    let change = WebhookInput {
        secret: None,
        active: false,
        ..hook("http://127.0.0.1:9/g", &[], false)
    };
    let u = s
        .update_webhook(&a, &w.id, &change, 3)
        .await
        .expect("update");
    assert_eq!(
        (u.url.as_str(), u.secret.as_str(), u.active, u.updated_at_us),
        ("http://127.0.0.1:9/g", "s3cret", false, 3)
    );
    assert!(u.events.is_empty());
    assert!(is_not_found(s.update_webhook(&b, &w.id, &change, 3).await));

    // Deleting a webhook deletes its deliveries.
    let on = WebhookInput {
        active: true,
        ..change.clone()
    };
    s.update_webhook(&a, &w.id, &on, 4)
        .await
        .expect("reactivate");
    let call = created(s.create_call(&new_call(&a, None, 1)).await.expect("call")).id;
    s.append_event(&event(&call, "call.created", 5, json!({})))
        .await
        .expect("append");
    assert_eq!(s.pending_deliveries().await.expect("count"), 1);
    assert!(is_not_found(s.delete_webhook(&b, &w.id).await));
    assert_eq!(
        s.pending_deliveries().await.expect("count"),
        1,
        "B's delete touched nothing"
    );
    s.delete_webhook(&a, &w.id).await.expect("delete");
    assert_eq!(s.pending_deliveries().await.expect("count"), 0);
    assert!(is_not_found(s.get_webhook(&a, &w.id).await));
    assert!(is_not_found(s.delete_webhook(&a, &w.id).await));
}

async fn claims_lease_retry_dead_letter_and_redeliver(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let b = s.create_tenant("b", 1).await.expect("tenant").id;
    let w = s
        .create_webhook(&a, &hook("http://127.0.0.1:9/h", &[], true), 1)
        .await
        .expect("hook");
    let call = created(s.create_call(&new_call(&a, None, 1)).await.expect("call")).id;
    let e1 = s
        .append_event(&event(&call, "call.created", 1_000, json!({})))
        .await
        .expect("append");
    let e2 = s
        .append_event(&event(&call, "sip.ringing", 2_000, json!({})))
        .await
        .expect("append");
    let (d1, d2) = (e1.deliveries[0].clone(), e2.deliveries[0].clone());

    assert!(
        s.claim_due_deliveries(500, 10_000, 10, &PerWebhook::unbounded())
            .await
            .expect("claim")
            .is_empty(),
        "not due yet"
    );
    let got = s
        .claim_due_deliveries(1_500, 10_000, 10, &PerWebhook::unbounded())
        .await
        .expect("claim");
    assert_eq!(got.len(), 1);
    let (d, hk) = &got[0];
    assert_eq!((d.id.as_str(), d.next_attempt_at_us), (d1.as_str(), 10_000));
    assert_eq!(
        (hk.id.as_str(), hk.secret.as_str()),
        (w.id.as_str(), "s3cret")
    );
    let got = s
        .claim_due_deliveries(5_000, 10_000, 10, &PerWebhook::unbounded())
        .await
        .expect("claim");
    assert_eq!(
        got.iter().map(|(d, _)| d.id.clone()).collect::<Vec<_>>(),
        vec![d2.clone()],
        "d1 is leased"
    );
    assert!(
        s.claim_due_deliveries(9_999, 20_000, 10, &PerWebhook::unbounded())
            .await
            .expect("claim")
            .is_empty(),
        "both leased"
    );
    let got = s
        .claim_due_deliveries(10_000, 20_000, 1, &PerWebhook::unbounded())
        .await
        .expect("claim");
    assert_eq!(
        got.len(),
        1,
        "the limit holds; an expired lease makes a row due again"
    );

    s.finish_attempt(
        &d1,
        &AttemptResult::Failed {
            status: Some(500),
            error: "HTTP 500".into(),
            next_attempt_at_us: Some(30_000),
            webhook_backoff: None,
        },
    )
    .await
    .expect("retry");
    s.finish_attempt(
        &d2,
        &AttemptResult::Delivered {
            status: 204,
            at_us: 10_500,
        },
    )
    .await
    .expect("ok");
    let all = s.list_deliveries(&a, &w.id, None, 0).await.expect("list");
    let one = all.iter().find(|d| d.id == d1).expect("d1");
    assert_eq!(
        (
            one.status,
            one.attempts,
            one.next_attempt_at_us,
            one.last_status,
            one.last_error.as_deref()
        ),
        (
            DeliveryStatus::Pending,
            1,
            30_000,
            Some(500),
            Some("HTTP 500")
        )
    );
    let two = all.iter().find(|d| d.id == d2).expect("d2");
    assert_eq!(
        (
            two.status,
            two.attempts,
            two.delivered_at_us,
            two.last_status
        ),
        (DeliveryStatus::Delivered, 1, Some(10_500), Some(204))
    );
    assert_eq!(s.pending_deliveries().await.expect("count"), 1);
    assert!(
        s.claim_due_deliveries(29_999, 40_000, 10, &PerWebhook::unbounded())
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(
        s.claim_due_deliveries(30_000, 40_000, 10, &PerWebhook::unbounded())
            .await
            .expect("claim")
            .len(),
        1,
        "back at its time"
    );

    s.finish_attempt(
        &d1,
        &AttemptResult::Failed {
            status: None,
            error: "connect refused".into(),
            next_attempt_at_us: None,
            webhook_backoff: None,
        },
    )
    .await
    .expect("dead");
    let dead = s
        .list_deliveries(&a, &w.id, Some(DeliveryStatus::Dead), 0)
        .await
        .expect("dead");
    assert_eq!(
        dead.iter()
            .map(|d| (d.id.as_str(), d.attempts, d.last_status))
            .collect::<Vec<_>>(),
        vec![(d1.as_str(), 2, None)]
    );
    assert_eq!(s.pending_deliveries().await.expect("count"), 0);
    assert!(
        s.claim_due_deliveries(i64::MAX, i64::MAX, 10, &PerWebhook::unbounded())
            .await
            .expect("claim")
            .is_empty(),
        "dead rows are never claimed"
    );
    assert!(is_not_found(
        s.finish_attempt(
            "dlv_nope",
            &AttemptResult::Delivered {
                status: 200,
                at_us: 1
            }
        )
        .await
    ));

    assert!(
        is_not_found(s.redeliver(&b, &d1, 50_000).await),
        "another tenant's delivery"
    );
    let again = s.redeliver(&a, &d1, 50_000).await.expect("redeliver");
    assert_eq!(
        (again.status, again.attempts, again.next_attempt_at_us),
        (DeliveryStatus::Pending, 0, 50_000)
    );
    let again2 = s
        .redeliver(&a, &d2, 50_000)
        .await
        .expect("redeliver a delivered one");
    assert_eq!(
        (again2.status, again2.delivered_at_us, again2.body),
        (DeliveryStatus::Pending, None, two.body.clone())
    );
    assert_eq!(s.pending_deliveries().await.expect("count"), 2);
    let got = s
        .claim_due_deliveries(50_000, 60_000, 10, &PerWebhook::unbounded())
        .await
        .expect("claim");
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].0.event_id, e1.event.id,
        "oldest due first, with the same event id as before"
    );
}

async fn claims_are_bounded_per_webhook(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let slow = s
        .create_webhook(&a, &hook("http://127.0.0.1:9/slow", &[], true), 1)
        .await
        .expect("hook");
    let call = created(s.create_call(&new_call(&a, None, 1)).await.expect("call")).id;
    let mut slow_events = Vec::new();
    for at in [1_000, 2_000, 3_000] {
        let ap = s
            .append_event(&event(&call, "media.quality", at, json!({})))
            .await
            .expect("append");
        slow_events.push(ap.event.id);
    }
    let other = s
        .create_webhook(&a, &hook("http://127.0.0.1:9/other", &[], true), 1)
        .await
        .expect("hook");
    let ap = s
        .append_event(&event(&call, "call.completed", 4_000, json!({})))
        .await
        .expect("append");
    assert_eq!(ap.deliveries.len(), 2);
    let ids = |got: Vec<(callplane::store::Delivery, callplane::store::Webhook)>| {
        got.into_iter()
            .map(|(d, h)| (h.id, d.event_id))
            .collect::<Vec<_>>()
    };
    let bound = |in_flight: &[(&str, u32)]| PerWebhook {
        max: 2,
        in_flight: in_flight
            .iter()
            .map(|(h, n)| ((*h).to_owned(), *n))
            .collect(),
    };
    // The slow webhook has 4 due rows, the other 1: two of the slow one's (oldest first),
    // then the other's, although the slow one's later rows are older than it.
    let got = ids(s
        .claim_due_deliveries(10_000, 20_000, 10, &bound(&[]))
        .await
        .expect("claim"));
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(
        got,
        [
            (slow.id.clone(), slow_events[0]),
            (slow.id.clone(), slow_events[1]),
            (other.id.clone(), ap.event.id),
        ]
    );
    // Both of the slow webhook's slots are taken: nothing more of it, though 2 rows are due.
    assert!(
        s.claim_due_deliveries(10_000, 20_000, 10, &bound(&[(&slow.id, 2), (&other.id, 1)]))
            .await
            .expect("claim")
            .is_empty()
    );
    // One of its deliveries ended: one more (the next oldest), not two.
    let got = ids(s
        .claim_due_deliveries(10_000, 20_000, 10, &bound(&[(&slow.id, 1), (&other.id, 1)]))
        .await
        .expect("claim"));
    assert_eq!(got, [(slow.id.clone(), slow_events[2])]);
    // Unbounded, the last due row comes too.
    assert_eq!(
        s.claim_due_deliveries(10_000, 20_000, 10, &PerWebhook::unbounded())
            .await
            .expect("claim")
            .len(),
        1
    );
}

async fn a_failed_attempt_rests_its_webhook_until_a_success(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let w = s
        .create_webhook(&a, &hook("http://127.0.0.1:9/down", &[], true), 1)
        .await
        .expect("hook");
    let other = s
        .create_webhook(&a, &hook("http://127.0.0.1:9/up", &["call.*"], true), 1)
        .await
        .expect("hook");
    let call = created(s.create_call(&new_call(&a, None, 1)).await.expect("call")).id;
    let e1 = s
        .append_event(&event(&call, "media.quality", 1_000, json!({})))
        .await
        .expect("append");
    let e2 = s
        .append_event(&event(&call, "media.quality", 2_000, json!({})))
        .await
        .expect("append");
    let (d1, d2) = (e1.deliveries[0].clone(), e2.deliveries[0].clone());
    let claim = |now: i64| {
        let s = s.clone();
        async move {
            s.claim_due_deliveries(now, 1_000_000, 10, &PerWebhook::unbounded())
                .await
                .expect("claim")
                .into_iter()
                .map(|(d, _)| d.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(claim(5_000).await, [d1.clone(), d2.clone()]);
    let failed = |next: i64, now: i64| AttemptResult::Failed {
        status: Some(503),
        error: "HTTP 503 Service Unavailable".into(),
        next_attempt_at_us: Some(next),
        webhook_backoff: Some(WebhookBackoff {
            now_us: now,
            base_us: 10_000,
            max_us: 100_000,
        }),
    };
    // d1 fails at 5 000 and may be retried from 6 000, but its webhook rests until 15 000.
    s.finish_attempt(&d1, &failed(6_000, 5_000))
        .await
        .expect("failed");
    assert!(claim(14_999).await.is_empty(), "resting");
    assert_eq!(claim(15_000).await, std::slice::from_ref(&d1));
    // Second failure in a row: 20 000 of rest.
    s.finish_attempt(&d1, &failed(16_000, 15_000))
        .await
        .expect("failed");
    assert!(claim(34_999).await.is_empty(), "resting twice as long");
    // An event queued meanwhile waits for the end of the rest too, but not another
    // webhook's delivery of the same event.
    let e3 = s
        .append_event(&event(&call, "call.completed", 20_000, json!({})))
        .await
        .expect("append");
    let (mine, theirs) = match s
        .list_deliveries(&a, &other.id, None, 0)
        .await
        .expect("list")
        .as_slice()
    {
        [d] => (
            e3.deliveries
                .iter()
                .find(|x| **x != d.id)
                .expect("one per webhook")
                .clone(),
            d.id.clone(),
        ),
        other => panic!("one delivery of the other webhook: {other:?}"),
    };
    assert_eq!(claim(21_000).await, [theirs]);
    let mut got = claim(35_000).await;
    got.sort();
    let mut want = vec![d1.clone(), mine];
    want.sort();
    assert_eq!(got, want, "both due when the rest ends");
    // A success ends the rest: a retry due now goes at once.
    s.finish_attempt(
        &d2,
        &AttemptResult::Delivered {
            status: 200,
            at_us: 36_000,
        },
    )
    .await
    .expect("delivered");
    s.finish_attempt(
        &d1,
        &AttemptResult::Failed {
            status: Some(503),
            error: "HTTP 503 Service Unavailable".into(),
            next_attempt_at_us: Some(36_500),
            webhook_backoff: None,
        },
    )
    .await
    .expect("failed without rest");
    assert_eq!(claim(36_500).await, std::slice::from_ref(&d1));
    // A redelivery while resting is due when the rest ends (first failure in a row again:
    // 10 000 of rest).
    s.finish_attempt(&d1, &failed(38_000, 38_000))
        .await
        .expect("failed");
    s.redeliver(&a, &d2, 39_000).await.expect("redeliver");
    assert!(claim(47_999).await.is_empty(), "resting");
    let mut got = claim(48_000).await;
    got.sort();
    let mut want = vec![d1, d2];
    want.sort();
    assert_eq!(got, want);
    assert_ne!(w.id, other.id);
}

async fn suppression_and_nodes(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.expect("tenant").id;
    let b = s.create_tenant("b", 1).await.expect("tenant").id;
    assert!(!s.is_suppressed(&a, "+15551234").await.expect("check"));
    s.add_suppression(&a, "+15551234", Some("asked"), 1)
        .await
        .expect("add");
    s.add_suppression(&a, "+15551234", None, 2)
        .await
        .expect("adding twice is fine");
    assert!(s.is_suppressed(&a, "+15551234").await.expect("check"));
    assert!(
        !s.is_suppressed(&b, "+15551234").await.expect("check"),
        "per tenant"
    );

    let mut n = Node {
        id: "node-1".into(),
        name: "host".into(),
        capacity: 100,
        started_at_us: 5,
        heartbeat_at_us: 5,
    };
    s.heartbeat(&n).await.expect("insert");
    n.heartbeat_at_us = 9;
    s.heartbeat(&n).await.expect("refresh");
    let m = Node {
        id: "node-0".into(),
        ..n.clone()
    };
    s.heartbeat(&m).await.expect("insert");
    assert_eq!(s.list_nodes().await.expect("list"), vec![m, n]);
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tenants_and_api_keys() {
    for_each_store!(tenants_and_keys);
}

#[tokio::test]
async fn trunks_crud_conflicts_and_isolation() {
    for_each_store!(trunks);
}

#[tokio::test]
async fn trunk_settings_are_stored_once_and_routes_cascade() {
    for_each_store!(trunk_settings_and_routes);
}

#[tokio::test]
async fn scripts_are_versioned_and_soft_deleted() {
    for_each_store!(scripts);
}

#[tokio::test]
async fn calls_idempotency_and_tenant_isolation() {
    for_each_store!(calls_are_idempotent_and_tenant_scoped);
}

#[tokio::test]
async fn list_calls_cursor_pagination_and_filters() {
    for_each_store!(list_calls_pages_newest_first_and_filters);
}

#[tokio::test]
async fn append_event_derives_status_and_stores_recordings() {
    for_each_store!(append_event_derives_the_call_from_its_timeline);
}

#[tokio::test]
async fn events_after_filters_by_call_campaign_kind() {
    for_each_store!(events_after_filters_and_orders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends() {
    for_each_store!(concurrent_appends_get_distinct_increasing_ids);
}

#[tokio::test]
async fn outbox_is_written_with_the_event() {
    for_each_store!(outbox_rows_follow_active_matching_webhooks);
}

#[tokio::test]
async fn append_batch_writes_rows_events_folds_and_outbox_in_one_order() {
    for_each_store!(batch_appends_store_rows_events_folds_and_outbox_in_order);
}

#[tokio::test]
async fn append_batch_with_a_bad_row_is_all_or_nothing() {
    for_each_store!(a_batch_with_a_bad_row_stores_nothing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_batch_ids_follow_commit_order_across_writers() {
    for_each_store!(concurrent_batches_get_ids_in_commit_order);
}

#[tokio::test]
async fn webhooks_crud_and_delete_cascades() {
    for_each_store!(webhooks_crud);
}

#[tokio::test]
async fn outbox_claim_lease_retry_dead_redeliver() {
    for_each_store!(claims_lease_retry_dead_letter_and_redeliver);
}

#[tokio::test]
async fn outbox_claims_at_most_two_per_webhook() {
    for_each_store!(claims_are_bounded_per_webhook);
}

#[tokio::test]
async fn outbox_rests_a_failing_webhook_until_a_success() {
    for_each_store!(a_failed_attempt_rests_its_webhook_until_a_success);
}

#[tokio::test]
async fn suppression_list_and_node_heartbeats() {
    for_each_store!(suppression_and_nodes);
}

// Migrations: these need the database URL, not only a store.

/// A fresh database URL per backend: `("sqlite", url)` and, when available, `("postgres", url)`.
fn fresh_urls() -> Vec<(&'static str, String)> {
    let mut urls = vec![(
        "sqlite",
        format!("sqlite:{}", sqlite_path_for_tests().display()),
    )];
    if let Some(pg) = pg_url_for_tests() {
        urls.push(("postgres", pg));
    }
    urls
}

/// Runs one statement on the database behind `url` outside the store (to tamper with it).
async fn tamper(url: &str, sql: &str) {
    let opts: sqlx::any::AnyConnectOptions = if let Some(path) = url.strip_prefix("sqlite:") {
        format!("sqlite://{path}").parse().expect("url")
    } else {
        url.parse().expect("url")
    };
    use sqlx::ConnectOptions as _;
    sqlx::any::install_default_drivers();
    let mut conn = opts.connect().await.expect("connect");
    sqlx::query(sql).execute(&mut conn).await.expect("tamper");
}

#[tokio::test]
async fn migrations_are_idempotent_and_refuse_unknown_or_changed_versions() {
    let mut ran = Vec::new();
    for (name, url) in fresh_urls() {
        let first = SqlStore::connect(&url)
            .await
            .expect("first connect migrates");
        let t = first.create_tenant("kept", 1).await.expect("tenant");
        first.close().await;
        let second = SqlStore::connect(&url)
            .await
            .expect("connecting again is a no-op");
        assert_eq!(
            second.get_tenant(&t.id).await.expect("data survives"),
            t,
            "{name}"
        );
        second.close().await;

        tamper(
            &url,
            "UPDATE schema_migrations SET sha256 = 'edited' WHERE version = 1",
        )
        .await;
        match SqlStore::connect(&url).await {
            Err(StoreError::Migration(m)) => assert!(m.contains("changed"), "{name}: {m}"),
            other => panic!("{name}: an edited migration was accepted: {other:?}"),
        }
        let (_, url2) = fresh_urls()
            .into_iter()
            .find(|(n, _)| *n == name)
            .expect("same backend");
        SqlStore::connect(&url2)
            .await
            .expect("migrate")
            .close()
            .await;
        tamper(
            &url2,
            "INSERT INTO schema_migrations (version, name, sha256, applied_at_us) \
                       VALUES (9999, '9999_future', 'x', 1)",
        )
        .await;
        match SqlStore::connect(&url2).await {
            Err(StoreError::Migration(m)) => assert!(m.contains("9999"), "{name}: {m}"),
            other => panic!("{name}: a database from a newer build was accepted: {other:?}"),
        }
        ran.push(name);
    }
    eprintln!("migrations: ran on {}", ran.join(" + "));
}

#[test]
fn test_database_urls_keep_the_server_and_parameters() {
    assert_eq!(
        with_database(
            "postgres://u:p@127.0.0.1:5432/postgres?sslmode=disable",
            "cp_test_1"
        ),
        "postgres://u:p@127.0.0.1:5432/cp_test_1?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://127.0.0.1", "cp_test_1"),
        "postgres://127.0.0.1/cp_test_1"
    );
}

#[tokio::test]
async fn a_sqlite_file_is_created_in_wal_mode() {
    let path = sqlite_path_for_tests();
    assert!(!path.exists());
    let store = SqlStore::open_sqlite(&path).await.expect("open");
    assert!(path.exists());
    store.close().await;
    assert!(
        journal_is_wal(&path).await,
        "WAL is a persistent property of the file"
    );
}

async fn journal_is_wal(path: &Path) -> bool {
    use sqlx::{ConnectOptions as _, Row as _};
    sqlx::any::install_default_drivers();
    let opts: sqlx::any::AnyConnectOptions =
        format!("sqlite://{}", path.display()).parse().expect("url");
    let mut conn = opts.connect().await.expect("connect");
    let row = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .expect("pragma");
    row.get::<String, _>(0) == "wal"
}
