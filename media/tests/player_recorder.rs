//! Player pacing, recorder alignment and tone generator tests.

use std::sync::Arc;

use media::player::{Player, PlayerState};
use media::recorder::{Recorder, RecorderError, interleave};
use media::tone::{RingbackStyle, ToneGenerator};

// ---------------------------------------------------------------------------------------------
// Player

fn ramp(n: usize) -> Arc<[i16]> {
    (1..=n as i16).collect::<Vec<_>>().into()
}

#[test]
fn player_paces_frames_and_pads_the_last_one() {
    let mut p = Player::new(ramp(400), 8000, 20);
    let mut frames = Vec::new();
    while let Some(f) = p.next_frame() {
        frames.push((f.samples.to_vec(), f.rtp_timestamp_offset, f.marker));
    }
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|(s, _, _)| s.len() == 160));
    let offsets: Vec<u32> = frames.iter().map(|f| f.1).collect();
    assert_eq!(offsets, [0, 160, 320]);
    let markers: Vec<bool> = frames.iter().map(|f| f.2).collect();
    assert_eq!(markers, [true, false, false]);
    assert_eq!(frames[0].0[0], 1);
    assert_eq!(frames[1].0[0], 161);
    // 400 = 2·160 + 80: the last frame is 80 samples of prompt then 80 of silence.
    assert_eq!(frames[2].0[79], 400);
    assert!(frames[2].0[80..].iter().all(|&s| s == 0));
    assert!(p.is_finished());
    assert_eq!(p.state(), PlayerState::Finished);
    assert_eq!(p.position(), 400);
}

#[test]
fn player_pause_resume_sets_marker_and_keeps_position() {
    let mut p = Player::new(ramp(800), 8000, 20);
    p.next_frame().unwrap();
    p.pause();
    assert!(p.next_frame().is_none());
    assert!(p.next_frame().is_none());
    assert!(!p.is_finished());
    p.resume();
    let f = p.next_frame().unwrap();
    assert!(f.marker, "talkspurt restarts after a pause");
    assert_eq!(f.samples[0], 161, "no sample skipped while paused");
    assert_eq!(f.rtp_timestamp_offset, 160);
    assert!(!p.next_frame().unwrap().marker);
}

#[test]
fn player_stop_is_immediate_barge_in() {
    let mut p = Player::new(ramp(8000), 8000, 20);
    p.next_frame().unwrap();
    p.stop();
    assert!(p.next_frame().is_none());
    assert_eq!(p.state(), PlayerState::Stopped);
    assert!(p.is_finished());
    p.resume();
    assert!(p.next_frame().is_none(), "a stopped player stays stopped");
}

#[test]
fn player_g722_timestamps_use_the_8khz_clock() {
    let mut p = Player::new(ramp(1000), 16000, 20).with_clock_rate(16000, 8000);
    assert_eq!(p.samples_per_frame(), 320);
    assert_eq!(p.next_frame().unwrap().rtp_timestamp_offset, 0);
    assert_eq!(p.next_frame().unwrap().rtp_timestamp_offset, 160);
}

#[test]
fn player_shares_the_prompt_buffer() {
    let prompt = ramp(320);
    let mut a = Player::new(prompt.clone(), 8000, 20);
    let mut b = Player::new(prompt.clone(), 8000, 20);
    assert_eq!(Arc::strong_count(&prompt), 3);
    let fa = a.next_frame().unwrap().samples.to_vec();
    let fb = b.next_frame().unwrap().samples.to_vec();
    assert_eq!(fa, fb);
    let empty = Player::new(Vec::new().into(), 8000, 20);
    assert!(empty.is_finished());
}

// ---------------------------------------------------------------------------------------------
// Recorder

#[test]
fn recorder_interleaves_aligned_legs() {
    let mut r = Recorder::new(8000);
    r.push_inbound(0, &[1, 2, 3, 4]).unwrap();
    r.push_outbound(0, &[-1, -2]).unwrap();
    let mut out = Vec::new();
    assert_eq!(r.drain_stereo(&mut out), 2, "only what both legs cover");
    assert_eq!(out, [1, -1, 2, -2]);
    r.push_outbound(2, &[-3, -4]).unwrap();
    assert_eq!(r.drain_stereo(&mut out), 2);
    assert_eq!(out, [1, -1, 2, -2, 3, -3, 4, -4]);
}

