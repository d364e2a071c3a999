//! The intent engine: request → action, by sentence similarity over the catalog.
//!
//! Index (once per catalog; vectors cached by content, see [`super::cache`]):
//! each app is described by several short *views*, each embedded on its own:
//! - `title`: the Name, and the GenericName ("Firefox ESR", "Web Browser");
//! - `summary`: the Comment;
//! - `keyword`: each Keyword on its own (a long list in one text says little);
//! - `category`: what its freedesktop Categories are and are for, a few short
//!   phrases per registered category of the menu specification
//!   ([`super::describe::category_phrases`]: "web browser", "browse websites
//!   and search the internet");
//! - `files`: each kind of file its MimeType list opens, most frequent first
//!   ("opens PDF documents").
//!
//! Short views keep one long Comment or MIME list from drowning the rest, and a
//! request only has to match one facet of an app.
//!
//! Scoring a request: arguments are pulled out and replaced by phrases
//! ([`super::args`]) and the text is embedded once. An app's semantic score is
//! 0.8 × its best view's cosine + 0.2 × its second best (apps whose facets
//! agree beat apps with one lucky view), each cosine weighted by how
//! app-specific its view kind is (category and files views are shared by many
//! apps and count for less). To it are added:
//! - a lexical score: the share of the request's informative words (weighted by
//!   how rare they are in the catalog; stemmed) found in the app's text, × 0.1;
//! - a bonus when the request names the app's program or reverse-DNS ID in
//!   words no more than three programs of the catalog use ("open vlc" is sure,
//!   "open files" is not);
//! - a small bonus when the app's MimeType accepts every file/URL argument.
//!
//! Hidden helper entries (NoDisplay and not a settings panel: previewers,
//! autorun handlers) lose `helper_penalty` unless the request names them.
//!
//! Decision, on that score:
//! - a request none of whose informative words any app uses, that names no
//!   app and carries no argument ("hello", "tell me a joke") is *ungrounded*:
//!   never launched; `clarify` only at or above the launch threshold, else `none`;
//! - ≥ `launch_threshold` → `launch` (NoDisplay apps only when no visible app
//!   reaches it), with the arguments the app's Exec can take;
//! - else `clarify` with up to 3 apps (one per program; NoDisplay ones only
//!   when no visible app qualifies) that reach `clarify_threshold`, or
//!   `weak_clarify_threshold` with evidence of their own (a shared informative
//!   word, or the app's name);
//! - else `none`.
//!
//! The weights and thresholds were set on `tests/intent/labels.tsv`;
//! `labels-holdout.tsv` measures them on requests they were not set on.
//! Requests that ask to destroy data are refused before scoring
//! ([`super::policy`]), and every action passes [`super::policy::check`].

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::action::{round_confidence, Action, Candidate};
use super::args::{self, Arg, Extracted};
use super::cache::{CacheError, VectorCache};
use super::catalog::{Catalog, DesktopEntry};
use super::describe::{app_terms, build_views, contains_seq, lex_terms, rare_terms, words, View};
use super::embed::{dot, EmbedError, Embedder};
use super::policy;

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the request is empty")]
    EmptyRequest,
    #[error("the request is {len} bytes; the cap is {cap} bytes")]
    RequestTooLong { len: usize, cap: usize },
    #[error("the request is not valid UTF-8 (bad byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("the catalog has no applications")]
    EmptyCatalog,
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

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
            max_request_bytes: MAX_REQUEST_BYTES,
        }
    }
}

