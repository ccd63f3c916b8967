//! G.722 sub-band ADPCM (ITU-T G.722), 64 kbit/s mode only.
//!
//! 16 kHz linear PCM in, one byte per pair of input samples out (6 low-band bits, 2 high-band
//! bits). The transmit QMF splits the signal into two 8 kHz sub-bands, each coded by an adaptive
//! (ADPCM) quantiser with a pole-zero predictor; the decoder mirrors the predictor and rebuilds
//! the 16 kHz signal with the receive QMF. The block names in comments (SUBTRA, QUANTL, INVQAL,
//! LOGSCL, SCALEL, RECONS, PARREC, UPPOL1/2, UPZERO, DELAYA, FILTEP, FILTEZ, PREDIC) are the
//! ones of G.722 §3–§4 and of the classic public-domain reference implementation.
//!
//! RTP note (RFC 3551 §4.5.2): the RTP clock rate of G.722 is 8000 Hz although it samples at
//! 16 kHz, "for historical reasons"; one 20 ms frame is 320 samples in, 160 bytes out, and the
//! RTP timestamp advances by 160.
//!
//! Both directions are stateful: keep one [`G722Encoder`] / [`G722Decoder`] per stream.
//!
//! Why our own: the `audio-codec` crate (0.4) has a G.722, but its default build also compiles
//! G.729 from C (`g729-sys`) and Opus; the SB-ADPCM is ~300 lines. The output is bit-exact with
//! spandsp's encoder and decoder (which pass the ITU-T test vectors): see the golden test
//! `g722_is_bit_exact_with_spandsp` in `tests/codec.rs`.

/// QMF coefficients (G.722 Table 11, halved symmetric set as in the reference code).
const QMF_COEFFS: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];

/// Low-band quantiser decision levels (Table 6, QUANTL), scaled for comparison with det.
const Q6: [i32; 32] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0, 0,
];
/// Low-band 6-bit code for a negative difference, by decision interval.
const ILN: [u8; 32] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4, 0,
];
/// Low-band 6-bit code for a non-negative difference, by decision interval.
const ILP: [u8; 32] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32, 0,
];
/// Log-scale factor multipliers of the low band (LOGSCL).
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
/// Maps the 4-bit low-band code to its WL index.
const RL42: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// Inverse log table used by SCALEL / SCALEH.
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// 4-bit inverse quantiser outputs (INVQAL, used for prediction).
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
/// 6-bit inverse quantiser outputs (INVQBL, used for the decoder's reconstructed signal).
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
/// 2-bit high-band inverse quantiser outputs (INVQAH).
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
/// High-band code for a negative / non-negative difference (QUANTH).
const IHN: [u8; 3] = [0, 1, 0];
const IHP: [u8; 3] = [0, 3, 2];
/// Log-scale factor multipliers of the high band (LOGSCH).
const WH: [i32; 3] = [0, -214, 798];
/// Maps the 2-bit high-band code to its WH index.
const RH2: [usize; 4] = [2, 1, 2, 1];

#[inline(always)]
fn saturate(v: i32) -> i32 {
    v.clamp(i16::MIN as i32, i16::MAX as i32)
}

/// Adaptive predictor and scale-factor state of one sub-band.
#[derive(Debug, Clone)]
struct Band {
    /// Signal estimate (PREDIC output).
    s: i32,
    /// Pole-section output.
    sp: i32,
    /// Zero-section output.
    sz: i32,
    /// Reconstructed signal history.
    r: [i32; 3],
    /// Pole predictor coefficients a1, a2 (index 0 unused).
    a: [i32; 3],
    ap: [i32; 3],
    /// Partial reconstructed signal history.
    p: [i32; 3],
    /// Quantised difference history.
    d: [i32; 7],
    /// Zero predictor coefficients b1..b6 (index 0 unused).
    b: [i32; 7],
    bp: [i32; 7],
    /// Log scale factor.
    nb: i32,
    /// Scale factor.
    det: i32,
}

impl Band {
    fn new(det: i32) -> Self {
        Band {
            s: 0,
            sp: 0,
            sz: 0,
            r: [0; 3],
            a: [0; 3],
            ap: [0; 3],
            p: [0; 3],
            d: [0; 7],
            b: [0; 7],
            bp: [0; 7],
            nb: 0,
            det,
        }
    }

