//! Fuzz target: the vsock backend's packet parser and muxer under arbitrary
//! guest TX chains, RX buffers and host socket traffic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rayos_vsock::fuzzing::run_vsock_input;

fuzz_target!(|data: &[u8]| {
    run_vsock_input(data);
});
