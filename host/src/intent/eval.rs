//! Measuring the engine: accuracy on a labelled request set, and speed.
//!
//! Labels file: one `EXPECTED<TAB>REQUEST` per line; EXPECTED is desktop IDs
//! and `@group`s joined by `|`, or `-` for a request no app serves; `@name =
//! id|id` defines a group; `#` starts a comment.
//!
//! Figures:
//! - `top1`: the app the engine ranks first for a positive is acceptable
//!   (top-1 accuracy whatever the decision: the launched app or first clarify
//!   candidate, or the best-scored app when the engine answers `none`);
//! - `first_choice`: the action's own first choice (the launched app, or the
//!   first clarify candidate) is acceptable; a `none` counts as a miss;
//! - `launched_right` / `wrong_launches`: positives launched with an acceptable
//!   app / with a wrong one (as bad for a person as a false launch);
//! - `false_launches`: launches on negatives.
//!
//! Speed: resolution latency per request is measured after warm-up, over the
//! labelled requests repeated, and reported as p50/p99; resident memory is read
//! from `/proc/self/status`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::embed::Embedder;
use super::engine::{Engine, EngineError};
use super::Action;

/// Errors of evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("labels line {line}: {reason}")]
    Labels { line: usize, reason: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// One labelled request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    pub line: usize,
    pub request: String,
    /// Acceptable app IDs; empty for a negative.
    pub expected: Vec<String>,
}

/// Parse a labels file.
pub fn parse_labels(text: &str) -> Result<Vec<Labelled>, EvalError> {
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim_end();
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        let err = |reason: String| EvalError::Labels { line, reason };
        if l.starts_with('@') && !l.contains('\t') {
            let (name, ids) = l.split_once('=').ok_or_else(|| err("a group line needs `@name = id|id`".into()))?;
            groups.insert(
                name.trim().to_string(),
                ids.split('|').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            );
            continue;
        }
        let (exp, req) = l.split_once('\t').ok_or_else(|| err("expected `EXPECTED<TAB>REQUEST`".into()))?;
        let req = req.trim();
        if req.is_empty() {
            return Err(err("empty request".into()));
        }
        let mut expected = Vec::new();
        if exp.trim() != "-" {
            for part in exp.split('|').map(str::trim) {
                if part.starts_with('@') {
                    let g = groups.get(part).ok_or_else(|| err(format!("unknown group {part}")))?;
                    expected.extend(g.iter().cloned());
                } else if !part.is_empty() {
                    expected.push(part.to_string());
                }
            }
            if expected.is_empty() {
                return Err(err("no expected app".into()));
            }
        }
        out.push(Labelled { line, request: req.to_string(), expected });
    }
    Ok(out)
}

/// The outcome of one labelled request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub item: Labelled,
    pub action: Action,
    /// The app ranked first, if any was scored.
    pub ranked_first: Option<String>,
    /// Ranked first is acceptable (positives) / nothing launched (negatives).
    pub hit: bool,
    /// The action's first choice is acceptable (positives) / nothing launched (negatives).
    pub choice_hit: bool,
}

/// Accuracy figures.
#[derive(Debug, Clone, Default)]
pub struct EvalReport {
    pub positives: usize,
    /// Positives whose first-ranked app is acceptable.
    pub hits: usize,
    /// Positives whose action's first choice is acceptable.
    pub choice_hits: usize,
    /// Positives launched directly with an acceptable app.
    pub launched_right: usize,
    /// Positives launched with a wrong app.
    pub launched_wrong: usize,
    pub clarified: usize,
    pub negatives: usize,
    pub false_launches: usize,
    pub outcomes: Vec<Outcome>,
}

impl EvalReport {
    pub fn top1(&self) -> f64 {
        if self.positives == 0 {
            0.0
        } else {
            self.hits as f64 / self.positives as f64
        }
    }

    pub fn first_choice(&self) -> f64 {
        if self.positives == 0 {
            0.0
        } else {
            self.choice_hits as f64 / self.positives as f64
        }
    }

    /// The one-line summary the test script reads.
    pub fn summary(&self, name: &str) -> String {
        format!(
            "{name} top1={:.3} ({}/{}) first_choice={:.3} ({}/{}) launched_right={}/{} wrong_launches={} clarify={} false_launches={}/{}",
            self.top1(),
            self.hits,
            self.positives,
            self.first_choice(),
            self.choice_hits,
            self.positives,
            self.launched_right,
            self.positives,
            self.launched_wrong,
            self.clarified,
            self.false_launches,
            self.negatives
        )
    }

    /// One line per miss, for reading why.
    pub fn misses(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter(|o| !o.hit || !o.choice_hit)
            .map(|o| {
                let want = if o.item.expected.is_empty() { "nothing".to_string() } else { o.item.expected.join("|") };
                let ranked = if o.item.expected.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ranked first: {}{};",
                        o.ranked_first.as_deref().unwrap_or("-"),
                        if o.hit { " (ok)" } else { "" }
                    )
                };
                format!("line {}: {:?} ->{ranked} {} (wanted {want})", o.item.line, o.item.request, o.action.to_json())
            })
            .collect()
    }
}

