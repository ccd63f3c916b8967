//! Campaigns: dial lists worked through by a pacing scheduler within each callee's own calling
//! window, with retries by outcome, opt-out and crash-safe leases (docs/campaigns.md).
//!
//! - [`model`]: the campaign's settings and the contact and attempt vocabulary (serde shapes the
//!   API and the store share).
//! - [`phone`]: E.164 normalisation of dial-list numbers (libphonenumber's metadata).
//! - [`tz`]: the callee's time zone: the contact's own, else derived from the number, else the
//!   campaign's default.
//! - [`window`]: calling windows per weekday in the callee's local time, holidays, DST-correct.
//! - [`pacing`]: pure: concurrency and calls/s limits (system, tenant, campaign, trunk) and fair
//!   shares (deficit round-robin weighted by priority).
//! - [`retry`]: pure: what an outcome leads to (retry when, on which trunk, or a final state),
//!   naming the rule that fired.
//! - [`worker`]: the I/O half: claims contacts from the store under pacing, originates their
//!   calls, and records each outcome from the call's own final event.
//!
//! `model`, `phone`, `tz`, `window`, `pacing` and `retry` do no I/O and never read the clock
//! (time comes in as an argument), so they are tested like the protocol crates.

pub mod export;
pub mod import;
pub mod model;
pub mod pacing;
pub mod phone;
pub mod retry;
pub mod tz;
pub mod window;
pub mod worker;
