//! The RTP port pool: even/odd RTP/RTCP UDP port pairs from a configured range.
//!
//! RFC 3550 §11: "For UDP and similar protocols, RTP SHOULD use an even destination port number
//! and the corresponding RTCP stream SHOULD use the next higher (odd) destination port number."
//! So the pool hands out pairs `(p, p + 1)` with `p` even, both sockets bound on the pool's IP.
//!
//! A pair comes with a [`PortLease`] that gives it back to the pool when dropped. A port that
//! somebody outside the pool holds (the bind fails with "address in use") is skipped and stays in
//! the pool, to be tried again later.
//!
//! Pairs are handed out at random, not in order: a call's RTP port is not predictable from the
//! previous call's, so packets aimed at a guessed port rarely find a call (RFC 3550 §9.1 and
//! RFC 6056 argue the same for SSRCs and source ports). The pick is uniform over the older half
//! of the free list; freed pairs join its end, so a pair is not reused right after its call.
//!
//! The pool is shared by every call, which allocate and release from their own tasks, so its
//! free list sits behind a mutex; the lock is held only to pop or push one number, never across
//! an `.await`.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::UdpSocket;

/// Why the pool could not give a pair.
#[derive(Debug, thiserror::Error)]
pub enum PortPoolError {
    /// The range holds no even/odd pair.
    #[error("the RTP port range {start}-{end} holds no even/odd port pair")]
    EmptyRange {
        /// First port of the range.
        start: u16,
        /// Last port of the range.
        end: u16,
    },
    /// Every pair of the range is leased.
    #[error("all {total} RTP port pairs of {start}-{end} are in use")]
    Exhausted {
        /// First port of the range.
        start: u16,
        /// Last port of the range.
        end: u16,
        /// Pairs in the range.
        total: usize,
    },
    /// Every pair not leased is held by another program (bind: address in use).
    #[error(
        "no RTP port pair of {start}-{end} could be bound: {tried} free pairs are in use by other programs"
    )]
    AllBusy {
        /// First port of the range.
        start: u16,
        /// Last port of the range.
        end: u16,
        /// Pairs tried.
        tried: usize,
    },
    /// Binding failed for another reason than "address in use".
    #[error("cannot bind RTP port {port} on {ip}: {source}")]
    Bind {
        /// The IP.
        ip: IpAddr,
        /// The port.
        port: u16,
        /// The OS error.
        source: io::Error,
    },
}

/// How many pairs the pool holds and how many are leased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPoolStats {
    /// Pairs in the range.
    pub total: usize,
    /// Pairs not leased.
    pub free: usize,
    /// Pairs leased.
    pub used: usize,
}

#[derive(Debug)]
struct Inner {
    /// The RTP (even) ports not leased, in the order they will be tried.
    free: VecDeque<u16>,
    total: usize,
}

/// A pool of RTP/RTCP port pairs. Cloning gives another handle to the same pool.
#[derive(Debug, Clone)]
pub struct RtpPortPool {
    ip: IpAddr,
    start: u16,
    end: u16,
    inner: Arc<Mutex<Inner>>,
}

/// A bound RTP/RTCP socket pair and its lease.
#[derive(Debug)]
pub struct RtpSocketPair {
    /// The RTP socket, on the even port.
    pub rtp: UdpSocket,
    /// The RTCP socket, on the next (odd) port.
    pub rtcp: UdpSocket,
    /// Returns the pair to the pool when dropped; keep it as long as the sockets.
    pub lease: PortLease,
}

/// A pair whose sockets the async runtime does not watch: a media worker reads them
/// (`net::media_workers`). Were they registered with the runtime, its reactor would wake on
/// every datagram for a socket no task reads.
#[derive(Debug)]
pub struct PlainRtpPair {
    /// The RTP socket (non-blocking).
    pub rtp: std::net::UdpSocket,
    /// The RTCP socket (non-blocking).
    pub rtcp: std::net::UdpSocket,
    /// Returns the pair to the pool when dropped.
    pub lease: PortLease,
}

impl PlainRtpPair {
    /// The pair as runtime sockets again (inside a tokio runtime).
    pub fn into_tokio(self) -> io::Result<RtpSocketPair> {
        Ok(RtpSocketPair {
            rtp: UdpSocket::from_std(self.rtp)?,
            rtcp: UdpSocket::from_std(self.rtcp)?,
            lease: self.lease,
        })
    }
}

impl RtpSocketPair {
    /// Takes the sockets out of the runtime's reactor (they stay non-blocking).
    pub fn into_plain(self) -> io::Result<PlainRtpPair> {
        Ok(PlainRtpPair {
            rtp: self.rtp.into_std()?,
            rtcp: self.rtcp.into_std()?,
            lease: self.lease,
        })
    }

    /// The RTP (even) port.
    pub fn rtp_port(&self) -> u16 {
        self.lease.rtp_port
    }

