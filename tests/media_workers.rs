//! The media workers (#12 point 2, `net::media_workers`) on real loopback sockets: what a
//! session hears and sends through a worker agrees with a plain UDP peer's own counts, events
//! reach a slow call in order and whole, and every path gives the session back.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use callplane::net::media_workers::{
    FRAMES_PER_EVENT, FrameRoute, FrameSink, MediaCommand, MediaLink, MediaWorkers, SinkNote,
    WorkerEvent, WorkerOptions,
};
use media::codec::Codec;
use media::rtp::{PayloadType, Ssrc};
use media::session::{MediaEvent, MediaSession, RecordedFrame, SessionConfig};

/// A bound, non-blocking socket on loopback.
fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_nonblocking(true).expect("nonblocking");
    s
}

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().expect("local addr")
}

/// One PCMU RTP packet (20 ms of silence) with the given sequence number.
fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(0xffu8, 160));
    p
}

/// A session sending to `peer_rtp`/`peer_rtcp`, recording when asked.
fn session(peer_rtp: SocketAddr, peer_rtcp: SocketAddr, record: bool) -> MediaSession {
    let mut c = SessionConfig::new(Codec::Pcmu, PayloadType::PCMU, Ssrc(0x1234_5678));
    c.remote_rtp = Some(peer_rtp);
    c.remote_rtcp = Some(peer_rtcp);
    c.record = record;
    c.quality_interval = Duration::from_secs(60);
    MediaSession::new(c, Instant::now())
}

/// A call's RTP/RTCP sockets, a peer's, and the session a worker runs between them.
struct Pair {
    link: MediaLink,
    our_rtp: UdpSocket,
    our_rtcp: UdpSocket,
    peer: UdpSocket,
    peer_rtcp: UdpSocket,
}

/// Attaches a session (recording when asked) on fresh loopback sockets to `workers`.
fn attach(workers: &MediaWorkers, record: bool) -> Pair {
    attach_routed(workers, record, FrameRoute::Call)
}

/// A session whose recorded frames go to `route` from its first tick.
fn attach_routed(workers: &MediaWorkers, record: bool, route: FrameRoute) -> Pair {
    let (our_rtp, our_rtcp) = (socket(), socket());
    let (peer, peer_rtcp) = (socket(), socket());
    let link = workers
        .attach(
            session(addr(&peer), addr(&peer_rtcp), record),
            &our_rtp,
            &our_rtcp,
            false,
            route,
        )
        .expect("attach");
    Pair {
        link,
        our_rtp,
        our_rtcp,
        peer,
        peer_rtcp,
    }
}

