//! The `callplane` command line. Thin by design: parse, set up, run.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use callplane::engine::{
    CallEvent, Engine, EngineConfig, InboundConfig, OriginateRequest, Outcome,
};
use callplane::files::recover_partials;
use callplane::script::Script;
use clap::{Parser, Subcommand};
use sip::message::{Host, Uri};
use sip::transaction::Transport;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast::error::RecvError;

/// callplane: a self-hosted media-plane softswitch.
///
/// Events are printed on stdout as JSON lines; logs go to stderr (RUST_LOG sets the level).
#[derive(Debug, Parser)]
#[command(name = "callplane", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Place one call and print its timeline.
    #[command(
        after_help = "Exit codes: 0 answered and ended normally, 2 busy, 3 no answer, \
4 rejected, 5 invalid number, 6 network error, 1 anything else (cancelled, failed, bad arguments)."
    )]
    Call {
        /// Who to call: a sip: URI whose host is an IP address (no DNS yet); add
        /// `;transport=tcp` to call over TCP.
        uri: String,
        /// Our From URI.
        #[arg(long)]
        from: Option<String>,
        /// Local SIP address (port 0 picks one).
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// A call script (JSON, see docs/scripts.md) to run once answered.
        #[arg(long, conflicts_with_all = ["play", "gather"])]
        script: Option<PathBuf>,
        /// Where the script's prompt names resolve (`<dir>/<name>.wav`; default: the
        /// script's directory).
        #[arg(long, requires = "script")]
        prompts: Option<PathBuf>,
        /// A WAV prompt to play once answered.
        #[arg(long)]
        play: Option<PathBuf>,
        /// Report `gather.completed` after this many DTMF digits.
        #[arg(long, default_value_t = 0)]
        gather: usize,
        /// Record the call to this WAV file (stereo: left the callee, right us). With
        /// --script, where its `record` steps write (`<stem>-2.wav`... for later segments).
        #[arg(long)]
        record: Option<PathBuf>,
        /// Seconds to wait for an answer before CANCEL.
        #[arg(long, default_value_t = 30.0)]
        ring_timeout: f64,
        /// Send BYE this many seconds after the answer (default: wait for the callee's BYE).
        #[arg(long)]
        hangup_after: Option<f64>,
        /// DTMF digits (0-9 * # A-D) to send once answered: RFC 4733 events when the callee
        /// accepts telephone-event, in-band tones otherwise.
        #[arg(long)]
        send_dtmf: Option<String>,
        /// Seconds after the answer to send --send-dtmf.
        #[arg(long, default_value_t = 0.5, requires = "send_dtmf")]
        dtmf_after: f64,
    },
    /// Answer inbound calls until SIGINT/SIGTERM, then drain.
    Serve {
        /// SIP UDP address to listen on.
        #[arg(long, default_value = "0.0.0.0:5060")]
        sip: SocketAddr,
        /// Also listen for SIP over TCP on this address (port 0 picks one).
        #[arg(long)]
        sip_tcp: Option<SocketAddr>,
        /// The IP we put in Via, Contact and SDP, and bind RTP on (default: the --sip IP, or
        /// 127.0.0.1 when that is 0.0.0.0).
        #[arg(long)]
        advertise: Option<IpAddr>,
        /// A call script (JSON, see docs/scripts.md) to run on every call. Without one, calls
        /// are answered at once, hear nothing, and end with the caller's BYE.
        #[arg(long)]
        script: Option<PathBuf>,
        /// Where the script's prompt names resolve (`<dir>/<name>.wav`; default: the
        /// script's directory).
        #[arg(long, requires = "script")]
        prompts: Option<PathBuf>,
        /// Record calls into this directory (the whole call without a script, the script's
        /// `record` segments with one).
        #[arg(long)]
        recordings: Option<PathBuf>,
        /// Report `gather.completed` after this many DTMF digits (without a script).
        #[arg(long, default_value_t = 0, conflicts_with = "script")]
        gather: usize,
        /// The most calls at once (more get 503).
        #[arg(long, default_value_t = 100)]
        max_calls: usize,
        /// Seconds live calls get to end after SIGINT/SIGTERM before we hang them up.
        #[arg(long, default_value_t = 10.0)]
        drain_timeout: f64,
    },
}

