//! Fuzz target: the virtio-gpu 2D command decoder and processor under
//! arbitrary request sequences (resource ids, sizes, backing, rectangles).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rayos_vmm::virtio::gpu::fuzzing::run_gpu_input;

fuzz_target!(|data: &[u8]| {
    run_gpu_input(data);
});
