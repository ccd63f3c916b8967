//! Media workers (#12, Build point 2): a small fixed set of threads, each owning many calls'
//! RTP/RTCP sockets and their [`MediaSession`]s.
//!
//! Before, every call was a tokio task that read its own two sockets and slept on its own media
//! timer: three wake-ups through the runtime per 20 ms packet pair, one per call. A worker
//! instead runs one loop over all of its sessions:
//!
//! 1. one `epoll_wait` over every socket it owns and its command `eventfd`, with a timeout of
//!    the earliest session deadline rounded up to the next millisecond (the shared tick: every
//!    session whose deadline fell in that millisecond is served by the same wake-up, so the
//!    sessions' 20 ms sends stay spread over the period as their calls started, with no timer
//!    per call);
//! 2. for each readable socket, `recvmmsg` of up to [`BATCH`] datagrams into the session;
//! 3. every session whose deadline has passed gets its `Timeout`;
//! 4. what a session outputs: datagrams go out at once (`sendto` on the call's socket), events
//!    and recorded frames go to the call's actor over its bounded channel.
//!
//! The call's actor keeps its own sockets (the worker reads duplicates of their descriptors,
//! so a failover can take the pair back) and talks to the session through [`MediaLink`]:
//! commands over the worker's bounded queue (and a wake-up of its `eventfd`), events back over
//! a bounded tokio channel per call. Nothing a session says is dropped when the call's actor is
//! slow: what does not fit in the channel waits in the session's outbox, in order; only
//! recorded frames beyond [`MAX_OUTBOX_FRAMES`] waiting are dropped (and counted, and the
//! recording gets silence there, as when its writer lags). A session whose actor is gone (its
//! channel closed) is removed at the next housekeeping pass, so no path leaks a session.
//!
//! The worker reads the monotonic clock itself (this module is `net`, the layer that may).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::rtp::ReceiverStats;
use media::session::{
    Input, MediaEvent, MediaSession, Output, RecordedFrame, SessionStats, Transmit,
};
use media::srtp::SrtpParams;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, setsockopt, sockopt,
};
use tokio::sync::mpsc;

/// Datagrams per `recvmmsg`.
pub const BATCH: usize = 16;
/// The largest datagram read whole (RTP over UDP on a LAN or loopback; longer is truncated and
/// then rejected by the session as garbage).
const MTU: usize = 2048;
/// Commands waiting for one worker, at most (a full queue fails the command, which the caller
/// reports; a worker drains its queue at every wake-up, so it fills only when the worker is
/// stuck).
const COMMAND_QUEUE: usize = 65_536;
/// Events waiting for one call's actor in the channel (default of
/// [`WorkerOptions::event_channel`]).
pub const EVENT_CHANNEL: usize = 256;
/// Recorded frames waiting in a session's outbox beyond the channel (10 s of 20 ms frames):
/// more are dropped and counted (default of [`WorkerOptions::max_outbox_frames`]).
pub const MAX_OUTBOX_FRAMES: usize = 500;

/// How many workers, and how much each call's events may queue.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    /// Worker threads (at least one).
    pub threads: usize,
    /// Capacity of each call's event channel.
    pub event_channel: usize,
    /// Recorded frames a session keeps waiting beyond its channel before it drops them.
    pub max_outbox_frames: usize,
    /// Run each worker under `SCHED_FIFO` at this priority (1–99), so that the process's other
    /// threads on its core cannot make its packets late (`None`: the fair scheduler). Refused
    /// without the privilege: a warning, and the worker runs at normal priority
    /// ([`MediaWorkerStats::realtime_threads`] says how many got it).
    pub realtime_priority: Option<u8>,
}

impl WorkerOptions {
    /// `threads` workers with the default queues.
    pub fn new(threads: usize) -> WorkerOptions {
        WorkerOptions {
            threads,
            event_channel: EVENT_CHANNEL,
            max_outbox_frames: MAX_OUTBOX_FRAMES,
            realtime_priority: None,
        }
    }
}
/// Recorded frames handed over in one event (fewer when another event must go out first, or
/// the session stops).
pub const FRAMES_PER_EVENT: usize = 5;
/// The longest a worker with sessions sleeps: the period at which it reads its sockets.
pub const TICK: Duration = Duration::from_millis(1);
/// How often the worker looks for sessions whose actor is gone.
const HOUSEKEEPING: Duration = Duration::from_millis(200);
/// The epoll token of the command `eventfd`.
const WAKE_TOKEN: u64 = u64::MAX;

/// What the call's actor hears from its session.
#[derive(Debug)]
pub enum WorkerEvent {
    /// What the session said ([`Output::Event`]). Boxed: a quality report is large, and the
    /// channel's slots are as large as this enum's largest variant (its first block of 32 is
    /// allocated per call).
    Media(Box<MediaEvent>),
    /// Recorded frames ([`Output::Record`]), oldest first: up to [`FRAMES_PER_EVENT`] at a
    /// time, so that a recording call wakes every 100 ms rather than every 20.
    Records(Vec<RecordedFrame>),
    /// What the session's [`FrameSink`] said, in order with the rest; its last note
    /// ([`FrameSink::finish`]) comes when it was replaced or its session stopped, before
    /// [`WorkerEvent::Stopped`].
    Sink(SinkNote),
    /// The session stopped ([`MediaCommand::Stop`]): its last figures. Nothing follows.
    Stopped(Box<MediaSummary>),
}

