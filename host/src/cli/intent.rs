//! `rayos intent`, `intent-eval`, `intent-bench` (and the hidden `similarity`).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{BenchArgs, CliError, EvalArgs, IntentArgs, StoreArgs};
use crate::intent::engine::{validate_request, MAX_REQUEST_BYTES};
use crate::intent::eval;
use crate::intent::planner::PlannerConfig;
use crate::intent::session::{Session, SessionError};
use crate::intent::Action;

fn print_human(action: &Action, session: &Session) {
    let name = |id: &str| session.engine.catalog().get(id).map(|e| e.name.clone()).unwrap_or_default();
    match action {
        Action::Launch { app_id, confidence, args } => {
            print!("launch {app_id} ({}), confidence {confidence:.2}", name(app_id));
            if !args.is_empty() {
                print!(", args: {}", args.join(" "));
            }
            println!();
        }
        Action::Clarify { candidates, question } => {
            println!("{}", question.as_deref().unwrap_or("Which app did you mean?"));
            for (i, c) in candidates.iter().enumerate() {
                println!("  {}. {} ({}), confidence {:.2}", i + 1, c.name, c.app_id, c.confidence);
            }
        }
        Action::None { reason } => {
            println!("nothing to do: {}", reason.as_deref().unwrap_or("no app in the catalog fits this request"))
        }
        Action::Plan { steps } => {
            println!("plan of {} steps:", steps.len());
            for s in steps {
                print!("  - ");
                print_human(s, session);
            }
        }
    }
}

