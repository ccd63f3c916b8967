//! SDP (RFC 4566) and the offer/answer model (RFC 3264) for audio calls.
//!
//! Parsing and printing are `sdp-types`' (it accepts what trunks send: `b=` after `t=`,
//! `a=crypto`, `m=image ... t38`, an empty or missing `s=`); this module turns its untyped lines
//! into [`Sdp`] — media lines with their codecs, telephone-event, ptime, direction, `a=rtcp` and
//! `a=rtcp-mux` — and implements the negotiation in [`Negotiator`]:
//!
//! - [`Negotiator::create_offer`]: our codecs in our preference order; a re-offer keeps the
//!   payload types already in use and bumps the `o=` version under the same session id.
//! - [`Negotiator::receive_offer`]: answers with the offerer's codec order among those we
//!   support, one audio m-line accepted, every other m-line answered with port 0 (same count,
//!   same order), direction mirrored per RFC 3264 §6.1.
//! - [`Negotiator::receive_answer`]: the codec chosen, the remote address, the
//!   telephone-event payload type.
//!
//! Errors ([`SdpError`]) say which SIP status the application should answer with (488 when no
//! audio or no common codec).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::rtp::PayloadType;

pub mod address;
pub mod crypto;

pub use address::{AddressClass, classify};
pub use crypto::{CryptoAttr, CryptoError};

use crate::srtp::{MasterKey, SrtpParams, SrtpSuite};

/// An audio codec this crate can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// G.711 µ-law, PT 0.
    Pcmu,
    /// G.711 A-law, PT 8.
    Pcma,
    /// G.722, PT 9 (16 kHz audio, 8000 Hz RTP clock per RFC 3551 §4.5.2).
    G722,
}

impl AudioCodec {
    /// The static payload type (RFC 3551 table 4).
    pub fn static_payload_type(self) -> PayloadType {
        match self {
            AudioCodec::Pcmu => PayloadType::PCMU,
            AudioCodec::Pcma => PayloadType::PCMA,
            AudioCodec::G722 => PayloadType::G722,
        }
    }

    /// The encoding name used in `a=rtpmap`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
            AudioCodec::G722 => "G722",
        }
    }

    /// The RTP clock rate (8000 for all three; G.722's is 8000 by RFC 3551's historical error).
    pub fn rtp_clock_rate(self) -> u32 {
        8000
    }

    /// The audio sample rate.
    pub fn sample_rate(self) -> u32 {
        match self {
            AudioCodec::G722 => 16000,
            _ => 8000,
        }
    }

    fn from_rtpmap(name: &str, clock: u32) -> Option<AudioCodec> {
        [AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::G722]
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name) && c.rtp_clock_rate() == clock)
    }

    fn from_static(pt: u8) -> Option<AudioCodec> {
        match pt {
            0 => Some(AudioCodec::Pcmu),
            8 => Some(AudioCodec::Pcma),
            9 => Some(AudioCodec::G722),
            _ => None,
        }
    }
}

/// Media direction (RFC 3264 §5.1), from our own point of view when used in a [`Negotiated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Send and receive (the default when no attribute is present).
    #[default]
    SendRecv,
    /// Send only (what a party putting the other on hold offers, RFC 6337).
    SendOnly,
    /// Receive only.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    fn parse(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether this side sends.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn from_bits(send: bool, recv: bool) -> Direction {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The direction seen from the other side: sendonly ↔ recvonly.
    pub fn reverse(self) -> Direction {
        Direction::from_bits(self.receives(), self.sends())
    }

    /// What both allow.
    pub fn intersect(self, other: Direction) -> Direction {
        Direction::from_bits(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an SDP could not be parsed or negotiated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is not valid SDP.
    #[error("invalid SDP: {0}")]
    Parse(String),
    /// A connection address or port could not be understood.
    #[error("invalid address in SDP: {0}")]
    BadAddress(String),
    /// The offer has no usable audio m-line (RTP/AVP or RTP/SAVP, non-zero port).
    #[error("no audio media line")]
    NoAudio,
    /// No codec in the offer/answer is one we support.
    #[error("no common codec")]
    NoCommonCodec,
    /// The answer does not have one m-line per offered m-line (RFC 3264 §6).
    #[error("answer has {answered} media lines, offer had {offered}")]
    MediaCountMismatch {
        /// m-lines in our offer.
        offered: usize,
        /// m-lines in the answer.
        answered: usize,
    },
    /// The answerer rejected our audio stream (port 0).
    #[error("audio stream rejected by the answerer")]
    AudioRejected,
    /// The accepted audio stream has no connection address (`c=`) at either level.
    #[error("no connection address for the audio stream")]
    NoConnection,
    /// An answer arrived but we have no outstanding offer.
    #[error("answer without an outstanding offer")]
    NoOfferPending,
    /// The offer is RTP/SAVP (or we require SRTP) and no `a=crypto` line is one we support.
    #[error("no acceptable SRTP crypto suite")]
    NoCryptoSuite,
    /// We require SRTP and the answer is plain RTP/AVP.
    #[error("SRTP required, the answer is plain RTP")]
    SrtpRequired,
    /// The answer's SRTP does not fit our offer (no crypto line with an offered tag and
    /// suite, or RTP/SAVP to a plain offer).
    #[error("unusable SRTP answer: {0}")]
    BadCryptoAnswer(&'static str),
}

impl SdpError {
    /// The SIP status the application should reply with when this error comes from an offer:
    /// 488 Not Acceptable Here for negotiation failures, 400 Bad Request for malformed bodies.
    pub fn sip_status(&self) -> u16 {
        match self {
            SdpError::Parse(_) | SdpError::BadAddress(_) | SdpError::NoConnection => 400,
            _ => 488,
        }
    }
}

/// An `a=rtpmap` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type it maps.
    pub payload_type: u8,
    /// The encoding name, e.g. `PCMU`, `telephone-event`.
    pub encoding: String,
    /// The RTP clock rate.
    pub clock_rate: u32,
    /// Encoding parameters (channels for audio).
    pub params: Option<String>,
}

/// An `a=rtcp` attribute (RFC 3605).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpAttr {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address, when it differs from the media's.
    pub address: Option<IpAddr>,
}