#[test]
fn recorder_fills_a_gap_on_one_side_with_silence_at_the_right_samples() {
    let mut r = Recorder::new(8000);
    // Inbound: 20 ms frames at 0 and 320 (the frame at 160 was lost).
    r.push_inbound(0, &[7; 160]).unwrap();
    r.push_inbound(320, &[9; 160]).unwrap();
    // Outbound: continuous.
    r.push_outbound(0, &[5; 480]).unwrap();
    let mut left = Vec::new();
    let mut right = Vec::new();
    assert_eq!(r.drain_legs(&mut left, &mut right), 480);
    assert!(left[..160].iter().all(|&s| s == 7));
    assert!(
        left[160..320].iter().all(|&s| s == 0),
        "the lost frame is silence"
    );
    assert!(
        left[320..].iter().all(|&s| s == 9),
        "and the next frame keeps its place"
    );
    assert!(right.iter().all(|&s| s == 5));
}

#[test]
fn recorder_late_packet_fills_its_gap_if_not_yet_drained() {
    let mut r = Recorder::new(8000);
    r.push_inbound(0, &[1; 160]).unwrap();
    r.push_inbound(320, &[3; 160]).unwrap();
    r.push_inbound(160, &[2; 160]).unwrap(); // reordered, arrives late
    r.push_outbound(0, &[0; 480]).unwrap();
    let mut out = Vec::new();
    r.drain_stereo(&mut out);
    let left: Vec<i16> = out.iter().step_by(2).copied().collect();
    assert!(left[160..320].iter().all(|&s| s == 2));
    // Too late now: that span was written out.
    r.push_inbound(0, &[99; 160]).unwrap();
    r.push_outbound(480, &[0; 10]).unwrap();
    let mut more = Vec::new();
    r.finish_stereo(&mut more);
    assert!(more.iter().all(|&s| s != 99));
}

#[test]
fn recorder_bounds_a_leg_that_runs_ahead() {
    // Max lag 100 ms = 800 samples at 8 kHz.
    let mut r = Recorder::with_max_lag(8000, 100);
    r.push_inbound(0, &[4; 2000]).unwrap(); // the outbound leg is silent (nothing pushed)
    let mut left = Vec::new();
    let mut right = Vec::new();
    assert_eq!(
        r.drain_legs(&mut left, &mut right),
        1200,
        "held back by the 800-sample bound"
    );
    assert!(left.iter().all(|&s| s == 4));
    assert!(right.iter().all(|&s| s == 0));
    // Outbound samples for the span already forced to silence are dropped, later ones kept.
    r.push_outbound(1000, &[6; 400]).unwrap();
    left.clear();
    right.clear();
    let n = r.finish_legs(&mut left, &mut right);
    assert_eq!(n, 800);
    assert!(right[..200].iter().all(|&s| s == 6));
    assert!(right[200..].iter().all(|&s| s == 0));
    assert_eq!(r.drained_position(), 2000);
}

#[test]
fn recorder_finish_flushes_the_longer_leg() {
    let mut r = Recorder::new(8000);
    r.push_outbound(100, &[8; 50]).unwrap();
    let mut out = Vec::new();
    assert_eq!(r.drain_stereo(&mut out), 0, "inbound unknown yet");
    assert_eq!(r.finish_stereo(&mut out), 150);
    assert_eq!(out.len(), 300);
    assert_eq!((out[198], out[199], out[200], out[201]), (0, 0, 0, 8));
}

#[test]
fn recorder_rejects_a_push_far_beyond_the_drained_point() {
    let mut r = Recorder::new(8000);
    let far = 61 * 8000;
    assert_eq!(
        r.push_inbound(far, &[1; 160]),
        Err(RecorderError::TooFarAhead {
            position: far,
            drained: 0
        })
    );
    assert!(r.push_inbound(u64::MAX - 10, &[1; 160]).is_err());
    // A long but bounded gap is fine, and comes out as silence.
    r.push_inbound(59 * 8000, &[1; 160]).unwrap();
    let mut out = Vec::new();
    assert_eq!(r.finish_stereo(&mut out), 59 * 8000 + 160);
}

#[test]
fn interleave_pads_the_shorter_stream() {
    let mut out = Vec::new();
    interleave(&[1, 2, 3], &[4], &mut out);
    assert_eq!(out, [1, 4, 2, 0, 3, 0]);
}

// ---------------------------------------------------------------------------------------------
// Tones

/// Amplitude of the `freq` component of `x` at `rate`.
fn amplitude_at(x: &[i16], rate: f64, freq: f64) -> f64 {
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &s) in x.iter().enumerate() {
        let w = 2.0 * std::f64::consts::PI * freq * n as f64 / rate;
        re += s as f64 * w.cos();
        im -= s as f64 * w.sin();
    }
    2.0 * (re * re + im * im).sqrt() / x.len() as f64
}

