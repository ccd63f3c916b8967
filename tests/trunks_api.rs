//! `/v1/trunks` with every trunk setting, secrets write-only, PATCH merging, the live state,
//! and `/v1/trunks/{id}/routes`, against the real router on every test database.

mod common;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use callplane::store::{Role, Store};
use callplane::trunk::{Health, RegState};
use common::api::TestApi;
use serde_json::{Value, json};

async fn on_every_store<F, Fut>(body: F)
where
    F: Fn(&'static str, Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let runs = common::db::test_stores()
        .await
        .into_iter()
        .map(|(db, store)| body(db, store));
    futures_util::future::join_all(runs).await;
}

/// A registration + digest carrier with every field set.
fn full_trunk() -> Value {
    json!({
        "name": "carrier",
        "hosts": ["192.0.2.10:5060", "192.0.2.11;weight=3"],
        "weighted": true,
        "transport": "tcp",
        "outbound_proxy": "sip:192.0.2.9:5060;lr",
        "username": "acct",
        "password": "s3cret-pw",
        "realm": "carrier.example",
        "auth_username": "auth-acct",
        "register": true,
        "register_expires_s": 600,
        "contact_user": "acct",
        "allowed_sources": ["198.51.100.0/24"],
        "codecs": ["PCMA", "PCMU"],
        "from_user": "+442071230000",
        "caller_id_mode": "pai",
        "caller_id_pool": ["+442071230001"],
        "diversion": "<sip:+442071230002@carrier.example>;reason=unconditional",
        "ring_timeout_s": 40,
        "headers": [["X-Account", "42"]],
        "uri_style": "sip_user_phone",
        "srtp": "offer",
        "advertise": "203.0.113.5",
        "options_interval_s": 30,
        "tls_server_name": "sip.carrier.example",
        "max_concurrent": 10,
        "max_cps": 2.5
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setting_round_trips_and_the_password_is_never_shown() {
    on_every_store(|db, store| async move {
        let api = TestApi::start(store).await;
        let key = api.a.key(Role::Owner).to_owned();
        let r = api.post("/v1/trunks", &key, &full_trunk()).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{db}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        let id = v["id"].as_str().expect("id").to_owned();
        assert!(
            !r.body.windows(9).any(|w| w == b"s3cret-pw"),
            "{db}: password shown"
        );
        assert_eq!(v["has_password"], true, "{db}");
        for (field, want) in [
            ("hosts", json!(["192.0.2.10:5060", "192.0.2.11;weight=3"])),
            ("address", json!("192.0.2.10:5060")),
            ("transport", json!("tcp")),
            ("realm", json!("carrier.example")),
            ("auth_username", json!("auth-acct")),
            ("register", json!(true)),
            ("caller_id_mode", json!("pai")),
            ("headers", json!([["X-Account", "42"]])),
            ("uri_style", json!("sip_user_phone")),
            ("srtp", json!("offer")),
            ("options_interval_s", json!(30)),
            ("max_cps", json!(2.5)),
        ] {
            assert_eq!(v[field], want, "{db}: {field}");
        }
        assert_eq!(v["state"]["health"], "unknown", "{db}");
        assert_eq!(v["state"]["registration"]["state"], "unregistered", "{db}");
        let got = api.get(&format!("/v1/trunks/{id}"), &key).await.json();
        assert_eq!(got["hosts"], v["hosts"], "{db}");
        let stored = api
            .state
            .store
            .get_trunk(&api.a.tenant_id, &id)
            .await
            .expect("stored");
        assert_eq!(
            stored.settings.password.as_deref(),
            Some("s3cret-pw"),
            "{db}"
        );
        api.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_are_refused_naming_the_field() {
    on_every_store(|db, store| async move {
        let api = TestApi::start(store).await;
        let key = api.a.key(Role::Owner).to_owned();
        let with = |k: &str, v: Value| {
            let mut b = json!({"name": "t", "hosts": ["192.0.2.1"]});
            b[k] = v;
            b
        };
        let many: Vec<Value> = (0..17).map(|i| json!([format!("X-{i}"), "v"])).collect();
        for (body, field, code) in [
            (json!({"name": "t"}), "hosts", "invalid_field"),
            (
                with("hosts", json!(["not a host"])),
                "hosts[0]",
                "invalid_field",
            ),
            (
                with("hosts", json!(["192.0.2.1:70000"])),
                "hosts[0]",
                "invalid_field",
            ),
            (
                with("headers", json!([["Bad Name", "v"]])),
                "headers[0].name",
                "invalid_field",
            ),
            (
                with("headers", json!([["X-A", "v\r\nVia: x"]])),
                "headers[0].value",
                "invalid_field",
            ),
            (with("headers", json!(many)), "headers", "invalid_field"),
            (
                with("caller_id_pool", json!(["+44abc"])),
                "caller_id_pool[0]",
                "invalid_field",
            ),
            (
                with("allowed_sources", json!(["10.0.0.0/33"])),
                "allowed_sources[0]",
                "invalid_field",
            ),
            (
                with("register_expires_s", json!(59)),
                "register_expires_s",
                "invalid_field",
            ),
            (
                with("register_expires_s", json!(86_401)),
                "register_expires_s",
                "invalid_field",
            ),
            (
                with("options_interval_s", json!(4)),
                "options_interval_s",
                "invalid_field",
            ),
            (
                with("transport", json!("sctp")),
                "transport",
                "invalid_field",
            ),
            (with("surprise", json!(1)), "surprise", "unknown_field"),
        ] {
            let r = api.post("/v1/trunks", &key, &body).await;
            // Unknown fields are 400 everywhere in the API; invalid values 422.
            let want = if code == "unknown_field" {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            assert_eq!(r.status, want, "{db}: {body}");
            assert_eq!(r.code(), code, "{db}: {body}");
            let msg = r.json()["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(msg.contains(field), "{db}: {body} -> {msg}");
        }
        // IP auth only: no hosts needed.
        let r = api
            .post(
                "/v1/trunks",
                &key,
                &json!({"name": "pbx", "allowed_sources": ["127.0.0.1"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{db}");
        // The legacy shape still works.
        let r = api
            .post(
                "/v1/trunks",
                &key,
                &json!({"name": "old", "address": "127.0.0.1:5060", "transport": "udp"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{db}");
        assert_eq!(r.json()["hosts"], json!(["127.0.0.1:5060"]), "{db}");
        api.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_merges_keeps_the_password_and_get_shows_live_state() {
    on_every_store(|db, store| async move {
        let api = TestApi::start(store).await;
        let key = api.a.key(Role::Owner).to_owned();
        let id = api.create("/v1/trunks", &key, &full_trunk()).await;
        let uri = format!("/v1/trunks/{id}");
        let r = api
            .send(
                Method::PATCH,
                &uri,
                Some(&key),
                Some(&json!({"hosts": ["192.0.2.20"], "diversion": null, "ring_timeout_s": 20})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{db}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["hosts"], json!(["192.0.2.20"]), "{db}");
        assert_eq!(v["address"], "192.0.2.20", "{db}");
        assert_eq!(v["diversion"], Value::Null, "{db}: null resets");
        assert_eq!(v["ring_timeout_s"], 20, "{db}");
        assert_eq!(v["realm"], "carrier.example", "{db}: untouched fields stay");
        assert_eq!(v["max_concurrent"], 10, "{db}");
        assert_eq!(v["has_password"], true, "{db}: the password is kept");
        let bad = api
            .send(
                Method::PATCH,
                &uri,
                Some(&key),
                Some(&json!({"options_interval_s": 2})),
            )
            .await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{db}");

        // The registrar's and health checker's writes show in GET.
        api.state.trunk_states.update(&id, |t| {
            t.health = Health::Down;
            t.registration = RegState::Registered {
                expires_at_us: 99,
                granted_s: 600,
            };
        });
        let v = api.get(&uri, &key).await.json();
        assert_eq!(v["state"]["health"], "down", "{db}");
        assert_eq!(v["state"]["registration"]["state"], "registered", "{db}");
        assert_eq!(v["state"]["registration"]["granted_s"], 600, "{db}");

        // Every change bumps trunk_changes (the router and the registrar reload).
        let before = *api.state.trunk_changes.borrow();
        let r = api.send(Method::DELETE, &uri, Some(&key), None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{db}");
        assert!(*api.state.trunk_changes.borrow() > before, "{db}");
        assert_eq!(
            api.get(&uri, &key).await.status,
            StatusCode::NOT_FOUND,
            "{db}"
        );
        api.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_map_dids_to_scripts_per_tenant() {
    on_every_store(|db, store| async move {
        let api = TestApi::start(store).await;
        let key = api.a.key(Role::Owner).to_owned();
        let b_key = api.b.key(Role::Owner).to_owned();
        let trunk = api
            .create(
                "/v1/trunks",
                &key,
                &json!({"name": "t", "hosts": ["192.0.2.1"]}),
            )
            .await;
        let script = api
            .create(
                "/v1/scripts",
                &key,
                &json!({"name": "s", "body": {"version": 1, "steps": [{"hangup": {}}]}}),
            )
            .await;
        let routes = format!("/v1/trunks/{trunk}/routes");
        let r = api
            .post(
                &routes,
                &key,
                &json!({"did": "+442071234567", "script_id": script}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{db}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["script_id"], script.as_str(), "{db}");
        let again = api
            .post(&routes, &key, &json!({"did": "+442071234567"}))
            .await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{db}");
        assert_eq!(again.code(), "did_taken", "{db}");
        for body in [
            json!({"did": "12;x"}),
            json!({"did": "100", "script_id": "scr_000000000000000000000000"}),
        ] {
            let r = api.post(&routes, &key, &body).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{db}: {body}");
        }
        let r = api
            .post(&routes, &key, &json!({"did": "100", "extra": 1}))
            .await;
        assert_eq!(r.code(), "unknown_field", "{db}");
        let other = api.post(&routes, &b_key, &json!({"did": "100"})).await;
        assert_eq!(
            other.status,
            StatusCode::NOT_FOUND,
            "{db}: another tenant's trunk"
        );
        let list = api.get(&routes, &key).await.json();
        assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{db}");
        assert_eq!(list["items"][0]["did"], "+442071234567", "{db}");
        let del = api
            .send(
                Method::DELETE,
                &format!("{routes}/%2B442071234567"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(del.status, StatusCode::NO_CONTENT, "{db}");
        let del = api
            .send(
                Method::DELETE,
                &format!("{routes}/%2B442071234567"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(del.status, StatusCode::NOT_FOUND, "{db}");
        api.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_openapi_document_lists_the_trunk_routes() {
    let doc = serde_json::to_value(callplane::api::openapi()).expect("json");
    let paths = &doc["paths"];
    for (path, method) in [
        ("/v1/trunks", "post"),
        ("/v1/trunks/{id}", "patch"),
        ("/v1/trunks/{id}", "put"),
        ("/v1/trunks/{id}/routes", "post"),
        ("/v1/trunks/{id}/routes", "get"),
        ("/v1/trunks/{id}/routes/{did}", "delete"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
}
