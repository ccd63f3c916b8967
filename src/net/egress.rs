//! Where webhooks may connect: the guard against server-side request forgery.
//!
//! A webhook URL is the tenant's, the network it reaches is the operator's. A target on
//! loopback, a private or link-local range (the cloud metadata service at 169.254.169.254), the
//! unspecified address, multicast, broadcast or another special-purpose range is refused, in
//! whatever spelling it comes: the URL parser turns the numeric forms (`2130706433`, `0x7f.1`,
//! `017700000001`) into the address they mean, and an IPv6 address that embeds an IPv4 one
//! (`::ffff:127.0.0.1`, NAT64, 6to4) is judged by the IPv4 one.
//!
//! The check runs twice: when a webhook is stored ([`EgressPolicy::check_url`], the API's 422),
//! and at every connection, after DNS resolution ([`webhook_client`]'s resolver drops refused
//! addresses; a name that resolves only to refused ones fails the attempt), because a name can
//! point anywhere by the time it is used. An IP-literal URL never reaches a resolver, so the
//! dispatcher checks literals itself ([`EgressPolicy::check_target`]). Redirects are not
//! followed and proxies from the environment are not used: both would connect elsewhere.
//!
//! An operator running receivers inside its own network allows ranges by name
//! (`serve --webhook-allow-cidr 10.1.0.0/16`, repeatable): an address inside an allowed range is
//! accepted whatever its kind.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// An address range: `addr/prefix` (a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the range (an IPv4 range never contains an IPv6 address: the
    /// policy unwraps embedded IPv4 addresses itself).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address range (like 10.0.0.0/8 or fd00::/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

/// Which special-purpose range `ip` is in, if any (IANA's special-purpose registries, plus
/// multicast); `None` for an ordinary global address.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            // Judged by the IPv4 address it carries (`::ffff:127.0.0.1` is loopback).
            Some(v4) => special_v4(v4),
            None => special_v6(v6),
        },
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_broadcast() => "broadcast",
        (0, _, _) => "unspecified (this network)",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (169, 254, _) => "link-local (cloud metadata)",
        (192, 0, 0) => "IETF protocol assignments",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match s {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible (deprecated)",
        [0x100, 0, 0, 0, ..] => "discard",
        [0x2001, 0xdb8, ..] => "documentation",
        [x, ..] if x & 0xfe00 == 0xfc00 => "unique local (private)",
        [x, ..] if x & 0xffc0 == 0xfe80 => "link-local",
        [x, ..] if x & 0xffc0 == 0xfec0 => "site-local (deprecated)",
        [x, ..] if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// The IPv4 address an IPv6 one carries: IPv4-mapped (`::ffff:a.b.c.d`), the NAT64 well-known
/// prefix (`64:ff9b::/96`) and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
}

/// Where webhooks may connect: everything but the special-purpose ranges, plus the ranges the
/// operator allowed.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allow: Vec<Cidr>,
}

impl EgressPolicy {
    /// The default policy plus `allow` (ranges accepted whatever their kind).
    pub fn new(allow: Vec<Cidr>) -> EgressPolicy {
        EgressPolicy { allow }
    }

    /// The allowed ranges.
    pub fn allowed(&self) -> &[Cidr] {
        &self.allow
    }

    /// Why a connection to `ip` is refused (`None`: it is fine).
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let unwrapped = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = |ip: IpAddr| self.allow.iter().any(|c| c.contains(ip));
        if allowed(ip) || unwrapped.is_some_and(allowed) {
            return None;
        }
        special_range(ip)
    }

    /// The connect-time check of a URL's host when it is an IP literal (a name is checked by
    /// [`webhook_client`]'s resolver after resolution).
    pub fn check_target(&self, url: &reqwest::Url) -> Result<(), String> {
        let ip = match host(url) {
            Some(Host::Ip(ip)) => ip,
            Some(Host::Name(_)) => return Ok(()),
            None => return Err("the URL has no host".to_owned()),
        };
        match self.refusal(ip) {
            None => Ok(()),
            Some(why) => Err(format!("{ip} is {}", article(why))),
        }
    }

    /// The check of a webhook URL when it is stored: an http(s) URL whose host is not an
    /// internal address (in any spelling) nor a loopback name. The message says why and how
    /// an operator allows a range.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        let refused = |what: String| {
            Err(format!(
                "{what}: webhooks may not target internal networks (an operator can allow a \
                 range with `serve --webhook-allow-cidr`)"
            ))
        };
        if let Some(Host::Name(name)) = host(url) {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            // RFC 6761 §6.3: `localhost` and `*.localhost` are loopback, whatever DNS says.
            if (name == "localhost" || name.ends_with(".localhost"))
                && self.refusal(IpAddr::V4(Ipv4Addr::LOCALHOST)).is_some()
            {
                return refused(format!("{name} is a loopback name"));
            }
            return Ok(());
        }
        match self.check_target(url) {
            Ok(()) => Ok(()),
            Err(why) => refused(why),
        }
    }
}

