//! Command line of `rayos-vmm` and its validation into a [`VmConfig`].
//!
//! Every check that can be made before the VM exists is made here, so that a
//! bad value prints one line naming the flag and the value, the process exits
//! with status 2, and nothing is started.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::layout::CMDLINE_MAX_SIZE;

/// Smallest guest RAM accepted.
pub const MIN_MEMORY: u64 = 32 << 20;
/// Largest vCPU count (APIC ids are one byte and 0xff is broadcast; the IOAPIC takes one id).
pub const MAX_CPUS: u8 = 254;
/// Default kernel command line.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1";

const AFTER_HELP: &str = "\
Exit status:
  0    the guest powered off or rebooted (a reboot ends the VMM; it does not restart the guest)
  1    the VMM failed (KVM error, device error)
  2    bad command line: nothing was started
  3    the guest kernel panicked (pvpanic, or a panic seen on the console before reset)
  4    the guest triple-faulted
  130  stopped by SIGINT, 143 stopped by SIGTERM (the guest is stopped, the terminal restored)

Console: with --serial stdio and a terminal on stdin, the terminal is put in raw mode and
every key goes to the guest; type Ctrl-A then x to stop the VM, Ctrl-A Ctrl-A to send Ctrl-A.

SIGTERM or SIGINT stops the VM. SIGUSR1 logs a state report and the VM goes on: each vCPU's
registers and, per virtio queue, the driver's and the device's ring indexes and whether its
interrupt may deliver or is waiting (what a guest that stopped responding was waiting for).

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=rayos_vmm=debug) for more.";

/// rayos-vmm: boots an unmodified Linux kernel in a KVM virtual machine.
///
/// The guest gets RAM, N vCPUs, an in-kernel interrupt controller and PIT,
/// ACPI tables (hardware-reduced) and a 16550 serial console at 0x3f8.
#[derive(Debug, Parser)]
#[command(name = "rayos-vmm", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Args {
    /// Kernel image: a bzImage (e.g. /boot/vmlinuz-*) or an x86_64 ELF vmlinux.
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,

    /// Initial RAM file system (cpio, optionally compressed), placed at the top of low RAM.
    #[arg(long, value_name = "PATH")]
    pub initramfs: Option<PathBuf>,

    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,

    /// Guest RAM: a number with an optional K, M, G or T suffix (plain numbers are MiB).
    #[arg(long, value_name = "SIZE", default_value = "512M")]
    pub memory: String,

    /// Number of vCPUs (1 to 254).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,

    /// Where the guest's serial console goes: stdio, file:PATH (appended to; past 16 MiB it
    /// starts over and the old one is kept as PATH.1), or none.
    #[arg(long, value_name = "MODE", default_value = "stdio")]
    pub serial: String,

    /// Write run figures as JSON to PATH when the VMM exits (first vCPU entry time, memory).
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    /// Share a host folder through virtio-fs: the guest mounts TAG
    /// (`mount -t virtiofs TAG /mnt`); SOCKET is the vhost-user socket of the
    /// virtiofsd serving the folder (started by the host service, or by you:
    /// `virtiofsd --shared-dir DIR --socket-path SOCKET [--readonly]`).
    /// Repeatable.
    #[arg(long = "fs", value_name = "tag=TAG,socket=SOCKET")]
    pub fs: Vec<String>,

    /// Attach a vhost-user backend as a virtio-pci device of type ID (virtio
    /// 1.2 section 5), with QUEUES queues of SIZE entries. QUEUES defaults to
    /// the number the device type's driver sets up (3 for vsock, 2 for net,
    /// console, gpu, input, fs; 1 for unknown types), SIZE to 256. Repeatable.
    #[arg(long = "vhost-user", value_name = "virtio-id=ID,socket=SOCKET[,queues=N,queue-size=SIZE]")]
    pub vhost_user: Vec<String>,

    /// Give the guest a virtio-gpu (2D) device with one display of WxH
    /// pixels (default 1280x800), and a virtio keyboard and tablet for it.
    /// `wayland=SOCKET` shows the display as one window on the RayOS
    /// compositor (SOCKET: the VM's `rayos-desktop-<name>` socket, a path or
    /// a name in $XDG_RUNTIME_DIR); keys, clicks and the window's size go
    /// back to the guest, and the VM keeps running while the compositor is
    /// away. `headless` keeps the display in the VMM: the guest drives it
    /// and --metrics reports what it showed.
    #[arg(long, value_name = "headless|wayland=SOCKET[,width=W,height=H]")]
    pub gpu: Option<String>,
}

