//! In-band DTMF: a Goertzel detector meeting ITU-T Q.24, and a generator.
//!
//! # How the detector works
//!
//! The signal is cut into 5 ms sub-blocks (40 samples at 8 kHz). For each sub-block and each of
//! the 8 DTMF frequencies a Goertzel filter gives the complex DFT coefficient, referred to the
//! absolute sample clock so that coefficients of consecutive sub-blocks add up coherently. Every
//! 5 ms the last three sub-blocks form a 15 ms analysis window, and the window is tested:
//!
//! 1. **Level**: the strongest low-group and high-group tones each reach the minimum level
//!    (about −38 dBm0).
//! 2. **Frequency**: the phase advance of each of the two tones' coefficients from the
//!    previous window (5 ms earlier) measures its frequency offset exactly; an offset above
//!    2.5 % fails. Q.24 asks to accept ±1.5 % and reject ±3.5 %; a plain Goertzel bank cannot
//!    tell those apart in a 15 ms window (its bins are 67 Hz wide), the phase advance can.
//!    The measured offset also corrects the tone power for the bin's roll-off.
//! 3. **Twist**: high-group louder than low-group by at most 8 dB (normal twist; Q.24 asks
//!    for 6 dB), low-group louder by at most 6 dB (reverse twist; Q.24 asks for 4 dB).
//! 4. **Purity**: each tone is at least 6 dB above the other tones of its group, and the two
//!    tones hold at least 80 % of the window's energy. Speech and noise spread their energy and
//!    fail here; a window only partly filled with tone fails too (the fraction is the filled
//!    part), which is what makes short bursts fail.
//!
//! **Duration**: a digit is accepted after 5 consecutive passing windows for the same key,
//! which needs 32–37 ms of tone depending on how it falls on the 5 ms grid (Q.24: accept
//! ≥ 40 ms, reject ≤ 20 ms). **Pause**: after acceptance the same key is not reported again
//! until 8 consecutive windows fail, which a pause of 40 ms always produces and a drop-out of
//! 20 ms never does (it is bridged). A different key needs no pause. Each digit is reported
//! once, when it is accepted.
//!
//! Measured over all 16 keys and 8 alignments (`q24_boundaries_report` in `tests/dtmf.rs`):
//! ≤ 30 ms never detected, 32.5 ms 3/128, 35 ms 69/128, ≥ 37.5 ms always; ±2 % deviation always
//! accepted, ±2.5 % and beyond never; a repeated key needs a pause of 30 ms or more.

use std::f64::consts::{PI, TAU};

use super::Digit;
use crate::tone::{Segment, ToneGenerator, dbm0_amplitude};

/// Low-group (row) frequencies in Hz (Q.23).
pub const ROW_FREQS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
/// High-group (column) frequencies in Hz (Q.23).
pub const COL_FREQS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

/// Sub-blocks per analysis window.
const SUB_BLOCKS: usize = 3;
/// Passing windows in a row needed to accept a digit.
const HITS_TO_ACCEPT: u32 = 5;
/// Failing windows in a row that end a digit (the inter-digit pause). A 40 ms pause fails at
/// least 9 windows (every window overlapping it by more than 20 % of its length), a 20 ms
/// drop-out at most 6.
const MISSES_TO_END: u32 = 8;
/// Largest frequency offset accepted, as a fraction.
const MAX_FREQ_DEVIATION: f64 = 0.025;
/// Largest power ratio high/low (normal twist): 8 dB.
const MAX_NORMAL_TWIST: f64 = 6.31;
/// Largest power ratio low/high (reverse twist): 6 dB.
const MAX_REVERSE_TWIST: f64 = 3.98;
/// Each tone must exceed the other tones of its group by this power ratio (6 dB). Not more:
/// a column tone 1.5 % low (1316 Hz) puts the 1209 Hz bin on its first side lobe (−13.5 dB),
/// and noise eats into that margin. Two real tones in one group fail the energy test anyway.
const MIN_RELATIVE_PEAK: f64 = 4.0;
/// The two tones must hold at least this fraction of the window's energy.
const MIN_ENERGY_FRACTION: f64 = 0.8;
/// Minimum power per tone, per sample (amplitude²/2): a sine of amplitude 300, ≈ −38 dBm0.
const MIN_TONE_POWER: f64 = 300.0 * 300.0 / 2.0;

