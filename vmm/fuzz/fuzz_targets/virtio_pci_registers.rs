//! Fuzz target: the virtio-pci register decoders (common configuration and
//! MSI-X table/PBA) under arbitrary sequences of guest reads and writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rayos_vmm::virtio::transport::fuzzing::run_register_ops;

fuzz_target!(|data: &[u8]| {
    run_register_ops(data);
});
