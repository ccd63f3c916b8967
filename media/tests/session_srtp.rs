//! Two `MediaSession`s with SRTP in virtual time: audio and RTCP go through encrypted; a wrong
//! key, a tampered packet and a replay are counted and dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::codec::Codec;
use media::rtp::{PayloadType, Ssrc, is_rtcp};
use media::session::{Input, MediaSession, Output, SessionConfig};
use media::srtp::{MasterKey, SrtpParams, SrtpSuite};

/// An arbitrary origin for virtual time: the only clock read.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

const A: &str = "10.0.0.1:4000";
const B: &str = "10.0.0.2:5000";
const KA: MasterKey = MasterKey([0xa1; 30]);
const KB: MasterKey = MasterKey([0xb2; 30]);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

fn session(ssrc: u32, remote: &str, srtp: Option<SrtpParams>, now: Instant) -> MediaSession {
    let mut c = SessionConfig::new(Codec::Pcmu, PayloadType::PCMU, Ssrc(ssrc));
    c.remote_rtp = Some(addr(remote));
    c.rtcp_mux = true;
    c.record = true;
    c.rtcp_interval = Duration::from_millis(500);
    c.initial_sequence = 65_000; // wraps (the rollover counter moves) during the run
    c.srtp = srtp;
    MediaSession::new(c, now)
}

fn params(suite: SrtpSuite, local: MasterKey, remote: MasterKey) -> SrtpParams {
    SrtpParams {
        suite,
        local,
        remote,
    }
}

/// A 1 kHz tone at 8 kHz, loud.
fn tone(ms: usize) -> Arc<[i16]> {
    (0..8 * ms)
        .map(|n| {
            let x = 2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 8000.0;
            (8000.0 * x.sin()) as i16
        })
        .collect()
}

/// What went over the wire from A, and what B recorded as heard (left channel), running
/// both for `ms` of virtual time; every datagram from A is handed to `tap` first, which may
/// change or duplicate it.
fn run(
    a: &mut MediaSession,
    b: &mut MediaSession,
    start: Instant,
    ms: u64,
    mut tap: impl FnMut(Vec<u8>) -> Vec<Vec<u8>>,
) -> (Vec<Vec<u8>>, Vec<i16>) {
    let until = start + Duration::from_millis(ms);
    let mut now = start;
    let mut wire = Vec::new();
    let mut heard = Vec::new();
    for _ in 0..100_000 {
        let mut next = until;
        let mut to_b = Vec::new();
        let mut to_a = Vec::new();
        while let Some(o) = a.poll_output() {
            match o {
                Output::Transmit(t) => to_b.push(t.bytes),
                Output::Timeout(at) => {
                    next = next.min(at);
                    break;
                }
                _ => {}
            }
        }
        while let Some(o) = b.poll_output() {
            match o {
                Output::Transmit(t) => to_a.push(t.bytes),
                Output::Record(r) => heard.extend(r.samples.chunks(2).map(|lr| lr[0])),
                Output::Timeout(at) => {
                    next = next.min(at);
                    break;
                }
                _ => {}
            }
        }
        for bytes in to_b {
            wire.push(bytes.clone());
            for p in tap(bytes) {
                let (source, bytes) = (addr(A), Bytes::from(p));
                b.handle_input(Input::Receive { now, source, bytes })
                    .expect("b");
            }
        }
        for p in to_a {
            let (source, bytes) = (addr(B), Bytes::from(p));
            a.handle_input(Input::Receive { now, source, bytes })
                .expect("a");
        }
        if next >= until {
            break;
        }
        now = next.max(now);
        a.handle_input(Input::Timeout(now)).expect("a timeout");
        b.handle_input(Input::Timeout(now)).expect("b timeout");
    }
    (wire, heard)
}

fn loud(samples: &[i16]) -> usize {
    samples.iter().filter(|s| s.unsigned_abs() > 2000).count()
}