/// What a payload type of an audio m-line stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// An audio codec we support.
    Codec(AudioCodec),
    /// RFC 4733 telephone-event at 8000 Hz, with its `a=fmtp` event list (e.g. `0-16`).
    TelephoneEvent(String),
    /// Anything else (comfort noise, G.729, Opus...).
    Other,
}

/// One m-line with the attributes we understand extracted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLine {
    /// The media type: `audio`, `video`, `image`...
    pub media: String,
    /// The transport port (0: rejected or disabled).
    pub port: u16,
    /// The transport protocol: `RTP/AVP`, `RTP/SAVP`, `udptl`...
    pub proto: String,
    /// The format list as written (payload types for RTP).
    pub formats: Vec<String>,
    /// A media-level `c=` address.
    pub connection: Option<IpAddr>,
    /// `a=rtpmap` lines.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp` lines as (payload type, parameters).
    pub fmtps: Vec<(u8, String)>,
    /// `a=ptime` in ms.
    pub ptime: Option<u32>,
    /// `a=maxptime` in ms.
    pub maxptime: Option<u32>,
    /// A media-level direction attribute.
    pub direction: Option<Direction>,
    /// `a=rtcp` (RFC 3605).
    pub rtcp: Option<RtcpAttr>,
    /// `a=rtcp-mux` (RFC 5761).
    pub rtcp_mux: bool,
    /// `a=crypto` lines (SDES-SRTP, RFC 4568), kept verbatim.
    pub crypto: Vec<String>,
    /// `b=` lines as (type, value), e.g. `AS`.
    pub bandwidths: Vec<(String, u64)>,
}

impl MediaLine {
    /// An RTP audio line that can carry our codecs (plain RTP/AVP(F) or SDES RTP/SAVP).
    pub fn is_rtp_audio(&self) -> bool {
        self.media.eq_ignore_ascii_case("audio")
            && (self.proto.eq_ignore_ascii_case("RTP/AVP")
                || self.proto.eq_ignore_ascii_case("RTP/AVPF")
                || self.is_savp())
    }

    /// Whether the line is SRTP with SDES keys (`RTP/SAVP`, RFC 3711 / RFC 4568).
    pub fn is_savp(&self) -> bool {
        self.proto.eq_ignore_ascii_case("RTP/SAVP")
    }

    /// The first `a=crypto` line we can use, in the offerer's order (its preference).
    pub fn usable_crypto(&self) -> Option<CryptoAttr> {
        self.crypto.iter().find_map(|c| CryptoAttr::parse(c).ok())
    }

    /// The payload types in m-line order with what each stands for.
    pub fn payload_formats(&self) -> Vec<(PayloadType, Format)> {
        let mut out = Vec::with_capacity(self.formats.len());
        for f in &self.formats {
            let Some(pt) = f.parse::<u8>().ok().and_then(PayloadType::new) else {
                continue;
            };
            let format = match self.rtpmaps.iter().find(|m| m.payload_type == pt.get()) {
                Some(m) if m.encoding.eq_ignore_ascii_case("telephone-event") => {
                    if m.clock_rate == 8000 {
                        let events = self
                            .fmtps
                            .iter()
                            .find(|(p, _)| *p == pt.get())
                            .map_or_else(|| "0-15".to_string(), |(_, v)| v.clone());
                        Format::TelephoneEvent(events)
                    } else {
                        Format::Other
                    }
                }
                Some(m) => AudioCodec::from_rtpmap(&m.encoding, m.clock_rate)
                    .map_or(Format::Other, Format::Codec),
                // RFC 3551 static assignments need no rtpmap.
                None if pt.get() < 96 => {
                    AudioCodec::from_static(pt.get()).map_or(Format::Other, Format::Codec)
                }
                None => Format::Other,
            };
            out.push((pt, format));
        }
        out
    }
}

