//! Running the outer QEMU that boots the test host.
//!
//! * The accelerator is chosen by what works, not by whether `/dev/kvm`
//!   exists: a paravirtual `kvm_pvm` cannot run an unmodified kernel, and KVM
//!   without nested virtualisation gives the test host no `/dev/kvm` of its
//!   own. In both cases TCG with `-cpu max` (which exposes SVM + NPT) is used,
//!   with 5-level paging off (see [`Accel::Tcg`]).
//! * Captured runs stream the serial console line by line; each line is
//!   stamped with the monotonic clock ([`Instant`]) when it was read, echoed to
//!   stderr, written to a log file and handed to a callback. QEMU is killed
//!   when the timeout expires or the callback says the run is over and QEMU
//!   does not exit by itself shortly after.
//! * Interactive runs inherit the terminal and have no timeout.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Errors from running QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("cannot start {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write serial log {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for {binary}")]
    Wait {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A hardware accelerator setting for the outer QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// `-enable-kvm -cpu host`
    Kvm,
    /// `-accel tcg -cpu max,la57=off`.
    ///
    /// `-cpu max` offers LA57, so the test host and every guest inside it ran
    /// with 5-level paging, and TCG emulated 5-level nested page tables under
    /// them: a path few systems exercise (only the newest AMD parts have
    /// LA57). 4-level paging is what most hosts run, and it costs no boot
    /// time here. It does not end the rare nested-guest crashes (seen under
    /// both VMMs): a rayos-vmm guest triple-faulted with `la57=off` too, its
    /// vCPU failing to fetch kernel text right after an MSR write that the
    /// test host's KVM handled without leaving the kernel.
    Tcg,
}

/// `RAYOS_OUTER_TCG=single` runs the outer TCG on one thread
/// (`-accel tcg,thread=single`) instead of QEMU's default of one thread per
/// vCPU, to compare the nested guests' crash and hang rates (issue 14).
pub const OUTER_TCG_ENV: &str = "RAYOS_OUTER_TCG";

impl Accel {
    pub fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg if std::env::var(OUTER_TCG_ENV).as_deref() == Ok("single") => {
                ["-accel", "tcg,thread=single", "-cpu", "max,la57=off"]
            }
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max,la57=off"],
        }
    }
}

/// What the user asked for with `--accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelRequest {
    /// KVM when it can run a nested hypervisor, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// Facts about this machine that decide the accelerator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelProbe {
    /// `/sys/module/kvm_pvm` exists (paravirtual KVM; cannot boot Linux).
    pub kvm_pvm: bool,
    /// Opening `/dev/kvm` read-write: `Err` holds why it failed.
    pub kvm_open: Result<(), KvmUnusable>,
    /// Nested virtualisation as reported by kvm_intel/kvm_amd's `nested`
    /// parameter; `None` when neither module is loaded.
    pub nested: Option<bool>,
}

/// Why `/dev/kvm` cannot be opened read-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("/dev/kvm: {}", std::io::Error::from_raw_os_error(*.errno))]
pub struct KvmUnusable {
    pub errno: i32,
}

impl AccelProbe {
    /// Probes this machine.
    pub fn detect() -> Self {
        let kvm_open = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map(drop)
            .map_err(|e| KvmUnusable { errno: e.raw_os_error().unwrap_or(0) });
        let nested = ["kvm_intel", "kvm_amd"].iter().find_map(|m| {
            std::fs::read_to_string(format!("/sys/module/{m}/parameters/nested"))
                .ok()
                .map(|v| matches!(v.trim(), "Y" | "y" | "1"))
        });
        Self { kvm_pvm: Path::new("/sys/module/kvm_pvm").exists(), kvm_open, nested }
    }
}

/// Picks the accelerator; the string explains the choice for the log.
pub fn choose_accel(probe: &AccelProbe, request: AccelRequest) -> (Accel, String) {
    match request {
        AccelRequest::Tcg => return (Accel::Tcg, "TCG requested with --accel tcg".into()),
        AccelRequest::Kvm => return (Accel::Kvm, "KVM requested with --accel kvm".into()),
        AccelRequest::Auto => {}
    }
    if probe.kvm_pvm {
        return (
            Accel::Tcg,
            "TCG (-cpu max exposes SVM): /sys/module/kvm_pvm is loaded and paravirtual KVM cannot boot Linux".into(),
        );
    }
    if let Err(e) = &probe.kvm_open {
        return (Accel::Tcg, format!("TCG (-cpu max exposes SVM): KVM unusable ({e})"));
    }
    match probe.nested {
        Some(false) => (
            Accel::Tcg,
            "TCG (-cpu max exposes SVM): KVM works but nested virtualisation is off in kvm_intel/kvm_amd".into(),
        ),
        Some(true) => (Accel::Kvm, "KVM (-cpu host): /dev/kvm opens and nested virtualisation is on".into()),
        None => (Accel::Kvm, "KVM (-cpu host): /dev/kvm opens (nesting support not reported)".into()),
    }
}

/// How a captured run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// QEMU's exit status; `None` when it was killed.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    /// Killed because it lingered after the callback said the run was over.
    pub killed_after_finish: bool,
    pub elapsed: Duration,
    pub stderr_tail: Vec<String>,
}

/// What the line callback wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The run is over; give QEMU a grace period to exit, then kill it.
    Finished,
}

enum Msg {
    Line(Instant, bool, String),
    Eof,
}

fn spawn_reader<R: Read + Send + 'static>(r: R, is_stderr: bool, tx: mpsc::Sender<Msg>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let now = Instant::now();
                    let text = String::from_utf8_lossy(&buf);
                    let line = crate::serial::clean_line(&text);
                    if tx.send(Msg::Line(now, is_stderr, line)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Msg::Eof);
    });
}

