//! Any text as a digest challenge and as digest credentials: parsing never panics; a value that
//! parses prints without a line break and parses back equal; answering a parsed challenge and
//! verifying parsed credentials never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip::auth::{Authorization, Challenge, Credentials, NonceIssuer, Secret, answer};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Challenge::parse(text) {
        let printed = c.to_string();
        assert!(
            !printed.contains(['\r', '\n']),
            "printed challenge breaks the line: {printed:?}"
        );
        let again = Challenge::parse(&printed)
            .unwrap_or_else(|e| panic!("printed challenge does not re-parse: {e:?}\n{printed:?}"));
        assert_eq!(c, again, "printed: {printed:?}");
        let _ = answer(
            &c,
            &Credentials::new("alice", "secret"),
            "INVITE",
            "sip:b@example.com",
            data,
            "cn",
            1,
        );
    }
    if let Ok(a) = Authorization::parse(text) {
        let printed = a.to_string();
        assert!(
            !printed.contains(['\r', '\n']),
            "printed credentials break the line: {printed:?}"
        );
        let again = Authorization::parse(&printed)
            .unwrap_or_else(|e| panic!("printed credentials do not re-parse: {e:?}\n{printed:?}"));
        assert_eq!(a, again, "printed: {printed:?}");
        let issuer = NonceIssuer::new(b"fuzz".to_vec(), a.realm.clone());
        let _ = issuer.verify(
            1_000,
            &a,
            "INVITE",
            data,
            &Secret::Password("secret".into()),
            Some(1),
        );
    }
});
