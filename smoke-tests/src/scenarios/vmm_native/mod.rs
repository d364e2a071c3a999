//! Scenario `vmm-native` (tier 3, nested): the RayOS guest image under
//! rayos-vmm, with RayOS's own backends, inside the nested test host; the
//! guest stack of `agent`/`native` on our VMM instead of QEMU.
//!
//! Outer host (this process):
//! 1. Build or refresh the guest image ([`super::guest_qemu::prepare`]),
//!    fetch the test host's Debian kernel and busybox ([`super::nested`]).
//! 2. Build the test host initramfs: busybox, the kvm, virtio-fs, virtio-blk
//!    and ext4 modules of the test host's kernel, rayos-vmm, rayos-vsock,
//!    virtiofsd, `rayos`, rayos-compositor and `rayos-smoke-control` (each
//!    with its libraries), and `host-init.sh` as `/init`; write the guest
//!    image directory into an ext4 disk image (`mke2fs -d`, see
//!    [`image_disk`] for why not virtio-fs).
//! 3. Boot the test host in QEMU (TCG `-cpu max,la57=off` here) with the
//!    image disk as virtio-blk, memfd-shared RAM and an output folder of the
//!    run directory exported by virtiofsd (`vhost-user-fs-pci`, tag
//!    `rayos-out`).
//!
//! Test host (`host-init.sh`), each step timed from its serial markers:
//! * `backends`: virtiofsd exports the image's root file system (from the
//!   mounted disk), rayos-vsock serves the vsock.
//! * `vmm` (→ `agent`): rayos-vmm boots the image's vmlinuz and
//!   initramfs.cpio.gz with `console=ttyS0 <manifest cmdline> panic=-1`,
//!   `--fs tag=rootfs,...` and `--vhost-user virtio-id=19,socket=...` (the
//!   vsock's three queues are rayos-vmm's default for that type);
//!   `rayos guest ping` answers on the hybrid socket (`boot_to_agent_s`,
//!   from `RAYOS-VMM-START`).
//! * `catalog`: `rayos guest apps` lists foot.desktop.
//! * `exit3`: `rayos guest launch --wait --command -- sh -c 'id -un; exit 3'`
//!   returns 3.
//! * `compositor`, `bridge`, `launch`, `window` (not with `--no-native`):
//!   rayos-compositor headless with VM `linux` registered, `rayos bridge`
//!   (the image's own waypipe through its loader), `rayos launch
//!   weston-simple-shm` by name over the live catalog through the bridge; the
//!   control API must list a window of origin `linux` that has drawn, and
//!   screenshots of it and of the output land in the output folder, where
//!   this side checks the window shot (origin colour, label, client pixels).
//! * `close`: the control API's `close` on that window; it must leave the
//!   window list (the guest then idles while the intent model loads).
//! * `words`, `terminal` (native, and only when this machine has the intent
//!   model installed, which then goes into the test host's system store):
//!   `rayos launch "open a terminal"` resolves the words over the live
//!   catalog to a terminal, launched through the bridge; its window (origin
//!   `linux`, drawn) is screenshot and checked like the first. Without the
//!   model the output and the PASS line say `words=not-checked`.
//! * `poweroff`: `rayos guest shutdown`; rayos-vmm must exit 0.
//!
//! Not checked here (the QEMU-based `native` scenario covers them): typing
//! into a guest window, shared folders, the clipboard, frame rates, the
//! app's exit after its window closed.
//!
//! A guest crash under rayos-vmm (exit status 3 or 4), and a panic of the
//! test host's own kernel (seen once, "corrupted stack end detected inside
//! scheduler" in rayos-vmm's vCPU thread, under TCG's nested SVM while the
//! model loaded), get one visible retry ([`nested::run_with_retry`]); anything else fails at once, naming the step,
//! with the guest console's last lines. Logs (guest console, rayos-vmm,
//! backends, compositor, waypipe) and screenshots stay in `<run dir>/out`.

use crate::scenarios::ScenarioError;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::compositor::{check_window_shot, Image, VM_RGB};
use super::guest_qemu;
use super::nested::{self, Prepared};
use crate::cli::{BootOptions, VmmNativeArgs};
use crate::procs::Procs;
use crate::qemu::{self, Flow};
use crate::serial;
use crate::testhost::{self, Vmm, MODULE_DIR, MODULE_LIST_DIR};
use crate::Outcome;

pub const SCENARIO: &str = "vmm-native";
const HOST_INIT: &str = include_str!("host-init.sh");
/// Shell functions both real-guest test hosts use (at `@HOST_LIB@`).
const HOST_LIB: &str = include_str!("host-lib.sh");
pub(crate) const OUT_TAG: &str = "rayos-out";
pub(crate) const VM: &str = "linux";
pub(crate) const VM_COLOUR: &str = "#d03030";
const APP: &str = "weston-simple-shm";
const APP_ID_PART: &str = "simple-shm";
pub(crate) const CONTROL_CLIENT: &str = "rayos-smoke-control";
/// The request in words, and the terminals that answer it.
pub(crate) const WORDS_REQUEST: &str = "open a terminal";
pub(crate) const TERMINALS: &[&str] = &["foot.desktop", "footclient.desktop", "weston-terminal.desktop"];
pub(crate) const TERMINAL_APP_IDS: &str = "foot|terminal";
/// Where the test host keeps the intent model (`rayos launch --system`).
pub(crate) const SYSTEM_MODELS: &str = "/var/lib/rayos/models";

/// Test host markers (besides the shared ones of [`serial`]).
const STEP: &str = "RAYOS-VN-STEP ";
const OK: &str = "RAYOS-VN-OK ";
const WINDOW: &str = "RAYOS-VN-WINDOW ";
const TERMINAL: &str = "RAYOS-VN-TERMINAL ";
const LIST: &str = "RAYOS-VN-LIST ";
const DESKTOP: &str = "RAYOS-VN-DESKTOP ";
const TYPED_RETRY: &str = "RAYOS-VN-TYPED-RETRY ";
const DIAG: &str = "RAYOS-VN-DIAG ";
const DONE: &str = "RAYOS-VN-DONE";
/// The test host's QEMU (the reference VMM) lost its guest to a reset.
const REFERENCE_CRASH: &str = "RAYOS-VN-REFERENCE-CRASH ";
/// A guest crash the test host retried itself.
const RETRY: &str = "RAYOS-VN-RETRY ";

/// Steps in order; the native ones only without `--no-native`.
const BASE_STEPS: &[&str] = &["backends", "agent", "catalog", "exit3"];
const NATIVE_STEPS: &[&str] = &["compositor", "bridge", "launch", "window", "close"];
/// With the intent model installed on this machine.
const WORDS_STEPS: &[&str] = &["words", "terminal"];

/// The guest both nested guest-image scenarios (this one and vmm-agent)
/// boot, and what their test-host scripts share.
#[derive(Debug, Clone)]
pub struct GuestPlan {
    pub cmdline: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub vmlinuz: String,
    pub initramfs: String,
    pub rootfs: String,
    pub native: bool,
    /// `rayos launch "open a terminal"` (needs the intent model).
    pub words: bool,
    pub boot_timeout: Duration,
    pub window_timeout: Duration,
    pub vmm_log: Option<String>,
    /// Give the guest a virtio-gpu (`rayos-vmm --gpu headless`).
    pub gpu: bool,
    /// The embedded desktop (vmm-desktop): the compositor before the VMM,
    /// `--gpu wayland=` on the VM's desktop socket, and the desktop steps.
    pub desktop: bool,
}

