//! The INVITE server transaction (RFC 3261 §17.2.1, corrected by RFC 6026).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timer::TimerTable;
use super::{
    Output, Terminated, Timer, TimerConfig, TransactionError, TransactionEvent, Transport,
};
use crate::message::{HeaderName, Headers, Message, Method, Request, Response, StatusCode};

/// The INVITE server transaction.
///
/// The state machine of RFC 3261 Figure 7 as corrected by RFC 6026: a 2xx from the TU
/// moves the transaction to Accepted instead of destroying it, so that retransmissions of the
/// INVITE are absorbed rather than seen as new requests, and the TU's own 2xx retransmissions
/// still pass through.
///
/// ```text
///                                  |INVITE
///                                  |pass INV to TU
///               INVITE             V send 100 if TU won't in 200 ms
///               send response+------------+
///                   +--------|            |--------+ 101-199 from TU
///                   |        |            |        | send response
///                   +------->|            |<-------+
///                            | Proceeding |
///                            |            |--------+ Transport Err.
///                            |            |        | Inform TU
///                            |            |<-------+
///                            +------------+
///               300-699 from TU |    |2xx from TU
///               send response   |    |send response
///                +--------------+    +--------------+
///                |                                  |
///   INVITE       V          Timer G fires           |   INVITE -
///   send response+-----------+ send response        |   2xx from TU: send response
///       +--------|           |--------+             |   ACK: to TU
///       |        | Completed |        |             V   Transport Err.: Inform TU
///       +------->|           |<-------+       +------------+
///                +-----------+                |            |----+
///                  |      |                   |  Accepted  |    | (all of the above)
///              ACK |      | Timer H fires     |            |<---+
///              -   |      | or Transport Err. +------------+
///                  |      | Inform TU               |
///                  V      |                         | Timer L fires
///         +-----------+   |                         | -
///  ACK -  |           |   |                         |
///  +------| Confirmed |   |                         |
///  +----->|           |   |                         |
///         +-----------+   |                         |
///               |         |                         |
///               | Timer I fires                     |
///               | -       |                         |
///               V         V                         V
///         +-------------------------------------------------+
///         |                    Terminated                   |
///         +-------------------------------------------------+
/// ```
///
/// Timer G runs only over unreliable transports, starting at T1 and doubling up to T2; Timer H
/// and Timer L are 64*T1; Timer I is T4 over unreliable transports and zero otherwise.
///
/// The 100 (Trying) is sent as soon as the transaction is created: RFC 3261 §17.2.1 lets a
/// server skip it only when it knows the TU will answer within 200 ms, which a sans-IO machine
/// cannot know.
#[derive(Debug)]
pub struct ServerInvite {
    state: State,
    request: Request,
    transport: Transport,
    config: TimerConfig,
    timers: TimerTable,
    out: VecDeque<Output>,
}

#[derive(Debug)]
enum State {
    /// Waiting for the TU's final response; `last` is the most recent provisional sent.
    Proceeding { last: Response },
    /// A 300-699 was sent; retransmitting it (Timer G) until the ACK or Timer H.
    Completed {
        response: Response,
        interval: Option<Duration>,
    },
    /// The ACK arrived; absorbing ACK retransmissions until Timer I.
    Confirmed,
    /// A 2xx was sent (RFC 6026); absorbing INVITE retransmissions until Timer L.
    Accepted,
    /// Finished, with the reason.
    Terminated(Terminated),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Proceeding { .. } => "Proceeding",
            State::Completed { .. } => "Completed",
            State::Confirmed => "Confirmed",
            State::Accepted => "Accepted",
            State::Terminated(_) => "Terminated",
        }
    }
}

impl ServerInvite {
    /// Create the transaction for a new INVITE (the endpoint has already matched it against
    /// every existing transaction). A 100 (Trying) is queued for transmission at once.
    pub fn new(_now: Instant, request: Request, transport: Transport, config: TimerConfig) -> Self {
        // "the server transaction MUST generate a 100 (Trying) response unless it knows that
        // the TU will generate a provisional or final response within 200 ms" (§17.2.1)
        let trying = response_skeleton(&request, StatusCode::TRYING);
        let mut t = ServerInvite {
            state: State::Proceeding {
                last: trying.clone(),
            },
            request,
            transport,
            config,
            timers: TimerTable::default(),
            out: VecDeque::new(),
        };
        t.out.push_back(Output::Transmit(Message::Response(trying)));
        t
    }

