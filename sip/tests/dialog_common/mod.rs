//! A virtual-time, in-memory network of SIP user agents for the dialog tests: each node is a
//! real `Endpoint` plus the `InviteSession`s the application glue drives; datagrams travel
//! between endpoints with zero latency, can be dropped by a filter, and are logged for
//! assertions. An optional proxy node records routes and forks initial requests.
#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sip::dialog::{
    DialogConfig, DialogEvent, InviteParams, InviteSession, Output, next_hop, options_response,
    unknown_dialog_response,
};
use sip::endpoint::{Endpoint, EndpointConfig, EndpointEvent, EndpointOutput};
use sip::message::{
    HeaderName, Host, Message, Method, NameAddr, Request, Response, StatusCode, Uri,
};
use sip::transaction::{TransactionKey, Transport};

#[allow(clippy::disallowed_methods)] // the origin of virtual time; never compared with the clock
pub fn t0() -> Instant {
    Instant::now()
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

pub fn na(s: &str) -> NameAddr {
    NameAddr::parse_named(s.as_bytes(), "Contact").expect("name-addr")
}

pub fn uri(s: &str) -> Uri {
    Uri::parse(s).expect("uri")
}

/// Where a URI leads in this network (IPv4 literals only).
pub fn resolve(u: &Uri) -> Option<SocketAddr> {
    let sip = u.as_sip()?;
    match &sip.host {
        Host::Ipv4(ip) => Some(SocketAddr::new(IpAddr::V4(*ip), sip.port.unwrap_or(5060))),
        _ => None,
    }
}

pub const ALICE: usize = 0;
pub const BOB: usize = 1;
pub const CAROL: usize = 2;

/// One user agent.
pub struct Node {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub ep: Endpoint,
    pub config: DialogConfig,
    pub contact: NameAddr,
    pub sessions: Vec<InviteSession>,
    /// Per session: its initial INVITE client transaction (UAC) or server transaction (UAS).
    pub invite_keys: Vec<Option<TransactionKey>>,
    /// Client transactions sent by sessions -> the session.
    pub req_keys: HashMap<TransactionKey, usize>,
    /// Every event of every session, with the session index and the time.
    pub events: Vec<(usize, Duration, DialogEvent)>,
    /// Out-of-dialog non-INVITE requests.
    pub requests: Vec<(TransactionKey, Request)>,
}

/// One message on the wire.
#[derive(Debug, Clone)]
pub struct Wire {
    pub from: &'static str,
    pub to: SocketAddr,
    pub at: Duration,
    pub msg: Message,
    pub dropped: bool,
}

impl Wire {
    pub fn req(&self) -> Option<&Request> {
        match &self.msg {
            Message::Request(r) => Some(r),
            Message::Response(_) => None,
        }
    }
    pub fn resp(&self) -> Option<&Response> {
        match &self.msg {
            Message::Response(r) => Some(r),
            Message::Request(_) => None,
        }
    }
    pub fn header(&self, name: HeaderName) -> Option<String> {
        self.msg
            .headers()
            .get(&name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    pub fn cseq(&self) -> String {
        self.header(HeaderName::CSeq).unwrap_or_default()
    }
    pub fn to_tag(&self) -> Option<String> {
        self.msg
            .headers()
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned))
    }
    pub fn sender_tag(&self) -> Option<String> {
        self.msg
            .headers()
            .from()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned))
    }
    pub fn routes(&self) -> Vec<String> {
        self.msg
            .headers()
            .routes()
            .expect("routes")
            .iter()
            .map(|r| r.uri.to_string())
            .collect()
    }
}

/// A proxy that record-routes (optionally) and forks initial requests to `targets`.
pub struct Proxy {
    pub addr: SocketAddr,
    pub record_route: Option<String>,
    pub targets: Vec<SocketAddr>,
}

type DropFilter = Box<dyn FnMut(&Wire) -> bool>;

pub struct Net {
    pub start: Instant,
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub proxy: Option<Proxy>,
    pub log: Vec<Wire>,
    pub drop: DropFilter,
    in_flight: VecDeque<(SocketAddr, SocketAddr, Bytes)>,
    pub seed: u64,
}

