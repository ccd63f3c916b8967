//! A call's recording as its media worker's [`FrameSink`]: the worker hands each recorded frame
//! to the recording's writer queue itself, on its own thread, so a recording call's task never
//! wakes for its audio (docs/media/recording.md). The call hears only what it must put on its
//! timeline or tell its script ([`RecordNote`]), in order with the session's other events.
//!
//! A sink records one segment: it opens the file at its first frame (the frame's rate is the
//! file's), and its [`FrameSink::finish`] hands the call the segment's [`Closing`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use media::session::RecordedFrame;

use crate::files::{Closing, Recorder, Recording, RecordingNote};
use crate::net::media_workers::{FrameSink, SinkNote};
use crate::script::RecordMode;

/// What a [`RecordSink`] tells its call.
#[derive(Debug)]
pub(crate) enum RecordNote {
    /// The segment's file was opened at its first frame.
    Started {
        path: PathBuf,
        rate: u32,
        channels: u16,
    },
    /// The file could not be opened: nothing of this segment is recorded.
    OpenFailed(String),
    /// What the recording said of a write (lagging, caught up, failed), and the frames it had
    /// dropped by then.
    Write {
        note: RecordingNote,
        dropped_frames: u64,
    },
    /// The sink is done: the segment being finished, if a file was opened.
    Done(Option<Closing>),
}

/// One recording segment, fed by the media worker.
#[derive(Debug)]
pub(crate) struct RecordSink {
    recorder: Arc<Recorder>,
    base: PathBuf,
    /// The call's segment count: the file opened is segment `n` (`base`, then `-2`, ...).
    segments: Arc<AtomicU32>,
    mode: RecordMode,
    rec: Option<Recording>,
    /// Frames not yet handed to the writer (at most [`FRAMES_PER_JOB`]), and how many.
    batch: Vec<i16>,
    batched: u32,
    /// Opening failed, or the recording did: frames are ignored.
    failed: bool,
    /// Where a segment goes when the sink is dropped unfinished (its session was dropped: a
    /// failover to the next target): the call reports it when it ends.
    orphans: Orphans,
}

/// Segments whose sink was dropped unfinished, being finished by their writer.
pub(crate) type Orphans = Arc<Mutex<Vec<Closing>>>;

/// Frames (ptimes) handed to the writer as one job: its thread wakes every 100 ms per call at
/// 20 ms, not every 20 ms. A process crash loses at most this much more than the writer's own
/// 200 ms buffer (kill -9 test: tests/crash_recording.rs).
const FRAMES_PER_JOB: u32 = 5;

impl RecordSink {
    pub(crate) fn new(
        recorder: Arc<Recorder>,
        base: PathBuf,
        segments: Arc<AtomicU32>,
        mode: RecordMode,
        orphans: Orphans,
    ) -> RecordSink {
        RecordSink {
            recorder,
            base,
            segments,
            mode,
            rec: None,
            batch: Vec::new(),
            batched: 0,
            failed: false,
            orphans,
        }
    }

    fn channels(&self) -> u16 {
        if self.mode == RecordMode::Stereo {
            2
        } else {
            1
        }
    }

    /// Opens the segment at its first frame; a note either way.
    fn open(&mut self, rate: u32) -> RecordNote {
        let channels = self.channels();
        let n = self.segments.load(Ordering::Relaxed);
        let path = super::call::segment_path(&self.base, n);
        match self.recorder.open(&path, rate, channels) {
            Ok(rec) => {
                self.segments.store(n + 1, Ordering::Relaxed);
                self.rec = Some(rec);
                RecordNote::Started {
                    path,
                    rate,
                    channels,
                }
            }
            Err(e) => {
                self.failed = true;
                RecordNote::OpenFailed(e.to_string())
            }
        }
    }
}

impl FrameSink for RecordSink {
    fn frame(&mut self, frame: RecordedFrame) -> Option<SinkNote> {
        if self.failed {
            return None;
        }
        let mut notes = Vec::new();
        if self.rec.is_none() {
            notes.push(self.open(frame.rate));
        }
        if self.rec.is_some() {
            // Frames are interleaved stereo: left what we heard, right what we sent.
            let samples = match self.mode {
                RecordMode::Stereo => frame.samples,
                RecordMode::Inbound => frame.samples.iter().step_by(2).copied().collect(),
                RecordMode::Outbound => frame.samples.iter().skip(1).step_by(2).copied().collect(),
            };
            self.batch.extend_from_slice(&samples);
            self.batched += 1;
            if self.batched >= FRAMES_PER_JOB {
                notes.extend(self.hand_over());
            }
        }
        (!notes.is_empty()).then(|| Box::new(notes) as SinkNote)
    }

    fn finish(mut self: Box<Self>) -> SinkNote {
        let mut notes: Vec<RecordNote> = self.hand_over().into_iter().collect();
        notes.push(RecordNote::Done(self.rec.take().map(Recording::close)));
        Box::new(notes)
    }
}

