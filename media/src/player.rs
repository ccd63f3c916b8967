//! Paces a prompt into ptime frames.
//!
//! The [`Player`] holds mono PCM that is already decoded and resampled to the codec's sampling
//! rate (see [`crate::codec::resample()`]) in a shared buffer, so many calls can play the same
//! prompt without copies. It does not read the clock: the session asks for
//! [`next_frame`](Player::next_frame) once per ptime and encodes what it gets.
//!
//! ```
//! use std::sync::Arc;
//! use media::player::Player;
//! let prompt: Arc<[i16]> = vec![1i16; 200].into();
//! let mut p = Player::new(prompt, 8000, 20);
//! let f = p.next_frame().unwrap();
//! assert!(f.marker && f.samples.len() == 160 && f.rtp_timestamp_offset == 0);
//! let f = p.next_frame().unwrap(); // 40 real samples + 120 of silence
//! assert_eq!((f.samples[39], f.samples[40], f.rtp_timestamp_offset), (1, 0, 160));
//! assert!(p.next_frame().is_none() && p.is_finished());
//! ```

use std::sync::Arc;

/// Where a player is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayerState {
    /// Giving out frames.
    Playing,
    /// Holding its position; [`Player::resume`] continues.
    Paused,
    /// Every sample was given out.
    Finished,
    /// Stopped early by [`Player::stop`] (barge-in); no more frames.
    Stopped,
}

/// One ptime frame of a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Exactly samples-per-frame samples; the last frame of a prompt is padded with silence.
    pub samples: &'a [i16],
    /// RTP timestamp of this frame relative to the prompt's first frame (in the RTP clock
    /// units given by [`Player::with_clock_rate`], the sample rate by default). Paused time
    /// does not count.
    pub rtp_timestamp_offset: u32,
    /// RTP marker bit: true on the first frame of the prompt and on the first frame after a
    /// pause (the start of a talkspurt, RFC 3551 §4.1).
    pub marker: bool,
}

/// Paces shared mono PCM into fixed-size frames.
#[derive(Debug, Clone)]
pub struct Player {
    pcm: Arc<[i16]>,
    samples_per_frame: usize,
    timestamp_step: u32,
    position: usize,
    frames_out: u32,
    state: PlayerState,
    talkspurt_start: bool,
    /// Scratch for the padded last frame.
    pad: Vec<i16>,
}

impl Player {
    /// A player of `pcm` at `rate` Hz in frames of `ptime_ms` (a zero ptime is taken as 20).
    pub fn new(pcm: Arc<[i16]>, rate: u32, ptime_ms: u32) -> Self {
        let ptime_ms = if ptime_ms == 0 { 20 } else { ptime_ms };
        let samples_per_frame = ((rate as u64 * ptime_ms as u64 / 1000) as usize).max(1);
        let state = if pcm.is_empty() {
            PlayerState::Finished
        } else {
            PlayerState::Playing
        };
        Player {
            pcm,
            samples_per_frame,
            timestamp_step: samples_per_frame as u32,
            position: 0,
            frames_out: 0,
            state,
            talkspurt_start: true,
            pad: Vec::new(),
        }
    }

    /// Sets the RTP clock rate for [`Frame::rtp_timestamp_offset`] when it differs from the
    /// sample rate (G.722: 16 kHz samples, 8 kHz clock, RFC 3551 §4.5.2).
    pub fn with_clock_rate(mut self, rate: u32, clock_rate: u32) -> Self {
        self.timestamp_step =
            (self.samples_per_frame as u64 * clock_rate as u64 / rate.max(1) as u64) as u32;
        self
    }

    /// Samples in every frame.
    pub fn samples_per_frame(&self) -> usize {
        self.samples_per_frame
    }

    /// The next frame, or `None` when paused, stopped or finished.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        if self.state != PlayerState::Playing {
            return None;
        }
        let start = self.position;
        let end = (start + self.samples_per_frame).min(self.pcm.len());
        self.position = end;
        let marker = std::mem::take(&mut self.talkspurt_start);
        let offset = self.frames_out.wrapping_mul(self.timestamp_step);
        self.frames_out += 1;
        if self.position >= self.pcm.len() {
            self.state = PlayerState::Finished;
        }
        let samples: &[i16] = if end - start == self.samples_per_frame {
            &self.pcm[start..end]
        } else {
            self.pad.clear();
            self.pad.extend_from_slice(&self.pcm[start..end]);
            self.pad.resize(self.samples_per_frame, 0);
            &self.pad
        };
        Some(Frame {
            samples,
            rtp_timestamp_offset: offset,
            marker,
        })
    }

    /// Holds the position; frames stop until [`resume`](Self::resume).
    pub fn pause(&mut self) {
        if self.state == PlayerState::Playing {
            self.state = PlayerState::Paused;
        }
    }

    /// Continues after a pause; the next frame carries the marker bit.
    pub fn resume(&mut self) {
        if self.state == PlayerState::Paused {
            self.state = PlayerState::Playing;
            self.talkspurt_start = true;
        }
    }

    /// Stops now (barge-in): no further frame, not even the rest of the current one.
    pub fn stop(&mut self) {
        if self.state != PlayerState::Finished {
            self.state = PlayerState::Stopped;
        }
    }

    /// The current state.
    pub fn state(&self) -> PlayerState {
        self.state
    }

    /// True when no frame will come any more (played to the end or stopped).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, PlayerState::Finished | PlayerState::Stopped)
    }

    /// Samples given out so far (not counting padding).
    pub fn position(&self) -> usize {
        self.position
    }

    /// Length of the prompt in samples.
    pub fn len(&self) -> usize {
        self.pcm.len()
    }

    /// True for an empty prompt.
    pub fn is_empty(&self) -> bool {
        self.pcm.is_empty()
    }
}
