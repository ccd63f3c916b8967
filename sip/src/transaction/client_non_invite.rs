//! The non-INVITE client transaction (RFC 3261 §17.1.2).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::timer::TimerTable;
use super::{Output, Terminated, Timer, TimerConfig, TransactionEvent, Transport};
use crate::message::{Message, Request, Response};

/// The non-INVITE client transaction.
///
/// The state machine of RFC 3261 Figure 6:
///
/// ```text
///                                    |Request from TU
///                                    |send request
///                Timer E             V
///                send request  +-----------+
///                    +---------|           |-------------------+
///                    |         |  Trying   |  Timer F          |
///                    +-------->|           |  or Transport Err.|
///                              +-----------+  inform TU        |
///                 200-699         |  |                         |
///                 resp. to TU     |  |1xx                      |
///                 +---------------+  |resp. to TU              |
///                 |                  |                         |
///                 |   Timer E        V       Timer F           |
///                 |   send req +-----------+ or Transport Err. |
///                 |  +---------|           | inform TU         |
///                 |  |         |Proceeding |------------------>|
///                 |  +-------->|           |-----+             |
///                 |            +-----------+     |1xx          |
///                 |              |      ^        |resp to TU   |
///                 | 200-699      |      +--------+             |
///                 | resp. to TU  |                             |
///                 |              |                             |
///                 |              V                             |
///                 |            +-----------+                   |
///                 |            |           |                   |
///                 |            | Completed |                   |
///                 |            |           |                   |
///                 |            +-----------+                   |
///                 |              ^   |                         |
///                 |              |   | Timer K                 |
///                 +--------------+   | -                       |
///                                    |                         |
///                                    V                         |
///              NOTE:           +-----------+                   |
///                              |           |                   |
///          transitions         | Terminated|<------------------+
///          labeled with        |           |
///          the event           +-----------+
///          over the action
///          to take
/// ```
///
/// Timer E runs only over unreliable transports: T1, doubling up to T2 in Trying, T2 in
/// Proceeding. Timer F is 64*T1. Timer K is T4 over unreliable transports and zero otherwise.
#[derive(Debug)]
pub struct ClientNonInvite {
    state: State,
    request: Request,
    transport: Transport,
    config: TimerConfig,
    timers: TimerTable,
    out: VecDeque<Output>,
}

#[derive(Debug)]
enum State {
    /// The request has been sent; `interval` is the current Timer E interval (`None` over a
    /// reliable transport).
    Trying { interval: Option<Duration> },
    /// A provisional response arrived; retransmissions continue every T2.
    Proceeding,
    /// A final response arrived; response retransmissions are absorbed until Timer K.
    Completed,
    /// Finished, with the reason.
    Terminated(Terminated),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Trying { .. } => "Trying",
            State::Proceeding => "Proceeding",
            State::Completed => "Completed",
            State::Terminated(_) => "Terminated",
        }
    }
}

impl ClientNonInvite {
    /// Start the transaction: the request is handed to the transport at once and Timers E and F
    /// are started.
    pub fn new(now: Instant, request: Request, transport: Transport, config: TimerConfig) -> Self {
        let mut t = ClientNonInvite {
            state: State::Trying {
                interval: config.retransmit(transport),
            },
            request,
            transport,
            config,
            timers: TimerTable::default(),
            out: VecDeque::new(),
        };
        t.out
            .push_back(Output::Transmit(Message::Request(t.request.clone())));
        // "The "Trying" state is entered when the TU initiates a new client transaction with a
        // request. When entering this state, the client transaction SHOULD set timer F to fire
        // in 64*T1 seconds. ... If an unreliable transport is in use, the client transaction
        // MUST set timer E to fire in T1 seconds." (§17.1.2.2)
        t.timers.arm(Timer::F, now, config.t1x64());
        if let Some(interval) = config.retransmit(transport) {
            t.timers.arm(Timer::E, now, interval);
        }
        t
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

    /// A response matched to this transaction (§17.1.3) arrived.
    pub fn handle_response(&mut self, now: Instant, response: Response) {
        if response.status.is_provisional() {
            self.on_provisional(response);
        } else {
            self.on_final(now, response);
        }
        self.fire_due(now);
    }

    /// Fire every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.fire_due(now);
    }

