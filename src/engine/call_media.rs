//! A call's media session, wherever it runs: in a media worker (the default,
//! [`crate::net::media_workers`]) or in the call's own task (the per-call path, kept as the
//! benchmark's reference: `--media-workers 0`).
//!
//! The call speaks to both the same way; only the run loop differs: a local session is fed
//! the call's datagrams and timeouts by the call's task, and its outputs are drained there
//! ([`CallMedia::local`]); a worker's session sends its own datagrams and its events and frames
//! come back over [`MediaLink::events`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use media::dtmf::Digit;
use media::session::{Input, MediaSession};
use media::srtp::SrtpParams;

use crate::net::media_workers::{MediaCommand, MediaLink, MediaSummary};

/// Where the call's media session runs.
#[derive(Debug)]
pub(crate) enum CallMedia {
    /// In the call's task.
    Local(Box<MediaSession>),
    /// In a media worker; `summary` once it stopped.
    Worker {
        link: MediaLink,
        summary: Option<MediaSummary>,
    },
}

impl CallMedia {
    /// The session, when the call's task drives it.
    pub(crate) fn local(&mut self) -> Option<&mut MediaSession> {
        match self {
            CallMedia::Local(s) => Some(s),
            CallMedia::Worker { .. } => None,
        }
    }

    /// The link, when a worker drives the session.
    pub(crate) fn link(&mut self) -> Option<&mut MediaLink> {
        match self {
            CallMedia::Worker { link, .. } => Some(link),
            CallMedia::Local(_) => None,
        }
    }

    fn command(&mut self, command: MediaCommand) -> Result<(), String> {
        match self {
            CallMedia::Local(_) => Ok(()),
            CallMedia::Worker { link, .. } => link.command(command).map_err(str::to_owned),
        }
    }

    /// Plays mono PCM at `rate` Hz on a codec whose sample rate is `codec_rate`. The resampling
    /// happens here, so that the worker's session cannot fail it.
    pub(crate) fn play(
        &mut self,
        pcm: Arc<[i16]>,
        rate: u32,
        codec_rate: u32,
    ) -> Result<(), String> {
        match self {
            CallMedia::Local(s) => s
                .handle_input(Input::Play { pcm, rate })
                .map_err(|e| e.to_string()),
            CallMedia::Worker { .. } => {
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
        }
    }

    /// Stops the prompt (barge-in).
    pub(crate) fn stop_playback(&mut self) {
        let result = match self {
            CallMedia::Local(s) => s
                .handle_input(Input::StopPlayback)
                .map_err(|e| e.to_string()),
            CallMedia::Worker { .. } => self.command(MediaCommand::Input(Input::StopPlayback)),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "prompt not stopped");
        }
    }

    /// Sends DTMF digits (paced by the session).
    pub(crate) fn send_dtmf(&mut self, digits: Vec<Digit>) -> Result<(), String> {
        match self {
            CallMedia::Local(s) => s
                .handle_input(Input::SendDtmf(digits))
                .map_err(|e| e.to_string()),
            CallMedia::Worker { .. } => self.command(MediaCommand::Input(Input::SendDtmf(digits))),
        }
    }

    /// [`MediaSession::set_remote`].
    pub(crate) fn set_remote(&mut self, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        match self {
            CallMedia::Local(s) => s.set_remote(rtp, rtcp),
            CallMedia::Worker { .. } => self.warn(MediaCommand::SetRemote(rtp, rtcp)),
        }
    }

    /// [`MediaSession::set_srtp`].
    pub(crate) fn set_srtp(&mut self, params: Option<SrtpParams>) {
        match self {
            CallMedia::Local(s) => s.set_srtp(params),
            CallMedia::Worker { .. } => self.warn(MediaCommand::SetSrtp(params)),
        }
    }

    /// [`MediaSession::set_direction`].
    pub(crate) fn set_direction(&mut self, send: bool, expect_inbound: bool, now: Instant) {
        match self {
            CallMedia::Local(s) => s.set_direction(send, expect_inbound, now),
            CallMedia::Worker { .. } => self.warn(MediaCommand::SetDirection {
                send,
                expect_inbound,
                now,
            }),
        }
    }

    /// [`MediaSession::rearm_rtp_timeout`].
    pub(crate) fn rearm_rtp_timeout(&mut self, now: Instant) {
        match self {
            CallMedia::Local(s) => s.rearm_rtp_timeout(now),
            CallMedia::Worker { .. } => self.warn(MediaCommand::RearmRtpTimeout(now)),
        }
    }

    /// Stops the session: its RTCP BYE and the call's quality report. A worker's session
    /// answers with [`crate::net::media_workers::WorkerEvent::Stopped`].
    pub(crate) fn stop(&mut self, now: Instant) {
        match self {
            CallMedia::Local(s) => {
                let _ = s.handle_input(Input::Stop { now });
            }
            CallMedia::Worker { .. } => self.warn(MediaCommand::Stop(now)),
        }
    }

    /// The session's figures: now for a local one, as it stopped for a worker's (`None` when
    /// its summary never came).
    pub(crate) fn summary(&self) -> Option<MediaSummary> {
        match self {
            CallMedia::Local(s) => Some(MediaSummary::of(s)),
            CallMedia::Worker { summary, .. } => summary.clone(),
        }
    }

    fn warn(&mut self, command: MediaCommand) {
        if let Err(e) = self.command(command) {
            tracing::warn!(error = %e, "media command not delivered");
        }
    }
}
