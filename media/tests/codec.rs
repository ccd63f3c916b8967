//! Codec tests: G.711 bit-exactness against an independent transcription of the ITU-T G.191
//! reference, G.722 round-trip quality, L16 byte order, resampler accuracy and anti-aliasing.

use media::codec::{
    Codec, CodecError, Decoder, Encoder, G722Decoder, G722Encoder, Resampler, g711, resample,
};

// ---------------------------------------------------------------------------------------------
// Reference G.711: a literal transcription of G.191's g711.c (alaw_compress, ulaw_compress,
// alaw_expand, ulaw_expand), with the segment found by a search loop as in the original. It
// shares no code with the library, which builds its tables with a leading-zeros formula.

fn ref_alaw_compress(lin: i16) -> u8 {
    let mut ix: i32 = if lin < 0 {
        (!lin as i32) >> 4
    } else {
        (lin as i32) >> 4
    };
    if ix > 15 {
        let mut iexp = 1;
        while ix > 16 + 15 {
            ix >>= 1;
            iexp += 1;
        }
        ix -= 16;
        ix += iexp << 4;
    }
    if lin >= 0 {
        ix |= 0x0080;
    }
    (ix ^ 0x0055) as u8
}

fn ref_ulaw_compress(lin: i16) -> u8 {
    let mut absno: i32 = if lin < 0 {
        ((!lin as i32) >> 2) + 33
    } else {
        ((lin as i32) >> 2) + 33
    };
    if absno > 0x1FFF {
        absno = 0x1FFF;
    }
    let mut i = absno >> 6;
    let mut segno = 1;
    while i != 0 {
        segno += 1;
        i >>= 1;
    }
    let high_nibble = 0x0008 - segno;
    let mut low_nibble = (absno >> segno) & 0x000F;
    low_nibble = 0x000F - low_nibble;
    let mut code = (high_nibble << 4) | low_nibble;
    if lin >= 0 {
        code |= 0x0080;
    }
    code as u8
}

#[test]
fn ulaw_encode_matches_g191_for_all_65536_inputs() {
    for x in i16::MIN..=i16::MAX {
        assert_eq!(g711::ulaw_encode(x), ref_ulaw_compress(x), "input {x}");
    }
}

#[test]
fn alaw_encode_matches_g191_for_all_65536_inputs() {
    for x in i16::MIN..=i16::MAX {
        assert_eq!(g711::alaw_encode(x), ref_alaw_compress(x), "input {x}");
    }
}

/// G.191 `ulaw_expand` output for codes 0x00..=0x7F (negative half); codes 0x80..=0xFF are the
/// same magnitudes, positive. Values as in the ITU/Sun decode table.
const ULAW_NEGATIVE: [i16; 128] = [
    -32124, -31100, -30076, -29052, -28028, -27004, -25980, -24956, -23932, -22908, -21884, -20860,
    -19836, -18812, -17788, -16764, -15996, -15484, -14972, -14460, -13948, -13436, -12924, -12412,
    -11900, -11388, -10876, -10364, -9852, -9340, -8828, -8316, -7932, -7676, -7420, -7164, -6908,
    -6652, -6396, -6140, -5884, -5628, -5372, -5116, -4860, -4604, -4348, -4092, -3900, -3772,
    -3644, -3516, -3388, -3260, -3132, -3004, -2876, -2748, -2620, -2492, -2364, -2236, -2108,
    -1980, -1884, -1820, -1756, -1692, -1628, -1564, -1500, -1436, -1372, -1308, -1244, -1180,
    -1116, -1052, -988, -924, -876, -844, -812, -780, -748, -716, -684, -652, -620, -588, -556,
    -524, -492, -460, -428, -396, -372, -356, -340, -324, -308, -292, -276, -260, -244, -228, -212,
    -196, -180, -164, -148, -132, -120, -112, -104, -96, -88, -80, -72, -64, -56, -48, -40, -32,
    -24, -16, -8, 0,
];

