//! Prompts: WAV files decoded to mono 16-bit PCM at the rate a call's codec needs.
//!
//! Operators upload whatever their audio tool exports: 8 to 48 kHz, mono or stereo, 8/16/24/32-bit
//! integer PCM or 32-bit float. [`load_prompt`] accepts all of these (through `hound`), averages
//! stereo to mono, and resamples with `media`'s polyphase resampler, so a prompt is decoded once
//! and then paced out frame by frame by `media::player` without further work on the hot path.
//! Compressed encodings (A-law, µ-law, ADPCM, MP3-in-WAV…) are refused with
//! [`PromptError::Unsupported`] rather than played as noise.
//!
//! [`PromptCache`] keeps each decoded (file, rate) pair and reloads it when the file on disk
//! changes. It has no lock inside: the caller decides how it is shared (one owner task, or a
//! `Mutex` around it), in keeping with the actor style of the application.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use media::codec::CodecError;

/// Settings for prompt loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptConfig {
    /// Longest prompt accepted. A cap keeps one mistaken upload (an hour-long 48 kHz file) from
    /// holding hundreds of megabytes in the cache. Default: 10 minutes.
    pub max_duration: Duration,
}

impl Default for PromptConfig {
    fn default() -> Self {
        PromptConfig {
            max_duration: Duration::from_secs(600),
        }
    }
}

/// A decoded prompt: mono 16-bit PCM at `rate`.
///
/// Cloning is cheap (the samples are shared), so the cache hands out clones and a call keeps one
/// for as long as it plays.
#[derive(Clone)]
pub struct Prompt {
    /// The audio, mono, at `rate`.
    pub samples: Arc<[i16]>,
    /// Sample rate of `samples`, in Hz (the rate that was asked for).
    pub rate: u32,
    /// Length of the audio.
    pub duration: Duration,
    /// Sample rate of the file on disk, in Hz.
    pub source_rate: u32,
    /// Channel count of the file on disk (1 or 2).
    pub source_channels: u16,
}

impl fmt::Debug for Prompt {
    // Not derived: a derived Debug would print every sample of a minute-long prompt into a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prompt")
            .field("samples", &format_args!("[i16; {}]", self.samples.len()))
            .field("rate", &self.rate)
            .field("duration", &self.duration)
            .field("source_rate", &self.source_rate)
            .field("source_channels", &self.source_channels)
            .finish()
    }
}

/// Why a prompt could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// No file at that path.
    #[error("prompt {path}: file not found")]
    NotFound {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("prompt {path}: {source}")]
    Io {
        /// The path asked for.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Not a WAV file, or a WAV whose header or data is damaged (e.g. truncated).
    #[error("prompt {path}: not a valid WAV file: {reason}")]
    InvalidWav {
        /// The path asked for.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A valid WAV in an encoding or layout we do not decode (A-law, µ-law, ADPCM, more than two
    /// channels, …).
    #[error("prompt {path}: unsupported WAV format: {reason}")]
    Unsupported {
        /// The path asked for.
        path: PathBuf,
        /// What is not supported, and what is.
        reason: String,
    },
    /// The file holds no audio.
    #[error("prompt {path}: the file holds no audio")]
    Empty {
        /// The path asked for.
        path: PathBuf,
    },
    /// Longer than [`PromptConfig::max_duration`].
    #[error("prompt {path}: {duration:?} long, longer than the limit of {max:?}")]
    TooLong {
        /// The path asked for.
        path: PathBuf,
        /// Length of the audio in the file.
        duration: Duration,
        /// The configured limit.
        max: Duration,
    },
    /// The file's rate cannot be converted to the rate asked for.
    #[error("prompt {path}: cannot resample: {source}")]
    Resample {
        /// The path asked for.
        path: PathBuf,
        /// The resampler's error (it names both rates).
        #[source]
        source: CodecError,
    },
}

impl PromptError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            PromptError::NotFound { path }
            | PromptError::Io { path, .. }
            | PromptError::InvalidWav { path, .. }
            | PromptError::Unsupported { path, .. }
            | PromptError::Empty { path }
            | PromptError::TooLong { path, .. }
            | PromptError::Resample { path, .. } => path,
        }
    }
}

