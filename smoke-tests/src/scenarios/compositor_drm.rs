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

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::nested::{self, NestedError};
use crate::cli::{BootOptions, CompositorDrmArgs};
use crate::initramfs::Archive;
use crate::kmod::ModuleTree;
use crate::qemu::{self, Accel, AccelProbe, Flow};
use crate::testhost::{self, sh_quote, TestHostError, MODULE_DIR, MODULE_LIST_DIR};
use crate::Outcome;

pub const SCENARIO: &str = "compositor-drm";

// ---- markers printed by the test host's /init ------------------------------

pub const MARK_INIT: &str = "RAYOS-DRM-INIT";
pub const MARK_FAIL: &str = "RAYOS-DRM-FAIL ";
pub const MARK_CONNECTOR: &str = "RAYOS-DRM-CONNECTOR ";
pub const MARK_INPUT: &str = "RAYOS-DRM-INPUT ";
pub const MARK_COMPOSITOR_START: &str = "RAYOS-DRM-COMPOSITOR-START";
pub const MARK_COMPOSITOR_EXIT: &str = "RAYOS-DRM-COMPOSITOR-EXIT status=";
pub const MARK_INPUT_OPEN: &str = "RAYOS-DRM-INPUT-OPEN";
pub const MARK_READY: &str = "RAYOS-DRM-READY";
pub const MARK_CLIENT_EXIT: &str = "RAYOS-DRM-CLIENT-EXIT status=";

// ---- paths inside the test host --------------------------------------------

const COMPOSITOR: &str = "/usr/bin/rayos-compositor";
const CLIENT: &str = "/usr/bin/weston-simple-shm";
const UDEVADM: &str = "/usr/bin/udevadm";
const UDEVD: &str = "/lib/systemd/systemd-udevd";
const SOCKET_DIR: &str = "/run/rayos";
const SOCKET: &str = "rayos-host";
const CONTROL: &str = "/run/rayos/ctl.sock";
const MODULE_LIST: &str = "modules-display";

/// Kernel modules: the KMS driver of `-device bochs-display`, evdev (libinput
/// reads `/dev/input/event*`) and the virtio-pci input devices.
pub const MODULES: &[&str] = &["bochs", "evdev", "virtio_pci", "virtio_input"];

/// udev rules that give input devices their `ID_INPUT*` properties (libinput
/// ignores devices without `ID_INPUT`), evdev/mouse hwdb fixes, and the DRM
/// device's properties. Looked up in [`UDEV_RULE_DIRS`].
pub const UDEV_RULES: &[&str] = &[
    "50-udev-default.rules",
    "60-drm.rules",
    "60-evdev.rules",
    "60-input-id.rules",
    "60-persistent-input.rules",
    "70-mouse.rules",
    "70-touchpad.rules",
];
const UDEV_RULE_DIRS: &[&str] = &["/lib/udev/rules.d", "/usr/lib/udev/rules.d"];
const HWDB: &[&str] = &["/lib/udev/hwdb.bin", "/usr/lib/udev/hwdb.bin", "/etc/udev/hwdb.bin"];
/// Data libinput and xkbcommon read at run time.
const DATA_DIRS: &[&str] = &["/usr/share/X11/xkb", "/usr/share/libinput"];

// ---- what the capture must show --------------------------------------------

/// The compositor's background, `[0.12, 0.13, 0.16]` scaled to 8 bits.
pub const BACKGROUND_RGB: [u8; 3] = [31, 33, 41];
/// The host origin's decoration colour.
pub const HOST_RGB: [u8; 3] = [0x1f, 0x6f, 0xeb];
/// Per-channel tolerance when matching a colour.
pub const TOLERANCE: u8 = 6;
/// Decoration layout of the compositor.
pub const TITLE_H: u32 = 28;
pub const BORDER: u32 = 4;
pub const PAD: u32 = 4;
pub const BUTTON: u32 = TITLE_H - 2 * PAD;
/// weston-simple-shm's fixed buffer size.
pub const CLIENT_W: u32 = 250;
pub const CLIENT_H: u32 = 250;
/// Share of the client area that must not be background.
const MIN_CLIENT_SHARE: f64 = 0.5;
/// Share of the title bar that must be the host colour (the label covers some).
const MIN_TITLE_SHARE: f64 = 0.5;
/// Share of the whole capture that must be background.
const MIN_BACKGROUND_SHARE: f64 = 0.5;
/// Client pixels that must change between two captures one second apart.
const MIN_CHANGED_PIXELS: usize = 500;
/// Host-colour pixels tolerated once the window is closed.
const MAX_HOST_PIXELS_AFTER_CLOSE: usize = 16;
/// Interval between captures while waiting for a state.
pub const POLL: Duration = Duration::from_millis(500);
/// Largest absolute axis value of QMP `input-send-event`.
const ABS_MAX: u32 = 0x7fff;

