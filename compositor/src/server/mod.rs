//! The Wayland side of the compositor: Smithay state, sockets, event loop.
//!
//! Design note: [`State`] holds Smithay's protocol states (compositor,
//! xdg-shell, xdg-decoration, wl_shm, seat, output), the display-independent
//! [`Shell`], the backend and the control API connections, and runs on one
//! calloop event loop. It listens on `rayos-host` and on one `rayos-vm-<name>`
//! socket per VM registered through the control API, all in one directory
//! (`$XDG_RUNTIME_DIR` by default). The socket a client came through decides
//! its [`Origin`], stored in its client data; nothing the client sends can
//! change it.
//!
//! Window lifecycle: a new xdg toplevel waits in `pending` until it commits
//! its first buffer; then it is mapped into the [`Shell`] with its origin
//! (`Shell::map`), which places it and may refuse it (a refused or
//! unregistered VM): a refused toplevel is sent `close` and dropped. A
//! toplevel destroyed, unmapped (null buffer) or whose client died is
//! unmapped from the shell at once; Smithay destroys a dead client's objects,
//! which ends in `toplevel_destroyed`, so no window outlives its client.
//! After every control request the Smithay side is reconciled with the shell
//! (windows the shell closed get `close`, VM sockets follow the registry,
//! keyboard focus and `activated` follow the shell's focus), and configures
//! follow the shell's geometry and state. Unregistering a VM also
//! disconnects its clients: nothing of a VM outlives its registration.
//!
//! Fairness: Smithay runs on libwayland-server (wayland-rs's system
//! backend), whose dispatch reads each ready client socket once per turn of
//! the event loop, so the frame timer, the control socket and other clients
//! get their turn between a flooding client's reads.
//!
//! Frames: a timer at the output's refresh rate renders the scene through
//! the backend (damage-tracked: an idle scene paints nothing) and then sends
//! frame callbacks, which paces clients that draw continuously. With the
//! winit backend the same tick first pumps the window's events (its input
//! goes through the injection paths) and, after a frame that painted or an
//! expose, presents the output image in the window. With the DRM backend
//! the tick runs at the mode's refresh rate and presents what was painted
//! by a page flip; libinput events arrive as event-loop events and take the
//! same injection paths; frame callbacks are sent on every tick, so clients
//! are paced by the display.

pub mod access;
mod clipboard;
mod config;
mod control;
mod error;
mod event_loop;
mod handlers;
mod input;
mod render;
mod state;

pub use config::{socket_dir, BackendChoice, Config};
pub use control::ControlServer;
pub use error::ServerError;
pub use event_loop::{run, run_headless};
pub(crate) use state::Mapped;
pub use state::{ClientState, State};
