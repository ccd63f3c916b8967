//! A small authoritative DNS server for tests: UDP on 127.0.0.1 (port 0), answering fixed
//! NAPTR, SRV, A and AAAA records (messages built with hickory-proto, which the resolver
//! already brings). Stopped when the guard drops.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, NAPTR, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// One record of the zone.
#[derive(Debug, Clone)]
pub(crate) enum Rec {
    /// NAPTR with the `s` flag: order, preference, service (`SIP+D2U`), replacement.
    Naptr(u16, u16, &'static str, &'static str),
    /// SRV: priority, weight, port, target.
    Srv(u16, u16, u16, &'static str),
    /// A.
    A(Ipv4Addr),
    /// AAAA.
    Aaaa(Ipv6Addr),
}

impl Rec {
    fn record_type(&self) -> RecordType {
        match self {
            Rec::Naptr(..) => RecordType::NAPTR,
            Rec::Srv(..) => RecordType::SRV,
            Rec::A(_) => RecordType::A,
            Rec::Aaaa(_) => RecordType::AAAA,
        }
    }

    fn rdata(&self) -> RData {
        let name = |s: &str| Name::from_ascii(s).expect("a test zone name");
        match self {
            Rec::Naptr(order, pref, service, replacement) => RData::NAPTR(NAPTR::new(
                *order,
                *pref,
                b"s".to_vec().into_boxed_slice(),
                service.as_bytes().to_vec().into_boxed_slice(),
                Vec::new().into_boxed_slice(),
                name(replacement),
            )),
            Rec::Srv(prio, weight, port, target) => {
                RData::SRV(SRV::new(*prio, *weight, *port, name(target)))
            }
            Rec::A(ip) => RData::A(A(*ip)),
            Rec::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        }
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The running server; dropping it stops it.
#[derive(Debug)]
pub(crate) struct DnsServer {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Every question asked: (name, type), in order.
    pub(crate) queries: Arc<Mutex<Vec<(String, RecordType)>>>,
    task: JoinHandle<()>,
}

impl DnsServer {
    /// Serves `zone` (name, record; TTL `ttl` s) on 127.0.0.1 port 0.
    pub(crate) async fn start(zone: Vec<(&'static str, Rec)>, ttl: u32) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS");
        let addr = socket.local_addr().expect("DNS addr");
        let queries: Arc<Mutex<Vec<(String, RecordType)>>> = Arc::default();
        let seen = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(request) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(query) = request.queries.first().cloned() else {
                    continue;
                };
                let qname = key(&query.name.to_ascii());
                seen.lock()
                    .expect("queries lock")
                    .push((qname.clone(), query.query_type));
                let mut response = Message::response(request.metadata.id, request.metadata.op_code);
                response.metadata.message_type = MessageType::Response;
                response.metadata.authoritative = true;
                response.metadata.recursion_desired = request.metadata.recursion_desired;
                response.add_query(query.clone());
                let mut known = false;
                for (name, rec) in &zone {
                    if key(name) != qname {
                        continue;
                    }
                    known = true;
                    if rec.record_type() == query.query_type {
                        response.add_answer(Record::from_rdata(
                            query.name.clone(),
                            ttl,
                            rec.rdata(),
                        ));
                    }
                }
                if !known {
                    response.metadata.response_code = ResponseCode::NXDomain;
                }
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        DnsServer {
            addr,
            queries,
            task,
        }
    }

    /// How many questions were asked so far.
    pub(crate) fn query_count(&self) -> usize {
        self.queries.lock().expect("queries lock").len()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
