//! kamailio as an example carrier (tests/fixtures/kamailio/carrier.cfg) and rtpengine as its
//! media relay, started on free loopback ports for one test and stopped (SIGTERM, then
//! SIGKILL) when dropped. Their logs go to files in the test's directory and are printed when
//! the test panics.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout};

use super::{LOCALHOST, free_udp_port, tool_available};

/// The kamailio binary (Debian package `kamailio`).
pub(crate) const KAMAILIO: &str = "/usr/sbin/kamailio";
/// The rtpengine binary (Debian package `rtpengine-daemon`).
pub(crate) const RTPENGINE: &str = "/usr/bin/rtpengine";

/// Whether kamailio can run here (`false`: skip; under `CI=true` this fails instead).
pub(crate) fn kamailio_available() -> bool {
    tool_available(KAMAILIO, "-v", "kamailio")
}

/// Whether rtpengine can run here (`false`: skip; under `CI=true` this fails instead).
pub(crate) fn rtpengine_available() -> bool {
    tool_available(RTPENGINE, "--version", "rtpengine-daemon")
}

/// The carrier's account and numbers, as filled into carrier.cfg.
#[derive(Debug, Clone)]
pub(crate) struct CarrierConfig {
    /// The account's username (the only one allowed to register and to call the PSTN).
    pub(crate) user: String,
    /// Its password (plain text in the config: no database).
    pub(crate) password: String,
    /// The DID routed to the account's registered contact.
    pub(crate) did: String,
    /// `ip:port` of the "PSTN" (a sipp UAS) that gets calls to `+1555...`.
    pub(crate) pstn: String,
    /// `ip:port` of rtpengine's ng control socket: media through it when given.
    pub(crate) rtpengine: Option<String>,
}

/// The realm of the carrier's digest challenges.
pub(crate) const CARRIER_REALM: &str = "carrier.test";

/// A stopped-on-drop child whose log is printed when the test fails.
struct Guarded {
    child: Child,
    log: PathBuf,
    what: &'static str,
}

impl Guarded {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SIGTERM first: kamailio's main process then stops its worker processes.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if std::time::Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                // Waiting for a process to exit, which nothing notifies: bounded above.
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "----- {} log ({}) -----\n{}\n----- end of {} log -----",
                self.what,
                self.log.display(),
                self.log_text(),
                self.what
            );
        }
    }
}

/// A running kamailio carrier.
pub(crate) struct Kamailio {
    proc: Guarded,
    /// Its UDP SIP port on 127.0.0.1.
    pub(crate) port: u16,
    /// The account and numbers it was started with.
    pub(crate) config: CarrierConfig,
}

impl Kamailio {
    /// Fills carrier.cfg for `config` and starts kamailio on a free UDP port in `dir`; returns
    /// once it answers OPTIONS (panics, with its log, when it does not within 10 s).
    pub(crate) async fn start(dir: &Path, config: CarrierConfig) -> Kamailio {
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kamailio/carrier.cfg"),
        )
        .expect("read carrier.cfg");
        let cfg = template
            .replace("@USER@", &config.user)
            .replace("@PASSWORD@", &config.password)
            .replace("@DID@", &config.did)
            .replace("@PSTN@", &config.pstn)
            .replace(
                "@RTPENGINE@",
                &format!(
                    "udp:{}",
                    config.rtpengine.as_deref().unwrap_or("127.0.0.1:1")
                ),
            );
        let run = dir.join("kamailio");
        std::fs::create_dir_all(&run).expect("kamailio run dir");
        let cfg_path = run.join("carrier.cfg");
        std::fs::write(&cfg_path, cfg).expect("write carrier.cfg");
        let mut failures = Vec::new();
        // A port taken by bind-and-release can be taken again before kamailio binds it.
        for attempt in 0..5 {
            let port = free_udp_port();
            let log = run.join(format!("kamailio-{attempt}.log"));
            let mut cmd = Command::new(KAMAILIO);
            cmd.arg("-f")
                .arg(&cfg_path)
                .args(["-DD", "-E", "-m", "64", "-M", "8"])
                .args(["-l", &format!("udp:127.0.0.1:{port}")])
                .arg("-w")
                .arg(&run)
                .arg("-Y")
                .arg(&run)
                .arg("-P")
                .arg(run.join(format!("kamailio-{attempt}.pid")));
            if config.rtpengine.is_some() {
                cmd.args(["-A", "WITH_RTPENGINE"]);
            }
            let file = File::create(&log).expect("kamailio log file");
            let child = cmd
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("log file"))
                .stderr(file)
                .spawn()
                .expect("start kamailio");
            let mut proc = Guarded {
                child,
                log,
                what: "kamailio",
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = proc.child.try_wait() {
                    failures.push(format!(
                        "port {port}: kamailio exited {status}:\n{}",
                        proc.log_text()
                    ));
                    break;
                }
                if let Some(line) = options(port, "", Duration::from_millis(200)).await
                    && line.starts_with("SIP/2.0 200")
                {
                    return Kamailio { proc, port, config };
                }
                assert!(
                    Instant::now() < deadline,
                    "kamailio on port {port} did not answer OPTIONS within 10 s:\n{}",
                    proc.log_text()
                );
                // Not listening yet (the probe was refused at once): poll, bounded above.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("kamailio did not start: {failures:#?}");
    }