/// Run every labelled request through the engine.
pub fn evaluate<E: Embedder>(engine: &Engine<E>, items: &[Labelled]) -> Result<EvalReport, EvalError> {
    let mut r = EvalReport::default();
    for it in items {
        let res = engine.resolve(&it.request)?;
        let ranked_first = res.explanation.ranked_first.clone();
        let action = res.action;
        let (hit, choice_hit) = if it.expected.is_empty() {
            r.negatives += 1;
            let launched = action.launched().is_some();
            if launched {
                r.false_launches += 1;
            }
            (!launched, !launched)
        } else {
            r.positives += 1;
            let ok = |id: &str| it.expected.iter().any(|e| e == id);
            let choice_ok = action.first_choice().is_some_and(ok);
            let ranked_ok = ranked_first.as_deref().is_some_and(ok);
            match &action {
                Action::Launch { .. } if choice_ok => r.launched_right += 1,
                Action::Launch { .. } => r.launched_wrong += 1,
                Action::Clarify { .. } => r.clarified += 1,
                _ => {}
            }
            r.hits += ranked_ok as usize;
            r.choice_hits += choice_ok as usize;
            (ranked_ok, choice_ok)
        };
        r.outcomes.push(Outcome { item: it.clone(), action, ranked_first, hit, choice_hit });
    }
    Ok(r)
}

/// Latency figures.
#[derive(Debug, Clone, Copy)]
pub struct BenchReport {
    pub samples: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
    pub max: Duration,
}

/// Time `resolve` over `requests`, `rounds` times, after one warm-up round.
pub fn bench<E: Embedder>(engine: &Engine<E>, requests: &[String], rounds: usize) -> Result<BenchReport, EvalError> {
    for r in requests.iter().take(20) {
        engine.resolve(r)?;
    }
    let mut times = Vec::with_capacity(requests.len() * rounds);
    for _ in 0..rounds.max(1) {
        for r in requests {
            let t = Instant::now();
            std::hint::black_box(engine.resolve(r)?);
            times.push(t.elapsed());
        }
    }
    Ok(latency_report(times))
}

/// p50/p99/mean/max of samples (nearest-rank percentiles).
pub fn latency_report(mut times: Vec<Duration>) -> BenchReport {
    times.sort();
    let n = times.len().max(1);
    let pick = |p: f64| times.get(((p * n as f64).ceil() as usize).clamp(1, n) - 1).copied().unwrap_or_default();
    let total: Duration = times.iter().sum();
    BenchReport {
        samples: times.len(),
        p50: pick(0.50),
        p99: pick(0.99),
        mean: total / n as u32,
        max: times.last().copied().unwrap_or_default(),
    }
}

/// Resident and peak resident memory of this process, in MiB (Linux).
pub fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::cache::VectorCache;
    use crate::intent::catalog::{parse_desktop, Catalog};
    use crate::intent::embed::fake::HashEmbedder;
    use crate::intent::EngineConfig;

    #[test]
    fn parses_labels_with_groups_and_negatives() {
        let t = "# c\n@term = a.desktop|b.desktop\n\n@term|c.desktop\topen a terminal\n-\tbook a flight\nd.desktop\tstart d\n";
        let l = parse_labels(t).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].expected, ["a.desktop", "b.desktop", "c.desktop"]);
        assert_eq!(l[0].line, 4);
        assert!(l[1].expected.is_empty());
        assert!(matches!(parse_labels("@nope\topen"), Err(EvalError::Labels { line: 1, .. })));
        assert!(matches!(parse_labels("no tab here"), Err(EvalError::Labels { line: 1, .. })));
    }

    #[test]
    fn the_shipped_label_sets_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/intent");
        let cat = Catalog::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/catalog")).unwrap();
        for f in ["labels.tsv", "labels-holdout.tsv"] {
            let items = parse_labels(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
            let pos = items.iter().filter(|i| !i.expected.is_empty()).count();
            let neg = items.len() - pos;
            assert!(pos >= 30 && neg >= 10, "{f}: {pos} positives, {neg} negatives");
            for i in &items {
                for id in &i.expected {
                    assert!(cat.get(id).is_some(), "{f} line {}: {id} is not in the catalog", i.line);
                }
            }
        }
    }

    #[test]
    fn counts_hits_and_false_launches() {
        let e = |id: &str, body: &str| {
            parse_desktop(id, &format!("[Desktop Entry]\nType=Application\n{body}")).unwrap().unwrap()
        };
        let cat = Catalog::from_entries(vec![
            e("web.desktop", "Name=Web Browser\nComment=browse the web internet\nExec=web %u\n"),
            e("calc.desktop", "Name=Calculator\nComment=calculate numbers arithmetic\nExec=calc\n"),
        ]);
        let emb = HashEmbedder::new();
        let mut cache = VectorCache::in_memory(emb.fingerprint(), emb.dim());
        let eng = Engine::build(emb, cat, &mut cache, EngineConfig::default()).unwrap();
        let items =
            parse_labels("web.desktop\tbrowse the web internet\ncalc.desktop\tbrowse the web\n-\torder pizza\n")
                .unwrap();
        let r = evaluate(&eng, &items).unwrap();
        assert_eq!((r.positives, r.hits, r.choice_hits, r.negatives, r.false_launches), (2, 1, 1, 1, 0));
        assert_eq!(r.launched_wrong, 1);
        assert!(r.summary("x").starts_with("x top1=0.500 (1/2) first_choice=0.500 (1/2)"), "{}", r.summary("x"));
        assert_eq!(r.misses().len(), 1);
        let b = bench(&eng, &["browse the web".to_string()], 3).unwrap();
        assert_eq!(b.samples, 3);
        assert!(b.p50 <= b.p99);
    }

    #[test]
    fn percentiles() {
        let t: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let r = latency_report(t);
        assert_eq!(r.p50, Duration::from_millis(50));
        assert_eq!(r.p99, Duration::from_millis(99));
        assert_eq!(r.max, Duration::from_millis(100));
        let (rss, peak) = rss_mib();
        assert!(rss > 0.0 && peak >= rss);
    }
}