fn main() -> ExitCode {
    // Not `Cli::parse()`: clap exits 2 on a usage error, which `call` uses for "busy".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS // --help, --version
            };
        }
    };
    // Colours only for a person at a terminal; a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Cmd::Call {
            uri,
            from,
            bind,
            script,
            prompts,
            play,
            gather,
            record,
            ring_timeout,
            hangup_after,
            send_dtmf,
            dtmf_after,
        } => {
            let to = Uri::parse(uri.as_bytes()).with_context(|| format!("bad URI {uri:?}"))?;
            let destination = ip_destination(&to)?;
            let transport = uri_transport(&to)?;
            let from = match from {
                Some(f) => {
                    Some(Uri::parse(f.as_bytes()).with_context(|| format!("bad --from {f:?}"))?)
                }
                None => None,
            };
            let bind = match bind {
                Some(b) => b,
                None => SocketAddr::new(route_ip(destination)?, 0),
            };
            let request = OriginateRequest {
                to,
                destination,
                from,
                play,
                gather_digits: gather,
                record,
                ring_timeout: seconds("--ring-timeout", ring_timeout)?,
                transport,
                send_dtmf: send_dtmf
                    .unwrap_or_default()
                    .chars()
                    .map(|c| {
                        media::dtmf::Digit::from_char(c)
                            .map_err(|e| anyhow::anyhow!("--send-dtmf: {c:?}: {e}"))
                    })
                    .collect::<anyhow::Result<_>>()?,
                dtmf_after: seconds("--dtmf-after", dtmf_after)?,
                hangup_after: hangup_after
                    .map(|s| seconds("--hangup-after", s))
                    .transpose()?,
                prompts: prompts_dir(prompts, script.as_deref()),
                script: script.as_deref().map(load_script).transpose()?,
                tag: None,
            };
            let mut config = EngineConfig::new(bind);
            if transport == Transport::Tcp {
                // Our Contact must be reachable over TCP for the callee's BYE: listen on the
                // --bind IP (same port when one was given, else any).
                config.sip_tcp = Some(bind);
            }
            call(config, request).await
        }
        Cmd::Serve {
            sip,
            sip_tcp,
            advertise,
            script,
            prompts,
            recordings,
            gather,
            max_calls,
            drain_timeout,
        } => {
            if let Some(dir) = &recordings {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("--recordings {}: cannot create", dir.display()))?;
            }
            let mut config = EngineConfig::new(sip);
            config.sip_tcp = sip_tcp;
            if let Some(ip) = advertise {
                config.advertise_ip = ip;
            }
            config.max_calls = max_calls;
            config.inbound = InboundConfig {
                prompts: prompts_dir(prompts, script.as_deref()),
                script: script.as_deref().map(load_script).transpose()?,
                recordings,
                gather_digits: gather,
            };
            serve(config, seconds("--drain-timeout", drain_timeout)?).await
        }
    }
}

/// Read and validate a script; the error names the file and the failing step.
fn load_script(path: &Path) -> anyhow::Result<Arc<Script>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--script {}: cannot read", path.display()))?;
    let script = callplane::script::parse(&text)
        .map_err(|e| anyhow::anyhow!("--script {}: {e}", path.display()))?;
    Ok(Arc::new(script))
}

/// `--prompts`, or else the script's directory.
fn prompts_dir(prompts: Option<PathBuf>, script: Option<&Path>) -> Option<PathBuf> {
    prompts.or_else(|| script.and_then(Path::parent).map(Path::to_path_buf))
}

fn seconds(flag: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .with_context(|| format!("{flag}: {s} is not a duration in seconds"))
}

/// The destination of an IP-literal sip: URI (port 5060 when none).
fn ip_destination(uri: &Uri) -> anyhow::Result<SocketAddr> {
    let Some(sip) = uri.as_sip() else {
        bail!("only sip: URIs can be called, not {}", uri.scheme());
    };
    let port = sip.port.unwrap_or(5060);
    match &sip.host {
        Host::Ipv4(ip) => Ok(SocketAddr::new(IpAddr::V4(*ip), port)),
        Host::Ipv6(text) => Ok(SocketAddr::new(
            IpAddr::V6(text.parse().context("bad IPv6 host")?),
            port,
        )),
        Host::Domain(d) => {
            bail!("host {d:?} needs DNS, which this version does not do: use an IP address")
        }
    }
}

/// The transport a URI's `transport` parameter asks for (UDP when none).
fn uri_transport(uri: &Uri) -> anyhow::Result<Transport> {
    match uri.as_sip().and_then(|s| s.transport()) {
        None => Ok(Transport::Udp),
        Some(t) if t.eq_ignore_ascii_case("udp") => Ok(Transport::Udp),
        Some(t) if t.eq_ignore_ascii_case("tcp") => Ok(Transport::Tcp),
        Some(t) => bail!("transport={t} is not supported (udp, tcp)"),
    }
}

