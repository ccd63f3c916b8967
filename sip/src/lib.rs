//! Sans-IO SIP for callplane.
//!
//! This crate holds the SIP logic of the softswitch and performs no I/O: it never opens a socket,
//! reads a file or reads the clock. Bytes come in as [`bytes::Bytes`], time comes in as an
//! [`std::time::Instant`] argument, and everything that must go on the wire comes out as a value
//! for the application to send.
//!
//! # Driving it
//! Every stateful object follows one run-loop shape:
//!
//! ```text
//! obj.handle_*(now, input)        // a received message, a timeout, or a command
//! loop {
//!     match obj.poll_output() {   // transmit, event, or the next deadline
//!         ...
//!     }
//! }
//! ```
//!
//! # Errors
//! Malformed input is an error value (or, for requests, the 4xx/5xx response that RFC 3261 asks
//! for); it is never a panic.
//!
//! # Modules
//! - [`message`]: the codec: requests, responses, headers, URIs, parse and print.
//! - [`transport`]: framing SIP over stream transports (TCP/TLS).
//! - [`transaction`]: the four RFC 3261 §17 transaction machines with RFC 6026.
//! - [`auth`]: HTTP digest (RFC 7616 / RFC 8760) for both client and server.
//! - [`endpoint`]: routes incoming messages to transactions and dialogs; stateless replies.
//! - [`dialog`]: dialogs and INVITE sessions (RFC 3261 §12–§15, PRACK, session timers).
//! - [`register`]: the registration client (RFC 3261 §10.2): refreshes, digest, backoff.
#![warn(missing_docs)]

pub mod auth;
pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod register;
pub mod transaction;
pub mod transport;
