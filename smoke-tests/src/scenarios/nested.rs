//! Steps shared by the nested scenarios (`vmm-boot`, `console`,
//! `vmm-virtiofs`): resolve the binaries, fetch the Debian kernel and busybox
//! (cached), create the run directory, pick the outer QEMU accelerator, build
//! the outer QEMU command line, run one boot of the test host with its serial
//! console captured, and turn errors into `FAIL` reasons.
//!
//! Each scenario builds its own guest and test-host images from the
//! [`Inputs`] and then boots them through [`Prepared`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cli::BootOptions;
use crate::debs::{self, DebCache, DebError};
use crate::qemu::{self, Accel, AccelProbe, Flow, QemuError, RunOutcome};
use crate::rundir::{self, RunDirError};
use crate::testhost::{GuestSpec, Kernel, TestHostError, Vmm, VMM_PARAM};
use crate::Outcome;

const BUSYBOX_PACKAGE: &str = "busybox-static";

/// Errors that stop a nested scenario before or between boots.
#[derive(Debug, thiserror::Error)]
pub enum NestedError {
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error(transparent)]
    TestHost(#[from] TestHostError),
    #[error(transparent)]
    Qemu(#[from] QemuError),
    #[error(
        "rayos-vmm binary not found at {0} (build it with `cargo build --release -p rayos-vmm` or pass --vmm-bin)"
    )]
    NoVmmBin(PathBuf),
    #[error("QEMU binary {0:?} not found (install it with scripts/setup.sh or pass --qemu)")]
    NoQemu(String),
    #[error("{package} unpacks modules for kernel {found}, expected {expected}")]
    ReleaseMismatch { package: String, found: String, expected: String },
    #[error("cannot tell the kernel release from package name {0}")]
    BadKernelPackage(String),
    #[error("busybox binary not found in the extracted {package} at {root}")]
    NoBusybox { package: String, root: PathBuf },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a nested scenario needs before it builds its images.
#[derive(Debug)]
pub struct Inputs {
    pub run_dir: PathBuf,
    pub qemu: PathBuf,
    /// Present when rayos-vmm is among the VMMs to run.
    pub rayos_vmm: Option<PathBuf>,
    pub kernel: Kernel,
    pub busybox: PathBuf,
    /// Package and tools cache (`--cache-dir`, `$RAYOS_CACHE_DIR`, `~/.cache/rayos`).
    pub cache_root: PathBuf,
}

/// Everything the boots of one scenario share.
#[derive(Debug)]
pub struct Prepared {
    pub run_dir: PathBuf,
    pub qemu: PathBuf,
    pub kernel_image: PathBuf,
    pub release: String,
    pub host_initrd: PathBuf,
    pub guest_initrd: PathBuf,
    pub accel: Accel,
    pub accel_reason: String,
}

/// A `FAIL` outcome whose reason is the error and its chain of sources.
/// Prints one VMM's failed boot (after its retries) and, when the VMM
/// reported them, its metrics.
pub fn print_failed_boot(
    scenario: &str,
    vmm: Vmm,
    wall: Duration,
    attempts: u32,
    reason: &dyn std::fmt::Display,
    log: &Path,
    metrics: Option<&str>,
) {
    println!(
        "{scenario} vmm={} failed after {:.1} s (attempt {attempts}): {reason} (log {})",
        vmm.name(),
        wall.as_secs_f64(),
        log.display()
    );
    print_metrics(scenario, vmm, metrics);
}

/// Prints the VMM's own metrics line, when it reported one.
pub fn print_metrics(scenario: &str, vmm: Vmm, metrics: Option<&str>) {
    if let Some(m) = metrics {
        println!("{scenario} vmm={} metrics {m}", vmm.name());
    }
}

pub fn fail(scenario: &'static str, e: &(dyn std::error::Error + 'static)) -> Outcome {
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    Outcome::Fail { scenario, reason }
}

