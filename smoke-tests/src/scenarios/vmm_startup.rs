//! Scenario `vmm-startup` (tier 1): rayos-vmm start-up latency and memory on
//! this machine's `/dev/kvm` with a tiny ELF guest.
//!
//! The guest (`vmm/tests/guests/hello.S`) is assembled into the run directory,
//! then rayos-vmm runs it `--runs` times. For each run CLOCK_MONOTONIC is read
//! immediately before `spawn`; the VMM reports CLOCK_MONOTONIC at its first
//! `KVM_RUN` (`first_run_monotonic_ns` in `--metrics`), so the difference
//! covers exec, dynamic loading, argument parsing, VM and memory set-up and
//! kernel loading. Memory is the VMM's own RSS (`rss_anon_kib +
//! rss_file_kib`; guest RAM is shared memory and reported separately).
//! Without a usable `/dev/kvm` the scenario is skipped (exit 77).

use crate::scenarios::ScenarioError;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::VmmStartupArgs;
use crate::rundir::{self, RunDirError};
use crate::stats::{self, Summary};
use crate::Outcome;

pub const SCENARIO: &str = "vmm-startup";
/// Stop early when this many runs fail before any succeeds.
const GIVE_UP_AFTER: usize = 3;

/// Errors that stop the scenario before the runs.
#[derive(Debug, thiserror::Error)]
pub enum VmmStartupError {
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    #[error(
        "rayos-vmm binary not found at {0} (build it with `cargo build --release -p rayos-vmm` or pass --vmm-bin)"
    )]
    NoVmmBin(PathBuf),
    #[error("test guest source not found at {0} (pass --guest-src)")]
    NoGuestSource(PathBuf),
    #[error("cannot run cc to build {src}")]
    CcSpawn {
        src: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cc failed to build {src} ({status}): {stderr}")]
    Compile { src: PathBuf, status: std::process::ExitStatus, stderr: String },
}

/// The `--metrics` JSON rayos-vmm writes on exit.
pub use rayos_vmm_api::Metrics as VmmMetrics;

/// Figures of one successful run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunFigures {
    pub start_to_first_run_ms: f64,
    pub rss_overhead_kib: u64,
    pub wall_ms: f64,
}

/// CLOCK_MONOTONIC in nanoseconds (the clock rayos-vmm reports).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn kvm_usable() -> Result<(), ScenarioError> {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").map(drop).map_err(|source| ScenarioError::Io {
        what: "opening read-write",
        path: "/dev/kvm".into(),
        source,
    })
}

/// `vmm-startup`.
pub fn run(args: &VmmStartupArgs) -> Outcome {
    if let Err(reason) = kvm_usable() {
        return Outcome::Skip { scenario: SCENARIO, reason: reason.to_string() };
    }
    match measure(args) {
        Ok(outcome) => outcome,
        Err(e) => {
            let mut reason = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                reason.push_str(&format!(": {s}"));
                src = s.source();
            }
            Outcome::Fail { scenario: SCENARIO, reason }
        }
    }
}

