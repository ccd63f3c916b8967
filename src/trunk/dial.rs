//! From a trunk to a call: turns a trunk's settings, a dialed number and a caller id into the
//! parts of an [`OriginateRequest`] (Request-URI and To, From, headers, [`SipOptions`], ring
//! timeout, the first target and the failover alternates). Used by `POST /v1/calls` with a
//! `trunk_id`, by the campaign worker and by `callplane probe`.
//!
//! [`plan`] is pure (tested with tables); [`dial`] adds the one step that may do I/O:
//! [`resolve_host`] turns each host into socket addresses.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sip::message::Uri;
use sip::transaction::Transport;

use super::settings::{
    CallerIdMode, HostName, HostSpec, TrunkSettings, TrunkTransport, UriStyle, valid_user,
};
use super::state::TrunkStates;
use crate::engine::{CallRoute, OriginateRequest, SipOptions};

/// Why a call cannot go through a trunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// The dialed number cannot be put in a Request-URI.
    #[error("{0:?} is not a number that can be dialed (letters, digits, + - _ . and the like)")]
    Number(String),
    /// `tel:` needs a global number.
    #[error("{0:?}: the trunk's uri_style tel needs a global number (+ and digits)")]
    TelNeedsGlobal(String),
    /// The caller id cannot be put in From.
    #[error("caller id {0:?} is not a user part or a sip:/tel: URI")]
    CallerId(String),
    /// The trunk's settings do not make a call (they are checked when saved: an old row).
    #[error("the trunk's {0}")]
    Settings(String),
    /// The trunk lists no host to call (an IP-auth trunk that only takes calls).
    #[error("the trunk has no hosts to call (it only takes calls)")]
    NoHosts,
    /// A host is a domain name and names are not resolved (yet).
    #[error("host {0:?} is a domain name, which this build does not resolve: use an IP address")]
    NeedsDns(String),
    /// A name did not resolve.
    #[error("host {host:?} did not resolve: {why}")]
    Resolve {
        /// The name.
        host: String,
        /// Why.
        why: String,
    },
}

/// What a call through a trunk needs besides the trunk.
#[derive(Debug, Clone)]
pub struct DialRequest<'a> {
    /// The trunk's id (timeline events and [`SipOptions::trunk_id`]).
    pub trunk_id: &'a str,
    /// Its settings (complete, as the store reads them: password included).
    pub settings: &'a TrunkSettings,
    /// The dialed number (or user part).
    pub number: &'a str,
    /// The call's own caller id (the API's `from`, a campaign's caller id): a user part or a
    /// URI. `None`: one from the trunk's `caller_id_pool` (same area first), else `from_user`.
    pub caller_id: Option<&'a str>,
    /// A random value: the order of weighted hosts and the pool's round robin start.
    pub random: u64,
    /// Turns of the caller-id round robin so far (a campaign counts its calls; 0 otherwise,
    /// then `random` decides).
    pub turn: usize,
    /// Resolves hosts that are names (RFC 3263); `None`: such hosts are refused
    /// ([`DialError::NeedsDns`]).
    pub dns: Option<&'a crate::net::dns::Resolver>,
}

/// One host to try, in order, with the Request-URI it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedHost {
    /// The host as configured.
    pub spec: HostSpec,
    /// The transport.
    pub transport: TrunkTransport,
    /// The Request-URI (and To) when the INVITE goes to this host.
    pub to: Uri,
}

/// A call through a trunk before its hosts are resolved ([`plan`]).
#[derive(Debug, Clone)]
pub struct DialPlan {
    /// The hosts in the order to try them.
    pub hosts: Vec<PlannedHost>,
    /// Our From (`None`: the engine's default).
    pub from: Option<Uri>,
    /// What the trunk adds to the INVITE.
    pub sip: SipOptions,
    /// The trunk's ring timeout, when it sets one.
    pub ring_timeout: Option<Duration>,
    /// The caller id used (from the call, the pool or `from_user`).
    pub caller_id: Option<String>,
}

