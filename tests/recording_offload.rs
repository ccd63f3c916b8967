//! Recording off the runtime (issue #12, point 3): the real engine places a recorded call to a
//! hand-written SIP + RTP peer on loopback. A stuck disk (the recorder's write hold: every
//! writer job waits at it) shows up as `recording.lagging`, as `/metrics` series and as dropped
//! frames counted in the recording's events, while the call's RTP keeps its 20 ms pace; the
//! final hash and size are those of the file on disk; a recording that cannot be written fails
//! alone and the call goes on. Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method as HttpMethod;
use bytes::Bytes;
use callplane::engine::{CallEvent, CallId, Engine, EngineConfig, EngineHandle, OriginateRequest};
use callplane::files::{RecorderConfig, WriteHold};
use common::api::TestApi;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sip::message::{HeaderName, Message, Request, StatusCode, Uri, response_to};
use sip::transaction::Transport;
use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(15);
/// How long the stuck-disk test keeps the disk stuck after the recording reported its lag.
const STUCK_FOR: Duration = Duration::from_millis(2500);

fn originate(to: SocketAddr, record: &Path) -> OriginateRequest {
    OriginateRequest {
        sip: Default::default(),
        alternates: Vec::new(),
        to: Uri::parse(format!("sip:rec@{to}").as_bytes()).expect("uri"),
        destination: to,
        from: None,
        play: None,
        gather_digits: 0,
        record: Some(record.to_path_buf()),
        ring_timeout: Duration::from_secs(30),
        transport: Transport::Udp,
        send_dtmf: Vec::new(),
        dtmf_after: Duration::ZERO,
        hangup_after: None,
        script: None,
        prompts: None,
        prompt_scope: callplane::engine::PromptScope::Local,
        tag: None,
        variables: Default::default(),
        max_duration: None,
    }
}

/// The next event of `call` of kind `kind`, within `limit` (panics listing what came otherwise).
async fn wait_kind(
    rx: &mut broadcast::Receiver<CallEvent>,
    seen: &mut Vec<CallEvent>,
    call: CallId,
    kind: &str,
    limit: Duration,
) -> CallEvent {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = match timeout(left, rx.recv()).await {
            Ok(Ok(ev)) => ev,
            Ok(Err(e)) => panic!("event stream: {e}; saw {:?}", kinds(seen)),
            Err(_) => panic!("no {kind} within {limit:?}; saw {:?}", kinds(seen)),
        };
        if ev.call_id != call {
            continue;
        }
        seen.push(ev.clone());
        if ev.kind == kind {
            return ev;
        }
        assert!(
            !ev.is_final(),
            "the call ended before {kind}: {:?}",
            ev.details
        );
    }
}

fn kinds(events: &[CallEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind).collect()
}

fn find<'a>(events: &'a [CallEvent], kind: &str) -> &'a CallEvent {
    events
        .iter()
        .find(|e| e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", kinds(events)))
}

