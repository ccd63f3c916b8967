//! Call recording frames: both legs aligned on one media timeline.
//!
//! # Time-alignment contract
//!
//! Every push carries a **position**: the index, in samples at the recorder's rate, of the
//! first pushed sample, counted from the start of the recording. The session computes it,
//! typically from the arrival `Instant` of the packet relative to the recording start, or from
//! the RTP timestamp relative to the first one (rescaled to the recorder's rate), and it must
//! compute both legs on the same clock. The recorder trusts positions and never looks at time.
//!
//! - A gap between pushes of one leg (silence suppression, loss) becomes zeros, sample for
//!   sample: the timeline is never compressed.
//! - Samples for a region that is still buffered overwrite what is there (a late packet fills
//!   the zeros of its gap); samples before the drained point are dropped.
//! - Output is produced up to where both legs are known. A leg that runs ahead is buffered up to
//!   `max_lag` samples beyond the other; past that, the lagging leg is taken as silent up to
//!   `max_lag` behind the leading one, and its samples that arrive later for that span are
//!   dropped. Memory per leg is thus bounded by `max_lag` plus one push.
//! - [`Recorder::finish_stereo`] / [`Recorder::finish_legs`] emit everything buffered,
//!   filling the shorter leg with zeros.
//!
//! Output is stereo interleaved (left = inbound, what the far end said; right = outbound, what
//! we sent) with [`Recorder::drain_stereo`], or the same span as two mono streams with
//! [`Recorder::drain_legs`].

use std::collections::VecDeque;

/// Errors from the recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecorderError {
    /// A push reaching more than [`Recorder::MAX_AHEAD_S`] past the drained point.
    #[error("push at sample {position} is too far past the drained point {drained}")]
    TooFarAhead {
        /// Position of the rejected push.
        position: u64,
        /// Drained point at the time.
        drained: u64,
    },
}

/// Which leg a push belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Received from the far end (left channel).
    Inbound,
    /// Sent to the far end (right channel).
    Outbound,
}

#[derive(Debug, Clone, Default)]
struct Track {
    /// Samples from the drained point on; `buf[0]` is at the recorder's `drained` position.
    buf: VecDeque<i16>,
}

impl Track {
    /// Position just past the last known sample, given the drained point.
    fn end(&self, drained: u64) -> u64 {
        drained + self.buf.len() as u64
    }

    fn put(&mut self, drained: u64, position: u64, samples: &[i16]) {
        // Drop what lies before the drained point: it is already written out.
        let skip = drained.saturating_sub(position).min(samples.len() as u64) as usize;
        let samples = &samples[skip..];
        let position = position + skip as u64;
        if samples.is_empty() {
            return;
        }
        let offset = (position - drained) as usize;
        let end = offset + samples.len();
        if self.buf.len() < end {
            // Gap (or extension): zeros keep the timeline uncompressed.
            self.buf.resize(end, 0);
        }
        // Copy into the ring's two contiguous halves.
        let (a, b) = self.buf.as_mut_slices();
        if offset < a.len() {
            let k = (a.len() - offset).min(samples.len());
            a[offset..offset + k].copy_from_slice(&samples[..k]);
            let rest = &samples[k..];
            b[..rest.len()].copy_from_slice(rest);
        } else {
            let o = offset - a.len();
            b[o..o + samples.len()].copy_from_slice(samples);
        }
    }

    /// Moves the first `n` samples into `dst`, one every `stride` slots starting at `offset`.
    /// `dst` is pre-zeroed, so slots past the end of the track stay silent.
    fn take_into(&mut self, n: usize, dst: &mut [i16], stride: usize, offset: usize) {
        let have = self.buf.len().min(n);
        let (a, b) = self.buf.as_slices();
        let first = &a[..have.min(a.len())];
        let second = &b[..have - first.len()];
        let mut frames = dst.chunks_exact_mut(stride);
        // `first` leads the zip so that the frame after its end is not consumed.
        for (&s, frame) in first.iter().zip(&mut frames) {
            frame[offset] = s;
        }
        for (frame, &s) in frames.zip(second) {
            frame[offset] = s;
        }
        self.buf.drain(..have);
    }
}

/// Aligns the two legs of a call into stereo (or per-leg mono) PCM.
#[derive(Debug, Clone)]
pub struct Recorder {
    rate: u32,
    max_lag: u64,
    drained: u64,
    inbound: Track,
    outbound: Track,
}

impl Recorder {
    /// Default bound on how far one leg may run ahead of the other: 1 s.
    pub const DEFAULT_MAX_LAG_MS: u32 = 1000;
    /// How far past the drained point a push may reach, in seconds.
    pub const MAX_AHEAD_S: u32 = 60;

    /// A recorder at `rate` Hz with the default lag bound.
    pub fn new(rate: u32) -> Self {
        Self::with_max_lag(rate, Self::DEFAULT_MAX_LAG_MS)
    }

