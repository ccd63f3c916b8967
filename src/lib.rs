//! callplane: the application crate. It is the only layer that performs I/O.

/// Audio files on disk: the prompt cache and the crash-safe recording writer.
pub mod files;