/// Where a session's recorded frames go when the worker hands them on itself, on its own
/// thread, instead of sending them to the call ([`WorkerEvent::Records`]): a recording's
/// writer, so that a recording call's task never wakes for its audio.
///
/// Its methods run on the worker's thread between packets: they must not block.
pub trait FrameSink: Send + std::fmt::Debug {
    /// One recorded frame ([`Output::Record`]); a note for the call, if any.
    fn frame(&mut self, frame: RecordedFrame) -> Option<SinkNote>;
    /// The sink is done: replaced ([`MediaCommand::RouteFrames`]) or its session stopped. Its last
    /// note for the call. A sink dropped without it (the call went away) is simply dropped.
    fn finish(self: Box<Self>) -> SinkNote;
}

/// A note from a [`FrameSink`] to its call: opaque to the worker, which only carries it.
pub type SinkNote = Box<dyn std::any::Any + Send>;

/// Where a session's recorded frames go ([`MediaCommand::RouteFrames`]).
#[derive(Debug, Default)]
pub enum FrameRoute {
    /// To the call, as [`WorkerEvent::Records`] (the default).
    #[default]
    Call,
    /// To this sink, on the worker's thread.
    Sink(Box<dyn FrameSink>),
    /// Nowhere: nobody wants them now.
    Discard,
}

/// A session's figures when it stopped: what the call's final event reports.
#[derive(Debug, Clone)]
pub struct MediaSummary {
    /// The session's counters.
    pub stats: SessionStats,
    /// RFC 3550 packets expected from the peer.
    pub expected_in: u64,
    /// RFC 3550 cumulative packets lost.
    pub lost_in: i64,
    /// Whether packets were SRTP.
    pub srtp: bool,
    /// Recorded frames dropped because the call's actor was too far behind.
    pub record_frames_dropped: u64,
}

impl MediaSummary {
    /// The figures of a session at hand.
    pub fn of(session: &MediaSession) -> MediaSummary {
        let rx: &ReceiverStats = session.receiver_stats();
        MediaSummary {
            stats: session.stats(),
            expected_in: rx.expected(),
            lost_in: rx.cumulative_lost(),
            srtp: session.is_srtp(),
            record_frames_dropped: 0,
        }
    }
}

/// What the call's actor asks of its session.
#[derive(Debug)]
pub enum MediaCommand {
    /// Play, stop the prompt, send DTMF (an [`Input`] other than `Receive`/`Timeout`/`Stop`).
    Input(Input),
    /// [`MediaSession::set_remote`].
    SetRemote(Option<SocketAddr>, Option<SocketAddr>),
    /// [`MediaSession::set_srtp`].
    SetSrtp(Option<SrtpParams>),
    /// [`MediaSession::set_direction`].
    SetDirection {
        /// Whether we send.
        send: bool,
        /// Whether the peer is expected to.
        expect_inbound: bool,
        /// Now.
        now: Instant,
    },
    /// [`MediaSession::rearm_rtp_timeout`].
    RearmRtpTimeout(Instant),
    /// Where recorded frames go from now on. A sink this replaces is finished
    /// ([`FrameSink::finish`]).
    RouteFrames(FrameRoute),
    /// Stop the session ([`Input::Stop`]): its RTCP BYE and call quality report go out, then
    /// [`WorkerEvent::Stopped`], and the worker forgets it.
    Stop(Instant),
}

enum Command {
    Attach(Box<Attach>),
    Session(u64, MediaCommand),
    /// Forget a session at once (no BYE, no report): a failover, a call gone.
    Remove(u64),
}

struct Attach {
    id: u64,
    session: MediaSession,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    rtcp_mux: bool,
    route: FrameRoute,
    events: mpsc::Sender<WorkerEvent>,
}

/// Counters of all workers, for `/metrics` and the benchmark.
#[derive(Debug)]
pub struct WorkerCounters {
    /// Sessions attached now.
    pub sessions: AtomicUsize,
    /// Datagrams received.
    pub received: AtomicU64,
    /// Datagrams sent.
    pub sent: AtomicU64,
    /// Datagrams not sent (the socket's buffer was full, or the send failed).
    pub send_failed: AtomicU64,
    /// Session deadlines served, and how late in total (µs) and at most.
    pub ticks: AtomicU64,
    /// Sum of the lateness of the served deadlines, µs.
    pub late_us_sum: AtomicU64,
    /// The largest lateness of a served deadline, µs.
    pub late_us_max: AtomicU64,
    /// Recorded frames dropped because a call's actor was far behind.
    pub record_frames_dropped: AtomicU64,
    /// Commands refused because a worker's queue was full.
    pub commands_refused: AtomicU64,
    /// Workers running under `SCHED_FIFO` ([`WorkerOptions::realtime_priority`]).
    pub realtime_threads: AtomicUsize,
    /// The served deadlines by lateness ([`LatenessHistogram`]'s buckets).
    pub late_buckets: [AtomicU64; LATE_BUCKETS],
}

