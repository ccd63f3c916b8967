//! Call-quality estimate: the ITU-T G.107 E-model and its MOS mapping (Annex B).
//!
//! `R = Ro − Is − Id − Ie,eff + A` (G.107 §7.1). Everything a VoIP endpoint does not know
//! (loudness ratings, room noise, sidetone, echo loss) stays at the G.107 §7.7 defaults, which
//! give R ≈ 93.2 and MOS ≈ 4.41 for G.711 with no loss and no delay. What the session measures
//! drives the rest:
//!
//! - **Ie,eff** from the codec's equipment impairment `Ie` and packet-loss robustness `Bpl`
//!   (G.113 Appendix I: G.711 Ie = 0, Bpl = 4.3 without PLC, 25.1 with PLC), the packet loss
//!   `Ppl` in percent and the burst ratio `BurstR` (G.107 §7.5):
//!   `Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl)`.
//! - **Id** from the mean one-way delay: absolute delay `Ta`, echo-path delay `T` and
//!   round-trip `Tr` (taken as `Ta` and `2·Ta` when only a one-way delay is known).
//!
//! G.722 is wideband and properly belongs to G.107.1 (a 129-point scale); we approximate it with
//! the narrowband model and G.711's values, which under-rates G.722 but keeps one scale for all
//! calls.

use crate::codec::Codec;

/// Inputs of the E-model. `Default` is G.107 §7.7's default set with G.711 (no PLC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EModel {
    /// Send loudness rating, dB (default 8).
    pub slr: f64,
    /// Receive loudness rating, dB (default 2).
    pub rlr: f64,
    /// Sidetone masking rating, dB (default 15).
    pub stmr: f64,
    /// Listener sidetone rating, dB (default 18).
    pub lstr: f64,
    /// D-value of the telephone, send side (default 3).
    pub ds: f64,
    /// D-value of the telephone, receive side (default 3).
    pub dr: f64,
    /// Talker echo loudness rating, dB (default 65).
    pub telr: f64,
    /// Weighted echo path loss, dB (default 110).
    pub wepl: f64,
    /// Mean one-way delay of the echo path, ms (default 0).
    pub t: f64,
    /// Round-trip delay in a 4-wire loop, ms (default 0).
    pub tr: f64,
    /// Absolute one-way delay, ms (default 0).
    pub ta: f64,
    /// Number of quantisation distortion units (default 1).
    pub qdu: f64,
    /// Equipment impairment factor of the codec (default 0, G.711).
    pub ie: f64,
    /// Packet-loss robustness factor (default 4.3, G.711 without PLC).
    pub bpl: f64,
    /// Random packet-loss probability, percent (default 0).
    pub ppl: f64,
    /// Burst ratio (default 1: random loss).
    pub burst_r: f64,
    /// Circuit noise referred to the 0 dBr point, dBm0p (default −70).
    pub nc: f64,
    /// Noise floor at the receive side, dBmp (default −64).
    pub nfor: f64,
    /// Room noise at the send side, dB(A) (default 35).
    pub ps: f64,
    /// Room noise at the receive side, dB(A) (default 35).
    pub pr: f64,
    /// Advantage factor (default 0).
    pub a: f64,
}

impl Default for EModel {
    fn default() -> Self {
        EModel {
            slr: 8.0,
            rlr: 2.0,
            stmr: 15.0,
            lstr: 18.0,
            ds: 3.0,
            dr: 3.0,
            telr: 65.0,
            wepl: 110.0,
            t: 0.0,
            tr: 0.0,
            ta: 0.0,
            qdu: 1.0,
            ie: 0.0,
            bpl: 4.3,
            ppl: 0.0,
            burst_r: 1.0,
            nc: -70.0,
            nfor: -64.0,
            ps: 35.0,
            pr: 35.0,
            a: 0.0,
        }
    }
}

/// `Ie` and `Bpl` of a codec (G.113 Appendix I), `plc` telling whether the receiver conceals
/// lost packets. G.722 uses G.711's values (narrowband approximation, see the module docs);
/// L16 is treated as G.711 too (no coding distortion).
pub fn codec_impairment(codec: Codec, plc: bool) -> (f64, f64) {
    let bpl = if plc { 25.1 } else { 4.3 };
    match codec {
        Codec::Pcmu | Codec::Pcma | Codec::G722 | Codec::L16 { .. } => (0.0, bpl),
    }
}

