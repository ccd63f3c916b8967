//! SDP parsing against captured and trunk-shaped fixtures, and RFC 3264 offer/answer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use media::rtp::PayloadType;
use media::sdp::{AudioCodec, Direction, Negotiator, Sdp, SdpConfig, SdpError};

fn fixture(name: &str) -> Sdp {
    let path = format!("{}/tests/fixtures/sdp/{name}", env!("CARGO_MANIFEST_DIR"));
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Sdp::parse(&body).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ours() -> Negotiator {
    Negotiator::new(SdpConfig::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        20000,
        4242,
    ))
}

fn formats(sdp: &Sdp, i: usize) -> Vec<&str> {
    sdp.media[i].formats.iter().map(String::as_str).collect()
}

#[test]
fn every_fixture_parses() {
    let dir = format!("{}/tests/fixtures/sdp", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sdp") {
            let body = std::fs::read(&path).unwrap();
            Sdp::parse(&body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 11, "only {n} fixtures");
}

#[test]
fn trunk_shapes_are_understood() {
    let s = fixture("trunk_bandwidth_after_t.sdp");
    assert_eq!(s.bandwidths, vec![("AS".to_string(), 64)]);
    assert_eq!(s.media[0].rtcp.map(|r| r.port), Some(31469));
    assert_eq!(s.media[0].maxptime, Some(40));
    let s = fixture("trunk_crypto.sdp");
    assert_eq!(s.media[0].crypto.len(), 2);
    assert!(s.media[0].rtcp_mux);
    let s = fixture("trunk_t38_reinvite.sdp");
    assert_eq!(s.media[1].media, "image");
    assert_eq!(s.media[1].proto, "udptl");
    let s = fixture("missing_session_name.sdp");
    assert_eq!(s.media[0].port, 7078);
}

#[test]
fn answer_keeps_the_offerers_codec_order() {
    let offer = fixture("trunk_bandwidth_after_t.sdp");
    let (answer, neg) = ours().receive_offer(&offer).unwrap();
    // Offer: 8 0 18 101; we support PCMA and PCMU (our preference is PCMU first, but the
    // offerer's order wins) and not G.729.
    assert_eq!(formats(&answer, 0), ["8", "0", "101"]);
    assert_eq!(neg.codec, AudioCodec::Pcma);
    assert_eq!(neg.payload_type, PayloadType::PCMA);
    assert_eq!(
        neg.alternatives,
        vec![(AudioCodec::Pcmu, PayloadType::PCMU)]
    );
    assert_eq!(neg.telephone_event, PayloadType::new(101));
    assert_eq!(neg.remote_rtp, Some("203.0.113.20:31468".parse().unwrap()));
    // RFC 3605 a=rtcp names the RTCP port explicitly.
    assert_eq!(neg.remote_rtcp, Some("203.0.113.20:31469".parse().unwrap()));
    assert!(!neg.rtcp_mux);
    assert_eq!(neg.direction, Direction::SendRecv);
}

#[test]
fn baresip_offer_is_answered_without_opus() {
    let offer = fixture("baresip_offer.sdp");
    let (answer, neg) = ours().receive_offer(&offer).unwrap();
    assert_eq!(formats(&answer, 0), ["0", "8", "9", "101"]);
    assert_eq!(neg.codec, AudioCodec::Pcmu);
    let te = answer.media[0]
        .fmtps
        .iter()
        .find(|(pt, _)| *pt == 101)
        .unwrap();
    assert_eq!(te.1, "0-15");
}

#[test]
fn sipp_offer_telephone_event_list_is_echoed() {
    let offer = fixture("sipp_uac_pcap.sdp");
    let (answer, neg) = ours().receive_offer(&offer).unwrap();
    assert_eq!(neg.codec, AudioCodec::Pcma);
    assert_eq!(neg.remote_rtp, Some("127.0.0.1:6000".parse().unwrap()));
    let te = answer.media[0]
        .fmtps
        .iter()
        .find(|(pt, _)| *pt == 101)
        .unwrap();
    assert_eq!(te.1, "0-11,16");
}

#[test]
fn unsupported_media_lines_are_rejected_with_port_zero_in_order() {
    let offer = fixture("audio_and_image.sdp");
    let (answer, _) = ours().receive_offer(&offer).unwrap();
    assert_eq!(answer.media.len(), 2);
    assert_eq!(
        (answer.media[0].media.as_str(), answer.media[0].port),
        ("image", 0)
    );
    assert_eq!(answer.media[0].proto, "udptl");
    assert_eq!(
        (answer.media[1].media.as_str(), answer.media[1].port),
        ("audio", 20000)
    );

    let offer = fixture("video_first.sdp");
    let (answer, neg) = ours().receive_offer(&offer).unwrap();
    assert_eq!(answer.media[0].port, 0);
    assert_eq!(answer.media[0].media, "video");
    assert_eq!(neg.codec, AudioCodec::G722);
    // The printed answer re-parses to the same m-line structure.
    let reparsed = Sdp::parse(&answer.to_bytes()).unwrap();
    assert_eq!(reparsed, answer);
}

#[test]
fn direction_is_answered_per_rfc3264() {
    let (answer, neg) = ours().receive_offer(&fixture("hold_sendonly.sdp")).unwrap();
    assert_eq!(answer.media[0].direction, Some(Direction::RecvOnly));
    assert!(neg.remote_hold);
    let (answer, neg) = ours().receive_offer(&fixture("video_first.sdp")).unwrap();
    assert_eq!(answer.media[1].direction, Some(Direction::SendOnly));
    assert_eq!(neg.direction, Direction::SendOnly);
    // Legacy hold: c=0.0.0.0 means "do not send to me".
    let (answer, neg) = ours()
        .receive_offer(&fixture("hold_legacy_c0.sdp"))
        .unwrap();
    assert_eq!(answer.media[0].direction, Some(Direction::RecvOnly));
    assert_eq!(neg.remote_rtp, None);
    assert!(neg.remote_hold);
    // An inactive offer stays inactive.
    let mut offer = fixture("hold_sendonly.sdp");
    offer.media[0].direction = Some(Direction::Inactive);
    let (answer, _) = ours().receive_offer(&offer).unwrap();
    assert_eq!(answer.media[0].direction, Some(Direction::Inactive));
}

#[test]
fn negotiation_failures_map_to_488() {
    let err = ours()
        .receive_offer(&fixture("no_common_codec.sdp"))
        .unwrap_err();
    assert_eq!(err, SdpError::NoCommonCodec);
    assert_eq!(err.sip_status(), 488);
    // A T.38 re-INVITE disables audio: nothing for an audio-only endpoint to accept.
    let err = ours()
        .receive_offer(&fixture("trunk_t38_reinvite.sdp"))
        .unwrap_err();
    assert_eq!(err, SdpError::NoAudio);
    assert_eq!(err.sip_status(), 488);
    assert_eq!(Sdp::parse(b"garbage").unwrap_err().sip_status(), 400);
}

#[test]
fn offer_answer_between_two_negotiators() {
    let mut a = ours();
    let mut b = Negotiator::new(SdpConfig {
        codecs: vec![AudioCodec::Pcma, AudioCodec::Pcmu],
        ..SdpConfig::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 30000, 77)
    });
    let offer = a.create_offer();
    // Printing and parsing our offer is lossless.
    let wire = offer.to_bytes();
    assert_eq!(Sdp::parse(&wire).unwrap(), offer);
    let text = String::from_utf8(wire).unwrap();
    assert!(
        text.contains("m=audio 20000 RTP/AVP 0 8 9 101\r\n"),
        "{text}"
    );
    assert!(text.contains("a=fmtp:101 0-16\r\n"));
    assert!(text.contains("a=rtcp:20001\r\n"));
    assert!(text.contains("a=rtcp-mux\r\n"));
    assert!(text.contains("s=-\r\n"));

    let (answer, b_neg) = b
        .receive_offer(&Sdp::parse(&offer.to_bytes()).unwrap())
        .unwrap();
    assert_eq!(
        b_neg.codec,
        AudioCodec::Pcmu,
        "offerer's order wins over the answerer's"
    );
    let a_neg = a
        .receive_answer(&Sdp::parse(&answer.to_bytes()).unwrap())
        .unwrap();
    assert_eq!(a_neg.codec, AudioCodec::Pcmu);
    assert_eq!(
        a_neg.remote_rtp,
        Some(SocketAddr::from(([10, 0, 0, 2], 30000)))
    );
    assert!(a_neg.rtcp_mux && b_neg.rtcp_mux);
    assert_eq!(
        a_neg.remote_rtcp, a_neg.remote_rtp,
        "rtcp-mux sends RTCP to the RTP port"
    );
    assert_eq!(a_neg.telephone_event, PayloadType::new(101));
    assert_eq!(a_neg.ptime, 20);
    // A second answer without a new offer is an error.
    assert_eq!(
        a.receive_answer(&answer).unwrap_err(),
        SdpError::NoOfferPending
    );
}

