//! Issue #9, points 1 and 7, on the wire: calls that nobody ends still end (RTP timeout,
//! maximum duration, session timers), SDP media addresses that are no phone's are refused,
//! and packets from off the path neither count in a call's statistics nor take its media over.
//!
//! The peer is a raw UDP socket speaking just enough SIP, so that the test controls exactly
//! what is sent and when (and can stay silent, which no softphone does); `callplane` is the
//! real binary.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{RUN_WAIT, kinds, serve_started, spawn_callplane, wait_line};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// A running `serve`: its stdout lines, what was seen, its SIP address and API base URL.
struct Serve {
    _child: Child,
    rx: mpsc::Receiver<String>,
    seen: Vec<Value>,
    sip: SocketAddr,
    api: String,
    key: String,
    _dir: tempfile::TempDir,
}

async fn serve(extra: &[&str]) -> Serve {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let mut args = vec!["serve", "--sip", "127.0.0.1:0", "--data-dir", data];
    args.extend_from_slice(extra);
    let (child, mut rx) = spawn_callplane(dir.path(), &args);
    let (api, key, seen) = serve_started(&mut rx).await;
    let listening = seen
        .iter()
        .find(|v| v["kind"] == "serve.listening")
        .expect("serve.listening was seen");
    let sip = listening["sip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a SIP address in {listening}"));
    Serve {
        _child: child,
        rx,
        seen,
        sip,
        api,
        key: key.expect("a fresh data directory prints the bootstrap key"),
        _dir: dir,
    }
}

impl Serve {
    /// The final event (`call.completed` / `call.failed`) of the next call that ends.
    async fn final_event(&mut self) -> Value {
        wait_line(&mut self.rx, &mut self.seen, |v| {
            v["kind"] == "call.completed" || v["kind"] == "call.failed"
        })
        .await
    }
}

/// A SIP peer on a raw UDP socket.
struct Peer {
    sock: UdpSocket,
    local: SocketAddr,
    /// Every message received, for the failure messages.
    seen: Vec<String>,
}

/// An established dialog, from the peer's side.
struct Dialog {
    call_id: String,
    from: String,
    to: String,
    /// Where the peer's requests in the dialog go.
    remote: SocketAddr,
    /// The callee's RTP port from the 200's SDP.
    rtp_port: u16,
    cseq: u32,
    /// The 200 OK as received.
    ok: String,
}

fn random_hex() -> String {
    use std::hash::BuildHasher;
    format!(
        "{:016x}",
        std::collections::hash_map::RandomState::new().hash_one(Instant::now())
    )
}

/// The first value of header `name` (or its compact form), case-insensitive.
fn header(msg: &str, name: &str, compact: &str) -> Option<String> {
    msg.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .skip(1)
        .find_map(|line| {
            let (n, v) = line.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case(name) || n.eq_ignore_ascii_case(compact))
                .then(|| v.trim().to_owned())
        })
}

/// Every line of the header section whose name is `name` (for Via).
fn header_lines<'a>(msg: &'a str, name: &str, compact: &str) -> Vec<&'a str> {
    msg.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .skip(1)
        .filter(|line| {
            line.split_once(':').is_some_and(|(n, _)| {
                n.trim().eq_ignore_ascii_case(name) || n.trim().eq_ignore_ascii_case(compact)
            })
        })
        .collect()
}

