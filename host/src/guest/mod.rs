//! The host end of the command channel: connect to a guest's agent through
//! the hybrid vsock socket of its vsock backend, negotiate, and ask.

pub mod client;

pub use client::{ClientError, GuestClient};
