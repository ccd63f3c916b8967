//! The non-INVITE server transaction (RFC 3261 §17.2.2).

use std::collections::VecDeque;
use std::time::Instant;

use super::timer::TimerTable;
use super::{
    Output, Terminated, Timer, TimerConfig, TransactionError, TransactionEvent, Transport,
};
use crate::message::{Message, Request, Response};

/// The non-INVITE server transaction.
///
/// The state machine of RFC 3261 Figure 8:
///
/// ```text
///                                   |Request received
///                                   |pass to TU
///                                   V
///                             +-----------+
///                             |           |
///                             | Trying    |-------------+
///                             |           |             |
///                             +-----------+             |200-699 from TU
///                                   |                   |send response
///                                   |1xx from TU        |
///                                   |send response      |
///                                   |                   |
///                Request            V      1xx from TU  |
///                send response+-----------+send response|
///                    +--------|           |--------+    |
///                    |        | Proceeding|        |    |
///                    +------->|           |<-------+    |
///             +<--------------|           |             |
///             |Trnsprt Err    +-----------+             |
///             |Inform TU            |                   |
///             |                     |                   |
///             |                     |200-699 from TU    |
///             |                     |send response      |
///             |  Request            V                   |
///             |  send response+-----------+             |
///             |      +--------|           |             |
///             |      |        | Completed |<------------+
///             |      +------->|           |
///             +<--------------|           |
///             |Trnsprt Err    +-----------+
///             |Inform TU            |
///             |                     |Timer J fires
///             |                     |-
///             |                     |
///             |                     V
///             |               +-----------+
///             |               |           |
///             +-------------->| Terminated|
///                             |           |
///                             +-----------+
/// ```
///
/// Timer J is 64*T1 over unreliable transports and zero over reliable ones.
#[derive(Debug)]
pub struct ServerNonInvite {
    state: State,
    request: Request,
    transport: Transport,
    config: TimerConfig,
    timers: TimerTable,
    out: VecDeque<Output>,
}

#[derive(Debug)]
enum State {
    /// Waiting for the TU; request retransmissions are discarded.
    Trying,
    /// A provisional was sent; request retransmissions get it again.
    Proceeding { last: Response },
    /// A final response was sent; request retransmissions get it again until Timer J.
    Completed { response: Response },
    /// Finished, with the reason.
    Terminated(Terminated),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Trying => "Trying",
            State::Proceeding { .. } => "Proceeding",
            State::Completed { .. } => "Completed",
            State::Terminated(_) => "Terminated",
        }
    }
}

impl ServerNonInvite {
    /// Create the transaction for a new request (not INVITE, not ACK).
    pub fn new(_now: Instant, request: Request, transport: Transport, config: TimerConfig) -> Self {
        ServerNonInvite {
            state: State::Trying,
            request,
            transport,
            config,
            timers: TimerTable::default(),
            out: VecDeque::new(),
        }
    }

    /// The request that created the transaction.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The transport the transaction runs over.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The name of the current state (`"Trying"`, `"Proceeding"`, `"Completed"`,
    /// `"Terminated"`).
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

    /// The most recent response sent, if any.
    pub fn last_response(&self) -> Option<&Response> {
        match &self.state {
            State::Proceeding { last } => Some(last),
            State::Completed { response } => Some(response),
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

    /// A retransmission of the request arrived (matched by §17.2.3).
    pub fn handle_request(&mut self, now: Instant, _request: Request) {
        match &self.state {
            // "Once in the "Trying" state, any further request retransmissions are discarded."
            // (§17.2.2)
            State::Trying => {}
            // "If a retransmission of the request is received while in the "Proceeding" state,
            // the most recently sent provisional response MUST be passed to the transport layer
            // for retransmission." (§17.2.2)
            State::Proceeding { last } => {
                self.out
                    .push_back(Output::Transmit(Message::Response(last.clone())));
            }
            // "While in the "Completed" state, the server transaction MUST pass the final
            // response to the transport layer for retransmission whenever a retransmission of
            // the request is received." (§17.2.2)
            State::Completed { response } => {
                self.out
                    .push_back(Output::Transmit(Message::Response(response.clone())));
            }
            State::Terminated(_) => return,
        }
        self.out
            .push_back(Output::Event(TransactionEvent::RetransmissionAbsorbed));
        self.fire_due(now);
    }

    /// The TU sends a response: a 1xx moves to (or stays in) Proceeding, a final moves to
    /// Completed. Nothing can be sent after the final response.
    pub fn send_response(
        &mut self,
        now: Instant,
        response: Response,
    ) -> Result<(), TransactionError> {
        match self.state {
            State::Trying | State::Proceeding { .. } => {
                if response.status.is_provisional() {
                    self.on_provisional(response);
                } else {
                    self.on_final(now, response);
                }
            }
            // "Any other final responses passed by the TU to the server transaction MUST be
            // discarded while in the "Completed" state." (§17.2.2)
            ref state => {
                return Err(TransactionError::InvalidState {
                    status: response.status.as_u16(),
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
        // §17.2.4: if delivery fails, "the server transaction SHOULD inform the TU that a
        // failure has occurred, and SHOULD transition to the terminated state." (Figure 8.)
        if let State::Trying | State::Proceeding { .. } | State::Completed { .. } = self.state {
            self.out
                .push_back(Output::Event(TransactionEvent::TransportError));
            self.terminate(Terminated::TransportError);
        }
        self.fire_due(now);
    }

    fn on_provisional(&mut self, response: Response) {
        // "While in the "Trying" state, if the TU passes a provisional response to the server
        // transaction, the server transaction MUST enter the "Proceeding" state. The response
        // MUST be passed to the transport layer for transmission. Any further provisional
        // responses that are received from the TU while in the "Proceeding" state MUST be
        // passed to the transport layer for transmission." (§17.2.2)
        self.out
            .push_back(Output::Transmit(Message::Response(response.clone())));
        self.state = State::Proceeding { last: response };
    }

    fn on_final(&mut self, now: Instant, response: Response) {
        // "If the TU passes a final response (status codes 200-699) to the server while in the
        // "Proceeding" state, the transaction MUST enter the "Completed" state, and the response
        // MUST be passed to the transport layer for transmission." (§17.2.2)
        self.out
            .push_back(Output::Transmit(Message::Response(response.clone())));
        // "When the server transaction enters the "Completed" state, it MUST set Timer J to fire
        // in 64*T1 seconds for unreliable transports, and zero seconds for reliable
        // transports." (§17.2.2)
        self.timers
            .arm(Timer::J, now, self.config.timer_j(self.transport));
        self.state = State::Completed { response };
    }

    fn on_timer(&mut self, _now: Instant, timer: Timer) {
        // "The server transaction remains in this state until Timer J fires, at which point it
        // MUST transition to the "Terminated" state." (§17.2.2)
        if let (State::Completed { .. }, Timer::J) = (&self.state, timer) {
            self.terminate(Terminated::Completed);
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
