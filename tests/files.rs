//! The `files` module against real files: prompts written by `hound` in every common layout,
//! the recording writer read back by `hound`, and crash recovery after `mem::forget` and after a
//! real SIGKILL of a child process that is recording.

use std::f64::consts::PI;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use callplane::files::{
    PromptCache, PromptConfig, PromptError, RecordingError, RecordingWriter, RecoveryError,
    load_prompt, load_prompt_with, recover_partials,
};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Helpers

#[derive(Clone, Copy)]
enum Width {
    Int(u16),
    Float,
}

/// Writes a WAV with hound; `signal(frame, channel)` is in [-1, 1].
fn write_wav(
    path: &Path,
    rate: u32,
    channels: u16,
    width: Width,
    frames: usize,
    signal: impl Fn(usize, u16) -> f64,
) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: match width {
            Width::Int(b) => b,
            Width::Float => 32,
        },
        sample_format: match width {
            Width::Int(_) => hound::SampleFormat::Int,
            Width::Float => hound::SampleFormat::Float,
        },
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create wav");
    for i in 0..frames {
        for c in 0..channels {
            let x = signal(i, c);
            match width {
                Width::Float => w.write_sample(x as f32).expect("write"),
                Width::Int(bits) => {
                    let full = (1i64 << (bits - 1)) as f64;
                    let v = (x * full).round().clamp(-full, full - 1.0) as i32;
                    w.write_sample(v).expect("write");
                }
            }
        }
    }
    w.finalize().expect("finalize wav");
}

fn sine(freq: f64, rate: u32, amplitude: f64) -> impl Fn(usize, u16) -> f64 {
    move |i, _| amplitude * (2.0 * PI * freq * i as f64 / rate as f64).sin()
}

fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Sign changes in `x`: a pure tone of `f` Hz has 2·f per second.
fn zero_crossings(x: &[i16]) -> usize {
    x.windows(2).filter(|w| (w[0] >= 0) != (w[1] >= 0)).count()
}

/// Goertzel power of `freq` in `x` sampled at `rate`.
fn goertzel(x: &[i16], freq: f64, rate: u32) -> f64 {
    let coeff = 2.0 * (2.0 * PI * freq / rate as f64).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = v as f64 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).expect("read file")))
}

/// The deterministic test signal of the recorder tests: interleaved sample `n`.
fn pattern(n: u64) -> i16 {
    ((n.wrapping_mul(7919) ^ (n >> 3)) & 0xffff) as u16 as i16
}

fn pattern_samples(from: u64, count: usize) -> Vec<i16> {
    (from..from + count as u64).map(pattern).collect()
}

fn read_all(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let mut r = hound::WavReader::open(path).expect("hound opens the file");
    let spec = r.spec();
    let samples = r
        .samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .expect("hound reads every sample");
    (spec, samples)
}

fn part_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".wav.part"))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// Prompts

#[test]
fn prompts_at_common_rates_mono_and_stereo_come_out_at_8k_with_tone_and_level_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    for rate in [8000u32, 11025, 16000, 22050, 44100, 48000] {
        for channels in [1u16, 2] {
            let path = dir.path().join(format!("tone-{rate}-{channels}.wav"));
            // One second of 1 kHz at half scale, the same on both channels.
            write_wav(
                &path,
                rate,
                channels,
                Width::Int(16),
                rate as usize,
                sine(1000.0, rate, 0.5),
            );
            let p = load_prompt(&path, 8000).expect("prompt loads");
            let what = format!("{rate} Hz, {channels} ch");
            assert_eq!(p.rate, 8000, "{what}");
            assert_eq!(p.samples.len(), 8000, "{what}");
            assert_eq!(p.duration, Duration::from_secs(1), "{what}");
            assert_eq!((p.source_rate, p.source_channels), (rate, channels));

            // The middle half second, away from the filter's edges.
            let mid = &p.samples[2000..6000];
            let zc = zero_crossings(mid);
            assert!((998..=1002).contains(&zc), "{what}: {zc} zero crossings");
            let on = goertzel(mid, 1000.0, 8000);
            let off = goertzel(mid, 1500.0, 8000).max(goertzel(mid, 700.0, 8000));
            assert!(on > off * 1e4, "{what}: 1 kHz not dominant ({on} vs {off})");
            let expected = 0.5 * 32768.0 / 2f64.sqrt();
            let level = rms(mid);
            assert!(
                (level / expected - 1.0).abs() < 0.03,
                "{what}: level {level} vs {expected}"
            );
        }
    }
}