/// A call through a trunk, ready for the engine ([`dial`]).
#[derive(Debug, Clone)]
pub struct Dialed {
    /// The Request-URI and To of the first target.
    pub to: Uri,
    /// Where the first INVITE goes.
    pub destination: SocketAddr,
    /// Over which transport.
    pub transport: Transport,
    /// Where to try next (the trunk's other hosts and addresses).
    pub alternates: Vec<CallRoute>,
    /// Our From (`None`: the engine's default).
    pub from: Option<Uri>,
    /// What the trunk adds.
    pub sip: SipOptions,
    /// The trunk's ring timeout, when it sets one.
    pub ring_timeout: Option<Duration>,
    /// How the timeline names the first target.
    pub label: String,
}

impl Dialed {
    /// Puts the trunk's parts into `req` (`to`, `destination`, `transport`, `from` unless
    /// `keep_from`, `sip`, `alternates`, and the ring timeout when the trunk sets one).
    pub fn apply(self, req: &mut OriginateRequest) {
        req.to = self.to;
        req.destination = self.destination;
        req.transport = self.transport;
        if req.from.is_none() {
            req.from = self.from;
        }
        req.sip = self.sip;
        req.alternates = self.alternates;
        if let Some(r) = self.ring_timeout {
            req.ring_timeout = r;
        }
    }
}

/// The most targets one call tries (hosts times their addresses).
pub const MAX_TARGETS: usize = 16;

/// Plans a call through a trunk: pure.
pub fn plan(req: &DialRequest<'_>) -> Result<DialPlan, DialError> {
    let s = req.settings;
    if !valid_user(req.number) {
        return Err(DialError::Number(req.number.to_owned()));
    }
    let specs = s
        .host_specs()
        .map_err(|e| DialError::Settings(e.to_string()))?;
    if specs.is_empty() {
        return Err(DialError::NoHosts);
    }
    let order = if s.weighted {
        weighted_order(&specs, req.random)
    } else {
        (0..specs.len()).collect()
    };
    let mut hosts = Vec::with_capacity(specs.len());
    for i in order {
        let spec = specs[i].clone();
        let to = request_uri(s, &spec, req.number)?;
        hosts.push(PlannedHost {
            spec,
            transport: s.transport,
            to,
        });
    }
    // The From host: the first configured host (a registrar's domain when it is one).
    let from_host = specs[0].uri_host();
    let caller_id = match req.caller_id {
        Some(c) => Some(c.to_owned()),
        None => pick_caller_id(
            &s.caller_id_pool,
            req.number,
            req.turn.wrapping_add(req.random as usize),
        )
        .map(str::to_owned)
        .or_else(|| s.from_user.clone()),
    };
    let identity = caller_id
        .as_deref()
        .map(|c| identity_uri(c, &from_host))
        .transpose()?;
    let mut headers = Vec::new();
    let from = match (s.caller_id_mode, &identity) {
        (_, None) => None,
        (CallerIdMode::From, Some(id)) => Some(id.clone()),
        (CallerIdMode::Pai, Some(id)) => {
            headers.push(("P-Asserted-Identity".to_owned(), format!("<{id}>")));
            Some(id.clone())
        }
        (CallerIdMode::PaiPrivate, Some(id)) => {
            headers.push(("P-Asserted-Identity".to_owned(), format!("<{id}>")));
            headers.push(("Privacy".to_owned(), "id".to_owned()));
            // RFC 3323 §4.1.1.3: the anonymous From.
            Some(parse("sip:anonymous@anonymous.invalid")?)
        }
    };
    if let Some(d) = &s.diversion {
        headers.push(("Diversion".to_owned(), d.clone()));
    }
    headers.extend(s.headers.iter().cloned());
    let outbound_proxy = s
        .outbound_proxy
        .as_deref()
        .map(|p| {
            Uri::parse(p.as_bytes())
                .map_err(|_| DialError::Settings(format!("outbound_proxy {p:?} is not a URI")))
        })
        .transpose()?;
    let credentials = match (
        &s.password,
        s.auth_username.as_ref().or(s.username.as_ref()),
    ) {
        (Some(pw), Some(user)) => Some(sip::auth::Credentials::new(user.clone(), pw.clone())),
        _ => None,
    };
    let advertise = s
        .advertise
        .as_deref()
        .map(|a| {
            a.parse::<IpAddr>()
                .map_err(|_| DialError::Settings(format!("advertise {a:?} is not an IP address")))
        })
        .transpose()?;
    Ok(DialPlan {
        hosts,
        from,
        sip: SipOptions {
            trunk_id: Some(req.trunk_id.to_owned()),
            outbound_proxy,
            credentials,
            realm: s.realm.clone(),
            headers,
            advertise,
            tls_server_name: s.tls_server_name.clone(),
            srtp: s.srtp,
            codecs: s
                .codecs
                .iter()
                .filter_map(|c| super::settings::audio_codec(c))
                .collect(),
            ..SipOptions::default()
        },
        ring_timeout: s.ring_timeout_s.map(|r| Duration::from_secs(u64::from(r))),
        caller_id,
    })
}

