//! Where a call is in its life ([`CallState`]) and when it next has something to do
//! ([`Timers`]): the two pieces of a call's logic that are plain data, kept apart from the
//! core (`call_core.rs`) so that they can be tested without sockets, a runtime or a clock.
//!
//! No I/O and no clock here: every transition takes `now` from its caller.

use std::time::Instant;

use sip::dialog::EndReason;

use super::events::Outcome;

/// The phase of one call.
///
/// ```text
///            18x (no SDP) / we sent 180
///  Dialing ───────────────────────────► Ringing
///     │  ╲                                  │ 18x with SDP
///     │   ╲ 18x with SDP                    ▼
///     │    ╲───────────────────────────► EarlyMedia
///     │ 2xx (confirmed)        2xx          │
///     ├──────────────────► Answered ◄───────┘
///     │                        │
///     │ hangup, ring timeout   │ hangup (BYE)
///     ▼                        ▼
///   Ending ◄───────────────────┘   (a 2xx crossing our CANCEL stays in Ending, answered)
///     │
///     │ the session terminated, or the teardown deadline passed
///     ▼
///   Ended   (from any phase: the peer's BYE, a rejection, a timeout)
/// ```
///
/// A failover to the next target (the previous one never answered) goes back to `Dialing`
/// from `Dialing`, `Ringing` or `EarlyMedia`. Whether and when the call was answered is part
/// of the phase: an `Ended` call that was answered remembers when, an unanswered one cannot
/// claim to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallState {
    /// Outbound: our INVITE is out and nothing but 100 Trying answered it. Inbound: the INVITE
    /// is in, and we sent nothing but 100 (or our 2xx, whose ACK has not come).
    Dialing,
    /// A provisional response without SDP came (outbound) or went (inbound: 180).
    Ringing,
    /// A provisional response with SDP came: early media.
    EarlyMedia,
    /// The session is confirmed (a 2xx and its ACK).
    Answered {
        /// When.
        at: Instant,
    },
    /// We are ending the call (hangup, ring timeout, drain) and wait for the protocol to
    /// finish it: the 487 to our CANCEL, the final response to a BYE, or the ACK of our 2xx
    /// before a BYE may go.
    Ending {
        /// When the call was answered, if it was (a 2xx may cross our CANCEL, §9.1).
        answered: Option<Instant>,
        /// A CANCEL for our INVITE went out.
        cancel_sent: bool,
        /// The hangup could not go yet (no CANCEL before a provisional response; no BYE before
        /// the ACK of our 2xx, §15): send BYE when the session is confirmed.
        bye_on_confirm: bool,
    },
    /// The session ended (or was torn down); the call reports its outcome.
    Ended {
        /// Why, in SIP terms.
        reason: EndReason,
        /// When.
        at: Instant,
        /// When the call was answered, if it was.
        answered: Option<Instant>,
    },
}

impl CallState {
    /// When the call was answered, if it was.
    pub(crate) fn answered_at(&self) -> Option<Instant> {
        match self {
            CallState::Answered { at } => Some(*at),
            CallState::Ending { answered, .. } | CallState::Ended { answered, .. } => *answered,
            CallState::Dialing | CallState::Ringing | CallState::EarlyMedia => None,
        }
    }

    /// Why and when the call ended, once it has.
    pub(crate) fn ended(&self) -> Option<(EndReason, Instant)> {
        match self {
            CallState::Ended { reason, at, .. } => Some((*reason, *at)),
            _ => None,
        }
    }

    /// Whether the call is still being set up: not answered, and nobody is ending it.
    pub(crate) fn is_setting_up(&self) -> bool {
        matches!(
            self,
            CallState::Dialing | CallState::Ringing | CallState::EarlyMedia
        )
    }

    /// Whether a CANCEL for our INVITE went out.
    pub(crate) fn cancel_sent(&self) -> bool {
        matches!(
            self,
            CallState::Ending {
                cancel_sent: true,
                ..
            }
        )
    }

    /// A provisional response came (outbound) or went (inbound); `with_sdp`: it carries an
    /// SDP body (early media). Early media never goes back to ringing.
    pub(crate) fn on_provisional(&mut self, with_sdp: bool) {
        match self {
            CallState::Dialing | CallState::Ringing if with_sdp => *self = CallState::EarlyMedia,
            CallState::Dialing => *self = CallState::Ringing,
            _ => {}
        }
    }

    /// The session is confirmed. Returns whether a hangup waits for it (send BYE now).
    pub(crate) fn on_confirmed(&mut self, now: Instant) -> bool {
        match self {
            CallState::Dialing | CallState::Ringing | CallState::EarlyMedia => {
                *self = CallState::Answered { at: now };
                false
            }
            CallState::Answered { at } => {
                *at = now;
                false
            }
            CallState::Ending {
                answered,
                bye_on_confirm,
                ..
            } => {
                *answered = Some(now);
                std::mem::take(bye_on_confirm)
            }
            CallState::Ended { answered, .. } => {
                *answered = Some(now);
                false
            }
        }
    }

