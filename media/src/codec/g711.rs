//! G.711 µ-law (PCMU) and A-law (PCMA), bit-exact with the ITU-T G.191 reference (`g711.c`).
//!
//! The ITU reference works on 16-bit linear samples: A-law looks at the top 12 magnitude bits
//! (`x >> 4`, a 13-bit signed quantity) and µ-law at the top 13 (`x >> 2`, 14-bit signed), and a
//! negative sample is folded with one's complement (`!x`), not negation. Because both encoders
//! depend only on `x >> 2`, one 16 384-entry table per law indexed by the top 14 bits of the
//! sample's two's-complement pattern covers all 65 536 inputs. Decoding is a 256-entry table.
//! All four tables are built at compile time by `const fn`s (no start-up cost, no locks).

/// Number of encode table entries: one per value of the top 14 bits of an `i16`.
const ENCODE_ENTRIES: usize = 1 << 14;

/// µ-law code of one 16-bit linear sample, computed arithmetically (used to build the table).
///
/// G.191 `ulaw_compress`: magnitude = (x or !x) >> 2, biased by 33, clipped to 0x1FFF; the
/// segment is the position of the highest set bit above bit 5; the code is the one's complement
/// of (segment, 4 mantissa bits) with the sign bit set for non-negative input.
const fn ulaw_encode_arith(x: i16) -> u8 {
    let folded: i32 = if x < 0 { !(x as i32) } else { x as i32 };
    let mut biased = (folded >> 2) + 33;
    if biased > 0x1FFF {
        biased = 0x1FFF;
    }
    // biased is in 33..=0x1FFF: its highest set bit is bit 5..=12; the segment number is
    // (bit index - 4), i.e. 1..=8 as in G.191's `segno`.
    let top_bit = 31 - (biased as u32).leading_zeros() as i32;
    let segno = top_bit - 4;
    let high = 8 - segno;
    let low = 0x0F - ((biased >> segno) & 0x0F);
    let mut code = (high << 4) | low;
    if x >= 0 {
        code |= 0x80;
    }
    code as u8
}

/// A-law code of one 16-bit linear sample, computed arithmetically (used to build the table).
///
/// G.191 `alaw_compress`: magnitude = (x or !x) >> 4; values up to 15 are segment 0; above,
/// the segment is found from the highest set bit and the mantissa is the 4 bits below it; the
/// sign bit is set for non-negative input and the even bits are inverted (XOR 0x55).
const fn alaw_encode_arith(x: i16) -> u8 {
    let folded: i32 = if x < 0 { !(x as i32) } else { x as i32 };
    let mag = folded >> 4; // 0..=2047
    let mut code = if mag > 15 {
        // mag in 16..=2047: highest set bit 4..=10 gives exponent 1..=7.
        let top_bit = 31 - (mag as u32).leading_zeros() as i32;
        let exp = top_bit - 3;
        let mant = (mag >> (exp - 1)) & 0x0F;
        (exp << 4) | mant
    } else {
        mag
    };
    if x >= 0 {
        code |= 0x80;
    }
    (code ^ 0x55) as u8
}

/// Linear value of a µ-law code (G.191 `ulaw_expand`).
const fn ulaw_decode_arith(code: u8) -> i16 {
    let inverted = !code as i32;
    let exponent = (inverted >> 4) & 0x07;
    let mantissa = inverted & 0x0F;
    let step = 4 << (exponent + 1);
    let magnitude = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
    if code < 0x80 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Linear value of an A-law code (G.191 `alaw_expand`).
const fn alaw_decode_arith(code: u8) -> i16 {
    let ix = (code ^ 0x55) as i32 & 0x7F;
    let exponent = ix >> 4;
    let mut mant = ix & 0x0F;
    if exponent > 0 {
        mant += 16;
    }
    mant = (mant << 4) + 8;
    if exponent > 1 {
        mant <<= exponent - 1;
    }
    if code > 127 {
        mant as i16
    } else {
        -mant as i16
    }
}

/// Index into an encode table: the top 14 bits of the sample's bit pattern.
#[inline(always)]
fn encode_index(x: i16) -> usize {
    ((x as u16) >> 2) as usize
}

const fn build_encode_table(alaw: bool) -> [u8; ENCODE_ENTRIES] {
    let mut table = [0u8; ENCODE_ENTRIES];
    let mut i = 0;
    while i < ENCODE_ENTRIES {
        // Entry i stands for every sample whose top 14 bits are i; the low 2 bits never change
        // the result (both laws look at x >> 2 or coarser), so use them as zero.
        let x = ((i as u16) << 2) as i16;
        table[i] = if alaw {
            alaw_encode_arith(x)
        } else {
            ulaw_encode_arith(x)
        };
        i += 1;
    }
    table
}

const fn build_decode_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw {
            alaw_decode_arith(i as u8)
        } else {
            ulaw_decode_arith(i as u8)
        };
        i += 1;
    }
    table
}