/// The `o=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The user name (`-` when absent).
    pub username: String,
    /// The session id (kept as text: some peers send more than 64 bits of digits).
    pub session_id: String,
    /// The session version, bumped by each new offer or answer from that side.
    pub version: u64,
    /// The origin's address as written.
    pub address: String,
}

/// A session description with its media lines typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    /// The `o=` line.
    pub origin: Origin,
    /// The session-level `c=` address.
    pub connection: Option<IpAddr>,
    /// A session-level direction attribute.
    pub direction: Option<Direction>,
    /// Session-level `b=` lines.
    pub bandwidths: Vec<(String, u64)>,
    /// The m-lines in order.
    pub media: Vec<MediaLine>,
}

fn parse_ip(s: &str) -> Result<IpAddr, SdpError> {
    // Multicast addresses may carry "/ttl"; the address is what precedes it.
    let ip = s.split('/').next().unwrap_or(s);
    ip.parse().map_err(|_| SdpError::BadAddress(s.to_string()))
}

fn parse_connection(c: &sdp_types::Connection) -> Result<Option<IpAddr>, SdpError> {
    match c.addrtype {
        sdp_types::AddrType::Ip4 | sdp_types::AddrType::Ip6 => {
            parse_ip(&c.connection_address).map(Some)
        }
        // A hostname or an unknown address type: nothing we can send RTP to.
        _ => Ok(None),
    }
}

fn num<T: std::str::FromStr>(v: &Option<String>) -> Option<T> {
    v.as_deref().and_then(|s| s.trim().parse().ok())
}

impl Sdp {
    /// Parses an SDP body.
    pub fn parse(body: &[u8]) -> Result<Sdp, SdpError> {
        let raw = sdp_types::Session::parse(body).map_err(|e| SdpError::Parse(e.to_string()))?;
        Sdp::from_session(&raw)
    }

    fn from_session(raw: &sdp_types::Session) -> Result<Sdp, SdpError> {
        let connection = match &raw.connection {
            Some(c) => parse_connection(c)?,
            None => None,
        };
        let direction = raw
            .attributes
            .iter()
            .filter(|a| a.value.is_none())
            .find_map(|a| Direction::parse(&a.attribute));
        let mut media = Vec::with_capacity(raw.medias.len());
        for m in &raw.medias {
            let mut line = MediaLine {
                media: m.media.clone(),
                port: m.port,
                proto: m.proto.clone(),
                formats: m.fmt.split_ascii_whitespace().map(str::to_string).collect(),
                connection: None,
                rtpmaps: Vec::new(),
                fmtps: Vec::new(),
                ptime: None,
                maxptime: None,
                direction: None,
                rtcp: None,
                rtcp_mux: false,
                crypto: Vec::new(),
                bandwidths: m
                    .bandwidths
                    .iter()
                    .map(|b| (b.bwtype.clone(), b.bandwidth))
                    .collect(),
            };
            if let Some(c) = m.connections.first() {
                line.connection = parse_connection(c)?;
            }
            for a in &m.attributes {
                match (a.attribute.as_str(), &a.value) {
                    ("rtpmap", Some(v)) => {
                        if let Some(map) = parse_rtpmap(v) {
                            line.rtpmaps.push(map);
                        }
                    }
                    ("fmtp", Some(v)) => {
                        let (pt, params) = v.split_once(' ').unwrap_or((v, ""));
                        if let Ok(pt) = pt.parse() {
                            line.fmtps.push((pt, params.trim().to_string()));
                        }
                    }
                    ("ptime", v) => line.ptime = num(v),
                    ("maxptime", v) => line.maxptime = num(v),
                    ("rtcp", Some(v)) => line.rtcp = parse_rtcp_attr(v),
                    ("rtcp-mux", _) => line.rtcp_mux = true,
                    ("crypto", Some(v)) => line.crypto.push(v.clone()),
                    (name, None) => {
                        if let Some(d) = Direction::parse(name) {
                            line.direction = Some(d);
                        }
                    }
                    _ => {}
                }
            }
            media.push(line);
        }
        Ok(Sdp {
            origin: Origin {
                username: raw
                    .origin
                    .username
                    .clone()
                    .unwrap_or_else(|| "-".to_string()),
                session_id: raw.origin.sess_id.clone(),
                version: raw.origin.sess_version,
                address: raw.origin.unicast_address.clone(),
            },
            connection,
            direction,
            bandwidths: raw
                .bandwidths
                .iter()
                .map(|b| (b.bwtype.clone(), b.bandwidth))
                .collect(),
            media,
        })
    }

    /// Prints the description as an SDP body (CRLF line endings).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// The connection address for an m-line: media level, else session level.
    pub fn connection_for(&self, index: usize) -> Option<IpAddr> {
        self.media
            .get(index)
            .and_then(|m| m.connection)
            .or(self.connection)
    }

