//! What was accepted is never lost, and a store that falls behind refuses new calls (issue #9,
//! point 3), against the real `serve` binary on SQLite with a tiny `--event-queue`.
//!
//! The store is made to stall by holding SQLite's write lock from the test (`BEGIN IMMEDIATE`
//! on the same file), as a second process or a stuck disk would. While it stalls:
//! - an inbound call answered before the stall keeps its slot after its BYE (its final event is
//!   not committed yet), and its events wait in the queue instead of being lost;
//! - a new INVITE is not answered: its `call.created` cannot be committed, so after the bounded
//!   wait it gets 503; once the queue is over its high-water mark the next INVITE gets 503 with
//!   Retry-After at once, and `POST /v1/calls` answers 503 `store_backlog`.
//!
//! When the lock goes, everything queued lands: the answered call's whole timeline, the
//! refused call's row with its `call.failed`, and the slots are freed.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{serve_started, spawn_callplane};
use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout};

/// Upper bound of every wait below.
const WAIT: Duration = Duration::from_secs(30);

/// A minimal SIP UAC over UDP: enough for INVITE/ACK/BYE against `serve`.
struct Uac {
    sock: UdpSocket,
    local: SocketAddr,
    server: SocketAddr,
    rtp_port: u16,
}

/// One dialog (or attempt) of the UAC.
struct Leg {
    call_id: String,
    from_tag: String,
    /// The To header of the final response (with the server's tag).
    to: String,
}

impl Uac {
    async fn new(server: SocketAddr) -> Uac {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind UAC");
        let local = sock.local_addr().expect("addr");
        Uac {
            sock,
            local,
            server,
            rtp_port: local.port().wrapping_add(2),
        }
    }

    fn headers(&self, method: &str, leg: &Leg, to: &str, branch: &str, cseq: u32) -> String {
        format!(
            "{method} sip:100@{server} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch}\r\n\
             From: <sip:uac@{local}>;tag={from_tag}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:uac@{local}>\r\n\
             Max-Forwards: 70\r\n",
            server = self.server,
            local = self.local,
            from_tag = leg.from_tag,
            call_id = leg.call_id,
        )
    }

    async fn send(&self, text: String) {
        self.sock
            .send_to(text.as_bytes(), self.server)
            .await
            .expect("send SIP");
    }

    /// Sends an INVITE with an SDP offer and returns the final response's status and leg
    /// (ACKing a non-2xx as RFC 3261 §17.1.1.3 says; a 2xx is ACKed by the caller).
    async fn invite(&self, name: &str) -> (u16, Leg, String) {
        let mut leg = Leg {
            call_id: format!("{name}-{}@test", self.local.port()),
            from_tag: format!("ft{name}"),
            to: format!("<sip:100@{}>", self.server),
        };
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            self.rtp_port
        );
        let branch = format!("inv{name}");
        let mut msg = self.headers("INVITE", &leg, &leg.to.clone(), &branch, 1);
        msg.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ));
        self.send(msg).await;
        let (status, response) = self.final_response("INVITE").await;
        leg.to = header(&response, "To").unwrap_or_else(|| panic!("a To header in {response}"));
        if status >= 300 {
            let mut ack = self.headers("ACK", &leg, &leg.to, &branch, 1);
            ack.push_str("Content-Length: 0\r\n\r\n");
            self.send(ack).await;
        }
        (status, leg, response)
    }

    async fn ack(&self, leg: &Leg) {
        let mut ack = self.headers("ACK", leg, &leg.to, "ack2xx", 1);
        ack.push_str("Content-Length: 0\r\n\r\n");
        self.send(ack).await;
    }

    async fn bye(&self, leg: &Leg) -> u16 {
        let mut bye = self.headers("BYE", leg, &leg.to, "bye", 2);
        bye.push_str("Content-Length: 0\r\n\r\n");
        self.send(bye).await;
        self.final_response("BYE").await.0
    }

    /// The next final response to a request of `method` (provisional ones and retransmitted
    /// responses to other methods are skipped).
    async fn final_response(&self, method: &str) -> (u16, String) {
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let (n, _) = timeout(deadline - Instant::now(), self.sock.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("a final response to {method} in time; saw {seen:#?}"))
                .expect("recv");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let status = text
                .strip_prefix("SIP/2.0 ")
                .and_then(|r| r.get(..3))
                .and_then(|c| c.parse::<u16>().ok());
            let cseq = header(&text, "CSeq").unwrap_or_default();
            match status {
                Some(s) if s >= 200 && cseq.ends_with(method) => return (s, text),
                _ => seen.push(text.lines().next().unwrap_or_default().to_owned()),
            }
        }
    }
}

