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

/// The most custom header fields a trunk adds to its INVITEs.
pub const MAX_CUSTOM_HEADERS: usize = 16;
/// The most hosts a trunk lists.
pub const MAX_HOSTS: usize = 16;
/// The most entries of a list field (`allowed_sources`, `caller_id_pool`, `codecs`).
pub const MAX_LIST: usize = 256;
/// The longest text field, bytes.
pub const MAX_TEXT: usize = 256;
/// The registration expiry range, seconds.
pub const REGISTER_EXPIRES_S: std::ops::RangeInclusive<u32> = 60..=86_400;
/// The OPTIONS interval range, seconds (0 also: no pings).
pub const OPTIONS_INTERVAL_S: std::ops::RangeInclusive<u32> = 5..=3600;
/// The ring timeout range, seconds.
pub const RING_TIMEOUT_S: std::ops::RangeInclusive<u32> = 1..=300;

/// A setting that cannot work, naming the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct SettingsError {
    /// The field (`hosts[1]`, `headers[0].name`).
    pub field: String,
    /// What is wrong and what would be right.
    pub why: String,
}

fn bad(field: impl Into<String>, why: impl Into<String>) -> SettingsError {
    SettingsError {
        field: field.into(),
        why: why.into(),
    }
}

/// The host part of an entry of [`TrunkSettings::hosts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    /// An IP literal.
    Ip(std::net::IpAddr),
    /// A domain name (lowercase), resolved by RFC 3263.
    Domain(String),
}

/// One parsed entry of [`TrunkSettings::hosts`]: `host`, `host:port`, `[v6]:port`, an IP
/// literal or a domain, optionally followed by `;weight=N` (1 to 1000, default 1) for
/// [`TrunkSettings::weighted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// The host.
    pub host: HostName,
    /// The port, when written.
    pub port: Option<u16>,
    /// The weight among the trunk's hosts.
    pub weight: u32,
}

impl HostSpec {
    /// Parses an entry; the error says what is wrong.
    pub fn parse(text: &str) -> Result<HostSpec, String> {
        let text = text.trim();
        let (addr, weight) = match text.split_once(';') {
            None => (text, 1),
            Some((addr, param)) => {
                let w = param
                    .strip_prefix("weight=")
                    .and_then(|w| w.parse::<u32>().ok())
                    .filter(|w| (1..=1000).contains(w))
                    .ok_or("the only parameter is ;weight=N (1 to 1000)")?;
                (addr, w)
            }
        };
        if addr.is_empty() || addr.len() > 253 + 6 {
            return Err("empty or too long".into());
        }
        let port = |p: &str| -> Result<u16, String> {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("port {p:?} is not 1 to 65535"))
        };
        let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
            let (ip, after) = rest.split_once(']').ok_or("an IPv6 literal needs ]")?;
            let ip: std::net::Ipv6Addr = ip
                .parse()
                .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(port(p.strip_prefix(':').ok_or("expected :port after ]")?)?),
            };
            (HostName::Ip(ip.into()), port)
        } else if let Ok(ip) = addr.parse::<std::net::IpAddr>() {
            (HostName::Ip(ip), None)
        } else {
            let (name, p) = match addr.rsplit_once(':') {
                Some((n, p)) => (n, Some(port(p)?)),
                None => (addr, None),
            };
            if let Ok(ip) = name.parse::<std::net::Ipv4Addr>() {
                (HostName::Ip(ip.into()), p)
            } else {
                (HostName::Domain(domain(name)?), p)
            }
        };
        Ok(HostSpec { host, port, weight })
    }

    /// The host as it goes in a URI (`[v6]` bracketed).
    pub fn uri_host(&self) -> String {
        match &self.host {
            HostName::Ip(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            HostName::Ip(ip) => ip.to_string(),
            HostName::Domain(d) => d.clone(),
        }
    }
}

/// A domain name (RFC 1035 §2.3.1, digits allowed first): labels of letters, digits and
/// hyphens, 1 to 63 each, 253 in all; returned lowercase without a trailing dot.
fn domain(name: &str) -> Result<String, String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // A name whose last label is all digits is a mistyped IP address.
        && !name.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(format!("{name:?} is not an IP address or a domain name"))
    }
}

/// An entry of [`TrunkSettings::allowed_sources`]: an address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub addr: std::net::IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl Cidr {
    /// Parses `192.0.2.0/24`, `2001:db8::/32` or a single address.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (ip, len) = match text.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (text, None),
        };
        let ip: std::net::IpAddr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("prefix length {l:?} is not 0 to {max}"))?,
        };
        Ok(Cidr {
            addr: mask(ip, len),
            len,
        })
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

