//! DSP hot paths per 20 ms frame: G.711 encode/decode, G.722 encode/decode, in-band DTMF
//! detection, recorder alignment.
//!
//! `cargo bench -p callplane-media --bench dsp -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use media::codec::{Codec, Decoder, Encoder};
use media::dtmf::InbandDetector;
use media::recorder::Recorder;

/// Speech-like test signal: two sines and a little deterministic jitter.
fn signal(rate: f64, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f64 / rate;
            let v = 6000.0 * (std::f64::consts::TAU * 440.0 * t).sin()
                + 3000.0 * (std::f64::consts::TAU * 1230.0 * t).sin()
                + ((i * 7919) % 200) as f64
                - 100.0;
            v as i16
        })
        .collect()
}

fn g711(c: &mut Criterion) {
    let pcm = signal(8000.0, 160);
    for (name, codec) in [("ulaw", Codec::Pcmu), ("alaw", Codec::Pcma)] {
        let mut enc = Encoder::new(codec);
        let mut dec = Decoder::new(codec);
        let mut payload = Vec::with_capacity(160);
        let mut out = Vec::with_capacity(160);
        c.bench_function(&format!("g711_{name}_encode_160"), |b| {
            b.iter(|| {
                payload.clear();
                enc.encode(black_box(&pcm), &mut payload);
                black_box(&payload);
            })
        });
        payload.clear();
        enc.encode(&pcm, &mut payload);
        c.bench_function(&format!("g711_{name}_decode_160"), |b| {
            b.iter(|| {
                out.clear();
                dec.decode(black_box(&payload), &mut out)
                    .expect("G.711 cannot fail");
                black_box(&out);
            })
        });
    }
}

fn g722(c: &mut Criterion) {
    let pcm = signal(16000.0, 320);
    let mut enc = Encoder::new(Codec::G722);
    let mut payload = Vec::with_capacity(160);
    c.bench_function("g722_encode_20ms", |b| {
        b.iter(|| {
            payload.clear();
            enc.encode(black_box(&pcm), &mut payload);
            black_box(&payload);
        })
    });
    let mut dec = Decoder::new(Codec::G722);
    let mut out = Vec::with_capacity(320);
    c.bench_function("g722_decode_20ms", |b| {
        b.iter(|| {
            out.clear();
            dec.decode(black_box(&payload), &mut out)
                .expect("G.722 cannot fail");
            black_box(&out);
        })
    });
}

fn goertzel(c: &mut Criterion) {
    let pcm = signal(8000.0, 160);
    let mut det = InbandDetector::new(8000);
    let mut found = Vec::new();
    c.bench_function("dtmf_inband_detect_160", |b| {
        b.iter(|| {
            det.process(black_box(&pcm), &mut found);
            found.clear();
        })
    });
}

fn recorder(c: &mut Criterion) {
    let inbound = signal(8000.0, 160);
    let outbound = signal(8000.0, 160);
    let mut rec = Recorder::new(8000);
    let mut pos = 0u64;
    let mut out = Vec::with_capacity(320);
    c.bench_function("recorder_push_both_drain_stereo_160", |b| {
        b.iter(|| {
            rec.push_inbound(pos, black_box(&inbound))
                .expect("drained every frame");
            rec.push_outbound(pos, black_box(&outbound))
                .expect("drained every frame");
            pos += 160;
            out.clear();
            rec.drain_stereo(&mut out);
            black_box(&out);
        })
    });
}

criterion_group!(benches, g711, g722, goertzel, recorder);
criterion_main!(benches);