    /// The direction in force for an m-line: media level, else session level, else sendrecv.
    pub fn direction_for(&self, index: usize) -> Direction {
        self.media
            .get(index)
            .and_then(|m| m.direction)
            .or(self.direction)
            .unwrap_or_default()
    }

    fn to_session(&self) -> sdp_types::Session {
        let addrtype = |ip: &IpAddr| {
            if ip.is_ipv4() {
                sdp_types::AddrType::Ip4
            } else {
                sdp_types::AddrType::Ip6
            }
        };
        let conn = |ip: &IpAddr| sdp_types::Connection {
            nettype: sdp_types::NetType::In,
            addrtype: addrtype(ip),
            connection_address: ip.to_string(),
        };
        let origin_ip: Option<IpAddr> = self.origin.address.parse().ok();
        let bw = |b: &Vec<(String, u64)>| {
            b.iter()
                .map(|(t, v)| sdp_types::Bandwidth {
                    bwtype: t.clone(),
                    bandwidth: *v,
                })
                .collect()
        };
        let attr = |name: &str, value: Option<String>| sdp_types::Attribute {
            attribute: name.to_string(),
            value,
        };
        sdp_types::Session {
            origin: sdp_types::Origin {
                username: Some(self.origin.username.clone()),
                sess_id: self.origin.session_id.clone(),
                sess_version: self.origin.version,
                nettype: sdp_types::NetType::In,
                addrtype: origin_ip
                    .as_ref()
                    .map_or(sdp_types::AddrType::Ip4, addrtype),
                unicast_address: self.origin.address.clone(),
            },
            // RFC 4566 §5.3: s= must not be empty; "-" is the conventional placeholder.
            session_name: "-".to_string(),
            session_description: None,
            uri: None,
            emails: vec![],
            phones: vec![],
            connection: self.connection.as_ref().map(conn),
            bandwidths: bw(&self.bandwidths),
            times: vec![sdp_types::Time {
                start_time: 0,
                stop_time: 0,
                repeats: vec![],
            }],
            time_zones: vec![],
            key: None,
            attributes: self
                .direction
                .map(|d| attr(d.as_str(), None))
                .into_iter()
                .collect(),
            medias: self
                .media
                .iter()
                .map(|m| {
                    let mut attributes = Vec::new();
                    for r in &m.rtpmaps {
                        let mut v = format!("{} {}/{}", r.payload_type, r.encoding, r.clock_rate);
                        if let Some(p) = &r.params {
                            v.push('/');
                            v.push_str(p);
                        }
                        attributes.push(attr("rtpmap", Some(v)));
                    }
                    for (pt, p) in &m.fmtps {
                        attributes.push(attr("fmtp", Some(format!("{pt} {p}"))));
                    }
                    if let Some(p) = m.ptime {
                        attributes.push(attr("ptime", Some(p.to_string())));
                    }
                    if let Some(p) = m.maxptime {
                        attributes.push(attr("maxptime", Some(p.to_string())));
                    }
                    if let Some(d) = m.direction {
                        attributes.push(attr(d.as_str(), None));
                    }
                    if let Some(r) = m.rtcp {
                        let v = match r.address {
                            Some(ip) => format!(
                                "{} IN {} {}",
                                r.port,
                                if ip.is_ipv4() { "IP4" } else { "IP6" },
                                ip
                            ),
                            None => r.port.to_string(),
                        };
                        attributes.push(attr("rtcp", Some(v)));
                    }
                    if m.rtcp_mux {
                        attributes.push(attr("rtcp-mux", None));
                    }
                    for c in &m.crypto {
                        attributes.push(attr("crypto", Some(c.clone())));
                    }
                    sdp_types::Media {
                        media: m.media.clone(),
                        port: m.port,
                        num_ports: None,
                        proto: m.proto.clone(),
                        fmt: m.formats.join(" "),
                        media_title: None,
                        connections: m.connection.as_ref().map(conn).into_iter().collect(),
                        bandwidths: bw(&m.bandwidths),
                        key: None,
                        attributes,
                    }
                })
                .collect(),
        }
    }
}

impl fmt::Display for Sdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_session())
    }
}

fn parse_rtpmap(v: &str) -> Option<RtpMap> {
    let (pt, rest) = v.trim().split_once(' ')?;
    let mut parts = rest.trim().splitn(3, '/');
    let encoding = parts.next()?.to_string();
    let clock_rate = parts.next()?.trim().parse().ok()?;
    Some(RtpMap {
        payload_type: pt.parse().ok()?,
        encoding,
        clock_rate,
        params: parts.next().map(str::to_string),
    })
}

fn parse_rtcp_attr(v: &str) -> Option<RtcpAttr> {
    // RFC 3605: "a=rtcp:" port [nettype space addrtype space connection-address]
    let mut it = v.split_ascii_whitespace();
    let port = it.next()?.parse().ok()?;
    let address = it.nth(2).and_then(|a| a.parse().ok());
    Some(RtcpAttr { port, address })
}

