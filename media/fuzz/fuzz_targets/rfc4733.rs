//! RFC 4733 telephone-event parsing never panics; what parses re-serializes to the same fields;
//! the receiver state machine accepts any packet sequence.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use media::dtmf::{DtmfReceiver, TelephoneEvent};

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = TelephoneEvent::parse(data) {
        let again = TelephoneEvent::parse(&ev.to_bytes()).expect("our own output parses");
        assert_eq!(again, ev);
    }
    // Records of 9 bytes: timestamp (4), arrival offset in ms (1), payload (4).
    let t0 = Instant::now();
    let mut rx = DtmfReceiver::new(8000).with_timeout(Duration::from_millis(100));
    let mut now = t0;
    for rec in data.chunks(9) {
        if rec.len() < 5 {
            let _ = rx.handle_packet(0, rec, now);
            break;
        }
        let ts = u32::from_be_bytes([rec[0], rec[1], rec[2], rec[3]]);
        now += Duration::from_millis(rec[4] as u64);
        rx.handle_timeout(now);
        let _ = rx.handle_packet(ts, &rec[5..], now);
        while let Some(ev) = rx.poll_event() {
            assert!(ev.digit.event() < 16);
        }
    }
});
