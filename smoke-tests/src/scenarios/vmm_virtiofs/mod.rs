//! Scenario `vmm-virtiofs` (tier 3, nested): virtio-fs through the VMM under
//! test, served by virtiofsd inside the test host.
//!
//! Steps (here): fetch the kernel and busybox (cached, as vmm-boot), resolve
//! the guest's modules (`virtio_pci`, `virtiofs` and their dependencies) from
//! the same kernel package, build a guest image with the virtio-fs `/init` and
//! a test-host image with virtiofsd and the hooks of [`plan`], then for each
//! requested VMM boot the test host and evaluate the serial stream with
//! [`evaluate::evaluate_run`]. Serial logs and `result.json` stay in the run
//! directory. The folder: `plan.rs` (constants, the scripts' values),
//! `guest-init.sh`, `host-before-vmm.sh`, `host-after-vmm.sh` (the scripts),
//! `markers.rs` (the serial protocol), `evaluate.rs` (pure checks).
//!
//! Design note.
//!
//! * **Test host** (hooks around the VMM, see [`crate::testhost::HostHooks`]):
//!   mounts a tmpfs on [`SHARE_DIR`], writes `in.bin` from `/dev/urandom`,
//!   prints its SHA-256 (`RAYOS-FS-HOST-IN-SHA256`), starts virtiofsd on
//!   [`SOCKET`] and waits for the socket; after the VMM exits it waits for
//!   virtiofsd to exit (it does when the frontend disconnects), prints
//!   virtiofsd's log and the SHA-256 of the `out.bin` the guest wrote
//!   (`RAYOS-FS-HOST-OUT-SHA256`). A tmpfs is used so the figures measure the
//!   virtio-fs path (VMM, vhost-user, virtiofsd), not a disk.
//! * **Guest** `/init`: loads the modules (`insmod`, no udev), checks that the
//!   virtio-fs PCI function (1af4:105a) exists and that virtio-pci and
//!   virtiofs bound it, mounts [`TAG`], times a cold read of `in.bin` and
//!   prints its SHA-256, generates `out.bin` in its own tmpfs, prints its
//!   SHA-256, and times copying it to the share *including* `sync`. Each step
//!   is announced (`RAYOS-FS-STEP <step>`); a failure prints
//!   `RAYOS-FS-ERROR <step>: <what>`, then diagnostics (`RAYOS-FS-DIAG ...`:
//!   PCI and virtio devices with their drivers, `/proc/interrupts`, loaded
//!   modules, the kernel log) and powers off. A watchdog in the background
//!   does the same when one step makes no progress for the step timeout, so
//!   a hung mount or a lost interrupt is reported as such rather than as the
//!   outer timeout.
//! * **Read-only share** (rayos-vmm only): the test host starts a second
//!   virtiofsd on [`RO_DIR`] with the flags the host service gives a
//!   read-only policy share (`--cache=auto --readonly`) and rayos-vmm gets it
//!   as `--fs tag=rayos-ro,socket=/run/vfs-ro.sock` (rayos-vmm starts no
//!   backends itself). The test host puts a random token in `policy.txt` there
//!   (`RAYOS-FS-HOST-RO before`); the guest mounts the tag read-write (its
//!   own mount options cannot lift the host's policy), reads the token, tries
//!   four writes (create, append, remove, mkdir) and reports how many were
//!   refused (`RAYOS-FS-RO`); afterwards the host checks the folder is
//!   unchanged (`RAYOS-FS-HOST-RO after`). QEMU runs have no such device and
//!   the guest reports `RAYOS-FS-RO absent`.
//! * **Clock**: transfers are timed inside the guest on the monotonic clock,
//!   `now at <ns> nsecs` of `/proc/timer_list` (busybox `date` has no `%N`),
//!   falling back to `/proc/uptime` (10 ms resolution); the guest says which
//!   (`RAYOS-FS-CLOCK`). `read_mib_s` and `write_mib_s` are MiB divided by
//!   those seconds.

