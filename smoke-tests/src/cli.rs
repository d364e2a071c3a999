//! Command-line interface of `rayos-smoke`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::qemu::AccelRequest;
use crate::testhost::{Vmm, DEFAULT_QEMU_MACHINE};

/// RayOS end-to-end smoke scenarios.
///
/// Each scenario prints its figures and ends with one line:
/// `PASS <scenario> <figures>` (exit 0), `FAIL <scenario>: <reason>` (exit 1)
/// or `SKIP <scenario>: <reason>` (exit 77: cannot run on this machine).
/// Logs go to stderr (`RUST_LOG` or `--log` set the filter); results to stdout.
#[derive(Debug, Parser)]
#[command(name = "rayos-smoke", version, about, long_about)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), overrides RUST_LOG.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,

    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Tier 3, nested: boot a Debian kernel + busybox guest with the VMM inside a
    /// test host running in QEMU with nested KVM; report the time from VMM start
    /// to the guest's /init.
    ///
    /// Downloads linux-image-amd64's kernel and busybox-static with apt (cached),
    /// builds the guest and test-host initramfs images, picks the outer QEMU
    /// accelerator by what works (TCG `-cpu max` on kvm_pvm), and streams the
    /// serial console to a log in the run directory.
    #[command(name = "vmm-boot")]
    VmmBoot(VmmBootArgs),

    /// Interactive: the vmm-boot test host, but the guest starts a busybox shell
    /// on the console and your terminal is attached to it (through the outer
    /// QEMU and the VMM). Ctrl-A x quits the VMM; `exit` powers the guest off.
    Console(ConsoleArgs),

    /// Tier 1: start rayos-vmm on this machine's /dev/kvm with a tiny ELF guest
    /// (vmm/tests/guests/hello.S) N times; report the median time from spawn to
    /// the first KVM_RUN and the VMM's own resident memory.
    ///
    /// Targets: start_to_first_run_ms <= 10 and rss_overhead_kib <= 8192.
    /// Without a usable /dev/kvm it prints SKIP and exits 77.
    #[command(name = "vmm-startup")]
    VmmStartup(VmmStartupArgs),
}

/// `--vmm` for vmm-boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VmmChoice {
    /// rayos-vmm.
    Rayos,
    /// Nested qemu-system-x86_64 on KVM (q35 by default), the reference.
    Qemu,
    /// rayos then qemu, same kernel/initramfs/cmdline/memory/cpus; prints the ratio.
    Both,
}

impl VmmChoice {
    pub fn vmms(self) -> Vec<Vmm> {
        match self {
            VmmChoice::Rayos => vec![Vmm::Rayos],
            VmmChoice::Qemu => vec![Vmm::Qemu],
            VmmChoice::Both => vec![Vmm::Rayos, Vmm::Qemu],
        }
    }
}

#[derive(Debug, Args)]
pub struct VmmBootArgs {
    /// VMM(s) to boot the guest with inside the test host.
    #[arg(long, value_enum, default_value_t = VmmChoice::Rayos)]
    pub vmm: VmmChoice,

    /// Give the guest an interactive shell and attach this terminal (same as
    /// the `console` subcommand); needs a single --vmm.
    #[arg(long)]
    pub interactive: bool,

    #[command(flatten)]
    pub boot: BootOptions,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// VMM to run the guest with.
    #[arg(long, value_enum, default_value_t = Vmm::Rayos)]
    pub vmm: Vmm,

    #[command(flatten)]
    pub boot: BootOptions,
}

/// Options shared by vmm-boot and console.
#[derive(Debug, Args, Clone)]
pub struct BootOptions {
    /// rayos-vmm binary to put in the test host [default: <workspace>/target/release/rayos-vmm;
    /// build it with `cargo build --release -p rayos-vmm`].
    #[arg(long, value_name = "PATH")]
    pub vmm_bin: Option<PathBuf>,

    /// QEMU binary for the outer VM and the nested reference (copied into the
    /// test host with its libraries and firmware).
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    pub qemu: String,

    /// Give up (and kill QEMU) after this long per boot: 90s, 20m, 1h
    /// (interactive sessions have no timeout).
    #[arg(long, value_name = "DURATION", default_value = "20m", value_parser = crate::stats::parse_duration)]
    pub timeout: Duration,

    /// Outer QEMU accelerator; auto = KVM only if it works and can nest, else TCG.
    #[arg(long, value_enum, default_value_t = AccelRequest::Auto)]
    pub accel: AccelRequest,

    /// Run directory [default: <workspace>/target/smoke/<scenario>-<UTC time>].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,

    /// Keep the initramfs images in the run directory (by default they are
    /// deleted after a passing run or a console session, kept after a failure).
    #[arg(long)]
    pub keep_images: bool,

    /// Package cache [default: $RAYOS_CACHE_DIR, else ~/.cache/rayos].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Debian meta package whose kernel is used for both the test host and the guest.
    #[arg(long, value_name = "PACKAGE", default_value = "linux-image-amd64")]
    pub kernel_meta: String,

    /// Test host memory (MiB).
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pub host_memory_mib: u32,

    /// Test host vCPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub host_cpus: u32,

    /// Guest memory (MiB), passed to the VMM as `--memory <n>M` / `-m <n>M`.
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    pub guest_memory_mib: u32,

    /// Guest vCPUs; the guest must report this many with nproc.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub guest_cpus: u32,

    /// Guest kernel command line.
    #[arg(
        long,
        value_name = "CMDLINE",
        default_value = "console=ttyS0 quiet panic=-1"
    )]
    pub guest_cmdline: String,

    /// Machine type of the nested QEMU reference (q35: full PC with PCIe + ACPI,
    /// the same platform class as rayos-vmm).
    #[arg(long, value_name = "TYPE", default_value = DEFAULT_QEMU_MACHINE)]
    pub qemu_machine: String,
}

#[derive(Debug, Args)]
pub struct VmmStartupArgs {
    /// Number of VMM starts; the median is reported.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,

    /// rayos-vmm binary [default: <workspace>/target/release/rayos-vmm].
    #[arg(long, value_name = "PATH")]
    pub vmm_bin: Option<PathBuf>,

    /// Test guest assembly source [default: <workspace>/vmm/tests/guests/hello.S].
    #[arg(long, value_name = "PATH")]
    pub guest_src: Option<PathBuf>,

    /// Kill a single VMM run after this long: 10s, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::stats::parse_duration)]
    pub run_timeout: Duration,

    /// Target for the median spawn-to-first-KVM_RUN time (ms).
    #[arg(long, value_name = "MS", default_value_t = 10.0)]
    pub max_start_ms: f64,

    /// Target for the median rss_anon_kib + rss_file_kib (KiB).
    #[arg(long, value_name = "KIB", default_value_t = 8192)]
    pub max_rss_kib: u64,

    /// Run directory [default: <workspace>/target/smoke/vmm-startup-<UTC time>].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["rayos-smoke", "vmm-boot", "--vmm", "both"]).unwrap();
        let Scenario::VmmBoot(a) = cli.scenario else {
            panic!()
        };
        assert_eq!(a.vmm, VmmChoice::Both);
        assert_eq!(a.boot.timeout, Duration::from_secs(1200));
        assert_eq!(a.boot.guest_cpus, 2);
        let cli = Cli::try_parse_from(["rayos-smoke", "vmm-startup", "--runs", "3"]).unwrap();
        let Scenario::VmmStartup(a) = cli.scenario else {
            panic!()
        };
        assert_eq!(a.runs, 3);
        assert!(Cli::try_parse_from(["rayos-smoke", "vmm-startup", "--runs", "0"]).is_err());
    }
}
