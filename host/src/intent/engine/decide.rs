//! The decision on the scores: launch, clarify (up to three candidates, one
//! per program) or none; and the arguments the launched app can take.

use std::collections::HashSet;

use super::super::action::{round_confidence, Action, Candidate};
use super::super::args::{self, Arg, Extracted};
use super::super::catalog::DesktopEntry;
use super::super::describe::{lex_terms, words};
use super::super::embed::Embedder;
use super::super::policy;
use super::{validate_request, Engine, EngineConfig, EngineError, Explanation, Resolution, Scored};

impl<E: Embedder> Engine<E> {
    /// Resolve a request to an action.
    pub fn resolve(&self, request: &str) -> Result<Resolution, EngineError> {
        let request = validate_request(request.as_bytes(), self.config.max_request_bytes)?;
        let ex = args::extract(request);
        let mut explanation = Explanation {
            request: request.to_string(),
            model_text: ex.text.clone(),
            args: ex.args.clone(),
            launch_threshold: self.config.launch_threshold,
            clarify_threshold: self.config.clarify_threshold,
            ..Default::default()
        };
        if let Some(reason) = policy::screen_request(request) {
            explanation.decision = format!("none: {reason}");
            return Ok(Resolution { action: Action::none_because(reason), explanation });
        }
        let request_words = words(request);
        let scored = self.score(&ex, &request_words, 16)?;
        let grounded = self.grounded(&ex, &scored);
        explanation.top = scored.iter().take(5).cloned().collect();

        let cfg = &self.config;
        let best_any = scored.first();
        let action = if let Some((s, hidden)) = choose(cfg, grounded, &scored) {
            let (s, default_kind) = self.prefer_default(s, hidden, &scored);
            let action = self.launch(s, hidden, &ex, &mut explanation);
            if let Some(kind) = default_kind {
                explanation.decision.push_str(&format!(
                    "; the system's default {kind}, within {:.2} of the best ({})",
                    cfg.default_margin, scored[0].app_id
                ));
            }
            action
        } else if scored.iter().any(|s| offered(cfg, grounded, s)) {
            clarify(cfg, grounded, &scored, &mut explanation)
        } else {
            explanation.decision = none_decision(cfg, grounded, best_any);
            Action::none()
        };
        explanation.ranked_first =
            action.first_choice().map(str::to_string).or_else(|| best_any.map(|a| a.app_id.clone()));
        if let Err(e) = policy::check(&action, &self.catalog, &ex.args) {
            explanation.decision = format!("none: the policy refused {}: {e}", action.to_json());
            return Ok(Resolution { action: Action::none_because(format!("policy: {e}")), explanation });
        }
        Ok(Resolution { action, explanation })
    }

    /// Grounded: the request carries an argument, names an app, or uses at
    /// least one informative word some app is described with. A request
    /// none of whose words the catalog knows ("hello", "tell me a joke")
    /// asks for nothing an app here does: it is never launched, and only
    /// asked back about when the model is sure enough to launch otherwise.
    fn grounded(&self, ex: &Extracted, scored: &[Scored]) -> bool {
        !ex.args.is_empty()
            || scored.iter().any(|s| s.name_bonus > 0.0)
            || lex_terms(&ex.text).iter().any(|t| self.idf.contains_key(t))
    }

    /// `chosen`, or the app the guest system makes its default for a kind of
    /// app `chosen` is (a category they share) when it also reaches the
    /// launch threshold within [`EngineConfig::default_margin`] of it: among
    /// near-equals, the one the user's system already picked (with that kind).
    fn prefer_default<'a>(
        &self,
        chosen: &'a Scored,
        hidden: bool,
        scored: &'a [Scored],
    ) -> (&'a Scored, Option<String>) {
        let cfg = &self.config;
        let Some(best) = self.catalog.get(&chosen.app_id) else { return (chosen, None) };
        if best.default_for.iter().any(|k| best.categories.contains(k)) {
            return (chosen, None);
        }
        for s in scored {
            if s.no_display != hidden || s.score < cfg.launch_threshold || chosen.score - s.score > cfg.default_margin {
                continue;
            }
            let Some(e) = self.catalog.get(&s.app_id) else { continue };
            if let Some(kind) = e.default_for.iter().find(|k| best.categories.contains(k) && e.categories.contains(k)) {
                return (s, Some(kind.clone()));
            }
        }
        (chosen, None)
    }

    /// The launch of `s` with the arguments its Exec can take.
    fn launch(&self, s: &Scored, hidden: bool, ex: &Extracted, explanation: &mut Explanation) -> Action {
        let cfg = &self.config;
        let entry = self.catalog.get(&s.app_id).expect("scored apps come from the catalog");
        let (args, dropped) = fit_args(entry, &ex.args);
        explanation.decision = format!(
            "launch {} (score {:.3} >= {:.2}{}){}",
            s.app_id,
            s.score,
            cfg.launch_threshold,
            if hidden { "; a NoDisplay entry, used because no visible app reached the threshold" } else { "" },
            if dropped.is_empty() {
                String::new()
            } else {
                format!("; not passed (the app's Exec cannot take them): {}", dropped.join(" "))
            }
        );
        Action::Launch { app_id: s.app_id.clone(), confidence: round_confidence(s.score), args }
    }
}

