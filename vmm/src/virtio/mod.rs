//! virtio devices (virtio 1.2) on the PCI transport.
//!
//! `transport` implements virtio-pci (4.1): the PCI function, its
//! capabilities, common configuration, notifications through ioeventfds and
//! MSI-X interrupts through irqfds. Device models implement [`VirtioDevice`];
//! RayOS's devices live in vhost-user backends, so the one device model here
//! is the generic vhost-user frontend (`vhost_user`), with per-device
//! configuration such as virtio-fs's tag (`fs`). The exceptions are `gpu`
//! (virtio-gpu 2D, which reads guest memory in the VMM's own process) and
//! `input` (the keyboard and tablet the embedded desktop's window feeds).

pub mod fs;
pub mod gpu;
pub mod input;
pub mod transport;
pub mod vhost_user;
pub mod worker;

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

use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMem;
use transport::common_config::QueueState;

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activation<'a> {
    /// Features the driver accepted.
    pub features: u64,
    pub mem: &'a GuestMem,
    /// The enabled queues, by index, as validated by the transport.
    pub queues: Vec<(usize, QueueState)>,
    /// Per queue (by index): written by the guest's notifications.
    pub kicks: &'a [EventFd],
    /// Per queue (by index): writing one raises the queue's interrupt.
    pub calls: &'a [EventFd],
}

/// Why a device could not start; the transport puts it in NEEDS_RESET and
/// logs this.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The device's backend went away before or during activation.
    #[error("backend {0} is gone")]
    BackendGone(String),
    /// A vhost-user request to the backend failed.
    #[error("{request}: {source}")]
    Backend {
        request: &'static str,
        #[source]
        source: vhost::Error,
    },
    /// A ring of an enabled queue is not inside guest RAM.
    #[error("queue {queue}: ring {gpa:#x} outside RAM")]
    RingOutsideRam { queue: usize, gpa: u64 },
}

/// A virtio device model behind a transport.
pub trait VirtioDevice: Send {
    /// virtio device type id (5).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Features the device offers (VERSION_1 included).
    fn features(&self) -> u64;
    /// Device-specific configuration read.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Device-specific configuration write.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device; an error puts the device in NEEDS_RESET.
    fn activate(&mut self, activation: Activation<'_>) -> Result<(), ActivateError>;
    /// Stops the device (driver reset).
    fn reset(&mut self);
    /// True once the device can no longer work (its backend is gone).
    fn broken(&self) -> bool {
        false
    }
    /// An eventfd the device writes when it breaks (the transport's
    /// configuration interrupt).
    fn set_broken_notifier(&mut self, _irq: EventFd) {}
}