#[test]
fn prompt_sample_widths_and_float_are_scaled_to_16_bit() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, width) in [
        ("8bit", Width::Int(8)),
        ("24bit", Width::Int(24)),
        ("32bit", Width::Int(32)),
        ("float", Width::Float),
    ] {
        let path = dir.path().join(format!("{name}.wav"));
        write_wav(&path, 16000, 2, width, 16000, sine(1000.0, 16000, 0.25));
        let p = load_prompt(&path, 8000).expect("prompt loads");
        assert_eq!(p.samples.len(), 8000, "{name}");
        let mid = &p.samples[2000..6000];
        let expected = 0.25 * 32768.0 / 2f64.sqrt();
        let level = rms(mid);
        assert!(
            (level / expected - 1.0).abs() < 0.03,
            "{name}: level {level} vs {expected}"
        );
        assert!(
            (998..=1002).contains(&zero_crossings(mid)),
            "{name}: frequency changed"
        );
    }
}

#[test]
fn stereo_is_averaged_to_mono_and_16_bit_mono_at_target_rate_is_bit_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stereo = dir.path().join("stereo.wav");
    // Left 1000, right 3000 (as fractions of full scale): the average is 2000.
    write_wav(&stereo, 8000, 2, Width::Int(16), 800, |_, c| {
        if c == 0 {
            1000.0 / 32768.0
        } else {
            3000.0 / 32768.0
        }
    });
    let p = load_prompt(&stereo, 8000).expect("loads");
    assert!(p.samples.iter().all(|&s| s == 2000), "average of L and R");

    let mono = dir.path().join("mono.wav");
    let original: Vec<i16> = (0..8000u64).map(pattern).collect();
    write_wav(&mono, 8000, 1, Width::Int(16), original.len(), |i, _| {
        original[i] as f64 / 32768.0
    });
    let p = load_prompt(&mono, 8000).expect("loads");
    assert_eq!(&p.samples[..], &original[..]);
}

#[test]
fn missing_prompt_is_not_found_and_the_error_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.wav");
    let err = load_prompt(&path, 8000).expect_err("missing file");
    assert!(matches!(err, PromptError::NotFound { .. }), "{err:?}");
    assert_eq!(err.path(), path);
    assert!(err.to_string().contains("nope.wav"), "{err}");
    let mut cache = PromptCache::default();
    let err = cache.get(&path, 8000).expect_err("missing file");
    assert!(matches!(err, PromptError::NotFound { .. }), "{err:?}");
}