struct App {
    entry: DesktopEntry,
    /// Program name, or the ID when there is none: apps sharing it are one app
    /// for the candidate list (foot, footclient).
    family: String,
    /// Word sequences that name this app and few others.
    name_terms: Vec<Vec<String>>,
    /// Stemmed words of everything the app is described with (for the lexical score).
    terms: HashSet<String>,
    /// A hidden helper: NoDisplay and not a settings panel.
    helper: bool,
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
    family: String,
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

/// The engine over one catalog.
pub struct Engine<E: Embedder> {
    embedder: E,
    apps: Vec<App>,
    views: Vec<View>,
    /// Row-major, one `dim` row per view.
    vectors: Vec<f32>,
    dim: usize,
    config: EngineConfig,
    catalog: Catalog,
    /// Inverse document frequency of each stemmed word over the apps.
    idf: HashMap<String, f32>,
    idf_max: f32,
}

impl<E: Embedder> Engine<E> {
    /// Index a catalog: build the views and get their vectors (from the cache,
    /// embedding only what it lacks).
    pub fn build(
        embedder: E,
        catalog: Catalog,
        cache: &mut VectorCache,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        if catalog.entries.is_empty() {
            return Err(EngineError::EmptyCatalog);
        }
        let mut apps: Vec<App> = catalog
            .entries
            .iter()
            .map(|e| App {
                entry: e.clone(),
                family: e.program().unwrap_or_else(|| e.id.clone()),
                name_terms: Vec::new(),
                terms: app_terms(e),
                helper: e.no_display && !e.categories.iter().any(|c| c == "Settings"),
            })
            .collect();
        let mut df: HashMap<String, usize> = HashMap::new();
        for a in &apps {
            for t in &a.terms {
                *df.entry(t.clone()).or_default() += 1;
            }
        }
        let n = apps.len() as f32;
        let idf: HashMap<String, f32> = df.into_iter().map(|(t, d)| (t, ((n + 1.0) / (d as f32 + 0.5)).ln())).collect();
        let idf_max = ((n + 1.0) / 1.5).ln();
        let names = rare_terms(&apps.iter().map(|a| (&a.entry, a.family.as_str())).collect::<Vec<_>>(), 3);
        for (a, n) in apps.iter_mut().zip(names) {
            a.name_terms = n;
        }
        let views: Vec<View> = apps.iter().enumerate().flat_map(|(i, a)| build_views(i, &a.entry)).collect();
        let texts: Vec<String> = views.iter().map(|v| v.text.clone()).collect();
        let vecs = cache.vectors(&embedder, &texts)?;
        let dim = embedder.dim();
        let mut vectors = Vec::with_capacity(vecs.len() * dim);
        for v in vecs {
            vectors.extend_from_slice(&v);
        }
        Ok(Self { embedder, apps, views, vectors, dim, config, catalog, idf, idf_max })
    }

