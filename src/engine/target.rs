//! Where a call to a URI goes: the socket address and transport of an IP-literal `sip:` URI.
//! (DNS and RFC 3263 come with the trunks issue; until then a host must be an IP address.)

use std::net::{IpAddr, SocketAddr};

use sip::message::{Host, Uri};
use sip::transaction::Transport;

/// Why a URI cannot be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not a `sip:` URI.
    #[error("only sip: URIs can be called, not {0}:")]
    Scheme(String),
    /// `sips:` needs TLS, which this version does not speak.
    #[error("sips: is not supported (no TLS yet)")]
    Sips,
    /// The host is a name.
    #[error("host {0:?} needs DNS, which this version does not do: use an IP address")]
    NeedsDns(String),
    /// The IPv6 reference does not parse.
    #[error("bad IPv6 host {0:?}")]
    BadIpv6(String),
    /// `transport=` names something we do not speak.
    #[error("transport={0} is not supported (udp, tcp)")]
    Transport(String),
}

/// The destination (port 5060 when none) and transport (`;transport=`, UDP when none) of `uri`.
pub fn resolve(uri: &Uri) -> Result<(SocketAddr, Transport), TargetError> {
    let Some(sip) = uri.as_sip() else {
        return Err(TargetError::Scheme(uri.scheme().to_string()));
    };
    if sip.secure {
        return Err(TargetError::Sips);
    }
    let port = sip.port.unwrap_or(5060);
    let ip = match &sip.host {
        Host::Ipv4(ip) => IpAddr::V4(*ip),
        Host::Ipv6(text) => IpAddr::V6(
            text.parse()
                .map_err(|_| TargetError::BadIpv6(text.clone()))?,
        ),
        Host::Domain(d) => return Err(TargetError::NeedsDns(d.to_string())),
    };
    let transport = match sip.transport() {
        None => Transport::Udp,
        Some(t) if t.eq_ignore_ascii_case("udp") => Transport::Udp,
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        Some(t) => return Err(TargetError::Transport(t.to_string())),
    };
    Ok((SocketAddr::new(ip, port), transport))
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
        assert_eq!(resolve(&uri("sips:1000@127.0.0.1")), Err(TargetError::Sips));
        assert!(matches!(
            resolve(&uri("tel:+15551234567")),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            resolve(&uri("sip:1000@127.0.0.1;transport=sctp")),
            Err(TargetError::Transport(_))
        ));
    }
}