#[test]
fn answers_that_break_the_rules_are_rejected() {
    let mut a = ours();
    let offer = a.create_offer();
    let mut answer = offer.clone();
    answer.media.push(answer.media[0].clone());
    assert!(matches!(
        a.receive_answer(&answer),
        Err(SdpError::MediaCountMismatch { .. })
    ));
    a.create_offer();
    let mut answer = offer.clone();
    answer.media[0].port = 0;
    assert_eq!(
        a.receive_answer(&answer).unwrap_err(),
        SdpError::AudioRejected
    );
}

#[test]
fn reoffer_keeps_payload_types_and_bumps_the_version() {
    let mut n = ours();
    // The peer offered telephone-event on 102; our later re-offer must keep 102 (RFC 3264
    // §8.3.2), keep the session id and increment the version by one per description.
    let (answer, _) = n.receive_offer(&fixture("video_first.sdp")).unwrap();
    let reoffer = n.create_offer();
    assert_eq!(reoffer.origin.session_id, answer.origin.session_id);
    assert_eq!(reoffer.origin.version, answer.origin.version + 1);
    assert!(reoffer.media[0].formats.contains(&"102".to_string()));
    assert!(!reoffer.media[0].formats.contains(&"101".to_string()));
    // Putting the peer on hold: sendonly in the next re-offer, version bumped again.
    n.set_direction(Direction::SendOnly);
    let hold = n.create_offer();
    assert_eq!(hold.origin.version, reoffer.origin.version + 1);
    assert_eq!(hold.media[0].direction, Some(Direction::SendOnly));
}

