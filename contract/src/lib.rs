//! The RayOS Linux subsystem contract in code (see `contract/CONTRACT.md`).
//!
//! RayOS is the sole authority over boot, policy, storage and all I/O; Linux
//! is a managed guest that asks and never orders. This crate holds what both
//! sides agree on and nothing else: the command-channel messages
//! ([`message`]), their framing ([`frame`]), version negotiation
//! ([`version`]), the app catalog's entries ([`desktop`]), the host's
//! policy types ([`policy`]) and the hybrid vsock handshake ([`hybrid`]). It does no I/O beyond the `Read`/`Write` a
//! caller hands to the frame reader.

pub mod desktop;
pub mod frame;
pub mod hybrid;
pub mod message;
pub mod peer;
pub mod policy;
pub mod version;

pub use desktop::{expand_exec, parse_desktop, DesktopEntry};
pub use frame::{encode, write_frame, Decoder, FrameError, FrameReader, MAX_FRAME};
pub use message::{
    decode_reply, decode_request, AgentMessage, AppRef, DecodeError, DisplayMode, ErrorCode, HostRequest, Launch,
    LogLevel, Reply, Request,
};
pub use policy::{AppRule, FolderShare, GuestPolicy, PolicyError};
pub use version::{negotiate, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// The vsock port the guest agent listens on.
pub const AGENT_PORT: u32 = 5252;

/// The vsock context id of the host, as the guest sees it.
pub const HOST_CID: u32 = 2;

/// The host vsock port of the native-window Wayland bridge: the guest
/// connects to it (CID [`HOST_CID`]) once per app session; on the host the
/// vsock backend hands such connections to the unix socket
/// `<hybrid socket>_5253`, where the host's bridge end listens.
pub const BRIDGE_PORT: u32 = 5253;

/// Capability a host puts in its `hello` when it serves the native-window
/// bridge on [`BRIDGE_PORT`]; an agent that can bridge (it has the bridge
/// program) answers with it too. Only when both said it does the agent
/// run `display: native` apps through the bridge.
pub const CAP_WAYLAND_BRIDGE: &str = "wayland-bridge";
