//! How to run the compositor: output size, sockets, backend.

use std::path::{Path, PathBuf};

use super::ServerError;
use crate::geometry::Size;

/// How to run the compositor.
#[derive(Debug, Clone)]
pub struct Config {
    /// Output size in pixels.
    pub size: Size,
    /// Where the Wayland sockets are created.
    pub socket_dir: PathBuf,
    /// The control API's unix socket.
    pub control_path: PathBuf,
    /// Where the output goes.
    pub backend: BackendChoice,
    /// Draw the pointer into the output image (always with DRM, which has
    /// no cursor of its own; for headless and winit only if asked).
    pub draw_cursor: bool,
}

/// The display backend to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChoice {
    /// Offscreen only, of `Config::size`.
    Headless,
    /// In a window of the running Wayland or X11 session, of `Config::size`.
    Winit,
    /// On a DRM/KMS display (its mode decides the size): `device`, or the
    /// seat's primary GPU.
    Drm { device: Option<PathBuf> },
}

/// The socket directory: `dir` or `$XDG_RUNTIME_DIR`.
pub fn socket_dir(dir: Option<&Path>) -> Result<PathBuf, ServerError> {
    match dir {
        Some(d) => Ok(d.to_path_buf()),
        None => std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).ok_or(ServerError::NoSocketDir),
    }
}