#[test]
fn garbage_and_truncated_files_are_invalid_wav() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.wav");
    fs::write(
        &garbage,
        b"ID3\x03\x00 this is an mp3, not a wav file at all",
    )
    .expect("write");
    let err = load_prompt(&garbage, 8000).expect_err("garbage");
    assert!(matches!(err, PromptError::InvalidWav { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage.wav"), "{err}");

    let good = dir.path().join("good.wav");
    write_wav(&good, 8000, 1, Width::Int(16), 8000, sine(440.0, 8000, 0.3));
    let bytes = fs::read(&good).expect("read");

    let header_cut = dir.path().join("header-cut.wav");
    fs::write(&header_cut, &bytes[..30]).expect("write");
    let err = load_prompt(&header_cut, 8000).expect_err("cut header");
    assert!(matches!(err, PromptError::InvalidWav { .. }), "{err:?}");

    let data_cut = dir.path().join("data-cut.wav");
    fs::write(&data_cut, &bytes[..bytes.len() - 1000]).expect("write");
    let err = load_prompt(&data_cut, 8000).expect_err("cut data");
    assert!(matches!(err, PromptError::InvalidWav { .. }), "{err:?}");
}

/// A hand-made WAV header with format tag `format` (6 = A-law), `channels`, 8 kHz, 8 bits.
fn raw_wav(format: u16, channels: u16, bits: u16, data: &[u8]) -> Vec<u8> {
    // Compressed formats have blocks of many samples (IMA ADPCM: 256 bytes).
    let block = if bits < 8 { 256 } else { channels * bits / 8 };
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&format.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&8000u32.to_le_bytes());
    v.extend_from_slice(&(8000 * block as u32).to_le_bytes());
    v.extend_from_slice(&block.to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn alaw_adpcm_and_multichannel_wavs_are_unsupported() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in [
        ("alaw", raw_wav(6, 1, 8, &[0xd5; 800])),
        ("mulaw", raw_wav(7, 1, 8, &[0xff; 800])),
        ("adpcm", raw_wav(2, 1, 4, &[0; 512])),
    ] {
        let path = dir.path().join(format!("{name}.wav"));
        fs::write(&path, bytes).expect("write");
        let err = load_prompt(&path, 8000).expect_err(name);
        assert!(
            matches!(err, PromptError::Unsupported { .. }),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
    let double = dir.path().join("f64.wav");
    fs::write(&double, raw_wav(3, 1, 64, &[0; 800])).expect("write");
    let err = load_prompt(&double, 8000).expect_err("64-bit float");
    assert!(matches!(err, PromptError::Unsupported { .. }), "{err:?}");
    let surround = dir.path().join("surround.wav");
    write_wav(&surround, 8000, 3, Width::Int(16), 800, |_, _| 0.1);
    let err = load_prompt(&surround, 8000).expect_err("3 channels");
    assert!(matches!(err, PromptError::Unsupported { .. }), "{err:?}");
}

#[test]
fn empty_prompt_is_empty_and_over_long_prompt_is_too_long() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.wav");
    write_wav(&empty, 16000, 1, Width::Int(16), 0, |_, _| 0.0);
    let err = load_prompt(&empty, 8000).expect_err("empty");
    assert!(matches!(err, PromptError::Empty { .. }), "{err:?}");

    let long = dir.path().join("long.wav");
    write_wav(
        &long,
        8000,
        1,
        Width::Int(16),
        16000,
        sine(440.0, 8000, 0.3),
    );
    let config = PromptConfig {
        max_duration: Duration::from_millis(1500),
    };
    let err = load_prompt_with(&long, 8000, &config).expect_err("too long");
    match err {
        PromptError::TooLong { duration, max, .. } => {
            assert_eq!(duration, Duration::from_secs(2));
            assert_eq!(max, Duration::from_millis(1500));
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    let mut cache = PromptCache::new(config);
    assert!(matches!(
        cache.get(&long, 8000),
        Err(PromptError::TooLong { .. })
    ));
}

#[test]
fn cache_decodes_each_file_and_rate_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hello.wav");
    write_wav(
        &path,
        16000,
        1,
        Width::Int(16),
        16000,
        sine(1000.0, 16000, 0.5),
    );
    let mut cache = PromptCache::default();
    let a = cache.get(&path, 8000).expect("loads");
    let b = cache.get(&path, 8000).expect("loads");
    assert!(Arc::ptr_eq(&a.samples, &b.samples), "second get is a hit");
    // Another spelling of the same file shares the entry (canonical path).
    let other_spelling = dir.path().join(".").join("hello.wav");
    let c = cache.get(&other_spelling, 8000).expect("loads");
    assert!(Arc::ptr_eq(&a.samples, &c.samples));
    assert_eq!(cache.decodes(), 1);
    // Another rate is another entry.
    let wide = cache.get(&path, 16000).expect("loads");
    assert_eq!(wide.samples.len(), 16000);
    assert_eq!(cache.decodes(), 2);
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.invalidate(&path), 2);
    let d = cache.get(&path, 8000).expect("loads");
    assert!(!Arc::ptr_eq(&a.samples, &d.samples));
    assert_eq!(cache.decodes(), 3);
}

#[test]
fn cache_reloads_a_file_that_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("menu.wav");
    write_wav(
        &path,
        8000,
        1,
        Width::Int(16),
        8000,
        sine(1000.0, 8000, 0.5),
    );
    let mut cache = PromptCache::default();
    let first = cache.get(&path, 8000).expect("loads");
    assert_eq!(first.duration, Duration::from_secs(1));

    // Re-recorded, longer: the length differs.
    write_wav(
        &path,
        8000,
        1,
        Width::Int(16),
        12000,
        sine(1000.0, 8000, 0.5),
    );
    let second = cache.get(&path, 8000).expect("reloads");
    assert!(!Arc::ptr_eq(&first.samples, &second.samples));
    assert_eq!(second.duration, Duration::from_millis(1500));

    // Edited in place to the same length: only the modification time tells. Set it explicitly
    // so the test does not depend on the filesystem's timestamp granularity.
    let before = fs::metadata(&path)
        .expect("stat")
        .modified()
        .expect("mtime");
    let mut edited = fs::read(&path).expect("read");
    for b in &mut edited[44..] {
        *b = 0; // silence
    }
    fs::write(&path, &edited).expect("write");
    let f = fs::File::options().write(true).open(&path).expect("open");
    f.set_modified(before + Duration::from_secs(5))
        .expect("set mtime");
    drop(f);
    let third = cache.get(&path, 8000).expect("reloads");
    assert!(!Arc::ptr_eq(&second.samples, &third.samples));
    assert!(third.samples.iter().all(|&s| s == 0), "new content loaded");
    assert_eq!(cache.decodes(), 3);
    // And unchanged since: a hit again.
    let fourth = cache.get(&path, 8000).expect("hit");
    assert!(Arc::ptr_eq(&third.samples, &fourth.samples));
}

// ---------------------------------------------------------------------------------------------
// Recording

#[test]
fn finished_recording_is_read_by_hound_with_the_exact_samples_and_checksum() {
    let dir = tempfile::tempdir().expect("tempdir");
    for channels in [2u16, 1] {
        let name = format!("call-{channels}");
        let mut w = RecordingWriter::create(dir.path(), &name, 8000, channels).expect("create");
        assert!(w.part_path().exists());
        let per_chunk = 160 * channels as usize;
        let total = per_chunk * 115; // 2.3 s
        let mut n = 0u64;
        while (n as usize) < total {
            w.write_samples(&pattern_samples(n, per_chunk))
                .expect("write");
            n += per_chunk as u64;
        }
        let done = w.finalize().expect("finalize");
        assert_eq!(done.path, dir.path().join(format!("{name}.wav")));
        assert!(!dir.path().join(format!("{name}.wav.part")).exists());
        assert_eq!(done.frames, 18400);
        assert_eq!(done.duration, Duration::from_millis(2300));
        assert_eq!((done.rate, done.channels), (8000, channels));
        assert_eq!(done.bytes, 44 + total as u64 * 2);
        assert_eq!(fs::metadata(&done.path).expect("stat").len(), done.bytes);
        assert_eq!(done.sha256, sha256_hex(&done.path));

        let (spec, samples) = read_all(&done.path);
        assert_eq!(spec.channels, channels);
        assert_eq!(spec.sample_rate, 8000);
        assert_eq!(spec.bits_per_sample, 16);
        assert_eq!(spec.sample_format, hound::SampleFormat::Int);
        assert_eq!(samples, pattern_samples(0, total));
    }
}

#[test]
fn writer_keeps_a_valid_prefix_on_disk_flushed_every_second_of_audio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = RecordingWriter::create(dir.path(), "live", 8000, 2).expect("create");
    let part = w.part_path().to_path_buf();
    // Right after create the file is already a valid, empty WAV.
    assert_eq!(read_all(&part).1.len(), 0);
    let mut n = 0u64;
    for _ in 0..175 {
        // 20 ms chunks, 3.5 s in all.
        w.write_samples(&pattern_samples(n, 320)).expect("write");
        n += 320;
        let written_frames = n / 2;
        let (_, on_disk) = read_all(&part);
        let disk_frames = on_disk.len() as u64 / 2;
        assert!(
            disk_frames + 8000 >= written_frames,
            "{written_frames} written, only {disk_frames} on disk"
        );
        assert_eq!(disk_frames, w.frames_flushed());
        assert_eq!(on_disk, pattern_samples(0, on_disk.len()), "a prefix");
    }
    assert_eq!(w.frames_flushed(), 24000);
    w.flush().expect("flush");
    let (_, on_disk) = read_all(&part);
    assert_eq!(on_disk, pattern_samples(0, n as usize));
    w.discard().expect("discard");
    assert!(!part.exists());
}

#[test]
fn one_long_write_is_flushed_at_every_second_inside_the_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = RecordingWriter::create(dir.path(), "bulk", 8000, 1).expect("create");
    w.write_samples(&pattern_samples(0, 28000))
        .expect("write 3.5 s at once");
    assert_eq!(w.frames_written(), 28000);
    assert_eq!(w.frames_flushed(), 24000, "flushed at 1, 2 and 3 s");
    let (_, on_disk) = read_all(w.part_path());
    assert_eq!(on_disk.len(), 24000);
    w.finalize().expect("finalize");
}

