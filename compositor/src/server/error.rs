//! The server's one error type.

use std::path::PathBuf;

use crate::backend::drm::DrmError;
use crate::backend::winit::WinitError;
use crate::backend::HeadlessError;
use crate::shell::ShellError;

/// Errors of setting up and running the Wayland server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("headless backend: {0}")]
    Backend(#[from] HeadlessError),
    #[error("winit backend: {0}")]
    Winit(#[from] WinitError),
    #[error("drm backend: {0}")]
    Drm(#[from] DrmError),
    #[error("shell: {0}")]
    Shell(#[from] ShellError),
    #[error("cannot create the Wayland display: {0}")]
    Display(String),
    #[error("cannot listen on {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("event loop: {0}")]
    Loop(String),
    #[error("no socket directory: give --socket-dir or set XDG_RUNTIME_DIR")]
    NoSocketDir,
    #[error(transparent)]
    Access(#[from] super::access::AccessError),
}