    /// LOGSCL/LOGSCH + SCALEL/SCALEH: adapt the scale factor. `nb_max` and `shift` differ
    /// between the low band (18432, 8) and the high band (22528, 10).
    #[inline(always)]
    fn adapt_scale(&mut self, weight: i32, nb_max: i32, shift: i32) {
        let nb = ((self.nb * 127) >> 7) + weight;
        self.nb = nb.clamp(0, nb_max);
        let wd1 = ((self.nb >> 6) & 31) as usize;
        let wd2 = shift - (self.nb >> 11);
        let wd3 = if wd2 < 0 {
            ILB[wd1] << -wd2
        } else {
            ILB[wd1] >> wd2
        };
        self.det = wd3 << 2;
    }

    /// Block 4: reconstruct, adapt the pole and zero predictors and compute the next estimate
    /// from the quantised difference `d`.
    #[inline(always)]
    fn block4(&mut self, d: i32) {
        // RECONS
        self.d[0] = d;
        self.r[0] = saturate(self.s + d);
        // PARREC
        self.p[0] = saturate(self.sz + d);

        // UPPOL2
        let sg0 = self.p[0] >> 15;
        let sg1 = self.p[1] >> 15;
        let sg2 = self.p[2] >> 15;
        let wd1 = saturate(self.a[1] << 2);
        let mut wd2 = if sg0 == sg1 { -wd1 } else { wd1 };
        if wd2 > 32767 {
            wd2 = 32767;
        }
        let mut wd3 = (wd2 >> 7) + if sg0 == sg2 { 128 } else { -128 };
        wd3 += (self.a[2] * 32512) >> 15;
        self.ap[2] = wd3.clamp(-12288, 12288);

        // UPPOL1
        let wd1 = if sg0 == sg1 { 192 } else { -192 };
        let wd2 = (self.a[1] * 32640) >> 15;
        let limit = saturate(15360 - self.ap[2]);
        self.ap[1] = saturate(wd1 + wd2).clamp(-limit, limit);

        // UPZERO
        let step = if d == 0 { 0 } else { 128 };
        let sgd = d >> 15;
        for i in 1..7 {
            let sgi = self.d[i] >> 15;
            let wd2 = if sgi == sgd { step } else { -step };
            let wd3 = (self.b[i] * 32640) >> 15;
            self.bp[i] = saturate(wd2 + wd3);
        }

        // DELAYA
        for i in (1..7).rev() {
            self.d[i] = self.d[i - 1];
            self.b[i] = self.bp[i];
        }
        for i in (1..3).rev() {
            self.r[i] = self.r[i - 1];
            self.p[i] = self.p[i - 1];
            self.a[i] = self.ap[i];
        }

        // FILTEP
        let wd1 = (self.a[1] * saturate(self.r[1] + self.r[1])) >> 15;
        let wd2 = (self.a[2] * saturate(self.r[2] + self.r[2])) >> 15;
        self.sp = saturate(wd1 + wd2);

        // FILTEZ
        let mut sz = 0;
        for i in (1..7).rev() {
            sz += (self.b[i] * saturate(self.d[i] + self.d[i])) >> 15;
        }
        self.sz = saturate(sz);

        // PREDIC
        self.s = saturate(self.sp + self.sz);
    }
}

/// G.722 64 kbit/s encoder: 16 kHz PCM in, one code byte per two samples out.
#[derive(Debug, Clone)]
pub struct G722Encoder {
    low: Band,
    high: Band,
    /// QMF delay line.
    x: [i32; 24],
    /// An odd sample left over from the previous call, waiting for its partner.
    pending: Option<i16>,
}

impl Default for G722Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Encoder {
    /// A fresh encoder (reset state as G.722 §3.6 prescribes: det 32 low, 8 high).
    pub fn new() -> Self {
        G722Encoder {
            low: Band::new(32),
            high: Band::new(8),
            x: [0; 24],
            pending: None,
        }
    }

