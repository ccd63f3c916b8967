//! What kind of address an SDP names for media, so that the application can refuse to send RTP
//! where no telephone listens: the unspecified address, multicast and broadcast groups,
//! link-local neighbours and the cloud metadata service. Sending a call's packets there turns
//! a switch into a reflector for whoever wrote the SDP.
//!
//! [`classify`] is pure; which classes are refused, and which operator-allowed ranges override
//! that, is the application's policy.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Sdp;

/// The cloud instance metadata service (AWS, GCP, Azure, OpenStack, ...).
pub const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The AWS metadata service over IPv6 (Nitro instances).
pub const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// The kind of a media address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// A unicast address a peer can have: public, private (RFC 1918, RFC 4193) or loopback.
    Unicast,
    /// `0.0.0.0` or `::` (RFC 2543 hold in a re-offer).
    Unspecified,
    /// `224.0.0.0/4` or `ff00::/8`.
    Multicast,
    /// `255.255.255.255` (a directed broadcast cannot be told from the address alone).
    Broadcast,
    /// `169.254.0.0/16` or `fe80::/10`.
    LinkLocal,
    /// The instance metadata service ([`METADATA_V4`], [`METADATA_V6`]).
    Metadata,
    /// `240.0.0.0/4`, reserved for future use (RFC 1112), and the rest of `0.0.0.0/8`
    /// ("this network", RFC 1122): no peer has one.
    Reserved,
}

impl AddressClass {
    /// Whether media may be sent there without an operator's say-so.
    pub fn is_unicast(self) -> bool {
        self == AddressClass::Unicast
    }

    /// The class's name, as in logs and timelines.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Unicast => "unicast",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Metadata => "metadata",
            AddressClass::Reserved => "reserved",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of `ip`. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is classified as the IPv4
/// address it maps, which is where a dual-stack socket sends.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, ..] = ip.octets();
    if ip == METADATA_V4 {
        AddressClass::Metadata
    } else if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_broadcast() {
        AddressClass::Broadcast
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if a == 0 || a >= 240 {
        AddressClass::Reserved
    } else {
        AddressClass::Unicast
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let first = ip.segments()[0];
    if ip == METADATA_V6 {
        AddressClass::Metadata
    } else if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if first & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else {
        AddressClass::Unicast
    }
}

impl Sdp {
    /// Every address this description asks media to be sent to: the connection address of
    /// each m-line that is not rejected (port 0), and the address of its `a=rtcp` when it
    /// names one. Lines without any connection address are left out (negotiation refuses them).
    pub fn media_addresses(&self) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for (i, m) in self.media.iter().enumerate() {
            if m.port == 0 {
                continue;
            }
            if let Some(ip) = self.connection_for(i) {
                out.push(ip);
            }
            if let Some(ip) = m.rtcp.and_then(|r| r.address) {
                out.push(ip);
            }
        }
        out
    }
}
