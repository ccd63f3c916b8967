//! The INVITE client transaction (RFC 3261 §17.1.1, corrected by RFC 6026).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::timer::TimerTable;
use super::{
    Output, Terminated, Timer, TimerConfig, TransactionEvent, Transport, first_via_element,
};
use crate::message::{HeaderName, Headers, Message, Method, Request, Response};

/// The INVITE client transaction.
///
/// The state machine of RFC 3261 Figure 5 as corrected by RFC 6026 (a 2xx no longer
/// terminates the transaction but moves it to Accepted, so that the retransmissions of that 2xx
/// and the 2xx of other forks still reach the TU instead of being treated as strays):
///
/// ```text
///                                |INVITE from TU
///              Timer A fires     |INVITE sent      Timer B fires
///              Reset A,          V                 or Transport Err.
///              INVITE sent +-----------+           inform TU
///                +---------|           |--------------------------+
///                |         |  Calling  |                          |
///                +-------->|           |-----------+              |
///   300-699                +-----------+ 2xx       |              |
///   ACK sent                  |  |       2xx to TU |              |
///   resp. to TU               |  |1xx              |              |
///   +-------------------------+  |1xx to TU        |              |
///   |                            |                 |              |
///   |                1xx         V                 |              |
///   |                1xx to TU +-----------+       |              |
///   |                +---------|           |       |              |
///   |                |         |Proceeding |       |              |
///   |                +-------->|           |       |              |
///   |                          +-----------+ 2xx   |              |
///   |         300-699             |    |     2xx to TU            |
///   |         ACK sent,  +--------+    +---------------+          |
///   |         resp. to TU|                         |   |          |
///   |                    |                         V   V          |
///   |                    |                     +-----------+      |
///   |                    |                     |           |      |
///   |                    |                     | Accepted  |---+  |
///   |                    |                     |           |   |  |
///   |                    |                     +-----------+   |  |
///   |   300-699          V                  2xx   |   ^   |    |  |
///   |   ACK sent +-----------+              to TU +---+   |    |  |
///   |   +--------|           |                            |    |  |
///   |   |        | Completed |                            |    |  |
///   |   +------->|           |                            |    |  |
///   |            +-----------+                            |    |  |
///   |              ^   |    |                             |    |  |
///   |              |   |    | Timer D fires  Timer M fires|    |  |
///   +--------------+   |    | -              -            |    |  |
///                      |    V                             V    |  |
///   Transport Err.     |   +-----------------------------------+  |
///   inform TU          +-->|             Terminated             |<-+
///                          +------------------------------------+
/// ```
///
/// Timer A runs only over unreliable transports (it starts at T1 and doubles each time it fires);
/// Timer B is 64*T1; Timer D is at least 32 s over UDP and zero over reliable transports; Timer M
/// is 64*T1.
#[derive(Debug)]
pub struct ClientInvite {
    state: State,
    request: Request,
    transport: Transport,
    config: TimerConfig,
    timers: TimerTable,
    out: VecDeque<Output>,
    /// A CANCEL was sent for this INVITE ([`ClientInvite::cancel_sent`]): Timer B then bounds
    /// the wait for the final response even in Proceeding.
    cancelled: bool,
}

#[derive(Debug)]
enum State {
    /// The INVITE has been sent; no response yet. `interval` is the current Timer A interval
    /// (`None` over a reliable transport, where Timer A is not used).
    Calling { interval: Option<Duration> },
    /// A provisional response arrived; no more retransmissions.
    Proceeding,
    /// A non-2xx final arrived and was acknowledged; waiting (Timer D) to re-ACK retransmissions.
    Completed { ack: Box<Request> },
    /// A 2xx arrived; waiting (Timer M) so further 2xx responses reach the TU (RFC 6026).
    Accepted,
    /// Finished, with the reason.
    Terminated(Terminated),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Calling { .. } => "Calling",
            State::Proceeding => "Proceeding",
            State::Completed { .. } => "Completed",
            State::Accepted => "Accepted",
            State::Terminated(_) => "Terminated",
        }
    }
}

