//! The crash-safe recording writer, and the recovery of what a crash left behind.
//!
//! A recording is written to `<name>.wav.part` as a canonical 44-byte WAV header followed by
//! 16-bit little-endian PCM. Samples collect in memory and go to disk at every [`flush`], which
//! writes them, rewrites the header's RIFF and `data` sizes to match, and calls `fsync`: after a
//! flush the file is a valid WAV holding everything written so far, and that survives a power
//! cut. The writer flushes by itself every second of audio (counted in samples, not by a clock),
//! so a crash loses at most the last second. [`RecordingWriter::finalize`] flushes, renames the
//! file to `<name>.wav` and syncs the directory, so a `.wav` always means "complete".
//!
//! We write the WAV ourselves rather than through `hound::WavWriter`: hound keeps its sizes in
//! memory until `finalize`, so a killed process leaves a header that claims no audio at all, and
//! `WavWriter::append` on such a file starts writing at the header's (stale) end of data,
//! overwriting the audio that is there.
//!
//! At start-up, [`recover_partials`] repairs every `.wav.part` from its length (a crash can land
//! between the data write and the header update of a flush, or in the middle of a frame),
//! truncates a trailing partial frame and renames it to `.wav`.
//!
//! [`flush`]: RecordingWriter::flush

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::prompt::frames_to_duration;

/// Size of the canonical WAV header we write: RIFF (12) + `fmt ` chunk (24) + `data` header (8).
const HEADER_LEN: u64 = 44;

/// Largest `data` chunk a RIFF file can describe: the RIFF size field (u32) counts the 36 header
/// bytes after it as well.
const MAX_DATA_LEN: u64 = u32::MAX as u64 - (HEADER_LEN - 8);

/// Highest sample rate accepted (and the byte rate field stays far from overflowing).
const MAX_RATE: u32 = 384_000;

/// Suffix of a recording still being written.
const PART_SUFFIX: &str = ".wav.part";

/// A recording that is complete on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRecording {
    /// Path of the `.wav` file.
    pub path: PathBuf,
    /// Sample rate in Hz.
    pub rate: u32,
    /// Channels (1 or 2; for calls, stereo is inbound left and outbound right).
    pub channels: u16,
    /// Frames (one sample per channel) in the file.
    pub frames: u64,
    /// Length of the audio.
    pub duration: Duration,
    /// Size of the file in bytes, header included.
    pub bytes: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
}