/// Plans the call and resolves its hosts: the first address is the destination, every other
/// (of this and the following hosts) an alternate, at most [`MAX_TARGETS`]. A host that does
/// not resolve is left out while another does.
pub async fn dial(req: &DialRequest<'_>) -> Result<Dialed, DialError> {
    let plan = plan(req)?;
    let mut targets: Vec<(Uri, SocketAddr, Transport, String)> = Vec::new();
    let mut first_error = None;
    for h in &plan.hosts {
        if targets.len() >= MAX_TARGETS {
            break;
        }
        let host = match &h.spec.host {
            HostName::Ip(ip) => ip.to_string(),
            HostName::Domain(d) => d.clone(),
        };
        match resolve_host(req.dns, &host, h.spec.port, h.transport).await {
            Ok(found) => {
                for r in found {
                    if targets.len() >= MAX_TARGETS {
                        break;
                    }
                    let label = format!("trunk {} {} {}", req.trunk_id, h.spec.uri_host(), r.addr);
                    targets.push((h.to.clone(), r.addr, r.transport, label));
                }
            }
            Err(e) => {
                tracing::debug!(trunk = req.trunk_id, host = %host, error = %e, "trunk host skipped");
                first_error.get_or_insert(e);
            }
        }
    }
    let mut targets = targets.into_iter();
    let Some((to, destination, transport, label)) = targets.next() else {
        return Err(first_error.unwrap_or(DialError::NoHosts));
    };
    let alternates = targets
        .map(|(to, destination, transport, label)| CallRoute {
            to,
            destination,
            transport,
            sip: plan.sip.clone(),
            label,
        })
        .collect();
    Ok(Dialed {
        to,
        destination,
        transport,
        alternates,
        from: plan.from,
        sip: plan.sip,
        ring_timeout: plan.ring_timeout,
        label,
    })
}

/// One address a host resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedHost {
    /// Where to send.
    pub addr: SocketAddr,
    /// Over which transport (RFC 3263 NAPTR may choose another than configured).
    pub transport: Transport,
}

/// Where a trunk host is: an IP literal at once (its port, or the transport's default);
/// a domain name by RFC 3263 through `dns` (`port` given: A/AAAA only; otherwise SRV for the
/// trunk's transport, then A/AAAA on its default port). Without `dns`, names are refused with
/// [`DialError::NeedsDns`].
pub async fn resolve_host(
    dns: Option<&crate::net::dns::Resolver>,
    host: &str,
    port: Option<u16>,
    transport: TrunkTransport,
) -> Result<Vec<ResolvedHost>, DialError> {
    let transport_of = engine_transport(transport);
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match literal.parse::<IpAddr>() {
        Ok(ip) => Ok(vec![ResolvedHost {
            addr: SocketAddr::new(ip, port.unwrap_or(transport.default_port())),
            transport: transport_of,
        }]),
        Err(_) => {
            let Some(dns) = dns else {
                return Err(DialError::NeedsDns(host.to_owned()));
            };
            let refused = |e: &dyn std::fmt::Display| {
                tracing::debug!(host, error = %e, "trunk host did not resolve");
                DialError::Resolve {
                    host: host.to_owned(),
                    why: e.to_string(),
                }
            };
            if let Some(port) = port {
                let ips = dns.resolve_host(host).await.map_err(|e| refused(&e))?;
                return Ok(ips
                    .into_iter()
                    .map(|ip| ResolvedHost {
                        addr: SocketAddr::new(ip, port),
                        transport: transport_of,
                    })
                    .collect());
            }
            // The trunk names its transport: RFC 3263 §4.1 goes straight to its SRV.
            let (scheme, param) = match transport_of {
                Transport::Tls => ("sips", "tcp"),
                Transport::Tcp => ("sip", "tcp"),
                _ => ("sip", "udp"),
            };
            let uri = Uri::parse(format!("{scheme}:{host};transport={param}").as_bytes())
                .map_err(|e| refused(&e))?;
            let targets = dns.resolve_uri(&uri).await.map_err(|e| refused(&e))?;
            Ok(targets
                .into_iter()
                .map(|t| ResolvedHost {
                    addr: t.addr,
                    transport: t.transport,
                })
                .collect())
        }
    }
}

