//! The interface to `rayos-vmm` for programs that start it: the host service
//! (rayosd), the smoke tests and the CLI. It links no KVM code.
//!
//! Like Cloud Hypervisor's `vmm` API types, the VM is described by one value,
//! [`VmSpec`], that turns into the VMM's command line with
//! [`VmSpec::to_argv`]. The crate's tests parse that command line with
//! rayos-vmm's own clap parser, so the two cannot drift apart. The VMM's exit
//! status is read back with [`ExitOutcome::from_status`], and the figures it
//! writes with `--metrics PATH` with [`Metrics::read`].

mod exit;
mod metrics;
mod spec;

pub use exit::ExitOutcome;
pub use metrics::{GpuMetrics, Metrics, MetricsError, PresenterMetrics};
pub use spec::{FsDevice, Serial, SpecError, VhostUserDevice, VmSpec, VIRTIO_ID_FS, VIRTIO_ID_VSOCK};