#[test]
fn writer_refuses_bad_names_formats_partial_frames_and_overwriting() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in ["", "../escape", "a/b", ".hidden", "sp ace"] {
        let err = RecordingWriter::create(dir.path(), bad, 8000, 2).expect_err(bad);
        assert!(
            matches!(err, RecordingError::InvalidName { .. }),
            "{bad}: {err:?}"
        );
    }
    for (rate, ch) in [(0, 1), (8000, 0), (8000, 3)] {
        let err = RecordingWriter::create(dir.path(), "x", rate, ch).expect_err("format");
        assert!(
            matches!(err, RecordingError::InvalidFormat { .. }),
            "{err:?}"
        );
    }
    let mut w = RecordingWriter::create(dir.path(), "dup", 8000, 2).expect("create");
    let err = RecordingWriter::create(dir.path(), "dup", 8000, 2).expect_err("part exists");
    assert!(
        matches!(err, RecordingError::AlreadyExists { .. }),
        "{err:?}"
    );
    let err = w.write_samples(&[1, 2, 3]).expect_err("odd");
    assert!(
        matches!(
            err,
            RecordingError::PartialFrame {
                len: 3,
                channels: 2
            }
        ),
        "{err:?}"
    );
    w.write_samples(&[1, 2]).expect("whole frame");
    w.finalize().expect("finalize");
    let err = RecordingWriter::create(dir.path(), "dup", 8000, 2).expect_err("wav exists");
    assert!(
        matches!(err, RecordingError::AlreadyExists { .. }),
        "{err:?}"
    );
}

