//! Any bytes as a URI: parsing never panics, and a URI that parses prints to text that parses
//! back to an equal URI.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip::message::Uri;

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = Uri::parse(data) else {
        return;
    };
    let printed = uri.to_string();
    let again = match Uri::parse(printed.as_bytes()) {
        Ok(u) => u,
        Err(e) => {
            panic!("printed URI does not re-parse: {e:?}\nprinted: {printed:?}\nparsed: {uri:?}")
        }
    };
    assert_eq!(uri, again, "re-parsed URI differs\nprinted: {printed:?}");
    // RFC 3261 §19.1.4 equality must at least be reflexive.
    assert!(
        uri.equivalent(&uri),
        "URI not equivalent to itself: {printed:?}"
    );
});