/// Where the virtio-gpu's display goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuDisplay {
    Headless,
    /// A window on the compositor, through this Wayland socket.
    Wayland(std::path::PathBuf),
}

/// The virtio-gpu device to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuSpec {
    pub width: u32,
    pub height: u32,
    pub display: GpuDisplay,
}

/// Smallest and largest display side `--gpu` takes.
pub const GPU_SIDE: std::ops::RangeInclusive<u32> = 64..=4095;

/// Parses `--gpu`.
pub fn parse_gpu(s: &str) -> Result<GpuSpec, CliError> {
    let bad = |why: String| CliError::Device("--gpu", s.into(), why);
    let (mode, rest) = s.split_once(',').unwrap_or((s, ""));
    let display = match mode.split_once('=') {
        None if mode == "headless" => GpuDisplay::Headless,
        Some(("wayland", socket)) if !socket.is_empty() => GpuDisplay::Wayland(wayland_socket(socket)),
        Some(("wayland", _)) => return Err(bad("wayland= needs the compositor's socket".into())),
        _ => return Err(bad(format!("unknown display {mode:?}: use `headless` or `wayland=SOCKET`"))),
    };
    let m = if rest.is_empty() { Default::default() } else { parse_kv("--gpu", rest, &["width", "height"])? };
    let side = |k: &str, default: u32| -> Result<u32, CliError> {
        let Some(v) = m.get(k) else { return Ok(default) };
        let n: u32 = v.parse().map_err(|_| bad(format!("{k}={v} is not a number")))?;
        if GPU_SIDE.contains(&n) {
            Ok(n)
        } else {
            Err(bad(format!("{k}={n} is outside {}..={}", GPU_SIDE.start(), GPU_SIDE.end())))
        }
    };
    Ok(GpuSpec { width: side("width", 1280)?, height: side("height", 800)?, display })
}

/// A Wayland socket: a path as it is, a bare name in `$XDG_RUNTIME_DIR`
/// (as Wayland clients resolve `WAYLAND_DISPLAY`).
fn wayland_socket(s: &str) -> std::path::PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !s.contains('/') => std::path::Path::new(&dir).join(s),
        _ => s.into(),
    }
}

/// A vhost-user device to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUserSpec {
    /// Name used in logs (e.g. "fs0", "vhost-user1").
    pub name: String,
    pub device_type: u32,
    pub socket: PathBuf,
    pub queue_sizes: Vec<u16>,
    /// Device configuration presented by the VMM; None asks the backend.
    pub config: Option<Vec<u8>>,
}

/// Most vhost-user devices one VM takes (PCI slots after the host bridge).
pub const MAX_VHOST_USER_DEVICES: usize = 31;

fn parse_kv(
    flag: &'static str,
    s: &str,
    allowed: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, CliError> {
    let mut m = std::collections::BTreeMap::new();
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| CliError::Device(flag, s.into(), format!("{part:?} is not key=value")))?;
        if !allowed.contains(&k) {
            return Err(CliError::Device(
                flag,
                s.into(),
                format!("unknown key {k:?} (expected {})", allowed.join(", ")),
            ));
        }
        if v.is_empty() {
            return Err(CliError::Device(flag, s.into(), format!("{k} is empty")));
        }
        if m.insert(k.to_string(), v.to_string()).is_some() {
            return Err(CliError::Device(flag, s.into(), format!("{k} given twice")));
        }
    }
    Ok(m)
}

