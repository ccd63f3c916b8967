//! Call-progress tones and other generated signals: ringback, busy, beep, and (through
//! [`crate::dtmf::dtmf_tones`]) in-band DTMF.
//!
//! A [`ToneGenerator`] plays a list of [`Segment`]s (a sum of up to two sines for a duration, or
//! silence), once or repeating, at any sample rate. It is pulled frame by frame with
//! [`ToneGenerator::fill`]; the oscillators keep their phase across frames, so frames join
//! without clicks whatever their size.

use std::f64::consts::TAU;

/// One part of a tone cadence: up to two frequencies (0 Hz = unused) for a duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// First frequency in Hz (0 for none).
    pub freq1: f64,
    /// Second frequency in Hz (0 for none).
    pub freq2: f64,
    /// Peak amplitude of each sine, in 16-bit linear units.
    pub amplitude: f64,
    /// Length in milliseconds.
    pub duration_ms: u32,
}

impl Segment {
    /// A segment with one or two sines.
    pub fn tone(freq1: f64, freq2: f64, amplitude: f64, duration_ms: u32) -> Self {
        Segment {
            freq1,
            freq2,
            amplitude,
            duration_ms,
        }
    }

    /// A silent segment.
    pub fn silence(duration_ms: u32) -> Self {
        Segment {
            freq1: 0.0,
            freq2: 0.0,
            amplitude: 0.0,
            duration_ms,
        }
    }
}

/// Level of a full-scale sine in µ-law, dBm0 (G.711: +3.17 dBm0; A-law's is +3.14).
const FULL_SCALE_SINE_DBM0: f64 = 3.17;

/// Peak amplitude (16-bit linear) of a sine at `dbm0` dBm0.
pub fn dbm0_amplitude(dbm0: f64) -> f64 {
    32767.0 * 10f64.powf((dbm0 - FULL_SCALE_SINE_DBM0) / 20.0)
}

/// Which country's ringback cadence to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RingbackStyle {
    /// North America: 440 + 480 Hz, 2 s on, 4 s off.
    #[default]
    Us,
    /// Europe (ETSI / CEPT): 425 Hz, 1 s on, 4 s off.
    Eu,
    /// United Kingdom: 400 + 450 Hz, 0.4 s on, 0.2 s off, 0.4 s on, 2 s off.
    Uk,
}

/// A generator of a (possibly repeating) sequence of tone segments.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    rate: u32,
    segments: Vec<Segment>,
    repeat: bool,
    index: usize,
    /// Samples left in the current segment.
    left: u64,
    phase1: f64,
    phase2: f64,
    finished: bool,
}

impl ToneGenerator {
    /// A generator playing `segments` at `rate` Hz, forever if `repeat`.
    pub fn new(rate: u32, segments: Vec<Segment>, repeat: bool) -> Self {
        let mut g = ToneGenerator {
            rate: rate.max(1),
            segments,
            repeat,
            index: 0,
            left: 0,
            phase1: 0.0,
            phase2: 0.0,
            finished: false,
        };
        g.finished = g.total_samples_per_cycle() == 0;
        g.left = g.segment_samples(0);
        g
    }

    /// Ringback in the given style, repeating.
    pub fn ringback(rate: u32, style: RingbackStyle) -> Self {
        // −19 dBm0 per tone is the usual level for call-progress tones (US: −19 dBm0 each).
        let a = dbm0_amplitude(-19.0);
        let segments = match style {
            RingbackStyle::Us => vec![Segment::tone(440.0, 480.0, a, 2000), Segment::silence(4000)],
            RingbackStyle::Eu => vec![Segment::tone(425.0, 0.0, a, 1000), Segment::silence(4000)],
            RingbackStyle::Uk => vec![
                Segment::tone(400.0, 450.0, a, 400),
                Segment::silence(200),
                Segment::tone(400.0, 450.0, a, 400),
                Segment::silence(2000),
            ],
        };
        Self::new(rate, segments, true)
    }

    /// Busy tone: 480 + 620 Hz, 0.5 s on, 0.5 s off, repeating.
    pub fn busy(rate: u32) -> Self {
        let a = dbm0_amplitude(-24.0);
        Self::new(
            rate,
            vec![Segment::tone(480.0, 620.0, a, 500), Segment::silence(500)],
            true,
        )
    }

    /// A single beep: 1 kHz for 200 ms (e.g. before recording), then finished.
    pub fn beep(rate: u32) -> Self {
        Self::new(
            rate,
            vec![Segment::tone(1000.0, 0.0, dbm0_amplitude(-10.0), 200)],
            false,
        )
    }

    /// The sample rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// True when a non-repeating sequence has been played to the end.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Total samples of one pass through the segments.
    pub fn total_samples_per_cycle(&self) -> u64 {
        (0..self.segments.len())
            .map(|i| self.segment_samples(i))
            .sum()
    }

    fn segment_samples(&self, i: usize) -> u64 {
        self.segments
            .get(i)
            .map(|s| s.duration_ms as u64 * self.rate as u64 / 1000)
            .unwrap_or(0)
    }

    /// Fills `out` with the next samples. Returns how many samples were generated; once a
    /// non-repeating sequence ends, the rest of `out` is filled with silence and the count is
    /// smaller than `out.len()`.
    pub fn fill(&mut self, out: &mut [i16]) -> usize {
        let mut written = 0;
        while written < out.len() {
            if self.finished {
                out[written..].fill(0);
                return written;
            }
            if self.left == 0 {
                self.index += 1;
                if self.index >= self.segments.len() {
                    if !self.repeat {
                        self.finished = true;
                        continue;
                    }
                    self.index = 0;
                }
                self.left = self.segment_samples(self.index);
                continue;
            }
            let seg = self.segments[self.index];
            let n = ((out.len() - written) as u64).min(self.left) as usize;
            let w1 = TAU * seg.freq1 / self.rate as f64;
            let w2 = TAU * seg.freq2 / self.rate as f64;
            for s in &mut out[written..written + n] {
                let mut v = 0.0;
                if seg.freq1 > 0.0 {
                    v += self.phase1.sin();
                }
                if seg.freq2 > 0.0 {
                    v += self.phase2.sin();
                }
                *s = (v * seg.amplitude)
                    .round()
                    .clamp(i16::MIN as f64, i16::MAX as f64) as i16;
                // The phases run on in silence too, so a tone resumes on the same sine grid.
                self.phase1 = (self.phase1 + w1) % TAU;
                self.phase2 = (self.phase2 + w2) % TAU;
            }
            written += n;
            self.left -= n as u64;
        }
        written
    }

    /// Appends `n` samples to `out` (silence after the end); returns how many were generated.
    pub fn next_frame(&mut self, n: usize, out: &mut Vec<i16>) -> usize {
        let start = out.len();
        out.resize(start + n, 0);
        self.fill(&mut out[start..])
    }
}