#[test]
fn linphone_offer_parses_with_ipv6_connection_and_video() {
    // Captured from linphonec 5.1.65 (see fixtures/sdp/README.md).
    let s = fixture("linphone_offer.sdp");
    assert_eq!(s.origin.username, "linphone");
    assert_eq!(s.connection, Some("fd00::2".parse().unwrap()));
    assert_eq!(s.media.len(), 2);
    assert_eq!(
        formats(&s, 0),
        ["96", "97", "98", "0", "8", "18", "99", "100", "101"]
    );
    assert_eq!(
        (s.media[1].media.as_str(), s.media[1].port),
        ("video", 9078)
    );
    // telephone-event is offered at three clock rates; only the 8 kHz one can go with G.711.
    let te: Vec<(u8, u32)> = s.media[0]
        .rtpmaps
        .iter()
        .filter(|m| m.encoding == "telephone-event")
        .map(|m| (m.payload_type, m.clock_rate))
        .collect();
    assert_eq!(te, [(99, 48000), (100, 16000), (101, 8000)]);
    // The printed form re-parses to the same structure (rtcp-xr / rtcp-fb are not kept,
    // which is why the comparison is structural and not byte-for-byte).
    assert_eq!(Sdp::parse(&s.to_bytes()).unwrap(), s);
}

#[test]
fn linphone_offer_is_answered_with_g711_and_8khz_telephone_event() {
    let offer = fixture("linphone_offer.sdp");
    let (answer, neg) = ours().receive_offer(&offer).unwrap();
    // Opus, speex and G.729 are dropped; the offerer's order of the rest is kept; of the three
    // telephone-event payload types only 101 (8000 Hz) matches our codecs' clock.
    assert_eq!(formats(&answer, 0), ["0", "8", "101"]);
    assert_eq!(neg.codec, AudioCodec::Pcmu);
    assert_eq!(neg.payload_type, PayloadType::PCMU);
    assert_eq!(
        neg.alternatives,
        vec![(AudioCodec::Pcma, PayloadType::PCMA)]
    );
    assert_eq!(neg.telephone_event, PayloadType::new(101));
    // linphone sent no a=fmtp for 101: we answer the RFC 4733 default DTMF set.
    let te = answer.media[0]
        .fmtps
        .iter()
        .find(|(pt, _)| *pt == 101)
        .unwrap();
    assert_eq!(te.1, "0-15");
    assert!(
        !answer.media[0]
            .rtpmaps
            .iter()
            .any(|m| m.payload_type == 99 || m.payload_type == 100)
    );
    // The session-level IPv6 c= gives the RTP address; no a=rtcp, no rtcp-mux: RTCP on port + 1.
    assert_eq!(neg.remote_rtp, Some("[fd00::2]:7078".parse().unwrap()));
    assert_eq!(neg.remote_rtcp, Some("[fd00::2]:7079".parse().unwrap()));
    assert!(!neg.rtcp_mux);
    assert_eq!(neg.ptime, 20);
    assert_eq!(neg.direction, Direction::SendRecv);
    assert!(!neg.remote_hold);
    assert_eq!(answer.media[0].port, 20000);
}

#[test]
fn linphone_video_line_is_rejected_with_port_zero() {
    let offer = fixture("linphone_offer.sdp");
    let (answer, _) = ours().receive_offer(&offer).unwrap();
    // RFC 3264 §6: same number of m-lines, the unsupported one answered with port 0.
    assert_eq!(answer.media.len(), 2);
    let video = &answer.media[1];
    assert_eq!(
        (video.media.as_str(), video.port, video.proto.as_str()),
        ("video", 0, "RTP/AVP")
    );
    assert_eq!(video.formats, ["96"]);
    let text = String::from_utf8(answer.to_bytes()).unwrap();
    assert!(text.contains("m=video 0 RTP/AVP 96\r\n"), "{text}");
    assert!(text.contains("m=audio 20000 RTP/AVP 0 8 101\r\n"), "{text}");
}
