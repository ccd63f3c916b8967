//! The floor: the least a process can spend per RTP packet relayed, as the reference for
//! `callplane serve`'s media path (issue #12, docs/benchmarks.md, scripts/bench-media.sh).
//!
//! One thread, one epoll set over many UDP sockets (one per call, like `serve`), and for each
//! readable socket a `recvmmsg` of up to [`BATCH`] datagrams followed by one `sendmmsg` that sends
//! each back to its source address (symmetric RTP). No parsing, no timers, no allocation per
//! packet. It counts the datagrams it received and sent and reports its own CPU time
//! (`getrusage(RUSAGE_SELF)`, user + system) once per `--report-ms`:
//!
//! ```text
//! floor t_ms=1000 active=300 in=9990 out=9990 looped=0 utime_us=41000 stime_us=120000
//! ```
//!
//! (cumulative counters; `active` = sockets that received a datagram in that interval; `looped`
//! = datagrams not echoed because they came from one of the floor's own sockets, which would
//! bounce between two echo sockets forever). Before
//! the first report it writes the sockets' ports, one per line, to `--ports-file` and prints
//! `floor ready sockets=N`.
//!
//! Usage (the script builds it with `cargo build --release --bench floor_echo`):
//!
//! ```text
//! floor_echo --sockets 300 --ports-file /tmp/ports [--base-port 30000] [--ip 127.0.0.1]
//!            [--report-ms 1000] [--max-seconds 300]
//! ```
//!
//! `--base-port` binds ports from there up (skipping ports in use) instead of kernel-picked
//! ephemeral ones: keep the floor out of the ephemeral range, where sipp's media ports and
//! other sockets live.
//!
//! ```text
//! ```
//!
//! Run by `cargo bench --bench floor_echo` (no `--sockets`), it relays a bounded self-test
//! (a client socket sends 20,000 datagrams to 100 echo sockets, at most 10 s) and prints the
//! CPU per packet of that run; the figures that matter come from scripts/bench-media.sh.
//!
//! Safe code only: epoll, `recvmmsg`/`sendmmsg` and `getrusage` through `nix`'s safe API.

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmmsg};

/// Datagrams per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 32;
/// Largest datagram relayed whole (longer ones are truncated by the kernel, still counted).
const MTU: usize = 1500;
/// The most sockets one floor opens.
const MAX_SOCKETS: usize = 20_000;

struct Options {
    sockets: usize,
    base_port: u16,
    ports_file: Option<PathBuf>,
    ip: Ipv4Addr,
    report: Duration,
    max: Duration,
}

fn parse_options() -> Result<Option<Options>, String> {
    let mut o = Options {
        sockets: 0,
        base_port: 0,
        ports_file: None,
        ip: Ipv4Addr::LOCALHOST,
        report: Duration::from_millis(1000),
        max: Duration::from_secs(300),
    };
    let mut args = std::env::args().skip(1);
    let mut self_test = true;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--sockets" => {
                o.sockets = value("--sockets")?
                    .parse()
                    .map_err(|e| format!("--sockets: {e}"))?;
                self_test = false;
            }
            "--base-port" => {
                o.base_port = value("--base-port")?
                    .parse()
                    .map_err(|e| format!("--base-port: {e}"))?;
            }
            "--ports-file" => o.ports_file = Some(value("--ports-file")?.into()),
            "--ip" => o.ip = value("--ip")?.parse().map_err(|e| format!("--ip: {e}"))?,
            "--report-ms" => {
                let ms: u64 = value("--report-ms")?
                    .parse()
                    .map_err(|e| format!("--report-ms: {e}"))?;
                o.report = Duration::from_millis(ms.clamp(10, 60_000));
            }
            "--max-seconds" => {
                let s: u64 = value("--max-seconds")?
                    .parse()
                    .map_err(|e| format!("--max-seconds: {e}"))?;
                o.max = Duration::from_secs(s.clamp(1, 3600));
            }
            // What `cargo bench` passes.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if self_test {
        return Ok(None);
    }
    if o.sockets == 0 || o.sockets > MAX_SOCKETS {
        return Err(format!("--sockets: 1 to {MAX_SOCKETS}"));
    }
    if o.base_port != 0 && usize::from(o.base_port) + o.sockets > 65_536 {
        return Err("--base-port + --sockets must stay below 65536".into());
    }
    Ok(Some(o))
}