fn check_socket(flag: &'static str, s: &str, path: &str) -> Result<PathBuf, CliError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_socket() => Ok(PathBuf::from(path)),
        Ok(_) => Err(CliError::Device(flag, s.into(), format!("{path} is not a unix socket"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(CliError::Device(flag, s.into(), format!("{path}: no such socket (is the backend running?)")))
        }
        Err(e) => Err(CliError::Device(flag, s.into(), format!("{path}: {e}"))),
    }
}

/// Parses one `--fs` value.
pub fn parse_fs(s: &str, index: usize) -> Result<VhostUserSpec, CliError> {
    let m = parse_kv("--fs", s, &["tag", "socket"])?;
    let tag = m.get("tag").ok_or_else(|| CliError::Device("--fs", s.into(), "tag= is required".into()))?;
    let socket = m.get("socket").ok_or_else(|| CliError::Device("--fs", s.into(), "socket= is required".into()))?;
    let config = crate::virtio::fs::fs_config(tag).map_err(|e| CliError::Device("--fs", s.into(), e.to_string()))?;
    let socket = check_socket("--fs", s, socket)?;
    let queues = 1 + crate::virtio::fs::FS_REQUEST_QUEUES as usize;
    Ok(VhostUserSpec {
        name: format!("fs{index}"),
        device_type: crate::virtio::VIRTIO_ID_FS,
        socket,
        queue_sizes: vec![crate::virtio::fs::FS_QUEUE_SIZE; queues],
        config: Some(config),
    })
}

/// How many virtqueues a device of `device_type` has when the driver
/// negotiates no multi-queue feature (virtio 1.2 section 5, each device's
/// "Virtqueues"); 1 for types not listed. A driver looks for all of them at
/// probe, so a vsock device (rx, tx, event) with one queue never comes up.
pub fn default_queues(device_type: u32) -> u64 {
    match device_type {
        // sound: control, event, tx, rx
        25 => 4,
        // vsock: rx, tx, event
        19 => 3,
        // net (rx, tx), console (receiveq, transmitq), gpu (control, cursor),
        // input (event, status), fs (hiprio, 1 request), scmi (cmd, event),
        // gpio (request, event)
        1 | 3 | 16 | 18 | 26 | 32 | 41 => 2,
        // block, entropy, 9p, i2c, ...
        _ => 1,
    }
}

/// Parses one `--vhost-user` value.
pub fn parse_vhost_user(s: &str, index: usize) -> Result<VhostUserSpec, CliError> {
    let flag = "--vhost-user";
    let m = parse_kv(flag, s, &["virtio-id", "socket", "queues", "queue-size"])?;
    let num = |k: &str, default: Option<u64>, range: std::ops::RangeInclusive<u64>| -> Result<u64, CliError> {
        let v = match (m.get(k), default) {
            (Some(v), _) => {
                v.parse::<u64>().map_err(|_| CliError::Device(flag, s.into(), format!("{k}={v} is not a number")))?
            }
            (None, Some(d)) => d,
            (None, None) => return Err(CliError::Device(flag, s.into(), format!("{k}= is required"))),
        };
        if !range.contains(&v) {
            return Err(CliError::Device(
                flag,
                s.into(),
                format!("{k}={v} out of range {}..={}", range.start(), range.end()),
            ));
        }
        Ok(v)
    };
    let device_type = num("virtio-id", None, 1..=63)? as u32;
    let queues = num("queues", Some(default_queues(device_type)), 1..=64)? as usize;
    let size = num("queue-size", Some(256), 1..=32768)?;
    if !size.is_power_of_two() {
        return Err(CliError::Device(flag, s.into(), format!("queue-size={size} is not a power of two")));
    }
    let socket = m.get("socket").ok_or_else(|| CliError::Device(flag, s.into(), "socket= is required".into()))?;
    let socket = check_socket(flag, s, socket)?;
    Ok(VhostUserSpec {
        name: format!("vhost-user{index}"),
        device_type,
        socket,
        queue_sizes: vec![size as u16; queues],
        config: None,
    })
}

/// Where the serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialMode {
    Stdio,
    File(PathBuf),
    None,
}

/// The format of a kernel image, found from its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    BzImage,
    Elf,
}

/// A validated VM configuration.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub kernel_format: KernelFormat,
    pub initramfs: Option<PathBuf>,
    pub cmdline: String,
    pub memory: u64,
    pub cpus: u8,
    pub serial: SerialMode,
    pub metrics: Option<PathBuf>,
    pub vhost_user: Vec<VhostUserSpec>,
    pub gpu: Option<GpuSpec>,
}

/// A bad command-line value. The message names the flag and the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    #[error("--kernel {0}: {1}")]
    Kernel(String, FileError),
    #[error("--initramfs {0}: {1}")]
    Initramfs(String, FileError),
    #[error("--memory {0}: {1}")]
    Memory(String, SizeError),
    #[error("--cpus {0}: {1}")]
    Cpus(u32, String),
    #[error("--serial {0}: {1}")]
    Serial(String, String),
    #[error("--serial {0}: {1}")]
    SerialLog(String, LogPathError),
    #[error("--cmdline: {0}")]
    Cmdline(String),
    #[error("{0} {1}: {2}")]
    Device(&'static str, String, String),
}

