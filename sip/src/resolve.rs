//! Locating SIP servers (RFC 3263 §4): which DNS lookups a request to a URI needs, in which
//! order, and the ordered list of targets (address, port, transport) they produce.
//!
//! Sans-IO like the rest of the crate: a [`Resolution`] says which lookup it wants next
//! ([`Resolution::poll_query`]), the caller performs it and hands the records back
//! ([`Resolution::handle_answer`]), until no lookup is left and [`Resolution::into_targets`]
//! gives the list to try in order (RFC 3263 §4.3: on a transport error, a timeout or a 503 the
//! client moves on to the next). The SRV weighted choice (RFC 2782) takes its random numbers
//! as an argument; [`DnsCache`] keeps answers until their TTL runs out, with `now` passed in.
//!
//! ```text
//! URI ──(§4.1 maddr / IP / port / transport=)──► one host, no SRV ──► A/AAAA ──► targets
//!   │
//!   └─ name without port ─► NAPTR (SIP+D2U, SIP+D2T, SIPS+D2T; order, then preference)
//!                              │  none usable: SRV _sip._udp, _sip._tcp, _sips._tcp
//!                              ▼
//!                            SRV (priority, weighted random) ──► A/AAAA per SRV target
//!                              │  no SRV at all
//!                              ▼
//!                            A/AAAA of the name on 5060 (5061 for TLS)
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::message::{Host, Uri};
use crate::transaction::Transport;

/// The most targets a resolution yields (the rest are never tried anyway: Timer B is 32 s).
pub const MAX_TARGETS: usize = 16;
/// The most SRV lookups one resolution makes (one per usable NAPTR record or fallback).
pub const MAX_SRV_QUERIES: usize = 4;
/// The most records of one answer that are looked at.
pub const MAX_RECORDS: usize = 32;

/// Why a URI cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// Not a `sip:` or `sips:` URI.
    Scheme(String),
    /// `transport=` names a transport the caller does not speak (or `sips:` with UDP).
    Transport(String),
    /// The `maddr` parameter is not a host.
    BadMaddr(String),
    /// The IPv6 reference does not parse.
    BadIpv6(String),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Scheme(s) => write!(f, "only sip: and sips: URIs resolve, not {s}:"),
            ResolveError::Transport(t) => write!(f, "transport {t} is not supported here"),
            ResolveError::BadMaddr(m) => write!(f, "bad maddr {m:?}"),
            ResolveError::BadIpv6(h) => write!(f, "bad IPv6 host {h:?}"),
        }
    }
}

impl std::error::Error for ResolveError {}

/// A NAPTR record (RFC 3403) as the caller looked it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    /// ORDER: lower first.
    pub order: u16,
    /// PREFERENCE: lower first within one order.
    pub preference: u16,
    /// FLAGS (`s`: the replacement is an SRV name).
    pub flags: String,
    /// SERVICES (`SIP+D2U`, `SIP+D2T`, `SIPS+D2T`, ...).
    pub services: String,
    /// REPLACEMENT: the SRV name to look up next.
    pub replacement: String,
}

/// An SRV record (RFC 2782) as the caller looked it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Lower first.
    pub priority: u16,
    /// Relative weight within one priority (0: chosen last, rarely).
    pub weight: u16,
    /// The port.
    pub port: u16,
    /// The host to look up A/AAAA records for (`.`: the service is not offered).
    pub target: String,
}

/// A place to send the request to, in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The address and port.
    pub addr: SocketAddr,
    /// The transport.
    pub transport: Transport,
    /// Where it came from, for the timeline: `"SRV 10 60 sip2.example.test:5060"`,
    /// `"A sip.example.test:5060"`, `"IP 192.0.2.1:5060"`.
    pub label: String,
}

/// The kinds of record a [`Query`] asks for; also the key of [`DnsCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// NAPTR.
    Naptr,
    /// SRV.
    Srv,
    /// A.
    A,
    /// AAAA.
    Aaaa,
}

/// What the caller must look up next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The NAPTR records of this name.
    Naptr(String),
    /// The SRV records of this name.
    Srv(String),
    /// The A and AAAA records of this name (both; either may be empty).
    Addresses(String),
}

