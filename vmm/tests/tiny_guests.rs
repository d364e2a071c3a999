//! Tier 1: rayos-vmm runs tiny test guests on this machine's /dev/kvm.
//!
//! The guests are assembly programs in `tests/guests/`, built here with the
//! system C compiler into ELF executables that rayos-vmm boots like an ELF
//! vmlinux (64-bit entry, zero page in RSI). They cover long-mode entry,
//! serial output and input, port and MMIO exits, SMP bring-up through the
//! local APIC, and every way a VM can end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn require_kvm() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "these tests need /dev/kvm (tiny guests run under KVM); this machine has none"
    );
}

fn build_guest(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests").join(format!("{name}.S"));
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guests");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("{name}.elf"));
    let status = Command::new("cc")
        .args([
            "-nostdlib",
            "-static",
            "-no-pie",
            "-Wl,-Ttext=0x200000",
            "-Wl,--section-start=.ap=0x6000",
            "-Wl,--build-id=none",
            "-o",
        ])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run cc to assemble a test guest");
    assert!(status.success(), "assembling {}", src.display());
    out
}

struct Run {
    code: i32,
    console: String,
    stderr: String,
}

fn vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rayos-vmm"))
}

fn run_guest(name: &str, cpus: u32, extra: &[&str]) -> Run {
    require_kvm();
    let kernel = build_guest(name);
    // Tests run in parallel: every run gets its own console file.
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let console =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{cpus}-{}-{n}.console", std::process::id()));
    let _ = std::fs::remove_file(&console);
    let out = vmm()
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "64M", "--cpus", &cpus.to_string()])
        .arg(format!("--serial=file:{}", console.display()))
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    finish(out, &console)
}

fn finish(out: Output, console: &Path) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        console: std::fs::read_to_string(console).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn long_mode_entry_and_serial_output_then_poweroff() {
    let r = run_guest("hello", 1, &[]);
    assert_eq!(r.console, "Hello from the RayOS test guest\n");
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
}

#[test]
fn port_and_mmio_exits() {
    let r = run_guest("io_exits", 1, &[]);
    assert_eq!(r.console, "io-exits ok\n", "stderr: {}", r.stderr);
    assert_eq!(r.code, 0);
}

#[test]
fn smp_bring_up_sees_every_cpu() {
    for cpus in [1, 2, 4] {
        let r = run_guest("smp", cpus, &[]);
        assert_eq!(r.console, format!("cpus up: {cpus} of {cpus}\n"), "stderr: {}", r.stderr);
        assert_eq!(r.code, 0);
    }
}

#[test]
fn acpi_reset_register_reboot_ends_with_status_0() {
    let r = run_guest("reboot", 1, &[]);
    assert_eq!(r.console, "rebooting\n");
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
}

#[test]
fn i8042_reset_ends_with_status_0() {
    let r = run_guest("i8042_reset", 1, &[]);
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
}

#[test]
fn triple_fault_has_its_own_status() {
    let r = run_guest("triple_fault", 2, &[]);
    assert_eq!(r.code, 4, "stderr: {}", r.stderr);
    assert!(r.stderr.contains("triple fault on vCPU 0"), "stderr: {}", r.stderr);
    // The log says where the CPU was: long mode (EFER.LMA) with the IDT the guest cleared.
    assert!(r.stderr.contains("triple fault; CPU state: rip="), "stderr: {}", r.stderr);
    assert!(r.stderr.contains("efer=0x500"), "stderr: {}", r.stderr);
}

#[test]
fn pvpanic_is_a_panic() {
    let r = run_guest("pvpanic", 1, &[]);
    assert_eq!(r.code, 3, "console: {} stderr: {}", r.console, r.stderr);
    assert!(r.stderr.contains("guest kernel panic: Kernel panic - not syncing: pvpanic test guest"));
}

#[test]
fn reset_after_a_console_panic_is_a_panic() {
    let r = run_guest("console_panic", 1, &[]);
    assert_eq!(r.code, 3, "stderr: {}", r.stderr);
    assert!(r.stderr.contains("Attempted to kill init!"), "stderr: {}", r.stderr);
}

#[test]
fn console_input_reaches_the_guest() {
    require_kvm();
    let kernel = build_guest("echo");
    let mut child = vmm()
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "64M", "--serial", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // More than the 64-byte receive FIFO, so the input path has to wait for the guest.
    // ('q' ends the echo guest, so the text avoids it.)
    let alphabet = b"abcdefghijklmnoprstuvwxyz0123456789";
    let text: String = (0..200).map(|i| alphabet[i % alphabet.len()] as char).collect();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    stdin.write_all(b"q").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, format!("echo ready\n{text}\nbye\n"), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn sigterm_and_sigint_stop_the_vm() {
    require_kvm();
    let kernel = build_guest("spin");
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let console = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("spin-{sig}.console"));
        let _ = std::fs::remove_file(&console);
        let child = vmm()
            .arg("--kernel")
            .arg(&kernel)
            .args(["--memory", "64M", "--cpus", "2"])
            .arg(format!("--serial=file:{}", console.display()))
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while std::fs::read_to_string(&console).unwrap_or_default() != "spinning\n" {
            assert!(t0.elapsed() < Duration::from_secs(20), "guest never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, sig) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn metrics_file_reports_first_entry_and_memory() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hello.metrics.json");
    let _ = std::fs::remove_file(&path);
    let r = run_guest("hello", 1, &["--metrics", path.to_str().unwrap()]);
    assert_eq!(r.code, 0);
    let m = std::fs::read_to_string(&path).unwrap();
    let field = |k: &str| -> u64 {
        let i = m.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} missing in {m}")) + k.len() + 3;
        m[i..].chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().unwrap()
    };
    assert!(field("first_run_monotonic_ns") > 0);
    assert!(field("rss_anon_kib") > 0);
    assert_eq!(field("guest_ram_kib"), 65536);
    assert!(m.contains("\"exit\":\"poweroff\""));
}

#[test]
fn bad_command_lines_start_nothing() {
    let kernel = build_guest("hello");
    let k = kernel.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--kernel", "/nonexistent"], "--kernel /nonexistent: no such file"),
        (&["--kernel", "/etc/hostname"], "not a Linux kernel image"),
        (&["--kernel", k, "--memory", "1M"], "--memory 1M: too small"),
        (&["--kernel", k, "--memory", "64Q"], "--memory 64Q:"),
        (&["--kernel", k, "--cpus", "0"], "--cpus 0:"),
        (&["--kernel", k, "--cpus", "300"], "--cpus 300:"),
        (&["--kernel", k, "--initramfs", "/nonexistent.cpio"], "--initramfs /nonexistent.cpio: no such file"),
        (&["--kernel", k, "--serial", "tcp:1"], "--serial tcp:1:"),
    ];
    for (args, msg) in cases {
        let out = vmm().args(*args).stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(msg), "{args:?}: expected {msg:?} in {err:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn pci_config_through_ports_and_ecam() {
    let r = run_guest("pci", 1, &[]);
    assert_eq!(r.console, "pci ok\n", "stderr: {}", r.stderr);
    assert_eq!(r.code, 0);
}
