//! The control protocol's messages: requests, replies, errors and the line
//! framing, with the checks every request must pass before a compositor acts
//! on it (`compositor/CONTROL-API.md` is the reference).

use serde::{Deserialize, Serialize};

use crate::geometry::Rect;
pub use crate::types::Event;
use crate::types::{ClipboardPolicy, Rgb, VmRegistration, WindowId, WindowInfo};

/// Longest request line, in bytes, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;
/// Most keysyms in one `key` request.
pub const MAX_KEYSYMS: usize = 32;
/// Longest keysym name.
pub const MAX_KEYSYM_LEN: usize = 64;
/// Longest `text` in one `key` request, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Longest screenshot path, in bytes.
pub const MAX_PATH: usize = 4096;
/// Largest side `resize` takes (the shell then clamps to the output).
pub const MAX_RESIZE: i32 = 16384;
/// Most frames one `bench_render` may render.
pub const MAX_BENCH_FRAMES: u32 = 1000;
/// Most render-time samples a `stats` reply carries.
pub const MAX_STATS_SAMPLES: usize = 512;

/// Errors of decoding and validating control requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("request line is longer than {max} bytes")]
    LineTooLong { max: usize },
    #[error("request is not UTF-8")]
    NotUtf8,
    #[error("bad request: {0}")]
    BadJson(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Keyboard action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAction {
    Press,
    Release,
    /// Press then release each key (the only action allowed with `text`).
    #[default]
    Tap,
}

/// Pointer button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Button {
    Left,
    Right,
    Middle,
}

/// Pointer action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointerAction {
    /// Move only.
    Motion,
    Press,
    Release,
    /// Move, press and release.
    Click,
}

/// One control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    ListWindows,
    Focus {
        id: WindowId,
    },
    Close {
        id: WindowId,
    },
    /// Resize a window's client area (its top-left corner stays); the client
    /// gets a configure with the new size.
    Resize {
        id: WindowId,
        width: i32,
        height: i32,
    },
    Key {
        /// Focus this window first (host activation); default: the focused window.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<WindowId>,
        /// xkb keysym names (`Return`, `a`, `Control_L`), pressed in order.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keysyms: Option<Vec<String>>,
        /// Text to type (tapped character by character).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default)]
        action: KeyAction,
    },
    Pointer {
        x: i32,
        y: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        button: Option<Button>,
        action: PointerAction,
    },
    Screenshot {
        /// Output name; default: the primary output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
        /// One window (its client area and decoration) instead of an output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<WindowId>,
        /// Absolute `.png` path to write; default: the PNG comes back in base64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    RegisterVm {
        name: String,
        colour: Rgb,
        /// Clipboard policy; default `on-paste`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clipboard: Option<ClipboardPolicy>,
    },
    UnregisterVm {
        name: String,
    },
    /// At least one of the policy fields; the others stay as they are.
    SetVmPolicy {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accept_windows: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clipboard: Option<ClipboardPolicy>,
    },
    Subscribe,
    /// Render counters and the last repaint durations.
    Stats,
    /// Render the current scene `frames` times at once, repainting the whole
    /// output (no `damage`) or only `damage` each frame, and time it.
    BenchRender {
        frames: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        damage: Option<Rect>,
    },
}

fn invalid(msg: impl Into<String>) -> ControlError {
    ControlError::Invalid(msg.into())
}