/// Errors of the recording writer. Every I/O variant names the file and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The name is not a plain file name.
    #[error("invalid recording name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A rate or channel count we do not write.
    #[error(
        "unsupported recording format: {rate} Hz, {channels} channels (1 or 2 channels, 1..=384000 Hz)"
    )]
    InvalidFormat {
        /// Rate asked for.
        rate: u32,
        /// Channels asked for.
        channels: u16,
    },
    /// A recording (finished or partial) with that name is already in the directory.
    #[error("recording {path} already exists")]
    AlreadyExists {
        /// The file that exists.
        path: PathBuf,
    },
    /// `write_samples` got a slice that is not a whole number of interleaved frames.
    #[error("{len} samples are not a whole number of {channels}-channel frames")]
    PartialFrame {
        /// Length of the slice.
        len: usize,
        /// Channels of the recording.
        channels: u16,
    },
    /// The recording would exceed the 4 GiB a WAV file can describe.
    #[error("recording {path} would exceed the 4 GiB WAV limit")]
    TooLarge {
        /// The `.part` file.
        path: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("recording {path}: cannot {op}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done ("write audio", "fsync", "rename", …).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Why one `.wav.part` file could not be recovered. The file is left where it is.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A filesystem operation failed.
    #[error("recovering {path}: cannot {op}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is not a recording this writer made (or its header is gone).
    #[error("cannot recover {path}: {reason}")]
    Unrecoverable {
        /// The `.part` file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The `.wav` it would become already exists; renaming would destroy it.
    #[error("cannot recover {path}: {target} already exists")]
    TargetExists {
        /// The `.part` file.
        path: PathBuf,
        /// The existing `.wav`.
        target: PathBuf,
    },
}

/// The canonical 44-byte header of a 16-bit PCM WAV holding `data_len` bytes of audio.
fn wav_header(rate: u32, channels: u16, data_len: u32) -> [u8; HEADER_LEN as usize] {
    let block_align = channels * 2;
    let byte_rate = rate * u32::from(block_align);
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(data_len + 36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // WAVE_FORMAT_PCM
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// Writes the two size fields of the header for `data_len` bytes of audio.
fn write_sizes(file: &mut File, data_len: u32) -> io::Result<()> {
    file.seek(SeekFrom::Start(4))?;
    file.write_all(&(data_len + 36).to_le_bytes())?;
    file.seek(SeekFrom::Start(40))?;
    file.write_all(&data_len.to_le_bytes())
}

/// Makes a rename or a file creation in `dir` durable: on POSIX systems the directory entry is
/// only on disk once the directory itself is synced.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Windows cannot open a directory as a file, and NTFS journals renames itself.
        let _ = dir;
        Ok(())
    }
}

/// SHA-256 (lowercase hex) and length of the file at `path`, read in 64 KiB blocks.
pub fn sha256_file(path: impl AsRef<Path>) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Checks that `name` is one plain file name, so that it cannot escape the recording directory.
pub(crate) fn check_name(name: &str) -> Result<(), RecordingError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 200 {
        Some("longer than 200 bytes")
    } else if name.starts_with('.') {
        Some("starts with a dot")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some("only ASCII letters, digits, '-', '_' and '.' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(RecordingError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Writes one recording, crash-safely. See the module documentation.
///
/// Dropping the writer without [`finalize`](Self::finalize) flushes what is buffered (best
/// effort) and leaves the `.part` file for [`recover_partials`].
#[derive(Debug)]
pub struct RecordingWriter {
    file: File,
    dir: PathBuf,
    part_path: PathBuf,
    final_path: PathBuf,
    rate: u32,
    channels: u16,
    /// Little-endian bytes of whole frames not yet written to the file.
    buf: Vec<u8>,
    /// Frames accepted by `write_samples`.
    frames_written: u64,
    /// Frames whose bytes are in the file (written, not necessarily synced).
    frames_in_file: u64,
    /// Write the buffer to the file (no fsync) when this many frames are in it: 200 ms of
    /// audio. The buffer stays small (6.4 kB for 8 kHz stereo rather than a second's 32 kB),
    /// and a killed process leaves at most that much unwritten: what is written survives it in
    /// the page cache, and recovery goes by the file's length.
    write_every: u64,
    /// Frames in the file with a header that matches, and synced (by this writer's fsync, or,
    /// with [`RecordingWriter::defer_sync`], by its owner's sync of the filesystem).
    frames_flushed: u64,
    /// Whether a flush leaves the fsync to the owner ([`RecordingWriter::defer_sync`]).
    defer_sync: bool,
    /// A flush since the owner last synced (only with `defer_sync`).
    unsynced: bool,
    /// Flush when this many frames are buffered: one second of audio.
    flush_every: u64,
    /// Set once renamed, so that `Drop` leaves the file alone.
    finished: bool,
}

impl RecordingWriter {
    /// Starts `<dir>/<name>.wav.part`: 16-bit PCM, `channels` (1 or 2) interleaved, at `rate` Hz.
    ///
    /// `name` must be a plain file name (ASCII letters, digits, `-`, `_`, `.`; not starting with
    /// a dot). Fails with [`RecordingError::AlreadyExists`] if `<name>.wav` or `<name>.wav.part`
    /// is already there: a recording is never overwritten. The empty file and its directory entry
    /// are synced before this returns, so even a crash right away leaves a recoverable file.
    pub fn create(
        dir: impl AsRef<Path>,
        name: &str,
        rate: u32,
        channels: u16,
    ) -> Result<Self, RecordingError> {
        check_name(name)?;
        Self::check_format(rate, channels)?;
        let dir = dir.as_ref().to_path_buf();
        let final_path = dir.join(format!("{name}.wav"));
        let part_path = dir.join(format!("{name}{PART_SUFFIX}"));
        match fs::symlink_metadata(&final_path) {
            Ok(_) => return Err(RecordingError::AlreadyExists { path: final_path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(RecordingError::Io {
                    path: final_path,
                    op: "check for an existing recording",
                    source,
                });
            }
        }
        // create_new (O_EXCL): two calls racing on one name cannot both write the same file.
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part_path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RecordingError::AlreadyExists { path: part_path });
            }
            Err(source) => {
                return Err(RecordingError::Io {
                    path: part_path,
                    op: "create",
                    source,
                });
            }
        };
        let started = file
            .write_all(&wav_header(rate, channels, 0))
            .and_then(|()| file.sync_all())
            .map_err(|source| (source, "write the header"))
            .and_then(|()| sync_dir(&dir).map_err(|source| (source, "fsync the directory")));
        if let Err((source, op)) = started {
            // Nothing worth keeping was written; do not leave a stub for recovery to trip on.
            let _ = fs::remove_file(&part_path);
            return Err(RecordingError::Io {
                path: part_path,
                op,
                source,
            });
        }
        Ok(RecordingWriter {
            file,
            dir,
            part_path,
            final_path,
            rate,
            channels,
            buf: Vec::with_capacity((rate / 5).max(1) as usize * usize::from(channels) * 2),
            frames_written: 0,
            frames_in_file: 0,
            frames_flushed: 0,
            defer_sync: false,
            unsynced: false,
            flush_every: u64::from(rate),
            write_every: u64::from((rate / 5).max(1)),
            finished: false,
        })
    }

    /// Whether `rate` and `channels` are a format this writer writes.
    pub(crate) fn check_format(rate: u32, channels: u16) -> Result<(), RecordingError> {
        if !(1..=2).contains(&channels) || rate == 0 || rate > MAX_RATE {
            return Err(RecordingError::InvalidFormat { rate, channels });
        }
        Ok(())
    }

    /// Sample rate in Hz.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Channels per frame.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Path of the `.part` file being written.
    pub fn part_path(&self) -> &Path {
        &self.part_path
    }

    /// Path the recording will have once finalized.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Frames accepted so far.
    pub fn frames_written(&self) -> u64 {
        self.frames_written
    }

    /// Frames durably on disk (as of the last flush; with [`RecordingWriter::defer_sync`], as
    /// of the owner's next sync).
    pub fn frames_flushed(&self) -> u64 {
        self.frames_flushed
    }

    /// From now on a flush writes the audio and the header but leaves the fsync to the owner,
    /// which promises to sync the file's filesystem (`syncfs`) or the file
    /// ([`RecordingWriter::sync_data`]) at least once a second while
    /// [`RecordingWriter::take_unsynced`] says a flush is waiting for it. A writer thread that
    /// owns many recordings makes one `syncfs` a second instead of one `fdatasync` per
    /// recording a second (each a disk flush of its own: 300 a second at 300 calls). The final
    /// flush ([`RecordingWriter::finalize`]) and a drop still fsync the file themselves.
    pub fn defer_sync(&mut self) {
        self.defer_sync = true;
    }

    /// Whether a flush has waited for the owner's sync since the last call; clears it.
    pub fn take_unsynced(&mut self) -> bool {
        std::mem::take(&mut self.unsynced)
    }

    /// `fdatasync` of the file: what is written so far is on disk.
    pub fn sync_data(&mut self) -> Result<(), RecordingError> {
        self.file.sync_data().map_err(self.io_err("fsync"))?;
        self.unsynced = false;
        Ok(())
    }

    /// The open `.part` file (for the owner's `syncfs`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Length of the audio accepted so far.
    pub fn duration(&self) -> Duration {
        frames_to_duration(self.frames_written, self.rate)
    }

    fn block_align(&self) -> u64 {
        u64::from(self.channels) * 2
    }

    fn io_err(&self, op: &'static str) -> impl FnOnce(io::Error) -> RecordingError + '_ {
        move |source| RecordingError::Io {
            path: self.part_path.clone(),
            op,
            source,
        }
    }

    /// Appends interleaved samples (for stereo: left, right, left, right…). The length must be a
    /// whole number of frames.
    ///
    /// Writes to the file each time 200 ms of audio has accumulated, and flushes (header and
    /// fsync) each second, also in the middle of a long slice: no more than 200 ms is ever only
    /// in memory, no more than one second only in the page cache.
    pub fn write_samples(&mut self, samples: &[i16]) -> Result<(), RecordingError> {
        let ch = usize::from(self.channels);
        if !samples.len().is_multiple_of(ch) {
            return Err(RecordingError::PartialFrame {
                len: samples.len(),
                channels: self.channels,
            });
        }
        let new_frames = (samples.len() / ch) as u64;
        if (self.frames_written + new_frames) * self.block_align() > MAX_DATA_LEN {
            return Err(RecordingError::TooLarge {
                path: self.part_path.clone(),
            });
        }
        let mut rest = samples;
        while !rest.is_empty() {
            let buffered = self.frames_written - self.frames_flushed;
            let room = self.flush_every.saturating_sub(buffered).max(1);
            let take = room.min((rest.len() / ch) as u64) as usize;
            let (chunk, tail) = rest.split_at(take * ch);
            for s in chunk {
                self.buf.extend_from_slice(&s.to_le_bytes());
            }
            self.frames_written += take as u64;
            rest = tail;
            if self.frames_written - self.frames_flushed >= self.flush_every {
                self.flush()?;
            } else if self.frames_written - self.frames_in_file >= self.write_every {
                self.write_buffer()?;
            }
        }
        Ok(())
    }

    /// Writes the buffered audio, updates the header to match and fsyncs: afterwards the `.part`
    /// file on disk is a valid WAV holding every frame written so far.
    ///
    /// On error nothing is lost from memory; the next flush writes the same bytes at the same
    /// offset again.
    pub fn flush(&mut self) -> Result<(), RecordingError> {
        let block_align = self.block_align();
        self.write_buffer()?;
        let data_len = u32::try_from(self.frames_written * block_align)
            .expect("write_samples keeps the data within MAX_DATA_LEN");
        write_sizes(&mut self.file, data_len).map_err(self.io_err("update the header"))?;
        if self.defer_sync {
            self.unsynced = true;
        } else {
            // fdatasync: the audio, the header and the file size; the mtime may lag.
            self.file.sync_data().map_err(self.io_err("fsync"))?;
        }
        self.frames_flushed = self.frames_written;
        Ok(())
    }

    /// Writes the buffered frames to the file after those already there (no header update, no
    /// fsync). On error the buffer is kept, and the next attempt writes it at the same offset.
    fn write_buffer(&mut self) -> Result<(), RecordingError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Position from our own count, not the file cursor: a failed, partial earlier write is
        // then overwritten rather than appended to.
        let offset = HEADER_LEN + self.frames_in_file * self.block_align();
        std::os::unix::fs::FileExt::write_all_at(&self.file, &self.buf, offset)
            .map_err(self.io_err("write audio"))?;
        self.buf.clear();
        self.frames_in_file = self.frames_written;
        Ok(())
    }

    /// Completes the recording: final flush and fsync, rename of `.wav.part` to `.wav`, fsync of
    /// the directory, then the SHA-256 of the finished file (read back from disk, so that it
    /// describes what is stored).
    ///
    /// If it fails before the rename, the `.part` file stays for [`recover_partials`].
    pub fn finalize(mut self) -> Result<FinishedRecording, RecordingError> {
        self.flush()?;
        self.file.sync_all().map_err(self.io_err("fsync"))?;
        self.unsynced = false;
        // Checked again: the rename would silently replace a `.wav` made since `create`.
        if fs::symlink_metadata(&self.final_path).is_ok() {
            return Err(RecordingError::AlreadyExists {
                path: self.final_path.clone(),
            });
        }
        fs::rename(&self.part_path, &self.final_path).map_err(self.io_err("rename"))?;
        self.finished = true;
        sync_dir(&self.dir).map_err(|source| RecordingError::Io {
            path: self.dir.clone(),
            op: "fsync the directory",
            source,
        })?;
        let (sha256, bytes) =
            sha256_file(&self.final_path).map_err(|source| RecordingError::Io {
                path: self.final_path.clone(),
                op: "read back for the checksum",
                source,
            })?;
        Ok(FinishedRecording {
            path: self.final_path.clone(),
            rate: self.rate,
            channels: self.channels,
            frames: self.frames_written,
            duration: frames_to_duration(self.frames_written, self.rate),
            bytes,
            sha256,
        })
    }

    /// Abandons the recording and deletes its `.part` file (e.g. the caller hung up before the
    /// recording was meant to start).
    pub fn discard(mut self) -> Result<(), RecordingError> {
        self.finished = true;
        fs::remove_file(&self.part_path).map_err(self.io_err("delete"))
    }
}

impl Drop for RecordingWriter {
    fn drop(&mut self) {
        if !self.finished && self.frames_written > self.frames_flushed {
            // Best effort: an error path (or a panic) that drops the writer keeps its last second.
            // Errors cannot be reported from drop; recovery repairs whatever is there.
            let _ = self.flush();
        }
        if !self.finished && self.unsynced {
            // Its owner will not sync it any more.
            let _ = self.file.sync_data();
        }
    }
}

/// The header fields recovery needs.
#[derive(Debug, Clone, Copy)]
struct PartHeader {
    rate: u32,
    channels: u16,
}

/// Parses the canonical header that [`RecordingWriter`] writes; anything else is refused (it
/// would not be ours to repair).
fn parse_part_header(h: &[u8; HEADER_LEN as usize]) -> Result<PartHeader, String> {
    let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if &h[0..4] != b"RIFF" || &h[8..12] != b"WAVE" {
        return Err("no RIFF/WAVE header".to_string());
    }
    if &h[12..16] != b"fmt " || u32_at(16) != 16 || &h[36..40] != b"data" {
        return Err("not the canonical 44-byte header this writer produces".to_string());
    }
    let format = u16_at(20);
    let channels = u16_at(22);
    let rate = u32_at(24);
    let byte_rate = u32_at(28);
    let block_align = u16_at(32);
    let bits = u16_at(34);
    if format != 1 || bits != 16 {
        return Err(format!(
            "format {format} with {bits} bits, expected 16-bit PCM"
        ));
    }
    if !(1..=2).contains(&channels) || rate == 0 || rate > MAX_RATE {
        return Err(format!("{channels} channels at {rate} Hz"));
    }
    if block_align != channels * 2 || byte_rate != rate * u32::from(block_align) {
        return Err("inconsistent block align or byte rate".to_string());
    }
    Ok(PartHeader { rate, channels })
}

/// Finds every `*.wav.part` in `dir` (left by a crash: a live writer's file must not be passed
/// here, so call this at start-up, before recording starts), repairs its header from the file's
/// length, drops a trailing partial frame, renames it to `.wav` and syncs the directory.
///
/// Returns one result per file found, in file-name order; a failure leaves that file untouched
/// and does not stop the others. A directory that cannot be listed gives a single error.
pub fn recover_partials(dir: impl AsRef<Path>) -> Vec<Result<FinishedRecording, RecoveryError>> {
    let dir = dir.as_ref();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) => {
            return vec![Err(RecoveryError::Io {
                path: dir.to_path_buf(),
                op: "list the directory",
                source,
            })];
        }
    };
    let mut results = Vec::new();
    let mut parts = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let is_part = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.ends_with(PART_SUFFIX) && n.len() > PART_SUFFIX.len());
                if is_part && entry.file_type().is_ok_and(|t| t.is_file()) {
                    parts.push(entry.path());
                }
            }
            Err(source) => results.push(Err(RecoveryError::Io {
                path: dir.to_path_buf(),
                op: "list the directory",
                source,
            })),
        }
    }
    parts.sort();
    results.extend(parts.iter().map(|part| recover_one(dir, part)));
    results
}

