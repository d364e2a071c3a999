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

    /// Guest RAM: a number with an optional K, M or G suffix (plain numbers are MiB).
    #[arg(long, value_name = "SIZE", default_value = "512M")]
    pub memory: String,

    /// Number of vCPUs (1 to 254).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,

    /// Where the guest's serial console goes: stdio, file:PATH, or none.
    #[arg(long, value_name = "MODE", default_value = "stdio")]
    pub serial: String,

    /// Write run figures as JSON to PATH when the VMM exits (first vCPU entry time, memory).
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,
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
}

/// A bad command-line value. The message names the flag and the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    #[error("--kernel {0}: {1}")]
    Kernel(String, String),
    #[error("--initramfs {0}: {1}")]
    Initramfs(String, String),
    #[error("--memory {0}: {1}")]
    Memory(String, String),
    #[error("--cpus {0}: {1}")]
    Cpus(u32, String),
    #[error("--serial {0}: {1}")]
    Serial(String, String),
    #[error("--cmdline: {0}")]
    Cmdline(String),
}

/// Parses a size such as `512M`, `1G`, `65536K` or `512` (MiB) into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty size".into());
    }
    let (digits, mult) = match t.as_bytes()[t.len() - 1].to_ascii_uppercase() {
        b'K' => (&t[..t.len() - 1], 1u64 << 10),
        b'M' => (&t[..t.len() - 1], 1 << 20),
        b'G' => (&t[..t.len() - 1], 1 << 30),
        b'0'..=b'9' => (t, 1 << 20),
        _ => return Err("expected a number with an optional K, M or G suffix".into()),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected a number with an optional K, M or G suffix".to_string())?;
    n.checked_mul(mult).ok_or_else(|| "size overflows".to_string())
}

/// Parses `--serial`.
pub fn parse_serial(s: &str) -> Result<SerialMode, CliError> {
    match s {
        "stdio" => Ok(SerialMode::Stdio),
        "none" => Ok(SerialMode::None),
        _ => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Ok(SerialMode::File(PathBuf::from(p))),
            Some(_) => Err(CliError::Serial(s.into(), "file: needs a path".into())),
            None => Err(CliError::Serial(
                s.into(),
                "expected stdio, file:PATH or none".into(),
            )),
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

fn check_readable_file(path: &Path) -> Result<File, String> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        _ => e.to_string(),
    })?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() == 0 {
        return Err("file is empty".into());
    }
    File::open(path).map_err(|e| e.to_string())
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
        let n = read_up_to(&mut f, &mut head).map_err(|e| CliError::Kernel(kpath.clone(), e.to_string()))?;
        let kernel_format = detect_kernel_format(&head[..n]).ok_or_else(|| {
            CliError::Kernel(
                kpath.clone(),
                "not a Linux kernel image (expected a bzImage or an x86_64 ELF vmlinux)".into(),
            )
        })?;

        if let Some(p) = &self.initramfs {
            check_readable_file(p).map_err(|e| CliError::Initramfs(p.display().to_string(), e))?;
        }

        let memory = parse_size(&self.memory).map_err(|e| CliError::Memory(self.memory.clone(), e))?;
        if memory < MIN_MEMORY {
            return Err(CliError::Memory(
                self.memory.clone(),
                format!("too small (minimum {} MiB)", MIN_MEMORY >> 20),
            ));
        }
        if memory % 4096 != 0 {
            return Err(CliError::Memory(self.memory.clone(), "not a multiple of 4 KiB".into()));
        }
        if let Some(host) = host_memory() {
            if memory > host {
                return Err(CliError::Memory(
                    self.memory.clone(),
                    format!("more than the host's {} MiB of RAM", host >> 20),
                ));
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
        Ok(VmConfig {
            kernel: self.kernel.clone(),
            kernel_format,
            initramfs: self.initramfs.clone(),
            cmdline: self.cmdline.clone(),
            memory,
            cpus: self.cpus as u8,
            serial,
            metrics: self.metrics.clone(),
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
        let long = "x".repeat(3000);
        let e = args(&["--kernel", kp, "--cmdline", &long]).validate().unwrap_err();
        assert!(e.to_string().contains("too long"));

        let ok = args(&["--kernel", kp, "--memory", "128M", "--cpus", "2"]).validate().unwrap();
        assert_eq!(ok.memory, 128 << 20);
        assert_eq!(ok.cpus, 2);
        assert_eq!(ok.kernel_format, KernelFormat::Elf);
    }
}
