//! A call's handle on its media session, which a media worker runs
//! ([`crate::net::media_workers`], docs/media/workers.md).
//!
//! The session's datagrams, timers and recorded frames never pass through the call's task:
//! the worker reads and writes the call's sockets and paces the session; the call sends it
//! commands (play, DTMF, re-INVITE changes, stop) and hears its events over
//! [`MediaLink::events`]. (Until #12's media workers, the call's task drove the session
//! itself; the benchmark that replaced that path is in docs/benchmarks.md, "Media plane".)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use media::dtmf::Digit;
use media::session::Input;
use media::srtp::SrtpParams;

use super::call_core::MediaOp;
use crate::net::media_workers::{FrameRoute, MediaCommand, MediaLink, MediaSummary};

/// The call's media session in its worker.
#[derive(Debug)]
pub(crate) struct CallMedia {
    /// The way to the session.
    pub(crate) link: MediaLink,
    /// What the session reported when it stopped.
    pub(crate) summary: Option<MediaSummary>,
}

impl CallMedia {
    fn command(&mut self, command: MediaCommand) -> Result<(), String> {
        self.link.command(command).map_err(str::to_owned)
    }

    fn warn(&mut self, command: MediaCommand) {
        if let Err(e) = self.command(command) {
            tracing::warn!(error = %e, "media command not delivered");
        }
    }

    /// Where the session's recorded frames go from now on.
    pub(crate) fn route_frames(&mut self, route: FrameRoute) {
        self.warn(MediaCommand::RouteFrames(route));
    }

    /// Plays mono PCM at `rate` Hz on a codec whose sample rate is `codec_rate`. The resampling
    /// happens here, so that the session cannot fail it.
    pub(crate) fn play(
        &mut self,
        pcm: Arc<[i16]>,
        rate: u32,
        codec_rate: u32,
    ) -> Result<(), String> {
        let pcm = if rate == codec_rate {
            pcm
        } else {
            media::codec::resample(&pcm, rate, codec_rate)
                .map_err(|e| format!("cannot play PCM: {e}"))?
                .into()
        };
        self.command(MediaCommand::Input(Input::Play {
            pcm,
            rate: codec_rate,
        }))
    }

    /// Stops the prompt (barge-in).
    pub(crate) fn stop_playback(&mut self) {
        self.warn(MediaCommand::Input(Input::StopPlayback));
    }

    /// Sends DTMF digits (paced by the session).
    pub(crate) fn send_dtmf(&mut self, digits: Vec<Digit>) -> Result<(), String> {
        self.command(MediaCommand::Input(Input::SendDtmf(digits)))
    }

    /// [`media::session::MediaSession::set_remote`].
    pub(crate) fn set_remote(&mut self, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        self.warn(MediaCommand::SetRemote(rtp, rtcp));
    }

    /// [`media::session::MediaSession::set_srtp`].
    pub(crate) fn set_srtp(&mut self, params: Option<SrtpParams>) {
        self.warn(MediaCommand::SetSrtp(params));
    }

    /// [`media::session::MediaSession::set_direction`].
    pub(crate) fn set_direction(&mut self, send: bool, expect_inbound: bool, now: Instant) {
        self.warn(MediaCommand::SetDirection {
            send,
            expect_inbound,
            now,
        });
    }

    /// [`media::session::MediaSession::rearm_rtp_timeout`].
    pub(crate) fn rearm_rtp_timeout(&mut self, now: Instant) {
        self.warn(MediaCommand::RearmRtpTimeout(now));
    }

    /// Stops the session: its RTCP BYE and the call's quality report, then
    /// [`crate::net::media_workers::WorkerEvent::Stopped`].
    pub(crate) fn stop(&mut self, now: Instant) {
        self.warn(MediaCommand::Stop(now));
    }

    /// Carries out a change the call's core asked for ([`MediaOp`]), at `now`.
    pub(crate) fn apply(&mut self, op: MediaOp, now: Instant) {
        match op {
            MediaOp::StopPlayback => self.stop_playback(),
            MediaOp::DetectVoice(on) => self.warn(MediaCommand::Input(Input::DetectVoice(on))),
            MediaOp::Echo(on) => self.warn(MediaCommand::Input(Input::Echo(on))),
            MediaOp::SetRemote(rtp, rtcp) => self.set_remote(rtp, rtcp),
            MediaOp::SetSrtp(params) => self.set_srtp(params),
            MediaOp::SetDirection {
                send,
                expect_inbound,
            } => self.set_direction(send, expect_inbound, now),
            MediaOp::RearmRtpTimeout => self.rearm_rtp_timeout(now),
        }
    }

    /// The session's figures as it stopped (`None` when its summary never came).
    pub(crate) fn summary(&self) -> Option<MediaSummary> {
        self.summary.clone()
    }
}