/// Errors that stop the scenario.
#[derive(Debug, thiserror::Error)]
pub enum DrmError {
    #[error(transparent)]
    Nested(#[from] NestedError),
    #[error(transparent)]
    TestHost(#[from] TestHostError),
    #[error(transparent)]
    Initramfs(#[from] crate::initramfs::InitramfsError),
    #[error(transparent)]
    Kmod(#[from] crate::kmod::KmodError),
    #[error(transparent)]
    Qemu(#[from] crate::qemu::QemuError),
    #[error("{what} not found at {path} ({hint})")]
    Missing { what: &'static str, path: PathBuf, hint: &'static str },
    #[error("{program} not found on PATH ({hint})")]
    NoProgram { program: String, hint: &'static str },
    #[error("udev rule {rule} not found in {dirs:?}")]
    NoRule { rule: String, dirs: &'static [&'static str] },
    #[error("cannot read directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad --size {0:?}: expected WxH, e.g. 1280x800")]
    BadSize(String),
}

// ---- the test host's /init ---------------------------------------------------

/// What the test host's `/init` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSpec {
    /// `RUST_LOG` of the compositor (empty: its default).
    pub compositor_log: String,
    /// How long the init waits for the compositor's Wayland socket.
    pub socket_timeout: Duration,
}

/// The test host's `/init`.
pub fn init_script(spec: &InitSpec) -> String {
    let log = if spec.compositor_log.is_empty() {
        String::new()
    } else {
        format!("RUST_LOG={} ", sh_quote(&spec.compositor_log))
    };
    let tries = (spec.socket_timeout.as_millis() / 100).max(1);
    format!(
        r#"#!/bin/busybox sh
# RayOS compositor-drm test host init, generated by rayos-smoke (compositor_drm.rs).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
echo {init}
fail() {{ echo "{fail}$*"; poweroff -f; sleep 60; }}
for m in $(cat {list_dir}/{list}); do
    insmod {module_dir}/$m.ko || fail "insmod $m.ko failed"
done
{udevd} --daemon || fail "systemd-udevd did not start"
udevadm trigger --action=add --type=subsystems
udevadm trigger --action=add --type=devices
udevadm settle --timeout=120 || fail "udevadm settle timed out"
[ -c /dev/dri/card0 ] || fail "no /dev/dri/card0 after loading the display driver"
for c in /sys/class/drm/card*-*; do
    [ -e "$c/status" ] || continue
    echo "{connector}${{c##*/}} status=$(cat $c/status) modes=$(tr '\n' ',' < $c/modes)"
done
tagged=0
for e in /dev/input/event*; do
    [ -c "$e" ] || continue
    props=$(udevadm info --query=property --name=$e | grep -E '^(NAME|ID_INPUT[A-Z_]*)=' | tr '\n' ' ')
    echo "{input}$e $props"
    case "$props" in *ID_INPUT=1*) tagged=$((tagged+1)); nodes="$nodes $e" ;; esac
done
[ $tagged -gt 0 ] || fail "no input device tagged ID_INPUT=1 by udev"
mkdir -p {socket_dir}
chmod 700 {socket_dir}
echo {compositor_start}
( LIBSEAT_BACKEND=builtin XDG_RUNTIME_DIR={socket_dir} {log}{compositor} --backend drm --socket-dir {socket_dir} --control {control} </dev/null
  s=$?; echo $s > /tmp/compositor.status; echo "{compositor_exit}$s" ) &
i=0
while [ ! -S {socket_dir}/{socket} ]; do
    [ -e /tmp/compositor.status ] && fail "the compositor exited with status $(cat /tmp/compositor.status) before its Wayland socket appeared"
    i=$((i+1))
    [ $i -gt {tries} ] && fail "no Wayland socket {socket_dir}/{socket} after {secs} s"
    sleep 0.1
done
( XDG_RUNTIME_DIR={socket_dir} WAYLAND_DISPLAY={socket} {client} </dev/null
  echo "{client_exit}$?" ) &
# Input events sent before libinput opened a device would be lost: wait until
# a process (the compositor) holds every tagged event node open.
for e in $nodes; do
    i=0
    until ls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -q " -> $e\$"; do
        [ -e /tmp/compositor.status ] && fail "the compositor exited with status $(cat /tmp/compositor.status)"
        i=$((i+1))
        [ $i -gt {tries} ] && fail "the compositor did not open $e within {secs} s"
        sleep 0.1
    done
done
echo "{input_open}$nodes"
echo {ready}
# The host side captures the scanout and sends input through QMP, then quits QEMU.
while :; do sleep 3600; done
"#,
        init = MARK_INIT,
        fail = MARK_FAIL,
        list_dir = MODULE_LIST_DIR,
        list = MODULE_LIST,
        module_dir = MODULE_DIR,
        udevd = UDEVD,
        connector = MARK_CONNECTOR,
        input = MARK_INPUT,
        socket_dir = SOCKET_DIR,
        socket = SOCKET,
        control = CONTROL,
        compositor = COMPOSITOR,
        compositor_start = MARK_COMPOSITOR_START,
        compositor_exit = MARK_COMPOSITOR_EXIT,
        client = CLIENT,
        client_exit = MARK_CLIENT_EXIT,
        ready = MARK_READY,
        input_open = MARK_INPUT_OPEN,
        secs = spec.socket_timeout.as_secs(),
    )
}

// ---- the test host image ---------------------------------------------------

/// Host files that go into the test host image.
#[derive(Debug)]
pub struct ImageInputs<'a> {
    pub busybox: &'a Path,
    pub modules: &'a ModuleTree,
    pub compositor: &'a Path,
    pub client: &'a Path,
    pub udevadm: &'a Path,
    pub udevd: &'a Path,
    pub init: String,
}

/// Adds a host directory tree at the same path (symlinks kept as symlinks).
fn add_tree(a: &mut Archive, dir: &Path) -> Result<usize, DrmError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DrmError::ReadDir { path: dir.to_path_buf(), source })?;
    let mut n = 0;
    for entry in entries {
        let entry = entry.map_err(|source| DrmError::ReadDir { path: dir.to_path_buf(), source })?;
        let path = entry.path();
        let dest = path.to_string_lossy().into_owned();
        let meta =
            std::fs::symlink_metadata(&path).map_err(|source| DrmError::ReadDir { path: path.clone(), source })?;
        if meta.file_type().is_symlink() {
            let target =
                std::fs::read_link(&path).map_err(|source| DrmError::ReadDir { path: path.clone(), source })?;
            a.symlink(&dest, &target.to_string_lossy())?;
        } else if meta.is_dir() {
            a.dir(&dest, 0o755)?;
            n += add_tree(a, &path)?;
        } else if meta.is_file() {
            a.file_from_host(&dest, &path, Some(0o644))?;
            n += 1;
        }
    }
    Ok(n)
}