impl Query {
    /// The name looked up.
    pub fn name(&self) -> &str {
        match self {
            Query::Naptr(n) | Query::Srv(n) | Query::Addresses(n) => n,
        }
    }
}

/// The records that answer a [`Query`] (a failed lookup answers with none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// For [`Query::Naptr`].
    Naptr(Vec<Naptr>),
    /// For [`Query::Srv`].
    Srv(Vec<Srv>),
    /// For [`Query::Addresses`]: A records then AAAA records.
    Addresses(Vec<IpAddr>),
}

/// What the URI alone says (RFC 3263 §4.1 and §4.2, before any lookup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriTarget {
    /// A numeric IP (the host or `maddr`): no lookup at all.
    Ip(Target),
    /// A name with an explicit port: A/AAAA only, no NAPTR or SRV (§4.2).
    Host {
        /// The name.
        name: String,
        /// The port.
        port: u16,
        /// The transport.
        transport: Transport,
    },
    /// A name without a port: NAPTR when no transport was given, SRV for it otherwise.
    Domain {
        /// The name.
        name: String,
        /// `transport=` (or TLS for `sips:` with `transport=tcp`).
        transport: Option<Transport>,
        /// `sips:`: only TLS.
        secure: bool,
    },
}

/// The target of `uri` (RFC 3263 §4.1): the `maddr` parameter or else the host; the transport
/// from `transport=` (TLS for `sips:`), or for a numeric IP or an explicit port, UDP (`sip:`) or
/// TLS (`sips:`). `supported` lists the transports the caller speaks.
pub fn uri_target(uri: &Uri, supported: &[Transport]) -> Result<UriTarget, ResolveError> {
    let Some(sip) = uri.as_sip() else {
        return Err(ResolveError::Scheme(uri.scheme().to_string()));
    };
    let secure = sip.secure;
    let transport = match sip.transport() {
        None => None,
        Some(t) => Some(parse_transport(t, secure)?),
    };
    if let Some(t) = transport
        && !supported.contains(&t)
    {
        return Err(ResolveError::Transport(t.as_str().to_string()));
    }
    let host = match sip.maddr() {
        Some(m) => Host::parse(m.as_bytes()).map_err(|_| ResolveError::BadMaddr(m.to_string()))?,
        None => sip.host.clone(),
    };
    let fixed = transport.unwrap_or(if secure {
        Transport::Tls
    } else {
        Transport::Udp
    });
    let ip = match host {
        Host::Ipv4(ip) => IpAddr::V4(ip),
        Host::Ipv6(text) => IpAddr::V6(text.parse().map_err(|_| ResolveError::BadIpv6(text))?),
        Host::Domain(name) => {
            return Ok(domain_target(&name, sip.port, transport, fixed, secure));
        }
    };
    let port = sip.port.unwrap_or(fixed.default_port());
    let addr = SocketAddr::new(ip, port);
    Ok(UriTarget::Ip(Target {
        addr,
        transport: fixed,
        label: format!("IP {addr}"),
    }))
}

/// [`uri_target`] of a name.
fn domain_target(
    name: &str,
    port: Option<u16>,
    transport: Option<Transport>,
    fixed: Transport,
    secure: bool,
) -> UriTarget {
    let name = normalize(name);
    match port {
        Some(port) => UriTarget::Host {
            name,
            port,
            transport: fixed,
        },
        None => UriTarget::Domain {
            name,
            transport,
            secure,
        },
    }
}

/// `transport=` as a [`Transport`]; `sips:` makes `tcp` mean TLS and refuses UDP.
fn parse_transport(token: &str, secure: bool) -> Result<Transport, ResolveError> {
    let t = if token.eq_ignore_ascii_case("tls") {
        // Not a transport of RFC 3261 but widely written for TLS.
        Transport::Tls
    } else {
        Transport::from_token(token).ok_or_else(|| ResolveError::Transport(token.to_string()))?
    };
    match (secure, t) {
        (true, Transport::Tcp) => Ok(Transport::Tls),
        (true, Transport::Udp) => Err(ResolveError::Transport("udp with sips:".into())),
        _ => Ok(t),
    }
}

