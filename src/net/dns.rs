//! DNS for SIP (RFC 3263): the NAPTR, SRV, A and AAAA lookups that [`sip::resolve`] asks for,
//! done with `hickory-resolver`, and their answers kept for their TTL.
//!
//! The decisions (which lookup next, NAPTR and SRV order, the target list) are all in the
//! sans-IO [`sip::resolve::Resolution`]; this module only performs the lookups it asks for,
//! with a bounded timeout each, and caches them ([`sip::resolve::DnsCache`]). A lookup that
//! fails or times out counts as an empty answer, so a resolution always ends (RFC 3263 moves on
//! to the next step), and its error is named when nothing is found at all.
//!
//! The name servers are the system's (`/etc/resolv.conf`) unless one is given
//! (`--dns-server ip:port`, `CALLPLANE_DNS_SERVER`).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use sip::message::Uri;
use sip::resolve::{Answer, DnsCache, Naptr, Query, RecordKind, Resolution, ResolveError, Srv};
use sip::transaction::Transport;

pub use sip::resolve::Target;

/// How long one query waits for an answer before it is sent again.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a query is sent before it counts as failed.
pub const QUERY_ATTEMPTS: usize = 2;
/// The bound on one lookup (all its attempts), whatever the resolver does.
const LOOKUP_BOUND: Duration = Duration::from_secs(5);
/// The bound on a whole resolution (NAPTR, up to 4 SRV, A/AAAA of each target).
pub const RESOLVE_BOUND: Duration = Duration::from_secs(10);
/// How long "no such record" is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// The longest any answer is kept, whatever its TTL says.
const MAX_TTL: Duration = Duration::from_secs(3600);
/// Cache entries (name + record type).
const CACHE_ENTRIES: usize = 1024;

/// Settings of the [`Resolver`].
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Ask this name server (UDP, then TCP) instead of the system's.
    pub server: Option<SocketAddr>,
    /// The transports calls can use, in order of preference for the SRV fallback
    /// (`_sip._udp`, `_sip._tcp`, `_sips._tcp`).
    pub transports: Vec<Transport>,
}

impl Default for DnsConfig {
    fn default() -> DnsConfig {
        DnsConfig {
            server: None,
            transports: vec![Transport::Udp],
        }
    }
}

/// Why a URI or host did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The URI cannot be resolved (scheme, transport, maddr).
    #[error("{0}")]
    Uri(#[from] ResolveError),
    /// The resolver could not be set up (no usable /etc/resolv.conf).
    #[error("DNS resolver: {0}")]
    Config(String),
    /// Every lookup ended without a usable record.
    #[error("no SIP server found for {name} (NAPTR, SRV, A/AAAA){}", last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    NotFound {
        /// The name.
        name: String,
        /// The last lookup error (timeout, SERVFAIL...), when one failed rather than answering
        /// "no such record".
        last_error: Option<String>,
    },
    /// The lookups took longer than [`RESOLVE_BOUND`].
    #[error("resolving {0} took longer than {RESOLVE_BOUND:?}")]
    Timeout(String),
}

/// The SIP resolver: cheap to clone (one shared cache and name-server pool).
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    hickory: TokioResolver,
    cache: Mutex<DnsCache<Answer>>,
    transports: Vec<Transport>,
    server: Option<SocketAddr>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("server", &self.inner.server)
            .field("transports", &self.inner.transports)
            .finish_non_exhaustive()
    }
}

/// The outcome of one record lookup: records with the TTL to keep them, "none", or an error.
enum Lookup {
    Found(Answer, Duration),
    None,
    Failed(String),
}