fn mask(ip: std::net::IpAddr, len: u8) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            std::net::IpAddr::V4((bits & m).into())
        }
        std::net::IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            std::net::IpAddr::V6((bits & m).into())
        }
    }
}

/// A caller id: `+` and 1 to 15 digits (E.164), or a national number of 2 to 20 digits.
pub fn valid_caller_number(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    let max = if s.starts_with('+') { 15 } else { 20 };
    (2..=max).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A user part put before `@` (RFC 3261 §25.1 `user`, conservatively: no escapes, no `;`).
pub fn valid_user(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-_.!~*'()&=$,/".contains(&b))
}

/// An RFC 3261 `token` (a header field name).
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// Header fields a trunk may not set itself: the dialog and transaction layers own them.
const RESERVED_HEADERS: &[&str] = &[
    "via",
    "v",
    "from",
    "f",
    "to",
    "t",
    "call-id",
    "i",
    "cseq",
    "contact",
    "m",
    "max-forwards",
    "route",
    "record-route",
    "content-length",
    "l",
    "content-type",
    "c",
    "authorization",
    "proxy-authorization",
];

impl TrunkSettings {
    /// The parsed [`TrunkSettings::hosts`] (after [`TrunkSettings::check`], never an error).
    pub fn host_specs(&self) -> Result<Vec<HostSpec>, SettingsError> {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| HostSpec::parse(h).map_err(|e| bad(format!("hosts[{i}]"), e)))
            .collect()
    }

    /// The parsed [`TrunkSettings::allowed_sources`].
    pub fn source_blocks(&self) -> Result<Vec<Cidr>, SettingsError> {
        self.allowed_sources
            .iter()
            .enumerate()
            .map(|(i, c)| Cidr::parse(c).map_err(|e| bad(format!("allowed_sources[{i}]"), e)))
            .collect()
    }

    /// Whether the trunk only takes calls (IP authentication, no hosts to call).
    pub fn ip_auth_only(&self) -> bool {
        !self.allowed_sources.is_empty() && !self.register
    }

    /// Checks every field; the error names the first bad one and says what would be right.
    pub fn check(&self) -> Result<(), SettingsError> {
        if self.hosts.is_empty() && !self.ip_auth_only() {
            return Err(bad(
                "hosts",
                "at least one host (or allowed_sources without register: an IP-auth trunk that only takes calls)",
            ));
        }
        if self.hosts.len() > MAX_HOSTS {
            return Err(bad("hosts", format!("at most {MAX_HOSTS}")));
        }
        self.host_specs()?;
        for (field, list) in [
            ("allowed_sources", &self.allowed_sources),
            ("caller_id_pool", &self.caller_id_pool),
            ("codecs", &self.codecs),
        ] {
            if list.len() > MAX_LIST {
                return Err(bad(field, format!("at most {MAX_LIST} entries")));
            }
        }
        self.source_blocks()?;
        for (field, value) in [
            ("outbound_proxy", &self.outbound_proxy),
            ("username", &self.username),
            ("password", &self.password),
            ("realm", &self.realm),
            ("auth_username", &self.auth_username),
            ("contact_user", &self.contact_user),
            ("from_user", &self.from_user),
            ("diversion", &self.diversion),
            ("advertise", &self.advertise),
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_server_name", &self.tls_server_name),
        ] {
            if let Some(v) = value {
                if v.is_empty() || v.len() > MAX_TEXT {
                    return Err(bad(field, format!("1 to {MAX_TEXT} bytes")));
                }
                if v.chars().any(char::is_control) {
                    return Err(bad(field, "no control characters (CR, LF, tab...)"));
                }
            }
        }
        for (field, value) in [
            ("username", &self.username),
            ("auth_username", &self.auth_username),
            ("contact_user", &self.contact_user),
        ] {
            if value.as_deref().is_some_and(|v| !valid_user(v)) {
                return Err(bad(
                    field,
                    "a SIP user part (letters, digits, + - _ . and the like)",
                ));
            }
        }
        if let Some(from) = &self.from_user {
            check_identity(from).map_err(|why| bad("from_user", why))?;
        }
        if let Some(proxy) = &self.outbound_proxy {
            match sip::message::Uri::parse(proxy.as_bytes()) {
                Ok(u) if u.as_sip().is_some() => {}
                _ => {
                    return Err(bad(
                        "outbound_proxy",
                        "a sip: URI (sip:proxy.example.net;lr)",
                    ));
                }
            }
        }
        if self.password.is_some() && self.username.is_none() && self.auth_username.is_none() {
            return Err(bad("password", "needs username or auth_username"));
        }
        if self.register && self.username.is_none() && self.contact_user.is_none() {
            return Err(bad(
                "register",
                "needs username or contact_user (the registered user)",
            ));
        }
        if let Some(e) = self.register_expires_s
            && !REGISTER_EXPIRES_S.contains(&e)
        {
            return Err(bad("register_expires_s", "60 to 86400"));
        }
        if let Some(i) = self.options_interval_s
            && i != 0
            && !OPTIONS_INTERVAL_S.contains(&i)
        {
            return Err(bad("options_interval_s", "0 (no pings) or 5 to 3600"));
        }
        if let Some(r) = self.ring_timeout_s
            && !RING_TIMEOUT_S.contains(&r)
        {
            return Err(bad("ring_timeout_s", "1 to 300"));
        }
        for (i, n) in self.caller_id_pool.iter().enumerate() {
            if !valid_caller_number(n) {
                return Err(bad(
                    format!("caller_id_pool[{i}]"),
                    "+ and 1 to 15 digits (E.164), or 2 to 20 digits",
                ));
            }
        }
        if self.headers.len() > MAX_CUSTOM_HEADERS {
            return Err(bad("headers", format!("at most {MAX_CUSTOM_HEADERS}")));
        }
        for (i, (name, value)) in self.headers.iter().enumerate() {
            if !is_token(name) {
                return Err(bad(
                    format!("headers[{i}].name"),
                    "a header name (letters, digits, - . ! % * _ + ` ' ~; 1 to 64)",
                ));
            }
            if RESERVED_HEADERS
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name))
            {
                return Err(bad(
                    format!("headers[{i}].name"),
                    format!("{name} is set by callplane itself"),
                ));
            }
            if value.len() > MAX_TEXT || value.chars().any(char::is_control) {
                return Err(bad(
                    format!("headers[{i}].value"),
                    format!("at most {MAX_TEXT} bytes, no CR, LF or other control characters"),
                ));
            }
        }
        for (i, c) in self.codecs.iter().enumerate() {
            if audio_codec(c).is_none() {
                return Err(bad(
                    format!("codecs[{i}]"),
                    "a codec callplane speaks: PCMU, PCMA or G722",
                ));
            }
        }
        if let Some(a) = &self.advertise
            && a.parse::<std::net::IpAddr>().is_err()
        {
            return Err(bad("advertise", "an IP address"));
        }
        if let Some(n) = &self.tls_server_name
            && domain(n).is_err()
        {
            return Err(bad("tls_server_name", "a domain name"));
        }
        Ok(())
    }
}