impl ClientInvite {
    /// Start the transaction: the INVITE is handed to the transport at once (the first
    /// [`Output::Transmit`]) and Timers A and B are started.
    ///
    /// The request must already carry its top Via with a branch; the transaction sends it as is.
    pub fn new(now: Instant, request: Request, transport: Transport, config: TimerConfig) -> Self {
        let mut t = ClientInvite {
            state: State::Calling {
                interval: config.retransmit(transport),
            },
            request,
            transport,
            config,
            timers: TimerTable::default(),
            out: VecDeque::new(),
            cancelled: false,
        };
        t.out
            .push_back(Output::Transmit(Message::Request(t.request.clone())));
        // "If an unreliable transport is being used, the client transaction MUST start timer A
        // with a value of T1. If a reliable transport is being used, the client transaction
        // SHOULD NOT start timer A" (§17.1.1.2).
        if let Some(interval) = config.retransmit(transport) {
            t.timers.arm(Timer::A, now, interval);
        }
        // "For any transport, the client transaction MUST start timer B with a value of 64*T1
        // seconds" (§17.1.1.2).
        t.timers.arm(Timer::B, now, config.t1x64());
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

    /// The name of the current state (`"Calling"`, `"Proceeding"`, `"Completed"`, `"Accepted"`,
    /// `"Terminated"`), for logs and tests.
    pub fn state_name(&self) -> &'static str {
        self.state.name()
    }

    /// Whether no response has arrived yet (a CANCEL must wait, RFC 3261 §9.1).
    pub fn is_calling(&self) -> bool {
        matches!(self.state, State::Calling { .. })
    }

    /// Whether a provisional but no final response has arrived (the state in which a CANCEL is
    /// sent, RFC 3261 §9.1).
    pub fn is_proceeding(&self) -> bool {
        matches!(self.state, State::Proceeding)
    }

