//! Display backends: where the compositor's output pixels go.
//!
//! Design note: a backend owns one output (its size, its renderer and the
//! buffer it renders into) and nothing of the shell; the server builds the
//! scene (client surfaces and host decorations, front to back) and hands it
//! to the backend, which renders only what changed since the previous frame
//! (Smithay's `OutputDamageTracker`). The headless backend is an offscreen
//! pixman buffer of fixed size, for tests and automation; the winit backend
//! shows that same buffer in a window of an existing Wayland or X11 session,
//! and the
//! DRM/KMS backend (the real host) page-flips it onto a display. Input from
//! a window or from libinput arrives as [`OutputInput`], at output
//! coordinates, and takes the same paths as the control API's injection.

pub mod drm;
pub mod headless;
pub mod winit;

use crate::control::Button;

/// Input from a backend's own devices, in output coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputInput {
    Motion {
        x: i32,
        y: i32,
    },
    Button {
        button: Button,
        pressed: bool,
    },
    /// An evdev scancode (the xkb keycode minus 8).
    Key {
        scancode: u32,
        pressed: bool,
    },
    /// The user closed the output's window (winit).
    Close,
}

pub use headless::{BenchDamage, DamageProbe, HeadlessBackend, HeadlessError, RenderStats};
