//! Inbound routing by trunk and DID (#11): the engine's [`InboundRouter`].
//!
//! A request is from a trunk when its source address is in the trunk's `allowed_sources`
//! (IP authentication) or is one of its hosts' addresses (a registered trunk's calls come from
//! its registrar or proxy). Then:
//! - the dialed number (the Request-URI's user part, or a `tel:` number) has a route on that
//!   trunk: answered with the route's script, the call row carrying the trunk (and its tenant);
//! - no route: the node's default inbound handling (`--inbound-script`, or answered at once),
//!   still carrying the trunk. Not 404: that is what a call did before trunks, a DID the
//!   carrier sends before its route is added still reaches someone, and an operator who wants
//!   refusals adds a route whose script hangs up with the status it wants.
//!
//! A request from no trunk: [`UnknownSources`] (`serve --unknown-sources`).
//!
//! The router answers from an in-memory snapshot (the engine calls it on its dispatcher task
//! for every new INVITE): [`TrunkRouter::reload`] rebuilds it from the store at start and after
//! every change through the API (`AppState::trunk_changes`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use sip::message::{Request, Uri};
use sip::transaction::Transport;

use super::settings::{Cidr, HostName};
use crate::engine::{InboundConfig, InboundRoute, InboundRouter};
use crate::script::Script;
use crate::store::{Store, StoreError, TrunkDirectory};

/// What happens to an INVITE from an address no trunk lists (`--unknown-sources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownSources {
    /// `allow` while no trunk declares where its calls come from (none has `allowed_sources`
    /// or `register`), `refuse` once one does. Nodes that use trunks only for outbound
    /// calls, and everything before #11, keep answering as they did.
    #[default]
    Auto,
    /// The node's default inbound handling.
    Allow,
    /// 403 Forbidden.
    Refuse,
    /// No answer at all (a scanner learns nothing).
    Drop,
}

impl UnknownSources {
    /// `auto`, `allow`, `refuse` or `drop`.
    pub fn parse(s: &str) -> Option<UnknownSources> {
        match s {
            "auto" => Some(UnknownSources::Auto),
            "allow" => Some(UnknownSources::Allow),
            "refuse" => Some(UnknownSources::Refuse),
            "drop" => Some(UnknownSources::Drop),
            _ => None,
        }
    }
}

/// One trunk as the router sees it.
#[derive(Debug)]
struct RoutedTrunk {
    id: String,
    tenant_id: String,
    /// DID → script (None: the default inbound handling).
    dids: HashMap<String, Option<Arc<Script>>>,
}

/// The router's view of every trunk.
#[derive(Debug, Default)]
struct Snapshot {
    trunks: Vec<RoutedTrunk>,
    /// Source blocks → index in `trunks`, in trunk order.
    sources: Vec<(Cidr, usize)>,
    /// Whether some trunk declares where its calls come from (for [`UnknownSources::Auto`]).
    guarded: bool,
}

/// The inbound router of a node ([`InboundRouter`]).
#[derive(Debug)]
pub struct TrunkRouter {
    snapshot: RwLock<Arc<Snapshot>>,
    unknown: UnknownSources,
    /// The engine's default inbound handling (`--inbound-script`...).
    default: InboundConfig,
    /// `<data dir>/prompts`: a route's script finds its tenant's prompts below it.
    prompts_root: PathBuf,
}

impl TrunkRouter {
    /// A router with no trunks yet ([`TrunkRouter::reload`] fills it).
    pub fn new(unknown: UnknownSources, default: InboundConfig, prompts_root: PathBuf) -> Self {
        TrunkRouter {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            unknown,
            default,
            prompts_root,
        }
    }