/// User and system CPU time of this process so far, in µs.
fn cpu_us() -> (u64, u64) {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let us = |t: nix::sys::time::TimeVal| {
                (t.tv_sec().max(0) as u64) * 1_000_000 + t.tv_usec().max(0) as u64
            };
            (us(u.user_time()), us(u.system_time()))
        }
        Err(_) => (0, 0),
    }
}

/// The echo loop's state: the sockets, their epoll set, the batch buffers and the counters.
struct Floor {
    sockets: Vec<UdpSocket>,
    epoll: Epoll,
    bufs: Vec<[u8; MTU]>,
    lens: [usize; BATCH],
    addrs: [Option<SockaddrIn>; BATCH],
    recv_headers: MultiHeaders<SockaddrIn>,
    send_headers: MultiHeaders<SockaddrIn>,
    packets_in: u64,
    packets_out: u64,
    /// Ports of our own sockets: a datagram from one of them is not echoed (two echo sockets
    /// would bounce it forever).
    own_port: Vec<bool>,
    /// Datagrams dropped because they came from one of our own sockets.
    looped: u64,
    /// Per socket: the report interval in which it last received a datagram.
    last_seen: Vec<u64>,
    interval: u64,
}

impl Floor {
    /// `n` sockets on `ip`: ports `base..base + n` (a port in use is skipped), or ports the
    /// kernel picks when `base` is 0.
    fn new(ip: Ipv4Addr, n: usize, base: u16) -> std::io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let mut sockets = Vec::with_capacity(n);
        let mut next = u32::from(base);
        for i in 0..n {
            let s = if base == 0 {
                UdpSocket::bind((ip, 0))?
            } else {
                loop {
                    let port = u16::try_from(next).map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free port left")
                    })?;
                    next += 1;
                    match UdpSocket::bind((ip, port)) {
                        Ok(s) => break s,
                        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            s.set_nonblocking(true)?;
            epoll.add(&s, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
            sockets.push(s);
        }
        let mut own_port = vec![false; 65_536];
        for s in &sockets {
            own_port[usize::from(s.local_addr()?.port())] = true;
        }
        Ok(Self {
            own_port,
            looped: 0,
            sockets,
            epoll,
            bufs: vec![[0u8; MTU]; BATCH],
            lens: [0; BATCH],
            addrs: [None; BATCH],
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            packets_in: 0,
            packets_out: 0,
            last_seen: vec![0; n],
            interval: 1,
        })
    }

    fn ports(&self) -> std::io::Result<Vec<u16>> {
        self.sockets
            .iter()
            .map(|s| s.local_addr().map(|a| a.port()))
            .collect()
    }

    /// Relays what one socket has queued, a batch at a time (at most 64 batches per call so one
    /// busy socket cannot starve the others).
    fn relay(&mut self, index: usize) {
        let Some(socket) = self.sockets.get(index) else {
            return;
        };
        let fd = socket.as_raw_fd();
        let ip = match socket.local_addr() {
            Ok(SocketAddr::V4(a)) => *a.ip(),
            _ => Ipv4Addr::UNSPECIFIED,
        };
        for _ in 0..64 {
            let received = {
                let mut bufs = self.bufs.iter_mut();
                let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
                    [IoSliceMut::new(
                        bufs.next()
                            .expect("one buffer per batch slot")
                            .as_mut_slice(),
                    )]
                });
                match recvmmsg(
                    fd,
                    &mut self.recv_headers,
                    iovs.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) {
                    Ok(results) => {
                        let mut n = 0;
                        for (slot, msg) in results.enumerate() {
                            self.lens[slot] = msg.bytes.min(MTU);
                            // A datagram from our own socket is not sent back (to nowhere).
                            self.addrs[slot] = msg.address.filter(|a| {
                                let own = self.own_port[usize::from(a.port())] && a.ip() == ip;
                                if own {
                                    self.looped += 1;
                                }
                                !own
                            });
                            n = slot + 1;
                        }
                        n
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => 0,
                    Err(e) => {
                        eprintln!("floor: recvmmsg on socket {index}: {e}");
                        0
                    }
                }
            };
            if received == 0 {
                return;
            }
            self.packets_in += received as u64;
            self.last_seen[index] = self.interval;
            // The datagrams to send back: all but those from our own sockets.
            let mut order = [0usize; BATCH];
            let mut to: [Option<SockaddrIn>; BATCH] = [None; BATCH];
            let mut m = 0;
            for slot in 0..received {
                if let Some(a) = self.addrs[slot] {
                    order[m] = slot;
                    to[m] = Some(a);
                    m += 1;
                }
            }
            if m > 0 {
                let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|k| {
                    [IoSlice::new(&self.bufs[order[k]][..self.lens[order[k]]])]
                });
                let cmsgs: [ControlMessage<'_>; 0] = [];
                match sendmmsg(
                    fd,
                    &mut self.send_headers,
                    iovs[..m].iter(),
                    &to[..m],
                    cmsgs,
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(results) => self.packets_out += results.count() as u64,
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(e) => eprintln!("floor: sendmmsg on socket {index}: {e}"),
                }
            }
            if received < BATCH {
                return;
            }
        }
    }