fn io_error(path: &Path, source: io::Error) -> PromptError {
    if source.kind() == io::ErrorKind::NotFound {
        PromptError::NotFound {
            path: path.to_path_buf(),
        }
    } else {
        PromptError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Maps a `hound` error met while reading the header (`in_data == false`) or the samples.
fn hound_error(path: &Path, err: hound::Error, in_data: bool) -> PromptError {
    let path_buf = path.to_path_buf();
    match err {
        // hound reports a short read as `Other` with this text (hound 3.5, read.rs).
        hound::Error::IoError(e)
            if e.kind() == io::ErrorKind::UnexpectedEof
                || (e.kind() == io::ErrorKind::Other
                    && e.to_string() == "Failed to read enough bytes.") =>
        {
            PromptError::InvalidWav {
                path: path_buf,
                reason: if in_data {
                    "the audio data is truncated".to_string()
                } else {
                    "the file ends inside the header".to_string()
                },
            }
        }
        hound::Error::IoError(e) => io_error(path, e),
        hound::Error::FormatError(msg) => PromptError::InvalidWav {
            path: path_buf,
            reason: msg.to_string(),
        },
        hound::Error::Unsupported => PromptError::Unsupported {
            path: path_buf,
            reason: "compressed or unknown encoding (A-law, µ-law, ADPCM, …); \
                     only integer PCM (8/16/24/32-bit) and 32-bit float are supported"
                .to_string(),
        },
        other @ (hound::Error::TooWide
        | hound::Error::UnfinishedSample
        | hound::Error::InvalidSampleFormat) => PromptError::InvalidWav {
            path: path_buf,
            reason: other.to_string(),
        },
    }
}

/// `frames` at `rate` Hz as a [`Duration`], exact to the nanosecond (rounded down).
pub(crate) fn frames_to_duration(frames: u64, rate: u32) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let nanos = frames as u128 * 1_000_000_000 / rate as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Loads a prompt with the default [`PromptConfig`]. See [`load_prompt_with`].
pub fn load_prompt(path: impl AsRef<Path>, target_rate: u32) -> Result<Prompt, PromptError> {
    load_prompt_with(path, target_rate, &PromptConfig::default())
}

/// Reads the WAV at `path` and returns it as mono 16-bit PCM at `target_rate` Hz.
///
/// Stereo is averaged to mono; 8/24/32-bit integers and 32-bit floats are scaled to 16 bits
/// (16-bit mono at the target rate comes out bit-exact); other rates are resampled by
/// [`media::codec::resample()`], which low-passes before decimating so that nothing above the
/// new Nyquist frequency folds back into the band.
pub fn load_prompt_with(
    path: impl AsRef<Path>,
    target_rate: u32,
    config: &PromptConfig,
) -> Result<Prompt, PromptError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    decode(path, file, target_rate, config)
}

/// Name of a WAV format tag we refuse, for the error message.
fn format_name(tag: u16) -> String {
    let name = match tag {
        0x0002 => "Microsoft ADPCM",
        0x0006 => "A-law",
        0x0007 => "µ-law",
        0x0011 => "IMA ADPCM",
        0x0031 => "GSM 6.10",
        0x0040 => "G.721 ADPCM",
        0x0050 => "MPEG",
        0x0055 => "MP3",
        0x0064 => "G.726 ADPCM",
        0x0065 => "G.722 ADPCM",
        _ => "an unknown encoding",
    };
    format!(
        "{name} (format tag {tag:#06x}); only integer PCM (8/16/24/32-bit) and 32-bit float \
         are supported"
    )
}

/// Walks the RIFF chunks up to `data` before hound sees the file, for errors that say what is
/// wrong: hound reports a short file as a bare I/O error and some encodings (ADPCM with 4-bit
/// samples) as a malformed header. Leaves the cursor anywhere; the caller rewinds.
fn scan_riff<R: Read + Seek>(path: &Path, r: &mut R, file_len: u64) -> Result<(), PromptError> {
    let invalid = |reason: &str| PromptError::InvalidWav {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let read = |r: &mut R, buf: &mut [u8]| r.read_exact(buf).map_err(|e| io_error(path, e));
    if file_len < 12 {
        return Err(invalid("the file is too short for a RIFF header"));
    }
    let mut head = [0u8; 12];
    read(r, &mut head)?;
    if &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Err(invalid("no RIFF/WAVE header"));
    }
    let mut pos = 12u64;
    let mut seen_fmt = false;
    // A WAV has a handful of chunks; the bound stops a crafted file from making us loop long.
    for _ in 0..1024 {
        if pos + 8 > file_len {
            return Err(invalid("the file ends before the data chunk"));
        }
        r.seek(SeekFrom::Start(pos))
            .map_err(|e| io_error(path, e))?;
        let mut chunk = [0u8; 8];
        read(r, &mut chunk)?;
        let size = u64::from(u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]));
        let body = pos + 8;
        match &chunk[0..4] {
            b"fmt " => {
                if size < 16 || body + size > file_len {
                    return Err(invalid("the fmt chunk is truncated"));
                }
                let mut fmt = vec![0u8; size.min(40) as usize];
                read(r, &mut fmt)?;
                let mut tag = u16::from_le_bytes([fmt[0], fmt[1]]);
                // WAVE_FORMAT_EXTENSIBLE: the real format is the first two bytes of the
                // SubFormat GUID, at offset 24 of the chunk.
                if tag == 0xfffe && fmt.len() >= 26 {
                    tag = u16::from_le_bytes([fmt[24], fmt[25]]);
                }
                let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
                if tag == 0x0003 && bits != 32 {
                    return Err(PromptError::Unsupported {
                        path: path.to_path_buf(),
                        reason: format!("{bits}-bit float; only 32-bit float is supported"),
                    });
                }
                if tag != 0x0001 && tag != 0x0003 {
                    return Err(PromptError::Unsupported {
                        path: path.to_path_buf(),
                        reason: format_name(tag),
                    });
                }
                seen_fmt = true;
            }
            b"data" => {
                if !seen_fmt {
                    return Err(invalid("the data chunk comes before the fmt chunk"));
                }
                if body + size > file_len {
                    return Err(invalid(&format!(
                        "the audio data is truncated: the header announces {size} bytes, \
                         the file holds {}",
                        file_len - body
                    )));
                }
                return Ok(());
            }
            _ => {}
        }
        // RIFF chunks are padded to an even length.
        pos = body + size + (size & 1);
    }
    Err(invalid("too many chunks before the data chunk"))
}

