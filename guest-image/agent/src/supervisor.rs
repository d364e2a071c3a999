//! PID 1 outlives the agent.
//!
//! Design note: the agent is built with `panic = "abort"` (the workspace's
//! release profile), and as PID 1 its death would take the guest down (the
//! kernel panics when init exits). So at PID 1 the binary splits in two:
//! PID 1 stays a small loop that forks the agent, reaps every orphan the
//! kernel hands it, and starts the agent again when it dies (after a pause
//! that grows while it keeps dying quickly), logging how it died; the agent
//! runs in the child as a child subreaper, so the apps it launches and their
//! orphans stay its own to reap. Apps started by an agent that died keep
//! running; the new agent does not know them. The fork happens before any
//! thread exists, so the child may run ordinary Rust code.

use std::time::{Duration, Instant};

/// Set in the agent child's environment: `pid1` when the supervisor is PID 1
/// (the child then serves PID 1's duties: power, the desktop session),
/// `supervised` otherwise (`--supervise` outside a guest, for tests).
pub const CHILD_ENV: &str = "RAYOS_AGENT_SUPERVISED";

/// First pause before restarting an agent that died.
pub const FIRST_PAUSE: Duration = Duration::from_millis(200);
/// Longest pause between restarts.
pub const MAX_PAUSE: Duration = Duration::from_secs(10);
/// An agent that ran this long before dying restarts after [`FIRST_PAUSE`].
pub const STABLE_RUN: Duration = Duration::from_secs(60);

/// The pause before the next restart, given the last pause and how long the
/// agent ran: doubles while it keeps dying quickly, resets after a stable run.
pub fn next_pause(last: Option<Duration>, ran: Duration) -> Duration {
    match last {
        None => FIRST_PAUSE,
        Some(_) if ran >= STABLE_RUN => FIRST_PAUSE,
        Some(p) => (p * 2).min(MAX_PAUSE),
    }
}

/// How a child ended, from a `waitpid` status.
pub fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let name = match sig {
            libc::SIGABRT => " (SIGABRT: a panic)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGKILL => " (SIGKILL)",
            _ => "",
        };
        format!("killed by signal {sig}{name}")
    } else {
        format!("ended with wait status {status:#x}")
    }
}

/// Whether this process is the agent child of a supervising PID 1.
pub fn is_pid1_child() -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok("pid1")
}

/// Whether this process is an agent child of a supervisor.
pub fn is_supervised() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Runs the supervisor: forks, and in the child returns (the caller then
/// runs the agent); in the parent never returns. Must be called before any
/// thread is started.
pub fn supervise() {
    let role = if std::process::id() == 1 { "pid1" } else { "supervised" };
    let mut last_pause: Option<Duration> = None;
    loop {
        // SAFETY: no other thread exists yet (the caller's contract), so the
        // child may continue with ordinary code.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // No thread exists in this process yet: setting the environment is sound.
            std::env::set_var(CHILD_ENV, role);
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
                eprintln!("rayos-guest-agent: cannot become a child subreaper: {}", std::io::Error::last_os_error());
            }
            return;
        }
        if pid < 0 {
            eprintln!("rayos-guest-agent (supervisor): fork failed: {}", std::io::Error::last_os_error());
            std::thread::sleep(MAX_PAUSE);
            continue;
        }
        let started = Instant::now();
        eprintln!("rayos-guest-agent (supervisor): agent started as pid {pid}");
        // Reap everything; the agent's own end restarts it.
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid writes only `status`.
            let got = unsafe { libc::waitpid(-1, &mut status, 0) };
            if got == pid {
                let pause = next_pause(last_pause, started.elapsed());
                last_pause = Some(pause);
                eprintln!(
                    "rayos-guest-agent (supervisor): the agent (pid {pid}) {} after {:.1} s; starting it again in {:.1} s",
                    describe_status(status),
                    started.elapsed().as_secs_f64(),
                    pause.as_secs_f64()
                );
                std::thread::sleep(pause);
                break;
            }
            if got < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    // No child at all: the agent is gone without a status.
                    eprintln!("rayos-guest-agent (supervisor): waitpid: {e}; starting the agent again");
                    std::thread::sleep(FIRST_PAUSE);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_while_the_agent_keeps_dying_and_reset_after_a_stable_run() {
        let quick = Duration::from_secs(1);
        let mut p = next_pause(None, quick);
        assert_eq!(p, FIRST_PAUSE);
        for _ in 0..10 {
            p = next_pause(Some(p), quick);
        }
        assert_eq!(p, MAX_PAUSE);
        assert_eq!(next_pause(Some(p), STABLE_RUN), FIRST_PAUSE);
    }

    #[test]
    fn statuses_are_told_apart() {
        assert_eq!(describe_status(3 << 8), "exited with status 3");
        assert_eq!(describe_status(libc::SIGABRT), "killed by signal 6 (SIGABRT: a panic)");
        assert!(describe_status(libc::SIGTERM).starts_with("killed by signal 15"));
    }
}