/// The embedded desktop's display at boot, and the size the window is
/// resized to (both fit the test host's 1280x800 output with the title bar).
pub const DESKTOP_SIZE: (u32, u32) = (1024, 640);
pub const DESKTOP_RESIZE: (u32, u32) = (960, 600);
/// The presenter's app_id (rayos-vmm's `presenter_config`).
pub const DESKTOP_APP_ID: &str = "rayos.vm-desktop";
/// The file the typed command writes in the guest user's home.
pub const TYPED_FILE: &str = "rayos-typed.txt";
/// The steps of the embedded desktop, after exit3.
const DESKTOP_STEPS: &[&str] = &["desktop", "click", "typed", "resize"];

/// The display `--gpu` gives the guest.
pub const GPU_SIZE: (u32, u32) = (1280, 800);

impl GuestPlan {
    /// The guest of `manifest` as the command line asks for it; `words`:
    /// the intent model is there for `rayos launch "open a terminal"`.
    pub fn new(manifest: &rayos_image::Manifest, args: &VmmNativeArgs, words: bool) -> Self {
        GuestPlan {
            cmdline: format!("console=ttyS0 {} panic=-1", manifest.kernel_cmdline),
            memory_mib: args.guest_memory_mib,
            cpus: args.guest_cpus,
            vmlinuz: manifest.vmlinuz.clone(),
            initramfs: manifest.initramfs.clone(),
            rootfs: manifest.rootfs.clone(),
            native: !args.no_native,
            words,
            boot_timeout: args.boot_timeout,
            window_timeout: args.window_timeout,
            // With --gpu, rayos-vmm's log says which devices the guest's
            // drivers activated.
            vmm_log: args.vmm_log.clone().or_else(|| args.gpu.then(|| "rayos_vmm=info".to_string())),
            gpu: args.gpu,
            desktop: false,
        }
    }

    /// A test host's `/init` from its `template`: the shared functions at
    /// `@HOST_LIB@`, then every placeholder filled (`values` holds the
    /// script's own, after [`GuestPlan::placeholders`]).
    pub fn host_init(&self, template: &str, values: &[(&'static str, String)]) -> String {
        let with_lib = crate::script::fill(template, &[("HOST_LIB", HOST_LIB.to_string())]);
        crate::script::fill(&with_lib, values)
    }

    /// The placeholders both test-host scripts have, with their values.
    pub fn placeholders(&self) -> Vec<(&'static str, String)> {
        let env = self.vmm_log.as_ref().map(|f| format!("RUST_LOG={} ", testhost::sh_quote(f))).unwrap_or_default();
        let secs = |d: Duration| d.as_secs().max(1).to_string();
        vec![
            ("HOST_INIT", serial::HOST_INIT.to_string()),
            ("HOST_FAIL", serial::HOST_FAIL.to_string()),
            ("HOST_INFO", serial::HOST_INFO.to_string()),
            ("VMM_START", serial::VMM_START.to_string()),
            ("VMM_EXIT", serial::VMM_EXIT.to_string()),
            ("MODULE_LIST_DIR", MODULE_LIST_DIR.to_string()),
            ("MODULE_DIR", MODULE_DIR.to_string()),
            ("OUT_TAG", OUT_TAG.to_string()),
            ("VMLINUZ", self.vmlinuz.clone()),
            ("INITRAMFS", self.initramfs.clone()),
            ("ROOTFS", self.rootfs.clone()),
            ("CMDLINE", self.cmdline.replace('\'', "")),
            ("MEMORY", format!("{}M", self.memory_mib)),
            ("CPUS", self.cpus.to_string()),
            ("VMM_ENV", env),
            ("BOOT_TIMEOUT", secs(self.boot_timeout)),
            ("WINDOW_TIMEOUT", secs(self.window_timeout)),
            ("NATIVE", u8::from(self.native).to_string()),
            ("WORDS", u8::from(self.native && self.words).to_string()),
            ("WORDS_REQUEST", WORDS_REQUEST.to_string()),
            ("TERMINAL_APP_IDS", TERMINAL_APP_IDS.to_string()),
            ("VM", VM.to_string()),
            ("VM_COLOUR", VM_COLOUR.to_string()),
            (
                "GPU_ARGS",
                if self.desktop {
                    format!(
                        "--gpu wayland=/run/rayos/rayos-desktop-{VM},width={},height={} ",
                        DESKTOP_SIZE.0, DESKTOP_SIZE.1
                    )
                } else if self.gpu {
                    format!("--gpu headless,width={},height={} ", GPU_SIZE.0, GPU_SIZE.1)
                } else {
                    String::new()
                },
            ),
            ("DESKTOP", u8::from(self.desktop).to_string()),
            ("DESKTOP_APP_ID", DESKTOP_APP_ID.to_string()),
            ("TYPED_FILE", TYPED_FILE.to_string()),
            ("RESIZE_W", DESKTOP_RESIZE.0.to_string()),
            ("RESIZE_H", DESKTOP_RESIZE.1.to_string()),
        ]
    }
}

/// What the test host's `/init` is told.
#[derive(Debug, Clone)]
pub struct Plan {
    pub guest: GuestPlan,
    /// Record the test host's KVM trace events (see `--kvm-trace`).
    pub kvm_trace: bool,
}

impl Plan {
    /// The steps this plan runs, in order.
    pub fn steps(&self) -> Vec<&'static str> {
        let mut s = BASE_STEPS.to_vec();
        if self.guest.desktop {
            s.insert(1, "compositor");
            s.extend(DESKTOP_STEPS);
        }
        if self.guest.native {
            s.extend(NATIVE_STEPS);
            if self.guest.words {
                s.extend(WORDS_STEPS);
            }
        }
        s.push("poweroff");
        s
    }
}

/// The test host's `/init` for `plan`.
pub fn host_init(plan: &Plan) -> String {
    let trace =
        if plan.kvm_trace { testhost::HostHooks::default().with_kvm_trace() } else { testhost::HostHooks::default() };
    let mut values = plan.guest.placeholders();
    values.extend([
        ("VMM_METRICS", serial::VMM_METRICS.to_string()),
        ("POWEROFF_TIMEOUT", "60".to_string()),
        ("KVM_TRACE_BEFORE", trace.before_vmm.clone()),
        ("KVM_TRACE_AFTER", trace.after_vmm.clone()),
        ("BRIDGE_PORT", rayos_contract::BRIDGE_PORT.to_string()),
        ("APP", APP.to_string()),
        ("APP_ID_PART", APP_ID_PART.to_string()),
    ]);
    plan.guest.host_init(HOST_INIT, &values)
}

/// A test host whose console says nothing this long before the timeout has
/// stalled (see [`Observation::stalled_host`]).
pub const SILENT: Duration = Duration::from_secs(180);
/// A nested guest whose console says nothing this long while a step waits
/// for it has stalled (see [`Observation::stalled_guest`]).
pub const GUEST_SILENT: Duration = Duration::from_secs(100);

/// What one boot of the test host printed.
#[derive(Debug, Default)]
pub struct Observation {
    pub vmm_start: Option<Duration>,
    /// (step, time its start marker arrived)
    pub started: Vec<(String, Duration)>,
    /// (step, time it passed, detail)
    pub passed: Vec<(String, Duration, String)>,
    pub vmm_exit: Option<i32>,
    pub metrics: Option<String>,
    pub host_fail: Option<String>,
    pub diag: Vec<String>,
    /// The test host's own kernel panicked (the guest's console goes to a
    /// file, so a panic on the serial stream is the test host's).
    pub host_panic: Option<String>,
    /// The test host's kernel reported itself stuck (a soft lockup or an
    /// RCU stall): the emulated machine under the nested VMs stalled.
    pub host_stall: Option<String>,
    /// When the last line arrived.
    pub last_line: Duration,
    /// The reference VMM's guest (QEMU inside the test host) crashed.
    pub reference_crash: Option<String>,
    /// Guest crashes the test host retried itself (what, why).
    pub retries: Vec<String>,
    /// How long the guest's console had been silent when a step failed
    /// (the test host's `vmm_state_report`).
    pub guest_silent_s: Option<u64>,
    pub window: Option<Value>,
    pub terminal: Option<Value>,
    pub windows: Option<Value>,
    /// The embedded desktop's window (vmm-desktop).
    pub desktop: Option<Value>,
    /// Times the typed line was typed again (vmm-desktop).
    pub typed_retries: u32,
    pub done: bool,
}

pub(crate) fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| line[i + marker.len()..].trim())
}