mod evaluate;
mod markers;
mod plan;

pub use evaluate::{evaluate_run, FsFigures, FsObservation};
pub use plan::{FsPlan, Sandbox};

use crate::scenarios::ScenarioError;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::nested::{self, NestedError, Prepared};
use crate::cli::{VmmChoice, VmmVirtiofsArgs};
use crate::qemu::Flow;
use crate::serial::{BootFigures, BootObservation, Expectation};
use crate::testhost::{self, GuestImage, HostSpec, TestHostError, Vmm};
use crate::Outcome;
use rayos_image::kmod::KmodError;

pub const SCENARIO: &str = "vmm-virtiofs";

/// Errors that stop the scenario before or between boots.
#[derive(Debug, thiserror::Error)]
pub enum VmmVirtiofsError {
    #[error(transparent)]
    Nested(#[from] NestedError),
    #[error(transparent)]
    TestHost(#[from] TestHostError),
    #[error("cannot resolve the guest's virtio-fs modules")]
    Modules(#[source] KmodError),
    #[error("virtiofsd not found at {0} (scripts/setup.sh builds it, or pass --virtiofsd)")]
    NoVirtiofsd(PathBuf),
}

/// Result of one boot of the test host.
#[derive(Debug)]
struct RunResult {
    vmm: Vmm,
    figures: Result<(BootFigures, FsFigures), ScenarioError>,
    wall: Duration,
    log: PathBuf,
    metrics: Option<String>,
    /// The guest crashed under rayos-vmm (see [`nested::guest_crash`]).
    guest_crash: Option<String>,
    /// Boots made for this result (2 after a retry).
    attempts: u32,
    host_info: Vec<String>,
}

/// `vmm-virtiofs`.
pub fn run(args: &VmmVirtiofsArgs) -> Outcome {
    let started = Instant::now();
    match run_all(args) {
        Ok((prep, results)) => report(args, &prep, &results, started.elapsed()),
        Err(e) => nested::fail(SCENARIO, &e),
    }
}

fn plan(args: &VmmVirtiofsArgs) -> FsPlan {
    FsPlan { file_mib: args.file_mib, step_timeout: args.step_timeout, sandbox: args.sandbox }
}

fn resolve_virtiofsd(args: &VmmVirtiofsArgs) -> Result<PathBuf, VmmVirtiofsError> {
    let path = args
        .virtiofsd
        .clone()
        .unwrap_or_else(|| nested::cache_root(&args.boot).join("tools").join("bin").join("virtiofsd"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(VmmVirtiofsError::NoVirtiofsd(path))
    }
}

/// Fetches packages and builds both images into a new run directory.
fn prepare(args: &VmmVirtiofsArgs, plan: &FsPlan) -> Result<Prepared, VmmVirtiofsError> {
    let virtiofsd = resolve_virtiofsd(args)?;
    let vmms = args.vmm.vmms();
    let opts = &args.boot;
    let inputs = nested::gather(SCENARIO, &vmms, opts)?;

    let modules = plan::guest_modules(&inputs.kernel.modules).map_err(VmmVirtiofsError::Modules)?;
    println!("guest modules (load order): {}", modules.join(" "));
    let guest_initrd = inputs.run_dir.join("guest-initrd.cpio");
    let t = Instant::now();
    let guest_bytes = testhost::build_guest_image(
        &GuestImage {
            busybox: &inputs.busybox,
            init: plan::guest_init_script(plan),
            modules: Some((&inputs.kernel.modules, &modules)),
        },
        &guest_initrd,
    )?;

    let guest =
        testhost::GuestSpec { fs: Some(plan.share()), rayos_args: plan.rayos_args(), ..nested::guest_spec(opts) };
    let rayos_env = args.vmm_log.iter().map(|f| ("RUST_LOG".to_string(), f.clone())).collect();
    let hooks = plan::host_hooks(plan, rayos_env);
    let hooks = if opts.kvm_trace { hooks.with_kvm_trace() } else { hooks };
    let host_initrd = inputs.run_dir.join("host-initrd.cpio");
    let manifest = testhost::build_host_initramfs(
        &HostSpec {
            busybox: &inputs.busybox,
            kernel: &inputs.kernel,
            guest_initrd: &guest_initrd,
            guest: &guest,
            rayos_vmm: inputs.rayos_vmm.as_deref(),
            qemu: vmms.contains(&Vmm::Qemu).then_some(inputs.qemu.as_path()),
            qemu_machine: &opts.qemu_machine,
            interactive: false,
            extra_binaries: &[(virtiofsd.as_path(), plan::VIRTIOFSD)],
            hooks: &hooks,
        },
        &host_initrd,
    )?;
    tracing::info!(
        "images built in {:.1} s: guest {:.1} MiB, test host {:.1} MiB",
        t.elapsed().as_secs_f64(),
        guest_bytes as f64 / 1048576.0,
        manifest.bytes as f64 / 1048576.0,
    );
    println!(
        "virtiofsd: {} (--sandbox={}), file size {} MiB, guest step timeout {:?}",
        virtiofsd.display(),
        plan.sandbox.name(),
        plan.file_mib,
        plan.step_timeout
    );
    Ok(nested::prepared(&inputs, opts, guest_initrd, host_initrd))
}

fn run_all(args: &VmmVirtiofsArgs) -> Result<(Prepared, Vec<RunResult>), VmmVirtiofsError> {
    let plan = plan(args);
    let prep = prepare(args, &plan)?;
    let expect = Expectation { uname: prep.release.clone(), nproc: args.boot.guest_cpus };
    let mut results = Vec::new();
    for vmm in args.vmm.vmms() {
        let (mut r, attempts) = nested::run_with_retry(
            SCENARIO,
            vmm,
            || run_once(&prep, args, &plan, vmm, &expect),
            |r| {
                r.figures.as_ref().err().map(|e| nested::Failure {
                    reason: e.to_string(),
                    log: r.log.clone(),
                    guest_crash: r.guest_crash.clone(),
                })
            },
        )?;
        r.attempts = attempts;
        match &r.figures {
            Ok((b, f)) => println!(
                "{SCENARIO} vmm={} read_mib_s={:.1} write_mib_s={:.1} read_s={:.3} write_s={:.3} \
                 guest_init_s={:.2} vmm_run_s={:.2} boot_wall_s={:.1} attempts={attempts} clock={} pci={}{} log={}",
                vmm.name(),
                f.read_mib_s,
                f.write_mib_s,
                f.read_s,
                f.write_s,
                b.guest_init.as_secs_f64(),
                b.vmm_run.as_secs_f64(),
                r.wall.as_secs_f64(),
                f.clock,
                f.pci.as_deref().unwrap_or("?"),
                f.readonly_refused.map(|n| format!(" readonly_share_refused={n}/{n}")).unwrap_or_default(),
                r.log.display()
            ),
            Err(reason) => {
                nested::print_failed_boot(SCENARIO, vmm, r.wall, attempts, reason, &r.log, r.metrics.as_deref())
            }
        }
        if r.figures.is_ok() {
            nested::print_metrics(SCENARIO, vmm, r.metrics.as_deref());
        }
        results.push(r);
    }
    Ok((prep, results))
}

fn run_once(
    prep: &Prepared,
    args: &VmmVirtiofsArgs,
    plan: &FsPlan,
    vmm: Vmm,
    expect: &Expectation,
) -> Result<RunResult, VmmVirtiofsError> {
    let mut boot = BootObservation::default();
    let mut fs = FsObservation::default();
    let run = nested::boot_host(prep, &args.boot, vmm, |t, line| {
        boot.observe(t, line);
        fs.observe(line);
        if boot.finished() {
            Flow::Finished
        } else {
            Flow::Continue
        }
    })?;
    let figures = evaluate_run(&boot, &fs, expect, plan.bytes(), vmm == Vmm::Rayos)
        .map_err(|reason| ScenarioError::from(run.annotate(reason.to_string(), args.boot.timeout)));
    Ok(RunResult {
        vmm,
        figures,
        wall: run.outcome.elapsed,
        log: run.log,
        guest_crash: nested::guest_crash(vmm, boot.vmm_exit.map(|(_, status)| status)),
        metrics: boot.vmm_metrics,
        attempts: 1,
        host_info: fs.host_info,
    })
}

fn report(args: &VmmVirtiofsArgs, prep: &Prepared, results: &[RunResult], wall: Duration) -> Outcome {
    let figures =
        |vmm: Vmm| results.iter().find(|r| r.vmm == vmm).and_then(|r| r.figures.as_ref().ok()).map(|(_, f)| f);
    if args.vmm == VmmChoice::Both {
        if let (Some(r), Some(q)) = (figures(Vmm::Rayos), figures(Vmm::Qemu)) {
            println!(
                "{SCENARIO} compare rayos_read_mib_s={:.1} rayos_write_mib_s={:.1} \
                 qemu_read_mib_s={:.1} qemu_write_mib_s={:.1}",
                r.read_mib_s, r.write_mib_s, q.read_mib_s, q.write_mib_s
            );
        }
    }
    println!("{SCENARIO} wall_s={:.1} run_dir={}", wall.as_secs_f64(), prep.run_dir.display());
    write_result_json(args, prep, results, wall);

    let failures: Vec<String> =
        results.iter().filter_map(|r| r.figures.as_ref().err().map(|e| format!("vmm={}: {e}", r.vmm.name()))).collect();
    if !failures.is_empty() {
        return Outcome::Fail { scenario: SCENARIO, reason: failures.join("; ") };
    }
    nested::remove_images(prep, args.boot.keep_images);
    // rayos-vmm's figures when it ran, else QEMU's (tagged).
    let first = &results[0];
    let (_, f) = first.figures.as_ref().expect("all runs passed");
    let vmm_tag = if first.vmm == Vmm::Qemu { "vmm=qemu " } else { "" };
    Outcome::Pass {
        scenario: SCENARIO,
        figures: format!("{vmm_tag}read_mib_s={:.1} write_mib_s={:.1}", f.read_mib_s, f.write_mib_s),
    }
}

fn write_result_json(args: &VmmVirtiofsArgs, prep: &Prepared, results: &[RunResult], wall: Duration) {
    let runs: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            let metrics = r.metrics.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok());
            match &r.figures {
                Ok((b, f)) => serde_json::json!({
                    "vmm": r.vmm.name(), "pass": true,
                    "read_mib_s": f.read_mib_s, "write_mib_s": f.write_mib_s,
                    "read_s": f.read_s, "write_s": f.write_s, "clock": f.clock, "pci": f.pci,
                    "readonly_share_refused": f.readonly_refused,
                    "guest_init_s": b.guest_init.as_secs_f64(), "vmm_run_s": b.vmm_run.as_secs_f64(),
                    "vcpus": b.vcpus, "boot_wall_s": r.wall.as_secs_f64(), "attempts": r.attempts,
                    "serial_log": r.log, "vmm_metrics": metrics, "test_host": r.host_info,
                }),
                Err(reason) => serde_json::json!({
                    "vmm": r.vmm.name(), "pass": false, "reason": reason.to_string(), "attempts": r.attempts,
                    "boot_wall_s": r.wall.as_secs_f64(), "serial_log": r.log,
                    "vmm_metrics": metrics, "test_host": r.host_info,
                }),
            }
        })
        .collect();
    let doc = serde_json::json!({
        "scenario": SCENARIO,
        "kernel_release": prep.release,
        "accel": format!("{:?}", prep.accel),
        "accel_reason": prep.accel_reason,
        "file_mib": args.file_mib,
        "sandbox": args.sandbox.name(),
        "wall_s": wall.as_secs_f64(),
        "runs": runs,
    });
    nested::write_result_json(prep, &doc);
}