impl Default for WorkerCounters {
    fn default() -> WorkerCounters {
        WorkerCounters {
            sessions: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            send_failed: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            late_us_sum: AtomicU64::new(0),
            late_us_max: AtomicU64::new(0),
            record_frames_dropped: AtomicU64::new(0),
            commands_refused: AtomicU64::new(0),
            realtime_threads: AtomicUsize::new(0),
            late_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Buckets of [`WorkerCounters::late_buckets`]: 100 of 100 µs (up to 10 ms), then one per
/// doubling from 10 ms (10–20 ms, 20–40 ms ... 10.24–20.48 s), then everything later.
pub const LATE_BUCKETS: usize = 100 + 11 + 1;

/// The bucket of a lateness in µs.
fn late_bucket(us: u64) -> usize {
    if us < 10_000 {
        (us / 100) as usize
    } else {
        let doublings = (us / 10_000).ilog2() as usize;
        (100 + doublings).min(LATE_BUCKETS - 1)
    }
}

/// The upper bound (µs) of a bucket (`u64::MAX` for the last).
fn late_bucket_end(i: usize) -> u64 {
    if i < 100 {
        (i as u64 + 1) * 100
    } else if i < LATE_BUCKETS - 1 {
        10_000u64 << (i - 100 + 1)
    } else {
        u64::MAX
    }
}

/// How late the workers served their sessions' deadlines (each one is a packet's send slot, an
/// RTCP report, a playout tick): lateness is taken when the session's outputs have been sent,
/// against the instant it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatenessHistogram {
    /// Counts per bucket (see [`LATE_BUCKETS`]).
    pub buckets: [u64; LATE_BUCKETS],
}

impl LatenessHistogram {
    /// Deadlines counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The counts since `earlier` (a snapshot of the same workers).
    pub fn since(&self, earlier: &LatenessHistogram) -> LatenessHistogram {
        let mut buckets = self.buckets;
        for (b, e) in buckets.iter_mut().zip(earlier.buckets.iter()) {
            *b = b.saturating_sub(*e);
        }
        LatenessHistogram { buckets }
    }

    /// The lateness (µs) that a fraction `q` (0–1) of deadlines were served within: the upper
    /// bound of the bucket it falls in (100 µs resolution below 10 ms, a doubling above);
    /// `None` when nothing was counted, `u64::MAX` past the last bound.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(late_bucket_end(i));
            }
        }
        Some(u64::MAX)
    }
}

/// A snapshot of [`WorkerCounters`] and the number of workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaWorkerStats {
    /// Worker threads.
    pub workers: usize,
    /// Sessions attached now.
    pub sessions: usize,
    /// Datagrams received.
    pub received: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams not sent.
    pub send_failed: u64,
    /// Session deadlines served.
    pub ticks: u64,
    /// Their total lateness, µs.
    pub late_us_sum: u64,
    /// The largest lateness, µs.
    pub late_us_max: u64,
    /// Recorded frames dropped because a call was far behind.
    pub record_frames_dropped: u64,
    /// Commands refused by a full worker queue.
    pub commands_refused: u64,
    /// Workers running under `SCHED_FIFO` (real-time priority).
    pub realtime_threads: usize,
}

/// The worker threads. Dropping the last handle stops them once their sessions are gone.
#[derive(Debug)]
pub struct MediaWorkers {
    workers: Vec<Arc<WorkerHandle>>,
    next: AtomicUsize,
    ids: AtomicU64,
    counters: Arc<WorkerCounters>,
    event_channel: usize,
}

/// The senders' side of one worker. The worker thread holds only its [`WorkerState`], so it
/// sees its queue disconnect (and ends) once the engine and every call have let go.
#[derive(Debug)]
struct WorkerHandle {
    commands: SyncSender<Command>,
    state: Arc<WorkerState>,
    counters: Arc<WorkerCounters>,
}

#[derive(Debug)]
struct WorkerState {
    wake: EventFd,
    /// Sessions attached to this worker (to pick the least loaded).
    load: AtomicUsize,
}

impl WorkerHandle {
    fn send(&self, command: Command) -> Result<(), &'static str> {
        match self.commands.try_send(command) {
            Ok(()) => {
                // A failed wake-up only delays the command to the next tick or housekeeping.
                let _ = self.state.wake.write(1);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.counters
                    .commands_refused
                    .fetch_add(1, Ordering::Relaxed);
                Err("media worker queue full")
            }
            Err(TrySendError::Disconnected(_)) => Err("media worker stopped"),
        }
    }
}

impl MediaWorkers {
    /// Starts `n` worker threads (at least one) with the default queues.
    pub fn start(n: usize) -> io::Result<MediaWorkers> {
        MediaWorkers::start_with(WorkerOptions::new(n))
    }