fn decode(
    path: &Path,
    file: File,
    target_rate: u32,
    config: &PromptConfig,
) -> Result<Prompt, PromptError> {
    let file_len = file.metadata().map_err(|e| io_error(path, e))?.len();
    let mut file = BufReader::new(file);
    scan_riff(path, &mut file, file_len)?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_error(path, e))?;
    let mut reader = hound::WavReader::new(file).map_err(|e| hound_error(path, e, false))?;
    let spec = reader.spec();
    if spec.channels > 2 {
        return Err(PromptError::Unsupported {
            path: path.to_path_buf(),
            reason: format!(
                "{} channels; only mono and stereo prompts are supported",
                spec.channels
            ),
        });
    }
    if spec.sample_rate == 0 {
        return Err(PromptError::InvalidWav {
            path: path.to_path_buf(),
            reason: "sample rate is 0".to_string(),
        });
    }
    // Frames (one sample per channel) according to the header; checked against the cap before
    // anything is decoded, so that a huge file costs nothing.
    let frames = u64::from(reader.duration());
    if frames == 0 {
        return Err(PromptError::Empty {
            path: path.to_path_buf(),
        });
    }
    let duration = frames_to_duration(frames, spec.sample_rate);
    if duration > config.max_duration {
        return Err(PromptError::TooLong {
            path: path.to_path_buf(),
            duration,
            max: config.max_duration,
        });
    }

    let channels = usize::from(spec.channels);
    let mut mono: Vec<i16> = Vec::with_capacity(frames as usize);
    // Every sample is brought to the range [-1, 1) first, so that all widths share one downmix.
    // Scaling by powers of two is exact in f32, so 16-bit input survives unchanged.
    let mut frame = [0f32; 2];
    let mut filled = 0usize;
    let mut push = |x: f32| {
        frame[filled] = x;
        filled += 1;
        if filled == channels {
            let sum: f32 = frame[..channels].iter().sum();
            let avg = sum / channels as f32;
            mono.push((avg * 32768.0).round().clamp(-32768.0, 32767.0) as i16);
            filled = 0;
        }
    };
    match spec.sample_format {
        hound::SampleFormat::Float => {
            if spec.bits_per_sample != 32 {
                return Err(PromptError::Unsupported {
                    path: path.to_path_buf(),
                    reason: format!("{}-bit float; only 32-bit float", spec.bits_per_sample),
                });
            }
            for s in reader.samples::<f32>() {
                let x = s.map_err(|e| hound_error(path, e, true))?;
                // NaN would poison the resampler's accumulator; treat it as silence.
                push(if x.is_finite() {
                    x.clamp(-1.0, 1.0)
                } else {
                    0.0
                });
            }
        }
        hound::SampleFormat::Int => {
            let bits = spec.bits_per_sample;
            if !(1..=32).contains(&bits) {
                return Err(PromptError::Unsupported {
                    path: path.to_path_buf(),
                    reason: format!("{bits}-bit integer samples"),
                });
            }
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            for s in reader.samples::<i32>() {
                let x = s.map_err(|e| hound_error(path, e, true))?;
                push(x as f32 * scale);
            }
        }
    }

    let samples =
        media::codec::resample(&mono, spec.sample_rate, target_rate).map_err(|source| {
            PromptError::Resample {
                path: path.to_path_buf(),
                source,
            }
        })?;
    drop(mono);
    if samples.is_empty() {
        return Err(PromptError::Empty {
            path: path.to_path_buf(),
        });
    }
    let duration = frames_to_duration(samples.len() as u64, target_rate);
    Ok(Prompt {
        samples: samples.into(),
        rate: target_rate,
        duration,
        source_rate: spec.sample_rate,
        source_channels: spec.channels,
    })
}