impl EModel {
    /// The default model for `codec`, with or without packet-loss concealment.
    pub fn for_codec(codec: Codec, plc: bool) -> Self {
        let (ie, bpl) = codec_impairment(codec, plc);
        EModel {
            ie,
            bpl,
            ..EModel::default()
        }
    }

    /// Sets packet loss (percent, 0..=100) and the burst ratio.
    pub fn with_loss(mut self, ppl_percent: f64, burst_r: f64) -> Self {
        self.ppl = ppl_percent.clamp(0.0, 100.0);
        self.burst_r = if burst_r > 0.0 { burst_r } else { 1.0 };
        self
    }

    /// Sets a one-way mouth-to-ear delay in ms: `Ta = T = delay`, `Tr = 2·delay`.
    pub fn with_one_way_delay(mut self, delay_ms: f64) -> Self {
        let d = delay_ms.max(0.0);
        self.ta = d;
        self.t = d;
        self.tr = 2.0 * d;
        self
    }

    /// The transmission rating factor R (may fall outside 0..=100 for extreme inputs).
    pub fn r_factor(&self) -> f64 {
        let (ro, no) = self.ro();
        ro - self.is(ro, no) - self.id(ro, no) - self.ie_eff() + self.a
    }

    /// The estimated MOS (conversational quality) from [`r_factor`](Self::r_factor).
    pub fn mos(&self) -> f64 {
        mos_from_r(self.r_factor())
    }

    /// Basic signal-to-noise ratio Ro and the total noise No (G.107 §7.2).
    fn ro(&self) -> (f64, f64) {
        let olr = self.slr + self.rlr;
        let nos =
            self.ps - self.slr - self.ds - 100.0 + 0.004 * (self.ps - olr - self.ds - 14.0).powi(2);
        let pre = self.pr + 10.0 * log10(1.0 + pow10((10.0 - self.lstr) / 10.0));
        let nor = self.rlr - 121.0 + pre + 0.008 * (pre - 35.0).powi(2);
        let nfo = self.nfor + self.rlr;
        let no = 10.0
            * log10(
                pow10(self.nc / 10.0) + pow10(nos / 10.0) + pow10(nor / 10.0) + pow10(nfo / 10.0),
            );
        (15.0 - 1.5 * (self.slr + no), no)
    }

    /// Simultaneous impairment factor Is = Iolr + Ist + Iq (G.107 §7.3).
    fn is(&self, ro: f64, no: f64) -> f64 {
        let olr = self.slr + self.rlr;
        let xolr = olr + 0.2 * (64.0 + no - self.rlr);
        let iolr = 20.0 * ((1.0 + (xolr / 8.0).powi(8)).powf(1.0 / 8.0) - xolr / 8.0);
        let stmro = -10.0
            * log10(pow10(-self.stmr / 10.0) + (-self.t / 4.0).exp() * pow10(-self.telr / 10.0));
        let ist = 12.0 * (1.0 + ((stmro - 13.0) / 6.0).powi(8)).powf(1.0 / 8.0)
            - 28.0 * (1.0 + ((stmro + 1.0) / 19.4).powi(35)).powf(1.0 / 35.0)
            - 13.0 * (1.0 + ((stmro - 3.0) / 33.0).powi(13)).powf(1.0 / 13.0)
            + 29.0;
        let q = 37.0 - 15.0 * log10(self.qdu);
        let g = 1.07 + 0.258 * q + 0.0602 * q * q;
        let y = (ro - 100.0) / 15.0 + 46.0 / 8.4 - g / 9.0;
        let z = 46.0 / 30.0 - g / 40.0;
        let iq = 15.0 * log10(1.0 + pow10(y) + pow10(z));
        iolr + ist + iq
    }

