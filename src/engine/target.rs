//! Where a call to a URI goes: the socket address and transport of an IP-literal `sip:` or
//! `sips:` URI ([`resolve`]; `sips:` and `;transport=tls` go over TLS, port 5061 by default),
//! or, for a name, the targets RFC 3263 found (`crate::net::dns`) as a destination and its
//! failover alternates ([`routes`]).

use std::net::{IpAddr, SocketAddr};

use sip::message::{Host, Uri};
use sip::transaction::Transport;

/// Why a URI cannot be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not a `sip:` URI.
    #[error("only sip: URIs can be called, not {0}:")]
    Scheme(String),
    /// `sips:` with a transport other than TLS (RFC 3261 §26.2.2: SIPS means TLS).
    #[error("a sips: URI goes over TLS, not transport={0}")]
    SipsTransport(String),
    /// The host is a name.
    #[error("host {0:?} needs DNS, which this version does not do: use an IP address")]
    NeedsDns(String),
    /// The IPv6 reference does not parse.
    #[error("bad IPv6 host {0:?}")]
    BadIpv6(String),
    /// `transport=` names something we do not speak.
    #[error("transport={0} is not supported (udp, tcp, tls)")]
    Transport(String),
    /// The URI has a headers component (`?X-Injected=yes`): headers of the request are ours.
    #[error("URI headers (`?name=value`) are not accepted in a destination")]
    Headers,
    /// A uri-parameter other than `transport` and `user` (`maddr`, `ttl`, `method`, `lr`...
    /// change where or how the request goes).
    #[error("the URI parameter {0:?} is not accepted in a destination (only transport and user)")]
    Param(String),
}

/// The uri-parameters a destination may carry: `transport` (checked by [`resolve`]) and `user`
/// (`user=phone`). Any other (`maddr` sends the request elsewhere, `ttl` and `method` change
/// how, `lr` makes it a route) is refused rather than half-honoured.
const ALLOWED_PARAMS: [&str; 2] = ["transport", "user"];

/// Refuses a URI with a headers component or a uri-parameter outside `ALLOWED_PARAMS`
/// (`transport`, `user`).
/// [`resolve`] applies it; callers that build a URI another way (a trunk call) apply it too.
pub fn check_routing(uri: &Uri) -> Result<(), TargetError> {
    let Some(sip) = uri.as_sip() else {
        return Ok(());
    };
    if !sip.headers.is_empty() {
        return Err(TargetError::Headers);
    }
    if let Some((name, _)) = sip
        .params
        .iter()
        .find(|(n, _)| !ALLOWED_PARAMS.iter().any(|a| a.eq_ignore_ascii_case(n)))
    {
        return Err(TargetError::Param(name.to_owned()));
    }
    Ok(())
}

/// The destination and transport of `uri`: `;transport=` (UDP when none; TLS for `sips:`),
/// port 5060 when none (5061 over TLS).
pub fn resolve(uri: &Uri) -> Result<(SocketAddr, Transport), TargetError> {
    let Some(sip) = uri.as_sip() else {
        return Err(TargetError::Scheme(uri.scheme().to_string()));
    };
    check_routing(uri)?;
    let transport = match sip.transport() {
        None if sip.secure => Transport::Tls,
        None => Transport::Udp,
        Some(t) if t.eq_ignore_ascii_case("tls") => Transport::Tls,
        // RFC 3261 §26.2.2: "transport=tcp" on a SIPS URI is how RFC 3261 itself spelled TLS
        // over TCP; RFC 5630 §3.1.3 deprecates it. Anything else is a contradiction.
        Some(t) if sip.secure && t.eq_ignore_ascii_case("tcp") => Transport::Tls,
        Some(t) if sip.secure => return Err(TargetError::SipsTransport(t.to_string())),
        Some(t) if t.eq_ignore_ascii_case("udp") => Transport::Udp,
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        Some(t) => return Err(TargetError::Transport(t.to_string())),
    };
    let port = sip.port.unwrap_or(transport.default_port());
    let ip = match &sip.host {
        Host::Ipv4(ip) => IpAddr::V4(*ip),
        Host::Ipv6(text) => IpAddr::V6(
            text.parse()
                .map_err(|_| TargetError::BadIpv6(text.clone()))?,
        ),
        Host::Domain(d) => return Err(TargetError::NeedsDns(d.to_string())),
    };
    Ok((SocketAddr::new(ip, port), transport))
}

/// Where a call to `to` goes, from the targets DNS found (RFC 3263, in the order to try them):
/// the first one and, as failover alternates, the rest. Only targets of `family_v4`'s address
/// family (that of our SIP socket) are kept, unless none is. `None` when there is no target.
pub fn routes(to: &Uri, targets: &[sip::resolve::Target], family_v4: bool) -> Option<DnsRoutes> {
    let mut usable: Vec<&sip::resolve::Target> = targets
        .iter()
        .filter(|t| t.addr.is_ipv4() == family_v4)
        .collect();
    if usable.is_empty() {
        usable = targets.iter().collect();
    }
    let (first, rest) = usable.split_first()?;
    Some(DnsRoutes {
        destination: first.addr,
        transport: first.transport,
        label: first.label.clone(),
        alternates: rest
            .iter()
            .map(|t| super::CallRoute {
                to: to.clone(),
                destination: t.addr,
                transport: t.transport,
                sip: super::SipOptions::default(),
                label: t.label.clone(),
            })
            .collect(),
    })
}