fn kill(child: &mut Child) {
    let _ = child.kill();
}

/// Runs `cmd` with the serial console on its stdout captured. Every line is
/// timestamped relative to the spawn, logged to `log` and stderr, and passed
/// to `on_line(offset, line)`.
pub fn run_captured(
    mut cmd: Command,
    log: &Path,
    timeout: Duration,
    mut on_line: impl FnMut(Duration, &str) -> Flow,
) -> Result<RunOutcome, QemuError> {
    const GRACE: Duration = Duration::from_secs(30);
    let binary = PathBuf::from(cmd.get_program());
    let mut logf = std::fs::File::create(log).map_err(|source| QemuError::Log { path: log.to_path_buf(), source })?;
    writeln!(logf, "# {cmd:?}").map_err(|source| QemuError::Log { path: log.to_path_buf(), source })?;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| QemuError::Spawn { binary: binary.clone(), source })?;
    let (tx, rx) = mpsc::channel();
    spawn_reader(child.stdout.take().expect("piped stdout"), false, tx.clone());
    spawn_reader(child.stderr.take().expect("piped stderr"), true, tx);

    let mut deadline = start + timeout;
    let (mut timed_out, mut finished, mut open_streams) = (false, false, 2);
    let mut stderr_tail = Vec::new();
    while open_streams > 0 {
        let now = Instant::now();
        if now >= deadline {
            if finished {
                tracing::warn!("QEMU still running {GRACE:?} after the test host finished; killing it");
            } else {
                timed_out = true;
                tracing::error!("timeout after {timeout:?}; killing QEMU");
            }
            kill(&mut child);
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(Msg::Line(at, is_stderr, line)) => {
                let t = at.duration_since(start);
                let tag = if is_stderr { "qemu-stderr: " } else { "" };
                let stamped = format!("[{:>9.3}] {tag}{line}", t.as_secs_f64());
                eprintln!("{stamped}");
                writeln!(logf, "{stamped}").map_err(|source| QemuError::Log { path: log.to_path_buf(), source })?;
                if is_stderr {
                    stderr_tail.push(line);
                    if stderr_tail.len() > 20 {
                        stderr_tail.remove(0);
                    }
                } else if on_line(t, &line) == Flow::Finished && !finished {
                    finished = true;
                    deadline = deadline.min(Instant::now() + GRACE);
                }
            }
            Ok(Msg::Eof) => open_streams -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait().map_err(|source| QemuError::Wait { binary: binary.clone(), source })?;
    let elapsed = start.elapsed();
    let killed = timed_out || (finished && open_streams > 0);
    writeln!(
        logf,
        "# exit: {status} after {:.3} s{}",
        elapsed.as_secs_f64(),
        if timed_out { " (timeout)" } else { "" }
    )
    .map_err(|source| QemuError::Log { path: log.to_path_buf(), source })?;
    Ok(RunOutcome {
        status: (!killed).then_some(status),
        timed_out,
        killed_after_finish: killed && !timed_out,
        elapsed,
        stderr_tail,
    })
}

/// Runs `cmd` attached to the user's terminal; returns its exit status.
pub fn run_interactive(mut cmd: Command) -> Result<ExitStatus, QemuError> {
    let binary = PathBuf::from(cmd.get_program());
    cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(|source| QemuError::Spawn { binary: binary.clone(), source })?;
    child.wait().map_err(|source| QemuError::Wait { binary, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(kvm_pvm: bool, open: bool, nested: Option<bool>) -> AccelProbe {
        AccelProbe { kvm_pvm, kvm_open: if open { Ok(()) } else { Err(KvmUnusable { errno: libc::ENOENT }) }, nested }
    }

    #[test]
    fn pvm_means_tcg_even_with_working_dev_kvm() {
        let (a, why) = choose_accel(&probe(true, true, None), AccelRequest::Auto);
        assert_eq!(a, Accel::Tcg);
        assert!(why.contains("kvm_pvm"));
    }

    #[test]
    fn kvm_needs_open_and_nesting() {
        assert_eq!(choose_accel(&probe(false, false, None), AccelRequest::Auto).0, Accel::Tcg);
        assert_eq!(choose_accel(&probe(false, true, Some(false)), AccelRequest::Auto).0, Accel::Tcg);
        assert_eq!(choose_accel(&probe(false, true, Some(true)), AccelRequest::Auto).0, Accel::Kvm);
        assert_eq!(choose_accel(&probe(false, true, None), AccelRequest::Auto).0, Accel::Kvm);
    }

    #[test]
    fn explicit_request_wins() {
        assert_eq!(choose_accel(&probe(true, true, None), AccelRequest::Kvm).0, Accel::Kvm);
        assert_eq!(choose_accel(&probe(false, true, Some(true)), AccelRequest::Tcg).0, Accel::Tcg);
        assert_eq!(Accel::Tcg.args(), ["-accel", "tcg", "-cpu", "max,la57=off"]);
    }

    #[test]
    fn captured_run_streams_lines_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; printf 'two\\r\\n'; echo err >&2; echo three"]);
        let mut seen = Vec::new();
        let out = run_captured(cmd, &log, Duration::from_secs(10), |_, l| {
            seen.push(l.to_string());
            Flow::Continue
        })
        .unwrap();
        assert_eq!(seen, ["one", "two", "three"]);
        assert!(out.status.unwrap().success());
        assert_eq!(out.stderr_tail, ["err"]);
        assert!(std::fs::read_to_string(&log).unwrap().contains("] two\n"));

        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo start; exec sleep 30"]);
        let out = run_captured(cmd, &log, Duration::from_millis(300), |_, _| Flow::Continue).unwrap();
        assert!(out.timed_out);
        assert!(out.status.is_none());
    }
}
