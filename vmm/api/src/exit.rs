//! rayos-vmm's exit status, read back (the table in `rayos-vmm --help`).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use serde::{Deserialize, Serialize};

/// How a rayos-vmm process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "value")]
pub enum ExitOutcome {
    /// 0: the guest powered off or rebooted (or was stopped from the console).
    Poweroff,
    /// 1: the VMM failed (KVM or device error).
    VmmError,
    /// 2: the command line was refused; nothing was started.
    BadCommandLine,
    /// 3: the guest kernel panicked.
    GuestPanic,
    /// 4: the guest triple-faulted.
    TripleFault,
    /// 128+N, or killed by signal N without a chance to exit.
    Signal(i32),
    /// Any other status.
    Other(i32),
}

impl ExitOutcome {
    /// From an exit code (`None`: killed by a signal, see [`Self::from_status`]).
    pub fn from_code(code: i32) -> Self {
        match code {
            0 => ExitOutcome::Poweroff,
            1 => ExitOutcome::VmmError,
            2 => ExitOutcome::BadCommandLine,
            3 => ExitOutcome::GuestPanic,
            4 => ExitOutcome::TripleFault,
            129..=192 => ExitOutcome::Signal(code - 128),
            c => ExitOutcome::Other(c),
        }
    }

    pub fn from_status(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(c), _) => Self::from_code(c),
            (None, Some(s)) => ExitOutcome::Signal(s),
            (None, None) => ExitOutcome::Other(-1),
        }
    }

    /// The guest stopped as a guest should (poweroff, reboot, or a stop signal the VMM handled).
    pub fn is_clean(self) -> bool {
        matches!(self, ExitOutcome::Poweroff) || matches!(self, ExitOutcome::Signal(s) if s == libc_sigterm())
    }

    /// The guest crashed (panic or triple fault), as opposed to the VMM failing.
    pub fn is_guest_crash(self) -> bool {
        matches!(self, ExitOutcome::GuestPanic | ExitOutcome::TripleFault)
    }

    /// One line for people.
    pub fn describe(self) -> String {
        match self {
            ExitOutcome::Poweroff => "the guest powered off".into(),
            ExitOutcome::VmmError => "rayos-vmm failed (status 1; its log says why)".into(),
            ExitOutcome::BadCommandLine => "rayos-vmm refused its command line (status 2)".into(),
            ExitOutcome::GuestPanic => "the guest kernel panicked (status 3)".into(),
            ExitOutcome::TripleFault => "the guest triple-faulted (status 4)".into(),
            ExitOutcome::Signal(s) => format!("rayos-vmm was stopped by signal {s}"),
            ExitOutcome::Other(c) => format!("rayos-vmm exited with unexpected status {c}"),
        }
    }
}

const fn libc_sigterm() -> i32 {
    15
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_status_maps() {
        assert_eq!(ExitOutcome::from_code(0), ExitOutcome::Poweroff);
        assert_eq!(ExitOutcome::from_code(1), ExitOutcome::VmmError);
        assert_eq!(ExitOutcome::from_code(2), ExitOutcome::BadCommandLine);
        assert_eq!(ExitOutcome::from_code(3), ExitOutcome::GuestPanic);
        assert_eq!(ExitOutcome::from_code(4), ExitOutcome::TripleFault);
        assert_eq!(ExitOutcome::from_code(143), ExitOutcome::Signal(15));
        assert_eq!(ExitOutcome::from_code(130), ExitOutcome::Signal(2));
        assert_eq!(ExitOutcome::from_code(77), ExitOutcome::Other(77));
        assert!(ExitOutcome::TripleFault.is_guest_crash());
        assert!(ExitOutcome::Signal(15).is_clean());
        assert!(!ExitOutcome::Signal(9).is_clean());
    }

    #[test]
    fn a_killed_process_is_a_signal() {
        assert_eq!(ExitOutcome::from_status(ExitStatus::from_raw(9)), ExitOutcome::Signal(9));
        assert_eq!(ExitOutcome::from_status(ExitStatus::from_raw(4 << 8)), ExitOutcome::TripleFault);
    }
}
