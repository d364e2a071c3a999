//! The actions the intent engine (or the planner) can propose.
//!
//! Serialised as the CLI's JSON contract:
//! `{"action":"launch","app_id":"<desktop id>","confidence":0.0-1.0,"args":[...]}`,
//! `{"action":"clarify","candidates":[{"app_id":..,"name":..,"confidence":..},...]}`,
//! `{"action":"none"}` (with a `reason` when there is one to tell), and, from the
//! planner only, `{"action":"plan","steps":[<launch>...]}` for multi-step
//! requests. When the contract crate lands, these map one to one onto its
//! command-channel messages.

use serde::{Deserialize, Serialize};

/// Errors of actions (none: a plain data module; kept for the one-enum rule).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {}

/// One app offered when the engine asks back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub app_id: String,
    pub name: String,
    pub confidence: f32,
}

/// What to do about a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Launch {
        app_id: String,
        confidence: f32,
        args: Vec<String>,
    },
    Clarify {
        candidates: Vec<Candidate>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        question: Option<String>,
    },
    None {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        reason: Option<String>,
    },
    Plan {
        steps: Vec<Action>,
    },
}

impl Action {
    pub fn none() -> Self {
        Action::None { reason: None }
    }

    pub fn none_because(reason: impl Into<String>) -> Self {
        Action::None { reason: Some(reason.into()) }
    }

    /// The app this action launches, if it is a launch.
    pub fn launched(&self) -> Option<&str> {
        match self {
            Action::Launch { app_id, .. } => Some(app_id),
            _ => None,
        }
    }

    /// The engine's first choice: the launched app or the first candidate.
    pub fn first_choice(&self) -> Option<&str> {
        match self {
            Action::Launch { app_id, .. } => Some(app_id),
            Action::Clarify { candidates, .. } => candidates.first().map(|c| c.app_id.as_str()),
            Action::Plan { steps } => steps.first().and_then(|s| s.first_choice()),
            Action::None { .. } => None,
        }
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{\"action\":\"none\"}".to_string())
    }
}

/// Round a confidence to three decimals, clamped to 0..=1.
pub fn round_confidence(x: f32) -> f32 {
    (x.clamp(0.0, 1.0) * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes() {
        let l = Action::Launch {
            app_id: "firefox-esr.desktop".into(),
            confidence: 0.8,
            args: vec!["https://example.org".into()],
        };
        assert_eq!(
            l.to_json(),
            r#"{"action":"launch","app_id":"firefox-esr.desktop","confidence":0.8,"args":["https://example.org"]}"#
        );
        assert_eq!(Action::none().to_json(), r#"{"action":"none"}"#);
        let c = Action::Clarify {
            candidates: vec![Candidate { app_id: "a.desktop".into(), name: "A".into(), confidence: 0.4 }],
            question: None,
        };
        assert_eq!(
            c.to_json(),
            r#"{"action":"clarify","candidates":[{"app_id":"a.desktop","name":"A","confidence":0.4}]}"#
        );
        let back: Action = serde_json::from_str(&l.to_json()).unwrap();
        assert_eq!(back, l);
        assert_eq!(c.first_choice(), Some("a.desktop"));
        assert_eq!(round_confidence(1.7), 1.0);
        assert_eq!(round_confidence(0.12345), 0.123);
    }
}