    /// The INVITE that created the transaction.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The transport the transaction runs over.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The name of the current state (`"Proceeding"`, `"Completed"`, `"Confirmed"`,
    /// `"Accepted"`, `"Terminated"`).
    pub fn state_name(&self) -> &'static str {
        self.state.name()
    }

    /// Why the transaction ended, once it has.
    pub fn terminated(&self) -> Option<Terminated> {
        match self.state {
            State::Terminated(t) => Some(t),
            _ => None,
        }
    }

    /// Whether the transaction has ended.
    pub fn is_terminated(&self) -> bool {
        self.terminated().is_some()
    }

    /// The most recent response sent (the 100 Trying at first), if the transaction still holds
    /// one.
    pub fn last_response(&self) -> Option<&Response> {
        match &self.state {
            State::Proceeding { last } => Some(last),
            State::Completed { response, .. } => Some(response),
            _ => None,
        }
    }

    /// The deadline of one timer, if it is armed.
    pub fn timer(&self, timer: Timer) -> Option<Instant> {
        self.timers.get(timer)
    }

    /// The earliest deadline at which [`handle_timeout`](Self::handle_timeout) must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.earliest()
    }

    /// The next thing to send or report, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// A request matched to this transaction (§17.2.3) arrived: a retransmission of the INVITE,
    /// or the ACK for a non-2xx final response. Other methods are ignored.
    pub fn handle_request(&mut self, now: Instant, request: Request) {
        match request.method {
            Method::Invite => self.on_invite_retransmission(),
            Method::Ack => self.on_ack(now, request),
            _ => {}
        }
        self.fire_due(now);
    }

    /// The TU sends a response. A 1xx is sent and remembered; a 2xx moves to Accepted; a 300-699
    /// moves to Completed. Further 2xx in Accepted are passed through (RFC 6026); anything else
    /// after a final response is refused.
    pub fn send_response(
        &mut self,
        now: Instant,
        response: Response,
    ) -> Result<(), TransactionError> {
        let status = response.status;
        match &self.state {
            State::Proceeding { .. } if status.is_provisional() => self.on_provisional(response),
            State::Proceeding { .. } if status.is_success() => self.on_2xx(now, response),
            State::Proceeding { .. } => self.on_final(now, response),
            // RFC 6026: "Any retransmission of an identical 2xx response passed from the TU
            // to the transaction while in the "Accepted" state MUST be passed to the transport
            // layer for transmission."
            State::Accepted if status.is_success() => {
                self.out
                    .push_back(Output::Transmit(Message::Response(response)));
            }
            state => {
                return Err(TransactionError::InvalidState {
                    status: status.as_u16(),
                    state: state.name(),
                });
            }
        }
        self.fire_due(now);
        Ok(())
    }

    /// Fire every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.fire_due(now);
    }

    /// The transport could not send a response.
    pub fn handle_transport_error(&mut self, now: Instant) {
        match self.state {
            // RFC 6026's revised figure: in Proceeding the TU is informed and the transaction
            // stays, since the TU may still answer (e.g. after failing over per §18.4); Accepted
            // is likewise kept until Timer L, because the TU owns 2xx retransmission.
            State::Proceeding { .. } | State::Accepted => {
                self.out
                    .push_back(Output::Event(TransactionEvent::TransportError));
            }
            // Figure 7: "Timer H fires or Transport Err. Inform TU" leaves Completed for
            // Terminated.
            State::Completed { .. } => {
                self.out
                    .push_back(Output::Event(TransactionEvent::TransportError));
                self.terminate(Terminated::TransportError);
            }
            State::Confirmed | State::Terminated(_) => {}
        }
        self.fire_due(now);
    }

    fn on_invite_retransmission(&mut self) {
        match &self.state {
            // "If a request retransmission is received while in the "Proceeding" state, the most
            // recent provisional response that was received from the TU MUST be passed to the
            // transport layer for retransmission." (§17.2.1)
            State::Proceeding { last } => {
                self.out
                    .push_back(Output::Transmit(Message::Response(last.clone())));
            }
            // "while in the "Completed" state, if a request retransmission is received, the
            // server SHOULD pass the response to the transport for retransmission." (§17.2.1)
            State::Completed { response, .. } => {
                self.out
                    .push_back(Output::Transmit(Message::Response(response.clone())));
            }
            // RFC 6026 (paraphrased; "INVITE / -" in its figure): retransmissions of the
            // INVITE in Accepted are absorbed, neither answered nor passed up as a new request
            // (the TU's 2xx retransmissions do the answering); in Confirmed likewise.
            State::Accepted | State::Confirmed => {}
            State::Terminated(_) => return,
        }
        self.out
            .push_back(Output::Event(TransactionEvent::RetransmissionAbsorbed));
    }

    fn on_ack(&mut self, now: Instant, ack: Request) {
        match self.state {
            // "If an ACK is received while the server transaction is in the "Completed" state,
            // the server transaction MUST transition to the "Confirmed" state. As Timer G is
            // ignored in this state, any retransmissions of the response will cease." (§17.2.1)
            State::Completed { .. } => {
                self.timers.cancel(Timer::G);
                self.timers.cancel(Timer::H);
                // "When this state is entered, timer I is set to fire in T4 seconds for
                // unreliable transports, and zero seconds for reliable transports." (§17.2.1)
                self.timers
                    .arm(Timer::I, now, self.config.timer_i(self.transport));
                self.state = State::Confirmed;
            }
            // "The purpose of the "Confirmed" state is to absorb any additional ACK messages
            // that arrive, triggered from retransmissions of the final response." (§17.2.1)
            State::Confirmed => {
                self.out
                    .push_back(Output::Event(TransactionEvent::RetransmissionAbsorbed));
            }
            // RFC 6026: "If an ACK is received while the INVITE server transaction is in
            // the "Accepted" state, then the ACK must be passed up to the TU."
            State::Accepted => {
                self.out
                    .push_back(Output::Event(TransactionEvent::Ack(ack)));
            }
            // An ACK before any final response is not something this transaction can use.
            State::Proceeding { .. } | State::Terminated(_) => {}
        }
    }

    fn on_provisional(&mut self, response: Response) {
        // "The TU passes any number of provisional responses to the server transaction. So long
        // as the server transaction is in the "Proceeding" state, each of these MUST be passed
        // to the transport layer for transmission." (§17.2.1)
        self.out
            .push_back(Output::Transmit(Message::Response(response.clone())));
        self.state = State::Proceeding { last: response };
    }

    fn on_2xx(&mut self, now: Instant, response: Response) {
        // RFC 6026: "If, while in the "Proceeding" state, the TU passes a 2xx response to
        // the server transaction, the server transaction MUST pass this response to the
        // transport layer for transmission. It is not retransmitted by the server transaction;
        // retransmissions of 2xx responses are handled by the TU. The server transaction MUST
        // then transition to the "Accepted" state." and "Timer L ... 64*T1".
        self.out
            .push_back(Output::Transmit(Message::Response(response)));
        self.timers.arm(Timer::L, now, self.config.t1x64());
        self.state = State::Accepted;
    }

    fn on_final(&mut self, now: Instant, response: Response) {
        // "While in the "Proceeding" state, if the TU passes a response with status code from
        // 300 to 699 to the server transaction, the response MUST be passed to the transport
        // layer for transmission, and the state machine MUST enter the "Completed" state. For
        // unreliable transports, timer G is set to fire in T1 seconds, and is not set to fire
        // for reliable transports." ... "When the "Completed" state is entered, timer H MUST be
        // set to fire in 64*T1 seconds for all transports." (§17.2.1)
        self.out
            .push_back(Output::Transmit(Message::Response(response.clone())));
        let interval = self.config.retransmit(self.transport);
        if let Some(interval) = interval {
            self.timers.arm(Timer::G, now, interval);
        }
        self.timers.arm(Timer::H, now, self.config.t1x64());
        self.state = State::Completed { response, interval };
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match (&mut self.state, timer) {
            // "If timer G fires, the response is passed to the transport layer once more for
            // retransmission, and timer G is set to fire in MIN(2*T1, T2) seconds. From then on,
            // when timer G fires, the response is passed to the transport again for
            // transmission, and timer G is reset with a value that doubles, unless that value
            // exceeds T2, in which case it is reset with the value of T2." (§17.2.1)
            (
                State::Completed {
                    response,
                    interval: Some(interval),
                },
                Timer::G,
            ) => {
                *interval = (*interval * 2).min(self.config.t2);
                let next = *interval;
                let resend = response.clone();
                self.timers.arm(Timer::G, now, next);
                self.out
                    .push_back(Output::Transmit(Message::Response(resend)));
            }
            // "If timer H fires while in the "Completed" state, it implies that the ACK was never
            // received. In this case, the server transaction MUST transition to the
            // "Terminated" state, and MUST indicate to the TU that a transaction failure has
            // occurred." (§17.2.1)
            (State::Completed { .. }, Timer::H) => {
                self.out
                    .push_back(Output::Event(TransactionEvent::Timeout(Timer::H)));
                self.terminate(Terminated::Timeout);
            }
            // "Once timer I fires, the server MUST transition to the "Terminated" state."
            // (§17.2.1)
            (State::Confirmed, Timer::I) => self.terminate(Terminated::Completed),
            // RFC 6026: "If Timer L fires while the INVITE server transaction is in the
            // "Accepted" state, the transaction MUST transition to the "Terminated" state."
            (State::Accepted, Timer::L) => self.terminate(Terminated::Accepted),
            _ => {}
        }
    }

    fn fire_due(&mut self, now: Instant) {
        while let Some(timer) = self.timers.take_due(now) {
            self.on_timer(now, timer);
        }
    }

    fn terminate(&mut self, why: Terminated) {
        self.timers.cancel_all();
        self.state = State::Terminated(why);
        self.out
            .push_back(Output::Event(TransactionEvent::Terminated(why)));
    }
}

/// A response to `request` with the headers RFC 3261 §8.2.6.2 says to copy: every Via in order,
/// From, To (as received: a 100 Trying MAY omit the To tag), Call-ID, CSeq, and for a 100 the
/// Timestamp (§8.2.6.1).
pub(crate) fn response_skeleton(request: &Request, status: StatusCode) -> Response {
    let mut headers = Headers::new();
    for via in request.headers.get_all(&HeaderName::Via) {
        headers.push(HeaderName::Via, via.clone());
    }
    for name in [
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        if let Some(v) = request.headers.get(&name) {
            headers.push(name, v.clone());
        }
    }
    if status == StatusCode::TRYING
        && let Some(ts) = request.headers.get(&HeaderName::Timestamp)
    {
        headers.push(HeaderName::Timestamp, ts.clone());
    }
    Response {
        status,
        reason: Bytes::from_static(status.canonical_reason().as_bytes()),
        headers,
        body: Bytes::new(),
    }
}