fn find_first(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Writes the test host initramfs; returns its size and the module load order.
pub fn build_image(inputs: &ImageInputs<'_>, out: &Path) -> Result<(u64, Vec<String>), DrmError> {
    let applets = testhost::busybox_applets(inputs.busybox)?;
    let mut a = testhost::base_archive(inputs.busybox, &applets)?;
    a.file_bytes("/init", inputs.init.clone(), 0o755)?;
    let order = inputs.modules.load_order(MODULES)?;
    testhost::add_modules(&mut a, inputs.modules, &order, &format!("{MODULE_LIST_DIR}/{MODULE_LIST}"))?;
    for (binary, dest) in [(inputs.compositor, COMPOSITOR), (inputs.client, CLIENT), (inputs.udevadm, UDEVADM)] {
        let n = testhost::add_binary_with_libs(&mut a, binary, dest)?;
        tracing::info!("test host: {} as {dest} with {n} shared libraries", binary.display());
    }
    // systemd-udevd is udevadm under another name on current systemd.
    let same = |p: &Path| std::fs::canonicalize(p).ok();
    if same(inputs.udevd).is_some() && same(inputs.udevd) == same(inputs.udevadm) {
        a.symlink(UDEVD, UDEVADM)?;
    } else {
        testhost::add_binary_with_libs(&mut a, inputs.udevd, UDEVD)?;
    }
    for rule in UDEV_RULES {
        let path = UDEV_RULE_DIRS
            .iter()
            .map(|d| Path::new(d).join(rule))
            .find(|p| p.is_file())
            .ok_or_else(|| DrmError::NoRule { rule: rule.to_string(), dirs: UDEV_RULE_DIRS })?;
        a.file_from_host(&format!("/lib/udev/rules.d/{rule}"), &path, Some(0o644))?;
    }
    match find_first(HWDB) {
        Some(hwdb) => {
            a.file_from_host("/lib/udev/hwdb.bin", &hwdb, Some(0o444))?;
        }
        None => {
            tracing::warn!("no udev hwdb.bin in {HWDB:?}: input devices get no hwdb properties")
        }
    }
    for dir in DATA_DIRS {
        let n = add_tree(&mut a, Path::new(dir))?;
        tracing::info!("test host: {dir} ({n} files)");
    }
    a.dir("/etc/udev", 0o755)?;
    let bytes = a.write_file(out)?;
    Ok((bytes, order))
}

// ---- QEMU ------------------------------------------------------------------

/// The test host's kernel command line.
pub const CMDLINE: &str = "console=ttyS0 quiet panic=-1 rdinit=/init";

/// The QEMU arguments after the binary.
pub fn qemu_args(
    accel: Accel,
    memory_mib: u32,
    cpus: u32,
    size: (u32, u32),
    qmp: &Path,
    kernel: &Path,
    initrd: &Path,
) -> Vec<String> {
    let mut v: Vec<String> = accel.args().iter().map(|s| s.to_string()).collect();
    v.extend([
        "-m".to_string(),
        format!("{memory_mib}M"),
        "-smp".into(),
        cpus.to_string(),
        "-nodefaults".into(),
        "-no-reboot".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        "stdio".into(),
        "-device".into(),
        format!("bochs-display,id=video0,xres={},yres={}", size.0, size.1),
        "-device".into(),
        "virtio-tablet-pci,id=tablet0".into(),
        "-device".into(),
        "virtio-keyboard-pci,id=keyboard0".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp.display()),
        "-kernel".into(),
        kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        CMDLINE.into(),
    ]);
    v
}