static ULAW_ENCODE: [u8; ENCODE_ENTRIES] = build_encode_table(false);
static ALAW_ENCODE: [u8; ENCODE_ENTRIES] = build_encode_table(true);
static ULAW_DECODE: [i16; 256] = build_decode_table(false);
static ALAW_DECODE: [i16; 256] = build_decode_table(true);

/// µ-law code of one 16-bit linear sample (G.191 `linear2ulaw`). µ-law of 0 is 0xFF.
#[inline]
pub fn ulaw_encode(x: i16) -> u8 {
    ULAW_ENCODE[encode_index(x)]
}

/// A-law code of one 16-bit linear sample (G.191 `linear2alaw`). A-law of 0 is 0xD5.
#[inline]
pub fn alaw_encode(x: i16) -> u8 {
    ALAW_ENCODE[encode_index(x)]
}

/// 16-bit linear value of a µ-law code (G.191 `ulaw2linear`).
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[code as usize]
}

/// 16-bit linear value of an A-law code (G.191 `alaw2linear`).
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE[code as usize]
}

/// Appends the µ-law codes of `pcm` to `out` (one byte per sample).
pub fn ulaw_encode_slice(pcm: &[i16], out: &mut Vec<u8>) {
    // Size once, then a plain indexed loop: no per-element capacity check.
    let start = out.len();
    out.resize(start + pcm.len(), 0);
    for (dst, &v) in out[start..].iter_mut().zip(pcm) {
        *dst = ulaw_encode(v);
    }
}

/// Appends the A-law codes of `pcm` to `out` (one byte per sample).
pub fn alaw_encode_slice(pcm: &[i16], out: &mut Vec<u8>) {
    // Size once, then a plain indexed loop: no per-element capacity check.
    let start = out.len();
    out.resize(start + pcm.len(), 0);
    for (dst, &v) in out[start..].iter_mut().zip(pcm) {
        *dst = alaw_encode(v);
    }
}

/// Appends the linear samples of the µ-law `payload` to `out`.
pub fn ulaw_decode_slice(payload: &[u8], out: &mut Vec<i16>) {
    // Size once, then a plain indexed loop: no per-element capacity check.
    let start = out.len();
    out.resize(start + payload.len(), 0);
    for (dst, &v) in out[start..].iter_mut().zip(payload) {
        *dst = ulaw_decode(v);
    }
}

/// Appends the linear samples of the A-law `payload` to `out`.
pub fn alaw_decode_slice(payload: &[u8], out: &mut Vec<i16>) {
    // Size once, then a plain indexed loop: no per-element capacity check.
    let start = out.len();
    out.resize(start + payload.len(), 0);
    for (dst, &v) in out[start..].iter_mut().zip(payload) {
        *dst = alaw_decode(v);
    }
}

/// The µ-law code of silence (the encoding of 0), used to pad frames.
pub const ULAW_SILENCE: u8 = 0xFF;
/// The A-law code of silence (the encoding of 0), used to pad frames.
pub const ALAW_SILENCE: u8 = 0xD5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_arithmetic_for_every_input() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(ulaw_encode(x), ulaw_encode_arith(x), "ulaw {x}");
            assert_eq!(alaw_encode(x), alaw_encode_arith(x), "alaw {x}");
        }
    }

    #[test]
    fn silence_codes() {
        assert_eq!(ulaw_encode(0), ULAW_SILENCE);
        assert_eq!(alaw_encode(0), ALAW_SILENCE);
    }
}