fn status(msg: &str) -> Option<u16> {
    let rest = msg.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The port of the first `m=audio` line of an SDP body.
fn sdp_audio_port(msg: &str) -> Option<u16> {
    body(msg)
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
}

fn offer(c: &str, port: u16) -> String {
    let ip = if c.contains(':') { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN {ip} {c}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
    )
}

impl Peer {
    async fn bind() -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let local = sock.local_addr().expect("addr");
        Peer {
            sock,
            local,
            seen: Vec::new(),
        }
    }

    async fn send(&self, to: SocketAddr, msg: &str) {
        self.sock.send_to(msg.as_bytes(), to).await.expect("send");
    }

    /// The next message for which `pred` holds, within `wait` (panics with what was seen).
    async fn recv_until(
        &mut self,
        wait: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> (String, SocketAddr) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut buf = vec![0u8; 65_536];
        loop {
            let got = tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf)).await;
            let Ok(Ok((n, from))) = got else {
                panic!("no {what} within {wait:?}; received: {:#?}", self.seen);
            };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(msg.clone());
            if pred(&msg) {
                return (msg, from);
            }
        }
    }

    /// Answers `request` with `status_line` (e.g. `200 OK`), echoing its dialog headers.
    async fn reply(&self, request: &str, to: SocketAddr, status_line: &str, extra: &str) {
        let mut out = format!("SIP/2.0 {status_line}\r\n");
        for via in header_lines(request, "Via", "v") {
            out.push_str(via);
            out.push_str("\r\n");
        }
        for (name, compact) in [("From", "f"), ("To", "t"), ("Call-ID", "i"), ("CSeq", "")] {
            let value = header(request, name, compact).unwrap_or_default();
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(extra);
        out.push_str("Content-Length: 0\r\n\r\n");
        self.send(to, &out).await;
    }

    /// Answers `invite` with `status_line` and an SDP body, under To tag `uas1`.
    async fn reply_sdp(&self, invite: &str, to: SocketAddr, status_line: &str, sdp: &str) {
        let to_hdr = format!("{};tag=uas1", header(invite, "To", "t").expect("To"));
        let mut out = format!("SIP/2.0 {status_line}\r\n");
        for via in header_lines(invite, "Via", "v") {
            out.push_str(via);
            out.push_str("\r\n");
        }
        out.push_str(&format!(
            "From: {}\r\nTo: {to_hdr}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:bob@{}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            header(invite, "From", "f").expect("From"),
            header(invite, "Call-ID", "i").expect("Call-ID"),
            header(invite, "CSeq", "").expect("CSeq"),
            self.local,
            sdp.len()
        ));
        self.send(to, &out).await;
    }

    /// Sends an INVITE with `sdp` to `server`; the final response, ACKed when it is not a 2xx.
    async fn invite(&mut self, server: SocketAddr, sdp: &str) -> Result<Dialog, String> {
        let call_id = format!("{}@test", random_hex());
        let from = format!("<sip:uac@{}>;tag={}", self.local, &random_hex()[..8]);
        let to_uri = format!("<sip:test@{server}>");
        let branch = format!("z9hG4bK{}", random_hex());
        let via = format!("SIP/2.0/UDP {};branch={branch};rport", self.local);
        let invite = format!(
            "INVITE sip:test@{server} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
             From: {from}\r\nTo: {to_uri}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:uac@{}>\r\nSupported: timer\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            self.local,
            sdp.len()
        );
        self.send(server, &invite).await;
        let (resp, _) = self
            .recv_until(RUN_WAIT, "final response to the INVITE", |m| {
                status(m).is_some_and(|s| s >= 200)
                    && header(m, "Call-ID", "i").as_deref() == Some(call_id.as_str())
            })
            .await;
        let code = status(&resp).expect("a status");
        let to = header(&resp, "To", "t").expect("To");
        if code >= 300 {
            // §17.1.1.3: the ACK of a non-2xx is hop-by-hop, in the INVITE's transaction.
            let ack = format!(
                "ACK sip:test@{server} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
                 From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            self.send(server, &ack).await;
            return Err(resp);
        }
        let rtp_port = sdp_audio_port(&resp).expect("SDP in the 200");
        let dialog = Dialog {
            call_id,
            from,
            to,
            remote: server,
            rtp_port,
            cseq: 1,
            ok: resp,
        };
        self.request(&dialog, "ACK", 1).await;
        Ok(dialog)
    }

    /// Sends a request in `dialog` with CSeq number `cseq`.
    async fn request(&self, d: &Dialog, method: &str, cseq: u32) {
        let msg = format!(
            "{method} sip:callplane@{remote} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{b};rport\r\n\
             Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            remote = d.remote,
            local = self.local,
            b = random_hex(),
            from = d.from,
            to = d.to,
            id = d.call_id,
        );
        self.send(d.remote, &msg).await;
    }

    /// Sends a re-INVITE with `sdp` in `dialog`; its final status (a 2xx is ACKed).
    async fn reinvite(&mut self, d: &mut Dialog, sdp: &str) -> u16 {
        d.cseq += 1;
        let branch = random_hex();
        let msg = format!(
            "INVITE sip:callplane@{remote} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: {cseq} INVITE\r\n\
             Contact: <sip:uac@{local}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            remote = d.remote,
            local = self.local,
            from = d.from,
            to = d.to,
            id = d.call_id,
            cseq = d.cseq,
            len = sdp.len(),
        );
        self.send(d.remote, &msg).await;
        let cseq = format!("{} INVITE", d.cseq);
        let (resp, _) = self
            .recv_until(RUN_WAIT, "final response to the re-INVITE", |m| {
                status(m).is_some_and(|s| s >= 200)
                    && header(m, "CSeq", "").as_deref() == Some(cseq.as_str())
            })
            .await;
        let code = status(&resp).expect("a status");
        if code < 300 {
            self.request(d, "ACK", d.cseq).await;
        } else {
            // The ACK of a non-2xx belongs to the INVITE's transaction (its branch).
            let ack = format!(
                "ACK sip:callplane@{remote} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
                 Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: {cseq} ACK\r\n\
                 Content-Length: 0\r\n\r\n",
                remote = d.remote,
                local = self.local,
                from = d.from,
                to = d.to,
                id = d.call_id,
                cseq = d.cseq,
            );
            self.send(d.remote, &ack).await;
        }
        code
    }

    /// Waits up to `wait` for callplane's BYE in `dialog` and answers it 200.
    async fn expect_bye(&mut self, d: &Dialog, wait: Duration) -> Instant {
        let id = d.call_id.clone();
        let (bye, from) = self
            .recv_until(wait, "BYE", |m| {
                m.starts_with("BYE ") && header(m, "Call-ID", "i").as_deref() == Some(id.as_str())
            })
            .await;
        let at = Instant::now();
        self.reply(&bye, from, "200 OK", "").await;
        at
    }

    /// Hangs up from the peer's side and waits for the 200.
    async fn bye(&mut self, d: &mut Dialog) {
        d.cseq += 1;
        self.request(d, "BYE", d.cseq).await;
        let id = d.call_id.clone();
        self.recv_until(RUN_WAIT, "200 to our BYE", |m| {
            status(m) == Some(200)
                && header(m, "CSeq", "").is_some_and(|c| c.ends_with("BYE"))
                && header(m, "Call-ID", "i").as_deref() == Some(id.as_str())
        })
        .await;
    }
}

/// A PCMU packet (RTP header + 160 bytes of µ-law silence).
fn rtp_packet(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xff; 160]);
    p
}

