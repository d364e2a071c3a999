//! The file systems PID 1 mounts before anything else runs.
//!
//! The table is pure data ([`EARLY`]); [`mount_all`] applies it in order and
//! stops at the first essential mount that fails. A mount point that is
//! already mounted (the kernel mounts devtmpfs itself with
//! `CONFIG_DEVTMPFS_MOUNT`) counts as done.

use std::ffi::CString;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {fstype} on {target}: {source}")]
    Mount { fstype: String, target: String, source: std::io::Error },
    #[error("mkdir {target}: {source}")]
    Mkdir { target: String, source: std::io::Error },
    #[error("{0}: not a valid C string")]
    Name(String),
}

/// One mount of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: u64,
    pub data: &'static str,
    /// Boot stops (emergency shell) when an essential mount fails.
    pub essential: bool,
}

const NOSUID: u64 = libc::MS_NOSUID;
const NODEV: u64 = libc::MS_NODEV;
const NOEXEC: u64 = libc::MS_NOEXEC;

/// The early mounts, parents before children.
pub const EARLY: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID | NODEV | NOEXEC,
        data: "",
        essential: true,
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID | NODEV | NOEXEC,
        data: "",
        essential: true,
    },
    Mount { source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: NOSUID, data: "mode=0755", essential: true },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: NOSUID | NOEXEC,
        data: "gid=5,mode=0620,ptmxmode=0666",
        essential: true,
    },
    Mount {
        source: "tmpfs",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID | NODEV,
        data: "mode=1777",
        essential: true,
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID | NODEV,
        data: "mode=0755",
        essential: true,
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: NOSUID | NODEV,
        data: "mode=1777",
        essential: true,
    },
    Mount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID | NODEV | NOEXEC,
        data: "",
        essential: false,
    },
];

/// Whether `target` is a mount point now (from /proc/self/mountinfo text).
pub fn is_mounted(mountinfo: &str, target: &str) -> bool {
    mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(target))
}

fn cstr(s: &str) -> Result<CString, MountError> {
    CString::new(s).map_err(|_| MountError::Name(s.to_string()))
}

/// mount(2) with the table's types.
pub fn mount(source: &str, target: &str, fstype: &str, flags: u64, data: &str) -> Result<(), MountError> {
    let (s, t, f, d) = (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    let data_ptr = if data.is_empty() { std::ptr::null() } else { d.as_ptr() as *const libc::c_void };
    // SAFETY: every pointer is a NUL-terminated string that outlives the
    // call (or null for no data); mount(2) does not keep them.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags as libc::c_ulong, data_ptr) };
    if rc != 0 {
        return Err(MountError::Mount {
            fstype: fstype.into(),
            target: target.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Mounts [`EARLY`]; returns the non-essential mounts that failed.
pub fn mount_all() -> Result<Vec<MountError>, MountError> {
    let mut soft = vec![];
    for m in EARLY {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if is_mounted(&info, m.target) {
            continue;
        }
        if !Path::new(m.target).is_dir() {
            std::fs::create_dir_all(m.target)
                .map_err(|source| MountError::Mkdir { target: m.target.into(), source })?;
        }
        match mount(m.source, m.target, m.fstype, m.flags, m.data) {
            Ok(()) => {}
            Err(e) if !m.essential => soft.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok(soft)
}

/// umount2(2); `detach` for a lazy unmount of a busy file system.
pub fn unmount(target: &str, detach: bool) -> std::io::Result<()> {
    let t = CString::new(target).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let flags = if detach { libc::MNT_DETACH } else { 0 };
    // SAFETY: t is a NUL-terminated string alive across the call.
    if unsafe { libc::umount2(t.as_ptr(), flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_mounted_before_their_children() {
        for (i, m) in EARLY.iter().enumerate() {
            for parent in &EARLY[i + 1..] {
                assert!(
                    !m.target.starts_with(&format!("{}/", parent.target)),
                    "{} is mounted before its parent {}",
                    m.target,
                    parent.target
                );
            }
        }
    }

    #[test]
    fn the_table_has_what_the_host_needs() {
        for t in ["/proc", "/sys", "/dev", "/dev/pts", "/run", "/tmp", "/sys/fs/cgroup"] {
            assert!(EARLY.iter().any(|m| m.target == t), "{t} missing");
        }
        assert!(!EARLY.iter().find(|m| m.target == "/sys/fs/cgroup").unwrap().essential);
    }

    #[test]
    fn mountinfo_is_read_by_mount_point() {
        let info = "22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n23 1 0:5 / /dev rw - devtmpfs udev rw\n";
        assert!(is_mounted(info, "/proc"));
        assert!(is_mounted(info, "/dev"));
        assert!(!is_mounted(info, "/dev/pts"));
    }
}