/// The local IP the OS would use to reach `destination` (connecting a UDP socket sends nothing).
fn route_ip(destination: SocketAddr) -> anyhow::Result<IpAddr> {
    let any: SocketAddr = if destination.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(any)?;
    socket
        .connect(destination)
        .with_context(|| format!("no route to {destination}"))?;
    Ok(socket.local_addr()?.ip())
}

fn print_event(ev: &CallEvent) {
    match serde_json::to_string(ev) {
        Ok(line) => println!("{line}"),
        Err(e) => tracing::error!(error = %e, "event not printable"),
    }
}

async fn call(config: EngineConfig, request: OriginateRequest) -> anyhow::Result<u8> {
    // Signals are caught before the INVITE leaves: from then on, SIGINT/SIGTERM hang the call
    // up properly (CANCEL while ringing, BYE once answered) instead of killing the process
    // and leaving the callee ringing or the session open. The exit code is the outcome's.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let engine = Engine::start(config).await?;
    let handle = engine.handle.clone();
    let mut events = handle.subscribe();
    let id = handle.originate(request).await?;
    let code = loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) if ev.call_id == id => {
                    print_event(&ev);
                    if ev.is_final() {
                        let outcome: Option<Outcome> =
                            serde_json::from_value(ev.details["outcome"].clone()).ok();
                        break outcome.map_or(1, |o| o.exit_code() as u8);
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "events lost"),
                Err(RecvError::Closed) => break 1,
            },
            _ = sigint.recv() => handle.hangup(id).await?,
            _ = sigterm.recv() => handle.hangup(id).await?,
        }
    };
    handle.shutdown().await?;
    engine.join().await;
    Ok(code)
}

async fn serve(config: EngineConfig, drain: Duration) -> anyhow::Result<u8> {
    // Recordings a crash (kill -9, power loss) left as `.wav.part` become playable `.wav`s
    // now, before any call can start a writer in that directory.
    if let Some(dir) = config.inbound.recordings.clone() {
        let results = tokio::task::spawn_blocking(move || recover_partials(dir)).await?;
        for r in results {
            let line = match r {
                Ok(done) => serde_json::json!({
                    "kind": "recording.recovered",
                    "path": done.path.display().to_string(),
                    "duration_ms": done.duration.as_millis() as u64,
                    "sha256": done.sha256,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "recording not recovered");
                    serde_json::json!({"kind": "recording.recovery_failed", "error": e.to_string()})
                }
            };
            println!("{line}");
        }
    }
    let engine = Engine::start(config).await?;
    let handle = engine.handle.clone();
    tracing::info!(sip = %handle.sip_local_addr(), "serving");
    // One line before any call event, so a supervisor (or a test) knows the port is open.
    println!(
        "{}",
        serde_json::json!({
            "kind": "serve.listening",
            "sip": handle.sip_local_addr().to_string(),
            "sip_tcp": handle.sip_local_tcp_addr().map(|a| a.to_string()),
        })
    );
    let mut events = handle.subscribe();
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => print_event(&ev),
                Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "events lost"),
                Err(RecvError::Closed) => return Ok(1),
            },
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    tracing::info!(grace = ?drain, "draining");
    println!("{}", serde_json::json!({"kind": "serve.draining"}));
    let drained = handle.drain(drain);
    tokio::pin!(drained);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => print_event(&ev),
                Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "events lost"),
                Err(RecvError::Closed) => break,
            },
            r = &mut drained => { r?; break; }
        }
    }
    // The last calls' final events were sent before they reported their end.
    while let Ok(ev) = events.try_recv() {
        print_event(&ev);
    }
    handle.shutdown().await?;
    engine.join().await;
    tracing::info!("stopped");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_transport_parameter_picks_udp_or_tcp_and_rejects_others() {
        let t = |s: &str| uri_transport(&Uri::parse(s.as_bytes()).expect("uri"));
        assert_eq!(t("sip:a@127.0.0.1:5060").expect("udp"), Transport::Udp);
        assert_eq!(
            t("sip:a@127.0.0.1:5060;transport=TCP").expect("tcp"),
            Transport::Tcp
        );
        assert_eq!(
            t("sip:a@127.0.0.1;transport=udp").expect("udp"),
            Transport::Udp
        );
        assert!(t("sip:a@127.0.0.1;transport=sctp").is_err());
    }
}