impl RecordSink {
    /// Hands the batched frames to the writer; what the recording said of it, if anything.
    fn hand_over(&mut self) -> Option<RecordNote> {
        if self.batched == 0 || self.failed {
            return None;
        }
        let rec = self.rec.as_mut()?;
        let capacity = self.batch.len();
        let samples = std::mem::replace(&mut self.batch, Vec::with_capacity(capacity));
        let count = std::mem::take(&mut self.batched);
        let note = rec.write_frames(samples, count)?;
        self.failed = matches!(note, RecordingNote::Failed { .. });
        Some(RecordNote::Write {
            note,
            dropped_frames: rec.loss().dropped_frames,
        })
    }
}

impl Drop for RecordSink {
    fn drop(&mut self) {
        let _ = self.hand_over();
        let Some(rec) = self.rec.take() else {
            return;
        };
        if Arc::strong_count(&self.orphans) > 1 {
            // The call lives on (a failover dropped the session): it reports the segment.
            self.orphans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(rec.close());
        } else {
            // The call is gone (its task was aborted): nobody would report a finished file.
            // Dropping the recording leaves its `.part`, which the next start recovers and
            // attaches to the call (docs/api.md, "Estimated ends").
            drop(rec);
        }
    }
}

/// The notes a [`SinkNote`] from a [`RecordSink`] carries, in order (none from another sink).
pub(crate) fn notes(note: SinkNote) -> Vec<RecordNote> {
    note.downcast::<Vec<RecordNote>>()
        .map(|notes| *notes)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::files::RecorderConfig;

    fn frame(n: i16) -> RecordedFrame {
        RecordedFrame {
            samples: (0..320).map(|k| if k % 2 == 0 { n } else { -n }).collect(),
            rate: 8000,
        }
    }

    fn sink(recorder: &Arc<Recorder>, base: PathBuf, mode: RecordMode) -> (RecordSink, Orphans) {
        let orphans = Orphans::default();
        let sink = RecordSink::new(
            Arc::clone(recorder),
            base,
            Arc::new(AtomicU32::new(0)),
            mode,
            Arc::clone(&orphans),
        );
        (sink, orphans)
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
    fn a_sink_opens_at_its_first_frame_keeps_one_side_and_its_finish_hands_over_the_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recorder = Arc::new(Recorder::start(RecorderConfig::default()).expect("recorder"));
        let (mut sink, orphans) = sink(&recorder, dir.path().join("r.wav"), RecordMode::Inbound);
        let first = notes(sink.frame(frame(7)).expect("the open is noted"));
        assert!(
            matches!(first.as_slice(), [RecordNote::Started { rate: 8000, channels: 1, path }] if path.ends_with("r.wav")),
            "{first:?}"
        );
        // Twelve frames in all: two whole jobs of five, and two that only the finish hands over.
        for n in 0..11 {
            assert!(sink.frame(frame(n)).is_none());
        }
        let done = notes(Box::new(sink).finish());
        let [RecordNote::Done(Some(closing))] =
            <[RecordNote; 1]>::try_from(done).expect("one note")
        else {
            panic!("not a finished segment");
        };
        let closed = block_on(closing);
        let finished = closed.result.expect("finished");
        // Twelve frames of the left (inbound) side alone: 1,920 mono samples, the first of them 7.
        assert_eq!((finished.frames, finished.channels), (1920, 1));
        let bytes = std::fs::read(dir.path().join("r.wav")).expect("read");
        assert_eq!(i16::from_le_bytes([bytes[44], bytes[45]]), 7);
        assert!(orphans.lock().expect("lock").is_empty());
        assert!(recorder.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn a_sink_dropped_unfinished_leaves_its_segment_to_the_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recorder = Arc::new(Recorder::start(RecorderConfig::default()).expect("recorder"));
        let (mut kept, orphans) = sink(&recorder, dir.path().join("o.wav"), RecordMode::Stereo);
        // One job of five, and two frames still batched when the sink goes.
        for n in 0..7 {
            kept.frame(frame(n));
        }
        drop(kept);
        let closing = orphans.lock().expect("lock").pop().expect("an orphan");
        let closed = block_on(closing);
        assert_eq!(closed.result.expect("finished").frames, 7 * 160);
        assert!(dir.path().join("o.wav").exists());

        // A sink whose call is gone leaves the `.part` for the next start's recovery instead.
        let (mut gone, orphans) = sink(&recorder, dir.path().join("g.wav"), RecordMode::Stereo);
        drop(orphans);
        for n in 0..7 {
            gone.frame(frame(n));
        }
        drop(gone);
        assert!(recorder.shutdown(Duration::from_secs(5)));
        assert!(dir.path().join("g.wav.part").exists());
        assert!(!dir.path().join("g.wav").exists());
    }
}
