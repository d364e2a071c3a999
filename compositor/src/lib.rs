//! The display-independent core of the RayOS host compositor.
//!
//! RayOS owns the screen. Its compositor (built on Smithay) shows host and
//! guest windows, marks each with where it comes from so a guest cannot pass
//! for the host, and can be driven by automation over a control socket. This
//! crate holds the part of that which needs no display: the origins and VM
//! policy ([`origin`], clipboard rules in [`clipboard`]), the window model ([`window`]), the shell state with
//! stacking, focus and placement ([`shell`]), server-side decoration layout
//! and hit-testing ([`decoration`]) with its title-bar text ([`text`]), and the control API's pure
//! request handler ([`control`], documented in `compositor/CONTROL-API.md`).
//! The protocol's types (requests, replies, events, and the colours, origins,
//! windows and rectangles they carry) live in `rayos-compositor-ipc`
//! (compositor/ipc), shared with clients such as the host service, and are
//! re-exported here at their old paths.
//! The Smithay layer maps Wayland objects onto these types and does the
//! drawing and the I/O: [`backend`] (where pixels go: the headless pixman
//! output, shown in an X11 window by the winit backend) and [`server`] (the Wayland state, sockets per origin, the
//! control socket and the event loop).

pub mod backend;
pub mod clipboard;
pub mod control;
pub mod decoration;
pub mod geometry;
pub mod origin;
pub mod server;
pub mod shell;
pub mod text;
pub mod window;

pub use control::{
    decode_request, encode_line, handle, handle_line, ApiError, Effect, ErrorCode, Event, Handled, LineSplitter, Reply,
    Request, ServerMessage, MAX_LINE,
};
pub use decoration::{Decoration, DecorationStyle, Edge, Hit};
pub use geometry::{Rect, Size};
pub use origin::{Origin, OriginError, OriginRegistry, Rgb, HOST_COLOUR, HOST_LABEL};
pub use shell::{CloseReason, MapRequest, Shell, ShellError, ShellEvent};
pub use window::{Mode, Window, WindowId, WindowInfo};