impl Observation {
    /// Checks that the test host neither panicked nor failed and that every
    /// one of `steps` passed; returns how long each took (`agent` from the
    /// VMM's start, the others from their own start marker).
    pub fn step_times(&self, steps: &[&str]) -> Result<Vec<(String, f64)>, ScenarioError> {
        let last_step = self.started.last().map(|(s, _)| s.as_str()).unwrap_or("start-up");
        if let Some(p) = &self.host_panic {
            return Err(format!("step {last_step}: the test host failed: {p}").into());
        }
        if let Some(f) = &self.host_fail {
            return Err(format!("step {last_step}: {f}").into());
        }
        let mut step_s = Vec::new();
        for &step in steps {
            let start = if step == "agent" { self.vmm_start } else { self.started_at(step) };
            let Some(end) = self.passed_at(step) else {
                return Err(format!("step {step} did not pass (no {OK}{step} marker)").into());
            };
            let start = start.ok_or_else(|| format!("step {step} passed without its start marker"))?;
            step_s.push((step.to_string(), end.saturating_sub(start).as_secs_f64()));
        }
        Ok(step_s)
    }

    pub fn observe(&mut self, t: Duration, line: &str) {
        self.last_line = t;
        if let Some(rest) = after(line, STEP) {
            self.started.push((rest.to_string(), t));
        } else if let Some(rest) = after(line, OK) {
            let (name, detail) = rest.split_once(' ').unwrap_or((rest, ""));
            self.passed.push((name.to_string(), t, detail.to_string()));
        } else if let Some(rest) = after(line, WINDOW) {
            self.window = serde_json::from_str(rest).ok();
        } else if let Some(rest) = after(line, TERMINAL) {
            self.terminal = serde_json::from_str(rest).ok();
        } else if line.contains(TYPED_RETRY) {
            self.typed_retries += 1;
        } else if let Some(rest) = after(line, DESKTOP) {
            self.desktop = serde_json::from_str(rest).ok();
        } else if let Some(rest) = after(line, LIST) {
            self.windows = serde_json::from_str(rest).ok();
        } else if let Some(rest) = after(line, DIAG) {
            if let Some(n) = after(rest, "guest console silent for") {
                self.guest_silent_s = n.split_whitespace().next().and_then(|n| n.parse().ok());
            }
            self.diag.push(rest.to_string());
        } else if let Some(rest) = after(line, RETRY) {
            self.retries.push(rest.to_string());
        } else if let Some(rest) = after(line, REFERENCE_CRASH) {
            self.reference_crash.get_or_insert_with(|| rest.to_string());
        } else if line.contains(DONE) {
            self.done = true;
        } else if let Some(rest) = after(line, serial::HOST_FAIL) {
            self.host_fail.get_or_insert_with(|| rest.to_string());
        } else if let Some(rest) = after(line, serial::VMM_EXIT) {
            self.vmm_exit = rest.parse().ok();
        } else if let Some(rest) = after(line, serial::VMM_METRICS) {
            self.metrics = Some(rest.to_string());
        } else if line.contains(serial::VMM_START) {
            self.vmm_start = Some(t);
        } else if let Some(rest) = after(line, "Kernel panic - not syncing:") {
            self.host_panic.get_or_insert_with(|| rest.to_string());
        } else if line.contains("BUG: soft lockup") || line.contains("self-detected stall on CPU") {
            self.host_stall.get_or_insert_with(|| line.trim().to_string());
        }
    }

    /// Why the test host, not the VMM, is the likely cause of a run that
    /// timed out at `timeout`: its kernel reported a stall, or its console
    /// went silent for [`SILENT`] or more before the timeout (the test host
    /// prints a step marker or a guest line at least every minute while it
    /// works, and its own steps fail with a message when they time out).
    pub fn stalled_host(&self, timeout: Duration) -> Option<String> {
        if self.host_fail.is_some() {
            return None;
        }
        if let Some(s) = &self.host_stall {
            return Some(format!("the test host's kernel reported a stall ({s})"));
        }
        let silent = timeout.saturating_sub(self.last_line);
        (silent >= SILENT).then(|| {
            format!(
                "the test host's console went silent at {:.0} s and said nothing for the {:.0} s until the timeout",
                self.last_line.as_secs_f64(),
                silent.as_secs_f64()
            )
        })
    }

    /// Why the nested guest, not a check, is the likely cause of a step
    /// that timed out: its console had said nothing for [`GUEST_SILENT`] or
    /// more (a guest at work prints, or reaches its agent, well within that).
    /// Retried once like a guest crash; the VMM's state report (vCPU
    /// registers, virtio ring indexes) is in the failure's diagnostics.
    pub fn stalled_guest(&self) -> Option<String> {
        let f = self.host_fail.as_ref()?;
        let silent = self.guest_silent_s.filter(|s| *s >= GUEST_SILENT.as_secs())?;
        f.contains("not within")
            .then(|| format!("the nested guest stalled: its console said nothing for {silent} s before \"{f}\""))
    }

    pub(crate) fn passed_at(&self, step: &str) -> Option<Duration> {
        self.passed.iter().find(|(n, _, _)| n == step).map(|(_, t, _)| *t)
    }

    /// When `step` last started (a retried step starts again).
    pub(crate) fn started_at(&self, step: &str) -> Option<Duration> {
        self.started.iter().rev().find(|(n, _)| n == step).map(|(_, t)| *t)
    }
}

/// Figures of a passing run.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub boot_to_agent_s: f64,
    /// (step, seconds it took)
    pub step_s: Vec<(String, f64)>,
    pub window: Option<Value>,
    /// With `words`: what `rayos launch "open a terminal"` printed, and the
    /// terminal's window.
    pub words_launch: Option<Value>,
    pub terminal: Option<Value>,
}

/// With `--gpu`: the guest's virtio_gpu driver must have set a scanout of
/// [`GPU_SIZE`] and had nothing refused, by rayos-vmm's metrics line, and
/// its virtio_input driver must have activated the keyboard and the tablet,
/// by rayos-vmm's log. Returns the figures for the PASS line (empty
/// without `--gpu`).
pub fn gpu_figures(gpu: bool, metrics: Option<&str>, vmm_log: &str) -> Result<String, ScenarioError> {
    if !gpu {
        return Ok(String::new());
    }
    for device in ["gpu0", "keyboard0", "tablet0"] {
        if !vmm_log.contains(&format!("{device}: activated")) {
            return Err(format!(
                "--gpu: the guest's driver never activated {device} (no \"{device}: activated\" in rayos-vmm's log)"
            )
            .into());
        }
    }
    let m: rayos_vmm_api::Metrics = serde_json::from_str(metrics.ok_or("--gpu: rayos-vmm wrote no metrics")?)
        .map_err(|e| format!("--gpu: rayos-vmm's metrics line is not its metrics JSON: {e}"))?;
    let g = m.gpu.ok_or("--gpu: rayos-vmm's metrics have no gpu figures (was --gpu passed?)")?;
    if g.scanout != Some(GPU_SIZE) {
        return Err(format!(
            "--gpu: the guest's scanout is {:?}, not {}x{} (did its virtio_gpu driver load? {} requests)",
            g.scanout, GPU_SIZE.0, GPU_SIZE.1, g.requests
        )
        .into());
    }
    if g.refused > 0 {
        return Err(format!(
            "--gpu: rayos-vmm refused {} of the guest's {} virtio-gpu requests",
            g.refused, g.requests
        )
        .into());
    }
    Ok(format!(
        " gpu_scanout={}x{} gpu_requests={} gpu_transfers={} gpu_transfer_mib={:.0} gpu_flushes={} input_devices=2",
        GPU_SIZE.0,
        GPU_SIZE.1,
        g.requests,
        g.transfers,
        g.transfer_bytes as f64 / 1048576.0,
        g.flushes
    ))
}

