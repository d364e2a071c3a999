//! Scenario `compositor-drm` (tier 3): the RayOS compositor on a real kernel
//! DRM/KMS device and real evdev input, inside QEMU.
//!
//! Design note.
//!
//! * **What it proves.** `rayos-compositor --backend drm` opens a KMS device
//!   of the Debian kernel (QEMU's `bochs-display`, driven by `bochs.ko`),
//!   sets its preferred mode, composites a real Wayland client
//!   (weston-simple-shm, 250x250) with the RayOS host decoration, keeps
//!   flipping pages while the client animates, and takes pointer input through
//!   libinput from a virtio tablet that udev has tagged: a click on the
//!   decoration's close button closes the window.
//! * **How.** A test-host initramfs (busybox, the display and input modules
//!   of the same Debian kernel in load order, systemd-udevd with the input
//!   rules and hwdb, the xkb and libinput data, the compositor and the client
//!   with their shared libraries) boots in QEMU with `-display none`, so
//!   nothing is shown on this machine. Its `/init` starts udevd, triggers and
//!   settles, prints the DRM connectors and the udev tags of each input
//!   device, starts the compositor (`LIBSEAT_BACKEND=builtin`), waits for its
//!   Wayland socket, starts the client, waits until the compositor holds
//!   every tagged event node open (from then on the kernel queues input for
//!   libinput, so no click is lost) and prints `RAYOS-DRM-READY`. The host
//!   side then works only through QMP: `screendump` captures the guest's
//!   scanout (PNG where QEMU supports it, else PPM) and `input-send-event`
//!   moves the absolute pointer and clicks. Nothing is read back from the
//!   compositor itself: every check is on the pixels the device scans out.
//! * **Checks.** The capture has the connector's preferred mode size; the
//!   compositor's background colour dominates; the frame of exactly one
//!   window is found by its host-colour title bar and borders and has the
//!   size of a 250x250 client plus decoration; the client area is mostly not
//!   background (`window_pixels`); a capture about a second later differs in
//!   the client area (the client animates, so page flips continue); after
//!   the click on the close button, the host colour and the client's pixels
//!   are gone.
//! * **Timing.** `first_frame_s` runs from `RAYOS-DRM-COMPOSITOR-START` (the
//!   test host prints it right before executing the compositor) to the first
//!   capture that shows the decorated window, both stamped on this machine's
//!   monotonic clock; captures are taken every [`POLL`], so it is an upper
//!   bound by that much.
//! * The decoration constants mirror the compositor's layout
//!   (compositor/src/decoration.rs): title bar [`TITLE_H`] above the client,
//!   [`BORDER`] around it, the close button a [`BUTTON`] square [`PAD`] from
//!   the right end of the title bar. The window is located in each capture,
//!   never assumed at a position.

mod evaluate;
mod image;
mod init;
mod markers;
mod qmp;

pub use evaluate::*;
pub use image::*;
pub use init::*;
pub use markers::*;
pub use qmp::*;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::nested::{self, NestedError};
use crate::cli::{BootOptions, CompositorDrmArgs};
use crate::qemu::{self, Accel, AccelProbe, Flow};
use crate::testhost::{self, sh_quote, TestHostError, MODULE_DIR, MODULE_LIST_DIR};
use crate::Outcome;
use rayos_image::hostimage::UDEVD;
use rayos_image::kmod::ModuleTree;

pub const SCENARIO: &str = "compositor-drm";

const COMPOSITOR: &str = "/usr/bin/rayos-compositor";
const CLIENT: &str = "/usr/bin/weston-simple-shm";
const SOCKET_DIR: &str = "/run/rayos";
const SOCKET: &str = "rayos-host";
const CONTROL: &str = "/run/rayos/ctl.sock";
const MODULE_LIST: &str = "modules-display";

/// Kernel modules: the KMS driver of `-device bochs-display`, evdev (libinput
/// reads `/dev/input/event*`) and the virtio-pci input devices.
pub const MODULES: &[&str] = &["bochs", "evdev", "virtio_pci", "virtio_input"];