fn valid_keysym(k: &str) -> bool {
    !k.is_empty() && k.len() <= MAX_KEYSYM_LEN && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Request {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ControlError> {
        match self {
            Request::Key { keysyms, text, action, .. } => match (keysyms, text) {
                (Some(_), Some(_)) | (None, None) => Err(invalid("key: give exactly one of \"keysyms\" or \"text\"")),
                (Some(k), None) => {
                    if k.is_empty() || k.len() > MAX_KEYSYMS {
                        return Err(invalid(format!("key: \"keysyms\" must hold 1 to {MAX_KEYSYMS} names")));
                    }
                    if let Some(bad) = k.iter().find(|k| !valid_keysym(k)) {
                        let shown: String = bad.chars().take(MAX_KEYSYM_LEN).collect();
                        return Err(invalid(format!("key: {shown:?} is not a keysym name ([A-Za-z0-9_], 1-64 chars)")));
                    }
                    Ok(())
                }
                (None, Some(t)) => {
                    if t.is_empty() || t.chars().count() > MAX_TEXT_CHARS {
                        return Err(invalid(format!("key: \"text\" must hold 1 to {MAX_TEXT_CHARS} characters")));
                    }
                    if *action != KeyAction::Tap {
                        return Err(invalid("key: \"text\" can only be tapped (omit \"action\" or use \"tap\")"));
                    }
                    Ok(())
                }
            },
            Request::Resize { width, height, .. } => {
                if !(1..=MAX_RESIZE).contains(width) || !(1..=MAX_RESIZE).contains(height) {
                    return Err(invalid(format!("resize: \"width\" and \"height\" must be 1 to {MAX_RESIZE}")));
                }
                Ok(())
            }
            Request::Pointer { button, action, .. } => match (action, button) {
                (PointerAction::Press | PointerAction::Release | PointerAction::Click, None) => {
                    Err(invalid("pointer: press, release and click need a \"button\""))
                }
                _ => Ok(()),
            },
            Request::Screenshot { output, window, path } => {
                if output.is_some() && window.is_some() {
                    return Err(invalid("screenshot: give \"output\" or \"window\", not both"));
                }
                if let Some(o) = output {
                    if o.is_empty() || o.len() > 64 || o.chars().any(char::is_control) {
                        return Err(invalid("screenshot: bad output name"));
                    }
                }
                if let Some(p) = path {
                    if !p.starts_with('/') || !p.ends_with(".png") || p.len() > MAX_PATH || p.contains('\0') {
                        return Err(invalid("screenshot: \"path\" must be an absolute path ending in .png"));
                    }
                }
                Ok(())
            }
            Request::SetVmPolicy { accept_windows: None, clipboard: None, .. } => {
                Err(invalid("set_vm_policy: give \"accept_windows\" and/or \"clipboard\""))
            }
            Request::BenchRender { frames, damage } => {
                if *frames == 0 || *frames > MAX_BENCH_FRAMES {
                    return Err(invalid(format!("bench_render: \"frames\" must be 1 to {MAX_BENCH_FRAMES}")));
                }
                if damage.is_some_and(|d| d.w <= 0 || d.h <= 0) {
                    return Err(invalid("bench_render: \"damage\" must have a positive size"));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Decodes and validates one request line (a trailing `\n` or `\r\n` is allowed).
pub fn decode_request(line: &[u8]) -> Result<Request, ControlError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(ControlError::LineTooLong { max: MAX_LINE });
    }
    let text = std::str::from_utf8(line).map_err(|_| ControlError::NotUtf8)?;
    let req: Request = serde_json::from_str(text).map_err(|e| ControlError::BadJson(e.to_string()))?;
    req.validate()?;
    Ok(req)
}

/// Splits a byte stream into request lines, capping each at [`MAX_LINE`].
///
/// An over-long line yields one [`ControlError::LineTooLong`] and is skipped
/// up to its newline; blank lines are ignored. Memory stays bounded by
/// [`MAX_LINE`] whatever the peer sends.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    discarding: bool,
}

impl LineSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the complete lines (without newline) they finish.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Result<Vec<u8>, ControlError>> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let nl = data.iter().position(|&b| b == b'\n');
            let (chunk, rest, ends) = match nl {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &[][..], false),
            };
            data = rest;
            if !self.discarding {
                if self.buf.len() + chunk.len() > MAX_LINE + 1 {
                    // +1 leaves room for a '\r' before the newline.
                    self.buf.clear();
                    self.discarding = true;
                    out.push(Err(ControlError::LineTooLong { max: MAX_LINE }));
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            if ends {
                if !self.discarding {
                    let mut line = std::mem::take(&mut self.buf);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if line.len() > MAX_LINE {
                        out.push(Err(ControlError::LineTooLong { max: MAX_LINE }));
                    } else if !line.iter().all(u8::is_ascii_whitespace) {
                        out.push(Ok(line));
                    }
                }
                self.discarding = false;
            }
        }
        out
    }

    /// Bytes of an unfinished line held.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Stable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not UTF-8, unknown `op`, missing or unknown field.
    BadRequest,
    LineTooLong,
    /// Well-formed but not acceptable (see the message).
    InvalidRequest,
    UnknownWindow,
    UnknownVm,
    InvalidName,
    InvalidColour,
    /// The colour is too close to the host colour.
    ColourReserved,
    DuplicateVm,
    DesktopExists,
    /// Policy refused it (VM refused, window cannot take focus).
    Refused,
    /// `key` without `id` while no window has focus.
    NoFocus,
    /// The display layer failed (screenshot, injection).
    Internal,
}

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let code = match e {
            ControlError::LineTooLong { .. } => ErrorCode::LineTooLong,
            ControlError::NotUtf8 | ControlError::BadJson(_) => ErrorCode::BadRequest,
            ControlError::Invalid(_) => ErrorCode::InvalidRequest,
        };
        ApiError::new(code, e.to_string())
    }
}

