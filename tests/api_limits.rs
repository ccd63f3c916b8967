//! Hardening of the REST API (issue #9, points 5 and 8): field limits, listings without request
//! blobs, destinations without URI headers, trunk fields without control characters, no
//! server paths shown to tenants, private data directory and database, self-checking cursors,
//! a deadline for request heads (a real socket), failed authentication limited per address,
//! and a capacity 503 that names its call row. Against the real router on every test database.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use callplane::store::{NewCall, NewEvent, Role, Store};
use common::api::{Reply, TestApi};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn stores() -> Vec<(&'static str, Arc<dyn Store>)> {
    common::db::test_stores().await
}

fn closed_destination() -> String {
    format!("sip:bob@127.0.0.1:{}", common::free_udp_port())
}

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

fn items(v: &Value) -> &Vec<Value> {
    v["items"].as_array().expect("items")
}

async fn call_count(api: &TestApi, key: &str) -> usize {
    items(&api.get("/v1/calls", key).await.json()).len()
}

fn assert_422(r: &Reply, code: &str, field: &str, what: &str) {
    let text = String::from_utf8_lossy(&r.body);
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{what}: {}",
        text.chars().take(300).collect::<String>()
    );
    assert_eq!(r.code(), code, "{what}");
    let message = r.json()["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(
        message.starts_with(&format!("{field}:")),
        "{what}: the message names {field}: {message}"
    );
    assert!(message.len() < 400, "{what}: the value is not echoed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_over_their_limits_get_422_naming_the_field_and_nothing_is_stored() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let op = api.a.key(Role::Operator).to_owned();
        let admin = api.a.key(Role::Admin).to_owned();
        let dest = closed_destination();
        let many: serde_json::Map<String, Value> =
            (0..65).map(|i| (format!("v{i}"), json!("x"))).collect();
        let big_script = json!({"version": 1, "steps": (0..4000)
            .map(|_| json!({"pause": {"ms": 100}})).collect::<Vec<_>>()});
        for (body, code, field) in [
            (
                json!({"to": format!("sip:{}@127.0.0.1:5060", "a".repeat(300))}),
                "invalid_field",
                "to",
            ),
            (
                json!({"to": dest, "from": format!("sip:{}@127.0.0.1", "f".repeat(300))}),
                "invalid_field",
                "from",
            ),
            (
                json!({"to": dest, "variables": {"blob": "x".repeat(17 * 1024)}}),
                "invalid_field",
                "variables",
            ),
            (
                json!({"to": dest, "variables": many}),
                "invalid_field",
                "variables",
            ),
            (
                json!({"to": dest, "trunk_id": "t".repeat(1000)}),
                "invalid_field",
                "trunk_id",
            ),
            (
                json!({"to": dest, "script_id": "s".repeat(1000)}),
                "invalid_field",
                "script_id",
            ),
            (
                json!({"to": dest, "script": big_script}),
                "invalid_script",
                "script",
            ),
        ] {
            let r = api.post("/v1/calls", &op, &body).await;
            assert_422(&r, code, field, &format!("{db}: calls {field}"));
        }
        assert_eq!(call_count(&api, &op).await, 0, "{db}: no call stored");

        // Names: 128 characters at most, no control or bidi characters.
        let long = "n".repeat(129);
        for bad in [
            long.as_str(),
            "evil\u{202E}vaw.exe",
            "a\u{2066}b",
            "a\u{200F}",
            "x\ty",
        ] {
            let r = api
                .post(
                    "/v1/trunks",
                    &admin,
                    &json!({"name": bad, "address": "127.0.0.1:5060"}),
                )
                .await;
            assert_422(&r, "invalid_field", "name", &format!("{db}: trunk {bad:?}"));
            let r = api
                .post(
                    "/v1/scripts",
                    &admin,
                    &json!({"name": bad, "body": {"version": 1, "steps": [{"hangup": {}}]}}),
                )
                .await;
            assert_422(
                &r,
                "invalid_field",
                "name",
                &format!("{db}: script {bad:?}"),
            );
            let r = api
                .post("/v1/keys", &admin, &json!({"name": bad, "role": "viewer"}))
                .await;
            assert_422(&r, "invalid_field", "name", &format!("{db}: key {bad:?}"));
        }
        let r = api
            .post(
                "/v1/scripts",
                &admin,
                &json!({"name": "big", "body": {"version": 1, "steps": (0..4000)
                    .map(|_| json!({"pause": {"ms": 100}})).collect::<Vec<_>>()}}),
            )
            .await;
        assert_422(&r, "invalid_script", "body", &format!("{db}: script body"));
        // At the limits, all is well.
        let r = api
            .post(
                "/v1/trunks",
                &admin,
                &json!({"name": "é".repeat(128), "address": "127.0.0.1:5060"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{db}: 128 characters");
        assert!(
            callplane::app::create_tenant(store.as_ref(), "bad\r\ntenant")
                .await
                .is_err(),
            "{db}: tenant names are checked too"
        );
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_listings_leave_out_the_request_and_the_single_read_has_it() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let op = api.a.key(Role::Operator).to_owned();
        let blob = "v".repeat(8 * 1024);
        let r = api
            .post(
                "/v1/calls",
                &op,
                &json!({"to": closed_destination(), "ring_timeout_s": 2,
                        "variables": {"blob": blob}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{db}");
        let id = r.json()["id"].as_str().expect("id").to_owned();
        let list = api.get("/v1/calls", &op).await;
        let listed = items(&list.json())[0].clone();
        assert_eq!(listed["id"], id.as_str());
        assert!(listed.get("request").is_none(), "{db}: {listed}");
        assert!(list.body.len() < 4096, "{db}: {} bytes", list.body.len());
        let one = api.get(&format!("/v1/calls/{id}"), &op).await.json();
        assert_eq!(one["request"]["variables"]["blob"], blob.as_str(), "{db}");
        // A full page of calls that each carry the largest request the limits allow
        // (~80 KiB) stays small: 500 × 80 KiB was 40 MB before.
        let t = api.a.tenant_id.clone();
        let big = json!({"to": "sip:x@127.0.0.1", "variables": {"v": "x".repeat(16_000)},
                         "script": {"version": 1, "steps": (0..3000)
                             .map(|_| json!({"pause": {"ms": 100}})).collect::<Vec<_>>()}});
        for i in 0..500 {
            let mut call = NewCall::outbound(&t, "sip:x@127.0.0.1", "sip:cp@127.0.0.1", 10 + i);
            call.request = big.clone();
            store.create_call(&call).await.expect("create call");
        }
        let started = Instant::now();
        let page = api.get("/v1/calls?limit=500", &op).await;
        let took = started.elapsed();
        assert_eq!(items(&page.json()).len(), 500, "{db}");
        eprintln!(
            "{db}: GET /v1/calls?limit=500 over 500 calls of {} bytes of request each: {} bytes in {took:?}",
            big.to_string().len(),
            page.body.len()
        );
        assert!(
            page.body.len() < 1_000_000,
            "{db}: {} bytes",
            page.body.len()
        );
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_with_uri_headers_or_routing_parameters_get_422() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let op = api.a.key(Role::Operator).to_owned();
        let port = common::free_udp_port();
        for (body, field) in [
            (
                json!({"to": format!("sip:x@127.0.0.1:{port}?X-Injected=yes")}),
                "to",
            ),
            (
                json!({"to": format!("sip:x@127.0.0.1:{port};transport=udp?Route=%3Csip:e%3E")}),
                "to",
            ),
            (
                json!({"to": format!("sip:x@127.0.0.1:{port};maddr=192.0.2.1")}),
                "to",
            ),
            (json!({"to": format!("sip:x@127.0.0.1:{port};lr")}), "to"),
            (
                json!({"to": format!("sip:x@127.0.0.1:{port}"), "from": "sip:me@127.0.0.1?X-Injected=yes"}),
                "from",
            ),
        ] {
            let r = api.post("/v1/calls", &op, &body).await;
            assert_422(&r, "invalid_destination", field, &format!("{db}: {body}"));
        }
        assert_eq!(call_count(&api, &op).await, 0, "{db}: nothing stored");
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_fields_with_control_characters_are_refused_when_stored() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let admin = api.a.key(Role::Admin).to_owned();
        let good = json!({"name": "carrier", "address": "127.0.0.1:5060",
                          "username": "acme", "password": "s3cret", "from_user": "4420"});
        let id = api.create("/v1/trunks", &admin, &good).await;
        for (field, bad) in [
            ("name", "carrier\r\nX-Evil: 1"),
            ("username", "acme\r\nX-Evil: 1"),
            ("password", "s3cret\nX"),
            ("from_user", "4420\r\nX-Evil: 1"),
            ("from_user", "sip:me@127.0.0.1?X-Injected=yes"),
            ("from_user", "4420@evil"),
            ("username", "a\u{0}b"),
        ] {
            let mut body = good.clone();
            body[field] = json!(bad);
            body["name"] = if field == "name" {
                json!(bad)
            } else {
                json!(format!("c-{}", bad.len()))
            };
            let r = api.post("/v1/trunks", &admin, &body).await;
            assert_422(
                &r,
                "invalid_field",
                field,
                &format!("{db}: POST {field} {bad:?}"),
            );
            let r = api
                .send(
                    Method::PUT,
                    &format!("/v1/trunks/{id}"),
                    Some(&admin),
                    Some(&body),
                )
                .await;
            assert_422(
                &r,
                "invalid_field",
                field,
                &format!("{db}: PUT {field} {bad:?}"),
            );
        }
        let trunks = api.get("/v1/trunks", &admin).await.json();
        assert_eq!(items(&trunks).len(), 1, "{db}: {trunks}");
        assert_eq!(items(&trunks)[0]["username"], "acme");
        api.stop().await;
    }
}

/// Reads an SSE body until `until` appears (bounded).
async fn read_sse_until(api: &TestApi, uri: &str, key: &str, until: &str) -> String {
    let req = Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request");
    let response = api.router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while !text.contains(until) {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        text.push_str(&String::from_utf8_lossy(data));
                    }
                }
                _ => break,
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no {until} in the stream within 20 s: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_and_prompt_paths_of_the_server_are_not_shown_to_tenants() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let t = api.a.tenant_id.clone();
        let key = api.a.key(Role::Analyst).to_owned();
        let call = insert_call(&store, &t, 1_000_000).await;
        let dir = api.data_dir.path().join("recordings");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(format!("{call}.wav"));
        let secret_dir = api.data_dir.path().to_str().expect("utf-8").to_owned();
        let prompt = api.data_dir.path().join("prompts").join(&t).join("hi.wav");
        append(
            &store,
            &call,
            "prompt.finished",
            1_500_000,
            json!({"file": "hi", "path": prompt.to_str(),
                   "error": format!("prompt {}: file not found", prompt.display())}),
        )
        .await;
        append(
            &store,
            &call,
            "recording.started",
            1_600_000,
            json!({"path": path.to_str(), "rate": 8000, "channels": 2}),
        )
        .await;
        let rec_info = json!({"path": path.to_str(), "duration_ms": 500, "channels": 2,
                              "sha256": "00", "bytes": 44});
        append(
            &store,
            &call,
            "recording.ready",
            2_000_000,
            rec_info.clone(),
        )
        .await;
        let rec = store.list_recordings(&t, &call).await.expect("recs")[0]
            .id
            .clone();
        append(
            &store,
            &call,
            "call.completed",
            3_000_000,
            json!({"outcome": "answered", "recording": rec_info, "recordings": [rec_info, rec_info]}),
        )
        .await;
        let mut shown = Vec::new();
        for uri in [
            format!("/v1/calls/{call}"),
            format!("/v1/calls/{call}/events"),
            format!("/v1/calls/{call}/manifest"),
            format!("/v1/calls/{call}/recordings"),
            format!("/v1/recordings/{rec}"),
            "/v1/calls".to_owned(),
        ] {
            let r = api.get(&uri, &key).await;
            assert_eq!(r.status, StatusCode::OK, "{db}: {uri}");
            shown.push((uri, String::from_utf8_lossy(&r.body).into_owned()));
        }
        let sse = read_sse_until(
            &api,
            &format!("/v1/events?after=0&call_id={call}"),
            &key,
            "call.completed",
        )
        .await;
        shown.push(("SSE".to_owned(), sse));
        for (uri, body) in &shown {
            assert!(
                !body.contains(&secret_dir) && !body.contains("\"path\":\"/"),
                "{db}: {uri} shows a server path: {body}"
            );
        }
        // The events name the recording by id and URL instead.
        let events = api
            .get(&format!("/v1/calls/{call}/events"), &key)
            .await
            .json();
        let ready = items(&events)
            .iter()
            .find(|e| e["kind"] == "recording.ready")
            .expect("recording.ready");
        assert_eq!(ready["details"]["recording_id"], rec.as_str(), "{db}");
        assert_eq!(ready["details"]["url"], format!("/v1/recordings/{rec}"));
        let done = items(&events).last().expect("final");
        assert_eq!(done["details"]["recording"]["recording_id"], rec.as_str());
        assert_eq!(
            done["details"]["recordings"][1]["recording_id"],
            rec.as_str()
        );
        let failed = &items(&events)[0];
        assert_eq!(failed["details"]["error"], "prompt <path>: file not found");
        // The manifest still lists the recording the timeline announced.
        let m = api
            .get(&format!("/v1/calls/{call}/manifest"), &key)
            .await
            .json();
        assert_eq!(m["recordings"][0]["id"], rec.as_str(), "{db}: {m}");
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_the_database_are_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let store = callplane::app::open_store(&data, None)
        .await
        .expect("open store");
    // A write makes SQLite create its -wal and -shm files.
    store
        .create_tenant("perm", callplane::clock::unix_us())
        .await
        .expect("tenant");
    let recordings = callplane::app::recordings_dir(&data);
    callplane::files::ensure_dir(&recordings).expect("recordings dir");
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700, "data dir");
    assert_eq!(mode(&recordings), 0o700, "recordings dir");
    for name in ["callplane.db", "callplane.db-wal", "callplane.db-shm"] {
        let p = data.join(name);
        if name == "callplane.db" || p.exists() {
            assert_eq!(mode(&p), 0o600, "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_this_listing_did_not_give_out_get_400_invalid_cursor() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let t = api.a.tenant_id.clone();
        let key = api.a.key(Role::Viewer).to_owned();
        let base = 1_700_000_000_000_000i64;
        let mut calls = Vec::new();
        for i in 0..3 {
            calls.push(insert_call(&store, &t, base + i * 1_000_000).await);
        }
        for (i, kind) in ["call.created", "sip.invite_sent", "sip.ringing"]
            .iter()
            .enumerate()
        {
            append(&store, &calls[0], kind, base + i as i64, json!({})).await;
            append(&store, &calls[1], kind, base + i as i64, json!({})).await;
        }
        let p1 = api.get("/v1/calls?limit=1", &key).await.json();
        let calls_cursor = p1["next_cursor"].as_str().expect("next").to_owned();
        let e1 = api
            .get(&format!("/v1/calls/{}/events?limit=1", calls[0]), &key)
            .await
            .json();
        let events_cursor = e1["next_cursor"].as_str().expect("next").to_owned();
        // Their own listings take them.
        let r = api
            .get(&format!("/v1/calls?limit=1&cursor={calls_cursor}"), &key)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{db}");
        let r = api
            .get(
                &format!(
                    "/v1/calls/{}/events?limit=1&cursor={events_cursor}",
                    calls[0]
                ),
                &key,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{db}");
        assert_eq!(items(&r.json())[0]["kind"], "sip.invite_sent");

        let tampered = {
            let mut c = calls_cursor.clone().into_bytes();
            let i = c.len() / 2;
            c[i] = if c[i] == b'0' { b'1' } else { b'0' };
            String::from_utf8(c).expect("ascii")
        };
        let last_event_id = items(&e1)[0]["id"].as_i64().expect("id");
        for (uri, what) in [
            ("/v1/calls?cursor=zz".to_owned(), "garbage"),
            (format!("/v1/calls?cursor={tampered}"), "tampered"),
            (
                format!("/v1/calls?cursor={events_cursor}"),
                "an events cursor",
            ),
            (
                format!("/v1/calls?status=failed&cursor={calls_cursor}"),
                "other filters",
            ),
            (
                format!("/v1/calls/{}/events?cursor={last_event_id}", calls[0]),
                "a bare event id",
            ),
            (
                format!("/v1/calls/{}/events?cursor={events_cursor}", calls[1]),
                "another call's cursor",
            ),
            (
                format!("/v1/calls/{}/events?cursor={calls_cursor}", calls[0]),
                "a calls cursor",
            ),
        ] {
            let r = api.get(&uri, &key).await;
            assert_eq!(
                (r.status, r.code().as_str()),
                (StatusCode::BAD_REQUEST, "invalid_cursor"),
                "{db}: {what}: {uri}"
            );
        }
        // Another tenant's key cannot use the cursor either.
        let other = api.b.key(Role::Viewer).to_owned();
        let r = api
            .get(&format!("/v1/calls?limit=1&cursor={calls_cursor}"), &other)
            .await;
        assert_eq!(r.code(), "invalid_cursor", "{db}: other tenant");
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_does_not_finish_its_request_head_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = common::db::sqlite_store().await;
    let api = TestApi::start(store).await;
    let (addr, task) =
        callplane::net::http::serve("127.0.0.1:0".parse().expect("addr"), api.router.clone())
            .await
            .expect("listen");
    // A complete request is served.
    let mut ok = tokio::net::TcpStream::connect(addr).await.expect("connect");
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), ok.read_to_end(&mut answer))
        .await
        .expect("answered within 10 s")
        .expect("read");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Half a request line, then silence: the server closes within its deadline (5 s).
    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /healthz HT").await.expect("write");
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(9), async {
        let mut buf = [0u8; 1024];
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let waited = started.elapsed();
    assert!(
        closed.is_ok(),
        "still open after {waited:?}; the server sent {:?}",
        String::from_utf8_lossy(&seen)
    );
    assert!(
        waited >= Duration::from_secs(4),
        "closed after {waited:?}, before the deadline"
    );
    // A connection that sends nothing at all is closed too.
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(9), idle.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0) | Err(_))), "idle connection: {r:?}");
    task.abort();
    api.stop().await;
}

async fn from_address(api: &TestApi, ip: &str, key: &str) -> Reply {
    let peer: SocketAddr = format!("{ip}:40000").parse().expect("addr");
    let mut req = Request::builder()
        .uri("/v1/calls")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request");
    req.extensions_mut().insert(ConnectInfo(peer));
    let response = api.router.clone().oneshot(req).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_is_limited_per_source_address() {
    for (db, store) in stores().await {
        let api = TestApi::start(store.clone()).await;
        let good = api.a.key(Role::Viewer).to_owned();
        let bad = "cp_0000000000000000000000000000000000000000";
        for i in 0..callplane::api::limits::AUTH_FAILURES_PER_MIN {
            let r = from_address(&api, "192.0.2.7", bad).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{db}: attempt {i}");
        }
        let r = from_address(&api, "192.0.2.7", bad).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "auth_rate_limited"),
            "{db}"
        );
        let retry: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&retry), "{db}: {retry}");
        // The address is refused before its key is looked up, a valid one included.
        let r = from_address(&api, "192.0.2.7", &good).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{db}");
        // Other addresses are not affected.
        let r = from_address(&api, "192.0.2.8", &good).await;
        assert_eq!(r.status, StatusCode::OK, "{db}");
        let r = from_address(&api, "192.0.2.8", bad).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{db}");
        api.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capacity_503_names_the_call_row_it_created_and_ends_it() {
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
        let error = &r.json()["error"];
        let id = error["call_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{db}: no call_id in {error}"))
            .to_owned();
        assert!(
            error["message"].as_str().expect("message").contains(&id),
            "{db}: {error}"
        );
        let call = api.get(&format!("/v1/calls/{id}"), &op).await.json();
        assert_eq!(call["status"], "failed", "{db}: {call}");
        assert_eq!(call["end_reason"], "capacity_exceeded", "{db}: {call}");
        api.stop().await;
    }
}
