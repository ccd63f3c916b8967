//! Recordings written off the async runtime: a small fixed pool of writer threads, each fed by
//! a bounded queue.
//!
//! A call never touches the disk. It opens a [`Recording`] with [`Recorder::open`] (no I/O: the
//! file is created by a writer thread), hands it one frame per ptime with
//! [`Recording::write`] (a non-blocking `try_send`), and ends it with [`Recording::close`], whose
//! [`Closing`] future resolves once the writer thread has made the final flush, the rename and the
//! whole-file SHA-256. The writer thread does everything [`RecordingWriter`] does (the WAV
//! writes, the flush every second of audio, the final hash), so a slow or stalled disk stalls a
//! writer thread, never the thread that paces RTP. A writer thread makes its recordings' flushes
//! durable with one `syncfs` a second per filesystem ([`RecordingWriter::defer_sync`]), not one
//! `fdatasync` a second per recording, and lets jobs gather for 20 ms when its queue runs empty
//! rather than being woken for each.
//!
//! **When a queue is full** the frame is dropped, not waited for: memory stays bounded (at most
//! [`RecorderConfig::queue`] frames per thread) and RTP pacing never waits for the disk. A drop
//! is never silent: it is counted per recording (reported by [`RecordingNote::Lagging`] and in
//! [`RecordingLoss`] at the close) and in [`RecorderStats::frames_dropped`] (`/metrics`). The
//! audio dropped is written as silence before the next frame that gets through (or at the
//! close), so the recording keeps the call's timeline: its length is the time it covered, and
//! what was heard after a gap is where it belongs.
//!
//! **Lag** is how much audio a recording has queued that its writer has not handled yet. When it
//! reaches [`RecorderConfig::lag_threshold`], or a frame is dropped, [`Recording::write`] returns
//! [`RecordingNote::Lagging`] once for that episode; when what was queued before a write (the
//! write's own audio aside: the writer cannot have handled it yet) is back under a quarter of the
//! threshold with nothing dropped, [`RecordingNote::CaughtUp`].
//!
//! **Control messages never wait or get lost.** Opening reserves two slots of the queue: one for
//! the open, one kept for the close (or, when the handle is dropped without a close, for the
//! abandon that flushes and leaves the `.part` file to recovery, as a crash would). An open that
//! finds no room fails at once ([`OpenError::QueueFull`]).
//!
//! **Failures end the recording, not the call.** An I/O error (or a panic, caught per job) in
//! the writer marks that recording failed; the call learns it from the next
//! [`Recording::write`] ([`RecordingNote::Failed`]) and stops sending frames. At the close the
//! writer still finalizes what it could write, so the audio before the error is kept.
//!
//! Crash safety is [`RecordingWriter`]'s: a `.part` that is a valid WAV at every flush (one per
//! second of audio, synced within a second by its thread's `syncfs`) and recovery at the next
//! start. A kill loses what was only in memory: at most
//! a second in the writer, plus whatever the queue held (nothing, unless the disk was lagging, in
//! which case `recording.lagging` said so).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::prompt::frames_to_duration;
use super::recording::{FinishedRecording, RecordingError, RecordingWriter, check_name};
use crate::clock;

/// Most writer threads a recorder runs.
pub const MAX_THREADS: usize = 64;
/// Smallest queue (frames per writer thread) a recorder accepts.
pub const MIN_QUEUE: usize = 16;
/// Longest a writer thread waits at a [`WriteHold`] before going on anyway: a test that forgets
/// to release it cannot hang a thread forever.
const MAX_HOLD: Duration = Duration::from_secs(60);

/// How the recorder runs.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Writer threads (1..=[`MAX_THREADS`]). Recordings are spread over them round-robin; the
    /// work is mostly waiting for fsync, so more threads than cores is fine.
    pub threads: usize,
    /// Frames each writer thread's queue holds (at least [`MIN_QUEUE`]), however they are
    /// batched into jobs; a job that would pass it is dropped and its frames counted. One frame is one ptime of one call (640 bytes for 20 ms of
    /// stereo at 8 kHz), so the default 8192 over 4 threads bounds the queued audio to about
    /// 21 MB at 8 kHz. Each open recording keeps one slot reserved for its close.
    pub queue: usize,
    /// Queued audio of one recording at which it is reported as lagging.
    pub lag_threshold: Duration,
    /// Fault injection for tests: while held, writer threads wait before every job.
    pub hold: Option<WriteHold>,
}

impl Default for RecorderConfig {
    fn default() -> RecorderConfig {
        RecorderConfig {
            threads: 4,
            queue: 8192,
            lag_threshold: Duration::from_millis(500),
            hold: None,
        }
    }
}

/// A gate in front of every disk job of the writer threads (fault injection: a disk that stops
/// answering). While it is held, the threads wait (each at most a minute per job) before opening,
/// writing, flushing or finalizing anything.
#[derive(Debug, Clone, Default)]
pub struct WriteHold(Arc<HoldState>);

#[derive(Debug, Default)]
struct HoldState {
    held: Mutex<bool>,
    released: Condvar,
    waiting: AtomicUsize,
}

impl WriteHold {
    /// A gate that is open.
    pub fn new() -> WriteHold {
        WriteHold::default()
    }

    /// Close the gate: writer threads wait before their next job.
    pub fn hold(&self) {
        *self.0.held.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }

    /// Open the gate: waiting threads go on.
    pub fn release(&self) {
        *self.0.held.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.0.released.notify_all();
    }

    /// How many writer threads wait at the gate now.
    pub fn waiting(&self) -> usize {
        self.0.waiting.load(Ordering::Relaxed)
    }

