//! What a trunk is: everything an operator configures, as one serde value stored in the
//! trunk row's `settings` column (migration 0005) beside the columns that are queried
//! (name, limits). Pure: parsing and checking only.

use serde::{Deserialize, Serialize};

/// The SIP transport of a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    /// UDP (5060).
    #[default]
    Udp,
    /// TCP (5060).
    Tcp,
    /// TLS (5061), `sips:` when the trunk says so.
    Tls,
}

impl TrunkTransport {
    /// `udp`, `tcp` or `tls` (as in the trunk row's `transport` column and a Via).
    pub fn as_str(self) -> &'static str {
        match self {
            TrunkTransport::Udp => "udp",
            TrunkTransport::Tcp => "tcp",
            TrunkTransport::Tls => "tls",
        }
    }

    /// The inverse of [`TrunkTransport::as_str`] (any case).
    pub fn parse(s: &str) -> Option<TrunkTransport> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(TrunkTransport::Udp),
            "tcp" => Some(TrunkTransport::Tcp),
            "tls" => Some(TrunkTransport::Tls),
            _ => None,
        }
    }

    /// The port when a host names none: 5061 for TLS, 5060 otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            TrunkTransport::Tls => 5061,
            _ => 5060,
        }
    }
}

/// How the Request-URI of a call through the trunk names the callee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UriStyle {
    /// `sip:<number>@<host>`.
    #[default]
    Sip,
    /// `sip:<number>@<host>;user=phone` (RFC 3261 §19.1.1).
    SipUserPhone,
    /// `tel:<number>` (RFC 3966), sent to the trunk's host.
    Tel,
}

/// Whether calls through the trunk use SRTP (SDES, RFC 4568).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpMode {
    /// Plain RTP/AVP (an RTP/SAVP offer from the peer is still answered).
    #[default]
    Off,
    /// Offer RTP/SAVP with `a=crypto`; accept a plain answer.
    Offer,
    /// Offer RTP/SAVP and fail the call without SRTP.
    Require,
}

/// How the caller id of a call through the trunk is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerIdMode {
    /// In From only.
    #[default]
    From,
    /// In From and P-Asserted-Identity (RFC 3325).
    Pai,
    /// In P-Asserted-Identity with `Privacy: id` and an anonymous From.
    PaiPrivate,
}

/// Everything configured on a trunk beyond its name and limits. Every field has a default, so
/// that rows written before #11 (an `address` and a `transport`) read as a trunk.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrunkSettings {
    /// Where calls go, in order: `host`, `host:port`, an IP literal, or a domain resolved by
    /// RFC 3263 (NAPTR, SRV, A/AAAA) when no port is given.
    pub hosts: Vec<String>,
    /// How `hosts` are tried: in order (`false`) or weighted at random (`true`).
    pub weighted: bool,
    /// The transport.
    pub transport: TrunkTransport,
    /// An outbound proxy URI (`sip:proxy.example.net;lr`): every request goes there first.
    pub outbound_proxy: Option<String>,
    /// The digest user name and password (the password is write-only in the API).
    pub username: Option<String>,
    /// Never serialised (`skip_serializing`): write-only in the API, and the store keeps it in
    /// the trunk's `password` column, not in the `settings` JSON.
    #[serde(skip_serializing)]
    pub password: Option<String>,
    /// The realm these credentials are for (`None`: any realm).
    pub realm: Option<String>,
    /// The digest user name when it differs from the From user (`auth_username`).
    pub auth_username: Option<String>,
    /// Register with the trunk.
    pub register: bool,
    /// The registration's requested expiry, seconds (default 3600).
    pub register_expires_s: Option<u32>,
    /// The user part of the registered Contact (default: `username`).
    pub contact_user: Option<String>,
    /// IP authentication: inbound calls are taken only from these addresses or CIDRs
    /// (`192.0.2.0/24`, `2001:db8::1`); no registration needed.
    pub allowed_sources: Vec<String>,
    /// Codecs in order of preference (`PCMU`, `PCMA`); empty: the engine's default.
    pub codecs: Vec<String>,
    /// The From user (or whole URI) of calls through the trunk.
    pub from_user: Option<String>,
    /// How the caller id is presented.
    pub caller_id_mode: CallerIdMode,
    /// Caller ids a campaign picks from per callee (same area code first).
    pub caller_id_pool: Vec<String>,
    /// A Diversion header value (RFC 5806) on calls through the trunk.
    pub diversion: Option<String>,
    /// Ring timeout of calls through the trunk, seconds (`None`: the call's own).
    pub ring_timeout_s: Option<u32>,
    /// Custom header fields on the INVITE, in order.
    pub headers: Vec<(String, String)>,
    /// How the Request-URI names the callee.
    pub uri_style: UriStyle,
    /// SRTP.
    pub srtp: SrtpMode,
    /// The address put in Via, Contact and SDP of this trunk's calls (behind NAT).
    pub advertise: Option<String>,
    /// OPTIONS ping interval, seconds (`None` or 0: no pings; the trunk is never marked down).
    pub options_interval_s: Option<u32>,
    /// PEM file of the CAs that sign this trunk's TLS certificate (`None`: the node's).
    pub tls_ca_file: Option<String>,
    /// The TLS server name (SNI and certificate check) when it differs from the host.
    pub tls_server_name: Option<String>,
}