/// G.191 `alaw_expand` output for codes 0x00..=0x7F (negative half, before the 0x55 XOR is
/// undone); codes 0x80..=0xFF are the same magnitudes, positive.
const ALAW_NEGATIVE: [i16; 128] = [
    -5504, -5248, -6016, -5760, -4480, -4224, -4992, -4736, -7552, -7296, -8064, -7808, -6528,
    -6272, -7040, -6784, -2752, -2624, -3008, -2880, -2240, -2112, -2496, -2368, -3776, -3648,
    -4032, -3904, -3264, -3136, -3520, -3392, -22016, -20992, -24064, -23040, -17920, -16896,
    -19968, -18944, -30208, -29184, -32256, -31232, -26112, -25088, -28160, -27136, -11008, -10496,
    -12032, -11520, -8960, -8448, -9984, -9472, -15104, -14592, -16128, -15616, -13056, -12544,
    -14080, -13568, -344, -328, -376, -360, -280, -264, -312, -296, -472, -456, -504, -488, -408,
    -392, -440, -424, -88, -72, -120, -104, -24, -8, -56, -40, -216, -200, -248, -232, -152, -136,
    -184, -168, -1376, -1312, -1504, -1440, -1120, -1056, -1248, -1184, -1888, -1824, -2016, -1952,
    -1632, -1568, -1760, -1696, -688, -656, -752, -720, -560, -528, -624, -592, -944, -912, -1008,
    -976, -816, -784, -880, -848,
];

#[test]
fn ulaw_decode_matches_itu_table_for_all_256_codes() {
    for code in 0..=255u8 {
        let expected = if code < 0x80 {
            ULAW_NEGATIVE[code as usize]
        } else {
            -ULAW_NEGATIVE[(code - 0x80) as usize]
        };
        assert_eq!(g711::ulaw_decode(code), expected, "code {code:#04x}");
    }
}

#[test]
fn alaw_decode_matches_itu_table_for_all_256_codes() {
    for code in 0..=255u8 {
        let expected = if code < 0x80 {
            ALAW_NEGATIVE[code as usize]
        } else {
            -ALAW_NEGATIVE[(code - 0x80) as usize]
        };
        assert_eq!(g711::alaw_decode(code), expected, "code {code:#04x}");
    }
}

#[test]
fn g711_known_values() {
    assert_eq!(g711::ulaw_encode(0), 0xFF);
    assert_eq!(g711::alaw_encode(0), 0xD5);
    assert_eq!(g711::ulaw_encode(-1), 0x7F);
    assert_eq!(g711::alaw_encode(-1), 0x55);
    assert_eq!(g711::ulaw_encode(i16::MAX), 0x80);
    assert_eq!(g711::ulaw_encode(i16::MIN), 0x00);
    assert_eq!(g711::alaw_encode(i16::MAX), 0xAA);
    assert_eq!(g711::alaw_encode(i16::MIN), 0x2A);
    assert_eq!(g711::ulaw_decode(0xFF), 0);
    assert_eq!(g711::ulaw_decode(0x80), 32124);
    assert_eq!(g711::alaw_decode(0xD5), 8);
    assert_eq!(g711::alaw_decode(0xAA), 32256);
}

#[test]
fn g711_decode_then_encode_is_identity_on_codes() {
    for code in 0..=255u8 {
        assert_eq!(g711::alaw_encode(g711::alaw_decode(code)), code);
        // µ-law has two zeros (0x7F and 0xFF, both decode to 0); 0 encodes as 0xFF.
        let expect = if code == 0x7F { 0xFF } else { code };
        assert_eq!(g711::ulaw_encode(g711::ulaw_decode(code)), expect);
    }
}

// ---------------------------------------------------------------------------------------------
// Codec enum and enum dispatch.

#[test]
fn codec_rtp_facts() {
    assert_eq!(Codec::Pcmu.static_payload_type(), Some(0));
    assert_eq!(Codec::Pcma.static_payload_type(), Some(8));
    assert_eq!(Codec::G722.static_payload_type(), Some(9));
    assert_eq!(
        Codec::L16 {
            rate: 16000,
            channels: 1
        }
        .static_payload_type(),
        None
    );
    assert_eq!(Codec::G722.clock_rate(), 8000);
    assert_eq!(Codec::G722.sample_rate(), 16000);
    assert_eq!(Codec::G722.samples_per_frame(20), 320);
    assert_eq!(Codec::G722.timestamp_increment(20), 160);
    assert_eq!(Codec::G722.payload_bytes(20), 160);
    assert_eq!(Codec::Pcma.rtpmap_name(), "PCMA");
    assert_eq!(Codec::from_rtpmap("pcmu", 8000, None), Some(Codec::Pcmu));
    assert_eq!(Codec::from_rtpmap("G722", 8000, Some(1)), Some(Codec::G722));
    assert_eq!(Codec::from_rtpmap("PCMU", 16000, None), None);
    assert_eq!(
        Codec::from_static_payload_type(11),
        Some(Codec::L16 {
            rate: 44100,
            channels: 1
        })
    );
    for pt in [0u8, 8, 9, 10, 11] {
        let c = Codec::from_static_payload_type(pt).unwrap();
        assert_eq!(c.static_payload_type(), Some(pt));
    }
}