impl Resolver {
    /// A resolver asking `config.server`, or the name servers of `/etc/resolv.conf`.
    pub fn new(config: &DnsConfig) -> Result<Resolver, DnsError> {
        let mut builder = match config.server {
            Some(server) => {
                let mut ns = NameServerConfig::udp_and_tcp(server.ip());
                for c in &mut ns.connections {
                    c.port = server.port();
                }
                ns.connections
                    .retain(|c: &ConnectionConfig| c.port == server.port());
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(|e| DnsError::Config(e.to_string()))?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = QUERY_ATTEMPTS;
        // Our own cache (by TTL, bounded) sits in front.
        opts.cache_size = 0;
        let hickory = builder
            .build()
            .map_err(|e| DnsError::Config(e.to_string()))?;
        Ok(Resolver {
            inner: Arc::new(Inner {
                hickory,
                cache: Mutex::new(DnsCache::new(CACHE_ENTRIES)),
                transports: config.transports.clone(),
                server: config.server,
            }),
        })
    }

    /// The targets for a request to `uri` (RFC 3263 §4), in the order to try them; an IP
    /// literal gives its one target without any lookup.
    pub async fn resolve_uri(&self, uri: &Uri) -> Result<Vec<Target>, DnsError> {
        let mut resolution = Resolution::new(uri, &self.inner.transports)?;
        let name = uri.as_sip().map(|s| s.host.to_string()).unwrap_or_default();
        let run = async {
            let mut last_error = None;
            // Bounded: a resolution asks at most 1 NAPTR + 4 SRV + 16 host lookups.
            for _ in 0..64 {
                let Some(query) = resolution.poll_query().cloned() else {
                    break;
                };
                let answer = self.answer(&query, &mut last_error).await;
                resolution.handle_answer(answer, &mut random_u32);
            }
            last_error
        };
        let last_error = tokio::time::timeout(RESOLVE_BOUND, run)
            .await
            .map_err(|_| DnsError::Timeout(name.clone()))?;
        let targets = resolution.into_targets();
        if targets.is_empty() {
            return Err(DnsError::NotFound { name, last_error });
        }
        Ok(targets)
    }

    /// The addresses of `host` (A, then AAAA); an IP literal is returned as it is.
    pub async fn resolve_host(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let mut last_error = None;
        let answer = tokio::time::timeout(
            RESOLVE_BOUND,
            self.answer(&Query::Addresses(host.to_string()), &mut last_error),
        )
        .await
        .map_err(|_| DnsError::Timeout(host.to_string()))?;
        match answer {
            Answer::Addresses(ips) if !ips.is_empty() => Ok(ips),
            _ => Err(DnsError::NotFound {
                name: host.to_string(),
                last_error,
            }),
        }
    }

    /// The answer to `query`, from the cache or the name servers.
    async fn answer(&self, query: &Query, last_error: &mut Option<String>) -> Answer {
        match query {
            Query::Naptr(name) => self
                .cached(name, RecordKind::Naptr, last_error)
                .await
                .unwrap_or(Answer::Naptr(Vec::new())),
            Query::Srv(name) => self
                .cached(name, RecordKind::Srv, last_error)
                .await
                .unwrap_or(Answer::Srv(Vec::new())),
            Query::Addresses(name) => {
                let mut e4 = None;
                let mut e6 = None;
                let (v4, v6) = tokio::join!(
                    self.cached(name, RecordKind::A, &mut e4),
                    self.cached(name, RecordKind::Aaaa, &mut e6)
                );
                if let Some(e) = e4.or(e6) {
                    *last_error = Some(e);
                }
                let mut ips = Vec::new();
                for a in [v4, v6].into_iter().flatten() {
                    if let Answer::Addresses(list) = a {
                        ips.extend(list);
                    }
                }
                Answer::Addresses(ips)
            }
        }
    }

    /// One record type of one name: cached, or looked up and cached.
    async fn cached(
        &self,
        name: &str,
        kind: RecordKind,
        last_error: &mut Option<String>,
    ) -> Option<Answer> {
        let now = crate::clock::now();
        if let Some(hit) = self.lock_cache().get(now, name, kind) {
            return Some(hit);
        }
        let (answer, ttl) = match self.lookup(name, kind).await {
            Lookup::Found(answer, ttl) => (Some(answer), ttl),
            Lookup::None => (None, NEGATIVE_TTL),
            Lookup::Failed(e) => {
                tracing::debug!(name, ?kind, error = %e, "DNS lookup failed");
                *last_error = Some(e);
                return None;
            }
        };
        let stored = answer.clone().unwrap_or(match kind {
            RecordKind::Naptr => Answer::Naptr(Vec::new()),
            RecordKind::Srv => Answer::Srv(Vec::new()),
            RecordKind::A | RecordKind::Aaaa => Answer::Addresses(Vec::new()),
        });
        self.lock_cache()
            .insert(crate::clock::now(), name, kind, stored, ttl.min(MAX_TTL));
        answer
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, DnsCache<Answer>> {
        // A panic while holding the lock leaves a cache that is still consistent.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One query to the name servers.
    async fn lookup(&self, name: &str, kind: RecordKind) -> Lookup {
        let record_type = match kind {
            RecordKind::Naptr => RecordType::NAPTR,
            RecordKind::Srv => RecordType::SRV,
            RecordKind::A => RecordType::A,
            RecordKind::Aaaa => RecordType::AAAA,
        };
        // Fully qualified: SIP names are never relative to a search list.
        let fqdn = format!("{}.", sip::resolve::normalize(name));
        let result = tokio::time::timeout(
            LOOKUP_BOUND,
            self.inner.hickory.lookup(fqdn.as_str(), record_type),
        )
        .await;
        let lookup = match result {
            Err(_) => return Lookup::Failed(format!("{record_type} {name}: timed out")),
            Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => return Lookup::None,
            Ok(Err(e)) => return Lookup::Failed(format!("{record_type} {name}: {e}")),
            Ok(Ok(lookup)) => lookup,
        };
        let mut ttl = u32::MAX;
        let mut naptr = Vec::new();
        let mut srv = Vec::new();
        let mut ips = Vec::new();
        for record in lookup.answers().iter().take(sip::resolve::MAX_RECORDS * 2) {
            let kept = match &record.data {
                RData::NAPTR(r) if kind == RecordKind::Naptr => {
                    naptr.push(Naptr {
                        order: r.order,
                        preference: r.preference,
                        flags: String::from_utf8_lossy(&r.flags).into_owned(),
                        services: String::from_utf8_lossy(&r.services).into_owned(),
                        replacement: r.replacement.to_ascii(),
                    });
                    true
                }
                RData::SRV(r) if kind == RecordKind::Srv => {
                    srv.push(Srv {
                        priority: r.priority,
                        weight: r.weight,
                        port: r.port,
                        target: r.target.to_ascii(),
                    });
                    true
                }
                RData::A(a) if kind == RecordKind::A => {
                    ips.push(IpAddr::V4(a.0));
                    true
                }
                RData::AAAA(a) if kind == RecordKind::Aaaa => {
                    ips.push(IpAddr::V6(a.0));
                    true
                }
                // CNAMEs on the way, anything else.
                _ => false,
            };
            if kept {
                ttl = ttl.min(record.ttl);
            }
        }
        let answer = match kind {
            RecordKind::Naptr if !naptr.is_empty() => Answer::Naptr(naptr),
            RecordKind::Srv if !srv.is_empty() => Answer::Srv(srv),
            RecordKind::A | RecordKind::Aaaa if !ips.is_empty() => Answer::Addresses(ips),
            _ => return Lookup::None,
        };
        Lookup::Found(answer, Duration::from_secs(u64::from(ttl)))
    }
}

/// A random number for the SRV weighted choice (0 when the OS has none to give: the choice
/// then favours the first record, which is still a valid RFC 2782 order).
fn random_u32() -> u32 {
    getrandom::u32().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ip_literals_need_no_lookup() {
        let resolver = Resolver::new(&DnsConfig {
            // Nothing listens on the discard port: a lookup would fail.
            server: Some("127.0.0.1:9".parse().expect("addr")),
            transports: vec![Transport::Udp],
        })
        .expect("a resolver");
        let uri = Uri::parse("sip:1000@127.0.0.1:5080").expect("uri");
        let targets = resolver.resolve_uri(&uri).await.expect("resolves");
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].addr, "127.0.0.1:5080".parse().expect("addr"));
        assert_eq!(
            resolver.resolve_host("[::1]").await,
            Ok(vec!["::1".parse::<IpAddr>().expect("ip")])
        );
        let tel = Uri::parse("tel:+15550100").expect("uri");
        assert!(matches!(
            resolver.resolve_uri(&tel).await,
            Err(DnsError::Uri(ResolveError::Scheme(_)))
        ));
    }
}