    /// Delay impairment factor Id = Idte + Idle + Idd (G.107 §7.4).
    fn id(&self, ro: f64, no: f64) -> f64 {
        // Talker echo.
        let t = self.t;
        let mut terv = self.telr - 40.0 * log10((1.0 + t / 10.0) / (1.0 + t / 150.0))
            + 6.0 * (-0.3 * t * t).exp();
        if self.stmr < 9.0 {
            // G.107 §7.4: with a low STMR the echo is masked less; TERV gets Ist/2 added.
            let stmro = -10.0
                * log10(pow10(-self.stmr / 10.0) + (-t / 4.0).exp() * pow10(-self.telr / 10.0));
            let ist = 12.0 * (1.0 + ((stmro - 13.0) / 6.0).powi(8)).powf(1.0 / 8.0)
                - 28.0 * (1.0 + ((stmro + 1.0) / 19.4).powi(35)).powf(1.0 / 35.0)
                - 13.0 * (1.0 + ((stmro - 3.0) / 33.0).powi(13)).powf(1.0 / 13.0)
                + 29.0;
            terv += ist / 2.0;
        }
        let roe = -1.5 * (no - self.rlr);
        let re = 80.0 + 2.5 * (terv - 14.0);
        let idte = ((roe - re) / 2.0 + ((roe - re).powi(2) / 4.0 + 100.0).sqrt() - 1.0)
            * (1.0 - (-t).exp());
        // Listener echo.
        let rle = 10.5 * (self.wepl + 7.0) * (self.tr + 1.0).powf(-0.25);
        let idle = (ro - rle) / 2.0 + ((ro - rle).powi(2) / 4.0 + 169.0).sqrt();
        // Absolute delay: no impairment up to 100 ms.
        let idd = if self.ta > 100.0 {
            let x = log10(self.ta / 100.0) / log10(2.0);
            25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0)
                - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
                + 2.0)
        } else {
            0.0
        };
        idte + idle + idd
    }

    /// Effective equipment impairment with packet loss (G.107 §7.5).
    fn ie_eff(&self) -> f64 {
        let ppl = self.ppl;
        if ppl <= 0.0 {
            return self.ie;
        }
        self.ie + (95.0 - self.ie) * ppl / (ppl / self.burst_r + self.bpl)
    }
}

fn log10(x: f64) -> f64 {
    x.log10()
}

fn pow10(x: f64) -> f64 {
    10f64.powf(x)
}

/// MOS (conversational quality estimate) from R, G.107 Annex B (B-4):
/// 1 for R < 0, 4.5 for R > 100, else `1 + 0.035R + R(R − 60)(100 − R)·7·10⁻⁶`.
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    }
}

/// `BurstR` from the loss percentage and the mean length of loss bursts (in packets).
///
/// G.107 §7.5 defines BurstR as the average length of observed bursts divided by the average
/// length expected under random loss, `1 / (1 − Ppl)`; with a two-state Markov model this is
/// `1 / (p + q)`. Returns 1 (random) when there was no loss.
pub fn burst_ratio(ppl_percent: f64, mean_burst_len: f64) -> f64 {
    let p = (ppl_percent / 100.0).clamp(0.0, 1.0);
    if p <= 0.0 || p >= 1.0 || mean_burst_len <= 0.0 {
        return 1.0;
    }
    (mean_burst_len * (1.0 - p)).max(f64::MIN_POSITIVE)
}

/// Counts received and lost packets in sequence order and the loss bursts among them, to feed
/// `Ppl` and `BurstR` of the E-model. Fed with *network* loss (sequence numbers that never
/// arrived, [`LossPattern`]), never with playout concealment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossTracker {
    received: u64,
    lost: u64,
    bursts: u64,
    in_burst: bool,
    run: u64,
    max_run: u64,
}

impl LossTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one packet slot in sequence order: received or lost.
    pub fn observe(&mut self, lost: bool) {
        if lost {
            self.lost += 1;
            if !self.in_burst {
                self.bursts += 1;
                self.run = 0;
            }
            self.run += 1;
            self.max_run = self.max_run.max(self.run);
        } else {
            self.received += 1;
            self.run = 0;
        }
        self.in_burst = lost;
    }

    /// Records `n` consecutive lost packets (e.g. a sequence-number gap).
    pub fn observe_lost(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        if !self.in_burst {
            self.bursts += 1;
            self.run = 0;
        }
        self.lost += n;
        self.run += n;
        self.max_run = self.max_run.max(self.run);
        self.in_burst = true;
    }

    /// Slots observed lost.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Slots observed received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Loss bursts (maximal runs of consecutive lost slots; a run cut by a
    /// [`LossTracker::new`] restart counts in both halves).
    pub fn bursts(&self) -> u64 {
        self.bursts
    }

    /// The longest run of consecutive lost slots.
    pub fn max_burst(&self) -> u64 {
        self.max_run
    }

    /// Packet loss in percent.
    pub fn loss_percent(&self) -> f64 {
        let total = self.received + self.lost;
        if total == 0 {
            0.0
        } else {
            100.0 * self.lost as f64 / total as f64
        }
    }

    /// Mean length of loss bursts in packets (0 without loss).
    pub fn mean_burst_len(&self) -> f64 {
        if self.bursts == 0 {
            0.0
        } else {
            self.lost as f64 / self.bursts as f64
        }
    }

    /// The G.107 burst ratio of what was observed.
    pub fn burst_ratio(&self) -> f64 {
        burst_ratio(self.loss_percent(), self.mean_burst_len())
    }

    /// An E-model for `codec` with the observed loss and a one-way delay.
    pub fn emodel(&self, codec: Codec, plc: bool, one_way_delay_ms: f64) -> EModel {
        EModel::for_codec(codec, plc)
            .with_loss(self.loss_percent(), self.burst_ratio())
            .with_one_way_delay(one_way_delay_ms)
    }
}

