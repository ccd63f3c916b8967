//! Counters for `GET /metrics` (Prometheus text format).

use crate::store::Appended;

/// The process's counters.
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    /// Counts a stored event (calls by outcome, RTP packets and loss from final events).
    pub fn on_event(&self, _appended: &Appended) {}
}