/// A name in the form lookups and the cache use: lower case, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The transport of a NAPTR service (RFC 3263 §4.1, RFC 3261 §26.5): `SIP+D2U` UDP,
/// `SIP+D2T` TCP, `SIPS+D2T` TLS; anything else `None`.
pub fn naptr_service(services: &str) -> Option<Transport> {
    match services.to_ascii_uppercase().as_str() {
        "SIP+D2U" => Some(Transport::Udp),
        "SIP+D2T" => Some(Transport::Tcp),
        "SIPS+D2T" => Some(Transport::Tls),
        _ => None,
    }
}

/// The SRV names to look up, in order, from a NAPTR answer (RFC 3263 §4.1): records with the
/// `s` flag whose service is one we speak (only `SIPS+D2T` for a `sips:` URI, only the given
/// transport when the URI named one), sorted by order then preference. Empty when none fits.
pub fn select_naptr(
    records: &[Naptr],
    supported: &[Transport],
    secure: bool,
    transport: Option<Transport>,
) -> Vec<(Transport, String)> {
    let mut usable: Vec<(&Naptr, Transport)> = records
        .iter()
        .take(MAX_RECORDS)
        .filter(|r| r.flags.eq_ignore_ascii_case("s"))
        .filter_map(|r| naptr_service(&r.services).map(|t| (r, t)))
        .filter(|(_, t)| supported.contains(t))
        .filter(|(_, t)| !secure || *t == Transport::Tls)
        .filter(|(_, t)| transport.is_none_or(|want| want == *t))
        .filter(|(r, _)| !r.replacement.is_empty() && r.replacement != ".")
        .collect();
    // Stable: records equal in both keep the order the server sent them in.
    usable.sort_by_key(|(r, _)| (r.order, r.preference));
    let mut out: Vec<(Transport, String)> = Vec::new();
    for (r, t) in usable {
        let name = normalize(&r.replacement);
        if !out.iter().any(|(ot, on)| *ot == t && *on == name) && out.len() < MAX_SRV_QUERIES {
            out.push((t, name));
        }
    }
    out
}

/// The SRV names to look up when there are no usable NAPTR records (RFC 3263 §4.1): for each
/// transport we speak, `_sip._udp`, `_sip._tcp`, `_sips._tcp` (only `_sips._tcp` for `sips:`,
/// only the given one when the URI named a transport), in that order.
pub fn fallback_srv(
    name: &str,
    supported: &[Transport],
    secure: bool,
    transport: Option<Transport>,
) -> Vec<(Transport, String)> {
    [
        (Transport::Udp, "_sip._udp"),
        (Transport::Tcp, "_sip._tcp"),
        (Transport::Tls, "_sips._tcp"),
    ]
    .into_iter()
    .filter(|(t, _)| supported.contains(t))
    .filter(|(t, _)| !secure || *t == Transport::Tls)
    .filter(|(t, _)| transport.is_none_or(|want| want == *t))
    .map(|(t, prefix)| (t, format!("{prefix}.{}", normalize(name))))
    .collect()
}

/// SRV records in the order to try them (RFC 2782): by priority, lowest first; within one
/// priority by weighted random choice: zero-weight records first in the list, then repeatedly
/// pick the first record whose running weight sum reaches a random number in `0..=sum`, taken
/// as `random() % (sum + 1)`. Records with target `.` are dropped (service not offered here).
/// `random` is called once per choice.
pub fn order_srv(records: &[Srv], random: &mut dyn FnMut() -> u32) -> Vec<Srv> {
    let mut rest: Vec<Srv> = records
        .iter()
        .take(MAX_RECORDS)
        .filter(|r| !r.target.is_empty() && r.target != ".")
        .cloned()
        .collect();
    // Stable: within one priority, zero weights first, otherwise as the server sent them.
    rest.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(rest.len());
    while let Some(first) = rest.first() {
        let priority = first.priority;
        let mut group: Vec<Srv> = Vec::new();
        while rest.first().is_some_and(|r| r.priority == priority) {
            group.push(rest.remove(0));
        }
        while !group.is_empty() {
            let sum: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = random() % (sum + 1);
            let mut running = 0u32;
            let index = group
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .expect("pick <= sum, the last running sum");
            out.push(group.remove(index));
        }
    }
    out
}

