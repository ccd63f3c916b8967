//! A UDP relay that impairs RTP on a seeded schedule: drops, duplicates and delays each packet
//! of the return leg (target → front peer) by a base delay plus a random jitter, which reorders
//! packets once the jitter passes their spacing. This machine's kernel has no `netem`.
//!
//! Like [`super::relay::Relay`] it has a front socket (the address the peer's SDP names) and
//! a back socket (toward `target`, e.g. sipp's `-rtp_echo` port). The forward leg and non-RTP
//! datagrams pass untouched. Every copy of an RTP packet the relay sends on the return leg is
//! logged with the instant it left, so that a test computes what it induced itself: the loss,
//! the reordering and duplicates in the order the peer got them, and the RFC 3550 jitter of that
//! order.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::relay::{XorShift64, rtp_seq};

/// What the relay does to the return leg.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Impairment {
    pub(crate) seed: u64,
    /// Packets at the start passed untouched (so the peer's first packet is the stream's first).
    pub(crate) lead: usize,
    /// Chance of a drop, per mille.
    pub(crate) drop_permille: u64,
    /// Chance of a second copy (sent 1 ms after the first), per mille.
    pub(crate) dup_permille: u64,
    /// Every packet's delay.
    pub(crate) base_delay: Duration,
    /// Plus a uniform random delay up to this.
    pub(crate) jitter: Duration,
}

/// One copy the relay sent on the return leg.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    /// The 16-bit sequence number.
    pub(crate) seq: u16,
    /// The RTP timestamp.
    pub(crate) timestamp: u32,
    /// When it left the relay.
    pub(crate) at: Instant,
}

/// What the relay did.
#[derive(Debug, Default, Clone)]
pub(crate) struct ImpairLog {
    /// Sequence numbers dropped (never sent).
    pub(crate) dropped: Vec<u16>,
    /// Every copy sent, in the order it left.
    pub(crate) sent: Vec<Sent>,
}

/// A running relay; dropping it stops it.
pub(crate) struct ImpairRelay {
    front: SocketAddr,
    log: Arc<Mutex<ImpairLog>>,
    task: JoinHandle<()>,
}

impl ImpairRelay {
    /// Binds two loopback sockets and relays to `target`, impairing the return leg.
    pub(crate) fn start(target: SocketAddr, impairment: Impairment) -> ImpairRelay {
        let bind = || {
            let s = std::net::UdpSocket::bind((super::LOCALHOST, 0)).expect("bind");
            s.set_nonblocking(true).expect("non-blocking");
            Arc::new(UdpSocket::from_std(s).expect("tokio socket"))
        };
        let (front, back) = (bind(), bind());
        let front_addr = front.local_addr().expect("front address");
        let log = Arc::new(Mutex::new(ImpairLog::default()));
        let task = tokio::spawn(run(front, back, target, impairment, Arc::clone(&log)));
        ImpairRelay {
            front: front_addr,
            log,
            task,
        }
    }

    /// The address the peer must send its RTP to.
    pub(crate) fn front(&self) -> SocketAddr {
        self.front
    }

    /// What it did so far.
    pub(crate) fn log(&self) -> ImpairLog {
        self.log.lock().expect("relay log").clone()
    }
}

