//! callplane: the application crate. It is the only layer that performs I/O.

/// Audio files on disk: the prompt cache and the crash-safe recording writer.
pub mod files;

/// The call script language: JSON model, validation with step paths, and the pure runner.
pub mod script;

/// Sockets: the SIP transport driver (UDP/TCP) and the RTP port pool.
pub mod net;

/// The call engine: call actors, the SIP dispatcher, the timeline events.
pub mod engine;

/// The application's clock (wall and monotonic), read nowhere else outside `net`.
pub mod clock;
