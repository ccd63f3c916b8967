//! callplane: the application crate. It is the only layer that performs I/O.
//!
//! - [`net`]: sockets: the SIP transport driver (UDP/TCP) and the RTP port pool.
//! - [`files`]: audio files on disk: prompt loading and caching, the crash-safe recorder.
//! - [`script`]: the call script language: JSON model, validation with step paths, the runner.
//! - [`engine`]: the call engine: call actors, the SIP dispatcher, the timeline events.
//! - [`campaign`]: campaigns: dial lists, calling windows, pacing, retries, the worker.
//! - [`store`]: the control plane's database (SQLite embedded, PostgreSQL by URL): the only SQL.
//! - [`demo`]: `callplane demo`, a survey campaign end to end on loopback.
//! - [`loadgen`]: `callplane loadgen <sip-uri>`, a load generator that measures every call.
//! - [`probe`]: `callplane probe <sip-uri>`, a trunk conformance run with SIP ladders.
//! - [`clock`]: the application's clock (wall and monotonic), read nowhere else outside `net`.
//!
//! (Each module's own documentation is its inner `//!` comment: an outer `///` on the `mod`
//! line would be merged with it and make rustdoc resolve its links in this scope.)

pub mod api;
pub mod app;
pub mod campaign;
pub mod clock;
pub mod dashboard;
pub mod demo;
pub mod engine;
pub mod events;
pub mod files;
pub mod loadgen;
pub mod net;
pub mod probe;
pub mod script;
pub mod store;
pub mod trunk;