#[test]
fn encoder_decoder_enums_dispatch_to_g711() {
    let pcm: Vec<i16> = (0..160).map(|i| (i * 97 - 8000) as i16).collect();
    for (codec, enc_fn, dec_fn) in [
        (
            Codec::Pcmu,
            g711::ulaw_encode as fn(i16) -> u8,
            g711::ulaw_decode as fn(u8) -> i16,
        ),
        (Codec::Pcma, g711::alaw_encode, g711::alaw_decode),
    ] {
        let mut enc = Encoder::new(codec);
        let mut payload = Vec::new();
        enc.encode(&pcm, &mut payload);
        let expected: Vec<u8> = pcm.iter().map(|&x| enc_fn(x)).collect();
        assert_eq!(payload, expected);
        let mut dec = Decoder::new(codec);
        let mut out = Vec::new();
        dec.decode(&payload, &mut out).unwrap();
        let expected: Vec<i16> = payload.iter().map(|&c| dec_fn(c)).collect();
        assert_eq!(out, expected);
    }
}

#[test]
fn l16_is_big_endian_and_rejects_odd_payloads() {
    let codec = Codec::L16 {
        rate: 16000,
        channels: 1,
    };
    let mut enc = Encoder::new(codec);
    let mut payload = Vec::new();
    enc.encode(&[0x0102, -2], &mut payload);
    assert_eq!(payload, [0x01, 0x02, 0xFF, 0xFE]);
    let mut dec = Decoder::new(codec);
    let mut out = Vec::new();
    dec.decode(&payload, &mut out).unwrap();
    assert_eq!(out, [0x0102, -2]);
    assert_eq!(
        dec.decode(&[1, 2, 3], &mut out),
        Err(CodecError::TruncatedL16 {
            len: 3,
            channels: 1
        })
    );
    assert_eq!(out.len(), 2, "a rejected payload appends nothing");
    let mut stereo = Decoder::new(Codec::L16 {
        rate: 44100,
        channels: 2,
    });
    assert!(stereo.decode(&[0, 1], &mut out).is_err());
    assert!(stereo.decode(&[0, 1, 0, 2], &mut out).is_ok());
}

// ---------------------------------------------------------------------------------------------
// G.722

fn sine(rate: u32, freq: f64, amplitude: f64, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            (amplitude * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()).round()
                as i16
        })
        .collect()
}

/// SNR in dB of `out` against `reference` delayed by the best lag in 0..max_lag.
fn best_snr(reference: &[i16], out: &[i16], skip: usize, max_lag: usize) -> (f64, usize) {
    let mut best = (f64::MIN, 0);
    for lag in 16..max_lag {
        let mut sig = 0.0;
        let mut err = 0.0;
        for i in skip..reference.len() - max_lag {
            let r = reference[i] as f64;
            let o = out[i + lag] as f64;
            sig += r * r;
            err += (r - o) * (r - o);
        }
        let snr = 10.0 * (sig / err.max(1e-9)).log10();
        if snr > best.0 {
            best = (snr, lag);
        }
    }
    best
}

#[test]
fn g722_sine_round_trip_snr_above_20_db() {
    let pcm = sine(16000, 1000.0, 10000.0, 16000);
    let mut enc = G722Encoder::new();
    let mut payload = Vec::new();
    // Odd chunk sizes exercise the pending-sample path.
    for chunk in pcm.chunks(333) {
        enc.encode(chunk, &mut payload);
    }
    assert_eq!(payload.len(), 8000);
    let mut dec = G722Decoder::new();
    let mut out = Vec::new();
    for chunk in payload.chunks(160) {
        dec.decode(chunk, &mut out);
    }
    assert_eq!(out.len(), 16000);
    // The QMF pair delays the signal by about 22 samples (two 24-tap filters); a 1 kHz sine
    // repeats every 16 samples, so search one period from 16 on.
    let (snr, lag) = best_snr(&pcm, &out, 1600, 40);
    assert!(snr > 20.0, "SNR {snr:.1} dB at lag {lag}");
}