    pub fn embedder(&self) -> &E {
        &self.embedder
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Number of embedded views.
    pub fn view_count(&self) -> usize {
        self.views.len()
    }

    /// Score every app for an (already extracted) request and return the
    /// `keep` best (plus the best visible ones, which the decision needs), best first.
    pub fn score(&self, ex: &Extracted, request_words: &[String], keep: usize) -> Result<Vec<Scored>, EngineError> {
        let q = self.embedder.embed(&[ex.text.as_str()])?.pop().ok_or(EmbedError::Shape {
            got: 0,
            want: 1,
            dim: 0,
            expected: self.dim,
        })?;
        if q.len() != self.dim {
            return Err(EmbedError::Shape { got: 1, want: 1, dim: q.len(), expected: self.dim }.into());
        }
        let w = &self.config.view_weights;
        // Per app: (best weighted cosine, its view, second best).
        let mut best: Vec<(f32, usize, f32)> =
            vec![(f32::NEG_INFINITY, usize::MAX, f32::NEG_INFINITY); self.apps.len()];
        for (vi, row) in self.vectors.chunks_exact(self.dim).enumerate() {
            let view = &self.views[vi];
            let c = dot(&q, row) * w[view.kind.index()];
            let b = &mut best[view.app];
            if c > b.0 {
                b.2 = b.0;
                b.0 = c;
                b.1 = vi;
            } else if c > b.2 {
                b.2 = c;
            }
        }
        let sw = self.config.second_weight;
        // Lexical: the request's informative words, weighted by rarity; words the
        // catalog never uses (names, places) count half, common ones not at all.
        let mut qterms: Vec<(String, f32)> = Vec::new();
        for t in lex_terms(&ex.text) {
            if qterms.iter().any(|(x, _)| *x == t) {
                continue;
            }
            let w = match self.idf.get(&t) {
                Some(&i) if i < 1.0 => continue,
                Some(&i) => i,
                None => self.idf_max * 0.5,
            };
            qterms.push((t, w));
        }
        let qmass: f32 = qterms.iter().map(|(_, w)| w).sum();
        let lw = self.config.lexical_weight;
        let file_args: Vec<&Arg> = ex.args.iter().filter(|a| a.mime.is_some()).collect();
        // (score, app, view, semantic, name bonus, mime bonus, lexical bonus), no allocation per app.
        let mut parts: Vec<(f32, usize, usize, f32, f32, f32, f32)> = Vec::with_capacity(self.apps.len());
        for (ai, (app, &(top, vi, second))) in self.apps.iter().zip(&best).enumerate() {
            if vi == usize::MAX {
                continue;
            }
            let second = if second.is_finite() { second } else { top };
            let cos = (1.0 - sw) * top + sw * second;
            let named = app.name_terms.iter().any(|t| contains_seq(request_words, t));
            let name_bonus = if named { self.config.name_bonus } else { 0.0 };
            let opens_all = !file_args.is_empty()
                && app.entry.takes_files()
                && file_args.iter().all(|a| args::mime_accepts(&app.entry.mime_types, a.mime.unwrap_or("")));
            let mime_bonus = if opens_all { self.config.mime_bonus } else { 0.0 };
            let lexical = if qmass > 0.0 {
                qterms.iter().filter(|(t, _)| app.terms.contains(t)).map(|(_, w)| w).sum::<f32>() / qmass
            } else {
                0.0
            };
            let lexical_bonus = lw * lexical;
            let penalty = if app.helper && !named { self.config.helper_penalty } else { 0.0 };
            parts.push((
                cos + name_bonus + mime_bonus + lexical_bonus - penalty,
                ai,
                vi,
                cos,
                name_bonus,
                mime_bonus,
                lexical_bonus,
            ));
        }
        let by_score = |a: &(f32, usize, usize, f32, f32, f32, f32), b: &(f32, usize, usize, f32, f32, f32, f32)| {
            b.0.total_cmp(&a.0).then_with(|| self.apps[a.1].entry.id.cmp(&self.apps[b.1].entry.id))
        };
        let mut picked: Vec<usize> = Vec::new();
        if parts.len() > keep {
            // Best `keep` overall, and best `keep` visible ones.
            let mut all = parts.clone();
            all.select_nth_unstable_by(keep - 1, by_score);
            picked.extend(all[..keep].iter().map(|p| p.1));
            let mut vis: Vec<_> = parts.iter().filter(|p| !self.apps[p.1].entry.no_display).cloned().collect();
            if vis.len() > keep {
                vis.select_nth_unstable_by(keep - 1, by_score);
                vis.truncate(keep);
            }
            picked.extend(vis.iter().map(|p| p.1));
            picked.sort_unstable();
            picked.dedup();
            parts.retain(|p| picked.binary_search(&p.1).is_ok());
        }
        parts.sort_by(by_score);
        Ok(parts
            .into_iter()
            .map(|(score, ai, vi, cos, name_bonus, mime_bonus, lexical_bonus)| {
                let app = &self.apps[ai];
                Scored {
                    app_id: app.entry.id.clone(),
                    name: app.entry.name.clone(),
                    score,
                    best_view: self.views[vi].kind.label(),
                    best_view_text: self.views[vi].text.clone(),
                    cosine: cos,
                    name_bonus,
                    mime_bonus,
                    lexical_bonus,
                    helper_penalty: if app.helper && name_bonus == 0.0 { self.config.helper_penalty } else { 0.0 },
                    no_display: app.entry.no_display,
                    family: app.family.clone(),
                }
            })
            .collect())
    }

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

        let cfg = &self.config;
        // Grounded: the request carries an argument, names an app, or uses at
        // least one informative word some app is described with. A request
        // none of whose words the catalog knows ("hello", "tell me a joke")
        // asks for nothing an app here does: it is never launched, and only
        // asked back about when the model is sure enough to launch otherwise.
        let grounded = !ex.args.is_empty()
            || scored.iter().any(|s| s.name_bonus > 0.0)
            || lex_terms(&ex.text).iter().any(|t| self.idf.contains_key(t));
        let best_visible = scored.iter().find(|s| !s.no_display);
        let best_any = scored.first();
        let chosen = match (best_visible, best_any) {
            _ if !grounded => None,
            (Some(v), _) if v.score >= cfg.launch_threshold => Some((v, false)),
            (_, Some(a)) if a.score >= cfg.launch_threshold => Some((a, true)),
            _ => None,
        };
        // Offered in a clarify: at or above the clarify threshold (the launch
        // threshold when the request is not grounded), or in the weak band
        // with evidence of its own (a shared informative word, or its name).
        let offer = |s: &Scored| {
            if !grounded {
                s.score >= cfg.launch_threshold
            } else {
                s.score >= cfg.clarify_threshold
                    || (s.score >= cfg.weak_clarify_threshold && (s.lexical_bonus > 0.0 || s.name_bonus > 0.0))
            }
        };
        explanation.top = scored.iter().take(5).cloned().collect();

        let action = if let Some((s, hidden)) = chosen {
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
        } else if scored.iter().any(&offer) {
            // Visible apps; NoDisplay ones only if no visible one qualifies.
            // One candidate per program (foot, foot --server), visible ones kept apart from hidden ones.
            let mut seen = HashSet::new();
            let qualifying: Vec<&Scored> =
                scored.iter().filter(|s| offer(s) && seen.insert((s.family.clone(), s.no_display))).collect();
            let mut picks: Vec<&Scored> = qualifying.iter().copied().filter(|s| !s.no_display).take(3).collect();
            if picks.is_empty() {
                picks.extend(qualifying.iter().copied().filter(|s| s.no_display).take(3));
            }
            explanation.decision = if grounded {
                format!(
                    "clarify: best score {:.3} is below the launch threshold {:.2}",
                    scored[0].score, cfg.launch_threshold
                )
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
        } else {
            explanation.decision = if grounded {
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
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::catalog::parse_desktop;
    use crate::intent::embed::fake::HashEmbedder;

    fn entry(id: &str, body: &str) -> DesktopEntry {
        parse_desktop(id, &format!("[Desktop Entry]\nType=Application\n{body}")).unwrap().unwrap()
    }

    fn catalog() -> Catalog {
        Catalog::from_entries(vec![
            entry("firefox.desktop", "Name=Firefox\nGenericName=Web Browser\nComment=Browse the World Wide Web\nExec=firefox %u\nCategories=Network;WebBrowser;\nMimeType=text/html;x-scheme-handler/https;\n"),
            entry("foot.desktop", "Name=Foot\nGenericName=Terminal\nComment=A terminal emulator\nKeywords=shell;prompt;command;\nExec=foot\nCategories=System;TerminalEmulator;\n"),
            entry("footclient.desktop", "Name=Foot Client\nGenericName=Terminal\nComment=A terminal emulator client\nKeywords=shell;prompt;command;\nExec=footclient\nCategories=System;TerminalEmulator;\n"),
            entry("evince.desktop", "Name=Document Viewer\nComment=View PDF documents\nKeywords=pdf;document;\nExec=evince %U\nMimeType=application/pdf;\n"),
            entry("panel.desktop", "Name=Wallpaper\nComment=Change the desktop background wallpaper\nExec=settings background\nNoDisplay=true\n"),
            entry("shows.desktop", "Name=Wallpaper Shows\nComment=Slide shows of wallpaper\nExec=shows\n"),
        ])
    }

    fn engine(cfg: EngineConfig) -> Engine<HashEmbedder> {
        let e = HashEmbedder::new();
        let mut cache = VectorCache::in_memory(e.fingerprint(), e.dim());
        Engine::build(e, catalog(), &mut cache, cfg).unwrap()
    }

    #[test]
    fn launches_the_best_app_with_its_arguments() {
        let eng = engine(EngineConfig::default());
        let r = eng.resolve("browse the web at https://example.org/a").unwrap();
        match &r.action {
            Action::Launch { app_id, args, confidence } => {
                assert_eq!(app_id, "firefox.desktop");
                assert_eq!(args, &["https://example.org/a".to_string()]);
                assert!(*confidence > 0.5 && *confidence <= 1.0);
            }
            other => panic!("{other:?}\n{}", r.explanation),
        }
        let r = eng.resolve("view the pdf document ~/a.pdf").unwrap();
        assert_eq!(r.action.launched(), Some("evince.desktop"), "{}", r.explanation);
        assert!(r.explanation.to_string().contains("decision:"));
    }

    #[test]
    fn unrelated_requests_get_none() {
        let eng = engine(EngineConfig::default());
        let r = eng.resolve("order a pizza with extra olives").unwrap();
        assert_eq!(r.action, Action::none(), "{}", r.explanation);
        let r = eng.resolve("format my hard drive").unwrap();
        assert!(matches!(r.action, Action::None { reason: Some(_) }), "{}", r.explanation);
    }

    #[test]
    fn clarify_between_thresholds_with_one_candidate_per_program() {
        let cfg = EngineConfig { launch_threshold: 0.99, clarify_threshold: 0.05, ..Default::default() };
        let eng = engine(cfg);
        let r = eng.resolve("terminal shell").unwrap();
        match &r.action {
            Action::Clarify { candidates, .. } => {
                assert!(candidates.len() <= 3);
                assert!(candidates[0].app_id.starts_with("foot"));
                let ids: HashSet<_> = candidates.iter().map(|c| c.app_id.as_str()).collect();
                assert_eq!(ids.len(), candidates.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nodisplay_only_when_nothing_visible_fits() {
        let cfg = EngineConfig {
            launch_threshold: 0.3,
            clarify_threshold: 0.1,
            name_bonus: 0.0,
            helper_penalty: 0.0,
            ..Default::default()
        };
        let eng = engine(cfg);
        // Both wallpaper apps match; the visible one wins even if the hidden one scores higher.
        let r = eng.resolve("change the desktop background wallpaper").unwrap();
        assert_eq!(r.action.launched(), Some("shows.desktop"), "{}", r.explanation);
        // With a higher bar only the hidden one qualifies: used, and said so.
        let scored_hidden = r.explanation.top.iter().find(|s| s.app_id == "panel.desktop").unwrap().score;
        let scored_visible = r.explanation.top.iter().find(|s| s.app_id == "shows.desktop").unwrap().score;
        assert!(scored_hidden > scored_visible);
        let cfg = EngineConfig {
            launch_threshold: (scored_hidden + scored_visible) / 2.0,
            clarify_threshold: 0.1,
            name_bonus: 0.0,
            helper_penalty: 0.0,
            ..Default::default()
        };
        let r = engine(cfg).resolve("change the desktop background wallpaper").unwrap();
        assert_eq!(r.action.launched(), Some("panel.desktop"), "{}", r.explanation);
        assert!(r.explanation.decision.contains("NoDisplay"));
    }

    #[test]
    fn hidden_helpers_are_penalised_unless_named() {
        let eng = engine(EngineConfig::default());
        let ex = args::extract("change the desktop background wallpaper");
        let s = eng.score(&ex, &words("change the desktop background wallpaper"), 10).unwrap();
        let panel = s.iter().find(|x| x.app_id == "panel.desktop").unwrap();
        assert_eq!(panel.helper_penalty, 0.10, "NoDisplay without a Settings category");
        assert!(s.iter().filter(|x| !x.no_display).all(|x| x.helper_penalty == 0.0));
        let r = eng.resolve("change the desktop background wallpaper").unwrap();
        assert!(r.explanation.to_string().contains("hidden helper"));
    }

    #[test]
    fn requests_in_words_no_app_uses_never_launch() {
        // Thresholds so low that anything would launch, yet words the catalog
        // never uses give no launch: none below the launch threshold.
        let cfg = EngineConfig {
            launch_threshold: 2.0,
            clarify_threshold: -1.0,
            weak_clarify_threshold: -1.0,
            ..Default::default()
        };
        let r = engine(cfg).resolve("zorblat quux").unwrap();
        assert_eq!(r.action, Action::none(), "{}", r.explanation);
        assert!(r.explanation.decision.contains("no word of the request"));
        // A grounded request with the same thresholds is asked back about.
        let r = engine(cfg).resolve("terminal quux").unwrap();
        assert!(matches!(r.action, Action::Clarify { .. }), "{}", r.explanation);
        let cfg = EngineConfig { launch_threshold: -1.0, ..cfg };
        let r = engine(cfg).resolve("zorblat quux").unwrap();
        assert!(matches!(r.action, Action::Clarify { .. }), "{}", r.explanation);
        assert_eq!(r.action.launched(), None);
    }

    #[test]
    fn weak_matches_are_offered_only_with_a_shared_word() {
        let eng = engine(EngineConfig::default());
        let ex = args::extract("terminal quux");
        let s = eng.score(&ex, &words("terminal quux"), 10).unwrap();
        let foot = s.iter().find(|x| x.app_id == "foot.desktop").unwrap();
        assert!(foot.lexical_bonus > 0.0);
        let cfg = EngineConfig {
            launch_threshold: 2.0,
            clarify_threshold: foot.score + 0.01,
            weak_clarify_threshold: foot.score - 0.01,
            ..Default::default()
        };
        let r = engine(cfg).resolve("terminal quux").unwrap();
        assert_eq!(r.action.first_choice(), Some("foot.desktop"), "{}", r.explanation);
    }

    #[test]
    fn naming_the_program_adds_the_bonus_only_for_rare_names() {
        let eng = engine(EngineConfig::default());
        let ex = args::extract("start footclient now");
        let s = eng.score(&ex, &words("start footclient now"), 10).unwrap();
        let fc = s.iter().find(|x| x.app_id == "footclient.desktop").unwrap();
        assert!(fc.name_bonus > 0.0);
        // "terminal" names both foot apps' GenericName but that is one family… and
        // "wallpaper" is used by two families: no bonus for either.
        let ex = args::extract("wallpaper");
        let s = eng.score(&ex, &words("wallpaper"), 10).unwrap();
        assert!(s.iter().all(|x| x.name_bonus == 0.0 || x.app_id == "shows.desktop" || x.app_id == "panel.desktop"));
    }

    #[test]
    fn bad_requests_are_refused() {
        let eng = engine(EngineConfig::default());
        assert!(matches!(eng.resolve("   "), Err(EngineError::EmptyRequest)));
        let long = "a".repeat(MAX_REQUEST_BYTES + 1);
        assert!(
            matches!(eng.resolve(&long), Err(EngineError::RequestTooLong { len, cap }) if len == MAX_REQUEST_BYTES + 1 && cap == MAX_REQUEST_BYTES)
        );
        assert!(matches!(validate_request(b"open \xff", 100), Err(EngineError::NotUtf8 { offset: 5 })));
    }

    #[test]
    fn args_the_app_cannot_take_are_dropped() {
        let eng = engine(EngineConfig::default());
        let r = eng.resolve("terminal shell prompt command in ~/projects/").unwrap();
        if let Action::Launch { args, .. } = &r.action {
            assert!(args.is_empty(), "foot's Exec has no field code");
            assert!(r.explanation.decision.contains("not passed"));
        }
    }

    #[test]
    fn thousands_of_entries_stay_fast() {
        let mut entries = catalog().entries;
        for i in 0..5000 {
            entries.push(entry(
                &format!("gen{i}.desktop"),
                &format!("Name=Tool {i}\nGenericName=Utility number{i}\nComment=Does task{i} with widget{}\nKeywords=k{i};w{};\nExec=tool{i} %f\nCategories=Utility;\n", i % 97, i % 13),
            ));
        }
        let e = HashEmbedder::new();
        let mut cache = VectorCache::in_memory(e.fingerprint(), e.dim());
        let t = std::time::Instant::now();
        let eng = Engine::build(e, Catalog::from_entries(entries), &mut cache, EngineConfig::default()).unwrap();
        let build = t.elapsed();
        let t = std::time::Instant::now();
        for _ in 0..20 {
            eng.resolve("browse the web").unwrap();
        }
        let per = t.elapsed() / 20;
        assert!(build.as_secs_f32() < 10.0, "build {build:?}");
        assert!(per.as_millis() < 50, "resolve {per:?} per request over 5006 apps");
    }
}
