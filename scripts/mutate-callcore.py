#!/usr/bin/env python3
"""Mutation check of the CallCore engine scenarios (docs/media/callcore.md, "Each scenario can
fail"). Applies each one-line mutation below, one at a time, to a git worktree of HEAD kept in
the build directory (`$CARGO_TARGET_DIR/tree`, default target/mutants/tree),
runs `cargo test --lib call_core` there and prints which scenarios went red. A mutation that
turns nothing red, or a pattern that no longer matches the code, is printed as such: update the
scenarios or the pattern. Not part of the test command (about a minute per mutation).

    scripts/mutate-callcore.py [INDEX ...]     # all mutations, or only these
"""
import os, subprocess, sys

M=[
 ("ring timeout sends no CANCEL","src/engine/call_core.rs","""                if let Err(e) = self.session.cancel(now) {
                    tracing::debug!(error = %e, "cancel after ring timeout");
                }""","""                let _ = now;"""),
 ("on_cancel_sent records nothing","src/engine/call_state.rs","""            *cancel_sent = true;""","""            let _ = cancel_sent;"""),
 ("teardown timer does nothing","src/engine/call_core.rs","""                    self.torn_down = self.teardown;
                    self.state.end_unless_ended(reason, now);""","""                    let _ = reason;"""),
 ("RTP timeout ignored","src/engine/call_core.rs","""                self.end_for(self.now, "rtp_timeout", None);""","""                let _ = 0;"""),
 ("RTP timeout ends unanswered calls too","src/engine/call_core.rs","""            MediaEvent::RtpTimeout if self.state.answered_at().is_some() => {""","""            MediaEvent::RtpTimeout => {"""),
 ("drain does not tear down","src/engine/call_core.rs","""                self.tear_down_by(now + DRAIN_TEARDOWN, "drain");""","""                let _ = DRAIN_TEARDOWN;"""),
 ("answer does not re-arm the RTP timeout","src/engine/call_core.rs","""                self.media_op(MediaOp::RearmRtpTimeout);""","""                let _ = MediaOp::RearmRtpTimeout;"""),
 ("max duration not restarted at the answer","src/engine/call_core.rs","""                if let Some(max) = self.max_duration {
                    self.timers.set(Timer::MaxDuration, now.checked_add(max));
                }
                // Early media""","""                // Early media"""),
 ("failed send leaves no reason","src/engine/call_core.rs","""                    self.transport_failure = Some(Arc::from(e));""","""                    let _ = e;"""),
 ("re-INVITE always refused","src/engine/call_core.rs","""                let answered = sdp.and_then(|s| self.negotiator.receive_offer(&s));""","""                let answered = sdp.and_then(|_| Err::<(Sdp, Negotiated), _>(SdpError::NoCommonCodec));"""),
 ("refused media does not end the call","src/engine/call_core.rs","""                self.media_on = false;
                self.end_for(now, "media_failed", Some(e));""","""                self.media_on = false;
                let _ = e;"""),
 ("duration counted from the start","src/engine/call_core.rs","""            answered_at.map(|a| ended_at.saturating_duration_since(a).as_millis() as u64);""","""            answered_at.map(|_| ended_at.saturating_duration_since(self.wall_anchor.0).as_millis() as u64);"""),
 ("inbound INVITE is not answered","src/engine/call_core.rs","""            None => call.answer_inbound(now, &offer),""","""            None => call.ring(now),"""),
 ("early media from a 183 is ignored","src/engine/call_core.rs","""                    } else if !self.media_on {
                        match sdp.and_then(|s| self.negotiator.receive_answer(&s)) {""","""                    } else if false {
                        match sdp.and_then(|s| self.negotiator.receive_answer(&s)) {"""),
 ("a 2xx after our CANCEL is not noted","src/engine/call_core.rs","""            if response.status.is_success() && self.state.cancel_sent() {""","""            if response.status.is_success() && self.state.cancel_sent() && false {"""),
 ("ring timeout fires at half its value","src/engine/call_core.rs","""            Some(now + req.ring_timeout),""","""            Some(now + req.ring_timeout / 2),"""),
 ("hangup input ignored","src/engine/call_core.rs","""            CoreInput::Hangup => self.hang_up(now),""","""            CoreInput::Hangup => {}"""),
 ("every BYE waits for its answer","src/engine/call_core.rs","""                        .is_some_and(|t| t.sip.credentials.is_some())
                        && self.timers.get(Timer::ByeWait).is_none()""","""                        .is_some()
                        && self.timers.get(Timer::ByeWait).is_none()"""),
 ("a CANCEL received is not passed to the session","src/engine/call_core.rs","""            EndpointEvent::CancelReceived { .. } => self.session.handle_cancel(now),""","""            EndpointEvent::CancelReceived { .. } => {}"""),
 ("the maximum duration timer does nothing","src/engine/call_core.rs","""                self.end_for(now, "max_duration", None);""","""                let _ = 0;"""),
 ("486 is not busy","src/engine/events.rs","""            486 | 600 => Outcome::Busy,""","""            600 => Outcome::Busy,"""),
 ("a transport error's detail is dropped","src/engine/call_core.rs","""                    self.transport_failure = Some(detail);
                }
                self.handle_sip(now, event);""","""                    let _ = detail;
                }
                self.handle_sip(now, event);"""),
 ("a 503 does not fail over","src/engine/call_core.rs","""if matches!(status, 503 | 408) && self.fail_over(""","""if matches!(status, 408) && self.fail_over("""),
 ("digits go at the answer, not after their delay","src/engine/call_core.rs","""Some(now + self.dtmf_after)""","""Some(now)"""),
 ("a received digit is not given to the script","src/engine/call_core.rs","""                self.script_input(ScriptInput::Dtmf(digit.as_char()));""","""                let _ = digit;"""),
 ("the script's timer never fires","src/engine/call_core.rs","""            runner.handle(now, ScriptInput::Timeout);""","""            let _ = runner;"""),
 ("finish does not wait for the BYE to be sent","src/engine/call_core.rs","""            if let Some((_, at)) = ended
                && self.finishing == Finishing::Live""","""            if let Some((_, at)) = ended.or(Some((EndReason::LocalBye, self.now)))
                && self.finishing == Finishing::Live"""),
]

