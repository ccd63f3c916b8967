//! Bytes of a TCP stream fed to the framer in chunks of pseudo-random sizes (the first 8 input
//! bytes seed the sizes). Checks: no panic; after a poll returns `Ok(None)` the framer holds at
//! most `MAX` bytes (memory stays bounded whatever the peer sends); and the messages cut from
//! the stream do not depend on how it was chunked (compared with one push of everything).
//! Pings and pongs are left out of the comparison: a CRLF split across reads is legitimately
//! a pong where the whole stream would show a ping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip::transport::{Framed, StreamFramer};

const MAX: usize = 4096;

#[derive(Debug, PartialEq)]
enum Seen {
    Frame(Box<Framed>),
    Closed,
}

/// Feeds `chunks` in order, polling after each, and returns what came out (until an error,
/// which closes the connection).
fn run<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Vec<Seen> {
    let mut framer = StreamFramer::new(MAX);
    let mut out = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        loop {
            match framer.poll() {
                Ok(Some(Framed::Ping | Framed::Pong)) => {}
                Ok(Some(f)) => out.push(Seen::Frame(Box::new(f))),
                Ok(None) => {
                    assert!(
                        framer.buffered() <= MAX,
                        "framer holds {} bytes after Ok(None), limit {MAX}",
                        framer.buffered()
                    );
                    break;
                }
                Err(_) => {
                    out.push(Seen::Closed);
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (seed, stream) = data.split_at(8);
    let mut state = u64::from_le_bytes(seed.try_into().expect("8 bytes")) | 1;
    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        // xorshift64: cheap and deterministic for a given input.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Mostly small reads (1..=64 bytes) to split every token, sometimes large ones.
        let size = if state % 8 == 0 {
            (state >> 8) as usize % 2048 + 1
        } else {
            (state >> 8) as usize % 64 + 1
        };
        let (c, r) = rest.split_at(size.min(rest.len()));
        chunks.push(c);
        rest = r;
    }
    let chunked = run(chunks.iter().copied());
    let whole = run(std::iter::once(stream));
    assert_eq!(
        chunked, whole,
        "framing depends on how the stream was chunked"
    );
});
