//! L16: 16-bit signed linear PCM in network byte order (RFC 3551 §4.5.11: "samples are
//! represented ... in two's complement notation and network byte order").

use super::CodecError;

/// Appends `pcm` as big-endian 16-bit samples to `out`.
pub fn encode(pcm: &[i16], out: &mut Vec<u8>) {
    out.reserve(pcm.len() * 2);
    for &s in pcm {
        out.extend_from_slice(&s.to_be_bytes());
    }
}

/// Appends the samples of a big-endian payload with `channels` interleaved channels to `out`.
/// Errors (appending nothing) when the payload is not a whole number of multi-channel samples.
pub fn decode(payload: &[u8], channels: u8, out: &mut Vec<i16>) -> Result<(), CodecError> {
    let frame = 2 * channels.max(1) as usize;
    if !payload.len().is_multiple_of(frame) {
        return Err(CodecError::TruncatedL16 {
            len: payload.len(),
            channels,
        });
    }
    out.extend(
        payload
            .chunks_exact(2)
            .map(|b| i16::from_be_bytes([b[0], b[1]])),
    );
    Ok(())
}
