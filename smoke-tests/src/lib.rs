//! # rayos-smoke: end-to-end scenarios for RayOS
//!
//! Design note.
//!
//! * **Scenarios** (`scenarios/`) are functions from parsed options to an
//!   [`Outcome`]. Each prints its figures to stdout, then exactly one final
//!   line: `PASS <scenario> <figures>`, `FAIL <scenario>: <reason>` or
//!   `SKIP <scenario>: <reason>`. Exit codes: 0 pass, 1 fail, 77 skip (the
//!   automake convention for "could not run here"; CI treats it as not
//!   passed). Nothing passes by skipping.
//! * **vmm-boot** (tier 3, nested) boots a *test host* in QEMU (TCG with
//!   `-cpu max`, or KVM when it can nest), which loads the kvm modules of the
//!   same Debian kernel and runs the VMM under test (rayos-vmm, or nested QEMU
//!   as the reference) on a busybox guest. Timing comes from markers on the
//!   single serial stream, stamped on the monotonic clock as lines arrive:
//!   `guest_init_s` is `RAYOS-VMM-START` (printed by the host right before it
//!   executes the VMM) to `RAYOS-GUEST-INIT` (the first thing the guest's
//!   `/init` prints). Both cross the same emulated UART, so their latency
//!   cancels out.
//! * **vmm-virtiofs** (tier 3, nested) uses the same test host with
//!   virtiofsd serving a tmpfs over vhost-user and the VMM's virtio-fs device
//!   (rayos-vmm `--fs`, QEMU `vhost-user-fs-pci`). The guest reads a random
//!   file the host made and writes one back; SHA-256 on both sides proves the
//!   data, the guest's monotonic clock gives `read_mib_s`/`write_mib_s`.
//!   Scripts, markers and evaluation live in [`virtiofs`]; the steps shared
//!   by the nested scenarios in `scenarios/nested.rs`.
//! * **vmm-console** (tier 3, nested) is `console` with a pseudo-terminal
//!   in place of the user's: it types into the guest's shell key by key
//!   ([`pty`]), times each echo, interrupts a job with Ctrl-C, powers the
//!   guest off and checks rayos-vmm's exit status and that it restored the
//!   test host's terminal.
//! * **vmm-startup** (tier 1) runs rayos-vmm on this machine's `/dev/kvm` with
//!   a tiny ELF guest and compares the VMM's own `first_run_monotonic_ns`
//!   (CLOCK_MONOTONIC at the first `KVM_RUN`) with CLOCK_MONOTONIC taken just
//!   before `spawn`.
//! * Building blocks are small and pure where possible: the newc writer
//!   and module dependency order come from `rayos_image::{cpio, kmod}` (the
//!   guest image's initramfs uses them too), [`sharedlibs`] (ldd
//!   closure), [`serial`] (marker parsing and boot evaluation), [`qemu`]
//!   (accelerator choice, streaming runner), [`debs`] (apt cache),
//!   [`testhost`] (assembles both initramfs images, with per-scenario hooks,
//!   binaries and guest modules) and [`script`] (`.sh` files with `@NAME@`
//!   placeholders); each scenario has its own file or folder in [`scenarios`].
//! * Everything a run produces (images, serial logs, metrics, `result.json`)
//!   lives in a run directory that the output names; downloaded packages are
//!   cached across runs in `$RAYOS_CACHE_DIR` (default `~/.cache/rayos`).

pub mod cli;
pub use rayos_image::debs;
pub use rayos_test_kit::procs;
pub mod pty;
pub mod qemu;
pub mod rundir;
pub mod scenarios;
pub mod script;
pub mod serial;
pub use rayos_image::sharedlibs;
pub mod stats;
pub mod testhost;

/// Exit code of a scenario that could not run on this machine.
pub const EXIT_SKIP: i32 = 77;

/// The result of one scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass {
        scenario: &'static str,
        figures: String,
    },
    Fail {
        scenario: &'static str,
        reason: String,
    },
    Skip {
        scenario: &'static str,
        reason: String,
    },
    /// An interactive session ended; `code` is passed through.
    Ended {
        scenario: &'static str,
        message: String,
        code: i32,
    },
}

impl Outcome {
    /// The final output line.
    pub fn line(&self) -> String {
        match self {
            Outcome::Pass { scenario, figures } => format!("PASS {scenario} {figures}"),
            Outcome::Fail { scenario, reason } => format!("FAIL {scenario}: {reason}"),
            Outcome::Skip { scenario, reason } => format!("SKIP {scenario}: {reason}"),
            Outcome::Ended { scenario, message, .. } => format!("{scenario}: {message}"),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Pass { .. } => 0,
            Outcome::Fail { .. } => 1,
            Outcome::Skip { .. } => EXIT_SKIP,
            Outcome::Ended { code, .. } => *code,
        }
    }
}

/// Searches `$PATH` for an executable (absolute or relative paths are
/// returned as they are when they exist).
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &std::path::Path| {
        std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    };
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return is_exec(&p).then_some(p);
    }
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| is_exec(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_lines_and_codes() {
        let p = Outcome::Pass { scenario: "vmm-boot", figures: "guest_init_s=1.00 vcpus=2".into() };
        assert_eq!(p.line(), "PASS vmm-boot guest_init_s=1.00 vcpus=2");
        assert_eq!(p.exit_code(), 0);
        let f = Outcome::Fail { scenario: "vmm-boot", reason: "timeout".into() };
        assert_eq!((f.line().as_str(), f.exit_code()), ("FAIL vmm-boot: timeout", 1));
        let s = Outcome::Skip { scenario: "vmm-startup", reason: "no /dev/kvm".into() };
        assert_eq!((s.line().as_str(), s.exit_code()), ("SKIP vmm-startup: no /dev/kvm", 77));
    }

    #[test]
    fn which_finds_sh() {
        assert!(which("sh").is_some());
        assert!(which("definitely-not-a-program-rayos").is_none());
    }
}
