//! Sans-IO media for callplane.
//!
//! Like the `sip` crate this crate performs no I/O: packets come in as bytes with the time they
//! arrived, PCM comes in as sample slices, and packets, events and frames go out as values. It
//! never opens a socket, touches a file or reads the clock.
#![warn(missing_docs)]

pub mod codec;
pub mod dtmf;
pub mod jitter;
pub mod player;
pub mod quality;
pub mod recorder;
pub mod rtp;
pub mod sdp;
pub mod session;
pub mod srtp;
pub mod tone;
