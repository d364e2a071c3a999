//! Scenario `vmm-boot` (tier 3, nested) and its interactive twin `console`.
//!
//! Steps: fetch the Debian kernel and busybox (cached), build the guest and
//! test-host initramfs images once, then for each requested VMM boot the test
//! host in the outer QEMU with `rayos_smoke.vmm=<vmm>` on its command line and
//! evaluate the serial stream (see [`crate::serial`]). With `--vmm both` the
//! same images, guest command line, memory and vCPU count serve both VMMs.

use crate::scenarios::ScenarioError;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::nested::{self, NestedError, Prepared};
use crate::cli::{BootOptions, ConsoleArgs, VmmBootArgs, VmmChoice};
use crate::qemu::{self, Accel, Flow};
use crate::serial::{BootFigures, BootObservation, Expectation};
use crate::testhost::{self, HostHooks, HostSpec, Vmm};
use crate::Outcome;

pub const SCENARIO: &str = "vmm-boot";
pub const CONSOLE: &str = "console";

/// Errors that stop the scenario before or between boots.
#[derive(Debug, thiserror::Error)]
pub enum VmmBootError {
    #[error(transparent)]
    Nested(#[from] NestedError),
    #[error(transparent)]
    TestHost(#[from] crate::testhost::TestHostError),
    #[error("--interactive needs a single VMM: use --vmm rayos or --vmm qemu, not both")]
    InteractiveBoth,
}

/// Result of one boot of the test host.
#[derive(Debug)]
struct BootResult {
    vmm: Vmm,
    figures: Result<BootFigures, ScenarioError>,
    wall: Duration,
    log: PathBuf,
    metrics: Option<String>,
    /// The guest crashed under rayos-vmm (see [`nested::guest_crash`]).
    guest_crash: Option<String>,
    /// Boots made for this result (2 after a retry).
    attempts: u32,
}

/// `vmm-boot`.
pub fn run(args: &VmmBootArgs) -> Outcome {
    if args.interactive {
        let vmm = match args.vmm {
            VmmChoice::Rayos => Vmm::Rayos,
            VmmChoice::Qemu => Vmm::Qemu,
            VmmChoice::Both => return nested::fail(SCENARIO, &VmmBootError::InteractiveBoth),
        };
        return interactive(SCENARIO, vmm, &args.boot);
    }
    let started = Instant::now();
    match run_boots(&args.vmm.vmms(), &args.boot) {
        Ok((prep, results)) => report(&prep, &results, args.vmm, started.elapsed(), args.boot.keep_images),
        Err(e) => nested::fail(SCENARIO, &e),
    }
}

/// `console`: the interactive boot.
pub fn console(args: &ConsoleArgs) -> Outcome {
    interactive(CONSOLE, args.vmm, &args.boot)
}

fn interactive(scenario: &'static str, vmm: Vmm, opts: &BootOptions) -> Outcome {
    let prep = match prepare(scenario, &[vmm], opts, true, HostHooks::default()) {
        Ok(p) => p,
        Err(e) => return nested::fail(scenario, &e),
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
    let cmd = nested::outer_command(&prep, opts, vmm, true);
    tracing::debug!("outer QEMU: {cmd:?}");
    let result = qemu::run_interactive(cmd);
    nested::remove_images(&prep, opts.keep_images);
    match result {
        Ok(status) => Outcome::Ended {
            scenario,
            message: format!("session ended (outer QEMU {status}); run directory {}", prep.run_dir.display()),
            code: status.code().unwrap_or(1),
        },
        Err(e) => nested::fail(scenario, &e),
    }
}

/// Fetches packages and builds both images into a new run directory.
pub(crate) fn prepare(
    scenario: &str,
    vmms: &[Vmm],
    opts: &BootOptions,
    interactive: bool,
    hooks: HostHooks,
) -> Result<Prepared, VmmBootError> {
    let inputs = nested::gather(scenario, vmms, opts)?;
    let guest = nested::guest_spec(opts);
    let guest_initrd = inputs.run_dir.join("guest-initrd.cpio");
    let t = Instant::now();
    let guest_bytes = testhost::build_guest_initramfs(&inputs.busybox, interactive, &guest_initrd)?;
    let host_initrd = inputs.run_dir.join("host-initrd.cpio");
    let hooks = if opts.kvm_trace { hooks.with_kvm_trace() } else { hooks };
    let manifest = testhost::build_host_initramfs(
        &HostSpec {
            busybox: &inputs.busybox,
            kernel: &inputs.kernel,
            guest_initrd: &guest_initrd,
            guest: &guest,
            rayos_vmm: inputs.rayos_vmm.as_deref(),
            qemu: vmms.contains(&Vmm::Qemu).then_some(inputs.qemu.as_path()),
            qemu_machine: &opts.qemu_machine,
            interactive,
            extra_binaries: &[],
            hooks: &hooks,
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
    Ok(nested::prepared(&inputs, opts, guest_initrd, host_initrd))
}

fn run_boots(vmms: &[Vmm], opts: &BootOptions) -> Result<(Prepared, Vec<BootResult>), VmmBootError> {
    let prep = prepare(SCENARIO, vmms, opts, false, HostHooks::default())?;
    let expect = Expectation { uname: prep.release.clone(), nproc: opts.guest_cpus };
    let mut results = Vec::new();
    for &vmm in vmms {
        let (mut result, attempts) = nested::run_with_retry(
            SCENARIO,
            vmm,
            || boot_once(&prep, opts, vmm, &expect),
            |r| {
                r.figures.as_ref().err().map(|e| nested::Failure {
                    reason: e.to_string(),
                    log: r.log.clone(),
                    guest_crash: r.guest_crash.clone(),
                })
            },
        )?;
        result.attempts = attempts;
        match &result.figures {
            Ok(f) => println!(
                "vmm-boot vmm={} guest_init_s={:.2} vmm_run_s={:.2} vcpus={} boot_wall_s={:.1} attempts={attempts} log={}",
                vmm.name(),
                f.guest_init.as_secs_f64(),
                f.vmm_run.as_secs_f64(),
                f.vcpus,
                result.wall.as_secs_f64(),
                result.log.display()
            ),
            Err(reason) => nested::print_failed_boot(
                "vmm-boot",
                vmm,
                result.wall,
                attempts,
                reason,
                &result.log,
                result.metrics.as_deref(),
            ),
        }
        if result.figures.is_ok() {
            nested::print_metrics("vmm-boot", vmm, result.metrics.as_deref());
        }
        results.push(result);
    }
    Ok((prep, results))
}

fn boot_once(prep: &Prepared, opts: &BootOptions, vmm: Vmm, expect: &Expectation) -> Result<BootResult, VmmBootError> {
    let mut obs = BootObservation::default();
    let run = nested::boot_host(prep, opts, vmm, |t, line| {
        obs.observe(t, line);
        if obs.finished() {
            Flow::Finished
        } else {
            Flow::Continue
        }
    })?;
    let figures =
        obs.evaluate(expect).map_err(|reason| ScenarioError::from(run.annotate(reason.to_string(), opts.timeout)));
    Ok(BootResult {
        vmm,
        figures,
        wall: run.outcome.elapsed,
        log: run.log,
        guest_crash: nested::guest_crash(vmm, obs.vmm_exit.map(|(_, status)| status)),
        metrics: obs.vmm_metrics,
        attempts: 1,
    })
}

fn report(prep: &Prepared, results: &[BootResult], choice: VmmChoice, wall: Duration, keep_images: bool) -> Outcome {
    let figure = |vmm: Vmm| results.iter().find(|r| r.vmm == vmm).and_then(|r| r.figures.as_ref().ok());
    if choice == VmmChoice::Both {
        if let (Some(r), Some(q)) = (figure(Vmm::Rayos), figure(Vmm::Qemu)) {
            let (rs, qs) = (r.guest_init.as_secs_f64(), q.guest_init.as_secs_f64());
            println!(
                "vmm-boot compare rayos_guest_init_s={rs:.2} qemu_guest_init_s={qs:.2} ratio_qemu_over_rayos={:.2}",
                qs / rs.max(1e-9)
            );
        }
    }
    println!("vmm-boot wall_s={:.1} run_dir={}", wall.as_secs_f64(), prep.run_dir.display());
    write_result_json(prep, results, wall);

    let failures: Vec<String> =
        results.iter().filter_map(|r| r.figures.as_ref().err().map(|e| format!("vmm={}: {e}", r.vmm.name()))).collect();
    if !failures.is_empty() {
        return Outcome::Fail { scenario: SCENARIO, reason: failures.join("; ") };
    }
    nested::remove_images(prep, keep_images);
    let first = &results[0];
    let f = first.figures.as_ref().expect("all boots passed");
    let vmm_tag = if choice == VmmChoice::Qemu { "vmm=qemu " } else { "" };
    Outcome::Pass {
        scenario: SCENARIO,
        figures: format!("{vmm_tag}guest_init_s={:.2} vcpus={}", f.guest_init.as_secs_f64(), f.vcpus),
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
                    "vcpus": f.vcpus, "boot_wall_s": r.wall.as_secs_f64(), "attempts": r.attempts,
                    "serial_log": r.log, "vmm_metrics": metrics,
                }),
                Err(reason) => serde_json::json!({
                    "vmm": r.vmm.name(), "pass": false, "reason": reason.to_string(), "attempts": r.attempts,
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
    nested::write_result_json(prep, &doc);
}