    /// A recorder at `rate` Hz where a leg may run at most `max_lag_ms` ahead of the other.
    pub fn with_max_lag(rate: u32, max_lag_ms: u32) -> Self {
        Recorder {
            rate,
            max_lag: (rate as u64 * max_lag_ms as u64 / 1000).max(1),
            drained: 0,
            inbound: Track::default(),
            outbound: Track::default(),
        }
    }

    /// The sample rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Position (samples since the start) up to which output has been drained.
    pub fn drained_position(&self) -> u64 {
        self.drained
    }

    /// Adds inbound samples starting at sample `position` of the recording.
    pub fn push_inbound(&mut self, position: u64, samples: &[i16]) -> Result<(), RecorderError> {
        self.push(Leg::Inbound, position, samples)
    }

    /// Adds outbound samples starting at sample `position` of the recording.
    pub fn push_outbound(&mut self, position: u64, samples: &[i16]) -> Result<(), RecorderError> {
        self.push(Leg::Outbound, position, samples)
    }

    /// Adds samples of `leg` starting at sample `position` of the recording.
    ///
    /// Errors, keeping nothing, when the push would end more than [`Recorder::MAX_AHEAD_S`]
    /// seconds past the drained point: the gap would be buffered as zeros, so a bogus position
    /// must not be able to claim unbounded memory. Drain regularly (every ptime, or at least
    /// every few seconds) and real gaps of any length pass.
    pub fn push(&mut self, leg: Leg, position: u64, samples: &[i16]) -> Result<(), RecorderError> {
        let drained = self.drained;
        let limit = drained.saturating_add(Self::MAX_AHEAD_S as u64 * self.rate.max(1) as u64);
        let end = position.saturating_add(samples.len() as u64);
        if end > limit {
            return Err(RecorderError::TooFarAhead { position, drained });
        }
        match leg {
            Leg::Inbound => self.inbound.put(drained, position, samples),
            Leg::Outbound => self.outbound.put(drained, position, samples),
        }
        Ok(())
    }

    /// How many samples per leg can be drained now.
    fn ready(&self) -> usize {
        let a = self.inbound.end(self.drained);
        let b = self.outbound.end(self.drained);
        let both = a.min(b);
        // A leg more than max_lag ahead forces the other to be taken as silent up to there.
        let forced = a.max(b).saturating_sub(self.max_lag);
        (both.max(forced) - self.drained) as usize
    }

    /// Appends every aligned sample pair available as interleaved stereo (L = inbound,
    /// R = outbound) to `out`; returns the number of sample pairs.
    pub fn drain_stereo(&mut self, out: &mut Vec<i16>) -> usize {
        let n = self.ready();
        self.emit_stereo(n, out);
        n
    }

    /// Appends the same span as [`drain_stereo`](Self::drain_stereo) would, as two mono
    /// streams of equal length; returns the number of samples per leg.
    pub fn drain_legs(&mut self, inbound: &mut Vec<i16>, outbound: &mut Vec<i16>) -> usize {
        let n = self.ready();
        self.emit_legs(n, inbound, outbound);
        n
    }

    /// Ends the recording: appends everything buffered as stereo, filling the shorter leg
    /// with zeros; returns the number of sample pairs.
    pub fn finish_stereo(&mut self, out: &mut Vec<i16>) -> usize {
        let n = self.buffered();
        self.emit_stereo(n, out);
        n
    }

    /// Ends the recording as two mono streams (see [`finish_stereo`](Self::finish_stereo)).
    pub fn finish_legs(&mut self, inbound: &mut Vec<i16>, outbound: &mut Vec<i16>) -> usize {
        let n = self.buffered();
        self.emit_legs(n, inbound, outbound);
        n
    }

    fn buffered(&self) -> usize {
        self.inbound.buf.len().max(self.outbound.buf.len())
    }

    fn emit_stereo(&mut self, n: usize, out: &mut Vec<i16>) {
        let start = out.len();
        out.resize(start + 2 * n, 0);
        let frames = &mut out[start..];
        self.inbound.take_into(n, frames, 2, 0);
        self.outbound.take_into(n, frames, 2, 1);
        self.drained += n as u64;
    }

    fn emit_legs(&mut self, n: usize, inbound: &mut Vec<i16>, outbound: &mut Vec<i16>) {
        let start = inbound.len();
        inbound.resize(start + n, 0);
        self.inbound.take_into(n, &mut inbound[start..], 1, 0);
        let start = outbound.len();
        outbound.resize(start + n, 0);
        self.outbound.take_into(n, &mut outbound[start..], 1, 0);
        self.drained += n as u64;
    }
}

/// Interleaves two mono streams into stereo (the shorter one padded with zeros).
pub fn interleave(left: &[i16], right: &[i16], out: &mut Vec<i16>) {
    let n = left.len().max(right.len());
    let start = out.len();
    out.resize(start + 2 * n, 0);
    for (frame, &l) in out[start..].chunks_exact_mut(2).zip(left) {
        frame[0] = l;
    }
    for (frame, &r) in out[start..].chunks_exact_mut(2).zip(right) {
        frame[1] = r;
    }
}