    /// The transport could not send the request.
    pub fn handle_transport_error(&mut self, now: Instant) {
        // §17.1.4: "The client transaction SHOULD inform the TU that a transport failure has
        // occurred, and the client transaction SHOULD transition directly to the "Terminated"
        // state." (Figure 6: from Trying and Proceeding, the states that send.)
        if let State::Trying { .. } | State::Proceeding = self.state {
            self.out
                .push_back(Output::Event(TransactionEvent::TransportError));
            self.terminate(Terminated::TransportError);
        }
        self.fire_due(now);
    }

    fn on_provisional(&mut self, response: Response) {
        match self.state {
            // "If a provisional response is received while in the "Trying" state, the response
            // MUST be passed to the TU, and then the client transaction SHOULD move to the
            // "Proceeding" state." (§17.1.2.2) Timer E keeps running; it is reset to T2 when it
            // next fires.
            State::Trying { .. } => {
                self.state = State::Proceeding;
                self.out
                    .push_back(Output::Event(TransactionEvent::Provisional(response)));
            }
            State::Proceeding => {
                self.out
                    .push_back(Output::Event(TransactionEvent::Provisional(response)));
            }
            State::Completed | State::Terminated(_) => {}
        }
    }

    fn on_final(&mut self, now: Instant, response: Response) {
        match self.state {
            // "If a final response (status codes 200-699) is received while in the "Trying"
            // [or "Proceeding"] state, the response MUST be passed to the TU, and the client
            // transaction MUST transition to the "Completed" state." (§17.1.2.2)
            State::Trying { .. } | State::Proceeding => {
                self.timers.cancel(Timer::E);
                self.timers.cancel(Timer::F);
                self.out
                    .push_back(Output::Event(TransactionEvent::Final(response)));
                // "Once the client transaction enters the "Completed" state, it MUST set Timer K
                // to fire in T4 seconds for unreliable transports, and zero seconds for reliable
                // transports." (§17.1.2.2)
                self.timers
                    .arm(Timer::K, now, self.config.timer_k(self.transport));
                self.state = State::Completed;
            }
            // "The "Completed" state exists to buffer any additional response retransmissions
            // that may be received" (§17.1.2.2): absorbed, not passed up.
            State::Completed | State::Terminated(_) => {}
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match (&mut self.state, timer) {
            // "If timer E fires while still in this state, the timer is reset, but this time with
            // a value of MIN(2*T1, T2). When the timer fires again, it is reset to a MIN(4*T1,
            // T2). This process continues so that retransmissions occur with an exponentially
            // increasing interval that caps at T2." (§17.1.2.2)
            (
                State::Trying {
                    interval: Some(interval),
                },
                Timer::E,
            ) => {
                *interval = (*interval * 2).min(self.config.t2);
                let next = *interval;
                self.timers.arm(Timer::E, now, next);
                self.out
                    .push_back(Output::Transmit(Message::Request(self.request.clone())));
            }
            // "If Timer E fires while in the "Proceeding" state, the request MUST be passed to
            // the transport layer for retransmission, and Timer E MUST be reset with a value of
            // T2 seconds." (§17.1.2.2)
            (State::Proceeding, Timer::E) => {
                self.timers.arm(Timer::E, now, self.config.t2);
                self.out
                    .push_back(Output::Transmit(Message::Request(self.request.clone())));
            }
            // "If Timer F fires while the client transaction is still in the "Trying" state, the
            // client transaction SHOULD inform the TU about the timeout, and then it SHOULD
            // enter the "Terminated" state. ... If timer F fires while in the "Proceeding"
            // state, the TU MUST be informed of a timeout, and the client transaction MUST
            // transition to the terminated state." (§17.1.2.2)
            (State::Trying { .. } | State::Proceeding, Timer::F) => {
                self.out
                    .push_back(Output::Event(TransactionEvent::Timeout(Timer::F)));
                self.terminate(Terminated::Timeout);
            }
            // "If Timer K fires while in this state, the client transaction MUST transition to
            // the "Terminated" state." (§17.1.2.2)
            (State::Completed, Timer::K) => self.terminate(Terminated::Completed),
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
