//! Audio files on disk: prompts to play and recordings of calls.
//!
//! This is the only module of the application that touches the filesystem. Everything here is
//! synchronous on purpose: the engine calls it from blocking tasks (`spawn_blocking`) or, for
//! recordings, from the [`recorder`]'s own writer threads, so that a slow disk stalls one of
//! those threads and never the runtime's reactor or a call's RTP pacing.
//!
//! - [`prompt`]: decode a WAV of any common rate, width and channel count into mono 16-bit PCM at
//!   the rate a call needs, and cache the result per (file, rate) until the file changes.
//! - [`recording`]: the crash-safe recording writer (periodic flush + fsync of a `.part` file,
//!   atomic rename at the end) and the start-up recovery of `.part` files a crash left behind.
//! - [`recorder`]: the pool of writer threads that run those writers for calls, fed by bounded
//!   queues that a call never waits on.

pub mod disk;
pub mod generated;
pub mod prompt;
pub mod range;
pub mod recorder;
pub mod recording;

pub use disk::read_dev_asset;
pub use prompt::{Prompt, PromptCache, PromptConfig, PromptError, load_prompt, load_prompt_with};
pub use recorder::{
    ClosedRecording, Closing, OpenError, Recorder, RecorderConfig, RecorderStats, Recording,
    RecordingLoss, RecordingNote, WriteHold,
};
pub use recording::{
    FinishedRecording, RecordingError, RecordingWriter, RecoveryError, recover_partials,
    sha256_file,
};

/// Creates a directory and its parents (nothing when it exists). Directories it creates are
/// private to the server's user (0700: recordings, prompts and the database are tenants' data);
/// an existing directory keeps the mode its operator gave it.
pub fn ensure_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates `path` empty with mode 0600 when it does not exist (the SQLite database, before
/// SQLite opens it: its `-wal` and `-shm` files take the same mode). An existing file is left
/// as it is.
pub fn create_private_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The text of a small file, created with `make()` when it is missing or empty (this node's id
/// in the data directory, stable across restarts).
pub fn read_or_create(
    path: &std::path::Path,
    make: impl FnOnce() -> String,
) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let value = make();
    std::fs::write(path, format!("{value}\n"))?;
    Ok(value)
}

/// `path` with symlinks and `..` resolved, when it lies inside `dir` (also resolved); `None`
/// when it resolves outside (a symlink out of a tenant's prompts directory).
pub fn resolve_inside(
    dir: &std::path::Path,
    path: &std::path::Path,
) -> std::io::Result<Option<std::path::PathBuf>> {
    let root = std::fs::canonicalize(dir)?;
    let real = std::fs::canonicalize(path)?;
    Ok(real.starts_with(&root).then_some(real))
}