/// Checks that every step of `plan` passed and rayos-vmm exited 0.
pub fn evaluate(obs: &Observation, plan: &Plan) -> Result<Figures, ScenarioError> {
    let step_s = obs.step_times(&plan.steps())?;
    match obs.vmm_exit {
        Some(0) => {}
        Some(s) => return Err(format!("rayos-vmm exited with {s}").into()),
        None => return Err("no rayos-vmm exit status".into()),
    }
    if plan.guest.native {
        let w = obs.window.as_ref().ok_or("no window JSON from the test host")?;
        if w["origin"]["name"] != VM || w["origin"]["kind"] == "host" {
            return Err(format!("the window's origin is not VM {VM}: {w}").into());
        }
    }
    let mut words_launch = None;
    if plan.guest.native && plan.guest.words {
        let detail = obs.passed.iter().find(|(n, _, _)| n == "words").map(|(_, _, d)| d.as_str()).unwrap_or("");
        let v: Value =
            serde_json::from_str(detail).map_err(|e| format!("rayos launch printed no JSON ({e}): {detail}"))?;
        let app = v["launched"].as_str().unwrap_or_default();
        if !TERMINALS.contains(&app) {
            return Err(format!("\"{WORDS_REQUEST}\" launched {app:?}, not a terminal: {v}").into());
        }
        let t = obs.terminal.as_ref().ok_or("no terminal window JSON from the test host")?;
        if t["origin"]["name"] != VM || t["origin"]["kind"] == "host" {
            return Err(format!("the terminal window's origin is not VM {VM}: {t}").into());
        }
        words_launch = Some(v);
    }
    let boot_to_agent_s = step_s.iter().find(|(s, _)| s == "agent").map(|(_, s)| *s).unwrap_or(f64::NAN);
    Ok(Figures { boot_to_agent_s, step_s, window: obs.window.clone(), words_launch, terminal: obs.terminal.clone() })
}

pub fn run(args: &VmmNativeArgs) -> Outcome {
    match run_inner(args) {
        Ok(figures) => Outcome::Pass { scenario: SCENARIO, figures },
        Err(reason) => Outcome::Fail { scenario: SCENARIO, reason: reason.to_string() },
    }
}

pub(crate) fn boot_options(args: &VmmNativeArgs, run_dir: &Path) -> BootOptions {
    BootOptions {
        vmm_bin: args.vmm_bin.clone(),
        qemu: args.qemu.clone(),
        timeout: args.timeout,
        accel: args.accel,
        run_dir: Some(run_dir.to_path_buf()),
        keep_images: args.keep_images,
        cache_dir: args.cache_dir.clone(),
        kernel_meta: args.kernel_meta.clone(),
        host_memory_mib: args.host_memory_mib,
        host_cpus: 2,
        guest_memory_mib: args.guest_memory_mib,
        guest_cpus: args.guest_cpus,
        guest_cmdline: String::new(),
        qemu_machine: testhost::DEFAULT_QEMU_MACHINE.to_string(),
        kvm_trace: false,
    }
}

pub(crate) fn binary(arg: &Option<PathBuf>, name: &str) -> Result<PathBuf, ScenarioError> {
    let p = arg.clone().unwrap_or_else(|| crate::rundir::release_binary(name));
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{name} not found at {} (cargo build --release --workspace)", p.display()).into())
    }
}

/// The programs a RayOS test host carries besides rayos-vmm.
pub(crate) struct HostTools {
    pub virtiofsd: PathBuf,
    pub rayos: PathBuf,
    pub vsock: PathBuf,
    pub compositor: PathBuf,
    pub control: PathBuf,
}

impl HostTools {
    pub fn resolve(args: &VmmNativeArgs) -> Result<HostTools, ScenarioError> {
        let virtiofsd = args
            .guest
            .virtiofsd
            .clone()
            .unwrap_or_else(|| nested::cache_root(&boot_options(args, Path::new("."))).join("tools/bin/virtiofsd"));
        if !virtiofsd.is_file() {
            return Err(format!(
                "virtiofsd {}: not found (scripts/setup.sh builds it there; or pass --virtiofsd)",
                virtiofsd.display()
            )
            .into());
        }
        Ok(HostTools {
            virtiofsd,
            rayos: binary(&args.rayos, "rayos")?,
            vsock: binary(&args.guest.vsock_backend, "rayos-vsock")?,
            compositor: binary(&args.compositor, "rayos-compositor")?,
            control: binary(&None, CONTROL_CLIENT)?,
        })
    }

    /// (host path, path in the test host) of every program, rayos-vmm first.
    pub fn binaries<'a>(&'a self, inputs: &'a nested::Inputs) -> Result<Vec<(&'a Path, &'static str)>, ScenarioError> {
        Ok(vec![
            (inputs.rayos_vmm.as_deref().ok_or("no rayos-vmm")?, testhost::RAYOS_VMM),
            (&self.vsock, "/usr/bin/rayos-vsock"),
            (&self.virtiofsd, "/usr/bin/virtiofsd"),
            (&self.rayos, "/usr/bin/rayos"),
            (&self.compositor, "/usr/bin/rayos-compositor"),
            (&self.control, "/usr/bin/rayos-smoke-control"),
        ])
    }
}

/// The intent model's folder here and its place in the test host's system
/// store, when this machine has it installed.
pub(crate) fn model_for_host() -> Option<(PathBuf, String)> {
    installed_model().map(|(dir, name)| (dir, format!("{SYSTEM_MODELS}/{name}")))
}