#[test]
fn srtp_sessions_exchange_audio_and_rtcp_encrypted() {
    for suite in SrtpSuite::ALL {
        let start = t0();
        let mut a = session(1, B, Some(params(suite, KA, KB)), start);
        let mut b = session(2, A, Some(params(suite, KB, KA)), start);
        let plain = tone(3000);
        a.handle_input(Input::Play {
            pcm: plain,
            rate: 8000,
        })
        .expect("play");
        let (wire, heard) = run(&mut a, &mut b, start, 3000, |p| vec![p]);
        let (sa, sb) = (a.stats(), b.stats());
        assert!(sb.packets_received >= 140, "{suite}: {sb:?}");
        assert!(sb.rtcp_received >= 4, "{suite}: {sb:?}");
        assert!(sa.rtcp_received >= 4, "{suite}: {sa:?}");
        assert_eq!((sb.srtp_auth_failed, sb.srtp_replayed), (0, 0), "{suite}");
        assert_eq!(sb.stray_garbage, 0, "{suite}");
        assert!(loud(&heard) > 8000, "{suite}: B heard the tone");
        // On the wire: µ-law of the tone would repeat with the tone's 8-sample period; the
        // ciphertext does not.
        let tag = if suite == SrtpSuite::AesCm128HmacSha1_80 {
            10
        } else {
            4
        };
        let rtp: Vec<&Vec<u8>> = wire.iter().filter(|p| !is_rtcp(p)).collect();
        assert!(rtp.len() >= 140);
        for p in &rtp {
            assert_eq!(p.len(), 12 + 160 + tag, "{suite}");
            let payload = &p[12..12 + 160];
            let periodic = (0..152).filter(|&i| payload[i] == payload[i + 8]).count();
            assert!(periodic < 40, "{suite}: payload looks like plain audio");
        }
    }
}

#[test]
fn wrong_key_tampering_and_replays_are_counted_and_dropped() {
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let start = t0();
    // B expects another key than A sends with: nothing is accepted, nothing heard.
    let mut a = session(1, B, Some(params(suite, KA, KB)), start);
    let mut b = session(2, A, Some(params(suite, KB, MasterKey([9; 30]))), start);
    a.handle_input(Input::Play {
        pcm: tone(1000),
        rate: 8000,
    })
    .expect("play");
    let (_, heard) = run(&mut a, &mut b, start, 1000, |p| vec![p]);
    let sb = b.stats();
    assert_eq!(sb.packets_received, 0, "{sb:?}");
    assert_eq!(sb.rtcp_received, 0, "{sb:?}");
    assert!(sb.srtp_auth_failed >= 45, "{sb:?}");
    assert_eq!(loud(&heard), 0);

    // Right keys, but every packet is delivered twice and every 10th is corrupted.
    let start = t0();
    let mut a = session(1, B, Some(params(suite, KA, KB)), start);
    let mut b = session(2, A, Some(params(suite, KB, KA)), start);
    a.handle_input(Input::Play {
        pcm: tone(1000),
        rate: 8000,
    })
    .expect("play");
    let mut n = 0;
    run(&mut a, &mut b, start, 1000, |p| {
        n += 1;
        if n % 10 == 0 {
            let mut bad = p.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x80;
            vec![bad]
        } else {
            vec![p.clone(), p]
        }
    });
    let sb = b.stats();
    assert!(sb.packets_received >= 40, "{sb:?}");
    assert!(sb.srtp_replayed >= 40, "{sb:?}");
    assert!(sb.srtp_auth_failed >= 4, "{sb:?}");
}

#[test]
fn plain_rtp_to_an_srtp_session_is_refused_and_rekeying_works() {
    let suite = SrtpSuite::AesCm128HmacSha1_32;
    let start = t0();
    let mut a = session(1, B, None, start);
    let mut b = session(2, A, Some(params(suite, KB, KA)), start);
    a.handle_input(Input::Play {
        pcm: tone(2000),
        rate: 8000,
    })
    .expect("play");
    run(&mut a, &mut b, start, 500, |p| vec![p]);
    assert_eq!(b.stats().packets_received, 0, "{:?}", b.stats());
    assert!(b.stats().srtp_auth_failed > 10, "{:?}", b.stats());
    // A re-INVITE makes both sides SRTP: from then on it flows.
    a.set_srtp(Some(params(suite, KA, KB)));
    assert!(a.is_srtp());
    run(
        &mut a,
        &mut b,
        start + Duration::from_millis(500),
        1000,
        |p| vec![p],
    );
    assert!(b.stats().packets_received >= 20, "{:?}", b.stats());
}
