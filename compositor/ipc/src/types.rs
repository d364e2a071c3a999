//! The plain data of the control protocol: colours, origins, windows, the
//! clipboard policy and the events. The compositor's shell core uses these
//! same types, so what it serialises is what clients deserialise.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::geometry::Rect;

/// A colour that is not `"#rrggbb"`, or a window mode that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColourError {
    #[error("invalid colour {0:?}: expected \"#rrggbb\"")]
    Invalid(String),
}

/// A window mode that is not `embedded_desktop` or `native`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid window mode {0:?}: expected \"embedded_desktop\" or \"native\"")]
pub struct ModeError(pub String);

/// Socket name host clients connect on (inside `$XDG_RUNTIME_DIR`).
pub const HOST_SOCKET: &str = "rayos-host";
/// Prefix of a VM's socket name.
pub const VM_SOCKET_PREFIX: &str = "rayos-vm-";
/// Prefix of a VM's embedded-desktop socket name.
pub const DESKTOP_SOCKET_PREFIX: &str = "rayos-desktop-";
/// Label the decoration shows for host windows. VM names cannot contain
/// capitals or spaces, so no VM label can equal it.
pub const HOST_LABEL: &str = "RayOS host";
/// The host's decoration colour. No VM may be registered with a colour
/// within [`MIN_COLOUR_DISTANCE`] of it.
pub const HOST_COLOUR: Rgb = Rgb::new(0x1f, 0x6f, 0xeb);
/// The colour of the output where no window is (every backend clears to it;
/// tests recognise the empty desktop by it).
pub const BACKGROUND_COLOUR: Rgb = Rgb::new(31, 33, 41);
/// An sRGB colour, written `"#rrggbb"` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rgb {
    pub r: u8,
    pub g: u8,
    pub b: u8,
}

impl Rgb {
    pub const fn new(r: u8, g: u8, b: u8) -> Self {
        Rgb { r, g, b }
    }

    /// Perceptually weighted distance ("redmean" approximation); 0 for equal
    /// colours, about 765 between black and white.
    pub fn distance(self, other: Rgb) -> f64 {
        let rm = (f64::from(self.r) + f64::from(other.r)) / 2.0;
        let dr = f64::from(self.r) - f64::from(other.r);
        let dg = f64::from(self.g) - f64::from(other.g);
        let db = f64::from(self.b) - f64::from(other.b);
        ((2.0 + rm / 256.0) * dr * dr + 4.0 * dg * dg + (2.0 + (255.0 - rm) / 256.0) * db * db).sqrt()
    }

    /// As opaque normalised RGBA, for GPU renderers' clear colour.
    pub const fn rgba_f32(self) -> [f32; 4] {
        [self.r as f32 / 255.0, self.g as f32 / 255.0, self.b as f32 / 255.0, 1.0]
    }

    /// As a `0xAARRGGBB` value with full alpha, for renderers.
    pub fn argb(self) -> u32 {
        0xff00_0000 | (u32::from(self.r) << 16) | (u32::from(self.g) << 8) | u32::from(self.b)
    }
}

impl fmt::Display for Rgb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.r, self.g, self.b)
    }
}

impl FromStr for Rgb {
    type Err = ColourError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ColourError::Invalid(s.chars().take(16).collect());
        let hex = s.strip_prefix('#').ok_or_else(bad)?;
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad());
        Ok(Rgb::new(byte(0)?, byte(2)?, byte(4)?))
    }
}

impl Serialize for Rgb {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rgb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The origin of a window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    Host,
    Vm { name: String, colour: Rgb },
}

impl Origin {
    /// The text the decoration shows: "RayOS host" or the VM's name.
    pub fn label(&self) -> &str {
        match self {
            Origin::Host => HOST_LABEL,
            Origin::Vm { name, .. } => name,
        }
    }

    /// The decoration colour.
    pub fn colour(&self) -> Rgb {
        match self {
            Origin::Host => HOST_COLOUR,
            Origin::Vm { colour, .. } => *colour,
        }
    }

