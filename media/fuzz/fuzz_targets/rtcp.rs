//! RTCP compound parsing never panics; whatever parses re-serializes and parses the same.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use media::rtp::RtcpPacket;

fuzz_target!(|data: &[u8]| {
    if let Ok(packets) = RtcpPacket::parse_compound(&Bytes::copy_from_slice(data)) {
        if let Ok(out) = RtcpPacket::write_compound(&packets) {
            let again = RtcpPacket::parse_compound(&Bytes::from(out)).expect("our output parses");
            assert_eq!(again.len(), packets.len());
        }
    }
});