#[derive(Debug)]
enum Phase {
    /// Waiting for the NAPTR answer.
    Naptr,
    /// SRV names still to look up (the first is the one asked).
    Srv(VecDeque<(Transport, String)>),
    /// Hosts still to look up: name, port, transport, label prefix.
    Addresses(VecDeque<HostJob>),
    /// Nothing left.
    Done,
}

#[derive(Debug)]
struct HostJob {
    name: String,
    port: u16,
    transport: Transport,
    /// `"SRV 10 60 sip2.example.test:5060"` or `"A sip.example.test:5060"`.
    label: String,
}

/// One RFC 3263 resolution of a URI, driven by the caller's lookups.
///
/// ```text
/// let mut r = Resolution::new(&uri, &[Transport::Udp, Transport::Tcp])?;
/// while let Some(q) = r.poll_query() {
///     let answer = lookup(q).await;          // empty on NXDOMAIN, timeout, ...
///     r.handle_answer(answer, &mut random);
/// }
/// let targets = r.into_targets();            // try in this order
/// ```
#[derive(Debug)]
pub struct Resolution {
    name: String,
    secure: bool,
    transport: Option<Transport>,
    supported: Vec<Transport>,
    phase: Phase,
    /// SRV records found (in order), waiting for their hosts' addresses.
    srv_found: Vec<(Transport, Srv)>,
    targets: Vec<Target>,
    query: Option<Query>,
}

impl Resolution {
    /// Starts resolving `uri` for a client that speaks `supported` (in order of preference for
    /// the SRV fallback).
    pub fn new(uri: &Uri, supported: &[Transport]) -> Result<Resolution, ResolveError> {
        let mut r = Resolution {
            name: String::new(),
            secure: false,
            transport: None,
            supported: supported.to_vec(),
            phase: Phase::Done,
            srv_found: Vec::new(),
            targets: Vec::new(),
            query: None,
        };
        match uri_target(uri, supported)? {
            UriTarget::Ip(target) => r.targets.push(target),
            UriTarget::Host {
                name,
                port,
                transport,
            } => {
                r.phase = Phase::Addresses(VecDeque::from([HostJob {
                    label: format!("A {name}:{port}"),
                    name: name.clone(),
                    port,
                    transport,
                }]));
                r.name = name;
            }
            UriTarget::Domain {
                name,
                transport,
                secure,
            } => {
                r.name = name;
                r.secure = secure;
                r.transport = transport;
                r.phase = match transport {
                    // §4.1: a transport given: straight to its SRV.
                    Some(_) => {
                        Phase::Srv(fallback_srv(&r.name, &r.supported, secure, transport).into())
                    }
                    None => Phase::Naptr,
                };
            }
        }
        r.settle();
        Ok(r)
    }

    /// The lookup to do next; `None` when the resolution is complete.
    pub fn poll_query(&self) -> Option<&Query> {
        self.query.as_ref()
    }

