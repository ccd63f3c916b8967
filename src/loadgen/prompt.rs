//! Prompt correctness: whether what a call heard is a reference prompt, by normalised
//! cross-correlation (NCC), and where in the call it starts.
//!
//! The heard audio is the callee's channel of the call's recording (the engine's stereo WAV,
//! left: the callee), decoded from the RTP that arrived and played out through the jitter
//! buffer; the reference is the prompt file, resampled to the recording's rate.
//!
//! 1. Coarse search: both are decimated by 4 (a 4-sample mean), and the reference's first
//!    second slides over the first [`SEARCH`] of what was heard; the offset with the highest NCC
//!    wins. Sliding sums of the heard energy keep each offset's norm O(1).
//! 2. Refinement at the full rate, ±4 samples around it, with the whole reference (cut to what
//!    the call heard after the offset).
//! 3. The score is the NCC at the refined offset: 1.0 for the same waveform, about 0.9–1.0 after
//!    G.711 and a jitter buffer, near 0 for another prompt or for noise, 0 for silence.

use std::path::Path;
use std::time::Duration;

/// How far into the call the prompt's start is looked for.
pub const SEARCH: Duration = Duration::from_secs(5);
/// The decimation of the coarse search.
const DECIMATE: usize = 4;
/// Least overlap (of the reference with what was heard) that makes a score, s.
const MIN_OVERLAP_S: f64 = 0.5;

/// Where the reference was found and how well it matched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptMatch {
    /// The NCC at the best offset (−1 to 1; 0 when either side is silent).
    pub score: f64,
    /// Where the reference starts in what was heard, ms.
    pub offset_ms: f64,
}

fn decimate(x: &[i16]) -> Vec<f64> {
    x.chunks_exact(DECIMATE)
        .map(|c| c.iter().map(|&s| f64::from(s)).sum::<f64>() / DECIMATE as f64)
        .collect()
}

/// The NCC of `a` and `b` (same length).
fn ncc(a: &[f64], b: &[f64]) -> f64 {
    let (mut dot, mut ea, mut eb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        ea += x * x;
        eb += y * y;
    }
    if ea <= 0.0 || eb <= 0.0 {
        0.0
    } else {
        dot / (ea * eb).sqrt()
    }
}

/// The best match of `reference` in `heard` (both mono at `rate`); `None` when the call heard
/// less than half a second from any offset searched.
pub fn best_match(reference: &[i16], heard: &[i16], rate: u32) -> Option<PromptMatch> {
    let min_overlap = (MIN_OVERLAP_S * f64::from(rate)) as usize;
    if reference.len() < min_overlap || heard.len() < min_overlap {
        return None;
    }
    // Coarse.
    let r = decimate(reference);
    let h = decimate(heard);
    let window = r.len().min(rate as usize / DECIMATE).min(h.len());
    let r_win = &r[..window];
    let r_energy: f64 = r_win.iter().map(|x| x * x).sum();
    let search = (SEARCH.as_secs_f64() * f64::from(rate)) as usize / DECIMATE;
    let last = (h.len() - window).min(search);
    let mut prefix = Vec::with_capacity(h.len() + 1);
    prefix.push(0.0);
    for x in &h {
        prefix.push(prefix[prefix.len() - 1] + x * x);
    }
    let (mut best, mut best_at) = (f64::MIN, 0usize);
    for o in 0..=last {
        let e = prefix[o + window] - prefix[o];
        if e <= 0.0 || r_energy <= 0.0 {
            continue;
        }
        let dot: f64 = r_win
            .iter()
            .zip(&h[o..o + window])
            .map(|(a, b)| a * b)
            .sum();
        let score = dot / (r_energy * e).sqrt();
        if score > best {
            best = score;
            best_at = o;
        }
    }
    // Fine, at the full rate, with the whole reference.
    let centre = best_at * DECIMATE;
    let full = |o: usize| -> Option<f64> {
        let n = reference.len().min(heard.len().checked_sub(o)?);
        if n < min_overlap {
            return None;
        }
        let a: Vec<f64> = reference[..n].iter().map(|&s| f64::from(s)).collect();
        let b: Vec<f64> = heard[o..o + n].iter().map(|&s| f64::from(s)).collect();
        Some(ncc(&a, &b))
    };
    let (mut score, mut at) = (f64::MIN, centre);
    for o in centre.saturating_sub(DECIMATE)..=centre + DECIMATE {
        if let Some(s) = full(o)
            && s > score
        {
            score = s;
            at = o;
        }
    }
    if score == f64::MIN {
        return None;
    }
    Some(PromptMatch {
        score: (score * 10_000.0).round() / 10_000.0,
        offset_ms: (at as f64 * 1000.0 / f64::from(rate) * 100.0).round() / 100.0,
    })
}

/// The callee's channel (left) of a call's stereo recording, and its rate.
pub fn heard_channel(path: &Path) -> Result<(Vec<i16>, u32), String> {
    crate::files::generated::read_wav_channel(path, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::loadgen::answer::voice;

    #[test]
    fn the_reference_is_found_at_its_offset_and_others_score_low() {
        let reference = voice(7, 2000);
        // 730 ms of silence, then the reference with a little noise, then silence.
        let mut heard = vec![0i16; 5840];
        let mut n = 1u32;
        heard.extend(reference.iter().map(|&x| {
            n = n.wrapping_mul(1_103_515_245).wrapping_add(12345);
            x.saturating_add(((n >> 16) % 200) as i16 - 100)
        }));
        heard.extend(vec![0i16; 8000]);
        let m = best_match(&reference, &heard, 8000).expect("a match");
        assert!(m.score > 0.95, "{m:?}");
        assert_eq!(m.offset_ms, 730.0);
        let other = voice(8, 2000);
        let wrong = best_match(&other, &heard, 8000).expect("a score");
        assert!(wrong.score < 0.3, "{wrong:?}");
        let silent = best_match(&reference, &vec![0i16; 40_000], 8000).expect("a score");
        assert_eq!(silent.score, 0.0);
        assert_eq!(best_match(&reference, &[0i16; 100], 8000), None);
    }
}