fn recover_one(dir: &Path, part: &Path) -> Result<FinishedRecording, RecoveryError> {
    let io = |op: &'static str| {
        move |source| RecoveryError::Io {
            path: part.to_path_buf(),
            op,
            source,
        }
    };
    let unrecoverable = |reason: String| RecoveryError::Unrecoverable {
        path: part.to_path_buf(),
        reason,
    };
    let name = part
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".part"))
        .ok_or_else(|| unrecoverable("not a .wav.part file name".to_string()))?;
    let target = part.with_file_name(name);
    if fs::symlink_metadata(&target).is_ok() {
        return Err(RecoveryError::TargetExists {
            path: part.to_path_buf(),
            target,
        });
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(part)
        .map_err(io("open"))?;
    let len = file.metadata().map_err(io("stat"))?.len();
    if len < HEADER_LEN {
        return Err(unrecoverable(format!(
            "{len} bytes, shorter than the 44-byte WAV header"
        )));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact(&mut header)
        .map_err(io("read the header"))?;
    let parsed = parse_part_header(&header).map_err(unrecoverable)?;
    let block_align = u64::from(parsed.channels) * 2;
    // The file's length is the truth: the header sizes may predate the last data write. A frame
    // cut short by the crash is dropped; so is anything beyond what a WAV can describe.
    let frames = (len - HEADER_LEN).min(MAX_DATA_LEN) / block_align;
    let data_len = frames * block_align;
    if HEADER_LEN + data_len != len {
        file.set_len(HEADER_LEN + data_len)
            .map_err(io("truncate a partial frame"))?;
    }
    let data_len32 = u32::try_from(data_len).expect("bounded by MAX_DATA_LEN");
    write_sizes(&mut file, data_len32).map_err(io("repair the header"))?;
    file.sync_all().map_err(io("fsync"))?;
    drop(file);
    fs::rename(part, &target).map_err(io("rename"))?;
    sync_dir(dir).map_err(|source| RecoveryError::Io {
        path: dir.to_path_buf(),
        op: "fsync the directory",
        source,
    })?;
    let (sha256, bytes) = sha256_file(&target).map_err(|source| RecoveryError::Io {
        path: target.clone(),
        op: "read back for the checksum",
        source,
    })?;
    Ok(FinishedRecording {
        path: target,
        rate: parsed.rate,
        channels: parsed.channels,
        frames,
        duration: frames_to_duration(frames, parsed.rate),
        bytes,
        sha256,
    })
}