/// The engine's transport for a trunk's.
pub fn engine_transport(t: TrunkTransport) -> Transport {
    match t {
        TrunkTransport::Udp => Transport::Udp,
        TrunkTransport::Tcp => Transport::Tcp,
        TrunkTransport::Tls => Transport::Tls,
    }
}

/// The trunks to try in order: those not marked down (in the given order), or, when every one
/// is down, all of them (a call still goes; the health check may be wrong).
pub fn order_by_health<'a, T>(
    trunks: &'a [T],
    id: impl Fn(&T) -> &str,
    states: &TrunkStates,
) -> Vec<&'a T> {
    let up: Vec<&T> = trunks.iter().filter(|t| !states.is_down(id(t))).collect();
    if up.is_empty() {
        trunks.iter().collect()
    } else {
        up
    }
}

/// A random value for [`DialRequest::random`] (from the OS; the clock's µs if that fails).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => crate::clock::unix_us() as u64,
    }
}

fn parse(text: &str) -> Result<Uri, DialError> {
    Uri::parse(text.as_bytes()).map_err(|_| DialError::Number(text.to_owned()))
}

/// The Request-URI of a call to `number` at `host` per the trunk's `uri_style`.
fn request_uri(s: &TrunkSettings, host: &HostSpec, number: &str) -> Result<Uri, DialError> {
    let text = match s.uri_style {
        UriStyle::Tel => {
            let digits = number.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
                return Err(DialError::TelNeedsGlobal(number.to_owned()));
            }
            format!("tel:{number}")
        }
        style => {
            let mut t = format!("sip:{number}@{}", host.uri_host());
            if let Some(p) = host.port {
                t.push_str(&format!(":{p}"));
            }
            match s.transport {
                TrunkTransport::Udp => {}
                TrunkTransport::Tcp => t.push_str(";transport=tcp"),
                TrunkTransport::Tls => t.push_str(";transport=tls"),
            }
            if style == UriStyle::SipUserPhone {
                t.push_str(";user=phone");
            }
            t
        }
    };
    parse(&text)
}

/// A caller id as a URI: a URI as written, or `sip:<user>@<host>`.
fn identity_uri(caller_id: &str, host: &str) -> Result<Uri, DialError> {
    if caller_id.contains(':') {
        super::settings::check_identity(caller_id)
            .map_err(|_| DialError::CallerId(caller_id.to_owned()))?;
        Uri::parse(caller_id.as_bytes()).map_err(|_| DialError::CallerId(caller_id.to_owned()))
    } else if valid_user(caller_id) {
        Uri::parse(format!("sip:{caller_id}@{host}").as_bytes())
            .map_err(|_| DialError::CallerId(caller_id.to_owned()))
    } else {
        Err(DialError::CallerId(caller_id.to_owned()))
    }
}