/// A QMP connection.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path, timeout: Duration) -> Result<Self, String> {
        let end = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= end => return Err(format!("QMP {}: {e}", path.display())),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut q = Qmp { reader: BufReader::new(stream), writer };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("QMP {}: unexpected greeting {greeting}", path.display()));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(|e| format!("QMP read: {e}"))?;
        if n == 0 {
            return Err("QMP: QEMU closed the connection".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("QMP: bad JSON {line:?}: {e}"))
    }

    /// Runs a command; `Err` holds QEMU's error description.
    fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, String> {
        let msg = json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{msg}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(format!("QMP {command}: {}", e.get("desc").and_then(Value::as_str).unwrap_or("error")));
            }
            // Events are skipped.
        }
    }
}

/// Screendumps in the best format this QEMU offers.
struct Camera {
    qmp: Qmp,
    png: bool,
    dir: PathBuf,
}

impl Camera {
    /// Captures the scanout into `<dir>/<name>.<ext>` and decodes it.
    fn shot(&mut self, name: &str) -> Result<(PathBuf, Image), String> {
        loop {
            let path = self.dir.join(format!("{name}.{}", if self.png { "png" } else { "ppm" }));
            let mut args = json!({ "filename": path.display().to_string() });
            if self.png {
                args["format"] = json!("png");
            }
            match self.qmp.execute("screendump", args) {
                Ok(_) => {
                    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    let img = if self.png { Image::from_png(&bytes) } else { Image::from_ppm(&bytes) }
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    return Ok((path, img));
                }
                Err(e) if self.png && e.contains("format") => {
                    tracing::info!("this QEMU has no PNG screendump ({e}); using PPM");
                    self.png = false;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn abs(&mut self, x: u32, y: u32, size: (u32, u32)) -> Result<(), String> {
        let (vx, vy) = (abs_value(x, size.0), abs_value(y, size.1));
        self.qmp
            .execute(
                "input-send-event",
                json!({ "events": [
                    { "type": "abs", "data": { "axis": "x", "value": vx } },
                    { "type": "abs", "data": { "axis": "y", "value": vy } },
                ]}),
            )
            .map(drop)
    }

    fn button(&mut self, down: bool) -> Result<(), String> {
        self.qmp
            .execute(
                "input-send-event",
                json!({ "events": [ { "type": "btn", "data": { "down": down, "button": "left" } } ] }),
            )
            .map(drop)
    }
}

/// The absolute axis value that libinput maps to pixel `px` of `extent`
/// (it scales `value * extent / (ABS_MAX + 1)`): the pixel's centre.
pub fn abs_value(px: u32, extent: u32) -> u32 {
    let v = (u64::from(px) * 2 + 1) * u64::from(ABS_MAX + 1) / (2 * u64::from(extent.max(1)));
    v.min(u64::from(ABS_MAX)) as u32
}

// ---- images ----------------------------------------------------------------

/// An 8-bit RGB image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub w: u32,
    pub h: u32,
    pub rgb: Vec<u8>,
}

/// A rectangle in capture pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub fn area(&self) -> usize {
        self.w as usize * self.h as usize
    }
}

impl std::fmt::Display for Rect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}+{}+{}", self.w, self.h, self.x, self.y)
    }
}

/// Whether two colours match within [`TOLERANCE`] per channel.
pub fn near(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b.iter()).all(|(x, y)| x.abs_diff(*y) <= TOLERANCE)
}

impl Image {
    pub fn new(w: u32, h: u32, fill: [u8; 3]) -> Self {
        Image { w, h, rgb: fill.repeat(w as usize * h as usize) }
    }

    pub fn px(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.w as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    pub fn set(&mut self, x: u32, y: u32, c: [u8; 3]) {
        let i = (y as usize * self.w as usize + x as usize) * 3;
        self.rgb[i..i + 3].copy_from_slice(&c);
    }

    pub fn fill(&mut self, r: Rect, c: [u8; 3]) {
        for y in r.y..(r.y + r.h).min(self.h) {
            for x in r.x..(r.x + r.w).min(self.w) {
                self.set(x, y, c);
            }
        }
    }

    /// Pixels in `r` (clipped to the image) for which `f` holds.
    pub fn count(&self, r: Rect, f: impl Fn([u8; 3]) -> bool) -> usize {
        let mut n = 0;
        for y in r.y..(r.y + r.h).min(self.h) {
            for x in r.x..(r.x + r.w).min(self.w) {
                n += usize::from(f(self.px(x, y)));
            }
        }
        n
    }

    pub fn whole(&self) -> Rect {
        Rect { x: 0, y: 0, w: self.w, h: self.h }
    }

    /// Decodes an 8-bit RGB or RGBA PNG.
    pub fn from_png(bytes: &[u8]) -> Result<Self, String> {
        let mut decoder = png::Decoder::new(bytes);
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => return Err(format!("unsupported PNG colour type {other:?}")),
        };
        let mut rgb = Vec::with_capacity(info.width as usize * info.height as usize * 3);
        for row in buf.chunks(info.line_size).take(info.height as usize) {
            for p in row.chunks(channels).take(info.width as usize) {
                rgb.extend_from_slice(&p[..3]);
            }
        }
        Ok(Image { w: info.width, h: info.height, rgb })
    }