/// Our side of the negotiation: address, port and codec preferences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpConfig {
    /// `o=` user name.
    pub username: String,
    /// `o=` session id; stays the same for the whole session (RFC 3264 §8).
    pub session_id: u64,
    /// The address RTP is received on (`c=` and `o=`).
    pub address: IpAddr,
    /// The RTP port (RTCP on port + 1 unless rtcp-mux is negotiated).
    pub rtp_port: u16,
    /// Codecs in preference order.
    pub codecs: Vec<AudioCodec>,
    /// The payload type to offer telephone-event on (`None`: do not offer RFC 4733).
    pub telephone_event: Option<u8>,
    /// Packetization time in ms.
    pub ptime: u32,
    /// Offer and accept `a=rtcp-mux`.
    pub rtcp_mux: bool,
    /// Write `a=rtcp:<port>` (RFC 3605) for NATs and peers that want it explicit.
    pub rtcp_attribute: bool,
    /// Whether our offers are SRTP (RTP/SAVP with `a=crypto`), and whether a plain answer
    /// is accepted.
    pub srtp: SrtpPolicy,
    /// Our SDES master key (random, from the caller). Without one we neither offer nor
    /// accept SRTP.
    pub srtp_key: Option<MasterKey>,
}

/// Our SRTP policy for the offers we make. RTP/SAVP offers we receive are answered whatever
/// it is (when we have a key); `Require` also refuses a plain re-offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrtpPolicy {
    /// Offer plain RTP/AVP.
    #[default]
    Off,
    /// Offer RTP/SAVP with a crypto line per supported suite; accept a plain answer.
    Offer,
    /// Offer RTP/SAVP; a plain answer (or re-offer) is [`SdpError::SrtpRequired`].
    Require,
}

impl SdpConfig {
    /// PCMU, PCMA, G.722 with telephone-event on 101 at 20 ms, RTCP on port + 1 announced with
    /// `a=rtcp`, rtcp-mux offered.
    pub fn new(address: IpAddr, rtp_port: u16, session_id: u64) -> SdpConfig {
        SdpConfig {
            username: "callplane".to_string(),
            session_id,
            address,
            rtp_port,
            codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::G722],
            telephone_event: Some(101),
            ptime: 20,
            rtcp_mux: true,
            rtcp_attribute: true,
            srtp: SrtpPolicy::Off,
            srtp_key: None,
        }
    }
}

/// The outcome of a completed offer/answer exchange: what the media session needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec to send (the first common one in the answer).
    pub codec: AudioCodec,
    /// Its payload type in this session.
    pub payload_type: PayloadType,
    /// The other codecs both sides accepted (the peer may switch to any of them).
    pub alternatives: Vec<(AudioCodec, PayloadType)>,
    /// The telephone-event payload type, if both sides support RFC 4733.
    pub telephone_event: Option<PayloadType>,
    /// Where to send RTP (`None` when the peer asked for no media: port 0 or `c=0.0.0.0`).
    pub remote_rtp: Option<SocketAddr>,
    /// Where to send RTCP (`a=rtcp`, else port + 1; the RTP address with rtcp-mux).
    pub remote_rtcp: Option<SocketAddr>,
    /// Whether RTP and RTCP share a port (RFC 5761).
    pub rtcp_mux: bool,
    /// The packetization time to send with, in ms (the peer's `a=ptime`, else ours).
    pub ptime: u32,
    /// What we may do: send, receive, both or neither.
    pub direction: Direction,
    /// The peer has put us on hold (sendonly/inactive, or the legacy `c=0.0.0.0`).
    pub remote_hold: bool,
    /// SRTP (SDES): the suite and both keys; `None` for plain RTP.
    pub srtp: Option<SrtpParams>,
}

/// The offer/answer state of one session (RFC 3264): builds offers and answers and processes
/// the other side's.
#[derive(Debug, Clone)]
pub struct Negotiator {
    config: SdpConfig,
    version: u64,
    direction: Direction,
    /// Payload types in use for each codec; kept across re-offers (RFC 3264 §8.3.2).
    codec_pts: Vec<(AudioCodec, u8)>,
    telephone_event: Option<u8>,
    pending_offer: Option<Sdp>,
    negotiated: Option<Negotiated>,
    /// Whether our offers are RTP/SAVP: per the policy, until a peer answers an `Offer` with
    /// plain RTP (re-offers then stay plain, as the session is).
    offer_savp: bool,
}

const HOLD_V4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

impl Negotiator {
    /// A negotiator for our side of the session.
    pub fn new(config: SdpConfig) -> Negotiator {
        let codec_pts = config
            .codecs
            .iter()
            .map(|c| (*c, c.static_payload_type().get()))
            .collect();
        Negotiator {
            offer_savp: config.srtp != SrtpPolicy::Off && config.srtp_key.is_some(),
            telephone_event: config.telephone_event,
            config,
            version: 0,
            direction: Direction::SendRecv,
            codec_pts,
            pending_offer: None,
            negotiated: None,
        }
    }