/// A From identity: a user part (`4420`) or a whole `sip:`/`tel:` URI without headers or
/// routing parameters.
pub fn check_identity(text: &str) -> Result<(), String> {
    if text.contains(':') {
        let uri = sip::message::Uri::parse(text.as_bytes()).map_err(|_| "not a URI".to_owned())?;
        if let Some(s) = uri.as_sip() {
            if !s.headers.is_empty() {
                return Err("URI headers (?name=value) are not accepted".into());
            }
            if let Some((n, _)) = s.params.iter().find(|(n, _)| {
                !["transport", "user"]
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(n))
            }) {
                return Err(format!("the URI parameter {n:?} is not accepted"));
            }
        }
        Ok(())
    } else if valid_user(text) {
        Ok(())
    } else {
        Err("a user part (letters, digits, + - _ . and the like) or a sip: URI".into())
    }
}

/// The codec a trunk's `codecs` entry names (case-insensitive: `PCMU`, `PCMA`, `G722`).
pub fn audio_codec(name: &str) -> Option<media::sdp::AudioCodec> {
    use media::sdp::AudioCodec;
    match name.to_ascii_uppercase().as_str() {
        "PCMU" => Some(AudioCodec::Pcmu),
        "PCMA" => Some(AudioCodec::Pcma),
        "G722" => Some(AudioCodec::G722),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_ip_literals_ports_domains_and_weights() {
        let h = HostSpec::parse("192.0.2.1:5070").expect("v4:port");
        assert_eq!(
            (h.uri_host(), h.port, h.weight),
            ("192.0.2.1".into(), Some(5070), 1)
        );
        let h = HostSpec::parse("[2001:db8::1]:5061;weight=5").expect("v6");
        assert_eq!(
            (h.uri_host(), h.port, h.weight),
            ("[2001:db8::1]".into(), Some(5061), 5)
        );
        assert_eq!(HostSpec::parse("::1").expect("bare v6").port, None);
        let h = HostSpec::parse("Sip.Carrier.example").expect("domain");
        assert_eq!(h.host, HostName::Domain("sip.carrier.example".into()));
        for bad in [
            "",
            "host:0",
            "host:70000",
            "-bad.example",
            "a..b",
            "1.2.3.4.5",
            "[::1",
            "h;w=1",
            "h;weight=0",
            "h p",
            "x:y:z",
        ] {
            assert!(HostSpec::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cidrs_contain_what_they_should() {
        let c = Cidr::parse("192.0.2.77/24").expect("cidr");
        assert!(c.contains("192.0.2.1".parse().unwrap()));
        assert!(c.contains("::ffff:192.0.2.9".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        assert!(!c.contains("2001:db8::1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").expect("address");
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            Cidr::parse("::/0")
                .expect("all v6")
                .contains("::1".parse().unwrap())
        );
        for bad in ["192.0.2.0/33", "x/8", "10.0.0.0/-1", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn ok() -> TrunkSettings {
        TrunkSettings {
            hosts: vec!["192.0.2.1".into()],
            ..Default::default()
        }
    }

    #[test]
    fn check_names_the_bad_field() {
        assert_eq!(ok().check(), Ok(()));
        let field = |s: TrunkSettings| s.check().expect_err("must fail").field;
        assert_eq!(field(TrunkSettings::default()), "hosts");
        let ip_auth = TrunkSettings {
            allowed_sources: vec!["198.51.100.0/24".into()],
            ..Default::default()
        };
        assert_eq!(ip_auth.check(), Ok(()), "IP-auth only needs no hosts");
        assert_eq!(
            field(TrunkSettings {
                allowed_sources: vec!["10.0.0.0/40".into()],
                ..ok()
            }),
            "allowed_sources[0]"
        );
        assert_eq!(
            field(TrunkSettings {
                hosts: vec!["a b".into()],
                ..ok()
            }),
            "hosts[0]"
        );
        assert_eq!(
            field(TrunkSettings {
                headers: vec![("X Bad".into(), "v".into())],
                ..ok()
            }),
            "headers[0].name"
        );
        assert_eq!(
            field(TrunkSettings {
                headers: vec![("X-Ok".into(), "a\r\nVia: x".into())],
                ..ok()
            }),
            "headers[0].value"
        );
        assert_eq!(
            field(TrunkSettings {
                headers: vec![("Call-ID".into(), "x".into())],
                ..ok()
            }),
            "headers[0].name"
        );
        let many = (0..17)
            .map(|i| (format!("X-{i}"), "v".to_owned()))
            .collect();
        assert_eq!(
            field(TrunkSettings {
                headers: many,
                ..ok()
            }),
            "headers"
        );
        assert_eq!(
            field(TrunkSettings {
                caller_id_pool: vec!["+12ab".into()],
                ..ok()
            }),
            "caller_id_pool[0]"
        );
        assert_eq!(
            field(TrunkSettings {
                register_expires_s: Some(59),
                ..ok()
            }),
            "register_expires_s"
        );
        assert_eq!(
            field(TrunkSettings {
                register_expires_s: Some(86_401),
                ..ok()
            }),
            "register_expires_s"
        );
        assert_eq!(
            field(TrunkSettings {
                options_interval_s: Some(4),
                ..ok()
            }),
            "options_interval_s"
        );
        assert_eq!(
            TrunkSettings {
                options_interval_s: Some(0),
                ..ok()
            }
            .check(),
            Ok(())
        );
        assert_eq!(
            field(TrunkSettings {
                register: true,
                ..ok()
            }),
            "register"
        );
        assert_eq!(
            field(TrunkSettings {
                password: Some("p".into()),
                ..ok()
            }),
            "password"
        );
        assert_eq!(
            field(TrunkSettings {
                outbound_proxy: Some("http://x".into()),
                ..ok()
            }),
            "outbound_proxy"
        );
        assert_eq!(
            field(TrunkSettings {
                from_user: Some("a;b".into()),
                ..ok()
            }),
            "from_user"
        );
        assert_eq!(
            field(TrunkSettings {
                advertise: Some("nat".into()),
                ..ok()
            }),
            "advertise"
        );
    }
}