    /// Waits up to `timeout` for readable sockets and relays them.
    fn step(&mut self, events: &mut [EpollEvent], timeout: Duration) {
        let ms = timeout.as_millis().min(1000) as u16;
        let n = match self.epoll.wait(events, ms) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => {
                eprintln!("floor: epoll_wait: {e}");
                0
            }
        };
        for event in events.iter().take(n) {
            self.relay(event.data() as usize);
        }
    }

    /// Sockets that received a datagram in the current interval; starts the next one.
    fn close_interval(&mut self) -> usize {
        let active = self
            .last_seen
            .iter()
            .filter(|&&i| i == self.interval)
            .count();
        self.interval += 1;
        active
    }
}

fn serve(o: Options) -> std::io::Result<()> {
    let mut floor = Floor::new(o.ip, o.sockets, o.base_port)?;
    let ports = floor.ports()?;
    if let Some(path) = &o.ports_file {
        let text: String = ports.iter().map(|p| format!("{p}\n")).collect();
        std::fs::write(path, text)?;
    }
    println!("floor ready sockets={}", ports.len());
    let mut events = vec![EpollEvent::empty(); 256];
    let start = Instant::now();
    let mut next_report = start + o.report;
    while start.elapsed() < o.max {
        let now = Instant::now();
        if now >= next_report {
            let active = floor.close_interval();
            let (user, system) = cpu_us();
            println!(
                "floor t_ms={} active={active} in={} out={} looped={} utime_us={user} stime_us={system}",
                now.duration_since(start).as_millis(),
                floor.packets_in,
                floor.packets_out,
                floor.looped,
            );
            next_report += o.report;
            continue;
        }
        floor.step(&mut events, next_report - now);
    }
    Ok(())
}

/// `cargo bench --bench floor_echo`: a bounded self-test on loopback.
fn self_test() -> std::io::Result<()> {
    const SOCKETS: usize = 100;
    const PACKETS: u64 = 20_000;
    let mut floor = Floor::new(Ipv4Addr::LOCALHOST, SOCKETS, 0)?;
    let targets: Vec<SocketAddr> = floor
        .ports()?
        .into_iter()
        .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
        .collect();
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    client.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = vec![EpollEvent::empty(); 256];
    let payload = [0x80u8; 172];
    let mut echoed = 0u64;
    let mut back = [0u8; MTU];
    let before = cpu_us();
    let t0 = Instant::now();
    for i in 0..PACKETS {
        if Instant::now() > deadline {
            break;
        }
        client.send_to(&payload, targets[(i as usize) % SOCKETS])?;
        floor.step(&mut events, Duration::ZERO);
        if client.recv_from(&mut back).is_ok() {
            echoed += 1;
        }
    }
    let elapsed = t0.elapsed();
    let after = cpu_us();
    let cpu = (after.0 + after.1).saturating_sub(before.0 + before.1);
    let handled = floor.packets_in + floor.packets_out;
    println!(
        "floor self-test: {} in, {} out, {echoed} echoed back, {:.2} s; process CPU \
         (client included) {:.2} µs per packet relayed",
        floor.packets_in,
        floor.packets_out,
        elapsed.as_secs_f64(),
        cpu as f64 / handled.max(1) as f64,
    );
    println!("the figures to quote come from scripts/bench-media.sh (docs/benchmarks.md)");
    Ok(())
}

fn main() {
    let result = match parse_options() {
        Ok(Some(o)) => serve(o),
        Ok(None) => self_test(),
        Err(e) => {
            eprintln!("floor_echo: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("floor_echo: {e}");
        std::process::exit(1);
    }
}
