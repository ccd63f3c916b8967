//! SDES-SRTP in offer/answer (RFC 4568 with RFC 3264): RTP/SAVP offers with `a=crypto`,
//! answers with one crypto line of a supported suite, 488 when none fits, and the `offer` /
//! `require` policies for a plain answer.

use std::net::{IpAddr, Ipv4Addr};

use media::sdp::{CryptoAttr, Negotiator, Sdp, SdpConfig, SdpError, SrtpPolicy};
use media::srtp::{MasterKey, SrtpSuite};

const OUR_KEY: MasterKey = MasterKey([0x11; 30]);
const THEIR_KEY: MasterKey = MasterKey([0x22; 30]);

fn negotiator(policy: SrtpPolicy, key: Option<MasterKey>) -> Negotiator {
    Negotiator::new(SdpConfig {
        srtp: policy,
        srtp_key: key,
        ..SdpConfig::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 20000, 4242)
    })
}

/// An offer from a peer: one audio line with `proto` and `crypto` lines.
fn peer_offer(proto: &str, crypto: &[&str]) -> Sdp {
    let mut body = format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
         m=audio 30000 {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
    );
    for c in crypto {
        body.push_str(&format!("a=crypto:{c}\r\n"));
    }
    Sdp::parse(body.as_bytes()).expect("offer parses")
}

fn their(tag: u32, suite: &str) -> String {
    format!("{tag} {suite} inline:{}", THEIR_KEY.to_base64())
}

const S80: &str = "AES_CM_128_HMAC_SHA1_80";
const S32: &str = "AES_CM_128_HMAC_SHA1_32";