#[test]
fn crash_without_finalize_is_recovered_up_to_the_last_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = RecordingWriter::create(dir.path(), "crashed", 8000, 2).expect("create");
    let mut n = 0u64;
    while n < 2 * 28000 {
        w.write_samples(&pattern_samples(n, 320)).expect("write");
        n += 320;
    }
    let written = w.frames_written();
    let flushed = w.frames_flushed();
    assert_eq!(written, 28000);
    // A crash: no finalize, no Drop, what is still buffered (under 200 ms) is gone; what was
    // written since the last fsync is in the file (the page cache outlives the process).
    std::mem::forget(w);

    let results = recover_partials(dir.path());
    assert_eq!(results.len(), 1);
    let rec = results.into_iter().next().expect("one").expect("recovered");
    assert_eq!(rec.path, dir.path().join("crashed.wav"));
    assert!(part_files(dir.path()).is_empty());
    assert!(rec.frames >= flushed, "everything up to the last flush");
    assert!(rec.frames + 1600 >= written, "loses at most 200 ms");
    // Flushed at 3 s, then written at 3.2 and 3.4 s; the last 100 ms were still buffered.
    assert_eq!(rec.duration, Duration::from_millis(3400));
    let (spec, samples) = read_all(&rec.path);
    assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
    assert_eq!(samples, pattern_samples(0, rec.frames as usize * 2));
    assert_eq!(rec.sha256, sha256_hex(&rec.path));
    assert_eq!(rec.bytes, fs::metadata(&rec.path).expect("stat").len());
    // Nothing left to do on a second run.
    assert!(recover_partials(dir.path()).is_empty());
}

