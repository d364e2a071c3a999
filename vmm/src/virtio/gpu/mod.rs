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
//! - [`device`] is the command processor: request bytes in, response bytes
//!   out, telling a [`scanout::Scanout`] what to show.
//! - [`edid`] builds the EDID that GET_EDID answers from the display size.
//!
//! Still to come (issue 13): the virtio-pci wiring (control and cursor
//! queues, the config's `events_read`/`events_clear` and the display-change
//! event), the Wayland presenter that implements `Scanout`, virtio-input,
//! and the `--gpu` option.

pub mod device;
pub mod edid;
pub mod fuzzing;
pub mod protocol;
pub mod resources;
pub mod scanout;

pub use device::{Gpu, GpuStats, DEFAULT_RESOURCE_CAP};
pub use scanout::{NullScanout, Scanout};