/// A callee on raw sockets: answers the INVITE, sends PCMU every 20 ms and notes when each of
/// the engine's RTP packets arrives.
struct Peer {
    sip: UdpSocket,
    rtp: Arc<UdpSocket>,
    /// Arrival time of every RTP packet from the engine.
    arrivals: Arc<Mutex<Vec<Instant>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Peer {
    async fn bind() -> Peer {
        Peer {
            sip: UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
            rtp: Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind")),
            arrivals: Arc::default(),
            tasks: Vec::new(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.sip.local_addr().expect("addr")
    }

    /// The next SIP request with `method` (other messages skipped), bounded.
    async fn request(&self, method: &str) -> (Request, SocketAddr) {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 65_535];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (n, from) = timeout(left, self.sip.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {method} within {WAIT:?}"))
                .expect("recv");
            if let Ok(Message::Request(r)) = Message::parse(Bytes::copy_from_slice(&buf[..n]))
                && r.method.as_str() == method
            {
                return (r, from);
            }
        }
    }

    async fn reply(&self, req: &Request, to: SocketAddr, status: u16, sdp: Option<String>) {
        let mut r = response_to(req, StatusCode::new(status).expect("status"), None);
        r.add_to_tag("peer1");
        r.headers
            .push(HeaderName::Contact, format!("<sip:peer@{}>", self.addr()));
        if let Some(sdp) = sdp {
            r.headers.push(HeaderName::ContentType, "application/sdp");
            r.body = Bytes::from(sdp);
        }
        self.sip
            .send_to(&r.to_bytes(), to)
            .await
            .expect("send a response");
    }

    /// Answer the INVITE with PCMU at our RTP socket, then start the media both ways.
    async fn answer(&mut self) {
        let (invite, from) = self.request("INVITE").await;
        let offer = String::from_utf8_lossy(&invite.body).into_owned();
        let engine_rtp = media_address(&offer);
        let port = self.rtp.local_addr().expect("addr").port();
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        );
        self.reply(&invite, from, 200, Some(sdp)).await;

        let rtp = self.rtp.clone();
        self.tasks.push(tokio::spawn(async move {
            // A square wave in µ-law; 20 ms packets, paced by an interval (bounded by the
            // test: the task is aborted when the peer goes).
            let payload: Vec<u8> = (0..160)
                .map(|i| if i % 16 < 8 { 0x20 } else { 0xa0 })
                .collect();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for n in 0u32..3000 {
                tick.tick().await;
                let seq = (n & 0xffff) as u16;
                let mut p = vec![0x80, 0x00];
                p.extend_from_slice(&seq.to_be_bytes());
                p.extend_from_slice(&(n * 160).to_be_bytes());
                p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                p.extend_from_slice(&payload);
                let _ = rtp.send_to(&p, engine_rtp).await;
            }
        }));
        let rtp = self.rtp.clone();
        let arrivals = self.arrivals.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = rtp.recv_from(&mut buf).await {
                // RTP from the engine's RTP port (RTCP, when muxed, has payload types 200-204).
                if from == engine_rtp && n >= 12 && !(200..=204).contains(&buf[1]) {
                    arrivals
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(Instant::now());
                }
            }
        }));
    }

    /// (packets, longest gap between two) of the engine's RTP that arrived in `[from, to]`.
    fn rtp_between(&self, from: Instant, to: Instant) -> (usize, Duration) {
        let arrivals = self
            .arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let inside: Vec<Instant> = arrivals
            .iter()
            .copied()
            .filter(|t| *t >= from && *t <= to)
            .collect();
        let mut longest = inside
            .first()
            .map_or(to.duration_since(from), |t| t.duration_since(from));
        for w in inside.windows(2) {
            longest = longest.max(w[1].duration_since(w[0]));
        }
        if let Some(last) = inside.last() {
            longest = longest.max(to.duration_since(*last));
        }
        (inside.len(), longest)
    }

    /// Answer the engine's BYE.
    async fn answer_bye(&self) {
        let (bye, from) = self.request("BYE").await;
        self.reply(&bye, from, 200, None).await;
    }
}

/// The `c=` address and `m=audio` port of an SDP.
fn media_address(sdp: &str) -> SocketAddr {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .unwrap_or_else(|| panic!("no c= line in {sdp}"))
        .trim();
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no m=audio line in {sdp}"))
        .trim();
    format!("{ip}:{port}").parse().expect("media address")
}

/// The file's (SHA-256 hex, length), read by the test itself.
fn file_digest(path: &Path) -> (String, u64) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (hex::encode(Sha256::digest(&bytes)), bytes.len() as u64)
}

/// The value of one `/metrics` series without labels.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn scrape(api: &TestApi) -> String {
    let r = api.send(HttpMethod::GET, "/metrics", None, None).await;
    assert!(r.status.is_success(), "/metrics: {}", r.status);
    String::from_utf8(r.body).expect("UTF-8 metrics")
}