    fn wait(&self) {
        let held = self.0.held.lock().unwrap_or_else(PoisonError::into_inner);
        if !*held {
            return;
        }
        self.0.waiting.fetch_add(1, Ordering::Relaxed);
        let _unused = self
            .0
            .released
            .wait_timeout_while(held, MAX_HOLD, |held| *held)
            .unwrap_or_else(PoisonError::into_inner);
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a recording could not be opened (nothing was queued; nothing is on disk).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The path names no plain file in a directory, or the format is not one we write.
    #[error(transparent)]
    Invalid(#[from] RecordingError),
    /// The writer thread's queue has no room for the open and the close.
    #[error("the recording writer's queue is full (the disk is not keeping up)")]
    QueueFull,
    /// The recorder has shut down.
    #[error("the recording writer has stopped")]
    Stopped,
}

/// What the recorder is doing, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Writer threads running (0 once [`Recorder::shutdown`] has seen them all end).
    pub threads: usize,
    /// Jobs (frames, opens, closes) queued and not yet taken by a writer thread.
    pub queue_depth: usize,
    /// What the queues hold at most, over all threads.
    pub queue_capacity: usize,
    /// The oldest job a writer thread has not finished: how long since it was queued (zero when
    /// every thread is idle). It grows while a disk operation is stuck.
    pub lag: Duration,
    /// Recordings open now.
    pub open: usize,
    /// Frames written to recordings so far.
    pub frames_written: u64,
    /// Frames dropped so far because a queue was full.
    pub frames_dropped: u64,
    /// Lagging episodes so far ([`RecordingNote::Lagging`]).
    pub lagging_episodes: u64,
    /// Recordings that failed (an open, write or finalize error, or a writer panic).
    pub failures: u64,
    /// Syncs of a filesystem the writer threads made for their recordings' flushes (one
    /// `syncfs` a second per thread and filesystem while audio is written, instead of one
    /// `fdatasync` a second per recording).
    pub fs_syncs: u64,
}

#[derive(Debug, Default)]
struct Counters {
    open: AtomicUsize,
    frames_written: AtomicU64,
    frames_dropped: AtomicU64,
    lagging: AtomicU64,
    failures: AtomicU64,
    fs_syncs: AtomicU64,
}

#[derive(Debug, Default)]
struct LaneStats {
    /// Queued and not yet received: media frames (a job of `count` frames weighs `count`),
    /// plus one for each open, close or abandon.
    depth: AtomicUsize,
    /// When the job the thread works on was queued (µs since the recorder's epoch, plus one);
    /// zero when the thread is idle.
    busy_since: AtomicU64,
}

/// What one recording shares with its writer thread.
#[derive(Debug, Default)]
struct RecState {
    /// Frames (one sample per channel) the writer has handled, silence for gaps included.
    handled: AtomicU64,
    /// The first failure; nothing more is written after it.
    failure: OnceLock<String>,
}

impl RecState {
    /// Marks the recording failed; whether this was its first failure.
    fn fail(&self, error: String) -> bool {
        self.failure.set(error).is_ok()
    }
}

#[derive(Debug)]
struct Job {
    id: u64,
    /// µs since the recorder's epoch, plus one.
    queued_at: u64,
    work: Work,
}

impl Job {
    /// What the job counts for in its lane's depth (see [`LaneStats::depth`]).
    fn weight(&self) -> usize {
        match &self.work {
            Work::Frame { count, .. } => *count as usize,
            _ => 1,
        }
    }
}

#[derive(Debug)]
enum Work {
    Open {
        dir: PathBuf,
        name: String,
        rate: u32,
        channels: u16,
        state: Arc<RecState>,
    },
    /// `gap` frames of silence (audio dropped before it), then `samples`: `count` media
    /// frames (ptimes) of the call, one job.
    Frame {
        gap: u64,
        samples: Vec<i16>,
        count: u32,
    },
    /// `gap` frames of silence, then finalize and answer.
    Close {
        gap: u64,
        reply: oneshot::Sender<Result<FinishedRecording, String>>,
    },
    /// The handle was dropped without a close: flush and leave the `.part` for recovery.
    Abandon,
}

#[derive(Debug)]
struct Lane {
    /// `None` once the recorder shut down.
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    stats: Arc<LaneStats>,
}

/// The pool of writer threads. See the module documentation.
#[derive(Debug)]
pub struct Recorder {
    lanes: Vec<Lane>,
    next: AtomicUsize,
    next_id: AtomicU64,
    counters: Arc<Counters>,
    epoch: Instant,
    queue: usize,
    lag_threshold: Duration,
    /// Writer threads still running, and a signal when one ends.
    live: Arc<(Mutex<usize>, Condvar)>,
    hold: Option<WriteHold>,
}

impl Recorder {
    /// Starts the writer threads.
    pub fn start(config: RecorderConfig) -> io::Result<Recorder> {
        if !(1..=MAX_THREADS).contains(&config.threads) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "recorder threads: {} (1..={MAX_THREADS} allowed)",
                    config.threads
                ),
            ));
        }
        if config.queue < MIN_QUEUE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "recorder queue: {} frames (at least {MIN_QUEUE})",
                    config.queue
                ),
            ));
        }
        let counters = Arc::new(Counters::default());
        let live = Arc::new((Mutex::new(0usize), Condvar::new()));
        let mut lanes = Vec::with_capacity(config.threads);
        for i in 0..config.threads {
            let (tx, rx) = mpsc::channel(config.queue);
            let stats = Arc::new(LaneStats::default());
            let thread = {
                let stats = stats.clone();
                let counters = counters.clone();
                let hold = config.hold.clone();
                let live = live.clone();
                *live.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                std::thread::Builder::new()
                    .name(format!("recorder-{i}"))
                    .spawn(move || {
                        run_lane(rx, &stats, &counters, hold.as_ref());
                        let (count, ended) = &*live;
                        *count.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
                        ended.notify_all();
                    })
            };
            if let Err(e) = thread {
                *live.0.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
                return Err(e);
            }
            lanes.push(Lane {
                tx: Mutex::new(Some(tx)),
                stats,
            });
        }
        Ok(Recorder {
            lanes,
            next: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            counters,
            epoch: clock::now(),
            queue: config.queue,
            lag_threshold: config.lag_threshold,
            live,
            hold: config.hold,
        })
    }

    /// Opens the recording `path` (`<dir>/<name>.wav`; written as `<name>.wav.part` until it is
    /// finalized): 16-bit PCM, `channels` (1 or 2) interleaved, at `rate` Hz.
    ///
    /// Does no I/O: the name and format are checked here, the file is created by a writer thread
    /// (an error there, such as an existing recording of that name, comes back as
    /// [`RecordingNote::Failed`] from the next [`Recording::write`], and from the close).
    pub fn open(&self, path: &Path, rate: u32, channels: u16) -> Result<Recording, OpenError> {
        let (dir, name) = split_path(path)?;
        check_name(&name)?;
        RecordingWriter::check_format(rate, channels)?;
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        let lane = &self.lanes[index];
        let tx = lane
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(OpenError::Stopped)?;
        let reserve = |tx: &mpsc::Sender<Job>| {
            tx.clone().try_reserve_owned().map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => OpenError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => OpenError::Stopped,
            })
        };
        let open_slot = reserve(&tx)?;
        let close_slot = reserve(&tx)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(RecState::default());
        lane.stats.depth.fetch_add(1, Ordering::Relaxed);
        open_slot.send(Job {
            id,
            queued_at: stamp(self.epoch),
            work: Work::Open {
                dir: dir.clone(),
                name: name.clone(),
                rate,
                channels,
                state: state.clone(),
            },
        });
        self.counters.open.fetch_add(1, Ordering::Relaxed);
        let threshold =
            u64::try_from(u128::from(rate) * self.lag_threshold.as_micros() / 1_000_000)
                .unwrap_or(u64::MAX)
                .max(1);
        Ok(Recording {
            id,
            tx,
            close: Some(close_slot),
            state,
            lane: lane.stats.clone(),
            counters: self.counters.clone(),
            epoch: self.epoch,
            queue: self.queue,
            path: dir.join(format!("{name}.wav")),
            rate,
            channels,
            lag_threshold: threshold,
            sent: 0,
            gap: 0,
            dropped_frames: 0,
            dropped_samples: 0,
            episode: None,
            episodes: 0,
            failure_reported: false,
        })
    }

    /// What the writer threads are doing now.
    pub fn stats(&self) -> RecorderStats {
        let now = stamp(self.epoch);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let oldest = self
            .lanes
            .iter()
            .map(|l| l.stats.busy_since.load(Ordering::Relaxed))
            .filter(|at| *at != 0)
            .min();
        RecorderStats {
            threads: *self.live.0.lock().unwrap_or_else(PoisonError::into_inner),
            queue_depth: self
                .lanes
                .iter()
                .map(|l| l.stats.depth.load(Ordering::Relaxed))
                .sum(),
            queue_capacity: self.queue * self.lanes.len(),
            lag: oldest.map_or(Duration::ZERO, |at| {
                Duration::from_micros(now.saturating_sub(at))
            }),
            open: self.counters.open.load(Ordering::Relaxed),
            frames_written: load(&self.counters.frames_written),
            frames_dropped: load(&self.counters.frames_dropped),
            lagging_episodes: load(&self.counters.lagging),
            failures: load(&self.counters.failures),
            fs_syncs: load(&self.counters.fs_syncs),
        }
    }

    /// Stops taking recordings and waits, at most `limit`, until every writer thread has done
    /// what was queued and ended; whether they all did. A thread ends once every recording it
    /// writes is closed or dropped too, so call this after the calls ended (a drain); while a
    /// recording is still open it returns `false` at once. It blocks:
    /// call it from a blocking thread. A recording still open at the process's exit is left as a
    /// `.part` for recovery, as after a crash.
    pub fn shutdown(&self, limit: Duration) -> bool {
        for lane in &self.lanes {
            lane.tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        // A held gate would keep the threads from finishing.
        if let Some(hold) = &self.hold {
            hold.release();
        }
        if self.counters.open.load(Ordering::Relaxed) > 0 {
            // Their threads end only once those are closed or dropped: no point waiting.
            return false;
        }
        let (count, ended) = &*self.live;
        let count = count.lock().unwrap_or_else(PoisonError::into_inner);
        let (count, _) = ended
            .wait_timeout_while(count, limit, |n| *n > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *count == 0
    }
}

/// µs since `epoch`, plus one (zero means "idle").
fn stamp(epoch: Instant) -> u64 {
    u64::try_from(clock::now().saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX - 1)
        + 1
}

/// `<dir>/<name>.wav` → (dir, name); a bare file name is in the current directory.
fn split_path(path: &Path) -> Result<(PathBuf, String), RecordingError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".wav").unwrap_or(n))
        .ok_or_else(|| RecordingError::InvalidName {
            name: path.display().to_string(),
            reason: "not a file name",
        })?;
    Ok((dir, name.to_owned()))
}