    /// Encodes `pcm` (16 kHz) and appends one byte per sample pair to `out`. An odd trailing
    /// sample is kept and paired with the first sample of the next call.
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        out.reserve(pcm.len().div_ceil(2));
        let mut rest = pcm;
        if let Some(first) = self.pending.take() {
            match rest.split_first() {
                Some((&second, tail)) => {
                    let code = self.encode_pair(first, second);
                    out.push(code);
                    rest = tail;
                }
                None => {
                    self.pending = Some(first);
                    return;
                }
            }
        }
        let mut pairs = rest.chunks_exact(2);
        for pair in &mut pairs {
            let code = self.encode_pair(pair[0], pair[1]);
            out.push(code);
        }
        if let [last] = pairs.remainder() {
            self.pending = Some(*last);
        }
    }

    #[inline]
    fn encode_pair(&mut self, s0: i16, s1: i16) -> u8 {
        // Transmit QMF: shift in two samples, compute one low and one high sub-band sample.
        self.x.copy_within(2.., 0);
        self.x[22] = s0 as i32;
        self.x[23] = s1 as i32;
        let mut sumodd = 0;
        let mut sumeven = 0;
        for (pair, (&c, &c_rev)) in self
            .x
            .chunks_exact(2)
            .zip(QMF_COEFFS.iter().zip(QMF_COEFFS.iter().rev()))
        {
            sumodd += pair[0] * c;
            sumeven += pair[1] * c_rev;
        }
        // The QMF has a DC gain of 4096 per branch and the two branches are summed (>> 13);
        // one more bit scales the 16-bit input to the 15-bit range G.722's ADPCM works on.
        let xlow = (sumeven + sumodd) >> 14;
        let xhigh = (sumeven - sumodd) >> 14;

        // Low band. SUBTRA
        let el = saturate(xlow - self.low.s);
        // QUANTL: find the decision interval of |el| scaled by det.
        let wd = if el >= 0 { el } else { -(el + 1) };
        // The first decision level above |el| (levels 1..30 rise monotonically, so a binary
        // search finds the same interval as the reference's linear scan).
        let det = self.low.det;
        let i = 1 + Q6[1..30].partition_point(|&q| wd >= (q * det) >> 12);
        let ilow = if el < 0 { ILN[i] } else { ILP[i] };
        // INVQAL
        let ril = (ilow >> 2) as usize;
        let dlow = (self.low.det * QM4[ril]) >> 15;
        // LOGSCL + SCALEL
        self.low.adapt_scale(WL[RL42[ril]], 18432, 8);
        self.low.block4(dlow);

        // High band. SUBTRA
        let eh = saturate(xhigh - self.high.s);
        // QUANTH
        let wd = if eh >= 0 { eh } else { -(eh + 1) };
        let mih = if wd >= (564 * self.high.det) >> 12 {
            2
        } else {
            1
        };
        let ihigh = if eh < 0 { IHN[mih] } else { IHP[mih] };
        // INVQAH
        let dhigh = (self.high.det * QM2[ihigh as usize]) >> 15;
        // LOGSCH + SCALEH
        self.high.adapt_scale(WH[RH2[ihigh as usize]], 22528, 10);
        self.high.block4(dhigh);

        (ihigh << 6) | ilow
    }
}

/// G.722 64 kbit/s decoder: one code byte in, two 16 kHz samples out.
#[derive(Debug, Clone)]
pub struct G722Decoder {
    low: Band,
    high: Band,
    /// Receive QMF delay line.
    x: [i32; 24],
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Decoder {
    /// A fresh decoder.
    pub fn new() -> Self {
        G722Decoder {
            low: Band::new(32),
            high: Band::new(8),
            x: [0; 24],
        }
    }

    /// Decodes `payload` and appends two 16 kHz samples per byte to `out`. Every byte value is
    /// a valid code, so decoding cannot fail.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        out.reserve(payload.len() * 2);
        for &code in payload {
            let (a, b) = self.decode_byte(code);
            out.push(a);
            out.push(b);
        }
    }

    #[inline]
    fn decode_byte(&mut self, code: u8) -> (i16, i16) {
        let ilow6 = (code & 0x3F) as usize;
        let ihigh = ((code >> 6) & 0x03) as usize;

        // Low band. INVQBL (6-bit) for the output signal.
        let wd2 = (self.low.det * QM6[ilow6]) >> 15;
        // RECONS + LIMIT
        let rlow = (self.low.s + wd2).clamp(-16384, 16383);
        // INVQAL (4-bit) for the predictor.
        let ril = ilow6 >> 2;
        let dlow = (self.low.det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril]], 18432, 8);
        self.low.block4(dlow);

        // High band. INVQAH
        let dhigh = (self.high.det * QM2[ihigh]) >> 15;
        let rhigh = (dhigh + self.high.s).clamp(-16384, 16383);
        self.high.adapt_scale(WH[RH2[ihigh]], 22528, 10);
        self.high.block4(dhigh);

        // Receive QMF.
        self.x.copy_within(2.., 0);
        self.x[22] = rlow + rhigh;
        self.x[23] = rlow - rhigh;
        let mut xout1 = 0;
        let mut xout2 = 0;
        for (pair, (&c, &c_rev)) in self
            .x
            .chunks_exact(2)
            .zip(QMF_COEFFS.iter().zip(QMF_COEFFS.iter().rev()))
        {
            xout2 += pair[0] * c;
            xout1 += pair[1] * c_rev;
        }
        // DC gain 4096 (>> 12), less one bit to undo the encoder's 15-bit scaling.
        (saturate(xout1 >> 11) as i16, saturate(xout2 >> 11) as i16)
    }
}
