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

//!
//! Code: [`config`] (tunables, the request check), `score` (the parts of
//! each app's score), `decide` (launch, clarify or none; arguments),
//! [`explain`] (what `--explain` prints); this file indexes the catalog.

mod config;
mod decide;
mod explain;
mod score;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use super::cache::{CacheError, VectorCache};
use super::catalog::{Catalog, DesktopEntry};
use super::describe::{app_terms, build_views, rare_terms, View};
use super::embed::{EmbedError, Embedder};

pub use config::{validate_request, EngineConfig, MAX_REQUEST_BYTES};
pub use explain::{Explanation, Resolution, Scored};

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
}
