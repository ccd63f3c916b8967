//! `MediaSession`: one call's RTP/RTCP stream, sans-IO.
//!
//! The driver feeds [`Input`]s (datagrams from the RTP and RTCP sockets, timeouts, commands)
//! to [`MediaSession::handle_input`] and drains [`Output`]s from
//! [`MediaSession::poll_output`] until it returns [`Output::Timeout`], then sleeps until that
//! instant or the next datagram:
//!
//! ```text
//! session.handle_input(Input::Receive { now, source, bytes })?;
//! loop {
//!     match session.poll_output() {
//!         Some(Output::Transmit(t)) => socket(t.rtcp).send_to(&t.bytes, t.destination),
//!         Some(Output::Event(e)) => react(e),
//!         Some(Output::Record(frame)) => recorder_file.write(&frame.samples),
//!         Some(Output::Timeout(at)) => break sleep_until(at),
//!         None => break, // stopped
//!     }
//! }
//! ```
//!
//! Every ptime the session sends one packet (the player's next frame, an RFC 4733 event
//! packet, in-band DTMF tones, or encoded silence), plays one frame out of the jitter buffer
//! (decoding it, running the in-band DTMF detector when telephone-event was not negotiated),
//! and, when recording, hands out one stereo frame (left: inbound, right: outbound). RTCP
//! (SR or RR + SDES CNAME) goes out every `rtcp_interval`, a [`QualityReport`] every
//! `quality_interval` in which packets arrived, and one for the whole call at
//! [`Input::Stop`]. Inbound packets need not match our ptime: the jitter buffer is popped by
//! demand, one sender packet whenever the tick needs more samples than are held (the sender's
//! ptime is measured from RTP timestamps).
//!
//! Inbound packets are checked in this order, each failure counted in [`SessionStats`] and
//! the packet dropped: parse (garbage), payload type (neither the negotiated codec,
//! telephone-event nor comfort noise), source (after symmetric-RTP latching, only the latched
//! address), sequence (RFC 3550 A.1 jump detection). A new SSRC is a new stream: sequence
//! state, statistics, jitter buffer and decoder restart.
//!
//! Latching (symmetric RTP) decides whose packets count. The address the SDP named latches at
//! its first valid packet. Any other source (the peer behind a NAT, or someone spraying
//! packets at a guessed port) is only a candidate until it has sent [`LATCH_PROBATION`]
//! packets in sequence under one SSRC; and should the named address speak after a candidate
//! latched, it takes over, and what the candidate had delivered is recounted as stray. Once
//! latched, packets from any other address are dropped and counted
//! ([`SessionStats::stray_source`]), whatever their SSRC; only the latched source may change
//! SSRC, which RFC 3550 §8.2 makes a new stream. RTCP is accepted from the latched peer only.
//!
//! The RTP timeout ([`MediaEvent::RtpTimeout`]) measures silence from the peer: neither RTP
//! nor RTCP from it. It is suspended while the peer is not expected to send (it holds us, or
//! the stream is sendonly/inactive from its side, [`MediaSession::set_direction`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{Codec, CodecError, Decoder, Encoder, resample};
use crate::dtmf::{Digit, DtmfReceiver, DtmfSender, InbandDetector, dtmf_tones};
use crate::jitter::{Frame, JitterBuffer, JitterConfig, JitterStats};
use crate::player::Player;
use crate::quality::{Arrival, EModel, LossPattern, LossTracker};
use crate::recorder::interleave;
use crate::rtp::{
    Bye, NtpTime, PayloadType, ReceiverReport, ReceiverStats, ReportBlock, RtcpPacket, RtpHeader,
    RtpPacket, Sdes, SdesChunk, SenderReport, SeqUpdate, Ssrc, is_rtcp, round_trip_time,
};
use crate::sdp::{AudioCodec, Negotiated};
use crate::srtp::{Srtp, SrtpError, SrtpParams};
use crate::tone::ToneGenerator;

impl From<AudioCodec> for Codec {
    fn from(c: AudioCodec) -> Codec {
        match c {
            AudioCodec::Pcmu => Codec::Pcmu,
            AudioCodec::Pcma => Codec::Pcma,
            AudioCodec::G722 => Codec::G722,
        }
    }
}

/// Settings of one session. Random values (SSRC, initial sequence number and timestamp,
/// RFC 3550 §5.1 says they SHOULD be random) come from the caller: this crate has no RNG.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The codec to send and expect.
    pub codec: Codec,
    /// Its payload type.
    pub payload_type: PayloadType,
    /// The telephone-event payload type; `None` makes DTMF in-band both ways.
    pub telephone_event: Option<PayloadType>,
    /// Where to send RTP (`None`: wait for latching, or send nothing).
    pub remote_rtp: Option<SocketAddr>,
    /// Where to send RTCP.
    pub remote_rtcp: Option<SocketAddr>,
    /// RTCP shares the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// Packetization time in ms.
    pub ptime_ms: u32,
    /// Whether we send RTP (false for recvonly/inactive).
    pub send: bool,
    /// Symmetric RTP (RFC 4961 / NAT traversal): send to wherever the first valid packet came
    /// from and drop packets from anywhere else afterwards.
    pub symmetric_rtp: bool,
    /// Silence (no RTP, no RTCP from the peer) after which [`MediaEvent::RtpTimeout`] fires;
    /// `Duration::MAX` never.
    pub rtp_timeout: Duration,
    /// Whether the peer is expected to send (false while it holds us or only receives): the
    /// RTP timeout runs only while it is.
    pub expect_inbound: bool,
    /// Interval between RTCP reports (RFC 3550's 5 s minimum by default; not randomized).
    pub rtcp_interval: Duration,
    /// Interval between [`MediaEvent::Quality`] reports.
    pub quality_interval: Duration,
    /// Our SSRC.
    pub ssrc: Ssrc,
    /// First outbound sequence number.
    pub initial_sequence: u16,
    /// First outbound RTP timestamp.
    pub initial_timestamp: u32,
    /// The SDES CNAME.
    pub cname: String,
    /// Hand out [`Output::Record`] frames.
    pub record: bool,
    /// Jitter-buffer settings (its `frame` and `clock_rate` are set from the codec and ptime).
    pub jitter: JitterConfig,
    /// Wall-clock anchor: the NTP time at one instant, for SR timestamps and RTT. Without it
    /// we send RRs only and report no RTT.
    pub wallclock: Option<(Instant, NtpTime)>,
    /// Length of each DTMF digit we send, ms.
    pub dtmf_duration_ms: u32,
    /// Pause between DTMF digits we send, ms.
    pub dtmf_gap_ms: u32,
    /// SRTP (SDES): every packet out is protected, every packet in must authenticate.
    pub srtp: Option<SrtpParams>,
}

