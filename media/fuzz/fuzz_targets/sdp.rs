//! SDP parsing and answering never panic; an answer we produce always parses.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use media::sdp::{Negotiator, Sdp, SdpConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(offer) = Sdp::parse(data) {
        let mut n = Negotiator::new(SdpConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000, 1));
        if let Ok((answer, _)) = n.receive_offer(&offer) {
            let printed = answer.to_bytes();
            Sdp::parse(&printed).expect("our answer parses");
        }
        let mut n = Negotiator::new(SdpConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000, 1));
        n.create_offer();
        let _ = n.receive_answer(&offer);
    }
});
