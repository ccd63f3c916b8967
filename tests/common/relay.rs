//! A lossy UDP relay for RTP on loopback: this machine's kernel has no `netem`, so the tests
//! impair the media path themselves.
//!
//! The relay has two sockets. The *front* one is where a peer's SDP points callplane; what
//! callplane sends there goes out of the *back* one to the target (e.g. sipp's `-rtp_echo`
//! port), and what the target sends back to the back socket goes out of the front one to the
//! address callplane last sent from. Only that return leg, into callplane, is impaired: the
//! n-th RTP packet on it is dropped when the [`DropSchedule`] says so, and every RTP packet on
//! it is logged (extended sequence number, dropped or not) so that a test can compute the loss
//! it induced itself. Non-RTP datagrams are forwarded untouched and not logged.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::LOCALHOST;

/// xorshift64* (Vigna): a small deterministic PRNG, so the schedule is the same on every run.
#[derive(Debug, Clone)]
pub(crate) struct XorShift64(u64);

impl XorShift64 {
    /// A generator from a non-zero seed (0 is mapped to a fixed constant).
    pub(crate) fn new(seed: u64) -> Self {
        XorShift64(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Which packets (by their index on the impaired leg, 0-based) the relay drops.
#[derive(Debug, Clone)]
pub(crate) struct DropSchedule {
    drop: Vec<bool>,
}

/// Packets per block of [`DropSchedule::bursty_five_percent`]: each block drops exactly
/// `BLOCK / 20` of them (5 %).
pub(crate) const BLOCK: usize = 100;

impl DropSchedule {
    /// Exactly 5 % loss per block of [`BLOCK`] packets, mixing a burst and random single
    /// losses: in each block one burst of 3 or 4 consecutive packets and 2 or 1 isolated
    /// single drops, all at random places (seeded), never touching each other. The first
    /// `lead` packets are never dropped (so the receiver's first sequence number is the
    /// relay's first); the schedule covers `lead + blocks·BLOCK` packets, later ones pass.
    pub(crate) fn bursty_five_percent(seed: u64, lead: usize, blocks: usize) -> DropSchedule {
        let mut rng = XorShift64::new(seed);
        let mut drop = vec![false; lead + blocks * BLOCK];
        for b in 0..blocks {
            let block = &mut drop[lead + b * BLOCK..lead + (b + 1) * BLOCK];
            let burst = 3 + rng.below(2);
            // Inside the block with a kept packet on both sides.
            let start = 1 + rng.below(BLOCK - burst - 2);
            block[start..start + burst].fill(true);
            let mut singles = BLOCK / 20 - burst;
            let mut tries = 0;
            while singles > 0 {
                tries += 1;
                assert!(tries < 10_000, "cannot place the single drops");
                let at = 1 + rng.below(BLOCK - 2);
                if !block[at - 1] && !block[at] && !block[at + 1] {
                    block[at] = true;
                    singles -= 1;
                }
            }
        }
        DropSchedule { drop }
    }

    /// Whether the `n`-th packet is dropped.
    pub(crate) fn drops(&self, n: usize) -> bool {
        self.drop.get(n).copied().unwrap_or(false)
    }
}

/// One RTP packet the relay saw on the impaired leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Logged {
    /// Extended sequence number (the 16-bit one unwrapped, starting at its first value).
    pub(crate) seq: u64,
    /// Whether the relay dropped it.
    pub(crate) dropped: bool,
}

/// What the relay saw on the impaired leg, in arrival order.
#[derive(Debug, Default)]
struct Log {
    packets: Vec<Logged>,
    last_ext: Option<u64>,
}

impl Log {
    fn extend_seq(&mut self, seq: u16) -> u64 {
        let ext = match self.last_ext {
            // Start high so a packet a little older than the first does not go below zero.
            None => (1 << 32) + u64::from(seq),
            Some(last) => {
                let delta = i64::from(seq.wrapping_sub(last as u16) as i16);
                last.wrapping_add_signed(delta)
            }
        };
        self.last_ext = Some(self.last_ext.map_or(ext, |l| l.max(ext)));
        ext
    }
}

/// The 16-bit sequence number of an RTP packet (version 2, not an RTCP packet type when
/// multiplexed), `None` for anything else.
pub(crate) fn rtp_seq(datagram: &[u8]) -> Option<u16> {
    if datagram.len() < 12 || datagram[0] >> 6 != 2 {
        return None;
    }
    // RFC 5761 §4: payload types 64-95 would collide with RTCP packet types 192-223.
    let pt = datagram[1] & 0x7f;
    if (64..96).contains(&pt) {
        return None;
    }
    Some(u16::from_be_bytes([datagram[2], datagram[3]]))
}

/// A running relay; dropping it stops it.
pub(crate) struct Relay {
    front: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Binds the two sockets on loopback and starts relaying to `target` with `schedule`
    /// applied to the return leg (target to front peer).
    pub(crate) fn start(target: SocketAddr, schedule: DropSchedule) -> Relay {
        let front = bind();
        let back = bind();
        let front_addr = front.local_addr().expect("front address");
        let log = Arc::new(Mutex::new(Log::default()));
        let task = tokio::spawn(run(front, back, target, schedule, Arc::clone(&log)));
        Relay {
            front: front_addr,
            log,
            task,
        }
    }

    /// The address callplane must send its RTP to.
    pub(crate) fn front(&self) -> SocketAddr {
        self.front
    }

    /// Every RTP packet seen on the impaired leg so far, in arrival order.
    pub(crate) fn log(&self) -> Vec<Logged> {
        self.log.lock().expect("relay log").packets.clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bind() -> UdpSocket {
    let s = StdUdpSocket::bind((LOCALHOST, 0)).expect("bind a relay socket");
    s.set_nonblocking(true).expect("non-blocking");
    UdpSocket::from_std(s).expect("tokio socket")
}

async fn run(
    front: UdpSocket,
    back: UdpSocket,
    target: SocketAddr,
    schedule: DropSchedule,
    log: Arc<Mutex<Log>>,
) {
    let mut peer: Option<SocketAddr> = None;
    let mut n = 0usize;
    let mut a = vec![0u8; 2048];
    let mut b = vec![0u8; 2048];
    loop {
        tokio::select! {
            r = front.recv_from(&mut a) => {
                // Errors (an ICMP port unreachable reported on the socket) are not fatal.
                let Ok((len, from)) = r else { continue };
                peer = Some(from);
                let _ = back.send_to(&a[..len], target).await;
            }
            r = back.recv_from(&mut b) => {
                let Ok((len, from)) = r else { continue };
                if from != target {
                    continue;
                }
                let Some(to) = peer else { continue };
                if let Some(seq) = rtp_seq(&b[..len]) {
                    let dropped = schedule.drops(n);
                    n += 1;
                    {
                        let mut l = log.lock().expect("relay log");
                        let seq = l.extend_seq(seq);
                        l.packets.push(Logged { seq, dropped });
                    }
                    if dropped {
                        continue;
                    }
                }
                let _ = front.send_to(&b[..len], to).await;
            }
        }
    }
}

/// Loss statistics of a run of sequence numbers, computed from the relay's log only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct InducedLoss {
    /// Packets in the range.
    pub(crate) packets: u64,
    /// Of which dropped.
    pub(crate) dropped: u64,
    /// `100 · dropped / packets`.
    pub(crate) loss_percent: f64,
    /// Runs of consecutive dropped sequence numbers.
    pub(crate) bursts: u64,
    /// The longest run.
    pub(crate) max_burst: u64,
    /// `dropped / bursts`.
    pub(crate) mean_burst: f64,
    /// G.107 §7.5 BurstR from the two-state Markov model fitted to the run: with `p` the
    /// probability of a loss after a received packet and `q` of a received packet after a
    /// loss, `BurstR = 1 / (p + q)`.
    pub(crate) burst_r: f64,
}

/// The induced loss over the packets with sequence numbers in `first..=last` (extended), in
/// sequence order. Panics when the relay did not see every sequence number of the range
/// (the return leg must not have lost anything by itself).
pub(crate) fn induced_loss(log: &[Logged], first: u64, last: u64) -> InducedLoss {
    let mut in_range: Vec<Logged> = log
        .iter()
        .copied()
        .filter(|p| (first..=last).contains(&p.seq))
        .collect();
    in_range.sort_by_key(|p| p.seq);
    in_range.dedup_by_key(|p| p.seq);
    assert_eq!(
        in_range.len() as u64,
        last - first + 1,
        "the relay saw every sequence number of {first}..={last}"
    );
    let flags: Vec<bool> = in_range.iter().map(|p| p.dropped).collect();
    loss_stats(&flags)
}

/// [`InducedLoss`] of a sequence of packet slots (`true` = lost), in order.
pub(crate) fn loss_stats(lost: &[bool]) -> InducedLoss {
    let packets = lost.len() as u64;
    let dropped = lost.iter().filter(|l| **l).count() as u64;
    let (mut bursts, mut max_burst, mut run) = (0u64, 0u64, 0u64);
    // Markov transition counts: from a received slot (to lost), from a lost slot (to received).
    let (mut from_recv, mut recv_to_lost, mut from_lost, mut lost_to_recv) = (0u64, 0, 0, 0);
    for (i, &l) in lost.iter().enumerate() {
        if l {
            run += 1;
            max_burst = max_burst.max(run);
            if run == 1 {
                bursts += 1;
            }
        } else {
            run = 0;
        }
        if let Some(&next) = lost.get(i + 1) {
            if l {
                from_lost += 1;
                lost_to_recv += u64::from(!next);
            } else {
                from_recv += 1;
                recv_to_lost += u64::from(next);
            }
        }
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let p = ratio(recv_to_lost, from_recv);
    let q = ratio(lost_to_recv, from_lost);
    InducedLoss {
        packets,
        dropped,
        loss_percent: 100.0 * ratio(dropped, packets),
        bursts,
        max_burst,
        mean_burst: ratio(dropped, bursts),
        burst_r: if p + q > 0.0 { 1.0 / (p + q) } else { 1.0 },
    }
}