impl SessionConfig {
    /// Defaults for `codec` on `payload_type`: 20 ms, send, symmetric RTP, 30 s RTP timeout,
    /// 5 s RTCP and quality intervals, 100 ms digits with 60 ms gaps.
    pub fn new(codec: Codec, payload_type: PayloadType, ssrc: Ssrc) -> SessionConfig {
        SessionConfig {
            codec,
            payload_type,
            telephone_event: None,
            remote_rtp: None,
            remote_rtcp: None,
            rtcp_mux: false,
            ptime_ms: 20,
            send: true,
            symmetric_rtp: true,
            rtp_timeout: Duration::from_secs(30),
            expect_inbound: true,
            rtcp_interval: Duration::from_secs(5),
            quality_interval: Duration::from_secs(5),
            ssrc,
            initial_sequence: 0,
            initial_timestamp: 0,
            cname: "callplane".to_string(),
            record: false,
            jitter: JitterConfig::default(),
            wallclock: None,
            dtmf_duration_ms: 100,
            dtmf_gap_ms: 60,
            srtp: None,
        }
    }

    /// A configuration from an SDP negotiation result.
    pub fn from_negotiated(neg: &Negotiated, ssrc: Ssrc) -> SessionConfig {
        SessionConfig {
            telephone_event: neg.telephone_event,
            remote_rtp: neg.remote_rtp,
            remote_rtcp: neg.remote_rtcp,
            rtcp_mux: neg.rtcp_mux,
            ptime_ms: neg.ptime,
            send: neg.direction.sends(),
            expect_inbound: neg.direction.receives() && !neg.remote_hold,
            srtp: neg.srtp,
            ..SessionConfig::new(neg.codec.into(), neg.payload_type, ssrc)
        }
    }
}

/// An input to the session.
#[derive(Debug, Clone)]
pub enum Input {
    /// A datagram from the RTP or RTCP socket (RTCP is recognised by its packet type).
    Receive {
        /// Arrival time.
        now: Instant,
        /// The sender.
        source: SocketAddr,
        /// The datagram.
        bytes: Bytes,
    },
    /// A deadline given by [`Output::Timeout`] has passed.
    Timeout(Instant),
    /// Play mono PCM at `rate` Hz (resampled to the codec's rate if needed), replacing any
    /// prompt playing now.
    Play {
        /// The samples.
        pcm: Arc<[i16]>,
        /// Their sample rate.
        rate: u32,
    },
    /// Stop the prompt (barge-in).
    StopPlayback,
    /// Send DTMF digits: RFC 4733 when negotiated, else in-band tones.
    SendDtmf(Vec<Digit>),
    /// Report when the peer's audio starts and ends ([`MediaEvent::Voice`]), or stop. Turned
    /// on, the peer is taken as quiet: audio that is already playing is reported at once.
    DetectVoice(bool),
    /// Send the peer's own audio back to it, one ptime after it was played out (when no
    /// prompt, tone or digit is being sent), or stop.
    Echo(bool),
    /// End the session: send an RTCP BYE, emit the call's [`QualityReport`] (scope
    /// [`QualityScope::Call`], when any packet arrived) and stop all timers.
    Stop {
        /// Now.
        now: Instant,
    },
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The destination.
    pub destination: SocketAddr,
    /// The datagram.
    pub bytes: Vec<u8>,
    /// True for RTCP (send from the RTCP socket unless rtcp-mux).
    pub rtcp: bool,
}

/// How a DTMF digit was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfMethod {
    /// RFC 4733 telephone-event packets.
    Rfc4733,
    /// Tones in the audio, found by the Goertzel detector.
    Inband,
}

/// What a [`QualityReport`] covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualityScope {
    /// One `quality_interval` (emitted every interval in which packets arrived).
    Interval,
    /// The whole call (emitted once, at [`Input::Stop`], when any packet arrived).
    Call,
}

/// The far end's view of our stream, from the last RTCP report block it sent about us.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemoteQuality {
    /// Its fraction lost (RFC 3550 §6.4.1, over its last report interval), percent.
    pub loss_percent: f64,
    /// Its interarrival jitter estimate of our stream.
    pub jitter: Duration,
    /// Its cumulative packets lost.
    pub cumulative_lost: i64,
}

/// Quality figures of the inbound stream, over one interval or the whole call.
///
/// Three things are kept apart: *network loss* (sequence numbers that never arrived, RFC 3550
/// A.3), *late* packets (arrived, but discarded by the jitter buffer because their slot had
/// been played or they came too far ahead), and *concealment* (frames the playout filled
/// without audio: for loss, for late packets, and for underruns and depth changes). Only the
/// first two reach the E-model; see docs/media/quality.md.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityReport {
    /// What the figures cover.
    pub scope: QualityScope,
    /// The codec played out.
    pub codec: Codec,
    /// The sender's packet interval, measured from RTP timestamps (`None` until two equal
    /// steps between consecutive packets were seen).
    pub ptime: Option<Duration>,
    /// Packets expected in the scope (RFC 3550 A.3: from sequence numbers).
    pub expected: u64,
    /// Packets received in the scope (duplicates included, as RFC 3550 counts them).
    pub received: u64,
    /// Network loss: `expected − received`, never negative.
    pub lost: u64,
    /// `lost` in percent of `expected` (0 when nothing was expected).
    pub loss_percent: f64,
    /// Packets that arrived but were discarded by the jitter buffer (too late, too early).
    pub late: u64,
    /// `late` in percent of `expected`.
    pub late_percent: f64,
    /// Playout frames (of the sender's packet interval) concealed: gaps, underruns, stretches.
    pub concealed: u64,
    /// The longest run of consecutive lost sequence numbers.
    pub max_burst: u64,
    /// G.107 `BurstR` from the sequence-gap pattern (1: random or no loss).
    pub burst_ratio: f64,
    /// Interarrival jitter (RFC 3550 A.8): the estimate at the end of an interval; for the
    /// call, its mean over the call's packets.
    pub jitter: Duration,
    /// Round-trip time from the last RTCP report about us, if known.
    pub rtt: Option<Duration>,
    /// The jitter buffer's depth.
    pub playout_delay: Duration,
    /// The one-way delay fed to the E-model: `rtt/2 + playout_delay + ptime`.
    pub one_way_delay: Duration,
    /// The E-model R factor (ITU-T G.107).
    pub r_factor: f64,
    /// The estimated MOS from R.
    pub mos: f64,
    /// The far end's view of our stream, when it sent an RTCP report about it.
    pub remote: Option<RemoteQuality>,
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// The first valid RTP packet arrived.
    FirstPacketIn {
        /// Its source.
        source: SocketAddr,
    },
    /// The first RTP packet was sent.
    FirstPacketOut,
    /// Symmetric RTP latched onto this address.
    Latched(SocketAddr),
    /// The peer's stream changed SSRC (the first SSRC is announced by `FirstPacketIn`).
    NewSsrc(Ssrc),
    /// A DTMF digit was received.
    Dtmf {
        /// The key.
        digit: Digit,
        /// How long it was pressed (`None` for in-band detection, which reports the start).
        duration: Option<Duration>,
        /// How it arrived.
        method: DtmfMethod,
    },
    /// Quality figures: every `quality_interval` in which packets arrived, and once for the
    /// whole call when it stops.
    Quality(QualityReport),
    /// No RTP for the configured silence.
    RtpTimeout,
    /// The peer sent an RTCP BYE.
    RemoteBye,
    /// The prompt played to the end.
    PlaybackFinished,
    /// The prompt was stopped.
    PlaybackStopped,
    /// The peer's audio started (`active`: a tick above [`VOICED_RMS`]) or ended (quiet for
    /// [`VOICE_HANGOVER_MS`]). Only while [`Input::DetectVoice`] is on.
    Voice {
        /// Started (true) or ended (false).
        active: bool,
    },
}

