//! A `MediaSession` fed arbitrary datagrams (RTP, RTCP, garbage) and ticks never panics.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use media::codec::Codec;
use media::rtp::{PayloadType, Ssrc};
use media::session::{Input, MediaSession, Output, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut cfg = SessionConfig::new(Codec::Pcmu, PayloadType::PCMU, Ssrc(1));
    cfg.telephone_event = PayloadType::new(101);
    cfg.remote_rtp = Some("127.0.0.1:4000".parse().expect("literal"));
    cfg.record = true;
    let mut s = MediaSession::new(cfg, t0);
    let source = "127.0.0.1:4000".parse().expect("literal");
    // Records: 1 byte of time advance (ms), 1 byte of length, then that many bytes.
    let mut now = t0;
    let mut rest = data;
    while rest.len() >= 2 {
        now += Duration::from_millis(rest[0] as u64);
        let len = (rest[1] as usize).min(rest.len() - 2);
        let bytes = Bytes::copy_from_slice(&rest[2..2 + len]);
        rest = &rest[2 + len..];
        let _ = s.handle_input(Input::Receive { now, source, bytes });
        let _ = s.handle_input(Input::Timeout(now));
        while let Some(o) = s.poll_output() {
            if matches!(o, Output::Timeout(_)) {
                break;
            }
        }
    }
});
