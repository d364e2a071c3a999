//! The host end of the command channel: connect to a guest's agent through
//! the hybrid vsock socket of its vsock backend, negotiate, and ask.

pub mod client;

pub use client::{ClientError, GuestClient};

/// `s` made safe to print on a terminal: every control character (C0 but
/// tab, DEL, C1) and every bidirectional override or isolate becomes U+FFFD,
/// so a guest-supplied string (an app's name, its output, an error message)
/// cannot move the cursor, retitle the terminal or reorder what is shown.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            let bidi =
                matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}');
            if (c.is_control() && c != '\t') || bidi {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_and_overrides_never_reach_the_terminal() {
        assert_eq!(super::printable("foot\tTerminal"), "foot\tTerminal");
        assert_eq!(super::printable("\x1b]0;owned\x07name\r\n"), "\u{fffd}]0;owned\u{fffd}name\u{fffd}\u{fffd}");
        assert_eq!(super::printable("a\u{202e}b\u{9b}c\u{7f}"), "a\u{fffd}b\u{fffd}c\u{fffd}");
        assert_eq!(super::printable("Éditeur – ok"), "Éditeur – ok");
    }
}