/// Sequence numbers still open to reordering in a [`LossPattern`]: a packet more than this many
/// behind the highest one seen is decided (received or lost) for the burst pattern. It is
/// larger than the jitter buffer holds (200 ms is 20 packets of 10 ms), so a reordering the
/// buffer absorbs never reads as a loss burst.
pub const REORDER_WINDOW: usize = 32;

/// Turns the sequence numbers that arrived into the stream's received/lost pattern (RFC 3550
/// sequence gaps), for the burst statistics of G.107 (`BurstR`) and the longest burst.
///
/// Each extended sequence number from the first one received up to the highest is decided once
/// it falls [`REORDER_WINDOW`] behind the highest (or at [`LossPattern::flush`]); a packet that
/// arrives before its number is decided fills its slot (reordering, not loss). A packet older
/// than that is ignored here (RFC 3550's received count still has it). Playout (jitter buffer
/// underruns, late discards) plays no part.
#[derive(Debug, Clone, Default)]
pub struct LossPattern {
    /// The first undecided sequence number (`None` before the first packet).
    next: Option<u64>,
    /// Undecided slots from `next` on: whether each arrived.
    pending: std::collections::VecDeque<bool>,
}

/// What one arrival was to a [`LossPattern`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A number not seen before (in order or filling a gap).
    New,
    /// A number already received and not yet decided: a duplicate.
    Duplicate,
    /// Older than the undecided window: already decided, so whether it is a duplicate or a very
    /// late packet cannot be told.
    Old,
}

/// A forward jump larger than this (RFC 3550's `MAX_DROPOUT` is 3000) starts the pattern
/// afresh instead of deciding that many slots lost.
const MAX_GAP: u64 = 3000;

impl LossPattern {
    /// An empty pattern.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the arrival of extended sequence number `seq`; `sink` receives every slot this
    /// decides, in sequence order (`true`: lost). Returns what the arrival was: a new number, a
    /// duplicate of one still undecided, or one too old to tell.
    pub fn on_received(&mut self, seq: u64, mut sink: impl FnMut(bool)) -> Arrival {
        let next = match self.next {
            Some(n) => n,
            None => {
                self.next = Some(seq);
                seq
            }
        };
        if seq < next {
            return Arrival::Old;
        }
        let idx = seq - next;
        if idx > MAX_GAP + REORDER_WINDOW as u64 {
            // Not a gap but a jump (a sender restart the caller did not tell us about): decide
            // what is pending and start again here.
            self.reset(&mut sink);
            self.next = Some(seq);
            self.pending.push_back(true);
            return Arrival::New;
        }
        let idx = idx as usize;
        let mut arrival = Arrival::New;
        if idx < self.pending.len() {
            if self.pending[idx] {
                arrival = Arrival::Duplicate;
            }
            self.pending[idx] = true;
        } else {
            self.pending.resize(idx, false);
            self.pending.push_back(true);
        }
        while self.pending.len() > REORDER_WINDOW {
            if let Some(arrived) = self.pending.pop_front() {
                sink(!arrived);
                self.next = self.next.map(|n| n + 1);
            }
        }
        arrival
    }

    /// Decides every pending slot (the end of the call); packets older than the highest one
    /// seen are ignored from now on.
    pub fn flush(&mut self, mut sink: impl FnMut(bool)) {
        let n = self.pending.len() as u64;
        for arrived in self.pending.drain(..) {
            sink(!arrived);
        }
        self.next = self.next.map(|s| s + n);
    }

    /// Decides every pending slot and forgets the position: the next packet starts a new
    /// pattern (a new SSRC, a sequence restart).
    pub fn reset(&mut self, sink: impl FnMut(bool)) {
        self.flush(sink);
        self.next = None;
    }
}
