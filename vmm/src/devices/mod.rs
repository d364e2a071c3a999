//! Emulated devices and the buses that route guest port and MMIO accesses to them.
//!
//! Each device lives in its own folder (`mod.rs` re-exports, `device.rs`
//! holds the model). Devices see offsets relative to the base of the range
//! they are registered at; an access no device claims reads as all ones and
//! its writes are dropped (what a real machine does for an empty address).

mod bus;
pub mod power;
pub mod serial;

pub use bus::{Bus, BusDevice, BusError};
pub use serial::PanicWatch;

/// Something that ends the VM (all but [`VmEvent::Report`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    /// The host asked for a state report (SIGUSR1): every vCPU's registers
    /// and every virtio queue's indexes go to the log; the VM goes on.
    Report,
    /// ACPI S5 through the sleep control register.
    Poweroff,
    /// ACPI reset register or i8042 reset line.
    Reboot,
    /// The guest reported a kernel panic (pvpanic), with the console's panic line if any.
    Panic(Option<String>),
    /// A vCPU triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault { vcpu: u8 },
    /// Stopped from the host: a signal number, or 0 for the console escape (Ctrl-A x).
    Stop(i32),
    /// The VMM itself failed.
    Error(String),
}