/// Why a size argument is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("empty size")]
    Empty,
    #[error("expected a number with an optional K, M, G or T suffix")]
    NotASize,
    #[error("size overflows")]
    Overflow,
    #[error("too small (minimum {0} MiB)")]
    TooSmall(u64),
    #[error("not a multiple of 4 KiB")]
    NotPageAligned,
    #[error("more than the host's {0} MiB of RAM")]
    MoreThanHost(u64),
}

/// Why a kernel or initramfs argument cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("no such file")]
    NotFound,
    #[error("not a regular file")]
    NotAFile,
    #[error("file is empty")]
    Empty,
    #[error("not a Linux kernel image (expected a bzImage or an x86_64 ELF vmlinux)")]
    NotAKernel,
    #[error("{0}")]
    Io(std::io::ErrorKind),
}

/// Why a console log cannot be created at a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogPathError {
    #[error("is a directory")]
    IsDir,
    #[error("{} is not a directory", .0.display())]
    ParentNotDir(PathBuf),
    #[error("no such directory {}", .0.display())]
    NoParent(PathBuf),
    #[error("{}: {kind}", .dir.display())]
    Io { dir: PathBuf, kind: std::io::ErrorKind },
}

/// Parses a size such as `512M`, `1G`, `65536K` or `512` (MiB) into bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(SizeError::Empty);
    }
    let (digits, mult) = match t.as_bytes()[t.len() - 1].to_ascii_uppercase() {
        b'K' => (&t[..t.len() - 1], 1u64 << 10),
        b'M' => (&t[..t.len() - 1], 1 << 20),
        b'G' => (&t[..t.len() - 1], 1 << 30),
        b'T' => (&t[..t.len() - 1], 1 << 40),
        b'0'..=b'9' => (t, 1 << 20),
        _ => return Err(SizeError::NotASize),
    };
    let n: u64 = digits.parse().map_err(|_| SizeError::NotASize)?;
    n.checked_mul(mult).ok_or(SizeError::Overflow)
}

/// Parses `--serial`.
pub fn parse_serial(s: &str) -> Result<SerialMode, CliError> {
    match s {
        "stdio" => Ok(SerialMode::Stdio),
        "none" => Ok(SerialMode::None),
        _ => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Ok(SerialMode::File(PathBuf::from(p))),
            Some(_) => Err(CliError::Serial(s.into(), "file: needs a path".into())),
            None => Err(CliError::Serial(s.into(), "expected stdio, file:PATH or none".into())),
        },
    }
}

/// Identifies a kernel image from its first bytes.
pub fn detect_kernel_format(head: &[u8]) -> Option<KernelFormat> {
    // ELF: magic, 64-bit class, little endian, x86-64 machine (0x3e).
    if head.len() >= 20
        && &head[0..4] == b"\x7fELF"
        && head[4] == 2
        && head[5] == 1
        && u16::from_le_bytes([head[18], head[19]]) == 0x3e
    {
        return Some(KernelFormat::Elf);
    }
    // bzImage: "HdrS" at 0x202 and boot protocol >= 2.06 at 0x206, loadflags LOADED_HIGH.
    if head.len() >= 0x212 && &head[0x202..0x206] == b"HdrS" {
        let version = u16::from_le_bytes([head[0x206], head[0x207]]);
        let loadflags = head[0x211];
        if version >= 0x0206 && loadflags & 0x1 != 0 {
            return Some(KernelFormat::BzImage);
        }
    }
    None
}

fn check_readable_file(path: &Path) -> Result<File, FileError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => FileError::NotFound,
        kind => FileError::Io(kind),
    })?;
    if !meta.is_file() {
        return Err(FileError::NotAFile);
    }
    if meta.len() == 0 {
        return Err(FileError::Empty);
    }
    File::open(path).map_err(|e| FileError::Io(e.kind()))
}