/// Writes the guest image as an ext4 disk into `run_dir`, printing the step.
pub(crate) fn image_disk_step(scenario: &str, image: &Path, run_dir: &Path) -> Result<PathBuf, ScenarioError> {
    let t = Instant::now();
    let disk = run_dir.join("guest-image.ext4");
    let disk_mib = image_disk(image, &disk)?;
    println!(
        "{scenario} step image-disk: {disk_mib} MiB ext4 of {} in {:.1} s",
        image.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(disk)
}

/// Step 1 of the nested scenarios that run the real guest: the host tools,
/// the guest image and the test host's packages.
pub(crate) struct Inputs {
    pub tools: HostTools,
    pub run_dir: PathBuf,
    pub image: PathBuf,
    pub manifest: rayos_image::Manifest,
    pub opts: BootOptions,
    pub nested: nested::Inputs,
}

/// Step 1: finds the host tools, prepares the guest image and gathers the
/// test host's packages.
pub(crate) fn prepare_step(scenario: &'static str, args: &VmmNativeArgs) -> Result<Inputs, ScenarioError> {
    let tools = HostTools::resolve(args)?;
    let t = Instant::now();
    let (run_dir, image, manifest) = guest_qemu::prepare_image(
        args.guest.image.as_deref(),
        args.guest.agent.as_deref(),
        args.run_dir.as_deref(),
        scenario,
    )?;
    let opts = boot_options(args, &run_dir);
    let nested = nested::gather(scenario, &[Vmm::Rayos], &opts).map_err(|e| chain(&e))?;
    println!("{scenario} step prepare (guest image, test host packages): {:.1} s", t.elapsed().as_secs_f64());
    Ok(Inputs { tools, run_dir, image, manifest, opts, nested })
}

/// Step 2: the test host image (`init`, the host tools, QEMU when given,
/// the intent model when this machine has it) at `<run dir>/host-initrd.cpio`.
pub(crate) fn host_image_step(
    scenario: &'static str,
    inputs: &Inputs,
    init: String,
    qemu: Option<&Path>,
    model: Option<&(PathBuf, String)>,
) -> Result<PathBuf, ScenarioError> {
    let t = Instant::now();
    let host_initrd = inputs.run_dir.join("host-initrd.cpio");
    let bytes = build_host_image(
        &inputs.nested,
        init,
        &host_initrd,
        &inputs.tools.binaries(&inputs.nested)?,
        qemu,
        model.map(|(d, dest)| (d.as_path(), dest.as_str())),
    )?;
    println!(
        "{scenario} step test-host-image: {:.1} MiB in {:.1} s",
        bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    Ok(host_initrd)
}

/// What a passing boot left besides its figures.
pub(crate) struct Booted {
    /// rayos-vmm's metrics line.
    pub metrics: Option<String>,
    pub wall: Duration,
}

/// Step 3: boots the test host (one retry after a guest crash) and
/// evaluates its serial console; a failure names the attempt and the logs.
/// Returns the figures, what else the boot left, and the attempts.
pub(crate) fn boot_step<F>(
    scenario: &'static str,
    prep: &Prepared,
    opts: &BootOptions,
    virtiofsd: &Path,
    disk: &Path,
    out: &Path,
    evaluate: impl Fn(&Observation) -> Result<F, ScenarioError>,
) -> Result<(F, Booted, u32), ScenarioError> {
    let (result, attempts) = nested::run_with_retry(
        scenario,
        Vmm::Rayos,
        || run_once(scenario, prep, opts, virtiofsd, disk, out, &evaluate),
        RunResult::failure,
    )?;
    let RunResult { figures, metrics, log, wall, .. } = result;
    match figures {
        Ok(f) => Ok((f, Booted { metrics, wall }, attempts)),
        Err(e) => {
            Err(format!("{e} (attempt {attempts}; serial log {}, test host logs in {})", log.display(), out.display())
                .into())
        }
    }
}

fn run_inner(args: &VmmNativeArgs) -> Result<String, ScenarioError> {
    let t_all = Instant::now();
    // 1. Host tools, guest image, test host kernel and busybox.
    let inputs = prepare_step(SCENARIO, args)?;
    let virtiofsd = &inputs.tools.virtiofsd;
    let (run_dir, opts) = (&inputs.run_dir, &inputs.opts);

    // 2. The test host image (with the intent model when this machine has it).
    let model = model_for_host();
    let plan = Plan { guest: GuestPlan::new(&inputs.manifest, args, model.is_some()), kvm_trace: args.kvm_trace };
    let host_initrd = host_image_step(SCENARIO, &inputs, host_init(&plan), None, model.as_ref())?;
    let disk = image_disk_step(SCENARIO, &inputs.image, run_dir)?;
    // Both are removed after a pass unless --keep-images.
    let prep = nested::prepared(&inputs.nested, opts, disk.clone(), host_initrd);
    let out = run_dir.join("out");

    // 3. Boot (with one retry after a guest crash).
    let (figures, result, attempts) = boot_step(SCENARIO, &prep, opts, virtiofsd, &disk, &out, |o| evaluate(o, &plan))?;
    for (step, s) in &figures.step_s {
        println!("{SCENARIO} step {step}: {s:.2} s");
    }
    if let Some(m) = &result.metrics {
        println!("{SCENARIO} rayos-vmm metrics {m}");
    }
    let window_check = match &figures.window {
        Some(w) => {
            println!("{SCENARIO} guest window: {w}");
            let img = Image::load(&out.join("guest-window.png")).map_err(|e| format!("window screenshot: {e}"))?;
            check_window_shot(&img, w, VM_RGB, "weston-simple-shm from the guest under rayos-vmm")
                .map_err(|e| e.to_string())?;
            println!(
                "{SCENARIO} screenshots: {} and {}",
                out.join("guest-window.png").display(),
                out.join("output.png").display()
            );
            format!(" native_window=1 window_app_id={} close_ok=1", w["app_id"].as_str().unwrap_or("?"))
        }
        None => {
            println!("{SCENARIO} not checked (--no-native): compositor, bridge, native window");
            " native_window=not-checked".to_string()
        }
    };
    let words_check = match (&figures.words_launch, &figures.terminal) {
        (Some(l), Some(t)) => {
            println!("{SCENARIO} \"{WORDS_REQUEST}\": {l}");
            println!("{SCENARIO} terminal window: {t}");
            let img = Image::load(&out.join("terminal-window.png")).map_err(|e| format!("terminal screenshot: {e}"))?;
            check_window_shot(&img, t, VM_RGB, "the guest terminal under rayos-vmm").map_err(|e| e.to_string())?;
            let s = |n: &str| figures.step_s.iter().find(|(s, _)| s == n).map(|(_, s)| *s).unwrap_or(f64::NAN);
            format!(
                " words_launched={} words_to_window_s={:.1} intent_ms={:.0}",
                l["launched"].as_str().unwrap_or("?"),
                s("words") + s("terminal"),
                l["intent_ms"].as_f64().unwrap_or(f64::NAN)
            )
        }
        _ if plan.guest.native => {
            println!(
                "{SCENARIO} not checked: \"{WORDS_REQUEST}\" (the intent model {} is not installed here: rayos models install)",
                rayos::models::DEFAULT_MODEL
            );
            " words=not-checked".to_string()
        }
        _ => String::new(),
    };
    let vmm_log = std::fs::read_to_string(out.join("rayos-vmm.log")).unwrap_or_default();
    let gpu_check = gpu_figures(plan.guest.gpu, result.metrics.as_deref(), &vmm_log)?;
    println!(
        "{SCENARIO} not checked here (see `rayos-smoke native`): typing, shared folders, clipboard, frame rate, the app's exit after its window closed"
    );
    nested::remove_images(&prep, args.keep_images);
    let wall = t_all.elapsed().as_secs_f64();
    println!("{SCENARIO} wall_s={wall:.1} run_dir={}", run_dir.display());
    let step = |n: &str| figures.step_s.iter().find(|(s, _)| s == n).map(|(_, s)| *s).unwrap_or(f64::NAN);
    Ok(format!(
        "boot_to_agent_s={:.1} catalog_ok=1 exit3_ok=1{window_check}{words_check}{gpu_check} poweroff_s={:.1} vmm_exit=0 test_host_wall_s={:.1} attempts={attempts}",
        figures.boot_to_agent_s,
        step("poweroff"),
        result.wall.as_secs_f64(),
    ))
}

/// Writes an ext4 file system holding the guest image directory to `disk`
/// (sparse, no journal), sized with room for the guest's writes; returns its
/// size in MiB.
///
/// The test host gets the image as this virtio-blk disk rather than over
/// virtio-fs: its virtiofsd, exporting a virtio-fs mount of the outer host's
/// directory to the guest, made the guest's switch_root fail with ESTALE on
/// /sbin/rayos-init (with the outer export's metadata cached for good, too).
/// A disk is also what a RayOS host's guest storage will be.
pub(crate) fn image_disk(image: &Path, disk: &Path) -> Result<u64, ScenarioError> {
    let du = Command::new("du").arg("-sm").arg(image).output().map_err(|e| format!("cannot run du: {e}"))?;
    let used: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("du -sm {}: {}", image.display(), String::from_utf8_lossy(&du.stderr).trim()))?;
    let mib = used + used / 4 + 512;
    let _ = std::fs::remove_file(disk);
    let out = Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-O", "^has_journal", "-L", "rayos-image", "-F", "-d"])
        .arg(image)
        .arg(disk)
        .arg(format!("{mib}M"))
        .output()
        .map_err(|e| format!("cannot run mke2fs (e2fsprogs): {e}"))?;
    if !out.status.success() {
        return Err(
            format!("mke2fs -d {} failed: {}", image.display(), String::from_utf8_lossy(&out.stderr).trim()).into()
        );
    }
    Ok(mib)
}

pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// The default intent model's folder in this machine's model store, if it
/// is installed, and its name.
pub(crate) fn installed_model() -> Option<(PathBuf, String)> {
    use rayos::models::{find, InstallState, ModelStore, DEFAULT_MODEL};
    let spec = find(DEFAULT_MODEL)?;
    let store = ModelStore::open_default();
    matches!(store.state(&spec), InstallState::Installed).then(|| (store.model_dir(&spec), spec.name.clone()))
}

/// Adds the files under `dir` (recursively) at `dest`.
fn add_tree(a: &mut rayos_image::cpio::Archive, dir: &Path, dest: &str) -> Result<(), ScenarioError> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = e.path();
        let to = format!("{dest}/{}", e.file_name().to_string_lossy());
        if path.is_dir() {
            add_tree(a, &path, &to)?;
        } else {
            a.file_from_host(&to, &path, Some(0o644)).map_err(|x| chain(&x))?;
        }
    }
    Ok(())
}

