//! The window model: ids, modes, client-supplied text, per-window state.
//!
//! Design note: a [`Window`] is the host's record of one toplevel it shows.
//! Its id is a `u64` handed out by the shell from a counter that only grows,
//! so an id is never reused and a stale id held by a control client can only
//! ever name nothing. The origin is fixed at creation (from the socket the
//! client connected on). Everything a client supplies (title, app_id) passes
//! through [`sanitize_text`] first: control and formatting characters
//! (including bidi overrides and zero-width characters, which could reorder
//! or hide text) are dropped, whitespace is collapsed and the length capped,
//! so a guest cannot lay out forged text in our decorations or in the
//! control API's output. The decoration's trust label never uses this text
//! anyway: it comes from the origin.
//!
//! Geometry: `floating` is where the window sits when neither maximized nor
//! fullscreen; the shell derives the effective client rectangle from it and
//! the state flags (see [`crate::shell::Shell::geometry`]), so leaving
//! maximized or fullscreen restores the floating geometry exactly.

use crate::geometry::Rect;
use crate::origin::Origin;
pub use rayos_compositor_ipc::types::{Mode, WindowId, WindowInfo};

/// Errors of window-model validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("invalid window mode {0:?}: expected \"embedded_desktop\" or \"native\"")]
    InvalidMode(String),
}

/// Longest title kept, in characters.
pub const MAX_TITLE_CHARS: usize = 128;
/// Longest app_id kept, in characters.
pub const MAX_APP_ID_CHARS: usize = 128;

/// Whether a char is dropped from client text: C0/C1 controls, and Unicode
/// format characters that reorder or hide text.
fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}'                  // soft hyphen
            | '\u{061c}'                // arabic letter mark
            | '\u{180e}'                // mongolian vowel separator
            | '\u{200b}'..='\u{200f}'   // zero-width space/joiners, LRM, RLM
            | '\u{2028}'..='\u{202e}'   // line/para separators, bidi embeddings and overrides
            | '\u{2060}'..='\u{206f}'   // word joiner, invisible operators, bidi isolates
            | '\u{fe00}'..='\u{fe0f}'   // variation selectors
            | '\u{feff}'                // BOM / zero-width no-break space
            | '\u{fff9}'..='\u{fffb}'   // interlinear annotations
        )
}

/// Cleans client-supplied text: forbidden characters dropped, runs of
/// whitespace collapsed to one space, trimmed, capped at `max_chars`.
pub fn sanitize_text(raw: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(raw.len().min(max_chars * 4));
    let mut count = 0;
    let mut pending_space = false;
    for c in raw.chars() {
        if c.is_whitespace() {
            // Includes newlines, tabs and the Unicode line separators.
            pending_space = count > 0;
            continue;
        }
        if is_forbidden(c) {
            continue;
        }
        if pending_space {
            if count + 1 >= max_chars {
                break;
            }
            out.push(' ');
            count += 1;
            pending_space = false;
        }
        if count >= max_chars {
            break;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// Sanitises a title.
pub fn sanitize_title(raw: &str) -> String {
    sanitize_text(raw, MAX_TITLE_CHARS)
}

/// Sanitises an app_id.
pub fn sanitize_app_id(raw: &str) -> String {
    sanitize_text(raw, MAX_APP_ID_CHARS)
}

/// The host's record of one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub id: WindowId,
    pub origin: Origin,
    pub mode: Mode,
    /// Sanitised.
    pub app_id: String,
    /// Sanitised.
    pub title: String,
    /// Client rectangle when neither maximized nor fullscreen.
    pub floating: Rect,
    pub maximized: bool,
    pub fullscreen: bool,
    pub minimized: bool,
    /// The client asked to be activated; the host decides (shown as a hint).
    pub demands_attention: bool,
    /// Commits of the toplevel's surface that attached a new buffer, since mapped.
    pub commits: u64,
    /// When it was mapped, in ms since the compositor started.
    pub mapped_at_ms: u64,
    /// When a frame first showed its client buffer, in ms since the
    /// compositor started (`None` before).
    pub first_content_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_controls_and_bidi() {
        assert_eq!(sanitize_title("a\u{1b}[31mb"), "a[31mb");
        assert_eq!(sanitize_title("\u{202e}txt.exe"), "txt.exe");
        assert_eq!(sanitize_title("RayOS\u{200b} host"), "RayOS host");
        assert_eq!(sanitize_title("x\u{85}y\u{9f}z\u{2029}w"), "x yz w");
        assert_eq!(sanitize_title("  two\n\nlines\t here  "), "two lines here");
        assert_eq!(sanitize_title("\u{feff}\u{2066}"), "");
    }

    #[test]
    fn caps_length() {
        let long = "é".repeat(1000);
        let t = sanitize_title(&long);
        assert_eq!(t.chars().count(), MAX_TITLE_CHARS);
        let spaced = "a ".repeat(500);
        let t = sanitize_title(&spaced);
        assert!(t.chars().count() <= MAX_TITLE_CHARS);
        assert!(!t.ends_with(' '));
    }

    #[test]
    fn modes_parse_and_serialize() {
        assert_eq!("embedded-desktop".parse::<Mode>().unwrap(), Mode::EmbeddedDesktop);
        assert_eq!("native".parse::<Mode>().unwrap(), Mode::Native);
        assert!("tiled".parse::<Mode>().is_err());
        assert_eq!(serde_json::to_string(&Mode::EmbeddedDesktop).unwrap(), "\"embedded_desktop\"");
        assert_eq!(serde_json::to_string(&WindowId(7)).unwrap(), "7");
    }
}