    /// Decodes a binary PPM (P6, maxval 255).
    pub fn from_ppm(bytes: &[u8]) -> Result<Self, String> {
        let mut fields = Vec::new();
        let mut i = 0;
        while fields.len() < 4 {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == b'#' {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if start == i {
                return Err("truncated PPM header".into());
            }
            fields.push(String::from_utf8_lossy(&bytes[start..i]).into_owned());
        }
        if fields[0] != "P6" || fields[3] != "255" {
            return Err(format!("not an 8-bit P6 PPM: {} maxval {}", fields[0], fields[3]));
        }
        let num = |s: &str| s.parse::<u32>().map_err(|_| format!("bad PPM dimension {s:?}"));
        let (w, h) = (num(&fields[1])?, num(&fields[2])?);
        let data = &bytes[(i + 1).min(bytes.len())..];
        let len = w as usize * h as usize * 3;
        if data.len() < len {
            return Err(format!("PPM {w}x{h} holds {} of {len} bytes", data.len()));
        }
        Ok(Image { w, h, rgb: data[..len].to_vec() })
    }
}

/// A decorated window found in a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub frame: Rect,
    pub title_bar: Rect,
    pub client: Rect,
    /// Centre of the close button.
    pub close: (u32, u32),
    /// Client pixels that are not background.
    pub window_pixels: usize,
    pub host_title_pixels: usize,
}

/// Where the decoration of a floating window with this frame puts things.
pub fn layout(frame: Rect) -> (Rect, Rect, (u32, u32)) {
    let title_bar = Rect { x: frame.x, y: frame.y, w: frame.w, h: TITLE_H };
    let client = Rect {
        x: frame.x + BORDER,
        y: frame.y + TITLE_H,
        w: frame.w.saturating_sub(2 * BORDER),
        h: frame.h.saturating_sub(TITLE_H + BORDER),
    };
    let close_x = (frame.x + frame.w).saturating_sub(BORDER + PAD + BUTTON);
    let close = (close_x + BUTTON / 2, frame.y + PAD + BUTTON / 2);
    (title_bar, client, close)
}

/// Checks that the background dominates; returns its share.
pub fn background_share(img: &Image) -> Result<f64, String> {
    let bg = img.count(img.whole(), |p| near(p, BACKGROUND_RGB));
    let share = bg as f64 / img.whole().area().max(1) as f64;
    if share < MIN_BACKGROUND_SHARE {
        return Err(format!(
            "the background colour {BACKGROUND_RGB:?} covers {:.0}% of the capture (want >= {:.0}%; centre pixel {:?})",
            share * 100.0,
            MIN_BACKGROUND_SHARE * 100.0,
            img.px(img.w / 2, img.h / 2)
        ));
    }
    Ok(share)
}

/// Finds the one decorated window of a 250x250 client by its host-colour frame.
pub fn find_window(img: &Image) -> Result<Found, String> {
    let (mut x0, mut y0, mut x1, mut y1, mut n) = (u32::MAX, u32::MAX, 0, 0, 0usize);
    for y in 0..img.h {
        for x in 0..img.w {
            if near(img.px(x, y), HOST_RGB) {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
                n += 1;
            }
        }
    }
    if n == 0 {
        return Err(format!("no pixel in the host decoration colour {HOST_RGB:?}"));
    }
    let frame = Rect { x: x0, y: y0, w: x1 - x0 + 1, h: y1 - y0 + 1 };
    let want = (CLIENT_W + 2 * BORDER, CLIENT_H + TITLE_H + BORDER);
    if (frame.w, frame.h) != want {
        return Err(format!(
            "host-colour pixels span {frame}, not a {}x{} frame of a {CLIENT_W}x{CLIENT_H} client",
            want.0, want.1
        ));
    }
    let (title_bar, client, close) = layout(frame);
    let host_title_pixels = img.count(title_bar, |p| near(p, HOST_RGB));
    if (host_title_pixels as f64) < MIN_TITLE_SHARE * title_bar.area() as f64 {
        return Err(format!(
            "title bar {title_bar}: {host_title_pixels} of {} pixels in the host colour",
            title_bar.area()
        ));
    }
    let window_pixels = img.count(client, |p| !near(p, BACKGROUND_RGB));
    if (window_pixels as f64) < MIN_CLIENT_SHARE * client.area() as f64 {
        return Err(format!(
            "client area {client}: only {window_pixels} of {} pixels differ from the background",
            client.area()
        ));
    }
    Ok(Found { frame, title_bar, client, close, window_pixels, host_title_pixels })
}

/// Pixels of `r` that differ between two captures of the same size.
pub fn changed_pixels(a: &Image, b: &Image, r: Rect) -> usize {
    if (a.w, a.h) != (b.w, b.h) {
        return r.area();
    }
    let mut n = 0;
    for y in r.y..(r.y + r.h).min(a.h) {
        for x in r.x..(r.x + r.w).min(a.w) {
            n += usize::from(a.px(x, y) != b.px(x, y));
        }
    }
    n
}

