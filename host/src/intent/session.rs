//! A ready-to-use intent engine: model from the store, catalog from disk,
//! vectors from the cache, optional planner; with the load timings.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::bert::{BertEmbedder, BertError};
use super::cache::{self, CacheError, VectorCache};
use super::catalog::{self, Catalog, CatalogError};
use super::engine::{Engine, EngineConfig, EngineError, Resolution};
use super::planner::{self, PlannerCandidate, PlannerConfig, PlannerError};
use super::Action;
use crate::models::{self, ModelStore, StoreError};

/// Errors of setting up or using a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("unknown model {0:?}; `rayos models list` shows the known ones")]
    UnknownModel(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("loading the model: {0}")]
    Model(#[from] BertError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Planner(#[from] PlannerError),
}

/// What to load.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub model: String,
    pub store: Option<PathBuf>,
    /// Catalog folders; empty means the XDG application folders.
    pub catalogs: Vec<PathBuf>,
    /// A catalog already in memory (a guest's `ListApps`); used instead of folders.
    pub entries: Option<Vec<super::catalog::DesktopEntry>>,
    /// Cache folder; `None` keeps vectors in memory only.
    pub cache_dir: Option<PathBuf>,
    pub config: EngineConfig,
    pub planner: Option<PlannerConfig>,
    /// Benchmarks only: grow the catalog to N copies of itself (IDs and names
    /// made distinct) to measure a catalog of thousands of apps.
    pub replicate: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            model: models::DEFAULT_MODEL.to_string(),
            store: None,
            catalogs: Vec::new(),
            entries: None,
            cache_dir: Some(cache::default_dir()),
            config: EngineConfig::default(),
            planner: None,
            replicate: 1,
        }
    }
}

/// Load timings, for the benchmark and `--explain`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadTimes {
    pub model: Duration,
    pub catalog: Duration,
    pub index: Duration,
    pub embedded: usize,
    pub cached: usize,
}

/// A loaded engine.
pub struct Session {
    pub engine: Engine<BertEmbedder>,
    pub times: LoadTimes,
    pub warnings: Vec<String>,
    planner: Option<PlannerConfig>,
}

/// Load the embedder from the store (the part of a session that needs the model).
pub fn load_model(name: &str, store: Option<&Path>) -> Result<BertEmbedder, SessionError> {
    let spec = models::find(name).ok_or_else(|| SessionError::UnknownModel(name.to_string()))?;
    let store = store.map(ModelStore::new).unwrap_or_else(ModelStore::open_default);
    let dir = store.require(&spec)?;
    Ok(BertEmbedder::load(&dir, &spec)?)
}

impl Session {
    pub fn open(opts: &SessionOptions) -> Result<Self, SessionError> {
        let t = Instant::now();
        let embedder = load_model(&opts.model, opts.store.as_deref())?;
        let model_time = t.elapsed();

        let t = Instant::now();
        let dirs = if opts.catalogs.is_empty() { catalog::xdg_application_dirs() } else { opts.catalogs.clone() };
        let mut cat = if let Some(entries) = &opts.entries {
            if entries.is_empty() {
                return Err(SessionError::Catalog(CatalogError::Empty { path: PathBuf::from("<guest catalog>") }));
            }
            Catalog::from_entries(entries.clone())
        } else if dirs.len() == 1 {
            Catalog::load_dir(&dirs[0])?
        } else {
            Catalog::load_dirs(&dirs)?
        };
        if opts.replicate > 1 {
            let base = cat.entries.clone();
            for k in 1..opts.replicate {
                cat.entries.extend(base.iter().map(|e| {
                    let mut c = e.clone();
                    c.id = format!("copy{k}-{}", e.id);
                    c.name = format!("{} {k}", e.name);
                    c
                }));
            }
        }
        let warnings = cat.warnings.clone();
        let catalog_time = t.elapsed();

        let t = Instant::now();
        use super::embed::Embedder;
        let mut cache = match &opts.cache_dir {
            Some(d) => VectorCache::open(d, &opts.model, embedder.fingerprint(), embedder.dim()),
            None => VectorCache::in_memory(embedder.fingerprint(), embedder.dim()),
        };
        let engine = Engine::build(embedder, cat, &mut cache, opts.config)?;
        if let Err(e) = cache.save() {
            tracing::warn!("could not save the vector cache: {e}");
        }
        let stats = cache.stats();
        let times = LoadTimes {
            model: model_time,
            catalog: catalog_time,
            index: t.elapsed(),
            embedded: stats.misses,
            cached: stats.hits,
        };
        tracing::debug!(?times, views = engine.view_count(), "intent engine ready");
        Ok(Self { engine, times, warnings, planner: opts.planner.clone() })
    }

    /// Resolve a request: the engine, or the planner when one is configured
    /// (falling back to the engine, with a warning, if it fails).
    pub fn resolve(&self, request: &str) -> Result<Resolution, SessionError> {
        let mut res = self.engine.resolve(request)?;
        let Some(pcfg) = &self.planner else {
            return Ok(res);
        };
        if matches!(res.action, Action::None { reason: Some(_) }) && res.explanation.decision.contains("destroy") {
            return Ok(res); // screened: the planner is not asked
        }
        match self.plan(pcfg, request, &res) {
            Ok((action, refused)) => {
                res.explanation.decision = format!(
                    "planner proposed {}{}; engine alone said: {}",
                    action.to_json(),
                    if refused.is_empty() {
                        String::new()
                    } else {
                        format!(" (refused by policy: {})", refused.join("; "))
                    },
                    res.explanation.decision
                );
                res.action = action;
            }
            Err(e) => {
                tracing::warn!("planner failed, using the engine's answer: {e}");
                res.explanation.decision = format!("planner failed ({e}); {}", res.explanation.decision);
            }
        }
        Ok(res)
    }

    fn plan(
        &self,
        pcfg: &PlannerConfig,
        request: &str,
        res: &Resolution,
    ) -> Result<(Action, Vec<String>), SessionError> {
        let ex = super::args::extract(request);
        // Candidates: best apps for the whole request and for each clause.
        let mut cands: Vec<PlannerCandidate> = Vec::new();
        let mut add = |text: &str| -> Result<(), SessionError> {
            let e = super::args::extract(text);
            let words: Vec<String> = text
                .to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect();
            let s = self.engine.score(&e, &words, 12)?;
            for sc in s.into_iter().filter(|x| !x.no_display).take(6) {
                if !cands.iter().any(|c| c.app_id == sc.app_id) {
                    let entry = self.engine.catalog().get(&sc.app_id).expect("scored apps are in the catalog");
                    let description = [entry.generic_name.clone(), entry.comment.clone()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(": ");
                    cands.push(PlannerCandidate { app_id: sc.app_id, name: sc.name, description, score: sc.score });
                }
            }
            Ok(())
        };
        add(request)?;
        for c in planner::clauses(request) {
            add(&c)?;
        }
        let body = planner::request_body(&pcfg.model, request, &ex.args, &cands);
        let resp = planner::call(pcfg, &body)?;
        let calls = planner::parse_tool_calls(&resp)?;
        let conf =
            |id: &str| cands.iter().find(|c| c.app_id == id).map_or(0.0, |c| super::action::round_confidence(c.score));
        let _ = res;
        Ok(planner::to_action(&calls, self.engine.catalog(), &ex.args, &conf))
    }
}