/// A successful response's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Bottom to top.
    Windows {
        windows: Vec<WindowInfo>,
        /// The compositor's clock when it answered, in ms since it started
        /// (the clock of `mapped_at_ms` and `first_content_ms`).
        now_ms: u64,
    },
    Done,
    VmRegistered(VmRegistration),
    VmUnregistered {
        name: String,
        closed: Vec<WindowId>,
    },
    /// Exactly one of `path` (written file) or `png_base64` is set.
    Screenshot {
        width: u32,
        height: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        png_base64: Option<String>,
    },
    Subscribed,
    /// Render statistics since the compositor started. Times in microseconds.
    Stats {
        /// Frames rendered (`repaints + idle_frames`).
        frames: u64,
        /// Frames that painted something.
        repaints: u64,
        /// Frames with nothing to paint (an idle scene).
        idle_frames: u64,
        /// Pixels painted, summed over all repaints.
        damaged_px: u64,
        /// Median and maximum of `samples_us` (0 when there is none).
        frame_us_p50: u64,
        frame_us_max: u64,
        /// Durations of the last repaints, oldest first (idle frames excluded).
        samples_us: Vec<u64>,
    },
    /// Per-frame durations of a `bench_render`, in microseconds.
    BenchRender {
        frames: u32,
        /// Pixels repainted per frame.
        damaged_px: u64,
        us_min: u64,
        us_p50: u64,
        us_max: u64,
    },
}

impl Reply {
    /// A `stats` reply from counters and repaint durations (oldest first).
    pub fn stats(repaints: u64, idle_frames: u64, damaged_px: u64, samples_us: &[u64]) -> Reply {
        let keep = samples_us.len().saturating_sub(MAX_STATS_SAMPLES);
        let samples_us = samples_us[keep..].to_vec();
        let s = summary(&samples_us);
        Reply::Stats {
            frames: repaints + idle_frames,
            repaints,
            idle_frames,
            damaged_px,
            frame_us_p50: s.1,
            frame_us_max: s.2,
            samples_us,
        }
    }

    /// A `bench_render` reply from per-frame durations.
    pub fn bench(damaged_px: u64, times_us: &[u64]) -> Reply {
        let (us_min, us_p50, us_max) = summary(times_us);
        Reply::BenchRender { frames: times_us.len() as u32, damaged_px, us_min, us_p50, us_max }
    }
}

/// (min, median, max) of a sample; the median of an even sample is the
/// lower middle value. All 0 when empty.
pub fn summary(values: &[u64]) -> (u64, u64, u64) {
    if values.is_empty() {
        return (0, 0, 0);
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    (v[0], v[(v.len() - 1) / 2], v[v.len() - 1])
}

/// One line the compositor writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Ok(Reply),
    Error(ApiError),
    Event(Event),
}

impl From<Result<Reply, ApiError>> for ServerMessage {
    fn from(r: Result<Reply, ApiError>) -> Self {
        match r {
            Ok(reply) => ServerMessage::Ok(reply),
            Err(e) => ServerMessage::Error(e),
        }
    }
}

/// Serialises one message as a line (JSON never holds a raw newline).
pub fn encode_line(msg: &ServerMessage) -> String {
    let mut s = serde_json::to_string(msg)
        .unwrap_or_else(|e| format!(r#"{{"type":"error","code":"internal","message":"cannot encode response: {e}"}}"#));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ClipboardPolicy;

    /// The registration is one struct in the types but the same flat
    /// object on the wire, for the reply and for the event.
    #[test]
    fn vm_registration_is_flat_on_the_wire() {
        let reg = VmRegistration {
            name: "work".into(),
            colour: Rgb::new(0x2e, 0xa0, 0x43),
            socket: "rayos-vm-work".into(),
            desktop_socket: "rayos-desktop-work".into(),
            clipboard: ClipboardPolicy::OnPaste,
        };
        let reply = serde_json::to_value(ServerMessage::Ok(Reply::VmRegistered(reg.clone()))).unwrap();
        assert_eq!(
            reply,
            serde_json::json!({"type": "ok", "reply": "vm_registered", "name": "work", "colour": "#2ea043",
                "socket": "rayos-vm-work", "desktop_socket": "rayos-desktop-work", "clipboard": "on-paste"})
        );
        let event = serde_json::to_value(ServerMessage::Event(Event::VmRegistered(reg.clone()))).unwrap();
        assert_eq!(event["event"], "vm_registered");
        assert_eq!(event["desktop_socket"], "rayos-desktop-work");
        let back: ServerMessage = serde_json::from_value(event).unwrap();
        assert_eq!(back, ServerMessage::Event(Event::VmRegistered(reg)));
    }
}