    /// The TU sent a CANCEL for this INVITE at `now` (or will, once a provisional response
    /// arrives). §9.1: "If there is no final response for the original request in 64*T1
    /// seconds (T1 is defined in Section 17.1.1.1), the client SHOULD then consider the original
    /// transaction cancelled and SHOULD destroy the client transaction handling the original
    /// request." That deadline reuses Timer B (64*T1, from `now`): when it fires before a final
    /// response, in Calling or Proceeding, the transaction reports
    /// [`TransactionEvent::Timeout`]`(Timer::B)` and terminates with
    /// [`Terminated::Timeout`], exactly as a Timer B timeout in Calling. A provisional response
    /// no longer stops Timer B once this was called. Only the first call arms it; without effect
    /// after a final response.
    pub fn cancel_sent(&mut self, now: Instant) {
        if self.cancelled || !matches!(self.state, State::Calling { .. } | State::Proceeding) {
            return;
        }
        self.cancelled = true;
        let deadline = now + self.config.t1x64();
        // In Calling, Timer B may already be due earlier (64*T1 from the INVITE): keep the
        // earlier of the two.
        match self.timers.get(Timer::B) {
            Some(at) if at <= deadline => {}
            _ => self.timers.arm(Timer::B, now, self.config.t1x64()),
        }
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

    /// The ACK this transaction built for a non-2xx final response, while in Completed.
    pub fn ack(&self) -> Option<&Request> {
        match &self.state {
            State::Completed { ack } => Some(&**ack),
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

    /// A response matched to this transaction (§17.1.3) arrived.
    pub fn handle_response(&mut self, now: Instant, response: Response) {
        if response.status.is_provisional() {
            self.on_provisional(response);
        } else if response.status.is_success() {
            self.on_2xx(now, response);
        } else {
            self.on_final(now, response);
        }
        self.fire_due(now);
    }

    /// Fire every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.fire_due(now);
    }

    /// The transport could not send the INVITE or the ACK.
    pub fn handle_transport_error(&mut self, now: Instant) {
        match self.state {
            // §17.1.4: "The client transaction SHOULD inform the TU that a transport failure has
            // occurred, and the client transaction SHOULD transition directly to the
            // "Terminated" state." Only Calling (the INVITE) and Completed (the ACK) send.
            State::Calling { .. } | State::Completed { .. } => {
                self.out
                    .push_back(Output::Event(TransactionEvent::TransportError));
                self.terminate(Terminated::TransportError);
            }
            // Nothing is sent in these states; report and carry on.
            State::Proceeding | State::Accepted => {
                self.out
                    .push_back(Output::Event(TransactionEvent::TransportError));
            }
            State::Terminated(_) => {}
        }
        self.fire_due(now);
    }

    fn on_provisional(&mut self, response: Response) {
        match self.state {
            // "If the client transaction receives a provisional response while in the "Calling"
            // state, it transitions to the "Proceeding" state. In the "Proceeding" state, the
            // client transaction SHOULD NOT retransmit the request any longer." (§17.1.1.2)
            State::Calling { .. } => {
                self.timers.cancel(Timer::A);
                // After a CANCEL, Timer B bounds the wait for the final response (§9.1).
                if !self.cancelled {
                    self.timers.cancel(Timer::B);
                }
                self.state = State::Proceeding;
                self.out
                    .push_back(Output::Event(TransactionEvent::Provisional(response)));
            }
            // "Furthermore, the provisional response MUST be passed to the TU." (§17.1.1.2)
            State::Proceeding => {
                self.out
                    .push_back(Output::Event(TransactionEvent::Provisional(response)));
            }
            // A late 1xx after a final response means nothing any more.
            State::Completed { .. } | State::Accepted | State::Terminated(_) => {}
        }
    }

    fn on_2xx(&mut self, now: Instant, response: Response) {
        match self.state {
            // RFC 6026: "If a 2xx response is received while the client INVITE state
            // machine is in the "Calling" or "Proceeding" states, it MUST transition to the
            // "Accepted" state, pass the 2xx response to the TU, and set Timer M to 64*T1."
            State::Calling { .. } | State::Proceeding => {
                self.timers.cancel(Timer::A);
                self.timers.cancel(Timer::B);
                self.timers.arm(Timer::M, now, self.config.t1x64());
                self.state = State::Accepted;
                self.out
                    .push_back(Output::Event(TransactionEvent::Final(response)));
            }
            // RFC 6026 (paraphrased): in Accepted, every further 2xx (a retransmission or
            // another fork) is passed up to the TU, and the transaction does not ACK it: the TU
            // acknowledges each 2xx itself (§13.2.2.4).
            State::Accepted => {
                self.out
                    .push_back(Output::Event(TransactionEvent::Final(response)));
            }
            // A 2xx after a non-2xx final cannot belong to this transaction's outcome any more.
            State::Completed { .. } | State::Terminated(_) => {}
        }
    }

    fn on_final(&mut self, now: Instant, response: Response) {
        match &self.state {
            // "When in either the "Calling" or "Proceeding" states, reception of a response with
            // status code from 300-699 MUST cause the client transaction to transition to
            // "Completed". The client transaction MUST pass the received response up to the TU,
            // and the client transaction MUST generate an ACK request, even if the transport is
            // reliable" (§17.1.1.2).
            State::Calling { .. } | State::Proceeding => {
                self.timers.cancel(Timer::A);
                self.timers.cancel(Timer::B);
                let ack = build_ack(&self.request, &response);
                self.out
                    .push_back(Output::Transmit(Message::Request(ack.clone())));
                self.out
                    .push_back(Output::Event(TransactionEvent::Final(response)));
                // "The client transaction SHOULD start timer D when it enters the "Completed"
                // state, with a value of at least 32 seconds for unreliable transports, and a
                // value of zero seconds for reliable transports." (§17.1.1.2)
                self.timers
                    .arm(Timer::D, now, self.config.timer_d(self.transport));
                self.state = State::Completed { ack: Box::new(ack) };
            }
            // "Any retransmissions of the final response that are received while in the
            // "Completed" state MUST cause the ACK to be re-passed to the transport layer for
            // retransmission, but the newly received response MUST NOT be passed up to the TU."
            State::Completed { ack } => {
                self.out
                    .push_back(Output::Transmit(Message::Request((**ack).clone())));
            }
            // A non-2xx after a 2xx (another fork failing) is of no interest: the call is up.
            State::Accepted | State::Terminated(_) => {}
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match (&mut self.state, timer) {
            // "When timer A fires, the client transaction MUST retransmit the request by passing
            // it to the transport layer, and MUST reset the timer with a value of 2*T1. ... When
            // timer A fires 2*T1 seconds later, the request MUST be retransmitted again" (§17.1.1.2)
            (
                State::Calling {
                    interval: Some(interval),
                },
                Timer::A,
            ) => {
                *interval *= 2;
                let next = *interval;
                self.timers.arm(Timer::A, now, next);
                self.out
                    .push_back(Output::Transmit(Message::Request(self.request.clone())));
            }
            // "If the client transaction is still in the "Calling" state when timer B fires, the
            // client transaction SHOULD inform the TU that a timeout has occurred." (§17.1.1.2)
            // After a CANCEL (cancel_sent), the same in Proceeding: §9.1 "the client SHOULD then
            // consider the original transaction cancelled and SHOULD destroy the client
            // transaction handling the original request."
            (State::Calling { .. } | State::Proceeding, Timer::B) => {
                self.out
                    .push_back(Output::Event(TransactionEvent::Timeout(Timer::B)));
                self.terminate(Terminated::Timeout);
            }
            // "If timer D fires while the client transaction is in the "Completed" state, the
            // client transaction MUST move to the terminated state." (§17.1.1.2)
            (State::Completed { .. }, Timer::D) => self.terminate(Terminated::Completed),
            // RFC 6026: "If Timer M fires while the client INVITE state machine is in the
            // "Accepted" state, the state machine MUST transition to the "Terminated" state."
            (State::Accepted, Timer::M) => self.terminate(Terminated::Accepted),
            // A timer left over from an earlier state: ignore it.
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

/// The ACK for a non-2xx final response, built as RFC 3261 §17.1.1.3 says.
///
/// "The ACK request constructed by the client transaction MUST contain values for the Call-ID,
/// From, and Request-URI that are equal to the values of those header fields in the request
/// passed to the transport by the client transaction (call this the "original request"). The To
/// header field in the ACK MUST equal the To header field in the response being acknowledged ...
/// The ACK MUST contain a single Via header field, and this MUST be equal to the top Via header
/// field of the original request. The CSeq header field in the ACK MUST contain the same value
/// for the sequence number as was present in the original request, but the method parameter
/// MUST be equal to "ACK". If the INVITE request whose response is being acknowledged had Route
/// header fields, those header fields MUST appear in the ACK."
pub fn build_ack(original: &Request, response: &Response) -> Request {
    let mut headers = Headers::new();
    if let Some(via) = original.headers.get(&HeaderName::Via) {
        headers.push(HeaderName::Via, first_via_element(via));
    }
    for route in original.headers.get_all(&HeaderName::Route) {
        headers.push(HeaderName::Route, route.clone());
    }
    // §8.1.1.6: every request carries Max-Forwards; the ACK starts a fresh hop count.
    headers.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
    for name in [HeaderName::From] {
        if let Some(v) = original.headers.get(&name) {
            headers.push(name, v.clone());
        }
    }
    if let Some(to) = response.headers.get(&HeaderName::To) {
        headers.push(HeaderName::To, to.clone());
    }
    if let Some(call_id) = original.headers.get(&HeaderName::CallId) {
        headers.push(HeaderName::CallId, call_id.clone());
    }
    if let Some(cseq) = original.headers.get(&HeaderName::CSeq) {
        headers.push(HeaderName::CSeq, ack_cseq(cseq));
    }
    Request {
        method: Method::Ack,
        uri: original.uri.clone(),
        headers,
        body: Bytes::new(),
    }
}

/// `"<number> ACK"` from the original CSeq value (`"314159 INVITE"`).
fn ack_cseq(cseq: &Bytes) -> Bytes {
    let text = cseq.as_ref();
    let start = text
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(text.len());
    let len = text[start..]
        .iter()
        .position(|c| c.is_ascii_whitespace())
        .unwrap_or(text.len() - start);
    let mut out = BytesMut::with_capacity(len + 4);
    out.put_slice(&text[start..start + len]);
    out.put_slice(b" ACK");
    out.freeze()
}