/// Checks that a console log can be created at `path`: its folder exists and
/// the path is not a folder. Nothing is created here; the VM opens it later.
fn check_log_path(path: &Path) -> Result<(), LogPathError> {
    if path.is_dir() {
        return Err(LogPathError::IsDir);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(LogPathError::ParentNotDir(dir.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(LogPathError::NoParent(dir.to_path_buf())),
        Err(e) => Err(LogPathError::Io { dir: dir.to_path_buf(), kind: e.kind() }),
    }
}

/// Host RAM from /proc/meminfo, in bytes.
pub fn host_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl Args {
    /// Checks every value and builds the VM configuration.
    pub fn validate(&self) -> Result<VmConfig, CliError> {
        let kpath = self.kernel.display().to_string();
        let mut f = check_readable_file(&self.kernel).map_err(|e| CliError::Kernel(kpath.clone(), e))?;
        let mut head = vec![0u8; 0x400];
        let n = read_up_to(&mut f, &mut head).map_err(|e| CliError::Kernel(kpath.clone(), FileError::Io(e.kind())))?;
        let kernel_format =
            detect_kernel_format(&head[..n]).ok_or_else(|| CliError::Kernel(kpath.clone(), FileError::NotAKernel))?;

        if let Some(p) = &self.initramfs {
            check_readable_file(p).map_err(|e| CliError::Initramfs(p.display().to_string(), e))?;
        }

        let memory = parse_size(&self.memory).map_err(|e| CliError::Memory(self.memory.clone(), e))?;
        if memory < MIN_MEMORY {
            return Err(CliError::Memory(self.memory.clone(), SizeError::TooSmall(MIN_MEMORY >> 20)));
        }
        if memory % 4096 != 0 {
            return Err(CliError::Memory(self.memory.clone(), SizeError::NotPageAligned));
        }
        if let Some(host) = host_memory() {
            if memory > host {
                return Err(CliError::Memory(self.memory.clone(), SizeError::MoreThanHost(host >> 20)));
            }
        }

        if self.cpus == 0 || self.cpus > MAX_CPUS as u32 {
            return Err(CliError::Cpus(self.cpus, format!("must be between 1 and {MAX_CPUS}")));
        }

        if self.cmdline.len() >= CMDLINE_MAX_SIZE {
            return Err(CliError::Cmdline(format!(
                "{} bytes is too long (at most {} bytes)",
                self.cmdline.len(),
                CMDLINE_MAX_SIZE - 1
            )));
        }
        if self.cmdline.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
            return Err(CliError::Cmdline("only printable ASCII is allowed".into()));
        }

        let serial = parse_serial(&self.serial)?;
        if let SerialMode::File(p) = &serial {
            check_log_path(p).map_err(|e| CliError::SerialLog(self.serial.clone(), e))?;
        }

        let mut vhost_user = Vec::new();
        for (i, v) in self.fs.iter().enumerate() {
            vhost_user.push(parse_fs(v, i)?);
        }
        for (i, v) in self.vhost_user.iter().enumerate() {
            vhost_user.push(parse_vhost_user(v, i)?);
        }
        let gpu = self.gpu.as_deref().map(parse_gpu).transpose()?;
        // --gpu takes three slots: the GPU, its keyboard and its tablet.
        if vhost_user.len() + 3 * usize::from(gpu.is_some()) > MAX_VHOST_USER_DEVICES {
            return Err(CliError::Device(
                "--fs/--vhost-user",
                format!("{} devices", vhost_user.len()),
                format!("at most {MAX_VHOST_USER_DEVICES}"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for d in &vhost_user {
            if !seen.insert(d.socket.clone()) {
                return Err(CliError::Device(
                    "--fs/--vhost-user",
                    d.socket.display().to_string(),
                    "socket used by two devices".into(),
                ));
            }
        }
        let mut tags = std::collections::HashSet::new();
        for (flag, v) in self.fs.iter().map(|v| ("--fs", v)) {
            let tag = v.split(',').find_map(|p| p.strip_prefix("tag=")).unwrap_or_default();
            if !tags.insert(tag) {
                return Err(CliError::Device(flag, v.clone(), format!("tag {tag} used twice")));
            }
        }

        Ok(VmConfig {
            kernel: self.kernel.clone(),
            kernel_format,
            initramfs: self.initramfs.clone(),
            cmdline: self.cmdline.clone(),
            memory,
            cpus: self.cpus as u8,
            serial,
            metrics: self.metrics.clone(),
            vhost_user,
            gpu,
        })
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {

    #[test]
    fn gpu_option() {
        let headless = |width, height| GpuSpec { width, height, display: GpuDisplay::Headless };
        assert_eq!(parse_gpu("headless"), Ok(headless(1280, 800)));
        assert_eq!(parse_gpu("headless,width=1920,height=1080"), Ok(headless(1920, 1080)));
        assert_eq!(
            parse_gpu("wayland=/run/rayos/rayos-desktop-linux,width=1024"),
            Ok(GpuSpec {
                width: 1024,
                height: 800,
                display: GpuDisplay::Wayland("/run/rayos/rayos-desktop-linux".into())
            })
        );
        for bad in
            ["wayland=", "vnc", "headless,width=10", "headless,height=5000", "headless,width=abc", "headless,depth=2"]
        {
            let e = parse_gpu(bad).unwrap_err().to_string();
            assert!(e.starts_with("--gpu "), "{bad}: {e}");
        }
    }
    use super::*;
    use std::io::Write;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["rayos-vmm"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    fn elf_kernel() -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let mut h = vec![0u8; 64];
        h[0..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18] = 0x3e;
        f.write_all(&h).unwrap();
        f
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("65536K"), Ok(64 << 20));
        assert_eq!(parse_size("256"), Ok(256 << 20));
        assert!(parse_size("").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999G").is_err());
        assert_eq!(parse_size("1T"), Ok(1 << 40));
    }

    #[test]
    fn serial_modes() {
        assert_eq!(parse_serial("stdio"), Ok(SerialMode::Stdio));
        assert_eq!(parse_serial("none"), Ok(SerialMode::None));
        assert_eq!(parse_serial("file:/tmp/x"), Ok(SerialMode::File("/tmp/x".into())));
        assert!(parse_serial("file:").is_err());
        assert!(parse_serial("tcp:1").is_err());
    }

    #[test]
    fn kernel_formats() {
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206] = 0x0f;
        bz[0x207] = 0x02;
        bz[0x211] = 1;
        assert_eq!(detect_kernel_format(&bz), Some(KernelFormat::BzImage));
        bz[0x206] = 0x05; // protocol 2.05: too old
        assert_eq!(detect_kernel_format(&bz), None);
        assert_eq!(detect_kernel_format(b"#!/bin/sh\necho hi\n"), None);
        let mut elf32 = vec![0u8; 64];
        elf32[0..4].copy_from_slice(b"\x7fELF");
        elf32[4] = 1;
        assert_eq!(detect_kernel_format(&elf32), None);
    }

    fn socket() -> (tempfile::TempDir, String) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("be.sock");
        let l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        std::mem::forget(l);
        (d, p.to_str().unwrap().to_string())
    }

    #[test]
    fn fs_and_vhost_user_flags() {
        let (_d, sock) = socket();
        let fs = parse_fs(&format!("tag=rayos,socket={sock}"), 0).unwrap();
        assert_eq!(fs.device_type, 26);
        assert_eq!(fs.queue_sizes.len(), 2);
        assert_eq!(&fs.config.as_ref().unwrap()[..5], b"rayos");
        let v = parse_vhost_user(&format!("virtio-id=19,socket={sock},queues=3,queue-size=128"), 1).unwrap();
        assert_eq!((v.device_type, v.queue_sizes.clone(), v.name.as_str()), (19, vec![128, 128, 128], "vhost-user1"));
        // Without queues= a device gets its type's queues: a vsock driver needs rx, tx and event.
        let v = parse_vhost_user(&format!("virtio-id=19,socket={sock}"), 0).unwrap();
        assert_eq!(v.queue_sizes, vec![256; 3]);
        for (id, n) in [(1, 2), (2, 1), (3, 2), (4, 1), (16, 2), (18, 2), (25, 4), (26, 2), (34, 1), (41, 2), (63, 1)] {
            let v = parse_vhost_user(&format!("virtio-id={id},socket={sock}"), 0).unwrap();
            assert_eq!(v.queue_sizes.len(), n, "virtio-id={id}");
        }
        let v = parse_vhost_user(&format!("virtio-id=19,socket={sock},queues=1"), 0).unwrap();
        assert_eq!(v.queue_sizes.len(), 1, "an explicit queues= wins");

        let err = |r: Result<VhostUserSpec, CliError>| r.unwrap_err().to_string();
        assert_eq!(err(parse_fs("tag=x", 0)), "--fs tag=x: socket= is required");
        assert!(err(parse_fs("tag=x,socket=/nonexistent.sock", 0)).contains("no such socket"));
        assert!(err(parse_fs("tag=x,socket=/etc/hostname", 0)).contains("not a unix socket"));
        assert!(err(parse_fs(&format!("tag=a b,socket={sock}"), 0)).contains("printable ASCII"));
        assert!(err(parse_fs(&format!("tag=x,socket={sock},ro=1"), 0)).contains("unknown key \"ro\""));
        assert!(err(parse_fs("tag=x,tag=y", 0)).contains("given twice"));
        assert!(err(parse_fs("tagx", 0)).contains("not key=value"));
        assert!(err(parse_vhost_user(&format!("socket={sock}"), 0)).contains("virtio-id= is required"));
        assert!(err(parse_vhost_user(&format!("virtio-id=99,socket={sock}"), 0)).contains("out of range"));
        assert!(err(parse_vhost_user(&format!("virtio-id=1,socket={sock},queue-size=100"), 0)).contains("power of two"));
        assert!(err(parse_vhost_user(&format!("virtio-id=1,socket={sock},queues=0"), 0)).contains("out of range"));

        let k = elf_kernel();
        let kp = k.path().to_str().unwrap();
        let e =
            args(&["--kernel", kp, "--fs", &format!("tag=a,socket={sock}"), "--fs", &format!("tag=b,socket={sock}")])
                .validate()
                .unwrap_err();
        assert!(e.to_string().contains("socket used by two devices"));
    }

    #[test]
    fn errors_name_flag_and_value() {
        let e = args(&["--kernel", "/nonexistent/vmlinuz"]).validate().unwrap_err();
        assert_eq!(e.to_string(), "--kernel /nonexistent/vmlinuz: no such file");

        let mut script = tempfile::NamedTempFile::new().unwrap();
        script.write_all(b"#!/bin/sh\n").unwrap();
        let p = script.path().to_str().unwrap().to_string();
        let e = args(&["--kernel", &p]).validate().unwrap_err();
        assert!(e.to_string().starts_with(&format!("--kernel {p}: not a Linux kernel image")));

        let k = elf_kernel();
        let kp = k.path().to_str().unwrap();
        let e = args(&["--kernel", kp, "--memory", "8M"]).validate().unwrap_err();
        assert_eq!(e.to_string(), "--memory 8M: too small (minimum 32 MiB)");
        let e = args(&["--kernel", kp, "--memory", "100000G"]).validate().unwrap_err();
        assert!(e.to_string().starts_with("--memory 100000G: more than the host's"));
        let e = args(&["--kernel", kp, "--cpus", "0"]).validate().unwrap_err();
        assert_eq!(e.to_string(), "--cpus 0: must be between 1 and 254");
        let e = args(&["--kernel", kp, "--initramfs", "/nope"]).validate().unwrap_err();
        assert_eq!(e.to_string(), "--initramfs /nope: no such file");
        let e = args(&["--kernel", kp, "--serial", "pty"]).validate().unwrap_err();
        assert_eq!(e.to_string(), "--serial pty: expected stdio, file:PATH or none");
        let e = args(&["--kernel", kp, "--serial", "file:/nonexistent/console.log"]).validate().unwrap_err();
        assert_eq!(e.to_string(), "--serial file:/nonexistent/console.log: no such directory /nonexistent");
        let e = args(&["--kernel", kp, "--serial", "file:/tmp"]).validate().unwrap_err();
        assert_eq!(e.to_string(), "--serial file:/tmp: is a directory");
        let e = args(&["--kernel", kp, "--memory", "4T"]).validate().unwrap_err();
        assert!(e.to_string().starts_with("--memory 4T: more than the host's"));
        let long = "x".repeat(3000);
        let e = args(&["--kernel", kp, "--cmdline", &long]).validate().unwrap_err();
        assert!(e.to_string().contains("too long"));

        let ok = args(&["--kernel", kp, "--memory", "128M", "--cpus", "2"]).validate().unwrap();
        assert_eq!(ok.memory, 128 << 20);
        assert_eq!(ok.cpus, 2);
        assert_eq!(ok.kernel_format, KernelFormat::Elf);
    }
}
