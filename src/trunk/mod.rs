//! Trunks (#11): what a trunk is ([`settings`]), its live state ([`state`]), the
//! registration client and OPTIONS health checks that drive that state (`registrar`,
//! `health`), and how inbound calls are routed by trunk and DID (`route`).
//!
//! Layering: [`settings`] and [`state`] are pure (no I/O, checked by the layering test); the
//! sans-IO protocol logic (registration timers, RFC 3263 choice) lives in the `sip` crate; the
//! tasks that send and wait live here and in `net`.

pub mod health;
pub mod registrar;
pub mod settings;
pub mod state;
pub mod tasks;

pub use settings::{CallerIdMode, SrtpMode, TrunkSettings, TrunkTransport, UriStyle};
pub use state::{Health, RegState, TrunkRuntime, TrunkStates};
pub use tasks::{TrunkContext, TrunkCounters, TrunkEvent, TrunkSpec, TrunkTasks};
