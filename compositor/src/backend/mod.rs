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
//!
//! Every backend renders into the same offscreen [`HeadlessBackend`]; what
//! differs is where its image goes, which is [`Backend`]: nowhere else
//! (headless), a window ([`winit::WinitWindow`]) or a display
//! ([`drm::DrmOutput`]).

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

/// Where the offscreen output's image goes after a frame.
// One value lives in the compositor's state for its whole run and is never
// moved or copied, so the variants' different sizes cost nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Backend {
    /// Nowhere: the image is read through the control API (screenshots).
    Headless,
    /// A window of the running Wayland or X11 session.
    Winit(winit::WinitWindow),
    /// A DRM/KMS display, by page flips.
    Drm(drm::DrmOutput),
}

impl Backend {
    /// The name logs and the control API use.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Headless => "headless",
            Backend::Winit(_) => "winit",
            Backend::Drm(_) => "drm",
        }
    }

    /// The DRM display, for its event sources (flips, session, libinput).
    pub fn drm_mut(&mut self) -> Option<&mut drm::DrmOutput> {
        match self {
            Backend::Drm(d) => Some(d),
            _ => None,
        }
    }

    /// Input the window system has for us (winit; the DRM backend's input
    /// arrives through its libinput event source instead).
    pub fn pump_input(&mut self) -> Result<Vec<OutputInput>, winit::WinitError> {
        match self {
            Backend::Winit(w) => w.pump(),
            _ => Ok(Vec::new()),
        }
    }

    /// Shows what the last frame painted (`painted`) of `offscreen`: the
    /// damage as a page flip (DRM, which also retries a deferred flip), or
    /// the whole image in the window (winit, also after an expose).
    pub fn present(&mut self, offscreen: &mut HeadlessBackend, painted: bool) {
        match self {
            Backend::Headless => {}
            Backend::Drm(drm) => {
                let damage = offscreen.take_damage();
                if !damage.is_empty() || (drm.deferred() && !drm.busy()) {
                    if let Err(e) = drm.present(&damage, |r| offscreen.read_rgba(r).map_err(|e| e.to_string())) {
                        tracing::warn!(error = %e, "present failed");
                    }
                }
            }
            Backend::Winit(window) => {
                if !(painted || window.wants_redraw()) {
                    return;
                }
                let full = smithay::utils::Rectangle::from_size(offscreen.size());
                match offscreen.read_rgba(full) {
                    Ok(rgba) => {
                        if let Err(e) = window.present(&rgba) {
                            tracing::warn!(error = %e, "present failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the output failed"),
                }
            }
        }
    }
}

pub use headless::{BenchDamage, DamageProbe, HeadlessBackend, HeadlessError, RenderStats};
