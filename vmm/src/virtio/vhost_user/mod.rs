//! The generic vhost-user frontend: a virtio device whose queues are served
//! by a backend process over a unix socket (vhost-user protocol).
mod device;
pub use device::{VhostUserDevice, VhostUserError, REQUEST_TIMEOUT};