    /// Starts the workers `options` asks for.
    pub fn start_with(options: WorkerOptions) -> io::Result<MediaWorkers> {
        let counters = Arc::new(WorkerCounters::default());
        let mut workers = Vec::new();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        for i in 0..options.threads.max(1) {
            let started = started_tx.clone();
            let (tx, rx) = sync_channel(COMMAND_QUEUE);
            let wake = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
            let control = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
            control.add(&wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TOKEN))?;
            let state = Arc::new(WorkerState {
                wake,
                load: AtomicUsize::new(0),
            });
            let handle = Arc::new(WorkerHandle {
                commands: tx,
                state: Arc::clone(&state),
                counters: Arc::clone(&counters),
            });
            let worker_counters = Arc::clone(&counters);
            // Built on its thread: the batch headers hold raw pointers (not `Send`).
            std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || {
                    if let Some(priority) = options.realtime_priority {
                        match sched::set_current_thread_fifo(priority) {
                            Ok(()) => {
                                worker_counters
                                    .realtime_threads
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => tracing::warn!(
                                error = %e,
                                priority,
                                "media worker: no real-time priority (needs CAP_SYS_NICE); \
                                 running under the fair scheduler"
                            ),
                        }
                    }
                    // Started: the counters say which workers got their priority.
                    let _ = started.send(());
                    Worker::new(
                        epoll,
                        control,
                        rx,
                        state,
                        worker_counters,
                        options.max_outbox_frames,
                    )
                    .run()
                })?;
            workers.push(handle);
        }
        drop(started_tx);
        // Each worker says it started (with its priority set or refused) before it runs; one
        // that died first disconnects.
        for _ in 0..workers.len() {
            let _ = started_rx.recv();
        }
        Ok(MediaWorkers {
            workers,
            next: AtomicUsize::new(0),
            ids: AtomicU64::new(1),
            counters,
            event_channel: options.event_channel.max(1),
        })
    }

    /// How many worker threads run.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are none (never: [`MediaWorkers::start`] starts at least one).
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The counters of all workers.
    pub fn counters(&self) -> &WorkerCounters {
        &self.counters
    }

    /// The served deadlines by lateness so far.
    pub fn lateness(&self) -> LatenessHistogram {
        let mut buckets = [0u64; LATE_BUCKETS];
        for (b, a) in buckets.iter_mut().zip(self.counters.late_buckets.iter()) {
            *b = a.load(Ordering::Relaxed);
        }
        LatenessHistogram { buckets }
    }

    /// A snapshot of the counters, for `/metrics`.
    pub fn stats(&self) -> MediaWorkerStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MediaWorkerStats {
            workers: self.workers.len(),
            sessions: c.sessions.load(Ordering::Relaxed),
            received: get(&c.received),
            sent: get(&c.sent),
            send_failed: get(&c.send_failed),
            ticks: get(&c.ticks),
            late_us_sum: get(&c.late_us_sum),
            late_us_max: get(&c.late_us_max),
            record_frames_dropped: get(&c.record_frames_dropped),
            commands_refused: get(&c.commands_refused),
            realtime_threads: c.realtime_threads.load(Ordering::Relaxed),
        }
    }

    /// Hands `session` to the least loaded worker, with duplicates of the call's sockets
    /// (`rtcp` is still read when `rtcp_mux`: a peer may send RTCP there anyway). Its
    /// recorded frames go to `route` from its first tick, until a
    /// [`MediaCommand::RouteFrames`] changes it.
    pub fn attach(
        &self,
        session: MediaSession,
        rtp: &impl AsFd,
        rtcp: &impl AsFd,
        rtcp_mux: bool,
        route: FrameRoute,
    ) -> io::Result<MediaLink> {
        let dup = |fd: &dyn AsFd| -> io::Result<UdpSocket> {
            let socket = UdpSocket::from(fd.as_fd().try_clone_to_owned()?);
            socket.set_nonblocking(true)?;
            Ok(socket)
        };
        let rtp = dup(rtp)?;
        let rtcp = dup(rtcp)?;
        // Round robin among the least loaded.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let worker = (0..self.workers.len())
            .map(|k| &self.workers[(start + k) % self.workers.len()])
            .min_by_key(|w| w.state.load.load(Ordering::Relaxed))
            .expect("at least one worker");
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.event_channel);
        worker
            .send(Command::Attach(Box::new(Attach {
                id,
                session,
                rtp,
                rtcp,
                rtcp_mux,
                route,
                events: tx,
            })))
            .map_err(io::Error::other)?;
        Ok(MediaLink {
            id,
            worker: Arc::clone(worker),
            events: rx,
            stopping: false,
        })
    }
}

impl Drop for MediaWorkers {
    fn drop(&mut self) {
        // The threads end when their command queue disconnects: the links hold the other
        // senders, so a worker runs until its last call is gone.
        for w in &self.workers {
            let _ = w.state.wake.write(1);
        }
    }
}

/// A call's handle on its session in a worker. Dropping it removes the session.
#[derive(Debug)]
pub struct MediaLink {
    id: u64,
    worker: Arc<WorkerHandle>,
    /// What the session says, in order.
    pub events: mpsc::Receiver<WorkerEvent>,
    stopping: bool,
}

