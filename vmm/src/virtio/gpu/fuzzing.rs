//! Driver for the `virtio_gpu_commands` fuzz target (and the property test
//! below): a byte string becomes a sequence of requests, most of them with
//! a real command type so the decoder's and processor's deeper paths run,
//! against 1 MiB of guest memory and a 4 MiB resource cap. Invariants: no
//! panic, every response is a well-formed header, the cap holds.

use arbitrary::Unstructured;
use virtio_bindings::virtio_gpu as b;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::protocol::{Header, HDR_SIZE};
use super::{Gpu, NullScanout};

const TYPES: [u32; 12] = [
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_DISPLAY_INFO,
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_2D,
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNREF,
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT,
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_FLUSH,
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D,
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING,
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING,
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_EDID,
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_UPDATE_CURSOR,
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_MOVE_CURSOR,
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_CREATE,
];

/// Guest memory of the fuzzed VM.
const MEM: u64 = 1 << 20;
/// Resource cap of the fuzzed device.
const CAP: u64 = 4 << 20;

/// Runs one fuzz input. Panics only when an invariant breaks.
pub fn run_gpu_input(data: &[u8]) {
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM as usize)]) else { return };
    let mut gpu = Gpu::new(1280, 800, CAP, NullScanout);
    let mut u = Unstructured::new(data);
    while !u.is_empty() {
        let sel = u.arbitrary::<u8>().unwrap_or(0);
        let type_ = match TYPES.get(sel as usize % 16) {
            Some(t) => *t,
            None => u.arbitrary::<u32>().unwrap_or(0),
        };
        // Small ids, sizes and offsets most of the time, so requests meet.
        let words = (u.arbitrary::<u8>().unwrap_or(0) % 10) as usize;
        let mut req = Vec::with_capacity(HDR_SIZE + words * 4);
        req.extend_from_slice(&type_.to_le_bytes());
        req.extend_from_slice(&u.arbitrary::<u32>().unwrap_or(0).to_le_bytes());
        req.extend_from_slice(&[0; 16]);
        for _ in 0..words {
            let w = match u.arbitrary::<u8>().unwrap_or(0) {
                0..=199 => u32::from(u.arbitrary::<u8>().unwrap_or(0) % 40),
                200..=239 => u32::from(u.arbitrary::<u16>().unwrap_or(0)),
                _ => u.arbitrary::<u32>().unwrap_or(0),
            };
            req.extend_from_slice(&w.to_le_bytes());
        }
        let out = gpu.process(&mem, &req);
        assert!(out.len() >= HDR_SIZE, "every response has a header");
        let h = Header::decode(&out).expect("response header");
        assert!(h.type_ == 0 || (0x1100..=0x1205).contains(&h.type_), "response type {:#x}", h.type_);
        assert!(gpu.resource_bytes() <= CAP, "resources exceed the cap");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz driver on pseudo-random inputs in every `cargo test`.
    #[test]
    fn gpu_commands_hold_their_invariants() {
        for data in rayos_test_kit::inputs::pseudo_random(200, 2048) {
            run_gpu_input(&data);
        }
    }
}
