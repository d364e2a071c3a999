//! Latency of the intent engine with the real model, in its own test binary so
//! no other test runs beside it. It prints the figures; the p50 target (at most
//! 15 ms per request on 2 cores) is checked by the `intent-bench` scenario, not
//! by this test. Skips (loudly) without the model, except under CI=true.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use rayos::intent::cache::VectorCache;
use rayos::intent::embed::Embedder;
use rayos::intent::eval;
use rayos::intent::{Catalog, Engine, EngineConfig};
use rayos::models::{self, ModelStore};

#[test]
fn latency_per_request_and_memory() {
    let spec = models::find(models::DEFAULT_MODEL).unwrap();
    if let Err(e) = ModelStore::open_default().require(&spec) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("FAIL intent-bench: {e} (CI must install the model before the tests)");
        }
        // Past the harness's capture, so the skip is seen.
        let _ = writeln!(std::io::stderr(), "SKIP intent-bench: {e}");
        return;
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let t = Instant::now();
    let emb = rayos::intent::session::load_model(models::DEFAULT_MODEL, None).unwrap();
    let load = t.elapsed();
    let cat = Catalog::load_dir(&here.join("tests/catalog")).unwrap();
    let mut cache = VectorCache::in_memory(emb.fingerprint(), emb.dim());
    let t = Instant::now();
    let eng = Engine::build(emb, cat, &mut cache, EngineConfig::default()).unwrap();
    let index = t.elapsed();
    let labels = eval::parse_labels(&std::fs::read_to_string(here.join("tests/intent/labels.tsv")).unwrap()).unwrap();
    let requests: Vec<String> = labels.into_iter().map(|l| l.request).collect();
    let b = eval::bench(&eng, &requests, 3).unwrap();
    let (rss, peak) = eval::rss_mib();
    let _ = writeln!(
        std::io::stderr(),
        "intent-bench load_ms={} index_cold_ms={} views={} p50_ms={:.2} p99_ms={:.2} rss_mib={rss:.0} peak_rss_mib={peak:.0}",
        load.as_millis(),
        index.as_millis(),
        eng.view_count(),
        b.p50.as_secs_f64() * 1e3,
        b.p99.as_secs_f64() * 1e3
    );
    // The 15 ms p50 target is judged by the `intent-bench` scenario, which
    // runs alone; here the benchmark must resolve every request, every round.
    assert_eq!(b.samples, requests.len() * 3);
    assert!(b.p50 > std::time::Duration::ZERO && b.p50 <= b.p99);
}