/// Waits (bounded) for `cond`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every event until the session's summary (bounded).
fn until_stopped(
    link: &mut MediaLink,
) -> (
    Vec<WorkerEvent>,
    callplane::net::media_workers::MediaSummary,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut events = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no Stopped within 5 s");
        match link.events.try_recv() {
            Ok(WorkerEvent::Stopped(s)) => return (events, *s),
            Ok(e) => events.push(e),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// A recording session in `workers` hears `packets` RTP packets at 20 ms from a peer while its
/// call reads none of its events; then it stops. Its link (nothing should follow), every event
/// and the summary.
fn unread_recording(
    workers: &MediaWorkers,
    packets: u16,
) -> (
    MediaLink,
    Vec<WorkerEvent>,
    callplane::net::media_workers::MediaSummary,
) {
    let Pair {
        mut link,
        our_rtp,
        our_rtcp: _our_rtcp,
        peer,
        peer_rtcp: _peer_rtcp,
    } = attach(workers, true);
    for seq in 0..packets {
        peer.send_to(&rtp(seq, 0x55), addr(&our_rtp)).expect("send");
        std::thread::sleep(Duration::from_millis(20));
    }
    link.command(MediaCommand::Stop(Instant::now()))
        .expect("stop");
    let (events, summary) = until_stopped(&mut link);
    (link, events, summary)
}

/// Recorded frames among `events`.
fn frame_count(events: &[WorkerEvent]) -> u64 {
    events
        .iter()
        .map(|e| match e {
            WorkerEvent::Records(f) => f.len() as u64,
            _ => 0,
        })
        .sum()
}

#[test]
fn a_session_in_a_worker_counts_exactly_what_a_plain_peer_sent_and_received() {
    let workers = MediaWorkers::start(2).expect("workers");
    let Pair {
        mut link,
        our_rtp,
        our_rtcp: _our_rtcp,
        peer,
        peer_rtcp: _peer_rtcp,
    } = attach(&workers, false);

    // The peer sends 50 packets at 20 ms (1 s), and counts what comes back to it.
    const SENT: u16 = 50;
    let mut got_by_peer = 0u64;
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    for seq in 0..SENT {
        peer.send_to(&rtp(seq, 0xabcd), addr(&our_rtp))
            .expect("send");
        let slot = start + Duration::from_millis(20 * (u64::from(seq) + 1));
        while Instant::now() < slot {
            while peer.recv_from(&mut buf).is_ok() {
                got_by_peer += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // Let the last packet in, then stop: what the session sent before its summary is final.
    std::thread::sleep(Duration::from_millis(60));
    link.command(MediaCommand::Stop(Instant::now()))
        .expect("stop");
    let (events, summary) = until_stopped(&mut link);
    std::thread::sleep(Duration::from_millis(50));
    while peer.recv_from(&mut buf).is_ok() {
        got_by_peer += 1;
    }

    assert_eq!(
        summary.stats.packets_received,
        u64::from(SENT),
        "{summary:?}"
    );
    assert_eq!(summary.expected_in, u64::from(SENT));
    assert_eq!(summary.lost_in, 0);
    // About 1.1 s at 20 ms: the session kept its own pace through the shared tick.
    assert!(
        (45..=70).contains(&summary.stats.packets_sent),
        "sent {}",
        summary.stats.packets_sent
    );
    assert_eq!(
        got_by_peer, summary.stats.packets_sent,
        "the peer's count of our packets is the session's"
    );
    assert!(matches!(
        events.first(),
        Some(WorkerEvent::Media(e))
            if matches!(**e, MediaEvent::FirstPacketOut | MediaEvent::FirstPacketIn { .. })
    ));
    // The call's quality report comes before the summary (the stop emits it).
    assert!(
        events
            .iter()
            .any(|e| matches!(e, WorkerEvent::Media(m) if matches!(**m, MediaEvent::Quality(_)))),
        "{events:?}"
    );
    wait_for(
        "the session to be forgotten",
        Duration::from_secs(2),
        || workers.counters().sessions.load(Ordering::Relaxed) == 0,
    );
    let c = workers.counters();
    assert_eq!(c.received.load(Ordering::Relaxed), u64::from(SENT));
    assert!(c.ticks.load(Ordering::Relaxed) > 0);
}

#[test]
fn a_slow_call_gets_every_event_and_frame_in_order_with_the_summary_last() {
    // A channel of 8: most of what the session says waits in its outbox while the call does
    // not read.
    let workers = MediaWorkers::start_with(WorkerOptions {
        event_channel: 8,
        ..WorkerOptions::new(1)
    })
    .expect("workers");
    // 1.5 s without reading: about 75 recorded frames, far more than the channel holds.
    let (mut link, events, summary) = unread_recording(&workers, 75);
    let frames = frame_count(&events);
    assert_eq!(summary.record_frames_dropped, 0);
    // One recorded frame per 20 ms tick the session ran (about 75).
    assert!((60..=100).contains(&frames), "{frames} frames");
    assert_eq!(summary.stats.packets_received, 75);
    // In order: the first packet's event before any frame that holds its audio, the call's
    // quality report (emitted by the stop) after every frame.
    let first_in = events
        .iter()
        .position(|e| matches!(e, WorkerEvent::Media(m) if matches!(**m, MediaEvent::FirstPacketIn { .. })))
        .expect("first packet event");
    let quality = events
        .iter()
        .position(|e| matches!(e, WorkerEvent::Media(m) if matches!(**m, MediaEvent::Quality(_))))
        .expect("quality report");
    let last_frame = events
        .iter()
        .rposition(|e| matches!(e, WorkerEvent::Records(_)))
        .expect("frames");
    assert!(
        first_in < last_frame && last_frame < quality,
        "{first_in} {last_frame} {quality}"
    );
    // Nothing after the summary.
    std::thread::sleep(Duration::from_millis(50));
    assert!(link.events.try_recv().is_err());
}

#[test]
fn frames_beyond_the_outbox_bound_are_dropped_and_counted_but_events_never() {
    let workers = MediaWorkers::start_with(WorkerOptions {
        event_channel: 4,
        max_outbox_frames: 10,
        ..WorkerOptions::new(1)
    })
    .expect("workers");
    let (_link, events, summary) = unread_recording(&workers, 50);
    let frames = frame_count(&events);
    // At most what the channel (4 events of up to FRAMES_PER_EVENT frames) and the outbox
    // hold got through; the rest are counted, none vanished.
    assert!(frames <= 4 * FRAMES_PER_EVENT as u64 + 10, "{frames}");
    assert!(summary.record_frames_dropped > 0);
    let total = frames + summary.record_frames_dropped;
    assert!((45..=70).contains(&total), "{total}");
    assert_eq!(
        workers
            .counters()
            .record_frames_dropped
            .load(Ordering::Relaxed),
        summary.record_frames_dropped
    );
    // The events that are not frames all came: the first packets and the call's report.
    for want in ["FirstPacketIn", "FirstPacketOut", "Quality"] {
        assert!(
            events.iter().any(|e| format!("{e:?}").contains(want)),
            "{want} missing"
        );
    }
}

#[test]
fn dropping_a_link_forgets_the_session_and_leaves_the_calls_sockets_open() {
    let workers = MediaWorkers::start(1).expect("workers");
    let Pair {
        link,
        our_rtp,
        our_rtcp: _our_rtcp,
        peer,
        peer_rtcp: _peer_rtcp,
    } = attach(&workers, false);
    wait_for("the session to be attached", Duration::from_secs(2), || {
        workers.counters().sessions.load(Ordering::Relaxed) == 1
    });
    drop(link);
    wait_for(
        "the session to be forgotten",
        Duration::from_secs(2),
        || workers.counters().sessions.load(Ordering::Relaxed) == 0,
    );
    // The worker closed its duplicates only: the call's own socket still receives (a failover
    // offers the same port to the next target).
    peer.send_to(b"still here", addr(&our_rtp)).expect("send");
    let mut buf = [0u8; 64];
    let mut got = None;
    wait_for(
        "the call's socket to receive",
        Duration::from_secs(2),
        || {
            got = our_rtp.recv_from(&mut buf).ok();
            got.is_some()
        },
    );
    assert_eq!(&buf[..got.expect("received").0], b"still here");
}

#[test]
fn a_garbage_datagram_is_counted_and_the_session_goes_on() {
    let workers = MediaWorkers::start(1).expect("workers");
    let Pair {
        mut link,
        our_rtp,
        our_rtcp,
        peer,
        peer_rtcp: _peer_rtcp,
    } = attach(&workers, false);
    peer.send_to(&[0xde, 0xad], addr(&our_rtp)).expect("send");
    peer.send_to(&[0u8; 3000], addr(&our_rtcp)).expect("send");
    for seq in 0..5u16 {
        peer.send_to(&rtp(seq, 7), addr(&our_rtp)).expect("send");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(40));
    link.command(MediaCommand::Stop(Instant::now()))
        .expect("stop");
    let (_, summary) = until_stopped(&mut link);
    assert_eq!(summary.stats.stray_garbage, 2, "{summary:?}");
    assert_eq!(summary.stats.packets_received, 5);
}

/// A sink that counts its frames where the test can see them, notes every 10th, and says how
/// many it took when it is finished.
#[derive(Debug)]
struct CountingSink {
    name: &'static str,
    frames: Arc<AtomicU64>,
    /// Threads other than the test's that ran it.
    off_thread: Arc<AtomicU64>,
    test_thread: std::thread::ThreadId,
}

#[derive(Debug, PartialEq)]
enum Note {
    Every10(&'static str, u64),
    Done(&'static str, u64),
}

impl FrameSink for CountingSink {
    fn frame(&mut self, frame: RecordedFrame) -> Option<SinkNote> {
        assert_eq!(frame.samples.len(), 320, "20 ms of stereo at 8 kHz");
        if std::thread::current().id() != self.test_thread {
            self.off_thread.fetch_add(1, Ordering::Relaxed);
        }
        let n = self.frames.fetch_add(1, Ordering::Relaxed) + 1;
        n.is_multiple_of(10)
            .then(|| Box::new(Note::Every10(self.name, n)) as SinkNote)
    }

    fn finish(self: Box<Self>) -> SinkNote {
        Box::new(Note::Done(self.name, self.frames.load(Ordering::Relaxed)))
    }
}

#[test]
fn a_sink_takes_the_frames_on_the_worker_and_its_notes_reach_the_call_in_order() {
    let workers = MediaWorkers::start(1).expect("workers");
    let Pair {
        mut link,
        our_rtp,
        our_rtcp: _our_rtcp,
        peer,
        peer_rtcp: _peer_rtcp,
    } = attach_routed(&workers, true, FrameRoute::Discard);
    let off_thread = Arc::new(AtomicU64::new(0));
    let sink = |name, frames: &Arc<AtomicU64>| {
        FrameRoute::Sink(Box::new(CountingSink {
            name,
            frames: Arc::clone(frames),
            off_thread: Arc::clone(&off_thread),
            test_thread: std::thread::current().id(),
        }))
    };
    let (first, second) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let talk = |packets: u16, from: u16| {
        for seq in from..from + packets {
            peer.send_to(&rtp(seq, 0x77), addr(&our_rtp)).expect("send");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // The session discards its frames from its first tick (routed at attach: a route sent
    // after it may come a tick late). Then 0.5 s to the first sink, 0.5 s to nobody, 0.5 s
    // to the second, then the session stops.
    link.command(MediaCommand::RouteFrames(sink("first", &first)))
        .expect("route");
    talk(25, 0);
    link.command(MediaCommand::RouteFrames(FrameRoute::Discard))
        .expect("route");
    let first_at_discard = first.load(Ordering::Relaxed);
    talk(25, 25);
    let first_after = first.load(Ordering::Relaxed);
    link.command(MediaCommand::RouteFrames(sink("second", &second)))
        .expect("route");
    talk(25, 50);
    link.command(MediaCommand::Stop(Instant::now()))
        .expect("stop");
    let (events, summary) = until_stopped(&mut link);

    // No frame went to the call; each sink took one frame per 20 ms it was set.
    assert_eq!(frame_count(&events), 0);
    let (a, b) = (
        first.load(Ordering::Relaxed),
        second.load(Ordering::Relaxed),
    );
    assert!((18..=32).contains(&a) && (18..=32).contains(&b), "{a} {b}");
    // Nothing reached the first sink while frames were discarded (at most the one a tick
    // had in hand when the route changed).
    assert!(
        first_after <= first_at_discard + 1 && a == first_after,
        "{first_at_discard} {first_after} {a}"
    );
    assert_eq!(
        off_thread.load(Ordering::Relaxed),
        a + b,
        "the worker's thread ran the sinks"
    );
    assert_eq!(summary.record_frames_dropped, 0);
    // The notes, in order: each sink's every-10th, then its end with its own count; the second
    // sink's end came with the stop, before the summary (until_stopped returned at it).
    let notes: Vec<Note> = events
        .into_iter()
        .filter_map(|e| match e {
            WorkerEvent::Sink(n) => Some(*n.downcast::<Note>().expect("a test note")),
            _ => None,
        })
        .collect();
    let mut want: Vec<Note> = (1..=a / 10)
        .map(|k| Note::Every10("first", k * 10))
        .collect();
    want.push(Note::Done("first", a));
    want.extend((1..=b / 10).map(|k| Note::Every10("second", k * 10)));
    want.push(Note::Done("second", b));
    assert_eq!(notes, want);
}

/// The threads of this process named `media-N` whose policy is `policy`.
fn media_threads_with(policy: sched::Policy) -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").expect("procfs");
    tasks
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|tid| {
            let comm =
                std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
            comm.trim().starts_with("media-") && sched::thread_policy(*tid).ok() == Some(policy)
        })
        .count()
}

#[test]
fn workers_asked_for_real_time_priority_run_under_sched_fifo_or_say_they_do_not() {
    // 37: no other test's workers use it (they run under the fair scheduler).
    let policy = sched::Policy::Fifo(37);
    let workers = MediaWorkers::start_with(WorkerOptions {
        realtime_priority: Some(37),
        ..WorkerOptions::new(2)
    })
    .expect("workers");
    // `start_with` returns once every worker has set (or been refused) its priority.
    let got = workers.stats().realtime_threads;
    assert_eq!(
        media_threads_with(policy),
        got,
        "the workers' count agrees with the kernel's"
    );
    // Root (as in CI) may raise them; anyone else is refused and runs at normal priority.
    // (Asked on a thread of its own, which then ends: the test's thread keeps its policy.)
    let privileged = std::thread::spawn(|| sched::set_current_thread_fifo(1).is_ok())
        .join()
        .expect("the probe ran");
    if privileged {
        assert_eq!(got, 2);
    } else {
        assert_eq!(got, 0);
    }
    drop(workers);
    // Without the option, none is raised.
    let plain = MediaWorkers::start(1).expect("workers");
    assert_eq!(plain.stats().realtime_threads, 0);
}