/// How long the peer's audio stays below [`VOICED_RMS`] before a [`MediaEvent::Voice`] says
/// it ended: longer than the pauses between words, shorter than those between sentences.
pub const VOICE_HANGOVER_MS: u64 = 300;

/// One ptime of the call as stereo PCM: left = inbound (heard), right = outbound (sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFrame {
    /// Interleaved samples, left first.
    pub samples: Vec<i16>,
    /// Sample rate.
    pub rate: u32,
}

/// An output of the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A datagram to send.
    Transmit(Transmit),
    /// An event.
    Event(MediaEvent),
    /// A recorded frame (when recording).
    Record(RecordedFrame),
    /// Nothing more now: call back with [`Input::Timeout`] at this instant.
    Timeout(Instant),
}

/// Counters of what the session sent, received and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStats {
    /// RTP packets sent.
    pub packets_sent: u64,
    /// RTP payload octets sent.
    pub octets_sent: u64,
    /// Valid RTP packets received.
    pub packets_received: u64,
    /// RTCP packets received and parsed.
    pub rtcp_received: u64,
    /// Datagrams that were neither valid RTP nor valid RTCP.
    pub stray_garbage: u64,
    /// RTP with a payload type we did not negotiate.
    pub stray_payload_type: u64,
    /// Packets from a source other than the latched one: other addresses once latched, a
    /// candidate's packets before it passed its probation, and a learned source's packets
    /// once the address signalling named displaced it.
    pub stray_source: u64,
    /// RTP dropped by the sequence checks (probation, large jumps).
    pub stray_sequence: u64,
    /// Times the latched source started a new stream (a new SSRC after the first).
    pub ssrc_changes: u64,
    /// SRTP/SRTCP packets whose authentication tag did not verify (or from one SSRC too
    /// many), dropped.
    pub srtp_auth_failed: u64,
    /// SRTP/SRTCP packets replayed (an index already seen or older than the window), dropped.
    pub srtp_replayed: u64,
    /// Valid RTP packets that came after a higher sequence number and were not duplicates
    /// (reordered; also one so late that whether it was a duplicate cannot be told).
    pub reordered: u64,
    /// Valid RTP packets whose sequence number had already been received (duplicates; RFC
    /// 3550's received count includes them).
    pub duplicates: u64,
    /// Inbound audio played out, ms (a tick of our packet interval each), from the first
    /// packet on.
    pub played_ms: u64,
    /// Of that, the ticks whose audio was above [`VOICED_RMS`] (speech or tones, not silence
    /// or comfort noise), ms: a call that receives packets but nothing voiced is silent.
    pub voiced_ms: u64,
}

/// The RMS level (of a 16-bit linear sample) above which a tick of inbound audio counts as
/// voiced: -45 dBFS, below speech and above G.711's silence and typical comfort noise.
pub const VOICED_RMS: i64 = 184;

/// Packets in sequence, under one SSRC, that a source the SDP did not name must send before
/// symmetric RTP latches onto it (as Asterisk's `strictrtp` learning does): a single forged
/// packet aimed at a guessed port cannot take the call's media over.
pub const LATCH_PROBATION: u8 = 4;

/// The peer's voice activity ([`Input::DetectVoice`]).
#[derive(Debug, Clone, Copy)]
struct VoiceState {
    /// Audio above [`VOICED_RMS`] is playing (reported).
    active: bool,
    /// How long it has been quiet while active, ms.
    quiet_ms: u64,
}

/// A source that is not latched yet, and how far its probation has gone.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    source: SocketAddr,
    ssrc: Ssrc,
    next_seq: u16,
    count: u8,
}

/// What latching made of an RTP packet's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Not the peer (or not yet): drop it.
    Drop,
    /// The latched source.
    Keep,
    /// A source latched just now in place of another: its packets start a new stream.
    Relatched,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The PCM to play cannot be converted to the codec's rate.
    #[error("cannot play PCM: {0}")]
    Codec(#[from] CodecError),
}

/// The media session of one call. See the module documentation for the run loop.
#[derive(Debug)]
pub struct MediaSession {
    cfg: SessionConfig,
    spf: usize,
    ts_step: u32,
    ptime: Duration,
    encoder: Encoder,
    decoder: Decoder,
    out_seq: u16,
    out_ts: u32,
    next_tick: Instant,
    /// `None` when the interval is too long to be represented (effectively never).
    next_rtcp: Option<Instant>,
    next_quality: Option<Instant>,
    stopped: bool,
    remote_rtp: Option<SocketAddr>,
    remote_rtcp: Option<SocketAddr>,
    /// Where the SDP said the peer's RTP is (`None` on hold or without an address).
    signalled_rtp: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    /// Packets accepted from the latched source (recounted as stray if it is displaced).
    latched_accepted: u64,
    candidate: Option<Candidate>,
    rtcp_latched: bool,
    remote_ssrc: Option<Ssrc>,
    rx_stats: ReceiverStats,
    jitter: JitterBuffer,
    dtmf_rx: Option<DtmfReceiver>,
    inband_rx: Option<InbandDetector>,
    inband_found: Vec<crate::dtmf::InbandDigit>,
    /// The peer's voice activity, while [`Input::DetectVoice`] is on.
    voice: Option<VoiceState>,
    /// Send the peer's audio back ([`Input::Echo`]).
    echo: bool,
    dtmf_queue: VecDeque<Digit>,
    dtmf_tx: Option<DtmfSender>,
    gap_ticks: u32,
    tones: Option<ToneGenerator>,
    player: Option<Player>,
    record_rate: Option<u32>,
    outputs: VecDeque<Output>,
    last_rx: Instant,
    timeout_fired: bool,
    first_out: bool,
    stats: SessionStats,
    /// Sequence-gap pattern of the inbound stream, feeding the two trackers below.
    pattern: LossPattern,
    loss_interval: LossTracker,
    loss_call: LossTracker,
    /// Expected/received of streams before the current one (new SSRC, sequence restart).
    closed_expected: u64,
    closed_received: u64,
    /// Totals at the start of the current interval.
    interval_start: Totals,
    /// Sum and count of the A.8 jitter estimate (seconds) at each audio packet, for the call.
    jitter_sum: f64,
    jitter_samples: u64,
    /// The sender's packet interval in RTP timestamp units, once measured.
    in_ptime_ts: Option<u32>,
    /// A step between consecutive packets seen once, waiting to be confirmed.
    in_ptime_candidate: Option<u32>,
    /// The last audio packet (extended sequence number, timestamp), for the ptime.
    last_audio: Option<(u64, u32)>,
    /// Decoded inbound samples not yet played (the sender's packets need not match our tick).
    carry: Vec<i16>,
    /// Samples per sender packet, for concealment frames.
    in_spf: usize,
    rtt: Option<Duration>,
    last_report: Option<ReportBlock>,
    pcm_in: Vec<i16>,
    pcm_out: Vec<i16>,
    payload: Vec<u8>,
    /// `None`: plain RTP; `Some(Err)`: SRTP was negotiated but its context could not be made,
    /// so nothing is sent or accepted.
    srtp: Option<Result<Srtp, SrtpError>>,
}