#[test]
fn dropping_the_writer_without_finalize_keeps_its_buffer_for_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = RecordingWriter::create(dir.path(), "dropped", 8000, 1).expect("create");
    w.write_samples(&pattern_samples(0, 12000)).expect("write");
    assert_eq!(w.frames_flushed(), 8000);
    // An error path (or a panic unwinding through the call task) drops the writer.
    drop(w);
    let rec = recover_partials(dir.path())
        .into_iter()
        .next()
        .expect("one")
        .expect("recovered");
    assert_eq!(
        rec.frames, 12000,
        "the unflushed half second was written by Drop"
    );
    assert_eq!(read_all(&rec.path).1, pattern_samples(0, 12000));
}

#[test]
fn recovery_trusts_the_length_and_drops_a_trailing_partial_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = RecordingWriter::create(dir.path(), "torn", 16000, 2).expect("create");
    w.write_samples(&pattern_samples(0, 2 * 20000))
        .expect("write");
    w.flush().expect("flush");
    let part = w.part_path().to_path_buf();
    std::mem::forget(w);
    // The crash landed inside a flush: 10 more frames and 3 bytes of an 11th reached the disk,
    // but the header still describes the previous flush.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&part)
        .expect("open");
    let extra = pattern_samples(2 * 20000, 2 * 11);
    let mut bytes: Vec<u8> = extra.iter().flat_map(|s| s.to_le_bytes()).collect();
    bytes.truncate(10 * 4 + 3);
    f.write_all(&bytes).expect("append");
    drop(f);

    let results = recover_partials(dir.path());
    let rec = results.into_iter().next().expect("one").expect("recovered");
    assert_eq!(rec.frames, 20010);
    assert_eq!(rec.bytes, 44 + 20010 * 4);
    let (_, samples) = read_all(&rec.path);
    assert_eq!(samples, pattern_samples(0, 2 * 20010));
}

#[test]
fn recovery_leaves_foreign_files_and_existing_recordings_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let foreign = dir.path().join("foreign.wav.part");
    fs::write(&foreign, vec![7u8; 500]).expect("write");
    let stub = dir.path().join("stub.wav.part");
    fs::write(&stub, b"RIFF").expect("write");
    // A .part whose .wav already exists (e.g. restored from a backup): renaming would lose data.
    let mut w = RecordingWriter::create(dir.path(), "twin", 8000, 1).expect("create");
    w.write_samples(&[1, 2, 3]).expect("write");
    w.flush().expect("flush");
    std::mem::forget(w);
    fs::write(dir.path().join("twin.wav"), b"keep me").expect("write");
    fs::write(dir.path().join("unrelated.txt"), b"x").expect("write");

    let results = recover_partials(dir.path());
    assert_eq!(results.len(), 3);
    assert!(
        matches!(&results[0], Err(RecoveryError::Unrecoverable { path, .. }) if *path == foreign)
    );
    assert!(matches!(&results[1], Err(RecoveryError::Unrecoverable { path, .. }) if *path == stub));
    assert!(matches!(
        &results[2],
        Err(RecoveryError::TargetExists { .. })
    ));
    assert_eq!(
        part_files(dir.path()).len(),
        3,
        "nothing renamed or deleted"
    );
    assert_eq!(
        fs::read(dir.path().join("twin.wav")).expect("read"),
        b"keep me"
    );
}

