//! Supervised child processes (rayos-vmm, virtiofsd, rayos-vsock, the bridge).
//!
//! Each child runs in its own process group, with no stdin; every line it
//! writes to stdout or stderr goes to the service's log under the VM's and the
//! child's name. One task per child waits for it and publishes its exit
//! status on a watch channel (for `stop`) and to the VM's controller (for
//! supervision). Stopping signals the whole group: SIGTERM, then SIGKILL
//! after a grace period; nothing the child forked is left behind.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot start {name} ({program}): {source}")]
    Spawn { name: String, program: PathBuf, source: std::io::Error },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The name in logs, events and `status`: `rayos-vmm`, `virtiofsd-rootfs`, ...
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
}

/// A child's exit, as reported to the controller.
#[derive(Debug, Clone)]
pub struct Exited {
    pub name: String,
    /// The controller's generation counter when the child started, so that a
    /// late report from an earlier boot is told apart.
    pub generation: u64,
    pub status: ExitStatus,
}

/// A running child.
#[derive(Debug)]
pub struct Child {
    pub name: String,
    pub pid: u32,
    pub generation: u64,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl Child {
    /// Starts `spec` in its own process group. Its exit is sent to `report`.
    pub fn spawn(
        vm: &str,
        spec: &ChildSpec,
        generation: u64,
        report: mpsc::UnboundedSender<Exited>,
    ) -> Result<Child, ChildError> {
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1")
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|source| ChildError::Spawn {
            name: spec.name.clone(),
            program: spec.program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(vm, child = %spec.name, pid, "started {}", spec.program.display());
        for out in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let (vm, name) = (vm.to_string(), spec.name.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(target: "rayosd::child", vm = %vm, child = %name, "{line}");
                }
            });
        }
        let (tx, rx) = watch::channel(None);
        let name = spec.name.clone();
        let vm_name = vm.to_string();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(vm = %vm_name, child = %name, "cannot wait for the child: {e}");
                    std::os::unix::process::ExitStatusExt::from_raw(0x7f00)
                }
            };
            tracing::info!(vm = %vm_name, child = %name, "exited: {status}");
            let _ = tx.send(Some(status));
            let _ = report.send(Exited { name, generation, status });
        });
        Ok(Child { name: spec.name.clone(), pid, generation, exit: rx })
    }

    /// The exit status, if the child has exited.
    pub fn status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Sends `sig` to the child's process group, if it still runs.
    pub fn signal(&self, sig: i32) {
        if self.status().is_none() && self.pid > 0 {
            // SAFETY: killpg has no memory-safety preconditions; the group is
            // the child's own (process_group(0)) and the child is not reaped yet.
            unsafe { libc::killpg(self.pid as i32, sig) };
        }
    }

    /// Waits up to `timeout` for the exit.
    pub async fn wait(&self, timeout: Duration) -> Option<ExitStatus> {
        let mut rx = self.exit.clone();
        let r = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        match r {
            Ok(Ok(s)) => *s,
            _ => self.status(),
        }
    }

    /// SIGTERM to the group, then SIGKILL after `grace`. Returns the status.
    pub async fn terminate(&self, grace: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.status() {
            return Some(s);
        }
        self.signal(libc::SIGTERM);
        if let Some(s) = self.wait(grace).await {
            return Some(s);
        }
        tracing::warn!(child = %self.name, pid = self.pid, "did not stop within {grace:?} of SIGTERM: SIGKILL");
        self.signal(libc::SIGKILL);
        let s = self.wait(Duration::from_secs(5)).await;
        // Whatever it forked in its group goes too.
        // SAFETY: as in `signal`; ESRCH when the group is gone is harmless.
        unsafe { libc::killpg(self.pid as i32, libc::SIGKILL) };
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(name: &str, script: &str) -> ChildSpec {
        ChildSpec { name: name.into(), program: "/bin/sh".into(), args: vec!["-c".into(), script.into()], env: vec![] }
    }

    #[tokio::test]
    async fn an_exit_is_reported_with_its_generation() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let c = Child::spawn("t", &sh("quick", "echo hello; exit 7"), 5, tx).unwrap();
        let e = rx.recv().await.unwrap();
        assert_eq!((e.name.as_str(), e.generation, e.status.code()), ("quick", 5, Some(7)));
        assert_eq!(c.wait(Duration::from_secs(1)).await.and_then(|s| s.code()), Some(7));
    }

    #[tokio::test]
    async fn a_child_that_ignores_sigterm_is_killed_with_its_group() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let script = format!("trap '' TERM; sleep 300 & echo $! > {}; wait", pidfile.display());
        let c = Child::spawn("t", &sh("stubborn", &script), 1, tx).unwrap();
        for _ in 0..100 {
            if pidfile.exists() && !std::fs::read_to_string(&pidfile).unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let grandchild: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let t0 = std::time::Instant::now();
        let s = c.terminate(Duration::from_millis(300)).await.unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(s.code().is_none(), "killed by a signal: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        // SAFETY: kill with signal 0 only checks for existence.
        let alive = unsafe { libc::kill(grandchild, 0) } == 0
            && !std::fs::read_to_string(format!("/proc/{grandchild}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true);
        assert!(!alive, "the child's own child was killed with the group");
    }

    #[tokio::test]
    async fn a_missing_program_names_itself() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let spec = ChildSpec {
            name: "virtiofsd-rootfs".into(),
            program: "/nonexistent/virtiofsd".into(),
            args: vec![],
            env: vec![],
        };
        let e = Child::spawn("t", &spec, 1, tx).unwrap_err().to_string();
        assert!(e.contains("virtiofsd-rootfs") && e.contains("/nonexistent/virtiofsd"), "{e}");
    }
}
