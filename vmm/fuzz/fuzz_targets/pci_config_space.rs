//! Fuzz target: PCI configuration space writes (BAR sizing and moves,
//! capabilities, read-only fields) under arbitrary accesses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rayos_vmm::virtio::transport::fuzzing::run_config_space_ops;

fuzz_target!(|data: &[u8]| {
    run_config_space_ops(data);
});
