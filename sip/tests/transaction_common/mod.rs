//! Shared virtual-time harness for the transaction tests: a clock that only moves when told,
//! request/response builders, and an in-memory link that can drop, delay, duplicate and
//! reorder.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sip::message::{HeaderName, Headers, Message, Method, Request, Response, StatusCode, Uri};
use sip::transaction::{
    ClientInvite, ClientNonInvite, Output, ServerInvite, ServerNonInvite, TransactionEvent,
};

/// The origin of virtual time. Any instant will do: nothing compares it with the real clock.
#[allow(clippy::disallowed_methods)]
pub fn t0() -> Instant {
    Instant::now()
}

/// Milliseconds from `t0` to `t`.
pub fn ms(t0: Instant, t: Instant) -> u64 {
    u64::try_from((t - t0).as_millis()).expect("test times fit in u64")
}

pub fn request(method: Method, branch: &str, cseq: u32) -> Request {
    let mut headers = Headers::new();
    headers.push(
        HeaderName::Via,
        format!("SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"),
    );
    headers.push(HeaderName::Route, "<sip:proxy1.example.net;lr>");
    headers.push(HeaderName::Route, "<sip:proxy2.example.net;lr>");
    headers.push(HeaderName::MaxForwards, "70");
    headers.push(
        HeaderName::From,
        "\"Alice\" <sip:alice@example.com>;tag=a73kszlfl",
    );
    headers.push(HeaderName::To, "<sip:bob@example.net>");
    headers.push(HeaderName::CallId, "1j9FpLxk3uxtm8tn@192.0.2.1");
    headers.push(HeaderName::CSeq, format!("{cseq} {}", method.as_str()));
    headers.push(HeaderName::Contact, "<sip:alice@192.0.2.1>");
    Request {
        method,
        uri: Uri::parse("sip:bob@example.net").expect("valid URI"),
        headers,
        body: Bytes::new(),
    }
}

/// A response to `req` as a UAS would send it (with a To tag on everything but 100).
pub fn response(req: &Request, code: u16) -> Response {
    let status = StatusCode::new(code).expect("valid code");
    let mut r = sip::message::response_to(req, status, None);
    if code != 100 {
        r.add_to_tag("b5qt9xl");
    }
    r
}

/// Through the codec and back, as a datagram would go.
pub fn wire(m: &Message) -> Message {
    Message::parse(m.to_bytes()).expect("what we print parses")
}

/// The four machines behind one face, so one stepping loop drives any of them.
pub trait Machine {
    fn poll_output(&mut self) -> Option<Output>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
}

macro_rules! machine {
    ($($t:ty),*) => {$(
        impl Machine for $t {
            fn poll_output(&mut self) -> Option<Output> { <$t>::poll_output(self) }
            fn poll_timeout(&self) -> Option<Instant> { <$t>::poll_timeout(self) }
            fn handle_timeout(&mut self, now: Instant) { <$t>::handle_timeout(self, now) }
        }
    )*};
}
machine!(ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite);

/// What one machine did, stamped with virtual time.
#[derive(Debug, Default)]
pub struct Log {
    pub sent: Vec<(Instant, Message)>,
    pub events: Vec<(Instant, TransactionEvent)>,
}

impl Log {
    pub fn drain(&mut self, now: Instant, m: &mut impl Machine) {
        while let Some(o) = m.poll_output() {
            match o {
                Output::Transmit(msg) => self.sent.push((now, msg)),
                Output::Event(e) => self.events.push((now, e)),
            }
        }
    }

    /// Send times in ms since `t0`.
    pub fn send_times(&self, t0: Instant) -> Vec<u64> {
        self.sent.iter().map(|(t, _)| ms(t0, *t)).collect()
    }

    pub fn event_times(&self, t0: Instant) -> Vec<(u64, TransactionEvent)> {
        self.events
            .iter()
            .map(|(t, e)| (ms(t0, *t), e.clone()))
            .collect()
    }
}

/// Run a lone machine over a dead link (nothing ever comes back) until it has no timer left,
/// jumping straight to each deadline. Returns the log.
pub fn run_alone(start: Instant, m: &mut impl Machine) -> Log {
    let mut log = Log::default();
    log.drain(start, m);
    let mut guard = 0;
    while let Some(at) = m.poll_timeout() {
        m.handle_timeout(at);
        log.drain(at, m);
        guard += 1;
        assert!(guard < 10_000, "machine never settles");
    }
    log
}

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToServer,
    ToClient,
}

/// What the link does with the n-th datagram sent in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Drop,
    Delay(Duration),
    Duplicate,
}

/// An in-memory datagram link with a base one-way delay, scripted faults per datagram index
/// and direction, and optional seeded random loss/duplication/jitter (which reorders).
pub struct Link {
    pub delay: Duration,
    pub script: Vec<(Dir, usize, Fault)>,
    /// Random faults: probability (percent) of drop and of duplicate, and max extra jitter.
    pub random: Option<(u64, u32, u32, Duration)>,
    sent: [usize; 2],
    in_flight: BTreeMap<(Instant, u64), (Dir, Message)>,
    seq: u64,
    pub dropped: usize,
    pub duplicated: usize,
}

impl Link {
    pub fn new(delay: Duration) -> Link {
        Link {
            delay,
            script: Vec::new(),
            random: None,
            sent: [0, 0],
            in_flight: BTreeMap::new(),
            seq: 0,
            dropped: 0,
            duplicated: 0,
        }
    }

    fn rand(&mut self) -> u64 {
        let (state, ..) = self.random.as_mut().expect("random link");
        // xorshift64*: deterministic per seed.
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn send(&mut self, now: Instant, dir: Dir, msg: Message) {
        let idx = self.sent[dir as usize];
        self.sent[dir as usize] += 1;
        let mut copies = 1;
        let mut extra = Duration::ZERO;
        for &(d, i, f) in &self.script {
            if d == dir && i == idx {
                match f {
                    Fault::Drop => copies = 0,
                    Fault::Delay(x) => extra += x,
                    Fault::Duplicate => copies = 2,
                }
            }
        }
        if let Some((_, drop_pct, dup_pct, jitter)) = self.random {
            if self.rand() % 100 < u64::from(drop_pct) {
                copies = 0;
            } else if self.rand() % 100 < u64::from(dup_pct) {
                copies = 2;
            }
            let j = u64::try_from(jitter.as_micros())
                .expect("small jitter")
                .max(1);
            extra += Duration::from_micros(self.rand() % j);
        }
        if copies == 0 {
            self.dropped += 1;
        }
        if copies == 2 {
            self.duplicated += 1;
        }
        for c in 0..copies {
            self.seq += 1;
            let at = now + self.delay + extra + Duration::from_millis(7 * c);
            self.in_flight.insert((at, self.seq), (dir, wire(&msg)));
        }
    }

    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|(t, _)| *t)
    }

    /// Take one datagram due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<(Dir, Message)> {
        let key = *self.in_flight.keys().next()?;
        if key.0 > now {
            return None;
        }
        self.in_flight.remove(&key)
    }
}

/// The earliest of several optional instants.
pub fn earliest(items: &[Option<Instant>]) -> Option<Instant> {
    items.iter().flatten().min().copied()
}