#[tokio::test]
async fn a_silent_answered_call_ends_with_bye_after_the_rtp_timeout() {
    let mut serve = serve(&["--rtp-timeout-s", "2"]).await;
    let mut peer = Peer::bind().await;
    let media = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let sdp = offer("127.0.0.1", media.local_addr().expect("addr").port());
    let dialog = peer.invite(serve.sip, &sdp).await.expect("answered");
    // Session timers by default as UAS: our INVITE said `Supported: timer`, so the 200 puts
    // the refresh on us (RFC 4028 §9) and requires timer.
    let se = header(&dialog.ok, "Session-Expires", "x").expect("Session-Expires in the 200");
    assert_eq!(se, "1800;refresher=uac", "{}", dialog.ok);
    assert!(
        header(&dialog.ok, "Require", "").is_some_and(|r| r.contains("timer")),
        "{}",
        dialog.ok
    );
    // One second of RTP, then silence: the timeout counts from the last packet.
    let to = SocketAddr::new(serve.sip.ip(), dialog.rtp_port);
    for seq in 0..50u16 {
        media
            .send_to(&rtp_packet(seq, 0x1234), to)
            .await
            .expect("rtp");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last_packet = Instant::now();
    let bye_at = peer.expect_bye(&dialog, Duration::from_secs(20)).await;
    let silence = bye_at - last_packet;
    assert!(
        silence >= Duration::from_millis(1900),
        "BYE after {silence:?} of silence: the packets must have counted"
    );
    let done = serve.final_event().await;
    assert_eq!(done["kind"], "call.completed", "{done}");
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    assert_eq!(done["details"]["end_reason"], "rtp_timeout", "{done}");
    assert_eq!(done["details"]["rtp"]["packets_in"], 50, "{done}");
    eprintln!("BYE {silence:?} after the last RTP packet (--rtp-timeout-s 2)");
}

#[tokio::test]
async fn an_answered_call_ends_with_bye_at_its_maximum_duration() {
    let mut serve = serve(&["--max-duration-s", "2", "--rtp-timeout-s", "0"]).await;
    let mut peer = Peer::bind().await;
    let dialog = peer
        .invite(serve.sip, &offer("127.0.0.1", 40_000))
        .await
        .expect("answered");
    let answered = Instant::now();
    let bye_at = peer.expect_bye(&dialog, Duration::from_secs(20)).await;
    let lasted = bye_at - answered;
    assert!(
        lasted >= Duration::from_millis(1900),
        "BYE after {lasted:?}"
    );
    let done = serve.final_event().await;
    assert_eq!(done["details"]["end_reason"], "max_duration", "{done}");
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    let ms = done["details"]["duration_ms"]
        .as_u64()
        .expect("duration_ms");
    assert!((1900..10_000).contains(&ms), "{done}");
}

#[tokio::test]
async fn offers_to_multicast_metadata_link_local_or_unspecified_media_get_488() {
    let mut serve = serve(&[]).await;
    let mut peer = Peer::bind().await;
    for c in [
        "224.0.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "255.255.255.255",
        "169.254.1.1",
        "fd00:ec2::254",
        "ff02::1",
    ] {
        let refused = peer
            .invite(serve.sip, &offer(c, 40_000))
            .await
            .err()
            .unwrap_or_else(|| panic!("c={c} was answered"));
        assert_eq!(status(&refused), Some(488), "c={c}: {refused}");
        let done = serve.final_event().await;
        assert_eq!(done["kind"], "call.failed", "{done}");
        assert_eq!(
            done["details"]["end_reason"], "media_address_refused",
            "{done}"
        );
        assert!(
            done["details"]["end_detail"]
                .as_str()
                .is_some_and(|d| d.contains(c)),
            "{done}"
        );
    }
    // Loopback (and private ranges) stay allowed.
    let mut d = peer
        .invite(serve.sip, &offer("127.0.0.1", 40_000))
        .await
        .expect("a loopback offer is answered");
    peer.bye(&mut d).await;
    let done = serve.final_event().await;
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
}

#[tokio::test]
async fn an_operator_range_allows_a_refused_media_address() {
    let mut serve = serve(&["--allow-media-address", "0.0.0.0/32"]).await;
    let mut peer = Peer::bind().await;
    let mut d = peer
        .invite(serve.sip, &offer("0.0.0.0", 40_000))
        .await
        .expect("0.0.0.0 allowed by the operator");
    peer.bye(&mut d).await;
    let done = serve.final_event().await;
    assert_eq!(done["details"]["outcome"], "answered", "{done}");
    // Anything else stays refused.
    let refused = peer
        .invite(serve.sip, &offer("224.0.0.1", 40_000))
        .await
        .err()
        .expect("multicast is still refused");
    assert_eq!(status(&refused), Some(488), "{refused}");
}

#[tokio::test]
async fn the_invite_we_send_asks_for_session_timers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut uas = Peer::bind().await;
    let target = format!("sip:bob@{}", uas.local);
    let (child, _rx) = spawn_callplane(dir.path(), &["call", &target, "--ring-timeout", "20"]);
    let (invite, from) = uas
        .recv_until(RUN_WAIT, "INVITE", |m| m.starts_with("INVITE "))
        .await;
    uas.reply(&invite, from, "486 Busy Here", "").await;
    assert_eq!(
        header(&invite, "Session-Expires", "x").as_deref(),
        Some("1800"),
        "{invite}"
    );
    assert_eq!(
        header(&invite, "Min-SE", "").as_deref(),
        Some("90"),
        "{invite}"
    );
    assert!(
        header(&invite, "Supported", "k")
            .is_some_and(|s| s.split(',').any(|t| t.trim() == "timer")),
        "{invite}"
    );
    let (status, stderr) = common::wait_child(child, "callplane call").await;
    assert_eq!(status.code(), Some(2), "busy: {stderr}");
}

