//! PCI: configuration spaces, the root bus with its two access methods
//! (0xcf8/0xcfc ports and ECAM MMIO), and BAR placement.
mod config;
pub use config::*;