#[test]
fn incoming_offers_are_answered_or_refused_by_table() {
    let mki = format!("1 {S80} inline:{}|2^20|1:4", THEIR_KEY.to_base64());
    let aes256 = format!("1 AES_256_CM_HMAC_SHA1_80 inline:{}", THEIR_KEY.to_base64());
    let session_param = format!("{} UNENCRYPTED_SRTP", their(1, S80));
    // (what, proto, crypto lines, our policy, our key, expected: Ok(answer proto, tag, suite)
    // or the error).
    type Want = Result<(&'static str, Option<(u32, SrtpSuite)>), SdpError>;
    type Case = (
        &'static str,
        &'static str,
        Vec<String>,
        SrtpPolicy,
        Option<MasterKey>,
        Want,
    );
    let cases: Vec<Case> = vec![
        (
            "SAVP with _80 is answered SAVP, even with the policy off",
            "RTP/SAVP",
            vec![their(1, S80)],
            SrtpPolicy::Off,
            Some(OUR_KEY),
            Ok(("RTP/SAVP", Some((1, SrtpSuite::AesCm128HmacSha1_80)))),
        ),
        (
            "the offerer's first acceptable line wins (_32 first)",
            "RTP/SAVP",
            vec![their(4, S32), their(5, S80)],
            SrtpPolicy::Offer,
            Some(OUR_KEY),
            Ok(("RTP/SAVP", Some((4, SrtpSuite::AesCm128HmacSha1_32)))),
        ),
        (
            "unsupported lines are skipped: AES-256, MKI, session parameters",
            "RTP/SAVP",
            vec![
                aes256.clone(),
                mki.clone(),
                session_param.clone(),
                their(9, S80),
            ],
            SrtpPolicy::Off,
            Some(OUR_KEY),
            Ok(("RTP/SAVP", Some((9, SrtpSuite::AesCm128HmacSha1_80)))),
        ),
        (
            "no supported suite: 488",
            "RTP/SAVP",
            vec![aes256, mki, session_param],
            SrtpPolicy::Off,
            Some(OUR_KEY),
            Err(SdpError::NoCryptoSuite),
        ),
        (
            "SAVP without any crypto line: 488",
            "RTP/SAVP",
            vec![],
            SrtpPolicy::Off,
            Some(OUR_KEY),
            Err(SdpError::NoCryptoSuite),
        ),
        (
            "SAVP and we have no key: 488",
            "RTP/SAVP",
            vec![their(1, S80)],
            SrtpPolicy::Off,
            None,
            Err(SdpError::NoCryptoSuite),
        ),
        (
            "plain offer, policy off: plain answer",
            "RTP/AVP",
            vec![],
            SrtpPolicy::Off,
            Some(OUR_KEY),
            Ok(("RTP/AVP", None)),
        ),
        (
            "plain offer with best-effort crypto lines: plain answer, no crypto",
            "RTP/AVP",
            vec![their(1, S80)],
            SrtpPolicy::Offer,
            Some(OUR_KEY),
            Ok(("RTP/AVP", None)),
        ),
        (
            "plain (re-)offer while we require SRTP: 488",
            "RTP/AVP",
            vec![],
            SrtpPolicy::Require,
            Some(OUR_KEY),
            Err(SdpError::NoCryptoSuite),
        ),
    ];
    for (what, proto, crypto, policy, key, want) in cases {
        let crypto: Vec<&str> = crypto.iter().map(String::as_str).collect();
        let offer = peer_offer(proto, &crypto);
        let got = negotiator(policy, key).receive_offer(&offer);
        match (got, want) {
            (Ok((answer, neg)), Ok((want_proto, want_crypto))) => {
                // Through the wire and back: what the peer reads.
                let answer = Sdp::parse(&answer.to_bytes()).expect("answer parses");
                let m = &answer.media[0];
                assert_eq!(m.proto, want_proto, "{what}");
                match want_crypto {
                    Some((tag, suite)) => {
                        assert_eq!(m.crypto.len(), 1, "{what}: one crypto line");
                        let c = CryptoAttr::parse(&m.crypto[0]).expect("our crypto parses");
                        assert_eq!((c.tag, c.suite, c.key), (tag, suite, OUR_KEY), "{what}");
                        let srtp = neg.srtp.expect("SRTP negotiated");
                        assert_eq!(srtp.suite, suite, "{what}");
                        assert_eq!(srtp.local, OUR_KEY, "{what}");
                        assert_eq!(srtp.remote, THEIR_KEY, "{what}");
                    }
                    None => {
                        assert!(m.crypto.is_empty(), "{what}: {:?}", m.crypto);
                        assert_eq!(neg.srtp, None, "{what}");
                    }
                }
            }
            (Err(e), Err(want)) => {
                assert_eq!(e, want, "{what}");
                assert_eq!(e.sip_status(), 488, "{what}");
            }
            (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
}

/// An answer from the peer to our offer: `proto` and crypto lines.
fn peer_answer(proto: &str, crypto: &[String]) -> Sdp {
    let mut body = format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
         m=audio 30000 {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    for c in crypto {
        body.push_str(&format!("a=crypto:{c}\r\n"));
    }
    Sdp::parse(body.as_bytes()).expect("answer parses")
}

#[test]
fn our_offer_is_savp_with_a_line_per_suite_and_answers_are_checked_by_table() {
    type Want = Result<Option<SrtpSuite>, SdpError>;
    let cases: Vec<(&str, SrtpPolicy, &str, Vec<String>, Want)> = vec![
        (
            "SAVP answer echoing tag 1 (_80)",
            SrtpPolicy::Offer,
            "RTP/SAVP",
            vec![their(1, S80)],
            Ok(Some(SrtpSuite::AesCm128HmacSha1_80)),
        ),
        (
            "SAVP answer echoing tag 2 (_32)",
            SrtpPolicy::Require,
            "RTP/SAVP",
            vec![their(2, S32)],
            Ok(Some(SrtpSuite::AesCm128HmacSha1_32)),
        ),
        (
            "a tag we offered with another suite",
            SrtpPolicy::Offer,
            "RTP/SAVP",
            vec![their(1, S32)],
            Err(SdpError::BadCryptoAnswer(
                "no crypto line with a tag and suite we offered",
            )),
        ),
        (
            "SAVP answer without crypto",
            SrtpPolicy::Offer,
            "RTP/SAVP",
            vec![],
            Err(SdpError::BadCryptoAnswer(
                "no crypto line with a tag and suite we offered",
            )),
        ),
        (
            "plain answer accepted when offering",
            SrtpPolicy::Offer,
            "RTP/AVP",
            vec![],
            Ok(None),
        ),
        (
            "plain answer refused when requiring",
            SrtpPolicy::Require,
            "RTP/AVP",
            vec![],
            Err(SdpError::SrtpRequired),
        ),
    ];
    for (what, policy, proto, crypto, want) in cases {
        let mut n = negotiator(policy, Some(OUR_KEY));
        let offer = Sdp::parse(&n.create_offer().to_bytes()).expect("offer parses");
        let m = &offer.media[0];
        assert_eq!(m.proto, "RTP/SAVP", "{what}");
        let lines: Vec<CryptoAttr> = m
            .crypto
            .iter()
            .map(|c| CryptoAttr::parse(c).expect("our crypto parses"))
            .collect();
        assert_eq!(
            lines
                .iter()
                .map(|c| (c.tag, c.suite, c.key))
                .collect::<Vec<_>>(),
            [
                (1, SrtpSuite::AesCm128HmacSha1_80, OUR_KEY),
                (2, SrtpSuite::AesCm128HmacSha1_32, OUR_KEY)
            ],
            "{what}"
        );
        let got = n
            .receive_answer(&peer_answer(proto, &crypto))
            .map(|neg| neg.srtp);
        match (got, want) {
            (Ok(Some(p)), Ok(Some(suite))) => {
                assert_eq!(
                    (p.suite, p.local, p.remote),
                    (suite, OUR_KEY, THEIR_KEY),
                    "{what}"
                );
            }
            (Ok(None), Ok(None)) => {
                // Downgraded by the peer: re-offers stay plain.
                let again = n.create_offer();
                assert_eq!(again.media[0].proto, "RTP/AVP", "{what}");
                assert!(again.media[0].crypto.is_empty(), "{what}");
            }
            (Err(e), Err(w)) => assert_eq!(e, w, "{what}"),
            (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn policy_off_or_no_key_offers_plain_rtp() {
    for (policy, key) in [(SrtpPolicy::Off, Some(OUR_KEY)), (SrtpPolicy::Offer, None)] {
        let offer = negotiator(policy, key).create_offer();
        assert_eq!(offer.media[0].proto, "RTP/AVP");
        assert!(offer.media[0].crypto.is_empty());
    }
}

#[test]
fn two_negotiators_agree_on_keys_both_ways() {
    let mut a = negotiator(SrtpPolicy::Require, Some(OUR_KEY));
    let mut b = negotiator(SrtpPolicy::Off, Some(THEIR_KEY));
    let offer = Sdp::parse(&a.create_offer().to_bytes()).expect("offer");
    let (answer, b_neg) = b.receive_offer(&offer).expect("b answers");
    let a_neg = a
        .receive_answer(&Sdp::parse(&answer.to_bytes()).expect("answer"))
        .expect("a accepts");
    let (pa, pb) = (a_neg.srtp.expect("a srtp"), b_neg.srtp.expect("b srtp"));
    assert_eq!(pa.suite, SrtpSuite::AesCm128HmacSha1_80);
    assert_eq!(pa.suite, pb.suite);
    assert_eq!((pa.local, pa.remote), (pb.remote, pb.local));
}