#[tokio::test]
async fn off_path_packets_neither_count_nor_take_the_media_of_a_live_call() {
    let mut serve = serve(&[]).await;
    let mut peer = Peer::bind().await;
    let media = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let intruder = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let sdp = offer("127.0.0.1", media.local_addr().expect("addr").port());
    let mut dialog = peer.invite(serve.sip, &sdp).await.expect("answered");
    let to = SocketAddr::new(serve.sip.ip(), dialog.rtp_port);
    // The intruder is first: packets under a foreign SSRC sprayed at the call's port before
    // the peer speaks (as one aiming at guessed ports would: no stream of its own).
    let mut x: u32 = 12_345;
    let mut spray = move || {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        rtp_packet((x >> 16) as u16, 0xbad)
    };
    for _ in 0..40 {
        intruder.send_to(&spray(), to).await.expect("rtp");
    }
    // Then the peer, 100 packets at 20 ms, each followed by one of the intruder's.
    for seq in 0..100u16 {
        media
            .send_to(&rtp_packet(500 + seq, 0x1234), to)
            .await
            .expect("rtp");
        intruder.send_to(&spray(), to).await.expect("rtp");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // RTP comes back to the peer, not to the intruder.
    let mut buf = [0u8; 2048];
    let (n, _) = timeout(Duration::from_secs(5), media.recv_from(&mut buf))
        .await
        .expect("RTP to the peer")
        .expect("recv");
    assert!(n >= 12);
    // A caller hangs up after its last packet; give that packet its 20 ms (and more).
    tokio::time::sleep(Duration::from_millis(500)).await;
    peer.bye(&mut dialog).await;
    let done = serve.final_event().await;
    let rtp = &done["details"]["rtp"];
    let count = |k: &str| {
        rtp[k]
            .as_u64()
            .unwrap_or_else(|| panic!("rtp.{k} in {done}"))
    };
    // All 100 of the peer's packets, none lost; a loaded machine may leave the very last ones
    // unread when the BYE is handled, which would make them neither received nor expected.
    let packets_in = count("packets_in");
    assert!((95..=100).contains(&packets_in), "{done}");
    assert_eq!(count("expected_in"), packets_in, "{done}");
    assert_eq!(count("lost_in"), 0, "{done}");
    // Every one of the intruder's 140 packets was dropped and counted (bar the same tail).
    assert!((135..=140).contains(&count("stray_source")), "{done}");
    assert_eq!(count("ssrc_changes"), 0, "{done}");
    let first = serve
        .seen
        .iter()
        .find(|v| v["kind"] == "media.first_packet_in")
        .unwrap_or_else(|| panic!("media.first_packet_in in {:?}", kinds(&serve.seen)));
    assert_eq!(
        first["details"]["source"],
        media.local_addr().expect("addr").to_string(),
        "{first}"
    );
    // The intruder was sent nothing.
    let mut buf = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(300), intruder.recv_from(&mut buf))
            .await
            .is_err(),
        "no RTP to the intruder"
    );
}

