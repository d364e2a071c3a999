//! A program on a pseudo-terminal, driven like a person at a keyboard.
//!
//! [`PtySession::spawn`] starts a command whose stdin, stdout and stderr are
//! the slave side of a new pty (so it sees a real terminal and may put it in
//! raw mode), keeps the master side, and records everything the program
//! writes, stamped with the time it arrived, in a transcript (also written to
//! a log file as raw bytes). Tests type with [`PtySession::send`] and wait for
//! text with [`PtySession::wait_for`], which searches the transcript from an
//! offset taken before the keystroke, so an earlier match never counts.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Errors of a pty session.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("openpty: {0}")]
    Open(#[source] std::io::Error),
    #[error("cannot start {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the transcript {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("typing into the terminal: {0}")]
    Write(#[source] std::io::Error),
    #[error("waiting for {wanted:?}: {why} after {waited:.1?}; last output: {tail:?}")]
    Timeout { wanted: String, why: &'static str, waited: Duration, tail: String },
    #[error("waiting for the program: {0}")]
    Wait(#[source] std::io::Error),
}

#[derive(Default)]
struct Transcript {
    bytes: Vec<u8>,
    /// Arrival time of each chunk: (offset of its first byte, time).
    arrivals: Vec<(usize, Instant)>,
    closed: bool,
}

/// Where a wait found its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Offset just past the match.
    pub end: usize,
    /// When the chunk completing the match arrived.
    pub at: Instant,
}

/// A running program on a pty.
pub struct PtySession {
    master: File,
    child: Child,
    shared: Arc<(Mutex<Transcript>, Condvar)>,
}

/// Opens a pty pair of `cols` x `rows`: (master, slave).
fn open_pty(cols: u16, rows: u16) -> Result<(OwnedFd, OwnedFd), PtyError> {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: both out pointers are valid c_ints; name and termios may be
    // null; `size` is a valid winsize that openpty only reads.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    if rc != 0 {
        return Err(PtyError::Open(std::io::Error::last_os_error()));
    }
    // SAFETY: openpty returned two new descriptors that nothing else owns.
    let pair = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&pair.0, &pair.1] {
        use std::os::fd::AsRawFd;
        // SAFETY: setting FD_CLOEXEC on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(pair)
}

impl PtySession {
    /// Starts `cmd` on a new 80x24 pty and records its output in `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<PtySession, PtyError> {
        let (master, slave) = open_pty(80, 24)?;
        let binary = PathBuf::from(cmd.get_program());
        let slave = File::from(slave);
        let dup = |f: &File| f.try_clone().map(Stdio::from).map_err(PtyError::Open);
        cmd.stdin(dup(&slave)?).stdout(dup(&slave)?).stderr(dup(&slave)?);
        let child = cmd.spawn().map_err(|source| PtyError::Spawn { binary, source })?;
        // Only the child holds the slave now: reads on the master end with
        // EIO once it (and its children) closed it.
        drop(slave);
        let master = File::from(master);
        let mut reader = master.try_clone().map_err(PtyError::Open)?;
        let mut logf = File::create(log).map_err(|source| PtyError::Log { path: log.to_path_buf(), source })?;
        let shared = Arc::new((Mutex::new(Transcript::default()), Condvar::new()));
        let sh = shared.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let _ = logf.write_all(&buf[..n]);
                let (lock, cv) = &*sh;
                let mut t = lock.lock().expect("transcript lock");
                let at = t.bytes.len();
                t.bytes.extend_from_slice(&buf[..n]);
                t.arrivals.push((at, Instant::now()));
                cv.notify_all();
            }
            let (lock, cv) = &*sh;
            lock.lock().expect("transcript lock").closed = true;
            cv.notify_all();
        });
        Ok(PtySession { master, child, shared })
    }

    /// The transcript's length: an offset to search from after the next keystroke.
    pub fn mark(&self) -> usize {
        self.shared.0.lock().expect("transcript lock").bytes.len()
    }

    /// Types `bytes` (as a terminal would send them: `\r` for Enter, `\x03` for Ctrl-C).
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), PtyError> {
        self.master.write_all(bytes).map_err(PtyError::Write)
    }

    /// Waits until `needle` occurs in the output at or after offset `from`.
    pub fn wait_for(&self, from: usize, needle: &str, timeout: Duration) -> Result<Found, PtyError> {
        let start = Instant::now();
        let (lock, cv) = &*self.shared;
        let mut t = lock.lock().expect("transcript lock");
        loop {
            if let Some(pos) = find(&t.bytes[from.min(t.bytes.len())..], needle.as_bytes()) {
                let end = from + pos + needle.len();
                // The chunk holding the match's last byte.
                let i = t.arrivals.partition_point(|&(off, _)| off < end) - 1;
                return Ok(Found { end, at: t.arrivals[i].1 });
            }
            let waited = start.elapsed();
            let why = if t.closed {
                "the program closed the terminal"
            } else if waited >= timeout {
                "timeout"
            } else {
                t = cv.wait_timeout(t, timeout - waited).expect("transcript lock").0;
                continue;
            };
            return Err(PtyError::Timeout { wanted: needle.into(), why, waited, tail: tail(&t.bytes, 300) });
        }
    }

    /// The output between two offsets, lossily decoded.
    pub fn text(&self, from: usize, to: usize) -> String {
        let t = self.shared.0.lock().expect("transcript lock");
        let to = to.min(t.bytes.len());
        String::from_utf8_lossy(&t.bytes[from.min(to)..to]).into_owned()
    }

    /// Waits up to `timeout` for the program to exit; kills it after that.
    pub fn finish(mut self, timeout: Duration) -> Result<Option<ExitStatus>, PtyError> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(PtyError::Wait)? {
                return Ok(Some(status));
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn tail(bytes: &[u8], n: usize) -> String {
    String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(n)..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_on_a_pty_sees_a_terminal_and_answers() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "[ -t 0 ] && echo tty-yes; read line; echo got-$line; exit 3"]);
        let mut s = PtySession::spawn(cmd, &dir.path().join("t.log")).unwrap();
        s.wait_for(0, "tty-yes", Duration::from_secs(10)).unwrap();
        let m = s.mark();
        s.send(b"abc\r").unwrap();
        let f = s.wait_for(m, "got-abc", Duration::from_secs(10)).unwrap();
        assert!(s.text(m, f.end).contains("abc"));
        // An earlier match does not count.
        let later = s.mark();
        let err = s.wait_for(later, "tty-yes", Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("tty-yes"), "{err}");
        let status = s.finish(Duration::from_secs(10)).unwrap().unwrap();
        assert_eq!(status.code(), Some(3));
        let log = std::fs::read_to_string(dir.path().join("t.log")).unwrap();
        assert!(log.contains("got-abc"));
    }

    #[test]
    fn find_locates_needles() {
        assert_eq!(find(b"hello world", b"world"), Some(6));
        assert_eq!(find(b"hello", b"xyz"), None);
        assert_eq!(find(b"ab", b"abc"), None);
    }
}
