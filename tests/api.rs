//! The REST API against the real router (`tower::ServiceExt::oneshot`) on every test database
//! (`common::db::test_stores()`: SQLite always, PostgreSQL when `CALLPLANE_TEST_PG` is set).
//!
//! Calls placed here go to a real destination: a loopback UDP port nobody listens on (the
//! call fails from the real ICMP error or timer), or a socket this test binds and never answers.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use callplane::api::Permission;
use callplane::api::auth::allows;
use callplane::store::{NewCall, NewEvent, Role, Store, StoredEvent};
use common::api::TestApi;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tower::ServiceExt;

/// Upper bound for a call to a closed port to end (ICMP makes it quick; Timer B is 32 s).
const CALL_END: Duration = Duration::from_secs(45);

async fn stores() -> Vec<(&'static str, Arc<dyn Store>)> {
    common::db::test_stores().await
}

/// Runs `body` on every test database at once: the slow tests wait for real SIP timers
/// (Timer B is 32 s), and the databases need not wait for each other.
async fn on_every_store<F, Fut>(body: F)
where
    F: Fn(&'static str, Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let runs = stores()
        .await
        .into_iter()
        .map(|(db, store)| body(db, store));
    futures_util::future::join_all(runs).await;
}

/// A `sip:` URI on loopback where nobody listens.
fn closed_destination() -> String {
    format!("sip:bob@127.0.0.1:{}", common::free_udp_port())
}

/// A call row made through the store (no engine), as a fixture.
async fn insert_call(store: &Arc<dyn Store>, tenant: &str, created_at_us: i64) -> String {
    store
        .create_call(&NewCall::outbound(
            tenant,
            "sip:fixture@127.0.0.1:9",
            "sip:callplane@127.0.0.1",
            created_at_us,
        ))
        .await
        .expect("create call")
        .into_call()
        .id
}

async fn append(store: &Arc<dyn Store>, call: &str, kind: &str, at: i64, details: Value) {
    store
        .append_event(&NewEvent {
            call_id: call.to_owned(),
            kind: kind.to_owned(),
            at_unix_us: at,
            offset_us: 0,
            details,
        })
        .await
        .expect("append event");
}

/// Writes a real 8 kHz stereo WAV of `frames` frames under the data dir and stores its
/// `recording.ready` for `call`; returns (recording id, file bytes).
async fn add_recording(api: &TestApi, tenant: &str, call: &str, at: i64) -> (String, Vec<u8>) {
    let dir = api.data_dir.path().join("recordings");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join(format!("{call}.wav"));
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).expect("wav");
    for i in 0..4000i32 {
        w.write_sample((i * 7 % 30000) as i16).expect("sample");
        w.write_sample((i * 13 % 30000) as i16).expect("sample");
    }
    w.finalize().expect("finalize");
    let (sha256, bytes) = callplane::files::sha256_file(&path).expect("sha");
    append(
        &api.state.store,
        call,
        "recording.ready",
        at,
        json!({"path": path.to_str().expect("utf-8"), "duration_ms": 500, "channels": 2,
               "sha256": sha256, "bytes": bytes}),
    )
    .await;
    let recs = api
        .state
        .store
        .list_recordings(tenant, call)
        .await
        .expect("recordings");
    let rec = recs.last().expect("the recording row").id.clone();
    (rec, std::fs::read(&path).expect("read"))
}

