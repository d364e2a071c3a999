//! # rayos-test-kit: what RayOS's tests share
//!
//! Design note. The scenarios (`rayos-smoke`), the compositor's integration
//! tests and the VMM's and backends' tests all start child processes, wait
//! for sockets and files, read screenshots and drive QEMU. Each of those has
//! one home here, like Cloud Hypervisor's `test_infra`:
//!
//! * [`procs`]: named child processes killed (last started first) when the
//!   guard drops, whatever the test's outcome.
//! * [`image`]: 8-bit RGB images decoded from PNG (the compositor's
//!   screenshots, QEMU's `screendump`) or binary PPM, with rectangle counts
//!   and the compositor's own colours ([`image::BACKGROUND_RGB`],
//!   [`image::HOST_RGB`]) taken from `rayos-compositor-ipc`.
//! * [`qmp`]: a blocking QMP client (greeting, capabilities, commands;
//!   events skipped).
//! * [`wait`]: polling with a deadline that names what it waited for.
//! * [`inputs`]: reproducible pseudo-random inputs for fuzz drivers in unit tests.
//!
//! Nothing here asserts: each helper returns a typed error, so a scenario
//! can print `FAIL <name>: <reason>` and a unit test can `expect` it.

pub mod image;
pub mod inputs;
pub mod procs;
pub mod qmp;
pub mod wait;

pub use image::{Image, Rect};
pub use procs::Procs;
pub use qmp::Qmp;