impl Net {
    /// Alice (192.0.2.1), Bob (192.0.2.2) and Carol (192.0.2.3), all on port 5060.
    pub fn new() -> Net {
        Net::with_configs(DialogConfig::default(), DialogConfig::default())
    }

    /// Alice with `alice`, Bob and Carol with `others` (their Via fields and seeds are set here).
    pub fn with_configs(alice: DialogConfig, others: DialogConfig) -> Net {
        let start = t0();
        let mk = |i: usize, name: &'static str, mut config: DialogConfig| {
            let ip = format!("192.0.2.{}", i + 1);
            config.via_host = Host::parse(ip.as_bytes()).expect("host");
            config.via_port = Some(5060);
            config.seed = 1000 + i as u64;
            Node {
                name,
                addr: addr(&format!("{ip}:5060")),
                ep: Endpoint::new(EndpointConfig {
                    seed: 77 + i as u64,
                    ..EndpointConfig::default()
                }),
                config,
                contact: na(&format!("<sip:{name}@{ip}:5060>")),
                sessions: Vec::new(),
                invite_keys: Vec::new(),
                req_keys: HashMap::new(),
                events: Vec::new(),
                requests: Vec::new(),
            }
        };
        Net {
            start,
            now: start,
            nodes: vec![
                mk(0, "alice", alice),
                mk(1, "bob", others.clone()),
                mk(2, "carol", others),
            ],
            proxy: None,
            log: Vec::new(),
            drop: Box::new(|_| false),
            in_flight: VecDeque::new(),
            seed: 0,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The INVITE parameters for a call from Alice to `target` (a Request-URI).
    pub fn params(&self, target: &str) -> InviteParams {
        InviteParams {
            request_uri: uri(target),
            from: na("\"Alice\" <sip:alice@example.com>"),
            from_tag: "alicetag1".into(),
            to: na(&format!("<{target}>")),
            call_id: "call-1@192.0.2.1".into(),
            cseq: 1,
            contact: self.nodes[ALICE].contact.clone(),
            routes: Vec::new(),
            body: Bytes::from_static(b"v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\na=sendrecv\r\n"),
        }
    }

    /// Alice starts a call; returns her session index.
    pub fn call(&mut self, params: &InviteParams) -> usize {
        let config = self.nodes[ALICE].config.clone();
        let node = &mut self.nodes[ALICE];
        node.sessions.push(InviteSession::uac(config, params));
        node.invite_keys.push(None);
        self.pump();
        self.nodes[ALICE].sessions.len() - 1
    }

    pub fn session(&mut self, node: usize, idx: usize) -> &mut InviteSession {
        &mut self.nodes[node].sessions[idx]
    }

    /// The last session of `node` (e.g. the UAS session of the last INVITE it got).
    pub fn last(&mut self, node: usize) -> &mut InviteSession {
        self.nodes[node].sessions.last_mut().expect("a session")
    }

    pub fn events(&self, node: usize) -> Vec<DialogEvent> {
        self.nodes[node]
            .events
            .iter()
            .map(|(_, _, e)| e.clone())
            .collect()
    }

    /// Messages sent by `from` (dropped ones included).
    pub fn sent(&self, from: usize) -> Vec<&Wire> {
        let name = self.nodes[from].name;
        self.log.iter().filter(|w| w.from == name).collect()
    }

    /// Requests of `method` sent by `from`.
    pub fn requests(&self, from: usize, method: Method) -> Vec<&Wire> {
        self.sent(from)
            .into_iter()
            .filter(|w| w.req().is_some_and(|r| r.method == method))
            .collect()
    }

    /// Responses with `status` to `method` sent by `from`.
    pub fn responses(&self, from: usize, status: u16, method: &str) -> Vec<&Wire> {
        self.sent(from)
            .into_iter()
            .filter(|w| {
                w.resp().is_some_and(|r| r.status.as_u16() == status) && w.cseq().ends_with(method)
            })
            .collect()
    }

    /// Run every output until nothing moves (zero-latency network).
    pub fn pump(&mut self) {
        loop {
            let mut progress = false;
            for i in 0..self.nodes.len() {
                progress |= self.drain_sessions(i);
                while let Some(o) = self.nodes[i].ep.poll_output() {
                    progress = true;
                    match o {
                        EndpointOutput::Transmit(t) => {
                            self.transmit(i, t.destination, t.bytes);
                        }
                        EndpointOutput::Event(e) => self.on_event(i, e),
                    }
                }
            }
            while let Some((src, dst, bytes)) = self.in_flight.pop_front() {
                progress = true;
                self.deliver(src, dst, bytes);
            }
            if !progress {
                break;
            }
        }
    }

    /// Advance virtual time by `d`, firing every timer on the way.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            self.pump();
            let mut next: Option<Instant> = None;
            for n in &mut self.nodes {
                for t in [n.ep.poll_timeout()]
                    .into_iter()
                    .chain(n.sessions.iter().map(|s| s.poll_timeout()))
                    .flatten()
                {
                    next = Some(next.map_or(t, |x: Instant| x.min(t)));
                }
            }
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for n in &mut self.nodes {
                        n.ep.handle_timeout(now);
                        for s in &mut n.sessions {
                            s.handle_timeout(now);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = until;
        self.pump();
    }

    fn transmit(&mut self, from: usize, to: SocketAddr, bytes: Bytes) {
        let msg = Message::parse(bytes.clone()).expect("we send parseable messages");
        let mut wire = Wire {
            from: self.nodes[from].name,
            to,
            at: self.elapsed(),
            msg,
            dropped: false,
        };
        wire.dropped = (self.drop)(&wire);
        let dropped = wire.dropped;
        self.log.push(wire);
        if !dropped {
            self.in_flight.push_back((self.nodes[from].addr, to, bytes));
        }
    }

    fn deliver(&mut self, src: SocketAddr, dst: SocketAddr, bytes: Bytes) {
        if let Some(p) = &self.proxy
            && p.addr == dst
        {
            self.proxy_forward(src, bytes);
            return;
        }
        let now = self.now;
        if let Some(n) = self.nodes.iter_mut().find(|n| n.addr == dst) {
            n.ep.handle_datagram(now, src, Transport::Udp, bytes);
        }
    }

    /// The proxy: add Record-Route to initial requests and fork them; pop our Route from
    /// in-dialog ones and send them to their next hop. The source address is kept (the proxy
    /// adds no Via, so responses go straight back).
    fn proxy_forward(&mut self, src: SocketAddr, bytes: Bytes) {
        let Ok(Message::Request(mut req)) = Message::parse(bytes) else {
            return;
        };
        let p = self.proxy.as_ref().expect("proxy");
        let paddr = p.addr;
        // Pop our own Route.
        if let Ok(routes) = req.headers.routes()
            && let Some(first) = routes.first()
            && resolve(&first.uri) == Some(paddr)
        {
            req.headers.remove(&HeaderName::Route);
            for r in &routes[1..] {
                req.headers.push(HeaderName::Route, r.to_bytes());
            }
        }
        let initial = req.headers.to().is_ok_and(|t| t.tag().is_none());
        let targets = if initial {
            if let Some(rr) = &p.record_route {
                req.headers.push_front(HeaderName::RecordRoute, rr.clone());
            }
            if p.targets.is_empty() {
                resolve(&next_hop(&req)).into_iter().collect()
            } else {
                p.targets.clone()
            }
        } else {
            match resolve(&next_hop(&req)) {
                Some(a) if a == paddr => p.targets.clone(),
                Some(a) => vec![a],
                None => vec![],
            }
        };
        let bytes = req.to_bytes();
        let now = self.now;
        for t in targets {
            if let Some(n) = self.nodes.iter_mut().find(|n| n.addr == t) {
                n.ep.handle_datagram(now, src, Transport::Udp, bytes.clone());
            }
        }
    }

    fn drain_sessions(&mut self, i: usize) -> bool {
        let mut progress = false;
        let now = self.now;
        let at = self.elapsed();
        let node = &mut self.nodes[i];
        for idx in 0..node.sessions.len() {
            while let Some(o) = node.sessions[idx].poll_output() {
                progress = true;
                match o {
                    Output::SendRequest(r) => {
                        let dest = resolve(&next_hop(&r)).expect("resolvable next hop");
                        let initial = r.method == Method::Invite
                            && r.headers.to().is_ok_and(|t| t.tag().is_none());
                        if let Ok(key) = node.ep.send_request(now, r, dest, Transport::Udp) {
                            if initial {
                                node.invite_keys[idx] = Some(key.clone());
                            }
                            node.req_keys.insert(key, idx);
                        }
                    }
                    Output::SendAck(a) => {
                        let dest = resolve(&next_hop(&a)).expect("resolvable next hop");
                        node.ep
                            .send_stateless(dest, Transport::Udp, &Message::Request(a));
                    }
                    Output::SendResponse { to, response } => {
                        // After Timer L the transaction is gone: a late 2xx is dropped here.
                        let _ = node.ep.send_response(now, &to, response);
                    }
                    Output::CancelInvite => {
                        if let Some(k) = node.invite_keys[idx].clone() {
                            node.ep.cancel(now, &k).expect("cancellable");
                        }
                    }
                    Output::Event(e) => node.events.push((idx, at, e)),
                }
            }
        }
        progress
    }

    fn on_event(&mut self, i: usize, e: EndpointEvent) {
        let now = self.now;
        let node = &mut self.nodes[i];
        match e {
            EndpointEvent::NewRequest { key, request, .. } => {
                if request.method == Method::Invite {
                    let mut config = node.config.clone();
                    config.seed += 100 * node.sessions.len() as u64;
                    let tag = node.ep.new_tag();
                    let s = InviteSession::uas(
                        now,
                        config,
                        request,
                        key.clone(),
                        tag,
                        node.contact.clone(),
                    )
                    .expect("a valid INVITE");
                    node.sessions.push(s);
                    node.invite_keys.push(Some(key));
                } else if request.method == Method::Options {
                    let tag = node.ep.new_tag();
                    let r = options_response(
                        &request,
                        &tag,
                        &node.config.allow,
                        &["application/sdp"],
                        &["100rel", "timer"],
                    );
                    let _ = node.ep.send_response(now, &key, r);
                    node.requests.push((key, request));
                } else {
                    node.requests.push((key, request));
                }
            }
            EndpointEvent::InDialogRequest {
                dialog,
                key,
                request,
                ..
            } => match node.sessions.iter().position(|s| s.matches(&dialog)) {
                Some(idx) => node.sessions[idx].handle_request(now, request, key),
                None => {
                    if let (Some(r), Some(key)) = (unknown_dialog_response(&request), key) {
                        let _ = node.ep.send_response(now, &key, r);
                    }
                }
            },
            EndpointEvent::CancelReceived { invite, .. } => {
                if let Some(idx) = node
                    .invite_keys
                    .iter()
                    .position(|k| k.as_ref() == Some(&invite))
                {
                    node.sessions[idx].handle_cancel(now);
                }
            }
            EndpointEvent::Response { key, response } => {
                if let Some(&idx) = node.req_keys.get(&key) {
                    node.sessions[idx].handle_response(now, response);
                }
            }
            EndpointEvent::TransactionTimeout { key, .. }
            | EndpointEvent::TransportError { key, .. } => {
                if let (Some(&idx), TransactionKey::Client(k)) = (node.req_keys.get(&key), &key) {
                    node.sessions[idx].handle_transaction_timeout(now, &k.method);
                }
            }
            _ => {}
        }
    }
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn ok() -> StatusCode {
    StatusCode::OK
}

pub fn answer_sdp() -> Bytes {
    Bytes::from_static(b"v=0\r\no=bob 1 1 IN IP4 192.0.2.2\r\na=sendrecv\r\n")
}

/// Alice calls Bob directly; Bob rings and answers; returns (alice session, bob session).
pub fn established(net: &mut Net) -> (usize, usize) {
    let params = net.params("sip:bob@192.0.2.2");
    let a = net.call(&params);
    let b = net.nodes[BOB].sessions.len() - 1;
    let now = net.now;
    net.session(BOB, b)
        .provisional(now, StatusCode::RINGING, Bytes::new(), false)
        .expect("ring");
    net.pump();
    net.session(BOB, b)
        .accept(now, answer_sdp())
        .expect("accept");
    net.pump();
    assert!(net.session(ALICE, a).is_confirmed());
    assert!(net.session(BOB, b).is_confirmed());
    (a, b)
}