def main():
    repo = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                          text=True, check=True).stdout.strip()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(repo, "target", "mutants"))
    only = set(sys.argv[1:])
    survivors = 0
    # One worktree for every run, kept beside the build and moved to HEAD: cargo keys its
    # cache on the path and the files' times, so a fresh tree would rebuild the workspace first.
    root = os.path.join(target, "tree")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()
    if os.path.isdir(os.path.join(root, ".git")) or os.path.isfile(os.path.join(root, ".git")):
        subprocess.run(["git", "checkout", "-q", "--detach", "-f", head], cwd=root, check=True)
    else:
        subprocess.run(["git", "worktree", "prune"], cwd=repo, check=True)
        subprocess.run(["git", "worktree", "add", "-q", "--detach", root, head], cwd=repo,
                       check=True)
    for i, (name, path, old, new) in enumerate(M):
        if only and str(i) not in only:
            continue
        p = os.path.join(root, path)
        src = open(p).read()
        if old not in src:
            print(f"{i} {name}: PATTERN NOT FOUND", flush=True)
            survivors += 1
            continue
        open(p, "w").write(src.replace(old, new, 1))
        try:
            try:
                r = subprocess.run(["cargo", "test", "--lib", "call_core"], cwd=root,
                                   capture_output=True, text=True, timeout=900,
                                   env=dict(os.environ, CARGO_TARGET_DIR=target))
            except subprocess.TimeoutExpired:
                survivors += 1
                print(f"{i} {name} -> HUNG (a scenario did not end in 15 min)", flush=True)
                continue
            out = r.stdout + r.stderr
            failed = [l.split()[1].split("::")[-1] for l in out.splitlines()
                      if l.startswith("test ") and l.endswith("FAILED")]
            if not failed:
                survivors += 1
                if r.returncode != 0:
                    failed = ["(did not compile)"]
            print(f"{i} {name} -> {failed or 'SURVIVED'}", flush=True)
        finally:
            open(p, "w").write(src)
    sys.exit(1 if survivors else 0)


if __name__ == "__main__":
    main()
