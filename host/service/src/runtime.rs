//! Private runtime folders and the control socket's file.
//!
//! Every folder the service puts sockets in is created fresh by the service
//! and private to it: a path that already exists as a symbolic link, belongs
//! to another user, or can be written by others is refused, so another local
//! user cannot plant a socket where a backend would be told to listen or the
//! VMM would connect (and hand over guest RAM).

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("runtime folder {path}: {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error("runtime folder {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("control socket {path}: another rayos host service is listening on it")]
    InUse { path: PathBuf },
    #[error("group {0:?} does not exist")]
    NoGroup(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io { path: path.to_path_buf(), source }
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// The gid of group `name`.
pub fn group_gid(name: &str) -> Result<u32, RuntimeError> {
    let c = CString::new(name).map_err(|_| RuntimeError::NoGroup(name.into()))?;
    // SAFETY: getgrnam reads a NUL-terminated name and returns a pointer into
    // static storage or NULL; we copy the gid out at once.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        return Err(RuntimeError::NoGroup(name.into()));
    }
    // SAFETY: g is non-null and points to a valid struct group.
    Ok(unsafe { (*g).gr_gid })
}

/// Makes sure `dir` is a folder of ours that nobody else can write: creates
/// it (mode `mode`) if missing; refuses a symbolic link, another owner, or
/// write permission for group or others.
pub fn ensure_private_dir(dir: &Path, mode: u32) -> Result<(), RuntimeError> {
    if let Some(parent) = dir.parent() {
        if !parent.exists() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
    }
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(dir).map_err(io(dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io(dir))?;
            Ok(())
        }
        Err(e) => Err(RuntimeError::Io { path: dir.into(), source: e }),
        Ok(m) => check_ours(dir, &m),
    }
}

fn check_ours(dir: &Path, m: &std::fs::Metadata) -> Result<(), RuntimeError> {
    let unsafe_ = |why: String| Err(RuntimeError::Unsafe { path: dir.into(), why });
    if m.file_type().is_symlink() {
        return unsafe_("is a symbolic link".into());
    }
    if !m.is_dir() {
        return unsafe_("is not a folder".into());
    }
    if m.uid() != euid() {
        return unsafe_(format!("belongs to uid {}, not to this service (uid {})", m.uid(), euid()));
    }
    if m.mode() & 0o022 != 0 {
        return unsafe_(format!("mode {:o} lets others write in it", m.mode() & 0o777));
    }
    Ok(())
}

/// Creates `dir` fresh (mode 0700); it must not exist. A leftover of ours
/// from a service that died is removed first; anything else is refused.
pub fn fresh_private_dir(dir: &Path) -> Result<(), RuntimeError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) => {
            check_ours(dir, &m)?;
            tracing::warn!("removing {} left by an earlier run", dir.display());
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(RuntimeError::Io { path: dir.into(), source: e }),
    }
    std::fs::create_dir(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

/// Removes a stale control socket (nobody listens); refuses a live one.
pub fn clear_stale_socket(path: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::Io { path: path.into(), source: e }),
        Ok(m) if !m.file_type().is_socket() => {
            Err(RuntimeError::Unsafe { path: path.into(), why: "exists and is not a socket".into() })
        }
        Ok(m) if m.uid() != euid() => {
            Err(RuntimeError::Unsafe { path: path.into(), why: format!("a socket of uid {}", m.uid()) })
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(RuntimeError::InUse { path: path.into() });
            }
            std::fs::remove_file(path).map_err(io(path))
        }
    }
}

/// Sets the control socket's mode: 0660 and group `gid`, or 0600.
pub fn restrict_socket(path: &Path, gid: Option<u32>) -> Result<(), RuntimeError> {
    if let Some(gid) = gid {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| RuntimeError::Unsafe { path: path.into(), why: "contains a NUL byte".into() })?;
        // SAFETY: chown on a NUL-terminated path we own; -1 keeps the owner.
        if unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) } != 0 {
            return Err(RuntimeError::Io { path: path.into(), source: std::io::Error::last_os_error() });
        }
    }
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_or_open_folder_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("rt");
        ensure_private_dir(&d, 0o700).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        ensure_private_dir(&d, 0o700).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(ensure_private_dir(&d, 0o700).unwrap_err().to_string().contains("lets others write"));
        let link = t.path().join("link");
        std::os::unix::fs::symlink(t.path(), &link).unwrap();
        assert!(ensure_private_dir(&link, 0o700).unwrap_err().to_string().contains("symbolic link"));
        assert!(fresh_private_dir(&link).unwrap_err().to_string().contains("symbolic link"));
    }

    #[test]
    fn a_fresh_folder_replaces_our_leftover() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("vm-linux");
        fresh_private_dir(&d).unwrap();
        std::fs::write(d.join("stale.sock"), b"").unwrap();
        fresh_private_dir(&d).unwrap();
        assert!(!d.join("stale.sock").exists());
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_live_socket_is_kept_and_a_stale_one_removed() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("rayos.sock");
        let l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        assert!(matches!(clear_stale_socket(&p), Err(RuntimeError::InUse { .. })));
        drop(l);
        clear_stale_socket(&p).unwrap();
        assert!(!p.exists());
        std::fs::write(&p, b"not a socket").unwrap();
        assert!(clear_stale_socket(&p).is_err());
    }
}
