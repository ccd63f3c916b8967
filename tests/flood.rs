//! The flood measurement of #11 point 8 (ignored: a measurement, not a check; ~1.5 min):
//! 50 inbound calls with audio (sipp, tests/fixtures/sipp/flood_uac_pcap.xml: 20 s of PCMA
//! each, 20 ms packets with one unbroken sequence, from a pcap this test writes) into
//! `callplane serve`, and while all of them are up, 10,000 garbage UDP
//! datagrams/s for 10 s at serve's SIP port from another address (127.0.0.2). It reports the
//! RTP loss on those calls from serve's own per-call counters (`rtp.lost_in` /
//! `rtp.expected_in` of each final event), for three runs: no flood (the reference), flood
//! with the default inbound protection, flood with the rate limit off.
//!
//! ```text
//! cargo test --test flood -- --ignored --nocapture
//! ```
//! Results and their context: docs/trunks/carrier.md.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{fixture, sipp_available, spawn_callplane, spawn_sipp, wait_child};
use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::time::Instant;

const CALLS: usize = 50;
const FLOOD_PER_S: u64 = 10_000;
const FLOOD_FOR: Duration = Duration::from_secs(10);
/// Seconds of audio per call (the flood must fit inside it).
const AUDIO_S: u32 = 20;

/// Writes a pcap of `seconds` of PCMA RTP (20 ms packets, one SSRC, sequence and timestamp
/// unbroken) for sipp's `play_pcap_audio` (which rewrites the addresses and ports).
fn write_pcma_pcap(path: &std::path::Path, seconds: u32) {
    let mut out = Vec::new();
    // Global header: magic, v2.4, GMT offset, accuracy, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let packets = seconds * 50;
    for n in 0..packets {
        let mut rtp = vec![0x80u8, 8];
        rtp.extend_from_slice(&(n as u16).to_be_bytes());
        rtp.extend_from_slice(&(n * 160).to_be_bytes());
        rtp.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        // A-law: a slow square wave around silence (0xD5), so the payload is not constant.
        rtp.extend((0..160).map(|i| if (i / 20) % 2 == 0 { 0xD5u8 } else { 0x55 }));
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + ip_len);
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x08, 0x00]);
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&(ip_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        let usec = u64::from(n) * 20_000;
        out.extend_from_slice(&((usec / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((usec % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).expect("write the pcap");
}

#[derive(Debug, Default)]
struct Outcome {
    calls: usize,
    expected_in: u64,
    lost_in: u64,
    packets_in: u64,
    packets_out: u64,
    flood_sent: u64,
    flood_secs: f64,
    dropped: f64,
    malformed: f64,
}

impl Outcome {
    fn loss_percent(&self) -> f64 {
        if self.expected_in == 0 {
            return f64::NAN;
        }
        100.0 * self.lost_in as f64 / self.expected_in as f64
    }
}

async fn metric(api: &str, series: &str) -> f64 {
    let Ok(resp) = reqwest::get(format!("{api}/metrics")).await else {
        return f64::NAN;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap_or(f64::NAN))
}

/// Garbage at `per_s` datagrams/s for `limit` from 127.0.0.2; returns (sent, seconds).
async fn flood(to: SocketAddr, per_s: u64, limit: Duration) -> (u64, f64) {
    let sock = UdpSocket::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let per_tick = per_s / 1000;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut sent = 0u64;
    // xorshift: garbage of 40 to 540 bytes, some of it SIP-looking text.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 600];
    while start.elapsed() < limit {
        tick.tick().await;
        for _ in 0..per_tick {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 40 + (x % 500) as usize;
            if x.is_multiple_of(3) {
                let text = format!("INVITE sip:{x}@x SIP/2.0\r\nVia: {x}\r\nCSeq: nope\r\n\r\n");
                buf[..text.len()].copy_from_slice(text.as_bytes());
                if sock.send_to(&buf[..text.len()], to).await.is_ok() {
                    sent += 1;
                }
            } else {
                for (i, b) in buf[..len].iter_mut().enumerate() {
                    *b = (x >> ((i % 8) * 8)) as u8 ^ i as u8;
                }
                if sock.send_to(&buf[..len], to).await.is_ok() {
                    sent += 1;
                }
            }
        }
    }
    (sent, start.elapsed().as_secs_f64())
}

async fn run(label: &str, extra: &[&str], with_flood: bool) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path").to_owned();
    let mut args = vec![
        "serve",
        "--sip",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--max-calls",
        "200",
    ];
    args.extend(extra);
    let (_serve, mut rx) = spawn_callplane(dir.path(), &args);
    let (api, _key, seen) = common::serve_started(&mut rx).await;
    let sip: SocketAddr = seen
        .iter()
        .find(|v| v["kind"] == "serve.listening")
        .and_then(|v| v["sip"].as_str())
        .expect("serve.listening names the SIP address")
        .parse()
        .expect("address");
    let events: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = events.clone();
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                sink.lock().expect("lock").push(v);
            }
        }
    });
    let count = |kind: &str| {
        events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| e["kind"] == kind)
            .count()
    };

    // The scenario plays `pcma.pcap` from sipp's working directory.
    write_pcma_pcap(&dir.path().join("pcma.pcap"), AUDIO_S);
    let sipp = spawn_sipp(
        dir.path(),
        &[
            "-sf",
            fixture("flood_uac_pcap.xml").to_str().expect("utf-8"),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-r",
            "50",
            "-m",
            &CALLS.to_string(),
            "-l",
            &CALLS.to_string(),
            "-timeout",
            "60s",
            "-nostdin",
            &sip.to_string(),
        ]
        .map(String::from),
    );
    // All calls up, with audio coming in.
    let deadline = Instant::now() + Duration::from_secs(20);
    while count("media.first_packet_in") < CALLS {
        assert!(
            Instant::now() < deadline,
            "{label}: only {} calls have audio after 20 s",
            count("media.first_packet_in")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut out = Outcome::default();
    if with_flood {
        (out.flood_sent, out.flood_secs) = flood(sip, FLOOD_PER_S, FLOOD_FOR).await;
    }
    let (status, err) = wait_child(sipp, "sipp").await;
    assert!(status.success(), "{label}: sipp failed: {status} {err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while count("call.completed") + count("call.failed") < CALLS {
        assert!(Instant::now() < deadline, "{label}: calls did not all end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out.dropped = metric(&api, "callplane_sip_dropped_total{reason=\"rate_limit\"}").await;
    out.malformed = metric(&api, "callplane_sip_malformed_total").await;
    for e in events.lock().expect("lock").iter() {
        if e["kind"] != "call.completed" {
            continue;
        }
        // The final event's details, wherever the event puts them.
        let rtp = if e["rtp"].is_object() {
            &e["rtp"]
        } else {
            &e["details"]["rtp"]
        };
        let n = |k: &str| rtp[k].as_u64().unwrap_or(0);
        out.calls += 1;
        out.expected_in += n("expected_in");
        out.lost_in += n("lost_in");
        out.packets_in += n("packets_in");
        out.packets_out += n("packets_out");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (~1 min): cargo test --test flood -- --ignored --nocapture"]
async fn garbage_flood_at_10k_per_s_against_50_live_calls() {
    if !sipp_available() {
        return;
    }
    let mut rows = Vec::new();
    for (label, extra, with_flood) in [
        ("no flood (reference)", &[][..], false),
        ("flood, default protection", &[][..], true),
        (
            "flood, rate limit off",
            &["--sip-rate-limit", "0"][..],
            true,
        ),
    ] {
        let o = run(label, extra, with_flood).await;
        eprintln!("{label}: {o:?} loss {:.4} %", o.loss_percent());
        rows.push((label, o));
    }
    println!(
        "\n| run | calls | RTP expected in | lost | loss | packets out | flood sent (rate) | dropped by rate limit | parsed as malformed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (label, o) in &rows {
        let rate = if o.flood_secs > 0.0 {
            format!(
                "{} ({:.0}/s)",
                o.flood_sent,
                o.flood_sent as f64 / o.flood_secs
            )
        } else {
            "—".to_owned()
        };
        println!(
            "| {label} | {} | {} | {} | {:.4} % | {} | {rate} | {} | {} |",
            o.calls,
            o.expected_in,
            o.lost_in,
            o.loss_percent(),
            o.packets_out,
            o.dropped,
            o.malformed
        );
    }
    for (label, o) in &rows {
        assert_eq!(o.calls, CALLS, "{label}: every call completed");
        assert!(o.expected_in > 0, "{label}: audio was counted");
    }
}