/// A call's route from DNS ([`routes`]).
#[derive(Debug, Clone)]
pub struct DnsRoutes {
    /// The first target.
    pub destination: SocketAddr,
    /// Its transport.
    pub transport: Transport,
    /// How the timeline names it (`"SRV 10 60 sip1.carrier.test:5060"`).
    pub label: String,
    /// The other targets, in order (`OriginateRequest::alternates`).
    pub alternates: Vec<super::CallRoute>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        Uri::parse(s.as_bytes()).expect("a URI")
    }

    #[test]
    fn ip_literal_uris_resolve_with_default_port_and_transport() {
        assert_eq!(
            resolve(&uri("sip:1000@127.0.0.1")),
            Ok(("127.0.0.1:5060".parse().expect("addr"), Transport::Udp))
        );
        assert_eq!(
            resolve(&uri("sip:1000@[::1]:5080;transport=TCP")),
            Ok(("[::1]:5080".parse().expect("addr"), Transport::Tcp))
        );
    }

    #[test]
    fn names_other_schemes_and_transports_are_refused() {
        assert!(matches!(
            resolve(&uri("sip:1000@example.com")),
            Err(TargetError::NeedsDns(_))
        ));
        assert!(matches!(
            resolve(&uri("tel:+15551234567")),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            resolve(&uri("sip:1000@127.0.0.1;transport=sctp")),
            Err(TargetError::Transport(_))
        ));
    }

    #[test]
    fn sips_and_transport_tls_go_over_tls_on_5061() {
        let tls = |s: &str| resolve(&uri(s));
        let at = |a: &str| a.parse::<SocketAddr>().expect("addr");
        assert_eq!(
            tls("sips:1000@127.0.0.1"),
            Ok((at("127.0.0.1:5061"), Transport::Tls))
        );
        assert_eq!(
            tls("sip:1000@127.0.0.1;transport=TLS"),
            Ok((at("127.0.0.1:5061"), Transport::Tls))
        );
        assert_eq!(
            tls("sips:1000@[::1]:5071;transport=tcp"),
            Ok((at("[::1]:5071"), Transport::Tls))
        );
        assert_eq!(
            tls("sips:1000@127.0.0.1;transport=udp"),
            Err(TargetError::SipsTransport("udp".into()))
        );
    }

    #[test]
    fn dns_targets_become_a_destination_and_alternates_of_our_family() {
        let target = |addr: &str, label: &str| sip::resolve::Target {
            addr: addr.parse().expect("addr"),
            transport: Transport::Udp,
            label: label.into(),
        };
        let to = uri("sip:1000@carrier.test");
        let targets = [
            target("[::1]:5060", "SRV 5 0 v6.test:5060"),
            target("127.0.0.1:5061", "SRV 10 0 a.test:5061"),
            target("127.0.0.2:5062", "SRV 20 0 b.test:5062"),
        ];
        let r = routes(&to, &targets, true).expect("routes");
        assert_eq!(r.destination, "127.0.0.1:5061".parse().expect("addr"));
        assert_eq!(r.label, "SRV 10 0 a.test:5061");
        assert_eq!(r.alternates.len(), 1);
        assert_eq!(
            r.alternates[0].destination,
            "127.0.0.2:5062".parse().expect("addr")
        );
        assert_eq!(r.alternates[0].label, "SRV 20 0 b.test:5062");
        assert_eq!(r.alternates[0].to, to);
        // Only IPv6 targets: kept rather than nothing.
        let r = routes(&to, &targets[..1], true).expect("routes");
        assert!(r.destination.is_ipv6());
        assert!(routes(&to, &[], true).is_none());
    }

    #[test]
    fn uri_headers_and_routing_parameters_are_refused() {
        assert_eq!(
            resolve(&uri("sip:x@127.0.0.1?X-Injected=yes")),
            Err(TargetError::Headers)
        );
        assert_eq!(
            resolve(&uri(
                "sip:x@127.0.0.1:5060;transport=udp?Route=%3Csip:evil%3E"
            )),
            Err(TargetError::Headers)
        );
        for (text, param) in [
            ("sip:x@127.0.0.1;maddr=192.0.2.1", "maddr"),
            ("sip:x@127.0.0.1;lr", "lr"),
            ("sip:x@127.0.0.1;ttl=5", "ttl"),
            ("sip:x@127.0.0.1;method=REGISTER", "method"),
        ] {
            assert_eq!(
                resolve(&uri(text)),
                Err(TargetError::Param(param.to_owned())),
                "{text}"
            );
        }
        assert!(resolve(&uri("sip:+15551234567@127.0.0.1;user=phone;transport=tcp")).is_ok());
    }
}