impl MediaSession {
    /// A session starting at `now` (the first packet goes out at the first timeout).
    pub fn new(mut cfg: SessionConfig, now: Instant) -> MediaSession {
        if cfg.ptime_ms == 0 {
            cfg.ptime_ms = 20;
        }
        let codec = cfg.codec;
        let spf = codec.samples_per_frame(cfg.ptime_ms);
        let ptime = Duration::from_millis(cfg.ptime_ms as u64);
        cfg.jitter.frame = ptime;
        cfg.jitter.clock_rate = codec.clock_rate();
        if cfg.rtcp_mux && cfg.remote_rtcp.is_none() {
            cfg.remote_rtcp = cfg.remote_rtp;
        }
        MediaSession {
            spf,
            ts_step: codec.timestamp_increment(cfg.ptime_ms),
            ptime,
            encoder: Encoder::new(codec),
            decoder: Decoder::new(codec),
            out_seq: cfg.initial_sequence,
            out_ts: cfg.initial_timestamp,
            next_tick: now,
            next_rtcp: now.checked_add(cfg.rtcp_interval),
            next_quality: now.checked_add(cfg.quality_interval),
            stopped: false,
            remote_rtp: cfg.remote_rtp,
            remote_rtcp: cfg.remote_rtcp,
            signalled_rtp: cfg.remote_rtp,
            latched: None,
            latched_accepted: 0,
            candidate: None,
            rtcp_latched: false,
            remote_ssrc: None,
            rx_stats: ReceiverStats::new(codec.clock_rate(), 0),
            jitter: JitterBuffer::new(cfg.jitter),
            dtmf_rx: cfg.telephone_event.map(|_| DtmfReceiver::new(8000)),
            inband_rx: cfg
                .telephone_event
                .is_none()
                .then(|| InbandDetector::new(codec.sample_rate())),
            inband_found: Vec::new(),
            voice: None,
            echo: false,
            dtmf_queue: VecDeque::new(),
            dtmf_tx: None,
            gap_ticks: 0,
            tones: None,
            player: None,
            record_rate: cfg.record.then(|| codec.sample_rate()),
            outputs: VecDeque::new(),
            last_rx: now,
            timeout_fired: false,
            first_out: false,
            stats: SessionStats::default(),
            pattern: LossPattern::new(),
            loss_interval: LossTracker::new(),
            loss_call: LossTracker::new(),
            closed_expected: 0,
            closed_received: 0,
            interval_start: Totals::default(),
            jitter_sum: 0.0,
            jitter_samples: 0,
            in_ptime_ts: None,
            in_ptime_candidate: None,
            last_audio: None,
            carry: Vec::with_capacity(spf * 2),
            in_spf: spf,
            rtt: None,
            last_report: None,
            pcm_in: Vec::with_capacity(spf),
            pcm_out: Vec::with_capacity(spf),
            payload: Vec::with_capacity(spf + 16),
            srtp: cfg.srtp.map(Srtp::new),
            cfg,
        }
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// RFC 3550 statistics about the current inbound stream.
    pub fn receiver_stats(&self) -> &ReceiverStats {
        &self.rx_stats
    }

    /// The jitter buffer's counters.
    pub fn jitter_stats(&self) -> JitterStats {
        self.jitter.stats()
    }

    /// The last RTCP report block the peer sent about our stream.
    pub fn last_remote_report(&self) -> Option<ReportBlock> {
        self.last_report
    }

    /// The round-trip time from the last report about us (needs [`SessionConfig::wallclock`]).
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Where RTP goes now (after latching, the latched address).
    pub fn remote_rtp(&self) -> Option<SocketAddr> {
        self.remote_rtp
    }

    /// Changes the remote addresses (a re-INVITE moved the media; `None`: hold, send
    /// nothing). The same RTP address again (a session refresh) keeps the latch.
    pub fn set_remote(&mut self, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        if rtp == self.signalled_rtp && rtp.is_some() {
            return;
        }
        self.signalled_rtp = rtp;
        self.remote_rtp = rtp;
        self.remote_rtcp = if self.cfg.rtcp_mux { rtp } else { rtcp };
        self.latched = None;
        self.latched_accepted = 0;
        self.candidate = None;
        self.rtcp_latched = false;
    }

    /// Changes the SRTP keys after a re-offer (`None`: plain RTP from now on). The same
    /// keys again keep the contexts (and their rollover and replay state).
    pub fn set_srtp(&mut self, params: Option<SrtpParams>) {
        let current = self
            .srtp
            .as_ref()
            .and_then(|s| s.as_ref().ok())
            .map(|s| *s.params());
        if current == params && self.srtp.as_ref().is_none_or(Result::is_ok) {
            return;
        }
        self.cfg.srtp = params;
        self.srtp = params.map(Srtp::new);
    }

    /// Whether packets are SRTP.
    pub fn is_srtp(&self) -> bool {
        self.srtp.is_some()
    }

    /// Changes the direction after a re-offer: whether we send, and whether the peer is
    /// expected to (it is not while it holds us). When it is expected again, its silence is
    /// counted from `now`.
    pub fn set_direction(&mut self, send: bool, expect_inbound: bool, now: Instant) {
        self.cfg.send = send;
        if expect_inbound && !self.cfg.expect_inbound {
            self.rearm_rtp_timeout(now);
        }
        self.cfg.expect_inbound = expect_inbound;
    }

    /// Counts the peer's silence from `now` (the call was just answered: early media may have
    /// run for a while without packets).
    pub fn rearm_rtp_timeout(&mut self, now: Instant) {
        self.last_rx = now;
        self.timeout_fired = false;
    }

    /// Feeds one input.
    pub fn handle_input(&mut self, input: Input) -> Result<(), SessionError> {
        if self.stopped {
            return Ok(());
        }
        match input {
            Input::Receive { now, source, bytes } => self.on_receive(now, source, bytes),
            Input::Timeout(now) => self.on_timeout(now),
            Input::Play { pcm, rate } => {
                let target = self.cfg.codec.sample_rate();
                let pcm = if rate == target {
                    pcm
                } else {
                    resample(&pcm, rate, target)?.into()
                };
                self.player = Some(Player::new(pcm, target, self.cfg.ptime_ms));
            }
            Input::Echo(on) => self.echo = on,
            Input::DetectVoice(on) => {
                self.voice = on.then_some(VoiceState {
                    active: false,
                    quiet_ms: 0,
                });
            }
            Input::StopPlayback => {
                if let Some(p) = self.player.take()
                    && !p.is_finished()
                {
                    self.event(MediaEvent::PlaybackStopped);
                }
            }
            Input::SendDtmf(digits) => self.dtmf_queue.extend(digits),
            Input::Stop { now } => {
                self.send_rtcp(now, true);
                self.report_call_quality();
                self.stopped = true;
            }
        }
        Ok(())
    }

    /// The next output; [`Output::Timeout`] when there is nothing to do until then, `None`
    /// once stopped and drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(o) = self.outputs.pop_front() {
            return Some(o);
        }
        self.poll_timeout().map(Output::Timeout)
    }

    /// The earliest deadline, `None` once stopped.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        let mut t = self.next_tick;
        for d in [self.next_rtcp, self.next_quality, self.rtp_deadline()]
            .into_iter()
            .flatten()
        {
            t = t.min(d);
        }
        if let Some(d) = self.dtmf_rx.as_ref().and_then(DtmfReceiver::poll_timeout) {
            t = t.min(d);
        }
        Some(t)
    }

    /// When RtpTimeout fires, unless it already has (re-armed by the next packet) or the peer
    /// is not expected to send.
    fn rtp_deadline(&self) -> Option<Instant> {
        if self.timeout_fired || !self.cfg.expect_inbound {
            None
        } else {
            self.last_rx.checked_add(self.cfg.rtp_timeout)
        }
    }

    fn event(&mut self, e: MediaEvent) {
        self.outputs.push_back(Output::Event(e));
    }

    /// SRTP: the plain packet, or `None` (counted) when it does not authenticate.
    fn unprotect(&mut self, bytes: Bytes) -> Option<Bytes> {
        let Some(srtp) = &mut self.srtp else {
            return Some(bytes);
        };
        let Ok(srtp) = srtp else {
            self.stats.srtp_auth_failed += 1;
            return None;
        };
        let plain = if is_rtcp(&bytes) {
            srtp.unprotect_rtcp(&bytes)
        } else {
            srtp.unprotect_rtp(&bytes)
        };
        match plain {
            Ok(p) => Some(Bytes::from(p)),
            Err(SrtpError::Replay) => {
                self.stats.srtp_replayed += 1;
                None
            }
            Err(SrtpError::Malformed) => {
                self.stats.stray_garbage += 1;
                None
            }
            Err(_) => {
                self.stats.srtp_auth_failed += 1;
                None
            }
        }
    }

    /// SRTP: the protected packet; `None` when it cannot be protected (never sent plain).
    fn protect(&mut self, bytes: Vec<u8>, rtcp: bool) -> Option<Vec<u8>> {
        match &mut self.srtp {
            None => Some(bytes),
            Some(Ok(srtp)) => if rtcp {
                srtp.protect_rtcp(&bytes)
            } else {
                srtp.protect_rtp(&bytes)
            }
            .ok(),
            Some(Err(_)) => None,
        }
    }

    fn on_receive(&mut self, now: Instant, source: SocketAddr, bytes: Bytes) {
        let Some(bytes) = self.unprotect(bytes) else {
            return;
        };
        if is_rtcp(&bytes) {
            self.on_rtcp(now, source, bytes);
            return;
        }
        let Ok(packet) = RtpPacket::parse(&bytes) else {
            self.stats.stray_garbage += 1;
            return;
        };
        let pt = packet.payload_type;
        let is_audio = pt == self.cfg.payload_type;
        let is_event = Some(pt) == self.cfg.telephone_event;
        // Comfort noise (RFC 3389) is accepted as silence even when not negotiated: many
        // gateways send it regardless.
        let is_cn = pt == PayloadType::CN;
        if !(is_audio || is_event || is_cn) {
            self.stats.stray_payload_type += 1;
            return;
        }
        let admit = if self.cfg.symmetric_rtp {
            self.admit(source, packet.ssrc, packet.sequence)
        } else {
            Admit::Keep
        };
        if admit == Admit::Drop {
            return;
        }
        if self.remote_ssrc != Some(packet.ssrc) || admit == Admit::Relatched {
            match self.remote_ssrc {
                None => self.event(MediaEvent::FirstPacketIn { source }),
                Some(_) => {
                    if admit != Admit::Relatched {
                        self.stats.ssrc_changes += 1;
                    }
                    self.event(MediaEvent::NewSsrc(packet.ssrc));
                }
            }
            // A new SSRC is a new stream (RFC 3550 §8.2: the sender restarted or changed):
            // fresh sequence state, statistics, playout and decoder. The call's quality
            // totals carry on, except for what a displaced source delivered (not the peer's).
            self.remote_ssrc = Some(packet.ssrc);
            if admit == Admit::Relatched {
                self.pattern = LossPattern::new();
                self.last_audio = None;
                self.in_ptime_candidate = None;
            } else {
                self.close_stream(self.rx_stats.expected(), self.rx_stats.received());
            }
            self.rx_stats = ReceiverStats::new(self.cfg.codec.clock_rate(), 0);
            self.jitter.reset();
            self.decoder = Decoder::new(self.cfg.codec);
            self.carry.clear();
        }
        let before = (self.rx_stats.expected(), self.rx_stats.received());
        let update = if is_audio {
            self.rx_stats
                .on_packet(packet.sequence, packet.timestamp, now)
        } else {
            self.rx_stats.on_packet_without_timing(packet.sequence, now)
        };
        let seq = match update {
            SeqUpdate::Restarted(s) => {
                // The statistics restarted with this packet: what they had counted is closed.
                self.close_stream(before.0, before.1);
                self.jitter.reset();
                s
            }
            SeqUpdate::InOrder(s) | SeqUpdate::Late(s) => s,
            SeqUpdate::Probation | SeqUpdate::BadJump => {
                self.stats.stray_sequence += 1;
                return;
            }
        };
        self.stats.packets_received += 1;
        self.latched_accepted += 1;
        self.last_rx = now;
        self.timeout_fired = false;
        let (interval, call) = (&mut self.loss_interval, &mut self.loss_call);
        let arrival = self.pattern.on_received(seq.0, |lost| {
            interval.observe(lost);
            call.observe(lost);
        });
        if matches!(update, SeqUpdate::Late(_)) {
            match arrival {
                Arrival::Duplicate => self.stats.duplicates += 1,
                Arrival::New | Arrival::Old => self.stats.reordered += 1,
            }
        }
        if is_audio {
            self.jitter_sum += self.rx_stats.jitter() / self.cfg.codec.clock_rate() as f64;
            self.jitter_samples += 1;
            if matches!(update, SeqUpdate::InOrder(_)) {
                self.measure_ptime(seq.0, packet.timestamp);
            }
        }
        if is_audio {
            self.jitter
                .insert(seq, packet.timestamp, now, packet.payload);
        } else {
            self.jitter.insert_filler(seq, packet.timestamp, now);
            if is_event && let Some(rx) = &mut self.dtmf_rx {
                if rx
                    .handle_packet(packet.timestamp, &packet.payload, now)
                    .is_err()
                {
                    self.stats.stray_garbage += 1;
                }
                self.drain_dtmf();
            }
        }
    }

    /// A stream ended (new SSRC, sequence restart) having counted `expected`/`received`: keep
    /// them in the call's totals and decide its loss pattern.
    fn close_stream(&mut self, expected: u64, received: u64) {
        self.closed_expected += expected;
        self.closed_received += received;
        let (interval, call) = (&mut self.loss_interval, &mut self.loss_call);
        self.pattern.reset(|lost| {
            interval.observe(lost);
            call.observe(lost);
        });
        self.last_audio = None;
        self.in_ptime_candidate = None;
    }

    /// The sender's packet interval from the RTP timestamp step between consecutive audio
    /// packets: taken when the same step is seen twice in a row (a talkspurt's first packet
    /// after silence suppression jumps), at most 200 ms.
    fn measure_ptime(&mut self, seq: u64, timestamp: u32) {
        let clock = self.cfg.codec.clock_rate();
        if let Some((last_seq, last_ts)) = self.last_audio
            && seq == last_seq + 1
        {
            let step = timestamp.wrapping_sub(last_ts);
            if step > 0 && step <= clock / 5 {
                if self.in_ptime_candidate == Some(step) && self.in_ptime_ts != Some(step) {
                    self.in_ptime_ts = Some(step);
                    let frame = Duration::from_nanos(step as u64 * 1_000_000_000 / clock as u64);
                    self.jitter.set_frame(frame);
                    self.in_spf = (step as u64 * self.cfg.codec.sample_rate() as u64 / clock as u64)
                        .max(1) as usize;
                }
                self.in_ptime_candidate = Some(step);
            }
        }
        self.last_audio = Some((seq, timestamp));
    }

    /// Symmetric RTP: whether a valid RTP packet from `source` is the peer's (see the module
    /// documentation).
    fn admit(&mut self, source: SocketAddr, ssrc: Ssrc, seq: u16) -> Admit {
        if self.latched == Some(source) {
            return Admit::Keep;
        }
        let signalled = self.signalled_rtp == Some(source);
        let admit = match self.latched {
            // Signalling beats learning: the address the SDP named displaces a source that
            // was learned while the named one was silent, and what that source delivered was
            // not the peer's.
            Some(_) if signalled => {
                let displaced = std::mem::take(&mut self.latched_accepted);
                self.stats.packets_received = self.stats.packets_received.saturating_sub(displaced);
                self.stats.stray_source += displaced;
                Admit::Relatched
            }
            Some(_) => {
                self.stats.stray_source += 1;
                return Admit::Drop;
            }
            None if signalled => Admit::Keep,
            None => {
                let count = match &mut self.candidate {
                    Some(c) if c.source == source && c.ssrc == ssrc && c.next_seq == seq => {
                        c.count = c.count.saturating_add(1);
                        c.next_seq = seq.wrapping_add(1);
                        c.count
                    }
                    // A newer source replaces the candidate: one table entry bounds the state
                    // a flood of sources can make us keep.
                    _ => {
                        self.candidate = Some(Candidate {
                            source,
                            ssrc,
                            next_seq: seq.wrapping_add(1),
                            count: 1,
                        });
                        1
                    }
                };
                if count < LATCH_PROBATION {
                    self.stats.stray_source += 1;
                    return Admit::Drop;
                }
                Admit::Keep
            }
        };
        self.latch(source, admit == Admit::Relatched);
        admit
    }

    fn latch(&mut self, source: SocketAddr, relatched: bool) {
        self.latched = Some(source);
        self.latched_accepted = 0;
        self.candidate = None;
        if self.remote_rtp != Some(source) {
            self.remote_rtp = Some(source);
            self.event(MediaEvent::Latched(source));
        }
        if self.cfg.rtcp_mux {
            self.remote_rtcp = Some(source);
        } else if !self.rtcp_latched || relatched {
            // Until RTCP itself arrives, guess the RFC 3550 convention: port + 1.
            let mut rtcp = source;
            rtcp.set_port(source.port().wrapping_add(1));
            self.remote_rtcp = Some(rtcp);
            self.rtcp_latched = false;
        }
    }

    /// Whether RTCP from `source` comes from the peer: the address RTCP latched to, else the
    /// latched (or, before latching, the signalled) RTP address's host; with rtcp-mux, that
    /// RTP address itself.
    fn rtcp_from_peer(&self, source: SocketAddr) -> bool {
        if !self.cfg.symmetric_rtp {
            return true;
        }
        let Some(peer) = self.latched.or(self.signalled_rtp) else {
            return false;
        };
        if self.cfg.rtcp_mux {
            peer == source
        } else if self.rtcp_latched {
            self.remote_rtcp == Some(source)
        } else {
            peer.ip() == source.ip()
        }
    }

    fn drain_dtmf(&mut self) {
        while let Some(ev) = self.dtmf_rx.as_mut().and_then(DtmfReceiver::poll_event) {
            self.event(MediaEvent::Dtmf {
                digit: ev.digit,
                duration: Some(Duration::from_millis(ev.duration_ms as u64)),
                method: DtmfMethod::Rfc4733,
            });
        }
    }

    fn ntp(&self, now: Instant) -> Option<NtpTime> {
        let (at, ntp) = self.cfg.wallclock?;
        let since = now.saturating_duration_since(at);
        let frac = ((since.subsec_nanos() as u64) << 32) / 1_000_000_000;
        Some(NtpTime(ntp.0.wrapping_add((since.as_secs() << 32) + frac)))
    }

    fn on_rtcp(&mut self, now: Instant, source: SocketAddr, bytes: Bytes) {
        if !self.rtcp_from_peer(source) {
            self.stats.stray_source += 1;
            return;
        }
        let Ok(packets) = RtcpPacket::parse_compound(&bytes) else {
            self.stats.stray_garbage += 1;
            return;
        };
        self.stats.rtcp_received += 1;
        // RTCP from the peer is a sign of life too (it keeps sending reports on hold).
        self.last_rx = now;
        self.timeout_fired = false;
        if self.cfg.symmetric_rtp && !self.cfg.rtcp_mux && !self.rtcp_latched {
            // Symmetric RTCP: answer where the peer's RTCP comes from.
            self.remote_rtcp = Some(source);
            self.rtcp_latched = true;
        }
        let our = self.cfg.ssrc;
        let mut blocks: Vec<ReportBlock> = Vec::new();
        for p in packets {
            match p {
                RtcpPacket::SenderReport(sr) => {
                    if Some(sr.ssrc) == self.remote_ssrc {
                        self.rx_stats.on_sender_report(sr.ntp, now);
                    }
                    blocks.extend(sr.reports.into_iter().filter(|b| b.ssrc == our));
                }
                RtcpPacket::ReceiverReport(rr) => {
                    blocks.extend(rr.reports.into_iter().filter(|b| b.ssrc == our));
                }
                RtcpPacket::Bye(bye) if self.remote_ssrc.is_none_or(|s| bye.ssrcs.contains(&s)) => {
                    self.event(MediaEvent::RemoteBye);
                }
                _ => {}
            }
        }
        if let Some(b) = blocks.pop() {
            if let Some(ntp) = self.ntp(now) {
                self.rtt = round_trip_time(ntp, &b).or(self.rtt);
            }
            self.last_report = Some(b);
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        // Catch up on ticks we were late for, but not on a backlog longer than a second (the
        // driver was suspended): skip it rather than burst packets out.
        if now.saturating_duration_since(self.next_tick) > Duration::from_secs(1) {
            let behind = now.duration_since(self.next_tick).as_nanos() / self.ptime.as_nanos();
            let skip = behind as u32;
            self.next_tick += self.ptime.saturating_mul(skip);
            self.out_ts = self.out_ts.wrapping_add(self.ts_step.wrapping_mul(skip));
        }
        while self.next_tick <= now {
            let tick = self.next_tick;
            self.on_tick(tick);
            self.next_tick += self.ptime;
        }
        if let Some(rx) = &mut self.dtmf_rx {
            rx.handle_timeout(now);
            self.drain_dtmf();
        }
        if self.rtp_deadline().is_some_and(|d| now >= d) {
            self.timeout_fired = true;
            self.event(MediaEvent::RtpTimeout);
        }
        if self.next_rtcp.is_some_and(|d| now >= d) {
            self.send_rtcp(now, false);
            self.next_rtcp = now.checked_add(self.cfg.rtcp_interval);
        }
        if self.next_quality.is_some_and(|d| now >= d) {
            self.report_quality();
            self.next_quality = now.checked_add(self.cfg.quality_interval);
        }
    }

    /// One ptime: send a packet, play a frame out, record.
    fn on_tick(&mut self, now: Instant) {
        self.send_frame();
        self.play_frame(now);
        if let Some(rate) = self.record_rate {
            // Both legs are produced on the same tick with the same length, so they are
            // aligned by construction: interleave directly rather than through
            // `recorder::Recorder`, whose alignment buffers are not needed here (and cost as much
            // as the rest of the per-packet path, see benches/rtp.rs).
            let mut samples = Vec::with_capacity(self.spf * 2);
            interleave(&self.pcm_in, &self.pcm_out, &mut samples);
            self.outputs
                .push_back(Output::Record(RecordedFrame { samples, rate }));
        }
    }

    fn send_frame(&mut self) {
        self.pcm_out.clear();
        let ts = self.out_ts;
        self.out_ts = self.out_ts.wrapping_add(self.ts_step);
        // RFC 4733 digits take the place of audio while they last.
        if self.dtmf_tx.is_none()
            && self.gap_ticks == 0
            && self.tones.is_none()
            && let Some(digit) = self.dtmf_queue.pop_front()
        {
            match self.cfg.telephone_event {
                Some(_) => {
                    self.dtmf_tx = DtmfSender::new(
                        digit,
                        ts,
                        self.cfg.dtmf_duration_ms,
                        self.cfg.ptime_ms,
                        8000,
                    )
                    .ok();
                }
                None => {
                    // In-band: the whole remaining queue as one tone sequence.
                    let mut digits = vec![digit];
                    digits.extend(self.dtmf_queue.drain(..));
                    self.tones = Some(dtmf_tones(
                        self.cfg.codec.sample_rate(),
                        &digits,
                        self.cfg.dtmf_duration_ms,
                        self.cfg.dtmf_gap_ms,
                        -6.0,
                    ));
                }
            }
        }
        if let Some(tx) = &mut self.dtmf_tx {
            if let Some(p) = tx.next_packet() {
                self.pcm_out.resize(self.spf, 0);
                let pt = self.cfg.telephone_event.unwrap_or(self.cfg.payload_type);
                let payload = p.payload();
                self.send_rtp(pt, p.marker, p.timestamp, &payload);
                return;
            }
            self.dtmf_tx = None;
            self.gap_ticks = self.cfg.dtmf_gap_ms.div_ceil(self.cfg.ptime_ms);
        }
        self.gap_ticks = self.gap_ticks.saturating_sub(1);
        let mut marker = false;
        if let Some(tones) = &mut self.tones {
            tones.next_frame(self.spf, &mut self.pcm_out);
            if tones.is_finished() {
                self.tones = None;
            }
        } else if let Some(player) = &mut self.player {
            match player.next_frame() {
                Some(frame) => {
                    self.pcm_out.extend_from_slice(frame.samples);
                    marker = frame.marker;
                }
                None => {
                    if player.is_finished() {
                        self.player = None;
                        self.event(MediaEvent::PlaybackFinished);
                    }
                }
            }
            if self.player.as_ref().is_some_and(Player::is_finished) {
                self.player = None;
                self.event(MediaEvent::PlaybackFinished);
            }
        } else if self.echo {
            // The last tick's inbound audio (the codec is the same both ways: one length).
            self.pcm_out.extend_from_slice(&self.pcm_in);
        }
        // Silence when there is nothing to play: keeps NATs open and the peer's RTP timeout
        // quiet.
        self.pcm_out.resize(self.spf, 0);
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        self.encoder.encode(&self.pcm_out, &mut payload);
        self.send_rtp(self.cfg.payload_type, marker, ts, &payload);
        self.payload = payload;
    }

    fn send_rtp(&mut self, pt: PayloadType, marker: bool, ts: u32, payload: &[u8]) {
        let Some(dest) = self.remote_rtp.filter(|_| self.cfg.send) else {
            return;
        };
        let mut header = RtpHeader::new(pt, self.out_seq, ts, self.cfg.ssrc);
        // RFC 3551 §4.1: the marker is set on the first packet of a talkspurt; the first packet
        // of the stream starts one.
        header.marker = marker || !self.first_out;
        let mut bytes = vec![0u8; header.len() + payload.len()];
        if header.write(payload, &mut bytes).is_err() {
            return;
        }
        let Some(bytes) = self.protect(bytes, false) else {
            return;
        };
        self.out_seq = self.out_seq.wrapping_add(1);
        self.stats.packets_sent += 1;
        self.stats.octets_sent += payload.len() as u64;
        self.outputs.push_back(Output::Transmit(Transmit {
            destination: dest,
            bytes,
            rtcp: false,
        }));
        if !self.first_out {
            self.first_out = true;
            self.event(MediaEvent::FirstPacketOut);
        }
    }

    /// Plays one tick of inbound audio. The jitter buffer is popped by demand: one sender
    /// packet whenever fewer samples are held than the tick needs, so a sender whose ptime
    /// differs from ours neither underruns nor backs up. Before the first packet (and while
    /// the buffer fills) nothing is popped and nothing is counted.
    fn play_frame(&mut self, now: Instant) {
        self.pcm_in.clear();
        // Bounded: a tick needs at most a few packets (a 5 ms sender on a 20 ms tick needs 4).
        let mut pops = 0;
        while self.carry.len() < self.spf && pops < 16 {
            pops += 1;
            let before = self.carry.len();
            match self.jitter.pop(now) {
                Some(Frame::Audio { payload, .. }) => {
                    if !payload.is_empty()
                        && self.decoder.decode(&payload, &mut self.carry).is_err()
                    {
                        self.carry.truncate(before);
                    }
                    if self.carry.len() == before {
                        // A filler slot (RFC 4733 event, comfort noise) or undecodable: silence.
                        self.carry.resize(before + self.in_spf, 0);
                    } else if self.in_ptime_ts.is_none() {
                        self.in_spf = self.carry.len() - before;
                    }
                }
                // Concealment is silence: the far end hears a gap rather than a repeated frame.
                Some(Frame::Missing { .. }) => self.carry.resize(before + self.in_spf, 0),
                None => break,
            }
        }
        let take = self.carry.len().min(self.spf);
        self.pcm_in.extend(self.carry.drain(..take));
        self.pcm_in.resize(self.spf, 0);
        if take > 0 || self.stats.played_ms > 0 {
            let tick = u64::from(self.cfg.ptime_ms);
            self.stats.played_ms += tick;
            let energy: i64 = self
                .pcm_in
                .iter()
                .map(|&x| i64::from(x) * i64::from(x))
                .sum();
            let voiced = energy > VOICED_RMS * VOICED_RMS * self.spf as i64;
            if voiced {
                self.stats.voiced_ms += tick;
            }
            if let Some(v) = &mut self.voice {
                let change = if voiced {
                    v.quiet_ms = 0;
                    !std::mem::replace(&mut v.active, true)
                } else if v.active {
                    v.quiet_ms += tick;
                    v.active = v.quiet_ms < VOICE_HANGOVER_MS;
                    !v.active
                } else {
                    false
                };
                if change {
                    let active = v.active;
                    self.event(MediaEvent::Voice { active });
                }
            }
        }
        // Before the first inbound audio there is nothing to detect (the detector would run
        // its eight filters over silence on every tick: a tenth of a generator's CPU whose
        // callee sends no RTP).
        if let Some(det) = &mut self.inband_rx
            && self.stats.played_ms > 0
        {
            det.process(&self.pcm_in, &mut self.inband_found);
            for d in std::mem::take(&mut self.inband_found) {
                self.event(MediaEvent::Dtmf {
                    digit: d.digit,
                    duration: None,
                    method: DtmfMethod::Inband,
                });
            }
        }
    }

    fn send_rtcp(&mut self, now: Instant, bye: bool) {
        let Some(dest) = self.remote_rtcp.or(if self.cfg.rtcp_mux {
            self.remote_rtp
        } else {
            None
        }) else {
            return;
        };
        let blocks: Vec<ReportBlock> = match self.remote_ssrc {
            Some(s) => vec![self.rx_stats.report_block(s, now)],
            None => vec![],
        };
        let ssrc = self.cfg.ssrc;
        let first = match self.ntp(now) {
            // RFC 3550 §6.4: an SR when we have sent data since the last report.
            Some(ntp) if self.stats.packets_sent > 0 => RtcpPacket::SenderReport(SenderReport {
                ssrc,
                ntp,
                rtp_timestamp: self.out_ts,
                packet_count: self.stats.packets_sent as u32,
                octet_count: self.stats.octets_sent as u32,
                reports: blocks,
            }),
            _ => RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc,
                reports: blocks,
            }),
        };
        // RFC 3550 §6.1: every compound packet carries an SDES CNAME.
        let mut packets = vec![
            first,
            RtcpPacket::Sdes(Sdes {
                chunks: vec![SdesChunk::cname(ssrc, &self.cfg.cname)],
            }),
        ];
        if bye {
            packets.push(RtcpPacket::Bye(Bye {
                ssrcs: vec![ssrc],
                reason: None,
            }));
        }
        if let Some(bytes) = RtcpPacket::write_compound(&packets)
            .ok()
            .and_then(|b| self.protect(b, true))
        {
            self.outputs.push_back(Output::Transmit(Transmit {
                destination: dest,
                bytes,
                rtcp: true,
            }));
        }
    }

    /// The call's running totals.
    fn totals(&self) -> Totals {
        let js = self.jitter.stats();
        Totals {
            expected: self.closed_expected + self.rx_stats.expected(),
            // RFC 3550's received count includes duplicates, which would hide as many losses:
            // the quality figures count each packet once.
            received: (self.closed_received + self.rx_stats.received())
                .saturating_sub(self.stats.duplicates),
            late: js.late + js.too_early,
            concealed: js.missing + js.underruns + js.stretched,
        }
    }

    /// Emits the interval report (when packets arrived in it) and starts the next interval.
    fn report_quality(&mut self) {
        let now = self.totals();
        let span = now.since(self.interval_start);
        self.interval_start = now;
        let pattern = std::mem::take(&mut self.loss_interval);
        if span.expected == 0 && span.received == 0 {
            return;
        }
        let report = self.quality_report(
            QualityScope::Interval,
            span,
            &pattern,
            self.rx_stats.jitter_duration(),
        );
        self.event(MediaEvent::Quality(report));
    }

    /// Emits the whole call's report, when any packet arrived.
    fn report_call_quality(&mut self) {
        let (interval, call) = (&mut self.loss_interval, &mut self.loss_call);
        self.pattern.flush(|lost| {
            interval.observe(lost);
            call.observe(lost);
        });
        let totals = self.totals();
        if totals.expected == 0 && totals.received == 0 {
            return;
        }
        let jitter = if self.jitter_samples == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(self.jitter_sum / self.jitter_samples as f64)
        };
        let report = self.quality_report(QualityScope::Call, totals, &self.loss_call, jitter);
        self.event(MediaEvent::Quality(report));
    }

    fn quality_report(
        &self,
        scope: QualityScope,
        t: Totals,
        pattern: &LossTracker,
        jitter: Duration,
    ) -> QualityReport {
        let clock = self.cfg.codec.clock_rate() as u64;
        let lost = t.expected.saturating_sub(t.received);
        let percent = |n: u64| {
            if t.expected == 0 {
                0.0
            } else {
                100.0 * n as f64 / t.expected as f64
            }
        };
        let ptime = self
            .in_ptime_ts
            .map(|ts| Duration::from_nanos(ts as u64 * 1_000_000_000 / clock));
        let playout = self.jitter.delay();
        let one_way =
            self.rtt.map_or(Duration::ZERO, |r| r / 2) + playout + ptime.unwrap_or(self.ptime);
        let burst_ratio = pattern.burst_ratio();
        // The listener loses late packets as surely as lost ones: both count as Ppl (late ones
        // at random, as the burst ratio comes from the network's sequence gaps). Playout is
        // silence-filled, not concealed by a PLC: G.113's Bpl without PLC.
        let model = EModel::for_codec(self.cfg.codec, false)
            .with_loss(percent(lost + t.late).min(100.0), burst_ratio)
            .with_one_way_delay(one_way.as_secs_f64() * 1000.0);
        let remote = self.last_report.map(|b| RemoteQuality {
            loss_percent: b.fraction_lost as f64 * 100.0 / 256.0,
            jitter: Duration::from_nanos(b.jitter as u64 * 1_000_000_000 / clock),
            cumulative_lost: b.cumulative_lost as i64,
        });
        QualityReport {
            scope,
            codec: self.cfg.codec,
            ptime,
            expected: t.expected,
            received: t.received,
            lost,
            loss_percent: percent(lost),
            late: t.late,
            late_percent: percent(t.late),
            concealed: t.concealed,
            max_burst: pattern.max_burst(),
            burst_ratio,
            jitter,
            rtt: self.rtt,
            playout_delay: playout,
            one_way_delay: one_way,
            r_factor: model.r_factor(),
            mos: model.mos(),
            remote,
        }
    }
}

/// Running counters a quality report is made of (differences of two for an interval).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    expected: u64,
    received: u64,
    late: u64,
    concealed: u64,
}

impl Totals {
    fn since(self, start: Totals) -> Totals {
        Totals {
            expected: self.expected.saturating_sub(start.expected),
            received: self.received.saturating_sub(start.received),
            late: self.late.saturating_sub(start.late),
            concealed: self.concealed.saturating_sub(start.concealed),
        }
    }
}
