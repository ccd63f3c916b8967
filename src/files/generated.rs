//! Files the application makes itself rather than receives: a fresh scratch directory and a
//! WAV written from samples (`callplane demo`'s data directory and synthetic prompts,
//! `callplane loadgen`'s scratch recordings and generated prompts), and one channel of a WAV
//! read back (`loadgen`'s prompt check).

use std::io;
use std::path::{Path, PathBuf};

/// Makes a new private directory `<system temp dir>/<prefix>-<random>` and returns its path.
pub fn new_temp_dir(prefix: &str) -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(crate::store::new_id(prefix));
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// A [`new_temp_dir`] removed, with what is in it, when dropped.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new scratch directory `<system temp dir>/<prefix>-<random>`.
    pub fn new(prefix: &str) -> io::Result<ScratchDir> {
        new_temp_dir(prefix).map(ScratchDir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One channel (0: left) of a 16-bit PCM WAV, and its rate.
pub fn read_wav_channel(path: &Path, channel: u16) -> Result<(Vec<i16>, u32), String> {
    let mut reader =
        hound::WavReader::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec = reader.spec();
    if spec.bits_per_sample != 16 || spec.sample_format != hound::SampleFormat::Int {
        return Err(format!("{}: not 16-bit PCM", path.display()));
    }
    if channel >= spec.channels {
        return Err(format!("{}: no channel {channel}", path.display()));
    }
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .skip(usize::from(channel))
        .step_by(usize::from(spec.channels))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((samples, spec.sample_rate))
}

/// Writes mono 16-bit PCM `samples` at `rate` Hz as a WAV file at `path` (replacing it),
/// creating its directory when missing.
pub fn write_wav_mono(path: &Path, rate: u32, samples: &[i16]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        super::ensure_dir(dir)?;
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).map_err(io::Error::other)?;
    for s in samples {
        writer.write_sample(*s).map_err(io::Error::other)?;
    }
    writer.finalize().map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_wav_reads_back_as_a_prompt() {
        let dir = new_temp_dir("cp-gen-test").expect("temp dir");
        let path = dir.join("sub").join("tone.wav");
        let samples: Vec<i16> = (0..8000)
            .map(|n| ((n % 40) * 500 - 10_000) as i16)
            .collect();
        write_wav_mono(&path, 8000, &samples).expect("write");
        let prompt = crate::files::load_prompt(&path, 8000).expect("a valid prompt");
        assert_eq!(prompt.samples.len(), 8000);
        let (read, rate) = read_wav_channel(&path, 0).expect("read back");
        assert_eq!((read.as_slice(), rate), (samples.as_slice(), 8000));
        assert!(read_wav_channel(&path, 1).is_err());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
