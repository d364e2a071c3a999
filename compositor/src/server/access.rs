//! Who may reach the compositor's sockets.
//!
//! Design note: other local users are untrusted. The socket folder must be
//! this user's and closed to others (no group or world write, as
//! `$XDG_RUNTIME_DIR` is), every socket the compositor creates is made
//! 0600 right after `bind`, and the control socket, which grants input
//! injection, screenshots and VM registration, also checks each peer's
//! credentials (SO_PEERCRED): only this user (and root) may use it. The
//! checks are pure functions over modes and ids, so they are tested without
//! sockets of another user.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Errors of the access checks.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("socket folder {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("socket folder {path} is {why}; use a private folder such as $XDG_RUNTIME_DIR (mode 0700, yours)")]
    UnsafeDir { path: PathBuf, why: String },
}

/// Mode of every socket the compositor creates.
pub const SOCKET_MODE: u32 = 0o600;

/// Why a folder with `mode` owned by `owner` is unsafe for the sockets of
/// user `me`, or `None` when it is safe: owned by `me` (or by root when
/// `me` is root) and not writable by group or others.
pub fn dir_problem(mode: u32, owner: u32, me: u32) -> Option<String> {
    if owner != me {
        return Some(format!("owned by uid {owner}, not by this user (uid {me})"));
    }
    if mode & 0o022 != 0 {
        return Some(format!(
            "writable by {} (mode {:04o})",
            if mode & 0o002 != 0 { "everyone" } else { "its group" },
            mode & 0o7777
        ));
    }
    None
}

/// Checks the socket folder (see [`dir_problem`]).
pub fn check_socket_dir(dir: &Path) -> Result<(), AccessError> {
    let meta = std::fs::metadata(dir).map_err(|source| AccessError::Io { path: dir.to_path_buf(), source })?;
    match dir_problem(meta.mode(), meta.uid(), effective_uid()) {
        Some(why) => Err(AccessError::UnsafeDir { path: dir.to_path_buf(), why }),
        None => Ok(()),
    }
}

/// Makes a socket this user's only.
pub fn restrict_socket(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
}

pub use rayos_contract::peer::{allowed as peer_allowed, credentials as peer_credentials, effective_uid};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_folder_of_this_user_is_safe() {
        assert_eq!(dir_problem(0o40700, 1000, 1000), None);
        assert_eq!(dir_problem(0o40755, 1000, 1000), None);
        assert_eq!(dir_problem(0o40700, 0, 0), None);
    }

    #[test]
    fn shared_or_foreign_folders_are_refused_with_the_reason() {
        let why = dir_problem(0o41777, 0, 1000).unwrap();
        assert!(why.contains("uid 0") && why.contains("uid 1000"), "{why}");
        assert!(dir_problem(0o41777, 1000, 1000).unwrap().contains("everyone"));
        assert!(dir_problem(0o40770, 1000, 1000).unwrap().contains("its group"));
    }

    #[test]
    fn restricted_sockets_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let _l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        restrict_socket(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    }
}