/// Waits for the final event of `call` on a bus subscription taken before the call was placed.
async fn wait_final(rx: &mut broadcast::Receiver<StoredEvent>, call: &str) -> StoredEvent {
    tokio::time::timeout(CALL_END, async {
        loop {
            match rx.recv().await {
                Ok(e)
                    if e.call_id.as_deref() == Some(call)
                        && (e.kind == "call.completed" || e.kind == "call.failed") =>
                {
                    return e;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("bus closed"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("call {call} did not end within {CALL_END:?}"))
}

fn valid_script() -> Value {
    json!({"version": 1, "steps": [{"answer": {}}, {"pause": {"ms": 100}}, {"hangup": {}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_wrong_and_revoked_keys_get_401() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let r = api.send(Method::GET, "/v1/calls", None, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{db}");
        assert_eq!(r.code(), "unauthorized");
        let id = r.json()["error"]["id"].as_str().expect("id").to_owned();
        assert!(
            id.starts_with("err_") && id.len() == 20,
            "{db}: error id {id}"
        );
        let r = api
            .get("/v1/calls", "cp_0000000000000000000000000000000000000000")
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{db}"
        );
        let r = api
            .send_raw(
                Method::GET,
                "/v1/calls",
                None,
                &[("authorization", "Basic abc")],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{db}");
        // A key made through the API works, and stops working once revoked.
        let owner = api.a.key(Role::Owner).to_owned();
        let made = api
            .post(
                "/v1/keys",
                &owner,
                &json!({"name": "tmp", "role": "viewer"}),
            )
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{db}");
        let secret = made.json()["secret"].as_str().expect("secret").to_owned();
        assert!(secret.starts_with("cp_") && secret.len() == 43);
        assert_eq!(
            api.get("/v1/calls", &secret).await.status,
            StatusCode::OK,
            "{db}"
        );
        let key_id = made.json()["id"].as_str().expect("id").to_owned();
        let r = api
            .send(
                Method::DELETE,
                &format!("/v1/keys/{key_id}"),
                Some(&owner),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{db}");
        let r = api.get("/v1/calls", &secret).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{db}"
        );
        api.stop().await;
    }
}

/// One row of the permission table: a request and the permission it needs.
struct Case {
    method: Method,
    path: String,
    needs: Permission,
    body: Option<Value>,
    /// An SSE stream: read the status only.
    stream: bool,
}

fn case(method: Method, path: String, needs: Permission, body: Option<Value>) -> Case {
    Case {
        method,
        path,
        needs,
        body,
        stream: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_gets_exactly_the_permissions_of_the_table() {
    use Permission as P;
    on_every_store(|db, store| async move {
        let api = TestApi::start(store.clone()).await;
        let owner = api.a.key(Role::Owner).to_owned();
        let t = &api.a.tenant_id;
        let trunk = api
            .create(
                "/v1/trunks",
                &owner,
                &json!({"name": "main", "address": "127.0.0.1:5060"}),
            )
            .await;
        let script = api
            .create(
                "/v1/scripts",
                &owner,
                &json!({"name": "s", "body": valid_script()}),
            )
            .await;
        let webhook = api
            .create(
                "/v1/webhooks",
                &owner,
                &json!({"url": "http://127.0.0.1:9/hook"}),
            )
            .await;
        let call = insert_call(&store, t, callplane::clock::unix_us()).await;
        let (rec, _) = add_recording(&api, t, &call, callplane::clock::unix_us()).await;
        let victim = common::api::make_key(&store, t, Role::Viewer).await;
        let keys = store.list_api_keys(t).await.expect("keys");
        let victim_id = keys
            .iter()
            .find(|k| {
                victim.starts_with(&k.prefix) && k.name == "viewer key" && k.role == Role::Viewer
            })
            .map(|k| k.id.clone())
            .expect("victim key");
        let trunk_body = json!({"name": "main", "address": "127.0.0.1:5060"});
        let script_body = json!({"body": valid_script()});
        let mut cases = vec![
            case(Method::GET, "/v1/keys".into(), P::KeysRead, None),
            case(
                Method::POST,
                "/v1/keys".into(),
                P::KeysWrite,
                Some(json!({"name": "k", "role": "viewer"})),
            ),
            case(
                Method::DELETE,
                format!("/v1/keys/{victim_id}"),
                P::KeysWrite,
                None,
            ),
            case(Method::GET, "/v1/trunks".into(), P::TrunksRead, None),
            case(
                Method::GET,
                format!("/v1/trunks/{trunk}"),
                P::TrunksRead,
                None,
            ),
            case(
                Method::PUT,
                format!("/v1/trunks/{trunk}"),
                P::TrunksWrite,
                Some(trunk_body),
            ),
            case(Method::GET, "/v1/scripts".into(), P::ScriptsRead, None),
            case(
                Method::GET,
                format!("/v1/scripts/{script}"),
                P::ScriptsRead,
                None,
            ),
            case(
                Method::PUT,
                format!("/v1/scripts/{script}"),
                P::ScriptsWrite,
                Some(script_body),
            ),
            case(Method::GET, "/v1/calls".into(), P::CallsRead, None),
            case(Method::GET, format!("/v1/calls/{call}"), P::CallsRead, None),
            case(
                Method::GET,
                format!("/v1/calls/{call}/manifest"),
                P::CallsRead,
                None,
            ),
            case(
                Method::GET,
                format!("/v1/calls/{call}/events"),
                P::EventsRead,
                None,
            ),
            case(
                Method::POST,
                format!("/v1/calls/{call}/hangup"),
                P::CallsWrite,
                None,
            ),
            case(
                Method::GET,
                format!("/v1/calls/{call}/recordings"),
                P::RecordingsRead,
                None,
            ),
            case(
                Method::GET,
                format!("/v1/recordings/{rec}"),
                P::RecordingsRead,
                None,
            ),
            case(
                Method::GET,
                format!("/v1/recordings/{rec}/audio"),
                P::RecordingsRead,
                None,
            ),
            case(
                Method::GET,
                format!("/v1/calls/{call}/deliveries"),
                P::WebhooksRead,
                None,
            ),
            case(Method::GET, "/v1/webhooks".into(), P::WebhooksRead, None),
            case(
                Method::GET,
                format!("/v1/webhooks/{webhook}"),
                P::WebhooksRead,
                None,
            ),
            case(
                Method::GET,
                format!("/v1/webhooks/{webhook}/deliveries"),
                P::WebhooksRead,
                None,
            ),
            case(
                Method::PUT,
                format!("/v1/webhooks/{webhook}"),
                P::WebhooksWrite,
                Some(json!({"url": "http://127.0.0.1:9/hook2"})),
            ),
            Case {
                stream: true,
                ..case(
                    Method::GET,
                    format!("/v1/events?call_id={call}"),
                    P::EventsRead,
                    None,
                )
            },
        ];
        // Creations and deletions: a fresh target per role so each allowed role succeeds.
        for role in Role::ALL {
            let n = role.as_str();
            cases.push(case(
                Method::POST,
                "/v1/trunks".into(),
                P::TrunksWrite,
                Some(json!({"name": format!("t-{n}"), "address": "127.0.0.1:5060"})),
            ));
            cases.push(case(
                Method::POST,
                "/v1/scripts".into(),
                P::ScriptsWrite,
                Some(json!({"name": format!("s-{n}"), "body": valid_script()})),
            ));
            cases.push(case(
                Method::POST,
                "/v1/webhooks".into(),
                P::WebhooksWrite,
                Some(json!({"url": format!("http://127.0.0.1:9/{n}")})),
            ));
            cases.push(case(
                Method::POST,
                "/v1/calls".into(),
                P::CallsWrite,
                Some(json!({"to": closed_destination(), "ring_timeout_s": 2})),
            ));
        }
        let del_trunk = api
            .create(
                "/v1/trunks",
                &owner,
                &json!({"name": "del", "address": "127.0.0.1:5060"}),
            )
            .await;
        let del_script = api
            .create(
                "/v1/scripts",
                &owner,
                &json!({"name": "del", "body": valid_script()}),
            )
            .await;
        cases.push(case(
            Method::DELETE,
            format!("/v1/trunks/{del_trunk}"),
            P::TrunksWrite,
            None,
        ));
        cases.push(case(
            Method::DELETE,
            format!("/v1/scripts/{del_script}"),
            P::ScriptsWrite,
            None,
        ));
        let mut checked = 0;
        for c in &cases {
            for role in Role::ALL {
                let key = api.a.key(role);
                let status = if c.stream {
                    let req = Request::builder()
                        .method(c.method.clone())
                        .uri(&c.path)
                        .header("authorization", format!("Bearer {key}"))
                        .body(Body::empty())
                        .expect("request");
                    let resp = api.router.clone().oneshot(req).await.expect("infallible");
                    resp.status()
                } else {
                    api.send(c.method.clone(), &c.path, Some(key), c.body.as_ref())
                        .await
                        .status
                };
                if allows(role, c.needs) {
                    assert!(
                        status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                        "{db}: {role} should be allowed {} {} ({}), got {status}",
                        c.method,
                        c.path,
                        c.needs.as_str()
                    );
                } else {
                    let r = api
                        .send(c.method.clone(), &c.path, Some(key), c.body.as_ref())
                        .await;
                    assert_eq!(
                        r.status,
                        StatusCode::FORBIDDEN,
                        "{db}: {role} must be refused {} {}",
                        c.method,
                        c.path
                    );
                    assert_eq!(r.code(), "forbidden");
                    let msg = r.json()["error"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    assert!(
                        msg.contains(c.needs.as_str()),
                        "{db}: 403 names the permission: {msg}"
                    );
                }
                checked += 1;
            }
        }
        assert!(
            checked >= 5 * 30,
            "{db}: the table covered {checked} requests"
        );
        api.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_names_the_keys_role_and_exactly_its_permissions() {
    let (_, store) = stores().await.remove(0);
    let api = TestApi::start(store).await;
    for role in Role::ALL {
        let r = api.get("/v1/me", api.a.key(role)).await;
        assert_eq!(r.status, StatusCode::OK, "{role}");
        let me = r.json();
        assert_eq!(me["role"], role.as_str());
        assert_eq!(me["tenant_id"], api.a.tenant_id.as_str());
        assert!(me["key_id"].as_str().is_some_and(|k| k.starts_with("key_")));
        let listed: BTreeSet<&str> = me["permissions"]
            .as_array()
            .expect("permissions")
            .iter()
            .map(|p| p.as_str().expect("text"))
            .collect();
        let table: BTreeSet<&str> = Permission::ALL
            .iter()
            .filter(|p| allows(role, **p))
            .map(|p| p.as_str())
            .collect();
        assert_eq!(listed, table, "{role}");
    }
    let r = api.send(Method::GET, "/v1/me", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_at_the_root_under_a_strict_policy() {
    let (_, store) = stores().await.remove(0);
    let api = TestApi::start(store).await;
    for (path, media_type) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        // No key: the pages hold no data (the API calls they make carry the key).
        let r = api.send(Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with(media_type)),
            "{path}: {:?}",
            r.header("content-type")
        );
        let csp = r.header("content-security-policy").expect("a CSP");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {directive} in {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    let index = api.send(Method::GET, "/", None, None).await;
    // An unchanged file revalidates with a 304 and no body.
    let etag = index.header("etag").expect("an ETag").to_owned();
    let again = api
        .send_raw(Method::GET, "/", None, &[("if-none-match", &etag)], None)
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    let other = api
        .send_raw(
            Method::GET,
            "/",
            None,
            &[("if-none-match", "\"stale\"")],
            None,
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
    let html = String::from_utf8(index.body).expect("utf-8");
    assert!(
        html.contains(r#"<script type="module" src="/ui/app.js">"#),
        "{html}"
    );
    // Only the dashboard's own files: no path is read from the request.
    for path in [
        "/ui/nope.js",
        "/ui/..%2FCargo.toml",
        "/ui/%2e%2e%2fsrc%2fmain.rs",
        "/ui/",
    ] {
        let r = api.send(Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_activity_is_dense_buckets_and_checks_its_span() {
    for (db, store) in stores().await {
        let api = TestApi::start(store).await;
        let owner = api.a.key(Role::Owner).to_owned();
        let id = api
            .create("/v1/campaigns", &owner, &json!({"name": "charted"}))
            .await;
        let path = format!("/v1/campaigns/{id}/activity");
        // A viewer reads it; a draft campaign has empty buckets from its creation to now.
        let r = api.get(&path, api.a.key(Role::Viewer)).await;
        assert_eq!(r.status, StatusCode::OK, "{db}");
        let a = r.json();
        assert_eq!(a["bucket_s"], 60, "{db}: {a}");
        let buckets = a["buckets"].as_array().expect("buckets");
        assert!(!buckets.is_empty() && buckets.len() <= 2, "{db}: {a}");
        assert!(
            buckets
                .iter()
                .all(|b| b["started"] == 0 && b["ended"] == json!({}))
        );
        let r = api
            .get(
                &format!("{path}?bucket_s=10&from=1700000000000000&to=1700000060000000"),
                &owner,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{db}");
        let a = r.json();
        let starts: Vec<i64> = a["buckets"]
            .as_array()
            .expect("buckets")
            .iter()
            .map(|b| b["start_us"].as_i64().expect("start"))
            .collect();
        assert_eq!(
            starts,
            (0..6)
                .map(|i| 1_700_000_000_000_000 + i * 10_000_000)
                .collect::<Vec<_>>(),
            "{db}"
        );
        for bad in [
            "?bucket_s=5",
            "?bucket_s=86401",
            "?from=2000000000&to=1000000000",
            "?bucket_s=10&from=0",
            "?from=yesterday",
            "?colour=red",
        ] {
            let r = api.get(&format!("{path}{bad}"), &owner).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{db} {bad}");
        }
        let r = api.get(&path, api.b.key(Role::Owner)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{db}");
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_grant_above_their_own_role() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let body = |role: &str| json!({"name": "x", "role": role});
        let admin = api.a.key(Role::Admin).to_owned();
        let owner = api.a.key(Role::Owner).to_owned();
        let r = api.post("/v1/keys", &admin, &body("owner")).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{db}"
        );
        assert_eq!(
            api.post("/v1/keys", &admin, &body("admin")).await.status,
            StatusCode::CREATED
        );
        assert_eq!(
            api.post("/v1/keys", &owner, &body("owner")).await.status,
            StatusCode::CREATED
        );
        // An admin may not revoke an owner key.
        let keys = api.get("/v1/keys", &owner).await.json();
        let owner_key = keys["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|k| k["role"] == "owner")
            .expect("an owner key")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let r = api
            .send(
                Method::DELETE,
                &format!("/v1/keys/{owner_key}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{db}"
        );
        // Listings never show a secret or its hash.
        let text = String::from_utf8_lossy(&api.get("/v1/keys", &owner).await.body).into_owned();
        assert!(
            !text.contains("secret") && !text.contains(&owner[10..]),
            "{db}: {text}"
        );
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_a_gets_404_for_everything_of_tenant_b() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let b_owner = api.b.key(Role::Owner).to_owned();
        let a_owner = api.a.key(Role::Owner).to_owned();
        let trunk = api
            .create(
                "/v1/trunks",
                &b_owner,
                &json!({"name": "b", "address": "127.0.0.1:5060"}),
            )
            .await;
        let script = api
            .create(
                "/v1/scripts",
                &b_owner,
                &json!({"name": "b", "body": valid_script()}),
            )
            .await;
        let webhook = api
            .create(
                "/v1/webhooks",
                &b_owner,
                &json!({"url": "http://127.0.0.1:9/b"}),
            )
            .await;
        let call = insert_call(&store, &api.b.tenant_id, callplane::clock::unix_us()).await;
        let (rec, _) =
            add_recording(&api, &api.b.tenant_id, &call, callplane::clock::unix_us()).await;
        let b_keys = store.list_api_keys(&api.b.tenant_id).await.expect("keys");
        let b_key = b_keys[0].id.clone();
        let trunk_body = json!({"name": "x", "address": "127.0.0.1:5060"});
        let requests: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, format!("/v1/calls/{call}"), None),
            (Method::GET, format!("/v1/calls/{call}/events"), None),
            (Method::GET, format!("/v1/calls/{call}/manifest"), None),
            (Method::GET, format!("/v1/calls/{call}/recordings"), None),
            (Method::POST, format!("/v1/calls/{call}/hangup"), None),
            (Method::GET, format!("/v1/recordings/{rec}"), None),
            (Method::GET, format!("/v1/recordings/{rec}/audio"), None),
            (Method::GET, format!("/v1/trunks/{trunk}"), None),
            (Method::PUT, format!("/v1/trunks/{trunk}"), Some(trunk_body)),
            (Method::DELETE, format!("/v1/trunks/{trunk}"), None),
            (Method::GET, format!("/v1/scripts/{script}"), None),
            (
                Method::PUT,
                format!("/v1/scripts/{script}"),
                Some(json!({"body": valid_script()})),
            ),
            (Method::DELETE, format!("/v1/scripts/{script}"), None),
            (Method::GET, format!("/v1/webhooks/{webhook}"), None),
            (Method::DELETE, format!("/v1/webhooks/{webhook}"), None),
            (
                Method::GET,
                format!("/v1/webhooks/{webhook}/deliveries"),
                None,
            ),
            (Method::DELETE, format!("/v1/keys/{b_key}"), None),
            (Method::GET, format!("/v1/events?call_id={call}"), None),
        ];
        for (method, path, body) in requests {
            let r = api
                .send(method.clone(), &path, Some(&a_owner), body.as_ref())
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{db}: A {method} {path}");
            assert_eq!(r.code(), "not_found", "{db}: {method} {path}");
        }
        // A's listings do not show B's rows; B still sees them (nothing was deleted).
        for list in ["/v1/calls", "/v1/trunks", "/v1/scripts", "/v1/webhooks"] {
            let a = api.get(list, &a_owner).await.json();
            assert_eq!(
                a["items"].as_array().map(Vec::len),
                Some(0),
                "{db}: A {list}"
            );
            let b = api.get(list, &b_owner).await.json();
            assert_eq!(
                b["items"].as_array().map(Vec::len),
                Some(1),
                "{db}: B {list}"
            );
        }
        // A call through B's trunk or with B's script is refused as unknown.
        let r = api
            .post(
                "/v1/calls",
                &a_owner,
                &json!({"to": "100", "trunk_id": trunk}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{db}");
        let r = api
            .post(
                "/v1/calls",
                &a_owner,
                &json!({"to": closed_destination(), "script_id": script}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{db}");
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_400_413_and_415_with_clear_codes() {
    for (db, store) in stores().await {
        let api = TestApi::start_with(store.clone(), |c| c.max_body_bytes = 2048).await;
        let owner = api.a.key(Role::Owner).to_owned();
        let send = |body: &'static [u8], ct: &'static str| {
            let owner = owner.clone();
            let api = &api;
            async move {
                api.send_raw(
                    Method::POST,
                    "/v1/trunks",
                    Some(&owner),
                    &[],
                    Some((ct, body.to_vec())),
                )
                .await
            }
        };
        let r = send(b"{\"name\": ", "application/json").await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "invalid_json"),
            "{db}"
        );
        let r = send(
            b"{\"name\": 5, \"address\": \"127.0.0.1:5060\"}",
            "application/json",
        )
        .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "invalid_json"),
            "{db}"
        );
        let r = send(
            b"{\"name\": \"x\", \"address\": \"127.0.0.1:5060\", \"colour\": \"red\"}",
            "application/json",
        )
        .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "unknown_field"),
            "{db}"
        );
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("colour")
        );
        let r = send(b"{}", "text/plain").await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            "{db}"
        );
        let big = json!({"name": "x".repeat(5000), "address": "127.0.0.1:5060"});
        let r = api.post("/v1/trunks", &owner, &big).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            "{db}"
        );
        // Unknown fields are refused on calls too (serde deny_unknown_fields everywhere).
        let r = api
            .post(
                "/v1/calls",
                &owner,
                &json!({"to": closed_destination(), "ringtimeout": 3}),
            )
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "unknown_field"),
            "{db}"
        );
        let r = api
            .send(Method::PATCH, "/v1/trunks", Some(&owner), None)
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            "{db}"
        );
        // Unknown routes answer in the same shape.
        let r = api.get("/v1/nope", &owner).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::NOT_FOUND, "not_found"),
            "{db}"
        );
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    for (db, store) in stores().await {
        let api = TestApi::start_with(store.clone(), |c| {
            c.rate_limit_per_s = 1;
            c.rate_limit_burst = 3;
        })
        .await;
        let viewer = api.a.key(Role::Viewer).to_owned();
        for i in 0..3 {
            assert_eq!(
                api.get("/v1/calls", &viewer).await.status,
                StatusCode::OK,
                "{db}: #{i}"
            );
        }
        let r = api.get("/v1/calls", &viewer).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            "{db}"
        );
        let retry: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("seconds");
        assert!((1..=2).contains(&retry), "{db}: Retry-After {retry}");
        // The limit is per key: another key of the same tenant is not limited.
        assert_eq!(
            api.get("/v1/calls", api.a.key(Role::Analyst)).await.status,
            StatusCode::OK
        );
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_closed_port_fails_with_real_times_and_a_final_manifest() {
    on_every_store(|db, store| async move {
        let api = TestApi::start(store.clone()).await;
        let op = api.a.key(Role::Operator).to_owned();
        let mut rx = api.state.bus.subscribe();
        let to = closed_destination();
        let r = api
            .post(
                "/v1/calls",
                &op,
                &json!({"to": to, "variables": {"order": "42"}, "ring_timeout_s": 5}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{db}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let call = r.json();
        let id = call["id"].as_str().expect("id").to_owned();
        assert!(id.starts_with("call_"));
        assert!(
            matches!(call["status"].as_str(), Some("queued" | "dialing")),
            "{db}: {call}"
        );
        assert_eq!(call["to"], to);
        let fin = wait_final(&mut rx, &id).await;
        assert_eq!(fin.kind, "call.failed", "{db}");
        let got = api.get(&format!("/v1/calls/{id}"), &op).await.json();
        assert_eq!(got["status"], "failed", "{db}: {got}");
        assert_eq!(got["outcome"], "network_error", "{db}: {got}");
        assert!(got["sip_call_id"].is_string(), "{db}: {got}");
        assert_eq!(got["ended_at_us"], fin.at_unix_us);
        let started = got["started_at_us"].as_i64().expect("started");
        assert_eq!(
            got["durations"]["total_ms"],
            (fin.at_unix_us - started) / 1000
        );
        assert_eq!(
            got["durations"]["ring_ms"],
            (fin.at_unix_us - started) / 1000
        );
        assert!(got["durations"]["talk_ms"].is_null() || got["durations"]["talk_ms"] == 0);
        assert!(
            got["started_at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{db}: {got}"
        );
        assert_eq!(got["request"]["variables"]["order"], "42");
        // The timeline, in order, from call.created to the final event.
        let events = api.get(&format!("/v1/calls/{id}/events"), &op).await.json();
        let kinds: Vec<&str> = events["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| e["kind"].as_str().expect("kind"))
            .collect();
        assert_eq!(kinds.first(), Some(&"call.created"), "{db}: {kinds:?}");
        assert_eq!(kinds.last(), Some(&"call.failed"), "{db}: {kinds:?}");
        // Hanging up an ended call is a conflict.
        let r = api
            .send(
                Method::POST,
                &format!("/v1/calls/{id}/hangup"),
                Some(&op),
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::CONFLICT, "call_ended"),
            "{db}"
        );
        // The manifest is final and does not change, even when an event is appended later.
        let m1 = api.get(&format!("/v1/calls/{id}/manifest"), &op).await;
        assert_eq!(m1.status, StatusCode::OK, "{db}");
        let m1 = m1.json();
        assert_eq!(m1["final"], true, "{db}: {m1}");
        assert_eq!(m1["timeline"]["events"], kinds.len(), "{db}: {m1}");
        assert_eq!(m1["timeline"]["last_event_id"], fin.id);
        assert_eq!(m1["outcome"], "network_error");
        let m2 = api
            .get(&format!("/v1/calls/{id}/manifest"), &op)
            .await
            .json();
        assert_eq!(m1, m2, "{db}");
        append(
            &store,
            &id,
            "sip.late",
            callplane::clock::unix_us(),
            json!({"x": 1}),
        )
        .await;
        let m3 = api
            .get(&format!("/v1/calls/{id}/manifest"), &op)
            .await
            .json();
        assert_eq!(
            m1, m3,
            "{db}: a late event must not change a final manifest"
        );
        api.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_digest_is_the_documented_canonical_serialisation() {
    use sha2::{Digest, Sha256};
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let t = api.a.tenant_id.clone();
        let key = api.a.key(Role::Viewer).to_owned();
        let call = insert_call(&store, &t, 1_000_000).await;
        append(
            &store,
            &call,
            "call.created",
            2_000_000,
            json!({"sip_call_id": "abc@x", "b": 1, "a": [1, {"z": 2, "y": 3}]}),
        )
        .await;
        let live = api
            .get(&format!("/v1/calls/{call}/manifest"), &key)
            .await
            .json();
        assert_eq!(live["final"], false, "{db}");
        let (rec, file) = add_recording(&api, &t, &call, 2_500_000).await;
        append(
            &store,
            &call,
            "call.completed",
            3_000_000,
            json!({"outcome": "answered", "duration_ms": 1000}),
        )
        .await;
        let m = api
            .get(&format!("/v1/calls/{call}/manifest"), &key)
            .await
            .json();
        assert_eq!(m["final"], true, "{db}: {m}");
        assert_eq!(m["sip_call_id"], "abc@x");
        assert_eq!(m["recordings"][0]["id"], rec);
        assert_eq!(m["recordings"][0]["bytes"], file.len());
        assert_eq!(
            m["recordings"][0]["sha256"],
            hex::encode(Sha256::digest(&file))
        );
        // Recompute the digest from the events endpoint, as docs/api.md says a verifier would.
        let events = api
            .get(&format!("/v1/calls/{call}/events"), &key)
            .await
            .json();
        let mut h = Sha256::new();
        for e in events["items"].as_array().expect("items") {
            let mut obj = serde_json::Map::new();
            for k in [
                "at_unix_us",
                "call_id",
                "details",
                "id",
                "kind",
                "offset_us",
            ] {
                obj.insert(k.to_owned(), e[k].clone());
            }
            // serde_json without preserve_order sorts keys: this is the canonical form.
            h.update(format!("{}\n", Value::Object(obj)).as_bytes());
        }
        assert_eq!(m["timeline"]["sha256"], hex::encode(h.finalize()), "{db}");
        assert_eq!(m["timeline"]["events"], 3);
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_returns_the_same_call_and_dials_once() {
    on_every_store(|db, store| async move {
        let api = TestApi::start(store.clone()).await;
        let op = api.a.key(Role::Operator).to_owned();
        let mut rx = api.state.bus.subscribe();
        let body = json!({"to": closed_destination(), "ring_timeout_s": 5});
        let bytes = body.to_string().into_bytes();
        let post = |b: Vec<u8>, k: &'static str| {
            let op = op.clone();
            let api = &api;
            async move {
                api.send_raw(
                    Method::POST,
                    "/v1/calls",
                    Some(&op),
                    &[("idempotency-key", k)],
                    Some(("application/json", b)),
                )
                .await
            }
        };
        let first = post(bytes.clone(), "order-42").await;
        assert_eq!(first.status, StatusCode::CREATED, "{db}");
        assert!(first.header("idempotent-replayed").is_none());
        let id = first.json()["id"].as_str().expect("id").to_owned();
        let again = post(bytes.clone(), "order-42").await;
        assert_eq!(again.status, StatusCode::OK, "{db}");
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.json()["id"], id.as_str());
        let other = post(
            json!({"to": closed_destination()}).to_string().into_bytes(),
            "order-42",
        )
        .await;
        assert_eq!(
            (other.status, other.code().as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            "{db}"
        );
        // Another tenant may use the same key for its own call.
        let b = api
            .send_raw(
                Method::POST,
                "/v1/calls",
                Some(api.b.key(Role::Operator)),
                &[("idempotency-key", "order-42")],
                Some(("application/json", bytes.clone())),
            )
            .await;
        assert_eq!(b.status, StatusCode::CREATED, "{db}");
        assert_ne!(b.json()["id"], id.as_str());
        wait_final(&mut rx, &id).await;
        // Dialled once: one call.created in its timeline, one call in the tenant's list.
        let events = api.get(&format!("/v1/calls/{id}/events"), &op).await.json();
        let created = events["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|e| e["kind"] == "call.created")
            .count();
        assert_eq!(created, 1, "{db}");
        let list = api.get("/v1/calls", &op).await.json();
        assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{db}");
        // Replays after the end return the ended call.
        let late = post(bytes, "order-42").await;
        assert_eq!(
            (late.status, late.json()["status"].clone()),
            (StatusCode::OK, json!("failed"))
        );
        api.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_for_a_call_another_node_runs_says_so() {
    on_every_store(|db, store| async move {
        let api = TestApi::start(store.clone()).await;
        let op = api.a.key(Role::Operator).to_owned();
        let id = store
            .create_call(&NewCall {
                node_id: Some("node_elsewhere".into()),
                ..NewCall::outbound(
                    api.a.tenant_id.as_str(),
                    "sip:bob@127.0.0.1:9",
                    "sip:callplane@127.0.0.1",
                    1,
                )
            })
            .await
            .expect("call")
            .into_call()
            .id;
        let r = api
            .send(
                Method::POST,
                &format!("/v1/calls/{id}/hangup"),
                Some(&op),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{db}");
        assert_eq!(r.json()["error"]["code"], "call_on_another_node", "{db}");
        api.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_call_can_be_hung_up() {
    on_every_store(|db, store| async move {
        let api = TestApi::start(store.clone()).await;
        let op = api.a.key(Role::Operator).to_owned();
        // A real socket that receives the INVITE and never answers: the call stays live.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let mut rx = api.state.bus.subscribe();
        let r = api
            .post(
                "/v1/calls",
                &op,
                &json!({"to": format!("sip:bob@127.0.0.1:{port}")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{db}");
        let id = r.json()["id"].as_str().expect("id").to_owned();
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), silent.recv_from(&mut buf))
            .await
            .expect("the INVITE arrives")
            .expect("recv");
        assert!(buf[..n].starts_with(b"INVITE "), "{db}");
        let r = api
            .send(
                Method::POST,
                &format!("/v1/calls/{id}/hangup"),
                Some(&op),
                None,
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::ACCEPTED,
            "{db}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let fin = wait_final(&mut rx, &id).await;
        assert!(
            fin.kind == "call.failed" || fin.kind == "call.completed",
            "{db}"
        );
        let got = api.get(&format!("/v1/calls/{id}"), &op).await.json();
        assert!(
            matches!(got["status"].as_str(), Some("failed" | "completed")),
            "{db}: {got}"
        );
        api.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_at_capacity_answers_503_and_ends_the_call_row() {
    for (db, store) in stores().await {
        let api = TestApi::start_full(store.clone(), |_| {}, |e| e.max_calls = 0).await;
        let op = api.a.key(Role::Operator).to_owned();
        let r = api
            .post("/v1/calls", &op, &json!({"to": closed_destination()}))
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "capacity_exceeded"),
            "{db}"
        );
        assert!(r.header("retry-after").is_some());
        let list = api.get("/v1/calls", &op).await.json();
        let call = &list["items"][0];
        assert_eq!(call["status"], "failed", "{db}: {list}");
        assert_eq!(call["outcome"], "failed");
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_validated_before_anything_is_stored() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let op = api.a.key(Role::Operator).to_owned();
        for (body, code) in [
            (json!({"to": "sip:bob@example.com"}), "invalid_destination"),
            (json!({"to": "tel:+15551234"}), "invalid_destination"),
            (json!({"to": "not a uri"}), "invalid_field"),
            (
                json!({"to": closed_destination(), "ring_timeout_s": 0}),
                "invalid_field",
            ),
            (
                json!({"to": closed_destination(), "trunk_id": "trk_000000000000000000000000"}),
                "invalid_field",
            ),
            (
                json!({"to": closed_destination(), "script": {"version": 1, "steps": [{"gather": {"max_digits": 0}}]}}),
                "invalid_script",
            ),
            (
                json!({"to": closed_destination(), "script_id": "scr_x", "script": valid_script()}),
                "invalid_field",
            ),
        ] {
            let r = api.post("/v1/calls", &op, &body).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{db}: {body}");
            assert_eq!(r.code(), code, "{db}: {body}");
        }
        let list = api.get("/v1/calls", &op).await.json();
        assert_eq!(
            list["items"].as_array().map(Vec::len),
            Some(0),
            "{db}: nothing stored"
        );
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunks_hide_their_password_and_route_numbers() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let admin = api.a.key(Role::Admin).to_owned();
        let port = common::free_udp_port();
        let r = api
            .post(
                "/v1/trunks",
                &admin,
                &json!({"name": "carrier", "address": format!("127.0.0.1:{port}"),
                        "username": "u", "password": "hunter22", "from_user": "4400"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{db}");
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            !text.contains("hunter22") && !text.contains("\"password\""),
            "{db}: {text}"
        );
        let trunk = r.json();
        assert_eq!(trunk["has_password"], true);
        let id = trunk["id"].as_str().expect("id").to_owned();
        // PUT without a password keeps it.
        let r = api
            .send(
                Method::PUT,
                &format!("/v1/trunks/{id}"),
                Some(&admin),
                Some(&json!({"name": "carrier2", "address": format!("127.0.0.1:{port}"), "transport": "udp",
                             "username": "u", "from_user": "4400"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{db}");
        assert_eq!(r.json()["has_password"], true);
        assert_eq!(r.json()["name"], "carrier2");
        let r = api
            .post(
                "/v1/trunks",
                &admin,
                &json!({"name": "carrier2", "address": "127.0.0.1:1"}),
            )
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::CONFLICT, "conflict"),
            "{db}"
        );
        let msg = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_lowercase();
        assert!(
            !msg.contains("constraint")
                && !msg.contains("unique constraint")
                && !msg.contains("trunk."),
            "{db}: database text must not reach clients: {msg}"
        );
        // A domain is stored (RFC 3263 resolves it, #11); a call through it is refused
        // before anything is stored while this build cannot resolve names.
        let r = api
            .post(
                "/v1/trunks",
                &admin,
                &json!({"name": "dns", "address": "sip.example.com:5060"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{db}");
        let dns_trunk = r.json()["id"].as_str().expect("id").to_owned();
        let r = api
            .post(
                "/v1/calls",
                &admin,
                &json!({"to": "+15551234", "trunk_id": dns_trunk}),
            )
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_destination"),
            "{db}"
        );
        let r = api
            .post(
                "/v1/trunks",
                &admin,
                &json!({"name": "bad", "address": "sip example.com:5060"}),
            )
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            "{db}"
        );
        // A number through the trunk becomes sip:<number>@<trunk address>.
        let r = api
            .post(
                "/v1/calls",
                &admin,
                &json!({"to": "+15551234", "trunk_id": id}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{db}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let call = r.json();
        assert_eq!(call["to"], format!("sip:+15551234@127.0.0.1:{port}"));
        assert_eq!(call["from"], "sip:4400@127.0.0.1");
        assert_eq!(call["trunk_id"], id.as_str());
        assert_eq!(
            api.get(&format!("/v1/trunks/{id}"), &admin).await.json()["username"],
            "u"
        );
        let r = api
            .send(
                Method::DELETE,
                &format!("/v1/trunks/{id}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{db}");
        assert_eq!(
            api.get(&format!("/v1/trunks/{id}"), &admin).await.status,
            StatusCode::NOT_FOUND
        );
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_validated_versioned_and_recorded_on_calls() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let admin = api.a.key(Role::Admin).to_owned();
        let bad = json!({"name": "bad", "body": {"version": 1, "steps": [{"answer": {}}, {"gather": {"max_digits": 0}}]}});
        let r = api.post("/v1/scripts", &admin, &bad).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_script"),
            "{db}"
        );
        let msg = r.json()["error"]["message"]
            .as_str()
            .expect("message")
            .to_owned();
        assert!(
            msg.starts_with("steps[1].gather"),
            "{db}: the message names the step: {msg}"
        );
        // The example of docs/api.md validates.
        let doc_example = json!({"name": "survey", "body": {"version": 1, "steps": [
            {"play": {"file": "hello.wav"}},
            {"gather": {"max_digits": 1, "store_as": "answer"}},
            {"hangup": {}}]}});
        let r = api.post("/v1/scripts", &admin, &doc_example).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{db}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let r = api
            .post(
                "/v1/scripts",
                &admin,
                &json!({"name": "ivr", "body": valid_script()}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{db}");
        assert_eq!(r.json()["version"], 1);
        let id = r.json()["id"].as_str().expect("id").to_owned();
        let v2 = json!({"version": 1, "steps": [{"answer": {}}, {"hangup": {}}]});
        let r = api
            .send(
                Method::PUT,
                &format!("/v1/scripts/{id}"),
                Some(&admin),
                Some(&json!({"body": v2})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{db}");
        assert_eq!(r.json()["version"], 2);
        let old = api
            .get(&format!("/v1/scripts/{id}?version=1"), &admin)
            .await
            .json();
        assert_eq!(old["body"], valid_script(), "{db}");
        assert_eq!(
            api.get(&format!("/v1/scripts/{id}"), &admin).await.json()["body"],
            v2
        );
        let r = api
            .get(&format!("/v1/scripts/{id}?version=7"), &admin)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{db}");
        let r = api.get(&format!("/v1/scripts/{id}?vers=1"), &admin).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "invalid_query"),
            "{db}"
        );
        // A call records the script version it ran.
        let r = api
            .post(
                "/v1/calls",
                &admin,
                &json!({"to": closed_destination(), "script_id": id}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{db}");
        assert_eq!(r.json()["script_id"], id.as_str());
        assert_eq!(r.json()["script_version"], 2);
        let r = api
            .send(
                Method::DELETE,
                &format!("/v1/scripts/{id}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{db}");
        let list = api.get("/v1/scripts", &admin).await.json();
        let names: Vec<&str> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|s| s["name"].as_str().expect("name"))
            .collect();
        assert_eq!(
            names,
            vec!["survey"],
            "{db}: the deleted script is not listed"
        );
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_listings_filter_and_paginate_with_a_cursor() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let t = api.a.tenant_id.clone();
        let key = api.a.key(Role::Viewer).to_owned();
        let base = 1_700_000_000_000_000i64;
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(insert_call(&store, &t, base + i * 1_000_000).await);
        }
        append(
            &store,
            &ids[0],
            "call.failed",
            base + 10,
            json!({"outcome": "busy", "sip_status": 486}),
        )
        .await;
        let p1 = api.get("/v1/calls?limit=2", &key).await.json();
        let got: Vec<&str> = p1["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["id"].as_str().expect("id"))
            .collect();
        assert_eq!(
            got,
            vec![ids[4].as_str(), ids[3].as_str()],
            "{db}: newest first"
        );
        let cursor = p1["next_cursor"].as_str().expect("a next page").to_owned();
        let p2 = api
            .get(&format!("/v1/calls?limit=2&cursor={cursor}"), &key)
            .await
            .json();
        let got: Vec<&str> = p2["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["id"].as_str().expect("id"))
            .collect();
        assert_eq!(got, vec![ids[2].as_str(), ids[1].as_str()], "{db}");
        let cursor = p2["next_cursor"].as_str().expect("a next page").to_owned();
        let p3 = api
            .get(&format!("/v1/calls?limit=2&cursor={cursor}"), &key)
            .await
            .json();
        assert_eq!(p3["items"].as_array().map(Vec::len), Some(1), "{db}");
        assert!(p3["next_cursor"].is_null(), "{db}");
        let failed = api
            .get("/v1/calls?status=failed&outcome=busy", &key)
            .await
            .json();
        assert_eq!(failed["items"].as_array().map(Vec::len), Some(1), "{db}");
        assert_eq!(failed["items"][0]["sip_status"], 486);
        // created_from/created_to accept µs and RFC 3339.
        let from = base + 2_000_000;
        let r = api
            .get(&format!("/v1/calls?created_from={from}"), &key)
            .await
            .json();
        assert_eq!(r["items"].as_array().map(Vec::len), Some(3), "{db}");
        let to = jiff::Timestamp::from_microsecond(base + 2_000_000)
            .expect("ts")
            .to_string();
        let r = api
            .get(&format!("/v1/calls?created_to={to}"), &key)
            .await
            .json();
        assert_eq!(r["items"].as_array().map(Vec::len), Some(2), "{db}: {to}");
        let r = api.get("/v1/calls?cursor=zz", &key).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "invalid_cursor"),
            "{db}"
        );
        let r = api.get("/v1/calls?status=weird", &key).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "invalid_query"),
            "{db}"
        );
        let r = api.get("/v1/calls?created_from=yesterday", &key).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "invalid_query"),
            "{db}"
        );
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_serve_metadata_and_byte_ranges_of_the_real_wav() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let t = api.a.tenant_id.clone();
        let key = api.a.key(Role::Analyst).to_owned();
        let call = insert_call(&store, &t, callplane::clock::unix_us()).await;
        let (rec, file) = add_recording(&api, &t, &call, callplane::clock::unix_us()).await;
        let len = file.len();
        let list = api
            .get(&format!("/v1/calls/{call}/recordings"), &key)
            .await
            .json();
        assert_eq!(list["items"][0]["id"], rec.as_str(), "{db}");
        let meta = api.get(&format!("/v1/recordings/{rec}"), &key).await.json();
        assert_eq!(meta["bytes"], len);
        assert_eq!(meta["channels"], 2);
        assert!(
            meta.get("path").is_none(),
            "{db}: server paths are not shown"
        );
        let links = api.get(&format!("/v1/calls/{call}"), &key).await.json();
        assert_eq!(
            links["recordings"][0]["audio_url"],
            format!("/v1/recordings/{rec}/audio")
        );
        let audio = format!("/v1/recordings/{rec}/audio");
        let whole = api.get(&audio, &key).await;
        assert_eq!(whole.status, StatusCode::OK, "{db}");
        assert_eq!(whole.header("content-type"), Some("audio/wav"));
        assert_eq!(whole.header("accept-ranges"), Some("bytes"));
        assert_eq!(whole.body, file);
        assert!(whole.body.starts_with(b"RIFF"));
        let range = |spec: &'static str| {
            let key = key.clone();
            let api = &api;
            let audio = audio.clone();
            async move {
                api.send_raw(Method::GET, &audio, Some(&key), &[("range", spec)], None)
                    .await
            }
        };
        let r = range("bytes=0-43").await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{db}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes 0-43/{len}").as_str())
        );
        assert_eq!(r.body, file[..44]);
        let r = range("bytes=100-").await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.body, file[100..]);
        assert_eq!(
            r.header("content-length"),
            Some((len - 100).to_string().as_str())
        );
        let r = range("bytes=-10").await;
        assert_eq!(r.body, file[len - 10..]);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {}-{}/{len}", len - 10, len - 1).as_str())
        );
        let r = api
            .send_raw(
                Method::GET,
                &audio,
                Some(&key),
                &[("range", &format!("bytes={len}-"))],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{db}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{len}").as_str())
        );
        // A row whose file is gone says so instead of failing obscurely.
        std::fs::remove_file(
            api.data_dir
                .path()
                .join("recordings")
                .join(format!("{call}.wav")),
        )
        .expect("rm");
        let r = api.get(&audio, &key).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::NOT_FOUND, "recording_unavailable"),
            "{db}"
        );
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_json_lists_every_route_and_swagger_ui_is_served() {
    let store = common::db::sqlite_store().await;
    let api = TestApi::start(store).await;
    let r = api.send(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let mut listed = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                listed.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let expected: BTreeSet<String> = [
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /v1/keys",
        "POST /v1/keys",
        "DELETE /v1/keys/{id}",
        "GET /v1/trunks",
        "POST /v1/trunks",
        "GET /v1/trunks/{id}",
        "PUT /v1/trunks/{id}",
        "PATCH /v1/trunks/{id}",
        "GET /v1/trunks/{id}/routes",
        "POST /v1/trunks/{id}/routes",
        "DELETE /v1/trunks/{id}/routes/{did}",
        "DELETE /v1/trunks/{id}",
        "GET /v1/scripts",
        "POST /v1/scripts",
        "GET /v1/scripts/{id}",
        "PUT /v1/scripts/{id}",
        "DELETE /v1/scripts/{id}",
        "GET /v1/calls",
        "POST /v1/calls",
        "GET /v1/calls/{id}",
        "GET /v1/calls/{id}/events",
        "POST /v1/calls/{id}/hangup",
        "GET /v1/calls/{id}/manifest",
        "GET /v1/calls/{id}/recordings",
        "GET /v1/calls/{id}/deliveries",
        "GET /v1/me",
        "GET /v1/campaigns/{id}/activity",
        "GET /v1/recordings/{id}",
        "GET /v1/recordings/{id}/audio",
        "GET /v1/events",
        "GET /v1/webhooks",
        "POST /v1/webhooks",
        "GET /v1/webhooks/{id}",
        "PUT /v1/webhooks/{id}",
        "DELETE /v1/webhooks/{id}",
        "GET /v1/webhooks/{id}/deliveries",
        "POST /v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
        "GET /v1/campaigns",
        "POST /v1/campaigns",
        "GET /v1/campaigns/csv-template",
        "GET /v1/campaigns/{id}",
        "PATCH /v1/campaigns/{id}",
        "DELETE /v1/campaigns/{id}",
        "GET /v1/campaigns/{id}/contacts",
        "POST /v1/campaigns/{id}/contacts",
        "GET /v1/campaigns/{id}/contacts/{contact_id}",
        "POST /v1/campaigns/{id}/start",
        "POST /v1/campaigns/{id}/pause",
        "POST /v1/campaigns/{id}/resume",
        "POST /v1/campaigns/{id}/cancel",
        "POST /v1/campaigns/{id}/preview",
        "GET /v1/campaigns/{id}/results",
        "GET /v1/suppressions",
        "POST /v1/suppressions",
        "DELETE /v1/suppressions/{number}",
        "GET /v1/settings/limits",
        "PUT /v1/settings/limits",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(listed, expected);
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // A validator from PyPI (openapi-spec-validator) accepts the document.
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &r.body).expect("write");
    if common::tool_available("python3", "--version", "python3") {
        let out = std::process::Command::new("python3")
            .args(["-m", "openapi_spec_validator"])
            .arg(file.path())
            .output()
            .expect("python3 runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if text.contains("No module named openapi_spec_validator") {
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!in_ci, "CI must `pip install openapi-spec-validator`");
            eprintln!(
                "SKIPPED: openapi-spec-validator is not installed (pip install openapi-spec-validator)"
            );
        } else {
            assert!(
                out.status.success(),
                "openapi-spec-validator refused /openapi.json:\n{text}"
            );
        }
    }
    let ui = api.send(Method::GET, "/docs/", None, None).await;
    assert_eq!(ui.status, StatusCode::OK);
    assert!(
        String::from_utf8_lossy(&ui.body).contains("swagger"),
        "Swagger UI page"
    );
    api.stop().await;
}

/// Scripts naming a file rather than a prompt, each with the path of the offending field.
fn scripts_naming_files() -> Vec<(Value, String)> {
    let mut out = Vec::new();
    for name in ["/etc/passwd", "../x", "a/b", ".."] {
        out.push((
            json!({"version": 1, "steps": [{"answer": {}}, {"play": {"file": name}}]}),
            "steps[1].play.file: ".to_owned(),
        ));
        out.push((
            json!({"version": 1, "steps": [{"pause": {"ms": 10}}, {"pause": {"ms": 10}},
                {"gather": {"prompt": name}}]}),
            "steps[2].gather.prompt: ".to_owned(),
        ));
        out.push((
            json!({"version": 1, "steps": [{"gather": {"prompt": "menu", "reprompt": name}}]}),
            "steps[0].gather.reprompt: ".to_owned(),
        ));
        out.push((
            json!({"version": 1, "steps": [{"gather": {}}, {"branch": {"on": "digits",
                "cases": {"1": [{"play": {"file": name}}]}}}]}),
            "steps[1].branch.cases[\"1\"][0].play.file: ".to_owned(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_scripts_naming_files_instead_of_prompts_get_422_and_nothing_is_stored() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let op = api.a.key(Role::Operator).to_owned();
        let admin = api.a.key(Role::Admin).to_owned();
        let expect_422 = |r: &common::api::Reply, path: &str, what: &str| {
            assert_eq!(
                (r.status, r.code().as_str()),
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_script"),
                "{db}: {what}"
            );
            let msg = r.json()["error"]["message"]
                .as_str()
                .expect("message")
                .to_owned();
            assert!(msg.starts_with(path), "{db}: {what}: {msg}");
            assert!(msg.contains("not a prompt name"), "{db}: {what}: {msg}");
        };
        // Inline in POST /v1/calls.
        for (script, path) in scripts_naming_files() {
            let r = api
                .post(
                    "/v1/calls",
                    &op,
                    &json!({"to": closed_destination(), "script": script}),
                )
                .await;
            expect_422(&r, &path, &format!("inline {script}"));
        }
        // Stored with POST /v1/scripts.
        for (script, path) in scripts_naming_files() {
            let r = api
                .post(
                    "/v1/scripts",
                    &admin,
                    &json!({"name": "files", "body": script}),
                )
                .await;
            expect_422(&r, &path, &format!("create {script}"));
        }
        // Replaced with PUT /v1/scripts/{id}: refused, and the script stays at version 1.
        let good =
            json!({"version": 1, "steps": [{"play": {"file": "hello.wav"}}, {"hangup": {}}]});
        let r = api
            .post(
                "/v1/scripts",
                &admin,
                &json!({"name": "good", "body": good}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{db}");
        let sid = r.json()["id"].as_str().expect("id").to_owned();
        for (script, path) in scripts_naming_files() {
            let r = api
                .send(
                    Method::PUT,
                    &format!("/v1/scripts/{sid}"),
                    Some(&admin),
                    Some(&json!({"body": script})),
                )
                .await;
            expect_422(&r, &path, &format!("update {script}"));
        }
        let got = api.get(&format!("/v1/scripts/{sid}"), &admin).await.json();
        assert_eq!(got["version"], 1, "{db}: {got}");
        assert_eq!(got["body"], good, "{db}");
        // A stored row that predates the rule is checked again when a call would run it.
        let old = store
            .create_script(
                &api.a.tenant_id,
                "predates the rule",
                &json!({"version": 1, "steps": [{"play": {"file": "../../x.wav"}}]}),
                callplane::clock::unix_us(),
            )
            .await
            .expect("stored directly");
        let r = api
            .post(
                "/v1/calls",
                &op,
                &json!({"to": closed_destination(), "script_id": old.id}),
            )
            .await;
        expect_422(&r, "steps[0].play.file: ", "stored row at call time");
        // No call row was created by any of the refusals.
        let list = api.get("/v1/calls", &op).await.json();
        assert_eq!(
            list["items"].as_array().map(Vec::len),
            Some(0),
            "{db}: nothing stored: {list}"
        );
        api.stop().await;
    }
}

/// Places an API call with `script` from `key` (of `tenant`) to a callee engine that answers at
/// once, and returns the call's stored timeline once it ended, as the store holds it (with the
/// server paths the API does not show: checked here).
async fn answered_call_timeline(
    api: &TestApi,
    tenant: &str,
    key: &str,
    callee: std::net::SocketAddr,
    script: Value,
) -> Vec<Value> {
    let mut rx = api.state.bus.subscribe();
    let r = api
        .post(
            "/v1/calls",
            key,
            &json!({"to": format!("sip:bob@{callee}"), "script": script}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let fin = wait_final(&mut rx, &id).await;
    assert_eq!(fin.kind, "call.completed", "{:?}", fin.details);
    let shown = api.get(&format!("/v1/calls/{id}/events"), key).await.json();
    for e in shown["items"].as_array().expect("items") {
        assert!(
            e["details"].get("path").is_none(),
            "the API shows a path: {e}"
        );
    }
    let filter = callplane::store::EventFilter {
        call_id: Some(id),
        ..Default::default()
    };
    let stored = api
        .state
        .store
        .events_after(tenant, 0, &filter, 1000)
        .await
        .expect("events");
    stored
        .iter()
        .map(|e| serde_json::to_value(e).expect("json"))
        .collect()
}

fn prompt_event<'a>(events: &'a [Value], file: &str) -> &'a Value {
    events
        .iter()
        .find(|e| {
            matches!(
                e["kind"].as_str(),
                Some("prompt.started" | "prompt.finished")
            ) && e["details"]["file"] == file
        })
        .unwrap_or_else(|| panic!("no prompt event for {file}: {events:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_play_prompts_from_their_own_tenants_directory_only() {
    on_every_store(|db, store| async move {
        let api = TestApi::start(store.clone()).await;
        // A real callee: an engine that answers every call at once.
        let callee = callplane::engine::Engine::start(callplane::engine::EngineConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
        ))
        .await
        .expect("callee starts");
        let dest = callee.handle.sip_local_addr();
        let prompts = api.data_dir.path().join("prompts");
        let a_dir = prompts.join(&api.a.tenant_id);
        std::fs::create_dir_all(&a_dir).expect("mkdir");
        common::write_tone(&a_dir.join("hello.wav"), 200);
        // Only tenant A's directory holds `secret`; the shared root holds `shared`.
        common::write_tone(&a_dir.join("secret.wav"), 200);
        common::write_tone(&prompts.join("shared.wav"), 200);
        let script = json!({"version": 1, "steps": [
            {"play": {"file": "hello"}}, {"play": {"file": "shared"}}, {"hangup": {}}]});

        let a_events = answered_call_timeline(
            &api,
            &api.a.tenant_id,
            api.a.key(Role::Operator),
            dest,
            script.clone(),
        )
        .await;
        let started = prompt_event(&a_events, "hello");
        assert_eq!(started["kind"], "prompt.started", "{db}: {started}");
        let path = std::path::PathBuf::from(started["details"]["path"].as_str().expect("path"));
        let a_real = std::fs::canonicalize(&a_dir).expect("canonical");
        assert_eq!(
            path,
            a_real.join("hello.wav"),
            "{db}: tenant A's own prompt"
        );
        // The shared root is not a tenant's prompts directory.
        let shared = prompt_event(&a_events, "shared");
        assert_eq!(shared["kind"], "prompt.finished", "{db}: {shared}");
        assert!(shared["details"]["error"].is_string(), "{db}: {shared}");

        // Tenant B asking for A's prompt by name gets its own (empty) directory.
        let script_b =
            json!({"version": 1, "steps": [{"play": {"file": "secret"}}, {"hangup": {}}]});
        let b_events = answered_call_timeline(
            &api,
            &api.b.tenant_id,
            api.b.key(Role::Operator),
            dest,
            script_b,
        )
        .await;
        let secret = prompt_event(&b_events, "secret");
        assert_eq!(secret["kind"], "prompt.finished", "{db}: {secret}");
        assert!(secret["details"]["error"].is_string(), "{db}: {secret}");
        let b_path = secret["details"]["path"].as_str().expect("path");
        assert!(!b_path.contains(&api.a.tenant_id), "{db}: {b_path}");

        callee.handle.shutdown().await.expect("shutdown");
        callee.join().await;
        api.stop().await;
    })
    .await;
}