impl MediaLink {
    /// Sends a command; an error says why it could not be queued.
    pub fn command(&mut self, command: MediaCommand) -> Result<(), &'static str> {
        if matches!(command, MediaCommand::Stop(_)) {
            self.stopping = true;
        }
        self.worker.send(Command::Session(self.id, command))
    }
}

impl Drop for MediaLink {
    fn drop(&mut self) {
        // Best effort: should the queue be full, the worker still finds the channel closed.
        let _ = self.worker.send(Command::Remove(self.id));
    }
}

/// One session in a worker.
struct Slot {
    id: u64,
    session: MediaSession,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    rtcp_mux: bool,
    events: mpsc::Sender<WorkerEvent>,
    /// What did not fit in the channel yet, in order.
    outbox: VecDeque<WorkerEvent>,
    /// Recorded frames in the outbox.
    outbox_frames: usize,
    /// Recorded frames not yet put in the outbox (a batch being filled).
    frames: Vec<RecordedFrame>,
    record_frames_dropped: u64,
    /// Where recorded frames go.
    route: FrameRoute,
    /// The deadline the session asked for (the heap may hold older ones: they are skipped).
    deadline: Option<Instant>,
    /// The latest time given to the session: a datagram's arrival is never put before it.
    last_input: Instant,
    /// Stopped: the sockets are out of the epoll set, the outbox drains, then the slot goes.
    stopped: bool,
}

struct Worker {
    /// The sockets of every session (polled without waiting, once per tick).
    epoll: Epoll,
    /// The command `eventfd` alone: what the worker sleeps on between ticks.
    control: Epoll,
    /// An instant and the wall clock (Unix ns) read together at the tick's start.
    anchor: (Instant, u128),
    commands: Receiver<Command>,
    state: Arc<WorkerState>,
    counters: Arc<WorkerCounters>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    /// Session deadlines: (when, slot, id). Entries whose slot moved on are skipped.
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Slots with something in their outbox.
    backlog: Vec<usize>,
    bufs: Vec<[u8; MTU]>,
    headers: MultiHeaders<SockaddrStorage>,
    /// Per datagram of the last batch: its length, source and kernel arrival stamp.
    received: Vec<(usize, Option<SocketAddr>, Option<u128>)>,
    max_outbox_frames: usize,
}

impl Worker {
    fn new(
        epoll: Epoll,
        control: Epoll,
        commands: Receiver<Command>,
        state: Arc<WorkerState>,
        counters: Arc<WorkerCounters>,
        max_outbox_frames: usize,
    ) -> Worker {
        Worker {
            epoll,
            control,
            anchor: (Instant::now(), unix_ns()),
            commands,
            state,
            counters,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            deadlines: BinaryHeap::new(),
            backlog: Vec::new(),
            bufs: vec![[0u8; MTU]; BATCH],
            headers: MultiHeaders::preallocate(
                BATCH,
                Some(nix::cmsg_space!(nix::sys::time::TimeSpec)),
            ),
            received: Vec::with_capacity(BATCH),
            max_outbox_frames,
        }
    }