#[test]
fn recovery_of_a_missing_directory_is_one_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let results = recover_partials(dir.path().join("absent"));
    assert_eq!(results.len(), 1);
    assert!(matches!(&results[0], Err(RecoveryError::Io { .. })));
}

// ---------------------------------------------------------------------------------------------
// A real crash: SIGKILL of a child process in the middle of recording.

/// Set in the child's environment to the directory it records into.
const CHILD_DIR_ENV: &str = "CALLPLANE_FILES_TEST_KILL_CHILD_DIR";

/// The child side of `sigkill_while_recording_loses_at_most_one_second`: records stereo 8 kHz
/// audio in 20 ms chunks as fast as it can, reporting `progress <written> <flushed>` on stdout
/// after each chunk, until it is killed. Does nothing unless started by that test.
#[test]
#[ignore = "helper process, started by sigkill_while_recording_loses_at_most_one_second"]
fn kill_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let mut w = RecordingWriter::create(&dir, "killed", 8000, 2).expect("create");
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    // Bounded so that a parent that fails to kill us does not fill the disk: 10 minutes.
    while n < 2 * 8000 * 600 {
        w.write_samples(&pattern_samples(n, 320)).expect("write");
        n += 320;
        let report = writeln!(
            out,
            "progress {} {}",
            w.frames_written(),
            w.frames_flushed()
        )
        .and_then(|()| out.flush());
        if report.is_err() {
            break; // The parent is gone.
        }
    }
    std::mem::forget(w);
}

#[cfg(unix)]
#[test]
fn sigkill_while_recording_loses_at_most_one_second() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "kill_child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut last = (0u64, 0u64);
    // Blocking reads on the pipe: the child can run at most a pipe buffer ahead of us, and if
    // it dies the pipe closes and the loop ends (no sleep, no hang).
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child stdout");
        let Some(rest) = line.strip_prefix("progress ") else {
            continue;
        };
        let mut it = rest.split(' ').map(|x| x.parse::<u64>().expect("number"));
        last = (it.next().expect("written"), it.next().expect("flushed"));
        if last.0 >= 28000 {
            break;
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    let (written_seen, flushed_seen) = last;
    assert!(
        written_seen >= 28000,
        "the child recorded 3.5 s ({written_seen} frames)"
    );

    assert_eq!(part_files(dir.path()).len(), 1, "the crash left a .part");
    let results = recover_partials(dir.path());
    assert_eq!(results.len(), 1);
    let rec = results.into_iter().next().expect("one").expect("recovered");
    // The child wrote at least `written_seen` frames before dying, and at most one second of
    // them was only in its memory.
    assert!(
        rec.frames >= flushed_seen,
        "{} < last flush {flushed_seen}",
        rec.frames
    );
    assert!(
        rec.frames + 8000 >= written_seen,
        "{} frames recovered of at least {written_seen} written",
        rec.frames
    );
    let (spec, samples) = read_all(&rec.path);
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    assert_eq!(samples.len() as u64, rec.frames * 2);
    assert!(
        samples == pattern_samples(0, samples.len()),
        "recovered audio is exactly what was written"
    );
    assert_eq!(rec.sha256, sha256_hex(&rec.path));
    assert!(part_files(dir.path()).is_empty());
}
