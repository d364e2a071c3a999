//! The virtio-pci transport (virtio 1.2, 4.1).
pub mod common_config;
pub mod fuzzing;
pub mod msix;
pub mod pci;
