//! The RayOS compositor's control protocol, for the compositor and its
//! clients alike (like niri-ipc).
//!
//! Design note: automation (the host service, tests, the CLI) drives the
//! compositor over a unix socket, one JSON object per line in each
//! direction (`compositor/CONTROL-API.md` is the reference). A request is
//! tagged by `op` ([`Request`]); the compositor answers each with one line
//! tagged by `type` ([`ServerMessage`]): `ok` with a [`Reply`], or `error`
//! with a stable [`ErrorCode`]. After `subscribe` the connection carries
//! `event` lines ([`Event`]) until it closes. A line is at most [`MAX_LINE`]
//! bytes. The compositor's shell core uses these same types ([`types`],
//! [`geometry`]), so what it writes is what [`client::Client`] reads, and
//! nothing here needs a display, Smithay or a socket to test.

pub mod client;
pub mod control;
pub mod geometry;
pub mod types;

pub use client::{Client, ClientError, EventStream};
pub use control::{
    decode_request, encode_line, ApiError, Button, ControlError, ErrorCode, KeyAction, LineSplitter, PointerAction,
    Reply, Request, ServerMessage, MAX_LINE,
};
pub use geometry::{Rect, Size};
pub use types::{ClipboardPolicy, CloseReason, Event, Mode, Origin, Rgb, VmRegistration, WindowId, WindowInfo};
