//! The long-running children of PID 1 (the compositor, the host service,
//! udevd) and the reaping every PID 1 owes the system.
//!
//! Children are spawned with [`std::process::Command`] and tracked by pid;
//! only PID 1's main thread reaps (waitpid(-1) in [`Supervisor::reap`]), so
//! orphans re-parented to it never linger as zombies. A child that exits is
//! started again after a back-off that doubles from 1 s up to 30 s and
//! resets after a minute of running; after [`GIVE_UP_AFTER`] exits within a
//! minute of their starts it is left stopped and the console says so, with
//! the tail of its log.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const GIVE_UP_AFTER: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const STABLE: Duration = Duration::from_secs(60);

/// How a child should be started.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// stdout and stderr go here (appended).
    pub log: PathBuf,
    pub restart: bool,
}

impl Spec {
    fn command(&self) -> std::io::Result<Command> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut c = Command::new(&self.program);
        c.args(&self.args).envs(self.env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null());
        c.stdout(log.try_clone()?).stderr(log);
        Ok(c)
    }
}

/// Back-off before the next start, from how long the child ran and the last back-off.
pub fn next_backoff(ran: Duration, last: Option<Duration>) -> Duration {
    match last {
        _ if ran >= STABLE => FIRST_BACKOFF,
        None => FIRST_BACKOFF,
        Some(b) => (b * 2).min(MAX_BACKOFF),
    }
}

/// What happened to a child, for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Exited { name: &'static str, status: String, restart_in: Option<Duration> },
    GaveUp { name: &'static str, log: PathBuf },
    Restarted { name: &'static str, pid: i32 },
    SpawnFailed { name: &'static str, why: String },
}

#[derive(Debug)]
struct Tracked {
    spec: Spec,
    pid: Option<i32>,
    started: Instant,
    backoff: Option<Duration>,
    start_at: Option<Instant>,
    fast_exits: u32,
    gave_up: bool,
}

/// The supervised children.
#[derive(Debug, Default)]
pub struct Supervisor {
    children: Vec<Tracked>,
}

/// A wait status in words.
pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

impl Supervisor {
    /// Starts `spec` now.
    pub fn start(&mut self, spec: Spec) -> std::io::Result<i32> {
        let child = spec.command()?.spawn()?;
        let pid = child.id() as i32;
        // The Child handle is dropped without waiting: reap() collects it.
        drop(child);
        self.children.push(Tracked {
            spec,
            pid: Some(pid),
            started: Instant::now(),
            backoff: None,
            start_at: None,
            fast_exits: 0,
            gave_up: false,
        });
        Ok(pid)
    }

    pub fn pid(&self, name: &str) -> Option<i32> {
        self.children.iter().find(|c| c.spec.name == name).and_then(|c| c.pid)
    }

    /// Reaps every exited process (children and orphans) and schedules restarts.
    pub fn reap(&mut self) -> Vec<Report> {
        let mut out = vec![];
        loop {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG writes only into `status`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            let Some(c) = self.children.iter_mut().find(|c| c.pid == Some(pid)) else { continue };
            c.pid = None;
            let ran = c.started.elapsed();
            c.fast_exits = if ran >= STABLE { 1 } else { c.fast_exits + 1 };
            let name = c.spec.name;
            if !c.spec.restart {
                out.push(Report::Exited { name, status: describe_status(status), restart_in: None });
            } else if c.fast_exits >= GIVE_UP_AFTER {
                c.gave_up = true;
                out.push(Report::Exited { name, status: describe_status(status), restart_in: None });
                out.push(Report::GaveUp { name, log: c.spec.log.clone() });
            } else {
                let b = next_backoff(ran, c.backoff);
                c.backoff = Some(b);
                c.start_at = Some(Instant::now() + b);
                out.push(Report::Exited { name, status: describe_status(status), restart_in: Some(b) });
            }
        }
        for c in self.children.iter_mut().filter(|c| c.pid.is_none() && !c.gave_up) {
            if c.start_at.is_some_and(|t| Instant::now() >= t) {
                c.start_at = None;
                match c.spec.command().and_then(|mut cmd| cmd.spawn()) {
                    Ok(ch) => {
                        c.pid = Some(ch.id() as i32);
                        c.started = Instant::now();
                        out.push(Report::Restarted { name: c.spec.name, pid: ch.id() as i32 });
                    }
                    Err(e) => {
                        c.start_at = Some(Instant::now() + MAX_BACKOFF);
                        out.push(Report::SpawnFailed { name: c.spec.name, why: e.to_string() });
                    }
                }
            }
        }
        out
    }

    /// Stops supervising `name` (no restart), returning its pid if it runs.
    pub fn release(&mut self, name: &str) -> Option<i32> {
        let c = self.children.iter_mut().find(|c| c.spec.name == name)?;
        c.spec.restart = false;
        c.start_at = None;
        c.pid
    }

    /// Sends `sig` to `name` and waits up to `timeout` for it to exit
    /// (reaping everything meanwhile); returns its wait status in words, or
    /// None when it was still running at the deadline.
    pub fn stop(&mut self, name: &str, sig: i32, timeout: Duration) -> Option<String> {
        let pid = self.release(name)?;
        // SAFETY: kill(2) on a pid this process spawned and has not reaped.
        unsafe { libc::kill(pid, sig) };
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG writes only into `status`.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                if let Some(c) = self.children.iter_mut().find(|c| c.pid == Some(pid)) {
                    c.pid = None;
                }
                return Some(describe_status(status));
            }
            if r < 0 {
                return Some("already gone".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_to_a_cap_and_resets_after_a_stable_run() {
        let s = Duration::from_secs(1);
        assert_eq!(next_backoff(s, None), FIRST_BACKOFF);
        assert_eq!(next_backoff(s, Some(Duration::from_secs(4))), Duration::from_secs(8));
        assert_eq!(next_backoff(s, Some(Duration::from_secs(20))), MAX_BACKOFF);
        assert_eq!(next_backoff(Duration::from_secs(61), Some(MAX_BACKOFF)), FIRST_BACKOFF);
    }

    #[test]
    fn statuses_are_described() {
        assert_eq!(describe_status(3 << 8), "exit status 3");
        assert_eq!(describe_status(9), "killed by signal 9");
    }

    #[test]
    fn an_exiting_child_is_restarted_and_a_failing_one_given_up() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Supervisor::default();
        s.start(Spec {
            name: "false",
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo ran; exit 7".into()],
            env: vec![],
            log: d.path().join("false.log"),
            restart: true,
        })
        .unwrap();
        let mut reports = vec![];
        let end = Instant::now() + Duration::from_secs(60);
        while !reports.iter().any(|r| matches!(r, Report::GaveUp { .. })) && Instant::now() < end {
            reports.extend(s.reap());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(reports.contains(&Report::GaveUp { name: "false", log: d.path().join("false.log") }), "{reports:?}");
        let restarts = reports.iter().filter(|r| matches!(r, Report::Restarted { .. })).count();
        assert_eq!(restarts as u32, GIVE_UP_AFTER - 1);
        assert!(reports.contains(&Report::Exited {
            name: "false",
            status: "exit status 7".into(),
            restart_in: Some(FIRST_BACKOFF)
        }));
        let log = std::fs::read_to_string(d.path().join("false.log")).unwrap();
        assert_eq!(log.lines().count() as u32, GIVE_UP_AFTER);
    }
}