#[tokio::test]
async fn an_api_call_ends_at_its_max_duration_s() {
    let mut serve = serve(&[]).await;
    let http = reqwest::Client::new();
    let mut uas = Peer::bind().await;
    let post = |body: Value| {
        http.post(format!("{}/v1/calls", serve.api))
            .bearer_auth(&serve.key)
            .json(&body)
            .send()
    };
    let to = format!("sip:bob@{}", uas.local);
    for bad in [0, 86_401] {
        let r = post(json!({"to": to, "max_duration_s": bad}))
            .await
            .expect("POST");
        assert_eq!(r.status().as_u16(), 422, "max_duration_s {bad}");
        let body: Value = r.json().await.expect("JSON");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("max_duration_s")),
            "{body}"
        );
    }
    let r = post(json!({"to": to, "max_duration_s": 2}))
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 201);
    // Answer the INVITE (with SDP), take the ACK, wait for the BYE.
    let (invite, from) = uas
        .recv_until(RUN_WAIT, "INVITE", |m| m.starts_with("INVITE "))
        .await;
    uas.reply_sdp(&invite, from, "200 OK", &offer("127.0.0.1", 40_002))
        .await;
    uas.recv_until(RUN_WAIT, "ACK", |m| m.starts_with("ACK "))
        .await;
    let answered = Instant::now();
    let dialog = Dialog {
        call_id: header(&invite, "Call-ID", "i").expect("Call-ID"),
        from: String::new(),
        to: String::new(),
        remote: from,
        rtp_port: 0,
        cseq: 0,
        ok: String::new(),
    };
    let bye_at = uas.expect_bye(&dialog, Duration::from_secs(20)).await;
    assert!(bye_at - answered >= Duration::from_millis(1900));
    let done = serve.final_event().await;
    assert_eq!(done["details"]["end_reason"], "max_duration", "{done}");
}

