//! Inbound protection of `callplane serve`'s SIP port (#11 point 8), over real sockets: the
//! per-source rate limit drops a stranger's flood before parsing while the in-dialog traffic
//! of a live call from a flooded address still gets through, and INVITEs over the half-open
//! bound get a stateless 503 until an earlier call is acknowledged. Both are read back from
//! `/metrics`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{LOCALHOST, sipp_available, spawn_callplane, spawn_sipp, wait_child};
use tokio::net::UdpSocket;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// A running serve: the child, its SIP address and its API base URL.
struct Serve {
    _child: Child,
    sip: SocketAddr,
    api: String,
}

/// Starts `serve` with `extra` flags; its stdout is drained in the background (an unread
/// pipe would block it).
async fn start_serve(dir: &std::path::Path, extra: &[&str]) -> Serve {
    let data = dir.join("data");
    let data = data.to_str().expect("utf-8 path").to_owned();
    let mut args = vec![
        "serve",
        "--sip",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--data-dir",
        &data,
    ];
    args.extend(extra);
    let (child, mut rx) = spawn_callplane(dir, &args);
    let (api, _key, seen) = common::serve_started(&mut rx).await;
    let sip = seen
        .iter()
        .find(|v| v["kind"] == "serve.listening")
        .and_then(|v| v["sip"].as_str())
        .expect("serve.listening names the SIP address")
        .parse()
        .expect("a socket address");
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    Serve {
        _child: child,
        sip,
        api,
    }
}