/// A header's value (by full name, case-insensitive).
fn header(message: &str, name: &str) -> Option<String> {
    message.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// One series of `/metrics` (`None` when absent).
async fn metric(client: &reqwest::Client, api: &str, series: &str) -> Option<f64> {
    let text = client
        .get(format!("{api}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `/metrics` until `series` satisfies `want` (bounded; prints the last value seen).
async fn wait_metric(
    client: &reqwest::Client,
    api: &str,
    series: &str,
    want: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        last = metric(client, api, series).await;
        if let Some(v) = last.filter(|v| want(*v)) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} never reached the wanted value; last seen {last:?}");
}

/// The tenant's calls, newest first.
async fn calls(client: &reqwest::Client, api: &str, key: &str) -> Vec<Value> {
    let body: Value = client
        .get(format!("{api}/v1/calls?limit=100"))
        .bearer_auth(key)
        .send()
        .await
        .expect("GET /v1/calls")
        .json()
        .await
        .expect("JSON");
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a listing: {body}"))
        .clone()
}

async fn event_kinds(client: &reqwest::Client, api: &str, key: &str, call: &str) -> Vec<String> {
    let body: Value = client
        .get(format!("{api}/v1/calls/{call}/events"))
        .bearer_auth(key)
        .send()
        .await
        .expect("GET events")
        .json()
        .await
        .expect("JSON");
    let items = body["items"].as_array().or(body.as_array()).cloned();
    items
        .unwrap_or_else(|| panic!("events of {call}: {body}"))
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_refuses_new_calls_and_loses_nothing_already_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let (child, mut lines) = spawn_callplane(
        dir.path(),
        &[
            "serve",
            "--data-dir",
            &data_arg,
            "--sip",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--event-queue",
            "4",
        ],
    );
    let (api, key, seen) = serve_started(&mut lines).await;
    let key = key.expect("a bootstrap key on an empty database");
    let listening = seen
        .iter()
        .find(|v| v["kind"] == "serve.listening")
        .expect("listening line");
    let sip: SocketAddr = listening["sip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a SIP address in {listening}"));
    let client = reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("client");
    assert_eq!(
        metric(&client, &api, "callplane_event_queue_capacity").await,
        Some(4.0)
    );

    // Call A is answered while the store keeps up.
    let uac = Uac::new(sip).await;
    let (status, a, response) = uac.invite("a").await;
    assert_eq!(status, 200, "call A answered: {response}");
    uac.ack(&a).await;
    wait_metric(&client, &api, "callplane_event_queue_depth", |d| d == 0.0).await;

    // The store stalls: this connection holds SQLite's write lock.
    let db = format!("sqlite:{}", data.join("callplane.db").display());
    let mut lock = sqlx::sqlite::SqliteConnection::connect(&db)
        .await
        .expect("open the database");
    sqlx::Executor::execute(&mut lock, "BEGIN IMMEDIATE")
        .await
        .expect("take the write lock");

    // B: accepted by the engine (the queue is empty), but its row cannot be committed, so it
    // is not answered: 503 after the bounded wait.
    let t = Instant::now();
    let (status, _b, response) = uac.invite("b").await;
    assert_eq!(
        status, 503,
        "an INVITE whose row cannot be stored: {response}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "refused only after the bounded wait ({:?})",
        t.elapsed()
    );

    // A hangs up: the BYE is answered, but A's slot is held until its final event commits.
    assert_eq!(uac.bye(&a).await, 200);
    let depth = wait_metric(&client, &api, "callplane_event_queue_depth", |d| d >= 2.0).await;
    assert!(depth >= 2.0);
    assert_eq!(
        metric(&client, &api, "callplane_active_calls").await,
        Some(2.0),
        "A and B keep their slots while their final events wait for the store"
    );

    // Over the high-water mark: the next INVITE gets 503 with Retry-After at once.
    let t = Instant::now();
    let (status, _c, response) = uac.invite("c").await;
    assert_eq!(status, 503, "{response}");
    assert!(
        header(&response, "Retry-After").is_some(),
        "a backlog 503 says when to retry: {response}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );

    // And the API refuses new calls with store_backlog, before writing anything.
    let r = client
        .post(format!("{api}/v1/calls"))
        .bearer_auth(&key)
        .json(&json!({"to": format!("sip:x@{sip}")}))
        .send()
        .await
        .expect("POST /v1/calls");
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "store_backlog", "{body}");
    assert!(
        metric(&client, &api, "callplane_store_backlog_refusals_total")
            .await
            .is_some_and(|n| n >= 2.0)
    );

    // The store comes back: everything accepted lands and the slots are freed.
    sqlx::Executor::execute(&mut lock, "ROLLBACK")
        .await
        .expect("release the lock");
    lock.close().await.expect("close");
    wait_metric(&client, &api, "callplane_event_queue_depth", |d| d == 0.0).await;
    wait_metric(&client, &api, "callplane_active_calls", |n| n == 0.0).await;

    let listed = calls(&client, &api, &key).await;
    assert_eq!(
        listed.len(),
        2,
        "A and B have rows; C (refused at once) and the API call none: {listed:#?}"
    );
    let a_row = listed
        .iter()
        .find(|c| c["status"] == "completed")
        .unwrap_or_else(|| panic!("A completed: {listed:#?}"));
    assert_eq!(a_row["outcome"], "answered");
    let a_id = a_row["id"].as_str().expect("id");
    let kinds = event_kinds(&client, &api, &key, a_id).await;
    for kind in [
        "call.created",
        "sip.answered",
        "sip.bye_received",
        "call.completed",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} of A stored: {kinds:?}"
        );
    }
    let b_row = listed
        .iter()
        .find(|c| c["status"] == "failed")
        .unwrap_or_else(|| panic!("B failed: {listed:#?}"));
    assert_eq!(b_row["sip_status"], 503, "{b_row}");
    assert_eq!(
        metric(&client, &api, "callplane_pump_dropped_events_total").await,
        Some(0.0)
    );
    drop(child);
}
