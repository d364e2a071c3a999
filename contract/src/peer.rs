//! Who is at the other end of a local socket (SO_PEERCRED), and the rule
//! RayOS's control sockets apply to it: the same user, or root.

use std::os::fd::AsRawFd;

/// The (pid, uid) of the process at the other end of a unix socket.
pub fn credentials(socket: &impl AsRawFd) -> std::io::Result<(i32, u32)> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given, and
    // the fd is a live socket owned by `socket` for the call's duration.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((cred.pid, cred.uid))
}

/// Whether a peer running as `peer` may use a socket of user `me`.
pub fn allowed(peer: u32, me: u32) -> bool {
    peer == me || peer == 0
}

/// This process's effective uid.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_user_and_root() {
        assert!(allowed(1000, 1000));
        assert!(allowed(0, 1000));
        assert!(!allowed(1001, 1000));
    }

    #[test]
    fn credentials_name_this_process() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(credentials(&a).unwrap(), (std::process::id() as i32, effective_uid()));
    }
}
