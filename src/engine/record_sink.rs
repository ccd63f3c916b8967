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
    /// Opening failed, or the recording did: frames are ignored.
    failed: bool,
    /// Where a segment goes when the sink is dropped unfinished (its session was dropped: a
    /// failover to the next target): the call reports it when it ends.
    orphans: Orphans,
}

/// Segments whose sink was dropped unfinished, being finished by their writer.
pub(crate) type Orphans = Arc<Mutex<Vec<Closing>>>;

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
        if let Some(rec) = self.rec.as_mut() {
            // Frames are interleaved stereo: left what we heard, right what we sent.
            let samples = match self.mode {
                RecordMode::Stereo => frame.samples,
                RecordMode::Inbound => frame.samples.iter().step_by(2).copied().collect(),
                RecordMode::Outbound => frame.samples.iter().skip(1).step_by(2).copied().collect(),
            };
            if let Some(note) = rec.write(samples) {
                self.failed = matches!(note, RecordingNote::Failed { .. });
                notes.push(RecordNote::Write {
                    note,
                    dropped_frames: rec.loss().dropped_frames,
                });
            }
        }
        (!notes.is_empty()).then(|| Box::new(notes) as SinkNote)
    }

    fn finish(mut self: Box<Self>) -> SinkNote {
        Box::new(vec![RecordNote::Done(
            self.rec.take().map(Recording::close),
        )])
    }
}

impl Drop for RecordSink {
    fn drop(&mut self) {
        if let Some(rec) = self.rec.take() {
            self.orphans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(rec.close());
        }
    }
}

/// The notes a [`SinkNote`] from a [`RecordSink`] carries, in order (none from another sink).
pub(crate) fn notes(note: SinkNote) -> Vec<RecordNote> {
    note.downcast::<Vec<RecordNote>>()
        .map(|notes| *notes)
        .unwrap_or_default()
}