#[tokio::test]
async fn hold_is_no_silence_but_silence_after_resuming_ends_the_call() {
    let mut serve = serve(&["--rtp-timeout-s", "2"]).await;
    let mut peer = Peer::bind().await;
    let media = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let port = media.local_addr().expect("addr").port();
    let mut dialog = peer
        .invite(serve.sip, &offer("127.0.0.1", port))
        .await
        .expect("answered");
    // The peer holds the call (a=inactive): it sends nothing, and that is not a dead call.
    let hold = offer("127.0.0.1", port).replace("a=ptime:20", "a=ptime:20\r\na=inactive");
    let held = Instant::now();
    assert_eq!(peer.reinvite(&mut dialog, &hold).await, 200);
    // A re-INVITE naming the metadata address is refused; the call goes on.
    let metadata = offer("169.254.169.254", port).replace("o=- 1 1", "o=- 1 2");
    assert_eq!(peer.reinvite(&mut dialog, &metadata).await, 488);
    // Three times the timeout on hold: no BYE (retransmissions may come; they are no BYE).
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut buf = vec![0u8; 65_536];
    while let Ok(got) = tokio::time::timeout_at(quiet_until, peer.sock.recv_from(&mut buf)).await {
        let (n, _) = got.expect("recv");
        let msg = String::from_utf8_lossy(&buf[..n]);
        assert!(!msg.starts_with("BYE "), "BYE while on hold: {msg}");
    }
    // Resumed (sendrecv), and then silent: now the timeout ends it.
    let resume = offer("127.0.0.1", port).replace("o=- 1 1", "o=- 1 3");
    assert_eq!(peer.reinvite(&mut dialog, &resume).await, 200);
    let resumed = Instant::now();
    let bye_at = peer.expect_bye(&dialog, Duration::from_secs(20)).await;
    assert!(
        bye_at - resumed >= Duration::from_millis(1900),
        "{:?}",
        bye_at - resumed
    );
    let done = serve.final_event().await;
    assert_eq!(done["details"]["end_reason"], "rtp_timeout", "{done}");
    assert!(bye_at - held >= Duration::from_secs(8));
}

