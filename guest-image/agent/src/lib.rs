//! The RayOS guest agent: the guest end of the command channel.
//!
//! The guest's init starts it (as PID 1, after mounting and loading the
//! vsock transport). It listens on vsock port [`rayos_contract::AGENT_PORT`],
//! answers the host's requests as the contract says (`contract/CONTRACT.md`),
//! builds the app catalog from the guest's `applications` folders, launches
//! apps as the unprivileged guest user and reports their exits. The guest asks
//! and never orders: the agent sends only replies and events.

pub mod catalog;
pub mod desktop;
pub mod launcher;
pub mod power;
pub mod server;
pub mod supervisor;