/// Integer-only test signal (triangle + hashed noise + envelope + bursts), so that the same
/// samples can be produced bit for bit in C.
fn g722_test_signal(n: i32) -> i16 {
    let mut s = (n as u32).wrapping_mul(1664525).wrapping_add(1013904223);
    s ^= s >> 13;
    s = s.wrapping_mul(2654435761);
    s ^= s >> 16;
    let m = n % 37;
    let tri = if m < 19 {
        m * 800 - 7200
    } else {
        (36 - m) * 800 - 7200
    };
    let noise = (s % 4001) as i32 - 2000;
    let env = if n % 4000 < 2000 {
        n % 4000
    } else {
        4000 - n % 4000
    };
    let burst = if (n / 500) % 2 == 1 { 9000 } else { -9000 };
    ((tri + noise) * env / 2000 + burst * (n % 3 == 0) as i32) as i16
}

fn fnv1a(values: impl Iterator<Item = u64>) -> u64 {
    let mut h: u64 = 1469598103934665603;
    for v in values {
        h ^= v;
        h = h.wrapping_mul(1099511628211);
    }
    h
}

/// Golden values from spandsp 0.0.6's `g722_encode`/`g722_decode` (64 kbit/s, no options)
/// over the same signal, computed once with a small C program against Debian's libspandsp.
/// spandsp passes the ITU-T G.722 test vectors; matching it bit for bit stands in for them.
#[test]
fn g722_is_bit_exact_with_spandsp() {
    let pcm: Vec<i16> = (0..16000).map(g722_test_signal).collect();
    let mut enc = G722Encoder::new();
    let mut payload = Vec::new();
    enc.encode(&pcm, &mut payload);
    assert_eq!(
        payload[..16],
        [
            44, 132, 32, 132, 35, 132, 143, 14, 145, 211, 19, 149, 215, 22, 151, 217
        ]
    );
    assert_eq!(
        payload[4000..4016],
        [
            176, 248, 91, 248, 96, 4, 9, 171, 184, 54, 150, 184, 249, 87, 126, 220
        ]
    );
    assert_eq!(fnv1a(payload.iter().map(|&b| b as u64)), 0xe9dfbf1a5394d1d6);
    let mut dec = G722Decoder::new();
    let mut out = Vec::new();
    dec.decode(&payload, &mut out);
    assert_eq!(out[8000..8008], [21, 345, 8746, -100, 266, 8914, -202, 305]);
    assert_eq!(
        fnv1a(out.iter().map(|&s| s as u16 as u64)),
        0xe16694b198ddcf99
    );
}

#[test]
fn g722_silence_stays_silent() {
    let mut enc = Encoder::new(Codec::G722);
    let mut dec = Decoder::new(Codec::G722);
    let mut payload = Vec::new();
    enc.encode(&vec![0i16; 3200], &mut payload);
    let mut out = Vec::new();
    dec.decode(&payload, &mut out).unwrap();
    let peak = out.iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!(peak <= 8, "peak {peak} after silence");
}

#[test]
fn g722_decodes_arbitrary_bytes_without_panicking() {
    let mut dec = G722Decoder::new();
    let mut out = Vec::new();
    let junk: Vec<u8> = (0..4000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    dec.decode(&junk, &mut out);
    assert_eq!(out.len(), 8000);
}

// ---------------------------------------------------------------------------------------------
// Resampler

/// Amplitude of the `freq` component of `x` (single-bin DFT), and the RMS of `x`.
fn tone_amplitude(x: &[i16], rate: u32, freq: f64) -> f64 {
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &s) in x.iter().enumerate() {
        let w = 2.0 * std::f64::consts::PI * freq * n as f64 / rate as f64;
        re += s as f64 * w.cos();
        im -= s as f64 * w.sin();
    }
    2.0 * (re * re + im * im).sqrt() / x.len() as f64
}

fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