impl Drop for ImpairRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    front: Arc<UdpSocket>,
    back: Arc<UdpSocket>,
    target: SocketAddr,
    imp: Impairment,
    log: Arc<Mutex<ImpairLog>>,
) {
    let mut rng = XorShift64::new(imp.seed);
    let mut peer: Option<SocketAddr> = None;
    let mut n = 0usize;
    let (mut a, mut b) = (vec![0u8; 2048], vec![0u8; 2048]);
    let jitter_us = imp.jitter.as_micros() as usize;
    loop {
        tokio::select! {
            r = front.recv_from(&mut a) => {
                let Ok((len, from)) = r else { continue };
                peer = Some(from);
                let _ = back.send_to(&a[..len], target).await;
            }
            r = back.recv_from(&mut b) => {
                let Ok((len, from)) = r else { continue };
                let Some(to) = peer else { continue };
                if from != target {
                    continue;
                }
                let datagram = b[..len].to_vec();
                let Some(seq) = rtp_seq(&datagram) else {
                    let _ = front.send_to(&datagram, to).await;
                    continue;
                };
                let timestamp =
                    u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
                let lead = n < imp.lead;
                n += 1;
                // Every draw is made for every packet, so the schedule depends on the seed
                // and the packet's index only.
                let (drop_roll, dup_roll) = (rng.below(1000) as u64, rng.below(1000) as u64);
                let extra = if jitter_us > 0 { rng.below(jitter_us + 1) } else { 0 };
                if !lead && drop_roll < imp.drop_permille {
                    log.lock().expect("relay log").dropped.push(seq);
                    continue;
                }
                let copies = if !lead && dup_roll < imp.dup_permille { 2 } else { 1 };
                let delay = if lead {
                    imp.base_delay
                } else {
                    imp.base_delay + Duration::from_micros(extra as u64)
                };
                for copy in 0..copies {
                    let (front, log, datagram) =
                        (Arc::clone(&front), Arc::clone(&log), datagram.clone());
                    let delay = delay + Duration::from_millis(copy);
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        // The log is appended under the lock around the send, so its order is
                        // the order the copies left in.
                        let mut log = log.lock().expect("relay log");
                        if front.try_send_to(&datagram, to).is_ok() {
                            log.sent.push(Sent {
                                seq,
                                timestamp,
                                at: Instant::now(),
                            });
                        }
                    });
                }
            }
        }
    }
}

/// What the log says the receiver got, over the sequence numbers `first..=last` (16-bit,
/// taken in order from `first`): copies received, numbers never received (lost), copies of a
/// number already received (duplicates), first copies after a higher number (reordered).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Induced {
    pub(crate) expected: u64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) reordered: u64,
    /// The mean of the RFC 3550 interarrival jitter estimate over every copy, in the order
    /// they left, µs, at an 8 kHz RTP clock.
    pub(crate) mean_jitter_us: f64,
}

/// The impairment the log shows over `first..=first + expected - 1`.
pub(crate) fn induced(log: &ImpairLog, first: u16, expected: u64) -> Induced {
    let in_range = |seq: u16| u64::from(seq.wrapping_sub(first)) < expected;
    let mut seen = std::collections::HashSet::new();
    let (mut duplicates, mut reordered) = (0, 0);
    let mut highest: Option<u16> = None;
    let mut jitter = 0.0f64;
    let (mut jitter_sum, mut jitter_n) = (0.0, 0u64);
    let mut last: Option<Sent> = None;
    for s in log.sent.iter().filter(|s| in_range(s.seq)) {
        // RFC 3550 A.8 over every copy in the order it arrived, duplicates too (as the
        // receiver's estimate runs): D = arrival spacing − sending spacing, in 8 kHz units.
        if let Some(prev) = last {
            let arrival = s.at.duration_since(prev.at).as_secs_f64() * 8000.0;
            let sending = f64::from(s.timestamp.wrapping_sub(prev.timestamp) as i32);
            jitter += ((arrival - sending).abs() - jitter) / 16.0;
        }
        jitter_sum += jitter / 8000.0 * 1e6;
        jitter_n += 1;
        last = Some(*s);
        if !seen.insert(s.seq) {
            duplicates += 1;
            continue;
        }
        let offset = |seq: u16| seq.wrapping_sub(first);
        if highest.is_some_and(|h| offset(s.seq) < offset(h)) {
            reordered += 1;
        } else {
            highest = Some(s.seq);
        }
    }
    Induced {
        expected,
        lost: expected - seen.len() as u64,
        duplicates,
        reordered,
        mean_jitter_us: if jitter_n > 0 {
            jitter_sum / jitter_n as f64
        } else {
            0.0
        },
    }
}
