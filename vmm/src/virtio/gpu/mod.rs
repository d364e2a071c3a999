//! virtio-gpu, 2D (virtio 1.2, 5.7): the device behind RayOS's embedded
//! desktop, in the VMM's process like crosvm's, because it reads guest
//! memory directly and has no plain-2D vhost-user backend to use.
//!
//! Design note. The device is layered so that everything the guest can
//! send is checked in pure code:
//! - [`protocol`] decodes requests and encodes responses, field by field
//!   from bytes (a fuzz target drives it with the processor).
//! - [`resources`] keeps each 2D resource's host copy and its backing;
//!   sizes, rectangles, backing ranges and the per-VM memory cap are
//!   checked there.
//! - [`commands`] is the command processor: request bytes in, response
//!   bytes out, telling a [`scanout::Scanout`] what to show.
//! - [`device`] puts it behind the virtio-pci transport: the configuration
//!   (`events_read`/`events_clear`), the control and cursor queues served
//!   by one worker thread, and the display-change event a resize raises.
//! - [`edid`] builds the EDID that GET_EDID answers from the display size.
//! - [`presenter`] shows the scanout as one window on the RayOS compositor
//!   (rayos-presenter, `--gpu wayland=SOCKET`) and feeds the window's
//!   input to the VM's virtio keyboard and tablet.

pub mod commands;
pub mod device;
pub mod edid;
pub mod fuzzing;
pub mod presenter;
pub mod protocol;
pub mod resources;
pub mod scanout;

pub use commands::{Gpu, GpuStats, DEFAULT_RESOURCE_CAP};
pub use device::{DisplayHandle, GpuDevice};
pub use scanout::{NullScanout, Scanout};