/// The app to launch, if any reaches the launch threshold on a grounded
/// request: the best visible one, else the best hidden one (`true`).
fn choose<'a>(cfg: &EngineConfig, grounded: bool, scored: &'a [Scored]) -> Option<(&'a Scored, bool)> {
    let best_visible = scored.iter().find(|s| !s.no_display);
    match (best_visible, scored.first()) {
        _ if !grounded => None,
        (Some(v), _) if v.score >= cfg.launch_threshold => Some((v, false)),
        (_, Some(a)) if a.score >= cfg.launch_threshold => Some((a, true)),
        _ => None,
    }
}

/// Offered in a clarify: at or above the clarify threshold (the launch
/// threshold when the request is not grounded), or in the weak band with
/// evidence of its own (a shared informative word, or its name).
fn offered(cfg: &EngineConfig, grounded: bool, s: &Scored) -> bool {
    if !grounded {
        s.score >= cfg.launch_threshold
    } else {
        s.score >= cfg.clarify_threshold
            || (s.score >= cfg.weak_clarify_threshold && (s.lexical_bonus > 0.0 || s.name_bonus > 0.0))
    }
}

/// A clarify with up to three offered apps: visible ones, NoDisplay ones
/// only if no visible one qualifies; one candidate per program (foot, foot
/// --server), visible ones kept apart from hidden ones.
fn clarify(cfg: &EngineConfig, grounded: bool, scored: &[Scored], explanation: &mut Explanation) -> Action {
    let mut seen = HashSet::new();
    let qualifying: Vec<&Scored> =
        scored.iter().filter(|s| offered(cfg, grounded, s) && seen.insert((s.family.clone(), s.no_display))).collect();
    let mut picks: Vec<&Scored> = qualifying.iter().copied().filter(|s| !s.no_display).take(3).collect();
    if picks.is_empty() {
        picks.extend(qualifying.iter().copied().filter(|s| s.no_display).take(3));
    }
    explanation.decision = if grounded {
        format!("clarify: best score {:.3} is below the launch threshold {:.2}", scored[0].score, cfg.launch_threshold)
    } else {
        format!(
            "clarify: no word of the request is used by any app of the catalog, so nothing is launched on the model's score alone ({:.3})",
            scored[0].score
        )
    };
    Action::Clarify {
        candidates: picks
            .into_iter()
            .map(|s| Candidate {
                app_id: s.app_id.clone(),
                name: s.name.clone(),
                confidence: round_confidence(s.score),
            })
            .collect(),
        question: Some("Which app did you mean?".into()),
    }
}

/// Why nothing fits, in words.
fn none_decision(cfg: &EngineConfig, grounded: bool, best_any: Option<&Scored>) -> String {
    if grounded {
        format!(
            "none: best score {:.3} is below the clarify threshold {:.2} (or {:.2} with a shared word): nothing in the catalog fits",
            best_any.map_or(0.0, |b| b.score),
            cfg.clarify_threshold,
            cfg.weak_clarify_threshold
        )
    } else {
        format!(
            "none: no word of the request is used by any app of the catalog, and the best score {:.3} is below the launch threshold {:.2}",
            best_any.map_or(0.0, |b| b.score),
            cfg.launch_threshold
        )
    }
}

/// The arguments an app can take: URLs only with `%u/%U`, files with any file
/// code, and one unless it takes many. Returns (passed, dropped).
fn fit_args(entry: &DesktopEntry, found: &[Arg]) -> (Vec<String>, Vec<String>) {
    let mut pass = Vec::new();
    let mut drop = Vec::new();
    for a in found {
        let ok = match a.kind {
            args::ArgKind::Url => entry.takes_urls(),
            args::ArgKind::Path => entry.takes_files(),
        };
        if ok && (pass.is_empty() || entry.takes_many()) {
            pass.push(a.value.clone());
        } else {
            drop.push(a.value.clone());
        }
    }
    (pass, drop)
}
