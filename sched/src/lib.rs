//! Real-time scheduling for callplane's media worker threads (`--media-priority`).
//!
//! A media worker sends every call's packets on a 20 ms schedule from one thread. On a core it
//! shares with the process's other threads (the SIP and call tasks, the event store, the
//! recorders), the kernel's fair scheduler can keep it waiting for milliseconds behind them:
//! measured in #13, a generator pinned to one core sent its packets 2.4–20 ms late (p99) with
//! 41 % of the core used, and `serve` on one core lost its jitter budget at 1000–1250 calls;
//! with the worker at `SCHED_FIFO`, 1.3 ms, and as many calls as the floor echo carried. Media servers offer the same switch
//! (FreeSWITCH's `-rp`, Asterisk's `-p`).
//!
//! `sched_setscheduler(2)` has no safe wrapper in `nix` 0.31, so this crate is the one place
//! in callplane with `unsafe`: one call, with its safety argument, behind a safe function.

use std::io;

/// The scheduling policy of a thread, as `/proc/<pid>/task/<tid>/stat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `SCHED_OTHER` (0), the fair scheduler: every thread's default.
    Other,
    /// `SCHED_FIFO` (1) at this priority (1–99).
    Fifo(u8),
    /// Any other policy (its number).
    Unknown(u32),
}

/// Puts the calling thread under `SCHED_FIFO` at `priority` (clamped to 1–99). Fails with
/// `EPERM` without `CAP_SYS_NICE` (or an `RLIMIT_RTPRIO` that allows it); the thread then keeps
/// its policy. The kernel's real-time throttling (`sched_rt_runtime_us`, 95 % of each second
/// by default) still leaves the other threads time on a core the thread would fill.
pub fn set_current_thread_fifo(priority: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority.clamp(1, 99)),
    };
    // SAFETY: `sched_setscheduler` only reads `param`, a valid, initialised `sched_param` that
    // lives on this stack frame for the whole call; pid 0 names the calling thread (on Linux a
    // policy is per thread), so no other thread's state is touched, and it has no other
    // memory effects.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The policy of thread `tid` of this process, from procfs (fields 40 `rt_priority` and 41
/// `policy` of its `stat`).
pub fn thread_policy(tid: u32) -> io::Result<Policy> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: fields count from its end.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("no ')' in stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| -> io::Result<u32> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other(format!("stat field {n} missing")))
    };
    let (priority, policy) = (field(40)?, field(41)?);
    Ok(match policy {
        0 => Policy::Other,
        1 => Policy::Fifo(u8::try_from(priority).unwrap_or(u8::MAX)),
        other => Policy::Unknown(other),
    })
}

/// The calling thread's id (`gettid(2)`), for [`thread_policy`].
pub fn current_tid() -> u32 {
    // SAFETY: `gettid` takes no arguments, touches no memory and cannot fail.
    #[allow(unsafe_code)]
    let tid = unsafe { libc::gettid() };
    u32::try_from(tid).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_thread_is_under_the_fair_scheduler() {
        let policy = std::thread::spawn(|| thread_policy(current_tid()))
            .join()
            .expect("the thread ran");
        assert_eq!(policy.expect("its stat"), Policy::Other);
    }

    #[test]
    fn fifo_is_what_procfs_then_reports_or_the_error_says_why_not() {
        let (set, policy) = std::thread::spawn(|| {
            let set = set_current_thread_fifo(7);
            (set, thread_policy(current_tid()).expect("its stat"))
        })
        .join()
        .expect("the thread ran");
        match set {
            Ok(()) => assert_eq!(policy, Policy::Fifo(7)),
            // Unprivileged: refused, and the thread keeps its policy.
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
                assert_eq!(policy, Policy::Other);
            }
        }
    }
}