    /// The worker's loop, one tick at a time: take the commands, read every socket that has
    /// something (each datagram stamped with the kernel's arrival time), serve the due
    /// deadlines, hand the events over, and sleep until the next tick. Readiness does not wake
    /// the worker (only its commands do): a datagram waits in its socket for the next tick, at
    /// most [`TICK`] away while the worker has sessions, and is stamped with when it came.
    fn run(mut self) {
        let mut ready = vec![EpollEvent::empty(); 1024];
        let mut control = [EpollEvent::empty(); 1];
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        loop {
            if !self.drain_commands() {
                // Every sender is gone (the engine and all of its calls): nothing can come.
                return;
            }
            self.poll_sockets(&mut ready);
            let now = Instant::now();
            self.fire_due(now);
            self.flush_backlog();
            if now >= next_housekeeping {
                self.housekeeping();
                next_housekeeping = now + HOUSEKEEPING;
            }
            let mut wake_at = self
                .next_deadline()
                .map_or(next_housekeeping, |d| d.min(next_housekeeping));
            if !self.by_id.is_empty() {
                wake_at = wake_at.min(now + TICK);
            }
            // Rounded up to the millisecond: never early (which would spin), at most 1 ms late.
            let wait = wake_at.saturating_duration_since(Instant::now());
            let ms = wait.as_micros().div_ceil(1000).min(1000) as u16;
            match self.control.wait(&mut control, ms) {
                Ok(n) if n > 0 => {
                    let _ = self.state.wake.read();
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!(error = %e, "media worker: epoll_wait failed");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Reads every socket that has something queued.
    fn poll_sockets(&mut self, ready: &mut [EpollEvent]) {
        if self.by_id.is_empty() {
            return;
        }
        // Kernel arrival stamps are wall-clock times: this pair converts them to instants.
        self.anchor = (Instant::now(), unix_ns());
        // A bounded number of rounds: level-triggered, a socket that still has datagrams after
        // its batches is reported again, but a flood must not hold the tick forever.
        for _ in 0..4 {
            let n = match self.epoll.wait(ready, 0u16) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "media worker: epoll_wait failed");
                    return;
                }
            };
            for event in ready.iter().take(n) {
                let token = event.data();
                self.receive((token >> 1) as usize, token & 1 == 1);
            }
            if n < ready.len() {
                return;
            }
        }
    }

    /// The instant a datagram stamped `stamp_ns` (Unix ns, the kernel's receive time) arrived;
    /// the tick's instant when it carries no stamp or a stamp after the tick began.
    fn arrival(&self, stamp_ns: Option<u128>) -> Instant {
        let (at, at_ns) = self.anchor;
        match stamp_ns {
            Some(ns) if ns <= at_ns => {
                let ago = u64::try_from(at_ns - ns).unwrap_or(u64::MAX);
                at.checked_sub(Duration::from_nanos(ago)).unwrap_or(at)
            }
            _ => at,
        }
    }

    /// Applies every queued command; false once no sender is left.
    fn drain_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Attach(a)) => self.attach(*a),
                Ok(Command::Session(id, c)) => self.command(id, c),
                Ok(Command::Remove(id)) => {
                    if let Some(&slot) = self.by_id.get(&id) {
                        self.remove(slot);
                    }
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn attach(&mut self, a: Attach) {
        // Kernel receive stamps: a datagram read at the next tick still says when it came.
        // Without them (never on Linux) the tick's time stands in, at most one tick late.
        for s in [&a.rtp, &a.rtcp] {
            if let Err(e) = setsockopt(s, sockopt::ReceiveTimestampns, &true) {
                tracing::debug!(error = %e, "media worker: no SO_TIMESTAMPNS");
            }
        }
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let token = (index as u64) << 1;
        if let Err(e) = self
            .epoll
            .add(&a.rtp, EpollEvent::new(EpollFlags::EPOLLIN, token))
            .and_then(|()| {
                self.epoll
                    .add(&a.rtcp, EpollEvent::new(EpollFlags::EPOLLIN, token | 1))
            })
        {
            tracing::error!(error = %e, "media worker: cannot watch the call's sockets");
            let _ = self.epoll.delete(&a.rtp);
            self.free.push(index);
            // The call hears it: its session stops at once with what it has.
            if let FrameRoute::Sink(sink) = a.route {
                let _ = a.events.try_send(WorkerEvent::Sink(sink.finish()));
            }
            let _ = a
                .events
                .try_send(WorkerEvent::Stopped(Box::new(MediaSummary::of(&a.session))));
            return;
        }
        self.by_id.insert(a.id, index);
        self.slots[index] = Some(Slot {
            id: a.id,
            session: a.session,
            rtp: a.rtp,
            rtcp: a.rtcp,
            rtcp_mux: a.rtcp_mux,
            events: a.events,
            outbox: VecDeque::new(),
            outbox_frames: 0,
            frames: Vec::new(),
            record_frames_dropped: 0,
            route: a.route,
            deadline: None,
            last_input: Instant::now(),
            stopped: false,
        });
        self.state.load.fetch_add(1, Ordering::Relaxed);
        self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        self.drain_outputs(index);
    }

    fn command(&mut self, id: u64, command: MediaCommand) {
        let Some(&index) = self.by_id.get(&id) else {
            return;
        };
        let Some(slot) = self.slots[index].as_mut() else {
            return;
        };
        if slot.stopped {
            return;
        }
        let session = &mut slot.session;
        match command {
            MediaCommand::Input(input) => {
                if let Err(e) = session.handle_input(input) {
                    tracing::debug!(error = %e, "media command");
                }
            }
            MediaCommand::SetRemote(rtp, rtcp) => session.set_remote(rtp, rtcp),
            MediaCommand::SetSrtp(params) => session.set_srtp(params),
            MediaCommand::SetDirection {
                send,
                expect_inbound,
                now,
            } => session.set_direction(send, expect_inbound, now),
            MediaCommand::RearmRtpTimeout(now) => session.rearm_rtp_timeout(now),
            MediaCommand::RouteFrames(route) => {
                // Frames batched for the call go first.
                batch_frames(slot);
                if let FrameRoute::Sink(old) = std::mem::replace(&mut slot.route, route) {
                    slot.outbox.push_back(WorkerEvent::Sink(old.finish()));
                }
                self.deliver(index);
            }
            MediaCommand::Stop(now) => {
                let _ = session.handle_input(Input::Stop { now });
                self.drain_outputs(index);
                self.stop(index);
                return;
            }
        }
        self.drain_outputs(index);
    }

    /// The session stopped: no more reading, its summary after what it said, then it goes.
    fn stop(&mut self, index: usize) {
        let Some(slot) = self.slots[index].as_mut() else {
            return;
        };
        slot.stopped = true;
        let _ = self.epoll.delete(&slot.rtp);
        let _ = self.epoll.delete(&slot.rtcp);
        batch_frames(slot);
        if let FrameRoute::Sink(sink) = std::mem::take(&mut slot.route) {
            slot.outbox.push_back(WorkerEvent::Sink(sink.finish()));
        }
        let mut summary = MediaSummary::of(&slot.session);
        summary.record_frames_dropped = slot.record_frames_dropped;
        slot.outbox
            .push_back(WorkerEvent::Stopped(Box::new(summary)));
        self.deliver(index);
    }

    fn remove(&mut self, index: usize) {
        let Some(slot) = self.slots[index].take() else {
            return;
        };
        if !slot.stopped {
            let _ = self.epoll.delete(&slot.rtp);
            let _ = self.epoll.delete(&slot.rtcp);
        }
        self.by_id.remove(&slot.id);
        self.free.push(index);
        self.state.load.fetch_sub(1, Ordering::Relaxed);
        self.counters.sessions.fetch_sub(1, Ordering::Relaxed);
        // The duplicated descriptors close here; the call's own stay open.
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, index, id))) = self.deadlines.peek().copied() {
            match self.slots.get(index).and_then(Option::as_ref) {
                Some(s) if s.id == id && s.deadline == Some(at) && !s.stopped => return Some(at),
                _ => {
                    self.deadlines.pop();
                }
            }
        }
        None
    }

    /// Serves every session whose deadline has passed.
    fn fire_due(&mut self, now: Instant) {
        while let Some(at) = self.next_deadline() {
            if at > now {
                return;
            }
            let Some(Reverse((at, index, _))) = self.deadlines.pop() else {
                return;
            };
            if let Some(slot) = self.slots[index].as_mut() {
                slot.deadline = None;
                slot.last_input = slot.last_input.max(now);
                let _ = slot.session.handle_input(Input::Timeout(slot.last_input));
            }
            self.drain_outputs(index);
            // Taken after the sends: the deadlines served before this one in the same wake-up
            // delay it, and that is lateness too.
            let late = Instant::now().saturating_duration_since(at).as_micros() as u64;
            self.counters.ticks.fetch_add(1, Ordering::Relaxed);
            self.counters.late_us_sum.fetch_add(late, Ordering::Relaxed);
            self.counters.late_us_max.fetch_max(late, Ordering::Relaxed);
            self.counters.late_buckets[late_bucket(late)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads what one socket has queued into its session.
    fn receive(&mut self, index: usize, rtcp: bool) {
        let Some(slot) = self.slots.get(index).and_then(Option::as_ref) else {
            return;
        };
        if slot.stopped {
            return;
        }
        let fd = if rtcp {
            slot.rtcp.as_raw_fd()
        } else {
            slot.rtp.as_raw_fd()
        };
        // At most 4 batches per readiness, so that one flooded socket cannot starve the others
        // (level-triggered: what is left is reported again at once).
        for _ in 0..4 {
            self.received.clear();
            {
                let mut bufs = self.bufs.iter_mut();
                let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
                    [IoSliceMut::new(
                        bufs.next().expect("one buffer per slot").as_mut_slice(),
                    )]
                });
                match recvmmsg(
                    fd,
                    &mut self.headers,
                    iovs.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) {
                    Ok(results) => {
                        for msg in results {
                            let source = msg.address.as_ref().and_then(socket_addr);
                            let stamp = msg.cmsgs().ok().and_then(|mut c| {
                                c.find_map(|m| match m {
                                    ControlMessageOwned::ScmTimestampns(ts) => {
                                        let ns = i128::from(ts.tv_sec()) * 1_000_000_000
                                            + i128::from(ts.tv_nsec());
                                        u128::try_from(ns).ok()
                                    }
                                    _ => None,
                                })
                            });
                            self.received.push((msg.bytes.min(MTU), source, stamp));
                        }
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(e) => tracing::debug!(error = %e, "media worker: recvmmsg"),
                }
            }
            let got = self.received.len();
            if got == 0 {
                break;
            }
            self.counters
                .received
                .fetch_add(got as u64, Ordering::Relaxed);
            let arrivals: [Instant; BATCH] = std::array::from_fn(|k| {
                self.received
                    .get(k)
                    .map_or(self.anchor.0, |r| self.arrival(r.2))
            });
            if let Some(slot) = self.slots[index].as_mut() {
                for (k, &(len, source, _)) in self.received.iter().enumerate() {
                    let Some(source) = source else { continue };
                    let bytes = Bytes::copy_from_slice(&self.bufs[k][..len]);
                    let now = arrivals[k].max(slot.last_input);
                    slot.last_input = now;
                    if let Err(e) = slot
                        .session
                        .handle_input(Input::Receive { now, source, bytes })
                    {
                        tracing::debug!(error = %e, "media input");
                    }
                }
            }
            self.drain_outputs(index);
            if got < BATCH {
                break;
            }
        }
    }

    /// Sends what the session wants sent, queues its events, and notes its next deadline.
    fn drain_outputs(&mut self, index: usize) {
        let Some(slot) = self.slots[index].as_mut() else {
            return;
        };
        let mut queued = false;
        loop {
            match slot.session.poll_output() {
                Some(Output::Transmit(t)) => send(slot, &t, &self.counters),
                Some(Output::Event(e)) => {
                    // The frames before it go first: the call sees everything in order.
                    batch_frames(slot);
                    slot.outbox.push_back(WorkerEvent::Media(Box::new(e)));
                    queued = true;
                }
                Some(Output::Record(frame)) => match &mut slot.route {
                    FrameRoute::Sink(sink) => {
                        if let Some(note) = sink.frame(frame) {
                            slot.outbox.push_back(WorkerEvent::Sink(note));
                            queued = true;
                        }
                    }
                    FrameRoute::Discard => {}
                    FrameRoute::Call => {
                        if slot.outbox_frames + slot.frames.len() >= self.max_outbox_frames {
                            slot.record_frames_dropped += 1;
                            self.counters
                                .record_frames_dropped
                                .fetch_add(1, Ordering::Relaxed);
                        } else {
                            slot.frames.push(frame);
                            if slot.frames.len() >= FRAMES_PER_EVENT {
                                batch_frames(slot);
                                queued = true;
                            }
                        }
                    }
                },
                Some(Output::Timeout(at)) => {
                    if slot.deadline != Some(at) && !slot.stopped {
                        slot.deadline = Some(at);
                        self.deadlines.push(Reverse((at, index, slot.id)));
                    }
                    break;
                }
                None => {
                    slot.deadline = None;
                    break;
                }
            }
        }
        if queued {
            self.deliver(index);
        }
    }

    /// Moves a session's outbox into its channel as far as it fits; a stopped session whose
    /// outbox is empty (or whose actor is gone) is removed.
    fn deliver(&mut self, index: usize) {
        let Some(slot) = self.slots[index].as_mut() else {
            return;
        };
        let mut gone = false;
        while let Some(event) = slot.outbox.pop_front() {
            let frames = match &event {
                WorkerEvent::Records(f) => f.len(),
                _ => 0,
            };
            match slot.events.try_send(event) {
                Ok(()) => slot.outbox_frames -= frames,
                Err(mpsc::error::TrySendError::Full(event)) => {
                    slot.outbox.push_front(event);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    gone = true;
                    break;
                }
            }
        }
        if gone || (slot.stopped && slot.outbox.is_empty()) {
            self.remove(index);
        } else if !slot.outbox.is_empty() && !self.backlog.contains(&index) {
            self.backlog.push(index);
        }
    }

    fn flush_backlog(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        for index in std::mem::take(&mut self.backlog) {
            self.deliver(index);
        }
    }

    /// Removes the sessions whose actor is gone without a word (a panic, an abort).
    fn housekeeping(&mut self) {
        let gone: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|s| s.events.is_closed()).map(|_| i))
            .collect();
        for index in gone {
            self.remove(index);
        }
    }
}