    /// We hang up; `bye_on_confirm`: the protocol could not end the call yet (see
    /// [`CallState::Ending::bye_on_confirm`]). An ended call stays ended.
    pub(crate) fn on_hangup(&mut self, bye_on_confirm: bool) {
        match self {
            CallState::Dialing | CallState::Ringing | CallState::EarlyMedia => {
                *self = CallState::Ending {
                    answered: None,
                    cancel_sent: false,
                    bye_on_confirm,
                };
            }
            CallState::Answered { at } => {
                *self = CallState::Ending {
                    answered: Some(*at),
                    cancel_sent: false,
                    bye_on_confirm,
                };
            }
            CallState::Ending {
                bye_on_confirm: pending,
                ..
            } => *pending |= bye_on_confirm,
            CallState::Ended { .. } => {}
        }
    }

    /// Our CANCEL went out (only ever after a hangup or a ring timeout: [`Self::on_hangup`]).
    pub(crate) fn on_cancel_sent(&mut self) {
        if let CallState::Ending { cancel_sent, .. } = self {
            *cancel_sent = true;
        }
    }

    /// The INVITE goes to another target: what the previous one said is forgotten.
    pub(crate) fn on_retarget(&mut self) {
        if self.is_setting_up() {
            *self = CallState::Dialing;
        }
    }

    /// The session ended for `reason`.
    pub(crate) fn on_terminated(&mut self, reason: EndReason, now: Instant) {
        *self = CallState::Ended {
            reason,
            at: now,
            answered: self.answered_at(),
        };
    }

    /// End the call for `reason` unless it already ended (a teardown, the engine gone).
    pub(crate) fn end_unless_ended(&mut self, reason: EndReason, now: Instant) {
        if self.ended().is_none() {
            self.on_terminated(reason, now);
        }
    }
}

/// What a call waits for, besides its SIP session's and its script's own timers (and its
/// media session's, which its media worker keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// No final response within the ring timeout: CANCEL.
    Ring,
    /// Send the call's digits.
    Dtmf,
    /// `hangup_after` since the answer: hang up.
    Hangup,
    /// The drain's grace is over: hang up.
    Drain,
    /// A hangup the protocol has not completed: tear the call down.
    Teardown,
    /// No response at all to the INVITE: try the next target.
    Failover,
    /// Stop waiting for the final response to our BYE.
    ByeWait,
    /// The longest the call may last.
    MaxDuration,
}

impl Timer {
    /// Every timer, in the order expired ones fire.
    pub(crate) const ALL: [Timer; 8] = [
        Timer::Ring,
        Timer::Dtmf,
        Timer::Hangup,
        Timer::Drain,
        Timer::Teardown,
        Timer::Failover,
        Timer::ByeWait,
        Timer::MaxDuration,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// The call's timer table: one deadline (or none) per [`Timer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Timers {
    at: [Option<Instant>; Timer::ALL.len()],
}

impl Timers {
    /// When `timer` fires, if it is set.
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer.index()]
    }

    /// Set (or with `None` clear) `timer`.
    pub(crate) fn set(&mut self, timer: Timer, at: Option<Instant>) {
        self.at[timer.index()] = at;
    }

    /// Clear `timer`.
    pub(crate) fn clear(&mut self, timer: Timer) {
        self.set(timer, None);
    }

    /// Set `timer` to `at` unless it already fires earlier; whether it changed.
    pub(crate) fn set_earlier(&mut self, timer: Timer, at: Instant) -> bool {
        let slot = &mut self.at[timer.index()];
        if slot.is_none_or(|t| at < t) {
            *slot = Some(at);
            true
        } else {
            false
        }
    }

    /// The earliest deadline of the table.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Whether `timer` is due at `now`; if it is, it is cleared (it fires once).
    pub(crate) fn take_due(&mut self, timer: Timer, now: Instant) -> bool {
        let slot = &mut self.at[timer.index()];
        if slot.is_some_and(|t| t <= now) {
            *slot = None;
            true
        } else {
            false
        }
    }
}

/// What, besides its SIP end reason and whether it was answered, decides a call's outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OutcomeFacts {
    /// We placed the call.
    pub(crate) outbound: bool,
    /// Our INVITE never reached the peer or timed out (a transport error, Timer B).
    pub(crate) local_failure: bool,
    /// Our ring timeout fired (and we cancelled).
    pub(crate) ring_timed_out: bool,
    /// The peer answered our INVITE with anything at all (even 100).
    pub(crate) any_response: bool,
}