/// Errors that stop the scenario.
#[derive(Debug, thiserror::Error)]
pub enum DrmError {
    #[error(transparent)]
    Nested(#[from] NestedError),
    #[error(transparent)]
    TestHost(#[from] TestHostError),
    #[error(transparent)]
    Initramfs(#[from] rayos_image::cpio::CpioError),
    #[error(transparent)]
    Kmod(#[from] rayos_image::kmod::KmodError),
    #[error(transparent)]
    Qemu(#[from] crate::qemu::QemuError),
    #[error("{what} not found at {path} ({hint})")]
    Missing { what: &'static str, path: PathBuf, hint: &'static str },
    #[error("{program} not found on PATH ({hint})")]
    NoProgram { program: String, hint: &'static str },
    #[error(transparent)]
    HostImage(#[from] rayos_image::hostimage::HostImageError),
    #[error("bad --size {0:?}: expected WxH, e.g. 1280x800")]
    BadSize(String),
}

/// Why the QMP side's checks stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanoutError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Qmp(#[from] rayos_test_kit::qmp::QmpError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error("{step} after {timeout:?} ({}): {source}", path.display())]
    NotWithin {
        step: &'static str,
        timeout: Duration,
        path: PathBuf,
        #[source]
        source: CheckError,
    },
    #[error("the client area did not change between two captures ~1 s apart ({changed} pixels; want >= {MIN_CHANGED_PIXELS}): page flips stopped")]
    Static { changed: usize },
}

/// What the QMP side saw.
#[derive(Debug, Default)]
struct Report {
    size: Option<(u32, u32)>,
    first_window: Option<Instant>,
    found: Option<Found>,
    background_share: f64,
    changed: Option<usize>,
    closed_after: Option<Duration>,
    captures: Vec<PathBuf>,
    error: Option<String>,
}

struct Checks<'a> {
    qmp_path: &'a Path,
    run_dir: &'a Path,
    frame_timeout: Duration,
    close_timeout: Duration,
}

/// Polls captures until `f` accepts one or `timeout` passes; the last
/// capture is kept as `<name>.<ext>` and the reason of the last refusal is
/// the error.
fn poll<T>(
    cam: &mut Camera,
    name: &str,
    step: &'static str,
    timeout: Duration,
    mut f: impl FnMut(&Image) -> Result<T, CheckError>,
) -> Result<(PathBuf, Image, T), ScanoutError> {
    let end = Instant::now() + timeout;
    loop {
        let (path, img) = cam.shot(name)?;
        match f(&img) {
            Ok(t) => return Ok((path, img, t)),
            Err(source) if Instant::now() >= end => {
                return Err(ScanoutError::NotWithin { step, timeout, path, source });
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Connects to QMP, runs the checks, then quits QEMU over the same
/// connection (QEMU's exit ends the captured run).
fn run_checks(c: &Checks<'_>, report: &mut Report) -> Result<(), ScanoutError> {
    let qmp = rayos_test_kit::Qmp::connect(c.qmp_path, Duration::from_secs(30))?;
    let mut cam = Camera { qmp, png: true, dir: c.run_dir.to_path_buf() };
    let result = check_scanout(c, &mut cam, report);
    if let Err(e) = cam.qmp.execute("quit", json!({})) {
        tracing::warn!("QMP quit: {e}");
    }
    result
}

fn check_scanout(c: &Checks<'_>, cam: &mut Camera, report: &mut Report) -> Result<(), ScanoutError> {
    // 1. The window appears: background, decoration, client pixels.
    let (path, first, found) =
        poll(cam, "frame-1", "the decorated client window did not appear", c.frame_timeout, |img| {
            background_share(img)?;
            find_window(img)
        })?;
    report.first_window = Some(Instant::now());
    report.size = Some((first.w, first.h));
    report.background_share = background_share(&first)?;
    report.captures.push(path);
    println!(
        "{SCENARIO} capture {}x{}: frame {} client {} window_pixels={} host_title_pixels={} background={:.1}%",
        first.w,
        first.h,
        found.frame,
        found.client,
        found.window_pixels,
        found.host_title_pixels,
        report.background_share * 100.0
    );
    report.found = Some(found.clone());

    // 2. The client animates: page flips continue.
    std::thread::sleep(Duration::from_secs(1));
    let (path, second) = cam.shot("frame-2")?;
    report.captures.push(path);
    let changed = changed_pixels(&first, &second, found.client);
    report.changed = Some(changed);
    println!("{SCENARIO} animation: {changed} of {} client pixels changed in ~1 s", found.client.area());
    if changed < MIN_CHANGED_PIXELS {
        return Err(ScanoutError::Static { changed });
    }

    // 3. A click on the close button closes the window.
    let size = (first.w, first.h);
    let (x, y) = found.close;
    println!("{SCENARIO} input: pointer to the close button at {x},{y}, left click");
    cam.abs(x, y, size)?;
    std::thread::sleep(Duration::from_millis(300));
    cam.button(true)?;
    std::thread::sleep(Duration::from_millis(100));
    cam.button(false)?;
    let clicked = Instant::now();
    let step = "the window is still shown after a click on its close button";
    let (path, _, ()) = poll(cam, "after-close", step, c.close_timeout, |img| window_gone(img, &found))?;
    report.closed_after = Some(clicked.elapsed());
    report.captures.push(path);
    Ok(())
}

// ---- the scenario ------------------------------------------------------------

/// `compositor-drm`.
pub fn run(args: &CompositorDrmArgs) -> Outcome {
    if crate::which(&args.qemu).is_none() {
        return Outcome::Skip { scenario: SCENARIO, reason: format!("QEMU binary {:?} not found", args.qemu) };
    }
    match run_inner(args) {
        Ok(outcome) => outcome,
        Err(e) => nested::fail(SCENARIO, &e),
    }
}

fn boot_options(args: &CompositorDrmArgs) -> BootOptions {
    BootOptions {
        vmm_bin: None,
        qemu: args.qemu.clone(),
        timeout: args.timeout,
        accel: args.accel,
        run_dir: args.run_dir.clone(),
        keep_images: args.keep_images,
        cache_dir: args.cache_dir.clone(),
        kernel_meta: args.kernel_meta.clone(),
        host_memory_mib: args.memory_mib,
        host_cpus: args.cpus,
        guest_memory_mib: 0,
        guest_cpus: 0,
        guest_cmdline: String::new(),
        qemu_machine: testhost::DEFAULT_QEMU_MACHINE.into(),
        kvm_trace: false,
    }
}

fn resolve(
    arg: &Option<PathBuf>,
    default: PathBuf,
    what: &'static str,
    hint: &'static str,
) -> Result<PathBuf, DrmError> {
    let p = arg.clone().unwrap_or(default);
    if p.is_file() {
        Ok(p)
    } else {
        Err(DrmError::Missing { what, path: p, hint })
    }
}

fn run_inner(args: &CompositorDrmArgs) -> Result<Outcome, DrmError> {
    let started = Instant::now();
    let size = parse_size(&args.size)?;
    let compositor = resolve(
        &args.compositor,
        crate::rundir::release_binary("rayos-compositor"),
        "rayos-compositor",
        "cargo build --release -p rayos-compositor, or pass --compositor",
    )?;
    let client = crate::which(&args.client).ok_or_else(|| DrmError::NoProgram {
        program: args.client.clone(),
        hint: "install the Debian package weston (scripts/setup.sh)",
    })?;
    let udevadm = crate::which("udevadm")
        .ok_or_else(|| DrmError::NoProgram { program: "udevadm".into(), hint: "install the Debian package udev" })?;
    let udevd = resolve(&None, PathBuf::from(UDEVD), "systemd-udevd", "install the Debian package udev")?;
    let opts = boot_options(args);
    let inputs = nested::gather(SCENARIO, &[], &opts)?;
    let run_dir = inputs.run_dir.clone();

    let init = init_script(&InitSpec {
        compositor_log: args.compositor_log.clone().unwrap_or_default(),
        socket_timeout: args.frame_timeout,
    });
    let initrd = run_dir.join("host-initrd.cpio");
    let t = Instant::now();
    let (bytes, order) = build_image(
        &ImageInputs {
            busybox: &inputs.busybox,
            modules: &inputs.kernel.modules,
            compositor: &compositor,
            client: &client,
            udevadm: &udevadm,
            udevd: &udevd,
            init,
        },
        &initrd,
    )?;
    tracing::info!(
        "test host image built in {:.1} s: {:.1} MiB; modules {order:?}",
        t.elapsed().as_secs_f64(),
        bytes as f64 / 1048576.0
    );

    // Nothing nests here: KVM is used whenever it can run Linux.
    let mut probe = AccelProbe::detect();
    probe.nested = None;
    let (accel, accel_reason) = qemu::choose_accel(&probe, args.accel);
    println!("QEMU accelerator: {accel_reason}");

    let qmp_path = run_dir.join("qmp.sock");
    let _ = std::fs::remove_file(&qmp_path);
    let mut cmd = std::process::Command::new(&inputs.qemu);
    cmd.args(qemu_args(accel, args.memory_mib, args.cpus, size, &qmp_path, &inputs.kernel.vmlinuz, &initrd));
    let log = run_dir.join("serial.log");
    tracing::info!("booting the test host (timeout {:?}); serial log {}", args.timeout, log.display());

    let obs = Arc::new(Mutex::new(Observation::default()));
    let (tx, rx) = mpsc::channel::<Report>();
    let qemu_start = Instant::now();
    let run = {
        let mut worker: Option<std::thread::JoinHandle<()>> = None;
        let obs = Arc::clone(&obs);
        let (qmp_path, run_dir) = (qmp_path.clone(), run_dir.clone());
        let (frame_timeout, close_timeout) = (args.frame_timeout, args.close_timeout);
        qemu::run_captured(cmd, &log, args.timeout, move |offset, line| {
            let mut o = obs.lock().expect("observation lock");
            let had_ready = o.ready.is_some();
            o.observe(Instant::now(), offset, line);
            if o.fail.is_some() || o.panic.is_some() {
                return Flow::Finished;
            }
            if !had_ready && o.ready.is_some() && worker.is_none() {
                let (qmp_path, run_dir, tx) = (qmp_path.clone(), run_dir.clone(), tx.clone());
                worker = Some(std::thread::spawn(move || {
                    let mut report = Report::default();
                    let checks = Checks { qmp_path: &qmp_path, run_dir: &run_dir, frame_timeout, close_timeout };
                    if let Err(e) = run_checks(&checks, &mut report) {
                        report.error = Some(e.to_string());
                    }
                    let _ = tx.send(report);
                }));
            }
            Flow::Continue
        })?
    };
    let wall = qemu_start.elapsed();
    let report = rx.recv_timeout(Duration::from_secs(5)).ok();
    let obs = obs.lock().expect("observation lock").clone();
    for c in &obs.connectors {
        println!("{SCENARIO} connector {c}");
    }
    for i in &obs.inputs {
        println!("{SCENARIO} input {i}");
    }

    let figures = evaluate(&obs, report.as_ref(), run.outcome_text(args.timeout));
    let outcome = match figures {
        Ok(f) => {
            println!(
                "{SCENARIO} boot_to_ready_s={:.1} close_s={:.2} animated_pixels={} wall_s={:.1} total_s={:.1} run_dir={}",
                f.ready_offset.as_secs_f64(),
                f.closed_after.as_secs_f64(),
                f.changed,
                wall.as_secs_f64(),
                started.elapsed().as_secs_f64(),
                run_dir.display()
            );
            if !args.keep_images {
                let _ = std::fs::remove_file(&initrd);
            }
            Outcome::Pass {
                scenario: SCENARIO,
                figures: format!(
                    "mode={}x{} first_frame_s={:.2} window_pixels={}",
                    f.mode.0,
                    f.mode.1,
                    f.first_frame.as_secs_f64(),
                    f.window_pixels
                ),
            }
        }
        Err(reason) => {
            println!(
                "{SCENARIO} wall_s={:.1} serial log {} run_dir={}",
                wall.as_secs_f64(),
                log.display(),
                run_dir.display()
            );
            Outcome::Fail { scenario: SCENARIO, reason: reason.to_string() }
        }
    };
    let doc = json!({
        "scenario": SCENARIO,
        "kernel_release": inputs.kernel.release(),
        "accel": format!("{accel:?}"),
        "accel_reason": accel_reason,
        "modules": order,
        "connectors": obs.connectors,
        "inputs": obs.inputs,
        "compositor_exit": obs.compositor_exit,
        "client_exit": obs.client_exit,
        "captures": report.as_ref().map(|r| r.captures.clone()).unwrap_or_default(),
        "wall_s": wall.as_secs_f64(),
        "result": outcome.line(),
    });
    let path = run_dir.join("result.json");
    if let Err(e) = std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n") {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
    Ok(outcome)
}

/// The figures of a passing run.
#[derive(Debug)]
struct Figures {
    mode: (u32, u32),
    first_frame: Duration,
    window_pixels: usize,
    changed: usize,
    ready_offset: Duration,
    closed_after: Duration,
}

trait OutcomeText {
    fn outcome_text(&self, timeout: Duration) -> Option<String>;
}

impl OutcomeText for crate::qemu::RunOutcome {
    /// Why QEMU ended, when that explains a failure.
    fn outcome_text(&self, timeout: Duration) -> Option<String> {
        if self.timed_out {
            Some(format!("timeout after {timeout:?}"))
        } else {
            self.status.filter(|s| !s.success()).map(|s| {
                let last = self.stderr_tail.last().map(|l| format!(": {l}")).unwrap_or_default();
                format!("QEMU {s}{last}")
            })
        }
    }
}

/// Why a run that ended does not pass.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvalError {
    #[error("test host: {0}")]
    TestHost(String),
    #[error("test host kernel: {0}")]
    Panic(String),
    #[error("the test host never printed {MARK_READY}")]
    NeverReady,
    #[error("the QMP checks did not report")]
    NoReport,
    #[error("{error}{}", compositor_exit.as_ref().map(|s| format!("; the compositor exited with status {s}")).unwrap_or_default())]
    Checks { error: String, compositor_exit: Option<String> },
    #[error("the QMP checks ended without a window")]
    NoWindow,
    #[error("the capture is {}x{} but the connector's preferred mode is {}x{}", capture.0, capture.1, mode.0, mode.1)]
    Mode { capture: (u32, u32), mode: (u32, u32) },
    #[error("no connected DRM connector with modes in {0:?}")]
    NoConnector(Vec<String>),
    #[error("the compositor exited with status {0} during the checks")]
    CompositorExited(String),
    /// An early failure with why QEMU ended.
    #[error("{source} ({qemu})")]
    WithQemu { source: Box<EvalError>, qemu: String },
}

fn evaluate(obs: &Observation, report: Option<&Report>, qemu: Option<String>) -> Result<Figures, EvalError> {
    let with_qemu = |e: EvalError| match &qemu {
        Some(q) => EvalError::WithQemu { source: Box::new(e), qemu: q.clone() },
        None => e,
    };
    if let Some(f) = &obs.fail {
        return Err(with_qemu(EvalError::TestHost(f.clone())));
    }
    if let Some(p) = &obs.panic {
        return Err(with_qemu(EvalError::Panic(p.clone())));
    }
    let Some(ready_offset) = obs.ready_offset else {
        return Err(with_qemu(EvalError::NeverReady));
    };
    let Some(report) = report else {
        return Err(with_qemu(EvalError::NoReport));
    };
    if let Some(e) = &report.error {
        return Err(EvalError::Checks { error: e.clone(), compositor_exit: obs.compositor_exit.clone() });
    }
    let (Some(found), Some(size), Some(first), Some(start)) =
        (&report.found, report.size, report.first_window, obs.compositor_start)
    else {
        return Err(EvalError::NoWindow);
    };
    match obs.preferred_mode() {
        Some(mode) if mode == size => {}
        Some(mode) => return Err(EvalError::Mode { capture: size, mode }),
        None => return Err(EvalError::NoConnector(obs.connectors.clone())),
    }
    if let Some(s) = &obs.compositor_exit {
        return Err(EvalError::CompositorExited(s.clone()));
    }
    Ok(Figures {
        mode: size,
        first_frame: first.saturating_duration_since(start),
        window_pixels: found.window_pixels,
        changed: report.changed.unwrap_or(0),
        ready_offset,
        closed_after: report.closed_after.unwrap_or_default(),
    })
}