/// What [`Recording::write`] has to say about the recording (each at most once per episode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordingNote {
    /// The writer fell behind: `lag` of audio is queued (or a frame was just dropped).
    Lagging {
        /// Audio of this recording queued and not yet handled by the writer.
        lag: Duration,
        /// Jobs in this recording's writer queue.
        queue_depth: usize,
        /// That queue's capacity.
        queue_capacity: usize,
        /// Frames of this recording dropped so far.
        dropped_frames: u64,
    },
    /// The writer caught up again.
    CaughtUp {
        /// Audio still queued.
        lag: Duration,
        /// How long the episode lasted (in audio time, which is the call's time).
        lagged_for: Duration,
        /// Frames dropped during the episode.
        dropped_frames: u64,
    },
    /// The recording failed (open, write, writer gone): nothing more is written.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// What a recording lost to a full queue, reported at its close.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordingLoss {
    /// Frames (ptimes) dropped because the queue was full.
    pub dropped_frames: u64,
    /// The audio they held (written as silence in their place).
    pub dropped: Duration,
    /// Lagging episodes the recording went through.
    pub lagging_episodes: u32,
}

/// One recording being written by a writer thread. See the module documentation.
///
/// Dropping it without [`close`](Self::close) has its writer flush what was queued and leave the
/// `.part` file for [`super::recover_partials`], as [`RecordingWriter`]'s drop does.
#[derive(Debug)]
pub struct Recording {
    id: u64,
    tx: mpsc::Sender<Job>,
    /// The slot reserved for the close (or the abandon); taken by either.
    close: Option<mpsc::OwnedPermit<Job>>,
    state: Arc<RecState>,
    lane: Arc<LaneStats>,
    counters: Arc<Counters>,
    epoch: Instant,
    queue: usize,
    path: PathBuf,
    rate: u32,
    channels: u16,
    /// Queued audio (frames) at which the recording is lagging.
    lag_threshold: u64,
    /// Frames queued so far, silence for gaps included.
    sent: u64,
    /// Frames dropped since the last one queued: silence owed before the next.
    gap: u64,
    dropped_frames: u64,
    /// The frames (one sample per channel) those held.
    dropped_samples: u64,
    /// Set while lagging: (`sent` when it began, `dropped_frames` then).
    episode: Option<(u64, u64)>,
    episodes: u32,
    failure_reported: bool,
}