/// Indexes of `hosts` in a weighted random order (RFC 2782's selection, repeated): each pick
/// takes a host with probability weight / remaining weight, driven by `random`.
fn weighted_order(hosts: &[HostSpec], random: u64) -> Vec<usize> {
    let mut left: Vec<usize> = (0..hosts.len()).collect();
    let mut out = Vec::with_capacity(hosts.len());
    let mut state = random;
    while !left.is_empty() {
        state = splitmix64(state);
        let total: u64 = left.iter().map(|&i| u64::from(hosts[i].weight)).sum();
        let mut pick = state % total.max(1);
        let mut k = 0;
        for (j, &i) in left.iter().enumerate() {
            let w = u64::from(hosts[i].weight);
            if pick < w {
                k = j;
                break;
            }
            pick -= w;
        }
        out.push(left.remove(k));
    }
    out
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The length of an E.164 country code starting `digits` (ITU-T E.164 assignments: 1 and 7
/// are one digit; 20, 27, 30–34, 36, 39, 40, 41, 43–49, 51–58, 60–66, 81, 82, 84, 86, 90–95
/// and 98 two; the rest three).
fn country_code_len(digits: &[u8]) -> usize {
    let d = |i: usize| digits.get(i).map(|b| b - b'0');
    match (d(0), d(1)) {
        (Some(1 | 7), _) => 1,
        (Some(2), Some(0 | 7))
        | (Some(3), Some(0..=4 | 6 | 9))
        | (Some(4), Some(0 | 1 | 3..=9))
        | (Some(5), Some(1..=8))
        | (Some(6), Some(0..=6))
        | (Some(8), Some(1 | 2 | 4 | 6))
        | (Some(9), Some(0..=5 | 8)) => 2,
        _ => 3,
    }
}

/// Picks a caller id from `pool` for a call to `callee`: those with the callee's country and
/// area code first (the country code and the next 3 digits in zone 1, 2 elsewhere), then those
/// with its country code, then any; round robin by `turn` within the best group.
pub fn pick_caller_id<'a>(pool: &'a [String], callee: &str, turn: usize) -> Option<&'a str> {
    if pool.is_empty() {
        return None;
    }
    let digits = |s: &str| -> Option<Vec<u8>> {
        let d: Vec<u8> = s
            .strip_prefix('+')?
            .bytes()
            .filter(u8::is_ascii_digit)
            .collect();
        (!d.is_empty()).then_some(d)
    };
    let common = |a: &[u8], b: &[u8]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tier = |n: &str| -> usize {
        let (Some(c), Some(p)) = (digits(callee), digits(n)) else {
            return 0;
        };
        let cc = country_code_len(&c);
        let area = cc + if c.first() == Some(&b'1') { 3 } else { 2 };
        match common(&c, &p) {
            k if k >= area => 2,
            k if k >= cc => 1,
            _ => 0,
        }
    };
    let best = pool.iter().map(|n| tier(n)).max().unwrap_or(0);
    let group: Vec<&String> = pool.iter().filter(|n| tier(n) == best).collect();
    group.get(turn % group.len()).map(|s| s.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(hosts: &[&str]) -> TrunkSettings {
        TrunkSettings {
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn req<'a>(s: &'a TrunkSettings, number: &'a str) -> DialRequest<'a> {
        DialRequest {
            trunk_id: "trk_1",
            settings: s,
            number,
            caller_id: None,
            random: 0,
            turn: 0,
            dns: None,
        }
    }

    fn header<'a>(p: &'a DialPlan, name: &str) -> Option<&'a str> {
        p.sip
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn request_uri_follows_the_uri_style_and_transport() {
        let mut s = settings(&["192.0.2.1:5070", "carrier.example"]);
        let p = plan(&req(&s, "+442071234567")).expect("plan");
        assert_eq!(
            p.hosts[0].to.to_string(),
            "sip:+442071234567@192.0.2.1:5070"
        );
        assert_eq!(
            p.hosts[1].to.to_string(),
            "sip:+442071234567@carrier.example"
        );
        s.uri_style = UriStyle::SipUserPhone;
        s.transport = TrunkTransport::Tcp;
        let p = plan(&req(&s, "+442071234567")).expect("plan");
        assert_eq!(
            p.hosts[0].to.to_string(),
            "sip:+442071234567@192.0.2.1:5070;transport=tcp;user=phone"
        );
        s.uri_style = UriStyle::Tel;
        let p = plan(&req(&s, "+442071234567")).expect("plan");
        assert_eq!(p.hosts[0].to.to_string(), "tel:+442071234567");
        assert_eq!(
            plan(&req(&s, "2071234567")).unwrap_err(),
            DialError::TelNeedsGlobal("2071234567".into())
        );
        assert!(matches!(plan(&req(&s, "12;x")), Err(DialError::Number(_))));
    }

    #[test]
    fn caller_id_modes_set_from_pai_and_privacy() {
        let mut s = settings(&["192.0.2.1"]);
        s.from_user = Some("+15551230000".into());
        let p = plan(&req(&s, "100")).expect("plan");
        assert_eq!(
            p.from.as_ref().expect("from").to_string(),
            "sip:+15551230000@192.0.2.1"
        );
        assert_eq!(header(&p, "P-Asserted-Identity"), None);

        s.caller_id_mode = CallerIdMode::Pai;
        let p = plan(&req(&s, "100")).expect("plan");
        assert_eq!(
            header(&p, "P-Asserted-Identity"),
            Some("<sip:+15551230000@192.0.2.1>")
        );
        assert_eq!(header(&p, "Privacy"), None);

        s.caller_id_mode = CallerIdMode::PaiPrivate;
        s.diversion = Some("<sip:+15550001111@192.0.2.1>;reason=unconditional".into());
        s.headers = vec![("X-Account".into(), "42".into())];
        let mut r = req(&s, "100");
        r.caller_id = Some("sip:4420@example.org");
        let p = plan(&r).expect("plan");
        assert_eq!(
            p.from.as_ref().expect("from").to_string(),
            "sip:anonymous@anonymous.invalid"
        );
        assert_eq!(
            header(&p, "P-Asserted-Identity"),
            Some("<sip:4420@example.org>")
        );
        assert_eq!(header(&p, "Privacy"), Some("id"));
        let names: Vec<&str> = p.sip.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["P-Asserted-Identity", "Privacy", "Diversion", "X-Account"]
        );
        r.caller_id = Some("bad user");
        assert!(matches!(plan(&r), Err(DialError::CallerId(_))));
    }

    #[test]
    fn sip_options_carry_proxy_credentials_realm_and_advertise() {
        let mut s = settings(&["192.0.2.1"]);
        s.outbound_proxy = Some("sip:192.0.2.9:5060;lr".into());
        s.username = Some("acct".into());
        s.auth_username = Some("auth-acct".into());
        s.password = Some("pw".into());
        s.realm = Some("carrier.example".into());
        s.advertise = Some("203.0.113.5".into());
        s.ring_timeout_s = Some(45);
        let p = plan(&req(&s, "100")).expect("plan");
        assert_eq!(p.sip.trunk_id.as_deref(), Some("trk_1"));
        assert_eq!(
            p.sip.outbound_proxy.expect("proxy").to_string(),
            "sip:192.0.2.9:5060;lr"
        );
        let c = p.sip.credentials.expect("credentials");
        assert_eq!(c.username, "auth-acct", "auth_username wins over username");
        assert_eq!(p.sip.realm.as_deref(), Some("carrier.example"));
        assert_eq!(p.sip.advertise, Some("203.0.113.5".parse().unwrap()));
        assert_eq!(p.ring_timeout, Some(Duration::from_secs(45)));
        s.password = None;
        assert!(
            plan(&req(&s, "100"))
                .expect("plan")
                .sip
                .credentials
                .is_none()
        );
    }

    #[test]
    fn weighted_hosts_are_ordered_by_the_random_pick() {
        let mut s = settings(&["192.0.2.1;weight=1", "192.0.2.2;weight=9"]);
        let first = |s: &TrunkSettings, r: u64| {
            let mut q = req(s, "100");
            q.random = r;
            plan(&q).expect("plan").hosts[0].spec.uri_host()
        };
        assert_eq!(first(&s, 7), "192.0.2.1", "in order when not weighted");
        s.weighted = true;
        let heavy = (0..1000u64)
            .filter(|r| first(&s, *r) == "192.0.2.2")
            .count();
        assert!(
            (850..=950).contains(&heavy),
            "weight 9 of 10 first {heavy}/1000 times"
        );
        let mut q = req(&s, "100");
        q.random = 3;
        assert_eq!(plan(&q).expect("plan").hosts.len(), 2, "every host once");
    }

    #[test]
    fn caller_id_pool_prefers_the_callees_area_then_country_then_round_robin() {
        let pool: Vec<String> = [
            "+12125550001",
            "+13105550002",
            "+442071230003",
            "+12125550004",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let picks: Vec<&str> = (0..4)
            .map(|t| pick_caller_id(&pool, "+12129998888", t).unwrap())
            .collect();
        assert_eq!(
            picks,
            [
                "+12125550001",
                "+12125550004",
                "+12125550001",
                "+12125550004"
            ]
        );
        assert_eq!(
            pick_caller_id(&pool, "+14155550000", 0),
            Some("+12125550001"),
            "country 1"
        );
        assert_eq!(
            pick_caller_id(&pool, "+14155550000", 1),
            Some("+13105550002")
        );
        assert_eq!(
            pick_caller_id(&pool, "+442079460000", 5),
            Some("+442071230003"),
            "area 20"
        );
        assert_eq!(
            pick_caller_id(&pool, "+33123456789", 2),
            Some("+442071230003"),
            "any, in turn"
        );
        assert_eq!(pick_caller_id(&[], "+1", 0), None);
        let mut s = settings(&["192.0.2.1"]);
        s.caller_id_pool = pool.clone();
        s.from_user = Some("fallback".into());
        let p = plan(&req(&s, "+442079460000")).expect("plan");
        assert_eq!(p.caller_id.as_deref(), Some("+442071230003"));
    }

    #[test]
    fn country_codes_have_their_itu_lengths() {
        for (n, len) in [
            ("1212", 1),
            ("79", 1),
            ("4420", 2),
            ("3314", 2),
            ("353", 3),
            ("8613", 2),
            ("8521", 3),
        ] {
            assert_eq!(country_code_len(n.as_bytes()), len, "{n}");
        }
    }

    #[tokio::test]
    async fn dial_makes_the_first_host_the_destination_and_the_rest_alternates() {
        let s = settings(&[
            "192.0.2.1:5070",
            "[2001:db8::2]",
            "carrier.example",
            "192.0.2.3",
        ]);
        let d = dial(&req(&s, "100")).await.expect("dial");
        assert_eq!(d.destination, "192.0.2.1:5070".parse().unwrap());
        assert_eq!(d.transport, Transport::Udp);
        let alts: Vec<String> = d
            .alternates
            .iter()
            .map(|a| a.destination.to_string())
            .collect();
        assert_eq!(
            alts,
            ["[2001:db8::2]:5060", "192.0.2.3:5060"],
            "the name is skipped"
        );
        assert_eq!(d.alternates[1].to.to_string(), "sip:100@192.0.2.3");
        assert!(d.label.contains("trk_1"), "{}", d.label);

        let names = settings(&["carrier.example"]);
        assert_eq!(
            dial(&req(&names, "100")).await.unwrap_err(),
            DialError::NeedsDns("carrier.example".into())
        );
        let mut tls = settings(&["192.0.2.1"]);
        tls.transport = TrunkTransport::Tls;
        let d = dial(&req(&tls, "100")).await.expect("tls");
        assert_eq!((d.destination.port(), d.transport), (5061, Transport::Tls));
    }

    #[test]
    fn down_trunks_are_skipped_unless_all_are_down() {
        let states = TrunkStates::default();
        let ids = ["a", "b", "c"];
        states.update("b", |t| t.health = crate::trunk::Health::Down);
        let order: Vec<&&str> = order_by_health(&ids, |s| s, &states);
        assert_eq!(order, [&"a", &"c"]);
        for id in ids {
            states.update(id, |t| t.health = crate::trunk::Health::Down);
        }
        assert_eq!(order_by_health(&ids, |s| s, &states).len(), 3);
    }
}