fn resolve_vmm_bin(opts: &BootOptions) -> Result<PathBuf, NestedError> {
    let path = opts.vmm_bin.clone().unwrap_or_else(|| rundir::release_binary("rayos-vmm"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(NestedError::NoVmmBin(path))
    }
}

fn find_busybox(root: &Path) -> Result<PathBuf, NestedError> {
    rayos_image::hostimage::busybox_in(root)
        .ok_or_else(|| NestedError::NoBusybox { package: BUSYBOX_PACKAGE.into(), root: root.to_path_buf() })
}

/// The cache root the options select.
pub fn cache_root(opts: &BootOptions) -> PathBuf {
    opts.cache_dir.clone().unwrap_or_else(debs::default_cache_root)
}

/// Resolves the binaries, creates the run directory and fetches the kernel
/// and busybox packages.
pub fn gather(scenario: &str, vmms: &[Vmm], opts: &BootOptions) -> Result<Inputs, NestedError> {
    let rayos_vmm = if vmms.contains(&Vmm::Rayos) { Some(resolve_vmm_bin(opts)?) } else { None };
    let qemu = crate::which(&opts.qemu).ok_or_else(|| NestedError::NoQemu(opts.qemu.clone()))?;
    let run_dir = rundir::create(&rundir::target_dir().join("smoke"), scenario, opts.run_dir.as_deref())?;
    println!("run directory: {}", run_dir.display());

    let cache_root = cache_root(opts);
    let cache = DebCache::new(&cache_root)?;
    let kernel_pkg = cache.resolve_kernel_package(&opts.kernel_meta)?;
    let expected =
        debs::kernel_release(&kernel_pkg).ok_or_else(|| NestedError::BadKernelPackage(kernel_pkg.clone()))?.to_string();
    tracing::info!("{} depends on {kernel_pkg}", opts.kernel_meta);
    let kernel_deb = cache.fetch(&kernel_pkg)?;
    let busybox_deb = cache.fetch(BUSYBOX_PACKAGE)?;
    let kernel = Kernel::from_package(&cache.extract(&kernel_deb)?)?;
    if kernel.release() != expected {
        return Err(NestedError::ReleaseMismatch {
            package: kernel_pkg,
            found: kernel.release().to_string(),
            expected,
        });
    }
    let busybox = find_busybox(&cache.extract(&busybox_deb)?)?;
    println!(
        "kernel: {} {} (release {}), busybox: {}",
        kernel_deb.info.package,
        kernel_deb.info.version,
        kernel.release(),
        busybox_deb.info.version
    );
    Ok(Inputs { run_dir, qemu, rayos_vmm, kernel, busybox, cache_root })
}

/// Picks the outer accelerator once the images are built.
pub fn prepared(inputs: &Inputs, opts: &BootOptions, guest_initrd: PathBuf, host_initrd: PathBuf) -> Prepared {
    let (accel, accel_reason) = qemu::choose_accel(&AccelProbe::detect(), opts.accel);
    println!("outer QEMU accelerator: {accel_reason}");
    Prepared {
        run_dir: inputs.run_dir.clone(),
        qemu: inputs.qemu.clone(),
        kernel_image: inputs.kernel.vmlinuz.clone(),
        release: inputs.kernel.release().to_string(),
        host_initrd,
        guest_initrd,
        accel,
        accel_reason,
    }
}

/// The VM the VMM under test creates (no devices beyond the console).
pub fn guest_spec(opts: &BootOptions) -> GuestSpec {
    GuestSpec {
        memory_mib: opts.guest_memory_mib,
        cpus: opts.guest_cpus,
        cmdline: opts.guest_cmdline.clone(),
        fs: None,
        rayos_args: Vec::new(),
    }
}

/// The test host's kernel command line.
pub fn host_cmdline(vmm: Vmm) -> String {
    format!("console=ttyS0 quiet panic=-1 rdinit=/init {VMM_PARAM}={}", vmm.name())
}

/// The outer QEMU that boots the test host with `vmm` selected.
pub fn outer_command(prep: &Prepared, opts: &BootOptions, vmm: Vmm, interactive: bool) -> Command {
    let mut cmd = Command::new(&prep.qemu);
    cmd.args(prep.accel.args())
        .args(["-m", &format!("{}M", opts.host_memory_mib), "-smp", &opts.host_cpus.to_string()])
        .args(["-nographic", "-nodefaults", "-no-reboot"]);
    if interactive {
        // No mux and no signals: Ctrl-C and Ctrl-A reach the test host's
        // console, i.e. the guest shell and the VMM's escape handling.
        cmd.args(["-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con"]);
    } else {
        cmd.args(["-serial", "stdio"]);
    }
    cmd.arg("-kernel").arg(&prep.kernel_image).arg("-initrd").arg(&prep.host_initrd);
    cmd.arg("-append").arg(host_cmdline(vmm));
    cmd
}

/// One captured boot of the test host.
#[derive(Debug)]
pub struct HostRun {
    pub outcome: RunOutcome,
    pub log: PathBuf,
}

impl HostRun {
    /// Adds what the outer QEMU run tells about a failure (timeout, exit
    /// status and its last stderr line) to `reason`.
    pub fn annotate(&self, reason: String, timeout: Duration) -> String {
        let out = &self.outcome;
        if out.timed_out {
            format!("timeout after {timeout:?}: {reason}")
        } else if let Some(status) = out.status.filter(|s| !s.success()) {
            let last = out.stderr_tail.last().map(|l| format!(": {l}")).unwrap_or_default();
            format!("{reason} (outer QEMU {status}{last})")
        } else {
            reason
        }
    }
}

/// Boots the test host with `vmm` inside, streaming the serial console to
/// `<run dir>/serial-<vmm>.log` and every line to `on_line`.
pub fn boot_host(
    prep: &Prepared,
    opts: &BootOptions,
    vmm: Vmm,
    on_line: impl FnMut(Duration, &str) -> Flow,
) -> Result<HostRun, NestedError> {
    let log = prep.run_dir.join(format!("serial-{}.log", vmm.name()));
    tracing::info!(
        "booting the test host with {} inside (timeout {:?}); serial log {}",
        vmm.name(),
        opts.timeout,
        log.display()
    );
    let cmd = outer_command(prep, opts, vmm, false);
    let outcome = qemu::run_captured(cmd, &log, opts.timeout, on_line)?;
    Ok(HostRun { outcome, log })
}

/// Deletes the (reproducible, tens of MiB) images unless asked to keep them.
pub fn remove_images(prep: &Prepared, keep: bool) {
    if !keep {
        for img in [&prep.host_initrd, &prep.guest_initrd] {
            let _ = std::fs::remove_file(img);
        }
    }
}

/// Writes `<run dir>/result.json`; a failure to write is only logged.
pub fn write_result_json(prep: &Prepared, doc: &serde_json::Value) {
    let path = prep.run_dir.join("result.json");
    if let Err(e) = std::fs::write(&path, serde_json::to_string_pretty(doc).unwrap_or_default() + "\n") {
        tracing::warn!("{}", NestedError::Write { path, source: e });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_cmdline_selects_vmm() {
        assert_eq!(host_cmdline(Vmm::Qemu), "console=ttyS0 quiet panic=-1 rdinit=/init rayos_smoke.vmm=qemu");
        assert!(host_cmdline(Vmm::Rayos).ends_with("rayos_smoke.vmm=rayos"));
    }
}

/// Why one boot failed, as [`run_with_retry`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The scenario's reason.
    pub reason: String,
    /// The serial log of the failed boot (kept under another name on a retry).
    pub log: PathBuf,
    /// Set when the failure is the nested guest's kernel crashing (see
    /// [`guest_crash`]), not the VMM failing or a check failing.
    pub guest_crash: Option<String>,
}

/// The nested guest's kernel crashed: rayos-vmm ended with its status for a
/// guest panic (3) or a triple fault (4). QEMU's statuses mean other things,
/// so a QEMU run never counts (its failures are retried anyway).
///
/// Both VMMs' guests crash this way, rarely, inside the TCG-emulated test host
/// (a recursive page fault in the QEMU reference's guest; a triple fault on
/// a fetch from kernel text that became not-present, with no exit to
/// rayos-vmm in between, in rayos-vmm's): about one nested boot in 30 to 120
/// on the 2-core machines. A VMM error (status 1), a timeout or a failed check
/// is not a guest crash.
pub fn guest_crash(vmm: Vmm, vmm_status: Option<i32>) -> Option<String> {
    if vmm != Vmm::Rayos {
        return None;
    }
    let outcome = rayos_vmm_api::ExitOutcome::from_code(vmm_status?);
    outcome.is_guest_crash().then(|| outcome.describe())
}

/// The same crash as [`guest_crash`], read from an interactive session's
/// console: rayos-vmm's line naming a triple fault or a kernel panic, other
/// than the one the session causes on purpose (`deliberate`, a panic text).
pub fn guest_crash_in_console(console: &str, deliberate: &str) -> Option<String> {
    console
        .lines()
        .map(str::trim)
        .find(|l| {
            l.contains("rayos-vmm: guest triple fault")
                || (l.contains("rayos-vmm: guest kernel panic") && !l.contains(deliberate))
        })
        .map(|l| format!("the guest crashed ({l})"))
}

/// Runs one boot of `vmm`, and a second one when the first failed in a way
/// the nested environment causes, visibly, keeping the failed log (and with
/// it any KVM trace): any failure of the QEMU reference (its test host also
/// resets under TCG), and a guest crash under rayos-vmm. Any other rayos-vmm
/// failure is final, and so is a second failure. Returns the last result and
/// the number of attempts.
pub fn run_with_retry<R, E>(
    scenario: &str,
    vmm: Vmm,
    mut attempt: impl FnMut() -> Result<R, E>,
    failure: impl Fn(&R) -> Option<Failure>,
) -> Result<(R, u32), E> {
    let first = attempt()?;
    let Some(f) = failure(&first) else {
        return Ok((first, 1));
    };
    let why = match (vmm, &f.guest_crash) {
        (Vmm::Qemu, _) => "retrying the reference once".to_string(),
        (Vmm::Rayos, Some(crash)) => {
            format!("{crash}: a failure of the nested environment, not of a check; retrying once (its cause is open)")
        }
        (Vmm::Rayos, None) => return Ok((first, 1)),
    };
    let kept = keep_failed_log(&f.log);
    println!("{scenario} vmm={} attempt 1 failed: {}; {why} (log kept as {})", vmm.name(), f.reason, kept.display());
    Ok((attempt()?, 2))
}

/// Renames a failed run's serial log so a retry does not overwrite it.
fn keep_failed_log(log: &std::path::Path) -> std::path::PathBuf {
    let kept = log.with_extension("attempt1.log");
    if let Err(e) = std::fs::rename(log, &kept) {
        tracing::warn!("cannot keep {}: {e}", log.display());
    }
    kept
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    fn fails(r: &Result<u32, String>, guest_crash: Option<String>) -> Option<Failure> {
        r.as_ref().err().map(|e| Failure {
            reason: e.clone(),
            log: std::env::temp_dir().join("rayos-no-such-log"),
            guest_crash,
        })
    }

    #[test]
    fn qemu_failures_and_rayos_guest_crashes_are_retried_once() {
        // (vmm, guest crash, attempts made)
        for (vmm, crash, want) in
            [(Vmm::Qemu, None, 2), (Vmm::Rayos, None, 1), (Vmm::Rayos, guest_crash(Vmm::Rayos, Some(4)), 2)]
        {
            let mut calls = 0;
            let r: Result<(Result<u32, String>, u32), ()> = run_with_retry(
                "t",
                vmm,
                || {
                    calls += 1;
                    Ok(Err(format!("attempt {calls}")))
                },
                |r| fails(r, crash.clone()),
            );
            assert_eq!(calls, want, "{vmm:?} {crash:?}");
            assert_eq!(r.unwrap(), (Err(format!("attempt {want}")), want));
        }
        let mut calls = 0;
        let r: Result<(Result<u32, String>, u32), ()> = run_with_retry(
            "t",
            Vmm::Rayos,
            || {
                calls += 1;
                Ok(if calls == 1 { Err("crash".into()) } else { Ok(7) })
            },
            |r| fails(r, guest_crash(Vmm::Rayos, Some(3))),
        );
        assert_eq!((calls, r.unwrap()), (2, (Ok(7), 2)));
        let r: Result<(Result<u32, String>, u32), ()> =
            run_with_retry("t", Vmm::Qemu, || Ok(Ok(7)), |r| fails(r, None));
        assert_eq!(r.unwrap(), (Ok(7), 1));
    }

    #[test]
    fn console_crashes_exclude_the_deliberate_panic() {
        let sysrq = "sysrq triggered crash";
        let on_purpose = "x\r\nrayos-vmm: guest kernel panic: Kernel panic - not syncing: sysrq triggered crash\r\n";
        assert_eq!(guest_crash_in_console(on_purpose, sysrq), None);
        assert_eq!(guest_crash_in_console("# echo rayos-42\n", sysrq), None);
        let tf = "boot\r\nrayos-vmm: guest triple fault on vCPU 1: the guest CPU reset itself\r\n";
        assert_eq!(
            guest_crash_in_console(tf, sysrq).as_deref(),
            Some("the guest crashed (rayos-vmm: guest triple fault on vCPU 1: the guest CPU reset itself)")
        );
        let oops = "rayos-vmm: guest kernel panic: Kernel panic - not syncing: Fatal exception in interrupt\n";
        assert!(guest_crash_in_console(oops, sysrq).unwrap().contains("Fatal exception"));
    }

    #[test]
    fn only_rayos_vmm_panic_and_triple_fault_statuses_are_guest_crashes() {
        assert!(guest_crash(Vmm::Rayos, Some(3)).unwrap().contains("panicked"));
        assert!(guest_crash(Vmm::Rayos, Some(4)).unwrap().contains("triple-faulted"));
        for status in [None, Some(0), Some(1), Some(2), Some(130)] {
            assert_eq!(guest_crash(Vmm::Rayos, status), None);
        }
        for status in [Some(3), Some(4)] {
            assert_eq!(guest_crash(Vmm::Qemu, status), None);
        }
    }
}