    /// `127.0.0.1:port`.
    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many contacts the account has in kamailio's location table (the config answers
    /// `OPTIONS sip:regcount@...` with `200 contacts=N`).
    pub(crate) async fn registered_contacts(&self) -> usize {
        for _ in 0..5 {
            if let Some(line) = options(self.port, "regcount", Duration::from_secs(1)).await {
                let n = line
                    .split("contacts=")
                    .nth(1)
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or_else(|| panic!("regcount answered {line:?}"));
                return n;
            }
        }
        panic!(
            "kamailio did not answer the regcount OPTIONS: log:\n{}",
            self.log()
        );
    }

    /// Waits until the account has `n` contacts (bounded by `limit`; the location table has no
    /// push, so this polls).
    pub(crate) async fn wait_registered_contacts(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.registered_contacts().await;
            if now == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kamailio has {now} contacts, not {n}, after {limit:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its log so far.
    pub(crate) fn log(&self) -> String {
        self.proc.log_text()
    }

    /// The lines its config printed with xlog (`carrier: ...`).
    pub(crate) fn carrier_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("carrier: ").map(|(_, r)| r.to_owned()))
            .collect()
    }

    /// The carrier lines once `enough` holds for them, or as they are after `wait`. kamailio
    /// logs some lines after it sent the reply they describe (`save()` answers the REGISTER,
    /// then the config logs it), so a test that just got the reply may read the log too early.
    pub(crate) async fn carrier_lines_when(
        &self,
        enough: impl Fn(&[String]) -> bool,
        wait: Duration,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let lines = self.carrier_lines();
            if enough(&lines) || tokio::time::Instant::now() >= deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Sends `OPTIONS sip:user@127.0.0.1:port` and returns the first line of the answer, or `None`
/// when none came within `wait`.
async fn options(port: u16, user: &str, wait: Duration) -> Option<String> {
    let sock = UdpSocket::bind((LOCALHOST, 0)).await.ok()?;
    let local = sock.local_addr().ok()?;
    let at = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    let branch = format!("z9hG4bK-probe-{}", local.port());
    let msg = format!(
        "OPTIONS sip:{at}127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         From: <sip:test@127.0.0.1>;tag={branch}\r\n\
         To: <sip:{at}127.0.0.1>\r\n\
         Call-ID: {branch}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), (LOCALHOST, port)).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = timeout(wait, sock.recv_from(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().map(str::to_owned)
}

/// A running rtpengine (userspace forwarding).
pub(crate) struct Rtpengine {
    proc: Guarded,
    /// Its ng control socket, `127.0.0.1:port`.
    pub(crate) ng: String,
    /// The media port range it allocates from.
    pub(crate) ports: (u16, u16),
}

impl Rtpengine {
    /// Starts rtpengine in `dir` with its control socket and media ports on free loopback
    /// ports; returns once it answers an ng `ping` (panics, with its log, after 10 s).
    pub(crate) async fn start(dir: &Path) -> Rtpengine {
        let run = dir.join("rtpengine");
        std::fs::create_dir_all(&run).expect("rtpengine run dir");
        let mut failures = Vec::new();
        for attempt in 0..5 {
            let ng_port = free_udp_port();
            // A block of 40 ports above the kernel's ephemeral range (32768-60999 here), so
            // the free ports other peers are given (port 0 binds) never fall in it; rtpengine
            // binds them only per call and skips ports in use. Spread by a free port's number.
            let base = (61_000 + free_udp_port() % 4_400) & !1;
            let ports = (base, base + 40);
            let log = run.join(format!("rtpengine-{attempt}.log"));
            let file = File::create(&log).expect("rtpengine log file");
            let child = Command::new(RTPENGINE)
                .args([
                    "--config-file=none",
                    "--table=-1",
                    "--foreground",
                    "--log-stderr",
                    "--log-level=6",
                    "--delete-delay=0",
                    "--interface=127.0.0.1",
                    &format!("--listen-ng=127.0.0.1:{ng_port}"),
                    &format!("--port-min={}", ports.0),
                    &format!("--port-max={}", ports.1),
                ])
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("log file"))
                .stderr(file)
                .spawn()
                .expect("start rtpengine");
            let mut proc = Guarded {
                child,
                log,
                what: "rtpengine",
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = proc.child.try_wait() {
                    failures.push(format!(
                        "ng port {ng_port}: rtpengine exited {status}:\n{}",
                        proc.log_text()
                    ));
                    break;
                }
                if ng_ping(ng_port).await {
                    return Rtpengine {
                        proc,
                        ng: format!("127.0.0.1:{ng_port}"),
                        ports,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "rtpengine did not answer ping within 10 s:\n{}",
                    proc.log_text()
                );
                // Not listening yet (the ping was refused at once): poll, bounded above.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("rtpengine did not start: {failures:#?}");
    }

    /// Its log so far.
    pub(crate) fn log(&self) -> String {
        self.proc.log_text()
    }

    /// Whether `port` is one rtpengine allocates media on.
    pub(crate) fn owns_port(&self, port: u16) -> bool {
        (self.ports.0..=self.ports.1).contains(&port)
    }

    /// The packet counts rtpengine logged for each of its media ports when calls were deleted
    /// ("Final packet stats": `Port 127.0.0.1:P <> 127.0.0.1:Q, SSRC ..., N p, ...`): the
    /// packets it received on port P from the peer Q. Waits (bounded by `limit`) until at
    /// least `streams` ports are listed.
    pub(crate) async fn final_packet_counts(
        &self,
        streams: usize,
        limit: Duration,
    ) -> Vec<(u16, u64)> {
        let deadline = Instant::now() + limit;
        loop {
            let counts = parse_final_stats(&self.log());
            if counts.len() >= streams {
                return counts;
            }
            assert!(
                Instant::now() < deadline,
                "rtpengine logged {} final stream stats, wanted {streams}; its log:\n{}",
                counts.len(),
                self.log()
            );
            // Waiting for a log line from another process: bounded above.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The `(local port, packets)` of every `Port ... <> ..., N p,` line of rtpengine's final stats.
pub(crate) fn parse_final_stats(log: &str) -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.split("Port ").nth(1) else {
            continue;
        };
        if !rest.contains(" <> ") {
            continue;
        }
        let port = rest
            .split(" <> ")
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.trim().parse::<u16>().ok());
        let packets = rest.split(", ").find_map(|f| {
            f.strip_suffix(" p")
                .and_then(|n| n.trim().parse::<u64>().ok())
        });
        if let (Some(port), Some(packets)) = (port, packets) {
            out.push((port, packets));
        }
    }
    out
}

/// Whether rtpengine answers an ng `ping` on `port` (bencode over UDP, cookie first).
async fn ng_ping(port: u16) -> bool {
    let Ok(sock) = UdpSocket::bind((LOCALHOST, 0)).await else {
        return false;
    };
    if sock
        .send_to(b"probe1 d7:command4:pinge", (LOCALHOST, port))
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 512];
    match timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => String::from_utf8_lossy(&buf[..n]).contains("pong"),
        _ => false,
    }
}