#[test]
fn us_ringback_is_440_480_two_on_four_off() {
    let mut g = ToneGenerator::ringback(8000, RingbackStyle::Us);
    let mut pcm = vec![0i16; 8000 * 12];
    assert_eq!(g.fill(&mut pcm), pcm.len(), "ringback repeats forever");
    let on = &pcm[..16000];
    assert!(amplitude_at(on, 8000.0, 440.0) > 1000.0);
    assert!(amplitude_at(on, 8000.0, 480.0) > 1000.0);
    assert!(amplitude_at(on, 8000.0, 1000.0) < 10.0);
    assert!(pcm[16000..48000].iter().all(|&s| s == 0), "4 s off");
    assert!(pcm[48000..64000].iter().any(|&s| s != 0), "second cycle");
}

#[test]
fn eu_ringback_is_425_one_on_four_off() {
    let mut g = ToneGenerator::ringback(8000, RingbackStyle::Eu);
    let mut pcm = vec![0i16; 8000 * 5];
    g.fill(&mut pcm);
    assert!(amplitude_at(&pcm[..8000], 8000.0, 425.0) > 1000.0);
    assert!(pcm[8000..].iter().all(|&s| s == 0));
}

#[test]
fn busy_is_480_620_half_second_cadence() {
    let mut g = ToneGenerator::busy(8000);
    let mut pcm = vec![0i16; 8000 * 2];
    g.fill(&mut pcm);
    assert!(amplitude_at(&pcm[..4000], 8000.0, 480.0) > 500.0);
    assert!(amplitude_at(&pcm[..4000], 8000.0, 620.0) > 500.0);
    assert!(pcm[4000..8000].iter().all(|&s| s == 0));
    assert!(pcm[8000..12000].iter().any(|&s| s != 0));
}

#[test]
fn beep_is_200ms_of_1khz_then_finished() {
    let mut g = ToneGenerator::beep(16000);
    let mut out = Vec::new();
    let mut produced = 0;
    while !g.is_finished() {
        produced += g.next_frame(320, &mut out);
    }
    assert_eq!(produced, 3200);
    assert!(amplitude_at(&out[..3200], 16000.0, 1000.0) > 5000.0);
    assert!(out[3200..].iter().all(|&s| s == 0));
}

#[test]
fn tone_phase_is_continuous_across_frame_sizes() {
    let mut whole = ToneGenerator::busy(8000);
    let mut a = vec![0i16; 4000];
    whole.fill(&mut a);
    let mut pieces = ToneGenerator::busy(8000);
    let mut b = Vec::new();
    for size in [1usize, 7, 160, 33, 240, 80].iter().cycle() {
        if b.len() >= 4000 {
            break;
        }
        let n = (*size).min(4000 - b.len());
        pieces.next_frame(n, &mut b);
    }
    assert_eq!(a, b, "same samples whatever the frame sizes");
    // No jump larger than one sample step of the two sines can make.
    let max_step = a
        .windows(2)
        .map(|w| (w[1] as i32 - w[0] as i32).abs())
        .max()
        .unwrap();
    assert!(max_step < 2000, "click of {max_step}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Frames of one leg: (start position, length, value) with gaps and in any order.
    fn leg() -> impl Strategy<Value = Vec<(u64, usize, i16)>> {
        proptest::collection::vec((0u64..4000, 1usize..200, 1i16..1000), 0..20)
    }

    proptest! {
        /// With a lag bound larger than the recording, the output holds every pushed sample at
        /// its own position (later pushes win on overlap) and zeros everywhere else, whatever
        /// the drain points.
        #[test]
        fn recorder_places_every_sample_at_its_position(
            inbound in leg(),
            outbound in leg(),
            drain_every in 1usize..8,
        ) {
            let mut r = Recorder::with_max_lag(8000, 10_000);
            let mut expect_in = vec![0i16; 8400];
            let mut expect_out = vec![0i16; 8400];
            let mut got_in = Vec::new();
            let mut got_out = Vec::new();
            let n = inbound.len().max(outbound.len());
            for i in 0..n {
                if let Some(&(pos, len, v)) = inbound.get(i) {
                    let pos = pos.max(r.drained_position());
                    r.push_inbound(pos, &vec![v; len]).unwrap();
                    expect_in[pos as usize..pos as usize + len].fill(v);
                }
                if let Some(&(pos, len, v)) = outbound.get(i) {
                    let pos = pos.max(r.drained_position());
                    r.push_outbound(pos, &vec![v; len]).unwrap();
                    expect_out[pos as usize..pos as usize + len].fill(v);
                }
                if i % drain_every == 0 {
                    r.drain_legs(&mut got_in, &mut got_out);
                }
            }
            r.finish_legs(&mut got_in, &mut got_out);
            prop_assert_eq!(got_in.len(), got_out.len());
            let len = got_in.len();
            prop_assert_eq!(&got_in[..], &expect_in[..len]);
            prop_assert_eq!(&got_out[..], &expect_out[..len]);
            prop_assert!(expect_in[len..].iter().all(|&s| s == 0));
            prop_assert!(expect_out[len..].iter().all(|&s| s == 0));
        }
    }
}
