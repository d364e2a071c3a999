//! What the engine tells about a decision: each scored app's parts, the
//! thresholds, and the decision in words (`rayos intent --explain`).

use std::fmt;

use super::super::action::Action;
use super::super::args::Arg;

/// One scored app, for the decision and the explanation.
#[derive(Debug, Clone)]
pub struct Scored {
    pub app_id: String,
    pub name: String,
    pub score: f32,
    pub best_view: &'static str,
    pub best_view_text: String,
    pub cosine: f32,
    pub name_bonus: f32,
    pub mime_bonus: f32,
    pub lexical_bonus: f32,
    /// Taken off a hidden helper entry (see [`EngineConfig::helper_penalty`]).
    pub helper_penalty: f32,
    pub no_display: bool,
    pub(super) family: String,
}

/// Why the engine decided what it did.
#[derive(Debug, Clone, Default)]
pub struct Explanation {
    pub request: String,
    pub model_text: String,
    pub args: Vec<Arg>,
    /// The best-scored apps, best first (NoDisplay ones included, flagged).
    pub top: Vec<Scored>,
    /// The app the engine ranks first: its launch or first clarify candidate,
    /// or, when it answers none, the best-scored app.
    pub ranked_first: Option<String>,
    pub decision: String,
    pub launch_threshold: f32,
    pub clarify_threshold: f32,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "request:    {:?}", self.request)?;
        writeln!(f, "model text: {:?}", self.model_text)?;
        if self.args.is_empty() {
            writeln!(f, "arguments:  none found")?;
        } else {
            for a in &self.args {
                writeln!(
                    f,
                    "argument:   {} ({:?}, {}, read as \"{}\")",
                    a.value,
                    a.kind,
                    a.mime.unwrap_or("type unknown"),
                    a.phrase
                )?;
            }
        }
        writeln!(f, "thresholds: launch >= {:.2}, clarify >= {:.2}", self.launch_threshold, self.clarify_threshold)?;
        for (i, s) in self.top.iter().enumerate() {
            write!(f, "  {}. {:<40} {:.3} = {} {:.3}", i + 1, s.app_id, s.score, s.best_view, s.cosine)?;
            if s.name_bonus > 0.0 {
                write!(f, " + named {:.2}", s.name_bonus)?;
            }
            if s.lexical_bonus > 0.0 {
                write!(f, " + words {:.2}", s.lexical_bonus)?;
            }
            if s.mime_bonus > 0.0 {
                write!(f, " + opens the argument {:.2}", s.mime_bonus)?;
            }
            if s.helper_penalty > 0.0 {
                write!(f, " - hidden helper {:.2}", s.helper_penalty)?;
            }
            if s.no_display {
                write!(f, " [NoDisplay]")?;
            }
            writeln!(f, "\n     matched {:?}", s.best_view_text)?;
        }
        write!(f, "decision:   {}", self.decision)
    }
}

/// The outcome of one request.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub action: Action,
    pub explanation: Explanation,
}
