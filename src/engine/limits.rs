//! What bounds a call's life and where its media may go: the RTP inactivity timeout, RFC 4028
//! session timers, the longest call, and which SDP media addresses are refused.
//!
//! A call that nobody ends must still end: an abandoned peer stops sending RTP (the RTP
//! timeout), stops refreshing the session (session timers), or at worst reaches the maximum
//! duration. And the peer's SDP must not make us send packets where no phone listens
//! (multicast, broadcast, link-local, the cloud metadata service, the unspecified address) unless
//! the operator allowed that range.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use media::sdp::{AddressClass, Sdp, classify};

/// Default silence (no RTP, no RTCP) after which an answered call is ended.
pub const DEFAULT_RTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default session interval we ask for (RFC 4028 Session-Expires), seconds.
pub const DEFAULT_SESSION_EXPIRES_S: u32 = 1800;
/// Default longest call.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(4 * 3600);

/// The limits every call of an engine runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLimits {
    /// End an answered call after this much silence from the peer (no RTP, no RTCP; not while
    /// it holds us). `None`: never.
    pub rtp_timeout: Option<Duration>,
    /// The session interval (RFC 4028) we ask for as UAC and offer as UAS, seconds; the
    /// refresher re-INVITEs or UPDATEs at half of it, and a session not refreshed ends with
    /// BYE. `None`: none unless the peer asks for one.
    pub session_expires: Option<u32>,
    /// The smallest session interval we accept (Min-SE, at least 90).
    pub min_se: u32,
    /// End a call this long after it was answered (and an unanswered one this long after it
    /// started). `None`: never. An API call may ask for less or more.
    pub max_duration: Option<Duration>,
    /// Which SDP media addresses are refused.
    pub media_addresses: MediaAddressPolicy,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            rtp_timeout: Some(DEFAULT_RTP_TIMEOUT),
            session_expires: Some(DEFAULT_SESSION_EXPIRES_S),
            min_se: sip::dialog::MIN_SE_FLOOR,
            max_duration: Some(DEFAULT_MAX_DURATION),
            media_addresses: MediaAddressPolicy::default(),
        }
    }
}

/// An IP range in CIDR notation (`192.0.2.0/24`, `ff00::/8`; a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` lies in the range (an IPv4-mapped IPv6 address as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_match(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_match(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_match(net: u128, ip: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    net & mask == ip & mask
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which SDP media addresses a call refuses: every one that is not plain unicast
/// ([`AddressClass`]), unless an operator-allowed range holds it. Loopback and private
/// ranges are unicast, so allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaAddressPolicy {
    /// Ranges allowed whatever their class.
    pub allow: Vec<IpNet>,
}

/// A media address the policy refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("media address {ip} is {class}")]
pub struct MediaAddressRefused {
    /// The address.
    pub ip: IpAddr,
    /// What it is.
    pub class: AddressClass,
}

impl MediaAddressPolicy {
    /// Checks the media addresses of an offer or answer. `initial`: the first exchange of the
    /// call, where the unspecified address is refused too; in a later re-offer it is RFC 2543
    /// hold ("do not send to me"), which is allowed and makes us send nothing.
    pub fn check(&self, sdp: &Sdp, initial: bool) -> Result<(), MediaAddressRefused> {
        for ip in sdp.media_addresses() {
            let class = classify(ip);
            let hold = class == AddressClass::Unspecified && !initial;
            if class.is_unicast() || hold || self.allow.iter().any(|net| net.contains(ip)) {
                continue;
            }
            return Err(MediaAddressRefused { ip, class });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(c: &str) -> Sdp {
        let text = format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN {} {c}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
            if c.contains(':') { "IP6" } else { "IP4" }
        );
        Sdp::parse(text.as_bytes()).expect("valid SDP")
    }

    #[test]
    fn unicast_loopback_and_private_media_addresses_pass() {
        let policy = MediaAddressPolicy::default();
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.20",
            "198.51.100.7",
            "::1",
            "fd12::1",
        ] {
            assert_eq!(policy.check(&sdp(ok), true), Ok(()), "{ok}");
        }
    }

    #[test]
    fn non_unicast_media_addresses_are_refused_and_hold_only_in_a_reoffer() {
        let policy = MediaAddressPolicy::default();
        for (bad, class) in [
            ("224.0.0.1", AddressClass::Multicast),
            ("239.1.2.3", AddressClass::Multicast),
            ("ff02::1", AddressClass::Multicast),
            ("255.255.255.255", AddressClass::Broadcast),
            ("169.254.10.1", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("169.254.169.254", AddressClass::Metadata),
            ("fd00:ec2::254", AddressClass::Metadata),
            ("::ffff:169.254.169.254", AddressClass::Metadata),
            ("0.0.0.0", AddressClass::Unspecified),
            ("::", AddressClass::Unspecified),
            ("0.1.2.3", AddressClass::Reserved),
            ("240.0.0.1", AddressClass::Reserved),
        ] {
            let err = policy.check(&sdp(bad), true).expect_err(bad);
            assert_eq!(err.class, class, "{bad}");
        }
        assert_eq!(policy.check(&sdp("0.0.0.0"), false), Ok(()), "hold");
        assert!(policy.check(&sdp("224.0.0.1"), false).is_err());
    }

    #[test]
    fn an_rtcp_attribute_address_is_checked_too() {
        let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN IP4 169.254.169.254\r\n";
        let sdp = Sdp::parse(text.as_bytes()).expect("valid SDP");
        let err = MediaAddressPolicy::default()
            .check(&sdp, true)
            .expect_err("metadata RTCP");
        assert_eq!(err.class, AddressClass::Metadata);
    }

    #[test]
    fn operator_ranges_allow_what_is_refused_by_default() {
        let policy = MediaAddressPolicy {
            allow: vec![
                "239.0.0.0/8".parse().expect("cidr"),
                "fe80::1".parse().expect("host"),
            ],
        };
        assert_eq!(policy.check(&sdp("239.1.2.3"), true), Ok(()));
        assert_eq!(policy.check(&sdp("fe80::1"), true), Ok(()));
        assert!(policy.check(&sdp("fe80::2"), true).is_err());
        assert!(policy.check(&sdp("224.0.0.1"), true).is_err());
    }

    #[test]
    fn cidr_ranges_parse_and_match() {
        let net: IpNet = "10.0.0.0/8".parse().expect("cidr");
        assert!(net.contains("10.255.0.1".parse().expect("ip")));
        assert!(!net.contains("11.0.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.0.0.1".parse().expect("ip")));
        let all: IpNet = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains("224.0.0.1".parse().expect("ip")));
        assert!(!all.contains("::1".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
        assert_eq!(net.to_string(), "10.0.0.0/8");
    }
}
