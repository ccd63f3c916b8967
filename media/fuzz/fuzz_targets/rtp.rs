//! RTP parsing never panics; whatever parses re-serializes to the same header and payload.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use media::rtp::RtpPacket;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(p) = RtpPacket::parse(&bytes) {
        let out = p
            .header()
            .to_vec(&p.payload)
            .expect("a parsed header is writable");
        let again = RtpPacket::parse(&Bytes::from(out)).expect("our own output parses");
        assert_eq!(again.header(), p.header());
        assert_eq!(again.payload, p.payload);
    }
    // The sequence tracker and statistics accept any sequence of numbers.
    let mut stats = media::rtp::ReceiverStats::new(8000, 0);
    let t0 = std::time::Instant::now();
    for (i, pair) in data.chunks_exact(2).enumerate() {
        let seq = u16::from_be_bytes([pair[0], pair[1]]);
        stats.on_packet(
            seq,
            seq as u32 * 160,
            t0 + std::time::Duration::from_millis(i as u64),
        );
    }
    let _ = stats.report_block(media::rtp::Ssrc(1), t0);
});
