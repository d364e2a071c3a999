//! 16550A UART model from vm-superio, its interrupt through an irqfd, and the
//! console stream around it.
//!
//! Output goes to a [`ConsoleOut`] (stdout, a file, or nowhere). The console
//! stream is also watched for the kernel's "Kernel panic - not syncing" line:
//! with `panic=-1` a panicking kernel resets the machine like a reboot does,
//! and this is how the VMM tells the two apart when the guest has no pvpanic
//! driver loaded.
//!
//! Input is queued into the UART's 64-byte receive FIFO; callers retry with
//! what did not fit once the guest has drained it.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::BusDevice;

/// Errors of the serial device.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("cannot create the serial interrupt eventfd: {0}")]
    EventFd(io::Error),
    #[error("cannot queue console input: {0}")]
    Input(String),
}

/// Raises the UART interrupt by writing the irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The last panic line the guest printed on its console, shared with the VM loop.
pub type PanicWatch = Arc<Mutex<Option<String>>>;

const PANIC_MARKER: &[u8] = b"Kernel panic - not syncing";
const MAX_LINE: usize = 512;

/// Where console output goes.
pub enum ConsoleOut {
    /// The VMM's stdout, written unbuffered.
    Stdout,
    /// A file, capped (see [`super::log`]).
    File(super::log::ConsoleLog),
    /// Dropped.
    Sink,
}

/// Console output plus the panic watch.
pub struct ConsoleWriter {
    out: ConsoleOut,
    line: Vec<u8>,
    panic: PanicWatch,
}

impl ConsoleWriter {
    pub fn new(out: ConsoleOut, panic: PanicWatch) -> Self {
        ConsoleWriter { out, line: Vec::with_capacity(MAX_LINE), panic }
    }

    fn watch(&mut self, buf: &[u8]) {
        for &b in buf {
            if b == b'\n' {
                if let Some(pos) = self.line.windows(PANIC_MARKER.len()).position(|w| w == PANIC_MARKER) {
                    let text = String::from_utf8_lossy(&self.line[pos..]).trim_end().to_string();
                    *self.panic.lock().expect("panic watch lock") = Some(text);
                }
                self.line.clear();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
    }
}

fn write_fd_all(fd: i32, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable slice for its length; `fd` is open.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.watch(buf);
        match &mut self.out {
            ConsoleOut::Stdout => write_fd_all(io::stdout().as_raw_fd(), buf)?,
            ConsoleOut::File(f) => f.write_all(buf)?,
            ConsoleOut::Sink => {}
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// COM1.
pub struct SerialDevice {
    uart: Serial<IrqTrigger, NoEvents, ConsoleWriter>,
}

impl SerialDevice {
    /// A UART writing to `out`; its interrupt fires `irq` (to be registered as an irqfd).
    pub fn new(out: ConsoleOut, panic: PanicWatch) -> Result<(Self, EventFd), SerialError> {
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(SerialError::EventFd)?;
        let trigger = IrqTrigger(irq.try_clone().map_err(SerialError::EventFd)?);
        let uart = Serial::new(trigger, ConsoleWriter::new(out, panic));
        Ok((SerialDevice { uart }, irq))
    }

    /// Room left in the receive FIFO.
    pub fn input_room(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Queues console input; returns how many bytes fit.
    pub fn enqueue(&mut self, bytes: &[u8]) -> Result<usize, SerialError> {
        let n = bytes.len().min(self.uart.fifo_capacity());
        if n == 0 {
            return Ok(0);
        }
        self.uart.enqueue_raw_bytes(&bytes[..n]).map_err(|e| SerialError::Input(format!("{e:?}")))
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        if data.len() == 1 && offset < 8 {
            data[0] = self.uart.read(offset as u8);
        } else {
            data.fill(0xff);
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if data.len() == 1 && offset < 8 {
            if let Err(e) = self.uart.write(offset as u8, data[0]) {
                tracing::warn!("serial: write to register {offset}: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (SerialDevice, EventFd, PanicWatch, tempfile::NamedTempFile) {
        let f = tempfile::NamedTempFile::new().unwrap();
        let watch = PanicWatch::default();
        let (d, irq) =
            SerialDevice::new(ConsoleOut::File(super::super::log::ConsoleLog::open(f.path()).unwrap()), watch.clone())
                .unwrap();
        (d, irq, watch, f)
    }

    #[test]
    fn transmitted_bytes_reach_the_console() {
        let (mut d, _irq, _w, f) = device();
        for b in b"hi\n" {
            d.write(0x3f8, 0, &[*b]);
        }
        assert_eq!(std::fs::read(f.path()).unwrap(), b"hi\n");
    }

    #[test]
    fn input_raises_the_interrupt_and_is_readable() {
        let (mut d, irq, _w, _f) = device();
        d.write(0x3f8, 1, &[0x01]); // IER: received data available
        let _ = irq.read(); // IER write may already signal THR empty
        assert_eq!(d.enqueue(b"ab").unwrap(), 2);
        assert!(irq.read().unwrap() >= 1);
        let mut b = [0u8];
        d.read(0x3f8, 5, &mut b); // LSR
        assert_eq!(b[0] & 1, 1, "data ready");
        d.read(0x3f8, 0, &mut b);
        assert_eq!(b[0], b'a');
    }

    #[test]
    fn fifo_overflow_is_reported_not_lost() {
        let (mut d, _irq, _w, _f) = device();
        let big = vec![b'x'; 100];
        let n = d.enqueue(&big).unwrap();
        assert_eq!(n, 64);
        assert_eq!(d.input_room(), 0);
        assert_eq!(d.enqueue(&big[n..]).unwrap(), 0);
    }

    #[test]
    fn odd_widths_and_offsets_are_ignored() {
        let (mut d, _irq, _w, _f) = device();
        let mut b = [0u8; 2];
        d.read(0x3f8, 0, &mut b);
        assert_eq!(b, [0xff, 0xff]);
        d.write(0x3f8, 9, &[1]);
    }

    #[test]
    fn panic_lines_are_caught() {
        let (mut d, _irq, w, _f) = device();
        for b in b"[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n" {
            d.write(0x3f8, 0, &[*b]);
        }
        assert_eq!(w.lock().unwrap().as_deref(), Some("Kernel panic - not syncing: VFS: Unable to mount root fs"));
    }

    #[test]
    fn long_lines_are_bounded() {
        let watch = PanicWatch::default();
        let mut c = ConsoleWriter::new(ConsoleOut::Sink, watch.clone());
        c.write_all(&vec![b'a'; 10_000]).unwrap();
        assert!(c.line.len() <= MAX_LINE);
        c.write_all(b"\n").unwrap();
        assert!(watch.lock().unwrap().is_none());
    }
}
