//! The host terminal: raw mode while the guest owns the console, and the
//! console input path with its escape sequence.
//!
//! In raw mode every key, Ctrl-C included, goes to the guest. Ctrl-A then `x`
//! stops the VM; Ctrl-A Ctrl-A sends one Ctrl-A. The saved terminal state is
//! restored when the guard drops, and also from the panic hook.

use std::io;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::devices::serial::SerialDevice;
use crate::devices::VmEvent;

const CTRL_A: u8 = 0x01;

static SAVED: OnceLock<libc::termios> = OnceLock::new();

fn restore_saved() {
    if let Some(t) = SAVED.get() {
        // SAFETY: `t` is a termios previously filled by tcgetattr on fd 0.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
    }
}

/// Puts stdin in raw mode; restores it on drop.
pub struct RawMode(());

impl RawMode {
    /// Enters raw mode if stdin is a terminal.
    pub fn enter() -> Option<RawMode> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(0) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; zeroed is a valid value to be overwritten.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid termios to fill for fd 0.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return None;
        }
        let _ = SAVED.set(t);
        let mut raw = t;
        // SAFETY: `raw` is a valid termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Keep output post-processing so the VMM's own log lines stay readable;
        // the guest's console already sends CR LF.
        raw.c_oflag |= libc::OPOST | libc::ONLCR;
        // SAFETY: `raw` is a valid termios for fd 0.
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_saved();
            prev(info);
        }));
        Some(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_saved();
    }
}

/// The console escape state machine.
#[derive(Debug, Default)]
pub struct Escape {
    pending: bool,
}

impl Escape {
    /// Filters `input` into `out`; returns true when the user asked to stop.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if self.pending {
                self.pending = false;
                match b {
                    b'x' | b'X' => return true,
                    CTRL_A => out.push(CTRL_A),
                    other => {
                        out.push(CTRL_A);
                        out.push(other);
                    }
                }
            } else if b == CTRL_A {
                self.pending = true;
            } else {
                out.push(b);
            }
        }
        false
    }
}

/// Reads stdin and feeds the guest's UART until EOF or the escape.
pub fn spawn_console_input(serial: Arc<Mutex<SerialDevice>>, events: Sender<VmEvent>, escape: bool) -> io::Result<()> {
    std::thread::Builder::new().name("console-in".into()).spawn(move || {
        let mut esc = Escape::default();
        let mut buf = [0u8; 256];
        let mut pending = Vec::new();
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                tracing::debug!("console input: end of stdin");
                return;
            }
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::debug!("console input: {}", io::Error::last_os_error());
                return;
            }
            pending.clear();
            let stop = if escape {
                esc.feed(&buf[..n as usize], &mut pending)
            } else {
                pending.extend_from_slice(&buf[..n as usize]);
                false
            };
            let mut rest = &pending[..];
            while !rest.is_empty() {
                let sent = match serial.lock().expect("serial lock").enqueue(rest) {
                    Ok(k) => k,
                    Err(e) => {
                        tracing::warn!("{e}");
                        0
                    }
                };
                rest = &rest[sent..];
                if !rest.is_empty() {
                    // The guest has not drained its receive FIFO yet.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            if stop {
                let _ = events.send(VmEvent::Stop(0));
                return;
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes_pass_through() {
        let mut e = Escape::default();
        let mut out = vec![];
        assert!(!e.feed(b"ls -l\r", &mut out));
        assert_eq!(out, b"ls -l\r");
    }

    #[test]
    fn ctrl_a_x_stops() {
        let mut e = Escape::default();
        let mut out = vec![];
        assert!(e.feed(b"ab\x01x", &mut out));
        assert_eq!(out, b"ab");
    }

    #[test]
    fn escape_split_across_reads() {
        let mut e = Escape::default();
        let mut out = vec![];
        assert!(!e.feed(b"\x01", &mut out));
        assert!(out.is_empty());
        assert!(e.feed(b"x", &mut out));
    }

    #[test]
    fn double_ctrl_a_sends_one_and_others_pass() {
        let mut e = Escape::default();
        let mut out = vec![];
        assert!(!e.feed(b"\x01\x01\x01c", &mut out));
        assert_eq!(out, b"\x01\x01c");
    }
}
