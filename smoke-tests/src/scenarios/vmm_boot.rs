//! Scenario `vmm-boot` (tier 3, nested) and its interactive twin `console`.
//!
//! Steps: fetch the Debian kernel and busybox (cached), build the guest and
//! test-host initramfs images once, then for each requested VMM boot the test
//! host in the outer QEMU with `rayos_smoke.vmm=<vmm>` on its command line and
//! evaluate the serial stream (see [`crate::serial`]). With `--vmm both` the
//! same images, guest command line, memory and vCPU count serve both VMMs.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cli::{BootOptions, ConsoleArgs, VmmBootArgs, VmmChoice};
use crate::debs::{self, DebCache, DebError};
use crate::qemu::{self, Accel, AccelProbe, Flow, QemuError};
use crate::rundir::{self, RunDirError};
use crate::serial::{BootFigures, BootObservation, Expectation};
use crate::testhost::{self, GuestSpec, HostSpec, Kernel, TestHostError, Vmm, VMM_PARAM};
use crate::Outcome;

pub const SCENARIO: &str = "vmm-boot";
pub const CONSOLE: &str = "console";
const BUSYBOX_PACKAGE: &str = "busybox-static";

/// Errors that stop the scenario before or between boots.
#[derive(Debug, thiserror::Error)]
pub enum VmmBootError {
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error(transparent)]
    TestHost(#[from] TestHostError),
    #[error(transparent)]
    Qemu(#[from] QemuError),
    #[error("rayos-vmm binary not found at {0} (build it with `cargo build --release -p rayos-vmm` or pass --vmm-bin)")]
    NoVmmBin(PathBuf),
    #[error("QEMU binary {0:?} not found (install it with scripts/setup.sh or pass --qemu)")]
    NoQemu(String),
    #[error("{package} unpacks modules for kernel {found}, expected {expected}")]
    ReleaseMismatch {
        package: String,
        found: String,
        expected: String,
    },
    #[error("cannot tell the kernel release from package name {0}")]
    BadKernelPackage(String),
    #[error("busybox binary not found in the extracted {package} at {root}")]
    NoBusybox { package: String, root: PathBuf },
    #[error("--interactive needs a single VMM: use --vmm rayos or --vmm qemu, not both")]
    InteractiveBoth,
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything the boots share.
#[derive(Debug)]
struct Prepared {
    run_dir: PathBuf,
    qemu: PathBuf,
    kernel_image: PathBuf,
    release: String,
    host_initrd: PathBuf,
    guest_initrd: PathBuf,
    accel: Accel,
    accel_reason: String,
}

/// Result of one boot of the test host.
#[derive(Debug)]
struct BootResult {
    vmm: Vmm,
    figures: Result<BootFigures, String>,
    wall: Duration,
    log: PathBuf,
    metrics: Option<String>,
}

/// `vmm-boot`.
pub fn run(args: &VmmBootArgs) -> Outcome {
    if args.interactive {
        let vmm = match args.vmm {
            VmmChoice::Rayos => Vmm::Rayos,
            VmmChoice::Qemu => Vmm::Qemu,
            VmmChoice::Both => return fail(SCENARIO, &VmmBootError::InteractiveBoth),
        };
        return interactive(SCENARIO, vmm, &args.boot);
    }
    let started = Instant::now();
    match run_boots(&args.vmm.vmms(), &args.boot) {
        Ok((prep, results)) => report(
            &prep,
            &results,
            args.vmm,
            started.elapsed(),
            args.boot.keep_images,
        ),
        Err(e) => fail(SCENARIO, &e),
    }
}

/// `console`: the interactive boot.
pub fn console(args: &ConsoleArgs) -> Outcome {
    interactive(CONSOLE, args.vmm, &args.boot)
}

fn fail(scenario: &'static str, e: &(dyn std::error::Error + 'static)) -> Outcome {
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    Outcome::Fail { scenario, reason }
}

fn interactive(scenario: &'static str, vmm: Vmm, opts: &BootOptions) -> Outcome {
    let prep = match prepare(scenario, &[vmm], opts, true) {
        Ok(p) => p,
        Err(e) => return fail(scenario, &e),
    };
    if !std::io::stdin().is_terminal() {
        tracing::warn!("stdin is not a terminal: the guest shell will not be usable");
    }
    eprintln!(
        "\nBooting the RayOS test host ({}); {} then boots the guest and its busybox shell appears here.\n\
         Ctrl-A x quits the VMM (the test host then powers off); `exit` in the shell powers the guest off.\n\
         Under TCG the two nested boots take some tens of seconds.\n",
        if prep.accel == Accel::Tcg { "QEMU TCG, nested KVM inside" } else { "QEMU KVM" },
        vmm.name()
    );
    let cmd = outer_command(&prep, opts, vmm, true);
    tracing::debug!("outer QEMU: {cmd:?}");
    let result = qemu::run_interactive(cmd);
    remove_images(&prep, opts.keep_images);
    match result {
        Ok(status) => Outcome::Ended {
            scenario,
            message: format!(
                "session ended (outer QEMU {status}); run directory {}",
                prep.run_dir.display()
            ),
            code: status.code().unwrap_or(1),
        },
        Err(e) => fail(scenario, &e),
    }
}

fn resolve_vmm_bin(opts: &BootOptions) -> Result<PathBuf, VmmBootError> {
    let path = opts
        .vmm_bin
        .clone()
        .unwrap_or_else(|| rundir::release_binary("rayos-vmm"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(VmmBootError::NoVmmBin(path))
    }
}

fn find_busybox(root: &Path) -> Result<PathBuf, VmmBootError> {
    ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| VmmBootError::NoBusybox {
            package: BUSYBOX_PACKAGE.into(),
            root: root.to_path_buf(),
        })
}

/// Fetches packages and builds both images into a new run directory.
fn prepare(
    scenario: &str,
    vmms: &[Vmm],
    opts: &BootOptions,
    interactive: bool,
) -> Result<Prepared, VmmBootError> {
    let rayos_vmm = if vmms.contains(&Vmm::Rayos) {
        Some(resolve_vmm_bin(opts)?)
    } else {
        None
    };
    let qemu = crate::which(&opts.qemu).ok_or_else(|| VmmBootError::NoQemu(opts.qemu.clone()))?;
    let run_dir = rundir::create(
        &rundir::target_dir().join("smoke"),
        scenario,
        opts.run_dir.as_deref(),
    )?;
    println!("run directory: {}", run_dir.display());

    let cache = DebCache::new(
        &opts
            .cache_dir
            .clone()
            .unwrap_or_else(debs::default_cache_root),
    )?;
    let kernel_pkg = cache.resolve_kernel_package(&opts.kernel_meta)?;
    let expected = debs::kernel_release(&kernel_pkg)
        .ok_or_else(|| VmmBootError::BadKernelPackage(kernel_pkg.clone()))?
        .to_string();
    tracing::info!("{} depends on {kernel_pkg}", opts.kernel_meta);
    let kernel_deb = cache.fetch(&kernel_pkg)?;
    let busybox_deb = cache.fetch(BUSYBOX_PACKAGE)?;
    let kernel = Kernel::from_package(&cache.extract(&kernel_deb)?)?;
    if kernel.release() != expected {
        return Err(VmmBootError::ReleaseMismatch {
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

    let guest = guest_spec(opts);
    let guest_initrd = run_dir.join("guest-initrd.cpio");
    let t = Instant::now();
    let guest_bytes = testhost::build_guest_initramfs(&busybox, interactive, &guest_initrd)?;
    let host_initrd = run_dir.join("host-initrd.cpio");
    let manifest = testhost::build_host_initramfs(
        &HostSpec {
            busybox: &busybox,
            kernel: &kernel,
            guest_initrd: &guest_initrd,
            guest: &guest,
            rayos_vmm: rayos_vmm.as_deref(),
            qemu: vmms.contains(&Vmm::Qemu).then_some(qemu.as_path()),
            qemu_machine: &opts.qemu_machine,
            interactive,
        },
        &host_initrd,
    )?;
    tracing::info!(
        "images built in {:.1} s: guest {:.1} MiB, test host {:.1} MiB; kvm-amd load order {:?}",
        t.elapsed().as_secs_f64(),
        guest_bytes as f64 / 1048576.0,
        manifest.bytes as f64 / 1048576.0,
        manifest.modules_amd
    );

    let (accel, accel_reason) = qemu::choose_accel(&AccelProbe::detect(), opts.accel);
    println!("outer QEMU accelerator: {accel_reason}");
    Ok(Prepared {
        run_dir,
        qemu,
        kernel_image: kernel.vmlinuz.clone(),
        release: kernel.release().to_string(),
        host_initrd,
        guest_initrd,
        accel,
        accel_reason,
    })
}

fn guest_spec(opts: &BootOptions) -> GuestSpec {
    GuestSpec {
        memory_mib: opts.guest_memory_mib,
        cpus: opts.guest_cpus,
        cmdline: opts.guest_cmdline.clone(),
    }
}

/// The test host's kernel command line.
pub fn host_cmdline(vmm: Vmm) -> String {
    format!(
        "console=ttyS0 quiet panic=-1 rdinit=/init {VMM_PARAM}={}",
        vmm.name()
    )
}

fn outer_command(prep: &Prepared, opts: &BootOptions, vmm: Vmm, interactive: bool) -> Command {
    let mut cmd = Command::new(&prep.qemu);
    cmd.args(prep.accel.args())
        .args([
            "-m",
            &format!("{}M", opts.host_memory_mib),
            "-smp",
            &opts.host_cpus.to_string(),
        ])
        .args(["-nographic", "-nodefaults", "-no-reboot"]);
    if interactive {
        // No mux and no signals: Ctrl-C and Ctrl-A reach the test host's
        // console, i.e. the guest shell and the VMM's escape handling.
        cmd.args([
            "-chardev",
            "stdio,id=con,signal=off",
            "-serial",
            "chardev:con",
        ]);
    } else {
        cmd.args(["-serial", "stdio"]);
    }
    cmd.arg("-kernel")
        .arg(&prep.kernel_image)
        .arg("-initrd")
        .arg(&prep.host_initrd);
    cmd.arg("-append").arg(host_cmdline(vmm));
    cmd
}

fn run_boots(
    vmms: &[Vmm],
    opts: &BootOptions,
) -> Result<(Prepared, Vec<BootResult>), VmmBootError> {
    let prep = prepare(SCENARIO, vmms, opts, false)?;
    let expect = Expectation {
        uname: prep.release.clone(),
        nproc: opts.guest_cpus,
    };
    let mut results = Vec::new();
    for &vmm in vmms {
        let result = boot_once(&prep, opts, vmm, &expect)?;
        match &result.figures {
            Ok(f) => println!(
                "vmm-boot vmm={} guest_init_s={:.2} vmm_run_s={:.2} vcpus={} boot_wall_s={:.1} log={}",
                vmm.name(),
                f.guest_init.as_secs_f64(),
                f.vmm_run.as_secs_f64(),
                f.vcpus,
                result.wall.as_secs_f64(),
                result.log.display()
            ),
            Err(reason) => println!(
                "vmm-boot vmm={} failed after {:.1} s: {reason} (log {})",
                vmm.name(),
                result.wall.as_secs_f64(),
                result.log.display()
            ),
        }
        if let Some(m) = &result.metrics {
            println!("vmm-boot vmm={} metrics {m}", vmm.name());
        }
        results.push(result);
    }
    Ok((prep, results))
}

fn boot_once(
    prep: &Prepared,
    opts: &BootOptions,
    vmm: Vmm,
    expect: &Expectation,
) -> Result<BootResult, VmmBootError> {
    let log = prep.run_dir.join(format!("serial-{}.log", vmm.name()));
    tracing::info!(
        "booting the test host with {} inside (timeout {:?}); serial log {}",
        vmm.name(),
        opts.timeout,
        log.display()
    );
    let cmd = outer_command(prep, opts, vmm, false);
    let mut obs = BootObservation::default();
    let out = qemu::run_captured(cmd, &log, opts.timeout, |t, line| {
        obs.observe(t, line);
        if obs.finished() {
            Flow::Finished
        } else {
            Flow::Continue
        }
    })?;
    let figures = obs.evaluate(expect).map_err(|reason| {
        let mut reason = reason;
        if out.timed_out {
            reason = format!("timeout after {:?}: {reason}", opts.timeout);
        } else if let Some(status) = out.status.filter(|s| !s.success()) {
            let last = out
                .stderr_tail
                .last()
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            reason = format!("{reason} (outer QEMU {status}{last})");
        }
        reason
    });
    Ok(BootResult {
        vmm,
        figures,
        wall: out.elapsed,
        log,
        metrics: obs.vmm_metrics,
    })
}

fn report(
    prep: &Prepared,
    results: &[BootResult],
    choice: VmmChoice,
    wall: Duration,
    keep_images: bool,
) -> Outcome {
    let figure = |vmm: Vmm| {
        results
            .iter()
            .find(|r| r.vmm == vmm)
            .and_then(|r| r.figures.as_ref().ok())
    };
    if choice == VmmChoice::Both {
        if let (Some(r), Some(q)) = (figure(Vmm::Rayos), figure(Vmm::Qemu)) {
            let (rs, qs) = (r.guest_init.as_secs_f64(), q.guest_init.as_secs_f64());
            println!(
                "vmm-boot compare rayos_guest_init_s={rs:.2} qemu_guest_init_s={qs:.2} ratio_qemu_over_rayos={:.2}",
                qs / rs.max(1e-9)
            );
        }
    }
    println!(
        "vmm-boot wall_s={:.1} run_dir={}",
        wall.as_secs_f64(),
        prep.run_dir.display()
    );
    write_result_json(prep, results, wall);

    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.figures
                .as_ref()
                .err()
                .map(|e| format!("vmm={}: {e}", r.vmm.name()))
        })
        .collect();
    if !failures.is_empty() {
        return Outcome::Fail {
            scenario: SCENARIO,
            reason: failures.join("; "),
        };
    }
    remove_images(prep, keep_images);
    let first = &results[0];
    let f = first.figures.as_ref().expect("all boots passed");
    let vmm_tag = if choice == VmmChoice::Qemu {
        "vmm=qemu "
    } else {
        ""
    };
    Outcome::Pass {
        scenario: SCENARIO,
        figures: format!(
            "{vmm_tag}guest_init_s={:.2} vcpus={}",
            f.guest_init.as_secs_f64(),
            f.vcpus
        ),
    }
}

/// Deletes the (reproducible, tens of MiB) images unless asked to keep them.
fn remove_images(prep: &Prepared, keep: bool) {
    if !keep {
        for img in [&prep.host_initrd, &prep.guest_initrd] {
            let _ = std::fs::remove_file(img);
        }
    }
}

fn write_result_json(prep: &Prepared, results: &[BootResult], wall: Duration) {
    let boots: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            let metrics = r.metrics.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok());
            match &r.figures {
                Ok(f) => serde_json::json!({
                    "vmm": r.vmm.name(), "pass": true,
                    "guest_init_s": f.guest_init.as_secs_f64(), "vmm_run_s": f.vmm_run.as_secs_f64(),
                    "vcpus": f.vcpus, "boot_wall_s": r.wall.as_secs_f64(),
                    "serial_log": r.log, "vmm_metrics": metrics,
                }),
                Err(reason) => serde_json::json!({
                    "vmm": r.vmm.name(), "pass": false, "reason": reason,
                    "boot_wall_s": r.wall.as_secs_f64(), "serial_log": r.log, "vmm_metrics": metrics,
                }),
            }
        })
        .collect();
    let doc = serde_json::json!({
        "scenario": SCENARIO,
        "kernel_release": prep.release,
        "accel": format!("{:?}", prep.accel),
        "accel_reason": prep.accel_reason,
        "wall_s": wall.as_secs_f64(),
        "boots": boots,
    });
    let path = prep.run_dir.join("result.json");
    if let Err(e) = std::fs::write(
        &path,
        serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n",
    ) {
        tracing::warn!("{}", VmmBootError::Write { path, source: e });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_cmdline_selects_vmm() {
        assert_eq!(
            host_cmdline(Vmm::Qemu),
            "console=ttyS0 quiet panic=-1 rdinit=/init rayos_smoke.vmm=qemu"
        );
        assert!(host_cmdline(Vmm::Rayos).ends_with("rayos_smoke.vmm=rayos"));
    }
}