/// The final event among the lines of a finished `callplane call`.
fn final_of(events: &[Value]) -> &Value {
    events
        .iter()
        .rev()
        .find(|e| e["kind"] == "call.completed" || e["kind"] == "call.failed")
        .unwrap_or_else(|| panic!("no final event in {:?}", kinds(events)))
}

#[tokio::test]
async fn an_answer_naming_the_metadata_address_is_acked_then_byed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut uas = Peer::bind().await;
    let target = format!("sip:bob@{}", uas.local);
    let (child, mut rx) = spawn_callplane(dir.path(), &["call", &target, "--ring-timeout", "20"]);
    let (invite, from) = uas
        .recv_until(RUN_WAIT, "INVITE", |m| m.starts_with("INVITE "))
        .await;
    uas.reply_sdp(&invite, from, "200 OK", &offer("169.254.169.254", 40_000))
        .await;
    uas.recv_until(RUN_WAIT, "ACK", |m| m.starts_with("ACK "))
        .await;
    let (bye, from) = uas
        .recv_until(RUN_WAIT, "BYE", |m| m.starts_with("BYE "))
        .await;
    uas.reply(&bye, from, "200 OK", "").await;
    let (_, stderr) = common::wait_child(child, "callplane call").await;
    let events = common::collect_lines(&mut rx).await;
    let done = final_of(&events);
    assert_eq!(
        done["details"]["end_reason"], "media_address_refused",
        "{done} {stderr}"
    );
    assert!(
        done["details"]["end_detail"]
            .as_str()
            .is_some_and(|d| d.contains("169.254.169.254") && d.contains("metadata")),
        "{done}"
    );
    assert!(
        !kinds(&events).contains(&"media.first_packet_out"),
        "no RTP was sent: {:?}",
        kinds(&events)
    );
}

#[tokio::test]
async fn early_media_naming_a_multicast_address_is_cancelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut uas = Peer::bind().await;
    let target = format!("sip:bob@{}", uas.local);
    let (child, mut rx) = spawn_callplane(dir.path(), &["call", &target, "--ring-timeout", "20"]);
    let (invite, from) = uas
        .recv_until(RUN_WAIT, "INVITE", |m| m.starts_with("INVITE "))
        .await;
    uas.reply_sdp(
        &invite,
        from,
        "183 Session Progress",
        &offer("224.0.0.1", 40_000),
    )
    .await;
    let (cancel, from) = uas
        .recv_until(RUN_WAIT, "CANCEL", |m| m.starts_with("CANCEL "))
        .await;
    uas.reply(&cancel, from, "200 OK", "").await;
    // §9.2: the INVITE is then answered 487 (with the 183's To tag).
    let mut terminated = String::from("SIP/2.0 487 Request Terminated\r\n");
    for via in header_lines(&invite, "Via", "v") {
        terminated.push_str(via);
        terminated.push_str("\r\n");
    }
    terminated.push_str(&format!(
        "From: {}\r\nTo: {};tag=uas1\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        header(&invite, "From", "f").expect("From"),
        header(&invite, "To", "t").expect("To"),
        header(&invite, "Call-ID", "i").expect("Call-ID"),
        header(&invite, "CSeq", "").expect("CSeq"),
    ));
    uas.send(from, &terminated).await;
    uas.recv_until(RUN_WAIT, "ACK", |m| m.starts_with("ACK "))
        .await;
    let (_, stderr) = common::wait_child(child, "callplane call").await;
    let events = common::collect_lines(&mut rx).await;
    let done = final_of(&events);
    assert_eq!(
        done["details"]["end_reason"], "media_address_refused",
        "{done} {stderr}"
    );
    assert!(
        !kinds(&events).contains(&"media.first_packet_out"),
        "no RTP was sent: {:?}",
        kinds(&events)
    );
}