    /// The RTCP (odd) port.
    pub fn rtcp_port(&self) -> u16 {
        self.lease.rtp_port + 1
    }
}

/// Gives its port pair back to the pool on drop.
pub struct PortLease {
    rtp_port: u16,
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for PortLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortLease")
            .field("rtp_port", &self.rtp_port)
            .finish()
    }
}

impl PortLease {
    /// The RTP (even) port of the leased pair.
    pub fn rtp_port(&self) -> u16 {
        self.rtp_port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        // Returned to the back: the port is reused as late as possible, so that late packets
        // of the call that had it do not reach the next call.
        lock(&self.inner).free.push_back(self.rtp_port);
    }
}

/// The pool's lock. A panic while it was held cannot leave the free list inconsistent (each
/// critical section is one push or pop), so a poisoned lock is taken over.
fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl RtpPortPool {
    /// A pool of the pairs `(p, p + 1)`, `p` even, that fit in `range`, bound on `ip`.
    pub fn new(ip: IpAddr, range: RangeInclusive<u16>) -> Result<RtpPortPool, PortPoolError> {
        let (start, end) = (*range.start(), *range.end());
        // Port 0 would mean "any port" to bind: the pairs start at 2 at the lowest.
        let low = start.max(1);
        let first = low.checked_add(low % 2);
        let free: VecDeque<u16> = match first {
            Some(first) if first < end => (first..end).step_by(2).collect(),
            _ => VecDeque::new(),
        };
        if free.is_empty() {
            return Err(PortPoolError::EmptyRange { start, end });
        }
        let total = free.len();
        Ok(RtpPortPool {
            ip,
            start,
            end,
            inner: Arc::new(Mutex::new(Inner { free, total })),
        })
    }

    /// The IP the sockets are bound on.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Free and used pairs.
    pub fn stats(&self) -> PortPoolStats {
        let inner = lock(&self.inner);
        PortPoolStats {
            total: inner.total,
            free: inner.free.len(),
            used: inner.total - inner.free.len(),
        }
    }

    /// Lease a random pair and bind both sockets. Pairs held by other programs are skipped
    /// (each free pair is tried at most once per call).
    pub async fn allocate(&self) -> Result<RtpSocketPair, PortPoolError> {
        let candidates = lock(&self.inner).free.len();
        if candidates == 0 {
            return Err(self.exhausted());
        }
        // Pairs found busy stay leased (out of the free list) until this call is over, so that
        // the random picks never try one twice; dropping them puts them back.
        let mut busy: Vec<PortLease> = Vec::new();
        for _ in 0..candidates {
            let Some(port) = take_random(&mut lock(&self.inner).free) else {
                break;
            };
            // From here the port is ours: the lease puts it back on every path.
            let lease = PortLease {
                rtp_port: port,
                inner: Arc::clone(&self.inner),
            };
            match self.bind_pair(port).await {
                Ok((rtp, rtcp)) => return Ok(RtpSocketPair { rtp, rtcp, lease }),
                Err((_, e)) if e.kind() == io::ErrorKind::AddrInUse => busy.push(lease),
                Err((port, source)) => {
                    return Err(PortPoolError::Bind {
                        ip: self.ip,
                        port,
                        source,
                    });
                }
            }
        }
        let tried = busy.len();
        drop(busy);
        if tried < candidates || lock(&self.inner).free.len() < candidates {
            // Others took pairs while we were trying: the range may be truly exhausted now.
            Err(self.exhausted())
        } else {
            Err(PortPoolError::AllBusy {
                start: self.start,
                end: self.end,
                tried,
            })
        }
    }

    fn exhausted(&self) -> PortPoolError {
        PortPoolError::Exhausted {
            start: self.start,
            end: self.end,
            total: lock(&self.inner).total,
        }
    }

    async fn bind_pair(&self, port: u16) -> Result<(UdpSocket, UdpSocket), (u16, io::Error)> {
        let rtp = UdpSocket::bind(SocketAddr::new(self.ip, port))
            .await
            .map_err(|e| (port, e))?;
        let rtcp = UdpSocket::bind(SocketAddr::new(self.ip, port + 1))
            .await
            .map_err(|e| (port + 1, e))?;
        Ok((rtp, rtcp))
    }
}

/// Removes and returns a random entry of the older half of `free` (the front; at least the
/// first entry).
fn take_random(free: &mut VecDeque<u16>) -> Option<u16> {
    let window = (free.len() / 2).max(1).min(free.len());
    if window == 0 {
        return None;
    }
    let index = usize::try_from(random_u64() % window as u64).unwrap_or(0);
    free.remove(index)
}

/// 64 random bits from the OS; should it fail, from the standard library's randomly keyed
/// hasher (still unpredictable from outside the process).
fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    getrandom::u64().unwrap_or_else(|_| {
        std::collections::hash_map::RandomState::new()
            .hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
    })
}