/// What identifies one version of a file: an edit changes the modification time or the length,
/// and replacing the file by a rename (how deploy tools update files) changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    dev: u64,
    #[cfg(unix)]
    ino: u64,
}

impl FileStamp {
    fn of(meta: &Metadata) -> FileStamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            dev: meta.dev(),
            #[cfg(unix)]
            ino: meta.ino(),
        }
    }
}

#[derive(Debug)]
struct CacheEntry {
    stamp: FileStamp,
    prompt: Prompt,
}

/// Decoded prompts, one per (file, rate), reloaded when the file changes.
///
/// Keyed by the canonical path (so `./a.wav` and `/srv/prompts/a.wav` share an entry) and the
/// rate; a hit costs a path resolution and a `stat`, which is what makes an edited or replaced
/// file reload without a restart. Errors are not cached: a file that is fixed loads on the next call.
#[derive(Debug)]
pub struct PromptCache {
    config: PromptConfig,
    entries: HashMap<(PathBuf, u32), CacheEntry>,
    decodes: u64,
}

impl Default for PromptCache {
    fn default() -> Self {
        PromptCache::new(PromptConfig::default())
    }
}

impl PromptCache {
    /// An empty cache that loads with `config`.
    pub fn new(config: PromptConfig) -> Self {
        PromptCache {
            config,
            entries: HashMap::new(),
            decodes: 0,
        }
    }

    /// The prompt at `path` resampled to `rate`, decoded now if it is not cached or the file
    /// changed since it was.
    pub fn get(&mut self, path: impl AsRef<Path>, rate: u32) -> Result<Prompt, PromptError> {
        let path = path.as_ref();
        let canonical = path.canonicalize().map_err(|e| io_error(path, e))?;
        let meta = fs::metadata(&canonical).map_err(|e| io_error(path, e))?;
        let key = (canonical, rate);
        if let Some(entry) = self.entries.get(&key)
            && entry.stamp == FileStamp::of(&meta)
        {
            return Ok(entry.prompt.clone());
        }
        // On a miss, stamp the opened file rather than the path, so that the stamp describes
        // exactly the bytes decoded even if the path is replaced in between.
        let file = File::open(&key.0).map_err(|e| io_error(path, e))?;
        let stamp = FileStamp::of(&file.metadata().map_err(|e| io_error(path, e))?);
        self.decodes += 1;
        let prompt = decode(path, file, rate, &self.config)?;
        self.entries.insert(
            key,
            CacheEntry {
                stamp,
                prompt: prompt.clone(),
            },
        );
        Ok(prompt)
    }

    /// How many times a file was decoded (cache misses, including failed ones).
    pub fn decodes(&self) -> u64 {
        self.decodes
    }

    /// Number of cached (file, rate) pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops every cached entry of `path` (all rates). Returns how many were dropped.
    pub fn invalidate(&mut self, path: impl AsRef<Path>) -> usize {
        let path = path.as_ref();
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let before = self.entries.len();
        self.entries.retain(|(p, _), _| *p != canonical);
        before - self.entries.len()
    }

    /// Drops every cached entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