    /// Rebuilds the snapshot from the store: every trunk, route and routed script. A route
    /// whose script is gone or invalid routes to the default inbound handling (logged).
    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let dir = store.load_trunk_directory().await?;
        let mut scripts: HashMap<(String, String), Option<Arc<Script>>> = HashMap::new();
        for r in &dir.routes {
            if let Some(id) = &r.script_id {
                let key = (r.tenant_id.clone(), id.clone());
                if scripts.contains_key(&key) {
                    continue;
                }
                let script = match store.get_script(&r.tenant_id, id, None).await {
                    Ok(rec) => match crate::script::parse_value(&rec.body) {
                        Ok(s) => Some(Arc::new(s)),
                        Err(e) => {
                            tracing::warn!(script = %id, error = %e, "a routed script does not parse");
                            None
                        }
                    },
                    Err(StoreError::NotFound) => {
                        tracing::warn!(script = %id, did = %r.did, "a routed script is gone");
                        None
                    }
                    Err(e) => return Err(e),
                };
                scripts.insert(key, script);
            }
        }
        let snapshot = build(&dir, &scripts);
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        Ok(())
    }

    /// The tenant of a trunk (the inbound call row's tenant).
    pub fn tenant_of(&self, trunk_id: &str) -> Option<String> {
        self.current()
            .trunks
            .iter()
            .find(|t| t.id == trunk_id)
            .map(|t| t.tenant_id.clone())
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The decision for a request to `did` from `source` (the engine's call, minus parsing).
    pub fn decide(&self, source: IpAddr, did: Option<&str>) -> InboundRoute {
        let snap = self.current();
        let mut first_trunk = None;
        for (block, i) in &snap.sources {
            if !block.contains(source) {
                continue;
            }
            let trunk = &snap.trunks[*i];
            first_trunk.get_or_insert(trunk);
            let Some(did) = did else { continue };
            let script = trunk.dids.get(did).or_else(|| {
                // `+4420...` and `4420...` name the same number.
                match did.strip_prefix('+') {
                    Some(bare) => trunk.dids.get(bare),
                    None => trunk.dids.get(&format!("+{did}")),
                }
            });
            if let Some(script) = script {
                let mut config = self.default.clone();
                if let Some(script) = script {
                    config.script = Some(script.clone());
                    config.prompts = Some(self.prompts_root.join(&trunk.tenant_id));
                    // The node's per-user test answers do not apply to a routed DID.
                    config.by_user = Arc::default();
                }
                return InboundRoute::Answer {
                    config,
                    trunk_id: Some(trunk.id.clone()),
                };
            }
        }
        if let Some(trunk) = first_trunk {
            return InboundRoute::Answer {
                config: self.default.clone(),
                trunk_id: Some(trunk.id.clone()),
            };
        }
        match self.unknown {
            UnknownSources::Allow => InboundRoute::Default,
            UnknownSources::Auto if !snap.guarded => InboundRoute::Default,
            UnknownSources::Auto | UnknownSources::Refuse => InboundRoute::Refuse(403),
            UnknownSources::Drop => InboundRoute::Drop,
        }
    }
}

impl InboundRouter for TrunkRouter {
    fn route(&self, source: SocketAddr, _transport: Transport, request: &Request) -> InboundRoute {
        self.decide(source.ip(), dialed(&request.uri).as_deref())
    }
}

/// The dialed number of a Request-URI: its user part (parameters after `;` cut), or a `tel:`
/// number.
fn dialed(uri: &Uri) -> Option<String> {
    match uri {
        Uri::Sip(s) => s
            .user
            .as_deref()
            .map(|u| u.split(';').next().unwrap_or(u).to_owned()),
        Uri::Tel(t) => Some(t.number.clone()),
        Uri::Other { .. } => None,
    }
}

fn build(
    dir: &TrunkDirectory,
    scripts: &HashMap<(String, String), Option<Arc<Script>>>,
) -> Snapshot {
    let mut snap = Snapshot::default();
    for t in &dir.trunks {
        let i = snap.trunks.len();
        let s = &t.settings;
        snap.guarded |= !s.allowed_sources.is_empty() || s.register;
        // Checked when saved; an entry that no longer parses is left out.
        for block in s.allowed_sources.iter().filter_map(|c| Cidr::parse(c).ok()) {
            snap.sources.push((block, i));
        }
        for spec in s.host_specs().unwrap_or_default() {
            if let HostName::Ip(ip) = spec.host {
                snap.sources.push((
                    Cidr {
                        addr: ip,
                        len: if ip.is_ipv4() { 32 } else { 128 },
                    },
                    i,
                ));
            }
        }
        let dids = dir
            .routes
            .iter()
            .filter(|r| r.trunk_id == t.id)
            .map(|r| {
                let script = r.script_id.as_ref().and_then(|id| {
                    scripts
                        .get(&(r.tenant_id.clone(), id.clone()))
                        .cloned()
                        .flatten()
                });
                (r.did.clone(), script)
            })
            .collect();
        snap.trunks.push(RoutedTrunk {
            id: t.id.clone(),
            tenant_id: t.tenant_id.clone(),
            dids,
        });
    }
    snap
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Trunk, TrunkRoute};
    use crate::trunk::TrunkSettings;

    fn trunk(id: &str, settings: TrunkSettings) -> Trunk {
        Trunk {
            id: id.into(),
            tenant_id: "ten_1".into(),
            name: id.into(),
            address: String::new(),
            transport: "udp".into(),
            username: None,
            password: None,
            from_user: None,
            max_concurrent: None,
            max_cps_milli: None,
            settings,
            created_at_us: 0,
            updated_at_us: 0,
        }
    }

    fn script() -> Arc<Script> {
        Arc::new(
            crate::script::parse_value(
                &serde_json::json!({"version": 1, "steps": [{"hangup": {}}]}),
            )
            .expect("script"),
        )
    }

    fn router(unknown: UnknownSources, dir: &TrunkDirectory) -> TrunkRouter {
        let r = TrunkRouter::new(unknown, InboundConfig::default(), "/p".into());
        let mut scripts = HashMap::new();
        scripts.insert(("ten_1".to_owned(), "scr_1".to_owned()), Some(script()));
        *r.snapshot.write().unwrap() = Arc::new(build(dir, &scripts));
        r
    }

    fn dir() -> TrunkDirectory {
        TrunkDirectory {
            trunks: vec![
                trunk(
                    "trk_ip",
                    TrunkSettings {
                        allowed_sources: vec!["198.51.100.0/24".into()],
                        ..Default::default()
                    },
                ),
                trunk(
                    "trk_reg",
                    TrunkSettings {
                        hosts: vec!["192.0.2.10:5060".into(), "carrier.example".into()],
                        register: true,
                        username: Some("u".into()),
                        ..Default::default()
                    },
                ),
            ],
            routes: vec![
                TrunkRoute {
                    tenant_id: "ten_1".into(),
                    trunk_id: "trk_ip".into(),
                    did: "+442071234567".into(),
                    script_id: Some("scr_1".into()),
                    created_at_us: 0,
                },
                TrunkRoute {
                    tenant_id: "ten_1".into(),
                    trunk_id: "trk_reg".into(),
                    did: "100".into(),
                    script_id: None,
                    created_at_us: 0,
                },
            ],
        }
    }

    fn answered(r: InboundRoute) -> (Option<String>, bool) {
        match r {
            InboundRoute::Answer { config, trunk_id } => (trunk_id, config.script.is_some()),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn a_trunk_source_and_a_routed_did_run_the_routes_script() {
        let r = router(UnknownSources::Auto, &dir());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            answered(r.decide(ip("198.51.100.7"), Some("+442071234567"))),
            (Some("trk_ip".into()), true)
        );
        assert_eq!(
            answered(r.decide(ip("198.51.100.7"), Some("442071234567"))),
            (Some("trk_ip".into()), true),
            "with or without +"
        );
        // Known source, unknown DID: the default handling, through the trunk.
        assert_eq!(
            answered(r.decide(ip("198.51.100.7"), Some("999"))),
            (Some("trk_ip".into()), false)
        );
        // A registered trunk's calls come from its host.
        assert_eq!(
            answered(r.decide(ip("192.0.2.10"), Some("100"))),
            (Some("trk_reg".into()), false)
        );
        assert_eq!(r.tenant_of("trk_reg").as_deref(), Some("ten_1"));
    }

    #[test]
    fn unknown_sources_follow_the_policy() {
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        let d = dir();
        assert!(matches!(
            router(UnknownSources::Auto, &d).decide(ip, Some("1")),
            InboundRoute::Refuse(403)
        ));
        assert!(matches!(
            router(UnknownSources::Refuse, &d).decide(ip, Some("1")),
            InboundRoute::Refuse(403)
        ));
        assert!(matches!(
            router(UnknownSources::Drop, &d).decide(ip, Some("1")),
            InboundRoute::Drop
        ));
        assert!(matches!(
            router(UnknownSources::Allow, &d).decide(ip, Some("1")),
            InboundRoute::Default
        ));
        // Outbound-only trunks (no allowed_sources, no register): auto still allows.
        let outbound_only = TrunkDirectory {
            trunks: vec![trunk(
                "trk_out",
                TrunkSettings {
                    hosts: vec!["192.0.2.1".into()],
                    ..Default::default()
                },
            )],
            routes: vec![],
        };
        assert!(matches!(
            router(UnknownSources::Auto, &outbound_only).decide(ip, Some("1")),
            InboundRoute::Default
        ));
        assert!(matches!(
            router(UnknownSources::Auto, &TrunkDirectory::default()).decide(ip, Some("1")),
            InboundRoute::Default
        ));
    }

    #[test]
    fn the_dialed_number_is_the_user_part_or_the_tel_number() {
        let u = |s: &str| dialed(&Uri::parse(s.as_bytes()).unwrap());
        assert_eq!(u("sip:+4420;npdi@192.0.2.1").as_deref(), Some("+4420"));
        assert_eq!(u("sip:192.0.2.1"), None);
        assert_eq!(u("tel:+4420").as_deref(), Some("+4420"));
    }
}
