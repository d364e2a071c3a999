//! Power requests: stop every app, flush file systems, then power off or
//! restart the guest. Only the agent running as the guest's PID 1 does this.

use std::time::Duration;

use crate::launcher::Launcher;

/// Grace given to apps between SIGTERM and SIGKILL on shutdown.
pub const APP_GRACE: Duration = Duration::from_secs(3);

pub fn power_off(launcher: &Launcher, reboot: bool) {
    tracing::info!(
        reboot,
        "stopping {} apps before {}",
        launcher.running(),
        if reboot { "reboot" } else { "power-off" }
    );
    launcher.stop_all(APP_GRACE);
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let cmd = if reboot { libc::LINUX_REBOOT_CMD_RESTART } else { libc::LINUX_REBOOT_CMD_POWER_OFF };
    // SAFETY: reboot(2) with a valid command; it only returns on failure.
    let rc = unsafe { libc::reboot(cmd) };
    tracing::error!("reboot({cmd:#x}) returned {rc}: {}", std::io::Error::last_os_error());
}
