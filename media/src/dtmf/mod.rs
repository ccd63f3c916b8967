//! DTMF: RFC 4733 telephone-events (send and receive) and in-band tones (Goertzel detector
//! meeting ITU-T Q.24, and a generator).
//!
//! - [`rfc4733`]: the 4-byte event payload ([`TelephoneEvent`]), the receiver that turns a
//!   stream of event packets into one report per key press ([`DtmfReceiver`]), and the sender
//!   that turns a key press into the packet sequence ([`DtmfSender`]).
//! - [`inband`]: [`InbandDetector`] finds digits in decoded PCM; [`dtmf_tones`] builds a
//!   [`crate::tone::ToneGenerator`] that plays digits in-band.

pub mod inband;
pub mod rfc4733;

pub use inband::{InbandDetector, InbandDigit, dtmf_tones};
pub use rfc4733::{DtmfEvent, DtmfPacket, DtmfReceiver, DtmfSender, EndReason, TelephoneEvent};

/// Errors from the DTMF module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// A telephone-event payload shorter than the 4 bytes RFC 4733 §2.3 defines.
    #[error("telephone-event payload of {0} bytes is shorter than 4")]
    Truncated(usize),
    /// A character that is not a DTMF key (0-9, *, #, A-D).
    #[error("{0:?} is not a DTMF digit")]
    NotADigit(char),
    /// A zero ptime or clock rate given to the sender.
    #[error("ptime and clock rate must be non-zero")]
    BadTiming,
}

/// One of the 16 DTMF keys. Its RFC 4733 event code is its position in
/// `0 1 2 3 4 5 6 7 8 9 * # A B C D` (RFC 4733 §3.2, table 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digit(u8);

const DIGIT_CHARS: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
];

impl Digit {
    /// The digit of an RFC 4733 event code, if the code is a DTMF key (0..=15).
    pub fn from_event(code: u8) -> Option<Digit> {
        (code < 16).then_some(Digit(code))
    }

    /// The digit of a character (`0`-`9`, `*`, `#`, `A`-`D`, case-insensitive).
    pub fn from_char(c: char) -> Result<Digit, DtmfError> {
        let upper = c.to_ascii_uppercase();
        DIGIT_CHARS
            .iter()
            .position(|&d| d == upper)
            .map(|i| Digit(i as u8))
            .ok_or(DtmfError::NotADigit(c))
    }

    /// Parses a string of digits such as `"1234#"`.
    pub fn parse_str(s: &str) -> Result<Vec<Digit>, DtmfError> {
        s.chars().map(Digit::from_char).collect()
    }

    /// The RFC 4733 event code (0..=15).
    pub fn event(self) -> u8 {
        self.0
    }

    /// The key as a character.
    pub fn as_char(self) -> char {
        DIGIT_CHARS[self.0 as usize]
    }

    /// The (low-group, high-group) frequencies in Hz of the key's tone pair (Q.23).
    pub fn frequencies(self) -> (f64, f64) {
        let (row, col) = self.row_col();
        (inband::ROW_FREQS[row], inband::COL_FREQS[col])
    }

    /// Row (low group) and column (high group) index of the key on the 4×4 keypad.
    pub(crate) fn row_col(self) -> (usize, usize) {
        // Keypad layout: 1 2 3 A / 4 5 6 B / 7 8 9 C / * 0 # D.
        match self.as_char() {
            '1' => (0, 0),
            '2' => (0, 1),
            '3' => (0, 2),
            'A' => (0, 3),
            '4' => (1, 0),
            '5' => (1, 1),
            '6' => (1, 2),
            'B' => (1, 3),
            '7' => (2, 0),
            '8' => (2, 1),
            '9' => (2, 2),
            'C' => (2, 3),
            '*' => (3, 0),
            '0' => (3, 1),
            '#' => (3, 2),
            _ => (3, 3), // 'D'
        }
    }

    /// The key at keypad position (row, column).
    pub(crate) fn from_row_col(row: usize, col: usize) -> Digit {
        const KEYPAD: [[char; 4]; 4] = [
            ['1', '2', '3', 'A'],
            ['4', '5', '6', 'B'],
            ['7', '8', '9', 'C'],
            ['*', '0', '#', 'D'],
        ];
        let c = KEYPAD[row & 3][col & 3];
        Digit::from_char(c).expect("keypad holds only DTMF characters")
    }
}

impl std::fmt::Display for Digit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_char())
    }
}
