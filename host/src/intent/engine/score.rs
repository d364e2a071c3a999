//! Scoring: every app's score for one request, in parts (semantic, named,
//! opens the arguments, shared words, hidden helper), best first.

use super::super::args::{self, Arg, Extracted};
use super::super::describe::{contains_seq, lex_terms};
use super::super::embed::{dot, EmbedError, Embedder};
use super::{App, Engine, EngineError, Scored};

/// One app's score and its parts, before it becomes a [`Scored`].
#[derive(Debug, Clone, Copy)]
struct Parts {
    score: f32,
    app: usize,
    view: usize,
    cosine: f32,
    name_bonus: f32,
    mime_bonus: f32,
    lexical_bonus: f32,
}

/// Per app: its best weighted cosine, the view that gave it, and the second best.
type BestViews = Vec<(f32, usize, f32)>;

/// The request's informative words with their weights, and the weights' sum.
struct QueryTerms {
    terms: Vec<(String, f32)>,
    mass: f32,
}

impl<E: Embedder> Engine<E> {
    /// Score every app for an (already extracted) request and return the
    /// `keep` best (plus the best visible ones, which the decision needs), best first.
    pub fn score(&self, ex: &Extracted, request_words: &[String], keep: usize) -> Result<Vec<Scored>, EngineError> {
        let q = self.embed_request(&ex.text)?;
        let best = self.best_views(&q);
        let query = self.query_terms(&ex.text);
        let file_args: Vec<&Arg> = ex.args.iter().filter(|a| a.mime.is_some()).collect();
        let mut parts: Vec<Parts> = Vec::with_capacity(self.apps.len());
        for (ai, (app, &(top, vi, second))) in self.apps.iter().zip(&best).enumerate() {
            if vi == usize::MAX {
                continue;
            }
            parts.push(self.app_parts(ai, app, (top, vi, second), &query, &file_args, request_words));
        }
        self.keep_best(&mut parts, keep);
        Ok(parts.into_iter().map(|p| self.scored(p)).collect())
    }

    /// The request's vector, checked against the catalog's dimension.
    fn embed_request(&self, text: &str) -> Result<Vec<f32>, EngineError> {
        let q = self.embedder.embed(&[text])?.pop().ok_or(EmbedError::Shape {
            got: 0,
            want: 1,
            dim: 0,
            expected: self.dim,
        })?;
        if q.len() != self.dim {
            return Err(EmbedError::Shape { got: 1, want: 1, dim: q.len(), expected: self.dim }.into());
        }
        Ok(q)
    }

    /// Each app's best and second-best view for the request vector `q`,
    /// each cosine weighted by its view kind.
    fn best_views(&self, q: &[f32]) -> BestViews {
        let w = &self.config.view_weights;
        let mut best: BestViews = vec![(f32::NEG_INFINITY, usize::MAX, f32::NEG_INFINITY); self.apps.len()];
        for (vi, row) in self.vectors.chunks_exact(self.dim).enumerate() {
            let view = &self.views[vi];
            let c = dot(q, row) * w[view.kind.index()];
            let b = &mut best[view.app];
            if c > b.0 {
                b.2 = b.0;
                b.0 = c;
                b.1 = vi;
            } else if c > b.2 {
                b.2 = c;
            }
        }
        best
    }

    /// Lexical: the request's informative words, weighted by rarity; words the
    /// catalog never uses (names, places) count half, common ones not at all.
    fn query_terms(&self, text: &str) -> QueryTerms {
        let mut terms: Vec<(String, f32)> = Vec::new();
        for t in lex_terms(text) {
            if terms.iter().any(|(x, _)| *x == t) {
                continue;
            }
            let w = match self.idf.get(&t) {
                Some(&i) if i < 1.0 => continue,
                Some(&i) => i,
                None => self.idf_max * 0.5,
            };
            terms.push((t, w));
        }
        let mass = terms.iter().map(|(_, w)| w).sum();
        QueryTerms { terms, mass }
    }

    /// One app's score: semantic (best and second view), named, opens every
    /// file argument, shared informative words, minus the hidden-helper penalty.
    fn app_parts(
        &self,
        ai: usize,
        app: &App,
        (top, vi, second): (f32, usize, f32),
        query: &QueryTerms,
        file_args: &[&Arg],
        request_words: &[String],
    ) -> Parts {
        let cfg = &self.config;
        let second = if second.is_finite() { second } else { top };
        let cosine = (1.0 - cfg.second_weight) * top + cfg.second_weight * second;
        let named = app.name_terms.iter().any(|t| contains_seq(request_words, t));
        let name_bonus = if named { cfg.name_bonus } else { 0.0 };
        let opens_all = !file_args.is_empty()
            && app.entry.takes_files()
            && file_args.iter().all(|a| args::mime_accepts(&app.entry.mime_types, a.mime.unwrap_or("")));
        let mime_bonus = if opens_all { cfg.mime_bonus } else { 0.0 };
        let lexical = if query.mass > 0.0 {
            query.terms.iter().filter(|(t, _)| app.terms.contains(t)).map(|(_, w)| w).sum::<f32>() / query.mass
        } else {
            0.0
        };
        let lexical_bonus = cfg.lexical_weight * lexical;
        let penalty = if app.helper && !named { cfg.helper_penalty } else { 0.0 };
        Parts {
            score: cosine + name_bonus + mime_bonus + lexical_bonus - penalty,
            app: ai,
            view: vi,
            cosine,
            name_bonus,
            mime_bonus,
            lexical_bonus,
        }
    }

    /// Keeps the best `keep` overall and the best `keep` visible ones, sorted
    /// best first (ties by app ID).
    fn keep_best(&self, parts: &mut Vec<Parts>, keep: usize) {
        let by_score = |a: &Parts, b: &Parts| {
            b.score.total_cmp(&a.score).then_with(|| self.apps[a.app].entry.id.cmp(&self.apps[b.app].entry.id))
        };
        if parts.len() > keep {
            let mut picked: Vec<usize> = Vec::new();
            let mut all = parts.clone();
            all.select_nth_unstable_by(keep - 1, by_score);
            picked.extend(all[..keep].iter().map(|p| p.app));
            let mut vis: Vec<Parts> = parts.iter().filter(|p| !self.apps[p.app].entry.no_display).copied().collect();
            if vis.len() > keep {
                vis.select_nth_unstable_by(keep - 1, by_score);
                vis.truncate(keep);
            }
            picked.extend(vis.iter().map(|p| p.app));
            picked.sort_unstable();
            picked.dedup();
            parts.retain(|p| picked.binary_search(&p.app).is_ok());
        }
        parts.sort_by(by_score);
    }

    fn scored(&self, p: Parts) -> Scored {
        let app = &self.apps[p.app];
        Scored {
            app_id: app.entry.id.clone(),
            name: app.entry.name.clone(),
            score: p.score,
            best_view: self.views[p.view].kind.label(),
            best_view_text: self.views[p.view].text.clone(),
            cosine: p.cosine,
            name_bonus: p.name_bonus,
            mime_bonus: p.mime_bonus,
            lexical_bonus: p.lexical_bonus,
            helper_penalty: if app.helper && p.name_bonus == 0.0 { self.config.helper_penalty } else { 0.0 },
            no_display: app.entry.no_display,
            family: app.family.clone(),
        }
    }
}
