//! Sockets: the only module of the application that opens them.
//!
//! - [`sip`]: the SIP transport driver. One tokio task owns the sans-IO [`::sip::endpoint::Endpoint`]
//!   together with the UDP socket, the TCP listener and the TCP connections, and runs the
//!   architecture's run loop: wait for one input (a datagram, a stream frame, a command or the
//!   next transaction deadline), feed it to the endpoint, send what it asks to send, hand its
//!   events to the application, sleep.
//! - [`tls`]: the rustls configurations of SIP over TLS (CAs, certificate, server names).
//! - [`http`]: the API's TCP listener (axum serves the router the `api` module builds).
//! - [`egress`]: where webhooks may connect (the SSRF guard) and the dispatcher's HTTP client.
//! - [`dns`]: the NAPTR/SRV/A/AAAA lookups of RFC 3263 (hickory-resolver), cached by TTL.
//! - [`api_client`]: a JSON client of callplane's own REST API (`callplane demo` uses it).
//! - [`inbound`]: the per-source rate limit the SIP driver applies before parsing.
//! - [`rtp_ports`]: the pool of even/odd RTP/RTCP port pairs that calls bind their media
//!   sockets from.
//!
//! The driver reads the monotonic clock (as `tokio::time::Instant`, converted to the
//! `std::time::Instant` that the protocol crates take as an argument): the protocol crates never
//! read it themselves.

pub mod api_client;
pub mod dns;
pub mod egress;
pub mod http;
pub mod inbound;
pub mod media_workers;
pub mod rtp_ports;
pub mod sip;
pub mod tls;
