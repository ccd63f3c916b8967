//! What a call reports: [`CallEvent`]s in the timeline vocabulary and the final [`Outcome`].

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Identifies a call inside one engine (not the SIP Call-ID, which the peer may choose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One entry of a call's timeline (ARCHITECTURE.md "Call timeline vocabulary").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallEvent {
    /// The call.
    pub call_id: CallId,
    /// What happened: `call.created`, `sip.invite_sent`, ..., `call.completed`, `call.failed`.
    pub kind: &'static str,
    /// Wall clock, µs since the Unix epoch.
    pub at_unix_us: i64,
    /// Monotonic µs since the call was created.
    pub offset_us: u64,
    /// Kind-specific details (status, digit, outcome...).
    pub details: serde_json::Value,
    /// The caller's label of the call ([`crate::engine::OriginateRequest::tag`]); the control
    /// plane puts its call id here, so that the very first event finds its row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<Arc<str>>,
}

impl CallEvent {
    /// Whether this is the last event of its call.
    pub fn is_final(&self) -> bool {
        self.kind == "call.completed" || self.kind == "call.failed"
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It was answered (and ended by a BYE).
    Answered,
    /// 486 Busy Here or 600 Busy Everywhere.
    Busy,
    /// Our ring timeout fired (we sent CANCEL), or 480/408 from the peer.
    NoAnswer,
    /// 603 Decline.
    Rejected,
    /// 404, 484 or 604.
    InvalidNumber,
    /// No response, a 5xx, or a transport error.
    NetworkError,
    /// Cancelled before an answer (by us on request, or by the caller).
    Cancelled,
    /// Anything else.
    Failed,
}

impl Outcome {
    /// The outcome of a final non-2xx status to our INVITE.
    pub fn from_status(status: u16) -> Outcome {
        match status {
            486 | 600 => Outcome::Busy,
            480 | 408 => Outcome::NoAnswer,
            603 => Outcome::Rejected,
            404 | 484 | 604 => Outcome::InvalidNumber,
            487 => Outcome::Cancelled,
            500..=599 => Outcome::NetworkError,
            _ => Outcome::Failed,
        }
    }

    /// The `callplane call` exit code for this outcome (documented in `--help`).
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Answered => 0,
            Outcome::Busy => 2,
            Outcome::NoAnswer => 3,
            Outcome::Rejected => 4,
            Outcome::InvalidNumber => 5,
            Outcome::NetworkError => 6,
            Outcome::Cancelled | Outcome::Failed => 1,
        }
    }

    /// The event kind that ends a call with this outcome.
    pub fn final_kind(self) -> &'static str {
        if self == Outcome::Answered {
            "call.completed"
        } else {
            "call.failed"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_documented_outcomes() {
        assert_eq!(Outcome::from_status(486), Outcome::Busy);
        assert_eq!(Outcome::from_status(600), Outcome::Busy);
        assert_eq!(Outcome::from_status(480), Outcome::NoAnswer);
        assert_eq!(Outcome::from_status(603), Outcome::Rejected);
        assert_eq!(Outcome::from_status(404), Outcome::InvalidNumber);
        assert_eq!(Outcome::from_status(503), Outcome::NetworkError);
        assert_eq!(Outcome::from_status(415), Outcome::Failed);
    }

    #[test]
    fn outcome_serializes_snake_case() {
        let v = serde_json::to_value(Outcome::InvalidNumber).expect("serializes");
        assert_eq!(v, "invalid_number");
    }
}