/// The value of one `/metrics` series (0 when absent).
async fn metric(api: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("{api}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().expect("a number"))
}

/// Sends garbage datagrams from `from` to `to` at about `per_s` until `stop` fires or
/// `limit` passes; returns how many were sent.
async fn flood(
    from: &str,
    to: SocketAddr,
    per_s: u32,
    limit: Duration,
    mut stop: mpsc::Receiver<()>,
) -> u64 {
    let sock = UdpSocket::bind(format!("{from}:0"))
        .await
        .expect("bind the flood socket");
    let per_tick = (per_s / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let end = Instant::now() + limit;
    let mut sent = 0u64;
    while Instant::now() < end {
        tokio::select! {
            _ = stop.recv() => break,
            _ = tick.tick() => {
                for i in 0..per_tick {
                    let junk = format!("GARBAGE {sent} {i} \u{0}\u{1}\u{2} not SIP at all\r\n\r\n");
                    if sock.send_to(junk.as_bytes(), to).await.is_ok() {
                        sent += 1;
                    }
                }
            }
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_flood_is_dropped_while_a_flooded_peers_bye_still_gets_through() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A tiny limit, so that the peer's BYE would be lost in its own flood if it were limited.
    let serve = start_serve(
        dir.path(),
        &["--sip-rate-limit", "20", "--sip-rate-burst", "20"],
    )
    .await;

    // One call from 127.0.0.1 (sipp), held 3 s, then sipp's BYE.
    let sipp = spawn_sipp(
        dir.path(),
        &[
            "-sn",
            "uac",
            "-i",
            "127.0.0.1",
            "-m",
            "1",
            "-d",
            "3000",
            "-timeout",
            "20s",
            "-nostdin",
            &serve.sip.to_string(),
        ]
        .map(String::from),
    );
    // Answered: our 200 made 127.0.0.1 a trusted peer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let answered = "callplane_sip_responses_total{status=\"200\",direction=\"out\"}";
    while metric(&serve.api, answered).await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the call was not answered in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Flood from the peer's own address and from a stranger's, 2,000 datagrams/s each, until
    // sipp is done (at most 12 s).
    let started = Instant::now();
    let (stop_peer, rx_peer) = mpsc::channel(1);
    let (stop_stranger, rx_stranger) = mpsc::channel(1);
    let limit = Duration::from_secs(12);
    let peer_flood = tokio::spawn(flood("127.0.0.1", serve.sip, 2000, limit, rx_peer));
    let stranger_flood = tokio::spawn(flood("127.0.0.2", serve.sip, 2000, limit, rx_stranger));
    let (status, err) = wait_child(sipp, "sipp").await;
    let took = started.elapsed();
    let _ = stop_peer.send(()).await;
    let _ = stop_stranger.send(()).await;
    let from_peer = peer_flood.await.expect("flood task");
    let from_stranger = stranger_flood.await.expect("flood task");
    assert!(status.success(), "sipp's call failed: {status} {err}");
    // The BYE was answered while the flood ran (sipp's hold is 3 s; a dropped BYE would wait
    // for the flood's end).
    assert!(
        took < Duration::from_secs(8),
        "sipp ended {took:?} after the flood began"
    );

    let dropped = metric(
        &serve.api,
        "callplane_sip_dropped_total{reason=\"rate_limit\"}",
    )
    .await;
    let malformed = metric(&serve.api, "callplane_sip_malformed_total").await;
    let admitted_stranger = 20.0 + 20.0 * took.as_secs_f64() + 5.0;
    eprintln!(
        "sent: peer {from_peer}, stranger {from_stranger} in {took:?}; dropped {dropped}, \
         malformed {malformed}"
    );
    assert!(from_stranger > 1000 && from_peer > 1000, "the floods ran");
    // The stranger's flood was dropped (all but its burst and rate; the kernel may lose a
    // few more), the peer's was not (parsed: malformed).
    assert!(
        dropped >= 0.9 * from_stranger as f64 - admitted_stranger,
        "dropped {dropped} of the stranger's {from_stranger}"
    );
    assert!(
        dropped <= from_stranger as f64,
        "nothing of the trusted peer's was dropped: {dropped} > {from_stranger}"
    );
    assert!(
        malformed >= 0.9 * from_peer as f64,
        "the trusted peer's datagrams were parsed: {malformed} of {from_peer}"
    );
}

/// One SIP message received: its first line and its headers (name lowercased).
struct Received {
    first: String,
    headers: Vec<(String, String)>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

fn parse(bytes: &[u8]) -> Received {
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("").to_owned();
    let headers = lines
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    Received { first, headers }
}

fn invite(call_id: &str, local: SocketAddr, target: SocketAddr) -> String {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        local.port() + 2
    );
    format!(
        "INVITE sip:service@{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id};rport\r\n\
         From: <sip:flood@{local}>;tag=f-{call_id}\r\n\
         To: <sip:service@{target}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:flood@{local}>\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// Waits for the final response to the INVITE of `call_id` (bounded).
async fn final_for(sock: &UdpSocket, call_id: &str) -> Received {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65_535];
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (n, _) = timeout(left, sock.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no final response for {call_id}; saw {seen:?}"))
            .expect("recv");
        let r = parse(&buf[..n]);
        seen.push(r.first.clone());
        let is_final = r
            .first
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .is_some_and(|c| c >= 200);
        if is_final && r.header("call-id") == call_id {
            return r;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_over_the_half_open_bound_get_503_until_one_is_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = start_serve(
        dir.path(),
        &[
            "--sip-max-half-open",
            "2",
            "--sip-max-half-open-per-source",
            "0",
        ],
    )
    .await;
    let sock = UdpSocket::bind((LOCALHOST, 0)).await.expect("bind");
    let local = sock.local_addr().expect("addr");

    // Two calls answered (serve without a script answers at once) and never acknowledged.
    let mut answers = Vec::new();
    for id in ["half-open-a", "half-open-b"] {
        sock.send_to(invite(id, local, serve.sip).as_bytes(), serve.sip)
            .await
            .expect("send");
        let r = final_for(&sock, id).await;
        assert!(r.first.starts_with("SIP/2.0 200"), "{id}: {}", r.first);
        answers.push(r);
    }
    // The third is refused at once, statelessly, with Retry-After.
    sock.send_to(
        invite("half-open-c", local, serve.sip).as_bytes(),
        serve.sip,
    )
    .await
    .expect("send");
    let r = final_for(&sock, "half-open-c").await;
    assert!(r.first.starts_with("SIP/2.0 503"), "{}", r.first);
    assert!(!r.header("retry-after").is_empty(), "a Retry-After");
    assert_eq!(
        metric(
            &serve.api,
            "callplane_sip_dropped_total{reason=\"half_open\"}"
        )
        .await,
        1.0
    );

    // ACK the first: it is established, and a new INVITE is taken again.
    let a = &answers[0];
    let contact = a
        .header("contact")
        .trim_start_matches('<')
        .split('>')
        .next()
        .expect("a Contact")
        .to_owned();
    let ack = format!(
        "ACK {contact} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-ack-a;rport\r\n\
         From: <sip:flood@{local}>;tag=f-half-open-a\r\n\
         To: {}\r\n\
         Call-ID: half-open-a\r\n\
         CSeq: 1 ACK\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        a.header("to")
    );
    sock.send_to(ack.as_bytes(), serve.sip).await.expect("send");
    // The ACK has no answer to wait for: retry the INVITE (new Call-ID each time) until it is
    // taken, bounded; each refusal is counted.
    let deadline = Instant::now() + Duration::from_secs(5);
    for n in 0.. {
        let id = format!("half-open-d{n}");
        sock.send_to(invite(&id, local, serve.sip).as_bytes(), serve.sip)
            .await
            .expect("send");
        let r = final_for(&sock, &id).await;
        if r.first.starts_with("SIP/2.0 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after the ACK: {}",
            r.first
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
