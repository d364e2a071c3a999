//! The 16550A UART at COM1 (0x3f8, IRQ 4): the guest's console.
mod device;
pub mod log;
pub use device::{ConsoleOut, PanicWatch, SerialDevice, SerialError};
