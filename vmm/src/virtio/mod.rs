//! virtio devices (virtio 1.2) on the PCI transport.
//!
//! `transport` implements virtio-pci (4.1): the PCI function, its
//! capabilities, common configuration, notifications through ioeventfds and
//! MSI-X interrupts through irqfds. Device models implement [`VirtioDevice`];
//! RayOS's devices live in vhost-user backends, so the one device model here
//! is the generic vhost-user frontend (`vhost_user`), with per-device
//! configuration such as virtio-fs's tag (`fs`).

pub mod transport;

/// Device status bits (2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    pub const FAILED: u8 = 0x80;
}

/// Feature bit: the device conforms to virtio 1.0 or later (6).
pub const VIRTIO_F_VERSION_1: u32 = 32;
/// MSI-X "no vector" (4.1.5.1.2).
pub const NO_VECTOR: u16 = 0xffff;
/// Device type ids (5).
pub const VIRTIO_ID_FS: u32 = 26;