/// Assembles the test guest with the command the VMM's own tests use.
fn build_guest(src: &Path, out: &Path) -> Result<(), VmmStartupError> {
    if !src.is_file() {
        return Err(VmmStartupError::NoGuestSource(src.to_path_buf()));
    }
    let output = Command::new("cc")
        .args(["-nostdlib", "-static", "-no-pie", "-Wl,-Ttext=0x200000", "-Wl,--build-id=none", "-o"])
        .arg(out)
        .arg(src)
        .output()
        .map_err(|source| VmmStartupError::CcSpawn { src: src.to_path_buf(), source })?;
    if !output.status.success() {
        return Err(VmmStartupError::Compile {
            src: src.to_path_buf(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn measure(args: &VmmStartupArgs) -> Result<Outcome, VmmStartupError> {
    let vmm = args.vmm_bin.clone().unwrap_or_else(|| rundir::release_binary("rayos-vmm"));
    if !vmm.is_file() {
        return Err(VmmStartupError::NoVmmBin(vmm));
    }
    let src = args.guest_src.clone().unwrap_or_else(|| rundir::workspace_root().join("vmm/tests/guests/hello.S"));
    let run_dir = rundir::create(&rundir::target_dir().join("smoke"), SCENARIO, args.run_dir.as_deref())?;
    println!("run directory: {}", run_dir.display());
    let elf = run_dir.join("hello.elf");
    build_guest(&src, &elf)?;

    let mut figures = Vec::new();
    let mut failures = Vec::new();
    for i in 1..=args.runs {
        match one_run(&vmm, &elf, &run_dir, i, args.run_timeout) {
            Ok(f) => {
                tracing::info!(
                    "run {i:02}: start_to_first_run_ms={:.2} rss_overhead_kib={} wall_ms={:.1}",
                    f.start_to_first_run_ms,
                    f.rss_overhead_kib,
                    f.wall_ms
                );
                figures.push(f);
            }
            Err(reason) => {
                tracing::error!("run {i:02}: {reason}");
                failures.push(format!("run {i}: {reason}"));
                if figures.is_empty() && failures.len() >= GIVE_UP_AFTER {
                    tracing::error!("the first {GIVE_UP_AFTER} runs all failed; not trying the rest");
                    break;
                }
            }
        }
    }
    Ok(evaluate(args, &figures, &failures, &run_dir))
}

fn evaluate(args: &VmmStartupArgs, figures: &[RunFigures], failures: &[String], run_dir: &Path) -> Outcome {
    let start = stats::summarise(&figures.iter().map(|f| f.start_to_first_run_ms).collect::<Vec<_>>());
    let rss = stats::summarise(&figures.iter().map(|f| f.rss_overhead_kib as f64).collect::<Vec<_>>());
    let line = |name: &str, s: &Summary, prec: usize| {
        println!(
            "vmm-startup {name} median={:.p$} min={:.p$} max={:.p$} runs={}",
            s.median,
            s.min,
            s.max,
            figures.len(),
            p = prec
        )
    };
    if let (Some(s), Some(r)) = (&start, &rss) {
        line("start_to_first_run_ms", s, 2);
        line("rss_overhead_kib", r, 0);
    }
    println!("vmm-startup run_dir={}", run_dir.display());
    write_result_json(run_dir, figures, failures);

    if !failures.is_empty() {
        return Outcome::Fail {
            scenario: SCENARIO,
            reason: format!(
                "{} of {} attempted runs failed ({} requested); first: {}",
                failures.len(),
                failures.len() + figures.len(),
                args.runs,
                failures[0]
            ),
        };
    }
    let (Some(start), Some(rss)) = (start, rss) else {
        return Outcome::Fail { scenario: SCENARIO, reason: "no runs".into() };
    };
    let figures = format!("start_to_first_run_ms={:.2} rss_overhead_kib={}", start.median, rss.median.round() as u64);
    let mut missed = Vec::new();
    if start.median > args.max_start_ms {
        missed.push(format!("start_to_first_run_ms above {} ms", args.max_start_ms));
    }
    if rss.median > args.max_rss_kib as f64 {
        missed.push(format!("rss_overhead_kib above {} KiB", args.max_rss_kib));
    }
    if missed.is_empty() {
        Outcome::Pass { scenario: SCENARIO, figures }
    } else {
        Outcome::Fail { scenario: SCENARIO, reason: format!("{figures} ({})", missed.join(", ")) }
    }
}

/// Interprets one run's metrics against its spawn time.
pub fn run_figures(spawn_ns: u64, metrics: &VmmMetrics, wall: Duration) -> Result<RunFigures, ScenarioError> {
    if metrics.first_run_monotonic_ns < spawn_ns {
        return Err(format!(
            "first_run_monotonic_ns {} is before the spawn time {spawn_ns} (not CLOCK_MONOTONIC?)",
            metrics.first_run_monotonic_ns
        )
        .into());
    }
    Ok(RunFigures {
        start_to_first_run_ms: (metrics.first_run_monotonic_ns - spawn_ns) as f64 / 1e6,
        rss_overhead_kib: metrics.rss_anon_kib + metrics.rss_file_kib,
        wall_ms: wall.as_secs_f64() * 1e3,
    })
}

fn one_run(vmm: &Path, elf: &Path, run_dir: &Path, i: u32, timeout: Duration) -> Result<RunFigures, ScenarioError> {
    let serial = run_dir.join(format!("serial-{i:02}.log"));
    let metrics_path = run_dir.join(format!("metrics-{i:02}.json"));
    let stderr_path = run_dir.join(format!("vmm-{i:02}.stderr"));
    let stderr = File::create(&stderr_path).map_err(|e| format!("cannot create {}: {e}", stderr_path.display()))?;
    let mut cmd = Command::new(vmm);
    cmd.arg("--kernel")
        .arg(elf)
        .args(["--memory", "128M", "--cpus", "1", "--serial"])
        .arg(format!("file:{}", serial.display()))
        .arg("--metrics")
        .arg(&metrics_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);

    let started = Instant::now();
    let spawn_ns = monotonic_ns();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", vmm.display()))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(
                    format!("still running after {timeout:?}; killed (stderr: {})", stderr_path.display()).into()
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_micros(500)),
            Err(e) => return Err(format!("waiting for rayos-vmm: {e}").into()),
        }
    };
    let wall = started.elapsed();
    if !status.success() {
        return Err(format!("rayos-vmm exited with {status} (stderr: {})", stderr_path.display()).into());
    }
    let text =
        std::fs::read_to_string(&metrics_path).map_err(|e| format!("no metrics at {}: {e}", metrics_path.display()))?;
    let metrics: VmmMetrics =
        serde_json::from_str(&text).map_err(|e| format!("bad metrics JSON in {}: {e}", metrics_path.display()))?;
    let serial_len = std::fs::metadata(&serial).map(|m| m.len()).unwrap_or(0);
    if serial_len == 0 {
        return Err(
            format!("the guest wrote nothing to the serial port ({} is empty or missing)", serial.display()).into()
        );
    }
    run_figures(spawn_ns, &metrics, wall)
}

fn write_result_json(run_dir: &Path, figures: &[RunFigures], failures: &[String]) {
    let runs: Vec<serde_json::Value> = figures
        .iter()
        .map(|f| {
            serde_json::json!({
                "start_to_first_run_ms": f.start_to_first_run_ms,
                "rss_overhead_kib": f.rss_overhead_kib,
                "wall_ms": f.wall_ms,
            })
        })
        .collect();
    let doc = serde_json::json!({ "scenario": SCENARIO, "runs": runs, "failures": failures });
    let path = run_dir.join("result.json");
    if let Err(e) = std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n") {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_parse_and_figures() {
        let m: VmmMetrics = serde_json::from_str(
            r#"{"first_run_monotonic_ns":1003500000,"rss_anon_kib":1200,"rss_file_kib":2300,"rss_shmem_kib":128,"exit":"poweroff","extra":1}"#,
        )
        .unwrap();
        assert_eq!(m.exit, "poweroff");
        let f = run_figures(1_000_000_000, &m, Duration::from_millis(9)).unwrap();
        assert!((f.start_to_first_run_ms - 3.5).abs() < 1e-9);
        assert_eq!(f.rss_overhead_kib, 3500);
        assert!(run_figures(2_000_000_000, &m, Duration::ZERO).is_err());
    }

    #[test]
    fn monotonic_clock_advances() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a && a > 0);
    }

    #[test]
    fn targets_decide_pass_or_fail() {
        let args = VmmStartupArgs {
            runs: 2,
            vmm_bin: None,
            guest_src: None,
            run_timeout: Duration::from_secs(1),
            max_start_ms: 10.0,
            max_rss_kib: 8192,
            run_dir: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let ok = [
            RunFigures { start_to_first_run_ms: 4.0, rss_overhead_kib: 3000, wall_ms: 9.0 },
            RunFigures { start_to_first_run_ms: 6.0, rss_overhead_kib: 5000, wall_ms: 9.0 },
        ];
        assert_eq!(
            evaluate(&args, &ok, &[], dir.path()).line(),
            "PASS vmm-startup start_to_first_run_ms=5.00 rss_overhead_kib=4000"
        );
        let slow = [RunFigures { start_to_first_run_ms: 12.5, rss_overhead_kib: 9000, wall_ms: 20.0 }];
        let line = evaluate(&args, &slow, &[], dir.path()).line();
        assert!(line.starts_with("FAIL vmm-startup: start_to_first_run_ms=12.50 rss_overhead_kib=9000"), "{line}");
        let failed = evaluate(&args, &ok, &["run 2: exit 1".into()], dir.path());
        assert_eq!(failed.exit_code(), 1);
    }
}