/// Wait (bounded) until the engine freed every call slot.
async fn slots_freed(handle: &EngineHandle) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.active_calls() > 0 {
        assert!(Instant::now() < deadline, "call slots still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_disk_is_lag_and_counted_drops_while_the_call_rtp_keeps_its_pace() {
    let root = tempfile::tempdir().expect("tempdir");
    let store = callplane::app::open_store(&root.path().join("data"), None)
        .await
        .expect("store");
    let hold = WriteHold::new();
    let writer_hold = hold.clone();
    let api = TestApi::start_full(
        store,
        |_| {},
        move |e| {
            e.recorder = RecorderConfig {
                threads: 1,
                // 64 jobs: the open and the reserved close, then 62 frames (1.24 s of audio).
                queue: 64,
                lag_threshold: Duration::from_millis(200),
                hold: Some(writer_hold),
            };
        },
    )
    .await;
    let engine = api.state.engine.clone();
    let wav = root.path().join("stuck.wav");
    let mut peer = Peer::bind().await;
    let mut rx = engine.subscribe();
    let mut seen = Vec::new();

    // The disk is stuck from before the call: even the file's creation waits.
    hold.hold();
    let call = engine
        .originate(originate(peer.addr(), &wav))
        .await
        .expect("originate");
    peer.answer().await;
    wait_kind(&mut rx, &mut seen, call, "recording.started", WAIT).await;
    let stuck_from = Instant::now();
    let lagging = wait_kind(&mut rx, &mut seen, call, "recording.lagging", WAIT).await;
    eprintln!("recording.lagging {}", lagging.details);
    assert!(
        lagging.details["lag_ms"].as_u64().expect("lag_ms") >= 200,
        "{}",
        lagging.details
    );
    assert_eq!(lagging.details["queue_capacity"], 64, "{}", lagging.details);
    assert!(lagging.details["queue_depth"].as_u64().expect("depth") >= 10);

    // The stimulus: the disk stays stuck for this long (the queue fills in 1.24 s of audio;
    // what comes after is dropped).
    tokio::time::sleep(STUCK_FOR).await;

    // Meanwhile the call's media kept its pace: RTP every 20 ms, no pause while the disk was
    // stuck (a call that waited for the writer would have sent nothing since the queue filled).
    let now = Instant::now();
    let (packets, longest_gap) = peer.rtp_between(stuck_from, now);
    let expected = now.duration_since(stuck_from).as_millis() as usize / 20;
    eprintln!(
        "while stuck for {:?}: {packets} RTP packets (expected {expected}), longest gap {longest_gap:?}",
        now.duration_since(stuck_from)
    );
    assert!(
        packets * 10 >= expected * 7,
        "{packets} RTP packets in {:?}, expected about {expected}",
        now.duration_since(stuck_from)
    );
    assert!(
        longest_gap < Duration::from_millis(400),
        "a {longest_gap:?} pause in the call's RTP while the disk was stuck"
    );

    // And the stall shows: the queue is full, the lag is the stall's length, frames were dropped.
    let text = scrape(&api).await;
    eprintln!(
        "{}",
        text.lines()
            .filter(|l| l.starts_with("callplane_record"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        metric(&text, "callplane_recording_queue_depth") >= 60.0,
        "the queue is full:\n{text}"
    );
    assert_eq!(metric(&text, "callplane_recording_queue_capacity"), 64.0);
    assert!(
        metric(&text, "callplane_recording_lag_seconds") >= STUCK_FOR.as_secs_f64(),
        "the lag rose with the stall:\n{text}"
    );
    assert!(metric(&text, "callplane_recording_frames_dropped_total") >= 30.0);
    assert_eq!(metric(&text, "callplane_recording_lagging_total"), 1.0);
    assert_eq!(metric(&text, "callplane_recordings_open"), 1.0);
    assert!(
        hold.waiting() >= 1,
        "the writer thread waits at the stuck disk"
    );

    // The disk comes back: the writer catches up and says so.
    hold.release();
    let caught_up = wait_kind(&mut rx, &mut seen, call, "recording.caught_up", WAIT).await;
    eprintln!("recording.caught_up {}", caught_up.details);
    let dropped_in_episode = caught_up.details["dropped_frames"]
        .as_u64()
        .expect("dropped_frames");
    assert!(dropped_in_episode >= 30, "{}", caught_up.details);

    engine.hangup(call).await.expect("hangup");
    peer.answer_bye().await;
    let done = wait_kind(&mut rx, &mut seen, call, "call.completed", WAIT).await;
    let ready = find(&seen, "recording.ready").details.clone();
    eprintln!("recording.ready {ready}");
    let dropped = ready["dropped_frames"].as_u64().expect("dropped_frames");
    assert_eq!(
        dropped,
        engine.recording_stats().frames_dropped,
        "every drop is in the final event: {ready}"
    );
    assert!(dropped >= dropped_in_episode);
    assert_eq!(ready["dropped_ms"].as_u64(), Some(dropped * 20), "{ready}");
    assert_eq!(done.details["recording"]["dropped_frames"], dropped);
    // The hash and size are the file's, and the dropped audio kept its time (as silence): the
    // file is as long as the recording ran.
    let (sha256, bytes) = file_digest(&wav);
    assert_eq!(ready["sha256"], sha256.as_str());
    assert_eq!(ready["bytes"].as_u64(), Some(bytes));
    let ran_ms = (find(&seen, "recording.stopped").offset_us
        - find(&seen, "recording.started").offset_us)
        / 1000;
    let duration_ms = ready["duration_ms"].as_u64().expect("duration_ms");
    assert!(
        duration_ms.abs_diff(ran_ms) <= 300,
        "the file holds {duration_ms} ms, the recording ran {ran_ms} ms"
    );
    let text = scrape(&api).await;
    assert_eq!(metric(&text, "callplane_recording_queue_depth"), 0.0);
    assert_eq!(metric(&text, "callplane_recordings_open"), 0.0);
    assert_eq!(metric(&text, "callplane_recording_lag_seconds"), 0.0);
    slots_freed(&engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_hash_and_size_are_those_of_the_file_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Engine::start(EngineConfig::new("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("engine starts");
    let wav = dir.path().join("clean.wav");
    let mut peer = Peer::bind().await;
    let mut rx = e.handle.subscribe();
    let mut seen = Vec::new();
    let call = e
        .handle
        .originate(originate(peer.addr(), &wav))
        .await
        .expect("originate");
    peer.answer().await;
    wait_kind(&mut rx, &mut seen, call, "recording.started", WAIT).await;
    // A second and a half of audio: past one writer flush.
    let deadline = Instant::now() + WAIT;
    while peer.arrivals.lock().expect("lock").len() < 75 {
        assert!(Instant::now() < deadline, "RTP from the engine");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    e.handle.hangup(call).await.expect("hangup");
    peer.answer_bye().await;
    let done = wait_kind(&mut rx, &mut seen, call, "call.completed", WAIT).await;
    let ready: Value = find(&seen, "recording.ready").details.clone();
    let (sha256, bytes) = file_digest(&wav);
    assert_eq!(ready["sha256"], sha256.as_str(), "{ready}");
    assert_eq!(ready["bytes"].as_u64(), Some(bytes), "{ready}");
    assert_eq!(ready["dropped_frames"], 0, "{ready}");
    assert_eq!(done.details["recording"], ready);
    let reader = hound::WavReader::open(&wav).expect("a WAV");
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
    assert_eq!(
        u64::from(reader.duration()) * 1000 / 8000,
        ready["duration_ms"].as_u64().expect("duration_ms")
    );
    assert!(
        u64::from(reader.duration()) >= 8000,
        "at least a second recorded: {} frames",
        reader.duration()
    );
    assert_eq!(bytes, 44 + u64::from(reader.duration()) * 4);
    let stats = e.handle.recording_stats();
    assert_eq!(
        (stats.open, stats.queue_depth, stats.frames_dropped),
        (0, 0, 0)
    );
    slots_freed(&e.handle).await;
    e.handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_that_cannot_be_written_fails_alone_and_the_call_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Engine::start(EngineConfig::new("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("engine starts");
    // No such directory: the writer thread's create fails.
    let wav = dir.path().join("missing").join("x.wav");
    let mut peer = Peer::bind().await;
    let mut rx = e.handle.subscribe();
    let mut seen = Vec::new();
    let call = e
        .handle
        .originate(originate(peer.addr(), &wav))
        .await
        .expect("originate");
    peer.answer().await;
    let failed = wait_kind(&mut rx, &mut seen, call, "recording.failed", WAIT).await;
    let error = failed.details["error"].as_str().expect("error").to_owned();
    assert!(error.contains("cannot create"), "{error}");
    // The call's media goes on after the failure.
    let failed_at = Instant::now();
    let deadline = failed_at + WAIT;
    loop {
        let (packets, _) = peer.rtp_between(failed_at, Instant::now());
        if packets >= 25 {
            break;
        }
        assert!(Instant::now() < deadline, "RTP after the recording failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    e.handle.hangup(call).await.expect("hangup");
    peer.answer_bye().await;
    let done = wait_kind(&mut rx, &mut seen, call, "call.completed", WAIT).await;
    assert_eq!(done.details["outcome"], "answered", "{}", done.details);
    assert_eq!(done.details["recording_error"], error.as_str());
    assert_eq!(
        kinds(&seen)
            .iter()
            .filter(|k| **k == "recording.failed")
            .count(),
        1,
        "reported once: {:?}",
        kinds(&seen)
    );
    assert!(!kinds(&seen).contains(&"recording.ready"));
    assert_eq!(e.handle.recording_stats().failures, 1);
    assert_eq!(e.handle.recording_stats().open, 0);
    slots_freed(&e.handle).await;
    e.handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_finishes_the_recording_of_a_live_call_and_shutdown_stops_the_writers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Engine::start(EngineConfig::new("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("engine starts");
    let wav = dir.path().join("drained.wav");
    let mut peer = Peer::bind().await;
    let mut rx = e.handle.subscribe();
    let mut seen = Vec::new();
    let call = e
        .handle
        .originate(originate(peer.addr(), &wav))
        .await
        .expect("originate");
    peer.answer().await;
    wait_kind(&mut rx, &mut seen, call, "recording.started", WAIT).await;
    let deadline = Instant::now() + WAIT;
    while e.handle.recording_stats().frames_written < 10 {
        assert!(Instant::now() < deadline, "frames written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = {
        let handle = e.handle.clone();
        tokio::spawn(async move { handle.drain(Duration::ZERO).await })
    };
    peer.answer_bye().await;
    timeout(WAIT, drain)
        .await
        .expect("the drain ends")
        .expect("drain task")
        .expect("drain");
    let done = wait_kind(&mut rx, &mut seen, call, "call.completed", WAIT).await;
    let ks = kinds(&seen);
    let ready_at = ks.iter().position(|k| *k == "recording.ready");
    assert!(
        ready_at.is_some_and(|i| i + 1 < ks.len()),
        "recording.ready before the final event: {ks:?}"
    );
    assert_eq!(
        done.details["recording"]["path"],
        wav.to_str().expect("utf-8")
    );
    assert!(wav.exists(), "the recording is finished");
    assert!(
        !dir.path().join("drained.wav.part").exists(),
        "no .part is left"
    );
    let (sha256, _) = file_digest(&wav);
    assert_eq!(done.details["recording"]["sha256"], sha256.as_str());
    let stats = e.handle.recording_stats();
    assert_eq!(
        (stats.open, stats.queue_depth, stats.threads),
        (0, 0, 4),
        "{stats:?}"
    );
    e.handle.shutdown().await.expect("shutdown");
    // The shutdown let the writer threads finish and end.
    let stats = e.handle.recording_stats();
    assert_eq!((stats.threads, stats.queue_depth), (0, 0), "{stats:?}");
    assert_eq!(stats.lag, Duration::ZERO);
}