/// A digit found in the signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InbandDigit {
    /// The key.
    pub digit: Digit,
    /// Sample index (since the detector was created) where the accepted tone run began.
    pub sample: u64,
}

#[derive(Debug, Clone, Copy)]
struct Complex {
    re: f64,
    im: f64,
}

impl Complex {
    const ZERO: Complex = Complex { re: 0.0, im: 0.0 };
    fn mul(self, o: Complex) -> Complex {
        Complex {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
    fn add(self, o: Complex) -> Complex {
        Complex {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }
    fn norm_sqr(self) -> f64 {
        self.re * self.re + self.im * self.im
    }
    fn from_angle(a: f64) -> Complex {
        Complex {
            re: a.cos(),
            im: a.sin(),
        }
    }
}

/// Digit tracking across analysis windows.
#[derive(Debug, Clone, Copy, Default)]
struct Tracker {
    /// The digit last reported, until enough failing windows make a pause.
    held: Option<Digit>,
    /// Consecutive windows without `held` since it was last seen.
    misses: u32,
    /// A digit other than `held` seen in consecutive windows, how many, and since when.
    run_digit: Option<Digit>,
    run: u32,
    run_start: u64,
}

/// Goertzel filter of one DTMF frequency.
#[derive(Debug, Clone, Copy)]
struct Bin {
    /// 2·cos ω.
    coef: f64,
    cos_w: f64,
    sin_w: f64,
    /// e^{-iω·block}: advance of the absolute phase reference per sub-block.
    step: Complex,
    /// e^{-iω·end} for the end of the current sub-block.
    phasor: Complex,
    /// Goertzel state of the current sub-block.
    s1: f64,
    s2: f64,
}

/// Goertzel DTMF detector (ITU-T Q.24). Feed decoded PCM of one direction in any chunk sizes.
#[derive(Debug, Clone)]
pub struct InbandDetector {
    rate: f64,
    block: usize,
    /// One filter per frequency, rows then columns.
    bins: [Bin; 8],
    energy: f64,
    filled: usize,
    /// Coefficients and energies of the last sub-blocks, newest last.
    history: [[Complex; 8]; SUB_BLOCKS],
    history_energy: [f64; SUB_BLOCKS],
    blocks_seen: u64,
    /// Window sums of the previous window (for the phase advance).
    prev_window: Option<[Complex; 8]>,
    tracker: Tracker,
    /// Samples consumed.
    position: u64,
}

impl InbandDetector {
    /// A detector for PCM at `sample_rate` Hz (8000 or 16000 in practice; any multiple of
    /// 200 Hz works, the 5 ms sub-block must be a whole number of samples).
    pub fn new(sample_rate: u32) -> Self {
        let rate = sample_rate.max(200) as f64;
        let block = (sample_rate.max(200) / 200) as usize;
        let bins = std::array::from_fn(|k| {
            let f = if k < 4 {
                ROW_FREQS[k]
            } else {
                COL_FREQS[k - 4]
            };
            let w = TAU * f / rate;
            let step = Complex::from_angle(-w * block as f64);
            Bin {
                coef: 2.0 * w.cos(),
                cos_w: w.cos(),
                sin_w: w.sin(),
                step,
                phasor: step,
                s1: 0.0,
                s2: 0.0,
            }
        });
        InbandDetector {
            rate,
            block,
            bins,
            energy: 0.0,
            filled: 0,
            history: [[Complex::ZERO; 8]; SUB_BLOCKS],
            history_energy: [0.0; SUB_BLOCKS],
            blocks_seen: 0,
            prev_window: None,
            tracker: Tracker::default(),
            position: 0,
        }
    }

    /// Samples per analysis window (120 at 8 kHz).
    pub fn window_len(&self) -> usize {
        self.block * SUB_BLOCKS
    }

    /// Processes `pcm` and appends every digit accepted in it to `out`.
    pub fn process(&mut self, pcm: &[i16], out: &mut Vec<InbandDigit>) {
        let mut rest = pcm;
        while !rest.is_empty() {
            let take = (self.block - self.filled).min(rest.len());
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            for &x in chunk {
                let x = x as f64;
                self.energy += x * x;
                for b in &mut self.bins {
                    // Goertzel recursion: s[n] = x[n] + 2cos(ω)·s[n-1] − s[n-2].
                    let s0 = x + b.coef * b.s1 - b.s2;
                    b.s2 = b.s1;
                    b.s1 = s0;
                }
            }
            self.filled += take;
            self.position += take as u64;
            if self.filled == self.block {
                self.finish_block(out);
            }
        }
    }

    /// Completes a sub-block: turns the Goertzel state into the DFT coefficient referred to
    /// absolute sample 0, and runs the window test.
    fn finish_block(&mut self, out: &mut Vec<InbandDigit>) {
        let mut coeffs = [Complex::ZERO; 8];
        for (b, c) in self.bins.iter_mut().zip(&mut coeffs) {
            // After N samples, Σ x[n]e^{-iωn} = e^{-iωN}·(s1·cos ω − s2 + i·s1·sin ω), with n
            // counted from the sub-block start; the phasor carries the sub-block's offset too.
            let local = Complex {
                re: b.s1 * b.cos_w - b.s2,
                im: b.s1 * b.sin_w,
            };
            *c = local.mul(b.phasor);
            b.phasor = b.phasor.mul(b.step);
            // Keep the phasor on the unit circle despite rounding.
            let n = b.phasor.norm_sqr().sqrt();
            b.phasor.re /= n;
            b.phasor.im /= n;
            b.s1 = 0.0;
            b.s2 = 0.0;
        }
        self.history.rotate_left(1);
        self.history[SUB_BLOCKS - 1] = coeffs;
        self.history_energy.rotate_left(1);
        self.history_energy[SUB_BLOCKS - 1] = self.energy;
        self.energy = 0.0;
        self.filled = 0;
        self.blocks_seen += 1;
        if self.blocks_seen < SUB_BLOCKS as u64 {
            return;
        }
        let mut window = [Complex::ZERO; 8];
        for block in &self.history {
            for (w, c) in window.iter_mut().zip(block) {
                *w = w.add(*c);
            }
        }
        let candidate = self.classify(&window);
        self.prev_window = Some(window);
        let window_start = self.position - self.window_len() as u64;
        self.step_state(candidate, window_start, out);
    }

    /// The key a window shows, if it passes every test.
    fn classify(&self, window: &[Complex; 8]) -> Option<Digit> {
        let prev = self.prev_window.as_ref()?;
        let n = self.window_len() as f64;
        let energy: f64 = self.history_energy.iter().sum();
        if energy < 2.0 * MIN_TONE_POWER * n {
            return None;
        }
        // Tone energy in the window: 2|X|²/N (a full-window sine of amplitude A gives N·A²/2).
        let power: [f64; 8] = std::array::from_fn(|k| 2.0 * window[k].norm_sqr() / n);
        let (row, col) = (argmax(&power[..4]), 4 + argmax(&power[4..]));
        let mut tone_power = [0.0; 2];
        for (slot, k) in [row, col].into_iter().enumerate() {
            // Frequency offset from the phase advance over one sub-block.
            let adv = window[k].mul(Complex {
                re: prev[k].re,
                im: -prev[k].im,
            });
            let dphi = adv.im.atan2(adv.re);
            let df = dphi * self.rate / (TAU * self.block as f64);
            let f = if k < 4 {
                ROW_FREQS[k]
            } else {
                COL_FREQS[k - 4]
            };
            if (df / f).abs() > MAX_FREQ_DEVIATION {
                return None;
            }
            // Undo the bin's roll-off at that offset (Dirichlet kernel).
            let half = PI * df / self.rate;
            let gain = if half.abs() < 1e-9 {
                1.0
            } else {
                let g = (n * half).sin() / (n * half.sin());
                g * g
            };
            tone_power[slot] = power[k] / gain.max(0.05);
        }
        let [p_row, p_col] = tone_power;
        if p_row < MIN_TONE_POWER * n || p_col < MIN_TONE_POWER * n {
            return None;
        }
        if p_col > p_row * MAX_NORMAL_TWIST || p_row > p_col * MAX_REVERSE_TWIST {
            return None;
        }
        for (group, peak) in [(0..4, row), (4..8, col)] {
            let peak_power = power[peak];
            if group
                .filter(|&k| k != peak)
                .any(|k| power[k] * MIN_RELATIVE_PEAK > peak_power)
            {
                return None;
            }
        }
        if p_row + p_col < MIN_ENERGY_FRACTION * energy {
            return None;
        }
        Some(Digit::from_row_col(row, col - 4))
    }

    fn step_state(
        &mut self,
        candidate: Option<Digit>,
        window_start: u64,
        out: &mut Vec<InbandDigit>,
    ) {
        let t = &mut self.tracker;
        // The held digit ends after MISSES_TO_END failing windows: that is the pause a
        // repetition of the same key needs. Shorter drop-outs are bridged.
        if let Some(held) = t.held {
            if candidate == Some(held) {
                t.misses = 0;
            } else {
                t.misses += 1;
                if t.misses >= MISSES_TO_END {
                    t.held = None;
                }
            }
        }
        // Any other key builds up its own run, so a new key needs no pause to be seen.
        match candidate {
            Some(d) if t.held != Some(d) => {
                if t.run_digit != Some(d) {
                    t.run_digit = Some(d);
                    t.run = 0;
                    t.run_start = window_start;
                }
                t.run += 1;
                if t.run >= HITS_TO_ACCEPT {
                    out.push(InbandDigit {
                        digit: d,
                        sample: t.run_start,
                    });
                    t.held = Some(d);
                    t.misses = 0;
                    t.run_digit = None;
                    t.run = 0;
                }
            }
            _ => {
                t.run_digit = None;
                t.run = 0;
            }
        }
    }
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// A generator that plays `digits` in-band: each key's tone pair for `tone_ms`, then
/// `pause_ms` of silence, once. Each tone is sent at `level_dbm0` (−6 dBm0 is a typical
/// level; Q.23 recommends the low-group tone about 2 dB below the high-group tone, which we
/// leave to the caller by keeping both equal).
pub fn dtmf_tones(
    sample_rate: u32,
    digits: &[Digit],
    tone_ms: u32,
    pause_ms: u32,
    level_dbm0: f64,
) -> ToneGenerator {
    let amplitude = dbm0_amplitude(level_dbm0);
    let mut segments = Vec::with_capacity(digits.len() * 2);
    for d in digits {
        let (lo, hi) = d.frequencies();
        segments.push(Segment::tone(lo, hi, amplitude, tone_ms));
        segments.push(Segment::silence(pause_ms));
    }
    ToneGenerator::new(sample_rate, segments, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Goertzel output, referred to absolute sample 0, equals the direct DFT sum
    /// Σ x[n]·e^{-iωn} over the sub-block: the property that lets sub-blocks add coherently.
    #[test]
    fn goertzel_coefficients_equal_the_direct_dft() {
        let mut det = InbandDetector::new(8000);
        let x: Vec<i16> = (0..det.block * 2)
            .map(|n| ((n * 7919) % 2001) as i16 - 1000)
            .collect();
        let mut out = Vec::new();
        det.process(&x, &mut out);
        let block = det.block;
        for (k, f) in ROW_FREQS.iter().chain(COL_FREQS.iter()).enumerate() {
            let w = TAU * f / 8000.0;
            let (mut re, mut im) = (0.0, 0.0);
            for (n, &s) in x.iter().enumerate().skip(block) {
                re += s as f64 * (w * n as f64).cos();
                im -= s as f64 * (w * n as f64).sin();
            }
            let got = det.history[SUB_BLOCKS - 1][k];
            assert!((got.re - re).abs() < 1e-6 * (1.0 + re.abs()), "bin {k} re");
            assert!((got.im - im).abs() < 1e-6 * (1.0 + im.abs()), "bin {k} im");
        }
    }
}
