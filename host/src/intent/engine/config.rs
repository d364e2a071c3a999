//! The engine's tunables and its input check.

use super::EngineError;

/// Largest request accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 2048;

/// Tunables of the decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineConfig {
    pub launch_threshold: f32,
    pub clarify_threshold: f32,
    /// Below `clarify_threshold` but at or above this, an app is still offered
    /// in a `clarify` when the request has concrete evidence for it (one of its
    /// informative words is in the app's text, or it names the app).
    pub weak_clarify_threshold: f32,
    /// Taken off hidden helper entries (NoDisplay and not a settings panel:
    /// previewers, autorun handlers, "open DVD" variants) unless the request
    /// names them: they are parts of other apps, rarely what a person asks for.
    pub helper_penalty: f32,
    /// Added when the request names the app (program or ID words rare in the catalog).
    pub name_bonus: f32,
    /// Added when the app's MimeType accepts every file/URL argument.
    pub mime_bonus: f32,
    /// Weight of each view kind's cosine (title, summary, keyword, category, files):
    /// views shared by many apps (category, files) count for less.
    pub view_weights: [f32; 5],
    /// Weight of the lexical score: the share of the request's informative
    /// words (weighted by rarity in the catalog) that the app's text contains.
    pub lexical_weight: f32,
    /// Share of the score taken from the app's second-best view, so apps whose
    /// several facets agree beat apps with one lucky facet.
    pub second_weight: f32,
    /// An app the guest system makes its default for the kind of app the
    /// best one is (`DesktopEntry::default_for`, e.g. its terminal) is
    /// launched instead when it scores within this much of the best.
    pub default_margin: f32,
    pub max_request_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            launch_threshold: 0.55,
            clarify_threshold: 0.35,
            weak_clarify_threshold: 0.30,
            helper_penalty: 0.10,
            name_bonus: 0.15,
            mime_bonus: 0.05,
            view_weights: [1.0, 1.0, 0.85, 0.75, 0.75],
            second_weight: 0.2,
            lexical_weight: 0.10,
            default_margin: 0.05,
            max_request_bytes: MAX_REQUEST_BYTES,
        }
    }
}

/// Check and decode a request given as bytes.
pub fn validate_request(bytes: &[u8], cap: usize) -> Result<&str, EngineError> {
    let text = std::str::from_utf8(bytes).map_err(|e| EngineError::NotUtf8 { offset: e.valid_up_to() })?;
    if text.len() > cap {
        return Err(EngineError::RequestTooLong { len: text.len(), cap });
    }
    if text.trim().is_empty() {
        return Err(EngineError::EmptyRequest);
    }
    Ok(text)
}