/// A URL's host: an address or a name.
enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// The host of `url`. The URL parser has already turned every numeric IPv4 spelling
/// (`2130706433`, `0x7f.1`, `0177.0.0.1`) into dotted decimal, so what does not parse as an
/// address here is a name.
fn host(url: &reqwest::Url) -> Option<Host<'_>> {
    let h = url.host_str()?;
    let bare = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    Some(match bare.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(h),
    })
}

fn article(kind: &str) -> String {
    let an = kind.starts_with(['a', 'e', 'i', 'o', 'u', 'I']);
    format!("{} {kind} address", if an { "an" } else { "a" })
}

/// A connection refused by the policy (the root cause of the failed request).
#[derive(Debug)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The resolver of [`webhook_client`]: the system's (getaddrinfo), minus refused addresses.
#[derive(Debug)]
struct GuardedResolver {
    policy: Arc<EgressPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = Vec::new();
            let mut fine = Vec::new();
            for addr in found {
                match policy.refusal(addr.ip()) {
                    None => fine.push(addr),
                    Some(why) => refused.push(format!("{} ({why})", addr.ip())),
                }
            }
            if fine.is_empty() {
                let list = if refused.is_empty() {
                    "no address".to_owned()
                } else {
                    refused.join(", ")
                };
                return Err(Box::new(Refused(format!(
                    "refused: {host} resolves to {list}, not a webhook target"
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(fine.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client of the webhook dispatcher: `timeout` for connect and for the whole
/// request, no redirects (the signed body goes only where the webhook says, and a 3xx is a
/// failed attempt the operator can see), no proxy from the environment, and every resolved
/// address checked against `policy`.
pub fn webhook_client(
    timeout: Duration,
    policy: Arc<EgressPolicy>,
    user_agent: &str,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { policy }))
        .user_agent(user_agent)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).expect("a URL")
    }

    #[test]
    fn numeric_and_mapped_spellings_of_internal_addresses_are_refused() {
        let strict = EgressPolicy::default();
        for target in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://017700000001/",
            "http://0177.0.0.1/",
            "http://0.0.0.0/",
            "http://0/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:7f00:1::]/",
            "http://[fc00::1]/",
            "http://[fd12:3456::1]/",
            "http://[fe80::1]/",
            "http://[ff02::1]/",
            "http://localhost:8080/",
            "http://api.localhost/",
            "http://LOCALHOST./",
        ] {
            let err = strict.check_url(&url(target)).expect_err(target);
            assert!(err.contains("internal networks"), "{target}: {err}");
        }
        for fine in [
            "https://example.com/hook",
            "http://93.184.216.34/",
            "http://172.32.0.1/",
            "http://100.128.0.1/",
            "http://[2606:4700::1111]/",
        ] {
            assert_eq!(strict.check_url(&url(fine)), Ok(()), "{fine}");
        }
    }

    #[test]
    fn an_allowed_range_admits_its_addresses_and_only_those() {
        let cidr = |s: &str| s.parse::<Cidr>().expect("cidr");
        let policy = EgressPolicy::new(vec![cidr("127.0.0.0/8"), cidr("fd00::/8")]);
        for fine in [
            "http://127.0.0.1:9/",
            "http://2130706433/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost/",
            "http://[fd00::5]/",
        ] {
            assert_eq!(policy.check_url(&url(fine)), Ok(()), "{fine}");
        }
        for refused in ["http://[::1]/", "http://10.0.0.1/", "http://[fc00::1]/"] {
            assert!(policy.check_url(&url(refused)).is_err(), "{refused}");
        }
        assert_eq!(cidr("10.0.0.1"), cidr("10.0.0.1/32"));
        assert!(cidr("0.0.0.0/0").contains("8.8.8.8".parse().expect("ip")));
        assert!(!cidr("0.0.0.0/0").contains("::1".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "x", "10.0.0.0/-1"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