impl Recording {
    /// The path the finished recording will have.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sample rate in Hz.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Channels per frame.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Audio queued and not yet handled by the writer (dropped audio included).
    pub fn lag(&self) -> Duration {
        let queued =
            (self.sent + self.gap).saturating_sub(self.state.handled.load(Ordering::Acquire));
        frames_to_duration(queued, self.rate)
    }

    /// What the recording lost so far.
    pub fn loss(&self) -> RecordingLoss {
        RecordingLoss {
            dropped_frames: self.dropped_frames,
            dropped: frames_to_duration(self.dropped_samples, self.rate),
            lagging_episodes: self.episodes,
        }
    }

    /// Queues one frame of interleaved samples (a whole number of frames) for the writer,
    /// without waiting: when the queue is full, the frame is dropped and counted, and silence
    /// takes its place. Returns what the caller should report, if anything.
    pub fn write(&mut self, samples: Vec<i16>) -> Option<RecordingNote> {
        self.write_frames(samples, 1)
    }

    /// Queues `count` consecutive media frames (ptimes) of the call as one writer job, so that
    /// a writer wakes once for them; they are counted (written or dropped) as `count` frames.
    pub fn write_frames(&mut self, samples: Vec<i16>, count: u32) -> Option<RecordingNote> {
        if self.failure_reported {
            return None;
        }
        if let Some(error) = self.state.failure.get() {
            self.failure_reported = true;
            return Some(RecordingNote::Failed {
                error: error.clone(),
            });
        }
        let ch = usize::from(self.channels);
        if !samples.len().is_multiple_of(ch) {
            let error = RecordingError::PartialFrame {
                len: samples.len(),
                channels: self.channels,
            }
            .to_string();
            return Some(self.failed(error));
        }
        let frames = (samples.len() / ch) as u64;
        if frames == 0 {
            return None;
        }
        let count = count.max(1);
        let weight = count as usize;
        // The queue's bound is in media frames, however they are batched into jobs.
        let before = self.lane.depth.fetch_add(weight, Ordering::Relaxed);
        let job = Job {
            id: self.id,
            queued_at: stamp(self.epoch),
            work: Work::Frame {
                gap: self.gap,
                samples,
                count,
            },
        };
        let mut dropped = false;
        let mut just_queued = 0;
        let sent = if before + weight > self.queue {
            Err(mpsc::error::TrySendError::Full(job))
        } else {
            self.tx.try_send(job)
        };
        match sent {
            Ok(()) => {
                self.sent += self.gap + frames;
                self.gap = 0;
                just_queued = frames;
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lane.depth.fetch_sub(weight, Ordering::Relaxed);
                self.gap += frames;
                self.dropped_frames += u64::from(count);
                self.dropped_samples += frames;
                self.counters
                    .frames_dropped
                    .fetch_add(u64::from(count), Ordering::Relaxed);
                dropped = true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.lane.depth.fetch_sub(weight, Ordering::Relaxed);
                return Some(self.failed("the recording writer has stopped".to_owned()));
            }
        }
        self.check_lag(dropped, just_queued)
    }

