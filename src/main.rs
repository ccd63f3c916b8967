//! The `callplane` command line. Thin by design: parse, set up, run.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use callplane::app::{self, ServeConfig};
use callplane::engine::{Engine, EngineConfig, InboundConfig, OriginateRequest, Outcome};
use callplane::events::outbox::OutboxConfig;
use callplane::script::Script;
use callplane::store::Role;
use clap::{Parser, Subcommand};
use sip::message::Uri;
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
        /// Who to call: a sip: URI; add `;transport=tcp` to call over TCP. A host that is a
        /// name is resolved as RFC 3263 says (NAPTR, SRV, A/AAAA), and the call fails over
        /// across the targets found.
        uri: String,
        /// The name server for DNS lookups (ip:port); default: those of /etc/resolv.conf.
        #[arg(long, env = "CALLPLANE_DNS_SERVER")]
        dns_server: Option<SocketAddr>,
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
        /// Over TLS: the name the callee's certificate must carry (and the SNI sent); default:
        /// the URI's host.
        #[arg(long)]
        tls_server_name: Option<String>,
        #[command(flatten)]
        tls: TlsArgs,
        /// SRTP (SDES, RFC 4568): `off` offers RTP/AVP, `offer` RTP/SAVP and accepts a plain
        /// answer, `require` RTP/SAVP and ends the call on a plain answer.
        #[arg(long, default_value = "off", value_parser = parse_srtp_mode)]
        srtp: callplane::trunk::SrtpMode,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Run the softswitch: SIP, the REST API and the store, until SIGINT/SIGTERM, then drain.
    ///
    /// With no arguments: SIP on 0.0.0.0:5060, the API on 127.0.0.1:8080, SQLite in
    /// ./callplane-data. The first start on an empty database prints the owner key of a default
    /// tenant (once).
    Serve {
        /// The data directory: the SQLite database, recordings, prompts.
        #[arg(long, default_value = "callplane-data")]
        data_dir: PathBuf,
        /// A PostgreSQL URL (postgres://user:password@host/db) instead of the embedded SQLite.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Where the REST API listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        api: SocketAddr,
        /// Webhook delivery attempts before a delivery is dead-lettered.
        #[arg(long, default_value_t = 10)]
        webhook_max_attempts: u32,
        /// The first webhook retry delay in milliseconds (doubling, with jitter, up to 10 min).
        #[arg(long, default_value_t = 1000)]
        webhook_retry_base_ms: u64,
        /// Seconds a webhook receiver gets to answer one delivery.
        #[arg(long, default_value_t = 10)]
        webhook_timeout_s: u64,
        /// Seconds a claimed delivery is reserved for its sender (longer than
        /// --webhook-timeout-s). A delivery in flight when the process was killed is sent
        /// again when its reservation ends.
        #[arg(long, default_value_t = 60)]
        webhook_lease_s: u64,
        /// Let webhooks reach this address range although it is internal (loopback, private,
        /// link-local...), e.g. 10.1.0.0/16 for receivers inside a private deployment.
        /// Repeatable. Without it such targets are refused when stored and at connect time.
        #[arg(long = "webhook-allow-cidr", value_name = "CIDR")]
        webhook_allow_cidr: Vec<callplane::net::egress::Cidr>,
        /// The largest API request body in bytes (413 above).
        #[arg(long, default_value_t = 1 << 20)]
        max_body_bytes: usize,
        /// API requests per second per key (429 above; 0: unlimited).
        #[arg(long, default_value_t = 50)]
        rate_limit: u32,
        /// Serve the dashboard's pages from this directory (src/dashboard/assets) instead of the
        /// copies built into the binary: for working on them without rebuilding.
        #[arg(long, value_name = "DIR")]
        dashboard_dir: Option<PathBuf>,
        /// SIP UDP address to listen on.
        #[arg(long, default_value = "0.0.0.0:5060")]
        sip: SocketAddr,
        /// Also listen for SIP over TCP on this address (port 0 picks one).
        #[arg(long)]
        sip_tcp: Option<SocketAddr>,
        #[command(flatten)]
        tls: TlsArgs,
        /// The IP we put in Via, Contact and SDP, and bind RTP on (default: the --sip IP, or
        /// 127.0.0.1 when that is 0.0.0.0).
        #[arg(long)]
        advertise: Option<IpAddr>,
        /// The name server for RFC 3263 lookups of calls to a domain (ip:port); default:
        /// those of /etc/resolv.conf.
        #[arg(long, env = "CALLPLANE_DNS_SERVER")]
        dns_server: Option<SocketAddr>,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        protect: ProtectArgs,
        /// Media worker threads that run every call's RTP (batched socket reads, one shared
        /// tick; at least 1); default: one per core.
        #[arg(long)]
        media_workers: Option<usize>,
        /// Run the media workers at real-time priority (SCHED_FIFO, 1-99), so that the node's
        /// other threads cannot delay its packets; needs root or CAP_SYS_NICE (else a warning
        /// and normal priority). Default: normal priority.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=99))]
        media_priority: Option<u8>,
        /// A call script (JSON, see docs/scripts.md) to run on every call. Without one, calls
        /// are answered at once, hear nothing, and end with the caller's BYE.
        #[arg(long)]
        script: Option<PathBuf>,
        /// Where the script's prompt names resolve (`<dir>/<name>.wav`; default: the
        /// script's directory).
        #[arg(long, requires = "script")]
        prompts: Option<PathBuf>,
        /// Record inbound calls into this directory (the whole call without a script, the
        /// script's `record` segments with one); default: `<data-dir>/recordings`.
        #[arg(long)]
        recordings: Option<PathBuf>,
        /// Report `gather.completed` after this many DTMF digits (without a script).
        #[arg(long, default_value_t = 0, conflicts_with = "script")]
        gather: usize,
        /// The most calls at once (more get 503).
        #[arg(long, default_value_t = 100)]
        max_calls: usize,
        /// Seconds live calls get to end after SIGINT/SIGTERM before we hang them up (a call the
        /// hangup does not end within 1 s more is torn down; the drain ends at most 2 s later).
        #[arg(long, default_value_t = 10.0)]
        drain_timeout: f64,
        /// Capacity of the engine-to-store event queue (events). Calls wait for room when it is
        /// full and never lose an event; from half full on, new calls are refused (503 to an
        /// INVITE, 503 `store_backlog` in the API) until the store catches up.
        #[arg(long, default_value_t = 65536)]
        event_queue: usize,
        /// The most campaign calls live at once on this node (0: `--max-calls`). Campaign and
        /// tenant limits hold across nodes on top of this.
        #[arg(long, default_value_t = 0)]
        campaign_max_calls: u32,
        /// Seconds a node's lease on a contact it dials lasts without renewal (renewed every
        /// third of it): after a crash, its contacts return to the queue this long after.
        #[arg(long, default_value_t = 30)]
        campaign_lease_s: u64,
        /// What happens to an INVITE from an address no trunk lists (its `allowed_sources` or
        /// hosts): `allow` (the default inbound handling), `refuse` (403), `drop` (no answer),
        /// or `auto`: allow while no trunk declares where its calls come from
        /// (`allowed_sources` or `register`), refuse once one does. docs/trunks.md.
        #[arg(long, default_value = "auto", value_parser = ["auto", "allow", "refuse", "drop"])]
        unknown_sources: String,
    },
    /// A survey campaign end to end on loopback, with no set-up: starts the softswitch (as
    /// `serve`, on a new data directory) and a built-in answerer (callees who answer and press
    /// keys, opt out, stay silent, are busy or never answer), runs a campaign through the API
    /// with a live progress line, and prints the outcomes, the survey answers and where the
    /// recordings are.
    #[command(
        after_help = "Exit codes: 0 every contact reached a final state in time, 1 otherwise."
    )]
    Demo {
        /// Contacts in the campaign (1 to 1000).
        #[arg(long, default_value_t = 50)]
        contacts: usize,
        /// The campaign's live calls at most.
        #[arg(long, default_value_t = 10)]
        max_concurrent: u32,
        /// The campaign's new calls per second at most.
        #[arg(long, default_value_t = 10.0)]
        max_cps: f64,
        /// Give up (cancel the campaign, report, exit 1) after this many seconds.
        #[arg(long, default_value_t = 180)]
        timeout_s: u64,
        /// Where the database, prompts and recordings go (default: a new directory under the
        /// system's temp directory). Kept at the end.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Also print the summary as one JSON line at the end.
        #[arg(long)]
        json: bool,
    },
    /// Probe a SIP trunk (a sip: URI): OPTIONS, REGISTER, INVITE, 100rel, session timer,
    /// hold, DTMF, codecs, SRTP, each with its SIP ladder, and a pass/fail table. With an
    /// http(s):// URL instead: GET it and exit 0 on a 2xx answer, 1 otherwise (the Docker
    /// health check: the image has no curl).
    #[command(
        after_help = "Exit codes: 0 every required step passed (or the URL answered 2xx), 1 otherwise. \
Required: options; register with --register; invite with --number; each --codec; srtp with \
--srtp require; any step named by --require (or --require all)."
    )]
    Probe {
        /// The trunk as a sip: URI whose host is an IP address (`sip:192.0.2.7:5060`, add
        /// `;transport=tcp` for TCP), or an http(s):// URL for the health check
        /// (http://127.0.0.1:8080/readyz).
        target: String,
        /// The test number the INVITE steps call (without it they are skipped).
        #[arg(long)]
        number: Option<String>,
        /// Digest user name (REGISTER, and the From user).
        #[arg(long)]
        username: Option<String>,
        /// Digest password (or the CALLPLANE_PROBE_PASSWORD environment variable).
        #[arg(long, env = "CALLPLANE_PROBE_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Register (and unregister at the end); the register step is then required.
        #[arg(long)]
        register: bool,
        /// The registration's Expires, seconds.
        #[arg(long, default_value_t = 300)]
        register_expires_s: u32,
        /// A codec the trunk is configured with (PCMU, PCMA, G722; repeatable): each gets an
        /// INVITE offering only it, and must be answered.
        #[arg(long = "codec", value_name = "CODEC")]
        codecs: Vec<String>,
        /// The trunk's SRTP setting: off (the srtp step is skipped), offer (tried, not
        /// required) or require.
        #[arg(long, default_value = "off")]
        srtp: String,
        /// The digits the DTMF steps send.
        #[arg(long, default_value = "1#")]
        dtmf: String,
        /// Make a step required although the configuration does not imply it (hold, unhold,
        /// session-timer, 100rel-required, 100rel-off, dtmf-rfc4733, dtmf-info, dtmf-inband;
        /// `all` for every step). Repeatable.
        #[arg(long = "require", value_name = "STEP")]
        require: Vec<String>,
        /// Seconds an INVITE may ring before CANCEL.
        #[arg(long, default_value_t = 15.0)]
        ring_timeout: f64,
        /// Seconds a re-INVITE, refresh or hangup may take.
        #[arg(long, default_value_t = 8.0)]
        step_timeout: f64,
        /// Local SIP address (default: the route's IP toward the trunk, any port).
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Print the report as one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Place load on a SIP peer and measure every call: setup latency, status mix, RTP loss,
    /// jitter, reordering, MOS per direction, one-way and silent calls, DTMF round trips, and
    /// the generator's own schedule lateness (a run that fell behind is marked invalid).
    #[command(
        after_help = "Exit codes: 0 passed, 1 error, 3 a threshold failed, 4 the run is \
invalid (the generator fell behind its schedule or failed to send).\n\
Durations take a unit: 200ms, 30s, 2m (a bare number is seconds)."
    )]
    Loadgen {
        /// The callee: a sip: URI whose host is an IP address (`sip:load@127.0.0.1:5080`, add
        /// `;transport=tcp` for TCP). Not with --answer.
        #[arg(required_unless_present = "answer", conflicts_with = "answer")]
        uri: Option<String>,
        /// Be the callee instead: answer calls with a mix of behaviours (human, voicemail,
        /// silence, sit, echo, early_media, no_answer, busy, reject, forbidden, not_found) until
        /// --calls calls
        /// ended, --duration passed or Ctrl-C; a JSON line with the SIP address first, the
        /// report at the end.
        #[arg(long)]
        answer: bool,
        /// --answer: where SIP listens (UDP; TCP too with --tcp).
        #[arg(long, default_value = "127.0.0.1:5080")]
        listen: SocketAddr,
        /// --answer: listen on TCP as well.
        #[arg(long)]
        tcp: bool,
        /// --answer: a behaviour for dialed numbers matching a pattern (`*` any run, `?` any
        /// one character), e.g. `1555*=busy`; repeatable, the first match wins.
        #[arg(long = "route", value_name = "PATTERN=BEHAVIOUR")]
        routes: Vec<String>,
        /// --answer: weights of the behaviours for other numbers, e.g.
        /// `human=60,voicemail=20,busy=10,no_answer=10`.
        #[arg(long, default_value = "human=1")]
        mix: String,
        /// --answer: the seed of the mix's draws.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// --answer: the keys a `human` presses after its hello (empty: none).
        #[arg(long, default_value = "1")]
        human_digits: String,
        /// --answer: the carrier silence of `silence` before its hello.
        #[arg(long, value_parser = parse_duration, default_value = "3s")]
        silence: Duration,
        /// --answer: a directory with hello.wav, greeting.wav, beep.wav and sit.wav (default:
        /// generated). With --script: where its prompt names resolve (default: its directory).
        #[arg(long)]
        prompts: Option<PathBuf>,
        /// A call script (JSON, docs/scripts.md) run on every answered call: its steps (play,
        /// pause, send_dtmf, gather, record, branch, hangup) are each call's step list. Not with
        /// --play or --send-dtmf; --hold still ends a call its script has not hung up.
        #[arg(long, conflicts_with_all = ["answer", "play", "send_dtmf"])]
        script: Option<PathBuf>,
        /// --answer: the most calls at once.
        #[arg(long, default_value_t = 1000)]
        max_calls: usize,
        /// Stop starting calls after this many.
        #[arg(long)]
        calls: Option<u64>,
        /// Stop starting calls after this long.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Calls up at once, at most.
        #[arg(long, default_value_t = 10)]
        concurrency: usize,
        /// Calls started per second (after the ramp).
        #[arg(long, default_value_t = 10.0)]
        cps: f64,
        /// The rate grows from 0 to --cps over this long.
        #[arg(long, value_parser = parse_duration, default_value = "0s")]
        ramp: Duration,
        /// BYE this long after the answer.
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        hold: Duration,
        /// CANCEL a call with no final response after this long.
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        ring_timeout: Duration,
        /// A WAV to play to each callee once answered (default: silence).
        #[arg(long)]
        play: Option<PathBuf>,
        /// DTMF digits to send once answered (RFC 4733, or in-band without telephone-event).
        #[arg(long)]
        send_dtmf: Option<String>,
        /// How long after the answer the digits go.
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        dtmf_after: Duration,
        /// Digits every answered call must get back from the far end (the DTMF round trip:
        /// a script that says back what it gathered).
        #[arg(long)]
        expect_dtmf: Option<String>,
        /// The prompt every answered call must hear (a WAV): each call is recorded and the
        /// callee's channel matched against it by normalised cross-correlation.
        #[arg(long)]
        expect_prompt: Option<PathBuf>,
        /// The least correlation that passes the prompt check (0–1).
        #[arg(long, default_value_t = 0.7)]
        prompt_min_score: f64,
        /// Record every call (stereo WAV, left: the callee) into this directory and keep them.
        #[arg(long)]
        recordings: Option<PathBuf>,
        /// Local SIP address (repeatable: one SIP socket and its own RTP ports each).
        /// Default: the route's IP toward the callee, any port.
        #[arg(long = "local", value_name = "ADDR")]
        local: Vec<SocketAddr>,
        /// Our From URI (with --trunk: the caller id, a user part or URI; default: the trunk's
        /// pool or from_user).
        #[arg(long)]
        from: Option<String>,
        /// Call through a trunk (JSON: a trunk's settings as docs/trunks.md gives them, the
        /// password included): the argument is then the number to dial, and each call goes
        /// through the trunk's hosts with its credentials, outbound proxy, caller id, headers
        /// and failover, as serve's calls through a trunk do (no registration).
        #[arg(long, conflicts_with = "answer")]
        trunk: Option<PathBuf>,
        /// The name server for a --trunk's host names (ip:port); default: /etc/resolv.conf's.
        #[arg(long, env = "CALLPLANE_DNS_SERVER")]
        dns_server: Option<SocketAddr>,
        /// Media worker threads.
        #[arg(long, default_value_t = 1)]
        media_workers: usize,
        /// The media workers' real-time priority (SCHED_FIFO, 1-99; 0: normal priority). On a
        /// busy core the generator's own threads otherwise delay its packets; without root or
        /// CAP_SYS_NICE it runs at normal priority and the report says so.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=99))]
        media_priority: u8,
        /// RTP ports for the calls (split between the --local addresses).
        #[arg(long, value_parser = parse_port_range, default_value = "30000-39999")]
        rtp_ports: std::ops::RangeInclusive<u16>,
        /// A run whose send lateness p99 passes this is invalid.
        #[arg(long, value_parser = parse_duration, default_value = "2ms")]
        max_lateness: Duration,
        /// Fail when inbound network loss passes this, %.
        #[arg(long)]
        max_loss: Option<f64>,
        /// Fail when the mean MOS (the worse direction where both are known) is below this.
        #[arg(long)]
        min_mos: Option<f64>,
        /// Fail when INVITE → 200 OK p99 passes this.
        #[arg(long, value_parser = parse_duration)]
        max_setup_p99: Option<Duration>,
        /// Fail when fewer than this % of calls are answered.
        #[arg(long)]
        min_answer_rate: Option<f64>,
        /// Write the report as JSON here (`-`: stdout instead of the Markdown).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the report as Markdown here (it is printed to stdout anyway).
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Write one CSV row per call here.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Write the run second by second (started, answered, ended, failed, up) as CSV here.
        #[arg(long)]
        timeseries: Option<PathBuf>,
        /// Progress line every second on stderr: auto (when it is a terminal), always, never.
        #[arg(long, default_value = "auto")]
        progress: String,
    },
    /// Administer the store: tenants and keys (prints a new key once).
    Admin {
        #[command(subcommand)]
        command: AdminCmd,
        /// The data directory of the embedded SQLite database.
        #[arg(long, default_value = "callplane-data", global = true)]
        data_dir: PathBuf,
        /// A PostgreSQL URL instead of the embedded SQLite.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
        database_url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCmd {
    /// Create a tenant and print its id and owner key.
    CreateTenant {
        /// The tenant's name (unique).
        name: String,
    },
    /// Create an API key for a tenant and print it.
    CreateKey {
        /// The tenant id (`ten_…`).
        #[arg(long)]
        tenant: String,
        /// owner, admin, operator, analyst or viewer.
        #[arg(long)]
        role: String,
        /// A label for the key.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List the tenants.
    ListTenants,
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
    // The demo draws a progress line: only warnings interleave with it unless RUST_LOG asks.
    let default_level = if matches!(cli.command, Cmd::Demo { .. } | Cmd::Loadgen { .. }) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
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

/// `--srtp off|offer|require`.
fn parse_srtp_mode(s: &str) -> Result<callplane::trunk::SrtpMode, String> {
    match s {
        "off" => Ok(callplane::trunk::SrtpMode::Off),
        "offer" => Ok(callplane::trunk::SrtpMode::Offer),
        "require" => Ok(callplane::trunk::SrtpMode::Require),
        _ => Err(format!("{s:?}: expected off, offer or require")),
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Cmd::Call {
            uri,
            dns_server,
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
            tls_server_name,
            tls,
            srtp,
            limits,
        } => {
            let to = Uri::parse(uri.as_bytes()).with_context(|| format!("bad URI {uri:?}"))?;
            let (destination, transport, alternates) = match callplane::engine::target::resolve(&to)
            {
                Err(callplane::engine::target::TargetError::NeedsDns(_)) => {
                    callplane::engine::target::check_routing(&to)?;
                    let dns =
                        callplane::net::dns::Resolver::new(&callplane::net::dns::DnsConfig {
                            server: dns_server,
                            transports: vec![Transport::Udp, Transport::Tcp],
                        })?;
                    let targets = dns.resolve_uri(&to).await?;
                    let v4 = bind.is_none_or(|b| b.is_ipv4());
                    let routes = callplane::engine::target::routes(&to, &targets, v4)
                        .context("DNS found no target")?;
                    (routes.destination, routes.transport, routes.alternates)
                }
                other => {
                    let (destination, transport) = other?;
                    (destination, transport, Vec::new())
                }
            };
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
            let any_tcp = transport == Transport::Tcp
                || alternates.iter().any(|a| a.transport == Transport::Tcp);
            let request = OriginateRequest {
                sip: callplane::engine::SipOptions {
                    tls_server_name,
                    srtp,
                    ..Default::default()
                },
                alternates,
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
                // The local operator's script: its prompts may be any readable file.
                prompt_scope: callplane::engine::PromptScope::Local,
                script: script.as_deref().map(load_script).transpose()?,
                tag: None,
                variables: Default::default(),
                max_duration: None,
            };
            let mut config = EngineConfig::new(bind);
            config.limits = limits.limits()?;
            // One call: one worker is plenty.
            config.media_workers = 1;
            if any_tcp {
                // Our Contact must be reachable over TCP for the callee's BYE: listen on the
                // --bind IP (same port when one was given, else any).
                config.sip_tcp = Some(bind);
            }
            (config.sip_tls, config.tls) = tls.context(transport == Transport::Tls)?;
            call(config, request).await
        }
        Cmd::Loadgen {
            answer: true,
            listen,
            tcp,
            routes,
            mix,
            seed,
            human_digits,
            silence,
            prompts,
            max_calls,
            calls,
            duration,
            recordings,
            media_workers,
            media_priority,
            rtp_ports,
            json,
            markdown,
            ..
        } => {
            parse_digits("--human-digits", &human_digits)?;
            let config = callplane::loadgen::answer::AnswerConfig {
                listen,
                tcp,
                routes: routes
                    .iter()
                    .map(|r| callplane::loadgen::answer::parse_route(r))
                    .collect::<Result<_, _>>()
                    .map_err(|e| anyhow::anyhow!("--route: {e}"))?,
                mix: callplane::loadgen::answer::parse_mix(&mix)
                    .map_err(|e| anyhow::anyhow!("--mix: {e}"))?,
                seed,
                human_digits,
                silence,
                prompts,
                recordings,
                calls,
                duration,
                max_calls: max_calls.max(1),
                media_workers: media_workers.max(1),
                media_priority: (media_priority > 0).then_some(media_priority),
                rtp_ports,
            };
            let report = callplane::loadgen::answer::run_answer(config, |sip| {
                println!(
                    "{}",
                    serde_json::json!({"kind": "loadgen.listening", "sip": sip.to_string()})
                );
            })
            .await?;
            emit_report(
                &report.markdown(),
                &serde_json::to_string_pretty(&report)?,
                json.as_deref(),
                markdown.as_deref(),
            )?;
            Ok(0)
        }
        Cmd::Loadgen {
            uri,
            trunk,
            dns_server,
            script,
            prompts,
            calls,
            duration,
            concurrency,
            cps,
            ramp,
            hold,
            ring_timeout,
            play,
            send_dtmf,
            dtmf_after,
            expect_dtmf,
            expect_prompt,
            prompt_min_score,
            recordings,
            local,
            from,
            media_workers,
            media_priority,
            rtp_ports,
            max_lateness,
            max_loss,
            min_mos,
            max_setup_p99,
            min_answer_rate,
            json,
            markdown,
            csv,
            timeseries,
            progress,
            ..
        } => {
            let uri = uri.context("a callee URI (or --answer)")?;
            let trunk = match trunk {
                Some(file) => Some(load_trunk(&file, &uri, from.clone(), dns_server)?),
                None => None,
            };
            let (target, destination, transport) = match &trunk {
                // The first call's plan names where the calls go (each call plans its own).
                Some(t) => {
                    let first = t
                        .dial(0)
                        .await
                        .with_context(|| format!("--trunk {}", t.file.display()))?;
                    (first.to, first.destination, first.transport)
                }
                None => {
                    let target =
                        Uri::parse(uri.as_bytes()).with_context(|| format!("bad URI {uri:?}"))?;
                    let (destination, transport) = callplane::engine::target::resolve(&target)?;
                    (target, destination, transport)
                }
            };
            anyhow::ensure!(
                matches!(transport, Transport::Udp | Transport::Tcp),
                "loadgen runs over UDP or TCP"
            );
            let local = if local.is_empty() {
                vec![SocketAddr::new(route_ip(destination)?, 0)]
            } else {
                local
            };
            let progress = match progress.as_str() {
                "always" => true,
                "never" => false,
                "auto" => std::io::IsTerminal::is_terminal(&std::io::stderr()),
                other => anyhow::bail!("--progress {other:?}: expected auto, always or never"),
            };
            let config = callplane::loadgen::LoadConfig {
                target,
                destination,
                transport,
                local,
                from: from
                    .map(|f| Uri::parse(f.as_bytes()).with_context(|| format!("bad --from {f:?}")))
                    .transpose()?,
                calls,
                duration,
                concurrency,
                cps,
                ramp,
                hold,
                ring_timeout,
                play,
                prompts: prompts_dir(prompts, script.as_deref()),
                script: script
                    .as_deref()
                    .map(|p| anyhow::Ok((load_script(p)?, p.to_path_buf())))
                    .transpose()?,
                send_dtmf: parse_digits("--send-dtmf", send_dtmf.as_deref().unwrap_or(""))?,
                dtmf_after,
                expect_dtmf: expect_dtmf
                    .map(|d| {
                        parse_digits("--expect-dtmf", &d)?;
                        anyhow::Ok(d)
                    })
                    .transpose()?,
                expect_prompt,
                prompt_min_score,
                recordings,
                media_workers: media_workers.max(1),
                media_priority: (media_priority > 0).then_some(media_priority),
                rtp_ports,
                max_lateness,
                trunk,
                thresholds: callplane::loadgen::report::Thresholds {
                    max_loss_percent: max_loss,
                    min_mos,
                    max_setup_p99_ms: max_setup_p99.map(|d| d.as_secs_f64() * 1000.0),
                    min_answer_rate,
                },
                progress,
            };
            let (report, rows) = callplane::loadgen::run(config).await?;
            emit_report(
                &report.markdown(),
                &serde_json::to_string_pretty(&report)?,
                json.as_deref(),
                markdown.as_deref(),
            )?;
            if let Some(p) = csv {
                write_file(&p, &callplane::loadgen::report::csv(&rows))?;
            }
            if let Some(p) = timeseries {
                let series = callplane::loadgen::report::time_series(&rows);
                let mut out = String::from("t,started,answered,ended,failed,active\n");
                for s in series {
                    out.push_str(&format!(
                        "{},{},{},{},{},{}\n",
                        s.t, s.started, s.answered, s.ended, s.failed, s.active
                    ));
                }
                write_file(&p, &out)?;
            }
            Ok(if !report.generator.valid {
                4
            } else if !report.passed {
                3
            } else {
                0
            })
        }
        Cmd::Probe {
            target,
            number,
            username,
            password,
            register,
            register_expires_s,
            codecs,
            srtp,
            dtmf,
            require,
            ring_timeout,
            step_timeout,
            bind,
            json,
        } => {
            let lower = target.to_ascii_lowercase();
            if lower.starts_with("http://") || lower.starts_with("https://") {
                return Ok(app::probe(&target).await);
            }
            if !(lower.starts_with("sip:") || lower.starts_with("sips:")) {
                bail!(
                    "{target:?}: probing a trunk by id needs the trunk store, which this build \
                     lacks; give the trunk as a sip: URI (with --username/--password)"
                );
            }
            let uri =
                Uri::parse(target.as_bytes()).with_context(|| format!("bad URI {target:?}"))?;
            let (destination, transport) = callplane::engine::target::resolve(&uri)?;
            let bind = match bind {
                Some(b) => b,
                None => SocketAddr::new(route_ip(destination)?, 0),
            };
            let credentials = match (username, password) {
                (Some(u), Some(p)) => Some(sip::auth::Credentials::new(u, p)),
                (Some(u), None) => Some(sip::auth::Credentials::new(u, "")),
                (None, Some(_)) => bail!("--password needs --username"),
                (None, None) => None,
            };
            let codecs = codecs
                .iter()
                .map(|c| match c.to_ascii_uppercase().as_str() {
                    "PCMU" => Ok(media::sdp::AudioCodec::Pcmu),
                    "PCMA" => Ok(media::sdp::AudioCodec::Pcma),
                    "G722" => Ok(media::sdp::AudioCodec::G722),
                    _ => Err(anyhow::anyhow!("--codec {c:?}: one of PCMU, PCMA, G722")),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let srtp = match srtp.as_str() {
                "off" => callplane::trunk::SrtpMode::Off,
                "offer" => callplane::trunk::SrtpMode::Offer,
                "require" => callplane::trunk::SrtpMode::Require,
                other => bail!("--srtp {other:?}: one of off, offer, require"),
            };
            let dtmf = dtmf
                .chars()
                .map(|c| {
                    media::dtmf::Digit::from_char(c)
                        .map_err(|e| anyhow::anyhow!("--dtmf: {c:?}: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if dtmf.is_empty() || dtmf.len() > 16 {
                bail!("--dtmf: 1 to 16 digits");
            }
            let config = callplane::probe::ProbeConfig {
                target: uri,
                destination,
                transport,
                bind,
                credentials,
                register,
                register_expires_s,
                number,
                codecs,
                srtp,
                dtmf,
                require,
                ring_timeout: seconds("--ring-timeout", ring_timeout)?,
                step_timeout: seconds("--step-timeout", step_timeout)?,
            };
            let report = callplane::probe::run(config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", callplane::probe::render_text(&report));
            }
            Ok(if report.passed { 0 } else { 1 })
        }
        Cmd::Demo {
            contacts,
            max_concurrent,
            max_cps,
            timeout_s,
            data_dir,
            json,
        } => {
            use std::io::IsTerminal as _;
            let config = callplane::demo::DemoConfig {
                contacts,
                max_concurrent,
                max_cps,
                deadline: Duration::from_secs(timeout_s),
                data_dir,
                tty: std::io::stdout().is_terminal(),
            };
            let summary = callplane::demo::run(config, json).await?;
            Ok(if summary.ok { 0 } else { 1 })
        }
        Cmd::Admin {
            command,
            data_dir,
            database_url,
        } => admin(command, &data_dir, database_url.as_deref()).await,
        Cmd::Serve {
            data_dir,
            database_url,
            api,
            webhook_max_attempts,
            webhook_retry_base_ms,
            webhook_timeout_s,
            webhook_lease_s,
            webhook_allow_cidr,
            max_body_bytes,
            rate_limit,
            dashboard_dir,
            sip,
            sip_tcp,
            tls,
            advertise,
            dns_server,
            limits,
            protect,
            media_workers,
            media_priority,
            script,
            prompts,
            recordings,
            gather,
            max_calls,
            drain_timeout,
            event_queue,
            campaign_max_calls,
            campaign_lease_s,
            unknown_sources,
        } => {
            if let Some(dir) = &recordings {
                callplane::files::ensure_dir(dir)
                    .with_context(|| format!("--recordings {}: cannot create", dir.display()))?;
            }
            let mut config = EngineConfig::new(sip);
            config.sip_tcp = sip_tcp;
            (config.sip_tls, config.tls) = tls.context(true)?;
            if let Some(ip) = advertise {
                config.advertise_ip = ip;
            }
            config.max_calls = max_calls;
            config.limits = limits.limits()?;
            config.protection = protect.protection()?;
            if let Some(n) = media_workers {
                if !(1..=256).contains(&n) {
                    bail!("--media-workers {n}: 1 to 256");
                }
                config.media_workers = n;
            }
            config.media_priority = media_priority;
            config.inbound = InboundConfig {
                prompts: prompts_dir(prompts, script.as_deref()),
                script: script.as_deref().map(load_script).transpose()?,
                recordings,
                gather_digits: gather,
                ..InboundConfig::default()
            };
            if webhook_lease_s <= webhook_timeout_s {
                bail!(
                    "--webhook-lease-s ({webhook_lease_s}) must be longer than \
                     --webhook-timeout-s ({webhook_timeout_s}): a slow delivery would be sent twice at once"
                );
            }
            let outbox = OutboxConfig {
                max_attempts: webhook_max_attempts.max(1),
                retry_base: Duration::from_millis(webhook_retry_base_ms),
                request_timeout: Duration::from_secs(webhook_timeout_s.max(1)),
                lease: Duration::from_secs(webhook_lease_s),
                egress: Arc::new(callplane::net::egress::EgressPolicy::new(
                    webhook_allow_cidr,
                )),
                ..OutboxConfig::default()
            };
            if event_queue < callplane::engine::sink::MIN_EVENT_QUEUE {
                bail!(
                    "--event-queue ({event_queue}) must be at least {}: new calls are refused \
                     at half of it",
                    callplane::engine::sink::MIN_EVENT_QUEUE
                );
            }
            if !(2..=3600).contains(&campaign_lease_s) {
                bail!("--campaign-lease-s ({campaign_lease_s}) must be 2 to 3600 seconds");
            }
            let campaign_max_calls = match campaign_max_calls {
                0 => u32::try_from(max_calls).unwrap_or(u32::MAX),
                n => n,
            };
            let serve_config = ServeConfig {
                campaign_max_calls,
                campaign_lease: Duration::from_secs(campaign_lease_s),
                dns_server,
                data_dir,
                database_url,
                api,
                engine: config,
                outbox,
                max_body_bytes,
                dashboard_dir,
                rate_limit_per_s: rate_limit,
                rate_limit_burst: rate_limit.saturating_mul(2),
                event_queue,
                unknown_sources: callplane::trunk::route::UnknownSources::parse(&unknown_sources)
                    .context("--unknown-sources: auto, allow, refuse or drop")?,
            };
            app::serve(serve_config, seconds("--drain-timeout", drain_timeout)?).await
        }
    }
}

/// Reads and checks a trunk for `loadgen --trunk` (its settings as the API takes them).
fn load_trunk(
    file: &Path,
    number: &str,
    caller_id: Option<String>,
    dns_server: Option<SocketAddr>,
) -> anyhow::Result<callplane::loadgen::TrunkTarget> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--trunk {}: cannot read", file.display()))?;
    let settings: callplane::trunk::TrunkSettings = serde_json::from_str(&text)
        .with_context(|| format!("--trunk {}: not a trunk's settings", file.display()))?;
    settings
        .check()
        .map_err(|e| anyhow::anyhow!("--trunk {}: {e}", file.display()))?;
    let dns = callplane::net::dns::Resolver::new(&callplane::net::dns::DnsConfig {
        server: dns_server,
        transports: vec![Transport::Udp, Transport::Tcp],
    })?;
    let id = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "trunk".to_owned());
    Ok(callplane::loadgen::TrunkTarget {
        id,
        settings,
        number: number.to_owned(),
        caller_id,
        dns: Some(dns),
        file: file.to_path_buf(),
    })
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

/// A duration with a unit (`200ms`, `30s`, `2m`, `1h`); a bare number is seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (200ms, 30s, 2m)"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{s:?}: {e}"))
}

/// A port range `a-b`.
fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected first-last"))?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|e| format!("{s:?}: {e}"))?,
        b.trim().parse().map_err(|e| format!("{s:?}: {e}"))?,
    );
    if a == 0 || b < a.saturating_add(1) {
        return Err(format!("{s:?}: expected 1 <= first < last"));
    }
    Ok(a..=b)
}

/// DTMF digits from a string of keys.
fn parse_digits(flag: &str, s: &str) -> anyhow::Result<Vec<media::dtmf::Digit>> {
    s.chars()
        .map(|c| {
            media::dtmf::Digit::from_char(c).map_err(|e| anyhow::anyhow!("{flag}: {c:?}: {e}"))
        })
        .collect()
}

/// A report: its Markdown to stdout (its JSON instead with `--json -`), and each to the file
/// its flag names.
fn emit_report(
    markdown_text: &str,
    json_text: &str,
    json: Option<&std::path::Path>,
    markdown: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    match json {
        Some(p) if p == std::path::Path::new("-") => println!("{json_text}"),
        Some(p) => {
            write_file(p, json_text)?;
            print!("{markdown_text}");
        }
        None => print!("{markdown_text}"),
    }
    if let Some(p) = markdown {
        write_file(p, markdown_text)?;
    }
    Ok(())
}

fn write_file(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn seconds(flag: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .with_context(|| format!("{flag}: {s} is not a duration in seconds"))
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
                    app::print_event(&ev);
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

async fn admin(command: AdminCmd, data_dir: &Path, url: Option<&str>) -> anyhow::Result<u8> {
    let store = app::open_store(data_dir, url).await?;
    match command {
        AdminCmd::CreateTenant { name } => {
            let (tenant, key) = app::create_tenant(store.as_ref(), &name).await?;
            println!(
                "{}",
                serde_json::json!({"tenant_id": tenant.id, "name": tenant.name, "role": "owner", "key": key})
            );
        }
        AdminCmd::CreateKey { tenant, role, name } => {
            let role = Role::parse(&role).with_context(|| {
                format!("--role {role:?}: one of owner, admin, operator, analyst, viewer")
            })?;
            let tenant = store
                .get_tenant(&tenant)
                .await
                .with_context(|| format!("tenant {tenant:?}"))?;
            let (secret, key) = app::new_key(&tenant.id, role, &name)?;
            let stored = store
                .create_api_key(&key, callplane::clock::unix_us())
                .await?;
            println!(
                "{}",
                serde_json::json!({"tenant_id": tenant.id, "key_id": stored.id, "role": role, "key": secret})
            );
        }
        AdminCmd::ListTenants => {
            for t in store.list_tenants().await? {
                println!("{}", serde_json::json!(t));
            }
        }
    }
    Ok(0)
}

/// SIP over TLS, for `call` and `serve` (docs/trunks/tls.md).
#[derive(Debug, clap::Args)]
struct TlsArgs {
    /// Listen for SIP over TLS on this address (5061 is the standard port; port 0 picks one).
    /// Needs --tls-cert and --tls-key.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    sip_tls: Option<SocketAddr>,
    /// The certificate chain (PEM, leaf first) the TLS listener presents.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA certificates (PEM) that outbound TLS peers' certificates must chain to; default:
    /// the system bundle /etc/ssl/certs/ca-certificates.crt.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// The longest a TLS connect and handshake may take, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    tls_handshake_timeout_ms: u64,
}

/// The largest PEM file read (a CA bundle is ~200 KB).
const MAX_PEM_BYTES: u64 = 4 << 20;

fn read_pem(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .with_context(|| format!("{flag} {}: cannot open", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{flag} {}: cannot read", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        bail!(
            "{flag} {}: larger than {MAX_PEM_BYTES} bytes",
            path.display()
        );
    }
    Ok(bytes)
}

impl TlsArgs {
    /// The TLS listener address and context. `wanted`: build the context even without TLS
    /// flags (a `serve` may place TLS calls through trunks; a `call` to a TLS URI). Without a
    /// --tls-ca and without the system bundle, no context: TLS calls then fail with "no TLS
    /// transport available".
    fn context(
        self,
        wanted: bool,
    ) -> anyhow::Result<(Option<SocketAddr>, Option<callplane::net::tls::TlsContext>)> {
        use callplane::net::tls;
        let server = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(
                tls::server_config(&read_pem("--tls-cert", cert)?, &read_pem("--tls-key", key)?)
                    .with_context(|| {
                        format!(
                            "--tls-cert {} / --tls-key {}",
                            cert.display(),
                            key.display()
                        )
                    })?,
            ),
            _ => None,
        };
        let client = match &self.tls_ca {
            Some(ca) => Some(
                tls::client_config(&read_pem("--tls-ca", ca)?, &ca.display().to_string())
                    .context("--tls-ca")?,
            ),
            None if wanted || server.is_some() => match std::fs::metadata(tls::SYSTEM_CA_FILE) {
                Ok(_) => Some(
                    tls::client_config(
                        &read_pem("the system CA bundle", Path::new(tls::SYSTEM_CA_FILE))?,
                        tls::SYSTEM_CA_FILE,
                    )
                    .context("the system CA bundle (give --tls-ca)")?,
                ),
                Err(_) if server.is_some() => bail!(
                    "no --tls-ca and no system CA bundle at {}: give --tls-ca",
                    tls::SYSTEM_CA_FILE
                ),
                Err(_) => None,
            },
            None => None,
        };
        let Some(client) = client else {
            return Ok((None, None));
        };
        if self.tls_handshake_timeout_ms == 0 {
            bail!("--tls-handshake-timeout-ms must be more than 0");
        }
        Ok((
            self.sip_tls,
            Some(tls::TlsContext {
                client,
                server,
                handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms),
            }),
        ))
    }
}

/// The inbound protection of `serve`'s SIP port (docs/trunks/carrier.md, "Inbound protection").
#[derive(Debug, clap::Args)]
struct ProtectArgs {
    /// SIP messages per second one source IP may send before we answer it (dropped above,
    /// unparsed, counted in callplane_sip_dropped_total{reason="rate_limit"}). Peers we sent
    /// a request or an INVITE 2xx to (trunks, the other ends of live calls) are exempt.
    /// 0: no limit.
    #[arg(long, default_value_t = callplane::net::inbound::DEFAULT_PER_SOURCE_RATE)]
    sip_rate_limit: u32,
    /// How many messages a source may send at once before --sip-rate-limit applies
    /// (0: twice the rate).
    #[arg(long, default_value_t = 0)]
    sip_rate_burst: u32,
    /// Seconds a peer stays exempt from the rate limit after the last request or INVITE 2xx
    /// we sent it.
    #[arg(long, default_value_t = 3600)]
    sip_trust_s: u64,
    /// The most inbound calls not yet answered and acknowledged (ringing, waiting for a
    /// script); a new INVITE above gets 503 with Retry-After. Default: half of --max-calls;
    /// 0: no bound.
    #[arg(long)]
    sip_max_half_open: Option<usize>,
    /// The same bound per source IP. Default: a quarter of --max-calls; 0: no bound.
    #[arg(long)]
    sip_max_half_open_per_source: Option<usize>,
}

impl ProtectArgs {
    /// The engine's inbound protection, validated.
    fn protection(self) -> anyhow::Result<callplane::engine::protect::InboundProtection> {
        use callplane::engine::protect::InboundProtection;
        use callplane::net::inbound::InboundLimits;
        if self.sip_trust_s == 0 || self.sip_trust_s > 7 * 86_400 {
            bail!(
                "--sip-trust-s {}: 1 to {} seconds",
                self.sip_trust_s,
                7 * 86_400
            );
        }
        let burst = match self.sip_rate_burst {
            0 => self.sip_rate_limit.saturating_mul(2).max(1),
            n => n,
        };
        Ok(InboundProtection {
            sip: InboundLimits {
                per_source_rate: self.sip_rate_limit,
                per_source_burst: burst,
                trust_for: Duration::from_secs(self.sip_trust_s),
                ..InboundLimits::default()
            },
            max_half_open: self.sip_max_half_open,
            max_half_open_per_source: self.sip_max_half_open_per_source,
        })
    }
}

/// The limits on every call, for `call` and `serve` (docs/operations.md, "Call limits").
#[derive(Debug, clap::Args)]
struct LimitArgs {
    /// End an answered call after this many seconds without RTP or RTCP from the peer (not
    /// counted while the peer holds the call); 0: never.
    #[arg(long, default_value_t = 30)]
    rtp_timeout_s: u64,
    /// The RFC 4028 session interval to ask for as caller and callee, seconds: the refresher
    /// refreshes at half of it, and a session nobody refreshed ends with BYE. 0: no session
    /// timer unless the peer asks for one.
    #[arg(long, default_value_t = 1800)]
    session_expires_s: u32,
    /// The smallest session interval accepted (RFC 4028 Min-SE, seconds; at least 90).
    #[arg(long, default_value_t = 90)]
    min_se_s: u32,
    /// End a call this many seconds after its answer (an unanswered one this long after it
    /// started); 0: never.
    #[arg(long, default_value_t = 14_400)]
    max_duration_s: u64,
    /// Allow SDP media addresses in this range (CIDR, or one address; repeatable) although
    /// they are multicast, broadcast, link-local, unspecified, reserved or the cloud metadata
    /// service, which are refused by default (488 to an offer; BYE/CANCEL after an answer).
    #[arg(long = "allow-media-address", value_name = "CIDR")]
    allow_media_address: Vec<callplane::engine::limits::IpNet>,
}

impl LimitArgs {
    /// The engine's limits, validated (the message names the flag and the fix).
    fn limits(self) -> anyhow::Result<callplane::engine::limits::CallLimits> {
        use callplane::engine::limits::{CallLimits, MediaAddressPolicy};
        const DAY: u64 = 86_400;
        if self.rtp_timeout_s > DAY {
            bail!(
                "--rtp-timeout-s {}: at most {DAY} (0 disables)",
                self.rtp_timeout_s
            );
        }
        if self.max_duration_s > 7 * DAY {
            bail!(
                "--max-duration-s {}: at most {} (0 disables)",
                self.max_duration_s,
                7 * DAY
            );
        }
        if !(90..=DAY as u32).contains(&self.min_se_s) {
            bail!(
                "--min-se-s {}: 90 (RFC 4028's floor) to {DAY}",
                self.min_se_s
            );
        }
        if self.session_expires_s != 0
            && !(self.min_se_s..=DAY as u32).contains(&self.session_expires_s)
        {
            bail!(
                "--session-expires-s {}: from --min-se-s ({}) to {DAY}, or 0 to ask for no session timer",
                self.session_expires_s,
                self.min_se_s
            );
        }
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        Ok(CallLimits {
            rtp_timeout: secs(self.rtp_timeout_s),
            session_expires: (self.session_expires_s > 0).then_some(self.session_expires_s),
            min_se: self.min_se_s,
            max_duration: secs(self.max_duration_s),
            media_addresses: MediaAddressPolicy {
                allow: self.allow_media_address,
            },
        })
    }
}
