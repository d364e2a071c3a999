//! PCI: configuration spaces, the root bus with its two access methods
//! (0xcf8/0xcfc ports and ECAM MMIO), and BAR routing on the MMIO bus.
mod bus;
mod config;
pub use bus::*;
pub use config::*;