    /// The direction we want (`SendOnly` to put the peer on hold, RFC 6337 §5.3); takes effect
    /// in the next offer or answer.
    pub fn set_direction(&mut self, direction: Direction) {
        self.direction = direction;
    }

    /// The last negotiation result.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The `o=` version of the last description we produced.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn origin(&mut self) -> Origin {
        Origin {
            username: self.config.username.clone(),
            session_id: self.config.session_id.to_string(),
            version: self.version,
            address: self.config.address.to_string(),
        }
    }

    fn bump(&mut self) {
        // RFC 3264 §8: "the version in the origin field MUST increment by one from the previous
        // SDP" for each new offer or answer we send after the first.
        if self.pending_offer.is_some() || self.negotiated.is_some() {
            self.version += 1;
        }
    }

    fn our_audio_line(&self, codecs: &[(AudioCodec, u8)], te: Option<(u8, String)>) -> MediaLine {
        let mut rtpmaps: Vec<RtpMap> = codecs
            .iter()
            .map(|(c, pt)| RtpMap {
                payload_type: *pt,
                encoding: c.encoding_name().to_string(),
                clock_rate: c.rtp_clock_rate(),
                params: None,
            })
            .collect();
        let mut formats: Vec<String> = codecs.iter().map(|(_, pt)| pt.to_string()).collect();
        let mut fmtps = Vec::new();
        if let Some((pt, events)) = te {
            formats.push(pt.to_string());
            rtpmaps.push(RtpMap {
                payload_type: pt,
                encoding: "telephone-event".to_string(),
                clock_rate: 8000,
                params: None,
            });
            fmtps.push((pt, events));
        }
        MediaLine {
            media: "audio".to_string(),
            port: self.config.rtp_port,
            proto: "RTP/AVP".to_string(),
            formats,
            connection: None,
            rtpmaps,
            fmtps,
            ptime: Some(self.config.ptime),
            maxptime: None,
            direction: Some(self.direction),
            rtcp: self.config.rtcp_attribute.then_some(RtcpAttr {
                port: self.config.rtp_port.wrapping_add(1),
                address: None,
            }),
            rtcp_mux: false,
            crypto: Vec::new(),
            bandwidths: Vec::new(),
        }
    }

    /// Builds an offer (initial or re-offer) with our codecs in preference order.
    pub fn create_offer(&mut self) -> Sdp {
        self.bump();
        let te = self.telephone_event.map(|pt| (pt, "0-16".to_string()));
        let mut line = self.our_audio_line(&self.codec_pts.clone(), te);
        line.rtcp_mux = self.config.rtcp_mux;
        if let (true, Some(key)) = (self.offer_savp, self.config.srtp_key) {
            line.proto = "RTP/SAVP".to_string();
            // One line per suite, ours first; the same key (the answer picks one line only).
            line.crypto = SrtpSuite::ALL
                .iter()
                .zip(1..)
                .map(|(suite, tag)| {
                    CryptoAttr {
                        tag,
                        suite: *suite,
                        key,
                        lifetime: None,
                    }
                    .to_string()
                })
                .collect();
        }
        let offer = Sdp {
            origin: self.origin(),
            connection: Some(self.config.address),
            direction: None,
            bandwidths: Vec::new(),
            media: vec![line],
        };
        self.pending_offer = Some(offer.clone());
        offer
    }

    /// Answers an offer. On error the application rejects the offer with
    /// [`SdpError::sip_status`] (488 for no audio / no common codec).
    pub fn receive_offer(&mut self, offer: &Sdp) -> Result<(Sdp, Negotiated), SdpError> {
        // (m-line index, common codecs with the offerer's payload types, telephone-event,
        // the crypto line chosen).
        type Choice = (
            usize,
            Vec<(AudioCodec, u8)>,
            Option<(u8, String)>,
            Option<CryptoAttr>,
        );
        let mut chosen: Option<Choice> = None;
        let mut saw_audio = false;
        let mut crypto_refused = false;
        for (i, m) in offer.media.iter().enumerate() {
            if !m.is_rtp_audio() || m.port == 0 {
                continue;
            }
            saw_audio = true;
            // RFC 4568 §7.1.2: answer with one crypto line of the offer (same tag and suite)
            // and our own key; none acceptable makes the stream unacceptable.
            let crypto = if m.is_savp() {
                match (m.usable_crypto(), self.config.srtp_key) {
                    (Some(c), Some(_)) => Some(c),
                    _ => {
                        crypto_refused = true;
                        continue;
                    }
                }
            } else if self.config.srtp == SrtpPolicy::Require {
                crypto_refused = true;
                continue;
            } else {
                None
            };
            let formats = m.payload_formats();
            // RFC 3264 §6.1: the answer lists the formats in the offerer's order (the offerer's
            // preference), restricted to those we support.
            let common: Vec<(AudioCodec, u8)> = formats
                .iter()
                .filter_map(|(pt, f)| match f {
                    Format::Codec(c) if self.config.codecs.contains(c) => Some((*c, pt.get())),
                    _ => None,
                })
                .collect();
            if common.is_empty() {
                continue;
            }
            let te = if self.config.telephone_event.is_some() {
                formats.iter().find_map(|(pt, f)| match f {
                    Format::TelephoneEvent(events) => Some((pt.get(), answer_events(events))),
                    _ => None,
                })
            } else {
                None
            };
            chosen = Some((i, common, te, crypto));
            break;
        }
        let Some((index, common, te, crypto)) = chosen else {
            return Err(if crypto_refused {
                SdpError::NoCryptoSuite
            } else if saw_audio {
                SdpError::NoCommonCodec
            } else {
                SdpError::NoAudio
            });
        };
        let remote_ip = offer.connection_for(index).ok_or(SdpError::NoConnection)?;
        let offered = &offer.media[index];
        let legacy_hold = remote_ip.is_unspecified();
        let mut remote_dir = offer.direction_for(index);
        if legacy_hold {
            // RFC 3264 §8.4: c=0.0.0.0 (RFC 2543 hold) means "do not send to me".
            remote_dir = remote_dir.intersect(Direction::SendOnly);
        }
        // RFC 3264 §6.1: "If a stream is offered as sendonly, the corresponding stream MUST be
        // marked as recvonly or inactive in the answer"; recvonly → sendonly or inactive;
        // sendrecv → any; inactive → inactive.
        let our_dir = remote_dir.reverse().intersect(self.direction);
        let rtcp_mux = offered.rtcp_mux && self.config.rtcp_mux;

        // Remember the offerer's payload types so a re-offer of ours keeps them (§8.3.2).
        for (c, pt) in &common {
            if let Some(e) = self.codec_pts.iter_mut().find(|(k, _)| k == c) {
                e.1 = *pt;
            }
        }
        if let Some((pt, _)) = &te {
            self.telephone_event = Some(*pt);
        }

        self.pending_offer = None;
        self.bump();
        let mut media = Vec::with_capacity(offer.media.len());
        for (i, m) in offer.media.iter().enumerate() {
            if i == index {
                let mut line = self.our_audio_line(&common, te.clone());
                line.direction = Some(our_dir);
                line.rtcp_mux = rtcp_mux;
                if let (Some(c), Some(key)) = (crypto, self.config.srtp_key) {
                    line.proto = "RTP/SAVP".to_string();
                    line.crypto = vec![CryptoAttr { key, ..c }.to_string()];
                }
                if let Some(p) = offered.ptime.filter(|p| (10..=150).contains(p)) {
                    line.ptime = Some(p);
                }
                media.push(line);
            } else {
                // RFC 3264 §6: "The answer MUST contain exactly the same number of "m=" lines
                // as the offer"; a rejected stream is answered with port 0.
                media.push(rejected_line(m));
            }
        }
        let answer = Sdp {
            origin: self.origin(),
            connection: Some(self.config.address),
            direction: None,
            bandwidths: Vec::new(),
            media,
        };
        let srtp = match (crypto, self.config.srtp_key) {
            (Some(c), Some(local)) => Some(SrtpParams {
                suite: c.suite,
                local,
                remote: c.key,
            }),
            _ => None,
        };
        let negotiated = self.negotiated_from(
            offer,
            index,
            &common,
            te.map(|t| t.0),
            our_dir,
            rtcp_mux,
            srtp,
        )?;
        self.negotiated = Some(negotiated.clone());
        Ok((answer, negotiated))
    }

    /// Processes the answer to our last offer.
    pub fn receive_answer(&mut self, answer: &Sdp) -> Result<Negotiated, SdpError> {
        let offer = self.pending_offer.take().ok_or(SdpError::NoOfferPending)?;
        if answer.media.len() != offer.media.len() {
            return Err(SdpError::MediaCountMismatch {
                offered: offer.media.len(),
                answered: answer.media.len(),
            });
        }
        // Our offers carry one audio m-line, the first.
        let index = 0;
        let m = &answer.media[index];
        if m.port == 0 || !m.is_rtp_audio() {
            return Err(SdpError::AudioRejected);
        }
        let formats = m.payload_formats();
        let common: Vec<(AudioCodec, u8)> = formats
            .iter()
            .filter_map(|(pt, f)| match f {
                Format::Codec(c) if self.codec_pts.iter().any(|(k, _)| k == c) => {
                    Some((*c, pt.get()))
                }
                _ => None,
            })
            .collect();
        if common.is_empty() {
            return Err(SdpError::NoCommonCodec);
        }
        let te = if self.telephone_event.is_some() {
            formats.iter().find_map(|(pt, f)| match f {
                Format::TelephoneEvent(_) => Some(pt.get()),
                _ => None,
            })
        } else {
            None
        };
        if let Some(pt) = te {
            self.telephone_event = Some(pt);
        }
        let remote_ip = answer.connection_for(index).ok_or(SdpError::NoConnection)?;
        let mut remote_dir = answer.direction_for(index);
        if remote_ip.is_unspecified() {
            remote_dir = remote_dir.intersect(Direction::SendOnly);
        }
        let our_dir = remote_dir.reverse().intersect(self.direction);
        let rtcp_mux = m.rtcp_mux && offer.media[0].rtcp_mux;
        let srtp = self.answer_srtp(&offer.media[0], m)?;
        let negotiated =
            self.negotiated_from(answer, index, &common, te, our_dir, rtcp_mux, srtp)?;
        self.negotiated = Some(negotiated.clone());
        Ok(negotiated)
    }

    /// The SRTP an answer `answered` to our offered line `offered` settles (RFC 4568 §7.1.3:
    /// one crypto line echoing a tag and suite we offered).
    fn answer_srtp(
        &mut self,
        offered: &MediaLine,
        answered: &MediaLine,
    ) -> Result<Option<SrtpParams>, SdpError> {
        match (offered.is_savp(), answered.is_savp()) {
            (false, false) => Ok(None),
            (false, true) => Err(SdpError::BadCryptoAnswer(
                "RTP/SAVP answer to a plain offer",
            )),
            (true, false) => {
                if self.config.srtp == SrtpPolicy::Require {
                    return Err(SdpError::SrtpRequired);
                }
                // The peer chose plain RTP: so be it for this session's re-offers too.
                self.offer_savp = false;
                Ok(None)
            }
            (true, true) => {
                let ours: Vec<CryptoAttr> = offered
                    .crypto
                    .iter()
                    .filter_map(|c| CryptoAttr::parse(c).ok())
                    .collect();
                let theirs = answered
                    .crypto
                    .iter()
                    .filter_map(|c| CryptoAttr::parse(c).ok())
                    .find(|a| ours.iter().any(|o| o.tag == a.tag && o.suite == a.suite))
                    .ok_or(SdpError::BadCryptoAnswer(
                        "no crypto line with a tag and suite we offered",
                    ))?;
                let local = ours
                    .iter()
                    .find(|o| o.tag == theirs.tag)
                    .map(|o| o.key)
                    .ok_or(SdpError::BadCryptoAnswer("no key"))?;
                Ok(Some(SrtpParams {
                    suite: theirs.suite,
                    local,
                    remote: theirs.key,
                }))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn negotiated_from(
        &self,
        remote: &Sdp,
        index: usize,
        common: &[(AudioCodec, u8)],
        te: Option<u8>,
        our_dir: Direction,
        rtcp_mux: bool,
        srtp: Option<SrtpParams>,
    ) -> Result<Negotiated, SdpError> {
        let m = &remote.media[index];
        let ip = remote.connection_for(index).ok_or(SdpError::NoConnection)?;
        let remote_dir = remote.direction_for(index);
        let hold = ip == HOLD_V4 || ip.is_unspecified();
        let remote_rtp = (!hold && m.port != 0).then(|| SocketAddr::new(ip, m.port));
        let remote_rtcp = remote_rtp.map(|rtp| {
            if rtcp_mux {
                rtp
            } else if let Some(r) = m.rtcp {
                SocketAddr::new(r.address.unwrap_or(ip), r.port)
            } else {
                SocketAddr::new(ip, m.port.wrapping_add(1))
            }
        });
        let pt = |p: u8| PayloadType::new(p).ok_or(SdpError::Parse(format!("payload type {p}")));
        Ok(Negotiated {
            codec: common[0].0,
            payload_type: pt(common[0].1)?,
            alternatives: common[1..]
                .iter()
                .map(|(c, p)| pt(*p).map(|p| (*c, p)))
                .collect::<Result<_, _>>()?,
            telephone_event: te.map(pt).transpose()?,
            remote_rtp,
            remote_rtcp,
            rtcp_mux,
            ptime: m
                .ptime
                .filter(|p| (10..=150).contains(p))
                .unwrap_or(self.config.ptime),
            direction: our_dir,
            remote_hold: hold || !remote_dir.receives(),
            srtp,
        })
    }
}

/// The telephone-event list we answer with: the offer's when it is within what we handle
/// (events 0-16: digits, *, #, A-D, flash), else the DTMF set 0-15.
fn answer_events(offered: &str) -> String {
    let ok = offered.split(',').all(|part| {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        matches!((a.trim().parse::<u8>(), b.trim().parse::<u8>()), (Ok(a), Ok(b)) if a <= b && b <= 16)
    });
    if ok && !offered.is_empty() {
        offered.to_string()
    } else {
        "0-15".to_string()
    }
}

fn rejected_line(m: &MediaLine) -> MediaLine {
    MediaLine {
        media: m.media.clone(),
        port: 0,
        proto: m.proto.clone(),
        // An m-line needs at least one format even when rejected (RFC 4566 §5.14).
        formats: if m.formats.is_empty() {
            vec!["0".to_string()]
        } else {
            m.formats.clone()
        },
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: None,
        maxptime: None,
        direction: None,
        rtcp: None,
        rtcp_mux: false,
        crypto: Vec::new(),
        bandwidths: Vec::new(),
    }
}
