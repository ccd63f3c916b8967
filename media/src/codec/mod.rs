//! Audio codecs: G.711 µ-law/A-law (our own tables), G.722 (our own SB-ADPCM), L16, and a
//! resampler for prompts recorded at another rate.
//!
//! [`Codec`] names a codec and knows its RTP facts (static payload type, RTP clock rate,
//! `rtpmap` encoding name). [`Encoder`] and [`Decoder`] are enums over the concrete codecs, so
//! the per-packet path is a `match`, never a `dyn` call. G.722 carries state; G.711 and L16 do
//! not, but they go through the same two enums so a session can hold one of each per stream.
//!
//! ```
//! use media::codec::{Codec, Encoder, Decoder};
//! let codec = Codec::Pcmu;
//! let mut enc = Encoder::new(codec);
//! let mut dec = Decoder::new(codec);
//! let pcm = vec![0i16; codec.samples_per_frame(20)];
//! let mut payload = Vec::new();
//! enc.encode(&pcm, &mut payload);
//! assert_eq!(payload.len(), 160);
//! let mut back = Vec::new();
//! dec.decode(&payload, &mut back).unwrap();
//! assert_eq!(back.len(), 160);
//! ```

pub mod g711;
pub mod g722;
pub mod l16;
pub mod resample;

pub use g722::{G722Decoder, G722Encoder};
pub use resample::{Resampler, resample};

/// Errors from the codec module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// An L16 payload with an odd number of bytes (or not a whole number of frames).
    #[error("L16 payload of {len} bytes is not a whole number of {channels}-channel samples")]
    TruncatedL16 {
        /// Payload length in bytes.
        len: usize,
        /// Channels of the stream.
        channels: u8,
    },
    /// A resampling ratio we do not build tables for, or a zero rate.
    #[error("unsupported resampling ratio {from} Hz -> {to} Hz")]
    UnsupportedRate {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
    },
}

/// A codec with the parameters that change its wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, "PCMU", static payload type 0, 8000 Hz.
    Pcmu,
    /// G.711 A-law, "PCMA", static payload type 8, 8000 Hz.
    Pcma,
    /// G.722 at 64 kbit/s, "G722", static payload type 9; samples at 16 kHz but its RTP clock
    /// rate is 8000 Hz (RFC 3551 §4.5.2).
    G722,
    /// Uncompressed 16-bit big-endian linear PCM, "L16" (RFC 3551 §4.5.11).
    L16 {
        /// Sampling rate in Hz, also the RTP clock rate.
        rate: u32,
        /// Number of interleaved channels.
        channels: u8,
    },
}

