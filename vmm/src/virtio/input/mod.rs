//! virtio-input (virtio 1.2, 5.8): the keyboard and the absolute tablet the
//! embedded desktop's window feeds, in the VMM's process.
//!
//! Design note. A device is described once ([`config::InputDevice`]: name,
//! ids, the event types and codes it reports, the axes' ranges) and the
//! guest reads that description through the 256-byte configuration window
//! by writing `select`/`subsel` and reading `size` and the union; that
//! window is [`config::ConfigWindow`], pure and tested without a VM. Host
//! input becomes evdev events in [`event`]: Wayland key codes are already
//! evdev codes, pointer positions are scaled into the tablet's axis range,
//! scroll becomes `REL_WHEEL`, each report ends with `SYN_REPORT`.
//!
//! [`device`] puts a device behind the virtio-pci transport: the event
//! queue it fills from an [`InputHandle`], and the status queue.
//! `--gpu` adds a keyboard and a tablet beside the GPU; with
//! `--gpu wayland=…` the embedded desktop's window feeds them
//! (`virtio::gpu::presenter::GuestInput`).

pub mod config;
pub mod device;
pub mod event;

pub use config::{ConfigWindow, InputDevice};
pub use device::{InputDeviceModel, InputHandle};
pub use event::{InputEvent, TabletMapper};