/// Whether the window once at `found` is gone from `img`.
pub fn window_gone(img: &Image, found: &Found) -> Result<(), String> {
    let host = img.count(img.whole(), |p| near(p, HOST_RGB));
    if host > MAX_HOST_PIXELS_AFTER_CLOSE {
        return Err(format!("{host} pixels still in the host decoration colour"));
    }
    let left = img.count(found.client, |p| !near(p, BACKGROUND_RGB));
    if (left as f64) >= MIN_CLIENT_SHARE * found.client.area() as f64 {
        return Err(format!(
            "{left} of {} pixels of the former client area {} are not background",
            found.client.area(),
            found.client
        ));
    }
    Ok(())
}

// ---- serial observation ----------------------------------------------------

/// What the serial console told.
#[derive(Debug, Default, Clone)]
pub struct Observation {
    pub fail: Option<String>,
    pub panic: Option<String>,
    pub connectors: Vec<String>,
    pub inputs: Vec<String>,
    pub compositor_start: Option<Instant>,
    pub compositor_exit: Option<String>,
    pub client_exit: Option<String>,
    pub ready: Option<Instant>,
    pub ready_offset: Option<Duration>,
}

impl Observation {
    pub fn observe(&mut self, at: Instant, offset: Duration, line: &str) {
        let after = |m: &str| line.find(m).map(|i| line[i + m.len()..].trim().to_string());
        if let Some(r) = after(MARK_FAIL) {
            self.fail.get_or_insert(r);
        } else if let Some(r) = after(MARK_CONNECTOR) {
            self.connectors.push(r);
        } else if let Some(r) = after(MARK_INPUT) {
            self.inputs.push(r);
        } else if line.contains(MARK_COMPOSITOR_START) {
            self.compositor_start.get_or_insert(at);
        } else if let Some(r) = after(MARK_COMPOSITOR_EXIT) {
            self.compositor_exit.get_or_insert(r);
        } else if let Some(r) = after(MARK_CLIENT_EXIT) {
            self.client_exit.get_or_insert(r);
        } else if line.contains(MARK_READY) {
            self.ready.get_or_insert(at);
            self.ready_offset.get_or_insert(offset);
        } else if line.contains("Kernel panic") {
            self.panic.get_or_insert(line.trim().to_string());
        }
    }

    /// The preferred mode of the first connected connector (the first in
    /// its `modes` list).
    pub fn preferred_mode(&self) -> Option<(u32, u32)> {
        self.connectors.iter().filter(|c| c.contains("status=connected")).find_map(|c| {
            let modes = c.split("modes=").nth(1)?;
            parse_size(modes.split(',').next()?.trim()).ok()
        })
    }
}

/// `WxH` (an `i` or other suffix after the height is ignored).
pub fn parse_size(s: &str) -> Result<(u32, u32), DrmError> {
    let bad = || DrmError::BadSize(s.to_string());
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let h: String = h.chars().take_while(char::is_ascii_digit).collect();
    let (w, h) = (w.parse::<u32>().map_err(|_| bad())?, h.parse::<u32>().map_err(|_| bad())?);
    if w < 320 || h < 240 || w > 4096 || h > 4096 {
        return Err(bad());
    }
    Ok((w, h))
}