impl Codec {
    /// The static RTP payload type (RFC 3551 table 4), or `None` when the codec needs a
    /// dynamic one negotiated in SDP (L16 other than 44.1 kHz mono/stereo).
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            Codec::L16 {
                rate: 44100,
                channels: 2,
            } => Some(10),
            Codec::L16 {
                rate: 44100,
                channels: 1,
            } => Some(11),
            Codec::L16 { .. } => None,
        }
    }

    /// The codec of a static payload type, if it is one of ours.
    pub fn from_static_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            9 => Some(Codec::G722),
            10 => Some(Codec::L16 {
                rate: 44100,
                channels: 2,
            }),
            11 => Some(Codec::L16 {
                rate: 44100,
                channels: 1,
            }),
            _ => None,
        }
    }

    /// The encoding name of the `a=rtpmap` attribute (`PCMU`, `PCMA`, `G722`, `L16`).
    pub fn rtpmap_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::L16 { .. } => "L16",
        }
    }

    /// The codec named by an `a=rtpmap:<pt> <name>/<clock>[/<channels>]` line. Names compare
    /// case-insensitively (RFC 4855 §3: "encoding names are case-insensitive").
    pub fn from_rtpmap(name: &str, clock_rate: u32, channels: Option<u8>) -> Option<Codec> {
        let channels = channels.unwrap_or(1);
        if name.eq_ignore_ascii_case("PCMU") && clock_rate == 8000 && channels == 1 {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") && clock_rate == 8000 && channels == 1 {
            Some(Codec::Pcma)
        } else if name.eq_ignore_ascii_case("G722") && clock_rate == 8000 && channels == 1 {
            Some(Codec::G722)
        } else if name.eq_ignore_ascii_case("L16") && clock_rate > 0 && channels > 0 {
            Some(Codec::L16 {
                rate: clock_rate,
                channels,
            })
        } else {
            None
        }
    }

    /// The RTP clock rate (timestamp units per second): 8000 for G.711 and G.722, the
    /// sampling rate for L16.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => 8000,
            Codec::L16 { rate, .. } => rate,
        }
    }

    /// The PCM sampling rate the encoder takes and the decoder gives (16 000 for G.722).
    pub fn sample_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::G722 => 16000,
            Codec::L16 { rate, .. } => rate,
        }
    }

    /// Number of channels (1 except for multi-channel L16).
    pub fn channels(self) -> u8 {
        match self {
            Codec::L16 { channels, .. } => channels,
            _ => 1,
        }
    }

    /// PCM samples (per channel) in one frame of `ptime_ms` milliseconds.
    pub fn samples_per_frame(self, ptime_ms: u32) -> usize {
        (self.sample_rate() as u64 * ptime_ms as u64 / 1000) as usize
    }

    /// RTP timestamp increment of one frame of `ptime_ms` milliseconds.
    pub fn timestamp_increment(self, ptime_ms: u32) -> u32 {
        (self.clock_rate() as u64 * ptime_ms as u64 / 1000) as u32
    }

    /// Payload bytes of one frame of `ptime_ms` milliseconds.
    pub fn payload_bytes(self, ptime_ms: u32) -> usize {
        match self {
            Codec::Pcmu | Codec::Pcma => self.samples_per_frame(ptime_ms),
            Codec::G722 => self.samples_per_frame(ptime_ms) / 2,
            Codec::L16 { channels, .. } => self.samples_per_frame(ptime_ms) * channels as usize * 2,
        }
    }
}

/// An encoder for one outbound stream. `match`-dispatched; G.722 holds its ADPCM state.
#[derive(Debug, Clone)]
pub enum Encoder {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722 (boxed: the ADPCM state is a few hundred bytes).
    G722(Box<G722Encoder>),
    /// L16 big-endian; samples are taken interleaved as given.
    L16,
}

impl Encoder {
    /// A fresh encoder for `codec`.
    pub fn new(codec: Codec) -> Self {
        match codec {
            Codec::Pcmu => Encoder::Pcmu,
            Codec::Pcma => Encoder::Pcma,
            Codec::G722 => Encoder::G722(Box::default()),
            Codec::L16 { .. } => Encoder::L16,
        }
    }

    /// Encodes `pcm` (at the codec's [`Codec::sample_rate`]) and appends the payload to `out`.
    #[inline]
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        match self {
            Encoder::Pcmu => g711::ulaw_encode_slice(pcm, out),
            Encoder::Pcma => g711::alaw_encode_slice(pcm, out),
            Encoder::G722(enc) => enc.encode(pcm, out),
            Encoder::L16 => l16::encode(pcm, out),
        }
    }
}

/// A decoder for one inbound stream. `match`-dispatched; G.722 holds its ADPCM state.
#[derive(Debug, Clone)]
pub enum Decoder {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722 (boxed: the ADPCM state is a few hundred bytes).
    G722(Box<G722Decoder>),
    /// L16 big-endian with this many channels (to check payload sizes).
    L16 {
        /// Interleaved channels.
        channels: u8,
    },
}

impl Decoder {
    /// A fresh decoder for `codec`.
    pub fn new(codec: Codec) -> Self {
        match codec {
            Codec::Pcmu => Decoder::Pcmu,
            Codec::Pcma => Decoder::Pcma,
            Codec::G722 => Decoder::G722(Box::default()),
            Codec::L16 { channels, .. } => Decoder::L16 { channels },
        }
    }

    /// Decodes `payload` and appends the PCM (at the codec's [`Codec::sample_rate`]) to `out`.
    /// Only L16 can fail: a payload that is not a whole number of samples for every channel
    /// is rejected and nothing is appended.
    #[inline]
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        match self {
            Decoder::Pcmu => g711::ulaw_decode_slice(payload, out),
            Decoder::Pcma => g711::alaw_decode_slice(payload, out),
            Decoder::G722(dec) => dec.decode(payload, out),
            Decoder::L16 { channels } => l16::decode(payload, *channels, out)?,
        }
        Ok(())
    }
}