pub(crate) fn build_host_image(
    inputs: &nested::Inputs,
    init: String,
    out: &Path,
    binaries: &[(&Path, &str)],
    qemu: Option<&Path>,
    model: Option<(&Path, &str)>,
) -> Result<u64, ScenarioError> {
    let e = |e: testhost::TestHostError| chain(&e);
    let tree = &inputs.kernel.modules;
    let applets = testhost::busybox_applets(&inputs.busybox).map_err(e)?;
    let mut a = testhost::base_archive(&inputs.busybox, &applets).map_err(e)?;
    a.file_bytes("/init", init, 0o755).map_err(|x| chain(&x))?;
    let kmod = |x: rayos_image::kmod::KmodError| chain(&x);
    for (list, roots) in [
        ("amd", &["kvm-amd"][..]),
        ("intel", &["kvm-intel"][..]),
        ("fs", &["virtio_pci", "virtiofs", "virtio_blk", "crc32c_generic", "ext4"][..]),
    ] {
        let order = tree.load_order(roots).map_err(kmod)?;
        testhost::add_modules(&mut a, tree, &order, &format!("{MODULE_LIST_DIR}/modules-{list}")).map_err(e)?;
    }
    for (bin, dest) in binaries {
        let n = testhost::add_binary_with_libs(&mut a, bin, dest).map_err(e)?;
        tracing::info!("test host: {} as {dest} with {n} shared libraries", bin.display());
    }
    if let Some(qemu) = qemu {
        let n = testhost::add_qemu(&mut a, qemu).map_err(e)?;
        tracing::info!("test host: {} with {n} shared libraries and its firmware", qemu.display());
    }
    if let Some((dir, dest)) = model {
        add_tree(&mut a, dir, dest)?;
        tracing::info!("test host: intent model {} as {dest}", dir.display());
    }
    Ok(a.write_file(out).map_err(|x| chain(&x))?)
}

pub(crate) struct RunResult<F> {
    pub figures: Result<F, ScenarioError>,
    pub vmm_exit: Option<i32>,
    /// The test host's kernel panicked (TCG's nested SVM under load), it
    /// reset itself without a word (QEMU exited 0 before the test host said
    /// it was done or had failed), or it stalled until the timeout (see
    /// [`Observation::stalled_host`]): retried like a guest crash.
    pub host_panic: Option<String>,
    pub reference_crash: Option<String>,
    /// rayos-vmm stopped on a KVM internal error (its log line).
    pub internal_error: Option<String>,
    /// The nested guest went silent while a step waited for it.
    pub guest_stall: Option<String>,
    pub metrics: Option<String>,
    pub log: PathBuf,
    pub wall: Duration,
}

impl<F> RunResult<F> {
    /// The failure of this boot for [`nested::run_with_retry`] (a guest
    /// crash or a panic of the test host's kernel is retried once).
    pub fn failure(&self) -> Option<nested::Failure> {
        self.figures.as_ref().err().map(|e| nested::Failure {
            reason: e.to_string(),
            log: self.log.clone(),
            guest_crash: nested::guest_crash(Vmm::Rayos, self.vmm_exit)
                .or_else(|| {
                    self.host_panic.as_ref().map(|p| format!("the test host itself failed ({p}), not rayos-vmm"))
                })
                .or_else(|| {
                    self.reference_crash
                        .as_ref()
                        .map(|c| format!("the QEMU reference's guest failed ({c}), not rayos-vmm's"))
                })
                .or_else(|| {
                    // Seen only inside the TCG-emulated test host, whose KVM
                    // gave up emulating a guest instruction; retried and
                    // counted while its cause is open (issue 14). The line
                    // holds KVM's suberror, data words and the CPU state.
                    self.internal_error.as_ref().map(|l| {
                        format!("the test host's KVM stopped the guest with an internal error ({l}); cause open")
                    })
                })
                .or_else(|| self.guest_stall.clone()),
        })
    }
}