#[test]
fn resampling_keeps_a_1khz_sine_frequency_and_amplitude() {
    for from in [44100u32, 48000, 16000, 22050, 32000] {
        let input = sine(from, 1000.0, 10000.0, from as usize); // 1 s
        let out = resample(&input, from, 8000).unwrap();
        assert_eq!(out.len(), 8000, "{from} Hz -> 8 kHz length");
        let mid = &out[800..7200]; // skip the edges
        let amp = tone_amplitude(mid, 8000, 1000.0);
        let db = 20.0 * (amp / 10000.0).log10();
        assert!(db.abs() < 1.0, "{from} Hz: 1 kHz at {db:.2} dB");
        // The energy is at 1 kHz (same frequency): the 1 kHz component carries nearly all of it.
        let sine_rms = amp / 2f64.sqrt();
        assert!(sine_rms / rms(mid) > 0.99, "{from} Hz: energy off 1 kHz");
    }
}

#[test]
fn resampling_44k1_to_8k_attenuates_a_6khz_tone_by_more_than_40_db() {
    let input = sine(44100, 6000.0, 10000.0, 44100);
    let out = resample(&input, 44100, 8000).unwrap();
    let level = rms(&out[800..7200]) / (10000.0 / 2f64.sqrt());
    let db = 20.0 * level.log10();
    assert!(db < -40.0, "6 kHz leaks at {db:.1} dB");
}

#[test]
fn upsampling_8k_to_16k_keeps_a_1khz_sine() {
    let input = sine(8000, 1000.0, 8000.0, 8000);
    let out = resample(&input, 8000, 16000).unwrap();
    assert_eq!(out.len(), 16000);
    let amp = tone_amplitude(&out[1600..14400], 16000, 1000.0);
    assert!((20.0 * (amp / 8000.0).log10()).abs() < 1.0);
}

#[test]
fn streaming_resampler_equals_one_shot() {
    let input = sine(48000, 440.0, 5000.0, 9600);
    let one_shot = resample(&input, 48000, 8000).unwrap();
    let mut r = Resampler::new(48000, 8000).unwrap();
    let mut streamed = Vec::new();
    for chunk in input.chunks(441) {
        r.process(chunk, &mut streamed);
    }
    r.flush(&mut streamed);
    assert_eq!(streamed, one_shot);
}

#[test]
fn resampler_rejects_zero_and_unreasonable_rates() {
    assert!(Resampler::new(0, 8000).is_err());
    assert!(Resampler::new(44100, 8009).is_err());
    assert!(
        Resampler::new(u32::MAX, 1).is_err(),
        "absurd ratio, not a huge filter"
    );
    assert!(Resampler::new(8000, 1_000_000).is_err());
    assert!(Resampler::new(384_000, 8000).is_ok());
    assert_eq!(resample(&[1, 2, 3], 8000, 8000).unwrap(), vec![1, 2, 3]);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Chunking never changes the resampler's output.
        #[test]
        fn resampler_output_is_independent_of_chunking(
            chunks in proptest::collection::vec(0usize..700, 1..12),
            from in prop_oneof![Just(44100u32), Just(48000), Just(16000), Just(11025)],
        ) {
            let total: usize = chunks.iter().sum();
            let input: Vec<i16> = (0..total).map(|i| ((i * 7919) % 20001) as i16 - 10000).collect();
            let whole = resample(&input, from, 8000).unwrap();
            let mut r = Resampler::new(from, 8000).unwrap();
            let mut out = Vec::new();
            let mut at = 0;
            for c in chunks {
                r.process(&input[at..at + c], &mut out);
                at += c;
            }
            r.flush(&mut out);
            prop_assert_eq!(out, whole);
        }

        /// G.722 chunking (odd sizes included) never changes the encoded bytes.
        #[test]
        fn g722_encoding_is_independent_of_chunking(chunks in proptest::collection::vec(0usize..100, 1..20)) {
            let total: usize = chunks.iter().sum();
            let pcm: Vec<i16> = (0..total as i32).map(g722_test_signal).collect();
            let mut whole = Vec::new();
            G722Encoder::new().encode(&pcm, &mut whole);
            let mut enc = G722Encoder::new();
            let mut out = Vec::new();
            let mut at = 0;
            for c in chunks {
                enc.encode(&pcm[at..at + c], &mut out);
                at += c;
            }
            prop_assert_eq!(out, whole);
        }
    }
}