    fn failed(&mut self, error: String) -> RecordingNote {
        if self.state.fail(error.clone()) {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.failure_reported = true;
        RecordingNote::Failed { error }
    }

    /// `just_queued`: the audio this write queued (not the silence owed that went with it).
    /// The lag counts it; whether the writer has caught up is judged without it, since the
    /// writer cannot have handled it yet: a batch of five ptimes alone is more than a quarter of
    /// the threshold, and judged with it a recording never caught up (CI waited 15 s for a
    /// `recording.caught_up` once). Silence owed still counts: a write that queues it finds the
    /// writer caught up only at the next write.
    fn check_lag(&mut self, dropped: bool, just_queued: u64) -> Option<RecordingNote> {
        let handled = self.state.handled.load(Ordering::Acquire);
        let queued = (self.sent + self.gap).saturating_sub(handled);
        let backlog = queued.saturating_sub(just_queued);
        let lag = frames_to_duration(queued, self.rate);
        match self.episode {
            None if dropped || queued >= self.lag_threshold => {
                self.episode = Some((self.sent + self.gap, self.dropped_frames));
                self.episodes += 1;
                self.counters.lagging.fetch_add(1, Ordering::Relaxed);
                let capacity = self.queue;
                Some(RecordingNote::Lagging {
                    lag,
                    queue_depth: self.lane.depth.load(Ordering::Relaxed).min(capacity),
                    queue_capacity: capacity,
                    dropped_frames: self.dropped_frames,
                })
            }
            Some((since, dropped_before)) if self.gap == 0 && backlog <= self.lag_threshold / 4 => {
                self.episode = None;
                Some(RecordingNote::CaughtUp {
                    lag,
                    lagged_for: frames_to_duration(self.sent.saturating_sub(since), self.rate),
                    dropped_frames: self.dropped_frames - dropped_before,
                })
            }
            _ => None,
        }
    }

    /// Ends the recording: the writer writes what is queued, flushes, renames the `.part` to
    /// `.wav` and hashes it. Never waits (its queue slot was reserved at the open); await the
    /// [`Closing`] for the outcome.
    pub fn close(mut self) -> Closing {
        let (reply, rx) = oneshot::channel();
        let loss = self.loss();
        let failure_reported = self.failure_reported;
        if let Some(slot) = self.close.take() {
            self.lane.depth.fetch_add(1, Ordering::Relaxed);
            slot.send(Job {
                id: self.id,
                queued_at: stamp(self.epoch),
                work: Work::Close {
                    gap: std::mem::take(&mut self.gap),
                    reply,
                },
            });
        }
        Closing {
            rx,
            loss,
            failure_reported,
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(slot) = self.close.take() {
            self.lane.depth.fetch_add(1, Ordering::Relaxed);
            slot.send(Job {
                id: self.id,
                queued_at: stamp(self.epoch),
                work: Work::Abandon,
            });
        }
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The close of a [`Recording`] under way: a future of its [`ClosedRecording`].
#[derive(Debug)]
pub struct Closing {
    rx: oneshot::Receiver<Result<FinishedRecording, String>>,
    loss: RecordingLoss,
    failure_reported: bool,
}

/// How a recording ended.
#[derive(Debug)]
pub struct ClosedRecording {
    /// The finished file, or why there is none.
    pub result: Result<FinishedRecording, String>,
    /// What it lost to a full queue.
    pub loss: RecordingLoss,
    /// Whether [`Recording::write`] already reported a failure ([`RecordingNote::Failed`]).
    pub failure_reported: bool,
}

impl Future for Closing {
    type Output = ClosedRecording;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ClosedRecording> {
        Pin::new(&mut self.rx).poll(cx).map(|r| ClosedRecording {
            result: r.unwrap_or_else(|_| {
                Err("the recording writer stopped before finishing the recording".to_owned())
            }),
            loss: self.loss,
            failure_reported: self.failure_reported,
        })
    }
}

/// One recording as its writer thread holds it.
struct Open {
    /// `None` when the create failed.
    writer: Option<RecordingWriter>,
    state: Arc<RecState>,
    channels: u16,
    /// The filesystem (`st_dev`) the file is on: one `syncfs` per filesystem ([`sync_lane`]).
    dev: u64,
}

/// How long a writer thread that found its queue empty lets jobs gather before it waits on the
/// queue again (and a sender has to wake it).
const GATHER: Duration = Duration::from_millis(20);

/// How often a writer thread syncs the filesystems its recordings' flushes went to (at most
/// this long after a flush, its audio is on disk, as when each flush made its own fsync).
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// A writer thread: jobs in order until every sender is gone.
fn run_lane(
    mut rx: mpsc::Receiver<Job>,
    stats: &LaneStats,
    counters: &Counters,
    hold: Option<&WriteHold>,
) {
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut synced_at = clock::now();
    // Audio was written since the last sync.
    let mut dirty = false;
    let mut next = rx.blocking_recv();
    while let Some(job) = next {
        dirty |= matches!(job.work, Work::Frame { .. });
        stats.depth.fetch_sub(job.weight(), Ordering::Relaxed);
        stats.busy_since.store(job.queued_at, Ordering::Relaxed);
        if let Some(hold) = hold {
            hold.wait();
        }
        let id = job.id;
        // A panic ends that recording (its writer is dropped, which flushes and keeps the
        // `.part`), not the thread and the other recordings on it.
        if catch_unwind(AssertUnwindSafe(|| handle(&mut open, job, counters))).is_err() {
            // Later jobs of it find no entry; the call learns of the failure at its next write.
            if let Some(rec) = open.remove(&id)
                && rec.state.fail("the recording writer panicked".to_owned())
            {
                counters.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        if stats.depth.load(Ordering::Relaxed) == 0 {
            stats.busy_since.store(0, Ordering::Relaxed);
        }
        next = loop {
            if dirty && clock::now().saturating_duration_since(synced_at) >= SYNC_EVERY {
                sync_lane(&mut open, counters);
                synced_at = clock::now();
                dirty = false;
            }
            match rx.try_recv() {
                Ok(job) => break Some(job),
                Err(mpsc::error::TryRecvError::Disconnected) => break None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // The queue is empty: let jobs gather for a while before waiting on it, so
                    // that the calls' threads do not wake this one for each job (a wake-up is a
                    // futex call on their side and a context switch here). A job waits at most
                    // this long more. While written audio awaits its sync, poll rather than
                    // wait.
                    std::thread::sleep(GATHER);
                    if !dirty {
                        break rx.blocking_recv();
                    }
                }
            }
        };
    }
    stats.busy_since.store(0, Ordering::Relaxed);
    // Every handle is gone; what is still open was abandoned mid-way (its drop flushes).
    open.clear();
}

/// Makes what the lane's recordings flushed durable: one `syncfs` per filesystem they are on,
/// rather than one `fdatasync` per recording ([`RecordingWriter::defer_sync`]). Where a
/// `syncfs` fails, each of those recordings is synced on its own, so that the error fails the
/// recordings it concerns and only those.
fn sync_lane(open: &mut HashMap<u64, Open>, counters: &Counters) {
    let mut by_fs: HashMap<u64, Vec<u64>> = HashMap::new();
    for (id, rec) in open.iter_mut() {
        if rec.state.failure.get().is_none()
            && let Some(w) = rec.writer.as_mut()
            && w.take_unsynced()
        {
            by_fs.entry(rec.dev).or_default().push(*id);
        }
    }
    for ids in by_fs.into_values() {
        let synced = open
            .get(&ids[0])
            .and_then(|rec| rec.writer.as_ref())
            .is_some_and(|w| nix::unistd::syncfs(w.file()).is_ok());
        counters.fs_syncs.fetch_add(1, Ordering::Relaxed);
        if synced {
            continue;
        }
        for id in ids {
            if let Some(rec) = open.get_mut(&id)
                && let Some(w) = rec.writer.as_mut()
                && let Err(e) = w.sync_data()
                && rec.state.fail(e.to_string())
            {
                counters.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Silence to write for dropped audio, a block at a time.
const SILENCE: [i16; 1024] = [0; 1024];

fn write_silence(w: &mut RecordingWriter, frames: u64) -> Result<(), RecordingError> {
    let ch = u64::from(w.channels());
    let per_block = SILENCE.len() as u64 / ch;
    let mut left = frames;
    while left > 0 {
        let n = left.min(per_block);
        w.write_samples(&SILENCE[..(n * ch) as usize])?;
        left -= n;
    }
    Ok(())
}

fn handle(open: &mut HashMap<u64, Open>, job: Job, counters: &Counters) {
    let fail = |state: &RecState, e: String| {
        if state.fail(e) {
            counters.failures.fetch_add(1, Ordering::Relaxed);
        }
    };
    match job.work {
        Work::Open {
            dir,
            name,
            rate,
            channels,
            state,
        } => {
            let mut dev = 0;
            let writer = match RecordingWriter::create(&dir, &name, rate, channels) {
                Ok(mut w) => {
                    // A writer whose filesystem is unknown keeps an fsync of its own per flush.
                    if let Ok(meta) = w.file().metadata() {
                        dev = std::os::unix::fs::MetadataExt::dev(&meta);
                        w.defer_sync();
                    }
                    Some(w)
                }
                Err(e) => {
                    fail(&state, e.to_string());
                    None
                }
            };
            open.insert(
                job.id,
                Open {
                    writer,
                    state,
                    channels,
                    dev,
                },
            );
        }
        Work::Frame {
            gap,
            samples,
            count,
        } => {
            let Some(rec) = open.get_mut(&job.id) else {
                return;
            };
            let frames = gap + (samples.len() / usize::from(rec.channels)) as u64;
            if rec.state.failure.get().is_none()
                && let Some(w) = rec.writer.as_mut()
            {
                match write_silence(w, gap).and_then(|()| w.write_samples(&samples)) {
                    Ok(()) => {
                        counters
                            .frames_written
                            .fetch_add(u64::from(count), Ordering::Relaxed);
                    }
                    Err(e) => fail(&rec.state, e.to_string()),
                }
            }
            rec.state.handled.fetch_add(frames, Ordering::Release);
        }
        Work::Close { gap, reply } => {
            let Some(mut rec) = open.remove(&job.id) else {
                let _ = reply.send(Err("the recording was lost by its writer".to_owned()));
                return;
            };
            let result = match rec.writer.take() {
                Some(mut w) => {
                    if rec.state.failure.get().is_none()
                        && let Err(e) = write_silence(&mut w, gap)
                    {
                        fail(&rec.state, e.to_string());
                    }
                    // After a write error too: what was written before it is kept.
                    w.finalize().map_err(|e| {
                        let e = e.to_string();
                        fail(&rec.state, e.clone());
                        e
                    })
                }
                None => Err(rec
                    .state
                    .failure
                    .get()
                    .cloned()
                    .unwrap_or_else(|| "the recording was not started".to_owned())),
            };
            // The call may be gone (aborted): the file is finished all the same.
            let _ = reply.send(result);
        }
        Work::Abandon => {
            // Dropping the writer flushes what it holds and leaves the `.part` for recovery.
            open.remove(&job.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    /// A recorder whose lag threshold is 100 ms when a test holds its disk, else far off (a
    /// test writes much faster than real time).
    fn recorder(threads: usize, queue: usize, hold: Option<WriteHold>) -> Recorder {
        let lag_threshold = if hold.is_some() {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(3600)
        };
        Recorder::start(RecorderConfig {
            threads,
            queue,
            lag_threshold,
            hold,
        })
        .expect("recorder starts")
    }

    /// 20 ms of stereo 8 kHz: frame `n` holds the value `n` on both channels.
    fn frame(n: i16) -> Vec<i16> {
        vec![n; 320]
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(async { tokio::time::timeout(Duration::from_secs(20), f).await })
            .expect("done in time")
    }

    #[test]
    fn frames_are_written_in_order_and_the_hash_is_of_the_file_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Room for every frame: none is dropped however far ahead the test writes.
        let rec = recorder(2, 256, None);
        let mut r = rec.open(&dir.path().join("a.wav"), 8000, 2).expect("open");
        for n in 0..100 {
            assert_eq!(r.write(frame(n)), None, "frame {n}");
        }
        let closed = block_on(r.close());
        let done = closed.result.expect("finished");
        assert_eq!(closed.loss, RecordingLoss::default());
        assert_eq!(done.frames, 100 * 160);
        let bytes = std::fs::read(dir.path().join("a.wav")).expect("read");
        assert_eq!(done.bytes, bytes.len() as u64);
        assert_eq!(done.sha256, hex::encode(Sha256::digest(&bytes)));
        // Sample 1000 (frame 6, second half) is 6 on both channels.
        let at = 44 + 1000 * 4;
        assert_eq!(i16::from_le_bytes([bytes[at], bytes[at + 1]]), 6);
        assert_eq!(rec.stats().threads, 2);
        assert!(rec.shutdown(Duration::from_secs(5)), "threads end");
        assert_eq!(rec.stats().threads, 0);
        assert_eq!(rec.stats().open, 0);
        assert_eq!(rec.stats().frames_written, 100);
    }

    #[test]
    fn flushes_are_made_durable_by_one_filesystem_sync_and_an_idle_lane_then_rests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = recorder(1, 4096, None);
        let mut a = rec.open(&dir.path().join("a.wav"), 8000, 2).expect("open");
        let mut b = rec.open(&dir.path().join("b.wav"), 8000, 2).expect("open");
        // 60 frames of 20 ms: 1.2 s each, so each recording flushes once (every second of audio),
        // and then no more jobs come.
        for n in 1..=60 {
            assert_eq!(a.write(frame(n)), None);
            assert_eq!(b.write(frame(n)), None);
        }
        // The lane syncs what the flushes wrote though no job wakes it: one syncfs for both (the
        // same filesystem), or two if the second flush came after the first sync.
        let deadline = Instant::now() + Duration::from_secs(5);
        while rec.stats().fs_syncs == 0 {
            assert!(Instant::now() < deadline, "the flushes were never synced");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(SYNC_EVERY + Duration::from_millis(200));
        let synced = rec.stats().fs_syncs;
        assert!(synced <= 2, "{synced} syncs for two flushes");
        // Nothing written since: the lane does not keep syncing (nor polling) for nothing.
        std::thread::sleep(2 * SYNC_EVERY + Duration::from_millis(200));
        assert_eq!(rec.stats().fs_syncs, synced, "an idle lane rests");
        for r in [a, b] {
            let done = block_on(r.close()).result.expect("finished");
            assert_eq!(done.frames, 60 * 160);
        }
    }

    #[test]
    fn batched_frames_weigh_their_count_against_the_queue_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hold = WriteHold::new();
        hold.hold();
        let rec = recorder(1, MIN_QUEUE, Some(hold.clone()));
        let mut r = rec
            .open(&dir.path().join("batch.wav"), 8000, 2)
            .expect("open");
        let deadline = Instant::now() + Duration::from_secs(5);
        while hold.waiting() == 0 {
            assert!(Instant::now() < deadline, "the writer reached the gate");
            std::thread::yield_now();
        }
        let five = |k: i16| (0..5).flat_map(|j| frame(k * 5 + j)).collect::<Vec<i16>>();
        for k in 0..4 {
            r.write_frames(five(k), 5);
        }
        // A bound of 16 frames: three jobs of five fit (15), the fourth would make 20.
        assert_eq!(r.loss().dropped_frames, 5);
        let stats = rec.stats();
        assert_eq!((stats.queue_depth, stats.frames_dropped), (15, 5));
        hold.release();
        // The writer handles the queue; the next batch carries the silence owed, and the one
        // after finds the writer caught up, though that batch alone (five frames) is more than
        // a quarter of the lag threshold (CI once waited 15 s for a recording.caught_up that
        // this never gave).
        let drained = |r: &Recording, owed: u64| {
            while r.lag() != frames_to_duration(owed * 160, 8000) {
                assert!(
                    Instant::now() < deadline,
                    "the writer caught up; lag {:?}",
                    r.lag()
                );
                std::thread::yield_now();
            }
        };
        drained(&r, 5);
        assert_eq!(
            r.write_frames(five(4), 5),
            None,
            "the silence is being written"
        );
        drained(&r, 0);
        let caught_up = r.write_frames(five(5), 5);
        assert!(
            matches!(
                caught_up,
                Some(RecordingNote::CaughtUp {
                    dropped_frames: 5,
                    ..
                })
            ),
            "{caught_up:?}"
        );
        let closed = block_on(r.close());
        let done = closed.result.expect("finished");
        // The dropped job's time is kept as silence.
        assert_eq!(done.frames, 30 * 160);
        assert_eq!(rec.stats().frames_written, 25);
        assert_eq!(rec.stats().queue_depth, 0);
    }

    #[test]
    fn a_full_queue_drops_frames_counts_them_and_writes_silence_in_their_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hold = WriteHold::new();
        hold.hold();
        let rec = recorder(1, MIN_QUEUE, Some(hold.clone()));
        let mut r = rec
            .open(&dir.path().join("full.wav"), 8000, 2)
            .expect("open");
        // The writer took the open and waits at the gate with it (the disk is stuck).
        let deadline = Instant::now() + Duration::from_secs(5);
        while hold.waiting() == 0 {
            assert!(Instant::now() < deadline, "the writer reached the gate");
            std::thread::yield_now();
        }
        let mut notes = Vec::new();
        for n in 1..=50 {
            notes.extend(r.write(frame(n)));
        }
        // 16 slots, one reserved for the close: 15 frames queued, the other 35 dropped.
        assert_eq!(r.loss().dropped_frames, 35, "{notes:?}");
        let stats = rec.stats();
        assert_eq!(stats.frames_dropped, 35);
        assert_eq!(stats.queue_depth, 15);
        assert_eq!(stats.queue_capacity, MIN_QUEUE);
        assert!(stats.lag > Duration::ZERO, "{stats:?}");
        assert_eq!(stats.lagging_episodes, 1);
        assert!(
            matches!(
                notes.as_slice(),
                [RecordingNote::Lagging {
                    dropped_frames: 0,
                    queue_depth: 5,
                    ..
                }]
            ),
            "one lagging note per episode (the lag crossed 100 ms before the first drop): {notes:?}"
        );
        hold.release();
        // The writer catches up with everything queued; the silence owed is still to come.
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.lag() != frames_to_duration(35 * 160, 8000) {
            assert!(
                Instant::now() < deadline,
                "the writer caught up; lag {:?}",
                r.lag()
            );
            std::thread::yield_now();
        }
        assert_eq!(r.write(frame(51)), None, "the gap is still being written");
        while r.lag() != Duration::ZERO {
            assert!(
                Instant::now() < deadline,
                "the writer caught up; lag {:?}",
                r.lag()
            );
            std::thread::yield_now();
        }
        let caught_up = r.write(frame(52));
        assert!(
            matches!(
                caught_up,
                Some(RecordingNote::CaughtUp {
                    dropped_frames: 35,
                    ..
                })
            ),
            "{caught_up:?}"
        );
        let closed = block_on(r.close());
        assert_eq!(closed.loss.dropped_frames, 35);
        assert_eq!(closed.loss.dropped, Duration::from_millis(700));
        assert_eq!(closed.loss.lagging_episodes, 1);
        let done = closed.result.expect("finished");
        // Every frame's time is in the file: 15 + 35 (silence) + 2 frames.
        assert_eq!(done.frames, 52 * 160);
        let (_, samples) = read_wav(&done.path);
        let frame_value = |i: usize| samples[i * 320];
        assert_eq!(frame_value(0), 1);
        assert_eq!(frame_value(14), 15);
        assert_eq!(frame_value(15), 0, "a dropped frame is silence");
        assert_eq!(frame_value(49), 0);
        assert_eq!(
            frame_value(50),
            51,
            "the frame after the gap is where it was"
        );
        assert_eq!(frame_value(51), 52);
    }

    fn read_wav(path: &Path) -> (u64, Vec<i16>) {
        let bytes = std::fs::read(path).expect("read");
        let samples = bytes[44..]
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        (bytes.len() as u64, samples)
    }

    #[test]
    fn an_open_error_comes_back_from_the_next_write_and_from_the_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("taken.wav"), b"x").expect("write");
        let rec = recorder(1, 64, None);
        let mut r = rec
            .open(&dir.path().join("taken.wav"), 8000, 2)
            .expect("open is queued");
        let deadline = Instant::now() + Duration::from_secs(10);
        let note = loop {
            assert!(Instant::now() < deadline, "the failure came back");
            // Until the writer has tried the open, frames queue, and once the queue is full a
            // write says the recording is lagging; only the failure ends the wait.
            if let Some(note @ RecordingNote::Failed { .. }) = r.write(frame(1)) {
                break note;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(
            matches!(&note, RecordingNote::Failed { error } if error.contains("already exists")),
            "{note:?}"
        );
        assert_eq!(r.write(frame(2)), None, "reported once");
        let closed = block_on(r.close());
        assert!(closed.failure_reported);
        assert!(closed.result.is_err());
        assert_eq!(rec.stats().failures, 1);
        assert_eq!(
            std::fs::read(dir.path().join("taken.wav")).expect("read"),
            b"x",
            "never overwritten"
        );
    }

    #[test]
    fn bad_names_and_formats_are_refused_without_queueing_anything() {
        let rec = recorder(1, 64, None);
        for (path, rate, channels) in [
            ("/tmp/.hidden.wav", 8000, 2),
            ("/tmp/a b.wav", 8000, 2),
            ("/tmp/ok.wav", 0, 2),
            ("/tmp/ok.wav", 8000, 3),
        ] {
            assert!(
                matches!(
                    rec.open(Path::new(path), rate, channels),
                    Err(OpenError::Invalid(_))
                ),
                "{path} {rate} {channels}"
            );
        }
        assert_eq!(rec.stats().queue_depth, 0);
        assert_eq!(rec.stats().open, 0);
    }

    #[test]
    fn a_dropped_handle_leaves_a_recoverable_part_with_its_frames() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = recorder(1, 64, None);
        let mut r = rec
            .open(&dir.path().join("gone.wav"), 8000, 1)
            .expect("open");
        for n in 0..10 {
            assert_eq!(r.write(vec![n; 160]), None);
        }
        drop(r);
        assert!(rec.shutdown(Duration::from_secs(10)), "threads end");
        let recovered = super::super::recover_partials(dir.path());
        let done = recovered[0].as_ref().expect("recovered");
        assert_eq!(done.frames, 1600);
        assert!(matches!(
            rec.open(&dir.path().join("late.wav"), 8000, 1),
            Err(OpenError::Stopped)
        ));
    }

    #[test]
    fn an_open_that_finds_the_queue_full_fails_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hold = WriteHold::new();
        hold.hold();
        let rec = recorder(1, MIN_QUEUE, Some(hold.clone()));
        let mut first = rec.open(&dir.path().join("a.wav"), 8000, 1).expect("open");
        for n in 0..40 {
            let _ = first.write(vec![n; 160]);
        }
        assert!(matches!(
            rec.open(&dir.path().join("b.wav"), 8000, 1),
            Err(OpenError::QueueFull)
        ));
        hold.release();
        let closed = block_on(first.close());
        assert!(closed.result.is_ok());
    }
}