/// The outcome of a call that ended for `reason` by the protocol (a teardown is decided by
/// its caller): only real SIP statuses map to busy, no answer, rejected, invalid number.
pub(crate) fn outcome(reason: EndReason, answered: bool, facts: OutcomeFacts) -> Outcome {
    match reason {
        EndReason::LocalBye
        | EndReason::RemoteBye
        | EndReason::SessionExpired
        | EndReason::DialogGone(_) => {
            if answered {
                Outcome::Answered
            } else {
                Outcome::Failed
            }
        }
        EndReason::Rejected(code) => {
            if facts.local_failure {
                Outcome::NetworkError
            } else if facts.outbound {
                Outcome::from_status(code)
            } else {
                Outcome::Failed
            }
        }
        EndReason::Cancelled => {
            if facts.ring_timed_out && !facts.any_response {
                // Nothing ever answered the INVITE: that is no ringing phone.
                Outcome::NetworkError
            } else if facts.ring_timed_out {
                Outcome::NoAnswer
            } else {
                Outcome::Cancelled
            }
        }
        EndReason::AckTimeout | EndReason::PrackTimeout => Outcome::NetworkError,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn t0() -> Instant {
        // The only clock read in this module: tests need some instant to start from.
        crate::clock::now()
    }

    #[test]
    fn outbound_call_rings_then_plays_early_media_then_answers() {
        let now = t0();
        let mut s = CallState::Dialing;
        s.on_provisional(false);
        assert_eq!(s, CallState::Ringing);
        s.on_provisional(true);
        assert_eq!(s, CallState::EarlyMedia);
        // A later 180 does not take early media back to ringing.
        s.on_provisional(false);
        assert_eq!(s, CallState::EarlyMedia);
        assert!(s.is_setting_up());
        assert_eq!(s.answered_at(), None);
        let at = now + Duration::from_secs(3);
        assert!(!s.on_confirmed(at));
        assert_eq!(s, CallState::Answered { at });
        assert!(!s.is_setting_up());
        assert_eq!(s.answered_at(), Some(at));
    }

    #[test]
    fn a_183_with_sdp_goes_straight_to_early_media() {
        let mut s = CallState::Dialing;
        s.on_provisional(true);
        assert_eq!(s, CallState::EarlyMedia);
    }

    #[test]
    fn hangup_of_an_answered_call_ends_it_answered() {
        let now = t0();
        let mut s = CallState::Answered { at: now };
        s.on_hangup(false);
        assert_eq!(
            s,
            CallState::Ending {
                answered: Some(now),
                cancel_sent: false,
                bye_on_confirm: false
            }
        );
        assert!(!s.is_setting_up());
        let end = now + Duration::from_secs(1);
        s.on_terminated(EndReason::LocalBye, end);
        assert_eq!(s.ended(), Some((EndReason::LocalBye, end)));
        assert_eq!(s.answered_at(), Some(now));
    }

    #[test]
    fn a_2xx_crossing_our_cancel_stays_ending_and_counts_as_answered() {
        let now = t0();
        let mut s = CallState::Ringing;
        s.on_hangup(false);
        assert!(!s.cancel_sent());
        s.on_cancel_sent();
        assert!(s.cancel_sent());
        let at = now + Duration::from_millis(10);
        assert!(!s.on_confirmed(at), "no BYE of ours is pending");
        assert!(matches!(s, CallState::Ending { .. }));
        assert_eq!(s.answered_at(), Some(at));
        s.on_terminated(EndReason::LocalBye, at);
        assert_eq!(s.answered_at(), Some(at));
    }

    #[test]
    fn a_hangup_that_could_not_go_sends_bye_once_confirmed() {
        let now = t0();
        let mut s = CallState::Dialing;
        s.on_hangup(true);
        // A second hangup that went through does not forget the first one's pending BYE.
        s.on_hangup(false);
        assert!(s.on_confirmed(now), "the pending hangup becomes a BYE");
        assert!(!s.on_confirmed(now), "only once");
    }

    #[test]
    fn a_cancel_outside_ending_is_not_recorded() {
        let mut s = CallState::Ringing;
        s.on_cancel_sent();
        assert!(!s.cancel_sent());
        assert_eq!(s, CallState::Ringing);
    }

    #[test]
    fn failover_starts_over_only_while_setting_up() {
        let now = t0();
        let mut s = CallState::EarlyMedia;
        s.on_retarget();
        assert_eq!(s, CallState::Dialing);
        let mut ending = CallState::Ringing;
        ending.on_hangup(false);
        let before = ending.clone();
        ending.on_retarget();
        assert_eq!(ending, before);
        let mut answered = CallState::Answered { at: now };
        answered.on_retarget();
        assert_eq!(answered, CallState::Answered { at: now });
    }

    #[test]
    fn an_ended_call_stays_ended() {
        let now = t0();
        let mut s = CallState::Dialing;
        s.on_terminated(EndReason::Rejected(486), now);
        s.on_hangup(true);
        s.on_provisional(true);
        s.end_unless_ended(EndReason::LocalBye, now + Duration::from_secs(1));
        assert_eq!(
            s,
            CallState::Ended {
                reason: EndReason::Rejected(486),
                at: now,
                answered: None
            }
        );
        assert!(!s.is_setting_up());
        // A teardown of a live call ends it.
        let mut live = CallState::Ringing;
        live.end_unless_ended(EndReason::Cancelled, now);
        assert_eq!(live.ended(), Some((EndReason::Cancelled, now)));
    }

    #[test]
    fn timer_table_polls_the_earliest_and_fires_each_once() {
        let now = t0();
        let mut timers = Timers::default();
        assert_eq!(timers.poll_timeout(), None);
        timers.set(Timer::Ring, Some(now + Duration::from_secs(30)));
        timers.set(Timer::MaxDuration, Some(now + Duration::from_secs(3600)));
        timers.set(Timer::Dtmf, Some(now + Duration::from_millis(20)));
        assert_eq!(timers.poll_timeout(), Some(now + Duration::from_millis(20)));
        assert!(!timers.take_due(Timer::Dtmf, now), "not due yet");
        let later = now + Duration::from_millis(20);
        assert!(timers.take_due(Timer::Dtmf, later), "due at its deadline");
        assert!(!timers.take_due(Timer::Dtmf, later), "fires once");
        assert_eq!(timers.get(Timer::Dtmf), None);
        assert!(!timers.take_due(Timer::Ring, later));
        assert_eq!(timers.poll_timeout(), Some(now + Duration::from_secs(30)));
        timers.clear(Timer::Ring);
        assert_eq!(timers.poll_timeout(), Some(now + Duration::from_secs(3600)));
        timers.set(Timer::MaxDuration, None);
        assert_eq!(timers.poll_timeout(), None);
    }

    #[test]
    fn set_earlier_keeps_the_earliest_deadline() {
        let now = t0();
        let mut timers = Timers::default();
        assert!(timers.set_earlier(Timer::Teardown, now + Duration::from_secs(4)));
        assert!(timers.set_earlier(Timer::Teardown, now + Duration::from_secs(1)));
        assert!(!timers.set_earlier(Timer::Teardown, now + Duration::from_secs(4)));
        assert_eq!(
            timers.get(Timer::Teardown),
            Some(now + Duration::from_secs(1))
        );
    }

    #[test]
    fn every_timer_has_its_own_slot() {
        let now = t0();
        let mut timers = Timers::default();
        for (i, t) in Timer::ALL.iter().enumerate() {
            timers.set(*t, Some(now + Duration::from_secs(i as u64 + 1)));
        }
        for (i, t) in Timer::ALL.iter().enumerate() {
            assert_eq!(
                timers.get(*t),
                Some(now + Duration::from_secs(i as u64 + 1))
            );
        }
    }

    #[test]
    fn outcomes_come_from_real_sip_statuses_and_what_the_call_saw() {
        let outbound = OutcomeFacts {
            outbound: true,
            any_response: true,
            ..OutcomeFacts::default()
        };
        let inbound = OutcomeFacts {
            any_response: true,
            ..OutcomeFacts::default()
        };
        assert_eq!(
            outcome(EndReason::RemoteBye, true, outbound),
            Outcome::Answered
        );
        assert_eq!(
            outcome(EndReason::LocalBye, false, outbound),
            Outcome::Failed
        );
        assert_eq!(
            outcome(EndReason::Rejected(486), false, outbound),
            Outcome::Busy
        );
        assert_eq!(
            outcome(EndReason::Rejected(404), false, outbound),
            Outcome::InvalidNumber
        );
        // Our own rejection of an inbound call is no busy callee.
        assert_eq!(
            outcome(EndReason::Rejected(486), false, inbound),
            Outcome::Failed
        );
        let unreachable = OutcomeFacts {
            local_failure: true,
            ..outbound
        };
        assert_eq!(
            outcome(EndReason::Rejected(408), false, unreachable),
            Outcome::NetworkError
        );
        let ring_timeout = OutcomeFacts {
            ring_timed_out: true,
            ..outbound
        };
        assert_eq!(
            outcome(EndReason::Cancelled, false, ring_timeout),
            Outcome::NoAnswer
        );
        let silent = OutcomeFacts {
            any_response: false,
            ..ring_timeout
        };
        assert_eq!(
            outcome(EndReason::Cancelled, false, silent),
            Outcome::NetworkError,
            "a ring timeout without a single response is no ringing phone"
        );
        assert_eq!(
            outcome(EndReason::Cancelled, false, outbound),
            Outcome::Cancelled
        );
        assert_eq!(
            outcome(EndReason::AckTimeout, false, inbound),
            Outcome::NetworkError
        );
    }
}