// ---- the host-side checks ----------------------------------------------------

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
    timeout: Duration,
    mut f: impl FnMut(&Image) -> Result<T, String>,
) -> Result<(PathBuf, Image, T), String> {
    let end = Instant::now() + timeout;
    loop {
        let (path, img) = cam.shot(name)?;
        match f(&img) {
            Ok(t) => return Ok((path, img, t)),
            Err(e) if Instant::now() >= end => {
                return Err(format!("after {timeout:?} ({}): {e}", path.display()));
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Connects to QMP, runs the checks, then quits QEMU over the same
/// connection (QEMU's exit ends the captured run).
fn run_checks(c: &Checks<'_>, report: &mut Report) -> Result<(), String> {
    let qmp = Qmp::connect(c.qmp_path, Duration::from_secs(30))?;
    let mut cam = Camera { qmp, png: true, dir: c.run_dir.to_path_buf() };
    let result = check_scanout(c, &mut cam, report);
    if let Err(e) = cam.qmp.execute("quit", json!({})) {
        tracing::warn!("QMP quit: {e}");
    }
    result
}

fn check_scanout(c: &Checks<'_>, cam: &mut Camera, report: &mut Report) -> Result<(), String> {
    // 1. The window appears: background, decoration, client pixels.
    let (path, first, found) = poll(cam, "frame-1", c.frame_timeout, |img| {
        background_share(img)?;
        find_window(img)
    })
    .map_err(|e| format!("the decorated client window did not appear {e}"))?;
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
        return Err(format!(
            "the client area did not change between two captures ~1 s apart ({changed} pixels; want >= {MIN_CHANGED_PIXELS}): page flips stopped"
        ));
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
    let (path, _, ()) = poll(cam, "after-close", c.close_timeout, |img| window_gone(img, &found))
        .map_err(|e| format!("the window is still shown after a click on its close button {e}"))?;
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
                        report.error = Some(e);
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
            Outcome::Fail { scenario: SCENARIO, reason }
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

fn evaluate(obs: &Observation, report: Option<&Report>, qemu: Option<String>) -> Result<Figures, String> {
    let with_qemu = |r: String| match &qemu {
        Some(q) => format!("{r} ({q})"),
        None => r,
    };
    if let Some(f) = &obs.fail {
        return Err(with_qemu(format!("test host: {f}")));
    }
    if let Some(p) = &obs.panic {
        return Err(with_qemu(format!("test host kernel: {p}")));
    }
    let Some(ready_offset) = obs.ready_offset else {
        return Err(with_qemu(format!("the test host never printed {MARK_READY}")));
    };
    let Some(report) = report else {
        return Err(with_qemu("the QMP checks did not report".into()));
    };
    if let Some(e) = &report.error {
        let exit = obs
            .compositor_exit
            .as_ref()
            .map(|s| format!("; the compositor exited with status {s}"))
            .unwrap_or_default();
        return Err(format!("{e}{exit}"));
    }
    let (Some(found), Some(size), Some(first), Some(start)) =
        (&report.found, report.size, report.first_window, obs.compositor_start)
    else {
        return Err("the QMP checks ended without a window".into());
    };
    match obs.preferred_mode() {
        Some(mode) if mode == size => {}
        Some(mode) => {
            return Err(format!(
                "the capture is {}x{} but the connector's preferred mode is {}x{}",
                size.0, size.1, mode.0, mode.1
            ))
        }
        None => return Err(format!("no connected DRM connector with modes in {:?}", obs.connectors)),
    }
    if let Some(s) = &obs.compositor_exit {
        return Err(format!("the compositor exited with status {s} during the checks"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InitSpec {
        InitSpec { compositor_log: String::new(), socket_timeout: Duration::from_secs(120) }
    }

    #[test]
    fn init_runs_the_steps_in_order() {
        let s = init_script(&spec());
        assert!(s.starts_with("#!/bin/busybox sh\n"));
        let pos = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle:?} not in init:\n{s}"));
        let steps = [
            "mount -t devtmpfs devtmpfs /dev",
            "mount -t devpts devpts /dev/pts",
            "echo RAYOS-DRM-INIT",
            "insmod /lib/modules/rayos-smoke/$m.ko",
            "/lib/systemd/systemd-udevd --daemon",
            "udevadm trigger --action=add --type=devices",
            "udevadm settle",
            "[ -c /dev/dri/card0 ]",
            "echo RAYOS-DRM-COMPOSITOR-START",
            "LIBSEAT_BACKEND=builtin XDG_RUNTIME_DIR=/run/rayos /usr/bin/rayos-compositor --backend drm --socket-dir /run/rayos --control /run/rayos/ctl.sock",
            "while [ ! -S /run/rayos/rayos-host ]",
            "XDG_RUNTIME_DIR=/run/rayos WAYLAND_DISPLAY=rayos-host /usr/bin/weston-simple-shm",
            "grep -q \" -> $e\\$\"",
            "echo \"RAYOS-DRM-INPUT-OPEN$nodes\"",
            "echo RAYOS-DRM-READY",
        ];
        let mut last = 0;
        for step in steps {
            let p = pos(step);
            assert!(p >= last, "{step:?} out of order");
            last = p;
        }
        assert!(s.contains("cat /etc/rayos-smoke/modules-display"));
        assert!(s.contains("[ $i -gt 1200 ]"));
        assert!(!s.contains("RUST_LOG"));
        let s = init_script(&InitSpec { compositor_log: "rayos_compositor=debug".into(), ..spec() });
        assert!(s.contains("RUST_LOG=rayos_compositor=debug /usr/bin/rayos-compositor"));
    }

    #[test]
    fn qemu_line_has_display_input_and_qmp() {
        let a = qemu_args(Accel::Tcg, 1024, 2, (1280, 800), Path::new("/r/qmp.sock"), Path::new("/k"), Path::new("/i"))
            .join(" ");
        assert!(a.starts_with(
            "-accel tcg -cpu max,la57=off -m 1024M -smp 2 -nodefaults -no-reboot -display none -serial stdio"
        ));
        assert!(a.contains("-device bochs-display,id=video0,xres=1280,yres=800"));
        assert!(a.contains("-device virtio-tablet-pci,id=tablet0"));
        assert!(a.contains("-qmp unix:/r/qmp.sock,server=on,wait=off"));
        assert!(a.ends_with("-kernel /k -initrd /i -append console=ttyS0 quiet panic=-1 rdinit=/init"));
    }

    #[test]
    fn absolute_values_land_on_the_pixel() {
        for (px, extent) in [(0, 1280), (271, 1280), (1279, 1280), (46, 800), (799, 800)] {
            let v = abs_value(px, extent);
            assert!(v <= ABS_MAX);
            // libinput: value * extent / (max + 1)
            assert_eq!(u64::from(v) * u64::from(extent) / u64::from(ABS_MAX + 1), u64::from(px));
        }
    }

    #[test]
    fn sizes_and_modes() {
        assert_eq!(parse_size("1280x800").unwrap(), (1280, 800));
        assert_eq!(parse_size("1024x768i").unwrap(), (1024, 768));
        assert!(parse_size("1280").is_err());
        assert!(parse_size("10x10").is_err());
        let mut o = Observation::default();
        let t = Instant::now();
        o.observe(
            t,
            Duration::ZERO,
            "RAYOS-DRM-CONNECTOR card0-Virtual-1 status=connected modes=1280x800,1920x1080,1024x768,",
        );
        o.observe(t, Duration::from_secs(9), "[   12.0] RAYOS-DRM-READY");
        o.observe(t, Duration::ZERO, "RAYOS-DRM-COMPOSITOR-EXIT status=2");
        assert_eq!(o.preferred_mode(), Some((1280, 800)));
        assert_eq!(o.ready_offset, Some(Duration::from_secs(9)));
        assert_eq!(o.compositor_exit.as_deref(), Some("2"));
        o.observe(t, Duration::ZERO, "RAYOS-DRM-FAIL no /dev/dri/card0");
        assert_eq!(o.fail.as_deref(), Some("no /dev/dri/card0"));
    }

    /// A synthetic scanout: background, one decorated window whose client is
    /// a pattern that depends on `phase`.
    fn scene(w: u32, h: u32, at: (u32, u32), phase: u32) -> Image {
        let mut img = Image::new(w, h, BACKGROUND_RGB);
        let frame = Rect { x: at.0, y: at.1, w: CLIENT_W + 2 * BORDER, h: CLIENT_H + TITLE_H + BORDER };
        img.fill(frame, HOST_RGB);
        // The label: white text on the title bar.
        img.fill(Rect { x: at.0 + 8, y: at.1 + 8, w: 60, h: 12 }, [255, 255, 255]);
        let (_, client, _) = layout(frame);
        for y in client.y..client.y + client.h {
            for x in client.x..client.x + client.w {
                let v = ((x + y + phase) % 256) as u8;
                img.set(x, y, [v, 255 - v, (v / 2).wrapping_add(64)]);
            }
        }
        img
    }

    #[test]
    fn finds_the_window_and_its_close_button() {
        let img = scene(1280, 800, (32, 32), 0);
        assert!(background_share(&img).unwrap() > 0.9);
        let f = find_window(&img).unwrap();
        assert_eq!(f.frame, Rect { x: 32, y: 32, w: 258, h: 282 });
        assert_eq!(f.client, Rect { x: 36, y: 60, w: 250, h: 250 });
        assert_eq!(f.title_bar, Rect { x: 32, y: 32, w: 258, h: 28 });
        // The compositor's close button: x = 32+258-4-4-20 = 262, y = 36, 20x20.
        assert_eq!(f.close, (272, 46));
        assert!(f.window_pixels > 60_000);
        let moved = find_window(&scene(1024, 768, (300, 200), 0)).unwrap();
        assert_eq!(moved.client, Rect { x: 304, y: 228, w: 250, h: 250 });
    }

    #[test]
    fn rejects_wrong_scenes() {
        let empty = Image::new(640, 480, BACKGROUND_RGB);
        assert!(find_window(&empty).unwrap_err().contains("no pixel in the host decoration colour"));
        let black = Image::new(640, 480, [0, 0, 0]);
        assert!(background_share(&black).is_err());
        // A frame of the wrong size.
        let mut wrong = Image::new(640, 480, BACKGROUND_RGB);
        wrong.fill(Rect { x: 10, y: 10, w: 100, h: 100 }, HOST_RGB);
        assert!(find_window(&wrong).unwrap_err().contains("not a 258x282 frame"));
        // A decoration around an empty (background) client.
        let mut hollow = Image::new(640, 480, BACKGROUND_RGB);
        let frame = Rect { x: 10, y: 10, w: 258, h: 282 };
        hollow.fill(frame, HOST_RGB);
        let (_, client, _) = layout(frame);
        hollow.fill(client, BACKGROUND_RGB);
        assert!(find_window(&hollow).unwrap_err().contains("differ from the background"));
    }

    #[test]
    fn animation_and_closing() {
        let a = scene(800, 600, (32, 32), 0);
        let b = scene(800, 600, (32, 32), 7);
        let f = find_window(&a).unwrap();
        assert_eq!(changed_pixels(&a, &a, f.client), 0);
        assert!(changed_pixels(&a, &b, f.client) > MIN_CHANGED_PIXELS);
        assert!(window_gone(&a, &f).is_err());
        let mut closed = Image::new(800, 600, BACKGROUND_RGB);
        // A pointer sprite left over the former close button.
        closed.fill(Rect { x: f.close.0, y: f.close.1, w: 10, h: 16 }, [255, 255, 255]);
        window_gone(&closed, &f).unwrap();
    }

    #[test]
    fn decodes_ppm_and_png() {
        let mut ppm = b"P6\n# QEMU\n2 1\n255\n".to_vec();
        ppm.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let img = Image::from_ppm(&ppm).unwrap();
        assert_eq!((img.w, img.h, img.px(1, 0)), (2, 1, [4, 5, 6]));
        assert!(Image::from_ppm(b"P6\n2 1\n255\n\x01").is_err());

        let mut png_bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut png_bytes, 2, 2);
            enc.set_color(png::ColorType::Rgba);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[1, 2, 3, 255, 4, 5, 6, 255, 7, 8, 9, 255, 10, 11, 12, 255]).unwrap();
        }
        let img = Image::from_png(&png_bytes).unwrap();
        assert_eq!((img.w, img.h, img.px(1, 1)), (2, 2, [10, 11, 12]));
    }
}