/// One boot of the test host, with the outer virtiofsd exports around it;
/// `evaluate` turns what its serial console said into the figures.
pub(crate) fn run_once<F>(
    scenario: &str,
    prep: &Prepared,
    opts: &BootOptions,
    virtiofsd: &Path,
    disk: &Path,
    out: &Path,
    evaluate: impl Fn(&Observation) -> Result<F, ScenarioError>,
) -> Result<RunResult<F>, ScenarioError> {
    // A retry keeps the first attempt's test host logs beside its serial log.
    if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        let kept = out.with_extension("attempt1");
        if let Err(e) = std::fs::rename(out, &kept) {
            tracing::warn!("cannot keep {} as {}: {e}", out.display(), kept.display());
        }
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let run_dir = &prep.run_dir;
    let mut procs = Procs::default();
    // The output folder, the one export of the outer host.
    let mut devices = Vec::new();
    {
        let (tag, dir) = (OUT_TAG, out);
        let sock = run_dir.join(format!("{tag}.sock"));
        let _ = std::fs::remove_file(&sock);
        let log = run_dir.join(format!("virtiofsd-{tag}.log"));
        let f = || std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()));
        let child = Command::new(virtiofsd)
            .arg("--shared-dir")
            .arg(dir)
            .arg("--socket-path")
            .arg(&sock)
            .args(["--sandbox", "chroot", "--cache", "auto"])
            .stdin(Stdio::null())
            .stdout(f()?)
            .stderr(f()?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", virtiofsd.display()))?;
        procs.0.push((format!("virtiofsd-{tag}"), child));
        devices.push((tag, sock));
    }
    let end = Instant::now() + Duration::from_secs(20);
    while !devices.iter().all(|(_, s)| s.exists()) {
        if let Some((n, st)) = procs.first_exited() {
            return Err(format!("{n} (outer host) exited with {st}; see its log in {}", run_dir.display()).into());
        }
        if Instant::now() > end {
            return Err("the outer virtiofsd sockets did not appear within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut cmd = nested::outer_command(prep, opts, Vmm::Rayos, false);
    cmd.arg("-drive")
        .arg(format!("file={},if=none,id=image,format=raw,cache=unsafe", disk.display()))
        .args(["-device", "virtio-blk-pci,drive=image"]);
    cmd.args([
        "-object",
        &format!("memory-backend-memfd,id=mem,size={}M,share=on", opts.host_memory_mib),
        "-numa",
        "node,memdev=mem",
    ]);
    for (i, (tag, sock)) in devices.iter().enumerate() {
        cmd.arg("-chardev")
            .arg(format!("socket,id=vfs{i},path={}", sock.display()))
            .args(["-device", &format!("vhost-user-fs-pci,queue-size=1024,chardev=vfs{i},tag={tag}")]);
    }
    let log = run_dir.join("serial-rayos.log");
    println!("{scenario}: booting the test host (timeout {:?}); serial log {}", opts.timeout, log.display());
    let mut obs = Observation::default();
    let mut last_step = String::new();
    let outcome = qemu::run_captured(cmd, &log, opts.timeout, |t, line| {
        obs.observe(t, line);
        if let Some((s, _)) = obs.started.last() {
            if *s != last_step {
                last_step = s.clone();
                tracing::info!("test host step {s} at {:.1} s", t.as_secs_f64());
            }
        }
        if obs.done {
            Flow::Finished
        } else {
            Flow::Continue
        }
    })
    .map_err(|e| chain(&e))?;
    drop(procs);
    if !obs.done
        && obs.host_fail.is_none()
        && obs.host_panic.is_none()
        && !outcome.timed_out
        && outcome.status.is_some_and(|s| s.success())
    {
        let step = obs.started.last().map(|(s, _)| s.as_str()).unwrap_or("start-up");
        let why = format!(
            "the test host reset itself during step {step} with no panic message (a triple fault: QEMU exited 0 under -no-reboot at {:.1} s)",
            outcome.elapsed.as_secs_f64()
        );
        println!("{scenario}: {why}");
        obs.host_panic = Some(why);
    }
    if outcome.timed_out && obs.host_panic.is_none() {
        if let Some(why) = obs.stalled_host(opts.timeout) {
            println!("{scenario}: {why}");
            obs.host_panic = Some(why);
        }
    }
    let run = nested::HostRun { outcome, log: log.clone() };
    let figures = evaluate(&obs).map_err(|r| {
        let mut r = run.annotate(r.to_string(), opts.timeout);
        if !obs.diag.is_empty() {
            r.push_str("\n  ");
            r.push_str(&obs.diag.join("\n  "));
        }
        ScenarioError::from(r)
    });
    let guest_stall = obs.stalled_guest();
    Ok(RunResult {
        figures,
        vmm_exit: obs.vmm_exit,
        host_panic: obs.host_panic,
        reference_crash: obs.reference_crash,
        internal_error: obs.diag.iter().find(|l| l.contains("KVM internal error")).cloned(),
        guest_stall,
        metrics: obs.metrics,
        log,
        wall: run.outcome.elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(native: bool) -> Plan {
        Plan {
            guest: GuestPlan {
                cmdline: "console=ttyS0 rayos.root=rootfs panic=-1".into(),
                memory_mib: 1024,
                cpus: 2,
                vmlinuz: "vmlinuz".into(),
                initramfs: "initramfs.cpio.gz".into(),
                rootfs: "rootfs".into(),
                native,
                words: native,
                boot_timeout: Duration::from_secs(300),
                window_timeout: Duration::from_secs(120),
                vmm_log: None,
                gpu: false,
                desktop: false,
            },
            kvm_trace: false,
        }
    }

    #[test]
    fn gpu_figures_come_from_the_metrics() {
        assert_eq!(gpu_figures(false, None, "").unwrap(), "");
        let log = "gpu0: activated\nkeyboard0: activated\ntablet0: activated\n";
        let m = r#"{"first_run_monotonic_ns":1,"rss_anon_kib":1,"rss_file_kib":1,"rss_shmem_kib":1,"exit":"poweroff","gpu":{"scanout":[1280,800],"requests":487,"refused":0,"transfers":240,"transfer_bytes":983040000,"flushes":240}}"#;
        let f = gpu_figures(true, Some(m), log).unwrap();
        assert!(
            f.contains("gpu_scanout=1280x800 gpu_requests=487 gpu_transfers=240 gpu_transfer_mib=938 gpu_flushes=240"),
            "{f}"
        );
        let refused = m.replace(r#""refused":0"#, r#""refused":2"#);
        assert!(gpu_figures(true, Some(&refused), log).unwrap_err().to_string().contains("refused 2 of"));
        let none = m.replace("[1280,800]", "null");
        assert!(gpu_figures(true, Some(&none), log).unwrap_err().to_string().contains("scanout is None"));
        assert!(gpu_figures(true, None, log).is_err());
        let plain =
            r#"{"first_run_monotonic_ns":1,"rss_anon_kib":1,"rss_file_kib":1,"rss_shmem_kib":1,"exit":"poweroff"}"#;
        assert!(gpu_figures(true, Some(plain), log).unwrap_err().to_string().contains("no gpu figures"));
    }

    #[test]
    fn host_init_is_fully_substituted() {
        let s = host_init(&plan(true));
        crate::script::assert_sh_parses(&s);
        assert!(s.contains("load_kvm() {") && s.contains("\nload_kvm\n") && s.contains("start_compositor $RT"));
        // No `@NAME@` placeholder is left.
        let b = s.as_bytes();
        for (i, _) in s.match_indices('@') {
            let word: String = s[i + 1..].chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
            assert!(word.is_empty() || b.get(i + 1 + word.len()) != Some(&b'@'), "placeholder @{word}@ left");
        }
        assert!(s.contains("--cmdline 'console=ttyS0 rayos.root=rootfs panic=-1' --memory 1024M --cpus 2"));
        assert!(s.contains("--vhost-user virtio-id=19,socket=/run/vhost-vsock.sock \\\n"));
        assert!(s.contains("--fs tag=rootfs,socket=/run/fs.sock"));
        assert!(s.contains("if [ \"1\" = 1 ]; then"));
        assert!(host_init(&plan(false)).contains("if [ \"0\" = 1 ]; then"));
        assert!(s.contains("echo RAYOS-VMM-START\n"));
        assert!(!s.contains("tracefs"));
        let traced = host_init(&Plan { kvm_trace: true, ..plan(true) });
        assert!(traced.contains("mount -t tracefs nodev $T"));
        assert!(traced.contains("echo RAYOS-KVM-TRACE-BEGIN"));
    }

    #[test]
    fn the_desktop_plan_runs_the_compositor_first_and_shows_the_display_on_its_socket() {
        let mut p = plan(false);
        p.guest.gpu = true;
        p.guest.desktop = true;
        let s = host_init(&p);
        crate::script::assert_sh_parses(&s);
        assert!(s.contains("--gpu wayland=/run/rayos/rayos-desktop-linux,width=1024,height=640 "));
        let compositor = s.find("start_compositor $RT").unwrap();
        assert!(compositor < s.find("/usr/bin/rayos-vmm --kernel").unwrap(), "the compositor starts before the VMM");
        assert!(s.contains(r#"\"width\":960,\"height\":600"#));
        assert!(s.contains("grep -qx 960x600"));
        assert_eq!(
            p.steps(),
            ["backends", "compositor", "agent", "catalog", "exit3", "desktop", "click", "typed", "resize", "poweroff"]
        );
    }

    fn obs(lines: &[&str]) -> Observation {
        let mut o = Observation::default();
        for (i, l) in lines.iter().enumerate() {
            o.observe(Duration::from_secs(i as u64), l);
        }
        o
    }

    #[test]
    fn evaluation_needs_every_step_and_a_clean_exit() {
        let base = [
            "RAYOS-VN-STEP backends",
            "RAYOS-VN-OK backends up",
            "RAYOS-VMM-START",
            "RAYOS-VN-STEP vmm",
            "RAYOS-VN-OK agent rayos-guest-agent answered",
            "RAYOS-VN-STEP catalog",
            "RAYOS-VN-OK catalog 12 apps",
            "RAYOS-VN-STEP exit3",
            "RAYOS-VN-OK exit3 status 3",
            "RAYOS-VN-STEP poweroff",
            "RAYOS-VMM-EXIT status=0",
            "RAYOS-VN-OK poweroff rayos-vmm exited 0",
            "RAYOS-VN-DONE",
        ];
        let o = obs(&base);
        assert!(o.done);
        let f = evaluate(&o, &plan(false)).unwrap();
        assert_eq!(f.boot_to_agent_s, 2.0);
        assert_eq!(f.step_s.len(), 5);
        // Native steps missing.
        assert!(evaluate(&o, &plan(true)).unwrap_err().to_string().contains("step compositor"));
        // A failure names the step it happened in.
        let o = obs(&[
            "RAYOS-VN-STEP backends",
            "RAYOS-VN-OK backends up",
            "RAYOS-VMM-START",
            "RAYOS-VN-STEP vmm",
            "RAYOS-VMM-EXIT status=4",
            "RAYOS-HOST-FAIL rayos-vmm exited (4) while waiting for the agent",
        ]);
        assert_eq!(o.vmm_exit, Some(4));
        assert_eq!(
            evaluate(&o, &plan(false)).unwrap_err().to_string(),
            "step vmm: rayos-vmm exited (4) while waiting for the agent"
        );
        let mut bad_exit = base.to_vec();
        bad_exit[10] = "RAYOS-VMM-EXIT status=1";
        assert!(evaluate(&obs(&bad_exit), &plan(false)).unwrap_err().to_string().contains("exited with 1"));
    }

    #[test]
    fn words_must_launch_a_terminal_with_a_vm_window() {
        let vm_window =
            r#"{"id":2,"app_id":"org.freedesktop.weston.wayland-terminal","origin":{"kind":"vm","name":"linux"}}"#;
        let lines = |launched: &str, terminal: &str| {
            let mut l: Vec<String> = [
                "RAYOS-VN-STEP backends",
                "RAYOS-VN-OK backends up",
                "RAYOS-VMM-START",
                "RAYOS-VN-OK agent ok",
                "RAYOS-VN-STEP catalog",
                "RAYOS-VN-OK catalog ok",
                "RAYOS-VN-STEP exit3",
                "RAYOS-VN-OK exit3 ok",
                "RAYOS-VN-STEP compositor",
                "RAYOS-VN-OK compositor ok",
                "RAYOS-VN-STEP bridge",
                "RAYOS-VN-OK bridge ok",
                "RAYOS-VN-STEP launch",
                "RAYOS-VN-OK launch {}",
                "RAYOS-VN-STEP window",
                r#"RAYOS-VN-WINDOW {"id":1,"origin":{"kind":"vm","name":"linux"}}"#,
                "RAYOS-VN-OK window ok",
                "RAYOS-VN-STEP close",
                "RAYOS-VN-OK close ok",
                "RAYOS-VN-STEP words",
            ]
            .map(String::from)
            .to_vec();
            l.push(format!(r#"RAYOS-VN-OK words {{"launched":"{launched}","intent_ms":5.0,"native_window":true}}"#));
            l.push("RAYOS-VN-STEP terminal".into());
            l.push(format!("RAYOS-VN-TERMINAL {terminal}"));
            l.extend(
                [
                    "RAYOS-VN-OK terminal ok",
                    "RAYOS-VN-STEP poweroff",
                    "RAYOS-VMM-EXIT status=0",
                    "RAYOS-VN-OK poweroff ok",
                ]
                .map(String::from),
            );
            l
        };
        let run = |l: Vec<String>| evaluate(&obs(&l.iter().map(String::as_str).collect::<Vec<_>>()), &plan(true));
        let f = run(lines("weston-terminal.desktop", vm_window)).unwrap();
        assert_eq!(f.words_launch.unwrap()["launched"], "weston-terminal.desktop");
        assert_eq!(f.step_s.len(), 12);
        assert!(run(lines("firefox.desktop", vm_window)).unwrap_err().to_string().contains("not a terminal"));
        let host_window = r#"{"id":2,"app_id":"foot","origin":{"kind":"host"}}"#;
        assert!(run(lines("foot.desktop", host_window)).unwrap_err().to_string().contains("origin is not VM linux"));
    }

    #[test]
    fn a_kvm_internal_error_is_retried_and_a_failed_check_is_not() {
        let run = |internal: Option<&str>| RunResult::<u32> {
            figures: Err("step desktop did not pass".into()),
            vmm_exit: Some(1),
            host_panic: None,
            reference_crash: None,
            internal_error: internal.map(str::to_string),
            guest_stall: None,
            metrics: None,
            log: PathBuf::from("serial.log"),
            wall: Duration::from_secs(1),
        };
        let f = run(Some("vmm| KVM internal error: suberror 1, data [0]")).failure().unwrap();
        assert!(f.guest_crash.unwrap().contains("suberror 1"));
        assert_eq!(run(None).failure().unwrap().guest_crash, None, "a VMM error of its own is final");
    }

    #[test]
    fn a_stalled_test_host_is_told_from_a_failing_step() {
        let timeout = Duration::from_secs(600);
        let mut o = Observation::default();
        o.observe(Duration::from_secs(100), "RAYOS-VN-STEP desktop");
        let why = o.stalled_host(timeout).expect("silent for 500 s");
        assert!(why.contains("went silent at 100 s") && why.contains("500 s"), "{why}");
        // Still talking near the timeout: not a stall.
        o.observe(Duration::from_secs(590), "some guest line");
        assert_eq!(o.stalled_host(timeout), None);
        // The kernel's own stall report counts even while it talks.
        o.observe(
            Duration::from_secs(595),
            "[  512.1] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [rayos-vmm:88]",
        );
        assert!(o.stalled_host(timeout).unwrap().contains("soft lockup"));
        // A step that failed with its own message is the scenario's failure.
        o.observe(Duration::from_secs(596), "RAYOS-HOST-FAIL step desktop timed out");
        assert_eq!(o.stalled_host(timeout), None);
    }

    #[test]
    fn a_silent_guest_is_a_stall_and_a_talking_one_is_not() {
        let fail = "RAYOS-HOST-FAIL the guest agent on vsock port 5252: not within 180 s";
        let o = obs(&[fail, "RAYOS-VN-DIAG guest console silent for 166 s (431 lines)"]);
        assert_eq!(o.guest_silent_s, Some(166));
        assert!(o.stalled_guest().unwrap().contains("said nothing for 166 s"));
        let o = obs(&[fail, "RAYOS-VN-DIAG guest console silent for 3 s (431 lines)"]);
        assert_eq!(o.stalled_guest(), None, "a guest still printing failed on its own");
        let o = obs(&[
            "RAYOS-HOST-FAIL foot.desktop is not among the VM's apps",
            "RAYOS-VN-DIAG guest console silent for 500 s (9 lines)",
        ]);
        assert_eq!(o.stalled_guest(), None, "a failed check is not a stall");
    }

    #[test]
    fn a_test_host_panic_is_named() {
        let o = obs(&[
            "RAYOS-VN-STEP words",
            "[   70.28] Kernel panic - not syncing: corrupted stack end detected inside scheduler",
        ]);
        assert_eq!(o.host_panic.as_deref(), Some("corrupted stack end detected inside scheduler"));
        assert!(evaluate(&o, &plan(true)).unwrap_err().to_string().starts_with("step words: the test host failed"));
    }

    #[test]
    fn window_marker_is_parsed() {
        let o = obs(&[
            r#"RAYOS-VN-WINDOW {"id":3,"app_id":"weston-simple-shm","origin":{"kind":"vm","name":"linux"},"first_content_ms":5.0}"#,
        ]);
        assert_eq!(o.window.unwrap()["origin"]["name"], "linux");
    }
}
