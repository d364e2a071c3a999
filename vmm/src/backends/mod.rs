//! vhost-user device backends: processes that serve one virtio device to a
//! vhost-user frontend (rayos-vmm, or QEMU's `vhost-user-*-pci`).
pub mod vsock;
