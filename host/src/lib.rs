//! RayOS host (crate `rayos`).
//!
//! The host owns boot, policy, storage and all I/O; Linux runs as a managed
//! guest. This crate holds the host's AI core so far:
//! - [`models`]: the model manager (store, pinned checksums, atomic installs);
//! - [`intent`]: the intent engine, which turns a request in plain words into a
//!   contract action (launch an app with arguments, ask back, or nothing) with a
//!   local sentence-embedding model on the CPU;
//! - [`guest`]: the host end of the command channel to a guest's agent;
//! - [`bridge`]: the host end of a VM's native-window Wayland bridge;
//! - [`cli`]: the `rayos` command line over all of them, including `rayos host`,
//!   which runs the host service (crate `rayosd`) with this crate's intent
//!   engine plugged in.

pub mod bridge;
pub mod cli;
/// The guest client lives in the host service's crate (no model code there).
pub use rayosd::guest;
pub mod intent;
pub mod models;