    /// The VM name, if this is a VM.
    pub fn vm_name(&self) -> Option<&str> {
        match self {
            Origin::Host => None,
            Origin::Vm { name, .. } => Some(name),
        }
    }

    /// The socket name clients of this origin connect on.
    pub fn socket_name(&self) -> String {
        match self {
            Origin::Host => HOST_SOCKET.to_string(),
            Origin::Vm { name, .. } => vm_socket_name(name),
        }
    }
}

/// `rayos-vm-<name>`.
pub fn vm_socket_name(name: &str) -> String {
    format!("{VM_SOCKET_PREFIX}{name}")
}

/// `rayos-desktop-<name>`.
pub fn desktop_socket_name(name: &str) -> String {
    format!("{DESKTOP_SOCKET_PREFIX}{name}")
}

/// A window's stable id: never reused during the compositor's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WindowId(pub u64);

impl fmt::Display for WindowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a window shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A VM's whole display (the gpu backend's scanout); at most one per VM.
    EmbeddedDesktop,
    /// One guest or host toplevel.
    Native,
}

impl std::str::FromStr for Mode {
    type Err = ModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "embedded_desktop" | "embedded-desktop" => Ok(Mode::EmbeddedDesktop),
            "native" => Ok(Mode::Native),
            other => Err(ModeError(other.chars().take(32).collect())),
        }
    }
}

/// A VM the compositor registered: its label colour, its sockets and its
/// clipboard policy (the `register_vm` reply and the `vm_registered` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRegistration {
    pub name: String,
    pub colour: Rgb,
    /// The socket name its apps' clients connect on.
    pub socket: String,
    /// The socket name its embedded desktop connects on.
    pub desktop_socket: String,
    pub clipboard: ClipboardPolicy,
}

/// A window as the control API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowInfo {
    pub id: WindowId,
    pub origin: Origin,
    pub mode: Mode,
    pub app_id: String,
    pub title: String,
    /// The client area, in output coordinates.
    pub geometry: Rect,
    pub focused: bool,
    pub maximized: bool,
    pub fullscreen: bool,
    pub minimized: bool,
    pub demands_attention: bool,
    /// 0 is the bottom of the stack.
    pub stack_index: usize,
    /// Commits of the toplevel's surface that attached a new buffer since it
    /// was mapped (the mapping commit included): frames the client produced.
    pub commits: u64,
    /// Milliseconds since the compositor started when the window was mapped.
    pub mapped_at_ms: u64,
    /// Milliseconds since the compositor started of the first frame the
    /// compositor rendered with this window's client buffer in it; `null` before.
    pub first_content_ms: Option<u64>,
}

/// A VM's clipboard policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ClipboardPolicy {
    /// Read other origins' selections and share its own freely.
    #[serde(rename = "allow")]
    Allow,
    /// Read other origins' selections only right after user input to the
    /// reading window (a paste); its own are shared.
    #[default]
    #[serde(rename = "on-paste", alias = "on_paste")]
    OnPaste,
    /// No clipboard across the VM's boundary, either way.
    #[serde(rename = "deny")]
    Deny,
}

impl std::fmt::Display for ClipboardPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClipboardPolicy::Allow => "allow",
            ClipboardPolicy::OnPaste => "on-paste",
            ClipboardPolicy::Deny => "deny",
        })
    }
}

/// Why a window went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The client unmapped or destroyed its toplevel, or disconnected.
    Unmapped,
    /// The host closed it (user or control API).
    Closed,
    /// Its VM was unregistered.
    VmUnregistered,
}

/// A change, on the control API's event stream (after `subscribe`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    WindowOpened {
        window: WindowInfo,
    },
    WindowClosed {
        id: WindowId,
        reason: CloseReason,
    },
    FocusChanged {
        id: Option<WindowId>,
    },
    TitleChanged {
        id: WindowId,
        title: String,
    },
    VmRegistered(VmRegistration),
    VmUnregistered {
        name: String,
        closed: Vec<WindowId>,
    },
    /// The VM's whole policy after the change.
    VmPolicyChanged {
        name: String,
        accept_windows: bool,
        clipboard: ClipboardPolicy,
    },
}