/// Moves the batch being filled into the outbox.
fn batch_frames(slot: &mut Slot) {
    if slot.frames.is_empty() {
        return;
    }
    let frames = std::mem::replace(&mut slot.frames, Vec::with_capacity(FRAMES_PER_EVENT));
    slot.outbox_frames += frames.len();
    slot.outbox.push_back(WorkerEvent::Records(frames));
}

fn send(slot: &Slot, t: &Transmit, counters: &WorkerCounters) {
    let socket = if t.rtcp && !slot.rtcp_mux {
        &slot.rtcp
    } else {
        &slot.rtp
    };
    match socket.send_to(&t.bytes, t.destination) {
        Ok(_) => {
            counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            counters.send_failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "RTP send");
        }
    }
}

/// The wall clock in ns since the Unix epoch (0 before it).
fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod lateness_tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        assert_eq!(late_bucket(0), 0);
        assert_eq!(late_bucket(99), 0);
        assert_eq!(late_bucket(100), 1);
        assert_eq!(late_bucket(9_999), 99);
        assert_eq!(late_bucket(10_000), 100);
        assert_eq!(late_bucket(19_999), 100);
        assert_eq!(late_bucket(20_000), 101);
        assert_eq!(late_bucket(u64::MAX), LATE_BUCKETS - 1);
        for i in 0..LATE_BUCKETS - 1 {
            // Every bucket's end is the start of the next.
            assert_eq!(late_bucket(late_bucket_end(i)), i + 1, "bucket {i}");
        }
        let mut h = LatenessHistogram {
            buckets: [0; LATE_BUCKETS],
        };
        assert_eq!(h.quantile_us(0.99), None);
        // 990 deadlines within 100 µs, 9 at 1.2 ms, 1 at 30 ms.
        h.buckets[0] = 990;
        h.buckets[late_bucket(1_200)] = 9;
        h.buckets[late_bucket(30_000)] = 1;
        assert_eq!(h.quantile_us(0.99), Some(100));
        assert_eq!(h.quantile_us(0.995), Some(1_300));
        assert_eq!(h.quantile_us(1.0), Some(40_000));
        let earlier = LatenessHistogram {
            buckets: {
                let mut b = [0; LATE_BUCKETS];
                b[0] = 990;
                b
            },
        };
        assert_eq!(h.since(&earlier).quantile_us(0.5), Some(1_300));
    }
}