pub(super) fn intent_cmd(a: IntentArgs) -> Result<ExitCode, CliError> {
    // Validate the request before loading anything.
    let request = if a.batch.is_none() {
        if a.request.is_empty() {
            return Err(CliError::Usage("no REQUEST given (or use --batch FILE); see `rayos intent --help`".into()));
        }
        let mut bytes = Vec::new();
        for (i, w) in a.request.iter().enumerate() {
            if i > 0 {
                bytes.push(b' ');
            }
            bytes.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(w.as_os_str()));
        }
        let text =
            validate_request(&bytes, MAX_REQUEST_BYTES).map_err(|e| CliError::Session(SessionError::Engine(e)))?;
        Some(text.to_string())
    } else {
        None
    };
    let mut opts = a.engine.options()?;
    if let Some(url) = &a.planner {
        crate::intent::planner::endpoint(url, a.planner_allow_remote)
            .map_err(|e| CliError::Usage(format!("--planner: {e}")))?;
        opts.planner = Some(PlannerConfig {
            url: url.clone(),
            model: a.planner_model.clone(),
            timeout: Duration::from_secs(a.planner_timeout),
            allow_remote: a.planner_allow_remote,
        });
    }
    let mut guest = match &a.guest {
        Some(path) => {
            if !a.engine.catalog.is_empty() {
                return Err(CliError::Usage("--guest and --catalog both name a catalog; give one".into()));
            }
            let mut c = crate::guest::GuestClient::connect(path, rayos_contract::AGENT_PORT, Duration::from_secs(10))
                .map_err(CliError::Guest)?;
            opts.entries = Some(c.list_apps(true).map_err(CliError::Guest)?);
            Some(c)
        }
        None => None,
    };
    let session = Session::open(&opts)?;
    for w in &session.warnings {
        tracing::debug!("{w}");
    }
    if let Some(batch) = &a.batch {
        return batch_cmd(&session, batch, a.explain);
    }
    let request = request.expect("checked above");
    let res = session.resolve(&request)?;
    if a.json {
        println!("{}", res.action.to_json());
        if a.explain {
            eprintln!("{}", res.explanation);
            eprintln!("{}", load_line(&session));
        }
    } else {
        print_human(&res.action, &session);
        if a.explain {
            println!("{}", res.explanation);
            println!("{}", load_line(&session));
        }
    }
    if let (true, Some(client), Action::Launch { app_id, args, .. }) = (a.launch, guest.as_mut(), &res.action) {
        let launch = rayos_contract::Launch {
            app: rayos_contract::AppRef::Id(app_id.clone()),
            args: args.clone(),
            env: Default::default(),
            cwd: None,
            display: rayos_contract::DisplayMode::Embedded,
        };
        // Catalog apps only: whatever the engine proposes passes the host policy.
        let (handle, pid) = client.launch(&rayos_contract::GuestPolicy::default(), launch).map_err(CliError::Guest)?;
        if a.json {
            println!("{}", serde_json::json!({"launched": app_id, "handle": handle, "pid": pid}));
        } else {
            println!("launched {app_id} in the guest: handle {handle}, pid {pid}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load_line(s: &Session) -> String {
    format!(
        "loaded: model {} ms, catalog {} ms ({} apps), index {} ms ({} texts embedded, {} from cache)",
        s.times.model.as_millis(),
        s.times.catalog.as_millis(),
        s.engine.catalog().entries.len(),
        s.times.index.as_millis(),
        s.times.embedded,
        s.times.cached
    )
}

fn batch_cmd(session: &Session, path: &PathBuf, explain: bool) -> Result<ExitCode, CliError> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(path).map_err(|source| CliError::File {
            flag: "--batch",
            path: path.clone(),
            source,
        })?;
        Box::new(std::io::BufReader::new(f))
    };
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for (i, line) in reader.split(b'\n').enumerate() {
        let mut bytes = line.map_err(|source| CliError::File { flag: "--batch", path: path.clone(), source })?;
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let json = match validate_request(&bytes, MAX_REQUEST_BYTES) {
            Err(e) => serde_json::json!({"action": "none", "error": format!("line {}: {e}", i + 1)}).to_string(),
            Ok(text) => match session.resolve(text) {
                Ok(res) => {
                    if explain {
                        eprintln!("--- line {}\n{}", i + 1, res.explanation);
                    }
                    res.action.to_json()
                }
                Err(e) => serde_json::json!({"action": "none", "error": format!("line {}: {e}", i + 1)}).to_string(),
            },
        };
        writeln!(out, "{json}").map_err(|source| CliError::File {
            flag: "stdout",
            path: PathBuf::from("-"),
            source,
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

fn skip_or_err(name: &str, e: CliError) -> Result<ExitCode, CliError> {
    if e.exit_code() == 3 {
        println!("SKIP {name}: {e}");
        return Ok(ExitCode::from(3));
    }
    Err(e)
}

pub(super) fn eval_cmd(a: EvalArgs) -> Result<ExitCode, CliError> {
    let opts = a.engine.options()?;
    let session = match Session::open(&opts) {
        Ok(s) => s,
        Err(e) => return skip_or_err("intent-accuracy", e.into()),
    };
    let mut verdict = Ok(());
    for (n, path) in a.labels.iter().enumerate() {
        let text = std::fs::read_to_string(path).map_err(|source| CliError::File {
            flag: "--labels",
            path: path.clone(),
            source,
        })?;
        let items =
            eval::parse_labels(&text).map_err(|e| CliError::Usage(format!("--labels {}: {e}", path.display())))?;
        for it in &items {
            for id in &it.expected {
                if session.engine.catalog().get(id).is_none() {
                    return Err(CliError::Usage(format!(
                        "--labels {} line {}: {id} is not in the catalog",
                        path.display(),
                        it.line
                    )));
                }
            }
        }
        let report = eval::evaluate(&session.engine, &items)?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let name = if n == 0 { "intent-accuracy".to_string() } else { format!("intent-accuracy[{stem}]") };
        println!("{}", report.summary(&name));
        if a.show_misses {
            for m in report.misses() {
                println!("  miss {m}");
            }
        }
        // Only the first file is gated; the others (held-out sets) are printed.
        if n == 0 {
            if report.first_choice() < a.min_first_choice {
                verdict = Err(format!(
                    "first_choice {:.3} below the target {:.2}",
                    report.first_choice(),
                    a.min_first_choice
                ));
            } else if report.top1() < a.min_top1 {
                verdict = Err(format!("top1 {:.3} below the target {:.2}", report.top1(), a.min_top1));
            } else if report.false_launches > a.max_false_launches {
                verdict = Err(format!(
                    "{} false launches on negatives (target at most {})",
                    report.false_launches, a.max_false_launches
                ));
            }
        }
    }
    match verdict {
        Ok(()) => {
            println!("PASS intent-accuracy");
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            println!("FAIL intent-accuracy: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Requests timed when no labels file is given.
const BENCH_REQUESTS: &[&str] = &[
    "open a terminal",
    "I need to edit a photo",
    "browse the web",
    "check my email",
    "play some music",
    "open ~/Documents/invoice.pdf",
    "write a letter",
    "what's the weather tomorrow",
    "show me what's using all my CPU",
    "connect to a wifi network",
];

pub(super) fn bench_cmd(a: BenchArgs) -> Result<ExitCode, CliError> {
    let mut opts = a.engine.options()?;
    opts.replicate = a.replicate.max(1);
    let t = Instant::now();
    let model = match crate::intent::session::load_model(&opts.model, opts.store.as_deref()) {
        Ok(m) => m,
        Err(e) => return skip_or_err("intent-bench", e.into()),
    };
    let load = t.elapsed();
    drop(model);
    // The session loads again (now from the page cache): catalog + index timing
    // (cold with --no-cache: every catalog text embedded).
    let session = Session::open(&opts)?;
    let requests: Vec<String> = match &a.labels {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| CliError::File {
                flag: "--labels",
                path: p.clone(),
                source,
            })?;
            match eval::parse_labels(&text) {
                Ok(items) if !items.is_empty() => items.into_iter().map(|i| i.request).collect(),
                _ => text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from)
                    .collect(),
            }
        }
        None => BENCH_REQUESTS.iter().map(|s| s.to_string()).collect(),
    };
    let r = eval::bench(&session.engine, &requests, a.rounds)?;
    let (rss, peak) = eval::rss_mib();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "intent-bench load_ms={:.0} index_ms={:.0} apps={} views={} embedded={} p50_ms={:.2} p99_ms={:.2} mean_ms={:.2} samples={} rss_mib={:.0} peak_rss_mib={:.0} threads={}",
        ms(load),
        ms(session.times.index),
        session.engine.catalog().entries.len(),
        session.engine.view_count(),
        session.times.embedded,
        ms(r.p50),
        ms(r.p99),
        ms(r.mean),
        r.samples,
        rss,
        peak,
        std::env::var(crate::intent::bert::THREADS_ENV).unwrap_or_else(|_| "default".into()),
    );
    if ms(r.p50) > a.max_p50_ms {
        println!("FAIL intent-bench: p50 {:.2} ms above the target {:.1} ms", ms(r.p50), a.max_p50_ms);
        return Ok(ExitCode::from(1));
    }
    println!("PASS intent-bench p50_ms={:.2} (target <= {:.1})", ms(r.p50), a.max_p50_ms);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn similarity_cmd(model: &str, store: &StoreArgs, texts: &[String]) -> Result<ExitCode, CliError> {
    use crate::intent::embed::{dot, Embedder};
    let emb = crate::intent::session::load_model(model, store.root().as_deref())?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vecs = emb.embed(&refs).map_err(|e| CliError::Session(SessionError::Engine(e.into())))?;
    for i in 0..texts.len() {
        for j in i + 1..texts.len() {
            println!("{:?} ~ {:?}: {:.5}", texts[i], texts[j], dot(&vecs[i], &vecs[j]));
        }
    }
    let first: Vec<String> = vecs[0].iter().take(5).map(|v| format!("{v:.5}")).collect();
    println!("first5 [{}]", first.join(", "));
    Ok(ExitCode::SUCCESS)
}