    /// The answer to [`Self::poll_query`]'s query (an empty one when the lookup failed or
    /// timed out; an answer of another kind than asked counts as empty). `random` feeds the
    /// SRV weighted choice.
    pub fn handle_answer(&mut self, answer: Answer, random: &mut dyn FnMut() -> u32) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Naptr => {
                let records = match answer {
                    Answer::Naptr(r) => r,
                    _ => Vec::new(),
                };
                let mut srv = select_naptr(&records, &self.supported, self.secure, self.transport);
                if srv.is_empty() {
                    srv = fallback_srv(&self.name, &self.supported, self.secure, self.transport);
                }
                self.phase = Phase::Srv(srv.into());
            }
            Phase::Srv(mut names) => {
                let (transport, _) = names.pop_front().expect("a Srv phase has a name");
                if let Answer::Srv(records) = answer {
                    for r in order_srv(&records, random) {
                        self.srv_found.push((transport, r));
                    }
                }
                self.phase = Phase::Srv(names);
            }
            Phase::Addresses(mut jobs) => {
                let job = jobs.pop_front().expect("an Addresses phase has a job");
                if let Answer::Addresses(ips) = answer {
                    for ip in ips.into_iter().take(MAX_RECORDS) {
                        let addr = SocketAddr::new(ip, job.port);
                        let target = Target {
                            addr,
                            transport: job.transport,
                            label: job.label.clone(),
                        };
                        if self.targets.len() < MAX_TARGETS
                            && !self
                                .targets
                                .iter()
                                .any(|t| t.addr == addr && t.transport == job.transport)
                        {
                            self.targets.push(target);
                        }
                    }
                }
                self.phase = Phase::Addresses(jobs);
            }
            Phase::Done => {}
        }
        self.settle();
    }

    /// Moves past finished phases and sets the next query.
    fn settle(&mut self) {
        loop {
            match &mut self.phase {
                Phase::Naptr => {
                    self.query = Some(Query::Naptr(self.name.clone()));
                    return;
                }
                Phase::Srv(names) => {
                    if let Some((_, name)) = names.front() {
                        self.query = Some(Query::Srv(name.clone()));
                        return;
                    }
                    let jobs: VecDeque<HostJob> = if self.srv_found.is_empty() {
                        // §4.2: no SRV records: the name's A/AAAA on the transport's port.
                        let transport = self.transport.unwrap_or(if self.secure {
                            Transport::Tls
                        } else {
                            Transport::Udp
                        });
                        let port = transport.default_port();
                        if self.supported.contains(&transport) {
                            VecDeque::from([HostJob {
                                label: format!("A {}:{port}", self.name),
                                name: self.name.clone(),
                                port,
                                transport,
                            }])
                        } else {
                            VecDeque::new()
                        }
                    } else {
                        std::mem::take(&mut self.srv_found)
                            .into_iter()
                            .take(MAX_TARGETS)
                            .map(|(transport, r)| {
                                let name = normalize(&r.target);
                                HostJob {
                                    label: format!(
                                        "SRV {} {} {name}:{}",
                                        r.priority, r.weight, r.port
                                    ),
                                    name,
                                    port: r.port,
                                    transport,
                                }
                            })
                            .collect()
                    };
                    self.phase = Phase::Addresses(jobs);
                }
                Phase::Addresses(jobs) => {
                    if self.targets.len() < MAX_TARGETS
                        && let Some(job) = jobs.front()
                    {
                        self.query = Some(Query::Addresses(job.name.clone()));
                        return;
                    }
                    self.phase = Phase::Done;
                }
                Phase::Done => {
                    self.query = None;
                    return;
                }
            }
        }
    }

    /// Whether no lookup is left.
    pub fn is_done(&self) -> bool {
        self.query.is_none()
    }

    /// The targets in the order to try them (empty: nothing found).
    pub fn into_targets(self) -> Vec<Target> {
        self.targets
    }
}

/// DNS answers kept until their TTL runs out, keyed by name and record kind; `now` is passed in.
/// Bounded: at `capacity` entries, expired ones are dropped, then the one closest to expiry.
#[derive(Debug)]
pub struct DnsCache<V> {
    entries: HashMap<(String, RecordKind), (V, Instant)>,
    capacity: usize,
}

impl<V: Clone> DnsCache<V> {
    /// An empty cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> DnsCache<V> {
        DnsCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The answer for `name`/`kind` if it has not expired at `now`.
    pub fn get(&self, now: Instant, name: &str, kind: RecordKind) -> Option<V> {
        let (value, expires) = self.entries.get(&(normalize(name), kind))?;
        (now < *expires).then(|| value.clone())
    }

    /// Keeps `value` for `ttl` from `now` (a zero TTL is not kept).
    pub fn insert(&mut self, now: Instant, name: &str, kind: RecordKind, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let key = (normalize(name), kind);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, (_, expires)| *expires > now);
            if self.entries.len() >= self.capacity
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        let expires = now.checked_add(ttl).unwrap_or(now);
        self.entries.insert(key, (value, expires));
    }

    /// How many entries are held (expired ones included until they are pushed out).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;

/// A base instant for the tests (any will do: the cache never reads the clock itself).
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
fn any_instant() -> Instant {
    Instant::now()
}
